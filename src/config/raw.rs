//! The serde mirror of the YAML file, field for field, before any validation.
//!
//! Names follow the spec (`llm_params`, `llm_settings`) and accept LiteLLM's spellings (`litellm_params`,
//! `litellm_settings`) so users can bring their existing files. Keys that later issues implement are parsed
//! here already; keys nobody knows land in the `other` maps and are reported as warnings.

use serde::Deserialize;
use serde_json::Map;
use serde_json::Value as Json;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, Default)]
pub struct RawConfig {
    #[serde(default)]
    pub model_list: Vec<RawDeployment>,
    #[serde(default, alias = "litellm_settings")]
    pub llm_settings: RawLlmSettings,
    #[serde(default)]
    pub router_settings: RawRouterSettings,
    #[serde(default)]
    pub general_settings: RawGeneralSettings,
    /// Top-level sections this gateway does not know (warned about at startup).
    #[serde(flatten)]
    pub other: BTreeMap<String, Json>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub model_name: String,
    #[serde(alias = "litellm_params")]
    pub llm_params: RawParams,
    #[serde(default)]
    pub model_info: Map<String, Json>,
}

#[derive(Debug, Deserialize)]
pub struct RawParams {
    /// `provider/name`, e.g. `openai/gpt-4o`, `hosted_vllm/llama-3`, `mock/echo`. No prefix means OpenAI.
    pub model: String,
    pub api_base: Option<String>,
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub weight: Option<f64>,
    /// Seconds.
    pub timeout: Option<f64>,
    /// Seconds, for `"stream": true` requests.
    pub stream_timeout: Option<f64>,
    pub max_retries: Option<u32>,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub cache_read_input_token_cost: Option<f64>,
    pub cache_creation_input_token_cost: Option<f64>,
    pub mock_response: Option<String>,
    /// Milliseconds the built-in mock waits before answering.
    pub mock_latency_ms: Option<u64>,
    /// Provider parameters this gateway passes through untouched (temperature defaults and the like).
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawLlmSettings {
    #[serde(default)]
    pub callbacks: Vec<String>,
    #[serde(default)]
    pub success_callback: Vec<String>,
    #[serde(default)]
    pub failure_callback: Vec<String>,
    #[serde(default)]
    pub service_callback: Vec<String>,
    #[serde(default)]
    pub custom_prometheus_metadata_labels: Vec<String>,
    #[serde(default)]
    pub prometheus_initialize_budget_metrics: bool,
    pub prometheus_latency_buckets: Option<Vec<f64>>,
    pub prometheus_end_user_metrics_max_series_per_metric: Option<usize>,
    #[serde(default)]
    pub prometheus_exclude_labels: Vec<String>,
    /// LiteLLM's name for the same setting is accepted too.
    #[serde(alias = "prometheus_metrics_max_series_per_metric")]
    pub prometheus_max_series_per_metric: Option<usize>,
    pub prometheus_metrics_config: Option<Vec<RawMetricsGroup>>,
    pub prometheus_metrics_ttl_seconds: Option<u64>,
    pub prometheus_end_user_metrics_ttl_seconds: Option<u64>,
    pub prometheus_metrics_cleanup_interval_seconds: Option<u64>,
    pub num_retries: Option<u32>,
    /// Seconds.
    pub request_timeout: Option<f64>,
    pub require_auth_for_metrics_endpoint: Option<bool>,
    /// Kept for later issues; listed at startup as "not implemented yet".
    #[serde(flatten)]
    pub other: BTreeMap<String, Json>,
}

/// One group of `llm_settings.prometheus_metrics_config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetricsGroup {
    #[serde(default)]
    pub group: Option<String>,
    pub metrics: Vec<String>,
    pub include_labels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawRouterSettings {
    pub routing_strategy: Option<String>,
    pub num_retries: Option<u32>,
    /// Seconds.
    pub retry_after: Option<f64>,
    /// Seconds.
    pub timeout: Option<f64>,
    pub allowed_fails: Option<u32>,
    /// Seconds.
    pub cooldown_time: Option<f64>,
    #[serde(default)]
    pub fallbacks: Vec<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub context_window_fallbacks: Vec<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub content_policy_fallbacks: Vec<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub default_fallbacks: Vec<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Json>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RawGeneralSettings {
    pub master_key: Option<String>,
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    /// Largest accepted request body, in MiB.
    pub max_request_size_mb: Option<f64>,
    /// Spend-log rows older than this are deleted (`7d`, `12h`, ...); kept forever when absent.
    pub maximum_spend_logs_retention_period: Option<String>,
    /// How often the retention runs (default `1d`).
    pub maximum_spend_logs_retention_interval: Option<String>,
    /// `/metrics` answers only to the master key (stricter than `require_auth_for_metrics_endpoint`).
    pub metrics_require_master_key: Option<bool>,
    /// Seconds a client may take to send its whole request body.
    pub request_body_timeout: Option<f64>,
    /// Seconds: the longest an upstream's `retry-after` may cool a deployment down or delay a retry.
    pub max_retry_after: Option<f64>,
    /// Seconds: the longest a streamed answer may last, however steadily it sends.
    pub max_stream_duration: Option<f64>,
    /// Seconds: the longest one database call may take before it counts as failed.
    pub database_timeout: Option<f64>,
    /// Spend-log rows held in memory while the database is away; past it, new requests get 503.
    pub max_unwritten_spend_logs: Option<usize>,
    /// `divide` (each replica enforces limit / replicas alone) or `refuse` (limited requests get 503)
    /// while Redis is unreachable.
    pub redis_outage_mode: Option<String>,
    /// Deployments created through `/model/new` are stored (and the management API for models is on).
    pub store_model_in_db: Option<bool>,
    /// The admin web UI at `/ui` (on by default when a master key is set).
    pub ui: Option<bool>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Json>,
}
