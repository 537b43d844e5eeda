//! Kernel-family test cases for the Tenstorrent backend: random inputs, the generated kernels
//! that the backend picks for them, and the expected outputs from the IR's reference semantics
//! (`gemma4c_ir::eval`). Written as a bundle (`kernels.py`, `sim_support.py`, `cases.json`,
//! `cases.safetensors`) that `tests/tt/test_kernels.py` runs in the simulator.
//!
//! Inputs and weights go through the same layout code as a real compile (`DevLayout`, the
//! prepared-weight sources), so a case checks the kernel *and* the layout it is fed with.
//! This file holds the case/bundle records and the shared helpers; the cases are split by kernel
//! group: `dense.rs` (matmuls, norms, elementwise), `sandwich.rs` (sandwich norms folded into
//! matmuls), `cache.rs` (RoPE, KV writes, attention), `chunk.rs` (their prefill-chunk variants), `moe.rs` (routing and experts).

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

mod cache;
mod chunk;
mod dense;
mod moe;
mod sandwich;

use cache::{attention_cases, attention_norm_rope_cases, kv_cases, kv_pair_case, rope_cases};
use chunk::chunk_cases;
use dense::{eltwise_cases, matmul_cases, norm_cases};
use moe::moe_cases;
use sandwich::sandwich_cases;

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
        if let Some(o) = self.kernels.iter().find(|o| o.same_program(&k)) {
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
    attention_norm_rope_cases(&mut b, &mut rng);
    sandwich_cases(&mut b, &mut rng);
    chunk_cases(&mut b, &mut rng);
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
