//! Tenstorrent prefill: all prompt ids but the last run through the prefill program in chunks of
//! 32 positions (one tile row each, the last one padded), then the decode step runs the last one
//! (choosing the first new token on the device) and continues from the KV caches the chunks
//! wrote. Checked in the simulator (`tt-lang-sim`) against Hugging Face's greedy ids:
//!
//! * a 70-token prompt (two whole chunks and one padded chunk of 5; longer than every fixture's
//!   sliding window and than the 64-slot rings, so each ring wraps during prefill) on every
//!   Gemma 4 fixture compiled for tt-p300 (dense, KV-shared layers, K=V, MoE, head dims
//!   16/40/48, windows 3 to 9), and a 32-token prompt (one chunk of 31) on three of them;
//!   prompts and ids from `reference_prompts.json` (`tools/make_prompt_length_reference.py`);
//! * the 70-token prompt on a dense and a MoE fixture compiled for tt-p150 (one chip);
//! * prompts shorter than a chunk: every fixture's own 12-token (24 for `tiny_ple_long`) prompt
//!   goes through prefill in `tests/tt_sim.rs` (`generate` prefills by default).
//!
//! Compile-only checks: stats.json reports the chunk's launches and modelled speed, and a
//! prefill chunk other than one tile row is refused with the flag to use.

mod common;

use std::path::PathBuf;
use std::process::Child;

use common::tt_sim::*;
use common::*;

