//! What an OpenAI-shaped error answer says: its message, and its kind refined from its code or message
//! (a prompt too long for the model, a refused prompt), which sends it to its own fallbacks. Every
//! OpenAI-compatible provider answers errors this way; others reuse the refinement.

use super::ProviderKind;
use crate::error::{ApiError, ErrorKind};

const MAX_ERROR_MESSAGE_CHARS: usize = 2000;

/// An OpenAI-shaped error answer: its message, and its kind refined from its code or message.
pub fn error(provider: ProviderKind, status: u16, body: &[u8]) -> ApiError {
    let mut err = ApiError::upstream(provider, status, error_message(body, status));
    if let Some(kind) = refined_kind(status, body, &err.message) {
        err.kind = kind;
    }
    err
}

/// OpenAI-compatible servers answer 400 both for a prompt too long for the model and for a refused prompt;
/// routing sends each to its own fallbacks, so they are told apart by the error's `code` or message, as
/// LiteLLM does.
pub fn refined_kind(status: u16, body: &[u8], message: &str) -> Option<ErrorKind> {
    if status != 400 {
        return None;
    }
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let m = message.to_ascii_lowercase();
    if code == "context_length_exceeded"
        || m.contains("context length")
        || m.contains("context_length_exceeded")
        || m.contains("context window")
        || m.contains("too many tokens")
        || m.contains("prompt is too long")
        || m.contains("exceed context limit")
    {
        return Some(ErrorKind::ContextWindowExceededError);
    }
    if code == "content_policy_violation"
        || code == "content_filter"
        || m.contains("content policy")
        || m.contains("content management policy")
        || m.contains("content_policy_violation")
        || m.contains("content_filter")
    {
        return Some(ErrorKind::ContentPolicyViolationError);
    }
    None
}

/// The message of an upstream error body: OpenAI's `error.message`, else the text itself (shortened).
pub fn error_message(body: &[u8], status: u16) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Inner {
        Object { message: String },
        Text(String),
    }
    let msg = match serde_json::from_slice::<Body>(body) {
        Ok(Body {
            error: Inner::Object { message },
        })
        | Ok(Body {
            error: Inner::Text(message),
        }) => message,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let msg: String = msg.chars().take(MAX_ERROR_MESSAGE_CHARS).collect();
    if msg.is_empty() {
        format!("upstream answered HTTP {status} with no message")
    } else {
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":{"message":"Rate limited","type":"x"}}"#, 429),
            "Rate limited"
        );
        assert_eq!(error_message(br#"{"error":"plain"}"#, 500), "plain");
        assert_eq!(
            error_message(b"<html>bad gateway</html>", 502),
            "<html>bad gateway</html>"
        );
        assert_eq!(
            error_message(b"", 503),
            "upstream answered HTTP 503 with no message"
        );
    }
}
