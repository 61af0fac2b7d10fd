//! The management API (master key only), with LiteLLM's paths and field names: keys, teams, internal users,
//! end users (customers), spend logs and spend reports. Writes go to the BudgetActor, one at a time; reads
//! come from memory (entities) or the store (spend log).

use super::auth;
use super::state::AppState;
use crate::accounts::admin::AdminOp;
use crate::accounts::requests;
use crate::accounts::token_of;
use crate::accounts::views::{end_user_info, key_info, team_info, user_info};
use crate::actors::budget::{Admin, Flush};
use crate::error::ApiError;
use crate::store::SpendFilter;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::{json, Value as Json};
use std::collections::HashMap;

/// A mutation route: the body parsed as `T` (a typed request of `accounts/requests.rs`), made into its
/// operation by `make`, run by the BudgetActor.
fn mutation<T: DeserializeOwned + 'static>(
    cfg: &mut web::ServiceConfig,
    path: &str,
    make: fn(T) -> AdminOp,
) {
    cfg.route(
        path,
        web::post().to(move |req, body, state| mutate(req, body, state, make)),
    );
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    mutation(cfg, "/key/generate", AdminOp::KeyGenerate);
    mutation(cfg, "/key/update", AdminOp::KeyUpdate);
    mutation(cfg, "/key/delete", AdminOp::KeyDelete);
    mutation(cfg, "/key/block", |k| AdminOp::KeyBlock(k, true));
    mutation(cfg, "/key/unblock", |k| AdminOp::KeyBlock(k, false));
    mutation(cfg, "/team/new", AdminOp::TeamNew);
    mutation(cfg, "/team/update", AdminOp::TeamUpdate);
    mutation(cfg, "/team/delete", AdminOp::TeamDelete);
    mutation(cfg, "/team/member_add", AdminOp::TeamMemberAdd);
    mutation(cfg, "/team/member_delete", AdminOp::TeamMemberDelete);
    mutation(cfg, "/user/new", AdminOp::UserNew);
    mutation(cfg, "/user/update", AdminOp::UserUpdate);
    mutation(cfg, "/user/delete", AdminOp::UserDelete);
    mutation(cfg, "/customer/new", AdminOp::CustomerNew);
    mutation(cfg, "/customer/update", AdminOp::CustomerUpdate);
    mutation(cfg, "/customer/delete", AdminOp::CustomerDelete);
    cfg.route("/key/info", web::get().to(key_info_handler))
        .route("/key/list", web::get().to(key_list))
        .route("/team/info", web::get().to(team_info_handler))
        .route("/team/list", web::get().to(team_list))
        .route("/user/info", web::get().to(user_info_handler))
        .route("/user/list", web::get().to(user_list))
        .route("/customer/info", web::get().to(customer_info_handler))
        .route("/customer/list", web::get().to(customer_list))
        .route("/spend/logs", web::get().to(spend_logs))
        .route("/global/spend/report", web::get().to(spend_report))
        .route(
            "/config/reload",
            web::post().to(super::models_admin::reload),
        )
        .route("/model/new", web::post().to(super::models_admin::model_new))
        .route(
            "/model/update",
            web::post().to(super::models_admin::model_update),
        )
        .route(
            "/model/delete",
            web::post().to(super::models_admin::model_delete),
        )
        .route(
            "/model/info",
            web::get().to(super::models_admin::model_info),
        )
        .route(
            "/v1/model/info",
            web::get().to(super::models_admin::model_info),
        )
        .route(
            "/model_group/info",
            web::get().to(super::models_admin::model_group_info),
        );
}

/// Largest management request body (a key or team with its metadata fits many times over).
const MAX_ADMIN_BODY_BYTES: usize = 1024 * 1024;

async fn mutate<T: DeserializeOwned>(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    make: fn(T) -> AdminOp,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    // Read only now: a caller without the master key never gets its body read.
    let body = super::body::read_body(&req, body, MAX_ADMIN_BODY_BYTES, &state).await?;
    let op = make(requests::parse::<T>(&body)?);
    let out = state
        .actors
        .budget
        .send(Admin(op))
        .await
        .map_err(|e| ApiError::internal(format!("budget actor unavailable: {e}")))??;
    Ok(HttpResponse::Ok().json(out))
}

type Query = web::Query<HashMap<String, String>>;

fn required<'a>(q: &'a Query, name: &str) -> Result<&'a str, ApiError> {
    q.get(name)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("query parameter `{name}` is required")).with_param(name)
        })
}

async fn key_info_handler(
    req: HttpRequest,
    q: Query,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let token = token_of(required(&q, "key")?);
    let e = state
        .actors
        .accounts
        .keys
        .get(&token)
        .map(|e| e.clone())
        .ok_or_else(|| ApiError::not_found("key not found"))?;
    Ok(HttpResponse::Ok().json(json!({"key": token, "info": key_info(&e)})))
}

