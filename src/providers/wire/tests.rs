use super::*;

#[test]
fn request_fields_are_typed() {
    let body = br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"user":"u\"1","messages":[{"role":"user","content":"hi"}]}"#;
    let v = RequestView::parse(body).unwrap();
    assert_eq!(v.model().unwrap(), "gpt-4o");
    assert!(v.stream().unwrap());
    assert!(v.include_usage().unwrap());
    assert_eq!(v.user().unwrap().unwrap(), "u\"1");
}

#[test]
fn bad_requests_are_named() {
    for (body, needle) in [
        (&b"{"[..], "not a valid JSON object"),
        (b"[1,2]", "not a valid JSON object"),
        (b"", "empty"),
    ] {
        let e = RequestView::parse(body).err().unwrap();
        assert!(e.message.contains(needle), "{}", e.message);
    }
    let v = RequestView::parse(br#"{"model":5,"stream":"yes"}"#).unwrap();
    assert_eq!(v.model().unwrap_err().param.as_deref(), Some("model"));
    assert!(v
        .stream()
        .unwrap_err()
        .message
        .contains("`stream` must be a boolean"));
    let v = RequestView::parse(br#"{"messages":[]}"#).unwrap();
    assert!(v
        .model()
        .unwrap_err()
        .message
        .contains("`model` is required"));
}

#[test]
fn upstream_body_rewrites_model_and_usage() {
    let body = br#"{"model":"group","metadata":{"a":1},"stream":true,"temperature":0.5,"stream_options":{"x":1}}"#;
    let v = RequestView::parse(body).unwrap();
    let out: serde_json::Value =
        serde_json::from_slice(&v.upstream_body("gpt-4o-2024", true)).unwrap();
    assert_eq!(out["model"], "gpt-4o-2024");
    assert!(out.get("metadata").is_none());
    assert_eq!(out["temperature"], 0.5);
    assert_eq!(out["stream_options"]["include_usage"], true);
    assert_eq!(out["stream_options"]["x"], 1);
    let out: serde_json::Value = serde_json::from_slice(&v.upstream_body("m", false)).unwrap();
    assert_eq!(out["stream_options"], serde_json::json!({"x":1}));
}

#[test]
fn usage_from_responses() {
    let u = response_usage(
        br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(u, Usage::new(3, 4));
    let u = response_usage(br#"{"usage":{"prompt_tokens":5}}"#)
        .unwrap()
        .unwrap();
    assert_eq!(u, Usage::new(5, 0));
    assert_eq!(response_usage(br#"{"data":[]}"#).unwrap(), None);
    assert!(response_usage(b"not json").is_err());
}

#[test]
fn prompt_estimates() {
    let v = RequestView::parse(br#"{"messages":[{"role":"user","content":"abcdefgh"}]}"#).unwrap();
    assert_eq!(estimate_prompt_tokens(&v), 3 + 4 + 2);
    let v = RequestView::parse(br#"{"input":["abcd","ab"]}"#).unwrap();
    assert_eq!(estimate_prompt_tokens(&v), 2);
    let v = RequestView::parse(
        br#"{"messages":[{"role":"user","content":[{"type":"text","text":"abcd"}]}]}"#,
    )
    .unwrap();
    assert_eq!(estimate_prompt_tokens(&v), 3 + 4 + 1);
}

#[test]
fn header_parsers() {
    assert_eq!(parse_remaining("99"), Some(99.0));
    assert_eq!(parse_remaining(" 12.5 "), Some(12.5));
    assert_eq!(parse_remaining("lots"), None);
    assert_eq!(parse_retry_after("2"), Some(2.0));
    assert_eq!(parse_retry_after("-1"), None);
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
}

#[test]
fn sse_tap_splits_frames_and_reads_usage() {
    let mut tap = SseTap::new(true);
    let a = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"con";
    let out = tap.feed(a);
    assert!(out.first_token);
    let first_frame_end = a.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    assert_eq!(&out.forward[..], &a[..first_frame_end]);
    let out = tap.feed(b"tent\":\"lo\"}}]}\n\n");
    assert!(!out.first_token);
    assert_eq!(out.forward.len(), a.len() - first_frame_end + 16);
    let out = tap.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n");
    assert_eq!(&out.forward[..], b"data: [DONE]\n\n");
    assert_eq!(tap.usage, Some(Usage::new(2, 2)));
    assert_eq!(tap.content_chars, 5);
    assert!(tap.saw_done);
}

#[test]
fn sse_tap_resumes_its_scan_and_bounds_a_frame() {
    let mut tap = SseTap::new(false);
    // A frame arriving a byte at a time, its separator split across feeds.
    let frame = b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\n\r\n";
    let mut forwarded = Vec::new();
    for b in frame.iter() {
        forwarded.extend_from_slice(&tap.feed(&[*b]).forward);
    }
    assert_eq!(forwarded, frame);
    assert!(tap.saw_token && !tap.oversized);
    // A frame that never ends is cut at the cap, without holding more than the cap.
    let chunk = vec![b'a'; 64 * 1024];
    let mut fed = 0;
    while !tap.oversized {
        assert!(tap.feed(&chunk).forward.is_empty());
        fed += chunk.len();
        assert!(fed <= MAX_SSE_FRAME_BYTES + chunk.len());
    }
}

#[test]
fn usage_numbers_are_bounded() {
    let u = response_usage(
            br#"{"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615}}"#,
        )
        .unwrap()
        .unwrap();
    assert_eq!(u.prompt_tokens, MAX_USAGE_TOKENS);
    assert_eq!(u.total_tokens, 2 * MAX_USAGE_TOKENS);
}

#[test]
fn duplicate_keys_and_bad_messages_are_refused() {
    let e = RequestView::parse(br#"{"stream":false,"model":"m","stream":true}"#)
        .err()
        .unwrap();
    assert_eq!(e.param.as_deref(), Some("stream"));
    assert!(e.message.contains("more than once"), "{}", e.message);
    let many: String = (0..40).map(|i| format!("\"k{i}\":1,")).collect();
    let body = format!("{{{many}\"k7\":2}}");
    assert_eq!(
        RequestView::parse(body.as_bytes())
            .err()
            .unwrap()
            .param
            .as_deref(),
        Some("k7")
    );
    for (messages, param) in [
        ("[42, null]", "messages[0]"),
        (r#"[{"role":"user","content":"a"}, null]"#, "messages[1]"),
        (r#"[{"role":"wizard"}]"#, "messages[0].role"),
        (r#"[{"content":"a"}]"#, "messages[0].role"),
        (r#"[{"role":5}]"#, "messages[0].role"),
        ("[]", "messages"),
        ("{}", "messages"),
    ] {
        let e = check_messages(messages).err().unwrap();
        assert_eq!(e.param.as_deref(), Some(param), "{messages}");
    }
    assert!(
        check_messages(r#"[{"role":"system","content":"a"},{"role":"user","content":[]}]"#).is_ok()
    );
    let v = RequestView::parse("{\"user\":\"a\\u0000b\"}".as_bytes()).unwrap();
    assert_eq!(v.user().err().unwrap().param.as_deref(), Some("user"));
    let long = format!("{{\"user\":\"{}\"}}", "u".repeat(MAX_USER_CHARS + 1));
    let v = RequestView::parse(long.as_bytes()).unwrap();
    assert!(v.user().is_err());
}

#[test]
fn input_shapes_are_counted_without_values() {
    let shape = |s: &str| InputShape::of(s).unwrap();
    assert_eq!(
        shape(r#""abcdefgh""#),
        InputShape {
            inputs: 1,
            tokens: 2
        }
    );
    assert_eq!(
        shape("[1,2,3]"),
        InputShape {
            inputs: 1,
            tokens: 3
        }
    );
    assert_eq!(
        shape("[[1,2],[3]]"),
        InputShape {
            inputs: 2,
            tokens: 3
        }
    );
    assert_eq!(
        shape(r#"["abcd","ab"]"#),
        InputShape {
            inputs: 2,
            tokens: 2
        }
    );
    let zeros = format!("[{}0]", "0,".repeat(100_000));
    assert_eq!(
        shape(&zeros),
        InputShape {
            inputs: 1,
            tokens: 100_001
        }
    );
    assert!(InputShape::of("[1,").is_none());
}

#[test]
fn sse_tap_keeps_usage_when_client_asked_and_handles_crlf_and_garbage() {
    let mut tap = SseTap::new(false);
    let frame =
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\r\n\r\n";
    assert_eq!(&tap.feed(frame).forward[..], frame);
    assert_eq!(
        &tap.feed(b": keep-alive\n\ndata: {oops\n\n").forward[..],
        b": keep-alive\n\ndata: {oops\n\n"
    );
    assert_eq!(
        &tap.feed(b"data: {\"error\":{\"message\":\"x\"}}").forward[..],
        b""
    );
    assert_eq!(&tap.finish()[..], b"data: {\"error\":{\"message\":\"x\"}}");
    assert!(tap.saw_error);
}

#[test]
fn usage_reads_cache_tokens_and_keeps_them_inside_the_prompt() {
    let body = br#"{"usage": {"prompt_tokens": 100, "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 40}, "cache_creation_input_tokens": 30}}"#;
    let u = response_usage(body).unwrap().unwrap();
    assert_eq!((u.cache_read_tokens, u.cache_creation_tokens), (40, 30));
    assert_eq!(u.total_tokens, 105);
    // Claims of more cached tokens than the prompt has are cut to the prompt.
    let body = br#"{"usage": {"prompt_tokens": 10, "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 8}, "cache_creation_input_tokens": 50}}"#;
    let u = response_usage(body).unwrap().unwrap();
    assert_eq!((u.cache_read_tokens, u.cache_creation_tokens), (8, 2));
    // `null` details (some servers send them) are none.
    let body = br#"{"usage": {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": null}}"#;
    assert_eq!(response_usage(body).unwrap().unwrap().cache_read_tokens, 0);
}

#[test]
fn only_an_opening_error_event_is_a_leading_error() {
    assert!(leading_error(b"data: {\"error\": {\"message\": \"x\"}}\n\n").is_some());
    assert!(leading_error(
        b"event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\"}}\n\n"
    )
    .is_some());
    // Content that mentions errors, or an error after the first event, is not one.
    assert!(leading_error(
        b"data: {\"choices\": [{\"delta\": {\"content\": \"\\\"error\\\"\"}}]}\n\n"
    )
    .is_none());
    assert!(leading_error(b"data: {\"choices\": []}\n\ndata: {\"error\": {}}\n\n").is_none());
    assert!(leading_error(b"data: {\"choices\": []}\n\n").is_none());
}
