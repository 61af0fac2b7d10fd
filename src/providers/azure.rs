//! Azure OpenAI (`azure/<deployment-name>`): the OpenAI wire format behind Azure's URL shape and headers.
//!
//! `{api_base}/openai/deployments/{deployment}/{chat/completions|completions|embeddings}?api-version=...`,
//! with `api_key` sent as `api-key` (or `azure_ad_token` as a bearer token). Answers, streams, usage and the
//! `x-ratelimit-remaining-*` headers are OpenAI's, so every [`Provider`] default applies; a content-filter
//! refusal (`code: content_filter`) is a content-policy error, so `content_policy_fallbacks` apply.

use super::adapter::Provider;
use super::target::{Target, TargetParams};
use super::Endpoint;

pub struct Azure;

impl Provider for Azure {}

/// Azure's URLs and credentials; `api_version` is required, and a key or an Azure AD token.
pub fn target(p: &TargetParams<'_>) -> Result<Target, String> {
    let version = p
        .api_version
        .filter(|v| !v.trim().is_empty())
        .ok_or("api_version` is required for azure deployments (e.g. 2024-10-21)")?;
    if !version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err("api_version`: must be letters, digits, `-` and `.` (e.g. 2024-10-21)".into());
    }
    if p.model.contains(['/', '?', '#', ' ']) {
        return Err("model`: an Azure deployment name has no `/`, `?`, `#` or spaces".into());
    }
    let mut t = Target::none();
    for e in [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
    ] {
        let url = format!(
            "{}/openai/deployments/{}{}?api-version={version}",
            p.api_base,
            p.model,
            e.path()
        );
        t = t.with_url(e, &url, "api_base")?;
    }
    let token = p
        .extra
        .get("azure_ad_token")
        .and_then(|v| v.as_str())
        .filter(|t| !t.is_empty());
    match (p.api_key, token) {
        (Some(key), _) => t.with_header("api-key", key.expose(), true, "api_key"),
        (None, Some(token)) => t.with_header(
            "authorization",
            &format!("Bearer {token}"),
            true,
            "azure_ad_token",
        ),
        (None, None) => {
            Err("api_key` (or `azure_ad_token`) is required for azure deployments".into())
        }
    }
}
