//! Configuration: YAML file -> [`raw::RawConfig`] (serde mirror) -> [`Config`] (validated, defaults applied).
//!
//! Loading collects every problem it finds and reports each with its YAML path and the fix, so one run of
//! `llm --check-config` lists them all. `os.environ/NAME` is resolved wherever a string is allowed.

pub mod raw;

use crate::providers::ProviderKind;
use crate::secret::Secret;
use raw::{RawConfig, RawDeployment};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
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
    pub mock_response: Option<String>,
    pub mock_latency: Duration,
    pub extra_params: Map<String, Json>,
    pub model_info: Map<String, Json>,
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
    fn parse(s: &str) -> Option<Self> {
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

/// `llm_settings.prometheus_metrics_config`: every metric must be a family of the catalog and every
/// `include_labels` entry one of its labels (custom ones included); when a metric is in several groups with
/// `include_labels`, the last wins (as in LiteLLM).
fn metrics_config(
    groups: &[raw::RawMetricsGroup],
    settings: &MetricsSettings,
    problems: &mut Vec<String>,
) -> HashMap<&'static str, Option<Vec<String>>> {
    use crate::metrics::catalog;
    let mut out: HashMap<&'static str, Option<Vec<String>>> = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        for (i, name) in group.metrics.iter().enumerate() {
            let at = format!("llm_settings.prometheus_metrics_config[{g}].metrics[{i}]");
            let Some(e) = catalog::entry(name) else {
                let known: Vec<&str> = catalog::CATALOG.iter().map(|e| e.name).collect();
                problems.push(format!(
                    "`{at}`: `{name}` is not a metric of the gateway (known: {})",
                    known.join(", ")
                ));
                continue;
            };
            let mut all: Vec<String> = e.labels.iter().map(|l| l.to_string()).collect();
            if e.custom {
                all.extend(
                    settings
                        .custom_metadata_labels
                        .iter()
                        .map(|c| c.label.clone()),
                );
            }
            match &group.include_labels {
                None => {
                    out.entry(e.name).or_insert(None);
                }
                Some(include) => {
                    for (j, l) in include.iter().enumerate() {
                        if !all.contains(l) {
                            problems.push(format!(
                                "`llm_settings.prometheus_metrics_config[{g}].include_labels[{j}]`: `{l}` is not a label of `{}` (its labels: {})",
                                e.name,
                                all.join(", ")
                            ));
                        }
                    }
                    out.insert(e.name, Some(include.clone()));
                }
            }
        }
    }
    out
}

