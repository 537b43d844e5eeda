//! The incremental extraction (linear in layers, passes/src/fusion/extract.rs)
//! against the full one it replaced (the whole DAG's cost recomputed per move):
//! on every fixture and released config, decode and prefill graphs, for the CPU
//! and the accelerator cost models, both give byte-identical fused graphs, and
//! the incremental search never needs its fallback to the full one.

mod common;

use std::path::Path;

use common::*;
use gemma4c_frontend::{build, BuildOptions, Gemma4Config};
use gemma4c_passes::fusion::{fuse_extracting, rules};
use gemma4c_passes::{CostModel, Extraction, Limits};

fn check(name: &str, cfg: &Gemma4Config) {
    let chunk = cfg.sliding_window.min(8);
    for seq in [1, chunk] {
        let opts = BuildOptions::new(cfg, seq, cfg.max_position_embeddings.min(256), chunk);
        let g = build(cfg, &opts, &|_| cfg.dtype).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (model_name, model) in [("cpu", CostModel::cpu()), ("accelerator", CostModel::accelerator())] {
            let fuse = |how| {
                fuse_extracting(&g, &model, &Limits::default(), &rules::all_rules(), how)
                    .unwrap_or_else(|e| panic!("{name} seq {seq} {model_name}: {e}"))
            };
            let (incremental, report) = fuse(Extraction::Incremental);
            let (full, _) = fuse(Extraction::Full);
            let what = format!("{name}, seq_len {seq}, {model_name} cost model");
            assert!(!report.extraction_fell_back, "{what}: the incremental search fell back");
            assert!(
                incremental.nodes().count() < g.nodes().count(),
                "{what}: nothing was fused, so the comparison shows nothing"
            );
            assert_eq!(
                gemma4c_ir::print(&incremental),
                gemma4c_ir::print(&full),
                "{what}: incremental and full extraction chose differently"
            );
        }
    }
}

fn config_of(path: &Path) -> Gemma4Config {
    Gemma4Config::from_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn incremental_extraction_equals_full_on_fixtures() {
    for dir in parity_fixtures() {
        check(&dir.display().to_string(), &config_of(&dir.join("config.json")));
    }
}

#[test]
fn incremental_extraction_equals_full_on_released_configs() {
    for name in [
        "gemma-4-e2b.json",
        "gemma-4-e4b.json",
        "gemma-4-31b.json",
        "gemma-4-26b-a4b.json",
    ] {
        check(name, &config_of(&repo_root().join("tests/configs").join(name)));
    }
}
