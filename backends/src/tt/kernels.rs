//! Kernel families: sizing (grid, blocks, dataflow buffers, modelled L1) and the template
//! context of each generated TT-Lang operation. One template per family under
//! `backends/templates/tt/`; this file decides only numbers.

use serde_json::{json, Value};

use super::target::{Grid, TtTarget, TILE_BYTES};
use super::TtError;

/// One dataflow buffer of a kernel: `tiles` per block, `count` blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dfb {
    pub name: &'static str,
    pub tiles: usize,
    pub count: usize,
}

impl Dfb {
    /// `count` blocks of `tiles` tiles each, named as in the template.
    pub fn new(name: &'static str, tiles: usize, count: usize) -> Dfb {
        Dfb { name, tiles, count }
    }
}

/// One generated operation: one compiled program, whatever the position (run-time indices are
/// read from device tensors, see `POS_DFB_TILES`).
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Python name in kernels.py (assigned when registered).
    pub name: String,
    pub family: &'static str,
    /// Descriptive base for the name.
    pub base: String,
    pub ctx: Value,
    pub dfbs: Vec<Dfb>,
    /// `(cols, rows)` as tt-lang's `grid=` reads it.
    pub grid: Grid,
    /// What one launch moves and computes (the performance model's input, `perf.rs`).
    pub cost: Cost,
}

/// DRAM traffic and arithmetic of one launch. Tiles are bf16 tiles read or written in DRAM
/// (inputs re-read by several cores count once: they are small next to the weights); FLOPs
/// are what the tile engines compute (a decode row still costs a whole 32-row tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    pub dram_bytes: u64,
    pub flops: u64,
}

impl Cost {
    fn new(tiles: usize, flops: usize) -> Cost {
        Cost {
            dram_bytes: (tiles * TILE_BYTES) as u64,
            flops: flops as u64,
        }
    }
}

/// FLOPs of `[rows_t x kt] @ [kt x nt]` in tiles.
fn matmul_flops(rows_t: usize, kt: usize, nt: usize) -> usize {
    2 * rows_t * kt * nt * 32 * 32 * 32
}

impl Kernel {
    /// The template that renders this kernel.
    pub fn template(&self) -> &'static str {
        let streamed = self.ctx.get("kind").is_some();
        match self.family {
            "rms_norm" | "add_rms_norm" | "norm_add" | "norm_add_norm" if streamed => "norm_stream",
            "norm_add" => "norm_add_norm",
            f => f,
        }
    }

    /// Modelled L1 bytes per core: all dataflow buffers (bf16 tiles).
    pub fn l1_bytes(&self) -> usize {
        self.dfbs.iter().map(|d| d.tiles * d.count * TILE_BYTES).sum()
    }

    fn checked(self, t: &TtTarget) -> Result<Kernel, TtError> {
        if !t.grid.contains(self.grid) {
            return Err(TtError::new(format!(
                "kernel `{}` needs a grid of {} x {} cores (cols x rows); {} has {} x {}",
                self.base, self.grid.cols, self.grid.rows, t.name, t.grid.cols, t.grid.rows
            )));
        }
        if self.dfbs.len() > t.max_dfbs {
            return Err(TtError::new(format!(
                "kernel `{}` needs {} dataflow buffers; {} allows {}",
                self.base,
                self.dfbs.len(),
                t.name,
                t.max_dfbs
            )));
        }
        let l1 = self.l1_bytes();
        if l1 > t.l1_bytes {
            return Err(TtError::new(format!(
                "kernel `{}` needs {l1} bytes of L1 per core for its dataflow buffers ({}); {} leaves {} \
                 for them (of {} per core, after firmware and headroom for compiler temporaries; \
                 a smaller block or a streaming variant of this family is needed)",
                self.base,
                self.dfbs
                    .iter()
                    .map(|d| format!("{} {}x{}", d.name, d.count, d.tiles))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.name,
                t.l1_bytes,
                t.l1_total
            )));
        }
        Ok(self)
    }
}

