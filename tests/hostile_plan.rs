//! A plan directory is untrusted input (issue 13, items 1-4 and 13): every
//! edit of plan.json or kernels.ll gives a clear error naming the step, buffer
//! or file before anything is allocated or run, on both executors. The edits
//! are made in the test on a freshly compiled tiny plan; where the manifest is
//! re-hashed too (a deliberate edit, not corruption), the plan checker alone
//! has to catch it.

mod common;

use std::path::Path;

use common::*;
use gemma4c_frontend::Model;
use gemma4c_passes::plan::Plan;
use gemma4c_runtime::artifact::{Manifest, MANIFEST_FILE};
use gemma4c_runtime::jit::{JitOptions, JitSession};
use gemma4c_runtime::plan_session::check_plan;
use gemma4c_runtime::PlanSession;
use serde_json::{json, Value};

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `compile --target cpu` of tiny_ple into a fresh directory.
fn compiled(extra: &[&str]) -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("tempdir");
    let dir = fixture("tiny_ple");
    let mut args = vec![
        "compile",
        "--model",
        path(&dir),
        "--target",
        "cpu",
        "--out",
        path(out.path()),
    ];
    args.extend_from_slice(extra);
    let r = gemma4c(&args);
    assert_eq!(r.code, 0, "compile failed: {}", r.stderr);
    out
}

fn plan_value(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("plan.json")).expect("plan.json")).expect("json")
}

/// Rewrites the manifest for the files as they are now (a deliberate edit).
fn rehash(dir: &Path) {
    let names = ["plan.json", "kernels.ll", "stats.json"];
    let files: Vec<(&str, Vec<u8>)> = names
        .iter()
        .filter_map(|n| std::fs::read(dir.join(n)).ok().map(|b| (*n, b)))
        .collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    std::fs::write(dir.join(MANIFEST_FILE), Manifest::of(&refs).to_json()).expect("manifest");
}

fn run_plan(dir: &Path, executor: &str) -> CliOutput {
    gemma4c(&[
        "run",
        "--plan",
        path(dir),
        "--prompt-ids",
        "2,17,301",
        "--max-new-tokens",
        "4",
        "--output",
        "ids",
        "--executor",
        executor,
    ])
}

fn assert_clean_error(out: &CliOutput, needles: &[&str]) {
    assert_ne!(out.code, 0, "expected failure, got stdout {}", out.stdout);
    assert!(out.code == 1, "exit {} (a signal?):\n{}", out.code, out.stderr);
    assert!(!out.stderr.contains("panicked"), "panic:\n{}", out.stderr);
    for n in needles {
        assert!(out.stderr.contains(n), "error should mention `{n}`:\n{}", out.stderr);
    }
}

/// Applies `edit` to the plan and expects the plan checker, the reference
/// executor and the JIT executor to refuse it with all of `needles`.
fn refused(base: &Value, model: &Model, ll: &str, what: &str, edit: impl Fn(&mut Value), needles: &[&str]) {
    let mut v = base.clone();
    edit(&mut v);
    let plan: Plan = match serde_json::from_value(v) {
        Ok(p) => p,
        Err(e) => panic!("{what}: the edit does not deserialize: {e}"),
    };
    let e = check_plan(&plan).expect_err(what).to_string();
    for n in needles {
        assert!(e.contains(n), "{what}: error should mention `{n}`: {e}");
    }
    let r = PlanSession::new(plan.clone(), model)
        .err()
        .unwrap_or_else(|| panic!("{what}: reference accepted it"));
    assert!(r.to_string().contains(needles[0]), "{what}: {r}");
    let j = JitSession::new(plan, model, ll, &JitOptions::default())
        .err()
        .unwrap_or_else(|| panic!("{what}: JIT accepted it"));
    assert!(j.to_string().contains(needles[0]), "{what}: {j}");
}

fn decode(v: &mut Value) -> &mut Value {
    &mut v["programs"][0]
}

/// Index of the first buffer of the decode program matching `pred`.
fn find_buffer(v: &Value, pred: impl Fn(&Value) -> bool) -> usize {
    v["programs"][0]["buffers"]
        .as_array()
        .expect("buffers")
        .iter()
        .position(pred)
        .expect("buffer")
}

