//! Plan → kernels and launches. Every plan step becomes one or more launches
//! (multi-phase ops such as `MoeExperts` and `LogitsHead` use a scratch buffer
//! between phases); identical kernels are shared by name.
//!
//! Argument order is the kernel's parameter order: for most steps the step's
//! inputs then its outputs; for cache updates (in place) the inputs alone, the
//! cache first.

use std::collections::BTreeMap;

use gemma4c_ir::{DType, Op};
use gemma4c_passes::plan::{BufferKind, Plan, Program, Step};

use super::ops::{self, BinaryKind, HeadDest, HeadNorm, UnaryKind};
use super::{Elem, Kernel};

/// What a kernel parameter is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// A plan buffer of the program (views resolve to their storage).
    Buffer(usize),
    /// `bytes` at `offset` of the program's scratch area.
    Scratch { offset: usize, bytes: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub kernel: String,
    pub args: Vec<Arg>,
    /// Grid rows (the kernel's `rows`).
    pub rows: usize,
    /// Index of the plan step.
    pub step: usize,
    /// Weight bytes this launch reads (for bandwidth accounting).
    pub weight_bytes: usize,
    /// Bytes it touches in all (a scheduling hint: small launches stay on one thread).
    pub bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProgramLaunches {
    pub name: String,
    pub launches: Vec<Launch>,
    /// Scratch bytes the program needs (phases of one step share it; steps reuse it).
    pub scratch_bytes: usize,
}

impl ProgramLaunches {
    pub fn weight_bytes(&self) -> usize {
        self.launches.iter().map(|l| l.weight_bytes).sum()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KernelPlan {
    /// Kernels by name (sorted: the order printers emit them in).
    pub kernels: BTreeMap<String, Kernel>,
    /// Same order as `plan.programs`.
    pub programs: Vec<ProgramLaunches>,
}

impl KernelPlan {
    pub fn program(&self, name: &str) -> Option<&ProgramLaunches> {
        self.programs.iter().find(|p| p.name == name)
    }
}

pub fn lower_plan(plan: &Plan) -> Result<KernelPlan, String> {
    let mut kernels = BTreeMap::new();
    let mut programs = Vec::new();
    for p in &plan.programs {
        let mut lp = ProgramLaunches {
            name: p.name.clone(),
            launches: Vec::new(),
            scratch_bytes: 0,
        };
        for (i, step) in p.steps.iter().enumerate() {
            let mut cx = StepCx {
                p,
                step,
                index: i,
                out: &mut lp,
                kernels: &mut kernels,
                scratch: 0,
            };
            lower_step(&mut cx)
                .map_err(|e| format!("program `{}`, step `{}` ({}): {e}", p.name, step.name, step.op))?;
        }
        programs.push(lp);
    }
    Ok(KernelPlan { kernels, programs })
}

struct StepCx<'a> {
    p: &'a Program,
    step: &'a Step,
    index: usize,
    out: &'a mut ProgramLaunches,
    kernels: &'a mut BTreeMap<String, Kernel>,
    /// Scratch bytes used by this step so far.
    scratch: usize,
}

impl StepCx<'_> {
    fn shape(&self, id: usize) -> &[usize] {
        &self.p.buffers[id].shape
    }

    fn numel(&self, id: usize) -> usize {
        self.shape(id).iter().product()
    }

    fn dtype(&self, id: usize) -> DType {
        self.p.buffers[id].dtype
    }

    fn elem(&self, id: usize) -> Elem {
        Elem::from_dtype(self.dtype(id))
    }

    fn input(&self, i: usize) -> Result<usize, String> {
        self.step
            .inputs
            .get(i)
            .copied()
            .ok_or_else(|| format!("missing operand {i}"))
    }

    fn last_dim(&self, id: usize) -> usize {
        self.shape(id).last().copied().unwrap_or(1)
    }

    fn is_weight(&self, id: usize) -> bool {
        matches!(self.p.storage(id).kind, BufferKind::Weight { .. })
    }

    fn bytes(&self, id: usize) -> usize {
        self.p.buffers[id].bytes
    }

    /// A scratch area of `bytes` for this step (64-byte aligned).
    fn scratch(&mut self, bytes: usize) -> Arg {
        let offset = self.scratch;
        self.scratch += bytes.div_ceil(64) * 64;
        self.out.scratch_bytes = self.out.scratch_bytes.max(self.scratch);
        Arg::Scratch { offset, bytes }
    }

    /// Adds a launch of `k`. `weight_bytes`: None = all weight arguments in full.
    fn launch(&mut self, k: Kernel, args: Vec<Arg>, weight_bytes: Option<usize>) -> Result<(), String> {
        if k.params.len() != args.len() {
            return Err(format!(
                "kernel {} takes {} arguments, got {}",
                k.name,
                k.params.len(),
                args.len()
            ));
        }
        let mut touched = 0;
        let mut weights = 0;
        for a in &args {
            if let Arg::Buffer(id) = a {
                if self.is_weight(*id) {
                    weights += self.bytes(*id);
                } else {
                    touched += self.bytes(*id);
                }
            }
        }
        let weight_bytes = weight_bytes.unwrap_or(weights);
        let launch = Launch {
            kernel: k.name.clone(),
            args,
            rows: k.rows,
            step: self.index,
            weight_bytes,
            bytes: touched + weight_bytes,
        };
        match self.kernels.get(&k.name) {
            Some(existing) if *existing != k => return Err(format!("two different kernels are named {}", k.name)),
            Some(_) => {}
            None => {
                self.kernels.insert(k.name.clone(), k);
            }
        }
        self.out.launches.push(launch);
        Ok(())
    }

    /// Inputs then outputs, as buffer args.
    fn io_args(&self) -> Vec<Arg> {
        self.step
            .inputs
            .iter()
            .chain(&self.step.outputs)
            .map(|&b| Arg::Buffer(b))
            .collect()
    }

    fn in_args(&self) -> Vec<Arg> {
        self.step.inputs.iter().map(|&b| Arg::Buffer(b)).collect()
    }
}

fn lower_step(cx: &mut StepCx) -> Result<(), String> {
    let op = cx.step.op.clone();
    for &o in &cx.step.outputs {
        if !matches!(cx.dtype(o), DType::F32 | DType::I32) {
            return Err(format!("output of dtype {} (activations are f32 or i32)", cx.dtype(o)));
        }
    }
    match &op {
        Op::Input { .. } | Op::Weight { .. } | Op::Reshape { .. } => Err("not a kernel".into()),
        Op::ReplaceIds { ids, with } => {
            let x = cx.input(0)?;
            let k = ops::replace_ids(cx.numel(x), ids, *with);
            cx.launch(k, cx.io_args(), None)
        }
        Op::Scale { factor } => unary(cx, UnaryKind::Scale(*factor)),
        Op::GeluTanh => unary(cx, UnaryKind::GeluTanh),
        Op::Softcap { cap } => unary(cx, UnaryKind::Softcap(*cap)),
        Op::Add => binary(cx, BinaryKind::Add),
        Op::Mul => binary(cx, BinaryKind::Mul),
        Op::GeluMul => binary(cx, BinaryKind::GeluMul),
        Op::Slice { axis, start, end } => {
            let x = cx.input(0)?;
            let shape = cx.shape(x).to_vec();
            let outer: usize = shape[..*axis].iter().product();
            let inner: usize = shape[axis + 1..].iter().product();
            let k = ops::slice(outer, shape[*axis], inner, *start, *end, cx.elem(x));
            cx.launch(k, cx.io_args(), None)
        }
        Op::Embedding => {
            let (table, ids) = (cx.input(0)?, cx.input(1)?);
            let (s, h) = (cx.numel(ids), cx.shape(table)[1]);
            let k = ops::embedding(s, h, cx.elem(table));
            let row_bytes = h * cx.dtype(table).size_bytes();
            cx.launch(k, cx.io_args(), Some(s * row_bytes))
        }
        Op::MatMul => {
            let (x, w) = (cx.input(0)?, cx.input(1)?);
            let (n, kd) = (cx.shape(w)[0], cx.shape(w)[1]);
            let m = cx.numel(x) / kd;
            if cx.elem(x) != Elem::F32 {
                return Err("the left operand of a matmul must be an f32 activation".into());
            }
            cx.launch(ops::matmul(m, n, kd, cx.elem(w), None), cx.io_args(), None)
        }
        Op::RmsNorm { eps } => {
            let x = cx.input(0)?;
            let d = cx.last_dim(x);
            let w = cx.step.inputs.get(1).map(|&w| cx.elem(w));
            let k = ops::rms_norm(cx.numel(x) / d, d, cx.elem(x), w, *eps, None);
            cx.launch(k, cx.io_args(), None)
        }
        Op::AddRmsNorm { eps } => {
            let (a, b, w) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
            let d = cx.last_dim(a);
            let k = ops::add_rms_norm(
                cx.numel(a) / d,
                d,
                cx.numel(b),
                [cx.elem(a), cx.elem(b), cx.elem(w)],
                *eps,
            );
            cx.launch(k, cx.io_args(), None)
        }
        Op::NormAddNorm { eps } => {
            let ins: Vec<usize> = (0..4).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
            let d = cx.last_dim(ins[0]);
            if cx.numel(ins[1]) != cx.numel(ins[0]) {
                return Err("norm_add_norm operands must have one shape".into());
            }
            let elems = [cx.elem(ins[0]), cx.elem(ins[1]), cx.elem(ins[2]), cx.elem(ins[3])];
            let k = ops::norm_add_norm(cx.numel(ins[0]) / d, d, elems, *eps);
            cx.launch(k, cx.io_args(), None)
        }
        Op::NormAdd { eps } => {
            let (res, x, w) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
            let d = cx.last_dim(x);
            if cx.numel(res) != cx.numel(x) {
                return Err("norm_add operands must have one shape".into());
            }
            let k = ops::norm_add(cx.numel(x) / d, d, [cx.elem(res), cx.elem(x), cx.elem(w)], *eps);
            cx.launch(k, cx.io_args(), None)
        }
        Op::MoeRouter { eps, scalar, top_k } => {
            let ins: Vec<usize> = (0..4).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
            let (x, scale, proj, per_expert) = (ins[0], ins[1], ins[2], ins[3]);
            let h = cx.last_dim(x);
            let s = cx.numel(x) / h;
            let e = cx.shape(proj)[0];
            let normed = cx.scratch(s * h * 4);
            let scores = cx.scratch(s * e * 4);
            let norm = ops::rms_norm(s, h, cx.elem(x), Some(cx.elem(scale)), *eps, Some(*scalar));
            cx.launch(norm, vec![Arg::Buffer(x), Arg::Buffer(scale), normed], None)?;
            let mm = ops::matmul(s, e, h, cx.elem(proj), None);
            cx.launch(mm, vec![normed, Arg::Buffer(proj), scores], None)?;
            let route = ops::moe_route(s, e, *top_k, cx.elem(per_expert));
            let outs = &cx.step.outputs;
            let args = vec![
                scores,
                Arg::Buffer(per_expert),
                Arg::Buffer(outs[0]),
                Arg::Buffer(outs[1]),
            ];
            cx.launch(route, args, None)
        }
        Op::Rope { rope } => heads(cx, None, Some(rope), false),
        Op::NormRope { eps, rope } => {
            let w = cx.elem(cx.input(1)?);
            heads(
                cx,
                Some(HeadNorm {
                    eps: *eps,
                    weight: Some(w),
                }),
                Some(rope),
                false,
            )
        }
        Op::KvWrite => heads(cx, None, None, true),
        Op::NormKvWrite { eps } => heads(
            cx,
            Some(HeadNorm {
                eps: *eps,
                weight: None,
            }),
            None,
            true,
        ),
        Op::RopeKvWrite { eps, rope } => {
            let w = cx.elem(cx.input(2)?);
            heads(
                cx,
                Some(HeadNorm {
                    eps: *eps,
                    weight: Some(w),
                }),
                Some(rope),
                true,
            )
        }
        Op::Attention { window, scale } => {
            let (q, kc) = (cx.input(0)?, cx.input(1)?);
            let (qs, ks) = (cx.shape(q).to_vec(), cx.shape(kc).to_vec());
            if qs.len() != 3 || ks.len() != 3 || qs[1] % ks[0] != 0 {
                return Err(format!("attention of q {qs:?} over a cache {ks:?}"));
            }
            let k = ops::attention(qs[0], qs[1], ks[0], qs[2], ks[1], *window, *scale);
            cx.launch(k, cx.io_args(), None)
        }
        Op::MoeRoute { top_k } => {
            let (scores, scale) = (cx.input(0)?, cx.input(1)?);
            let (s, e) = (cx.shape(scores)[0], cx.shape(scores)[1]);
            let k = ops::moe_route(s, e, *top_k, cx.elem(scale));
            cx.launch(k, cx.io_args(), None)
        }
        Op::MoeExperts => {
            let ins: Vec<usize> = (0..5).map(|i| cx.input(i)).collect::<Result<_, _>>()?;
            let (x, weights, experts, gate_up, down) = (ins[0], ins[1], ins[2], ins[3], ins[4]);
            let (s, h) = (cx.shape(x)[0], cx.shape(x)[1]);
            let (i2, topk) = (cx.shape(gate_up)[1], cx.shape(weights)[1]);
            let i = i2 / 2;
            let out = cx.step.outputs[0];
            let act = cx.scratch(s * topk * i * 4);
            let wsize = cx.dtype(gate_up).size_bytes();
            let gu = ops::moe_gate_up(s, topk, i, h, cx.elem(gate_up));
            let args = vec![Arg::Buffer(x), Arg::Buffer(experts), Arg::Buffer(gate_up), act];
            cx.launch(gu, args, Some(s * topk * i2 * h * wsize))?;
            let dn = ops::moe_down(s, topk, i, h, cx.elem(down));
            let args = vec![
                Arg::Buffer(weights),
                Arg::Buffer(experts),
                Arg::Buffer(down),
                act,
                Arg::Buffer(out),
            ];
            let dsize = cx.dtype(down).size_bytes();
            cx.launch(dn, args, Some(s * topk * h * i * dsize))
        }
        Op::LogitsHead { eps, cap } => {
            let (x, w, table) = (cx.input(0)?, cx.input(1)?, cx.input(2)?);
            let h = cx.last_dim(x);
            let m = cx.numel(x) / h;
            let v = cx.shape(table)[0];
            let normed = cx.scratch(m * h * 4);
            let norm = ops::rms_norm(m, h, cx.elem(x), Some(cx.elem(w)), *eps, None);
            cx.launch(norm, vec![Arg::Buffer(x), Arg::Buffer(w), normed], None)?;
            let out = Arg::Buffer(cx.step.outputs[0]);
            let welem = cx.elem(table);
            match cap {
                // The soft-cap as its own elementwise pass vectorizes its tanh
                // (as a matmul epilogue it runs once per output, scalar).
                Some(c) => {
                    let raw = cx.scratch(m * v * 4);
                    cx.launch(
                        ops::matmul(m, v, h, welem, None),
                        vec![normed, Arg::Buffer(table), raw],
                        None,
                    )?;
                    cx.launch(
                        ops::unary(UnaryKind::Softcap(*c), m * v, v, Elem::F32),
                        vec![raw, out],
                        None,
                    )
                }
                None => cx.launch(
                    ops::matmul(m, v, h, welem, None),
                    vec![normed, Arg::Buffer(table), out],
                    None,
                ),
            }
        }
    }
}

fn unary(cx: &mut StepCx, kind: UnaryKind) -> Result<(), String> {
    let x = cx.input(0)?;
    let k = ops::unary(kind, cx.numel(x), cx.last_dim(x), cx.elem(x));
    cx.launch(k, cx.io_args(), None)
}

fn binary(cx: &mut StepCx, kind: BinaryKind) -> Result<(), String> {
    let (a, b) = (cx.input(0)?, cx.input(1)?);
    let (n, bn) = (cx.numel(a), cx.numel(b));
    let sa = cx.shape(a);
    let sb = cx.shape(b);
    let suffix = sb.len() <= sa.len() && sa[sa.len() - sb.len()..] == *sb;
    if !(bn == n || bn == 1 || suffix) {
        return Err(format!("cannot broadcast {sb:?} to {sa:?}"));
    }
    let k = ops::binary(kind, n, cx.last_dim(a), bn, [cx.elem(a), cx.elem(b)]);
    cx.launch(k, cx.io_args(), None)
}

/// Per-head row ops: `x [S, heads, D]` (operand 0, or 1 after the cache).
fn heads(
    cx: &mut StepCx,
    norm: Option<HeadNorm>,
    rope: Option<&gemma4c_ir::RopeSpec>,
    cache: bool,
) -> Result<(), String> {
    let x = cx.input(if cache { 1 } else { 0 })?;
    let xs = cx.shape(x).to_vec();
    if xs.len() != 3 {
        return Err(format!("expected [S, heads, D], got {xs:?}"));
    }
    let dest = if cache {
        let c = cx.shape(cx.input(0)?).to_vec();
        if c.len() != 3 || c[0] != xs[1] || c[2] != xs[2] {
            return Err(format!("cache {c:?} does not hold rows of {xs:?}"));
        }
        HeadDest::Cache { capacity: c[1] }
    } else {
        HeadDest::Out
    };
    let k = ops::head_rows(xs[0], xs[1], xs[2], norm, rope, dest);
    let args = if cache { cx.in_args() } else { cx.io_args() };
    cx.launch(k, args, None)
}
