//! The Metal Shading Language dialect of the C-style printer.
//!
//! `kernel void` functions with `device` buffers bound by `[[buffer(n)]]`; 64-bit integers are
//! `long`; bf16 is read as `ushort` and widened by a 16-bit shift (`bfloat` needs MSL 3.1 and
//! Apple GPU family 9, the shift works everywhere); f16 is `half`. Subgroup reductions are
//! `simd_sum`/`simd_max`; the shared partials are a `threadgroup` array declared in the body
//! (wgpu's Metal backend gives `[[threadgroup(n)]]` parameters no memory).

use crate::cstyle::{i64_lit, Dialect, GpuDialect};
use crate::gpu::{Body, GpuKernel};
use crate::kernel::{Access, Elem, ReduceOp, Scalar, UnOp, BLOCK_CPU_ONLY};

pub struct Metal;

impl Dialect for Metal {
    fn prelude(&self) -> &str {
        "#include <metal_stdlib>\nusing namespace metal;\n\n"
    }

    fn signature(&self, name: &str, params: &[String]) -> String {
        format!(
            "kernel void {name}({}, uint row_id [[thread_position_in_grid]]) {{",
            params.join(", ")
        )
    }

    fn row_index(&self, rows: usize) -> Vec<String> {
        vec![
            "const long row = (long)row_id;".into(),
            format!("if (row >= {rows}L) return;"),
        ]
    }

    fn param(&self, index: usize, e: Elem, access: Access, name: &str) -> String {
        let c = if access == Access::Read { "const " } else { "" };
        format!("device {c}{}* {name} [[buffer({index})]]", self.elem_type(e))
    }

    fn elem_type(&self, e: Elem) -> &str {
        match e {
            Elem::F32 => "float",
            Elem::BF16 => "ushort",
            Elem::F16 => "half",
            Elem::I32 => "int",

            Elem::Block(_) => unreachable!("{BLOCK_CPU_ONLY}"),
        }
    }

    fn widen(&self, e: Elem, stored: &str) -> String {
        match e {
            Elem::F16 => format!("((float){stored})"),
            _ => format!("as_type<float>((uint){stored} << 16)"),
        }
    }

    fn narrow(&self, e: Elem, value: &str) -> String {
        match e {
            Elem::F16 => format!("((half)({value}))"),
            // Round to nearest even, as the other targets narrow.
            _ => {
                format!("((ushort)((as_type<uint>({value}) + 0x7fffu + ((as_type<uint>({value}) >> 16) & 1u)) >> 16))")
            }
        }
    }

    fn non_finite(&self, x: f32) -> String {
        format!("as_type<float>({:#010x}u)", x.to_bits())
    }

    fn table_qualifiers(&self) -> &str {
        "constant "
    }

    fn helper_qualifiers(&self) -> &str {
        "static inline"
    }

    fn scalar_type(&self, s: Scalar) -> &str {
        match s {
            Scalar::F32 => "float",
            Scalar::I64 => "long",
            Scalar::Bool => "bool",
        }
    }

    fn math(&self, op: UnOp) -> &str {
        match op {
            UnOp::Exp => "precise::exp",
            UnOp::Tanh => "precise::tanh",
            UnOp::Cos => "precise::cos",
            UnOp::Sin => "precise::sin",
            UnOp::Sqrt => "precise::sqrt",
            UnOp::Neg | UnOp::ToF32 | UnOp::Not | UnOp::F16Bits | UnOp::Sext8 => {
                unreachable!("{op:?} is an operator, not a function")
            }
        }
    }

    fn min_max_f32(&self) -> (&str, &str) {
        ("fmin", "fmax")
    }

    fn int_lit(&self, x: i64) -> String {
        // `long` literals: MSL has no `long long`.
        i64_lit(x).replace("LL", "L")
    }
}

/// The workgroup's index in the grid: wgpu dispatches more than 65535 workgroups as a 2-D
/// grid of rows (`y * groups.x + x`); a 1-D dispatch has `y = 0`.
const GROUP: &str = "((long)g4_group.y * (long)g4_ngroups.x + (long)g4_group.x)";

impl GpuDialect for Metal {
    fn gpu_signature(&self, k: &GpuKernel, params: &[String]) -> String {
        let mut all = params.to_vec();
        all.push("uint3 g4_group [[threadgroup_position_in_grid]]".into());
        all.push("uint3 g4_ngroups [[threadgroups_per_grid]]".into());
        all.push("uint g4_lid [[thread_index_in_threadgroup]]".into());
        if k.combine_width() > 0 {
            all.push("uint g4_sg_lane [[thread_index_in_simdgroup]]".into());
            all.push("uint g4_sg_id [[simdgroup_index_in_threadgroup]]".into());
            all.push("uint g4_n_sg [[simdgroups_per_threadgroup]]".into());
        }
        format!(
            "[[max_total_threads_per_threadgroup({})]]\nkernel void {}({}) {{",
            k.threads,
            k.kernel.name,
            all.join(",\n        ")
        )
    }

    fn gpu_prologue(&self, k: &GpuKernel) -> Vec<String> {
        let mut v = Vec::new();
        let width = k.combine_width();
        if width > 0 {
            v.push(format!("threadgroup float g4_partials[{}];", width * k.threads));
        }
        for t in &k.shared {
            v.push(format!(
                "threadgroup float {}[{}];",
                self.tile(&k.kernel.name, &t.name),
                t.len
            ));
        }
        v.push(match k.body {
            Body::Thread => format!("const long row = {GROUP} * {}L + (long)g4_lid;", k.threads),
            Body::Workgroup(_) => format!("const long row = {GROUP};"),
        });
        v.push(format!("if (row >= {}L) return;", k.kernel.rows));
        v.push("const long lane = (long)g4_lid;".into());
        v
    }

    fn barrier(&self) -> &str {
        "threadgroup_barrier(mem_flags::mem_device | mem_flags::mem_threadgroup);"
    }

    fn subgroup_reduce(&self, op: ReduceOp, v: &str) -> String {
        match op {
            ReduceOp::Add => format!("simd_sum({v})"),
            ReduceOp::Max => format!("simd_max({v})"),
        }
    }

    fn first_in_subgroup(&self) -> &str {
        "g4_sg_lane == 0"
    }

    fn is_lane0(&self) -> &str {
        "g4_lid == 0"
    }

    fn subgroup_id(&self) -> &str {
        "(long)g4_sg_id"
    }

    fn num_subgroups(&self) -> &str {
        "(long)g4_n_sg"
    }
}