#[test]
fn edited_plans_are_refused_before_anything_runs() {
    let out = compiled(&[]);
    let base = plan_value(out.path());
    let model = Model::open(&fixture("tiny_ple")).expect("model");
    let ll = std::fs::read_to_string(out.path().join("kernels.ll")).expect("kernels.ll");
    let unedited: Plan = serde_json::from_value(base.clone()).expect("plan");
    unedited.check().expect("a compiled plan passes the checker");
    let act = |b: &Value| b["kind"]["kind"] == "activation" && b["lifetime"].is_array();
    let a = find_buffer(&base, act);
    let r = |what: &str, edit: &dyn Fn(&mut Value), needles: &[&str]| refused(&base, &model, &ll, what, edit, needles);

    // Item 1: sizes are recomputed, never trusted.
    r(
        "state bytes shrunk",
        &|v| v["state"][4]["bytes"] = json!(64),
        &["state[4]", "bytes"],
    );
    r(
        "state shape shrunk",
        &|v| v["state"][0]["shape"] = json!([2, 1, 32]),
        &["state"],
    );
    r(
        "activation past the arena",
        &|v| decode(v)["buffers"][a]["kind"]["offset"] = json!(1 << 20),
        &[&format!("buffer {a}"), "outside the arena"],
    );
    // Item 13: an undersized arena is reported as such, not as an overlap.
    r(
        "small arena",
        &|v| decode(v)["arena_bytes"] = json!(64),
        &["outside the arena"],
    );
    // Item 3: out-of-range fields.
    let w = find_buffer(&base, |b| b["kind"]["kind"] == "weight");
    r(
        "weight index",
        &|v| decode(v)["buffers"][w]["kind"]["index"] = json!(99999),
        &["weight index 99999 is out of range"],
    );
    let s = find_buffer(&base, |b| b["kind"]["kind"] == "state");
    r(
        "state index",
        &|v| decode(v)["buffers"][s]["kind"]["index"] = json!(99999),
        &["state index 99999 is out of range"],
    );
    let i = find_buffer(&base, |b| b["kind"]["kind"] == "input");
    r(
        "input name",
        &|v| decode(v)["buffers"][i]["kind"]["name"] = json!("bogus"),
        &["unknown input `bogus`"],
    );
    let view = find_buffer(&base, |b| b["kind"]["kind"] == "view");
    r(
        "view target",
        &|v| decode(v)["buffers"][view]["kind"]["of"] = json!(99999),
        &["a view must be of an earlier buffer"],
    );
    r(
        "step operand",
        &|v| decode(v)["steps"][3]["inputs"][0] = json!(99999),
        &["step 3", "out of range"],
    );
    r(
        "huge vocabulary",
        &|v| v["model"]["vocab_size"] = json!(u64::MAX),
        &["logits", "vocab_size"],
    );
    r(
        "i32 activation",
        &|v| decode(v)["buffers"][a]["dtype"] = json!("i32"),
        &["computes f32"],
    );
    r(
        "huge arena",
        &|v| decode(v)["arena_bytes"] = json!(1u64 << 60),
        &["arena", "memory"],
    );
    r(
        "rope head_dim",
        &|v| {
            let steps = decode(v)["steps"].as_array_mut().expect("steps");
            let rope = steps
                .iter_mut()
                .find(|s| s["op"]["rope"].is_object())
                .expect("a step with a rope");
            rope["op"]["rope"]["head_dim"] = json!(16);
        },
        &["rope built for head_dim 16"],
    );
    // Item 4: corruptions that ran with wrong tokens.
    r(
        "overlapping live buffers",
        &|v| {
            // Two consecutive activations alive together: put the second on the first.
            let bufs = decode(v)["buffers"].as_array_mut().expect("buffers");
            let (b2, b3) = (2, 3);
            let off = bufs[b2]["kind"]["offset"].clone();
            assert!(bufs[b3]["kind"]["kind"] == "activation");
            bufs[b3]["kind"]["offset"] = off;
        },
        &["overlap"],
    );
    r(
        "removed step",
        &|v| {
            decode(v)["steps"].as_array_mut().expect("steps").remove(1);
        },
        &["before any step writes it"],
    );
    r(
        "swapped steps",
        &|v| decode(v)["steps"].as_array_mut().expect("steps").swap(0, 1),
        &["before any step writes it"],
    );
    r(
        "prefill seq_len",
        &|v| v["programs"][1]["seq_len"] = json!(4),
        &["seq_len 4"],
    );
    r(
        "context beyond the caches",
        &|v| v["model"]["max_context"] = json!(100000),
        &["cache", "max_context"],
    );
    r(
        "unknown target",
        &|v| v["target"] = json!("bogus"),
        &["unknown target `bogus`"],
    );
    r(
        "lifetime edited",
        &|v| decode(v)["buffers"][a]["lifetime"] = json!([0, 0]),
        &["recorded lifetime"],
    );
}

