//! `gemma4c chat` driven through piped stdin: a three-turn conversation whose
//! replies are transformers' greedy tokens for the same turns
//! (tests/fixtures/chat/reference.json, tools/make_chat_reference.py), with
//! every turn fed on top of one KV cache; /reset and /exit.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Runs `gemma4c ARGS` with `stdin` piped in; kills it after `limit`.
fn chat(args: &[&str], stdin: &str, limit: Duration) -> CliOutput {
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
            panic!("gemma4c chat did not finish within {limit:?}");
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
    let out = chat(&args, &stdin, Duration::from_secs(120));
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
    let out = chat(&args, &stdin, Duration::from_secs(120));
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
    let out = chat(&args, &format!("{first}\n{first}\n{first}\n"), Duration::from_secs(120));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("the context is full"), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert_eq!(lines[0], lines[1]);
}
