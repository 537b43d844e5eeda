//! The kernel IR: loop-level code shared by the LLVM printer (`cpu/`) and, through
//! the GPU schedule (`gpu/`), the C-style printer (`cstyle/`) and its CUDA
//! (`cuda/`), Metal (`metal/`) and WGSL (`wgsl/`) dialects.
//!
//! A kernel is a body that runs once per *row* of a 1-D launch grid
//! `row in 0..rows`. Rows are independent — any split of the grid across
//! threads, blocks or cores computes the same result — so the CPU runtime hands
//! row ranges `[begin, end)` to a thread pool and the GPU schedule maps rows to
//! workgroups (CUDA blocks, Metal threadgroups). Inside a row the body is
//! sequential structured code: `for` loops, `if`, mutable scalar locals, loads
//! and stores through the kernel's buffer parameters, and *reductions*
//! (`Stmt::Reduce`), the one place
//! where a target may reassociate floating-point arithmetic (vector lanes,
//! partial sums, warp shuffles).
//!
//! Values are f32, i64 (indices and integer data) and bool. Buffers hold f32,
//! bf16, f16 or i32 elements; loads widen to f32 (bf16 → f32 is a 16-bit shift)
//! or sign-extend to i64, stores narrow i64 to i32. A block-quantized weight
//! (GGUF's Q8_0, Q4_K, ...) is a buffer of bytes: loads zero-extend one byte
//! to i64, and the kernel unpacks scales and integers with shifts and masks
//! (`ops/dequant.rs`). A kernel may also have *tiles*: f32 arrays private to
//! the row being computed (stack or L1 on a CPU), where a prefill matmul keeps
//! a block of widened or dequantized weight values and its partial sums, so
//! the weights are converted once per tile of input rows (`ops/tiled.rs`).
//! Only targets whose printers place them use tiles (`Tiles::Local`; the GPU
//! schedule shares a row's loop across lanes instead). Nothing here knows
//! about LLVM, CUDA or Metal.

pub mod build;
pub mod launches;
pub mod ops;
mod verify;

pub use build::{Buf, KernelBuilder, TableRef, TileRef};
pub use launches::{kernel_plan, KernelLaunch, KernelPlan, LaunchArg, ProgramLaunches};
pub use verify::verify;

use gemma4c_ir::{DType, QuantFormat};

/// Why GPU printers never meet `Expr::Tile` or `Stmt::TileStore`: the GPU
/// lowering builds its kernels with `Tiles::None`.
pub const TILES_CPU_ONLY: &str = "tiles are built only for the cpu target (the GPU lowering asks for Tiles::None)";

/// Whether kernels may use tiles (per-row local arrays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiles {
    /// The target has fast private memory per row (a CPU core's stack / L1).
    Local,
    /// Kernels without tiles (GPU: a row's loops are dealt to lanes).
    None,
}

/// Why GPU printers never meet `Elem::Block` or `UnOp::F16Bits`: block-quantized
/// weights are dequantized in the CPU kernels only, and `compile` and the plan
/// checker refuse them for every other target.
pub const BLOCK_CPU_ONLY: &str =
    "block-quantized weights run only on the cpu target (compile and the plan checker refuse them elsewhere)";

/// Element type of a buffer as stored in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Elem {
    F32,
    BF16,
    F16,
    I32,
    /// Blocks of a quantized format, addressed by byte.
    Block(QuantFormat),
}

impl Elem {
    pub fn from_dtype(d: DType) -> Elem {
        match d {
            DType::F32 => Elem::F32,
            DType::BF16 => Elem::BF16,
            DType::F16 => Elem::F16,
            DType::I32 => Elem::I32,
            DType::Block(q) => Elem::Block(q),
        }
    }

    /// Bytes per addressable element (one byte for block formats).
    pub fn size_bytes(self) -> usize {
        match self {
            Elem::F32 | Elem::I32 => 4,
            Elem::BF16 | Elem::F16 => 2,
            Elem::Block(_) => 1,
        }
    }

    /// The scalar type a load produces.
    pub fn value(self) -> Scalar {
        match self {
            Elem::I32 | Elem::Block(_) => Scalar::I64,
            _ => Scalar::F32,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::BF16 => "bf16",
            Elem::F16 => "f16",
            Elem::I32 => "i32",
            Elem::Block(q) => q.name(),
        }
    }
}

