//! The validated configuration: what the rest of the gateway reads, with every default applied.

use crate::providers::target::TargetParams;
use crate::providers::ProviderKind;
use crate::secret::Secret;
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default largest request body: 4 MiB, like the reference's default `max_request_size_mb`-free behaviour
/// of common reverse proxies. Overridden by `general_settings.max_request_size_mb`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Default upstream timeout when neither the deployment nor `llm_settings.request_timeout` sets one: 600 s.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: f64 = 600.0;
/// Default cap of distinct `end_user` label values per metric before folding into `other`.
pub const DEFAULT_END_USER_MAX_SERIES: usize = 10_000;
/// `router_settings.allowed_fails` default: failures per minute before a cooldown (LiteLLM's default).
pub const DEFAULT_ALLOWED_FAILS: u32 = 3;
/// `router_settings.cooldown_time` default, seconds (LiteLLM's default).
pub const DEFAULT_COOLDOWN_SECS: f64 = 5.0;
/// The reference's latency buckets, seconds (reference section 2, "LAT").
pub const DEFAULT_LATENCY_BUCKETS: [f64; 17] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 420.0,
    600.0,
];

/// One `model_list` entry, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentConfig {
    /// The public model group (`model_name`).
    pub model_name: String,
    /// `model_info.id`, or a stable hash of the entry.
    pub id: String,
    pub provider: ProviderKind,
    /// The model name the upstream knows (the part after `provider/`).
    pub model: String,
    /// Base URL without a trailing slash; empty for the built-in mock.
    pub api_base: String,
    /// `api_base` as labels, logs and `/health/deployments` show it: no `user:password@`, no query.
    pub api_base_shown: String,
    pub api_key: Option<Secret>,
    pub api_version: Option<String>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub weight: Option<f64>,
    pub timeout: Duration,
    pub stream_timeout: Duration,
    pub max_retries: Option<u32>,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    /// USD per prompt token read from the provider's prompt cache (Anthropic's default: a tenth of the
    /// input price).
    pub cache_read_input_token_cost: Option<f64>,
    /// USD per prompt token written to the provider's prompt cache (Anthropic's default: 1.25 times the
    /// input price).
    pub cache_creation_input_token_cost: Option<f64>,
    pub mock_response: Option<String>,
    pub mock_latency: Duration,
    pub extra_params: Map<String, Json>,
    pub model_info: Map<String, Json>,
}

