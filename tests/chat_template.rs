//! Chat templates and multi-turn token bookkeeping against transformers:
//! tests/fixtures/chat/reference.json is written by tools/make_chat_reference.py
//! (`apply_chat_template` with the test templates, on the tiny_ple tokenizer).

mod common;

use common::*;
use gemma4c_frontend::gguf::write::GgufWriter;
use gemma4c_frontend::gguf::{type_id, MetaArray, MetaValue};
use gemma4c_runtime::chat_template::{ChatTemplate, Message, RenderOptions, SpecialTokens};
use gemma4c_runtime::conversation::Conversation;
use gemma4c_runtime::tokenizer::Tokenizer;
use serde_json::Value;

fn reference() -> Value {
    let path = fixture("chat").join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("reference.json")).expect("json")
}

fn special() -> SpecialTokens {
    SpecialTokens {
        bos: "<bos>".into(),
        eos: "<eos>".into(),
    }
}

fn template(name: &str) -> ChatTemplate {
    let path = fixture("chat").join(format!("{name}_chat_template.jinja"));
    ChatTemplate::from_file(&path, special()).expect("template")
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(&fixture("tiny_ple").join("tokenizer.json")).expect("tokenizer")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).expect("messages")
}

#[test]
fn renderings_and_ids_equal_transformers_apply_chat_template() {
    let r = reference();
    let tok = tokenizer();
    let cases = r["renders"].as_array().expect("renders");
    assert!(cases.len() >= 10);
    for case in cases {
        let tpl = template(case["template"].as_str().expect("name"));
        let opts = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().expect("bool"),
            enable_thinking: case["enable_thinking"].as_bool().expect("bool"),
        };
        let text = tpl.render(&messages(&case["messages"]), opts).expect("render");
        assert_eq!(text, case["text"].as_str().expect("text"), "{case}");
        assert_eq!(tok.encode(&text, None).expect("encode"), ids(&case["ids"]), "{case}");
    }
}

#[test]
fn three_turn_conversation_feeds_the_same_new_tokens_as_the_reference() {
    let r = reference();
    let c = &r["conversation"];
    let tok = tokenizer();
    let tpl = template("gemma4");
    let mut conv = Conversation::new(&tpl, &tok, c["system"].as_str(), false);
    // The cache holds every fed id; the last sampled id of a reply is fed
    // first on the next turn.
    let mut cache: Vec<u32> = Vec::new();
    let mut pending: Option<u32> = None;
    for turn in c["turns"].as_array().expect("turns") {
        let fed = conv.user_turn(turn["user"].as_str().expect("user")).expect("turn");
        let want: Vec<u32> = pending.into_iter().chain(ids(&turn["new_ids"])).collect();
        assert_eq!(fed, want, "{}", turn["new_text"]);
        let generated = ids(&turn["generated"]);
        cache.extend_from_slice(&fed);
        cache.extend_from_slice(&generated[..generated.len() - 1]);
        pending = generated.last().copied();
        conv.model_reply(&generated, turn["reply"].as_str().expect("reply"));
    }
    cache.extend(pending);
    assert_eq!(cache, ids(&c["all_ids"]));
    // /reset starts over with the whole rendering.
    conv.reset();
    let first = &c["turns"][0];
    assert_eq!(
        conv.user_turn(first["user"].as_str().expect("user")).expect("turn"),
        ids(&first["new_ids"])
    );
}

#[test]
fn template_errors_name_the_template() {
    // Gemma 3 rejects non-alternating roles with raise_exception.
    let tpl = template("gemma3");
    let msgs = [Message::new("user", "a"), Message::new("user", "b")];
    let err = tpl
        .render(&msgs, RenderOptions::default())
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("Conversation roles must alternate"), "{err}");
    assert!(err.contains("gemma3_chat_template.jinja"), "{err}");
    // A syntax error names the source.
    let err = ChatTemplate::new("{% for %}", "GGUF tokenizer.chat_template", special())
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("GGUF tokenizer.chat_template"), "{err}");
    assert!(tpl.render(&[], RenderOptions::default()).is_err());
}

