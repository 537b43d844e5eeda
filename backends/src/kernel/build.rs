//! A small builder for kernel bodies, so op kernels read like the loops they
//! are: `k.for_range("j", 0, d, |k, j| k.store(out, row * d + j, x.at(row * d + j) * s))`.

use std::ops::{Add, Div, Mul, Rem, Sub};

use super::{
    Access, BinOp, CmpOp, CpuFeature, Elem, Expr, Kernel, Local, Param, ReduceOp, Scalar, Stmt, Table, Tile, UnOp, Var,
    ROW,
};

/// A buffer parameter of the kernel being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf(pub usize);

impl Buf {
    /// `buf[index]` (loaded and widened).
    pub fn at(self, index: impl Into<Expr>) -> Expr {
        Expr::Load {
            param: self.0,
            index: Box::new(index.into()),
        }
    }
}

/// A constant table of the kernel being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableRef(pub usize);

impl TableRef {
    pub fn at(self, index: impl Into<Expr>) -> Expr {
        Expr::Table {
            table: self.0,
            index: Box::new(index.into()),
        }
    }
}

/// A tile of the kernel being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRef(pub usize);

impl TileRef {
    pub fn at(self, index: impl Into<Expr>) -> Expr {
        Expr::Tile {
            tile: self.0,
            index: Box::new(index.into()),
        }
    }
}

pub struct KernelBuilder {
    kernel: Kernel,
    /// Statement lists being filled: the body, then one per open loop / branch.
    stack: Vec<Vec<Stmt>>,
}

impl KernelBuilder {
    pub fn new(name: impl Into<String>, rows: usize) -> Self {
        KernelBuilder {
            kernel: Kernel {
                name: name.into(),
                params: Vec::new(),
                locals: vec![Local {
                    name: "row".into(),
                    ty: Scalar::I64,
                }],
                tables: Vec::new(),
                tiles: Vec::new(),
                rows,
                body: Vec::new(),
                variants: Vec::new(),
            },
            stack: vec![Vec::new()],
        }
    }

    pub fn param(&mut self, name: &str, elem: Elem, access: Access) -> Buf {
        self.kernel.params.push(Param {
            name: name.into(),
            elem,
            access,
        });
        Buf(self.kernel.params.len() - 1)
    }

    pub fn table(&mut self, name: &str, values: Vec<f32>) -> TableRef {
        self.kernel.tables.push(Table {
            name: name.into(),
            values,
        });
        TableRef(self.kernel.tables.len() - 1)
    }

    /// An f32 tile of `len` elements, private to each grid row.
    pub fn tile(&mut self, name: &str, len: usize) -> TileRef {
        self.kernel.tiles.push(Tile { name: name.into(), len });
        TileRef(self.kernel.tiles.len() - 1)
    }

    pub fn local(&mut self, name: &str, ty: Scalar) -> Var {
        self.kernel.locals.push(Local { name: name.into(), ty });
        Var(self.kernel.locals.len() as u32 - 1)
    }

    /// A local initialized to `value` (its type is the value's).
    pub fn let_f32(&mut self, name: &str, value: impl Into<Expr>) -> Var {
        let v = self.local(name, Scalar::F32);
        self.set(v, value);
        v
    }

    pub fn let_i64(&mut self, name: &str, value: impl Into<Expr>) -> Var {
        let v = self.local(name, Scalar::I64);
        self.set(v, value);
        v
    }

    pub fn row(&self) -> Expr {
        Expr::Var(ROW)
    }

    fn push(&mut self, s: Stmt) {
        self.stack.last_mut().expect("open statement list").push(s);
    }

    pub fn set(&mut self, v: Var, value: impl Into<Expr>) {
        self.push(Stmt::Set(v, value.into()));
    }

    /// `v += value`, reassociable.
    pub fn sum(&mut self, v: Var, value: impl Into<Expr>) {
        self.push(Stmt::Reduce(v, ReduceOp::Add, value.into()));
    }

    /// `v = max(v, value)`, reassociable.
    pub fn max(&mut self, v: Var, value: impl Into<Expr>) {
        self.push(Stmt::Reduce(v, ReduceOp::Max, value.into()));
    }

    pub fn store(&mut self, b: Buf, index: impl Into<Expr>, value: impl Into<Expr>) {
        self.push(Stmt::Store {
            param: b.0,
            index: index.into(),
            value: value.into(),
        });
    }

