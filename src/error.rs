//! The one error type of request time. It knows its HTTP status, its OpenAI error body, whether a retry
//! could help, and its class name for the `exception_class` label. [`ApiError`]'s `ResponseError` impl is
//! the single place a request error becomes an HTTP response.

use crate::providers::ProviderKind;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use std::fmt;

/// Payload-free error classes. Their names are the `exception_class` label values (prefixed with the
/// provider for upstream errors, as `Openai.RateLimitError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    BadRequestError,
    AuthenticationError,
    PermissionDeniedError,
    NotFoundError,
    Timeout,
    PayloadTooLargeError,
    UnprocessableEntityError,
    RateLimitError,
    BudgetExceededError,
    ContextWindowExceededError,
    ContentPolicyViolationError,
    InternalServerError,
    BadGatewayError,
    ServiceUnavailableError,
    APIConnectionError,
    APIError,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequestError => "BadRequestError",
            ErrorKind::AuthenticationError => "AuthenticationError",
            ErrorKind::PermissionDeniedError => "PermissionDeniedError",
            ErrorKind::NotFoundError => "NotFoundError",
            ErrorKind::Timeout => "Timeout",
            ErrorKind::PayloadTooLargeError => "PayloadTooLargeError",
            ErrorKind::UnprocessableEntityError => "UnprocessableEntityError",
            ErrorKind::RateLimitError => "RateLimitError",
            ErrorKind::BudgetExceededError => "BudgetExceededError",
            ErrorKind::ContextWindowExceededError => "ContextWindowExceededError",
            ErrorKind::ContentPolicyViolationError => "ContentPolicyViolationError",
            ErrorKind::InternalServerError => "InternalServerError",
            ErrorKind::BadGatewayError => "BadGatewayError",
            ErrorKind::ServiceUnavailableError => "ServiceUnavailableError",
            ErrorKind::APIConnectionError => "APIConnectionError",
            ErrorKind::APIError => "APIError",
        }
    }

    /// The class an upstream status maps to (the OpenAI SDK's exception names).
    pub fn from_upstream_status(status: u16) -> ErrorKind {
        match status {
            400 => ErrorKind::BadRequestError,
            401 => ErrorKind::AuthenticationError,
            403 => ErrorKind::PermissionDeniedError,
            404 => ErrorKind::NotFoundError,
            408 => ErrorKind::Timeout,
            413 => ErrorKind::PayloadTooLargeError,
            422 => ErrorKind::UnprocessableEntityError,
            429 => ErrorKind::RateLimitError,
            500 => ErrorKind::InternalServerError,
            502 => ErrorKind::BadGatewayError,
            503 => ErrorKind::ServiceUnavailableError,
            _ => ErrorKind::APIError,
        }
    }

    /// The OpenAI `error.type` value.
    fn wire_type(self) -> &'static str {
        match self {
            ErrorKind::BadRequestError
            | ErrorKind::NotFoundError
            | ErrorKind::PayloadTooLargeError
            | ErrorKind::UnprocessableEntityError
            | ErrorKind::ContextWindowExceededError
            | ErrorKind::ContentPolicyViolationError => "invalid_request_error",
            ErrorKind::AuthenticationError => "authentication_error",
            ErrorKind::PermissionDeniedError => "permission_error",
            ErrorKind::RateLimitError => "rate_limit_error",
            ErrorKind::BudgetExceededError => "budget_exceeded",
            ErrorKind::Timeout => "timeout_error",
            ErrorKind::InternalServerError
            | ErrorKind::BadGatewayError
            | ErrorKind::ServiceUnavailableError
            | ErrorKind::APIConnectionError
            | ErrorKind::APIError => "api_error",
        }
    }
}

/// Whose fault an error is; decides retries (issue: resilient routing) and log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Set for errors that came from an upstream: prefixes the class name.
    pub provider: Option<ProviderKind>,
    /// Seconds, sent as `retry-after`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            status,
            message: message.into(),
            param: None,
            code: None,
            provider: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequestError, StatusCode::BAD_REQUEST, message)
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_owned());
        self
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::AuthenticationError,
            StatusCode::UNAUTHORIZED,
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFoundError, StatusCode::NOT_FOUND, message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            ErrorKind::PayloadTooLargeError,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than the limit of {limit} bytes (general_settings.max_request_size_mb)"
            ),
        )
    }

    /// An error the upstream answered with its own status.
    pub fn upstream(provider: ProviderKind, status: u16, message: impl Into<String>) -> Self {
        let status_code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        ApiError {
            kind: ErrorKind::from_upstream_status(status),
            status: status_code,
            message: message.into(),
            param: None,
            code: Some(status.to_string()),
            provider: Some(provider),
            retry_after: None,
        }
    }

    /// The upstream could not be reached or answered something unreadable.
    pub fn upstream_failure(
        provider: ProviderKind,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        let status = match kind {
            ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError {
            provider: Some(provider),
            ..ApiError::new(kind, status, message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::InternalServerError,
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        )
    }

    /// The `exception_class` label value.
    pub fn class(&self) -> String {
        match self.provider {
            Some(p) => format!("{}.{}", p.class_prefix(), self.kind.as_str()),
            None => self.kind.as_str().to_owned(),
        }
    }

    pub fn fault(&self) -> Fault {
        if self.provider.is_some() {
            Fault::Upstream
        } else if self.status.is_server_error() {
            Fault::Internal
        } else {
            Fault::Client
        }
    }

    /// Whether another attempt (same or other deployment) could succeed: 408, 429, 5xx, connection errors.
    /// What this error means for routing (see [`Meaning`]).
    pub fn meaning(&self) -> Meaning {
        Meaning::of(self.provider.is_some(), self.status.as_u16(), self.kind)
    }

    pub fn is_retryable(&self) -> bool {
        self.meaning().retry
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind.wire_type(),
                "param": self.param,
                "code": self.code.clone().unwrap_or_else(|| self.status.as_u16().to_string()),
            }
        })
    }
}