/// Tiles (of bf16 size) of the dataflow buffer that receives one tile of a float32 index tensor
/// (the position tensor, slice offsets) for `ttl.read_index`.
pub const POS_DFB_TILES: usize = 2;

/// Largest divisor of `n` that is at most `cap` (at least 1).
pub fn divisor_le(n: usize, cap: usize) -> usize {
    (1..=cap.max(1).min(n.max(1)))
        .rev()
        .find(|d| n.is_multiple_of(*d))
        .unwrap_or(1)
}

fn bc(iterations: usize) -> usize {
    if iterations > 1 {
        2
    } else {
        1
    }
}

/// Python float literal of an f32 (shortest round trip).
pub fn py_f32(x: f32) -> String {
    let s = format!("{x:?}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// `gelu_tanh(v)` as a block expression over shape `shp`.
pub fn gelu_expr(v: &str) -> String {
    format!(
        "ttl.block.fill(0.5, shp) * {v} * (ttl.block.fill(1.0, shp) + ttl.math.tanh(ttl.block.fill({}, shp) * ({v} + ttl.block.fill({}, shp) * {v} * {v} * {v})))",
        gemma4c_ir::math::GELU_SQRT_2_OVER_PI,
        gemma4c_ir::math::GELU_CUBIC
    )
}

/// `cap * tanh(v / cap)` over shape `shp`.
pub fn softcap_expr(v: &str, cap: f32) -> String {
    let c = py_f32(cap);
    format!("ttl.block.fill({c}, shp) * ttl.math.tanh({v} / ttl.block.fill({c}, shp))")
}

/// `gx` = columns, `gy` = rows (tt-lang's `grid=(gx, gy)`); templates flatten the node
/// `(nx, ny)` row-major as `ny * gx + nx`.
fn with_grid(mut ctx: Value, grid: Grid, per_node: usize, n_blocks: usize) -> Value {
    let m = ctx.as_object_mut().expect("kernel contexts are objects");
    m.insert("gx".into(), json!(grid.cols));
    m.insert("gy".into(), json!(grid.rows));
    m.insert("per_node".into(), json!(per_node));
    m.insert("n_blocks".into(), json!(n_blocks));
    ctx
}

/// How an eltwise operand is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Same tile grid as the output.
    Full,
    /// A `[1, X]` row broadcast over rows.
    Row,
    /// One value (tile element (0, 0)) broadcast everywhere.
    Scalar,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Row => "row",
            Mode::Scalar => "scalar",
        }
    }
}

/// Elementwise family (add, mul, scale, gelu_tanh, softcap, gelu_mul): `expr` over the operands
/// `a_v`, `b_v` (already broadcast to the block shape `shp`).
pub fn eltwise(
    t: &TtTarget,
    base: String,
    doc: &str,
    expr: String,
    modes: &[Mode],
    rows_t: usize,
    cols_t: usize,
) -> Result<Kernel, TtError> {
    let nb = divisor_le(cols_t, 8);
    let col_blocks = cols_t / nb;
    let n_blocks = rows_t * col_blocks;
    let (grid, per_node) = t.grid_for(n_blocks);
    let b = bc(per_node);
    let names = ["a", "b", "c"];
    let inputs: Vec<Value> = modes
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"name": names[i], "mode": m.name()}))
        .collect();
    let mut dfbs: Vec<Dfb> = modes
        .iter()
        .enumerate()
        .map(|(i, m)| Dfb::new(names[i], if *m == Mode::Scalar { 1 } else { nb }, b))
        .collect();
    dfbs.push(Dfb::new("y", nb, b));
    let ctx = json!({
        "doc": doc, "expr": expr, "inputs": inputs, "rows_t": rows_t, "cols_t": cols_t, "nb": nb,
        "col_blocks": col_blocks, "bc": b,
    });
    Kernel {
        name: String::new(),
        family: "eltwise",
        base,
        ctx: with_grid(ctx, grid, per_node, n_blocks),
        dfbs,
        grid,
        cost: Cost::new(
            modes
                .iter()
                .map(|m| {
                    if *m == Mode::Scalar {
                        1
                    } else if *m == Mode::Row {
                        cols_t
                    } else {
                        rows_t * cols_t
                    }
                })
                .sum::<usize>()
                + rows_t * cols_t,
            8 * rows_t * cols_t * 1024,
        ),
    }
    .checked(t)
}

