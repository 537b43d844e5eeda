//! Tenstorrent backend: snapshots of the generated Python, and runs of it in the
//! functional simulator (`tt-lang-sim`, no hardware).
//!
//! * every committed fixture compiled for tt-p300 and run end to end with
//!   `tt-lang-sim OUT/run.py` gives Hugging Face's greedy ids;
//! * every kernel family matches the IR's reference semantics (`ir/src/eval.rs`) on
//!   random inputs, in the simulator's fp32 mode and in real-bf16 mode
//!   (`--no-float32-promotion`) — see `tests/tt/cases/` for the cases and
//!   `tests/tt/test_kernels.py` for the runner;
//! * compile-time hardware limits give clear errors.
//!
//! The simulator tests need the Python environment of `tools/setup_sim_venv.sh`
//! (`scripts/setup.sh` creates it). Without it they are skipped with a message,
//! except under CI (`CI` set), where that is an error.

mod common;
#[path = "tt/cases/mod.rs"]
mod tt_cases;

use std::path::Path;
use std::process::{Child, Command};

use common::tt_sim::*;
use common::*;

#[test]
fn tt_p300_greedy_ids_match_hf_on_every_fixture_in_the_simulator() {
    let Some(venv) = sim_venv("tt_p300_greedy_ids_match_hf_on_every_fixture_in_the_simulator") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut jobs = Vec::new();
    // The committed fixtures, and the ones whose head dims, windows, widths and vocabularies are
    // not multiples of 32 (zero padded to whole tiles).
    let mut dirs = fixtures();
    dirs.extend(odd_dim_fixtures());
    for dir in dirs {
        let name = dir.file_name().expect("fixture name").to_string_lossy().into_owned();
        let out = tmp.path().join(&name);
        compile_tt(&["--model", dir.to_str().expect("utf-8 path")], &out);
        for f in [
            "kernels.py",
            "model.py",
            "run.py",
            "sim_support.py",
            "weights.safetensors",
            "plan.json",
            "stats.json",
        ] {
            assert!(out.join(f).exists(), "{name}: {f} missing");
        }
        let r = Reference::load(&dir);
        jobs.push((name, out, r.prompt(), r.generated()));
    }
    // The unfused plan (every primitive op as its own kernel) of the MoE fixture too.
    let dir = fixture("tiny_moe");
    let out = tmp.path().join("tiny_moe_unfused");
    compile_tt(&["--model", dir.to_str().expect("utf-8 path"), "--no-fuse"], &out);
    let r = Reference::load(&dir);
    jobs.push(("tiny_moe (unfused)".to_string(), out, r.prompt(), r.generated()));
    // Two simulator processes at a time (each is single threaded).
    for chunk in jobs.chunks(2) {
        let children: Vec<Child> = chunk
            .iter()
            .map(|(_, out, p, want)| spawn_sim(&venv, out, p, want.len(), &[]))
            .collect();
        for ((name, _, _, want), child) in chunk.iter().zip(children) {
            let out = child.wait_with_output().expect("wait for tt-lang-sim");
            let got = last_line_ids(&out, name);
            assert!(want.len() >= 8, "{name}: the reference has fewer than 8 new tokens");
            assert_eq!(&got, want, "{name}: greedy ids under tt-lang-sim differ from HF");
            // The argmax runs on the device: per step only the id (4 bytes) is read back.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("read back 4 bytes/step"), "{name}: {err}");
            eprintln!(
                "{name}: {} ids match HF ({})",
                got.len(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

/// `--weights bfp8`: matmul weights as bfloat8_b, emulated bit for bit in weights.safetensors.
/// Every fixture (odd geometries included) gives, for 8 new tokens, exactly the greedy ids
/// transformers gives with the same weights rounded the same way (`reference_bfp8.json`, written
/// by tools/make_bfp8_reference.py). On these tiny random models that rounding alone changes HF's
/// f32 ids on every fixture (`matches_f32_reference` is false in each file), so the f32 ids are
/// not the expectation here.
#[test]
fn tt_p300_bfp8_greedy_ids_match_hf_with_the_same_rounding_in_the_simulator() {
    let Some(venv) = sim_venv("tt_p300_bfp8_greedy_ids_match_hf_with_the_same_rounding_in_the_simulator") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut dirs = fixtures();
    dirs.extend(odd_dim_fixtures());
    let mut jobs = Vec::new();
    for dir in dirs {
        let name = dir.file_name().expect("fixture name").to_string_lossy().into_owned();
        let out = tmp.path().join(&name);
        compile_tt(
            &["--model", dir.to_str().expect("utf-8 path"), "--weights", "bfp8"],
            &out,
        );
        let model = std::fs::read_to_string(out.join("model.py")).unwrap();
        assert!(model.contains("ttnn.bfloat8_b"), "{name}: no bfloat8_b weights");
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
        assert_eq!(stats["tt"]["weights"], "bfp8");
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("reference_bfp8.json")).expect("reference_bfp8.json"),
        )
        .unwrap();
        let ids = |k: &str| json_ids(&r[k]);
        let want = ids("generated_ids")[..8].to_vec();
        assert_eq!(
            ids("prompt_ids"),
            Reference::load(&dir).prompt(),
            "{name}: stale reference_bfp8.json"
        );
        jobs.push((name, out, ids("prompt_ids"), want));
    }
    for chunk in jobs.chunks(2) {
        let children: Vec<Child> = chunk
            .iter()
            .map(|(_, out, p, want)| spawn_sim(&venv, out, p, want.len(), &[]))
            .collect();
        for ((name, _, _, want), child) in chunk.iter().zip(children) {
            let out = child.wait_with_output().expect("wait for tt-lang-sim");
            let got = last_line_ids(&out, name);
            assert_eq!(
                &got, want,
                "{name}: bfp8 ids under tt-lang-sim differ from HF with bfp8-rounded weights"
            );
            eprintln!("{name} (bfp8): {} ids match HF with the same rounding", got.len());
        }
    }
}

#[test]
fn tt_run_py_also_runs_in_process_and_in_real_bf16_mode() {
    let Some(venv) = sim_venv("tt_run_py_also_runs_in_process_and_in_real_bf16_mode") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = fixture("tiny_ple");
    let out = tmp.path().join("tiny_ple");
    compile_tt(&["--model", dir.to_str().expect("utf-8 path")], &out);
    let r = Reference::load(&dir);
    // `python run.py` sets the simulator up itself when no real ttnn is installed.
    let plain = Command::new(venv.join("bin/python"))
        .arg(out.join("run.py"))
        .args(["--prompt-ids", &ids_csv(&r.prompt()), "--max-new-tokens", "4"])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("run python run.py");
    assert_eq!(last_line_ids(&plain, "python run.py"), r.generated()[..4]);
    // Real bf16 storage and math runs to the end. (The tiny random fixtures are too sensitive
    // for bf16 to reproduce f32 ids: rounding only their weights to bf16 moves logits by
    // 1.5 to 11, so this is a smoke run; the per-kernel cases check bf16 numerics.)
    let bf16 = spawn_sim(&venv, &out, &r.prompt(), 4, &["--no-float32-promotion"])
        .wait_with_output()
        .expect("wait for tt-lang-sim");
    let got = last_line_ids(&bf16, "bf16 mode");
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|&t| t < 512), "{got:?}");
}

#[test]
fn tt_kernel_families_match_reference_semantics_in_the_simulator() {
    let Some(venv) = sim_venv("tt_kernel_families_match_reference_semantics_in_the_simulator") else {
        return;
    };
    // A fixed place, so the runner can be rerun by hand:
    // TT_CASES=<dir> $VENV/bin/python -m pytest tests/tt/test_kernels.py
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tt-kernel-cases");
    std::fs::create_dir_all(&dir).expect("bundle dir");
    let n = tt_cases::write_bundle(&dir);
    assert!(n >= 20, "only {n} kernel cases");
    for (mode, extra) in [("fp32", None), ("bf16", Some("1"))] {
        let mut cmd = Command::new(venv.join("bin/python"));
        cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(repo_root().join("tests/tt/test_kernels.py"))
            .env("TT_CASES", &dir)
            .env("OMP_NUM_THREADS", "1");
        if let Some(v) = extra {
            cmd.env("TTSIM_BF16", v);
        }
        let out = cmd.output().expect("run pytest");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kernel cases ({mode} mode) failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("kernel cases, {mode} mode: {}", stdout.lines().last().unwrap_or(""));
    }
}

#[test]
fn tt_generated_python_snapshots() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tiny = tmp.path().join("tiny_ple");
    compile_tt(&["--model", fixture("tiny_ple").to_str().expect("utf-8 path")], &tiny);
    let e4b = tmp.path().join("e4b");
    let cfg = repo_root().join("tests/configs/gemma-4-e4b.json");
    compile_tt(&["--config", cfg.to_str().expect("utf-8 path")], &e4b);
    assert!(
        !e4b.join("weights.safetensors").exists(),
        "no weights from a config alone"
    );
    for (name, dir) in [("tiny_ple", &tiny), ("e4b", &e4b)] {
        for file in ["kernels", "model"] {
            let text = std::fs::read_to_string(dir.join(format!("{file}.py"))).expect("generated file");
            insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
                insta::assert_snapshot!(format!("tt_{name}_{file}_py"), text);
            });
        }
    }
    // Deterministic: a second compile writes the same bytes.
    let again = tmp.path().join("tiny_ple_again");
    compile_tt(&["--model", fixture("tiny_ple").to_str().expect("utf-8 path")], &again);
    for f in ["kernels.py", "model.py", "run.py", "weights.safetensors"] {
        assert_eq!(
            std::fs::read(tiny.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f} differs"
        );
    }
}