/// `(prompt, HF's greedy ids)` of each prompt in `reference_prompts.json`.
fn prompts(dir: &std::path::Path) -> Vec<(Vec<u32>, Vec<u32>)> {
    let path = dir.join("reference_prompts.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("reference_prompts.json");
    v["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| (json_ids(&p["prompt_ids"]), json_ids(&p["generated_ids"])))
        .collect()
}

struct Job {
    name: String,
    out: PathBuf,
    prompt: Vec<u32>,
    want: Vec<u32>,
}

/// Runs the jobs two simulator processes at a time; asserts HF's ids, that all prompt ids but the
/// last went through ceil((len - 1) / 32) prefill chunks and that the rest were decode steps (the
/// prompt's last id, which chooses the first new token on the device, then one per new token
/// after the first: run.py's summary line).
fn run_all(venv: &std::path::Path, jobs: &[Job]) {
    for chunk in jobs.chunks(2) {
        let children: Vec<Child> = chunk
            .iter()
            .map(|j| spawn_sim(venv, &j.out, &j.prompt, j.want.len(), &[]))
            .collect();
        for (j, child) in chunk.iter().zip(children) {
            let out = child.wait_with_output().expect("wait for tt-lang-sim");
            let what = format!("{} ({} prompt ids)", j.name, j.prompt.len());
            let got = last_line_ids(&out, &what);
            assert_eq!(got, j.want, "{what}: greedy ids under tt-lang-sim differ from HF");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let chunks = format!(
                "{} prefill chunks and {} decode steps",
                (j.prompt.len() - 1).div_ceil(32),
                j.want.len()
            );
            assert!(stderr.contains(&chunks), "{what}: expected {chunks}: {stderr}");
            eprintln!("{what}: {} ids match HF ({})", got.len(), stderr.trim());
        }
    }
}

#[test]
fn tt_prefill_gives_hf_ids_for_prompts_of_one_tile_row_and_longer_than_the_rings() {
    let Some(venv) = sim_venv("tt_prefill_gives_hf_ids_for_prompts_of_one_tile_row_and_longer_than_the_rings") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut dirs = fixtures();
    dirs.extend(odd_dim_fixtures());
    let mut jobs = Vec::new();
    // The 70-token prompt on every fixture; the 32-token one (one chunk padded by a single row,
    // which the decode step then overwrites) on a dense, a MoE and a head_dim 16 PLE fixture, to
    // keep the simulator time modest.
    let whole_chunk = ["tiny_dense_kv", "moe_hd48", "ple_hd16"];
    for dir in &dirs {
        let name = dir.file_name().expect("fixture name").to_string_lossy().into_owned();
        let out = tmp.path().join(format!("{name}-p300"));
        compile_tt_for("tt-p300", &["--model", dir.to_str().expect("utf-8 path")], &out);
        let all = prompts(dir);
        assert_eq!(
            all.iter().map(|(p, _)| p.len()).collect::<Vec<_>>(),
            [32, 70],
            "{name}: reference_prompts.json"
        );
        for (prompt, want) in all {
            if prompt.len() == 32 && !whole_chunk.contains(&name.as_str()) {
                continue;
            }
            jobs.push(Job {
                name: format!("{name} on tt-p300"),
                out: out.clone(),
                prompt,
                want,
            });
        }
    }
    // One chip: a dense fixture with KV-shared layers and a MoE one, the long prompt.
    for name in ["tiny_dense_kv", "tiny_moe"] {
        let dir = fixture(name);
        let out = tmp.path().join(format!("{name}-p150"));
        compile_tt_for("tt-p150", &["--model", dir.to_str().expect("utf-8 path")], &out);
        let (prompt, want) = prompts(&dir).pop().expect("a long prompt");
        assert!(prompt.len() > 64, "{name}: the long prompt must wrap the 64-slot rings");
        jobs.push(Job {
            name: format!("{name} on tt-p150"),
            out,
            prompt,
            want,
        });
    }
    assert_eq!(jobs.len(), dirs.len() + whole_chunk.len() + 2);
    run_all(&venv, &jobs);
}

#[test]
fn tt_stats_report_the_prefill_chunk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = repo_root().join("tests/configs/gemma-4-e4b.json");
    compile_tt_for("tt-p150", &["--config", cfg.to_str().expect("utf-8 path")], tmp.path());
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("stats.json")).unwrap()).unwrap();
    let tt = &stats["tt"];
    let p = &tt["prefill"];
    assert_eq!(p["chunk_tokens"], 32);
    let launches = p["launches_per_chunk"].as_u64().expect("launches_per_chunk");
    let decode = tt["device_launches_per_token"].as_u64().unwrap();
    // A chunk only fills the KV caches (the prompt's last id goes through the decode step, which
    // makes the first choice): no LM head, and nothing of the KV-shared layers nor of the last
    // writing layer after its K/V projections. E4B: 42 layers, the last 18 share K/V.
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let layers = |k: &str| config[k].as_u64().unwrap();
    let writers = layers("num_hidden_layers") - layers("num_kv_shared_layers");
    assert_eq!(writers, 24);
    assert!(launches < decode, "{p}");
    let model = std::fs::read_to_string(tmp.path().join("model.py")).unwrap();
    let chunk = model
        .split("    def prefill_step(self):")
        .nth(1)
        .and_then(|t| t.split("    def prefill(").next())
        .expect("model.py has prefill_step");
    let launched = chunk.lines().filter(|l| l.trim_start().starts_with("K.")).count() as u64;
    assert_eq!(
        launched, launches,
        "stats.json and model.py disagree on the chunk's launches"
    );
    assert!(!chunk.contains("logits_head"), "the chunk runs the LM head");
    for layer in 0..layers("num_hidden_layers") {
        let named = chunk.contains(&format!("# layers.{layer}."));
        assert_eq!(named, layer < writers, "layer {layer} in the prefill chunk: {named}");
    }
    // A decode step's weights for 32 tokens would be 32x decode's tok/s; the chunk streams only
    // the cache-filling layers' (24 of 42, no LM head), so more than that.
    let decode_tok_s = tt["performance"]["modelled_tok_s_untraced"].as_f64().unwrap();
    let prefill_tok_s = p["modelled_tok_s"].as_f64().unwrap();
    let ratio = prefill_tok_s / decode_tok_s;
    assert!(
        (32.0..=100.0).contains(&ratio),
        "prefill {prefill_tok_s} vs decode {decode_tok_s} tok/s"
    );
    assert!(model.contains("    def prefill(self, ids, start=0):"));
    assert!(model.contains("K.prefill_"), "no prefill kernel launched");
}

#[test]
fn tt_prefill_chunks_other_than_a_tile_row_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = fixture("tiny_ple");
    let r = gemma4c(&[
        "compile",
        "--model",
        dir.to_str().unwrap(),
        "--target",
        "tt-p150",
        "--prefill-chunk",
        "16",
        "--out",
        tmp.path().join("out").to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--prefill-chunk 32"), "{}", r.stderr);
}
