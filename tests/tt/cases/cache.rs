//! Cache kernel cases: RoPE, KV cache writes (single and paired) and attention over the cache.

use super::*;

pub(super) fn rope_tables(c: &mut Case, spec: &RopeSpec, p: usize) {
    let d = spec.head_dim;
    for (name, sin) in [("cos", false), ("sin", true)] {
        let prep = Prepared {
            name: name.into(),
            rows: p + 1,
            cols: d,
            host: true,
            source: Source::Rope {
                spec: spec.clone(),
                context: p + 1,
                sin,
            },
        };
        // The whole table: the kernel gathers row p at run time.
        let v = weights::values(&prep, &|_: &str| Err("no weights".to_string())).unwrap();
        c.tensor(name, p + 1, d, v);
    }
    let rot = Prepared {
        name: "rot".into(),
        rows: d,
        cols: d,
        host: false,
        source: Source::RotateHalf { d },
    };
    let v = weights::values(&rot, &|_: &str| Err("no weights".to_string())).unwrap();
    c.tensor("rot", d, d, v);
}

/// The position tensor of `model.py`: tile 0 holds (p // 32, p % 32), tile 1 the same of the slot
/// `p mod capacity`.
pub(super) fn position(c: &mut Case, p: usize, capacity: usize) {
    let mut v = vec![0.0; 32 * 64];
    let slot = p % capacity;
    v[0] = (p / 32) as f32;
    v[1] = (p % 32) as f32;
    v[32] = (slot / 32) as f32;
    v[33] = (slot % 32) as f32;
    c.tensor("pos", 32, 64, v);
}

/// The 32 selection and keep tiles, whole (kernels index them at run time).
pub(super) fn sel_keep(c: &mut Case) {
    for (name, src) in [("sel", Source::KvSelect), ("keep", Source::KvKeep)] {
        let p = Prepared {
            name: name.into(),
            rows: 1024,
            cols: 32,
            host: false,
            source: src,
        };
        let v = weights::values(&p, &|_: &str| Err("no weights".to_string())).unwrap();
        c.tensor(name, 1024, 32, v);
    }
}

