//! The metric families the gateway exports, made once in the metrics actor's series store from the catalog
//! (`catalog.rs`) and the configuration: custom metadata labels appended to request-scoped families,
//! `prometheus_exclude_labels` and `prometheus_metrics_config`'s `include_labels` applied, and only the
//! families `prometheus_metrics_config` lists made when it is set. The system-health families
//! (`prometheus_system`) are updated from other threads and stay on a `prometheus` registry.

pub use super::catalog::*;
use super::store::{FamId, FamilySpec, Store};
use crate::config::MetricsSettings;
use prometheus::Registry;

/// What the exposition needs to print a family of the system registry even before its first sample.
#[derive(Debug, Clone)]
pub struct FamilyDesc {
    /// The registered name; counters are exposed with `_total` appended.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<String>,
}

/// A family with the label names it was made with (custom labels included, filtered labels left out);
/// `id` is `None` when `prometheus_metrics_config` leaves the family out.
#[derive(Debug, Clone)]
pub struct Fam {
    pub id: Option<FamId>,
    pub name: &'static str,
    pub labels: Vec<String>,
}

pub struct Families {
    pub proxy_total_requests: Fam,
    pub proxy_failed_requests: Fam,
    pub spend: Fam,
    pub total_tokens: Fam,
    pub input_tokens: Fam,
    pub output_tokens: Fam,
    pub requests_deprecated: Fam,
    pub api_failed_requests_deprecated: Fam,
    pub deployment_success: Fam,
    pub deployment_failure: Fam,
    pub deployment_total: Fam,
    pub series_dropped: Fam,
    pub deployment_cooled_down: Fam,
    pub successful_fallbacks: Fam,
    pub failed_fallbacks: Fam,
    pub deployment_state: Fam,
    pub remaining_requests: Fam,
    pub remaining_tokens: Fam,
    pub request_total_latency: Fam,
    pub overhead_latency: Fam,
    pub api_latency: Fam,
    pub time_to_first_token: Fam,
    pub latency_per_output_token: Fam,
    pub team_max_budget: Fam,
    pub team_remaining_budget: Fam,
    pub team_remaining_hours: Fam,
    pub key_max_budget: Fam,
    pub key_remaining_budget: Fam,
    pub key_remaining_hours: Fam,
    pub key_remaining_requests_for_model: Fam,
    pub key_remaining_tokens_for_model: Fam,
    pub user_max_budget: Fam,
    pub user_remaining_budget: Fam,
    pub user_remaining_hours: Fam,
    pub customer_max_budget: Fam,
    pub customer_remaining_budget: Fam,
    pub customer_remaining_hours: Fam,
    /// Number of configured custom metadata labels appended to request-scoped families.
    pub custom_labels: usize,
    /// The system families (`prometheus_system`), printed after the others.
    pub system_descs: Vec<FamilyDesc>,
}

/// The label names a family gets under `settings`: the catalog's, the custom metadata labels when
/// request-scoped, without `prometheus_exclude_labels`, and only `include_labels` when its group has them.
pub fn labels_of(e: &Entry, settings: &MetricsSettings) -> Vec<String> {
    let mut v: Vec<String> = e.labels.iter().map(|s| s.to_string()).collect();
    if e.custom {
        v.extend(
            settings
                .custom_metadata_labels
                .iter()
                .map(|c| c.label.clone()),
        );
    }
    v.retain(|l| !settings.exclude_labels.contains(l));
    if let Some(Some(include)) = settings.metrics_config.as_ref().and_then(|c| c.get(e.name)) {
        v.retain(|l| include.contains(l));
    }
    v
}