/// Type of a value in a kernel body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    F32,
    I64,
    Bool,
}

/// How a kernel uses a buffer (lets printers mark pointers read-only /
/// write-only; a target may also use it to place buffers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

/// A buffer parameter. Distinct parameters never overlap in memory unless
/// both are only read (the caller guarantees it; printers may say `noalias`).
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub elem: Elem,
    pub access: Access,
}

/// A mutable scalar local. `locals[0]` is the row index (set by the grid).
#[derive(Debug, Clone, PartialEq)]
pub struct Local {
    pub name: String,
    pub ty: Scalar,
}

/// A constant f32 array (RoPE inverse frequencies).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub values: Vec<f32>,
}

/// An f32 array private to the grid row being computed (`len` elements;
/// nothing survives from one row to the next). Indices are in bounds by
/// construction of the kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    pub name: String,
    pub len: usize,
}

/// A local variable (index into `Kernel::locals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Var(pub u32);

/// The row index of the grid.
pub const ROW: Var = Var(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// f32 division, or signed integer division (truncating).
    Div,
    /// Signed integer remainder (operands are non-negative where used).
    Rem,
    Min,
    Max,
    /// Bool only.
    And,
    Or,
    /// i64 only: logical shift right and bitwise and (unpacking quantized blocks).
    Shr,
    BitAnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Exp,
    Tanh,
    Cos,
    Sin,
    Sqrt,
    /// i64 → f32 (exact for the small integers kernels convert).
    ToF32,
    /// bool → bool.
    Not,
    /// The low 16 bits of an i64 read as an IEEE half → f32 (exact): the f16
    /// scales of quantized blocks.
    F16Bits,
    /// i64 → i64: the low byte as a signed 8-bit integer (Q8_0 and Q6_K).
    Sext8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    F32(f32),
    I64(i64),
    Bool(bool),
    Var(Var),
    /// `params[param][index]`, widened (f32) or sign-extended (i64).
    Load {
        param: usize,
        index: Box<Expr>,
    },
    /// `tables[table][index]`.
    Table {
        table: usize,
        index: Box<Expr>,
    },
    /// `tiles[tile][index]`.
    Tile {
        tile: usize,
        index: Box<Expr>,
    },
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Un(UnOp, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    /// The f32 arithmetic inside rounds after every operation, as written: no
    /// contraction into fused multiply-adds. Dequantization formulas are
    /// gguf-py's, bit for bit, only if `d * q - m` is not turned into one FMA.
    Exact(Box<Expr>),
}

/// Reduction operators for `Stmt::Reduce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Add,
    Max,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `var = value`.
    Set(Var, Expr),
    /// `var = var ⊕ value`, where the target may reorder the updates of one
    /// loop nest (partial sums, vector lanes): the fast path of matvec and norms.
    Reduce(Var, ReduceOp, Expr),
    /// `params[param][index] = value` (narrowed to the element type).
    Store { param: usize, index: Expr, value: Expr },
    /// `tiles[tile][index] = value` (f32).
    TileStore { tile: usize, index: Expr, value: Expr },
    /// `for var in start..end` (bounds evaluated once, step 1).
    For {
        var: Var,
        start: Expr,
        end: Expr,
        body: Vec<Stmt>,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        els: Vec<Stmt>,
    },
    /// `accs[i][j] += Σ_{c < len} bf16(x[xs[i] + c]) · w[ws[j] + c]`: `x` an
    /// f32 parameter whose values are rounded to bf16 (to nearest, ties to
    /// even) first, `w` a bf16 parameter, products exact in f32, sums in any
    /// order; `len` a multiple of 32. The dot-product block of a CPU's bf16
    /// pair instructions (AVX-512 BF16 `vdpbf16ps`): only `CpuFeature::Avx512Bf16`
    /// variants use it, and only the LLVM printer prints it.
    DotBf16 {
        x: usize,
        xs: Vec<Expr>,
        w: usize,
        ws: Vec<Expr>,
        len: usize,
        accs: Vec<Vec<Var>>,
    },
}

/// Why GPU printers never meet `Stmt::DotBf16`: it is built only in CPU
/// kernel variants.
pub const DOT_BF16_CPU_ONLY: &str = "DotBf16 is built only in CPU kernel variants";

/// A CPU instruction-set extension a kernel variant needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpuFeature {
    /// AVX-512 BF16 (`vdpbf16ps`, `vcvtne2ps2bf16`).
    Avx512Bf16,
}