fn page(q: &Query) -> Result<(usize, usize), ApiError> {
    let num = |name: &str, default: usize| -> Result<usize, ApiError> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::bad_request(format!("`{name}` must be a positive integer"))
                    .with_param(name)
            }),
        }
    };
    // Bounded so that (page - 1) * size cannot overflow.
    Ok((num("page", 1)?.min(1_000_000), num("size", 100)?.min(1000)))
}

async fn key_list(
    req: HttpRequest,
    q: Query,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let (page, size) = page(&q)?;
    let mut keys: Vec<_> = state
        .actors
        .accounts
        .keys
        .iter()
        .filter(|e| {
            q.get("team_id")
                .is_none_or(|t| e.rec.team_id.as_ref() == Some(t))
        })
        .filter(|e| {
            q.get("user_id")
                .is_none_or(|u| e.rec.user_id.as_ref() == Some(u))
        })
        .filter(|e| {
            q.get("key_alias")
                .is_none_or(|a| e.rec.key_alias.as_ref() == Some(a))
        })
        .map(|e| (e.rec.created_at, e.rec.token.clone(), e.clone()))
        .collect();
    keys.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let total = keys.len();
    let full = q.get("return_full_object").is_some_and(|v| v == "true");
    let items: Vec<Json> = keys
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|(_, t, e)| {
            if full {
                key_info(e)
            } else {
                Json::String(t.clone())
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "keys": items, "total_count": total, "current_page": page, "total_pages": total.div_ceil(size),
    })))
}

async fn team_info_handler(
    req: HttpRequest,
    q: Query,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let id = required(&q, "team_id")?;
    let e = state
        .actors
        .accounts
        .teams
        .get(id)
        .map(|e| e.clone())
        .ok_or_else(|| ApiError::not_found(format!("team `{id}` not found")))?;
    let keys: Vec<Json> = state
        .actors
        .accounts
        .keys
        .iter()
        .filter(|k| k.rec.team_id.as_deref() == Some(id))
        .map(|k| key_info(&k))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"team_id": id, "team_info": team_info(&e), "keys": keys})))
}

async fn team_list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let mut teams: Vec<_> = state
        .actors
        .accounts
        .teams
        .iter()
        .map(|e| (e.rec.created_at, team_info(&e)))
        .collect();
    teams.sort_by_key(|t| t.0);
    Ok(HttpResponse::Ok().json(teams.into_iter().map(|t| t.1).collect::<Vec<_>>()))
}

/// `GET /user/list?page=1&page_size=25`: internal users, oldest first, with LiteLLM's paging fields.
async fn user_list(
    req: HttpRequest,
    q: Query,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let number = |name: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!("`{name}` must be an integer from 1 to {max}"))
                        .with_param(name)
                }),
        }
    };
    let page = number("page", 1, usize::MAX)?;
    let page_size = number("page_size", 25, 1000)?;
    let mut users: Vec<_> = state
        .actors
        .accounts
        .users
        .iter()
        .map(|e| (e.rec.created_at, e.rec.user_id.clone(), user_info(&e)))
        .collect();
    users.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let total = users.len();
    let shown: Vec<Json> = users
        .into_iter()
        .skip((page - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|u| u.2)
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "users": shown,
        "total": total,
        "page": page,
        "page_size": page_size,
        "total_pages": total.div_ceil(page_size),
    })))
}

async fn user_info_handler(
    req: HttpRequest,
    q: Query,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let id = required(&q, "user_id")?;
    let e = state
        .actors
        .accounts
        .users
        .get(id)
        .map(|e| e.clone())
        .ok_or_else(|| ApiError::not_found(format!("user `{id}` not found")))?;
    let keys: Vec<Json> = state
        .actors
        .accounts
        .keys
        .iter()
        .filter(|k| k.rec.user_id.as_deref() == Some(id))
        .map(|k| key_info(&k))
        .collect();
    let teams: Vec<Json> = state
        .actors
        .accounts
        .teams
        .iter()
        .filter(|t| {
            t.rec
                .members_with_roles
                .iter()
                .any(|m| m.user_id.as_deref() == Some(id))
        })
        .map(|t| team_info(&t))
        .collect();
    // The user's teams are the teams that list it as a member (`/team/member_add`), in both places.
    let mut info = user_info(&e);
    info["teams"] = teams.iter().map(|t| t["team_id"].clone()).collect();
    Ok(HttpResponse::Ok()
        .json(json!({"user_id": id, "user_info": info, "keys": keys, "teams": teams})))
}

