//! The `wgpu` target: the plan's GPU kernels (`crate::gpu`) printed as WGSL (`kernels.wgsl`),
//! one `@compute` entry point per distinct kernel, run by the runtime's wgpu executor (Vulkan,
//! Metal or DX12; in CI, Mesa's lavapipe).

pub mod dialect;

use std::path::Path;

use gemma4c_passes::plan::Plan;
use gemma4c_passes::CostModel;

use crate::backend::{write_file, Backend, BackendError, Checkpoint, Emitted};
use crate::cstyle::print_gpu_module;
use crate::gpu::{lower_plan, GpuKernel, GpuPlan};
use crate::kernel::{Access, Elem};

/// File name of the WGSL artifact next to plan.json.
pub const KERNELS_FILE: &str = "kernels.wgsl";

const HEADER: &str = "gemma4c kernels for target wgpu (WGSL).
Every kernel is a @compute entry point whose buffers are @group(0) @binding(n) in
parameter order; it runs the workgroups its comment states (rows past 65535
workgroups are dispatched as a 2-D grid: row = y * num_workgroups.x + x).
bf16/f16 buffers are array<u32>, two elements per word. Rows are independent.";

/// `kernels.wgsl` for a lowered plan.
pub fn print(gp: &GpuPlan) -> Result<String, String> {
    for g in gp.kernels.values() {
        for p in &g.kernel.params {
            if p.access != Access::Read && matches!(p.elem, Elem::BF16 | Elem::F16) {
                return Err(format!(
                    "kernel {} writes {} buffer `{}`: WGSL kernels only read 16-bit floats",
                    g.kernel.name,
                    p.elem.name(),
                    p.name
                ));
            }
        }
    }
    Ok(print_gpu_module(&dialect::Wgsl, HEADER, gp.kernels.values()))
}

/// WGSL for the given kernels alone (kernel-level tests run one kernel on its own).
pub fn print_kernels<'a>(kernels: impl IntoIterator<Item = &'a GpuKernel>) -> String {
    print_gpu_module(&dialect::Wgsl, HEADER, kernels)
}

/// `kernels.wgsl` for a plan.
pub fn kernels_wgsl(plan: &Plan) -> Result<String, String> {
    print(&lower_plan(plan)?)
}

/// The `wgpu` row of the backend registry.
pub struct WgpuBackend;

impl Backend for WgpuBackend {
    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn describe(&self) -> &'static str {
        "any GPU wgpu drives (Vulkan, Metal, DX12): kernels.wgsl, run by `run --plan`"
    }

    fn cost_model(&self) -> CostModel {
        CostModel::accelerator()
    }

    fn emit(&self, plan: &Plan, out: &Path, _: Option<&dyn Checkpoint>) -> Result<Emitted, BackendError> {
        write_file(out, KERNELS_FILE, &kernels_wgsl(plan)?)?;
        Ok(Emitted {
            files: vec![KERNELS_FILE.to_string()],
            ..Emitted::default()
        })
    }
}
