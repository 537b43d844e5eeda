//! The CUDA target (sm_90): the plan's kernels printed as CUDA C
//! (`kernels.cu`), one `extern "C" __global__` function per distinct kernel.
//! Each thread runs one row of the kernel's launch grid; rows are independent.

pub mod printer;

use gemma4c_passes::plan::Plan;

use crate::kernel::{lower_plan, KernelPlan};

/// File name of the CUDA artifact next to plan.json.
pub const KERNELS_FILE: &str = "kernels.cu";

const HEADER: &str = "gemma4c kernels for target cuda-sm90 (CUDA C, compile with NVRTC or nvcc for sm_90).
Every kernel is `extern \"C\" __global__ void name(buffers...)`; each thread runs
one row `blockIdx.x * blockDim.x + threadIdx.x` of its launch grid and threads
past the grid return. Rows are independent.";

/// `kernels.cu` for a plan.
pub fn kernels_cu(plan: &Plan) -> Result<String, String> {
    Ok(emit(&lower_plan(plan)?))
}

/// Prints the kernels of a lowered plan, sorted by name.
pub fn emit(kp: &KernelPlan) -> String {
    printer::print_module(HEADER, kp.kernels.values())
}
