//! The catalog of every metric family the gateway can export: name, help, type, labels (in declaration
//! order; the exposition sorts them), whether the custom metadata labels are appended, and buckets. Names
//! and labels are the spec's, exactly. Pure data at the bottom of the module tree: the config validates
//! `prometheus_metrics_config` and `prometheus_exclude_labels` against it, the families are built from it.

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

pub const USER_BUDGET_LABELS: &[&str] = &[USER];
pub const CUSTOMER_BUDGET_LABELS: &[&str] = &[END_USER];

/// Which buckets a histogram uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buckets {
    /// Not a histogram.
    None,
    /// `llm_settings.prometheus_latency_buckets` (the reference's latency buckets by default).
    Latency,
    /// prometheus_client's defaults.
    Default,
}

/// One family of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// The registered name; counters are exposed with `_total` appended.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    /// Request-scoped: the custom metadata labels are appended.
    pub custom: bool,
    pub buckets: Buckets,
}

/// Every family, in exposition order.
pub const CATALOG: &[Entry] = &[
    Entry {
        name: "llm_proxy_total_requests_metric",
        help: "Total number of requests made to the proxy server - track number of client side requests",
        kind: Kind::Counter,
        labels: PROXY_TOTAL_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_proxy_failed_requests_metric",
        help: "Total number of failed responses from proxy - the client did not get a success response from llm proxy",
        kind: Kind::Counter,
        labels: PROXY_FAILED_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_spend_metric",
        help: "Total spend on LLM requests (USD)",
        kind: Kind::Counter,
        labels: USAGE_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_total_tokens",
        help: "Total number of input + output tokens from LLM requests",
        kind: Kind::Counter,
        labels: USAGE_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_input_tokens",
        help: "Total number of input tokens from LLM requests",
        kind: Kind::Counter,
        labels: USAGE_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_output_tokens",
        help: "Total number of output tokens from LLM requests",
        kind: Kind::Counter,
        labels: USAGE_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_requests_metric",
        help: "deprecated - use llm_proxy_total_requests_metric. Total number of LLM calls to llm - track total per API Key, team, user",
        kind: Kind::Counter,
        labels: LEGACY_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_llm_api_failed_requests_metric",
        help: "deprecated - use llm_proxy_failed_requests_metric",
        kind: Kind::Counter,
        labels: LEGACY_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_deployment_success_responses",
        help: "LLM Deployment Analytics - Total number of successful LLM API calls via llm",
        kind: Kind::Counter,
        labels: DEPLOYMENT_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_deployment_failure_responses",
        help: "LLM Deployment Analytics - Total number of failed LLM API calls for a specific LLM deployment",
        kind: Kind::Counter,
        labels: DEPLOYMENT_FAILURE_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_deployment_total_requests",
        help: "LLM Deployment Analytics - Total number of LLM API calls via llm - success + failure",
        kind: Kind::Counter,
        labels: DEPLOYMENT_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_metrics_series_dropped",
        help: "Updates whose new label set found no room of its own (the family had reached llm_settings.prometheus_max_series_per_metric): a counter or histogram update went to the family's `other` series, a gauge update was dropped",
        kind: Kind::Counter,
        labels: &[METRIC],
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_deployment_cooled_down",
        help: "LLM Deployment Analytics - Number of times a deployment has been cooled down by llm load balancing logic",
        kind: Kind::Counter,
        labels: COOLED_DOWN_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_deployment_successful_fallbacks",
        help: "LLM Deployment Analytics - Number of successful fallback requests from primary model -> fallback model",
        kind: Kind::Counter,
        labels: FALLBACK_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_deployment_failed_fallbacks",
        help: "LLM Deployment Analytics - Number of failed fallback requests from primary model -> fallback model",
        kind: Kind::Counter,
        labels: FALLBACK_LABELS,
        custom: true,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_deployment_state",
        help: "LLM Deployment Analytics - The state of the deployment: 0 = healthy, 1 = partial outage, 2 = complete outage",
        kind: Kind::Gauge,
        labels: STATE_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_remaining_requests_metric",
        help: "LLM Deployment Analytics - remaining requests for model, returned from LLM API Provider (x-ratelimit-remaining-requests)",
        kind: Kind::Gauge,
        labels: REMAINING_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_remaining_tokens",
        help: "LLM Deployment Analytics - remaining tokens for model, returned from LLM API Provider (x-ratelimit-remaining-tokens)",
        kind: Kind::Gauge,
        labels: REMAINING_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_request_total_latency_metric",
        help: "Total latency (seconds) for a request to LLM Proxy Server",
        kind: Kind::Histogram,
        labels: USAGE_LABELS,
        custom: true,
        buckets: Buckets::Latency,
    },
    Entry {
        name: "llm_overhead_latency_metric",
        help: "Latency overhead (seconds) added by LLM processing",
        kind: Kind::Histogram,
        labels: USAGE_LABELS,
        custom: true,
        buckets: Buckets::Latency,
    },
    Entry {
        name: "llm_llm_api_latency_metric",
        help: "Total latency (seconds) for a models LLM API call",
        kind: Kind::Histogram,
        labels: API_LATENCY_LABELS,
        custom: true,
        buckets: Buckets::Latency,
    },
    Entry {
        name: "llm_llm_api_time_to_first_token_metric",
        help: "Time to first token for a models LLM API call (streaming requests only)",
        kind: Kind::Histogram,
        labels: TTFT_LABELS,
        custom: true,
        buckets: Buckets::Latency,
    },
    Entry {
        name: "llm_deployment_latency_per_output_token",
        help: "LLM Deployment Analytics - Latency per output token (seconds)",
        kind: Kind::Histogram,
        labels: PER_TOKEN_LABELS,
        custom: true,
        buckets: Buckets::Default,
    },
    Entry {
        name: "llm_team_max_budget_metric",
        help: "Maximum budget set for team",
        kind: Kind::Gauge,
        labels: TEAM_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_remaining_team_budget_metric",
        help: "Remaining budget for team (USD; +Inf without a max budget)",
        kind: Kind::Gauge,
        labels: TEAM_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_team_budget_remaining_hours_metric",
        help: "Hours until the team budget is reset",
        kind: Kind::Gauge,
        labels: TEAM_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_api_key_max_budget_metric",
        help: "Maximum budget set for api key",
        kind: Kind::Gauge,
        labels: KEY_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_remaining_api_key_budget_metric",
        help: "Remaining budget for api key (USD; +Inf without a max budget)",
        kind: Kind::Gauge,
        labels: KEY_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_api_key_budget_remaining_hours_metric",
        help: "Hours until the api key budget is reset",
        kind: Kind::Gauge,
        labels: KEY_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_remaining_api_key_requests_for_model",
        help: "Remaining requests the API key can make for the model in the current minute (only with a model-specific rpm limit)",
        kind: Kind::Gauge,
        labels: KEY_MODEL_LIMIT_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_remaining_api_key_tokens_for_model",
        help: "Remaining tokens the API key can use for the model in the current minute (only with a model-specific tpm limit)",
        kind: Kind::Gauge,
        labels: KEY_MODEL_LIMIT_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_user_max_budget_metric",
        help: "Maximum budget set for internal user",
        kind: Kind::Gauge,
        labels: USER_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_remaining_user_budget_metric",
        help: "Remaining budget for internal user (USD; +Inf without a max budget)",
        kind: Kind::Gauge,
        labels: USER_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_user_budget_remaining_hours_metric",
        help: "Hours until the internal user budget is reset",
        kind: Kind::Gauge,
        labels: USER_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_customer_max_budget_metric",
        help: "Maximum budget set for end user (customer)",
        kind: Kind::Gauge,
        labels: CUSTOMER_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_remaining_customer_budget_metric",
        help: "Remaining budget for end user (customer) (USD; +Inf without a max budget)",
        kind: Kind::Gauge,
        labels: CUSTOMER_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
    Entry {
        name: "llm_customer_budget_remaining_hours_metric",
        help: "Hours until the end user (customer) budget is reset",
        kind: Kind::Gauge,
        labels: CUSTOMER_BUDGET_LABELS,
        custom: false,
        buckets: Buckets::None,
    },
];

/// The catalog entry of a family, by its registered name, its exposed name (`_total`) or the reference's
/// name (`litellm_` for `llm_`, so a LiteLLM `prometheus_metrics_config` carries over).
pub fn entry(name: &str) -> Option<&'static Entry> {
    let name = name
        .strip_prefix("litellm_")
        .map_or_else(|| name.to_string(), |n| format!("llm_{n}"));
    let bare = name.strip_suffix("_total").unwrap_or(&name);
    CATALOG.iter().find(|e| e.name == name || e.name == bare)
}
