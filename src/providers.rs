//! Provider adapters: how a request reaches an upstream and how its answer is read.
//!
//! - [`wire`]: pure parsers of the OpenAI wire format (request fields, usage, SSE frames, rate-limit headers);
//! - [`openai`]: any OpenAI-compatible server over awc (`openai/`, `hosted_vllm/`, `openai_compatible/`);
//! - [`mock`]: the built-in `mock/` provider that answers in-process, offline.

pub mod mock;
pub mod openai;
pub mod wire;

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
