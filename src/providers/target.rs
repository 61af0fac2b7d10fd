//! Where and how a deployment is called: its endpoint URLs and auth header, built and checked once from its
//! settings. Config validation builds one for every deployment, so a bad URL or key is a config error.

use super::Endpoint;
use crate::secret::Secret;
use actix_web::http::header::HeaderValue;
use actix_web::http::Uri;

/// Where and how one deployment is called, computed once at startup (URLs parsed, auth header built).
pub struct Target {
    chat: Uri,
    completions: Uri,
    embeddings: Uri,
    pub auth: Option<HeaderValue>,
}

impl Target {
    /// Fails, saying which setting is wrong, when the base URL does not make valid URLs or the key cannot
    /// be sent as a header. Config validation calls this for every deployment (`llm_params.api_base`, `llm_params.api_key`), so a deployment that
    /// passed `--check-config` always has its target.
    pub fn new(api_base: &str, api_key: Option<&Secret>) -> Result<Target, String> {
        let url = |e: Endpoint| {
            format!("{}{}", api_base, e.path())
                .parse::<Uri>()
                .map_err(|_| "api_base`: does not make a valid URL".to_owned())
        };
        let auth = match api_key {
            Some(key) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(
                    |_| {
                        "api_key`: cannot be sent as an HTTP header (it holds a control character or a line break)"
                            .to_owned()
                    },
                )?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Target {
            chat: url(Endpoint::ChatCompletions)?,
            completions: url(Endpoint::Completions)?,
            embeddings: url(Endpoint::Embeddings)?,
            auth,
        })
    }

    pub fn url(&self, e: Endpoint) -> &Uri {
        match e {
            Endpoint::ChatCompletions => &self.chat,
            Endpoint::Completions => &self.completions,
            Endpoint::Embeddings => &self.embeddings,
        }
    }
}