#[test]
fn tt_stats_report_dataflow_buffers_and_l1_per_kernel() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = repo_root().join("tests/configs/gemma-4-e4b.json");
    compile_tt(&["--config", cfg.to_str().expect("utf-8 path")], tmp.path());
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("stats.json")).unwrap()).unwrap();
    let tt = &stats["tt"];
    let l1 = tt["l1_bytes_per_core"].as_u64().unwrap();
    let kernels = tt["kernels"].as_object().expect("kernels");
    for family in ["matmul", "sandwich_matmul", "logits_head", "norm_add", "attention"] {
        assert!(
            kernels.values().any(|k| k["family"] == family),
            "no {family} kernel for E4B"
        );
    }
    // Every K/V cache write of E4B's decode step runs inside its layer's attention launch (the
    // prefill chunk's whole-tile writes are launches of their own, not used per decoded token).
    assert!(
        !kernels
            .values()
            .any(|k| k["family"] == "kv_write" && k["launches_per_token"].as_u64() != Some(0)),
        "a K/V write launch of its own in the decode step"
    );
    assert!(
        kernels.values().any(|k| k["family"] == "kv_write"),
        "no prefill K/V write kernel"
    );
    for (name, k) in kernels {
        assert!(k["dataflow_buffers"].as_u64().unwrap() <= 32, "{name}");
        assert!(k["l1_bytes_per_core"].as_u64().unwrap() <= l1, "{name}");
    }
    // head_dim 256 (sliding) and 512 (full) attention.
    assert!(kernels.keys().any(|k| k.starts_with("norm_rope_attention_8x256")));
    assert!(kernels.keys().any(|k| k.starts_with("norm_rope_attention_8x512")));
}