fn matmul_blocks(t: &TtTarget, rows_t: usize, kt: usize, nt: usize, weights: usize) -> Result<(usize, usize), TtError> {
    let nb = divisor_le(nt, (nt / t.cores()).clamp(1, 8));
    let mut kb = divisor_le(kt, 8);
    loop {
        let n_blocks = rows_t * (nt / nb);
        let (_, per_node) = t.grid_for(n_blocks);
        let bin = bc(per_node * (kt / kb));
        let bytes = (kb * bin + weights * kb * nb * bin + nb * bc(per_node)) * TILE_BYTES;
        if bytes <= t.l1_bytes || kb == 1 {
            return Ok((kb, nb));
        }
        kb = divisor_le(kt, kb - 1);
    }
}

/// Decode matmul `y = epilogue(x @ w)`, K streamed, output blocks over the grid.
pub fn matmul(
    t: &TtTarget,
    doc: &str,
    rows_t: usize,
    kt: usize,
    nt: usize,
    epilogue: Option<(&str, String)>,
) -> Result<Kernel, TtError> {
    let (kb, nb) = matmul_blocks(t, rows_t, kt, nt, 1)?;
    let col_blocks = nt / nb;
    let n_blocks = rows_t * col_blocks;
    let (grid, per_node) = t.grid_for(n_blocks);
    let (bc_in, bc_out) = (bc(per_node * (kt / kb)), bc(per_node));
    let (edoc, expr, tag) = match &epilogue {
        Some((d, e)) => (d.to_string(), e.clone(), format!("_{d}")),
        None => (String::new(), "acc".to_string(), String::new()),
    };
    let ctx = json!({
        "doc": doc, "rows_t": rows_t, "kt": kt, "nt": nt, "kb": kb, "nb": nb, "k_blocks": kt / kb,
        "col_blocks": col_blocks, "bc_in": bc_in, "bc_out": bc_out, "epilogue": expr, "epilogue_doc": edoc,
    });
    Kernel {
        name: String::new(),
        family: "matmul",
        base: format!("matmul_{}x{}{tag}", kt * 32, nt * 32),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
        dfbs: vec![
            Dfb::new("x", kb, bc_in),
            Dfb::new("w", kb * nb, bc_in),
            Dfb::new("y", nb, bc_out),
        ],
        grid,
        cost: Cost::new(kt * nt + rows_t * (kt + nt), matmul_flops(rows_t, kt, nt)),
    }
    .checked(t)
}

/// `gelu_tanh(x @ wg) * (x @ wu)` in one launch.
pub fn geglu_matmul(t: &TtTarget, doc: &str, rows_t: usize, kt: usize, nt: usize) -> Result<Kernel, TtError> {
    let (kb, nb) = matmul_blocks(t, rows_t, kt, nt, 2)?;
    let col_blocks = nt / nb;
    let n_blocks = rows_t * col_blocks;
    let (grid, per_node) = t.grid_for(n_blocks);
    let (bc_in, bc_out) = (bc(per_node * (kt / kb)), bc(per_node));
    let ctx = json!({
        "doc": doc, "rows_t": rows_t, "kt": kt, "nt": nt, "kb": kb, "nb": nb, "k_blocks": kt / kb,
        "col_blocks": col_blocks, "bc_in": bc_in, "bc_out": bc_out, "gelu_g": gelu_expr("g"),
    });
    Kernel {
        name: String::new(),
        family: "geglu_matmul",
        base: format!("geglu_matmul_{}x{}", kt * 32, nt * 32),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
        dfbs: vec![
            Dfb::new("x", kb, bc_in),
            Dfb::new("wg", kb * nb, bc_in),
            Dfb::new("wu", kb * nb, bc_in),
            Dfb::new("y", nb, bc_out),
        ],
        grid,
        cost: Cost::new(2 * kt * nt + rows_t * (kt + nt), 2 * matmul_flops(rows_t, kt, nt)),
    }
    .checked(t)
}

