//! Sandwich-norm matmul cases (`kernels::sandwich_matmul`): the norm step and the matmul launch
//! after it in one kernel; the expectation is the IR ops one after the other.

use kernels::{Sandwich, SandwichBody};

use super::*;

pub(super) fn sandwich_cases(b: &mut Bundle, rng: &mut Rng) {
    let eps = 1e-6;
    let h = 128;
    let l = flat(h);
    let pro = |pre, scaled| Sandwich {
        kt: h / 32,
        n: h,
        eps,
        pre,
        scaled,
    };
    // The residual stream, the block output and the norm weights (random, so a missing norm or
    // a swapped weight shows).
    let res = rng.normal(h, 1.0);
    let hh = rng.normal(h, 3.0);
    let w_post = rng.range(h, 0.5, 1.5);
    let w_pre = rng.range(h, 0.5, 1.5);
    let scale = 0.7f32;
    let (rt, ht, wat, wbt) = (t2(&[1, h], &res), t2(&[1, h], &hh), t2(&[h], &w_post), t2(&[h], &w_pre));
    let mut vals = BTreeMap::from([
        ("w_post".to_string(), w_post.clone()),
        ("w_pre".to_string(), w_pre.clone()),
        ("scale".to_string(), vec![scale]),
    ]);
    let operands = |c: &mut Case, vals: &BTreeMap<String, Vec<f32>>, pre: bool, scaled: bool| {
        c.act("res", l, &res);
        c.act("h", l, &hh);
        let mut args = vec!["res", "h", "w_post"];
        let (r, cc, src) = row_source("w_post", l);
        c.weight("w_post", r, cc, src, vals);
        if pre {
            let (r, cc, src) = row_source("w_pre", l);
            c.weight("w_pre", r, cc, src, vals);
            args.push("w_pre");
        }
        if scaled {
            c.weight("scale", 1, 32, Source::Scalar { key: "scale".into() }, vals);
            args.push("scale");
        }
        c.zeros("s", l);
        args
    };

    // norm_add_norm, then the gate/up GeGLU (the MLP input).
    let i = 256;
    let (wg, wu) = (rng.normal(i * h, 0.2), rng.normal(i * h, 0.2));
    vals.insert("wg".into(), wg.clone());
    vals.insert("wu".into(), wu.clone());
    let nan = eval(&Op::NormAddNorm { eps }, &[&rt, &ht, &wat, &wbt]).unwrap();
    let (y, s) = (&nan[0], &nan[1]);
    let g = eval(&Op::MatMul, &[y, &t2(&[i, h], &wg)]).unwrap().remove(0);
    let u = eval(&Op::MatMul, &[y, &t2(&[i, h], &wu)]).unwrap().remove(0);
    let want = f(&eval(&Op::GeluMul, &[&g, &u]).unwrap()[0]);
    let mut c = Case::new("sandwich_norm_add_norm_geglu_128x256");
    let k = b.k(kernels::sandwich_matmul(
        &b.t,
        "test",
        pro(true, false),
        &SandwichBody::Geglu { nt: i / 32 },
    ));
    let mut args = operands(&mut c, &vals, true, false);
    for key in ["wg", "wu"] {
        let (r, cc, src) = transposed(i, h, l, flat(i), key);
        c.weight(key, r, cc, src, &vals);
        args.push(key);
    }
    c.zeros("y", flat(i));
    args.extend(["s", "y"]);
    c.call(&k, None, &args);
    c.expect_row("s", l, &f(s));
    c.expect_row("y", flat(i), &want);
    b.cases.push(c);

    // norm_add, then the per-layer-input gate on the new residual itself (layer 2 of 4 x 64).
    let pw = 64;
    let e = rng.normal(4 * pw, 1.0);
    let w = rng.normal(pw * h, 0.2);
    vals.insert("w".into(), w.clone());
    let s = eval(&Op::NormAdd { eps }, &[&rt, &ht, &wat]).unwrap().remove(0);
    let g = eval(&Op::MatMul, &[&s, &t2(&[pw, h], &w)]).unwrap().remove(0);
    let want = f(&eval(&Op::GeluMul, &[&g, &t2(&[1, pw], &e[2 * pw..3 * pw])]).unwrap()[0]);
    let mut c = Case::new("sandwich_norm_add_gated_128x64_layer2");
    let k = b.k(kernels::sandwich_matmul(
        &b.t,
        "test",
        pro(false, false),
        &SandwichBody::Gated {
            nt: pw / 32,
            epilogue: ("gelu".into(), kernels::gelu_expr("acc")),
        },
    ));
    let mut args = operands(&mut c, &vals, false, false);
    let (r, cc, src) = transposed(pw, h, l, flat(pw), "w");
    c.weight("w", r, cc, src, &vals);
    c.act("e", flat(4 * pw), &e);
    let mut off = vec![0.0; 32];
    off[0] = (2 * pw / 32) as f32;
    c.tensor("off", 1, 32, off);
    c.zeros("y", flat(pw));
    args.extend(["w", "e", "off", "s", "y"]);
    c.call(&k, None, &args);
    c.expect_row("s", l, &f(&s));
    c.expect_row("y", flat(pw), &want);
    b.cases.push(c);

    // The end of a layer (norm_add, layer scalar, next input norm), then the next layer's q/k/v
    // projections into three tensors, on a 3 x 2 grid (nodes with two panels, and idle ones).
    let small_grid = TtTarget {
        grid: Grid { cols: 3, rows: 2 },
        ..b.t.clone()
    };
    let normed = eval(&Op::NormAdd { eps }, &[&rt, &ht, &wat]).unwrap().remove(0);
    let s = eval(&Op::Mul, &[&normed, &t2(&[1], &[scale])]).unwrap().remove(0);
    let x = eval(&Op::RmsNorm { eps }, &[&s, &wbt]).unwrap().remove(0);
    let mut c = Case::new("sandwich_scaled_norm_add_norm_qkv_128x128_64_64");
    let mut args = operands(&mut c, &vals, true, true);
    let outs = [("q", 128), ("k", 64), ("v", 64)];
    let mut parts = Vec::new();
    let mut wants = Vec::new();
    for (name, n) in outs {
        let w = rng.normal(n * h, 0.1);
        wants.push(f(&eval(&Op::MatMul, &[&x, &t2(&[n, h], &w)]).unwrap()[0]));
        vals.insert(name.to_string(), w);
        let (_, cc, src) = transposed(n, h, l, flat(n), name);
        parts.push((cc, src));
    }
    let cols = parts.iter().map(|(n, _)| n).sum::<usize>();
    c.weight("wqkv", h, cols, Source::Concat { parts }, &vals);
    let k = b.k(kernels::sandwich_matmul(
        &small_grid,
        "test",
        pro(true, true),
        &SandwichBody::Matmul {
            parts: outs.iter().map(|(_, n)| n / 32).collect(),
        },
    ));
    args.extend(["wqkv", "s"]);
    for ((name, n), want) in outs.iter().zip(&wants) {
        c.zeros(name, flat(*n));
        c.expect_row(name, flat(*n), want);
        args.push(name);
    }
    c.call(&k, None, &args);
    c.expect_row("s", l, &f(&s));
    b.cases.push(c);
}
