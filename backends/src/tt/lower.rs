//! The decode program of a plan as a list of device launches: which kernel each step becomes,
//! which prepared weights and per-position inputs it reads, and which device tensor holds each
//! activation.

use std::collections::BTreeMap;

use gemma4c_ir::{Op, RopeSpec};
use gemma4c_passes::plan::{BufferKind, Program, Step};
use gemma4c_passes::Plan;

use super::kernels::{self, gelu_expr, py_f32, softcap_expr, Kernel, Mode};
use super::layout::{self, DevLayout};
use super::target::TtTarget;
use super::TtError;

/// How a prepared tensor is made from the checkpoint (or from constants).
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `nn.Linear` weight `[n, k]` as `W^T [k, n]`, rows laid out like `xin`, columns like `out`.
    Transposed {
        key: String,
        xin: DevLayout,
        out: DevLayout,
    },
    /// A vector repeated to fill `layout`'s columns, one row.
    Row { key: String, layout: DevLayout },
    /// One value in a `[1, 1]` tensor.
    Scalar { key: String },
    /// Embedding table `[vocab, h]` with its rows laid out like `layout` (host side).
    Gather {
        key: String,
        vocab: usize,
        layout: DevLayout,
    },
    /// `cos`/`sin` of every position `[max_context, head_dim]`.
    Rope { spec: RopeSpec, context: usize, sin: bool },
    /// `R [d, d]` with `x @ R == rotate_half(x)`.
    RotateHalf { d: usize },
    /// A run-time index kernels read with `ttl.read_index` (element (0, 0) of one float32 tile):
    /// a slice's start tile column.
    Index { value: usize },
    /// 32 selection tiles `[32 * 32, 32]`: tile r has a 1 at (r, 0).
    KvSelect,
    /// 32 keep tiles `[32 * 32, 32]`: tile r is 1 in column 0 except at row r.
    KvKeep,
    /// Experts' `gate_up [e, 2i, h]` as `[h rows like xin, e x (gate i | up i) padded]`.
    MoeGateUp {
        key: String,
        experts: usize,
        inter: usize,
        xin: DevLayout,
    },
    /// Experts' `down [e, h, i]` as `[e x i padded, h columns like out]`.
    MoeDown {
        key: String,
        experts: usize,
        inter: usize,
        out: DevLayout,
    },
    /// 0/1 `[experts, experts x i padded]` that repeats lane e over expert e's columns.
    MoeExpand { experts: usize, inter: usize },
    /// `[1, experts]` of zeros (padding lanes -1e9).
    MoePad { experts: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// Kept on the host (embedding tables, RoPE tables) rather than uploaded.
    pub host: bool,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Buf(usize),
    State(usize),
    W(String),
    Mask(usize),
    /// The step's position tensor (see `model.py.tera`: tile 0 the absolute position, tile 1 + i
    /// the slot in ring `caps[i]`).
    Pos,
}

#[derive(Debug, Clone, PartialEq)]
enum Call {
    Kernel {
        kernel: usize,
        args: Vec<Arg>,
    },
    Gather {
        table: String,
        out: usize,
    },
    /// A host line (token-id bookkeeping).
    Host {
        code: String,
    },
}

struct Item {
    comment: String,
    call: Call,
    reads: Vec<usize>,
    writes: Vec<usize>,
}

