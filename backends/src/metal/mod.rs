//! The `metal` target: the plan's GPU kernels (`crate::gpu`, the schedule WGSL and CUDA print
//! too) as Metal Shading Language (`kernels.metal`), one `kernel void` per distinct kernel.

pub mod dialect;

use std::path::Path;

use gemma4c_passes::plan::Plan;
use gemma4c_passes::CostModel;

use crate::backend::{write_file, Backend, BackendError, Checkpoint, Emitted};
use crate::cstyle::print_gpu_module;
use crate::gpu::{lower_plan, GpuPlan};

/// File name of the Metal artifact next to plan.json.
pub const KERNELS_FILE: &str = "kernels.metal";

const HEADER: &str = "gemma4c kernels for target metal (Metal Shading Language 2.4).
Every kernel is `kernel void name(device buffers [[buffer(n)]]...)`, dispatched with
the threadgroups and threads per threadgroup its comment states: one threadgroup
per grid row whose threads split the row's loops, or one thread per row.";

/// `kernels.metal` for a lowered plan.
pub fn print(gp: &GpuPlan) -> String {
    print_gpu_module(&dialect::Metal, HEADER, gp.kernels.values())
}

/// `kernels.metal` for a plan.
pub fn kernels_metal(plan: &Plan) -> Result<String, String> {
    Ok(print(&lower_plan(plan)?))
}

/// The `metal` row of the backend registry.
pub struct MetalBackend;

impl Backend for MetalBackend {
    fn name(&self) -> &'static str {
        "metal"
    }

    fn describe(&self) -> &'static str {
        "Apple GPUs: kernels.metal (MSL; syntax-checked with clang, not yet run on a Mac)"
    }

    fn cost_model(&self) -> CostModel {
        CostModel::accelerator()
    }

    fn emit(&self, plan: &Plan, out: &Path, _: Option<&dyn Checkpoint>) -> Result<Emitted, BackendError> {
        write_file(out, KERNELS_FILE, &kernels_metal(plan)?)?;
        Ok(Emitted {
            files: vec![KERNELS_FILE.to_string()],
            ..Emitted::default()
        })
    }
}