/// Label names the gateway itself uses; a custom metadata label may not take one of them.
const BUILTIN_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "team_id",
    "user",
    "status_code",
    "exception_status",
    "exception_class",
    "model",
    "model_group",
    "llm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "fallback_model",
    "le",
];

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses and validates `text`; `env` resolves `os.environ/NAME` (the process environment in production).
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            path: path.to_owned(),
            problems,
        };
        let mut tree: serde_norway::Value = match serde_norway::from_str(text) {
            Ok(serde_norway::Value::Null) => serde_norway::Value::Mapping(Default::default()),
            Ok(v) => v,
            Err(e) => {
                let at = e
                    .location()
                    .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
                    .unwrap_or_default();
                return Err(fail(vec![format!(
                    "the file is not valid YAML{at}: {e}; fix the syntax there"
                )]));
            }
        };
        if !tree.is_mapping() {
            return Err(fail(vec![
                "the top level must be a mapping with `model_list`, `llm_settings`, `router_settings`, `general_settings`"
                    .into(),
            ]));
        }
        // Ids are derived from the entry as written (before env resolution), so rotating a key keeps the id.
        let derived_ids = derive_ids(&tree);
        let mut problems = Vec::new();
        resolve_env(&mut tree, &mut String::new(), env, &mut problems);
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        let raw: RawConfig = match serde_path_to_error::deserialize(tree) {
            Ok(raw) => raw,
            Err(e) => {
                let at = e.path().to_string();
                return Err(fail(vec![format!("`{at}`: {}", e.inner())]));
            }
        };
        validate(raw, path, derived_ids, env("DATABASE_URL")).map_err(fail)
    }

    /// One deployment given as JSON (a `/model/new` body, or a stored one), validated as a `model_list`
    /// entry is: `os.environ/NAME` resolved with `env`, every problem listed with its path under `at`.
    /// `model_info.id` must be set (the API gives every model one).
    pub fn parse_model(
        entry: &Json,
        at: &str,
        request_timeout: Duration,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<DeploymentConfig, Vec<String>> {
        let mut tree: serde_norway::Value = match serde_norway::to_value(entry) {
            Ok(v) => v,
            Err(e) => return Err(vec![format!("`{at}`: {e}")]),
        };
        let mut problems = Vec::new();
        // `os.environ/NAME` is read only in credential parameters: anywhere else its value could come back
        // in an answer, a label or an error message, and let whoever holds the master key read the
        // server's environment.
        env_only_in_secrets(&tree, &mut at.to_owned(), false, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut path = at.to_owned();
        resolve_env(&mut tree, &mut path, env, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        let raw: RawDeployment = match serde_path_to_error::deserialize(tree) {
            Ok(raw) => raw,
            Err(e) => {
                let inner = e.path().to_string();
                let inner = if inner == "." {
                    String::new()
                } else {
                    format!(".{inner}")
                };
                return Err(vec![format!("`{at}{inner}`: {}", e.inner())]);
            }
        };
        let Some(id) = raw
            .model_info
            .get("id")
            .and_then(Json::as_str)
            .filter(|id| !id.trim().is_empty())
            .map(str::to_owned)
        else {
            return Err(vec![format!("`{at}.model_info.id` is required")]);
        };
        match deployment(raw, at, Some(id), request_timeout, &mut problems) {
            Some(d) if problems.is_empty() => Ok(d),
            _ => Err(problems),
        }
    }

    /// Whether an API call must present the master key (or, later, a virtual key).
    pub fn auth_required(&self) -> bool {
        self.general.master_key.is_some()
    }
}

/// The longest duration a setting may have (ten years): more is a typo, and `Duration` arithmetic on it
/// would overflow.
const MAX_SETTING_SECS: f64 = 10.0 * 365.0 * 86_400.0;

fn secs(path: &str, v: f64, problems: &mut Vec<String>) -> Duration {
    if v.is_finite() && v > MAX_SETTING_SECS {
        problems.push(format!(
            "`{path}` is {v} seconds; at most {MAX_SETTING_SECS} (ten years)"
        ));
        return Duration::from_secs(1);
    }
    if !(v.is_finite() && v > 0.0) {
        problems.push(format!(
            "`{path}` must be a positive number of seconds, got {v}"
        ));
        return Duration::from_secs(1);
    }
    Duration::from_secs_f64(v)
}

/// Seconds that may be zero (negative counts as zero), bounded like [`secs`].
fn secs_or_zero(path: &str, v: f64, problems: &mut Vec<String>) -> Duration {
    if v.is_nan() || v <= 0.0 {
        return Duration::ZERO;
    }
    secs(path, v, problems)
}

/// A `general_settings` number of seconds, or its default.
fn setting_secs(key: &str, v: Option<f64>, default: f64, problems: &mut Vec<String>) -> Duration {
    secs(
        &format!("general_settings.{key}"),
        v.unwrap_or(default),
        problems,
    )
}

fn validate(
    raw: RawConfig,
    path: &Path,
    derived_ids: Vec<String>,
    database_url_env: Option<String>,
) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut not_implemented = Vec::new();

    for key in raw.other.keys() {
        warnings.push(format!(
            "unknown top-level section `{key}` is ignored (known: model_list, llm_settings, router_settings, general_settings)"
        ));
    }

    let s = &raw.llm_settings;
    let request_timeout = secs(
        "llm_settings.request_timeout",
        s.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS),
        &mut problems,
    );

    // Deployments.
    let mut model_list = Vec::with_capacity(raw.model_list.len());
    let mut seen_ids: HashMap<String, usize> = HashMap::new();
    for (i, d) in raw.model_list.into_iter().enumerate() {
        let at = format!("model_list[{i}]");
        match deployment(
            d,
            &at,
            derived_ids.get(i).cloned(),
            request_timeout,
            &mut problems,
        ) {
            Some(dep) => {
                if let Some(first) = seen_ids.insert(dep.id.clone(), i) {
                    problems.push(format!(
                        "`{at}.model_info.id`: `{}` is already the id of model_list[{first}]; ids must be unique",
                        dep.id
                    ));
                }
                model_list.push(dep);
            }
            None => continue,
        }
    }
    let groups: HashSet<&str> = model_list.iter().map(|d| d.model_name.as_str()).collect();

    // llm_settings.
    let mut custom_metadata_labels = Vec::new();
    for (i, key) in s.custom_prometheus_metadata_labels.iter().enumerate() {
        let at = format!("llm_settings.custom_prometheus_metadata_labels[{i}]");
        let rest = key.strip_prefix("metadata.").unwrap_or(key);
        let path: Vec<String> = rest.split('.').map(str::to_owned).collect();
        if rest.is_empty() || path.iter().any(String::is_empty) {
            problems.push(format!(
                "`{at}`: `{key}` is not a metadata path; write it as `metadata.<field>` (e.g. `metadata.foo`)"
            ));
            continue;
        }
        let label = sanitize_label_name(&key.replace('.', "_"));
        if BUILTIN_LABELS.contains(&label.as_str()) {
            problems.push(format!(
                "`{at}`: `{key}` becomes label `{label}`, which the gateway already uses; pick another key"
            ));
            continue;
        }
        if custom_metadata_labels
            .iter()
            .any(|c: &CustomLabel| c.label == label)
        {
            problems.push(format!("`{at}`: label `{label}` is configured twice"));
            continue;
        }
        custom_metadata_labels.push(CustomLabel { path, label });
    }
    let latency_buckets = match &s.prometheus_latency_buckets {
        None => DEFAULT_LATENCY_BUCKETS.to_vec(),
        Some(b) => {
            let ok = !b.is_empty()
                && b.iter().all(|x| x.is_finite())
                && b.windows(2).all(|w| w[0] < w[1]);
            if !ok {
                problems.push(
                    "`llm_settings.prometheus_latency_buckets` must be a non-empty list of finite, strictly increasing numbers of seconds"
                        .into(),
                );
            }
            b.clone()
        }
    };
    let mut exclude_labels = Vec::new();
    for (i, name) in s.prometheus_exclude_labels.iter().enumerate() {
        let known = BUILTIN_LABELS.contains(&name.as_str())
            || custom_metadata_labels.iter().any(|c| c.label == *name);
        if !known {
            problems.push(format!(
                "`llm_settings.prometheus_exclude_labels[{i}]`: `{name}` is not a label of any metric (known: {}, and the custom metadata labels)",
                BUILTIN_LABELS.join(", ")
            ));
        } else if !exclude_labels.contains(name) {
            exclude_labels.push(name.clone());
        }
    }
    let has_prometheus = |l: &Vec<String>| l.iter().any(|c| c == "prometheus");
    for (i, c) in s.service_callback.iter().enumerate() {
        if c != "prometheus_system" {
            warnings.push(format!(
                "`llm_settings.service_callback[{i}]`: `{c}` is not known and is ignored (known: prometheus_system)"
            ));
        }
    }
    for (list, name) in [
        (&s.callbacks, "callbacks"),
        (&s.success_callback, "success_callback"),
        (&s.failure_callback, "failure_callback"),
    ] {
        for (i, c) in list.iter().enumerate() {
            if c != "prometheus" {
                warnings.push(format!(
                    "`llm_settings.{name}[{i}]`: callback `{c}` is not known and is ignored (known: prometheus)"
                ));
            }
        }
    }
    let metrics = MetricsSettings {
        enabled: has_prometheus(&s.callbacks)
            || has_prometheus(&s.success_callback)
            || has_prometheus(&s.failure_callback),
        system_enabled: s.service_callback.iter().any(|c| c == "prometheus_system"),
        custom_metadata_labels,
        latency_buckets,
        initialize_budget_metrics: s.prometheus_initialize_budget_metrics,
        require_auth: s.require_auth_for_metrics_endpoint.unwrap_or(false),
        end_user_max_series: s
            .prometheus_end_user_metrics_max_series_per_metric
            .unwrap_or(DEFAULT_END_USER_MAX_SERIES),
        exclude_labels,
        max_series_per_family: match s.prometheus_max_series_per_metric {
            Some(0) => {
                problems.push(
                    "`llm_settings.prometheus_max_series_per_metric` must be at least 1".into(),
                );
                1
            }
            Some(n) => n,
            None => DEFAULT_MAX_SERIES_PER_FAMILY,
        },
        metrics_config: None,
        series_ttl: s
            .prometheus_metrics_ttl_seconds
            .filter(|n| *n > 0)
            .map(Duration::from_secs),
        end_user_series_ttl: match s.prometheus_end_user_metrics_ttl_seconds {
            None => Some(Duration::from_secs(DEFAULT_END_USER_SERIES_TTL_S)),
            Some(0) => None,
            Some(n) => Some(Duration::from_secs(n)),
        },
        series_cleanup_interval: Duration::from_secs(
            s.prometheus_metrics_cleanup_interval_seconds
                .unwrap_or(60)
                .clamp(1, 86_400),
        ),
    };
    let mut metrics = metrics;
    if let Some(groups) = &s.prometheus_metrics_config {
        metrics.metrics_config = Some(metrics_config(groups, &metrics, &mut problems));
    }
    for key in s.other.keys() {
        not_implemented.push(format!("llm_settings.{key}"));
    }

    // router_settings.
    let r = &raw.router_settings;
    let routing_strategy = match r.routing_strategy.as_deref() {
        None => RoutingStrategy::SimpleShuffle,
        Some(name) => RoutingStrategy::parse(name).unwrap_or_else(|| {
            problems.push(format!(
                "`router_settings.routing_strategy`: unknown strategy `{name}`; use simple-shuffle, least-busy, latency-based-routing or usage-based-routing"
            ));
            RoutingStrategy::SimpleShuffle
        }),
    };
    let mut fallback_map = |list: &Vec<BTreeMap<String, Vec<String>>>, name: &str| {
        let mut out = BTreeMap::new();
        for (i, entry) in list.iter().enumerate() {
            for (from, to) in entry {
                if !groups.contains(from.as_str()) {
                    problems.push(format!(
                        "`router_settings.{name}[{i}]`: `{from}` is not a model_name in model_list"
                    ));
                }
                for t in to {
                    if !groups.contains(t.as_str()) {
                        problems.push(format!(
                            "`router_settings.{name}[{i}].{from}`: fallback `{t}` is not a model_name in model_list"
                        ));
                    }
                }
                out.insert(from.clone(), to.clone());
            }
        }
        out
    };
    let fallbacks = fallback_map(&r.fallbacks, "fallbacks");
    let context_window_fallbacks =
        fallback_map(&r.context_window_fallbacks, "context_window_fallbacks");
    let content_policy_fallbacks =
        fallback_map(&r.content_policy_fallbacks, "content_policy_fallbacks");
    for (i, t) in r.default_fallbacks.iter().enumerate() {
        if !groups.contains(t.as_str()) {
            problems.push(format!(
                "`router_settings.default_fallbacks[{i}]`: `{t}` is not a model_name in model_list"
            ));
        }
    }
    let router = RouterSettings {
        routing_strategy,
        num_retries: r.num_retries.or(s.num_retries).unwrap_or(0),
        retry_after: r
            .retry_after
            .map(|v| secs_or_zero("router_settings.retry_after", v, &mut problems))
            .unwrap_or_default(),
        timeout: r
            .timeout
            .map(|v| secs("router_settings.timeout", v, &mut problems)),
        allowed_fails: r.allowed_fails.unwrap_or(DEFAULT_ALLOWED_FAILS),
        cooldown_time: secs_or_zero(
            "router_settings.cooldown_time",
            r.cooldown_time.unwrap_or(DEFAULT_COOLDOWN_SECS),
            &mut problems,
        ),
        fallbacks,
        context_window_fallbacks,
        content_policy_fallbacks,
        default_fallbacks: r.default_fallbacks.clone(),
    };
    for key in r.other.keys() {
        not_implemented.push(format!("router_settings.{key}"));
    }

    // general_settings.
    let g = raw.general_settings;
    let max_request_bytes = match g.max_request_size_mb {
        None => DEFAULT_MAX_REQUEST_BYTES,
        Some(mb) if mb.is_finite() && mb > 0.0 => (mb * 1024.0 * 1024.0) as usize,
        Some(mb) => {
            problems.push(format!(
                "`general_settings.max_request_size_mb` must be a positive number of MiB, got {mb}"
            ));
            DEFAULT_MAX_REQUEST_BYTES
        }
    };
    let master_key = g.master_key.filter(|k| !k.is_empty()).map(Secret::new);
    if let Some(k) = &master_key {
        if !k.expose().starts_with("sk-") {
            problems.push(
                "`general_settings.master_key` must start with `sk-` (as LiteLLM requires)".into(),
            );
        }
    }
    let mut duration = |key: &str, v: Option<String>| {
        let v = v.filter(|s| !s.trim().is_empty())?;
        let d = crate::units::parse_duration(&v);
        if d.is_none() {
            problems.push(format!(
                "`general_settings.{key}` must be a duration such as `30d`, `12h`, `30m` or `30s`, got `{v}`"
            ));
        }
        d
    };
    let period = duration(
        "maximum_spend_logs_retention_period",
        g.maximum_spend_logs_retention_period,
    );
    let interval = duration(
        "maximum_spend_logs_retention_interval",
        g.maximum_spend_logs_retention_interval,
    )
    .unwrap_or(DEFAULT_RETENTION_INTERVAL);
    let spend_logs_retention = period.map(|period| Retention { period, interval });
    for key in g.other.keys() {
        not_implemented.push(format!("general_settings.{key}"));
    }
    let general = GeneralSettings {
        master_key,
        database_url: g
            .database_url
            .filter(|s| !s.is_empty())
            .or_else(|| database_url_env.filter(|s| !s.is_empty()))
            .map(Secret::new),
        redis_url: g.redis_url.filter(|s| !s.is_empty()).map(Secret::new),
        max_request_bytes,
        spend_logs_retention,
        metrics_require_master_key: g.metrics_require_master_key.unwrap_or(false),
        request_body_timeout: setting_secs(
            "request_body_timeout",
            g.request_body_timeout,
            DEFAULT_REQUEST_BODY_TIMEOUT_SECS,
            &mut problems,
        ),
        max_retry_after: setting_secs(
            "max_retry_after",
            g.max_retry_after,
            DEFAULT_MAX_RETRY_AFTER_SECS,
            &mut problems,
        ),
        max_stream_duration: setting_secs(
            "max_stream_duration",
            g.max_stream_duration,
            DEFAULT_MAX_STREAM_DURATION_SECS,
            &mut problems,
        ),
        redis_outage_mode: match g.redis_outage_mode.as_deref() {
            None | Some("divide") => RedisOutageMode::Divide,
            Some("refuse") => RedisOutageMode::Refuse,
            Some(other) => {
                problems.push(format!(
                    "`general_settings.redis_outage_mode` must be `divide` or `refuse`, got `{other}`"
                ));
                RedisOutageMode::Divide
            }
        },
        max_unwritten_spend_logs: g
            .max_unwritten_spend_logs
            .unwrap_or(DEFAULT_MAX_UNWRITTEN_SPEND_LOGS)
            .max(1),
        store_model_in_db: g.store_model_in_db.unwrap_or(false),
        database_timeout: setting_secs(
            "database_timeout",
            g.database_timeout,
            DEFAULT_DATABASE_TIMEOUT_SECS,
            &mut problems,
        ),
    };
    if general.metrics_require_master_key && general.master_key.is_none() {
        problems.push(
            "`general_settings.metrics_require_master_key` needs `general_settings.master_key`"
                .into(),
        );
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        path: path.to_owned(),
        model_list,
        metrics,
        router,
        general,
        num_retries: s.num_retries,
        request_timeout,
        not_implemented,
        warnings,
    })
}

