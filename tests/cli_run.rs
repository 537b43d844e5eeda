//! `gemma4c run` behaviour beyond greedy ids: text prompts through the
//! tokenizer, streamed text, seeded sampling, EOS handling.

mod common;

use common::*;
use gemma4c_runtime::tokenizer::Tokenizer;

fn meta(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("reference_meta.json")).expect("meta")).expect("json")
}

#[test]
fn text_prompt_is_tokenized_with_bos_like_hf() {
    let dir = fixture("tiny_ple_long");
    let m = meta(&dir);
    let text = m["prompt_text"]
        .as_str()
        .expect("prompt_text recorded by the generator");
    let r = Reference::load(&dir);
    let out = gemma4c(&[
        "run",
        "--model",
        dir.to_str().expect("utf-8"),
        "--prompt",
        text,
        "--max-new-tokens",
        &r.generated().len().to_string(),
        "--output",
        "ids",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want: Vec<String> = r.generated().iter().map(u32::to_string).collect();
    assert_eq!(out.stdout.trim(), want.join(" "));
    // And the tokenizer itself gives HF's prompt ids (BOS added once).
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).expect("tokenizer");
    assert_eq!(tok.encode(text, Some(2)).expect("encode"), r.prompt());
}

#[test]
fn streamed_text_equals_decoding_the_generated_ids() {
    let dir = fixture("tiny_ple");
    let r = Reference::load(&dir);
    let args = |output: &'static str| {
        vec![
            "run".to_string(),
            "--model".into(),
            dir.display().to_string(),
            "--prompt-ids".into(),
            ids_csv(&r.prompt()),
            "--max-new-tokens".into(),
            "12".into(),
            "--output".into(),
            output.into(),
        ]
    };
    let text_args = args("text");
    let out = gemma4c(&text_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).expect("tokenizer");
    let want = tok.decode(&r.generated()).expect("decode");
    assert_eq!(out.stdout.trim_end_matches('\n'), want);
}

#[test]
fn seeded_sampling_is_reproducible_and_seed_dependent() {
    let dir = fixture("tiny_moe");
    let run = |seed: &str| {
        let out = gemma4c(&[
            "run",
            "--model",
            dir.to_str().expect("utf-8"),
            "--prompt-ids",
            "2,17,301",
            "--max-new-tokens",
            "16",
            "--temperature",
            "1.5",
            "--top-k",
            "50",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--output",
            "ids",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    assert_eq!(run("7"), run("7"), "same seed, same tokens");
    let distinct: std::collections::BTreeSet<String> = ["1", "2", "3", "4"].iter().map(|s| run(s)).collect();
    assert!(
        distinct.len() > 1,
        "four seeds gave identical samples at temperature 1.5"
    );
}

#[test]
fn generation_stops_at_eos() {
    // Make the first greedy token an EOS id via generation_config.json: the run
    // must stop after emitting it.
    let src = fixture("tiny_dense_kv");
    let r = Reference::load(&src);
    let tmp = tempfile::tempdir().expect("tmp");
    for e in std::fs::read_dir(&src).expect("dir") {
        let p = e.expect("entry").path();
        std::fs::copy(&p, tmp.path().join(p.file_name().expect("name"))).expect("copy");
    }
    let first = r.generated()[0];
    std::fs::write(
        tmp.path().join("generation_config.json"),
        format!("{{\"eos_token_id\": [1, {first}]}}"),
    )
    .expect("write");
    let out = gemma4c(&[
        "run",
        "--model",
        tmp.path().to_str().expect("utf-8"),
        "--prompt-ids",
        &ids_csv(&r.prompt()),
        "--max-new-tokens",
        "12",
        "--output",
        "ids",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), first.to_string());
}

/// `run --chat` renders the prompt with the chat template and greedy-decodes
/// exactly the first turn of the transformers conversation in
/// tests/fixtures/chat/reference.json; stdout is the decoded reply.
#[test]
fn run_chat_matches_the_transformers_first_turn() {
    let dir = fixture("tiny_ple");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("chat").join("reference.json")).expect("reference.json"))
            .expect("json");
    let c = &r["conversation"];
    let turn = &c["turns"][0];
    let template = fixture("chat").join("gemma4_chat_template.jinja");
    let n = c["max_new_tokens"].to_string();
    let base = [
        "run",
        "--model",
        dir.to_str().expect("utf-8"),
        "--chat",
        "--chat-template",
        template.to_str().expect("utf-8"),
        "--system",
        c["system"].as_str().expect("system"),
        "--prompt",
        turn["user"].as_str().expect("user"),
        "--max-new-tokens",
        &n,
    ];
    let ids = gemma4c(&[&base[..], &["--output", "ids"]].concat());
    assert_eq!(ids.code, 0, "{}", ids.stderr);
    let want: Vec<String> = turn["generated"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(ids.stdout.trim(), want.join(" "));
    // Timings on stderr, like llama.cpp.
    assert!(ids.stderr.contains("prompt eval"), "{}", ids.stderr);
    assert!(
        ids.stderr.contains(&format!(
            "/ {:>5} tokens",
            turn["new_ids"].as_array().expect("ids").len()
        )),
        "{}",
        ids.stderr
    );
    let text = gemma4c(&[&base[..], &["--quiet"]].concat());
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert_eq!(
        text.stdout.strip_suffix('\n').expect("newline"),
        turn["reply"].as_str().expect("reply")
    );
    assert!(!text.stderr.contains("prompt eval"), "{}", text.stderr);
    // A stop string made of the reply's later text cuts it there, streamed or not.
    let reply = turn["reply"].as_str().expect("reply");
    let cut = reply.char_indices().nth(3).expect("long reply").0;
    let stopped = gemma4c(&[&base[..], &["--quiet", "--stop", &reply[cut..]]].concat());
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
    assert_eq!(stopped.stdout.strip_suffix('\n').expect("newline"), &reply[..cut]);
}

#[test]
fn run_chat_without_a_template_says_how_to_give_one() {
    let dir = fixture("tiny_ple");
    let out = gemma4c(&[
        "run",
        "--model",
        dir.to_str().expect("utf-8"),
        "--chat",
        "--prompt",
        "hi",
    ]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--chat-template"), "{}", out.stderr);
    let out = gemma4c(&[
        "run",
        "--model",
        dir.to_str().expect("utf-8"),
        "--system",
        "x",
        "--prompt",
        "hi",
    ]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("need --chat"), "{}", out.stderr);
}