/// Attention with the q norm + RoPE step folded in (`attention_norm_rope`): the expectation is the
/// two IR ops one after the other. A wrapped sliding ring with head_dim 256, and GQA 4:1 with
/// head_dim 512 and partial (proportional) rotary. Each geometry also with the layer's K/V cache
/// writes folded in (`attention_kv_write`): the expectation is `rope_kv_write`, `norm_kv_write`
/// and then the two ops over the written caches, and the caches themselves; the mask is the
/// `fresh` variant (this position's slot hidden, one more tile for the fresh row).
pub(super) fn attention_norm_rope_cases(b: &mut Bundle, rng: &mut Rng) {
    let eps = 1e-6;
    for (name, heads, kv, d, cap, window, p, theta, pairs) in [
        (
            "norm_rope_attention_sliding_256",
            4,
            2,
            256,
            15,
            Some(8),
            20usize,
            10_000.0,
            128,
        ),
        (
            "norm_rope_attention_full_512_gqa4",
            4,
            1,
            512,
            48,
            None,
            40,
            1_000_000.0,
            64,
        ),
    ] {
        for fused in [false, true] {
            let name = if fused {
                format!("{name}_kv_write")
            } else {
                name.to_string()
            };
            let mut c = Case::new(&name);
            let spec = RopeSpec {
                theta,
                head_dim: d,
                rotated_pairs: pairs,
                factor: 1.0,
            };
            let q = rng.normal(heads * d, 2.0);
            let w = rng.range(d, 0.5, 1.5);
            // Keys of size 2/sqrt(d): scores of a few units against the unit-RMS normalized q.
            let mut kc = rng.normal(kv * cap * d, 2.0 / (d as f32).sqrt());
            let mut vc = rng.normal(kv * cap * d, 1.0);
            let pt = pos(p as i32);
            let (kc0, vc0) = (kc.clone(), vc.clone());
            let (kn, kw, vn) = (rng.normal(kv * d, 2.0), rng.range(d, 0.5, 1.5), rng.normal(kv * d, 1.0));
            if fused {
                kc = f(&eval(
                    &Op::RopeKvWrite {
                        eps,
                        rope: spec.clone(),
                    },
                    &[&t2(&[kv, cap, d], &kc), &t2(&[1, kv, d], &kn), &t2(&[d], &kw), &pt],
                )
                .unwrap()[0]);
                vc = f(&eval(
                    &Op::NormKvWrite { eps },
                    &[&t2(&[kv, cap, d], &vc), &t2(&[1, kv, d], &vn), &pt],
                )
                .unwrap()[0]);
            }
            let qr = eval(
                &Op::NormRope {
                    eps,
                    rope: spec.clone(),
                },
                &[&t2(&[1, heads, d], &q), &t2(&[d], &w), &pt],
            )
            .unwrap()
            .remove(0);
            let want = f(&eval(
                &Op::Attention { window, scale: 1.0 },
                &[&qr, &t2(&[kv, cap, d], &kc), &t2(&[kv, cap, d], &vc), &pt],
            )
            .unwrap()[0]);
            let fold = fused.then_some(kernels::KvFold { n: d, eps, pos_tile: 1 });
            let k = b.k(kernels::attention_norm_rope(
                &b.t,
                "test",
                heads,
                kv,
                cap,
                d / 32,
                1.0,
                window,
                d,
                eps,
                fold,
            ));
            c.act("q", flat(heads * d), &q);
            let mut vals = BTreeMap::from([("qw".to_string(), w)]);
            let (r, cc, src) = row_source("qw", flat(d));
            c.weight("qw", r, cc, src, &vals);
            rope_tables(&mut c, &spec, p);
            position(&mut c, p, cap);
            // The device caches hold the old rows: a fused launch writes the new ones.
            let (r, cc, v) = cache_dev(&kc0, kv, cap, d);
            c.tensor("k", r, cc, v);
            let (r, cc, v) = cache_dev(&vc0, kv, cap, d);
            c.tensor("v", r, cc, v);
            let width = cap.div_ceil(32) * 32;
            let mut mask = mask_row(p as i64, cap, window, width);
            if fused {
                mask[p % cap] = -1.0e9;
                mask.extend((0..32).map(|j| if j == 0 { 0.0 } else { -1.0e9 }));
            }
            c.tensor("mask", 1, mask.len(), mask);
            sel_keep(&mut c);
            c.zeros("o", flat(heads * d));
            let mut args = vec!["q", "qw", "cos", "sin", "rot", "pos", "k", "v", "mask", "sel"];
            if fused {
                c.act("nk", flat(kv * d), &kn);
                c.act("nv", flat(kv * d), &vn);
                vals.insert("kw".to_string(), kw);
                let (r, cc, src) = row_source("kw", flat(d));
                c.weight("kw", r, cc, src, &vals);
                args.extend(["nk", "kw", "nv", "keep"]);
            }
            args.push("o");
            c.call(&k, None, &args);
            c.expect_row("o", flat(heads * d), &want);
            if fused {
                let (r, cc, v) = cache_dev(&kc, kv, cap, d);
                c.expect_all("k", r, cc, v);
                let (r, cc, v) = cache_dev(&vc, kv, cap, d);
                c.expect_all("v", r, cc, v);
            }
            b.cases.push(c);
        }
    }
}

/// Cache `[kv, cap, d]` → device `[kv * cap_t * 32, d]`.
pub(super) fn cache_dev(v: &[f32], kv: usize, cap: usize, d: usize) -> (usize, usize, Vec<f32>) {
    let capp = cap.div_ceil(32) * 32;
    let mut out = vec![0.0; kv * capp * d];
    for h in 0..kv {
        for s in 0..cap {
            out[(h * capp + s) * d..(h * capp + s + 1) * d]
                .copy_from_slice(&v[(h * cap + s) * d..(h * cap + s + 1) * d]);
        }
    }
    (kv * capp, d, out)
}