    pub fn tile_store(&mut self, t: TileRef, index: impl Into<Expr>, value: impl Into<Expr>) {
        self.push(Stmt::TileStore {
            tile: t.0,
            index: index.into(),
            value: value.into(),
        });
    }

    /// `for name in start..end { body }`.
    pub fn for_range(
        &mut self,
        name: &str,
        start: impl Into<Expr>,
        end: impl Into<Expr>,
        body: impl FnOnce(&mut Self, Expr),
    ) {
        let (start, end) = (start.into(), end.into());
        if let (Expr::I64(a), Expr::I64(b)) = (&start, &end) {
            if b - a == 1 {
                // One iteration: no loop, the index is a constant.
                body(self, Expr::I64(*a));
                return;
            }
        }
        let var = self.local(name, Scalar::I64);
        self.stack.push(Vec::new());
        body(self, Expr::Var(var));
        let body = self.stack.pop().expect("loop body");
        self.push(Stmt::For { var, start, end, body });
    }

    pub fn if_(&mut self, cond: Expr, then: impl FnOnce(&mut Self)) {
        self.if_else(cond, then, |_| {});
    }

    pub fn if_else(&mut self, cond: Expr, then: impl FnOnce(&mut Self), els: impl FnOnce(&mut Self)) {
        self.stack.push(Vec::new());
        then(self);
        let then = self.stack.pop().expect("then");
        self.stack.push(Vec::new());
        els(self);
        let els = self.stack.pop().expect("else");
        self.push(Stmt::If { cond, then, els });
    }

    /// `Stmt::DotBf16`: `accs[i][j] += Σ_{c < len} bf16(x[xs[i] + c]) · w[ws[j] + c]`.
    pub fn dot_bf16(&mut self, x: Buf, xs: Vec<Expr>, w: Buf, ws: Vec<Expr>, len: usize, accs: Vec<Vec<Var>>) {
        self.push(Stmt::DotBf16 {
            x: x.0,
            xs,
            w: w.0,
            ws,
            len,
            accs,
        });
    }

    /// Attaches a variant of this kernel for CPUs with `feature`.
    pub fn variant(&mut self, feature: CpuFeature, k: Kernel) {
        self.kernel.variants.push((feature, k));
    }

    /// The finished kernel; panics if it does not type-check (a bug in an op
    /// builder, never user input).
    pub fn finish(self) -> Kernel {
        let k = self.finish_unchecked();
        if let Err(e) = super::verify(&k) {
            panic!("kernel {} does not verify: {e}", k.name);
        }
        k
    }

    /// The kernel as built, without verifying it.
    pub fn finish_unchecked(mut self) -> Kernel {
        assert_eq!(self.stack.len(), 1, "unclosed loop in kernel {}", self.kernel.name);
        self.kernel.body = self.stack.pop().expect("body");
        self.kernel
    }
}

// ---- expressions ----

impl From<f32> for Expr {
    fn from(x: f32) -> Expr {
        Expr::F32(x)
    }
}

impl From<i64> for Expr {
    fn from(x: i64) -> Expr {
        Expr::I64(x)
    }
}

impl From<bool> for Expr {
    fn from(x: bool) -> Expr {
        Expr::Bool(x)
    }
}

impl From<usize> for Expr {
    fn from(x: usize) -> Expr {
        Expr::I64(x as i64)
    }
}

impl From<Var> for Expr {
    fn from(v: Var) -> Expr {
        Expr::Var(v)
    }
}

impl From<&Expr> for Expr {
    fn from(e: &Expr) -> Expr {
        e.clone()
    }
}

/// A binary expression, with integer identities folded away (`i * 1`,
/// `i + 0`, constant operands) so generated index arithmetic stays readable.
fn bin(op: BinOp, a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    let (a, b) = (a.into(), b.into());
    match (op, &a, &b) {
        (BinOp::Add, Expr::I64(x), Expr::I64(y)) => return Expr::I64(x + y),
        (BinOp::Mul, Expr::I64(x), Expr::I64(y)) => return Expr::I64(x * y),
        (BinOp::Add, _, Expr::I64(0)) | (BinOp::Sub, _, Expr::I64(0)) | (BinOp::Mul, _, Expr::I64(1)) => return a,
        (BinOp::Div, _, Expr::I64(1)) => return a,
        (BinOp::Add, Expr::I64(0), _) | (BinOp::Mul, Expr::I64(1), _) => return b,
        (BinOp::Mul, Expr::I64(0), _) | (BinOp::Mul, _, Expr::I64(0)) => return Expr::I64(0),
        _ => {}
    }
    Expr::Bin(op, Box::new(a), Box::new(b))
}

