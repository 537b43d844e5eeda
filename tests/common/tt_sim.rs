//! Helpers of the Tenstorrent simulator tests: the simulator's venv, compiling a fixture for a
//! TT target, running `OUT/run.py` under `tt-lang-sim` and reading the ids it prints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::{gemma4c, ids_csv, repo_root};

/// The simulator venv: `$GEMMA4C_SIM_VENV`, else the one `tools/setup_sim_venv.sh` made.
pub fn sim_venv(test: &str) -> Option<PathBuf> {
    if let Ok(v) = std::env::var("GEMMA4C_SIM_VENV") {
        return Some(PathBuf::from(v));
    }
    let out = Command::new("bash")
        .arg(repo_root().join("tools/setup_sim_venv.sh"))
        .arg("--check")
        .output()
        .expect("run tools/setup_sim_venv.sh --check");
    if out.status.success() {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return Some(PathBuf::from(path));
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: the simulator venv is missing under CI (scripts/setup.sh creates it)");
    }
    eprintln!("SKIPPED {test}: no simulator venv (run tools/setup_sim_venv.sh, or set GEMMA4C_SIM_VENV)");
    None
}

/// tests/fixtures/odd_dims/*: head_dim 16/40/48, windows 3/7/9, hidden 80/100/112, vocab 520/530.
pub fn odd_dim_fixtures() -> Vec<PathBuf> {
    let dir = repo_root().join("tests/fixtures/odd_dims");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("reference.safetensors").exists())
        .collect();
    out.sort();
    assert_eq!(out.len(), 3, "odd_dims fixtures: {out:?}");
    out
}

/// `gemma4c compile --target tt-p300 --out OUT ARGS...`, asserting success.
pub fn compile_tt(args: &[&str], out: &Path) {
    compile_tt_for("tt-p300", args, out);
}

/// `gemma4c compile --target TARGET --out OUT ARGS...`, asserting success.
pub fn compile_tt_for(target: &str, args: &[&str], out: &Path) {
    let mut all = vec![
        "compile",
        "--target",
        target,
        "--out",
        out.to_str().expect("utf-8 path"),
    ];
    all.extend_from_slice(args);
    let r = gemma4c(&all);
    assert_eq!(r.code, 0, "gemma4c {all:?}: {}", r.stderr);
}

pub fn spawn_sim(venv: &Path, artifact: &Path, prompt: &[u32], new_tokens: usize, extra: &[&str]) -> Child {
    Command::new(venv.join("bin/tt-lang-sim"))
        .arg(artifact.join("run.py"))
        .args([
            "--prompt-ids",
            &ids_csv(prompt),
            "--max-new-tokens",
            &new_tokens.to_string(),
        ])
        .args(extra)
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tt-lang-sim")
}

pub fn last_line_ids(out: &std::process::Output, what: &str) -> Vec<u32> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: tt-lang-sim failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or("");
    last.split_whitespace()
        .map(|t| {
            t.parse()
                .unwrap_or_else(|_| panic!("{what}: last line is not ids: {last}"))
        })
        .collect()
}
