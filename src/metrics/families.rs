//! Every metric family the gateway exports, with its help text, label names and buckets, registered once on
//! a registry owned by the metrics actor. Names and labels are the spec's, exactly.

use crate::config::{CustomLabel, MetricsSettings};
use prometheus::{CounterVec, GaugeVec, HistogramOpts, HistogramVec, Opts, Registry};

/// Label names, as constants so a typo is a compile error.
pub mod label {
    pub const END_USER: &str = "end_user";
    pub const HASHED_API_KEY: &str = "hashed_api_key";
    pub const API_KEY_ALIAS: &str = "api_key_alias";
    pub const REQUESTED_MODEL: &str = "requested_model";
    pub const TEAM: &str = "team";
    pub const TEAM_ALIAS: &str = "team_alias";
    pub const TEAM_ID: &str = "team_id";
    pub const USER: &str = "user";
    pub const STATUS_CODE: &str = "status_code";
    pub const EXCEPTION_STATUS: &str = "exception_status";
    pub const EXCEPTION_CLASS: &str = "exception_class";
    pub const MODEL: &str = "model";
    pub const MODEL_GROUP: &str = "model_group";
    pub const LLM_MODEL_NAME: &str = "llm_model_name";
    pub const MODEL_ID: &str = "model_id";
    pub const API_BASE: &str = "api_base";
    pub const API_PROVIDER: &str = "api_provider";
    pub const FALLBACK_MODEL: &str = "fallback_model";
    pub const METRIC: &str = "metric";
}
use label::*;

// Label sets, in declaration order (the exposition sorts them alphabetically).
pub const PROXY_TOTAL_LABELS: &[&str] = &[
    END_USER,
    HASHED_API_KEY,
    API_KEY_ALIAS,
    REQUESTED_MODEL,
    TEAM,
    TEAM_ALIAS,
    USER,
    STATUS_CODE,
];
pub const PROXY_FAILED_LABELS: &[&str] = &[
    END_USER,
    HASHED_API_KEY,
    API_KEY_ALIAS,
    REQUESTED_MODEL,
    TEAM,
    TEAM_ALIAS,
    USER,
    EXCEPTION_STATUS,
    EXCEPTION_CLASS,
];
/// Tokens, spend, total and overhead latency.
pub const USAGE_LABELS: &[&str] = &[
    END_USER,
    HASHED_API_KEY,
    API_KEY_ALIAS,
    REQUESTED_MODEL,
    TEAM,
    TEAM_ALIAS,
    USER,
    MODEL,
];
pub const API_LATENCY_LABELS: &[&str] = &[
    MODEL,
    HASHED_API_KEY,
    API_KEY_ALIAS,
    TEAM,
    TEAM_ALIAS,
    REQUESTED_MODEL,
    END_USER,
    USER,
];
pub const TTFT_LABELS: &[&str] = &[MODEL, HASHED_API_KEY, API_KEY_ALIAS, TEAM, TEAM_ALIAS];
/// The deprecated request and failure counters.
pub const LEGACY_LABELS: &[&str] = &[
    END_USER,
    HASHED_API_KEY,
    API_KEY_ALIAS,
    MODEL,
    TEAM,
    TEAM_ALIAS,
    USER,
];
pub const DEPLOYMENT_LABELS: &[&str] = &[
    REQUESTED_MODEL,
    LLM_MODEL_NAME,
    MODEL_ID,
    API_BASE,
    API_PROVIDER,
    HASHED_API_KEY,
    API_KEY_ALIAS,
    TEAM,
    TEAM_ALIAS,
];
pub const DEPLOYMENT_FAILURE_LABELS: &[&str] = &[
    REQUESTED_MODEL,
    LLM_MODEL_NAME,
    MODEL_ID,
    API_BASE,
    API_PROVIDER,
    HASHED_API_KEY,
    API_KEY_ALIAS,
    TEAM,
    TEAM_ALIAS,
    EXCEPTION_STATUS,
    EXCEPTION_CLASS,
];
pub const REMAINING_LABELS: &[&str] = &[
    MODEL_GROUP,
    API_PROVIDER,
    API_BASE,
    LLM_MODEL_NAME,
    HASHED_API_KEY,
    API_KEY_ALIAS,
];
pub const STATE_LABELS: &[&str] = &[LLM_MODEL_NAME, MODEL_ID, API_BASE, API_PROVIDER];
pub const COOLED_DOWN_LABELS: &[&str] = &[
    LLM_MODEL_NAME,
    MODEL_ID,
    API_BASE,
    API_PROVIDER,
    EXCEPTION_STATUS,
];
pub const PER_TOKEN_LABELS: &[&str] = &[
    LLM_MODEL_NAME,
    MODEL_ID,
    API_BASE,
    API_PROVIDER,
    HASHED_API_KEY,
    API_KEY_ALIAS,
    TEAM,
    TEAM_ALIAS,
];
pub const FALLBACK_LABELS: &[&str] = &[
    REQUESTED_MODEL,
    FALLBACK_MODEL,
    HASHED_API_KEY,
    API_KEY_ALIAS,
    TEAM,
    TEAM_ALIAS,
    EXCEPTION_STATUS,
    EXCEPTION_CLASS,
];
pub const TEAM_BUDGET_LABELS: &[&str] = &[TEAM_ID, TEAM_ALIAS];
pub const KEY_BUDGET_LABELS: &[&str] = &[HASHED_API_KEY, API_KEY_ALIAS];
pub const KEY_MODEL_LIMIT_LABELS: &[&str] = &[HASHED_API_KEY, API_KEY_ALIAS, MODEL];

