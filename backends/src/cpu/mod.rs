//! The CPU target: the plan's kernels printed as LLVM IR (`kernels.ll`), which
//! the runtime JIT-compiles for the host (O3, host CPU features) and launches
//! over row ranges from a thread pool.

pub mod llvm;

use std::path::Path;

use gemma4c_passes::plan::Plan;
use gemma4c_passes::CostModel;

use crate::backend::{write_file, Backend, BackendError, Checkpoint, Emitted};
use crate::kernel::{kernel_plan, KernelPlan, Tiles};

/// File name of the CPU artifact next to plan.json.
pub const KERNELS_FILE: &str = "kernels.ll";

const HEADER: &str = "gemma4c kernels for target cpu (LLVM 19 IR, unoptimized and host-neutral).
The runtime adds the host's target-cpu/target-features, optimizes at O3 and
JIT-compiles it. Every kernel is `void @name(ptr buffers..., i64 begin, i64 end)`
and runs rows [begin, end) of its launch grid; rows are independent.";

/// `kernels.ll` for a plan.
pub fn kernels_ll(plan: &Plan) -> Result<String, String> {
    Ok(emit(&kernel_plan(plan, Tiles::Local)?))
}

/// Prints the kernels of a lowered plan, sorted by name.
pub fn emit(kp: &KernelPlan) -> String {
    llvm::print_module(HEADER, kp.kernels.values())
}

/// The `cpu` row of the backend registry.
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn describe(&self) -> &'static str {
        "host CPU: kernels.ll (LLVM IR), JIT-compiled by `run --plan`"
    }

    fn cost_model(&self) -> CostModel {
        CostModel::cpu()
    }

    fn emit(&self, plan: &Plan, out: &Path, _: Option<&dyn Checkpoint>) -> Result<Emitted, BackendError> {
        write_file(out, KERNELS_FILE, &kernels_ll(plan)?)?;
        Ok(Emitted {
            files: vec![KERNELS_FILE.to_string()],
            ..Emitted::default()
        })
    }
}
