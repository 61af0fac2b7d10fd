//! From the YAML mirror to the validated configuration: every setting checked, defaults applied, each
//! problem reported with its YAML path; metric groups checked against the catalog.

use super::deployments::*;
use super::raw::{self, RawConfig};
use super::types::*;
use crate::secret::Secret;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

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

pub(super) fn validate(
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
        ui: g.ui.unwrap_or(true),
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
