//! `gemma4c chat` driven through piped stdin: a three-turn conversation whose
//! replies are transformers' greedy tokens for the same turns
//! (tests/fixtures/chat/reference.json, tools/make_chat_reference.py), with
//! every turn fed on top of one KV cache; /reset and /exit.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn reference() -> Value {
    let path = fixture("chat").join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference.json")).expect("json")
}

fn base_args(c: &Value) -> Vec<String> {
    let template = fixture("chat").join("gemma4_chat_template.jinja");
    [
        "chat",
        "--model",
        fixture("tiny_ple").to_str().expect("utf-8"),
        "--chat-template",
        template.to_str().expect("utf-8"),
        "--system",
        c["system"].as_str().expect("system"),
        "--max-new-tokens",
        &c["max_new_tokens"].to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn three_turns_over_one_cache_give_the_transformers_tokens() {
    let r = reference();
    let c = &r["conversation"];
    let turns = c["turns"].as_array().expect("turns");
    let users: Vec<&str> = turns.iter().map(|t| t["user"].as_str().expect("user")).collect();
    // Three turns, /reset, the first turn again, /exit (a line after it is never read).
    let stdin = format!(
        "{}\n{}\n\n{}\n/reset\n{}\n/exit\n{}\n",
        users[0], users[1], users[2], users[0], users[1]
    );
    let mut args = base_args(c);
    args.extend(["--output", "ids"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = gemma4c_with_stdin(&args, &stdin, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut want: Vec<String> = turns
        .iter()
        .map(|t| {
            let ids: Vec<String> = t["generated"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.to_string())
                .collect();
            ids.join(" ")
        })
        .collect();
    want.push(want[0].clone());
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), want, "{}", out.stderr);
    // Only the new tokens of each turn were fed: the prompt counts are the reference's.
    for (t, fed) in turns.iter().enumerate() {
        let n = t_fed(fed, t);
        assert!(
            out.stderr.contains(&format!("/ {n:>5} tokens")),
            "turn {t}: {n} tokens\n{}",
            out.stderr
        );
    }
}

/// Tokens fed on turn `t`: its new ids, plus the previous reply's last id.
fn t_fed(turn: &Value, t: usize) -> usize {
    turn["new_ids"].as_array().expect("ids").len() + usize::from(t > 0)
}

#[test]
fn streamed_replies_are_the_decoded_reference_text() {
    let r = reference();
    let c = &r["conversation"];
    let turns = c["turns"].as_array().expect("turns");
    let stdin: String = turns
        .iter()
        .map(|t| format!("{}\n", t["user"].as_str().expect("user")))
        .collect();
    let mut args = base_args(c);
    args.push("--quiet".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = gemma4c_with_stdin(&args, &stdin, Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want: String = turns
        .iter()
        .map(|t| format!("{}\n", t["reply"].as_str().expect("reply")))
        .collect();
    assert_eq!(out.stdout, want);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn a_full_context_is_reported_and_the_chat_goes_on() {
    let r = reference();
    let c = &r["conversation"];
    let first = c["turns"][0]["user"].as_str().expect("user");
    let mut args = base_args(c);
    // Room for the first turn only.
    args.extend(["--ctx-size", "70", "--output", "ids", "--executor", "reference"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = gemma4c_with_stdin(&args, &format!("{first}\n{first}\n{first}\n"), Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("the context is full"), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert_eq!(lines[0], lines[1]);
}

/// Ctrl-C typed at a terminal while a reply streams stops that reply, not the
/// program: the chat is driven through a pseudo-terminal by
/// tests/helpers/pty_chat.py (line editor on, Ctrl-C as the byte 0x03 that the
/// terminal driver turns into SIGINT). The interrupted reply is a strict prefix
/// of the uninterrupted one; Ctrl-C at the prompt clears the line; the next
/// message gets a whole reply; /exit ends with status 0.
#[test]
fn ctrl_c_in_a_terminal_stops_the_reply_not_the_chat() {
    let template = fixture("chat").join("gemma4_chat_template.jinja");
    let model = fixture("tiny_ple");
    // The longest reply the context allows (231 tokens after this prompt), so
    // the reply is still streaming when Ctrl-C arrives.
    let args = [
        "chat",
        "--model",
        model.to_str().expect("utf-8"),
        "--chat-template",
        template.to_str().expect("utf-8"),
        "--max-new-tokens",
        "231",
        "--executor",
        "reference",
        "--quiet",
    ];
    let message = "Hello there";
    let full = gemma4c_with_stdin(&args, &format!("{message}\n"), Duration::from_secs(120));
    assert_eq!(full.code, 0, "{}", full.stderr);
    let full = full.stdout.strip_suffix('\n').expect("a reply line").to_string();

    let helper = repo_root().join("tests/helpers/pty_chat.py");
    let out = std::process::Command::new("python3")
        .arg(&helper)
        .arg(message)
        .arg(env!("CARGO_BIN_EXE_gemma4c"))
        .args(args)
        .output()
        .expect("python3 runs the pty helper");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).expect("helper JSON");
    assert_eq!(r["error"], Value::Null, "{}", r["transcript"]);
    assert_eq!(r["exit"], 0, "the chat should end normally: {}", r["transcript"]);
    let interrupted = r["replies"][0].as_str().expect("interrupted reply");
    let second = r["replies"][1].as_str().expect("second reply");
    assert!(
        !interrupted.is_empty() && interrupted.len() < full.len() && full.starts_with(interrupted),
        "the interrupted reply {interrupted:?} should be a strict prefix of {full:?}"
    );
    assert!(!second.is_empty(), "{}", r["transcript"]);
}