/// Final norm + LM head + soft-cap.
#[allow(clippy::too_many_arguments)]
pub fn logits_head(
    t: &TtTarget,
    doc: &str,
    rows_t: usize,
    kt: usize,
    nt: usize,
    n: usize,
    eps: f32,
    epilogue: Option<(&str, String)>,
) -> Result<Kernel, TtError> {
    if rows_t != 1 {
        return Err(TtError::new(
            "norm + matmul kernels are generated for the decode step (one row) only",
        ));
    }
    let mut nb = divisor_le(nt, (nt / t.cores()).clamp(1, 8));
    let (grid, per_node, n_blocks, b, bw) = loop {
        let n_blocks = rows_t * (nt / nb);
        let (grid, per_node) = t.grid_for(n_blocks);
        let b = bc(per_node);
        let bytes = |bw: usize| (2 * kt + kt * nb * bw + nb * b) * TILE_BYTES;
        if bytes(b) <= t.l1_bytes {
            break (grid, per_node, n_blocks, b, b);
        }
        if nb == 1 {
            // One weight column panel at a time (31B's 5376-deep panel does not fit twice).
            break (grid, per_node, n_blocks, b, 1);
        }
        nb = divisor_le(nt, nb - 1);
    };
    let (edoc, expr, tag) = match &epilogue {
        Some((d, e)) => (d.to_string(), e.clone(), format!("_{d}")),
        None => (String::new(), "acc".to_string(), String::new()),
    };
    let ctx = json!({
        "doc": doc, "rows_t": rows_t, "kt": kt, "nt": nt, "nb": nb, "n": n, "col_blocks": nt / nb,
        "bc_out": b, "bc_w": bw, "bc_x": 1, "inv_n": py_f32(1.0 / n as f32), "eps": py_f32(eps), "epilogue": expr, "epilogue_doc": edoc,
    });
    Kernel {
        name: String::new(),
        family: "logits_head",
        base: format!("norm_matmul_{}x{}{tag}", kt * 32, nt * 32),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
        dfbs: vec![
            Dfb::new("x", kt, 1),
            Dfb::new("g", kt, 1),
            Dfb::new("w", kt * nb, bw),
            Dfb::new("y", nb, b),
        ],
        grid,
        cost: Cost::new(kt * nt + 2 * kt + nt, matmul_flops(rows_t, kt, nt)),
    }
    .checked(t)
}

