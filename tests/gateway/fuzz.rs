//! The fuzz harness: generated mutations of valid requests (wrong types, deep nesting, huge numbers,
//! duplicate keys, invalid UTF-8, control characters, oversized fields, truncation, random bytes) sent to the
//! chat, completions, embeddings and management endpoints. Afterwards the process is alive, its log holds no
//! panic, every answer was a well-formed success or OpenAI error, `/metrics` passes `promtool check metrics`,
//! and the series count grew by no more than the configured caps allow.
//!
//! `LLM_FUZZ_BODIES` (default 100,000) and `LLM_FUZZ_SEED` (default fixed, so CI is repeatable) set the run;
//! a longer one: `LLM_FUZZ_BODIES=2000000 LLM_FUZZ_SEED=$RANDOM cargo test --test gateway fuzz -- --ignored
//! --nocapture`. `scripts/test` runs it alone, on SQLite (it aims at request handling, not the store).

use crate::support::*;
use futures_util::StreamExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

const DEFAULT_BODIES: usize = 100_000;
const DEFAULT_SEED: u64 = 20_261_130;
const END_USER_CAP: usize = 20;

/// The requests the mutations start from: (path, body, sent with the master key).
fn seeds() -> Vec<(&'static str, Value, bool)> {
    let msgs = json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hello there"}]}]);
    vec![
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": msgs, "user": "u1", "metadata": {"tenant": "acme"}}),
            false,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "up", "messages": msgs, "stream": true, "stream_options": {"include_usage": true}, "temperature": 0.2}),
            false,
        ),
        (
            "/chat/completions",
            json!({"model": "m", "messages": msgs, "fallbacks": ["up"], "num_retries": 1, "mock_response": "ok"}),
            true,
        ),
        (
            "/v1/completions",
            json!({"model": "m", "prompt": "once upon", "max_tokens": 5}),
            false,
        ),
        (
            "/v1/completions",
            json!({"model": "up", "prompt": ["a", "b"], "stream": true}),
            false,
        ),
        (
            "/v1/embeddings",
            json!({"model": "m", "input": ["one", "two"], "dimensions": 8}),
            false,
        ),
        (
            "/v1/embeddings",
            json!({"model": "up", "input": [[1, 2, 3], [4]]}),
            false,
        ),
        (
            "/key/generate",
            json!({"key_alias": "fz", "models": ["m"], "max_budget": 1.5, "rpm_limit": 100, "metadata": {"a": 1}, "budget_duration": "1d"}),
            true,
        ),
        (
            "/key/update",
            json!({"key": "sk-fuzz-target-key-0002", "tpm_limit": 1000, "model_rpm_limit": {"m": 5}}),
            true,
        ),
        (
            "/team/new",
            json!({"team_alias": "fz", "max_budget": 10, "models": ["m", "up"], "members_with_roles": [{"user_id": "x", "role": "admin"}]}),
            true,
        ),
        (
            "/user/new",
            json!({"user_email": "a@b.c", "max_budget": 3, "auto_create_key": false}),
            true,
        ),
        (
            "/customer/new",
            json!({"user_id": "cust", "max_budget": 2, "budget_duration": "30d"}),
            true,
        ),
        (
            "/key/block",
            json!({"key": "sk-fuzz-target-key-0002"}),
            true,
        ),
        (
            "/key/unblock",
            json!({"key": "sk-fuzz-target-key-0002"}),
            true,
        ),
        (
            "/team/member_add",
            json!({"team_id": "t1", "member": {"user_id": "x", "role": "user"}}),
            true,
        ),
    ]
}

