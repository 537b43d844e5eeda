//! Tenstorrent token selection on the device, in the simulator: the decode step ends with
//! `ttnn.argmax` (greedy) or `ttnn.topk` (sampling) and only that choice is read back; the host
//! draws among the top-k candidates with a seeded generator (model.py `Sampler`).
//!
//! Checked on a fixture whose vocabulary is a whole number of tiles (tiny_ple, 512) and one that
//! is not (ple_hd16, 520: the tile padding must never be chosen), compiled for tt-p300:
//! * sampling with the HF greedy ids fed back (teacher forcing, `--feed-ids`), so that each step's
//!   logits are the ones transformers recorded: the sampled ids equal those of
//!   tests/tt/sampling_reference.py, which samples from transformers' logits over the whole
//!   vocabulary with the same seeded draw, and each one is among HF's top-k at its step;
//! * `--top-k 1` at a positive temperature is greedy: HF's ids;
//! * the bytes read back per step, as the simulated program counts them, are stats.json's figures:
//!   4 (the id) greedy, one tile of values and one of ids when sampling.

mod common;

use std::path::Path;
use std::process::Command;

use common::tt_sim::*;
use common::*;

const STEPS: usize = 8;

/// `read back N bytes/step` from run.py's summary line on stderr.
fn readback_per_step(out: &std::process::Output) -> u64 {
    let err = String::from_utf8_lossy(&out.stderr);
    let tail = err
        .split("read back ")
        .nth(1)
        .unwrap_or_else(|| panic!("no readback figure in stderr: {err}"));
    tail.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad readback figure in stderr: {err}"))
}

fn stats(out: &Path) -> serde_json::Value {
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    s["tt"].clone()
}

/// The ids of the `k` largest logits of `row` (ties to the lower id).
fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..row.len() as u32).collect();
    ids.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
    ids.truncate(k);
    ids
}

#[test]
fn tt_sampling_on_the_device_matches_sampling_from_hf_logits() {
    let Some(venv) = sim_venv("tt_sampling_on_the_device_matches_sampling_from_hf_logits") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs = [
        fixture("tiny_ple"),
        repo_root().join("tests/fixtures/odd_dims/ple_hd16"),
    ];
    let (temperature, k, top_p, seed) = ("0.8", 8usize, "0.9", "5");
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let out = tmp.path().join(&name);
        compile_tt(&["--model", dir.to_str().unwrap()], &out);
        let r = Reference::load(&dir);
        let greedy = r.generated();
        let feed = ids_csv(&greedy[..STEPS - 1]);
        let (k_arg, steps) = (k.to_string(), STEPS.to_string());
        let sampled = spawn_sim(
            &venv,
            &out,
            &r.prompt(),
            STEPS,
            &[
                "--temperature",
                temperature,
                "--top-k",
                &k_arg,
                "--top-p",
                top_p,
                "--seed",
                seed,
                "--feed-ids",
                &feed,
            ],
        );
        let top1 = spawn_sim(
            &venv,
            &out,
            &r.prompt(),
            STEPS,
            &["--temperature", "1.0", "--top-k", "1", "--seed", "9"],
        );
        let want = Command::new(venv.join("bin/python"))
            .arg(repo_root().join("tests/tt/sampling_reference.py"))
            .args([dir.to_str().unwrap(), &steps, temperature, &k_arg, top_p, seed])
            .output()
            .expect("run sampling_reference.py");
        assert!(want.status.success(), "{}", String::from_utf8_lossy(&want.stderr));
        let want: Vec<u32> = String::from_utf8_lossy(&want.stdout)
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();

        let sampled = sampled.wait_with_output().expect("wait for tt-lang-sim");
        let got = last_line_ids(&sampled, &name);
        let logits = &r.tensors["decode_logits"];
        let vocab = logits.shape[1];
        for (i, &id) in got.iter().enumerate() {
            let row = &logits.data[i * vocab..(i + 1) * vocab];
            assert!(
                top_k(row, k).contains(&id),
                "{name}: step {i} sampled {id}, not in HF's top {k}"
            );
        }
        // The draws are deterministic; the device's logits differ from transformers' by about
        // 1e-3 (the simulator's fp32 mode), so a draw could only differ if it fell within that
        // of a boundary between two candidates' cumulative weights.
        assert_eq!(got, want, "{name}: device sampling vs sampling from HF's logits");
        assert_ne!(
            got,
            greedy[..STEPS],
            "{name}: sampling at T={temperature} gave the greedy ids"
        );
        let st = stats(&out);
        assert_eq!(
            readback_per_step(&sampled),
            st["host_readback_bytes_per_token_sampling"].as_u64().unwrap(),
            "{name}: bytes read back per sampled step"
        );

        let top1 = top1.wait_with_output().expect("wait for tt-lang-sim");
        assert_eq!(
            last_line_ids(&top1, &name),
            greedy[..STEPS],
            "{name}: --top-k 1 is greedy"
        );
        eprintln!("{name}: sampled {got:?} = reference; top-k 1 = HF greedy");
    }
}

#[test]
fn tt_run_py_refuses_sampling_it_cannot_do_on_the_device() {
    let Some(venv) = sim_venv("tt_run_py_refuses_sampling_it_cannot_do_on_the_device") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = fixture("tiny_ple");
    compile_tt(&["--model", dir.to_str().unwrap()], tmp.path());
    for (args, msg) in [
        (&["--temperature", "0.7"][..], "needs --top-k"),
        (
            &["--temperature", "0.7", "--top-k", "65"][..],
            "--top-k must be between 1 and 64",
        ),
        (
            &["--temperature", "0.7", "--top-k", "4", "--top-p", "0"][..],
            "--top-p must be in",
        ),
        (&["--temperature", "-1"][..], "--temperature must be"),
    ] {
        let out = spawn_sim(&venv, tmp.path(), &[2, 3], 2, args)
            .wait_with_output()
            .expect("wait for tt-lang-sim");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(msg), "{args:?}: {err}");
        assert!(!err.contains("Traceback"), "{args:?}: {err}");
    }
}