/// prometheus_client's default buckets, which the reference uses for latency per output token.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// What the exposition needs to print a family even before its first sample.
#[derive(Debug, Clone)]
pub struct FamilyDesc {
    /// The registered name; counters are exposed with `_total` appended.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<String>,
}

/// A registered family with the label names it was declared with (custom labels included).
pub struct Fam<T> {
    pub vec: T,
    pub name: &'static str,
    pub labels: Vec<String>,
}

pub struct Families {
    pub proxy_total_requests: Fam<CounterVec>,
    pub proxy_failed_requests: Fam<CounterVec>,
    pub spend: Fam<CounterVec>,
    pub total_tokens: Fam<CounterVec>,
    pub input_tokens: Fam<CounterVec>,
    pub output_tokens: Fam<CounterVec>,
    pub requests_deprecated: Fam<CounterVec>,
    pub api_failed_requests_deprecated: Fam<CounterVec>,
    pub deployment_success: Fam<CounterVec>,
    pub deployment_failure: Fam<CounterVec>,
    pub deployment_total: Fam<CounterVec>,
    pub deployment_cooled_down: Fam<CounterVec>,
    /// Label sets folded into `other` past the per-family series cap, per family.
    pub series_dropped: Fam<CounterVec>,
    pub successful_fallbacks: Fam<CounterVec>,
    pub failed_fallbacks: Fam<CounterVec>,
    pub deployment_state: Fam<GaugeVec>,
    pub remaining_requests: Fam<GaugeVec>,
    pub remaining_tokens: Fam<GaugeVec>,
    pub request_total_latency: Fam<HistogramVec>,
    pub overhead_latency: Fam<HistogramVec>,
    pub api_latency: Fam<HistogramVec>,
    pub time_to_first_token: Fam<HistogramVec>,
    pub latency_per_output_token: Fam<HistogramVec>,
    pub team_max_budget: Fam<GaugeVec>,
    pub team_remaining_budget: Fam<GaugeVec>,
    pub team_remaining_hours: Fam<GaugeVec>,
    pub key_max_budget: Fam<GaugeVec>,
    pub key_remaining_budget: Fam<GaugeVec>,
    pub key_remaining_hours: Fam<GaugeVec>,
    pub key_remaining_requests_for_model: Fam<GaugeVec>,
    pub key_remaining_tokens_for_model: Fam<GaugeVec>,
    pub descs: Vec<FamilyDesc>,
    /// Number of configured custom metadata labels appended to request-scoped families.
    pub custom_labels: usize,
}

struct Builder<'a> {
    registry: &'a Registry,
    custom: Vec<String>,
    descs: Vec<FamilyDesc>,
    /// `prometheus_exclude_labels`: left out of every family.
    exclude: &'a [String],
}

