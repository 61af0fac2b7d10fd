//! `POST /chat/completions`, `/completions`, `/embeddings`: one request end to end, in the order it goes.
//!
//! 1. here: read the body (size limit), authenticate, parse only the fields the gateway needs, find the
//!    model group, check access, admit on budgets and limits ([`admission`]);
//! 2. [`attempts`]: the requested group, then its fallbacks, each with its retries, asking the router's
//!    policy (`router/policy.rs`) which group is next and how long to wait, and each error what it means;
//! 3. [`upstream`]: one call to one deployment (or the built-in mock), the answer passed through (streams
//!    without buffering, metered by [`metered`]);
//! 4. [`pending`]: the request's accounting, finished exactly once: spend settled, a spend-log row, and
//!    one `RequestFinished` event with everything the metrics need.

mod admission;
mod attempts;
mod metered;
mod pending;
mod upstream;

use super::auth;
use super::state::AppState;
use crate::accounts::check_model_access;
use crate::actors::metrics::OVERFLOW;
use crate::config::{CustomLabel, RoutingStrategy};
use crate::error::ApiError;
use crate::providers::adapter::{translated, MessagesRequest};
use crate::providers::messages;
use crate::providers::wire::{
    check_messages, check_text, estimate_prompt_tokens, RequestView, MAX_METADATA_CHARS,
};
use crate::providers::Endpoint;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use admission::{admit_shared, spend_log_has_room};
use pending::{Answer, Pending};
use std::sync::Arc;
use upstream::Call;

pub async fn chat_completions(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Endpoint::ChatCompletions, req, body, state).await
}

pub async fn completions(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Endpoint::Completions, req, body, state).await
}

pub async fn embeddings(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Endpoint::Embeddings, req, body, state).await
}

/// `POST /v1/messages` (and `/anthropic/v1/messages`): the Messages API, for Anthropic SDK clients. The
/// request is served as a chat completion, so it gets the same accounting, limits, budgets, metrics and
/// fallbacks, whatever the deployment's provider. A deployment that speaks the Messages API (Anthropic)
/// gets the request as it came and its answer goes back as it came (marked [`upstream::Native`]); any
/// other gets it translated (`providers/messages.rs`, both ways).
pub async fn messages(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mut pending = Pending::new(&state);
    let answer = run(
        Endpoint::ChatCompletions,
        Dialect::Messages,
        &req,
        body,
        &state,
        &mut pending,
    )
    .await;
    match answer {
        Ok(Answer::Done(resp, outcome)) if resp.extensions().contains::<upstream::Native>() => {
            pending.send(outcome);
            resp
        }
        Ok(Answer::Streaming(resp)) if resp.extensions().contains::<upstream::Native>() => resp,
        Ok(Answer::Done(resp, outcome)) => {
            pending.send(outcome);
            let (head, body) = resp.into_parts();
            let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let out = serde_json::to_vec(&messages::from_openai(&v)).unwrap_or_default();
            head.set_body(out).map_into_boxed_body()
        }
        Ok(Answer::Streaming(resp)) => resp.map_body(|_, body| {
            let chunks = futures_util::stream::unfold(body, |mut body| async move {
                let next = futures_util::future::poll_fn(|cx| {
                    actix_web::body::MessageBody::poll_next(std::pin::Pin::new(&mut body), cx)
                })
                .await?;
                let item = next.map_err(|e| {
                    awc::error::PayloadError::Io(std::io::Error::other(e.to_string()))
                });
                Some((item, body))
            });
            let events = translated(Box::pin(chunks), Box::new(messages::EventWriter::default()));
            actix_web::body::BoxBody::new(actix_web::body::BodyStream::new(events))
        }),
        Err(err) => {
            log_error(&err);
            let mut resp = HttpResponse::build(err.status);
            if let Some(secs) = err.retry_after {
                resp.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            let out = resp.json(messages::error_body(&err));
            pending.fail(&err);
            out
        }
    }
}

/// Longest `anthropic-beta` header passed on to an Anthropic deployment (a longer one is not sent).
const MAX_BETA_HEADER_BYTES: usize = 1024;

/// The client's `anthropic-beta` header, checked: bounded, and none of the features that reach the
/// organisation's resources beyond one request (its files, MCP servers, code-execution containers), which
/// an ordinary key must not get at through the gateway's upstream key.
fn beta_header(req: &HttpRequest) -> Result<Option<&header::HeaderValue>, ApiError> {
    let Some(v) = req.headers().get("anthropic-beta") else {
        return Ok(None);
    };
    let bad = |m: &str| Err(ApiError::bad_request(m.to_owned()).with_param("anthropic-beta"));
    let Ok(text) = v.to_str() else {
        return bad("the `anthropic-beta` header must be printable ASCII");
    };
    if text.len() > MAX_BETA_HEADER_BYTES {
        return bad("the `anthropic-beta` header is too long");
    }
    if text
        .split(',')
        .map(str::trim)
        .any(|b| REFUSED_BETAS.iter().any(|p| b.starts_with(p)))
    {
        return bad(
            "the `anthropic-beta` header asks for a feature the gateway does not pass on (files, MCP servers, code execution)",
        );
    }
    Ok(Some(v))
}

/// `anthropic-beta` features refused (prefixes of their names).
const REFUSED_BETAS: [&str; 4] = ["files-api", "mcp-client", "code-execution", "skills"];

/// The API a client speaks: OpenAI's, or Anthropic's Messages API (translated to a chat completion).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Messages,
}

