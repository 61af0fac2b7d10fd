//! The model list at run time: `POST /config/reload` (and SIGHUP) reads the config file again and hands its
//! `model_list` and `router_settings` to the RouterActor, which owns the list (`actors/router.rs`).
//!
//! A file with any problem is refused whole, every problem listed, and the running list is kept. What a
//! reload changes: deployments added, changed and removed (in-flight requests on a removed one finish on
//! it), router settings (strategy, retries, timeouts, fallbacks, cooldowns) and per-deployment prices. The
//! other sections (`llm_settings`, `general_settings`) are read at start only; a change there needs a
//! restart, and the answer says so.

use super::auth;
use super::state::AppState;
use crate::accounts::requests::{self, ModelDelete, ModelNew, ModelUpdate};
use crate::actors::router::{ModelsApplied, SetModels};
use crate::config::Config;
use crate::error::ApiError;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

/// Reads the config file again and applies its model list and router settings.
pub async fn reload_file(state: &AppState) -> Result<ModelsApplied, ApiError> {
    // One change at a time with the model API: two reloads apply their reads in order.
    let _one = MODEL_OPS.lock().await;
    let path = state.config.path.clone();
    let loaded = web::block(move || Config::load(&path))
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the config: {e}")))?;
    let config = loaded.map_err(|e| {
        ApiError::bad_request(format!(
            "the config was not reloaded; the running one is kept. {}",
            e.problems.join("; ")
        ))
        .with_param("config")
    })?;
    state
        .actors
        .router
        .send(SetModels {
            file: Some((config.model_list, config.router)),
            stored: None,
        })
        .await
        .map_err(|e| ApiError::internal(format!("router actor unavailable: {e}")))
}

/// `POST /config/reload` (master key).
pub async fn reload(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let applied = reload_file(&state).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "reloaded",
        "added": applied.added,
        "changed": applied.changed,
        "removed": applied.removed,
        "shadowed": applied.shadowed,
        "note": "model_list and router_settings were applied; llm_settings and general_settings take effect on restart",
    })))
}

// ---- the model management API ---------------------------------------------------------------------------
//
// LiteLLM's paths and fields, master key only, on with `general_settings.store_model_in_db: true`:
// `POST /model/new` (`model_name`, `litellm_params` or `llm_params`, `model_info` with an optional `id`),
// `POST /model/update` (`model_info.id` and only the fields to change), `POST /model/delete` (`id`),
// `GET /model/info` and `/v1/model/info` (`?litellm_model_id=`), `GET /model_group/info`. A deployment is
// validated exactly as a `model_list` entry, stored, then the RouterActor applies the stored list (the store
// is the source of truth; other replicas read it on the change announcement or their next read-back).
// Deployments of the config file are changed in the file and reloaded, not through the API. Secrets are
// never returned: `api_key` and the other credential parameters read `********`.

use crate::actors::router::load_stored;
use crate::config::{is_secret_param, DeploymentConfig};
use crate::store::Table;
use crate::units::now_ms;
use serde_json::{Map, Value as Json};

/// Model operations one at a time (per replica), so that a check and the write it guards cannot interleave.
static MODEL_OPS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Largest management request body.
const MAX_MODEL_BODY_BYTES: usize = 256 * 1024;

const MASK: &str = "********";

fn enabled(state: &AppState) -> Result<(), ApiError> {
    if state.config.general.store_model_in_db {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "the model management API is off: set `general_settings.store_model_in_db: true` (deployments made through it are stored and come back after a restart)",
    ))
}

/// What every model change starts with: the master key, the API turned on, and the body (read after the
/// key check) as the operation's typed request.
async fn model_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    state: &AppState,
    body: web::Payload,
) -> Result<T, ApiError> {
    auth::check_admin(req, state)?;
    enabled(state)?;
    let bytes = body
        .to_bytes_limited(MAX_MODEL_BODY_BYTES)
        .await
        .map_err(|_| ApiError::payload_too_large(MAX_MODEL_BODY_BYTES))?
        .map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
    requests::parse(&bytes)
}

/// A deployment entry as stored: `model_name`, `llm_params`, `model_info` (with `id` and `created_at`).
fn entry_from(body: ModelNew) -> Map<String, Json> {
    let mut entry = Map::new();
    entry.insert("model_name".into(), body.model_name.unwrap_or(Json::Null));
    entry.insert("llm_params".into(), Json::Object(body.litellm_params));
    entry.insert(
        "model_info".into(),
        Json::Object(body.model_info.unwrap_or_default()),
    );
    entry
}

