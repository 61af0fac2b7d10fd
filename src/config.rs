//! Configuration: YAML file -> [`raw::RawConfig`] (serde mirror) -> [`Config`] (validated, defaults applied).
//!
//! Loading collects every problem it finds and reports each with its YAML path and the fix, so one run of
//! `llm --check-config` lists them all. `os.environ/NAME` is resolved wherever a string is allowed.

mod deployments;
pub mod raw;
mod types;
mod validate;

use deployments::{deployment, derive_ids, env_only_in_secrets, resolve_env};
pub use deployments::{is_secret_param, list_price, shown_url};
pub use types::*;
pub use validate::sanitize_label_name;
use validate::validate;

use raw::{RawConfig, RawDeployment};
use serde_json::Value as Json;
use std::path::Path;
use std::time::Duration;

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

#[cfg(test)]
mod tests;
