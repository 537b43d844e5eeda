//! Dense kernel cases: matmuls (plain, split, gated, GeGLU, logits head), norms and elementwise ops.

use super::*;

pub(super) fn matmul_cases(b: &mut Bundle, rng: &mut Rng) {
    // x [1, 256] @ W[384, 256]^T: 12 output blocks over 12 nodes.
    for (name, k_in, xin, n_out, out) in [
        ("matmul_256x384", 256, flat(256), 384, flat(384)),
        // Output in per-layer segments of 16 (PLE projection) and a segmented input.
        (
            "matmul_segmented_out",
            128,
            flat(128),
            96,
            DevLayout {
                rows: 1,
                groups: 6,
                width: 16,
            },
        ),
        (
            "matmul_segmented_in",
            48,
            DevLayout {
                rows: 1,
                groups: 3,
                width: 16,
            },
            64,
            flat(64),
        ),
        // On a 2x3 grid: two output blocks per node, K in two steps, two idle nodes.
        ("matmul_small_grid_idle_nodes", 512, flat(512), 224, flat(224)),
    ] {
        let target = if name.contains("small_grid") {
            TtTarget {
                grid: Grid { cols: 3, rows: 2 },
                ..b.t.clone()
            }
        } else {
            b.t.clone()
        };
        let mut c = Case::new(name);
        let x = rng.normal(k_in, 1.0);
        let w = rng.normal(n_out * k_in, (k_in as f32).powf(-0.5));
        let vals = BTreeMap::from([("w".to_string(), w.clone())]);
        let want = f(&eval(&Op::MatMul, &[&t2(&[1, k_in], &x), &t2(&[n_out, k_in], &w)]).unwrap()[0]);
        let k = b.k(kernels::matmul(
            &target,
            "test",
            1,
            xin.col_tiles(),
            out.col_tiles(),
            None,
        ));
        c.act("x", xin, &x);
        let (r, cc, src) = transposed(n_out, k_in, xin, out, "w");
        c.weight("w", r, cc, src, &vals);
        c.zeros("y", out);
        c.call(&k, None, &["x", "w", "y"]);
        c.expect_row("y", out, &want);
        b.cases.push(c);
    }
    // Fused gate/up + GeGLU.
    let (h, i) = (128, 256);
    let mut c = Case::new("geglu_matmul_128x256");
    let x = rng.normal(h, 1.0);
    let (wg, wu) = (rng.normal(i * h, 0.2), rng.normal(i * h, 0.2));
    let vals = BTreeMap::from([("wg".to_string(), wg.clone()), ("wu".to_string(), wu.clone())]);
    let g = eval(&Op::MatMul, &[&t2(&[1, h], &x), &t2(&[i, h], &wg)])
        .unwrap()
        .remove(0);
    let u = eval(&Op::MatMul, &[&t2(&[1, h], &x), &t2(&[i, h], &wu)])
        .unwrap()
        .remove(0);
    let want = f(&eval(&Op::GeluMul, &[&g, &u]).unwrap()[0]);
    let k = b.k(kernels::geglu_matmul(&b.t, "test", 1, h / 32, i / 32));
    c.act("x", flat(h), &x);
    let (r, cc, src) = transposed(i, h, flat(h), flat(i), "wg");
    c.weight("wg", r, cc, src, &vals);
    let (r, cc, src) = transposed(i, h, flat(h), flat(i), "wu");
    c.weight("wu", r, cc, src, &vals);
    c.zeros("y", flat(i));
    c.call(&k, None, &["x", "wg", "wu", "y"]);
    c.expect_row("y", flat(i), &want);
    b.cases.push(c);
    // Final norm + tied LM head + soft-cap (pre-cap logits reach about +-25): on the full grid
    // (one panel per node), and on a 2x3 grid where nodes take several panels and two idle.
    let small_grid = TtTarget {
        grid: Grid { cols: 3, rows: 2 },
        ..b.t.clone()
    };
    for (target, h, v, name) in [
        (b.t.clone(), 256, 1024, "logits_head_256x1024_softcap30"),
        (small_grid, 128, 224, "logits_head_small_grid_idle_nodes"),
    ] {
        let mut c = Case::new(name);
        let x = rng.normal(h, 1.0);
        let g = rng.range(h, 4.0, 8.0);
        let table = rng.normal(v * h, 0.1);
        let vals = BTreeMap::from([("g".to_string(), g.clone()), ("table".to_string(), table.clone())]);
        let want = f(&eval(
            &Op::LogitsHead {
                eps: 1e-6,
                cap: Some(30.0),
            },
            &[&t2(&[1, h], &x), &t2(&[h], &g), &t2(&[v, h], &table)],
        )
        .unwrap()[0]);
        let epi = Some(("softcap", kernels::softcap_expr("acc", 30.0)));
        let k = b.k(kernels::logits_head(&target, "test", 1, h / 32, v / 32, h, 1e-6, epi));
        c.act("x", flat(h), &x);
        let (r, cc, src) = row_source("g", flat(h));
        c.weight("g", r, cc, src, &vals);
        let (r, cc, src) = transposed(v, h, flat(h), flat(v), "table");
        c.weight("table", r, cc, src, &vals);
        c.zeros("y", flat(v));
        c.call(&k, None, &["x", "g", "table", "y"]);
        c.expect_row("y", flat(v), &want);
        b.cases.push(c);
    }
}