/// Validates `entry` as a `model_list` entry would be.
fn validate(state: &AppState, entry: &Map<String, Json>) -> Result<DeploymentConfig, ApiError> {
    Config::parse_model(
        &Json::Object(entry.clone()),
        "body",
        state.config.request_timeout,
        &|n| std::env::var(n).ok(),
    )
    .map_err(|problems| ApiError::bad_request(problems.join("; ")))
}

/// Reads the stored deployments and has the RouterActor apply them; answers once they are in force here.
async fn apply_stored(state: &AppState) -> Result<(), ApiError> {
    let stored = load_stored(&state.actors.store, state.config.request_timeout)
        .await
        .map_err(|e| ApiError::store(&e))?;
    state
        .actors
        .router
        .send(SetModels {
            file: None,
            stored: Some(stored),
        })
        .await
        .map_err(|e| ApiError::internal(format!("router actor unavailable: {e}")))?;
    Ok(())
}

/// Whether `id` is a deployment of the config file in force (not a stored one).
fn from_file(state: &AppState, id: &str) -> bool {
    state
        .actors
        .routes
        .load()
        .deployment(id)
        .is_some_and(|d| d.cfg.model_info.get("db_model") != Some(&Json::Bool(true)))
}

/// Ids become label values and Redis message fields: short, and from a plain alphabet.
fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        return Ok(());
    }
    Err(ApiError::bad_request(
        "`model_info.id` must be 1 to 128 characters of letters, digits, `.`, `_`, `:` and `-`",
    )
    .with_param("model_info"))
}

/// Model group names are label values and appear in `/v1/models`: bounded, printable.
fn check_model_name(entry: &Map<String, Json>) -> Result<(), ApiError> {
    let ok = entry
        .get("model_name")
        .and_then(Json::as_str)
        .is_some_and(|n| {
            (1..=128).contains(&n.chars().count()) && !n.chars().any(char::is_control)
        });
    if ok {
        return Ok(());
    }
    Err(
        ApiError::bad_request("`model_name` must be 1 to 128 printable characters")
            .with_param("model_name"),
    )
}

/// `POST /model/new`.
pub async fn model_new(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: ModelNew = model_body(&req, &state, body).await?;
    let mut entry = entry_from(body);
    let _one = MODEL_OPS.lock().await;
    let info = entry
        .get_mut("model_info")
        .and_then(Json::as_object_mut)
        .expect("entry_from made model_info an object");
    let id = match info.get("id") {
        Some(Json::String(id)) if !id.trim().is_empty() => id.clone(),
        None | Some(Json::Null) => uuid::Uuid::new_v4().to_string(),
        Some(_) => {
            return Err(
                ApiError::bad_request("`model_info.id` must be a non-empty string")
                    .with_param("model_info"),
            )
        }
    };
    check_id(&id)?;
    info.insert("id".into(), Json::String(id.clone()));
    info.insert("created_at".into(), Json::from(now_ms()));
    info.insert("db_model".into(), Json::Bool(true));
    check_model_name(&entry)?;
    let cfg = validate(&state, &entry)?;
    let exists = || {
        ApiError::bad_request(format!("a deployment with id `{id}` exists"))
            .with_param("model_info")
    };
    if state.actors.routes.load().deployment(&id).is_some() {
        return Err(exists());
    }
    // Insert-if-absent: two replicas making the same id cannot both succeed.
    let made = state
        .actors
        .store
        .insert_new(Table::Models, &id, &Json::Object(entry))
        .await
        .map_err(|e| ApiError::store(&e))?;
    if !made {
        return Err(exists());
    }
    apply_stored(&state).await?;
    Ok(HttpResponse::Ok().json(shown(&cfg, true)))
}

/// Removes masked secrets (`********`) from a patch, at any depth.
fn drop_masked(p: &mut Map<String, Json>) {
    p.retain(|_, v| v.as_str() != Some(MASK));
    for v in p.values_mut() {
        if let Json::Object(o) = v {
            drop_masked(o);
        }
    }
}

