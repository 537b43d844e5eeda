//! Hostile checkpoints, configs, special files and absurd flags (issue 13,
//! items 5, 6, 8-11 and 13): each gives a clear error with exit 1 (or the
//! correct answer), never a panic, a signal, a hang or unbounded memory. The
//! hostile inputs are made here, from copies of the tiny fixtures.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use safetensors::SafeTensors;
use serde_json::{json, Value};

/// A writable copy of a fixture.
fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dst = tmp.path().join("model");
    std::fs::create_dir(&dst).expect("mkdir");
    for entry in std::fs::read_dir(fixture(name)).expect("fixture") {
        let p = entry.expect("entry").path();
        std::fs::copy(&p, dst.join(p.file_name().expect("name"))).expect("copy");
    }
    (tmp, dst)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// Runs gemma4c with `env`, under a 2 GB address-space limit, killed after
/// `secs` (a hang is a failure).
fn gemma4c_limited(args: &[&str], env: &[(&str, &str)], secs: u64) -> CliOutput {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 2000000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_gemma4c"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "gemma4c {args:?} hung for {secs} s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_clean_error(out: &CliOutput, needles: &[&str]) {
    assert_eq!(
        out.code, 1,
        "expected exit 1, stdout {}\nstderr {}",
        out.stdout, out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "panic:\n{}", out.stderr);
    for n in needles {
        assert!(out.stderr.contains(n), "error should mention `{n}`:\n{}", out.stderr);
    }
}

fn run_model(dir: &Path, extra: &[&str]) -> CliOutput {
    let mut args = vec!["run", "--model", s(dir), "--prompt-ids", "2,17,301", "--output", "ids"];
    args.extend_from_slice(extra);
    gemma4c_limited(&args, &[], 120)
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    edit(v.as_object_mut().expect("object"));
    std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json")).expect("write");
}

/// Item 5: absurd token counts.
#[test]
fn huge_token_counts_are_clear_errors() {
    let dir = fixture("tiny_ple");
    for n in ["18446744073709551615", "18446744073709551613"] {
        let out = run_model(&dir, &["--max-new-tokens", n]);
        assert_clean_error(&out, &["--max-new-tokens", "max_position_embeddings"]);
        assert!(!out.stderr.contains("--max-context 0"), "{}", out.stderr);
    }
    let out = gemma4c_limited(
        &["bench", "--model", s(&dir), "--tokens", "18446744073709551615"],
        &[],
        60,
    );
    assert_clean_error(&out, &["--tokens", "max_position_embeddings"]);
}

/// Item 6: sizes derived from a config are bounded before anything is allocated.
#[test]
fn absurd_config_sizes_are_refused_by_inspect_and_run() {
    let (_tmp, dir) = copy_fixture("tiny_ple");
    edit_config(&dir, |c| {
        c.insert("head_dim".into(), json!(1u64 << 31));
        c.insert("global_head_dim".into(), json!(1u64 << 31));
    });
    let config = dir.join("config.json");
    for args in [
        vec!["inspect", "--config", s(&config)],
        vec![
            "compile",
            "--config",
            s(&config),
            "--target",
            "cpu",
            "--out",
            s(&dir.join("out")),
        ],
        vec!["run", "--model", s(&dir), "--prompt-ids", "2", "--output", "ids"],
    ] {
        assert_clean_error(&gemma4c_limited(&args, &[], 60), &["head_dim", "memory"]);
    }
    edit_config(&dir, |c| {
        c.insert("head_dim".into(), json!(u64::MAX));
    });
    assert_clean_error(
        &gemma4c_limited(&["inspect", "--config", s(&config)], &[], 60),
        &["head_dim", "larger than any Gemma 4 size"],
    );
    edit_config(&dir, |c| {
        c.insert("head_dim".into(), json!(32));
        c.insert("num_hidden_layers".into(), json!(1u64 << 30));
    });
    assert_clean_error(
        &gemma4c_limited(&["inspect", "--config", s(&config)], &[], 60),
        &["num_hidden_layers"],
    );
}

/// Item 8: special files in place of inputs fail fast with the file's kind.
#[test]
fn fifos_devices_and_symlink_loops_are_clear_errors() {
    for (file, needles) in [
        ("config.json", vec!["config.json", "FIFO"]),
        ("generation_config.json", vec!["generation_config.json", "FIFO"]),
        ("tokenizer.json", vec!["tokenizer.json", "FIFO"]),
        ("model.safetensors", vec!["model.safetensors", "FIFO"]),
    ] {
        let (_tmp, dir) = copy_fixture("tiny_ple");
        let p = dir.join(file);
        std::fs::remove_file(&p).expect("rm");
        let status = Command::new("mkfifo").arg(&p).status().expect("mkfifo");
        assert!(status.success());
        let out = gemma4c_limited(
            &["run", "--model", s(&dir), "--prompt", "hi", "--max-new-tokens", "2"],
            &[],
            30,
        );
        assert_clean_error(&out, &needles);
        // A symlink to /dev/zero is not read until memory runs out.
        std::fs::remove_file(&p).expect("rm");
        std::os::unix::fs::symlink("/dev/zero", &p).expect("symlink");
        let out = gemma4c_limited(
            &["run", "--model", s(&dir), "--prompt", "hi", "--max-new-tokens", "2"],
            &[],
            30,
        );
        assert_clean_error(&out, &[file, "character device"]);
    }
    // The shard index too.
    let (_tmp, dir) = copy_fixture("tiny_ple");
    let index = dir.join("model.safetensors.index.json");
    Command::new("mkfifo").arg(&index).status().expect("mkfifo");
    assert_clean_error(&run_model(&dir, &[]), &["model.safetensors.index.json", "FIFO"]);
    // A symlink loop is reported as a loop, not as a missing file.
    let (_tmp2, dir) = copy_fixture("tiny_ple");
    let st = dir.join("model.safetensors");
    std::fs::remove_file(&st).expect("rm");
    std::os::unix::fs::symlink("model.safetensors", &st).expect("symlink");
    assert_clean_error(&run_model(&dir, &[]), &["model.safetensors", "symlink loop"]);
}

/// Item 9: thread counts.
#[test]
fn bad_thread_counts_are_clear_errors() {
    let dir = fixture("tiny_ple");
    for v in ["abc", "-1", "0", "100000"] {
        let out = gemma4c_limited(
            &[
                "run",
                "--model",
                s(&dir),
                "--prompt-ids",
                "2,17",
                "--output",
                "ids",
                "--max-new-tokens",
                "1",
            ],
            &[("GEMMA4C_THREADS", v)],
            60,
        );
        assert_clean_error(&out, &["GEMMA4C_THREADS", v, "thread count"]);
    }
    let out = gemma4c_limited(
        &["bench", "--model", s(&dir), "--threads", "100000", "--tokens", "1"],
        &[],
        60,
    );
    assert_clean_error(&out, &["--threads", "100000"]);
    // chat and serve check --threads and GEMMA4C_THREADS like run, before loading anything.
    let template = fixture("chat").join("gemma4_chat_template.jinja");
    let chat = ["chat", "--model", s(&dir), "--chat-template", s(&template)];
    let serve = ["serve", "--model", s(&dir), "--port", "0"];
    for cmd in [&chat[..], &serve[..]] {
        for v in ["0", "100000"] {
            let out = gemma4c_limited(&[cmd, &["--threads", v]].concat(), &[], 60);
            assert_clean_error(&out, &["--threads", v, "thread count"]);
        }
        let out = gemma4c_limited(cmd, &[("GEMMA4C_THREADS", "abc")], 60);
        assert_clean_error(&out, &["GEMMA4C_THREADS", "abc", "thread count"]);
    }
    let out = gemma4c_limited(
        &["run", "--model", s(&dir), "--prompt-ids", "2", "--threads", "0"],
        &[],
        60,
    );
    assert_clean_error(&out, &["--threads", "0", "thread count"]);
}

/// Item 10: transformers computes tanh(x / c) * c for any non-null cap, so a
/// negative cap gives the same tokens and logits as its absolute value.
#[test]
fn negative_softcap_matches_transformers() {
    let (_tmp, dir) = copy_fixture("tiny_ple");
    let r = Reference::load(&dir);
    let prompt = ids_csv(&r.prompt());
    let run = |dir: &Path| {
        gemma4c_limited(
            &[
                "run",
                "--model",
                s(dir),
                "--prompt-ids",
                &prompt,
                "--max-new-tokens",
                "6",
                "--output",
                "ids",
            ],
            &[],
            120,
        )
    };
    let positive = run(&dir);
    assert_eq!(positive.code, 0, "{}", positive.stderr);
    edit_config(&dir, |c| {
        assert_eq!(c["final_logit_softcapping"], json!(30.0));
        c.insert("final_logit_softcapping".into(), json!(-30.0));
    });
    let negative = run(&dir);
    assert_eq!(negative.code, 0, "{}", negative.stderr);
    assert_eq!(negative.stdout, positive.stdout);
    edit_config(&dir, |c| {
        c.insert("final_logit_softcapping".into(), json!(0.0));
    });
    assert_clean_error(&run(&dir), &["final_logit_softcapping", "null"]);
}

/// Splits model.safetensors into two shards with an index; `tweak` may edit
/// the (shard name -> tensors) assignment and the weight map.
fn shard(dir: &Path, tweak: impl Fn(&mut Vec<Vec<String>>, &mut serde_json::Map<String, Value>)) {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("valid");
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let half = names.len() / 2;
    let mut parts = vec![names[..half].to_vec(), names[half..].to_vec()];
    let mut map = serde_json::Map::new();
    for (i, part) in parts.iter().enumerate() {
        for n in part {
            map.insert(n.clone(), json!(format!("model-0000{}-of-00002.safetensors", i + 1)));
        }
    }
    tweak(&mut parts, &mut map);
    for (i, part) in parts.iter().enumerate() {
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).expect("tensor")))
            .collect();
        let out = safetensors::serialize(views, None).expect("serialize");
        std::fs::write(dir.join(format!("model-0000{}-of-00002.safetensors", i + 1)), out).expect("write");
    }
    std::fs::remove_file(dir.join("model.safetensors")).expect("rm");
    let index = json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).expect("index");
}