/// Row-norm families over `groups` segments of `st` tiles (`n` real columns each):
/// `rms_norm` (optional weight), `add_rms_norm`, `norm_add`, `norm_add_norm`. A segment that
/// does not fit in L1 whole is streamed in chunks (one pass per statistic).
#[allow(clippy::too_many_arguments)]
pub fn norm(
    t: &TtTarget,
    family: &'static str,
    doc: &str,
    rows_t: usize,
    groups: usize,
    st: usize,
    n: usize,
    eps: f32,
    has_w: bool,
) -> Result<Kernel, TtError> {
    let n_blocks = rows_t * groups;
    let (grid, per_node) = t.grid_for(n_blocks);
    let b = bc(per_node);
    let names: &[&'static str] = match family {
        "rms_norm" if has_w => &["x", "w", "y"],
        "rms_norm" => &["x", "y"],
        "add_rms_norm" => &["a", "b", "w", "y", "s"],
        "norm_add_norm" => &["res", "x", "w_post", "w_pre", "y", "s"],
        "norm_add" => &["res", "x", "w_post", "s"],
        other => return Err(TtError::new(format!("unknown norm family {other}"))),
    };
    let ctx = json!({
        "doc": doc, "rows_t": rows_t, "groups": groups, "st": st, "n": n, "bc": b, "has_w": has_w,
        "inv_n": py_f32(1.0 / n as f32), "eps": py_f32(eps), "has_pre": family == "norm_add_norm",
    });
    let w = if has_w || family != "rms_norm" { "" } else { "_unit" };
    let g = if groups > 1 { format!("_{groups}x") } else { "_".into() };
    let whole = Kernel {
        name: String::new(),
        family,
        base: format!("{family}{g}{n}{w}"),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
        dfbs: names
            .iter()
            .map(|&name| Dfb {
                name,
                tiles: st,
                count: b,
            })
            .collect(),
        grid,
        cost: Cost::new(names.len() * rows_t * groups * st, 8 * rows_t * groups * st * 1024),
    };
    if whole.l1_bytes() <= t.l1_bytes {
        return whole.checked(t);
    }
    // Streamed: (1, cb) chunks, double buffered.
    let budget = t.l1_bytes / (names.len() * 2 * TILE_BYTES);
    let cb = divisor_le(st, budget.min(16));
    let var = |name: &str| {
        match name {
            "res" => "r",
            "w_post" => "wa",
            "w_pre" => "wb",
            other => other,
        }
        .to_string()
    };
    let d = |name: &str| json!({"var": var(name), "tensor": name, "weight": name.starts_with('w')});
    let (passes, outs): (Vec<Vec<Value>>, Vec<&str>) = match family {
        "rms_norm" if has_w => (vec![vec![d("x")], vec![d("x"), d("w")]], vec!["y"]),
        "rms_norm" => (vec![vec![d("x")], vec![d("x")]], vec!["y"]),
        "add_rms_norm" => (vec![vec![d("a"), d("b")], vec![d("a"), d("b"), d("w")]], vec!["s", "y"]),
        "norm_add" => (vec![vec![d("x")], vec![d("res"), d("x"), d("w_post")]], vec!["s"]),
        _ => (
            vec![
                vec![d("x")],
                vec![d("res"), d("x"), d("w_post")],
                vec![d("res"), d("x"), d("w_post"), d("w_pre")],
            ],
            vec!["s", "y"],
        ),
    };
    let dfbs: Vec<Value> = names
        .iter()
        .map(|name| json!({"var": var(name), "tensor": name}))
        .collect();
    let ctx = json!({
        "doc": doc, "kind": family, "rows_t": rows_t, "groups": groups, "st": st, "n": n, "has_w": has_w,
        "cb": cb, "nc": st / cb, "inv_n": py_f32(1.0 / n as f32), "eps": py_f32(eps), "dfbs": dfbs,
        "passes": passes, "outs": outs,
    });
    Kernel {
        name: String::new(),
        family,
        base: format!("{family}{g}{n}{w}_streamed"),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
        dfbs: names
            .iter()
            .map(|&name| Dfb {
                name,
                tiles: cb,
                count: 2,
            })
            .collect(),
        grid,
        cost: Cost::new(names.len() * rows_t * groups * st * 2, 8 * rows_t * groups * st * 1024),
    }
    .checked(t)
}

/// q/k norm + RoPE (or RoPE alone) per head.
pub fn norm_rope(
    t: &TtTarget,
    doc: &str,
    heads: usize,
    dt: usize,
    n: usize,
    eps: Option<f32>,
) -> Result<Kernel, TtError> {
    let (grid, per_node) = t.grid_for(heads);
    let b = bc(per_node);
    let has_norm = eps.is_some();
    let ctx = json!({
        "doc": doc, "heads": heads, "dt": dt, "bc": b, "has_norm": has_norm,
        "inv_n": py_f32(1.0 / n as f32), "eps": py_f32(eps.unwrap_or(0.0)),
    });
    let mut dfbs = vec![Dfb::new("x", dt, b)];
    if has_norm {
        dfbs.push(Dfb::new("w", dt, b));
    }
    dfbs.extend([
        Dfb::new("cos", dt, b),
        Dfb::new("sin", dt, b),
        Dfb::new("rot", dt * dt, b),
        Dfb::new("sel", 1, b),
        Dfb::new("pos", POS_DFB_TILES, 1),
        Dfb::new("y", dt, b),
    ]);
    let fam = if has_norm { "norm_rope" } else { "rope" };
    Kernel {
        name: String::new(),
        family: "norm_rope",
        base: format!("{fam}_{heads}x{n}"),
        ctx: with_grid(ctx, grid, per_node, heads),
        dfbs,
        grid,
        cost: Cost::new(
            heads * (4 * dt + dt * dt + 1) + if has_norm { heads * dt } else { 0 },
            heads * (matmul_flops(1, dt, dt) + 2 * matmul_flops(1, 1, dt)),
        ),
    }
    .checked(t)
}