impl Item {
    /// A kernel launch with what it reads and writes (for liveness).
    fn kernel(comment: String, kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>) -> Item {
        Item {
            comment,
            call: Call::Kernel { kernel, args },
            reads,
            writes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub rows: usize,
    pub cols: usize,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskUse {
    pub capacity: usize,
    /// `None`: causal only (full attention).
    pub window: Option<usize>,
    pub width: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub code: String,
    pub comment: String,
    /// Index into `Lowered::kernels` (None for host row fetches).
    pub kernel: Option<usize>,
}

/// Everything the host program and kernels.py are rendered from.
pub struct Lowered {
    pub kernels: Vec<Kernel>,
    pub prepared: Vec<Prepared>,
    pub masks: Vec<MaskUse>,
    pub caps: Vec<usize>,
    pub states: Vec<Slot>,
    pub slots: Vec<Slot>,
    pub launches: Vec<Launch>,
    pub logits_slot: usize,
    pub max_context: usize,
}

struct Ctx<'a> {
    t: &'a TtTarget,
    plan: &'a Plan,
    p: &'a Program,
    lay: BTreeMap<usize, DevLayout>,
    kernels: Vec<Kernel>,
    prepared: Vec<Prepared>,
    ropes: Vec<(RopeSpec, String, String)>,
    masks: Vec<MaskUse>,
    caps: Vec<usize>,
    /// Scratch buffers (ids after the plan's buffers).
    scratch: usize,
}

impl Ctx<'_> {
    fn err(&self, step: &Step, msg: impl std::fmt::Display) -> TtError {
        TtError::new(format!("step `{}` ({}): {msg}", step.name, step.op))
    }

    fn lay(&self, id: usize) -> Result<DevLayout, TtError> {
        self.lay
            .get(&id)
            .copied()
            .ok_or_else(|| TtError::new(format!("buffer {id} has no device layout (not an activation)")))
    }

    fn shape(&self, id: usize) -> &[usize] {
        &self.p.buffers[id].shape
    }

    fn weight(&self, id: usize) -> Option<(&str, &[usize])> {
        match self.p.buffers[id].kind {
            BufferKind::Weight { index } => {
                let w = &self.plan.weights[index];
                Some((w.key.as_str(), w.shape.as_slice()))
            }
            _ => None,
        }
    }

    fn state(&self, id: usize) -> Option<usize> {
        match self.p.buffers[id].kind {
            BufferKind::State { index } => Some(index),
            _ => None,
        }
    }

    fn kernel(&mut self, mut k: Kernel) -> usize {
        if let Some(i) = self.kernels.iter().position(|o| o.family == k.family && o.ctx == k.ctx) {
            return i;
        }
        let mut name = k.base.clone();
        let mut n = 2;
        while self.kernels.iter().any(|o| o.name == name) {
            name = format!("{}_{n}", k.base);
            n += 1;
        }
        k.name = name;
        self.kernels.push(k);
        self.kernels.len() - 1
    }

    fn prep(&mut self, name: String, rows: usize, cols: usize, host: bool, source: Source) -> Result<String, TtError> {
        if let Some(p) = self.prepared.iter().find(|p| p.name == name) {
            if p.source != source || p.host != host {
                return Err(TtError::new(format!(
                    "prepared tensor `{name}` is needed in two layouts"
                )));
            }
            return Ok(name);
        }
        self.prepared.push(Prepared {
            name: name.clone(),
            rows,
            cols,
            host,
            source,
        });
        Ok(name)
    }

    /// A weight vector laid out as one row of `layout`.
    fn row(&mut self, key: &str, layout: DevLayout) -> Result<String, TtError> {
        let l = DevLayout { rows: 1, ..layout }.canonical();
        let tag = l.tag();
        let name = if tag.is_empty() {
            key.to_string()
        } else {
            format!("{key}@{tag}")
        };
        self.prep(
            name,
            1,
            l.col_tiles() * 32,
            false,
            Source::Row {
                key: key.into(),
                layout: l,
            },
        )
    }

    /// The device `(cos, sin)` tables of a RoPE variant, `[max_context, head_dim]`.
    fn rope(&mut self, spec: &RopeSpec) -> Result<(String, String), TtError> {
        if let Some(r) = self.ropes.iter().find(|r| &r.0 == spec) {
            return Ok((r.1.clone(), r.2.clone()));
        }
        let base = format!(
            "rope.theta{}.pairs{}.d{}.factor{}",
            spec.theta, spec.rotated_pairs, spec.head_dim, spec.factor
        );
        let ctx = self.plan.model.max_context;
        let d = spec.head_dim;
        // Device tables: kernels gather the step's row at run time.
        let cos = self.prep(
            format!("{base}.cos"),
            ctx,
            d,
            false,
            Source::Rope {
                spec: spec.clone(),
                context: ctx,
                sin: false,
            },
        )?;
        let sin = self.prep(
            format!("{base}.sin"),
            ctx,
            d,
            false,
            Source::Rope {
                spec: spec.clone(),
                context: ctx,
                sin: true,
            },
        )?;
        self.ropes.push((spec.clone(), cos.clone(), sin.clone()));
        Ok((cos, sin))
    }

    fn rotate_half(&mut self, d: usize) -> Result<String, TtError> {
        self.prep(format!("rope.rotate_half.d{d}"), d, d, false, Source::RotateHalf { d })
    }

    fn cap(&mut self, capacity: usize) -> usize {
        if let Some(i) = self.caps.iter().position(|&c| c == capacity) {
            return i;
        }
        self.caps.push(capacity);
        self.caps.len() - 1
    }

    fn mask(&mut self, m: MaskUse) -> usize {
        if let Some(i) = self.masks.iter().position(|o| o == &m) {
            return i;
        }
        self.masks.push(m);
        self.masks.len() - 1
    }

    /// `(groups, tiles per norm)` for a norm over the last `n` columns of a buffer in layout `l`,
    /// and the layout of one norm's weight row.
    fn norm_segments(&self, step: &Step, l: DevLayout, n: usize) -> Result<(usize, usize, DevLayout), TtError> {
        if l.width.is_multiple_of(32) {
            if !n.is_multiple_of(32) || !l.cols().is_multiple_of(n) {
                return Err(self.err(step, format!("norm width {n} does not split the tile layout {l:?}")));
            }
            Ok((l.cols() / n, n / 32, DevLayout::flat(1, n)))
        } else {
            if !n.is_multiple_of(l.width) || !l.groups.is_multiple_of(n / l.width) {
                return Err(self.err(step, format!("norm width {n} does not split the segments of {l:?}")));
            }
            let k = n / l.width;
            Ok((
                l.groups / k,
                k * l.seg_tiles(),
                DevLayout {
                    rows: 1,
                    groups: k,
                    width: l.width,
                },
            ))
        }
    }

    fn new_scratch(&mut self, l: DevLayout) -> usize {
        let id = self.p.buffers.len() + self.scratch;
        self.scratch += 1;
        self.lay.insert(id, l);
        id
    }
}

/// Lowers the plan's decode program for target `t`.
pub fn lower(plan: &Plan, t: &TtTarget) -> Result<Lowered, TtError> {
    let p = plan
        .program("decode")
        .ok_or_else(|| TtError::new("the plan has no decode program"))?;
    if p.seq_len != 1 {
        return Err(TtError::new(format!(
            "decode program has seq_len {} (expected 1)",
            p.seq_len
        )));
    }
    let lay = layout::infer(p)?;
    let mut c = Ctx {
        t,
        plan,
        p,
        lay,
        kernels: Vec::new(),
        prepared: Vec::new(),
        ropes: Vec::new(),
        masks: Vec::new(),
        caps: Vec::new(),
        scratch: 0,
    };
    // Constant tables every program reads.
    c.prep("kv.select".into(), 32 * 32, 32, false, Source::KvSelect)?;
    c.prep("kv.keep".into(), 32 * 32, 32, false, Source::KvKeep)?;

    // Storage of a buffer (views followed; scratch buffers are their own storage).
    let root = |mut id: usize| {
        while let Some(BufferKind::View { of }) = p.buffers.get(id).map(|b| &b.kind) {
            id = *of;
        }
        id
    };
    // Backend fusion: gelu_mul fed by two matmuls of the same input whose results nothing
    // else reads becomes one geglu_matmul launch.
    let mut uses: BTreeMap<usize, usize> = BTreeMap::new();
    for s in &p.steps {
        for &i in &s.inputs {
            *uses.entry(root(i)).or_default() += 1;
        }
    }
    let producer: BTreeMap<usize, usize> = p
        .steps
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.outputs.iter().map(move |&o| (o, i)))
        .collect();
    let is_output = |id: usize| {
        matches!(
            &p.buffers[root(id)].kind,
            BufferKind::Activation { output: Some(_), .. }
        )
    };
    let mut absorbed = vec![false; p.steps.len()];
    let mut geglu: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for (i, s) in p.steps.iter().enumerate() {
        if !matches!(s.op, Op::GeluMul) {
            continue;
        }
        let (g, u) = (root(s.inputs[0]), root(s.inputs[1]));
        let (Some(&pg), Some(&pu)) = (producer.get(&g), producer.get(&u)) else {
            continue;
        };
        let (sg, su) = (&p.steps[pg], &p.steps[pu]);
        let fusable = pg != pu
            && matches!(sg.op, Op::MatMul)
            && matches!(su.op, Op::MatMul)
            && root(sg.inputs[0]) == root(su.inputs[0])
            && uses.get(&g) == Some(&1)
            && uses.get(&u) == Some(&1)
            && !is_output(g)
            && !is_output(u)
            && c.lay(g)? == c.lay(u)?
            && c.lay(g)? == c.lay(s.outputs[0])?
            && c.lay(g)?.groups == 1;
        if fusable {
            absorbed[pg] = true;
            absorbed[pu] = true;
            geglu.insert(i, (pg, pu));
        }
    }