#[test]
fn edited_files_fail_their_hash_and_the_cli_exits_1() {
    let out = compiled(&[]);
    let dir = out.path();
    let plan = dir.join("plan.json");
    let original = std::fs::read_to_string(&plan).expect("plan");
    // Two weight keys swapped: same shapes, so only the hash can tell.
    let mut v: Value = serde_json::from_str(&original).expect("json");
    let weights = v["weights"].as_array_mut().expect("weights");
    let k0 = weights[0]["key"].clone();
    weights[0]["key"] = weights[1]["key"].clone();
    weights[1]["key"] = k0;
    std::fs::write(&plan, serde_json::to_string_pretty(&v).expect("json")).expect("write");
    for ex in ["jit", "reference"] {
        assert_clean_error(&run_plan(dir, ex), &["plan.json", "changed since compile"]);
    }
    // A deliberate edit with a new hash still meets the checker (exit 1, no signal).
    let mut v: Value = serde_json::from_str(&original).expect("json");
    v["state"][4]["bytes"] = json!(64);
    std::fs::write(&plan, serde_json::to_string_pretty(&v).expect("json")).expect("write");
    rehash(dir);
    for ex in ["jit", "reference"] {
        assert_clean_error(&run_plan(dir, ex), &["plan.json", "state[4]"]);
    }
    std::fs::write(&plan, &original).expect("restore");
    rehash(dir);
    assert_eq!(run_plan(dir, "jit").code, 0);
    // A missing manifest (a plan from an older gemma4c) says to recompile.
    std::fs::remove_file(dir.join(MANIFEST_FILE)).expect("rm");
    assert_clean_error(&run_plan(dir, "jit"), &["manifest.json", "recompile"]);
}

/// Item 2: kernels.ll is checked against the plan, not trusted.
#[test]
fn edited_kernels_are_refused() {
    let out = compiled(&[]);
    let dir = out.path();
    let ll_path = dir.join("kernels.ll");
    let original = std::fs::read_to_string(&ll_path).expect("kernels.ll");
    let define = original.find("define void @matmul").expect("a matmul kernel");
    let name_end = define + original[define..].find('(').expect("(");
    let name = &original[define + "define void @".len()..name_end];
    let body_end = define + original[define..].find("\n}\n").expect("end") + 3;

    // A no-op body: same signature; only the hash catches it.
    let noop = format!(
        "{}{}{}",
        &original[..define],
        original[define..body_end]
            .split_once('{')
            .map(|(head, _)| format!("{head}{{\n  ret void\n}}\n"))
            .expect("head"),
        &original[body_end..]
    );
    std::fs::write(&ll_path, &noop).expect("write");
    assert_clean_error(&run_plan(dir, "jit"), &["kernels.ll", "changed since compile"]);

    // Another signature, re-hashed: the function type is checked.
    let wrong = format!(
        "{}define void @{name}(ptr %a, i64 %b, i64 %e) {{\n  ret void\n}}\n{}",
        &original[..define],
        &original[body_end..]
    );
    std::fs::write(&ll_path, &wrong).expect("write");
    rehash(dir);
    assert_clean_error(&run_plan(dir, "jit"), &[name, "takes 1 buffers"]);
    let wrong_ty = format!(
        "{}define i32 @{name}(i32 %a) {{\n  ret i32 0\n}}\n{}",
        &original[..define],
        &original[body_end..]
    );
    std::fs::write(&ll_path, &wrong_ty).expect("write");
    rehash(dir);
    assert_clean_error(&run_plan(dir, "jit"), &[name, "void (ptr..., i64, i64)"]);

    // A call to an undeclared external symbol fails before anything runs.
    let external = original.replacen("define void @", "declare void @system(ptr)\n\ndefine void @", 1);
    std::fs::write(&ll_path, &external).expect("write");
    rehash(dir);
    assert_clean_error(&run_plan(dir, "jit"), &["declares `system`"]);
}

/// Item 12: five concurrent compiles into one directory leave one compile's
/// complete, consistent output.
#[test]
fn concurrent_compiles_never_mix_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("out");
    let fixtures = ["tiny_ple", "tiny_moe", "tiny_dense_kv", "tiny_ple", "tiny_moe"];
    let children: Vec<_> = fixtures
        .iter()
        .map(|f| {
            std::process::Command::new(env!("CARGO_BIN_EXE_gemma4c"))
                .args([
                    "compile",
                    "--model",
                    path(&fixture(f)),
                    "--target",
                    "cpu",
                    "--out",
                    path(&out),
                ])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().expect("wait");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // The manifest matches every file, so they come from one compile ...
    let ok = run_plan(&out, "jit");
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    // ... and no staging directories are left behind.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["out"]);
}

#[test]
fn compile_will_not_replace_a_foreign_directory() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("notes.txt"), "mine").expect("write");
    let r = gemma4c(&[
        "compile",
        "--model",
        path(&fixture("tiny_ple")),
        "--target",
        "cpu",
        "--out",
        path(tmp.path()),
    ]);
    assert_clean_error(&r, &["not a gemma4c artifact"]);
    assert!(tmp.path().join("notes.txt").exists());
}

/// The checker accepts what the compiler produces, for every released config.
#[test]
fn released_config_plans_pass_the_checker() {
    for entry in std::fs::read_dir(repo_root().join("tests/configs")).expect("configs") {
        let config = entry.expect("entry").path();
        let out = tempfile::tempdir().expect("tmp");
        let r = gemma4c(&[
            "compile",
            "--config",
            path(&config),
            "--target",
            "cpu",
            "--out",
            path(out.path()),
        ]);
        assert_eq!(r.code, 0, "{}: {}", config.display(), r.stderr);
        let plan: Plan = serde_json::from_value(plan_value(out.path())).expect("plan");
        plan.check().unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    }
}