#[test]
fn tt_targets_differ_only_in_grid_and_l1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = fixture("tiny_moe");
    for t in ["tt-p150", "tt-n150"] {
        let out = tmp.path().join(t);
        let r = gemma4c(&[
            "compile",
            "--model",
            dir.to_str().unwrap(),
            "--target",
            t,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 0, "{t}: {}", r.stderr);
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
        assert_eq!(stats["tt"]["device"], t);
    }
}

/// tt-lang reads `ttl.operation(grid=...)` as `(cols, rows)` and refuses a grid outside the
/// device's compute grid (13 x 10 on Blackhole) at launch: every generated E4B kernel must fit
/// that way round, and the big matmuls must use all 13 columns.
#[test]
fn tt_kernel_grids_are_cols_by_rows_within_the_blackhole_grid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = repo_root().join("tests/configs/gemma-4-e4b.json");
    compile_tt(&["--config", cfg.to_str().expect("utf-8 path")], tmp.path());
    let py = std::fs::read_to_string(tmp.path().join("kernels.py")).unwrap();
    let mut grids = Vec::new();
    for line in py.lines() {
        if let Some(rest) = line.trim().strip_prefix("@ttl.operation(grid=(") {
            let (g, _) = rest.split_once(')').expect("grid tuple");
            let (c, r) = g.split_once(", ").expect("two dims");
            grids.push((c.parse::<usize>().unwrap(), r.parse::<usize>().unwrap()));
        }
    }
    assert!(grids.len() >= 20, "{grids:?}");
    assert!(grids.iter().all(|&(c, r)| c <= 13 && r <= 10), "{grids:?}");
    assert!(
        grids.contains(&(13, 10)),
        "no kernel uses the whole 13 x 10 grid: {grids:?}"
    );
    // Nodes are flattened row-major over (cols, rows): y * cols + x.
    assert!(py.contains("(ny * 13 + nx)"), "row-major flattening over 13 columns");
    assert!(!py.contains("nx * 13"), "old (rows, cols) flattening");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["tt"]["grid"], serde_json::json!({"cols": 13, "rows": 10}));
    assert_eq!(stats["tt"]["chips"], 2);
    let dram = &stats["tt"]["dram"];
    assert!(dram["total_bytes"].as_u64().unwrap() < dram["available_bytes"].as_u64().unwrap());
}

