//! Provider adapters: how a request reaches an upstream and how its answer is read.
//!
//! - [`adapter`]: what the request path asks of every provider ([`adapter::Provider`]);
//! - [`registry`]: which adapter and target builder serve which [`ProviderKind`];
//! - [`http`]: the HTTP exchange the HTTP providers share (pooled awc client, errors, stream translation);
//! - [`target`]: a deployment's URLs and headers, built once;
//! - [`wire`]: pure parsers of the OpenAI wire format (request fields, usage, SSE frames, rate-limit headers);
//! - [`openai_error`]: what an OpenAI-shaped error answer means;
//! - [`openai`]: any OpenAI-compatible server (`openai/`, `hosted_vllm/`, `openai_compatible/`);
//! - [`azure`]: Azure OpenAI (`azure/<deployment>`);
//! - [`anthropic`]: Anthropic's Messages API (`anthropic/claude-...`), translated both ways;
//! - [`messages`]: the gateway's own Messages API endpoint, translated to and from chat completions;
//! - [`mock`]: the built-in `mock/` provider that answers in-process, offline.

pub mod adapter;
pub mod anthropic;
pub mod azure;
pub mod http;
pub mod messages;
pub mod mock;
pub mod openai;
pub mod openai_error;
pub mod registry;
pub mod target;
pub mod wire;

/// The wire format an upstream speaks. `OpenAi` covers every OpenAI-compatible server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    OpenAi,
    HostedVllm,
    OpenAiCompatible,
    Azure,
    Anthropic,
    Mock,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 6] = [
        ProviderKind::OpenAi,
        ProviderKind::HostedVllm,
        ProviderKind::OpenAiCompatible,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
        ProviderKind::Mock,
    ];

    /// The prefix in `llm_params.model` and the `api_provider` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::HostedVllm => "hosted_vllm",
            ProviderKind::OpenAiCompatible => "openai_compatible",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Mock => "mock",
        }
    }

    /// Prefix of the `exception_class` label: the provider with only its first letter upper-cased
    /// (`Openai.RateLimitError`, `Hosted_vllm.InternalServerError`), as the reference does.
    pub fn class_prefix(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "Openai",
            ProviderKind::HostedVllm => "Hosted_vllm",
            ProviderKind::OpenAiCompatible => "Openai_compatible",
            ProviderKind::Azure => "Azure",
            ProviderKind::Anthropic => "Anthropic",
            ProviderKind::Mock => "Mock",
        }
    }

    pub fn parse(prefix: &str) -> Option<ProviderKind> {
        ProviderKind::ALL.into_iter().find(|p| p.as_str() == prefix)
    }
}

/// The OpenAI endpoints the gateway proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// The path below the upstream's `api_base`.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }

    pub fn can_stream(self) -> bool {
        !matches!(self, Endpoint::Embeddings)
    }
}
