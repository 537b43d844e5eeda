//! Kernel-family test cases for the Tenstorrent backend: random inputs, the generated kernels
//! that the backend picks for them, and the expected outputs from the IR's reference semantics
//! (`gemma4c_ir::eval`). Written as a bundle (`kernels.py`, `sim_support.py`, `cases.json`,
//! `cases.safetensors`) that `tests/tt/test_kernels.py` runs in the simulator.
//!
//! Inputs and weights go through the same layout code as a real compile (`DevLayout`, the
//! prepared-weight sources), so a case checks the kernel *and* the layout it is fed with.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use gemma4c_backends::tt::kernels::{self, Kernel, KvMode, Mode, NormKind};
use gemma4c_backends::tt::layout::DevLayout;
use gemma4c_backends::tt::lower::{Prepared, Source};
use gemma4c_backends::tt::target::Grid;
use gemma4c_backends::tt::{weights, TtTarget};
use gemma4c_ir::eval::eval;
use gemma4c_ir::{Op, RopeSpec, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng as _, SeedableRng};
use serde_json::{json, Value};

/// Deterministic test inputs from a seeded `rand` generator (normal samples
/// by Box-Muller over its uniform draws; no distribution crate is needed for that).
pub struct Rng(StdRng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(StdRng::seed_from_u64(seed))
    }

    /// Uniform in (0, 1], so `ln` below is finite.
    pub fn uniform(&mut self) -> f64 {
        1.0 - self.0.random::<f64>()
    }

    pub fn normal(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u1, u2) = (self.uniform(), self.uniform());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std
            })
            .collect()
    }

    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        p.shuffle(&mut self.0);
        p
    }

    pub fn range(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * self.uniform() as f32).collect()
    }
}

struct Case {
    name: String,
    /// name -> (rows, cols, values) in device layout.
    tensors: Vec<(String, usize, usize, Vec<f32>)>,
    calls: Vec<Value>,
    outputs: Vec<Value>,
}