/// Masks credential parameters at any depth (`extra_headers.Authorization` too).
fn mask_secrets(v: &mut Json) {
    if let Json::Object(o) = v {
        for (k, item) in o.iter_mut() {
            if is_secret_param(k) && !item.is_null() {
                *item = Json::String(MASK.into());
            } else {
                mask_secrets(item);
            }
        }
    } else if let Json::Array(items) = v {
        items.iter_mut().for_each(mask_secrets);
    }
}

/// Merges `patch` into `base`: objects key by key (a `null` removes the key), anything else replaces.
fn merge(base: &mut Map<String, Json>, patch: &Map<String, Json>) {
    for (k, v) in patch {
        match (base.get_mut(k), v) {
            (_, Json::Null) => {
                base.remove(k);
            }
            (Some(Json::Object(b)), Json::Object(p)) => merge(b, p),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `POST /model/update`: only the fields given change (`model_info.id` names the deployment).
pub async fn model_update(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: ModelUpdate = model_body(&req, &state, body).await?;
    let id = body
        .model_info
        .as_ref()
        .and_then(|i| i.get("id"))
        .and_then(Json::as_str)
        .map(str::to_owned)
        .or_else(|| body.id.as_ref().map(|t| t.0.clone()))
        .ok_or_else(|| {
            ApiError::bad_request("`model_info.id` is required").with_param("model_info")
        })?;
    let _one = MODEL_OPS.lock().await;
    let row = state
        .actors
        .store
        .get(Table::Models, &id)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let Some(row) = row else {
        if from_file(&state, &id) {
            return Err(ApiError::bad_request(format!(
                "deployment `{id}` is defined in the config file: change it there and reload (POST /config/reload or SIGHUP)"
            )));
        }
        return Err(ApiError::not_found(format!("deployment `{id}` not found")));
    };
    let mut entry: Map<String, Json> = serde_json::from_str(&row.data)
        .map_err(|e| ApiError::internal(format!("stored deployment `{id}` is not JSON: {e}")))?;
    let mut patch = Map::new();
    if let Some(n) = body.model_name {
        patch.insert("model_name".into(), n.unwrap_or(Json::Null));
    }
    if let Some(p) = body.litellm_params {
        let Some(mut p) = p else {
            return Err(ApiError::bad_request("`litellm_params` must be an object")
                .with_param("litellm_params"));
        };
        // A masked secret sent back (an info answer edited and returned) keeps the stored value.
        drop_masked(&mut p);
        patch.insert("llm_params".into(), Json::Object(p));
    }
    if let Some(mut info) = body.model_info {
        for fixed in ["id", "created_at", "db_model"] {
            info.remove(fixed);
        }
        patch.insert("model_info".into(), Json::Object(info));
    }
    merge(&mut entry, &patch);
    check_model_name(&entry)?;
    let cfg = validate(&state, &entry)?;
    // Compare and swap: an update another replica made meanwhile is not overwritten.
    let done = state
        .actors
        .store
        .replace_data(Table::Models, &id, &row.data, &Json::Object(entry))
        .await
        .map_err(|e| ApiError::store(&e))?;
    if !done {
        return Err(ApiError::new(
            crate::error::ErrorKind::BadRequestError,
            actix_web::http::StatusCode::CONFLICT,
            format!("deployment `{id}` was changed or deleted meanwhile; read it again and retry"),
        )
        .with_param("model_info"));
    }
    apply_stored(&state).await?;
    Ok(HttpResponse::Ok().json(shown(&cfg, true)))
}

/// `POST /model/delete` (`{"id": ...}`).
pub async fn model_delete(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body: ModelDelete = model_body(&req, &state, body).await?;
    let id = body.id.0;
    let _one = MODEL_OPS.lock().await;
    let deleted = state
        .actors
        .store
        .delete(Table::Models, std::slice::from_ref(&id))
        .await
        .map_err(|e| ApiError::store(&e))?;
    if deleted == 0 {
        if from_file(&state, &id) {
            return Err(ApiError::bad_request(format!(
                "deployment `{id}` is defined in the config file: remove it there and reload (POST /config/reload or SIGHUP)"
            )));
        }
        return Err(ApiError::not_found(format!("deployment `{id}` not found")));
    }
    apply_stored(&state).await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "message": format!("deployment `{id}` deleted"), "id": id })))
}

