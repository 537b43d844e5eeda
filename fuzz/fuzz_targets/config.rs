//! config.json resolution: `Gemma4Config::from_json` on the input, then what
//! `inspect` prints and the weight manifest. Any panic, abort, hang or
//! allocation beyond the fuzzer's RSS limit is a bug.
#![no_main]

use std::path::Path;

use gemma4c_frontend::{gemma4::weight_manifest, summary, Gemma4Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    if let Ok(cfg) = Gemma4Config::from_json(&v, Path::new("config.json")) {
        let _ = summary::render(&cfg);
        // Building the graph is linear in layers; keep iterations fast.
        if cfg.num_hidden_layers <= 64 {
            let _ = weight_manifest(&cfg);
        }
    }
});