/// KV-cache row write: `mode` is "plain" (kv_write), "norm" (norm_kv_write) or "rope"
/// (rope_kv_write). The slot is read at run time from tile `pos_tile` of the position tensor.
#[allow(clippy::too_many_arguments)]
pub fn kv_write(
    t: &TtTarget,
    doc: &str,
    mode: &'static str,
    kv_heads: usize,
    capacity: usize,
    dt: usize,
    n: usize,
    eps: f32,
    pos_tile: usize,
) -> Result<Kernel, TtError> {
    let (grid, per_node) = t.grid_for(kv_heads);
    let b = bc(per_node);
    let cap_t = capacity.div_ceil(32);
    let ctx = json!({
        "doc": doc, "mode": mode, "kv_heads": kv_heads, "capacity": capacity, "cap_t": cap_t, "dt": dt,
        "bc": b, "inv_n": py_f32(1.0 / n as f32), "eps": py_f32(eps), "pos_tile": pos_tile,
    });
    let mut dfbs = vec![Dfb::new("cache", dt, b), Dfb::new("new", dt, b)];
    if mode == "rope" {
        dfbs.extend([
            Dfb::new("w", dt, b),
            Dfb::new("cos", dt, b),
            Dfb::new("sin", dt, b),
            Dfb::new("rot", dt * dt, b),
            Dfb::new("rope_sel", 1, b),
        ]);
    }
    dfbs.extend([
        Dfb::new("sel", 1, b),
        Dfb::new("keep", 1, b),
        Dfb::new("out", dt, b),
        Dfb::new("reader_pos", POS_DFB_TILES, 1),
        Dfb::new("writer_pos", POS_DFB_TILES, 1),
    ]);
    let fam = match mode {
        "rope" => "rope_kv_write",
        "norm" => "norm_kv_write",
        _ => "kv_write",
    };
    Kernel {
        name: String::new(),
        family: "kv_write",
        base: format!("{fam}_{kv_heads}x{capacity}x{n}"),
        ctx: with_grid(ctx, grid, per_node, kv_heads),
        dfbs,
        grid,
        cost: Cost::new(
            kv_heads * (3 * dt + 2)
                + if mode == "rope" {
                    kv_heads * (4 * dt + dt * dt + 1)
                } else {
                    0
                },
            kv_heads
                * (matmul_flops(1, 1, dt)
                    + if mode == "rope" {
                        matmul_flops(1, dt, dt) + 2 * matmul_flops(1, 1, dt)
                    } else {
                        0
                    }),
        ),
    }
    .checked(t)
}

