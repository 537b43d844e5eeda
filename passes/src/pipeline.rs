//! The middle of the compiler as one call: fuse each call graph for a target
//! and lower them into one plan.

use std::time::Instant;

use gemma4c_ir::{Graph, IrError};

use crate::cost::CostModel;
use crate::fusion::{fuse, Limits};
use crate::plan::{lower, ModelInfo, Plan, PLAN_FORMAT};

/// One call graph to compile (the decode step, a prefill chunk).
pub struct CallGraph {
    pub name: String,
    pub seq_len: usize,
    pub graph: Graph,
}

/// Everything a compile produced, for the artifact and its stats.
pub struct Compiled {
    pub plan: Plan,
    /// Graphs after fusion (same order as the inputs).
    pub fused: Vec<Graph>,
    pub compile_ms: f64,
}

/// Fuses each call graph (when `fusion`, extracting with `cost`, the target's cost model) and
/// lowers them into one plan for the target named `target`.
pub fn compile(
    calls: &[CallGraph],
    target: &str,
    cost: &CostModel,
    fusion: bool,
    model: ModelInfo,
) -> Result<Compiled, IrError> {
    let start = Instant::now();
    let mut weights = Vec::new();
    let mut state = Vec::new();
    let mut programs = Vec::new();
    let mut fused = Vec::new();
    for call in calls {
        let g = if fusion {
            fuse(&call.graph, cost, &Limits::default())?.0
        } else {
            call.graph.clone()
        };
        programs.push(lower(&call.name, call.seq_len, &g, &mut weights, &mut state)?);
        fused.push(g);
    }
    // Sorted tables make plan.json independent of graph traversal order.
    let order = sorted_permutation(&weights, |w| w.key.clone());
    let weights_sorted: Vec<_> = order.iter().map(|&i| weights[i].clone()).collect();
    let mut new_index = vec![0; weights.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    for p in &mut programs {
        for b in &mut p.buffers {
            if let crate::plan::BufferKind::Weight { index } = &mut b.kind {
                *index = new_index[*index];
            }
        }
    }
    let plan = Plan {
        format: PLAN_FORMAT,
        target: target.to_string(),
        model,
        weights: weights_sorted,
        state,
        programs,
    };
    Ok(Compiled {
        plan,
        fused,
        compile_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

fn sorted_permutation<T>(items: &[T], key: impl Fn(&T) -> String) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..items.len()).collect();
    idx.sort_by_key(|&i| key(&items[i]));
    idx
}
