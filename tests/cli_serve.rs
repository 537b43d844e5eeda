//! `gemma4c serve` over loopback with a real HTTP client (curl): the OpenAI
//! endpoints answer with transformers' greedy text (the same as `run --chat`,
//! tests/fixtures/chat/reference.json), streamed or not; bad requests get 400
//! with a JSON error; concurrent requests queue; a client that disconnects
//! mid-stream does not disturb the next request. Every wait is bounded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A running server, killed on drop.
struct Server {
    child: Child,
    addr: String,
    /// Its stderr lines so far (request logs).
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Waits (up to 60 s) for a log line containing `needle`.
    fn wait_for_log(&self, needle: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            if let Some(line) = self.log.lock().expect("log").iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!(
                    "no server log line with {needle:?}: {:?}",
                    self.log.lock().expect("log")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let template = fixture("chat").join("gemma4_chat_template.jinja");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemma4c"))
        .args(["serve", "--model"])
        .arg(fixture("tiny_ple"))
        .arg("--chat-template")
        .arg(&template)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gemma4c serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    // Keeps draining stderr (request logs) so the server never blocks on it.
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on http://").nth(1) {
                let _ = tx.send(addr.trim().to_string());
            }
            lines.lock().expect("log").push(line);
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            panic!("gemma4c serve did not start listening within 120 s");
        }
    };
    Server { child, addr, log }
}

/// `curl` a path; returns (HTTP status, body).
fn curl(server: &Server, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    curl_at(&server.addr, method, path, body)
}

fn curl_at(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", "-X", method, "-w", "\n%{http_code}"]);
    if body.is_some() {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", "@-"]);
        cmd.stdin(Stdio::piped());
    }
    cmd.arg(format!("http://{addr}{path}"));
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("curl must be installed (scripts/setup.sh)");
    if let Some(b) = body {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b.as_bytes())
            .expect("write body");
    }
    let out = child.wait_with_output().expect("curl");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.parse().expect("status"), body.to_string())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn reference() -> Value {
    let path = fixture("chat").join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference.json")).expect("json")
}

/// The first turn of the reference conversation as a chat request.
fn chat_body(c: &Value, stream: bool) -> String {
    json!({
        "model": "tiny_ple",
        "messages": [
            {"role": "system", "content": c["system"]},
            {"role": "user", "content": c["turns"][0]["user"]},
        ],
        "max_tokens": c["max_new_tokens"],
        "temperature": 0,
        "stream": stream,
    })
    .to_string()
}