/// Item 11: the shard index is honoured and duplicates are found.
#[test]
fn shard_index_is_honoured() {
    let single = run_model(&fixture("tiny_ple"), &["--max-new-tokens", "4"]);
    assert_eq!(single.code, 0, "{}", single.stderr);
    let (_a, dir) = copy_fixture("tiny_ple");
    shard(&dir, |_, _| {});
    let sharded = run_model(&dir, &["--max-new-tokens", "4"]);
    assert_eq!(sharded.code, 0, "{}", sharded.stderr);
    assert_eq!(sharded.stdout, single.stdout);

    let (_b, dir) = copy_fixture("tiny_ple");
    shard(&dir, |parts, _| {
        let dup = parts[0][0].clone();
        parts[1].push(dup);
    });
    assert_clean_error(
        &run_model(&dir, &[]),
        &["model-00002-of-00002.safetensors", "index.json places in"],
    );

    let (_c, dir) = copy_fixture("tiny_ple");
    let moved = std::sync::Mutex::new(String::new());
    shard(&dir, |parts, map| {
        let t = parts[0][0].clone();
        map.insert(t.clone(), json!("model-00002-of-00002.safetensors"));
        *moved.lock().expect("lock") = t;
    });
    let out = run_model(&dir, &[]);
    assert_clean_error(&out, &[moved.lock().expect("lock").as_str(), "index.json places in"]);

    // Two stored names for one tensor (with and without the model prefix).
    let (_d, dir) = copy_fixture("tiny_ple");
    shard(&dir, |parts, map| {
        let t = parts[0][0].clone();
        let bare = t.strip_prefix("model.").expect("prefixed").to_string();
        assert!(!bare.is_empty());
        map.insert(bare, json!("model-00002-of-00002.safetensors"));
        let _ = parts;
    });
    assert_clean_error(&run_model(&dir, &[]), &["has no tensor"]);
}

