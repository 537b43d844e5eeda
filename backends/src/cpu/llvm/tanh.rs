//! The inlined `tanh` the GELU and soft-cap expressions call.

use std::fmt::Write;

use super::f32_lit;

/// Name of the inlined `tanh` helper.
pub(super) const TANH: &str = "gemma4c.tanh";

/// `tanh` as a clamped odd rational function (the 13/6 minimax form Eigen uses
/// for `float`, a few ulp from libm's `tanhf`), inlined where it is called.
/// Arithmetic only, so loops that call it still vectorize.
pub(super) fn helper() -> String {
    const ALPHA: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const BETA: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "; tanh(x) = x * P(x^2) / Q(x^2) on x clamped to [-7.9053, 7.9053]; x itself when |x| < 4e-4"
    );
    let _ = writeln!(s, "define internal float @{TANH}(float %x) #1 {{");
    s.push_str("entry:\n");
    let clamp = f32_lit(7.905_311);
    let _ = writeln!(s, "  %lo = call float @llvm.minnum.f32(float %x, float {clamp})");
    let _ = writeln!(
        s,
        "  %c = call float @llvm.maxnum.f32(float %lo, float {})",
        f32_lit(-7.905_311)
    );
    s.push_str("  %x2 = fmul contract float %c, %c\n");
    // Horner's rule for the numerator (odd: x * P(x^2)) and denominator.
    let _ = writeln!(s, "  %p6 = fmul contract float %x2, {}", f32_lit(ALPHA[6]));
    for i in (0..6).rev() {
        let _ = writeln!(s, "  %pa{i} = fadd contract float %p{}, {}", i + 1, f32_lit(ALPHA[i]));
        if i > 0 {
            let _ = writeln!(s, "  %p{i} = fmul contract float %pa{i}, %x2");
        }
    }
    s.push_str("  %num = fmul contract float %pa0, %c\n");
    let _ = writeln!(s, "  %q3 = fmul contract float %x2, {}", f32_lit(BETA[3]));
    for i in (0..3).rev() {
        let _ = writeln!(s, "  %qa{i} = fadd contract float %q{}, {}", i + 1, f32_lit(BETA[i]));
        if i > 0 {
            let _ = writeln!(s, "  %q{i} = fmul contract float %qa{i}, %x2");
        }
    }
    s.push_str("  %ratio = fdiv contract float %num, %qa0\n");
    s.push_str("  %ax = call float @llvm.fabs.f32(float %x)\n");
    let _ = writeln!(s, "  %tiny = fcmp olt float %ax, {}", f32_lit(4e-4));
    s.push_str("  %r = select i1 %tiny, float %x, float %ratio\n");
    s.push_str("  ret float %r\n}\n");
    s
}