macro_rules! arith {
    ($tr:ident, $f:ident, $op:expr) => {
        impl<T: Into<Expr>> $tr<T> for Expr {
            type Output = Expr;
            fn $f(self, rhs: T) -> Expr {
                bin($op, self, rhs)
            }
        }
        impl<T: Into<Expr>> $tr<T> for &Expr {
            type Output = Expr;
            fn $f(self, rhs: T) -> Expr {
                bin($op, self.clone(), rhs)
            }
        }
    };
}

arith!(Add, add, BinOp::Add);
arith!(Sub, sub, BinOp::Sub);
arith!(Mul, mul, BinOp::Mul);
arith!(Div, div, BinOp::Div);
arith!(Rem, rem, BinOp::Rem);

pub fn min(a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    bin(BinOp::Min, a, b)
}

pub fn max(a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    bin(BinOp::Max, a, b)
}

pub fn and(a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    bin(BinOp::And, a, b)
}

/// `a >> b` (i64, logical).
pub fn shr(a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    bin(BinOp::Shr, a, b)
}

/// `a & b` (i64).
pub fn bit_and(a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    bin(BinOp::BitAnd, a, b)
}

/// The low byte of `a` as a signed 8-bit integer.
pub fn sext8(a: impl Into<Expr>) -> Expr {
    un(UnOp::Sext8, a)
}

/// The f16 whose bits are the low 16 of `a`, as f32.
pub fn f16_bits(a: impl Into<Expr>) -> Expr {
    un(UnOp::F16Bits, a)
}

/// `a` evaluated without contracting multiply-adds (see `Expr::Exact`).
pub fn exact(a: impl Into<Expr>) -> Expr {
    Expr::Exact(Box::new(a.into()))
}

fn un(op: UnOp, a: impl Into<Expr>) -> Expr {
    Expr::Un(op, Box::new(a.into()))
}

pub fn neg(a: impl Into<Expr>) -> Expr {
    un(UnOp::Neg, a)
}

pub fn exp(a: impl Into<Expr>) -> Expr {
    un(UnOp::Exp, a)
}

pub fn tanh(a: impl Into<Expr>) -> Expr {
    un(UnOp::Tanh, a)
}

pub fn cos(a: impl Into<Expr>) -> Expr {
    un(UnOp::Cos, a)
}

pub fn sin(a: impl Into<Expr>) -> Expr {
    un(UnOp::Sin, a)
}

pub fn sqrt(a: impl Into<Expr>) -> Expr {
    un(UnOp::Sqrt, a)
}

/// Kernel expressions as numbers, so the kernel builders call the formulas of
/// `gemma4c_ir::math` and print the reference's constants and operation order.
impl gemma4c_ir::math::Real for Expr {
    fn lit(x: f32) -> Expr {
        Expr::F32(x)
    }

    fn tanh(self) -> Expr {
        tanh(self)
    }

    fn sqrt(self) -> Expr {
        sqrt(self)
    }
}

pub fn to_f32(a: impl Into<Expr>) -> Expr {
    un(UnOp::ToF32, a)
}

pub fn not(a: impl Into<Expr>) -> Expr {
    un(UnOp::Not, a)
}

fn cmp(op: CmpOp, a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    Expr::Cmp(op, Box::new(a.into()), Box::new(b.into()))
}

pub fn lt(a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    cmp(CmpOp::Lt, a, b)
}

pub fn le(a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    cmp(CmpOp::Le, a, b)
}

pub fn gt(a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    cmp(CmpOp::Gt, a, b)
}

pub fn eq(a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    cmp(CmpOp::Eq, a, b)
}

pub fn select(c: Expr, a: impl Into<Expr>, b: impl Into<Expr>) -> Expr {
    Expr::Select(Box::new(c), Box::new(a.into()), Box::new(b.into()))
}
