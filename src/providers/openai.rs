//! OpenAI-compatible upstreams (`openai/`, `hosted_vllm/`, `openai_compatible/`): the OpenAI wire format
//! as is. Every [`Provider`] default is this provider's behaviour; here is only its target (URLs under
//! `api_base`, a bearer key).

use super::adapter::Provider;
use super::target::{Target, TargetParams};
use super::Endpoint;

pub struct OpenAi;

impl Provider for OpenAi {}

/// `{api_base}/chat/completions`, `/completions`, `/embeddings`; `api_key` as a bearer token.
pub fn target(p: &TargetParams<'_>) -> Result<Target, String> {
    let mut t = Target::none();
    for e in [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
    ] {
        t = t.with_url(e, &format!("{}{}", p.api_base, e.path()), "api_base")?;
    }
    if let Some(key) = p.api_key {
        t = t.with_header(
            "authorization",
            &format!("Bearer {}", key.expose()),
            true,
            "api_key",
        )?;
    }
    Ok(t)
}
