use super::*;

fn req(v: Json) -> Json {
    let Json::Object(mut m) = v else { panic!() };
    request(&mut m, "claude-3-5-sonnet-20241022", false).unwrap()
}

#[test]
fn requests_are_translated() {
    let out = req(json!({
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "And kind."}]},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "user", "content": [
                {"type": "text", "text": "And this:"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "sunny"}]}
        ],
        "stop": "END",
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "presence_penalty": 1,
        "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}}
    }));
    assert_eq!(out["model"], "claude-3-5-sonnet-20241022");
    assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(
        out["system"],
        json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "And kind."}])
    );
    let msgs = out["messages"].as_array().unwrap();
    assert_eq!(
        msgs.len(),
        3,
        "user turns merged, tool results in one user turn: {msgs:?}"
    );
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(
        msgs[0]["content"][0],
        json!({"type": "text", "text": "Weather in Paris?"})
    );
    assert_eq!(
        msgs[0]["content"][2]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
    );
    assert_eq!(
        msgs[0]["content"][3]["source"],
        json!({"type": "url", "url": "https://example.com/a.png"})
    );
    assert_eq!(
        msgs[1],
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}]})
    );
    assert_eq!(msgs[2]["role"], "user");
    assert_eq!(
        msgs[2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "sunny"}
        ])
    );
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(
        (out["temperature"].clone(), out["top_p"].clone()),
        (json!(0.2), json!(0.9))
    );
    assert_eq!(out["metadata"], json!({"user_id": "u-1"}));
    assert_eq!(out["tools"][0]["name"], "weather");
    assert_eq!(
        out["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": "weather"})
    );
    assert!(out.get("presence_penalty").is_none());
    assert!(out.get("stream").is_none());
    let out = req(
        json!({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 7, "tool_choice": "required"}),
    );
    assert_eq!(out["max_tokens"], 7);
    assert_eq!(out["tool_choice"], json!({"type": "any"}));
    let Json::Object(mut m) = json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "not json"}}]}]})
    else {
        panic!()
    };
    let e = request(&mut m, "c", false).unwrap_err();
    assert_eq!(
        e.param.as_deref(),
        Some("messages[0].tool_calls[0].function.arguments")
    );
}

#[test]
fn answers_are_translated_with_usage() {
    let msg = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet-20241022",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 30}
    });
    let out = response(&msg, "m");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["message"]["content"], "Let me check.");
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    let call = &out["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_1");
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(call["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 140, "completion_tokens": 20, "total_tokens": 160,
            "prompt_tokens_details": {"cached_tokens": 30}, "cache_creation_input_tokens": 10})
    );
    // Read back for the charge: 100 plain, 30 read from and 10 written to the cache.
    let u = crate::providers::wire::response_usage(&serde_json::to_vec(&out).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.cache_read_tokens,
            u.cache_creation_tokens
        ),
        (140, 30, 10)
    );
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
    ] {
        let out = response(
            &json!({"content": [{"type": "text", "text": "x"}], "stop_reason": stop}),
            "m",
        );
        assert_eq!(out["choices"][0]["finish_reason"], finish);
    }
}

fn sse(events: &[Json]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {}\n\n", e["type"].as_str().unwrap(), e))
        .collect()
}

fn chunks(out: &str) -> Vec<Json> {
    out.split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn streams_are_translated_event_by_event_across_any_chunking() {
    let text = sse(&[
        json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5}}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
        json!({"type": "message_stop"}),
    ]);
    // Whatever the chunking, the same chunks come out.
    for size in [1, 7, 64, text.len()] {
        let mut t = StreamTranslator::new("m");
        let mut out = Vec::new();
        for piece in text.as_bytes().chunks(size) {
            out.extend_from_slice(&t.feed(piece).unwrap());
        }
        out.extend_from_slice(&t.finish());
        let out = String::from_utf8(out).unwrap();
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        let c = chunks(&out);
        assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(c[0]["id"], "msg_1");
        assert_eq!(c[0]["model"], "claude-x");
        let text: String = c
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello");
        let calls: Vec<&Json> = c
            .iter()
            .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
            .collect();
        assert_eq!(calls[0][0]["id"], "toolu_1");
        assert_eq!(calls[0][0]["function"]["name"], "weather");
        let args: String = calls
            .iter()
            .filter_map(|c| c[0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(args, "{\"city\":\"Paris\"}");
        let finish: Vec<&str> = c
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finish, ["tool_calls"]);
        let last = c.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], 30);
        assert_eq!(last["usage"]["completion_tokens"], 12);
    }
}