impl Families {
    /// Makes every enabled family in `store`.
    pub fn register(store: &mut Store, settings: &MetricsSettings) -> Families {
        let mut fam = |name: &'static str| -> Fam {
            let e = entry(name).expect("every family is in the catalog");
            let labels = labels_of(e, settings);
            let enabled = settings
                .metrics_config
                .as_ref()
                .is_none_or(|c| c.contains_key(e.name) || e.name == "llm_metrics_series_dropped");
            let id = enabled.then(|| {
                store.add(FamilySpec {
                    name: e.name,
                    help: e.help,
                    kind: e.kind,
                    labels: labels.clone(),
                    buckets: match e.buckets {
                        Buckets::None => Vec::new(),
                        Buckets::Latency => settings.latency_buckets.clone(),
                        Buckets::Default => DEFAULT_BUCKETS.to_vec(),
                    },
                })
            });
            Fam {
                id,
                name: e.name,
                labels,
            }
        };
        let f = Families {
            proxy_total_requests: fam("llm_proxy_total_requests_metric"),
            proxy_failed_requests: fam("llm_proxy_failed_requests_metric"),
            spend: fam("llm_spend_metric"),
            total_tokens: fam("llm_total_tokens"),
            input_tokens: fam("llm_input_tokens"),
            output_tokens: fam("llm_output_tokens"),
            requests_deprecated: fam("llm_requests_metric"),
            api_failed_requests_deprecated: fam("llm_llm_api_failed_requests_metric"),
            deployment_success: fam("llm_deployment_success_responses"),
            deployment_failure: fam("llm_deployment_failure_responses"),
            deployment_total: fam("llm_deployment_total_requests"),
            series_dropped: fam("llm_metrics_series_dropped"),
            deployment_cooled_down: fam("llm_deployment_cooled_down"),
            successful_fallbacks: fam("llm_deployment_successful_fallbacks"),
            failed_fallbacks: fam("llm_deployment_failed_fallbacks"),
            deployment_state: fam("llm_deployment_state"),
            remaining_requests: fam("llm_remaining_requests_metric"),
            remaining_tokens: fam("llm_remaining_tokens"),
            request_total_latency: fam("llm_request_total_latency_metric"),
            overhead_latency: fam("llm_overhead_latency_metric"),
            api_latency: fam("llm_llm_api_latency_metric"),
            time_to_first_token: fam("llm_llm_api_time_to_first_token_metric"),
            latency_per_output_token: fam("llm_deployment_latency_per_output_token"),
            team_max_budget: fam("llm_team_max_budget_metric"),
            team_remaining_budget: fam("llm_remaining_team_budget_metric"),
            team_remaining_hours: fam("llm_team_budget_remaining_hours_metric"),
            key_max_budget: fam("llm_api_key_max_budget_metric"),
            key_remaining_budget: fam("llm_remaining_api_key_budget_metric"),
            key_remaining_hours: fam("llm_api_key_budget_remaining_hours_metric"),
            key_remaining_requests_for_model: fam("llm_remaining_api_key_requests_for_model"),
            key_remaining_tokens_for_model: fam("llm_remaining_api_key_tokens_for_model"),
            user_max_budget: fam("llm_user_max_budget_metric"),
            user_remaining_budget: fam("llm_remaining_user_budget_metric"),
            user_remaining_hours: fam("llm_user_budget_remaining_hours_metric"),
            customer_max_budget: fam("llm_customer_max_budget_metric"),
            customer_remaining_budget: fam("llm_remaining_customer_budget_metric"),
            customer_remaining_hours: fam("llm_customer_budget_remaining_hours_metric"),
            custom_labels: settings.custom_metadata_labels.len(),
            system_descs: Vec::new(),
        };
        if let Some(id) = f.series_dropped.id {
            store.set_dropped_family(id);
        }
        f
    }

    /// Every family, for walks over all of them.
    pub fn all(&self) -> Vec<&Fam> {
        vec![
            &self.proxy_total_requests,
            &self.proxy_failed_requests,
            &self.spend,
            &self.total_tokens,
            &self.input_tokens,
            &self.output_tokens,
            &self.requests_deprecated,
            &self.api_failed_requests_deprecated,
            &self.deployment_success,
            &self.deployment_failure,
            &self.deployment_total,
            &self.series_dropped,
            &self.deployment_cooled_down,
            &self.successful_fallbacks,
            &self.failed_fallbacks,
            &self.deployment_state,
            &self.remaining_requests,
            &self.remaining_tokens,
            &self.request_total_latency,
            &self.overhead_latency,
            &self.api_latency,
            &self.time_to_first_token,
            &self.latency_per_output_token,
            &self.team_max_budget,
            &self.team_remaining_budget,
            &self.team_remaining_hours,
            &self.key_max_budget,
            &self.key_remaining_budget,
            &self.key_remaining_hours,
            &self.key_remaining_requests_for_model,
            &self.key_remaining_tokens_for_model,
            &self.user_max_budget,
            &self.user_remaining_budget,
            &self.user_remaining_hours,
            &self.customer_max_budget,
            &self.customer_remaining_budget,
            &self.customer_remaining_hours,
        ]
    }
}