/// Decode attention over a head-major cache.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    t: &TtTarget,
    doc: &str,
    heads: usize,
    kv_heads: usize,
    capacity: usize,
    dt: usize,
    scale: f32,
    window: Option<usize>,
) -> Result<Kernel, TtError> {
    // One block per KV head (GQA-packed: its query heads share every K/V chunk read).
    let group = heads / kv_heads;
    let (grid, per_node) = t.grid_for(kv_heads);
    let cap_t = capacity.div_ceil(32);
    let bq = bc(per_node * group);
    let mut sb = divisor_le(cap_t, 8);
    let bkv = loop {
        let bkv = bc(per_node * (cap_t / sb));
        let bytes = (2 * dt * bq + 2 + (2 * sb * dt + sb) * bkv) * TILE_BYTES;
        if bytes <= t.l1_bytes || sb == 1 {
            break bkv;
        }
        sb = divisor_le(cap_t, sb - 1);
    };
    let ctx = json!({
        "doc": doc, "heads": heads, "kv_heads": kv_heads, "group": group, "cap_t": cap_t,
        "dt": dt, "sb": sb, "n_chunks": cap_t / sb, "bc_q": bq, "bc_kv": bkv, "scale": py_f32(scale),
    });
    let w = match window {
        Some(w) => format!("_w{w}"),
        None => String::new(),
    };
    Kernel {
        name: String::new(),
        family: "attention",
        base: format!("attention_{heads}x{}_{kv_heads}x{capacity}{w}", dt * 32),
        ctx: with_grid(ctx, grid, per_node, kv_heads),
        dfbs: vec![
            Dfb::new("q", dt, bq),
            Dfb::new("sel", 1, 2),
            Dfb::new("k", sb * dt, bkv),
            Dfb::new("v", sb * dt, bkv),
            Dfb::new("mask", sb, bkv),
            Dfb::new("o", dt, bq),
        ],
        grid,
        cost: Cost::new(
            kv_heads * (2 * cap_t * dt + cap_t) + 2 * heads * dt + 2 * heads,
            kv_heads * 2 * matmul_flops(1, dt, cap_t),
        ),
    }
    .checked(t)
}

/// MoE routing to a dense weight row.
pub fn moe_route(t: &TtTarget, doc: &str, experts: usize, top_k: usize) -> Result<Kernel, TtError> {
    let et = experts.div_ceil(32);
    let ctx = json!({"doc": doc, "experts": experts, "et": et, "top_k": top_k});
    Kernel {
        name: String::new(),
        family: "moe_route",
        base: format!("moe_route_{experts}_top{top_k}"),
        ctx: with_grid(ctx, Grid { cols: 1, rows: 1 }, 1, 1),
        dfbs: ["scores", "scale", "pad", "y"]
            .iter()
            .map(|&name| Dfb {
                name,
                tiles: et,
                count: 1,
            })
            .collect(),
        grid: Grid { cols: 1, rows: 1 },
        cost: Cost::new(4 * et, 64 * et * 1024),
    }
    .checked(t)
}

/// Dense expert activations `gelu(gate_e) * up_e * w_e`.
pub fn moe_act(t: &TtTarget, doc: &str, experts: usize, it: usize) -> Result<Kernel, TtError> {
    let et = experts.div_ceil(32);
    let nb = divisor_le(it, 8);
    let jb = it / nb;
    let n_blocks = experts * jb;
    let (grid, per_node) = t.grid_for(n_blocks);
    let b = bc(per_node);
    let ctx = json!({
        "doc": doc, "experts": experts, "et": et, "it": it, "it2": 2 * it, "nb": nb, "jb": jb, "bc": b,
        "gelu_g": gelu_expr("g"),
    });
    Kernel {
        name: String::new(),
        family: "moe_act",
        base: format!("moe_act_{experts}x{}", it * 32),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
        dfbs: vec![
            Dfb::new("gate", nb, b),
            Dfb::new("up", nb, b),
            Dfb::new("w", et, b),
            Dfb::new("expand", et * nb, b),
            Dfb::new("y", nb, b),
        ],
        grid,
        cost: Cost::new(
            experts * it * 3 + et * (1 + nb * jb * experts),
            16 * experts * it * 1024,
        ),
    }
    .checked(t)
}