    let mut items: Vec<Item> = Vec::new();
    for (i, s) in p.steps.iter().enumerate() {
        if absorbed[i] {
            continue;
        }
        let comment = format!("{}: {}", s.name, s.op);
        if let Some(&(pg, pu)) = geglu.get(&i) {
            let (sg, su) = (&p.steps[pg], &p.steps[pu]);
            let x = sg.inputs[0];
            let (lx, lo) = (c.lay(x)?, c.lay(s.outputs[0])?);
            let k = kernels::geglu_matmul(
                t,
                "gelu_mul with its gate/up matmuls",
                lx.row_tiles(),
                lx.col_tiles(),
                lo.col_tiles(),
            )?;
            let k = c.kernel(k);
            let wg = transposed(&mut c, sg, sg.inputs[1], lx, lo)?;
            let wu = transposed(&mut c, su, su.inputs[1], lx, lo)?;
            items.push(Item::kernel(
                format!("{} + {} + {}", sg.name, su.name, comment),
                k,
                vec![Arg::Buf(x), Arg::W(wg), Arg::W(wu), Arg::Buf(s.outputs[0])],
                vec![x],
                vec![s.outputs[0]],
            ));
            continue;
        }
        lower_step(&mut c, s, comment, &mut items)?;
    }

    // ---- device tensors: activations share a tensor when their lifetimes are disjoint
    let logits = p
        .output("logits")
        .ok_or_else(|| TtError::new("the decode program has no `logits` output"))?;
    let end = items.len();
    let mut life: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        for &w in &it.writes {
            life.entry(root(w)).or_insert((i, i));
        }
        for &r in &it.reads {
            if let Some(l) = life.get_mut(&root(r)) {
                l.1 = l.1.max(i);
            } else {
                return Err(TtError::new(format!("buffer {r} is read before any launch writes it")));
            }
        }
    }
    if let Some(l) = life.get_mut(&root(logits)) {
        l.1 = end;
    }
    let mut slots: Vec<Slot> = Vec::new();
    let mut slot_of: BTreeMap<usize, usize> = BTreeMap::new();
    let mut busy: Vec<(usize, usize)> = Vec::new(); // (slot, last)
    let mut free: Vec<usize> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        busy.retain(|&(s, last)| {
            if last < i {
                free.push(s);
                false
            } else {
                true
            }
        });
        free.sort_unstable();
        for &w in &it.writes {
            let r = root(w);
            if life[&r].0 != i || slot_of.contains_key(&r) {
                continue;
            }
            let [rows, cols] = c.lay(r)?.dev_shape();
            let name = if r < p.buffers.len() {
                p.steps
                    .iter()
                    .find(|s| s.outputs.contains(&r))
                    .map_or("scratch", |s| s.name.as_str())
            } else {
                "scratch"
            };
            let s = match free
                .iter()
                .position(|&s| slots[s].rows == rows && slots[s].cols == cols)
            {
                Some(k) => {
                    let s = free.remove(k);
                    slots[s].comment.push_str(", ");
                    slots[s].comment.push_str(name);
                    s
                }
                None => {
                    slots.push(Slot {
                        rows,
                        cols,
                        comment: name.to_string(),
                    });
                    slots.len() - 1
                }
            };
            slot_of.insert(r, s);
            busy.push((s, life[&r].1));
        }
    }
    let states: Vec<Slot> = plan
        .state
        .iter()
        .map(|s| {
            let (kv, cap, d) = (s.shape[0], s.shape[1], s.shape[2]);
            Slot {
                rows: kv * cap.div_ceil(32) * 32,
                cols: d.div_ceil(32) * 32,
                comment: s.name.clone(),
            }
        })
        .collect();

    let arg = |a: &Arg| -> String {
        match a {
            Arg::Buf(id) => format!("b[{}]", slot_of[&root(*id)]),
            Arg::State(i) => format!("s[{i}]"),
            Arg::W(n) => format!("w[\"{n}\"]"),
            Arg::Mask(i) => format!("self.masks[{i}]"),
            Arg::Pos => "self.pos".to_string(),
        }
    };
    let launches = items
        .iter()
        .map(|it| match &it.call {
            Call::Kernel { kernel, args } => {
                let args: Vec<String> = args.iter().map(arg).collect();
                let name = &c.kernels[*kernel].name;
                let code = format!("K.{name}({})", args.join(", "));
                Launch {
                    code,
                    comment: it.comment.clone(),
                    kernel: Some(*kernel),
                }
            }
            Call::Gather { table, out } => Launch {
                code: format!("self.write(b[{}], self.row(\"{table}\", token))", slot_of[&root(*out)]),
                comment: it.comment.clone(),
                kernel: None,
            },
            Call::Host { code } => Launch {
                code: code.clone(),
                comment: it.comment.clone(),
                kernel: None,
            },
        })
        .collect();
    Ok(Lowered {
        logits_slot: slot_of[&root(logits)],
        kernels: c.kernels,
        prepared: c.prepared,
        masks: c.masks,
        caps: c.caps,
        states,
        slots,
        launches,
        max_context: plan.model.max_context,
    })
}