/// A deployment as the info endpoints show it, secrets masked.
fn shown(d: &DeploymentConfig, db_model: bool) -> Json {
    let mut params = Map::new();
    params.insert(
        "model".into(),
        Json::String(format!("{}/{}", d.provider.as_str(), d.model)),
    );
    if !d.api_base_shown.is_empty() {
        params.insert("api_base".into(), Json::String(d.api_base_shown.clone()));
    }
    if d.api_key.is_some() {
        params.insert("api_key".into(), Json::String(MASK.into()));
    }
    let opt = |v: Option<f64>| v.map(Json::from).unwrap_or(Json::Null);
    for (k, v) in [
        ("rpm", d.rpm.map(Json::from)),
        ("tpm", d.tpm.map(Json::from)),
        ("weight", d.weight.map(Json::from)),
        ("max_retries", d.max_retries.map(Json::from)),
        ("api_version", d.api_version.clone().map(Json::from)),
    ] {
        if let Some(v) = v {
            params.insert(k.into(), v);
        }
    }
    params.insert("timeout".into(), Json::from(d.timeout.as_secs_f64()));
    params.insert(
        "stream_timeout".into(),
        Json::from(d.stream_timeout.as_secs_f64()),
    );
    params.insert("input_cost_per_token".into(), opt(d.input_cost_per_token));
    params.insert("output_cost_per_token".into(), opt(d.output_cost_per_token));
    params.insert(
        "cache_read_input_token_cost".into(),
        opt(d.cache_read_input_token_cost),
    );
    params.insert(
        "cache_creation_input_token_cost".into(),
        opt(d.cache_creation_input_token_cost),
    );
    for (k, v) in &d.extra_params {
        let v = if is_secret_param(k) {
            Json::String(MASK.into())
        } else {
            v.clone()
        };
        params.insert(k.clone(), v);
    }
    let mut masked = Json::Object(d.model_info.clone());
    mask_secrets(&mut masked);
    let Json::Object(mut info) = masked else {
        unreachable!("an object stays an object")
    };
    info.insert("id".into(), Json::String(d.id.clone()));
    info.insert("db_model".into(), Json::Bool(db_model));
    json!({ "model_name": d.model_name, "litellm_params": params, "model_info": info })
}

#[derive(serde::Deserialize)]
pub struct InfoQuery {
    litellm_model_id: Option<String>,
}

/// `GET /model/info` and `/v1/model/info`: every deployment in force (or one, `?litellm_model_id=`).
pub async fn model_info(
    req: HttpRequest,
    q: web::Query<InfoQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let table = state.actors.routes.load();
    let data: Vec<Json> = table
        .deployments
        .iter()
        .filter(|d| {
            q.litellm_model_id
                .as_deref()
                .is_none_or(|id| d.cfg.id == id)
        })
        .map(|d| {
            shown(
                &d.cfg,
                d.cfg.model_info.get("db_model") == Some(&Json::Bool(true)),
            )
        })
        .collect();
    if let (Some(id), true) = (&q.litellm_model_id, data.is_empty()) {
        return Err(ApiError::not_found(format!("deployment `{id}` not found")));
    }
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}

/// `GET /model_group/info`: per group, its providers, deployments, summed limits and prices.
pub async fn model_group_info(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let table = state.actors.routes.load();
    let data: Vec<Json> = table
        .names
        .iter()
        .filter_map(|name| table.group(name))
        .map(|g| {
            let mut providers: Vec<&str> = g
                .deployments
                .iter()
                .map(|d| d.cfg.provider.as_str())
                .collect();
            providers.dedup();
            let sum = |f: fn(&DeploymentConfig) -> Option<u64>| -> Json {
                let v: Vec<u64> = g.deployments.iter().filter_map(|d| f(&d.cfg)).collect();
                if v.len() == g.deployments.len() {
                    Json::from(v.iter().sum::<u64>())
                } else {
                    Json::Null
                }
            };
            let first = &g.deployments[0].cfg;
            json!({
                "model_group": &*g.name,
                "providers": providers,
                "deployments": g.deployments.len(),
                "rpm": sum(|d| d.rpm),
                "tpm": sum(|d| d.tpm),
                "input_cost_per_token": first.input_cost_per_token,
                "output_cost_per_token": first.output_cost_per_token,
                "mode": "chat",
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "data": data })))
}