/// `GET /customer/list`: every end user (customer) with its budget and spend, oldest first.
async fn customer_list(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let mut all: Vec<_> = state
        .actors
        .accounts
        .end_users
        .iter()
        .map(|e| (e.rec.created_at, end_user_info(&e)))
        .collect();
    all.sort_by_key(|t| t.0);
    Ok(HttpResponse::Ok().json(all.into_iter().map(|t| t.1).collect::<Vec<_>>()))
}

async fn customer_info_handler(
    req: HttpRequest,
    q: Query,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let id = q
        .get("end_user_id")
        .or_else(|| q.get("user_id"))
        .map(String::as_str)
        .unwrap_or("");
    if id.is_empty() {
        return Err(
            ApiError::bad_request("query parameter `end_user_id` is required")
                .with_param("end_user_id"),
        );
    }
    let e = state
        .actors
        .accounts
        .end_users
        .get(id)
        .map(|e| e.clone())
        .ok_or_else(|| ApiError::not_found(format!("customer `{id}` not found")))?;
    Ok(HttpResponse::Ok().json(end_user_info(&e)))
}

/// `start_date` / `end_date`: `YYYY-MM-DD` (UTC days, end exclusive of the next day) or unix milliseconds.
fn date_ms(q: &Query, name: &str, end: bool) -> Result<Option<i64>, ApiError> {
    let Some(v) = q.get(name) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    let parts: Vec<&str> = v.split('-').collect();
    let parsed = (parts.len() == 3)
        .then(|| {
            Some((
                parts[0].parse::<i64>().ok()?,
                parts[1].parse::<u32>().ok()?,
                parts[2].parse::<u32>().ok()?,
            ))
        })
        .flatten()
        .filter(|(y, m, d)| {
            (1970..=9999).contains(y) && (1..=12).contains(m) && (1..=31).contains(d)
        });
    let Some((y, m, d)) = parsed else {
        return Err(ApiError::bad_request(format!(
            "`{name}` must be YYYY-MM-DD or unix milliseconds"
        ))
        .with_param(name));
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468 + i64::from(end);
    Ok(Some(days * 86_400_000))
}

fn filter(q: &Query) -> Result<SpendFilter, ApiError> {
    Ok(SpendFilter {
        api_key: q.get("api_key").map(|k| token_of(k)),
        team_id: q.get("team_id").cloned(),
        user_id: q.get("user_id").cloned(),
        model: q.get("model").cloned(),
        start_ms: date_ms(q, "start_date", false)?,
        end_ms: date_ms(q, "end_date", true)?,
    })
}

async fn spend_logs(
    req: HttpRequest,
    q: Query,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let f = filter(&q)?;
    let (page, size) = page(&q)?;
    // Rows still in the budget actor's buffer are written first, so a client sees its own requests.
    let _ = state.actors.budget.send(Flush).await;
    let (logs, total) = state
        .actors
        .store
        .spend_logs(&f, size as i64, ((page - 1) * size) as i64)
        .await
        .map_err(|e| ApiError::store(&e))?;
    Ok(HttpResponse::Ok().json(json!({
        "data": logs, "total": total, "page": page, "page_size": size, "total_pages": (total as usize).div_ceil(size),
    })))
}

async fn spend_report(
    req: HttpRequest,
    q: Query,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_admin(&req, &state)?;
    let f = filter(&q)?;
    let group_by = match q.get("group_by").map(String::as_str).unwrap_or("team") {
        "team" => "team_id",
        "key" | "api_key" => "api_key",
        "user" => "user_id",
        "customer" | "end_user" => "end_user",
        "model" | "model_group" => "model_group",
        other => {
            return Err(ApiError::bad_request(format!(
                "`group_by` must be team, key, user, customer or model, got `{other}`"
            ))
            .with_param("group_by"))
        }
    };
    // `per_day=true`: one line per day and group (UTC days), for a chart.
    let per_day = match q.get("per_day").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(
                ApiError::bad_request("`per_day` must be true or false").with_param("per_day")
            )
        }
    };
    let _ = state.actors.budget.send(Flush).await;
    let rows = state
        .actors
        .store
        .spend_report(&f, group_by, per_day)
        .await
        .map_err(|e| ApiError::store(&e))?;
    let total: f64 = rows.iter().map(|r| r.spend).sum();
    let data: Vec<Json> = rows
        .into_iter()
        .map(|r| {
            let mut row = json!({"group": r.group, "spend": r.spend, "total_tokens": r.total_tokens, "requests": r.requests});
            if let Some(d) = r.day {
                row["day"] = json!(crate::accounts::views::iso(d.saturating_mul(86_400_000))[..10]);
            }
            row
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"group_by": group_by, "total_spend": total, "data": data})))
}