fn deployment(
    d: RawDeployment,
    at: &str,
    derived_id: Option<String>,
    request_timeout: Duration,
    problems: &mut Vec<String>,
) -> Option<DeploymentConfig> {
    let before = problems.len();
    if d.model_name.trim().is_empty() {
        problems.push(format!("`{at}.model_name` must not be empty"));
    }
    let p = d.llm_params;
    let (provider, model) = match p.model.split_once('/') {
        Some((prefix, rest)) => match ProviderKind::parse(prefix) {
            Some(kind) => (kind, rest.to_owned()),
            None => {
                let known: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                problems.push(format!(
                    "`{at}.llm_params.model`: unknown provider `{prefix}` in `{}`; use one of {} (e.g. `openai/gpt-4o`)",
                    p.model,
                    known.join(", ")
                ));
                return None;
            }
        },
        None => (ProviderKind::OpenAi, p.model.clone()),
    };
    if model.is_empty() {
        problems.push(format!(
            "`{at}.llm_params.model`: `{}` names no model after the provider",
            p.model
        ));
    }
    let api_base = match (provider, p.api_base.as_deref()) {
        (ProviderKind::Mock, _) => String::new(),
        (_, Some(base)) => {
            let parses = format!("{base}/chat/completions")
                .parse::<actix_web::http::Uri>()
                .is_ok_and(|u| u.host().is_some());
            if !(base.starts_with("http://") || base.starts_with("https://")) || !parses {
                problems.push(format!(
                    "`{at}.llm_params.api_base`: `{base}` is not an http:// or https:// URL with a host"
                ));
            }
            base.trim_end_matches('/').to_owned()
        }
        (ProviderKind::OpenAi, None) => "https://api.openai.com/v1".to_owned(),
        (kind, None) => {
            problems.push(format!(
                "`{at}.llm_params.api_base` is required for `{}` deployments (the server's base URL, e.g. http://127.0.0.1:8000/v1)",
                kind.as_str()
            ));
            String::new()
        }
    };
    if let Some(w) = p.weight {
        if !(w.is_finite() && w > 0.0) {
            problems.push(format!(
                "`{at}.llm_params.weight` must be a positive number, got {w}"
            ));
        }
    }
    for (name, v) in [
        ("input_cost_per_token", p.input_cost_per_token),
        ("output_cost_per_token", p.output_cost_per_token),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && v >= 0.0) {
                problems.push(format!(
                    "`{at}.llm_params.{name}` must be a number >= 0, got {v}"
                ));
            }
        }
    }
    let timeout = p
        .timeout
        .map(|v| secs(&format!("{at}.llm_params.timeout"), v, problems))
        .unwrap_or(request_timeout);
    let stream_timeout = p
        .stream_timeout
        .map(|v| secs(&format!("{at}.llm_params.stream_timeout"), v, problems))
        .unwrap_or(timeout);
    let id = match d.model_info.get("id") {
        Some(Json::String(id)) if !id.is_empty() => id.clone(),
        Some(Json::Number(n)) => n.to_string(),
        Some(other) => {
            problems.push(format!(
                "`{at}.model_info.id` must be a non-empty string, got {other}"
            ));
            String::new()
        }
        None => derived_id.unwrap_or_default(),
    };
    if problems.len() > before {
        return None;
    }
    let listed = (provider != ProviderKind::Mock)
        .then(|| list_price(&model))
        .flatten();
    let dep = DeploymentConfig {
        model_name: d.model_name,
        id,
        provider,
        model,
        api_base_shown: shown_url(&api_base),
        api_base,
        api_key: p.api_key.filter(|k| !k.is_empty()).map(Secret::new),
        api_version: p.api_version,
        rpm: p.rpm,
        tpm: p.tpm,
        weight: p.weight,
        timeout,
        stream_timeout,
        max_retries: p.max_retries,
        input_cost_per_token: p.input_cost_per_token.or(listed.map(|l| l.0)),
        output_cost_per_token: p.output_cost_per_token.or(listed.map(|l| l.1)),
        mock_response: p.mock_response,
        mock_latency: Duration::from_millis(p.mock_latency_ms.unwrap_or(0)),
        extra_params: p.extra,
        model_info: d.model_info,
    };
    // The upstream target is built once here so that a deployment whose URL or key cannot be used is a
    // config error, never a deployment silently answered by the mock.
    if dep.provider != ProviderKind::Mock {
        if let Err(e) = crate::providers::target::Target::new(&dep.api_base, dep.api_key.as_ref()) {
            problems.push(format!("`{at}.llm_params.{e}"));
            return None;
        }
    }
    Some(dep)
}

