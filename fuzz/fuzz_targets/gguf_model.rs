//! The whole GGUF frontend path from a byte string: the input is written as a
//! `.gguf` file and opened as `--model FILE.gguf` is (header, metadata →
//! Gemma 3/4 config, what `inspect` prints, the decode and prefill graphs from
//! the config alone), then as a model (tensor names mapped to Hugging Face
//! keys, every weight checked against the config, the graph with the file's
//! dtypes, every tensor's bytes and f32 values read). Seeds: the GGUF parity
//! fixtures. Any panic, abort, hang or allocation beyond the fuzzer's RSS limit
//! is a bug.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gemma4c_frontend::gguf::{gemma, GgufFile};
use gemma4c_frontend::{build, summary, BuildOptions, Gemma4Config, Model};
use gemma4c_ir::DType;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gemma4c-fuzz-gguf-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir.join("model.gguf")
    })
}

/// Graphs are shapes only (no tensor is allocated), but building one is linear in
/// layers: keep iterations fast. Bigger configs are still resolved and printed.
fn small(cfg: &Gemma4Config) -> bool {
    cfg.num_hidden_layers <= 64
}

/// The decode graph and one prefill chunk, as `compile` sizes them (context capped
/// at 16 tokens to keep iterations fast).
fn graphs(cfg: &Gemma4Config, dtype_of: &dyn Fn(&str) -> DType) {
    let ctx = cfg.max_position_embeddings.min(16);
    if ctx == 0 {
        return;
    }
    let chunk = cfg.sliding_window.min(4).min(ctx).max(1);
    for seq in [1, chunk] {
        let _ = build(cfg, &BuildOptions::new(cfg, seq, ctx, chunk), dtype_of);
    }
}

fn frontend(path: &Path) {
    if let Ok(file) = GgufFile::open(path) {
        if let Ok(cfg) = gemma::config(&file) {
            let _ = summary::render(&cfg);
            if small(&cfg) {
                graphs(&cfg, &|_| cfg.dtype);
            }
        }
    }
    let Ok(model) = Model::open(path) else { return };
    if !small(&model.config) {
        return;
    }
    graphs(&model.config, &|k| model.dtype_of(k));
    let keys: Vec<String> = model.checkpoint.keys().map(str::to_string).collect();
    for k in &keys {
        let _ = model.checkpoint.bytes(k);
        let _ = model.checkpoint.load_f32(k);
    }
    let _ = model.checkpoint.total_bytes();
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("write");
    frontend(path);
});