/// Gemma 4 31B and 26B-A4B in bf16 do not fit one Blackhole chip's 32 GB, and 31B not even a
/// p300's two with the MLP weights sharded (the rest is replicated on each chip): compile refuses
/// them with the per-chip figures and a hint. (26B-A4B fits the p300 with its experts split over
/// the chips: tests/tt_mesh.rs.)
#[test]
fn tt_models_larger_than_the_device_dram_are_refused_with_the_figures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (cfg, min_gb, targets) in [
        ("gemma-4-31b", 55, &["tt-p150", "tt-p300"][..]),
        ("gemma-4-26b-a4b", 45, &["tt-p150"][..]),
    ] {
        for &target in targets {
            let out = tmp.path().join(format!("{cfg}-{target}"));
            let path = repo_root().join(format!("tests/configs/{cfg}.json"));
            let r = gemma4c(&[
                "compile",
                "--config",
                path.to_str().unwrap(),
                "--target",
                target,
                "--out",
                out.to_str().unwrap(),
            ]);
            assert_ne!(r.code, 0, "{cfg} on {target} compiled");
            let e = &r.stderr;
            assert!(e.contains("of device DRAM") && e.contains("32000000000 bytes"), "{e}");
            assert!(e.contains("--weights bfp8") && e.contains("mesh"), "{e}");
            let needed: u64 = e
                .split(" needs ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no byte count in: {e}"));
            // A p300 chip holds half of the MLP weights: 31B needs 42.7 GB per chip there.
            let min_gb = if target == "tt-p300" { min_gb.min(40) } else { min_gb };
            assert!(needed > min_gb * 1_000_000_000, "{cfg}: {needed}");
            if target == "tt-p300" {
                assert!(e.contains("per chip") && e.contains("2 chips"), "{e}");
            }
        }
    }
}

/// `--weights bfp8`: E4B's matmul weights take 1088 of bf16's 2048 bytes per tile in the DRAM
/// check and the performance model; 26B-A4B then fits one Blackhole chip, 31B fits a p300 with
/// its MLP sharded over the two chips (tests/tt_mesh.rs: refused on one chip with the bfp8
/// figures), and non-TT targets refuse the option.
#[test]
fn tt_bfp8_weights_shrink_dram_and_the_modelled_time() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stats = |cfg: &str, w: &str| -> Result<serde_json::Value, String> {
        let out = tmp.path().join(format!("{cfg}-{w}"));
        let path = repo_root().join(format!("tests/configs/{cfg}.json"));
        let r = gemma4c(&[
            "compile",
            "--config",
            path.to_str().unwrap(),
            "--target",
            "tt-p300",
            "--weights",
            w,
            "--out",
            out.to_str().unwrap(),
        ]);
        if r.code != 0 {
            return Err(r.stderr);
        }
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
        Ok(s["tt"].clone())
    };
    let (b16, b8) = (
        stats("gemma-4-e4b", "bf16").unwrap(),
        stats("gemma-4-e4b", "bfp8").unwrap(),
    );
    let wb = |s: &serde_json::Value| s["dram"]["weights_bytes"].as_f64().unwrap();
    let ratio = wb(&b8) / wb(&b16);
    eprintln!("E4B weights bfp8/bf16: {ratio:.3}");
    // Matmul weights at 1088/2048 = 0.53; the PLE projections stay bf16.
    assert!(ratio > 0.53 && ratio < 0.6, "{ratio}");
    let tok = |s: &serde_json::Value, k: &str| s["performance"][k].as_f64().unwrap();
    assert!(tok(&b8, "modelled_tok_s_traced") > 1.4 * tok(&b16, "modelled_tok_s_traced"));
    assert!(tok(&b8, "modelled_tok_s") > tok(&b16, "modelled_tok_s"));
    let kernels = b8["kernels"].as_object().unwrap();
    assert!(kernels.keys().any(|k| k.ends_with("_bfp8")), "no bfp8 matmul kernel");
    // The PLE path keeps bf16 matmuls.
    assert!(kernels
        .iter()
        .any(|(k, v)| v["family"] == "matmul" && !k.ends_with("_bfp8")));
    assert!(stats("gemma-4-26b-a4b", "bfp8").is_ok(), "26B-A4B in bfp8 fits 32 GB");
    assert!(
        stats("gemma-4-31b", "bfp8").is_ok(),
        "31B in bfp8 fits a p300's two chips"
    );
    let r = gemma4c(&[
        "compile",
        "--model",
        fixture("tiny_ple").to_str().unwrap(),
        "--target",
        "cpu",
        "--weights",
        "bfp8",
        "--out",
        tmp.path().join("cpu").to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("only the Tenstorrent targets take --weights"),
        "{}",
        r.stderr
    );
}