/// Which fallback list a failed group sends a request to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// None: the request itself is at fault (a bad request goes nowhere else).
    No,
    /// `fallbacks` (or `default_fallbacks`).
    General,
    /// `context_window_fallbacks`.
    ContextWindow,
    /// `content_policy_fallbacks`.
    ContentPolicy,
}

/// What an error means for routing, decided in this one place: whether the request is tried again
/// (`num_retries`), which fallbacks it goes to, whether it counts against the deployment that answered it
/// (towards `allowed_fails` and its health) and whether it cools that deployment down at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meaning {
    pub retry: bool,
    pub fallback: Fallback,
    pub against_deployment: bool,
    pub cools_down_at_once: bool,
}

impl Meaning {
    /// `upstream`: the error came from (or on the way to) a deployment, not from the gateway itself.
    pub fn of(upstream: bool, status: u16, kind: ErrorKind) -> Meaning {
        // The request's own fault: malformed, too large, refused content, too long for the model.
        let requests_fault = matches!(status, 400 | 403 | 413 | 422);
        let fallback = match kind {
            ErrorKind::ContextWindowExceededError => Fallback::ContextWindow,
            ErrorKind::ContentPolicyViolationError => Fallback::ContentPolicy,
            _ if upstream && !matches!(status, 400 | 413 | 422) => Fallback::General,
            // The gateway's own "nothing available": every deployment cooling, no capacity, timed out.
            _ if !upstream && matches!(status, 429 | 503 | 408) => Fallback::General,
            _ => Fallback::No,
        };
        let against_deployment = upstream && !requests_fault;
        Meaning {
            retry: upstream && (matches!(status, 408 | 429) || (500..600).contains(&status)),
            fallback,
            against_deployment,
            // LiteLLM's list: rate limited, bad credentials, unknown model, timeout.
            cools_down_at_once: against_deployment && matches!(status, 429 | 401 | 404 | 408),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            resp.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        resp.json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_follow_the_reference() {
        let e = ApiError::upstream(ProviderKind::OpenAi, 429, "slow down");
        assert_eq!(e.class(), "Openai.RateLimitError");
        assert!(e.is_retryable());
        assert_eq!(ApiError::bad_request("x").class(), "BadRequestError");
        assert!(!ApiError::bad_request("x").is_retryable());
        let e = ApiError::upstream(ProviderKind::HostedVllm, 503, "down");
        assert_eq!(e.class(), "Hosted_vllm.ServiceUnavailableError");
    }

    #[test]
    fn body_has_the_openai_shape() {
        let b = ApiError::bad_request("bad").with_param("model").body();
        assert_eq!(b["error"]["message"], "bad");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert_eq!(b["error"]["param"], "model");
        assert_eq!(b["error"]["code"], "400");
    }
}

#[cfg(test)]
mod meaning_tests {
    use super::{ErrorKind as K, Fallback as F, Meaning};

    /// The one table of what errors mean: (from a deployment, status, kind) -> retry, fallback, counts
    /// against the deployment, cools it down at once.
    #[test]
    fn what_each_error_means() {
        let cases: &[(bool, u16, K, bool, F, bool, bool)] = &[
            (
                true,
                500,
                K::InternalServerError,
                true,
                F::General,
                true,
                false,
            ),
            (true, 502, K::BadGatewayError, true, F::General, true, false),
            (
                true,
                503,
                K::ServiceUnavailableError,
                true,
                F::General,
                true,
                false,
            ),
            (true, 429, K::RateLimitError, true, F::General, true, true),
            (true, 408, K::Timeout, true, F::General, true, true),
            (
                true,
                401,
                K::AuthenticationError,
                false,
                F::General,
                true,
                true,
            ),
            (true, 404, K::NotFoundError, false, F::General, true, true),
            (
                true,
                403,
                K::PermissionDeniedError,
                false,
                F::General,
                false,
                false,
            ),
            (true, 400, K::BadRequestError, false, F::No, false, false),
            (
                true,
                413,
                K::PayloadTooLargeError,
                false,
                F::No,
                false,
                false,
            ),
            (
                true,
                422,
                K::UnprocessableEntityError,
                false,
                F::No,
                false,
                false,
            ),
            (
                true,
                400,
                K::ContextWindowExceededError,
                false,
                F::ContextWindow,
                false,
                false,
            ),
            (
                true,
                400,
                K::ContentPolicyViolationError,
                false,
                F::ContentPolicy,
                false,
                false,
            ),
            (
                true,
                0,
                K::APIConnectionError,
                false,
                F::General,
                true,
                false,
            ),
            (
                false,
                503,
                K::ServiceUnavailableError,
                false,
                F::General,
                false,
                false,
            ),
            (
                false,
                429,
                K::RateLimitError,
                false,
                F::General,
                false,
                false,
            ),
            (false, 408, K::Timeout, false, F::General, false, false),
            (false, 400, K::BadRequestError, false, F::No, false, false),
            (
                false,
                401,
                K::AuthenticationError,
                false,
                F::No,
                false,
                false,
            ),
            (false, 404, K::NotFoundError, false, F::No, false, false),
        ];
        for &(upstream, status, kind, retry, fallback, against, at_once) in cases {
            assert_eq!(
                Meaning::of(upstream, status, kind),
                Meaning {
                    retry,
                    fallback,
                    against_deployment: against,
                    cools_down_at_once: at_once,
                },
                "{upstream} {status} {kind:?}"
            );
        }
    }
}