pub(super) fn norm_cases(b: &mut Bundle, rng: &mut Rng) {
    let eps = 1e-6;
    // rms_norm: whole row with weight; per-layer segments of 16 with weight; per-head, no weight.
    for (name, shape, has_w) in [
        ("rms_norm_640", vec![1, 640], true),
        ("rms_norm_6x16", vec![1, 6, 16], true),
        ("rms_norm_4x64_unit", vec![1, 4, 64], false),
    ] {
        let mut c = Case::new(name);
        let n = *shape.last().unwrap();
        let total: usize = shape[1..].iter().product();
        let l = DevLayout {
            rows: 1,
            groups: total / n,
            width: n,
        }
        .canonical();
        let x = rng.normal(total, 2.0);
        let w = rng.range(n, 0.5, 1.5);
        let vals = BTreeMap::from([("w".to_string(), w.clone())]);
        let xt = t2(&shape, &x);
        let wt = t2(&[n], &w);
        let ops: Vec<&Tensor> = if has_w { vec![&xt, &wt] } else { vec![&xt] };
        let want = f(&eval(&Op::RmsNorm { eps }, &ops).unwrap()[0]);
        let (groups, st, wl) = if l.width.is_multiple_of(32) {
            (total / n, n / 32, flat(n))
        } else {
            (
                l.groups,
                l.seg_tiles(),
                DevLayout {
                    rows: 1,
                    groups: 1,
                    width: n,
                },
            )
        };
        let k = b.k(kernels::norm(
            &b.t,
            NormKind::RmsNorm,
            "test",
            1,
            groups,
            st,
            n,
            eps,
            has_w,
        ));
        c.act("x", l, &x);
        c.zeros("y", l);
        if has_w {
            let (r, cc, src) = row_source("w", wl);
            c.weight("w", r, cc, src, &vals);
            c.call(&k, None, &["x", "w", "y"]);
        } else {
            c.call(&k, None, &["x", "y"]);
        }
        c.expect_row("y", l, &want);
        b.cases.push(c);
    }
    // The fused residual norms over one row of 256.
    let h = 256;
    let l = flat(h);
    let (a, x) = (rng.normal(h, 1.0), rng.normal(h, 3.0));
    let (w1, w2) = (rng.range(h, 0.5, 1.5), rng.range(h, 0.5, 1.5));
    let vals = BTreeMap::from([("w1".to_string(), w1.clone()), ("w2".to_string(), w2.clone())]);
    let (at, xt, w1t, w2t) = (t2(&[1, h], &a), t2(&[1, h], &x), t2(&[h], &w1), t2(&[h], &w2));
    let fused: [(NormKind, Op, Vec<&Tensor>, Vec<&str>); 3] = [
        (
            NormKind::AddRmsNorm,
            Op::AddRmsNorm { eps },
            vec![&at, &xt, &w1t],
            vec!["y", "s"],
        ),
        (
            NormKind::NormAddNorm,
            Op::NormAddNorm { eps },
            vec![&at, &xt, &w1t, &w2t],
            vec!["y", "s"],
        ),
        (NormKind::NormAdd, Op::NormAdd { eps }, vec![&at, &xt, &w1t], vec!["s"]),
    ];
    // Whole rows, and streamed in 4 chunks of 2 tiles (a target with little L1).
    let small = TtTarget {
        l1_bytes: 24 * 2048,
        ..b.t.clone()
    };
    for (target, tag) in [(b.t.clone(), ""), (small, "_streamed")] {
        for (family, op, operands, outs) in &fused {
            let mut c = Case::new(&format!("{}_{h}{tag}", family.name()));
            let want = eval(op, operands).unwrap();
            let k = b.k(kernels::norm(&target, *family, "test", 1, 1, h / 32, h, eps, true));
            assert_eq!(k.template() == "norm_stream", !tag.is_empty(), "{family:?}");
            c.act("a", l, &a);
            c.act("x", l, &x);
            let mut args = vec!["a", "x"];
            for key in ["w1", "w2"].iter().take(operands.len() - 2) {
                let (r, cc, src) = row_source(key, l);
                c.weight(key, r, cc, src, &vals);
                args.push(key);
            }
            for (o, t) in outs.iter().zip(&want) {
                c.zeros(o, l);
                args.push(o);
                c.expect_row(o, l, &f(t));
            }
            c.call(&k, None, &args);
            b.cases.push(c);
        }
    }
    // The layer scalar fused in: s = (a + rms(x) * w1) * scale, and y = rms(s) * w2 of the next norm.
    let scale = 0.6_f32;
    let st = t2(&[1], &[scale]);
    let sv = BTreeMap::from([("scale".to_string(), vec![scale])]);
    let normed = eval(&Op::NormAdd { eps }, &[&at, &xt, &w1t]).unwrap().remove(0);
    let scaled = eval(&Op::Mul, &[&normed, &st]).unwrap().remove(0);
    let next = eval(&Op::RmsNorm { eps }, &[&scaled, &w2t]).unwrap().remove(0);
    for (family, with_next) in [(NormKind::NormAdd, false), (NormKind::NormAddNorm, true)] {
        let mut c = Case::new(&format!("{}_{h}_scaled", family.name()));
        let k = b.k(kernels::norm(&b.t, family, "test", 1, 1, h / 32, h, eps, true).and_then(|k| k.scaled(&b.t)));
        c.act("a", l, &a);
        c.act("x", l, &x);
        let mut args = vec!["a", "x"];
        let keys: &[&str] = if with_next { &["w1", "w2"] } else { &["w1"] };
        for key in keys {
            let (r, cc, src) = row_source(key, l);
            c.weight(key, r, cc, src, &vals);
            args.push(key);
        }
        c.weight("scale", 1, 32, Source::Scalar { key: "scale".into() }, &sv);
        args.push("scale");
        if with_next {
            c.zeros("y", l);
            args.push("y");
            c.expect_row("y", l, &f(&next));
        }
        c.zeros("s", l);
        args.push("s");
        c.expect_row("s", l, &f(&scaled));
        c.call(&k, None, &args);
        b.cases.push(c);
    }
    // Streamed rms_norm, with and without weight, over per-head segments.
    for has_w in [true, false] {
        let (heads, d) = (2, 256);
        let mut c = Case::new(&format!("rms_norm_streamed_{}", if has_w { "w" } else { "unit" }));
        let x = rng.normal(heads * d, 2.0);
        let w = rng.range(d, 0.5, 1.5);
        let (xt, wt) = (t2(&[1, heads, d], &x), t2(&[d], &w));
        let ops: Vec<&Tensor> = if has_w { vec![&xt, &wt] } else { vec![&xt] };
        let want = f(&eval(&Op::RmsNorm { eps }, &ops).unwrap()[0]);
        let small = TtTarget {
            l1_bytes: 12 * 2048,
            ..b.t.clone()
        };
        let k = b.k(kernels::norm(
            &small,
            NormKind::RmsNorm,
            "test",
            1,
            heads,
            d / 32,
            d,
            eps,
            has_w,
        ));
        assert_eq!(k.template(), "norm_stream");
        c.act("x", flat(heads * d), &x);
        c.zeros("y", flat(heads * d));
        if has_w {
            let vals = BTreeMap::from([("w".to_string(), w)]);
            let (r, cc, src) = row_source("w", flat(d));
            c.weight("w", r, cc, src, &vals);
            c.call(&k, None, &["x", "w", "y"]);
        } else {
            c.call(&k, None, &["x", "y"]);
        }
        c.expect_row("y", flat(heads * d), &want);
        b.cases.push(c);
    }
}