async fn handle(
    endpoint: Endpoint,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mut pending = Pending::new(&state);
    match run(
        endpoint,
        Dialect::OpenAi,
        &req,
        payload,
        &state,
        &mut pending,
    )
    .await
    {
        Ok(Answer::Done(resp, outcome)) => {
            pending.send(outcome);
            resp
        }
        Ok(Answer::Streaming(resp)) => resp,
        Err(err) => {
            log_error(&err);
            let resp = err.error_response();
            pending.fail(&err);
            resp
        }
    }
}

fn log_error(err: &ApiError) {
    match err.fault() {
        crate::error::Fault::Client => {
            tracing::debug!(status = err.status.as_u16(), class = %err.class(), "request rejected: {}", err.message)
        }
        _ => {
            tracing::warn!(status = err.status.as_u16(), class = %err.class(), "request failed: {}", err.message)
        }
    }
}

/// Reads a configured custom label's value from the request's `metadata`: only string values count, and
/// they must be fit for a label (bounded length, no control characters).
fn custom_value(
    metadata: &serde_json::Map<String, serde_json::Value>,
    label: &CustomLabel,
) -> Result<String, ApiError> {
    let mut cur = metadata.get(&label.path[0]);
    for part in &label.path[1..] {
        cur = cur.and_then(|v| v.get(part));
    }
    let value = cur.and_then(|v| v.as_str()).unwrap_or("");
    check_text(
        &format!("metadata.{}", label.path.join(".")),
        value,
        MAX_METADATA_CHARS,
    )?;
    Ok(value.to_owned())
}

fn validate_fields(endpoint: Endpoint, view: &RequestView<'_>) -> Result<(), ApiError> {
    fn non_empty_array(raw: &str) -> bool {
        raw.starts_with('[') && raw[1..].trim_start() != "]"
    }
    fn text_or_array(raw: &str) -> bool {
        raw.starts_with('[') || raw.starts_with('"')
    }
    match endpoint {
        Endpoint::ChatCompletions => {
            view.require("messages", "a non-empty array of messages", non_empty_array)?;
            view.get("messages")
                .map_or(Ok(()), |m| check_messages(m.get()))
        }
        Endpoint::Completions => view.require("prompt", "a string or an array", text_or_array),
        Endpoint::Embeddings => view.require("input", "a string or an array", text_or_array),
    }
}

