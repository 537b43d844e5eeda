//! `Stmt::DotBf16` in LLVM IR: the AVX-512 BF16 intrinsics, printed only in
//! the kernel variants the JIT compiles for hosts with the feature.

use super::FnPrinter;
use crate::kernel::{Expr, Var};

impl FnPrinter<'_, '_> {
    /// `Stmt::DotBf16` as a vector loop over 32 columns per step: each x row
    /// is loaded as two `<16 x float>` and rounded to one `<32 x bfloat>`
    /// (`vcvtne2ps2bf16`), each w row loaded as `<32 x bfloat>`, and
    /// `vdpbf16ps` adds lane `l`'s pair of products (columns `2l`, `2l + 1`)
    /// into a `<16 x float>` per (x row, w row); the lanes are summed once, after
    /// the loop. Only printed in `Avx512Bf16` variants, which the JIT compiles
    /// only for hosts with the feature.
    pub(super) fn dot_bf16(&mut self, x: usize, xs: &[Expr], w: usize, ws: &[Expr], len: usize, accs: &[Vec<Var>]) {
        const DP: &str = "llvm.x86.avx512bf16.dpbf16ps.512";
        const CVT: &str = "llvm.x86.avx512bf16.cvtne2ps2bf16.512";
        const SUM: &str = "llvm.vector.reduce.fadd.v16f32";
        self.decls.insert(format!(
            "declare <16 x float> @{DP}(<16 x float>, <32 x bfloat>, <32 x bfloat>)"
        ));
        self.decls
            .insert(format!("declare <32 x bfloat> @{CVT}(<16 x float>, <16 x float>)"));
        self.decls.insert(format!("declare float @{SUM}(float, <16 x float>)"));
        let x_rows: Vec<String> = xs.iter().map(|e| self.expr(e).0).collect();
        let w_rows: Vec<String> = ws.iter().map(|e| self.expr(e).0).collect();
        let l = self.fresh_label("dot");
        self.line(&format!("br label %{l}.pre"));
        self.block(&format!("{l}.pre"));
        self.line(&format!("br label %{l}.loop"));
        self.block(&format!("{l}.loop"));
        let (c, next) = (self.fresh(), self.fresh());
        let vecs: Vec<Vec<(String, String)>> = accs
            .iter()
            .map(|row| row.iter().map(|_| (self.fresh(), self.fresh())).collect())
            .collect();
        self.line(&format!("{c} = phi i64 [ 0, %{l}.pre ], [ {next}, %{l}.loop ]"));
        for (acc, new) in vecs.iter().flatten() {
            self.line(&format!(
                "{acc} = phi <16 x float> [ zeroinitializer, %{l}.pre ], [ {new}, %{l}.loop ]"
            ));
        }
        let xb: Vec<String> = x_rows
            .iter()
            .map(|r| {
                let at = self.fresh();
                self.line(&format!("{at} = add nsw i64 {r}, {c}"));
                let lo_ptr = self.gep(x, &at);
                let (lo, hi_ptr, hi, b) = (self.fresh(), self.fresh(), self.fresh(), self.fresh());
                self.line(&format!("{lo} = load <16 x float>, ptr {lo_ptr}, align 4"));
                self.line(&format!(
                    "{hi_ptr} = getelementptr inbounds float, ptr {lo_ptr}, i64 16"
                ));
                self.line(&format!("{hi} = load <16 x float>, ptr {hi_ptr}, align 4"));
                self.line(&format!(
                    "{b} = call <32 x bfloat> @{CVT}(<16 x float> {hi}, <16 x float> {lo})"
                ));
                b
            })
            .collect();
        let wb: Vec<String> = w_rows
            .iter()
            .map(|r| {
                let at = self.fresh();
                self.line(&format!("{at} = add nsw i64 {r}, {c}"));
                let ptr = self.gep(w, &at);
                let b = self.fresh();
                self.line(&format!("{b} = load <32 x bfloat>, ptr {ptr}, align 2"));
                b
            })
            .collect();
        for (i, row) in vecs.iter().enumerate() {
            for (j, (acc, new)) in row.iter().enumerate() {
                let (xv, wv) = (&xb[i], &wb[j]);
                self.line(&format!(
                    "{new} = call <16 x float> @{DP}(<16 x float> {acc}, <32 x bfloat> {xv}, <32 x bfloat> {wv})"
                ));
            }
        }
        self.line(&format!("{next} = add nuw nsw i64 {c}, 32"));
        let done = self.fresh();
        self.line(&format!("{done} = icmp sge i64 {next}, {len}"));
        self.line(&format!("br i1 {done}, label %{l}.exit, label %{l}.loop"));
        self.block(&format!("{l}.exit"));
        for (row, vrow) in accs.iter().zip(&vecs) {
            for (&v, (_, new)) in row.iter().zip(vrow) {
                let (sum, old, add) = (self.fresh(), self.fresh(), self.fresh());
                let name = self.local(v);
                self.line(&format!(
                    "{sum} = call reassoc nsz float @{SUM}(float -0.000000e+00, <16 x float> {new})"
                ));
                self.line(&format!("{old} = load float, ptr {name}, align 4"));
                self.line(&format!("{add} = fadd reassoc contract nsz float {old}, {sum}"));
                self.line(&format!("store float {add}, ptr {name}, align 4"));
            }
        }
    }
}
