//! The IR of the released configs (built from config alone) and snapshots of the
//! tiny fixtures' graphs.

mod common;

use common::*;
use gemma4c_frontend::{build, BuildOptions, Gemma4Config};
use gemma4c_ir::{print, verify, Graph, InputRole, Op};

fn config(name: &str) -> Gemma4Config {
    Gemma4Config::from_file(&repo_root().join("tests/configs").join(name)).expect("config")
}

fn decode_graph(cfg: &Gemma4Config) -> Graph {
    let opts = BuildOptions::new(cfg, 1, cfg.max_position_embeddings, 1);
    build(cfg, &opts, &|_| cfg.dtype).expect("graph builds and verifies")
}

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.nodes().filter(|(_, n)| pred(&n.op)).count()
}

#[test]
fn released_configs_build_from_config_alone() {
    // (file, layers, cache-owning layers, K=V layers, experts layers)
    let cases = [
        ("gemma-4-e2b.json", 35, 15, 0, 0),
        ("gemma-4-e4b.json", 42, 24, 0, 0),
        ("gemma-4-31b.json", 60, 60, 10, 0),
        ("gemma-4-26b-a4b.json", 30, 30, 5, 30),
    ];
    for (file, layers, cached, k_eq_v, moe) in cases {
        let cfg = config(file);
        assert_eq!(cfg.num_hidden_layers, layers, "{file}");
        let g = decode_graph(&cfg);
        verify(&g).expect("verifies");
        let caches = count(&g, |op| {
            matches!(
                op,
                Op::Input {
                    role: InputRole::KvCache
                }
            )
        });
        assert_eq!(caches, 2 * cached, "{file}: K and V cache per cache-owning layer");
        assert_eq!(count(&g, |op| matches!(op, Op::KvWrite)), 2 * cached, "{file}");
        assert_eq!(count(&g, |op| matches!(op, Op::Attention { .. })), layers, "{file}");
        assert_eq!(cfg.layers.iter().filter(|l| l.k_eq_v).count(), k_eq_v, "{file}");
        assert_eq!(count(&g, |op| matches!(op, Op::MoeExperts)), moe, "{file}");
        // Attention scale is 1.0 everywhere; full layers use proportional RoPE
        // over 64 of 256 pairs with the 512 head dim in the exponent.
        for (_, n) in g.nodes() {
            match &n.op {
                Op::Attention { scale, .. } => assert_eq!(*scale, 1.0, "{file} {}", n.name),
                Op::Rope { rope } if rope.head_dim == 512 => {
                    assert_eq!((rope.rotated_pairs, rope.theta), (64, 1e6), "{file} {}", n.name)
                }
                Op::Rope { rope } => assert_eq!((rope.rotated_pairs, rope.theta), (128, 1e4), "{file} {}", n.name),
                _ => {}
            }
        }
    }
}

#[test]
fn kv_sharing_donors_of_released_configs() {
    let e2b = config("gemma-4-e2b.json");
    for l in &e2b.layers[15..] {
        let want = if l.layer_type == gemma4c_frontend::LayerType::Full {
            14
        } else {
            13
        };
        assert_eq!(l.kv_source, want, "E2B layer {}", l.index);
        assert_eq!(l.mlp_width, 12288, "E2B double-wide MLP on consumer {}", l.index);
    }
    assert!(e2b.layers[..15].iter().all(|l| !l.shares_kv() && l.mlp_width == 6144));
    let e4b = config("gemma-4-e4b.json");
    for l in &e4b.layers[24..] {
        let want = if l.layer_type == gemma4c_frontend::LayerType::Full {
            23
        } else {
            22
        };
        assert_eq!(l.kv_source, want, "E4B layer {}", l.index);
        assert_eq!(l.mlp_width, 10240);
    }
    let g = decode_graph(&e4b);
    let text = print(&g);
    // Consumer layer 41 (full) attends over layer 23's written caches.
    let k23 = g.find("layers.23.self_attn.k_cache_write").expect("layer 23 writes K");
    let att41 = g.find("layers.41.self_attn.attention").expect("layer 41 attends");
    assert_eq!(g.operands(att41)[1].node, k23, "layer 41 reads layer 23's K cache");
    assert!(!text.contains("layers.41.self_attn.k_proj"));
}

#[test]
fn released_geometry_and_scales() {
    let c31 = config("gemma-4-31b.json");
    let full = c31
        .layers
        .iter()
        .find(|l| l.layer_type == gemma4c_frontend::LayerType::Full)
        .expect("full layer");
    assert_eq!((full.head_dim, full.num_kv_heads, full.k_eq_v), (512, 4, true));
    assert_eq!((c31.layers[0].head_dim, c31.layers[0].num_kv_heads), (256, 16));
    let c26 = config("gemma-4-26b-a4b.json");
    let full = &c26.layers[5];
    assert_eq!((full.head_dim, full.num_kv_heads, full.k_eq_v), (512, 2, true));
    // Embedding scale sqrt(H) in the activation dtype: bf16 39.25 / 50.5 / 73.5 / 53.0,
    // f32 sqrt(H) as is.
    for (file, bf16, f32) in [
        ("gemma-4-e2b.json", "39.25", "39.191837"),
        ("gemma-4-e4b.json", "50.5", "50.596443"),
        ("gemma-4-31b.json", "73.5", "73.32121"),
        ("gemma-4-26b-a4b.json", "53.0", "53.065998"),
    ] {
        let cfg = config(file);
        let mut opts = BuildOptions::new(&cfg, 1, 64, 1);
        let f32_text = print(&build(&cfg, &opts, &|_| cfg.dtype).expect("builds"));
        opts.activation_dtype = gemma4c_ir::DType::BF16;
        let bf16_text = print(&build(&cfg, &opts, &|_| cfg.dtype).expect("builds"));
        let line = |text: &str| {
            text.lines()
                .find(|l| l.ends_with("# embed_tokens.scale"))
                .expect("scale node")
                .to_string()
        };
        assert!(
            line(&bf16_text).contains(&format!("scale[factor={bf16}](")),
            "{file}: {}",
            line(&bf16_text)
        );
        assert!(
            line(&f32_text).contains(&format!("scale[factor={f32}")),
            "{file}: {}",
            line(&f32_text)
        );
    }
}