impl Case {
    fn new(name: &str) -> Case {
        Case {
            name: name.to_string(),
            tensors: Vec::new(),
            calls: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn tensor(&mut self, name: &str, rows: usize, cols: usize, v: Vec<f32>) {
        assert_eq!(v.len(), rows * cols, "{}: {name}", self.name);
        self.tensors.push((name.to_string(), rows, cols, v));
    }

    /// A logical `[1, cols]` activation row in layout `l` (one tile row).
    fn act(&mut self, name: &str, l: DevLayout, row: &[f32]) {
        let [rows, cols] = l.dev_shape();
        let mut v = vec![0.0; rows * cols];
        for (c, &x) in row.iter().enumerate() {
            v[l.dev_col(c)] = x;
        }
        self.tensor(name, rows, cols, v);
    }

    fn zeros(&mut self, name: &str, l: DevLayout) {
        let [rows, cols] = l.dev_shape();
        self.tensor(name, rows, cols, vec![0.0; rows * cols]);
    }

    /// A prepared weight, made by the backend's own preparation code from `values`.
    fn weight(&mut self, name: &str, rows: usize, cols: usize, source: Source, values: &BTreeMap<String, Vec<f32>>) {
        let p = Prepared {
            name: name.to_string(),
            rows,
            cols,
            host: false,
            source,
        };
        let reader = |k: &str| values.get(k).cloned().ok_or_else(|| format!("no test values for {k}"));
        let v = weights::values(&p, &reader).expect("prepare weight");
        self.tensor(name, rows, cols, v);
    }

    fn call(&mut self, kernel: &Kernel, instance: Option<usize>, args: &[&str]) {
        self.calls
            .push(json!({"kernel": kernel.name, "instance": instance, "args": args}));
    }

    /// Compare `tensor` with `expected` (a logical row in layout `l`) on the first `rows` rows.
    fn expect_row(&mut self, tensor: &str, l: DevLayout, row: &[f32]) {
        let e = format!("{tensor}.expected");
        self.act(&e, l, row);
        self.outputs.push(json!({"tensor": tensor, "expected": e, "rows": 1}));
    }

    fn expect_all(&mut self, tensor: &str, rows: usize, cols: usize, v: Vec<f32>) {
        let e = format!("{tensor}.expected");
        self.tensor(&e, rows, cols, v);
        self.outputs
            .push(json!({"tensor": tensor, "expected": e, "rows": Value::Null}));
    }
}

struct Bundle {
    t: TtTarget,
    kernels: Vec<Kernel>,
    cases: Vec<Case>,
}

impl Bundle {
    /// Registers a kernel (deduplicated) and returns it with its Python name.
    fn k(&mut self, k: Result<Kernel, gemma4c_backends::tt::TtError>) -> Kernel {
        let mut k = k.expect("kernel fits the target");
        if let Some(o) = self.kernels.iter().find(|o| o.family == k.family && o.ctx == k.ctx) {
            return o.clone();
        }
        let mut name = k.base.clone();
        let mut n = 2;
        while self.kernels.iter().any(|o| o.name == name) {
            name = format!("{}_{n}", k.base);
            n += 1;
        }
        k.name = name;
        self.kernels.push(k.clone());
        k
    }
}

fn f(t: &Tensor) -> Vec<f32> {
    t.as_f32().expect("f32 result").to_vec()
}

fn t2(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::f32(shape.to_vec(), v.to_vec())
}

fn pos(p: i32) -> Tensor {
    Tensor::i32([1], vec![p])
}

fn flat(n: usize) -> DevLayout {
    DevLayout::flat(1, n)
}

/// `W [n, k]` prepared as `W^T` for `x (layout xin) @ W^T -> y (layout out)`.
fn transposed(n: usize, k: usize, xin: DevLayout, out: DevLayout, key: &str) -> (usize, usize, Source) {
    let (xin, out) = (xin.canonical(), out.canonical());
    assert_eq!((out.cols(), xin.cols()), (n, k), "{key}");
    (
        xin.col_tiles() * 32,
        out.col_tiles() * 32,
        Source::Transposed {
            key: key.into(),
            xin,
            out,
        },
    )
}

fn row_source(key: &str, l: DevLayout) -> (usize, usize, Source) {
    let l = DevLayout { rows: 1, ..l }.canonical();
    (
        1,
        l.col_tiles() * 32,
        Source::Row {
            key: key.into(),
            layout: l,
        },
    )
}

/// The additive mask row model.py builds (`mask_row`), for the attention cases.
fn mask_row(pos: i64, capacity: usize, window: Option<usize>, width: usize) -> Vec<f32> {
    (0..width)
        .map(|j| {
            let age = (pos - j as i64).rem_euclid(capacity as i64);
            let ok = j < capacity && age <= pos && window.is_none_or(|w| age < w as i64);
            if ok {
                0.0
            } else {
                -1.0e9
            }
        })
        .collect()
}

fn matmul_cases(b: &mut Bundle, rng: &mut Rng) {
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

fn norm_cases(b: &mut Bundle, rng: &mut Rng) {
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

fn eltwise_cases(b: &mut Bundle, rng: &mut Rng) {
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

fn rope_tables(c: &mut Case, spec: &RopeSpec, p: usize) {
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
fn position(c: &mut Case, p: usize, capacity: usize) {
    let mut v = vec![0.0; 32 * 64];
    let slot = p % capacity;
    v[0] = (p / 32) as f32;
    v[1] = (p % 32) as f32;
    v[32] = (slot / 32) as f32;
    v[33] = (slot % 32) as f32;
    c.tensor("pos", 32, 64, v);
}

/// The 32 selection and keep tiles, whole (kernels index them at run time).
fn sel_keep(c: &mut Case) {
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

/// Cache `[kv, cap, d]` → device `[kv * cap_t * 32, d]`.
fn cache_dev(v: &[f32], kv: usize, cap: usize, d: usize) -> (usize, usize, Vec<f32>) {
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

fn rope_cases(b: &mut Bundle, rng: &mut Rng) {
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

fn kv_cases(b: &mut Bundle, rng: &mut Rng) {
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
fn kv_pair_case(b: &mut Bundle, rng: &mut Rng) {
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

fn attention_cases(b: &mut Bundle, rng: &mut Rng) {
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

/// Dense routing row from `moe_route`'s (weights, experts).
fn dense(route: &[Tensor], e: usize) -> Vec<f32> {
    let (w, ids) = (route[0].as_f32().unwrap(), route[1].as_i32().unwrap());
    let mut row = vec![0.0; e];
    for (x, &i) in w.iter().zip(ids) {
        row[i as usize] = *x;
    }
    row
}

fn moe_cases(b: &mut Bundle, rng: &mut Rng) {
    let eps = 1e-6;
    for (e, top_k) in [(8usize, 2usize), (40, 4)] {
        let mut c = Case::new(&format!("moe_route_{e}_top{top_k}"));
        // Distinct scores 0.3 apart: the top-k choice is not at the mercy of bf16 rounding.
        let scores = rng
            .permutation(e)
            .iter()
            .map(|&i| 0.3 * i as f32 - 2.0)
            .collect::<Vec<_>>();
        let pes = rng.range(e, 0.5, 1.5);
        let route = eval(&Op::MoeRoute { top_k }, &[&t2(&[1, e], &scores), &t2(&[e], &pes)]).unwrap();
        let k = b.k(kernels::moe_route(&b.t, "test", e, top_k));
        let vals = BTreeMap::from([("pes".to_string(), pes)]);
        c.act("scores", flat(e), &scores);
        let (r, cc, src) = row_source("pes", flat(e));
        c.weight("pes", r, cc, src, &vals);
        c.weight("pad", 1, e.div_ceil(32) * 32, Source::MoePad { experts: e }, &vals);
        c.zeros("y", flat(e));
        c.call(&k, None, &["scores", "pes", "pad", "y"]);
        c.expect_row("y", flat(e), &dense(&route, e));
        b.cases.push(c);
    }
    // Fused router: rms_norm(x) * scale @ proj^T * H^-1/2, then routing.
    let (h, e, top_k) = (128, 8, 2);
    let mut c = Case::new("moe_router_128_8_top2");
    let x = rng.normal(h, 1.0);
    let (scale, proj, pes) = (rng.range(h, 0.5, 1.5), rng.normal(e * h, 0.5), rng.range(e, 0.5, 1.5));
    let scalar = (h as f32).powf(-0.5);
    let route = eval(
        &Op::MoeRouter { eps, scalar, top_k },
        &[
            &t2(&[1, h], &x),
            &t2(&[h], &scale),
            &t2(&[e, h], &proj),
            &t2(&[e], &pes),
        ],
    )
    .unwrap();
    let vals = BTreeMap::from([
        ("scale".to_string(), scale),
        ("proj".to_string(), proj),
        ("pes".to_string(), pes),
    ]);
    let epi = Some((
        "scale",
        format!("acc * ttl.block.fill({}, shp)", kernels::py_f32(scalar)),
    ));
    let k1 = b.k(kernels::logits_head(&b.t, "test", 1, h / 32, 1, h, eps, epi));
    let k2 = b.k(kernels::moe_route(&b.t, "test", e, top_k));
    c.act("x", flat(h), &x);
    let (r, cc, src) = row_source("scale", flat(h));
    c.weight("scale", r, cc, src, &vals);
    let (r, cc, src) = transposed(e, h, flat(h), flat(e), "proj");
    c.weight("proj", r, cc, src, &vals);
    let (r, cc, src) = row_source("pes", flat(e));
    c.weight("pes", r, cc, src, &vals);
    c.weight("pad", 1, 32, Source::MoePad { experts: e }, &vals);
    c.zeros("scores", flat(e));
    c.zeros("y", flat(e));
    c.call(&k1, None, &["x", "scale", "proj", "scores"]);
    c.call(&k2, None, &["scores", "pes", "pad", "y"]);
    c.expect_row("y", flat(e), &dense(&route, e));
    b.cases.push(c);
    // Routed experts, computed densely: gate/up matmul, weighted GeGLU, down matmul.
    let (h, e, i, top_k) = (128, 8, 32, 2);
    let mut c = Case::new("moe_experts_8x32");
    let x = rng.normal(h, 1.0);
    let gu = rng.normal(e * 2 * i * h, (h as f32).powf(-0.5));
    let down = rng.normal(e * h * i, (i as f32).powf(-0.5));
    let route = eval(
        &Op::MoeRoute { top_k },
        &[&t2(&[1, e], &rng.normal(e, 3.0)), &t2(&[e], &rng.range(e, 0.5, 1.5))],
    )
    .unwrap();
    let want = f(&eval(
        &Op::MoeExperts,
        &[
            &t2(&[1, h], &x),
            &route[0],
            &route[1],
            &t2(&[e, 2 * i, h], &gu),
            &t2(&[e, h, i], &down),
        ],
    )
    .unwrap()[0]);
    let vals = BTreeMap::from([("gu".to_string(), gu), ("down".to_string(), down)]);
    let it = i.div_ceil(32);
    let lgu = DevLayout {
        rows: 1,
        groups: 2 * e,
        width: i,
    };
    let lact = DevLayout {
        rows: 1,
        groups: e,
        width: i,
    };
    let k1 = b.k(kernels::matmul(&b.t, "test", 1, h / 32, lgu.col_tiles(), None));
    let k2 = b.k(kernels::moe_act(&b.t, "test", e, it));
    let k3 = b.k(kernels::matmul(&b.t, "test", 1, lact.col_tiles(), h / 32, None));
    c.act("x", flat(h), &x);
    c.act("wr", flat(e), &dense(&route, e));
    c.weight(
        "gu",
        h,
        2 * e * it * 32,
        Source::MoeGateUp {
            key: "gu".into(),
            experts: e,
            inter: i,
            xin: flat(h),
        },
        &vals,
    );
    c.weight(
        "down",
        e * it * 32,
        h,
        Source::MoeDown {
            key: "down".into(),
            experts: e,
            inter: i,
            out: flat(h),
        },
        &vals,
    );
    c.weight("ex", 32, e * it * 32, Source::MoeExpand { experts: e, inter: i }, &vals);
    c.zeros("s1", lgu);
    c.zeros("s2", lact);
    c.zeros("y", flat(h));
    c.call(&k1, None, &["x", "gu", "s1"]);
    c.call(&k2, None, &["s1", "wr", "ex", "s2"]);
    c.call(&k3, None, &["s2", "down", "y"]);
    c.expect_row("y", flat(h), &want);
    b.cases.push(c);
}

fn write_safetensors(path: &Path, tensors: &[(String, usize, usize, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut offset = 0;
    for (name, r, c, _) in tensors {
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": [r, c], "data_offsets": [offset, offset + r * c * 4]}),
        );
        offset += r * c * 4;
    }
    let mut text = serde_json::to_string(&Value::Object(header)).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    for (_, _, _, v) in tensors {
        for x in v {
            f.write_all(&x.to_le_bytes()).unwrap();
        }
    }
}

/// Writes the bundle into `dir`; returns the number of cases.
pub fn write_bundle(dir: &Path) -> usize {
    let mut b = Bundle {
        t: TtTarget::P300,
        kernels: Vec::new(),
        cases: Vec::new(),
    };
    let mut rng = Rng::new(4);
    matmul_cases(&mut b, &mut rng);
    norm_cases(&mut b, &mut rng);
    eltwise_cases(&mut b, &mut rng);
    rope_cases(&mut b, &mut rng);
    kv_cases(&mut b, &mut rng);
    kv_pair_case(&mut b, &mut rng);
    attention_cases(&mut b, &mut rng);
    moe_cases(&mut b, &mut rng);
    let (kernels_py, sim_py) =
        gemma4c_backends::tt::render_standalone(&b.t, "kernel-family tests", &b.kernels).unwrap();
    std::fs::write(dir.join("kernels.py"), kernels_py).unwrap();
    std::fs::write(dir.join("sim_support.py"), sim_py).unwrap();
    let mut all = Vec::new();
    let mut manifest = Vec::new();
    for c in &b.cases {
        let prefix = format!("{}/", c.name);
        let rename = |n: &str| format!("{prefix}{n}");
        for (n, r, cc, v) in &c.tensors {
            all.push((rename(n), *r, *cc, v.clone()));
        }
        manifest.push(json!({
            "name": c.name,
            "tensors": c.tensors.iter().filter(|t| !t.0.ends_with(".expected")).map(|t| t.0.clone()).collect::<Vec<_>>(),
            "calls": c.calls,
            "outputs": c.outputs,
        }));
    }
    write_safetensors(&dir.join("cases.safetensors"), &all);
    std::fs::write(
        dir.join("cases.json"),
        serde_json::to_string_pretty(&json!({"cases": manifest})).unwrap(),
    )
    .unwrap();
    b.cases.len()
}