/// The decode step is traceable: `Model.step` holds the device launches only (no host writes,
/// no allocation: the per-token inputs are written before it by `Model.inputs`), and on hardware
/// the host program captures it once and replays it (`ttnn.begin_trace_capture`,
/// `end_trace_capture`, `execute_trace`, a `trace_region_size` when the device is opened). The
/// simulator runs the same code untraced (the fixture runs above).
#[test]
fn tt_decode_step_is_launches_only_and_replayed_from_a_trace_on_hardware() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = repo_root().join("tests/configs/gemma-4-e4b.json");
    compile_tt(&["--config", cfg.to_str().unwrap()], tmp.path());
    let model = std::fs::read_to_string(tmp.path().join("model.py")).unwrap();
    let body: Vec<&str> = model
        .split("    def step(self):")
        .nth(1)
        .expect("Model.step")
        .split("\n    def ")
        .next()
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('"') && !l.starts_with("captures)") && !l.starts_with('#'))
        .collect();
    // Kernel launches, per-chip kernel launches on the mesh, the all-reduces and, last, the
    // token selection (ttnn.argmax / ttnn.topk).
    let launches = body
        .iter()
        .filter(|l| {
            l.starts_with("K.")
                || l.starts_with("m.each(K.")
                || l.starts_with("m.all_reduce(")
                || l.starts_with("self.select(b[")
        })
        .count();
    assert_eq!(launches + 1, body.len(), "non-launch lines in Model.step: {body:?}");
    assert!(body.last().is_some_and(|l| l.starts_with("self.select(b[")), "{body:?}");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(
        launches as u64,
        stats["tt"]["device_launches_per_token"].as_u64().unwrap()
    );
    // Only the chosen id crosses to the host per token (the logits row stays on the device).
    assert_eq!(stats["tt"]["host_readback_bytes_per_token"], 4);
    assert!(model.contains("ttnn.argmax(logits, dim=-1, keepdim=True, output_tensor=self.token_id)"));
    for call in [
        "ttnn.begin_trace_capture(",
        "ttnn.end_trace_capture(",
        "ttnn.execute_trace(",
        "ttnn.release_trace(",
    ] {
        assert!(model.contains(call), "model.py lacks {call}");
    }
    let run = std::fs::read_to_string(tmp.path().join("run.py")).unwrap();
    assert!(
        run.contains("trace_region_size=") && run.contains("trace = not sim"),
        "{run}"
    );
}

/// Positions, slots and slice offsets are read from device tensors at run time, so the number
/// of distinct TT-Lang programs does not grow with the context: E4B compiles to at most 60 at
/// any --max-context, and no kernel is a per-position factory any more.
#[test]
fn tt_program_count_is_independent_of_the_context_length() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = repo_root().join("tests/configs/gemma-4-e4b.json");
    let mut counts = Vec::new();
    for ctx in ["1024", "4096", "16384"] {
        let out = tmp.path().join(ctx);
        compile_tt(&["--config", cfg.to_str().unwrap(), "--max-context", ctx], &out);
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
        let programs = stats["tt"]["programs"].as_u64().expect("programs in stats.json");
        let ops = std::fs::read_to_string(out.join("kernels.py"))
            .unwrap()
            .matches("@ttl.operation(")
            .count() as u64;
        assert_eq!(programs, ops, "programs = operations in kernels.py");
        let model = std::fs::read_to_string(out.join("model.py")).unwrap();
        assert!(!model.contains(")(b["), "a kernel instantiated per position/offset");
        counts.push(programs);
    }
    assert!(counts.iter().all(|&c| c == counts[0]), "{counts:?}");
    assert!(counts[0] <= 60, "E4B compiles to {} programs", counts[0]);
}