impl DeploymentConfig {
    /// What its provider builds its target from.
    pub fn target_params(&self) -> TargetParams<'_> {
        TargetParams {
            api_base: &self.api_base,
            api_key: self.api_key.as_ref(),
            api_version: self.api_version.as_deref(),
            model: &self.model,
            extra: &self.extra_params,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// `"prometheus"` in `callbacks` (or success/failure callbacks).
    pub enabled: bool,
    /// `"prometheus_system"` in `service_callback`.
    pub system_enabled: bool,
    /// Configured keys (`metadata.foo`) with their label names (`metadata_foo`).
    pub custom_metadata_labels: Vec<CustomLabel>,
    pub latency_buckets: Vec<f64>,
    pub initialize_budget_metrics: bool,
    pub require_auth: bool,
    pub end_user_max_series: usize,
    /// `llm_settings.prometheus_exclude_labels`: label names left out of every family that has them.
    pub exclude_labels: Vec<String>,
    /// `llm_settings.prometheus_max_series_per_metric`: series per request-driven family before new label
    /// sets fold into one `other` series.
    pub max_series_per_family: usize,
    /// `llm_settings.prometheus_metrics_config`: when set, only these families exist, by registered name,
    /// each with the labels it keeps (`None`: all of them).
    pub metrics_config: Option<HashMap<&'static str, Option<Vec<String>>>>,
    /// `llm_settings.prometheus_metrics_ttl_seconds`: request-driven series not updated for this long are
    /// removed. Off by default.
    pub series_ttl: Option<Duration>,
    /// `llm_settings.prometheus_end_user_metrics_ttl_seconds` (default 3600): the same for series with an
    /// `end_user`, whose values are freed for new end users.
    pub end_user_series_ttl: Option<Duration>,
    /// `llm_settings.prometheus_metrics_cleanup_interval_seconds` (default 60): how often idle series are
    /// looked for.
    pub series_cleanup_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CustomLabel {
    /// Path inside the request's `metadata` object, e.g. `["foo"]` for `metadata.foo`.
    pub path: Vec<String>,
    /// The sanitized label name, e.g. `metadata_foo`.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouterSettings {
    pub routing_strategy: RoutingStrategy,
    pub num_retries: u32,
    pub retry_after: Duration,
    pub timeout: Option<Duration>,
    pub allowed_fails: u32,
    pub cooldown_time: Duration,
    pub fallbacks: BTreeMap<String, Vec<String>>,
    pub context_window_fallbacks: BTreeMap<String, Vec<String>>,
    pub content_policy_fallbacks: BTreeMap<String, Vec<String>>,
    pub default_fallbacks: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingStrategy {
    #[default]
    SimpleShuffle,
    LeastBusy,
    LatencyBased,
    UsageBased,
}

impl RoutingStrategy {
    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "simple-shuffle" => Some(Self::SimpleShuffle),
            "least-busy" => Some(Self::LeastBusy),
            "latency-based-routing" => Some(Self::LatencyBased),
            "usage-based-routing" | "usage-based-routing-v2" => Some(Self::UsageBased),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SimpleShuffle => "simple-shuffle",
            Self::LeastBusy => "least-busy",
            Self::LatencyBased => "latency-based-routing",
            Self::UsageBased => "usage-based-routing",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GeneralSettings {
    pub master_key: Option<Secret>,
    pub database_url: Option<Secret>,
    pub redis_url: Option<Secret>,
    pub max_request_bytes: usize,
    /// Spend-log retention; `None` keeps the log forever.
    pub spend_logs_retention: Option<Retention>,
    /// `metrics_require_master_key`: `/metrics` answers only to the master key.
    pub metrics_require_master_key: bool,
    /// `request_body_timeout`: a body still arriving after this is refused with 408.
    pub request_body_timeout: Duration,
    /// `max_retry_after`: an upstream's `retry-after` is cut to this.
    pub max_retry_after: Duration,
    /// `max_stream_duration`: a stream still running after this is ended with an error frame.
    pub max_stream_duration: Duration,
    /// `database_timeout`: one store call's limit.
    pub database_timeout: Duration,
    /// `max_unwritten_spend_logs`: spend-log rows held while the database is away before requests are
    /// refused (503) rather than served unrecorded.
    pub max_unwritten_spend_logs: usize,
    /// `redis_outage_mode`: how shared rpm/tpm limits are enforced while Redis is unreachable.
    pub redis_outage_mode: RedisOutageMode,
    /// `store_model_in_db`: the model management API (`/model/new`, `/model/update`, `/model/delete`) is
    /// on, and what it creates is stored and comes back after a restart.
    pub store_model_in_db: bool,
    /// `ui`: the admin web UI at `/ui`. Served only when a master key is set; `ui: false` turns it off.
    pub ui: bool,
}

/// What a replica does with rpm/tpm limits shared through Redis while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisOutageMode {
    /// Each replica enforces `limit / replicas` (the replicas seen alive before the outage) on its own
    /// count: the combined limit still holds, a busy replica may refuse early.
    #[default]
    Divide,
    /// Requests under an rpm/tpm limit get 503 until Redis is back; requests without one are served.
    Refuse,
}

/// Default of `general_settings.max_unwritten_spend_logs` (about 30 MB of rows).
pub const DEFAULT_MAX_UNWRITTEN_SPEND_LOGS: usize = 100_000;

/// Default of `general_settings.request_body_timeout`.
pub const DEFAULT_REQUEST_BODY_TIMEOUT_SECS: f64 = 30.0;
/// Default of `general_settings.max_retry_after`.
pub const DEFAULT_MAX_RETRY_AFTER_SECS: f64 = 300.0;
/// Default of `general_settings.max_stream_duration`.
pub const DEFAULT_MAX_STREAM_DURATION_SECS: f64 = 3600.0;
/// Default of `general_settings.database_timeout`.
pub const DEFAULT_DATABASE_TIMEOUT_SECS: f64 = 5.0;

/// `maximum_spend_logs_retention_period` and `maximum_spend_logs_retention_interval`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Spend-log rows that started longer ago than this are deleted.
    pub period: Duration,
    /// How often (default [`DEFAULT_RETENTION_INTERVAL`]).
    pub interval: Duration,
}

/// How often spend-log retention runs when `maximum_spend_logs_retention_interval` is not set (LiteLLM's
/// default).
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub model_list: Vec<DeploymentConfig>,
    pub metrics: MetricsSettings,
    pub router: RouterSettings,
    pub general: GeneralSettings,
    pub num_retries: Option<u32>,
    pub request_timeout: Duration,
    /// Keys that were parsed and kept but are not acted on yet, by YAML path.
    pub not_implemented: Vec<String>,
    /// Problems that do not stop startup (unknown top-level sections).
    pub warnings: Vec<String>,
}

/// Every problem found in a config file. Displayed one per line.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid config file {}:", self.path.display())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Series per metric family before new label sets fold into `other`.
pub const DEFAULT_MAX_SERIES_PER_FAMILY: usize = 100_000;
/// Seconds an end user's series stay without an update (LiteLLM's default).
pub const DEFAULT_END_USER_SERIES_TTL_S: u64 = 3600;
