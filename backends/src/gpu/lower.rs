//! Plan → GPU kernels and launches: the kernel IR lowering (`kernel::kernel_plan`) with each
//! kernel given its GPU schedule, and attention replaced by its GPU form. Launch arguments,
//! scratch areas and weight accounting are the kernel IR's.

use std::collections::BTreeMap;

use gemma4c_ir::Op;
use gemma4c_passes::plan::Plan;

use super::attention::attention_online;
use super::schedule::derive;
use super::GpuKernel;
use crate::kernel::{self, ProgramLaunches};

/// A plan's GPU kernels and launches. Every GPU printer prints `kernels`; the runtime binds
/// `programs`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPlan {
    /// Kernels by name (sorted: the order printers emit them in).
    pub kernels: BTreeMap<String, GpuKernel>,
    /// Same order as `plan.programs`; launch kernel names refer to `kernels`.
    pub programs: Vec<ProgramLaunches>,
}

impl GpuPlan {
    pub fn program(&self, name: &str) -> Option<&ProgramLaunches> {
        self.programs.iter().find(|p| p.name == name)
    }
}

pub fn lower_plan(plan: &Plan) -> Result<GpuPlan, String> {
    let kp = kernel::kernel_plan(plan)?;
    let mut kernels = BTreeMap::new();
    let mut programs = Vec::new();
    for (p, lp) in plan.programs.iter().zip(kp.programs) {
        let mut lp = lp;
        for l in &mut lp.launches {
            let step = &p.steps[l.step];
            let k = match &step.op {
                Op::Attention { window, scale } => {
                    let (qs, ks) = (&p.buffers[step.inputs[0]].shape, &p.buffers[step.inputs[1]].shape);
                    attention_online(qs[0], qs[1], ks[0], qs[2], ks[1], *window, *scale)
                }
                _ => kp.kernels[&l.kernel].clone(),
            };
            l.kernel = k.name.clone();
            if !kernels.contains_key(&k.name) {
                kernels.insert(k.name.clone(), derive(&k));
            }
        }
        programs.push(lp);
    }
    Ok(GpuPlan { kernels, programs })
}