/// Tile-aligned column slice (the start column is read at run time from a one-tile tensor).
pub fn copy(t: &TtTarget, doc: &str, rows_t: usize, cols_t: usize) -> Result<Kernel, TtError> {
    let nb = divisor_le(cols_t, 8);
    let col_blocks = cols_t / nb;
    let n_blocks = rows_t * col_blocks;
    let (grid, per_node) = t.grid_for(n_blocks);
    let b = bc(per_node);
    let ctx = json!({"doc": doc, "rows_t": rows_t, "cols_t": cols_t, "nb": nb, "col_blocks": col_blocks, "bc": b});
    Kernel {
        name: String::new(),
        family: "copy",
        base: format!("slice_{}", cols_t * 32),
        ctx: with_grid(ctx, grid, per_node, n_blocks),
        dfbs: vec![
            Dfb::new("x", nb, b),
            Dfb::new("y", nb, b),
            Dfb::new("offset", POS_DFB_TILES, 1),
        ],
        grid,
        cost: Cost::new(2 * rows_t * cols_t, 0),
    }
    .checked(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p300() -> TtTarget {
        TtTarget::P300
    }

    #[test]
    fn kernels_use_grids_in_cols_rows_order_within_the_device() {
        let t = p300();
        // A wide matmul (E4B's LM head: 2560 -> 262144) spreads over all 13 x 10 cores.
        let k = matmul(&t, "doc", 1, 80, 8192, None).unwrap();
        assert_eq!(k.grid, Grid { cols: 13, rows: 10 });
        assert_eq!((k.ctx["gx"].as_u64(), k.ctx["gy"].as_u64()), (Some(13), Some(10)));
        // A kernel grid wider than the device is refused, naming kernel and figures.
        let narrow = TtTarget {
            grid: Grid { cols: 4, rows: 13 },
            ..p300()
        };
        let e = Kernel {
            grid: Grid { cols: 13, rows: 1 },
            ..k
        }
        .checked(&narrow)
        .unwrap_err();
        assert!(e.0.contains("13 x 1") && e.0.contains("4 x 13"), "{e}");
    }

    #[test]
    fn l1_overflow_is_a_compile_time_error_naming_the_kernel() {
        let t = p300();
        // Too little L1 even for streaming: a clear error naming the kernel and the budget.
        let small = TtTarget {
            l1_bytes: 8 * TILE_BYTES,
            ..p300()
        };
        let e = norm(&small, "norm_add_norm", "doc", 1, 1, 168, 5376, 1e-6, true).unwrap_err();
        assert!(
            e.0.contains("norm_add_norm_5376") && e.0.contains("L1") && e.0.contains("16384"),
            "{e}"
        );
        // A whole-row sandwich norm of 5376 (Gemma 4 31B) would need six 168-tile buffers: streamed.
        let k = norm(&t, "norm_add_norm", "doc", 1, 1, 168, 5376, 1e-6, true).unwrap();
        assert_eq!(k.template(), "norm_stream");
        assert!(k.l1_bytes() <= t.l1_bytes);
        // The same kernel fits at E4B's 2560.
        let k = norm(&t, "norm_add_norm", "doc", 1, 1, 80, 2560, 1e-6, true).unwrap();
        assert_eq!(k.dfbs.len(), 6);
        assert_eq!(k.l1_bytes(), 6 * 80 * TILE_BYTES);
    }

    #[test]
    fn dataflow_buffer_limit_is_checked() {
        let t = TtTarget { max_dfbs: 4, ..p300() };
        let e = attention(&t, "doc", 8, 2, 1024, 8, 1.0, None).unwrap_err();
        assert!(e.0.contains("dataflow buffers"), "{e}");
    }

    #[test]
    fn matmul_blocks_shrink_to_fit_l1() {
        let t = TtTarget {
            l1_bytes: 64 * TILE_BYTES,
            ..p300()
        };
        let k = matmul(&t, "doc", 1, 80, 320, None).unwrap();
        assert!(k.l1_bytes() <= t.l1_bytes, "{}", k.l1_bytes());
    }

    #[test]
    fn python_float_literals_round_trip() {
        assert_eq!(py_f32(1.0), "1.0");
        assert_eq!(py_f32(1e-6), "1e-6");
        assert_eq!(py_f32(30.0), "30.0");
        assert_eq!(py_f32(0.088_388_35), "0.08838835");
        assert_eq!(divisor_le(336, 8), 8);
        assert_eq!(divisor_le(15, 8), 5);
        assert_eq!(divisor_le(7, 4), 1);
    }
}
