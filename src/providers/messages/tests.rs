use super::*;

#[test]
fn messages_requests_become_chat_requests() {
    let out = to_openai(&json!({
        "model": "claude",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "Thanks"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}}
            ]}
        ],
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "metadata": {"user_id": "u-9"},
        "stream": true
    }))
    .unwrap();
    let m = out["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(m[1], json!({"role": "user", "content": "Weather?"}));
    assert_eq!(m[2]["content"], "Checking.");
    assert_eq!(
        m[2]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18C"})
    );
    assert_eq!(
        m[4]["content"][1]["image_url"]["url"],
        "data:image/jpeg;base64,QUJD"
    );
    assert_eq!(out["max_tokens"], 100);
    assert_eq!(out["stop"], json!(["END"]));
    assert_eq!(out["tools"][0]["function"]["name"], "weather");
    assert_eq!(out["tool_choice"], "required");
    assert_eq!(out["user"], "u-9");
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
    let e = to_openai(&json!({"model": "c", "messages": [{"role": "user", "content": "x"}]}))
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("max_tokens"));
}

#[test]
fn chat_answers_become_messages() {
    let out = from_openai(&json!({
        "id": "chatcmpl-1", "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "On it.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    }));
    assert_eq!(out["type"], "message");
    assert_eq!(out["content"][0], json!({"type": "text", "text": "On it."}));
    assert_eq!(
        out["content"][1],
        json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}})
    );
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(
        out["usage"],
        json!({"input_tokens": 11, "output_tokens": 7})
    );
}

#[test]
fn chat_chunks_become_message_events() {
    let chunk = |delta: Json, finish: Json| {
        format!(
            "data: {}\n\n",
            json!({"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let mut text = chunk(json!({"role": "assistant", "content": ""}), Json::Null);
    text += &chunk(json!({"content": "Hel"}), Json::Null);
    text += &chunk(json!({"content": "lo"}), Json::Null);
    text += &chunk(
        json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
        Json::Null,
    );
    text += &chunk(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}),
        Json::Null,
    );
    text += &chunk(json!({}), json!("tool_calls"));
    text += &format!(
        "data: {}\n\n",
        json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})
    );
    text += "data: [DONE]\n\n";
    for size in [3, 50, text.len()] {
        let mut w = EventWriter::default();
        let mut out = Vec::new();
        for piece in text.as_bytes().chunks(size) {
            out.extend_from_slice(&w.feed(piece).unwrap());
        }
        let out = String::from_utf8(out).unwrap();
        let events: Vec<(String, Json)> = out
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut lines = e.lines();
                let name = lines
                    .next()
                    .unwrap()
                    .strip_prefix("event: ")
                    .unwrap()
                    .to_owned();
                let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
                (name, serde_json::from_str(data).unwrap())
            })
            .collect();
        let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[2].1["delta"]["text"], "Hel");
        assert_eq!(events[5].1["content_block"]["name"], "f");
        assert_eq!(events[6].1["delta"]["partial_json"], "{\"a\":1}");
        assert_eq!(events[8].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[8].1["usage"]["output_tokens"], 4);
    }
}

#[test]
fn errors_take_the_messages_shape() {
    let e = ApiError::new(
        ErrorKind::RateLimitError,
        actix_web::http::StatusCode::TOO_MANY_REQUESTS,
        "slow down",
    );
    assert_eq!(
        error_body(&e),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );
}

#[test]
fn crlf_frames_fragmented_tool_calls_and_a_bare_done_are_handled() {
    let frame = |v: Json| format!("data: {v}\r\n\r\n");
    let mut text = frame(json!({"id": "", "model": "", "choices": []}));
    // Some servers repeat the id on every fragment: one call, by its index.
    for part in ["{\"a\"", ":1}"] {
        text += &frame(
            json!({"id": "x", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": part}}]}, "finish_reason": null}]}),
        );
    }
    text += "data: [DONE]\r\n\r\n";
    let mut w = EventWriter::default();
    let out = String::from_utf8(w.feed(text.as_bytes()).unwrap().to_vec()).unwrap();
    let starts = out.matches("event: content_block_start").count();
    assert_eq!(starts, 1, "{out}");
    assert!(out.starts_with("event: message_start"), "{out}");
    assert!(
        !out.contains("\"id\":\"\""),
        "an empty id is replaced: {out}"
    );
    assert!(out.contains("{\\\"a\\\"") && out.contains(":1}"), "{out}");
    assert!(
        out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{out}"
    );
    // A stream of nothing but [DONE] still starts its message.
    let mut w = EventWriter::default();
    let out = String::from_utf8(w.feed(b"data: [DONE]\n\n").unwrap().to_vec()).unwrap();
    assert!(out.starts_with("event: message_start"), "{out}");
}

#[test]
fn a_failed_tool_result_says_so_in_the_chat_request() {
    let out = to_openai(&json!({
        "model": "c", "max_tokens": 10,
        "messages": [
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": "no such city"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": false, "content": "18C"}
            ]}
        ]
    }))
    .unwrap();
    let m = out["messages"].as_array().unwrap();
    assert_eq!(m[0]["content"], "Error: no such city");
    assert_eq!(m[1]["content"], "18C");
}
