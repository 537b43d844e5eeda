//! Shared helpers for integration tests: fixture discovery, Hugging Face
//! reference outputs, running the CLI.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use safetensors::{Dtype, SafeTensors};

pub mod tt_sim;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every committed Gemma 4 fixture directory (those with a reference.safetensors).
pub fn fixtures() -> Vec<PathBuf> {
    family_fixtures("gemma4")
}

/// The tiny Gemma 3 fixtures (tools/make_tiny_gemma3.py).
pub fn gemma3_fixtures() -> Vec<PathBuf> {
    family_fixtures("gemma3")
}

/// Fixtures whose HF reference the parity and JIT tests check: Gemma 4 and Gemma 3.
pub fn parity_fixtures() -> Vec<PathBuf> {
    let mut all = fixtures();
    all.extend(gemma3_fixtures());
    all
}

/// Fixture directories whose config.json `model_type` starts with `family`.
fn family_fixtures(family: &str) -> Vec<PathBuf> {
    let dir = repo_root().join("tests/fixtures");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("reference.safetensors").exists())
        .filter(|p| {
            let config = std::fs::read_to_string(p.join("config.json")).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
            v["model_type"].as_str().unwrap_or("").starts_with(family)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no {family} fixtures under {}", dir.display());
    out
}

pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// A float tensor from the reference file.
pub struct RefTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// HF outputs recorded by tools/make_tiny_gemma4.py.
pub struct Reference {
    pub tensors: HashMap<String, RefTensor>,
    pub ints: HashMap<String, Vec<i64>>,
}

impl Reference {
    pub fn load(dir: &Path) -> Reference {
        let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors");
        let st = SafeTensors::deserialize(&bytes).expect("valid reference.safetensors");
        let mut tensors = HashMap::new();
        let mut ints = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            match view.dtype() {
                Dtype::F32 => {
                    let v = data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    tensors.insert(
                        name,
                        RefTensor {
                            shape: view.shape().to_vec(),
                            data: v,
                        },
                    );
                }
                Dtype::I64 => {
                    let v = data
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                        .collect();
                    ints.insert(name, v);
                }
                other => panic!("unexpected dtype {other:?} for {name}"),
            }
        }
        Reference { tensors, ints }
    }

    pub fn prompt(&self) -> Vec<u32> {
        self.ints["prompt_ids"].iter().map(|&x| x as u32).collect()
    }

    pub fn generated(&self) -> Vec<u32> {
        self.ints["generated_ids"].iter().map(|&x| x as u32).collect()
    }
}

/// A JSON array of token ids written by a reference script (panics on anything else: the
/// reference files are ours).
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("a JSON array of ids")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("an id")).expect("an id below 2^32"))
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn gemma4c(args: &[&str]) -> CliOutput {
    let out = Command::new(env!("CARGO_BIN_EXE_gemma4c"))
        .args(args)
        .output()
        .expect("run gemma4c");
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn ids_csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// `gemma4c run SOURCE --prompt-ids PROMPT --max-new-tokens N --output ids EXTRA...`,
/// where SOURCE is e.g. `["--model", dir]` or `["--plan", out]`.
pub fn run_ids(source: &[&str], prompt: &[u32], new_tokens: usize, extra: &[&str]) -> CliOutput {
    let prompt = ids_csv(prompt);
    let n = new_tokens.to_string();
    let mut args = vec!["run"];
    args.extend_from_slice(source);
    args.extend_from_slice(&["--prompt-ids", &prompt, "--max-new-tokens", &n, "--output", "ids"]);
    args.extend_from_slice(extra);
    gemma4c(&args)
}

/// What the generated-code checks compile: every Gemma 4 fixture (`--model`) and the four
/// released configs (`--config`), as `compile` source arguments.
pub fn fixture_and_released_sources() -> Vec<Vec<String>> {
    let mut sources: Vec<Vec<String>> = fixtures()
        .iter()
        .map(|d| vec!["--model".into(), d.to_str().unwrap().into()])
        .collect();
    for c in ["gemma-4-e2b", "gemma-4-e4b", "gemma-4-31b", "gemma-4-26b-a4b"] {
        let p = repo_root().join(format!("tests/configs/{c}.json"));
        sources.push(vec!["--config".into(), p.to_str().unwrap().into()]);
    }
    sources
}

/// `gemma4c compile SOURCE --target TARGET` into a fresh temporary directory (asserted to succeed).
pub fn compile_into_tempdir(source: &[String], target: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut args: Vec<&str> = vec!["compile"];
    args.extend(source.iter().map(String::as_str));
    args.extend(["--target", target, "--out", tmp.path().to_str().unwrap()]);
    let r = gemma4c(&args);
    assert_eq!(r.code, 0, "{source:?} --target {target}: {}", r.stderr);
    tmp
}

/// Runs `gemma4c ARGS` with `stdin` piped in; kills it after `limit`.
pub fn gemma4c_with_stdin(args: &[&str], stdin: &str, limit: Duration) -> CliOutput {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma4c"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gemma4c");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("gemma4c {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("stdout");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    CliOutput {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}