#[test]
fn a_stream_error_event_becomes_an_error_frame_and_garbage_ends_the_stream() {
    let mut t = StreamTranslator::new("m");
    let out = t
        .feed(sse(&[json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]).as_bytes())
        .unwrap();
    let c = chunks(std::str::from_utf8(&out).unwrap());
    assert_eq!(c[0]["error"]["type"], "overloaded_error");
    let mut t = StreamTranslator::new("m");
    assert!(t.feed(b"event: x\ndata: {not json\n\n").is_err());
    // A stream cut before `message_stop` gets no `[DONE]`.
    let mut t = StreamTranslator::new("m");
    let mut out = t
        .feed(sse(&[json!({"type": "message_start", "message": {"id": "a", "usage": {"input_tokens": 3}}})]).as_bytes())
        .unwrap()
        .to_vec();
    out.extend_from_slice(&t.finish());
    assert!(!String::from_utf8(out).unwrap().contains("[DONE]"));
}

#[test]
fn errors_say_what_they_mean() {
    let body =
        |t: &str, m: &str| json!({"type": "error", "error": {"type": t, "message": m}}).to_string();
    let e = error(
        ProviderKind::Anthropic,
        529,
        body("overloaded_error", "Overloaded").as_bytes(),
    );
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::ServiceUnavailableError, "Overloaded")
    );
    assert!(e.is_retryable());
    assert_eq!(e.class(), "Anthropic.ServiceUnavailableError");
    let e = error(
        ProviderKind::Anthropic,
        429,
        body("rate_limit_error", "slow down").as_bytes(),
    );
    assert_eq!(e.kind, ErrorKind::RateLimitError);
    assert!(e.is_retryable());
    let e = error(
        ProviderKind::Anthropic,
        400,
        body(
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
        )
        .as_bytes(),
    );
    assert_eq!(e.kind, ErrorKind::ContextWindowExceededError);
    let e = error(
        ProviderKind::Anthropic,
        401,
        body("authentication_error", "invalid x-api-key").as_bytes(),
    );
    assert_eq!(e.kind, ErrorKind::AuthenticationError);
}

#[test]
fn a_cut_stream_still_reports_its_usage_and_crlf_events_are_read() {
    let text = sse(&[
        json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 40, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "abcdefghijklmnop"}}),
    ])
    .replace("\n", "\r\n");
    let mut t = StreamTranslator::new("m");
    let mut out = t.feed(text.as_bytes()).unwrap().to_vec();
    out.extend_from_slice(&t.finish());
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains("[DONE]"));
    let c = chunks(&out);
    assert!(c.last().unwrap()["error"]["message"].is_string(), "{out}");
    let usage = &c[c.len() - 2]["usage"];
    assert_eq!(usage["prompt_tokens"], 40);
    assert_eq!(
        usage["completion_tokens"], 4,
        "16 characters generated: {out}"
    );
    // Once: a second finish adds nothing.
    assert!(t.finish().is_empty());
}

#[test]
fn a_tool_called_without_arguments_gets_an_empty_object() {
    let text = sse(&[
        json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t1", "name": "now", "input": {}}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
        json!({"type": "message_stop"}),
    ]);
    let mut t = StreamTranslator::new("m");
    let out = String::from_utf8(t.feed(text.as_bytes()).unwrap().to_vec()).unwrap();
    let args: String = chunks(&out)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{}");
}

#[test]
fn what_the_messages_api_cannot_do_is_refused_or_translated_not_dropped() {
    let ask = |extra: Json| {
        let mut v = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let Json::Object(mut m) = v else { panic!() };
        request(&mut m, "claude-3-5-sonnet-20241022", false)
    };
    let err = ask(json!({"n": 2})).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("n"));
    assert!(ask(json!({"n": 1})).is_ok());
    let err = ask(json!({"response_format": {"type": "json_object"}})).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("response_format"));
    assert!(ask(json!({"response_format": {"type": "text"}})).is_ok());
    let out = ask(json!({"parallel_tool_calls": false})).unwrap();
    assert_eq!(
        out["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    let out = ask(json!({"parallel_tool_calls": false, "tool_choice": "required"})).unwrap();
    assert_eq!(
        out["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert!(ask(json!({"parallel_tool_calls": true})).unwrap()["tool_choice"].is_null());
}
