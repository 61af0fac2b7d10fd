//! Which adapter speaks for which provider, and how each builds its target: the one place a new provider
//! is registered (besides its `ProviderKind` name).

use super::adapter::Provider;
use super::target::{Target, TargetParams};
use super::{anthropic, azure, mock, openai, ProviderKind};

/// The adapter of `kind`.
pub fn provider(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::OpenAi | ProviderKind::HostedVllm | ProviderKind::OpenAiCompatible => {
            &openai::OpenAi
        }
        ProviderKind::Azure => &azure::Azure,
        ProviderKind::Anthropic => &anthropic::Anthropic,
        ProviderKind::Mock => &mock::Mock,
    }
}

/// The target of a deployment of `kind`: its URLs and headers, or what is wrong with its settings (the
/// setting's path after `llm_params.`, then the problem).
pub fn target(kind: ProviderKind, p: &TargetParams<'_>) -> Result<Target, String> {
    match kind {
        ProviderKind::OpenAi | ProviderKind::HostedVllm | ProviderKind::OpenAiCompatible => {
            openai::target(p)
        }
        ProviderKind::Azure => azure::target(p),
        ProviderKind::Anthropic => anthropic::target(p),
        ProviderKind::Mock => Ok(Target::none()),
    }
}