#[test]
fn ir_cli_works_for_released_configs() {
    for file in [
        "gemma-4-e2b.json",
        "gemma-4-e4b.json",
        "gemma-4-31b.json",
        "gemma-4-26b-a4b.json",
    ] {
        let path = repo_root().join("tests/configs").join(file);
        let out = gemma4c(&["ir", "--config", path.to_str().expect("utf-8")]);
        assert_eq!(out.code, 0, "{file}: {}", out.stderr);
        assert!(out.stdout.starts_with("graph gemma4_decode {"), "{file}");
        assert!(out.stdout.contains("output logits = %"), "{file}");
        let prefill = gemma4c(&["ir", "--config", path.to_str().expect("utf-8"), "--prefill", "16"]);
        assert_eq!(prefill.code, 0, "{file}: {}", prefill.stderr);
        assert!(prefill.stdout.starts_with("graph gemma4_prefill_16 {"));
    }
}

#[test]
fn text_form_is_deterministic_and_survives_serde() {
    let cfg = config("gemma-4-26b-a4b.json");
    let a = print(&decode_graph(&cfg));
    let b = print(&decode_graph(&cfg));
    assert_eq!(a, b);
    let g = decode_graph(&cfg);
    let back = Graph::from_json(&g.to_json()).expect("round trip");
    verify(&back).expect("deserialized graph verifies");
    assert_eq!(print(&back), a);
}

#[test]
fn tiny_fixture_graph_snapshots() {
    for name in ["tiny_ple", "tiny_moe"] {
        let dir = fixture(name);
        for (suffix, extra) in [("decode", vec![]), ("prefill4", vec!["--prefill", "4"])] {
            let mut args = vec!["ir", "--model", dir.to_str().expect("utf-8"), "--max-context", "32"];
            args.extend(extra);
            let out = gemma4c(&args);
            assert_eq!(out.code, 0, "{name}: {}", out.stderr);
            insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
                insta::assert_snapshot!(format!("ir_{name}_{suffix}"), out.stdout);
            });
        }
    }
}

/// `parse(print(g))` prints as `g` for `g` before and after fusion (so every fused op is
/// covered too); the parser re-infers every type and verifies the graph.
fn assert_round_trip(g: &Graph, what: &str) {
    let fused = gemma4c_passes::fuse(g, &gemma4c_passes::CostModel::cpu(), &Default::default())
        .expect("fuses")
        .0;
    for g in [g, &fused] {
        let text = print(g);
        let back = gemma4c_ir::parse(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(back.node_count(), g.node_count(), "{what}");
        assert!(
            print(&back) == text,
            "{what}: printing the parsed graph changes the text"
        );
    }
}

#[test]
fn text_form_parses_back_for_every_fixture_and_released_config() {
    let fixtures = std::fs::read_dir(repo_root().join("tests/fixtures")).expect("fixtures");
    let mut seen = 0;
    for entry in fixtures {
        let dir = entry.expect("entry").path();
        if !dir.join("config.json").exists() {
            continue;
        }
        let model = gemma4c_frontend::Model::open(&dir).expect("fixture opens");
        for seq in [1, 4] {
            let opts = BuildOptions::new(&model.config, seq, 32, seq);
            let g = model.graph(&opts).expect("graph");
            assert_round_trip(&g, &format!("{} seq {seq}", dir.display()));
        }
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} fixtures found");
    for file in [
        "gemma-4-e2b.json",
        "gemma-4-e4b.json",
        "gemma-4-31b.json",
        "gemma-4-26b-a4b.json",
    ] {
        assert_round_trip(&decode_graph(&config(file)), file);
    }
}

#[test]
fn bad_text_graphs_name_the_line() {
    let ok = "graph g {\n  %0 = input[position] : i32[1]  # position\n  output p = %0\n}\n";
    assert!(gemma4c_ir::parse(ok).is_ok());
    for (text, line, what) in [
        ("", 1, "empty"),
        (
            "graph g {\n  %1 = input[position] : i32[1]  # p\n}\n",
            2,
            "expected node %0",
        ),
        (
            "graph g {\n  %0 = input[position] : i32[1]  # p\n  %1 = frob(%0) : i32[1]  # f\n}\n",
            3,
            "unknown op `frob`",
        ),
        (
            "graph g {\n  %0 = input[position] : i32[1]  # p\n  %1 = scale[factor=2.0](%0) : f32[1]  # s\n}\n",
            3,
            "scale",
        ),
        (
            "graph g {\n  %0 = input[position] : i32[1]  # p\n  output x = %4\n}\n",
            3,
            "not defined",
        ),
        ("graph g {\n  %0 = input[position] : i32[1]  # p\n", 2, "closing"),
        ("graph g {\n  %0 = rms_norm[eps=x] : f32[1]  # n\n}\n", 2, "eps"),
    ] {
        let e = gemma4c_ir::parse(text)
            .err()
            .unwrap_or_else(|| panic!("{what}: parsed"));
        assert_eq!(e.line, line, "{what}: {e}");
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
}