pub(super) fn rope_cases(b: &mut Bundle, rng: &mut Rng) {
    let eps = 1e-6;
    // q norm + partial rotary (proportional RoPE: 8 of 32 pairs) at position 37.
    let spec = RopeSpec {
        theta: 1_000_000.0,
        head_dim: 64,
        rotated_pairs: 8,
        factor: 1.0,
    };
    let (heads, d, p) = (4, 64, 37);
    let mut c = Case::new("norm_rope_4x64_partial");
    let x = rng.normal(heads * d, 2.0);
    let w = rng.range(d, 0.5, 1.5);
    let want = f(&eval(
        &Op::NormRope {
            eps,
            rope: spec.clone(),
        },
        &[&t2(&[1, heads, d], &x), &t2(&[d], &w), &pos(p)],
    )
    .unwrap()[0]);
    let k = b.k(kernels::norm_rope(&b.t, "test", heads, d / 32, d, Some(eps)));
    c.act("x", flat(heads * d), &x);
    let vals = BTreeMap::from([("w".to_string(), w)]);
    let (r, cc, src) = row_source("w", flat(d));
    c.weight("w", r, cc, src, &vals);
    rope_tables(&mut c, &spec, p as usize);
    sel_keep(&mut c);
    position(&mut c, p as usize, 1);
    c.zeros("y", flat(heads * d));
    c.call(&k, None, &["x", "w", "cos", "sin", "rot", "sel", "pos", "y"]);
    c.expect_row("y", flat(heads * d), &want);
    b.cases.push(c);
    // RoPE alone, head_dim 256, full rotary.
    let spec = RopeSpec {
        theta: 10_000.0,
        head_dim: 256,
        rotated_pairs: 128,
        factor: 1.0,
    };
    let (heads, d, p) = (2, 256, 5);
    let mut c = Case::new("rope_2x256");
    let x = rng.normal(heads * d, 1.0);
    let want = f(&eval(&Op::Rope { rope: spec.clone() }, &[&t2(&[1, heads, d], &x), &pos(p)]).unwrap()[0]);
    let k = b.k(kernels::norm_rope(&b.t, "test", heads, d / 32, d, None));
    c.act("x", flat(heads * d), &x);
    rope_tables(&mut c, &spec, p as usize);
    sel_keep(&mut c);
    position(&mut c, p as usize, 1);
    c.zeros("y", flat(heads * d));
    c.call(&k, None, &["x", "cos", "sin", "rot", "sel", "pos", "y"]);
    c.expect_row("y", flat(heads * d), &want);
    b.cases.push(c);
}

pub(super) fn kv_cases(b: &mut Bundle, rng: &mut Rng) {
    let eps = 1e-6;
    // (name, mode, kv heads, capacity, head_dim, position): ring wrap-around, a slot in the
    // second tile row, a 512-wide head.
    for (name, mode, kv, cap, d, p) in [
        ("rope_kv_write_wrap", "rope", 2, 15, 32, 20),
        ("norm_kv_write_tile_row_1", "norm", 2, 40, 256, 75),
        ("kv_write_512", "plain", 1, 64, 512, 33),
    ] {
        let mut c = Case::new(name);
        let cache = rng.normal(kv * cap * d, 1.0);
        let new = rng.normal(kv * d, 2.0);
        let w = rng.range(d, 0.5, 1.5);
        let spec = RopeSpec {
            theta: 10_000.0,
            head_dim: d,
            rotated_pairs: d / 2,
            factor: 1.0,
        };
        let kv_mode = match mode {
            "rope" => KvMode::Rope,
            "norm" => KvMode::Norm,
            _ => KvMode::Plain,
        };
        let op = match mode {
            "rope" => Op::RopeKvWrite {
                eps,
                rope: spec.clone(),
            },
            "norm" => Op::NormKvWrite { eps },
            _ => Op::KvWrite,
        };
        let ct = t2(&[kv, cap, d], &cache);
        let nt = t2(&[1, kv, d], &new);
        let wt = t2(&[d], &w);
        let pt = pos(p);
        let operands: Vec<&Tensor> = match mode {
            "rope" => vec![&ct, &nt, &wt, &pt],
            _ => vec![&ct, &nt, &pt],
        };
        let want = f(&eval(&op, &operands).unwrap()[0]);
        let k = b.k(kernels::kv_write(&b.t, "test", kv_mode, kv, cap, d / 32, d, eps, 1));
        let (r, cc, v) = cache_dev(&cache, kv, cap, d);
        c.tensor("cache", r, cc, v);
        c.act("new", flat(kv * d), &new);
        let mut args = vec!["cache", "new"];
        if mode == "rope" {
            let vals = BTreeMap::from([("w".to_string(), w.clone())]);
            let (r, cc, src) = row_source("w", flat(d));
            c.weight("w", r, cc, src, &vals);
            rope_tables(&mut c, &spec, p as usize);
            args.extend(["w", "cos", "sin", "rot"]);
        }
        sel_keep(&mut c);
        position(&mut c, p as usize, cap);
        args.extend(["sel", "keep", "pos"]);
        c.call(&k, None, &args);
        let (r, cc, v) = cache_dev(&want, kv, cap, d);
        c.expect_all("cache", r, cc, v);
        b.cases.push(c);
    }
}