/// The performance model (backends/src/tt/perf.rs) is calibrated to tt-metal's published
/// Gemma 4 E4B decode on one p150 (14.0 tok/s, traced); its prediction for E2B is compared with
/// the second published figure (22.8 tok/s). stats.json carries launches per layer and, per
/// kernel, DRAM bytes, FLOPs, cores and launch cost.
#[test]
fn tt_perf_model_is_calibrated_to_tt_metal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stats = |cfg: &str, target: &str| -> serde_json::Value {
        let out = tmp.path().join(format!("{cfg}-{target}"));
        let path = repo_root().join(format!("tests/configs/{cfg}.json"));
        let r = gemma4c(&[
            "compile",
            "--config",
            path.to_str().unwrap(),
            "--target",
            target,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
        s["tt"].clone()
    };
    let e4b = stats("gemma-4-e4b", "tt-p150");
    let traced = e4b["performance"]["modelled_tok_s_traced"].as_f64().unwrap();
    assert!(
        (traced - 14.0).abs() < 0.3,
        "E4B traced model {traced} tok/s, calibrated to 14.0"
    );
    let e2b = stats("gemma-4-e2b", "tt-p150");
    let e2b_traced = e2b["performance"]["modelled_tok_s_traced"].as_f64().unwrap();
    eprintln!("E2B on p150: modelled {e2b_traced} tok/s traced, tt-metal 22.8");
    assert!((e2b_traced / 22.8 - 1.0).abs() < 0.2, "E2B model {e2b_traced} vs 22.8");
    // How run.py runs on hardware (the decode step replayed from a trace).
    assert_eq!(
        e4b["performance"]["modelled_tok_s"],
        e4b["performance"]["modelled_tok_s_traced"]
    );
    // `--no-trace` dispatches every launch (0.23 ms each instead of 10 us replayed): the two
    // models differ by exactly that per launch (3-decimal rounding of each figure aside).
    let untraced = e4b["performance"]["modelled_tok_s_untraced"].as_f64().unwrap();
    assert!(untraced < traced / 1.8, "{untraced} vs {traced}");
    let model = &e4b["performance"]["model"];
    let per_launch_ms =
        (model["dispatch_untraced_us"].as_f64().unwrap() - model["dispatch_traced_us"].as_f64().unwrap()) / 1e3;
    let gap = e4b["performance"]["modelled_ms_per_token"].as_f64().unwrap()
        - e4b["performance"]["modelled_ms_per_token_traced"].as_f64().unwrap();
    let launches_per_token = e4b["device_launches_per_token"].as_f64().unwrap();
    assert!((gap - launches_per_token * per_launch_ms).abs() < 0.01, "{gap} ms");
    let lpl = e4b["launches_per_layer"].as_f64().unwrap();
    assert_eq!(e4b["layers"], 42);
    let launches = e4b["device_launches_per_token"].as_f64().unwrap();
    assert!((lpl - launches / 42.0).abs() < 0.01, "{lpl}");
    // The goal: at most 8 launches per layer per decoded token (the q norm + RoPE inside
    // attention, the sandwich norms inside the matmuls after them).
    assert!(lpl <= 8.0, "E4B decodes with {lpl} launches per layer");
    for family in ["sandwich_matmul", "attention"] {
        assert!(
            e4b["kernels"]
                .as_object()
                .unwrap()
                .values()
                .any(|k| k["family"] == family),
            "no {family} kernel"
        );
    }
    assert!(
        !e4b["kernels"]
            .as_object()
            .unwrap()
            .values()
            .any(|k| k["family"] == "norm_rope"),
        "a q norm + RoPE launch of its own"
    );
    for (name, k) in e4b["kernels"].as_object().unwrap() {
        for f in ["dram_bytes", "flops", "cores", "modelled_us", "launch_cost_us"] {
            assert!(k[f].is_number(), "{name}: no {f}");
        }
    }
    // The LM head streams 262144 x 2560 bf16 weights per token.
    assert!(e4b["kernels"]
        .as_object()
        .unwrap()
        .values()
        .any(|k| k["family"] == "logits_head" && k["dram_bytes"].as_u64().unwrap() >= 262_144 * 2560 * 2));
    for target in ["tt-p300", "tt-n150"] {
        let s = stats("gemma-4-e4b", target);
        eprintln!(
            "E4B on {target}: {} tok/s untraced, {} traced",
            s["performance"]["modelled_tok_s_untraced"], s["performance"]["modelled_tok_s_traced"]
        );
        assert!(s["performance"]["modelled_tok_s"].as_f64().unwrap() > 0.0);
    }
}