/// A URL fit to show: without userinfo (`user:password@`) and without its query string, either of which
/// may carry a credential.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match scheme {
        Some(s) => format!("{s}://{host}{path}"),
        None => format!("{host}{path}"),
    }
}

/// `llm_params` keys left out of derived ids: a deployment id is a label value, and a hash over a secret
/// is a guessing target (and would change the id whenever the key rotates).
pub fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.ends_with("_key")
        || k.ends_with("-key")
        || k == "key"
        || k == "authorization"
        || k.contains("secret")
        || k.contains("password")
        || k.contains("credential")
        || k.ends_with("_token") && !k.starts_with("max_")
}

/// A stable id per `model_list` entry: sha256 of its `model_name` and `llm_params` as written (secrets left
/// out, `api_base` shown without credentials), keys sorted, plus an occurrence number when two entries are
/// identical. Same file, same ids, on every replica.
fn derive_ids(tree: &serde_norway::Value) -> Vec<String> {
    let Some(list) = tree.get("model_list").and_then(|v| v.as_sequence()) else {
        return Vec::new();
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    list.iter()
        .map(|entry| {
            let name = entry.get("model_name").cloned().unwrap_or_default();
            let mut params = entry
                .get("llm_params")
                .or_else(|| entry.get("litellm_params"))
                .cloned()
                .unwrap_or_default();
            if let Some(map) = params.as_mapping_mut() {
                map.retain(|k, _| !k.as_str().is_some_and(is_secret_param));
                if let Some(serde_norway::Value::String(base)) = map.get_mut("api_base") {
                    *base = shown_url(base);
                }
            }
            // serde_json's Map is sorted, which makes the text independent of key order in the YAML.
            let canonical: Json = serde_json::to_value((name, params)).unwrap_or(Json::Null);
            let text = canonical.to_string();
            let n = seen.entry(text.clone()).or_insert(0);
            *n += 1;
            let text = if *n > 1 { format!("{text}#{n}") } else { text };
            crate::secret::hash_key(&text)
        })
        .collect()
}

/// A problem for every `os.environ/` string not under a credential parameter (`is_secret_param`).
fn env_only_in_secrets(
    v: &serde_norway::Value,
    path: &mut String,
    in_secret: bool,
    problems: &mut Vec<String>,
) {
    use serde_norway::Value as Y;
    match v {
        Y::String(s) if s.starts_with("os.environ/") && !in_secret => problems.push(format!(
            "`{path}`: `os.environ/` is read only in credential parameters (`api_key` and other `*_key`, `*secret*`, `*token` fields) of models made through the API"
        )),
        Y::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                env_only_in_secrets(item, path, in_secret, problems);
                path.truncate(len);
            }
        }
        Y::Mapping(map) => {
            for (k, item) in map {
                let len = path.len();
                let key = k.as_str().unwrap_or("?");
                path.push('.');
                path.push_str(key);
                env_only_in_secrets(item, path, in_secret || is_secret_param(key), problems);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Replaces every `os.environ/NAME` string with the variable's value; a missing variable is a problem.
fn resolve_env(
    v: &mut serde_norway::Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    use serde_norway::Value as Y;
    match v {
        Y::String(s) => {
            if let Some(name) = s.strip_prefix("os.environ/") {
                match env(name) {
                    Some(val) => *s = val,
                    None => problems.push(format!(
                        "`{path}`: environment variable `{name}` is not set (the file says `os.environ/{name}`); export it or write the value"
                    )),
                }
            }
        }
        Y::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                resolve_env(item, path, env, problems);
                path.truncate(len);
            }
        }
        Y::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                match k {
                    Y::String(k) => path.push_str(k),
                    other => path.push_str(&format!("{other:?}")),
                }
                resolve_env(item, path, env, problems);
                path.truncate(len);
            }
        }
        Y::Tagged(t) => resolve_env(&mut t.value, path, env, problems),
        _ => {}
    }
}

