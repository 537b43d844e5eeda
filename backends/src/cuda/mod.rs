//! The CUDA targets (sm_80, sm_90): the plan's GPU kernels (`crate::gpu`, the schedule WGSL
//! and Metal print too) as CUDA C (`kernels.cu`), one `extern "C" __global__` function per
//! distinct kernel.

pub mod printer;

use std::path::Path;

use gemma4c_passes::plan::Plan;
use gemma4c_passes::CostModel;

use crate::backend::{write_file, Backend, BackendError, Checkpoint, Emitted};
use crate::gpu::{lower_plan, GpuPlan};

/// File name of the CUDA artifact next to plan.json.
pub const KERNELS_FILE: &str = "kernels.cu";

/// File name of the PTX `compile` writes next to kernels.cu when NVRTC is available (what the
/// CUDA runtime loads, so a GPU machine needs only the driver).
pub const PTX_FILE: &str = "kernels.ptx";

/// A CUDA target: the printed code is the same for every architecture (bf16/f16 widened with
/// the `cuda_bf16.h`/`cuda_fp16.h` conversions, available from sm_80; warp shuffles over 32
/// lanes); only the header's compile instructions differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaBackend {
    pub name: &'static str,
    /// The `nvcc -arch` / NVRTC `compute_` architecture the header names.
    pub arch: &'static str,
    /// The `--help` line.
    pub about: &'static str,
}

impl CudaBackend {
    /// Ampere (A100).
    pub const SM80: CudaBackend = CudaBackend {
        name: "cuda-sm80",
        arch: "sm_80",
        about: "NVIDIA Ampere: kernels.cu (CUDA C; not yet run on a GPU)",
    };
    /// Hopper (H100, H200).
    pub const SM90: CudaBackend = CudaBackend {
        name: "cuda-sm90",
        arch: "sm_90",
        about: "NVIDIA Hopper: kernels.cu (CUDA C; not yet run on a GPU)",
    };

    fn header(&self) -> String {
        format!(
            "gemma4c kernels for target {} (CUDA C, compile with NVRTC or nvcc for {}).
Every kernel is `extern \"C\" __global__ void name(buffers...)`, launched with the
workgroups and threads its comment states: one block per grid row whose threads
split the row's loops, or one thread per row. Rows are independent.",
            self.name, self.arch
        )
    }

    /// `kernels.cu` for a plan.
    pub fn kernels_cu(&self, plan: &Plan) -> Result<String, String> {
        Ok(self.print(&lower_plan(plan)?))
    }

    /// Prints the kernels of a lowered plan, sorted by name.
    pub fn print(&self, gp: &GpuPlan) -> String {
        printer::print_gpu_module(&self.header(), gp.kernels.values())
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn describe(&self) -> &'static str {
        self.about
    }

    fn cost_model(&self) -> CostModel {
        CostModel::accelerator()
    }

    fn emit(&self, plan: &Plan, out: &Path, _: Option<&dyn Checkpoint>) -> Result<Emitted, BackendError> {
        write_file(out, KERNELS_FILE, &self.kernels_cu(plan)?)?;
        Ok(Emitted {
            files: vec![KERNELS_FILE.to_string()],
            ..Emitted::default()
        })
    }
}
