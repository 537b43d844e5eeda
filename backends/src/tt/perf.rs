//! Performance model of the generated decode step: per launch, the time to stream its DRAM
//! bytes or to compute its FLOPs on the cores it uses (whichever is longer), plus the dispatch
//! cost; summed over the launches of one token. On a mesh every chip runs every launch at the
//! same time on its own share (the kernels are compiled for one chip's share, so their bytes
//! and FLOPs are already per chip), and each all-reduce adds `TtTarget::all_reduce_s` plus its
//! bytes over `TtTarget::link_bw` (both on paper, see target.rs) and one dispatch.
//!
//! Only on paper: nothing here was measured on hardware. The one free parameter,
//! `BW_EFFICIENCY` (the fraction of peak DRAM bandwidth a launch achieves), is calibrated so
//! that the model, run on our own E4B kernels (bf16 weights, every launch traced), gives the
//! published decode speed of tt-metal's Gemma 4 E4B on one p150: 14.0 tok/s. Checked against the
//! second published figure, E2B on one p150 at 22.8 tok/s, it predicts the value printed by
//! `tt_perf_model_is_calibrated_to_tt_metal` (tests/tt_sim.rs) and in the README.

use serde_json::{json, Value};

use super::kernels::Kernel;
use super::target::TtTarget;

/// Fraction of a chip's peak DRAM bandwidth one launch achieves (calibrated, see above).
pub const BW_EFFICIENCY: f64 = 0.2854;
/// DRAM bandwidth one worker core can pull through its NoC port: half the 64 B/cycle peak at
/// 1.35 GHz (an assumption; it bounds kernels that run on a few cores).
pub const PER_CORE_BW: f64 = 43e9;

/// Seconds of one launch of `k`, without dispatch.
pub fn launch_seconds(t: &TtTarget, k: &Kernel) -> f64 {
    let cores = k.grid.cores() as f64;
    let bw = (t.dram_bw * BW_EFFICIENCY).min(cores * PER_CORE_BW);
    let memory = k.cost.dram_bytes as f64 / bw;
    let compute = k.cost.flops as f64 / (cores * t.flops_per_core);
    memory.max(compute)
}

/// Seconds of one all-reduce of `bytes` over the board's chips, without dispatch.
pub fn all_reduce_seconds(t: &TtTarget, bytes: usize) -> f64 {
    t.all_reduce_s + bytes as f64 / t.link_bw
}

/// Seconds of the token selection at the end of the step (`ttnn.argmax` over the logits row, in
/// TILE layout, `logits_bytes` of tiles), without dispatch: TT-NN runs the tile-layout argmax on
/// one core, so it streams the row's tiles through one core's NoC port. Its scalar compare loop
/// on that core's RISC-V is not modelled (no published figure).
pub fn selection_seconds(t: &TtTarget, logits_bytes: usize) -> f64 {
    logits_bytes as f64 / (t.dram_bw * BW_EFFICIENCY).min(PER_CORE_BW)
}

/// Per-kernel entries and the modelled decode speed, for stats.json. `uses[i]`: launches of
/// kernel `i` per token; `all_reduces`: the bytes of each all-reduce of one token;
/// `logits_bytes`: the logits row's tiles, which the token selection (one more launch) reads;
/// `None` for a program that ends without one (a prefill chunk).
pub fn model(
    t: &TtTarget,
    kernels: &[Kernel],
    uses: &[usize],
    all_reduces: &[usize],
    logits_bytes: Option<usize>,
) -> (Vec<Value>, Value) {
    let collectives = all_reduces.iter().fold(0.0, |a, &b| a + all_reduce_seconds(t, b));
    let selection = logits_bytes.map_or(0.0, |b| selection_seconds(t, b));
    let mut work = collectives + selection;
    let mut launches = all_reduces.len() + usize::from(logits_bytes.is_some());
    let per_kernel = kernels
        .iter()
        .zip(uses)
        .map(|(k, &n)| {
            let s = launch_seconds(t, k);
            work += s * n as f64;
            launches += n;
            json!({
                "dram_bytes": k.cost.dram_bytes,
                "flops": k.cost.flops,
                "cores": k.grid.cores(),
                "modelled_us": round(s * 1e6),
                "launch_cost_us": round(t.dispatch_untraced_s * 1e6),
            })
        })
        .collect();
    let untraced = work + launches as f64 * t.dispatch_untraced_s;
    let traced = work + launches as f64 * t.dispatch_traced_s;
    let total = json!({
        // How run.py runs the program on hardware: the decode step replayed from a trace
        // (`--no-trace` dispatches every launch: `modelled_tok_s_untraced`).
        "modelled_tok_s": round(1.0 / traced),
        "modelled_tok_s_traced": round(1.0 / traced),
        "modelled_tok_s_untraced": round(1.0 / untraced),
        "modelled_ms_per_token": round(untraced * 1e3),
        "modelled_ms_per_token_traced": round(traced * 1e3),
        "modelled_device_work_ms": round(work * 1e3),
        "modelled_all_reduce_ms": round(collectives * 1e3),
        "modelled_token_selection_ms": round(selection * 1e3),
        "model": {
            "bw_efficiency": BW_EFFICIENCY,
            "per_core_bw_gbs": PER_CORE_BW / 1e9,
            "dram_bw_gbs": t.dram_bw / 1e9,
            "dispatch_untraced_us": t.dispatch_untraced_s * 1e6,
            "dispatch_traced_us": t.dispatch_traced_s * 1e6,
            "mesh": [t.mesh.0, t.mesh.1],
            "all_reduce_fixed_us": t.all_reduce_s * 1e6,
            "link_bw_gbs": t.link_bw / 1e9,
            "calibration": "BW_EFFICIENCY makes the traced E4B model on tt-p150 give tt-metal's published 14.0 tok/s",
        },
    });
    (per_kernel, total)
}

/// Three decimals: stable text in stats.json.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