impl Builder<'_> {
    /// Label names for a family, with the custom metadata labels appended when the family is request-scoped,
    /// without the excluded ones. (Values are looked up by name, so a family simply has fewer labels.)
    fn labels(&self, base: &[&str], with_custom: bool) -> Vec<String> {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        if with_custom {
            v.extend(self.custom.iter().cloned());
        }
        v.retain(|l| !self.exclude.contains(l));
        v
    }

    fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        base: &[&str],
        custom: bool,
    ) -> Fam<CounterVec> {
        let labels = self.labels(base, custom);
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let v = CounterVec::new(Opts::new(name, help), &refs)
            .expect("static metric definition is valid");
        self.registry
            .register(Box::new(v.clone()))
            .expect("each family is registered once");
        self.descs.push(FamilyDesc {
            name,
            help,
            kind: Kind::Counter,
            labels: labels.clone(),
        });
        Fam {
            vec: v,
            name,
            labels,
        }
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, base: &[&str]) -> Fam<GaugeVec> {
        let labels = self.labels(base, false);
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let v =
            GaugeVec::new(Opts::new(name, help), &refs).expect("static metric definition is valid");
        self.registry
            .register(Box::new(v.clone()))
            .expect("each family is registered once");
        self.descs.push(FamilyDesc {
            name,
            help,
            kind: Kind::Gauge,
            labels: labels.clone(),
        });
        Fam {
            vec: v,
            name,
            labels,
        }
    }

    fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        base: &[&str],
        buckets: &[f64],
    ) -> Fam<HistogramVec> {
        let labels = self.labels(base, true);
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        let v = HistogramVec::new(opts, &refs).expect("static metric definition is valid");
        self.registry
            .register(Box::new(v.clone()))
            .expect("each family is registered once");
        self.descs.push(FamilyDesc {
            name,
            help,
            kind: Kind::Histogram,
            labels: labels.clone(),
        });
        Fam {
            vec: v,
            name,
            labels,
        }
    }
}