async fn run(
    endpoint: Endpoint,
    dialect: Dialect,
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    pending: &mut Pending,
) -> Result<Answer, ApiError> {
    // Kept in the request's accounting and borrowed from there (a clone would be four reference counts up
    // and down, on lines every worker shares).
    let caller = pending.caller.insert(auth::authenticate(req, state).await?);
    pending.key = caller.labels.clone();
    let mut body =
        super::body::read_body(req, payload, state.config.general.max_request_bytes, state).await?;
    let original = body.clone();
    if dialect == Dialect::Messages {
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        body = serde_json::to_vec(&messages::to_openai(&v)?)
            .unwrap_or_default()
            .into();
    }
    let view = RequestView::parse(&body)?;
    let model = view.model()?;
    if let Ok(Some(user)) = view.user() {
        pending.end_user = Some(user.into_owned());
    }
    let labels = &state.config.metrics.custom_metadata_labels;
    let mut custom_error = None;
    if !labels.is_empty() {
        if let Ok(Some(meta)) = view.metadata() {
            match labels.iter().map(|l| custom_value(&meta, l)).collect() {
                Ok(values) => pending.custom = values,
                Err(e) => custom_error = Some(e),
            }
        }
    }
    let table = state.actors.routes.load_full();
    let Some(group) = table.group(&model) else {
        pending.requested_model = Arc::from(OVERFLOW);
        let shown: Vec<&str> = table.names.iter().take(50).map(|n| &**n).collect();
        let name: String = model.chars().take(100).collect();
        let mut err = ApiError::not_found(format!(
            "Invalid model name passed in model={name}. Call `/v1/models` to view available models for your key. Available models: {}",
            shown.join(", ")
        ))
        .with_param("model");
        err.code = Some("model_not_found".into());
        return Err(err);
    };
    pending.requested_model = group.name.clone();
    spend_log_has_room(state)?;
    view.user()?;
    view.metadata()?;
    if let Some(e) = custom_error {
        return Err(e);
    }
    validate_fields(endpoint, &view)?;
    let stream = endpoint.can_stream() && view.stream()?;
    let client_wants_usage = stream && view.include_usage()?;
    let router = &*table.settings;
    let num_retries = view.num_retries()?.unwrap_or(router.num_retries);
    let request_fallbacks = view.fallbacks()?;
    check_model_access(caller, &group.name, "model")?;
    if !group.serves(endpoint) {
        return Err(ApiError::bad_request(format!(
            "model group `{}` has no deployment that serves {}",
            group.name,
            endpoint.path()
        ))
        .with_param("model"));
    }
    // Fallbacks the request names itself must be groups the caller may use: refused before any call.
    for name in request_fallbacks.iter().flatten() {
        if let Some(g) = table.group(name) {
            check_model_access(caller, &g.name, "fallbacks")?;
        }
    }
    let end_user_entry = pending
        .end_user
        .as_ref()
        .and_then(|u| state.actors.accounts.end_users.get(u).map(|e| e.clone()));
    pending.admission =
        Some(admit_shared(state, caller, end_user_entry.as_deref(), &group.name).await?);
    pending.end_user_entry = end_user_entry;

    let tokens = match table.strategy {
        RoutingStrategy::UsageBased => estimate_prompt_tokens(&view),
        _ => 0,
    };
    let call = Call {
        endpoint,
        view: &view,
        body: &body,
        stream,
        client_wants_usage,
        deadline: router.timeout.map(|t| pending.started + t),
        strategy: table.strategy,
        retry_after: router.retry_after,
        tokens,
        num_retries,
        max_retry_after_secs: state.config.general.max_retry_after.as_secs().max(1),
        messages: match dialect {
            Dialect::Messages => Some(MessagesRequest {
                body: &original,
                beta: beta_header(req)?,
            }),
            Dialect::OpenAi => None,
        },
    };
    attempts::serve(&table, group, &call, request_fallbacks.as_ref(), pending).await
}
