//! Type checking of kernels: every printer may assume a verified kernel.

use super::{Access, BinOp, Elem, Expr, Kernel, ReduceOp, Scalar, Stmt, UnOp};

pub fn verify(k: &Kernel) -> Result<(), String> {
    if k.name.is_empty() || !k.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("name `{}` is not a C identifier", k.name));
    }
    if k.locals.first().map(|l| l.ty) != Some(Scalar::I64) {
        return Err("local 0 must be the i64 row index".into());
    }
    stmts(k, &k.body)?;
    for (feature, v) in &k.variants {
        if v.name != format!("{}__{}", k.name, feature.suffix()) || v.rows != k.rows || v.params != k.params {
            return Err(format!(
                "variant `{}` of `{}` must be named `{}__{}` with the same grid and parameters",
                v.name,
                k.name,
                k.name,
                feature.suffix()
            ));
        }
        if !v.variants.is_empty() {
            return Err(format!("variant `{}` has variants of its own", v.name));
        }
        verify(v).map_err(|e| format!("variant `{}`: {e}", v.name))?;
    }
    Ok(())
}

fn stmts(k: &Kernel, body: &[Stmt]) -> Result<(), String> {
    for s in body {
        match s {
            Stmt::Set(v, e) => {
                let (want, got) = (k.local(*v).ty, ty(k, e)?);
                if want != got {
                    return Err(format!("`{}` is {want:?}, assigned {got:?}", k.local(*v).name));
                }
            }
            Stmt::Reduce(v, op, e) => {
                let (want, got) = (k.local(*v).ty, ty(k, e)?);
                let ok = match op {
                    ReduceOp::Add => want == got && want != Scalar::Bool,
                    ReduceOp::Max => want == got && want == Scalar::F32,
                };
                if !ok {
                    return Err(format!(
                        "reduction {op:?} of {got:?} into `{}` ({want:?})",
                        k.local(*v).name
                    ));
                }
            }
            Stmt::Store { param, index, value } => {
                let p = k.params.get(*param).ok_or("store to a missing parameter")?;
                if p.access == Access::Read {
                    return Err(format!("store to read-only `{}`", p.name));
                }
                if matches!(p.elem, Elem::BF16 | Elem::F16 | Elem::Block(_)) {
                    return Err(format!("stores to {} buffers are not supported", p.elem.name()));
                }
                expect(k, index, Scalar::I64, "store index")?;
                expect(k, value, p.elem.value(), "stored value")?;
            }
            Stmt::TileStore { tile, index, value } => {
                k.tiles.get(*tile).ok_or("store to a missing tile")?;
                expect(k, index, Scalar::I64, "tile index")?;
                expect(k, value, Scalar::F32, "value stored in a tile")?;
            }
            Stmt::For { var, start, end, body } => {
                if k.local(*var).ty != Scalar::I64 {
                    return Err("loop variable must be i64".into());
                }
                expect(k, start, Scalar::I64, "loop start")?;
                expect(k, end, Scalar::I64, "loop end")?;
                stmts(k, body)?;
            }
            Stmt::If { cond, then, els } => {
                expect(k, cond, Scalar::Bool, "condition")?;
                stmts(k, then)?;
                stmts(k, els)?;
            }
            Stmt::DotBf16 {
                x,
                xs,
                w,
                ws,
                len,
                accs,
            } => {
                let elem = |p: usize| k.params.get(p).map(|p| (p.elem, p.access));
                if !matches!(elem(*x), Some((Elem::F32, Access::Read | Access::ReadWrite)))
                    || !matches!(elem(*w), Some((Elem::BF16, Access::Read | Access::ReadWrite)))
                {
                    return Err("DotBf16 reads an f32 x and a bf16 w".into());
                }
                if *len == 0 || !len.is_multiple_of(32) {
                    return Err(format!("DotBf16 over {len} columns (a multiple of 32)"));
                }
                if accs.len() != xs.len() || accs.iter().any(|r| r.len() != ws.len()) {
                    return Err("DotBf16 needs one accumulator per (x row, w row)".into());
                }
                for e in xs.iter().chain(ws) {
                    expect(k, e, Scalar::I64, "DotBf16 offset")?;
                }
                if accs.iter().flatten().any(|v| k.local(*v).ty != Scalar::F32) {
                    return Err("DotBf16 accumulators are f32".into());
                }
            }
        }
    }
    Ok(())
}

