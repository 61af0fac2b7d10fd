//! Where and how a deployment is called: its endpoint URLs and the headers that authenticate it, built and
//! checked once from its settings by its provider (`registry::target`). Config validation builds one for
//! every deployment, so a bad URL, version or key is a config error, never a failed request.

use super::Endpoint;
use crate::secret::Secret;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Uri;
use serde_json::{Map, Value as Json};

/// What a provider builds a target from (a deployment's `llm_params`).
pub struct TargetParams<'a> {
    pub api_base: &'a str,
    pub api_key: Option<&'a Secret>,
    pub api_version: Option<&'a str>,
    /// The model the upstream knows (for Azure, the deployment name).
    pub model: &'a str,
    /// The other `llm_params` (e.g. Azure's `azure_ad_token`).
    pub extra: &'a Map<String, Json>,
}

/// Where and how one deployment is called (URLs parsed, headers built).
#[derive(Default)]
pub struct Target {
    /// Chat completions, completions, embeddings; `None` where the provider has no such endpoint.
    urls: [Option<Uri>; 3],
    /// Sent with every call (authentication, API version); secrets marked sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

fn slot(e: Endpoint) -> usize {
    match e {
        Endpoint::ChatCompletions => 0,
        Endpoint::Completions => 1,
        Endpoint::Embeddings => 2,
    }
}

impl Target {
    /// A target with no endpoints (the built-in mock).
    pub fn none() -> Target {
        Target::default()
    }

    /// The URL of `endpoint`, if the provider serves it.
    pub fn url(&self, endpoint: Endpoint) -> Option<&Uri> {
        self.urls[slot(endpoint)].as_ref()
    }

    /// Sets the URL of `endpoint` to `url`; `setting` names what made it, for the error.
    pub fn with_url(
        mut self,
        endpoint: Endpoint,
        url: &str,
        setting: &str,
    ) -> Result<Target, String> {
        let uri = url
            .parse::<Uri>()
            .map_err(|_| format!("{setting}`: does not make a valid URL"))?;
        self.urls[slot(endpoint)] = Some(uri);
        Ok(self)
    }

    /// Adds a header whose value comes from a setting (a secret is marked sensitive: never logged).
    pub fn with_header(
        mut self,
        name: &'static str,
        value: &str,
        secret: bool,
        setting: &str,
    ) -> Result<Target, String> {
        let mut v = HeaderValue::from_str(value).map_err(|_| {
            format!("{setting}`: cannot be sent as an HTTP header (it holds a control character or a line break)")
        })?;
        v.set_sensitive(secret);
        self.headers.push((HeaderName::from_static(name), v));
        Ok(self)
    }
}