#[test]
fn template_is_found_in_a_checkpoint_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(ChatTemplate::from_model_dir(dir.path()).expect("ok").is_none());
    let cfg = serde_json::json!({
        "bos_token": {"content": "<bos>"},
        "eos_token": "<eos>",
        "chat_template": "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m.role }}\n{{ m.content }}<end_of_turn>\n{% endfor %}",
    });
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).expect("write");
    let tpl = ChatTemplate::from_model_dir(dir.path()).expect("ok").expect("found");
    let msgs = [Message::new("user", "hi")];
    assert_eq!(
        tpl.render(&msgs, RenderOptions::default()).expect("render"),
        "<bos><start_of_turn>user\nhi<end_of_turn>\n"
    );
    assert_eq!(tpl.end_of_turn_markers(), vec!["<end_of_turn>"]);
    // chat_template.jinja wins over the config field.
    let g4 = std::fs::read_to_string(fixture("chat").join("gemma4_chat_template.jinja")).expect("read");
    std::fs::write(dir.path().join("chat_template.jinja"), g4).expect("write");
    let tpl = ChatTemplate::from_model_dir(dir.path()).expect("ok").expect("found");
    assert!(tpl.origin().ends_with("chat_template.jinja"));
    assert_eq!(tpl.end_of_turn_markers(), vec!["<turn|>"]);
    assert_eq!(
        tpl.render(&msgs, RenderOptions::default()).expect("render"),
        "<bos><|turn>user\nhi<turn|>\n"
    );
    // A malformed config is an error naming it.
    std::fs::remove_file(dir.path().join("chat_template.jinja")).expect("rm");
    std::fs::write(dir.path().join("tokenizer_config.json"), "{ nope").expect("write");
    let err = ChatTemplate::from_model_dir(dir.path())
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("tokenizer_config.json"), "{err}");
}

/// A GGUF file holding only the metadata a chat template needs.
fn gguf_with(template: Option<MetaValue>) -> (tempfile::TempDir, gemma4c_frontend::gguf::GgufFile) {
    let tokens = ["<pad>", "<eos>", "<bos>", "<unk>"].map(|t| MetaValue::String(t.into()));
    let mut w = GgufWriter::new();
    w.meta(
        "tokenizer.ggml.tokens",
        MetaValue::Array(MetaArray {
            elem_type: type_id::STRING,
            items: tokens.to_vec(),
        }),
    )
    .meta("tokenizer.ggml.bos_token_id", MetaValue::U32(2))
    .meta("tokenizer.ggml.eos_token_id", MetaValue::U32(1));
    if let Some(t) = template {
        w.meta("tokenizer.chat_template", t);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, w.to_bytes()).expect("write gguf");
    let file = gemma4c_frontend::gguf::GgufFile::open(&path).expect("open gguf");
    (dir, file)
}

#[test]
fn template_is_read_from_gguf_metadata() {
    // The Gemma 3 test template stored as `tokenizer.chat_template` renders as
    // from the file, with bos/eos spelled as the tokens the ids point at.
    let source = std::fs::read_to_string(fixture("chat").join("gemma3_chat_template.jinja")).expect("template");
    let (_dir, g) = gguf_with(Some(MetaValue::String(source)));
    let t = ChatTemplate::from_gguf(&g).expect("valid").expect("present");
    assert!(
        t.origin().ends_with("metadata tokenizer.chat_template"),
        "{}",
        t.origin()
    );
    assert_eq!(t.special_tokens().bos, "<bos>");
    assert_eq!(t.special_tokens().eos, "<eos>");
    assert_eq!(t.end_of_turn_markers(), vec!["<end_of_turn>"]);
    let r = reference();
    for case in r["renders"].as_array().expect("renders") {
        if case["template"] != "gemma3" {
            continue;
        }
        let opts = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().expect("bool"),
            enable_thinking: false,
        };
        assert_eq!(
            t.render(&messages(&case["messages"]), opts).expect("render"),
            case["text"].as_str().expect("text")
        );
    }

    let (_dir, g) = gguf_with(None);
    assert!(ChatTemplate::from_gguf(&g).expect("valid").is_none());
    let (_dir, g) = gguf_with(Some(MetaValue::U32(7)));
    let err = ChatTemplate::from_gguf(&g).expect_err("not a string").to_string();
    assert!(
        err.contains("metadata tokenizer.chat_template") && err.contains("expected a string, found u32"),
        "{err}"
    );
    let (_dir, g) = gguf_with(Some(MetaValue::String("{% for %}".into())));
    let err = ChatTemplate::from_gguf(&g).expect_err("bad jinja").to_string();
    assert!(err.contains("not a valid Jinja template"), "{err}");
}