fn expect(k: &Kernel, e: &Expr, want: Scalar, what: &str) -> Result<(), String> {
    let got = ty(k, e)?;
    if got != want {
        return Err(format!("{what} is {got:?}, expected {want:?}: {e:?}"));
    }
    Ok(())
}

/// The type of an expression.
pub fn ty(k: &Kernel, e: &Expr) -> Result<Scalar, String> {
    Ok(match e {
        Expr::F32(_) => Scalar::F32,
        Expr::I64(_) => Scalar::I64,
        Expr::Bool(_) => Scalar::Bool,
        Expr::Var(v) => k.locals.get(v.0 as usize).ok_or("unknown local")?.ty,
        Expr::Load { param, index } => {
            let p = k.params.get(*param).ok_or("load from a missing parameter")?;
            if p.access == Access::Write {
                return Err(format!("load from write-only `{}`", p.name));
            }
            expect(k, index, Scalar::I64, "load index")?;
            p.elem.value()
        }
        Expr::Table { table, index } => {
            k.tables.get(*table).ok_or("unknown table")?;
            expect(k, index, Scalar::I64, "table index")?;
            Scalar::F32
        }
        Expr::Tile { tile, index } => {
            k.tiles.get(*tile).ok_or("unknown tile")?;
            expect(k, index, Scalar::I64, "tile index")?;
            Scalar::F32
        }
        Expr::Bin(op, a, b) => {
            let (ta, tb) = (ty(k, a)?, ty(k, b)?);
            if ta != tb {
                return Err(format!("{op:?} of {ta:?} and {tb:?}"));
            }
            let ok = match op {
                BinOp::And | BinOp::Or => ta == Scalar::Bool,
                BinOp::Rem | BinOp::Shr | BinOp::BitAnd => ta == Scalar::I64,
                _ => ta != Scalar::Bool,
            };
            if !ok {
                return Err(format!("{op:?} is not defined on {ta:?}"));
            }
            ta
        }
        Expr::Un(op, a) => {
            let t = ty(k, a)?;
            let (want, out) = match op {
                UnOp::Neg => (t, t),
                UnOp::ToF32 | UnOp::F16Bits => (Scalar::I64, Scalar::F32),
                UnOp::Sext8 => (Scalar::I64, Scalar::I64),
                UnOp::Not => (Scalar::Bool, Scalar::Bool),
                _ => (Scalar::F32, Scalar::F32),
            };
            if t != want || (matches!(op, UnOp::Neg) && t == Scalar::Bool) {
                return Err(format!("{op:?} of {t:?}"));
            }
            out
        }
        Expr::Cmp(op, a, b) => {
            let (ta, tb) = (ty(k, a)?, ty(k, b)?);
            if ta != tb || ta == Scalar::Bool {
                return Err(format!("{op:?} of {ta:?} and {tb:?}"));
            }
            Scalar::Bool
        }
        Expr::Exact(a) => ty(k, a)?,
        Expr::Select(c, a, b) => {
            expect(k, c, Scalar::Bool, "select condition")?;
            let (ta, tb) = (ty(k, a)?, ty(k, b)?);
            if ta != tb {
                return Err(format!("select of {ta:?} and {tb:?}"));
            }
            ta
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{KernelBuilder, Scalar};

    #[test]
    fn a_well_typed_kernel_verifies() {
        let k = crate::kernel::ops::rms_norm(4, 8, Elem::F32, Some(Elem::BF16), 1e-6, None);
        assert_eq!(verify(&k), Ok(()));
        assert_eq!(k.rows, 4);
    }

    #[test]
    fn type_errors_are_reported() {
        let mut b = KernelBuilder::new("bad", 1);
        let x = b.param("x", Elem::F32, Access::Read);
        let v = b.local("v", Scalar::I64);
        b.set(v, x.at(0usize)); // an f32 into an i64
        assert!(verify(&b.finish_unchecked()).unwrap_err().contains("assigned F32"));

        let mut b = KernelBuilder::new("bad", 1);
        let x = b.param("x", Elem::BF16, Access::ReadWrite);
        b.store(x, 0usize, 1.0f32);
        assert!(verify(&b.finish_unchecked()).unwrap_err().contains("bf16"));

        let mut b = KernelBuilder::new("bad", 1);
        let x = b.param("x", Elem::F32, Access::Read);
        b.store(x, 0usize, 1.0f32);
        assert!(verify(&b.finish_unchecked()).unwrap_err().contains("read-only"));

        let b = KernelBuilder::new("not-an-identifier", 1);
        assert!(verify(&b.finish_unchecked()).is_err());
    }
}
