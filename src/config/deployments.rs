//! One `model_list` entry: provider, upstream, limits and prices checked and resolved (`os.environ/NAME`
//! in secrets only; ids derived from the entry when not given), and the built-in price list.

use super::raw::RawDeployment;
use super::types::*;
use crate::providers::ProviderKind;
use crate::secret::Secret;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

pub(super) fn deployment(
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
        (ProviderKind::Anthropic, None) => "https://api.anthropic.com".to_owned(),
        (ProviderKind::Azure, None) => {
            problems.push(format!(
                "`{at}.llm_params.api_base` is required for `azure` deployments (the resource endpoint, e.g. https://my-resource.openai.azure.com)"
            ));
            String::new()
        }
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
        ("cache_read_input_token_cost", p.cache_read_input_token_cost),
        (
            "cache_creation_input_token_cost",
            p.cache_creation_input_token_cost,
        ),
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
    // Priced by `model_info.base_model` when set (an Azure deployment's name is often not a model name,
    // as LiteLLM has it), else by the model name.
    let base_model = d.model_info.get("base_model").and_then(Json::as_str);
    let listed = (provider != ProviderKind::Mock)
        .then(|| list_price(base_model.unwrap_or(&model)))
        .flatten();
    let input_cost_per_token = p.input_cost_per_token.or(listed.map(|l| l.0));
    // Anthropic prices its prompt cache from the input price: reads at a tenth, writes at 1.25 times.
    let cache_default = input_cost_per_token
        .filter(|_| provider == ProviderKind::Anthropic)
        .map(|i| (i * 0.1, i * 1.25));
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
        input_cost_per_token,
        output_cost_per_token: p.output_cost_per_token.or(listed.map(|l| l.1)),
        cache_read_input_token_cost: p.cache_read_input_token_cost.or(cache_default.map(|c| c.0)),
        cache_creation_input_token_cost: p
            .cache_creation_input_token_cost
            .or(cache_default.map(|c| c.1)),
        mock_response: p.mock_response,
        mock_latency: Duration::from_millis(p.mock_latency_ms.unwrap_or(0)),
        extra_params: p.extra,
        model_info: d.model_info,
    };
    // The upstream target is built once here so that a deployment whose URL or key cannot be used is a
    // config error, never a deployment silently answered by the mock.
    {
        if let Err(e) = crate::providers::registry::target(dep.provider, &dep.target_params()) {
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
pub(super) fn derive_ids(tree: &serde_norway::Value) -> Vec<String> {
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
pub(super) fn env_only_in_secrets(
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
pub(super) fn resolve_env(
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

/// The built-in price list (`data/model_prices.json`): USD per input and output token by model name.
static PRICES: &str = include_str!("../../data/model_prices.json");

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

/// The longest duration a setting may have (ten years): more is a typo, and `Duration` arithmetic on it
/// would overflow.
pub(super) const MAX_SETTING_SECS: f64 = 10.0 * 365.0 * 86_400.0;

pub(super) fn secs(path: &str, v: f64, problems: &mut Vec<String>) -> Duration {
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
pub(super) fn secs_or_zero(path: &str, v: f64, problems: &mut Vec<String>) -> Duration {
    if v.is_nan() || v <= 0.0 {
        return Duration::ZERO;
    }
    secs(path, v, problems)
}

/// A `general_settings` number of seconds, or its default.
pub(super) fn setting_secs(
    key: &str,
    v: Option<f64>,
    default: f64,
    problems: &mut Vec<String>,
) -> Duration {
    secs(
        &format!("general_settings.{key}"),
        v.unwrap_or(default),
        problems,
    )
}