impl CpuFeature {
    /// The suffix of a variant's name: `{kernel}__{suffix}`.
    pub fn suffix(self) -> &'static str {
        match self {
            CpuFeature::Avx512Bf16 => "avx512bf16",
        }
    }

    /// LLVM's name of the feature (as in `get_host_cpu_features`).
    pub fn llvm_feature(self) -> &'static str {
        match self {
            CpuFeature::Avx512Bf16 => "+avx512bf16",
        }
    }

    pub const ALL: [CpuFeature; 1] = [CpuFeature::Avx512Bf16];
}

/// One kernel: the body runs for each `row in 0..rows`.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Unique within a module and a C identifier (`[A-Za-z0-9_]`); the name
    /// says everything the code depends on, so equal names mean equal kernels.
    pub name: String,
    pub params: Vec<Param>,
    pub locals: Vec<Local>,
    pub tables: Vec<Table>,
    pub tiles: Vec<Tile>,
    pub rows: usize,
    pub body: Vec<Stmt>,
    /// The same computation for CPUs with an extension, named
    /// `{name}__{feature suffix}`, same parameters and grid: the CPU printer
    /// prints it next to the kernel and the JIT runs it instead where the
    /// host has the feature. Its numerics may differ within what its
    /// statements say (`Stmt::DotBf16` rounds activations to bf16).
    pub variants: Vec<(CpuFeature, Kernel)>,
}

impl Kernel {
    /// The parameters as printers document them: `x f32 in, w bf16 in, out f32 out`.
    pub fn params_summary(&self) -> String {
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|p| {
                let access = match p.access {
                    Access::Read => "in",
                    Access::Write => "out",
                    Access::ReadWrite => "inout",
                };
                format!("{} {} {access}", p.name, p.elem.name())
            })
            .collect();
        parts.join(", ")
    }

    pub fn local(&self, v: Var) -> &Local {
        &self.locals[v.0 as usize]
    }

    /// Functions of the math library the body uses (for printers that declare them).
    pub fn unary_ops(&self) -> Vec<UnOp> {
        let mut out = Vec::new();
        fn expr(e: &Expr, out: &mut Vec<UnOp>) {
            match e {
                Expr::F32(_) | Expr::I64(_) | Expr::Bool(_) | Expr::Var(_) => {}
                Expr::Load { index, .. } | Expr::Table { index, .. } | Expr::Tile { index, .. } => expr(index, out),
                Expr::Exact(a) => expr(a, out),
                Expr::Bin(_, a, b) | Expr::Cmp(_, a, b) => {
                    expr(a, out);
                    expr(b, out);
                }
                Expr::Un(op, a) => {
                    if !out.contains(op) {
                        out.push(*op);
                    }
                    expr(a, out);
                }
                Expr::Select(c, a, b) => {
                    expr(c, out);
                    expr(a, out);
                    expr(b, out);
                }
            }
        }
        fn stmts(s: &[Stmt], out: &mut Vec<UnOp>) {
            for st in s {
                match st {
                    Stmt::Set(_, e) | Stmt::Reduce(_, _, e) => expr(e, out),
                    Stmt::Store { index, value, .. } | Stmt::TileStore { index, value, .. } => {
                        expr(index, out);
                        expr(value, out);
                    }
                    Stmt::For { start, end, body, .. } => {
                        expr(start, out);
                        expr(end, out);
                        stmts(body, out);
                    }
                    Stmt::If { cond, then, els } => {
                        expr(cond, out);
                        stmts(then, out);
                        stmts(els, out);
                    }
                    Stmt::DotBf16 { xs, ws, .. } => {
                        for e in xs.iter().chain(ws) {
                            expr(e, out);
                        }
                    }
                }
            }
        }
        stmts(&self.body, &mut out);
        out
    }
}

/// A number as part of a kernel name: `1e-6` → `1em6`, `0.5` → `5em1`
/// (shortest round-trip form, so distinct values give distinct names).
pub fn name_f32(x: f32) -> String {
    sanitize(&format!("{x:e}"))
}

pub fn name_f64(x: f64) -> String {
    sanitize(&format!("{x:e}"))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '.' => Some('p'),
            '-' => Some('m'),
            '+' => None,
            c => Some(c),
        })
        .collect()
}