/// Item 13: messages that named the wrong cause, or nothing.
#[test]
fn messages_name_the_cause() {
    // A header length larger than the file.
    let (_t, dir) = copy_fixture("tiny_ple");
    let st = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&st).expect("read");
    let huge = bytes.len() as u64 * 2;
    bytes[..8].copy_from_slice(&huge.to_le_bytes());
    std::fs::write(&st, &bytes).expect("write");
    assert_clean_error(&run_model(&dir, &[]), &["header length", "exceeds"]);

    // Offsets that do not fit the shape name the tensor.
    let (_t2, dir) = copy_fixture("tiny_ple");
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let name = header
        .as_object()
        .expect("obj")
        .keys()
        .find(|k| *k != "__metadata__")
        .expect("a tensor")
        .clone();
    header[&name]["shape"][0] = json!(header[&name]["shape"][0].as_u64().expect("dim") + 1);
    let mut text = serde_json::to_vec(&header).expect("json");
    text.resize(n.max(text.len()).div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&st, &out).expect("write");
    assert_clean_error(&run_model(&dir, &[]), &[&format!("tensor `{name}`"), "needs"]);

    // ir --max-context 0 blames --max-context.
    let config = fixture("tiny_ple").join("config.json");
    let out = gemma4c_limited(&["ir", "--config", s(&config), "--max-context", "0"], &[], 30);
    assert_clean_error(&out, &["--max-context 0"]);

    // NaN weights: say the logits are NaN instead of printing `0 0 0`.
    let (_t3, dir) = copy_fixture("tiny_ple");
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).expect("read");
    let parsed = SafeTensors::deserialize(&bytes).expect("valid");
    let views: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = parsed
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let mut data = v.data().to_vec();
            if n.ends_with("norm.weight") && v.dtype() == safetensors::Dtype::F32 {
                for c in data.chunks_exact_mut(4) {
                    c.copy_from_slice(&f32::NAN.to_le_bytes());
                }
            }
            (n, v.shape().to_vec(), v.dtype(), data)
        })
        .collect();
    let tv: Vec<(String, safetensors::tensor::TensorView)> = views
        .iter()
        .map(|(n, s, d, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"),
            )
        })
        .collect();
    std::fs::write(&st, safetensors::serialize(tv, None).expect("serialize")).expect("write");
    for ex in ["jit", "reference"] {
        assert_clean_error(&run_model(&dir, &["--executor", ex]), &["NaN"]);
    }

    // Extra tensors (a 6-layer checkpoint read with 5 layers) are warned about.
    let (_t4, dir) = copy_fixture("tiny_moe");
    let layers = {
        let c: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("read")).expect("json");
        c["num_hidden_layers"].as_u64().expect("layers")
    };
    edit_config(&dir, |c| {
        c.insert("num_hidden_layers".into(), json!(layers - 1));
        if let Some(Value::Array(t)) = c.get_mut("layer_types") {
            t.pop();
        }
        if let Some(Value::Object(per_layer)) = c.get_mut("per_layer_config") {
            per_layer.remove(&(layers - 1).to_string());
        }
    });
    let run = run_model(&dir, &["--max-new-tokens", "1"]);
    assert!(
        run.stderr.contains("warning") && run.stderr.contains("not read by this config"),
        "{}",
        run.stderr
    );
}