/// A system family to register: name, help, kind, collector, label names.
type SystemFamily = (
    &'static str,
    String,
    Kind,
    Box<dyn prometheus::core::Collector>,
    Vec<&'static str>,
);

impl Families {
    /// Registers the system-health families (`prometheus_system`) on `registry`.
    pub fn add_system(&mut self, registry: &Registry, sys: &super::system::SystemMetrics) {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        for s in sys.services() {
            let families: [SystemFamily; 3] = [
                (
                    s.latency_name,
                    format!("Latency for {} service", s.service),
                    Kind::Histogram,
                    Box::new(s.latency.clone()),
                    vec![s.service],
                ),
                (
                    s.total_name,
                    format!("Total requests for {} service", s.service),
                    Kind::Counter,
                    Box::new(s.total.clone()),
                    vec![s.service],
                ),
                (
                    s.fails_name,
                    format!("Total failed requests for {} service", s.service),
                    Kind::Counter,
                    Box::new(s.fails.clone()),
                    vec![s.service, "error_class", "function_name"],
                ),
            ];
            for (name, help, kind, collector, labels) in families {
                registry
                    .register(collector)
                    .expect("each family is registered once");
                self.system_descs.push(FamilyDesc {
                    name,
                    help: leak(help),
                    kind,
                    labels: labels.into_iter().map(String::from).collect(),
                });
            }
        }
    }
}

/// The metrics reference in README.md: every family the gateway can expose, with its exposed name, type and
/// labels, read from the same registration code that serves `/metrics` (system families included). A unit
/// test keeps README.md equal to it; `LLM_UPDATE_README=1 cargo test --lib readme_metrics_reference`
/// rewrites the block.
pub fn reference_markdown() -> String {
    use crate::config::Config;
    use std::fmt::Write;
    let config = Config::parse(
        "model_list:\n  - {model_name: g, llm_params: {model: mock/m}}\nllm_settings:\n  callbacks: [prometheus]\n  service_callback: [prometheus_system]\n",
        std::path::Path::new("reference.yaml"),
        &|_| None,
    )
    .expect("reference config parses");
    let registry = Registry::new();
    let mut fam = Families::register(&mut Store::new(1), &config.metrics);
    fam.add_system(
        &registry,
        &super::system::SystemMetrics::new(&config.metrics.latency_buckets),
    );
    let mut out =
        String::from("| metric (as exposed) | type | labels | help |\n| --- | --- | --- | --- |\n");
    let mut descs: Vec<FamilyDesc> = CATALOG
        .iter()
        .map(|e| FamilyDesc {
            name: e.name,
            help: e.help,
            kind: e.kind,
            labels: labels_of(e, &config.metrics),
        })
        .collect();
    descs.extend(fam.system_descs);
    for d in &descs {
        let (exposed, kind) = match d.kind {
            Kind::Counter => (format!("{}_total", d.name), "counter"),
            Kind::Gauge => (d.name.to_owned(), "gauge"),
            Kind::Histogram => (d.name.to_owned(), "histogram"),
        };
        let labels: Vec<String> = d.labels.iter().map(|l| format!("`{l}`")).collect();
        let _ = writeln!(
            out,
            "| `{exposed}` | {kind} | {} | {} |",
            labels.join(", "),
            d.help.replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod reference_tests {
    const START: &str = "<!-- metrics-reference:start -->\n";
    const END: &str = "<!-- metrics-reference:end -->";

    #[test]
    fn readme_metrics_reference() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let table = super::reference_markdown();
        let (Some(a), Some(b)) = (readme.find(START), readme.find(END)) else {
            panic!("README.md lacks the metrics reference markers");
        };
        let current = &readme[a + START.len()..b];
        if current != table {
            if std::env::var("LLM_UPDATE_README").is_ok() {
                let updated = format!("{}{START}{table}{}", &readme[..a], &readme[b..]);
                std::fs::write(path, updated).unwrap();
            } else {
                panic!("README.md's metrics reference is stale: run LLM_UPDATE_README=1 cargo test --lib readme_metrics_reference");
            }
        }
    }
}
