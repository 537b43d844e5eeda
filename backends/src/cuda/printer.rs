//! The CUDA C dialect of the C-style printer (`crate::cstyle`).
//!
//! One `extern "C" __global__` function per kernel; each CUDA thread runs one
//! row of the launch grid (`row = blockIdx.x * blockDim.x + threadIdx.x`,
//! threads past `rows` return at once). bf16 and f16 loads widen with
//! `__bfloat162float` / `__half2float` and stores narrow with
//! `__float2bfloat16` / `__float2half` (round to nearest even).

use crate::cstyle::{self, Dialect, GpuDialect};
use crate::gpu::{Body, GpuKernel};
use crate::kernel::{Access, Elem, Kernel, ReduceOp, BLOCK_CPU_ONLY};

/// CUDA C for NVRTC or nvcc.
pub struct Cuda;

impl Dialect for Cuda {
    fn prelude(&self) -> &str {
        "#include <cuda_bf16.h>\n#include <cuda_fp16.h>\n\n"
    }

    fn signature(&self, name: &str, params: &[String]) -> String {
        format!("extern \"C\" __global__ void {name}({}) {{", params.join(", "))
    }

    fn row_index(&self, rows: usize) -> Vec<String> {
        vec![
            "const long long row = blockIdx.x * (long long)blockDim.x + threadIdx.x;".into(),
            format!("if (row >= {rows}LL) return;"),
        ]
    }

    fn param(&self, _: usize, e: Elem, access: Access, name: &str) -> String {
        let c = if access == Access::Read { "const " } else { "" };
        format!("{c}{}* __restrict__ {name}", self.elem_type(e))
    }

    fn elem_type(&self, e: Elem) -> &str {
        match e {
            Elem::F32 => "float",
            Elem::BF16 => "__nv_bfloat16",
            Elem::F16 => "__half",
            Elem::I32 => "int",

            Elem::Block(_) => unreachable!("{BLOCK_CPU_ONLY}"),
        }
    }

    fn widen(&self, e: Elem, stored: &str) -> String {
        match e {
            Elem::F16 => format!("__half2float({stored})"),
            _ => format!("__bfloat162float({stored})"),
        }
    }

    fn narrow(&self, e: Elem, value: &str) -> String {
        match e {
            Elem::F16 => format!("__float2half({value})"),
            _ => format!("__float2bfloat16({value})"),
        }
    }

    fn non_finite(&self, x: f32) -> String {
        format!("__int_as_float({:#010x})", x.to_bits())
    }

    fn table_qualifiers(&self) -> &str {
        "__constant__ "
    }

    fn helper_qualifiers(&self) -> &str {
        "static __device__ __forceinline__"
    }
}

impl GpuDialect for Cuda {
    fn gpu_prelude(&self) -> &str {
        "static __device__ __forceinline__ float g4_warp_sum(float v) {\n\
         \x20   for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);\n\
         \x20   return v;\n}\n\
         static __device__ __forceinline__ float g4_warp_max(float v) {\n\
         \x20   for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));\n\
         \x20   return v;\n}\n"
    }

    fn gpu_signature(&self, k: &GpuKernel, params: &[String]) -> String {
        format!(
            "extern \"C\" __global__ void __launch_bounds__({}) {}({}) {{",
            k.threads,
            k.kernel.name,
            params.join(", ")
        )
    }

    fn gpu_prologue(&self, k: &GpuKernel) -> Vec<String> {
        let mut v = vec![match k.body {
            Body::Thread => "const long long row = blockIdx.x * (long long)blockDim.x + threadIdx.x;".to_string(),
            Body::Workgroup(_) => "const long long row = blockIdx.x;".to_string(),
        }];
        v.push(format!("if (row >= {}LL) return;", k.kernel.rows));
        v.push("const long long lane = threadIdx.x;".into());
        let width = k.combine_width();
        if width > 0 {
            v.push(format!("__shared__ float g4_partials[{}];", width * k.threads));
        }
        for t in &k.shared {
            v.push(format!(
                "__shared__ float {}[{}];",
                self.tile(&k.kernel.name, &t.name),
                t.len
            ));
        }
        v
    }

    fn barrier(&self) -> &str {
        "__syncthreads();"
    }

    fn subgroup_reduce(&self, op: ReduceOp, v: &str) -> String {
        match op {
            ReduceOp::Add => format!("g4_warp_sum({v})"),
            ReduceOp::Max => format!("g4_warp_max({v})"),
        }
    }

    fn first_in_subgroup(&self) -> &str {
        "(threadIdx.x & 31u) == 0u"
    }

    fn is_lane0(&self) -> &str {
        "threadIdx.x == 0u"
    }

    fn subgroup_id(&self) -> &str {
        "(long long)(threadIdx.x >> 5)"
    }

    fn num_subgroups(&self) -> &str {
        "(long long)(blockDim.x >> 5)"
    }
}

/// Prints GPU kernels (in the order given) as one CUDA translation unit.
pub fn print_gpu_module<'a>(header: &str, kernels: impl IntoIterator<Item = &'a GpuKernel>) -> String {
    cstyle::print_gpu_module(&Cuda, header, kernels)
}

/// Prints `kernels` (in the order given) as one CUDA translation unit.
pub fn print_module<'a>(header: &str, kernels: impl IntoIterator<Item = &'a Kernel>) -> String {
    cstyle::print_module(&Cuda, header, kernels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ops;

    #[test]
    fn non_finite_constants_are_bit_patterns() {
        assert_eq!(Cuda.non_finite(f32::NEG_INFINITY), "__int_as_float(0xff800000)");
        assert_eq!(Cuda.non_finite(f32::INFINITY), "__int_as_float(0x7f800000)");
        assert_eq!(Cuda.non_finite(f32::NAN), "__int_as_float(0x7fc00000)");
    }

    #[test]
    fn matvec_is_one_global_function_per_kernel() {
        let k = ops::matmul(1, 8, 16, Elem::BF16, Some(30.0));
        let cu = print_module("test", [&k]);
        assert!(cu.contains("extern \"C\" __global__ void matmul_bf16_m1_n8_k16_cap3e1("));
        assert!(cu.contains("const __nv_bfloat16* __restrict__"));
        assert!(cu.contains("__bfloat162float("));
        assert!(cu.contains("tanhf("));
        assert!(cu.contains("if (row >= "));
    }

    #[test]
    fn printing_is_deterministic() {
        let ks = [
            ops::attention(2, 4, 2, 8, 16, Some(4), 1.0),
            ops::moe_route(2, 8, 2, Elem::F32),
        ];
        assert_eq!(print_module("x", ks.iter()), print_module("x", ks.iter()));
    }
}