impl Families {
    pub fn register(registry: &Registry, settings: &MetricsSettings) -> Families {
        let custom: Vec<String> = settings
            .custom_metadata_labels
            .iter()
            .map(|c: &CustomLabel| c.label.clone())
            .collect();
        let custom_labels = custom.len();
        let mut b = Builder {
            registry,
            custom,
            descs: Vec::new(),
            exclude: &settings.exclude_labels,
        };
        let lat = &settings.latency_buckets;
        Families {
            proxy_total_requests: b.counter(
                "llm_proxy_total_requests_metric",
                "Total number of requests made to the proxy server - track number of client side requests",
                PROXY_TOTAL_LABELS,
                true,
            ),
            proxy_failed_requests: b.counter(
                "llm_proxy_failed_requests_metric",
                "Total number of failed responses from proxy - the client did not get a success response from llm proxy",
                PROXY_FAILED_LABELS,
                true,
            ),
            spend: b.counter("llm_spend_metric", "Total spend on LLM requests (USD)", USAGE_LABELS, true),
            total_tokens: b.counter(
                "llm_total_tokens",
                "Total number of input + output tokens from LLM requests",
                USAGE_LABELS,
                true,
            ),
            input_tokens: b.counter(
                "llm_input_tokens",
                "Total number of input tokens from LLM requests",
                USAGE_LABELS,
                true,
            ),
            output_tokens: b.counter(
                "llm_output_tokens",
                "Total number of output tokens from LLM requests",
                USAGE_LABELS,
                true,
            ),
            requests_deprecated: b.counter(
                "llm_requests_metric",
                "deprecated - use llm_proxy_total_requests_metric. Total number of LLM calls to llm - track total per API Key, team, user",
                LEGACY_LABELS,
                true,
            ),
            api_failed_requests_deprecated: b.counter(
                "llm_llm_api_failed_requests_metric",
                "deprecated - use llm_proxy_failed_requests_metric",
                LEGACY_LABELS,
                true,
            ),
            deployment_success: b.counter(
                "llm_deployment_success_responses",
                "LLM Deployment Analytics - Total number of successful LLM API calls via llm",
                DEPLOYMENT_LABELS,
                true,
            ),
            deployment_failure: b.counter(
                "llm_deployment_failure_responses",
                "LLM Deployment Analytics - Total number of failed LLM API calls for a specific LLM deployment",
                DEPLOYMENT_FAILURE_LABELS,
                true,
            ),
            deployment_total: b.counter(
                "llm_deployment_total_requests",
                "LLM Deployment Analytics - Total number of LLM API calls via llm - success + failure",
                DEPLOYMENT_LABELS,
                true,
            ),
            series_dropped: b.counter(
                "llm_metrics_series_dropped",
                "Label sets folded into their family's `other` series: the family had reached llm_settings.prometheus_max_series_per_metric",
                &[METRIC],
                false,
            ),
            deployment_cooled_down: b.counter(
                "llm_deployment_cooled_down",
                "LLM Deployment Analytics - Number of times a deployment has been cooled down by llm load balancing logic",
                COOLED_DOWN_LABELS,
                false,
            ),
            successful_fallbacks: b.counter(
                "llm_deployment_successful_fallbacks",
                "LLM Deployment Analytics - Number of successful fallback requests from primary model -> fallback model",
                FALLBACK_LABELS,
                true,
            ),
            failed_fallbacks: b.counter(
                "llm_deployment_failed_fallbacks",
                "LLM Deployment Analytics - Number of failed fallback requests from primary model -> fallback model",
                FALLBACK_LABELS,
                true,
            ),
            deployment_state: b.gauge(
                "llm_deployment_state",
                "LLM Deployment Analytics - The state of the deployment: 0 = healthy, 1 = partial outage, 2 = complete outage",
                STATE_LABELS,
            ),
            remaining_requests: b.gauge(
                "llm_remaining_requests_metric",
                "LLM Deployment Analytics - remaining requests for model, returned from LLM API Provider (x-ratelimit-remaining-requests)",
                REMAINING_LABELS,
            ),
            remaining_tokens: b.gauge(
                "llm_remaining_tokens",
                "LLM Deployment Analytics - remaining tokens for model, returned from LLM API Provider (x-ratelimit-remaining-tokens)",
                REMAINING_LABELS,
            ),
            request_total_latency: b.histogram(
                "llm_request_total_latency_metric",
                "Total latency (seconds) for a request to LLM Proxy Server",
                USAGE_LABELS,
                lat,
            ),
            overhead_latency: b.histogram(
                "llm_overhead_latency_metric",
                "Latency overhead (seconds) added by LLM processing",
                USAGE_LABELS,
                lat,
            ),
            api_latency: b.histogram(
                "llm_llm_api_latency_metric",
                "Total latency (seconds) for a models LLM API call",
                API_LATENCY_LABELS,
                lat,
            ),
            time_to_first_token: b.histogram(
                "llm_llm_api_time_to_first_token_metric",
                "Time to first token for a models LLM API call (streaming requests only)",
                TTFT_LABELS,
                lat,
            ),
            latency_per_output_token: b.histogram(
                "llm_deployment_latency_per_output_token",
                "LLM Deployment Analytics - Latency per output token (seconds)",
                PER_TOKEN_LABELS,
                &DEFAULT_BUCKETS,
            ),
            team_max_budget: b.gauge("llm_team_max_budget_metric", "Maximum budget set for team", TEAM_BUDGET_LABELS),
            team_remaining_budget: b.gauge(
                "llm_remaining_team_budget_metric",
                "Remaining budget for team (USD; +Inf without a max budget)",
                TEAM_BUDGET_LABELS,
            ),
            team_remaining_hours: b.gauge(
                "llm_team_budget_remaining_hours_metric",
                "Hours until the team budget is reset",
                TEAM_BUDGET_LABELS,
            ),
            key_max_budget: b.gauge("llm_api_key_max_budget_metric", "Maximum budget set for api key", KEY_BUDGET_LABELS),
            key_remaining_budget: b.gauge(
                "llm_remaining_api_key_budget_metric",
                "Remaining budget for api key (USD; +Inf without a max budget)",
                KEY_BUDGET_LABELS,
            ),
            key_remaining_hours: b.gauge(
                "llm_api_key_budget_remaining_hours_metric",
                "Hours until the api key budget is reset",
                KEY_BUDGET_LABELS,
            ),
            key_remaining_requests_for_model: b.gauge(
                "llm_remaining_api_key_requests_for_model",
                "Remaining requests the API key can make for the model in the current minute (only with a model-specific rpm limit)",
                KEY_MODEL_LIMIT_LABELS,
            ),
            key_remaining_tokens_for_model: b.gauge(
                "llm_remaining_api_key_tokens_for_model",
                "Remaining tokens the API key can use for the model in the current minute (only with a model-specific tpm limit)",
                KEY_MODEL_LIMIT_LABELS,
            ),
            descs: b.descs,
            custom_labels,
        }
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
    /// Registers the system-health families (`prometheus_system`) next to the others.
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
                self.descs.push(FamilyDesc {
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
    let mut fam = Families::register(&registry, &config.metrics);
    fam.add_system(
        &registry,
        &super::system::SystemMetrics::new(&config.metrics.latency_buckets),
    );
    let mut out =
        String::from("| metric (as exposed) | type | labels | help |\n| --- | --- | --- | --- |\n");
    for d in &fam.descs {
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
