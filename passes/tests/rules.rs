//! Every fusion rule as text files in `rule_cases/` (one input graph and the graph expected
//! after the rewrite, in the spirit of Cranelift's filetests):
//!
//! ```text
//! // What the case shows.
//! // rules: add_rms_norm, norm_add_norm     (the rules to run)
//! // expect: norm_add_norm                  (or `no norm_add_norm`)
//! graph sandwich { ... }                    (input)
//! // after:
//! graph sandwich { ... }                    (expected, exactly as printed)
//! ```
//!
//! Each case also checks numerically that the reference semantics give bit-identical outputs
//! before and after the rewrite (fused ops are defined as their unfused chains, evaluated in the
//! same order, so equality is exact). `GEMMA4C_BLESS=1` rewrites the expected graphs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gemma4c_ir::{interpret, parse, print, Graph, GraphBuilder, InputRole, Op, Tensor, TensorType};
use gemma4c_passes::fusion::{fuse_with, rules::all_rules, Limits};
use gemma4c_passes::CostModel;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Fuses with the named rules only.
fn fuse(g: &Graph, names: &[&str]) -> Graph {
    let specs: Vec<_> = all_rules().into_iter().filter(|r| names.contains(&r.name)).collect();
    assert_eq!(specs.len(), names.len(), "unknown rule in {names:?}");
    fuse_with(g, &CostModel::cpu(), &Limits::default(), &specs)
        .expect("fusion")
        .0
}

/// Values in [-1, 1) from a generator seeded by the node's name, so before and after the
/// rewrite every input and weight gets the same values.
fn random(n: usize, name: &str) -> Vec<f32> {
    let seed = name
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn run(g: &Graph) -> HashMap<String, Tensor> {
    let mut inputs = HashMap::new();
    let mut weights = HashMap::new();
    for (_, n) in g.nodes() {
        let ty = &n.outputs[0];
        match &n.op {
            Op::Input {
                role: InputRole::Position,
            } => {
                inputs.insert(n.name.clone(), Tensor::i32([1], vec![3]));
            }
            Op::Input { .. } => {
                inputs.insert(
                    n.name.clone(),
                    Tensor::f32(ty.shape.clone(), random(ty.numel(), &n.name)),
                );
            }
            Op::Weight { key } => {
                weights.insert(key.clone(), Tensor::f32(ty.shape.clone(), random(ty.numel(), key)));
            }
            _ => {}
        }
    }
    interpret(g, inputs, &weights, None).expect("evaluates")
}

/// One rule case file, split into its parts.
struct Case {
    path: PathBuf,
    rules: Vec<String>,
    fused_op: String,
    expect_fused: bool,
    input: String,
    expected: String,
}

impl Case {
    fn read(path: &Path) -> Case {
        let text = std::fs::read_to_string(path).expect("rule case");
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("// {key}: ")))
                .unwrap_or_else(|| panic!("{}: no `// {key}:` line", path.display()))
                .to_string()
        };
        let expect = field("expect");
        let (expect_fused, fused_op) = match expect.strip_prefix("no ") {
            Some(op) => (false, op.to_string()),
            None => (true, expect),
        };
        let (input, expected) = text
            .split_once("\n// after:\n")
            .unwrap_or_else(|| panic!("{}: no `// after:` line", path.display()));
        Case {
            path: path.to_path_buf(),
            rules: field("rules").split(", ").map(String::from).collect(),
            fused_op,
            expect_fused,
            input: input.to_string(),
            expected: expected.to_string(),
        }
    }

    /// Runs the case; returns what went wrong.
    fn check(&self) -> Result<(), String> {
        let name = self.path.display();
        let g = parse(&self.input).map_err(|e| format!("{name}: input: {e}"))?;
        let rules: Vec<&str> = self.rules.iter().map(String::as_str).collect();
        let after = fuse(&g, &rules);
        let text = print(&after);
        if text != self.expected {
            if std::env::var_os("GEMMA4C_BLESS").is_some() {
                let blessed = format!("{}\n// after:\n{text}", self.input);
                std::fs::write(&self.path, blessed).map_err(|e| e.to_string())?;
            } else {
                return Err(format!(
                    "{name}: after {} expected\n{}\ngot\n{text}(GEMMA4C_BLESS=1 rewrites the expected graph)",
                    rules.join(", "),
                    self.expected
                ));
            }
        }
        let has = after.nodes().any(|(_, n)| n.op.mnemonic() == self.fused_op);
        if has != self.expect_fused {
            return Err(format!("{name}: `{}` present = {has}", self.fused_op));
        }
        let (a, b) = (run(&g), run(&after));
        if a.len() != b.len() {
            return Err(format!("{name}: {} outputs before, {} after", a.len(), b.len()));
        }
        for (k, v) in &a {
            if Some(v) != b.get(k) {
                return Err(format!("{name}: output `{k}` changed by the rewrite"));
            }
        }
        Ok(())
    }
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rule_cases");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("rule_cases")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "ir"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Case::read(p)).collect()
}

#[test]
fn every_rule_case_rewrites_as_expected_and_keeps_the_numbers() {
    let cases = cases();
    let failures: Vec<String> = cases.iter().filter_map(|c| c.check().err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_rule_has_a_positive_and_a_negative_case() {
    let cases = cases();
    for rule in all_rules() {
        for fused in [true, false] {
            assert!(
                cases.iter().any(|c| c.fused_op == rule.name && c.expect_fused == fused),
                "rule `{}` has no {} case in rule_cases/",
                rule.name,
                if fused { "positive" } else { "negative" }
            );
        }
    }
}

#[test]
fn a_wrong_expectation_is_caught() {
    let mut case = Case::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rule_cases/gelu_mul_positive.ir"));
    case.expected = case.input.clone();
    if std::env::var_os("GEMMA4C_BLESS").is_none() {
        assert!(case.check().unwrap_err().contains("expected"));
    }
    case.expected = print(&fuse(&parse(&case.input).unwrap(), &["gelu_mul"]));
    case.expect_fused = false;
    assert!(case.check().unwrap_err().contains("`gelu_mul` present = true"));
}

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::f32(shape.to_vec())
}

#[test]
fn plan_rejects_reading_a_cache_after_its_in_place_update() {
    use gemma4c_passes::plan::lower;
    let mut b = GraphBuilder::new("stale_cache");
    let cache = b.input("k_cache", InputRole::KvCache, f32t(&[1, 4, 8]));
    let k = b.input("k", InputRole::TokenIds, f32t(&[1, 1, 8]));
    let q = b.input("q", InputRole::TokenIds, f32t(&[1, 2, 8]));
    let pos = b.input("position", InputRole::Position, TensorType::i32([1]));
    let new = b.op(Op::KvWrite, &[cache, k, pos], "k_cache_write").unwrap();
    let attn = Op::Attention {
        window: None,
        scale: 1.0,
    };
    // Attends over the cache as it was before the write: impossible in place.
    let a = b.op(attn, &[q, cache, cache, pos], "attention").unwrap();
    b.output("a", a);
    b.output("k_cache", new);
    let g = b.finish().unwrap();
    let err = lower("decode", 1, &g, &mut Vec::new(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("old version of cache `k_cache`"), "{err}");
}