/// Makes a Prometheus label name: characters outside `[A-Za-z0-9_]` become `_`, and a leading digit gets a
/// `_` prefix (reference section 1.1.7).
pub fn sanitize_label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// The built-in price list (`data/model_prices.json`): USD per input and output token by model name.
static PRICES: &str = include_str!("../data/model_prices.json");

/// The listed price of `model` (the name without its provider prefix). A dated snapshot such as
/// `gpt-4o-2024-08-06` or `claude-3-5-sonnet-20241022` falls back to its base name.
pub fn list_price(model: &str) -> Option<(f64, f64)> {
    use std::sync::OnceLock;
    static TABLE: OnceLock<std::collections::HashMap<String, (f64, f64)>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        serde_json::from_str::<BTreeMap<String, serde_json::Value>>(PRICES)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_value::<(f64, f64)>(v).ok().map(|p| (k, p)))
            .collect()
    });
    if let Some(p) = table.get(model) {
        return Some(*p);
    }
    // Strip a trailing date: -YYYY-MM-DD or -YYYYMMDD.
    let parts: Vec<&str> = model.rsplitn(4, '-').collect();
    let is_num = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 4 && is_num(parts[0], 2) && is_num(parts[1], 2) && is_num(parts[2], 4) {
        return table.get(parts[3]).copied();
    }
    let (base, date) = model.rsplit_once('-')?;
    is_num(date, 8).then(|| table.get(base).copied()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yaml"), &|name| match name {
            "OPENAI_API_KEY" => Some("sk-upstream".into()),
            _ => None,
        })
    }

    #[test]
    fn minimal_mock_config() {
        let c = parse("model_list:\n  - model_name: m\n    llm_params:\n      model: mock/echo\n")
            .unwrap();
        assert_eq!(c.model_list.len(), 1);
        assert_eq!(c.model_list[0].provider, ProviderKind::Mock);
        assert_eq!(c.model_list[0].model, "echo");
        assert_eq!(c.model_list[0].id.len(), 64);
        assert!(!c.metrics.enabled);
        assert!(!c.metrics.require_auth);
    }

    #[test]
    fn litellm_spellings_are_aliases() {
        let c = parse(
            "model_list:\n  - model_name: g\n    litellm_params:\n      model: openai/gpt-4o\n      api_key: os.environ/OPENAI_API_KEY\nlitellm_settings:\n  callbacks: [prometheus]\n",
        )
        .unwrap();
        assert!(c.metrics.enabled);
        let d = &c.model_list[0];
        assert_eq!(d.api_base, "https://api.openai.com/v1");
        assert_eq!(d.api_key.as_ref().unwrap().expose(), "sk-upstream");
    }

    #[test]
    fn ids_are_stable_and_independent_of_key_order() {
        let a = parse("model_list:\n  - model_name: g\n    llm_params: {model: mock/a, rpm: 5}\n")
            .unwrap();
        let b = parse("model_list:\n  - model_name: g\n    llm_params: {rpm: 5, model: mock/a}\n")
            .unwrap();
        assert_eq!(a.model_list[0].id, b.model_list[0].id);
        let twice = parse(
            "model_list:\n  - model_name: g\n    llm_params: {model: mock/a}\n  - model_name: g\n    llm_params: {model: mock/a}\n",
        )
        .unwrap();
        assert_ne!(twice.model_list[0].id, twice.model_list[1].id);
    }

    #[test]
    fn ids_and_shown_urls_carry_no_secrets() {
        let entry = |key: &str| {
            format!("model_list:\n  - model_name: g\n    llm_params: {{model: openai/x, api_base: 'http://u:pw@h:1/v1?key=s', api_key: {key}, max_tokens: 5}}\n")
        };
        let (a, b) = (
            parse(&entry("sk-one")).unwrap(),
            parse(&entry("sk-two")).unwrap(),
        );
        let (a, b) = (&a.model_list[0], &b.model_list[0]);
        assert_eq!(a.id, b.id, "the id does not depend on the key");
        let without_secrets = crate::secret::hash_key(
            r#"["g",{"api_base":"http://h:1/v1","max_tokens":5,"model":"openai/x"}]"#,
        );
        assert_eq!(a.id, without_secrets);
        assert_eq!(a.api_base_shown, "http://h:1/v1");
        assert_eq!(a.api_base, "http://u:pw@h:1/v1?key=s");
        for (url, shown) in [
            ("https://api.openai.com/v1", "https://api.openai.com/v1"),
            ("http://user@10.0.0.1:8000", "http://10.0.0.1:8000"),
            ("http://a:b@c@host/x#frag", "http://host/x"),
        ] {
            assert_eq!(shown_url(url), shown);
        }
    }

    #[test]
    fn a_key_that_cannot_be_sent_is_a_config_error() {
        let err = parse("model_list:\n  - model_name: g\n    llm_params: {model: openai/x, api_base: 'http://127.0.0.1:1/v1', api_key: \"sk-a\\nb\"}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`model_list[0].llm_params.api_key`"), "{err}");
        assert!(!err.contains("sk-a"), "the key itself is not shown: {err}");
    }

    #[test]
    fn collects_every_problem_with_its_path() {
        let err = parse(
            "model_list:\n  - model_name: a\n    llm_params: {model: nope/x}\n  - model_name: b\n    llm_params: {model: hosted_vllm/x}\n    model_info: {id: same}\n  - model_name: c\n    llm_params: {model: mock/x}\n    model_info: {id: same}\nrouter_settings:\n  fallbacks: [{c: [zzz]}]\n",
        )
        .unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("`model_list[0].llm_params.model`: unknown provider `nope`"),
            "{all}"
        );
        assert!(
            all.contains("`model_list[1].llm_params.api_base` is required"),
            "{all}"
        );
        assert!(all.contains("fallback `zzz` is not a model_name"), "{all}");
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let err = parse(
            "model_list:\n  - model_name: a\n    llm_params: {model: mock/x}\n    model_info: {id: same}\n  - model_name: b\n    llm_params: {model: mock/y}\n    model_info: {id: same}\n",
        )
        .unwrap_err();
        assert!(err
            .to_string()
            .contains("`model_list[1].model_info.id`: `same` is already the id of model_list[0]"));
    }

    #[test]
    fn missing_env_names_the_path() {
        let err = parse("general_settings:\n  master_key: os.environ/NOPE\n").unwrap_err();
        assert!(err
            .to_string()
            .contains("`general_settings.master_key`: environment variable `NOPE` is not set"));
    }

    #[test]
    fn malformed_yaml_gives_line_and_column() {
        let err = parse("model_list:\n  - model_name: a\n   llm_params: [\n").unwrap_err();
        assert!(err.to_string().contains("line "), "{err}");
    }

    #[test]
    fn wrong_type_names_the_path() {
        let err =
            parse("model_list:\n  - model_name: a\n    llm_params: {model: mock/x, rpm: lots}\n")
                .unwrap_err();
        assert!(
            err.to_string().contains("`model_list[0].llm_params.rpm`"),
            "{err}"
        );
    }

    #[test]
    fn custom_labels_are_sanitized_and_checked() {
        let c = parse("llm_settings:\n  custom_prometheus_metadata_labels: [metadata.foo-bar, metadata.a.b]\n").unwrap();
        let labels: Vec<&str> = c
            .metrics
            .custom_metadata_labels
            .iter()
            .map(|l| l.label.as_str())
            .collect();
        assert_eq!(labels, ["metadata_foo_bar", "metadata_a_b"]);
        assert_eq!(c.metrics.custom_metadata_labels[1].path, ["a", "b"]);
        assert_eq!(sanitize_label_name("1abc"), "_1abc");
        let err =
            parse("llm_settings:\n  custom_prometheus_metadata_labels: [team]\n").unwrap_err();
        assert!(err.to_string().contains("already uses"));
    }

    #[test]
    fn unknown_sections_warn_and_unimplemented_keys_are_kept() {
        let c = parse("foo: 1\nllm_settings:\n  drop_params: true\n").unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.not_implemented, ["llm_settings.drop_params"]);
    }

    #[test]
    fn built_in_prices_by_name_and_dated_snapshot() {
        assert_eq!(list_price("gpt-4o-mini"), Some((0.00000015, 0.0000006)));
        assert_eq!(list_price("gpt-4o-2024-08-06"), list_price("gpt-4o"));
        assert_eq!(
            list_price("claude-3-5-sonnet-20241022"),
            Some((0.000003, 0.000015))
        );
        assert_eq!(list_price("my-own-model"), None);
        let c = Config::parse(
            "model_list:\n  - {model_name: a, llm_params: {model: openai/gpt-4o}}\n  - {model_name: b, llm_params: {model: openai/gpt-4o, input_cost_per_token: 0.5}}\n  - {model_name: c, llm_params: {model: mock/gpt-4o}}\n",
            Path::new("t.yaml"),
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.model_list[0].input_cost_per_token, Some(0.0000025));
        assert_eq!(c.model_list[1].input_cost_per_token, Some(0.5));
        assert_eq!(c.model_list[1].output_cost_per_token, Some(0.00001));
        assert_eq!(c.model_list[2].input_cost_per_token, None);
    }
}
