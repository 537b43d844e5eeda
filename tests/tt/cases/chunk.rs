//! Prefill-chunk kernel cases: 32 real rows at positions start .. start + 31 (start a multiple of
//! 32). The RoPE and KV-write chunk variants and the 32-query attention against the IR ops over
//! the whole chunk (`eval` with a `[32, heads, d]` input at position `start`).

use super::cache::{cache_dev, position, rope_tables, sel_keep};
use super::*;

/// A `[32, cols]` activation whose rows are all real (cols a multiple of 32).
fn rows32(c: &mut Case, name: &str, v: &[f32]) {
    assert_eq!(v.len() % 32, 0);
    c.tensor(name, 32, v.len() / 32, v.to_vec());
}

fn spec(d: usize, pairs: usize, theta: f64) -> RopeSpec {
    RopeSpec {
        theta,
        head_dim: d,
        rotated_pairs: pairs,
        factor: 1.0,
    }
}

pub(super) fn chunk_cases(b: &mut Bundle, rng: &mut Rng) {
    let eps = 1e-6;
    // q norm + partial RoPE over a chunk in the second tile row of the tables.
    {
        let (heads, d, s) = (2, 64, 32usize);
        let sp = spec(d, 8, 1_000_000.0);
        let mut c = Case::new("prefill_norm_rope_2x64_partial");
        let x = rng.normal(32 * heads * d, 2.0);
        let w = rng.range(d, 0.5, 1.5);
        let want = f(&eval(
            &Op::NormRope { eps, rope: sp.clone() },
            &[&t2(&[32, heads, d], &x), &t2(&[d], &w), &pos(s as i32)],
        )
        .unwrap()[0]);
        let k = b.k(kernels::norm_rope(&b.t, "test", heads, d / 32, d, Some(eps)).and_then(|k| k.over_chunk(&b.t)));
        rows32(&mut c, "x", &x);
        let vals = BTreeMap::from([("w".to_string(), w)]);
        let (r, cc, src) = row_source("w", flat(d));
        c.weight("w", r, cc, src, &vals);
        rope_tables(&mut c, &sp, s + 31);
        sel_keep(&mut c);
        position(&mut c, s, 1);
        c.zeros("y", DevLayout::flat(32, heads * d));
        c.call(&k, None, &["x", "w", "cos", "sin", "rot", "sel", "pos", "y"]);
        c.expect_all("y", 32, heads * d, want);
        b.cases.push(c);
    }
    // K and V of a chunk written into a ring of 64 that has wrapped: positions 96..127 go to
    // slots 32..63 (tile row 1); tile row 0 (positions 64..95) must stay as it was.
    {
        let (kv, cap, d, s) = (2, 64, 64, 96usize);
        let sp = spec(d, d / 2, 10_000.0);
        let mut c = Case::new("prefill_kv_write_pair_ring");
        let (kc, vc) = (rng.normal(kv * cap * d, 1.0), rng.normal(kv * cap * d, 1.0));
        let (kn, vn) = (rng.normal(32 * kv * d, 2.0), rng.normal(32 * kv * d, 2.0));
        let w = rng.range(d, 0.5, 1.5);
        let pt = pos(s as i32);
        let want_k = f(&eval(
            &Op::RopeKvWrite { eps, rope: sp.clone() },
            &[&t2(&[kv, cap, d], &kc), &t2(&[32, kv, d], &kn), &t2(&[d], &w), &pt],
        )
        .unwrap()[0]);
        let want_v = f(&eval(
            &Op::NormKvWrite { eps },
            &[&t2(&[kv, cap, d], &vc), &t2(&[32, kv, d], &vn), &pt],
        )
        .unwrap()[0]);
        let k = b.k(kernels::kv_write_pair(&b.t, "test", kv, cap, d / 32, d, eps, 1).and_then(|k| k.over_chunk(&b.t)));
        let (r, cc, v) = cache_dev(&kc, kv, cap, d);
        c.tensor("cache", r, cc, v);
        let (r, cc, v) = cache_dev(&vc, kv, cap, d);
        c.tensor("cache_v", r, cc, v);
        rows32(&mut c, "new", &kn);
        rows32(&mut c, "new_v", &vn);
        let vals = BTreeMap::from([("w".to_string(), w)]);
        let (r, cc, src) = row_source("w", flat(d));
        c.weight("w", r, cc, src, &vals);
        rope_tables(&mut c, &sp, s + 31);
        sel_keep(&mut c);
        position(&mut c, s, cap);
        c.call(
            &k,
            None,
            &[
                "cache", "new", "w", "cos", "sin", "rot", "cache_v", "new_v", "sel", "keep", "pos",
            ],
        );
        let (r, cc, v) = cache_dev(&want_k, kv, cap, d);
        c.expect_all("cache", r, cc, v);
        let (r, cc, v) = cache_dev(&want_v, kv, cap, d);
        c.expect_all("cache_v", r, cc, v);
        b.cases.push(c);
    }
    // 32 queries per head: a sliding window over a wrapped ring with the q norm + RoPE folded in
    // (GQA 2:1), and causal attention over a full cache whose later slots were never written
    // (GQA 8:1, head_dim 128).
    for (name, heads, kv, d, cap, window, s, rope) in [
        (
            "prefill_norm_rope_attention_ring_w8",
            4,
            2,
            64,
            64,
            Some(8),
            96usize,
            true,
        ),
        ("prefill_attention_full_gqa8", 8, 1, 128, 96, None, 32, false),
    ] {
        let mut c = Case::new(name);
        let sp = spec(d, d / 2, 10_000.0);
        let qs = if rope { 2.0 } else { 2.0 / (d as f32).sqrt() };
        let q = rng.normal(32 * heads * d, qs);
        let w = rng.range(d, 0.5, 1.5);
        let ks = if rope { 2.0 / (d as f32).sqrt() } else { 1.0 };
        let kc = rng.normal(kv * cap * d, ks);
        let vc = rng.normal(kv * cap * d, 1.0);
        let qt = t2(&[32, heads, d], &q);
        let qr = if rope {
            eval(
                &Op::NormRope { eps, rope: sp.clone() },
                &[&qt, &t2(&[d], &w), &pos(s as i32)],
            )
            .unwrap()
            .remove(0)
        } else {
            qt
        };
        let want = f(&eval(
            &Op::Attention { window, scale: 1.0 },
            &[&qr, &t2(&[kv, cap, d], &kc), &t2(&[kv, cap, d], &vc), &pos(s as i32)],
        )
        .unwrap()[0]);
        let q_rope = rope.then_some((d, eps));
        let k = b.k(kernels::attention_chunk(
            &b.t,
            "test",
            heads,
            kv,
            cap,
            d / 32,
            1.0,
            window,
            q_rope,
        ));
        rows32(&mut c, "q", &q);
        let (r, cc, v) = cache_dev(&kc, kv, cap, d);
        c.tensor("k", r, cc, v);
        let (r, cc, v) = cache_dev(&vc, kv, cap, d);
        c.tensor("v", r, cc, v);
        let width = cap.div_ceil(32) * 32;
        let mask: Vec<f32> = (0..32)
            .flat_map(|r| mask_row((s + r) as i64, cap, window, width))
            .collect();
        c.tensor("mask", 32, width, mask);
        sel_keep(&mut c);
        c.zeros("o", DevLayout::flat(32, heads * d));
        let mut args = vec!["q"];
        if rope {
            let vals = BTreeMap::from([("qw".to_string(), w)]);
            let (r, cc, src) = row_source("qw", flat(d));
            c.weight("qw", r, cc, src, &vals);
            rope_tables(&mut c, &sp, s + 31);
            position(&mut c, s, cap);
            args.extend(["qw", "cos", "sin", "rot", "pos"]);
        }
        args.extend(["k", "v", "mask", "sel", "o"]);
        c.call(&k, None, &args);
        c.expect_all("o", 32, heads * d, want);
        b.cases.push(c);
    }
}
