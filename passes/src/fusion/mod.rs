//! Fusion with equality saturation (`egg`).
//!
//! The graph goes into an e-graph; rules add fused alternatives next to the
//! unfused chains; a DAG-aware extractor picks, per target cost model, what to
//! keep. The run is bounded by iteration, node and time limits.

mod extract;
mod lang;
pub mod rules;

use std::time::Duration;

use egg::{Runner, SimpleScheduler};
use gemma4c_ir::{Graph, IrError};

use crate::cost::CostModel;

/// Saturation limits. A 42-layer graph saturates in a few iterations (each rule
/// can only fire once per site), so these are guards, not tuning knobs.
pub struct Limits {
    pub iterations: usize,
    pub nodes: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            iterations: 12,
            nodes: 500_000,
            time: Duration::from_secs(5),
        }
    }
}

/// What a fusion run did.
#[derive(Debug, Clone)]
pub struct FusionReport {
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub stop_reason: String,
    /// The incremental extraction's choice was cyclic and the full search
    /// redid it (never seen on Gemma graphs; tests assert it stays so).
    pub extraction_fell_back: bool,
}

/// Fuses `graph` with every rule for the given cost model.
pub fn fuse(graph: &Graph, model: &CostModel, limits: &Limits) -> Result<(Graph, FusionReport), IrError> {
    fuse_with(graph, model, limits, &rules::all_rules())
}

/// How the extractor keeps the cost of the selected DAG while it tries moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extraction {
    /// Use counts kept up to date per move: linear in layers (the default).
    Incremental,
    /// The whole DAG's cost recomputed per move: quadratic in layers, the
    /// definition the incremental search must agree with (tests compare them).
    Full,
}

/// Fuses with a chosen subset of rules (tests use single rules).
pub fn fuse_with(
    graph: &Graph,
    model: &CostModel,
    limits: &Limits,
    specs: &[rules::RuleSpec],
) -> Result<(Graph, FusionReport), IrError> {
    fuse_extracting(graph, model, limits, specs, Extraction::Incremental)
}

/// Fuses with chosen rules and a chosen extraction search.
pub fn fuse_extracting(
    graph: &Graph,
    model: &CostModel,
    limits: &Limits,
    specs: &[rules::RuleSpec],
    extraction: Extraction,
) -> Result<(Graph, FusionReport), IrError> {
    let (egraph, roots) = lang::to_egraph(graph);
    let original_attrs = egraph.analysis.attrs.len();
    let runner = Runner::default()
        .with_egraph(egraph)
        .with_iter_limit(limits.iterations)
        .with_node_limit(limits.nodes)
        .with_time_limit(limits.time)
        .with_scheduler(SimpleScheduler)
        .run(&rules::to_rewrites(specs));
    let (fused, extraction_fell_back) =
        extract::extract(&runner.egraph, &roots, graph, original_attrs, model, extraction)?;
    let report = FusionReport {
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        stop_reason: format!("{:?}", runner.stop_reason),
        extraction_fell_back,
    };
    Ok((fused, report))
}