/// A random JSON value of a random type (bounded size).
fn random_value(rng: &mut SmallRng, depth: u32) -> Value {
    match rng.gen_range(0..14) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(rng.gen::<u64>()),
        4 => json!(rng.gen::<f64>() * 1e300),
        5 => json!(-1),
        6 => json!(0),
        7 => json!(random_text(rng)),
        8 => json!(""),
        9 | 10 if depth < 4 => {
            let n = rng.gen_range(0..4);
            Value::Array((0..n).map(|_| random_value(rng, depth + 1)).collect())
        }
        11 | 12 if depth < 4 => {
            let n = rng.gen_range(0..4);
            let mut m = serde_json::Map::new();
            for _ in 0..n {
                m.insert(random_key(rng), random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
        _ => json!("m"),
    }
}

fn random_key(rng: &mut SmallRng) -> String {
    const KEYS: [&str; 16] = [
        "model",
        "messages",
        "stream",
        "user",
        "metadata",
        "input",
        "prompt",
        "role",
        "content",
        "fallbacks",
        "num_retries",
        "key",
        "team_id",
        "models",
        "max_budget",
        "x",
    ];
    if rng.gen_bool(0.8) {
        KEYS[rng.gen_range(0..KEYS.len())].to_owned()
    } else {
        random_text(rng)
    }
}

/// Text with the characters that break things: controls, NUL, quotes, backslashes, non-ASCII, long runs.
fn random_text(rng: &mut SmallRng) -> String {
    const PIECES: [&str; 12] = [
        "a", "\u{0}", "\n", "\r\n", "\"", "\\", "\u{7f}", "é", "🙂", "\u{202e}", " ", "sk-",
    ];
    let n = match rng.gen_range(0..10) {
        0 => rng.gen_range(200..5000),
        _ => rng.gen_range(0..12),
    };
    (0..n)
        .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
        .collect()
}

/// Every node of `v`, as paths of object keys / array indexes.
fn paths(v: &Value, here: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                here.push(json!(k));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                here.push(json!(i));
                paths(child, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in path {
        cur = match p {
            Value::String(k) => cur.get_mut(k.as_str())?,
            Value::Number(i) => cur.get_mut(i.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

/// One mutation (sometimes none) of a seed body, as bytes.
fn mutate(rng: &mut SmallRng, seed: &Value) -> Vec<u8> {
    let mut v = seed.clone();
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    let pick = all[rng.gen_range(0..all.len())].clone();
    match rng.gen_range(0..14) {
        0 => {}
        1..=3 => {
            let new = random_value(rng, 0);
            if let Some(n) = node(&mut v, &pick) {
                *n = new;
            }
        }
        4 => {
            if let (Some(last), Some(parent)) = (
                pick.last(),
                node(&mut v, &pick[..pick.len().saturating_sub(1)]),
            ) {
                match (parent, last) {
                    (Value::Object(m), Value::String(k)) => {
                        m.remove(k);
                    }
                    (Value::Array(a), Value::Number(i)) => {
                        let i = i.as_u64().unwrap_or(0) as usize;
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        5 => {
            let (k, val) = (random_key(rng), random_value(rng, 0));
            if let Some(Value::Object(m)) = node(&mut v, &pick) {
                m.insert(k, val);
            } else if let Some(m) = v.as_object_mut() {
                m.insert(k, val);
            }
        }
        6 => {
            // A duplicate key, textually: the second value differs from the first.
            let text = v.to_string();
            let keys: Vec<String> = v
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            if let Some(k) = keys.get(rng.gen_range(0..keys.len().max(1))) {
                let dup = format!("{{{}:{},", json!(k), random_value(rng, 1));
                return text.replacen('{', &dup, 1).into_bytes();
            }
            return text.into_bytes();
        }
        7 => {
            // Deep nesting in place of a node (past serde_json's recursion limit sometimes).
            let depth = rng.gen_range(10..400);
            let marker = "\"__NEST__\"";
            if let Some(n) = node(&mut v, &pick) {
                *n = json!("__NEST__");
            }
            return v
                .to_string()
                .replacen(marker, &nested(depth), 1)
                .into_bytes();
        }
        8 => {
            // Numbers JSON allows but machines dislike.
            const HUGE: [&str; 7] = [
                "1e999",
                "-1e999",
                "18446744073709551616",
                "-9223372036854775809",
                "1e-400",
                "-0",
                "123456789012345678901234567890",
            ];
            let h = HUGE[rng.gen_range(0..HUGE.len())];
            if let Some(n) = node(&mut v, &pick) {
                *n = json!("__NUM__");
            }
            return v.to_string().replacen("\"__NUM__\"", h, 1).into_bytes();
        }
        9 => {
            // Invalid UTF-8 inside the text.
            let mut bytes = v.to_string().into_bytes();
            let at = rng.gen_range(0..bytes.len());
            bytes[at] = [0xff, 0xc3, 0x80, 0xed][rng.gen_range(0..4)];
            return bytes;
        }
        10 => {
            let bytes = v.to_string().into_bytes();
            let at = rng.gen_range(0..bytes.len());
            return bytes[..at].to_vec();
        }
        11 => {
            // An oversized field, now and then past the 4 MiB body limit (written directly: a debug
            // build's serde_json would spend longer making it than the gateway takes to refuse it).
            let size = [300, 70_000, 300_000, 5 << 20][rng.gen_range(0..4)];
            if let Some(n) = node(&mut v, &pick) {
                *n = json!("__BIG__");
            }
            let text = v.to_string();
            let mut out = Vec::with_capacity(text.len() + size);
            let (head, tail) = text.split_once("__BIG__").unwrap_or((&text, ""));
            out.extend_from_slice(head.as_bytes());
            out.resize(out.len() + size, b'y');
            out.extend_from_slice(tail.as_bytes());
            return out;
        }
        12 => {
            let n = rng.gen_range(0..200);
            return (0..n).map(|_| rng.gen::<u8>()).collect();
        }
        _ => {
            // Control characters in a string field.
            if let Some(n) = node(&mut v, &pick) {
                *n = json!(format!("a\u{0}b\u{1b}[31m\n{}", random_text(rng)));
            }
        }
    }
    v.to_string().into_bytes()
}

/// Whether an answer is a well-formed success or OpenAI error; `Err` says what is wrong.
fn well_formed(status: u16, content_type: &str, body: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(body).map_err(|_| "answer is not UTF-8".to_owned())?;
    if status == 200 && content_type.starts_with("text/event-stream") {
        for frame in text.split("\n\n").filter(|f| !f.trim().is_empty()) {
            let data = frame
                .strip_prefix("data: ")
                .ok_or_else(|| format!("SSE frame without data: {frame:.200}"))?;
            if data != "[DONE]" {
                serde_json::from_str::<Value>(data)
                    .map_err(|e| format!("SSE frame is not JSON ({e}): {data:.200}"))?;
            }
        }
        return Ok(());
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("answer is not JSON ({e}): {text:.300}"))?;
    if status == 200 {
        return Ok(());
    }
    let e = v
        .get("error")
        .ok_or_else(|| format!("error answer without `error`: {text:.300}"))?;
    let message_ok = e["message"].as_str().is_some_and(|m| !m.is_empty());
    let shape_ok =
        e["type"].is_string() && e.get("param").is_some() && e.get("code").is_some() && message_ok;
    if !shape_ok {
        return Err(format!("error answer not in the OpenAI shape: {text:.300}"));
    }
    if status >= 500 && status != 503 {
        return Err(format!("server error {status}: {text:.300}"));
    }
    Ok(())
}

fn series_count(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

/// Ignored in the plain `cargo test` run (it keeps both cores busy for a minute, which would slow the
/// tests beside it); `scripts/test` runs it on its own with `--ignored`.
#[actix_rt::test]
#[ignore = "run alone by scripts/test: cargo test --test gateway fuzz -- --ignored"]
async fn fuzzed_requests_get_clean_answers_and_leave_the_gateway_healthy() {
    if std::env::var("LLM_TEST_DATABASE_URL").is_ok() {
        eprintln!("the fuzz run belongs to the SQLite pass: skipped");
        return;
    }
    let bodies: usize = std::env::var("LLM_FUZZ_BODIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BODIES);
    let seed: u64 = std::env::var("LLM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mock = Mock::start();
    let config = format!(
        "model_list:\n  - model_name: m\n    llm_params: {{model: mock/m, input_cost_per_token: 0.000001}}\n  - model_name: up\n    llm_params: {{model: openai/up, api_base: \"{}\", api_key: sk-up}}\nllm_settings:\n  callbacks: [prometheus]\n  service_callback: [prometheus_system]\n  custom_prometheus_metadata_labels: [metadata.tenant]\n  prometheus_end_user_metrics_max_series_per_metric: {END_USER_CAP}\ngeneral_settings:\n  master_key: sk-master\n",
        mock.base()
    );
    let gw = Gateway::start(&config).await;
    let r = gw
        .admin("/key/generate", &json!({"key": "sk-fuzz-known-key-0001"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The LLM requests' key is never the target of a management call; this one is.
    let r = gw
        .admin("/key/generate", &json!({"key": "sk-fuzz-target-key-0002"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = gw.admin("/team/new", &json!({"team_id": "t1"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let before = series_count(&gw.metrics().await.text);

    let seeds = seeds();
    let http = client();
    let url = |p: &str| gw.url(p);
    let mut rng = SmallRng::seed_from_u64(seed);
    let started = Instant::now();
    // Generated as they are sent (some bodies are megabytes).
    let results: Vec<(u16, String, Result<(), String>)> = futures_util::stream::iter(0..bodies)
        .map(|_| {
            let (path, body, master) = &seeds[rng.gen_range(0..seeds.len())];
            (url(path), mutate(&mut rng, body), *master)
        })
        .map(|(url, body, master)| {
            let http = http.clone();
            async move {
                let key = if master {
                    "Bearer sk-master"
                } else {
                    "Bearer sk-fuzz-known-key-0001"
                };
                let path = url.clone();
                let sent = http
                    .post(url)
                    .insert_header(("content-type", "application/json"))
                    .insert_header(("authorization", key))
                    .send_body(body)
                    .await;
                match sent {
                    Ok(mut resp) => {
                        let status = resp.status().as_u16();
                        let ctype = resp
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let checked = match resp.body().limit(64 << 20).await {
                            Ok(b) => well_formed(status, &ctype, &b),
                            Err(e) => Err(format!("answer body unreadable: {e}")),
                        };
                        (status, path, checked)
                    }
                    Err(e) => (0, path, Err(format!("no answer: {e}"))),
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let took = started.elapsed();

    let bad: Vec<String> = results
        .iter()
        .filter_map(|(s, p, r)| r.as_ref().err().map(|e| format!("{p} {s}: {e}")))
        .collect();
    let mut by_status = std::collections::BTreeMap::new();
    for (s, _, _) in &results {
        *by_status.entry(*s).or_insert(0usize) += 1;
    }
    eprintln!(
        "fuzz: {} bodies (seed {seed}) in {took:?}; answers by status {by_status:?}; {} malformed",
        results.len(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "{} bad answers, e.g.:\n{}",
        bad.len(),
        bad[..bad.len().min(10)].join("\n")
    );

    // Alive, and never panicked.
    assert_eq!(gw.get("/health/liveliness", &[]).await.status, 200);
    let log = gw.log();
    assert!(
        !log.contains("panicked"),
        "a panic in the log:\n{log:.3000}"
    );

    // The exposition parses, and its series grew within the caps: end users are capped per family,
    // requested models fall back to `other`, so growth comes from entities the fuzzer created.
    let m = gw.metrics().await;
    let created = results
        .iter()
        .filter(|(s, p, _)| *s == 200 && (p.ends_with("/new") || p.ends_with("/generate")))
        .count();
    let grown = series_count(&m.text).saturating_sub(before);
    let allowed = created * 8 + END_USER_CAP * 30 + 3000;
    assert!(
        grown <= allowed,
        "series grew by {grown}, allowed {allowed}"
    );
    eprintln!("fuzz: series grew by {grown} (allowed {allowed}, {created} entities created)");
    promtool_accepts(&m.text);
}

/// `promtool check metrics` on the exposition: no parse error, and no lint finding but the two the spec's
/// names impose (hours are not a base unit).
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is needed in CI ({e})"
            );
            eprintln!("no promtool ({e}): exposition check skipped");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let contract = [
        "llm_api_key_budget_remaining_hours_metric use base unit \"seconds\" instead of \"hours\"",
        "llm_team_budget_remaining_hours_metric use base unit \"seconds\" instead of \"hours\"",
        "llm_user_budget_remaining_hours_metric use base unit \"seconds\" instead of \"hours\"",
        "llm_customer_budget_remaining_hours_metric use base unit \"seconds\" instead of \"hours\"",
    ];
    let findings: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty() && !contract.contains(&l.as_str()))
        .collect();
    assert!(findings.is_empty(), "promtool: {findings:?}");
    let _ = Duration::ZERO;
}