/// K and V writes in one launch (`kv_write_pair`), head_dim 64, ring of 15 wrapped at position 20.
pub(super) fn kv_pair_case(b: &mut Bundle, rng: &mut Rng) {
    let eps = 1e-6;
    let (kv, cap, d, p) = (2, 15, 64, 20);
    let spec = RopeSpec {
        theta: 10_000.0,
        head_dim: d,
        rotated_pairs: d / 2,
        factor: 1.0,
    };
    let mut c = Case::new("kv_write_pair_wrap");
    let (kc, vc) = (rng.normal(kv * cap * d, 1.0), rng.normal(kv * cap * d, 1.0));
    let (kn, vn) = (rng.normal(kv * d, 2.0), rng.normal(kv * d, 2.0));
    let w = rng.range(d, 0.5, 1.5);
    let pt = pos(p);
    let want_k = f(&eval(
        &Op::RopeKvWrite {
            eps,
            rope: spec.clone(),
        },
        &[&t2(&[kv, cap, d], &kc), &t2(&[1, kv, d], &kn), &t2(&[d], &w), &pt],
    )
    .unwrap()[0]);
    let want_v = f(&eval(
        &Op::NormKvWrite { eps },
        &[&t2(&[kv, cap, d], &vc), &t2(&[1, kv, d], &vn), &pt],
    )
    .unwrap()[0]);
    let k = b.k(kernels::kv_write_pair(&b.t, "test", kv, cap, d / 32, d, eps, 1));
    let (r, cc, v) = cache_dev(&kc, kv, cap, d);
    c.tensor("cache", r, cc, v);
    let (r, cc, v) = cache_dev(&vc, kv, cap, d);
    c.tensor("cache_v", r, cc, v);
    c.act("new", flat(kv * d), &kn);
    c.act("new_v", flat(kv * d), &vn);
    let vals = BTreeMap::from([("w".to_string(), w)]);
    let (r, cc, src) = row_source("w", flat(d));
    c.weight("w", r, cc, src, &vals);
    rope_tables(&mut c, &spec, p as usize);
    sel_keep(&mut c);
    position(&mut c, p as usize, cap);
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

pub(super) fn attention_cases(b: &mut Bundle, rng: &mut Rng) {
    // (name, heads, kv heads, head_dim, capacity, window, position): sliding window over a
    // wrapped ring buffer; GQA 8:1 with head_dim 512, causal, part of the cache unwritten;
    // a capacity that is not a multiple of 32.
    for (name, heads, kv, d, cap, window, p) in [
        ("attention_sliding_256", 4, 2, 256, 15, Some(8), 20i64),
        ("attention_full_512_gqa8", 8, 1, 512, 64, None, 40),
        ("attention_full_cap40", 4, 2, 64, 40, None, 39),
        ("attention_mha_sliding_128", 2, 2, 128, 48, Some(20), 70),
    ] {
        let mut c = Case::new(name);
        // Scores of a few units (like normalized Gemma q/k), so bf16 rounding of q and k moves
        // the softmax by rounding error only.
        let q = rng.normal(heads * d, 2.0 / (d as f32).sqrt());
        let kc = rng.normal(kv * cap * d, 1.0);
        let vc = rng.normal(kv * cap * d, 1.0);
        let op = Op::Attention { window, scale: 1.0 };
        let want = f(&eval(
            &op,
            &[
                &t2(&[1, heads, d], &q),
                &t2(&[kv, cap, d], &kc),
                &t2(&[kv, cap, d], &vc),
                &pos(p as i32),
            ],
        )
        .unwrap()[0]);
        let k = b.k(kernels::attention(&b.t, "test", heads, kv, cap, d / 32, 1.0, window));
        c.act("q", flat(heads * d), &q);
        let (r, cc, v) = cache_dev(&kc, kv, cap, d);
        c.tensor("k", r, cc, v);
        let (r, cc, v) = cache_dev(&vc, kv, cap, d);
        c.tensor("v", r, cc, v);
        let width = cap.div_ceil(32) * 32;
        c.tensor("mask", 1, width, mask_row(p, cap, window, width));
        let sel = Prepared {
            name: "sel".into(),
            rows: 1024,
            cols: 32,
            host: false,
            source: Source::KvSelect,
        };
        let sel = weights::values(&sel, &|_: &str| Err("no weights".to_string())).unwrap();
        c.tensor("sel", 1024, 32, sel);
        c.zeros("o", flat(heads * d));
        c.call(&k, None, &["q", "k", "v", "mask", "sel", "o"]);
        c.expect_row("o", flat(heads * d), &want);
        b.cases.push(c);
    }
}