fn py_tuple(ids: &[i32]) -> String {
    let mut s = ids.iter().map(|i| format!("{i}, ")).collect::<String>();
    s.pop();
    format!("({s})")
}

/// The prepared `W^T` of a matmul weight operand.
fn transposed(c: &mut Ctx, s: &Step, w: usize, xin: DevLayout, out: DevLayout) -> Result<String, TtError> {
    let (key, shape) = c
        .weight(w)
        .ok_or_else(|| c.err(s, "the matmul weight is not a checkpoint tensor"))?;
    let (key, shape) = (key.to_string(), shape.to_vec());
    if shape.len() != 2 || shape[0] != out.cols() || shape[1] != xin.cols() {
        return Err(c.err(
            s,
            format!("weight {key} {shape:?} does not match x {xin:?} -> y {out:?}"),
        ));
    }
    let xt = DevLayout { rows: 1, ..xin }.canonical().tag();
    let ot = DevLayout { rows: 1, ..out }.canonical().tag();
    let name = match (xt.is_empty(), ot.is_empty()) {
        (true, true) => format!("{key}@t"),
        _ => format!(
            "{key}@t.{}.{}",
            if xt.is_empty() { "flat" } else { &xt },
            if ot.is_empty() { "flat" } else { &ot }
        ),
    };
    let (xin, out) = (
        DevLayout { rows: 1, ..xin }.canonical(),
        DevLayout { rows: 1, ..out }.canonical(),
    );
    c.prep(
        name,
        xin.col_tiles() * 32,
        out.col_tiles() * 32,
        false,
        Source::Transposed { key, xin, out },
    )
}

