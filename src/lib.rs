//! `llm`: an OpenAI-compatible LLM gateway. See ARCHITECTURE.md for the map; [`actors`] says who messages whom.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod actors;
pub mod config;
pub mod deployment;
pub mod error;
pub mod http;
pub mod labels;
pub mod metrics;
pub mod mock_upstream;
pub mod providers;
pub mod router;
pub mod secret;
pub mod server;
pub mod store;
pub mod units;
pub mod window;