/// The text of a server-sent event stream of chat chunks; checks it ends with [DONE].
fn sse_text(body: &str) -> (String, Option<String>) {
    let data: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    let mut text = String::new();
    let mut finish = None;
    for d in &data[..data.len() - 1] {
        let v = json_of(d);
        let choice = &v["choices"][0];
        if let Some(t) = choice["delta"]["content"].as_str().or(choice["text"].as_str()) {
            text.push_str(t);
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    (text, finish)
}

#[test]
fn openai_endpoints_over_loopback() {
    let r = reference();
    let c = &r["conversation"];
    let reply = c["turns"][0]["reply"].as_str().expect("reply");
    let server = start_server();

    let (code, body) = curl(&server, "GET", "/health", None);
    assert_eq!((code, json_of(&body)), (200, json!({"status": "ok"})));
    let (code, body) = curl(&server, "GET", "/v1/models", None);
    assert_eq!(code, 200);
    assert_eq!(json_of(&body)["data"][0]["id"], "tiny_ple");

    // Chat, not streamed: the reference reply, with usage.
    let (code, body) = curl(&server, "POST", "/v1/chat/completions", Some(&chat_body(c, false)));
    assert_eq!(code, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], reply);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let fed = c["turns"][0]["new_ids"].as_array().expect("ids").len();
    assert_eq!(v["usage"]["prompt_tokens"], fed);
    assert_eq!(v["usage"]["completion_tokens"], c["max_new_tokens"]);

    // Streamed: the same bytes.
    let (code, body) = curl(&server, "POST", "/v1/chat/completions", Some(&chat_body(c, true)));
    assert_eq!(code, 200, "{body}");
    assert_eq!(sse_text(&body), (reply.to_string(), Some("length".to_string())));

    // Text completion (BOS added): the same text as `run --prompt`, whose
    // tokens tests/cli_run.rs checks against transformers.
    let meta: Value =
        json_of(&std::fs::read_to_string(fixture("tiny_ple_long").join("reference_meta.json")).expect("meta"));
    let run = gemma4c(&[
        "run",
        "--model",
        fixture("tiny_ple").to_str().expect("utf-8"),
        "--prompt",
        meta["prompt_text"].as_str().expect("prompt_text"),
        "--max-new-tokens",
        "8",
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let body = json!({"prompt": meta["prompt_text"], "max_tokens": 8, "stream": true}).to_string();
    let (code, sse) = curl(&server, "POST", "/v1/completions", Some(&body));
    assert_eq!(code, 200, "{sse}");
    assert_eq!(sse_text(&sse).0, run.stdout.strip_suffix('\n').expect("newline"));
    let body = json!({"prompt": meta["prompt_text"], "max_tokens": 8}).to_string();
    let (code, out) = curl(&server, "POST", "/v1/completions", Some(&body));
    assert_eq!(code, 200, "{out}");
    assert_eq!(
        json_of(&out)["choices"][0]["text"],
        run.stdout.strip_suffix('\n').expect("newline")
    );

    // Bad requests: 400 (or 413/404) with a JSON error, and the server lives on.
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(2 << 20));
    for (path, body, status, needle) in [
        ("/v1/chat/completions", "{ not json", 400, "invalid request body"),
        ("/v1/chat/completions", r#"{"messages": []}"#, 400, "messages"),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#,
            400,
            "max_tokens",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "max_tokens": 256}"#,
            400,
            "exceed the context",
        ),
        (
            "/v1/completions",
            r#"{"prompt": "x", "temperature": "hot"}"#,
            400,
            "invalid request body",
        ),
    ] {
        let (code, out) = curl(&server, "POST", path, Some(body));
        assert_eq!(code, status, "{body}: {out}");
        let msg = json_of(&out)["error"]["message"]
            .as_str()
            .expect("error.message")
            .to_string();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let (code, _) = curl(&server, "POST", "/v1/completions", Some(&huge));
    assert_eq!(code, 413);
    let (code, _) = curl(&server, "GET", "/v1/nothing", None);
    assert_eq!(code, 404);

    // A client that disconnects mid-stream: it reads the response head and the
    // first streamed text, then goes away. Its generation stops, and the next
    // requests (streamed and not) get the whole reference answer.
    {
        let mut s = TcpStream::connect(&server.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let body = json!({"prompt": "The weather", "max_tokens": 200, "stream": true}).to_string();
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        // The first event is the opening chunk; wait for one that carries text.
        while String::from_utf8_lossy(&got).matches("data: ").count() < 2 {
            let n = s.read(&mut buf).expect("streamed bytes");
            assert!(n > 0, "the stream ended early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    }
    let (code, body) = curl(&server, "POST", "/v1/chat/completions", Some(&chat_body(c, false)));
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_of(&body)["choices"][0]["message"]["content"], reply);
    let (code, body) = curl(&server, "POST", "/v1/chat/completions", Some(&chat_body(c, true)));
    assert_eq!(code, 200, "{body}");
    assert_eq!(sse_text(&body).0, reply);
    // The server's log: the request that lost its client stopped before its 200 tokens.
    let gone = server.wait_for_log("client went away");
    let generated: usize = gone
        .split(" generated")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("generated count in {gone}"));
    assert!(generated < 200, "{gone}");

    // Concurrent requests queue to the one worker; each gets its own answer.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let addr = server.addr.clone();
            let stream = i % 2 == 1;
            let body = chat_body(c, stream);
            std::thread::spawn(move || {
                let out = curl_at(&addr, "POST", "/v1/chat/completions", Some(&body));
                (stream, out)
            })
        })
        .collect();
    for t in threads {
        let (stream, (code, body)) = t.join().expect("thread");
        assert_eq!(code, 200, "{body}");
        let text = if stream {
            sse_text(&body).0
        } else {
            json_of(&body)["choices"][0]["message"]["content"]
                .as_str()
                .expect("content")
                .to_string()
        };
        assert_eq!(text, reply);
    }
    let (code, _) = curl(&server, "GET", "/health", None);
    assert_eq!(code, 200);
}