fn lower_step(c: &mut Ctx, s: &Step, comment: String, items: &mut Vec<Item>) -> Result<(), TtError> {
    let t = c.t;
    let kcall = |kernel: usize, args: Vec<Arg>, reads: Vec<usize>, writes: Vec<usize>| {
        Item::kernel(comment.clone(), kernel, args, reads, writes)
    };
    match &s.op {
        Op::Input { .. } | Op::Weight { .. } | Op::Reshape { .. } => {}
        Op::ReplaceIds { ids, with } => {
            // The decode step's token is a host integer: map it before the row fetch.
            if !matches!(c.p.buffers[s.inputs[0]].kind, BufferKind::Input { .. }) {
                return Err(c.err(s, "only the step's token ids can be remapped"));
            }
            let code = format!("token = {with} if token in {} else token", py_tuple(ids));
            items.push(Item {
                comment,
                call: Call::Host { code },
                reads: vec![],
                writes: vec![],
            });
        }
        Op::Embedding => {
            let (key, wshape) = c
                .weight(s.inputs[0])
                .ok_or_else(|| c.err(s, "the table is not a checkpoint tensor"))?;
            let (key, vocab) = (key.to_string(), wshape[0]);
            let out = s.outputs[0];
            let l = DevLayout { rows: 1, ..c.lay(out)? }.canonical();
            let tag = l.tag();
            let name = if tag.is_empty() {
                key.clone()
            } else {
                format!("{key}@{tag}")
            };
            let table = c.prep(
                name,
                vocab,
                l.col_tiles() * 32,
                true,
                Source::Gather { key, vocab, layout: l },
            )?;
            items.push(Item {
                comment,
                call: Call::Gather { table, out },
                reads: vec![],
                writes: vec![out],
            });
        }
        Op::Scale { .. } | Op::GeluTanh | Op::Softcap { .. } | Op::Add | Op::Mul | Op::GeluMul => {
            let out = s.outputs[0];
            let l = c.lay(out)?;
            let a = s.inputs[0];
            if c.weight(a).is_some() {
                return Err(c.err(s, "a weight as the first operand is not supported"));
            }
            let mut modes = vec![Mode::Full];
            let mut args = vec![Arg::Buf(a)];
            let mut reads = vec![a];
            if let Some(&b) = s.inputs.get(1) {
                let numel = c.shape(b).iter().product::<usize>();
                if let Some((key, _)) = c.weight(b) {
                    let key = key.to_string();
                    if numel == 1 {
                        let n = c.prep(key.clone(), 1, 32, false, Source::Scalar { key })?;
                        modes.push(Mode::Scalar);
                        args.push(Arg::W(n));
                    } else if l.cols() % numel == 0 && numel % l.width.min(numel) == 0 {
                        let n = c.row(&key, l)?;
                        modes.push(Mode::Row);
                        args.push(Arg::W(n));
                    } else {
                        return Err(c.err(s, format!("cannot broadcast weight {key} ({numel} values) over {l:?}")));
                    }
                } else {
                    if numel != l.rows * l.cols() || c.lay(b)? != l {
                        return Err(c.err(s, "operands of different shapes or layouts"));
                    }
                    modes.push(Mode::Full);
                    args.push(Arg::Buf(b));
                    reads.push(b);
                }
            }
            let (base, expr) = match &s.op {
                Op::Scale { factor } => (
                    format!("scale_{}", py_f32(*factor).replace(['.', '-'], "_")),
                    format!("a_v * ttl.block.fill({}, shp)", py_f32(*factor)),
                ),
                Op::GeluTanh => ("gelu_tanh".to_string(), gelu_expr("a_v")),
                Op::Softcap { cap } => (
                    format!("softcap_{}", py_f32(*cap).replace('.', "_")),
                    softcap_expr("a_v", *cap),
                ),
                Op::Add => ("add".to_string(), "a_v + b_v".to_string()),
                Op::Mul => ("mul".to_string(), "a_v * b_v".to_string()),
                _ => ("gelu_mul".to_string(), format!("{} * b_v", gelu_expr("a_v"))),
            };
            let suffix = match modes.get(1) {
                Some(Mode::Row) => "_row",
                Some(Mode::Scalar) => "_scalar",
                _ => "",
            };
            let doc = format!("{}: elementwise", s.op.mnemonic());
            let k = kernels::eltwise(
                t,
                format!("{base}{suffix}_{}", l.col_tiles() * 32),
                &doc,
                expr,
                &modes,
                l.row_tiles(),
                l.col_tiles(),
            )?;
            let k = c.kernel(k);
            args.push(Arg::Buf(out));
            items.push(kcall(k, args, reads, vec![out]));
        }
        Op::MatMul => {
            let (x, out) = (s.inputs[0], s.outputs[0]);
            let (lx, lo) = (c.lay(x)?, c.lay(out)?);
            let w = transposed(c, s, s.inputs[1], lx, lo)?;
            let k = kernels::matmul(
                t,
                "decode matmul: y = x @ W",
                lx.row_tiles(),
                lx.col_tiles(),
                lo.col_tiles(),
                None,
            )?;
            let k = c.kernel(k);
            items.push(kcall(
                k,
                vec![Arg::Buf(x), Arg::W(w), Arg::Buf(out)],
                vec![x],
                vec![out],
            ));
        }
        Op::RmsNorm { eps } => {
            let (x, out) = (s.inputs[0], s.outputs[0]);
            let l = c.lay(x)?;
            let n = *c.shape(x).last().unwrap_or(&1);
            let (groups, st, wl) = c.norm_segments(s, l, n)?;
            let mut args = vec![Arg::Buf(x)];
            if let Some(&w) = s.inputs.get(1) {
                let (key, _) = c
                    .weight(w)
                    .ok_or_else(|| c.err(s, "the norm weight is not a checkpoint tensor"))?;
                let key = key.to_string();
                args.push(Arg::W(c.row(&key, wl)?));
            }
            let k = kernels::norm(
                t,
                "rms_norm",
                "rms_norm",
                l.row_tiles(),
                groups,
                st,
                n,
                *eps,
                s.inputs.len() == 2,
            )?;
            let k = c.kernel(k);
            args.push(Arg::Buf(out));
            items.push(kcall(k, args, vec![x], vec![out]));
        }
        Op::AddRmsNorm { eps } | Op::NormAddNorm { eps } | Op::NormAdd { eps } => {
            let acts = 2;
            let l = c.lay(s.inputs[0])?;
            let n = *c.shape(s.inputs[0]).last().unwrap_or(&1);
            let (groups, st, wl) = c.norm_segments(s, l, n)?;
            let mut args: Vec<Arg> = s.inputs[..acts].iter().map(|&b| Arg::Buf(b)).collect();
            for &w in &s.inputs[acts..] {
                let (key, _) = c
                    .weight(w)
                    .ok_or_else(|| c.err(s, "a norm weight is not a checkpoint tensor"))?;
                let key = key.to_string();
                args.push(Arg::W(c.row(&key, wl)?));
            }
            let (family, doc) = match &s.op {
                Op::NormAddNorm { .. } => ("norm_add_norm", "post-norm + residual add + pre-norm"),
                Op::NormAdd { .. } => ("norm_add", "post-norm + residual add"),
                _ => ("add_rms_norm", "residual add + rms_norm"),
            };
            let k = kernels::norm(t, family, doc, l.row_tiles(), groups, st, n, *eps, true)?;
            let k = c.kernel(k);
            args.extend(s.outputs.iter().map(|&o| Arg::Buf(o)));
            items.push(kcall(k, args, s.inputs[..acts].to_vec(), s.outputs.clone()));
        }
        Op::NormRope { rope, .. } | Op::Rope { rope } => {
            let eps = match &s.op {
                Op::NormRope { eps, .. } => Some(*eps),
                _ => None,
            };
            let (x, out) = (s.inputs[0], s.outputs[0]);
            let shape = c.shape(x).to_vec();
            let (heads, d) = (shape[1], shape[2]);
            if d % 32 != 0 || c.lay(x)?.width % 32 != 0 && c.lay(x)?.width != d {
                return Err(c.err(s, format!("head_dim {d} is not a whole number of tiles")));
            }
            let mut args = vec![Arg::Buf(x)];
            if eps.is_some() {
                let (key, _) = c
                    .weight(s.inputs[1])
                    .ok_or_else(|| c.err(s, "the norm weight is not a checkpoint tensor"))?;
                let key = key.to_string();
                args.push(Arg::W(c.row(&key, DevLayout::flat(1, d))?));
            }
            let (cos, sin) = c.rope(rope)?;
            let rot = c.rotate_half(d)?;
            args.extend([
                Arg::W(cos),
                Arg::W(sin),
                Arg::W(rot),
                Arg::W("kv.select".into()),
                Arg::Pos,
                Arg::Buf(out),
            ]);
            let doc = if eps.is_some() { "q/k rms_norm + RoPE" } else { "RoPE" };
            let k = kernels::norm_rope(t, doc, heads, d / 32, d, eps)?;
            let k = c.kernel(k);
            items.push(kcall(k, args, vec![x], vec![out]));
        }
        Op::KvWrite | Op::NormKvWrite { .. } | Op::RopeKvWrite { .. } => {
            let cache = s.inputs[0];
            let si = c
                .state(cache)
                .ok_or_else(|| c.err(s, "the cache is not a state buffer"))?;
            let (kv, capacity, d) = {
                let sh = &c.plan.state[si].shape;
                (sh[0], sh[1], sh[2])
            };
            let new = s.inputs[1];
            if d % 32 != 0 {
                return Err(c.err(s, format!("head_dim {d} is not a whole number of tiles")));
            }
            let ci = c.cap(capacity);
            let mut args = vec![Arg::State(si), Arg::Buf(new)];
            let (mode, eps, doc) = match &s.op {
                Op::RopeKvWrite { eps, rope } => {
                    let (key, _) = c
                        .weight(s.inputs[2])
                        .ok_or_else(|| c.err(s, "k_norm weight is not a checkpoint tensor"))?;
                    let key = key.to_string();
                    args.push(Arg::W(c.row(&key, DevLayout::flat(1, d))?));
                    let (cos, sin) = c.rope(rope)?;
                    let rot = c.rotate_half(d)?;
                    args.extend([Arg::W(cos), Arg::W(sin), Arg::W(rot)]);
                    ("rope", *eps, "K path into the cache: rms_norm * w, RoPE, row write")
                }
                Op::NormKvWrite { eps } => ("norm", *eps, "V path into the cache: rms_norm (no weight), row write"),
                _ => ("plain", 0.0, "KV-cache row write"),
            };
            args.extend([Arg::W("kv.select".into()), Arg::W("kv.keep".into()), Arg::Pos]);
            let k = kernels::kv_write(t, doc, mode, kv, capacity, d / 32, d, eps, 1 + ci)?;
            let k = c.kernel(k);
            items.push(Item::kernel(comment, k, args, vec![new], vec![]));
        }
        Op::Attention { window, scale } => {
            let (q, out) = (s.inputs[0], s.outputs[0]);
            let (ks, vs) = (
                c.state(s.inputs[1]).ok_or_else(|| c.err(s, "K is not a cache"))?,
                c.state(s.inputs[2]).ok_or_else(|| c.err(s, "V is not a cache"))?,
            );
            let shape = c.shape(q).to_vec();
            let (heads, d) = (shape[1], shape[2]);
            let (kv, capacity) = (c.plan.state[ks].shape[0], c.plan.state[ks].shape[1]);
            if d % 32 != 0 || heads % kv != 0 {
                return Err(c.err(
                    s,
                    format!("unsupported attention geometry: {heads} heads, {kv} kv heads, head_dim {d}"),
                ));
            }
            let m = c.mask(MaskUse {
                capacity,
                window: *window,
                width: capacity.div_ceil(32) * 32,
            });
            let k = kernels::attention(
                t,
                "decode attention (GQA, online softmax)",
                heads,
                kv,
                capacity,
                d / 32,
                *scale,
                *window,
            )?;
            let k = c.kernel(k);
            items.push(kcall(
                k,
                vec![
                    Arg::Buf(q),
                    Arg::State(ks),
                    Arg::State(vs),
                    Arg::Mask(m),
                    Arg::W("kv.select".into()),
                    Arg::Buf(out),
                ],
                vec![q],
                vec![out],
            ));
        }
        Op::LogitsHead { eps, cap } => {
            let (x, out) = (s.inputs[0], s.outputs[0]);
            let (lx, lo) = (c.lay(x)?, c.lay(out)?);
            let n = *c.shape(x).last().unwrap_or(&1);
            if lx.groups != 1 || lx.width != n {
                return Err(c.err(s, "the final norm input must be one unsegmented row"));
            }
            let (gkey, _) = c
                .weight(s.inputs[1])
                .ok_or_else(|| c.err(s, "the norm weight is not a checkpoint tensor"))?;
            let gkey = gkey.to_string();
            let g = c.row(&gkey, DevLayout::flat(1, n))?;
            let w = transposed(c, s, s.inputs[2], lx, lo)?;
            let epilogue = cap.map(|c| ("softcap", softcap_expr("acc", c)));
            let k = kernels::logits_head(
                t,
                "final rms_norm + LM head + soft-cap",
                lx.row_tiles(),
                lx.col_tiles(),
                lo.col_tiles(),
                n,
                *eps,
                epilogue,
            )?;
            let k = c.kernel(k);
            items.push(kcall(
                k,
                vec![Arg::Buf(x), Arg::W(g), Arg::W(w), Arg::Buf(out)],
                vec![x],
                vec![out],
            ));
        }
        Op::Slice { axis, start, end } => {
            let (x, out) = (s.inputs[0], s.outputs[0]);
            let (lx, lo) = (c.lay(x)?, c.lay(out)?);
            let shape = c.shape(x).to_vec();
            if *axis == 0 {
                return Err(c.err(s, "slicing tokens is not supported in the decode step"));
            }
            let inner: usize = shape[axis + 1..].iter().product();
            let (c0, len) = (start * inner, (end - start) * inner);
            let aligned = if lx.width % 32 == 0 {
                c0 % 32 == 0 && len % 32 == 0
            } else {
                c0 % lx.width == 0 && len % lx.width == 0 && lo.width == lx.width
            };
            if !aligned || lo.cols() != len {
                return Err(c.err(s, format!("slice {c0}..{} is not tile aligned in {lx:?}", c0 + len)));
            }
            let offset = lx.dev_col(c0) / 32;
            let off = c.prep(
                format!("slice.offset{offset}"),
                1,
                32,
                false,
                Source::Index { value: offset },
            )?;
            let k = kernels::copy(t, "tile-aligned slice", lo.row_tiles(), lo.col_tiles())?;
            let k = c.kernel(k);
            items.push(Item::kernel(
                comment,
                k,
                vec![Arg::Buf(x), Arg::W(off), Arg::Buf(out)],
                vec![x],
                vec![out],
            ));
        }
        Op::MoeRouter { eps, scalar, top_k } => {
            let (x, out) = (s.inputs[0], s.outputs[0]);
            let lx = c.lay(x)?;
            let n = *c.shape(x).last().unwrap_or(&1);
            let (_, pshape) = c
                .weight(s.inputs[2])
                .ok_or_else(|| c.err(s, "the router projection is not a checkpoint tensor"))?;
            let e = pshape[0];
            if lx.groups != 1 || lx.width != n {
                return Err(c.err(s, "the router input must be one unsegmented row"));
            }
            let (skey, _) = c
                .weight(s.inputs[1])
                .ok_or_else(|| c.err(s, "the router scale is not a checkpoint tensor"))?;
            let skey = skey.to_string();
            let g = c.row(&skey, DevLayout::flat(1, n))?;
            let dense = DevLayout::flat(1, e);
            let w = transposed(c, s, s.inputs[2], lx, dense)?;
            let scores = c.new_scratch(dense);
            let epilogue = Some(("scale", format!("acc * ttl.block.fill({}, shp)", py_f32(*scalar))));
            let k = kernels::logits_head(
                t,
                "router: rms_norm * scale @ proj * scalar",
                lx.row_tiles(),
                lx.col_tiles(),
                dense.col_tiles(),
                n,
                *eps,
                epilogue,
            )?;
            let k = c.kernel(k);
            items.push(Item::kernel(
                format!("{comment} (scores)"),
                k,
                vec![Arg::Buf(x), Arg::W(g), Arg::W(w), Arg::Buf(scores)],
                vec![x],
                vec![scores],
            ));
            c.lay.insert(out, dense);
            let (key, _) = c
                .weight(s.inputs[3])
                .ok_or_else(|| c.err(s, "per_expert_scale is not a checkpoint tensor"))?;
            let key = key.to_string();
            let scale = c.row(&key, dense)?;
            let pad = c.prep(
                format!("moe.pad.e{e}"),
                1,
                e.div_ceil(32) * 32,
                false,
                Source::MoePad { experts: e },
            )?;
            let k = kernels::moe_route(
                t,
                "MoE routing (softmax, top-k, renormalize, per-expert scale)",
                e,
                *top_k,
            )?;
            let k = c.kernel(k);
            items.push(Item::kernel(
                format!("{comment} (routing)"),
                k,
                vec![Arg::Buf(scores), Arg::W(scale), Arg::W(pad), Arg::Buf(out)],
                vec![scores],
                vec![out],
            ));
        }
        Op::MoeRoute { top_k } => {
            let scores = s.inputs[0];
            let e = *c.shape(scores).last().unwrap_or(&1);
            let out = s.outputs[0];
            let dense = DevLayout::flat(1, e);
            c.lay.insert(out, dense);
            let (key, _) = c
                .weight(s.inputs[1])
                .ok_or_else(|| c.err(s, "per_expert_scale is not a checkpoint tensor"))?;
            let key = key.to_string();
            let scale = c.row(&key, DevLayout::flat(1, e))?;
            let pad = c.prep(
                format!("moe.pad.e{e}"),
                1,
                e.div_ceil(32) * 32,
                false,
                Source::MoePad { experts: e },
            )?;
            if c.lay(scores)? != dense {
                return Err(c.err(s, "router scores must be one row"));
            }
            let k = kernels::moe_route(
                t,
                "MoE routing (softmax, top-k, renormalize, per-expert scale)",
                e,
                *top_k,
            )?;
            let k = c.kernel(k);
            items.push(kcall(
                k,
                vec![Arg::Buf(scores), Arg::W(scale), Arg::W(pad), Arg::Buf(out)],
                vec![scores],
                vec![out],
            ));
        }
        Op::MoeExperts => {
            let (x, wr, out) = (s.inputs[0], s.inputs[1], s.outputs[0]);
            let (lx, lo) = (c.lay(x)?, c.lay(out)?);
            let (gkey, gshape) = c
                .weight(s.inputs[3])
                .ok_or_else(|| c.err(s, "gate_up is not a checkpoint tensor"))?;
            let (gkey, gshape) = (gkey.to_string(), gshape.to_vec());
            let (dkey, _) = c
                .weight(s.inputs[4])
                .ok_or_else(|| c.err(s, "down is not a checkpoint tensor"))?;
            let dkey = dkey.to_string();
            let (e, inter) = (gshape[0], gshape[1] / 2);
            let it = inter.div_ceil(32);
            let lgu = DevLayout {
                rows: 1,
                groups: 2 * e,
                width: inter,
            };
            let lact = DevLayout {
                rows: 1,
                groups: e,
                width: inter,
            };
            let xin = DevLayout { rows: 1, ..lx }.canonical();
            let gu = c.prep(
                format!(
                    "{gkey}@t{}",
                    if xin.tag().is_empty() {
                        String::new()
                    } else {
                        format!(".{}", xin.tag())
                    }
                ),
                xin.col_tiles() * 32,
                2 * e * it * 32,
                false,
                Source::MoeGateUp {
                    key: gkey,
                    experts: e,
                    inter,
                    xin,
                },
            )?;
            let lout = DevLayout { rows: 1, ..lo }.canonical();
            let down = c.prep(
                format!(
                    "{dkey}@t{}",
                    if lout.tag().is_empty() {
                        String::new()
                    } else {
                        format!(".{}", lout.tag())
                    }
                ),
                e * it * 32,
                lout.col_tiles() * 32,
                false,
                Source::MoeDown {
                    key: dkey,
                    experts: e,
                    inter,
                    out: lout,
                },
            )?;
            let ex = c.prep(
                format!("moe.expand.e{e}.i{inter}"),
                e.div_ceil(32) * 32,
                e * it * 32,
                false,
                Source::MoeExpand { experts: e, inter },
            )?;
            let s1 = c.new_scratch(lgu);
            let s2 = c.new_scratch(lact);
            let k1 = kernels::matmul(
                t,
                "decode matmul: y = x @ W",
                lx.row_tiles(),
                lx.col_tiles(),
                lgu.col_tiles(),
                None,
            )?;
            let k1 = c.kernel(k1);
            items.push(Item::kernel(
                format!("{comment} (gate/up of every expert)"),
                k1,
                vec![Arg::Buf(x), Arg::W(gu), Arg::Buf(s1)],
                vec![x],
                vec![s1],
            ));
            let k2 = kernels::moe_act(t, "MoE expert activations weighted by the dense routing row", e, it)?;
            let k2 = c.kernel(k2);
            items.push(Item::kernel(
                format!("{comment} (gelu(gate) * up * routing weight)"),
                k2,
                vec![Arg::Buf(s1), Arg::Buf(wr), Arg::W(ex), Arg::Buf(s2)],
                vec![s1, wr],
                vec![s2],
            ));
            let k3 = kernels::matmul(
                t,
                "decode matmul: y = x @ W",
                lact.row_tiles(),
                lact.col_tiles(),
                lo.col_tiles(),
                None,
            )?;
            let k3 = c.kernel(k3);
            items.push(Item::kernel(
                format!("{comment} (down of every expert, summed)"),
                k3,
                vec![Arg::Buf(s2), Arg::W(down), Arg::Buf(out)],
                vec![s2],
                vec![out],
            ));
        }
        // Ops added to the IR later get a clear compile-time (of the model) error here rather
        // than breaking the build of this crate.
        #[allow(unreachable_patterns)]
        other => return Err(c.err(s, format!("`{}` has no Tenstorrent kernel yet", other.mnemonic()))),
    }
    Ok(())
}