/// (name, op, logical shape, operand modes, block expression, layout)
type EltwiseCase = (&'static str, Op, Vec<usize>, Vec<Mode>, String, DevLayout);

pub(super) fn eltwise_cases(b: &mut Bundle, rng: &mut Rng) {
    let seg = DevLayout {
        rows: 1,
        groups: 6,
        width: 16,
    };
    let gelu = |v: &str| kernels::gelu_expr(v);
    let cases: Vec<EltwiseCase> = vec![
        (
            "add_segmented",
            Op::Add,
            vec![1, 6, 16],
            vec![Mode::Full, Mode::Full],
            "a_v + b_v".into(),
            seg,
        ),
        (
            "mul_scalar",
            Op::Mul,
            vec![1, 256],
            vec![Mode::Full, Mode::Scalar],
            "a_v * b_v".into(),
            flat(256),
        ),
        (
            "mul_row",
            Op::Mul,
            vec![1, 256],
            vec![Mode::Full, Mode::Row],
            "a_v * b_v".into(),
            flat(256),
        ),
        (
            "scale",
            Op::Scale { factor: 0.088_388_35 },
            vec![1, 96],
            vec![Mode::Full],
            format!("a_v * ttl.block.fill({}, shp)", kernels::py_f32(0.088_388_35)),
            flat(96),
        ),
        (
            "gelu_tanh",
            Op::GeluTanh,
            vec![1, 512],
            vec![Mode::Full],
            gelu("a_v"),
            flat(512),
        ),
        (
            "softcap",
            Op::Softcap { cap: 30.0 },
            vec![1, 512],
            vec![Mode::Full],
            kernels::softcap_expr("a_v", 30.0),
            flat(512),
        ),
        (
            "gelu_mul",
            Op::GeluMul,
            vec![1, 256],
            vec![Mode::Full, Mode::Full],
            format!("{} * b_v", gelu("a_v")),
            flat(256),
        ),
    ];
    for (name, op, shape, modes, expr, l) in cases {
        let mut c = Case::new(&format!("eltwise_{name}"));
        let n: usize = shape.iter().product();
        let scale = if matches!(op, Op::Softcap { .. }) { 40.0 } else { 2.0 };
        let a = rng.normal(n, scale);
        let mut operands = vec![t2(&shape, &a)];
        c.act("a", l, &a);
        let mut args = vec!["a"];
        let mut vals = BTreeMap::new();
        match modes.get(1) {
            Some(Mode::Full) => {
                let bb = rng.normal(n, 1.0);
                operands.push(t2(&shape, &bb));
                c.act("b", l, &bb);
                args.push("b");
            }
            Some(Mode::Scalar) => {
                let bb = rng.range(1, 0.5, 1.0);
                operands.push(t2(&[1], &bb));
                vals.insert("b".to_string(), bb);
                c.weight("b", 1, 32, Source::Scalar { key: "b".into() }, &vals);
                args.push("b");
            }
            Some(Mode::Row) => {
                let bb = rng.range(n, 0.5, 1.5);
                operands.push(t2(&[n], &bb));
                vals.insert("b".to_string(), bb);
                let (r, cc, src) = row_source("b", l);
                c.weight("b", r, cc, src, &vals);
                args.push("b");
            }
            None => {}
        }
        let refs: Vec<&Tensor> = operands.iter().collect();
        let want = f(&eval(&op, &refs).unwrap()[0]);
        let k = b.k(kernels::eltwise(
            &b.t,
            format!("{name}_{}", l.col_tiles() * 32),
            "test",
            expr,
            &modes,
            1,
            l.col_tiles(),
        ));
        c.zeros("y", l);
        args.push("y");
        c.call(&k, None, &args);
        c.expect_row("y", l, &want);
        b.cases.push(c);
    }
    // q/k/v projections of one input in one launch: outputs of 4x48 (head segments), 64 and 64.
    let mut c = Case::new("split_matmul_128x4x48_64_64");
    let h = 128;
    let x = rng.normal(h, 1.0);
    let lq = DevLayout {
        rows: 1,
        groups: 4,
        width: 48,
    };
    let outs = [("q", lq), ("k", flat(64)), ("v", flat(64))];
    let mut vals = BTreeMap::new();
    let mut parts = Vec::new();
    c.act("x", flat(h), &x);
    for (name, l) in outs {
        let w = rng.normal(l.cols() * h, 0.1);
        let want = f(&eval(&Op::MatMul, &[&t2(&[1, h], &x), &t2(&[l.cols(), h], &w)]).unwrap()[0]);
        vals.insert(name.to_string(), w);
        let (_, cc, src) = transposed(l.cols(), h, flat(h), l, name);
        parts.push((cc, src));
        c.zeros(name, l);
        c.expect_row(name, l, &want);
    }
    let cols = parts.iter().map(|(n, _)| n).sum::<usize>();
    c.weight("w", h, cols, Source::Concat { parts }, &vals);
    let k = b.k(kernels::split_matmul(&b.t, "test", 1, h / 32, &[lq.col_tiles(), 2, 2]));
    c.call(&k, None, &["x", "w", "q", "k", "v"]);
    b.cases.push(c);
    // The per-layer-input gate: gelu(x @ W) * e[layer 2 of 4 x 64], the offset read at run time.
    let mut c = Case::new("gated_matmul_128x64_layer2");
    let (h, p) = (128, 64);
    let x = rng.normal(h, 1.0);
    let e = rng.normal(4 * p, 1.0);
    let w = rng.normal(p * h, 0.2);
    let vals = BTreeMap::from([("w".to_string(), w.clone())]);
    let g = eval(&Op::MatMul, &[&t2(&[1, h], &x), &t2(&[p, h], &w)])
        .unwrap()
        .remove(0);
    let want = f(&eval(&Op::GeluMul, &[&g, &t2(&[1, p], &e[2 * p..3 * p])]).unwrap()[0]);
    let k = b.k(kernels::gated_matmul(
        &b.t,
        "test",
        1,
        h / 32,
        p / 32,
        Some(("gelu", kernels::gelu_expr("acc"))),
    ));
    c.act("x", flat(h), &x);
    let (r, cc, src) = transposed(p, h, flat(h), flat(p), "w");
    c.weight("w", r, cc, src, &vals);
    c.act("e", flat(4 * p), &e);
    let mut off = vec![0.0; 32];
    off[0] = (2 * p / 32) as f32;
    c.tensor("off", 1, 32, off);
    c.zeros("y", flat(p));
    c.call(&k, None, &["x", "w", "e", "off", "y"]);
    c.expect_row("y", flat(p), &want);
    b.cases.push(c);
    // Tile-aligned slice of per-layer segments: layer 2 of [1, 6, 16].
    let mut c = Case::new("slice_layer2_of_6x16");
    let x = rng.normal(96, 1.0);
    let want = f(&eval(
        &Op::Slice {
            axis: 1,
            start: 2,
            end: 3,
        },
        &[&t2(&[1, 6, 16], &x)],
    )
    .unwrap()[0]);
    let out = DevLayout {
        rows: 1,
        groups: 1,
        width: 16,
    };
    let k = b.k(kernels::copy(&b.t, "test", 1, out.col_tiles()));
    c.act("x", seg, &x);
    c.zeros("y", out);
    let mut off = vec![0.0; 32];
    off[0] = (seg.dev_col(2 * 16) / 32) as f32;
    c.tensor("off", 1, 32, off);
    c.call(&k, None, &["x", "off", "y"]);
    c.expect_row("y", out, &want);
    b.cases.push(c);
}
