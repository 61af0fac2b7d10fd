//! The management API's operations on keys, teams, internal users and end users. Runs inside the
//! BudgetActor (one operation at a time). Requests arrive typed and validated
//! ([`requests`](super::requests)); every kind goes through one generic path
//! ([`managed`](super::managed): create, update, delete, which write the store first and memory second,
//! so an error leaves nothing half-written). Here is only what is particular to each operation: a key's
//! secret, a team's members, the keys that go with a deleted team or user.

pub use super::managed::Effects;
use super::managed::{
    create, delete, exist, next_reset, save, update, Ctx, Customer, Key, Team, User,
};
use super::requests::{
    CustomerFields, KeyDelete, KeyFields, KeyRef, MemberAdd, MemberDelete, MemberIn, Members,
    Patch, TeamDelete, TeamFields, Text, UserDelete, UserFields,
};
use super::*;
use crate::store::{KeyOwner, Store, Table};

/// One management operation, its body already parsed and validated.
#[derive(Debug, Clone)]
pub enum AdminOp {
    KeyGenerate(KeyFields),
    KeyUpdate(KeyFields),
    KeyDelete(KeyDelete),
    KeyBlock(KeyRef, bool),
    TeamNew(TeamFields),
    TeamUpdate(TeamFields),
    TeamDelete(TeamDelete),
    TeamMemberAdd(MemberAdd),
    TeamMemberDelete(MemberDelete),
    UserNew(UserFields),
    UserUpdate(UserFields),
    UserDelete(UserDelete),
    CustomerNew(CustomerFields),
    CustomerUpdate(CustomerFields),
    CustomerDelete(UserDelete),
}

pub async fn run(
    accounts: &Accounts,
    store: &Store,
    op: AdminOp,
    now: i64,
) -> Result<(Json, Effects), ApiError> {
    let mut cx = Ctx {
        accounts,
        store,
        now,
        fx: Effects::default(),
    };
    let out = match op {
        AdminOp::KeyGenerate(f) => key_generate(&mut cx, f).await?,
        AdminOp::KeyUpdate(f) => {
            let token = token_of(&required(&f.key, "key")?);
            update::<Key>(&mut cx, &token, |cx, rec| apply_key(cx, rec, &f)).await?
        }
        AdminOp::KeyBlock(r, blocked) => {
            let token = token_of(&nonempty(r.key, "key")?);
            update::<Key>(&mut cx, &token, |_, rec| {
                rec.blocked = blocked;
                Ok(false)
            })
            .await?
        }
        AdminOp::KeyDelete(d) => key_delete(&mut cx, d).await?,
        AdminOp::TeamNew(f) => {
            let id = given_or_new(&f.team_id);
            let mut rec = TeamRecord {
                team_id: id.clone(),
                created_at: cx.now,
                ..Default::default()
            };
            apply_team(&mut rec, &f);
            create::<Team>(&mut cx, &id, rec).await?
        }
        AdminOp::TeamUpdate(f) => {
            let id = required(&f.team_id, "team_id")?;
            let out = update::<Team>(&mut cx, &id, |_, rec| Ok(apply_team(rec, &f))).await?;
            refresh_key_labels(cx.accounts);
            out
        }
        AdminOp::TeamDelete(d) => {
            let ids = texts(d.team_ids, "team_ids")?;
            exist::<Team>(&cx, &ids)?;
            // The team's keys go first: a key must never outlive the budget and model list it was made under.
            let keys = delete_keys_of(&mut cx, KeyOwner::Team, &ids).await?;
            delete::<Team>(&mut cx, &ids).await?;
            serde_json::json!({ "deleted_teams": ids, "deleted_keys": keys })
        }
        AdminOp::TeamMemberAdd(m) => member_add(&mut cx, m).await?,
        AdminOp::TeamMemberDelete(m) => member_delete(&mut cx, m).await?,
        AdminOp::UserNew(f) => user_new(&mut cx, f).await?,
        AdminOp::UserUpdate(f) => {
            let id = required(&f.user_id, "user_id")?;
            update::<User>(&mut cx, &id, |_, rec| Ok(apply_user(rec, &f))).await?
        }
        AdminOp::UserDelete(d) => {
            let ids = texts(d.user_ids, "user_ids")?;
            exist::<User>(&cx, &ids)?;
            // As LiteLLM does: a deleted user's keys are deleted with it.
            let keys = delete_keys_of(&mut cx, KeyOwner::User, &ids).await?;
            delete::<User>(&mut cx, &ids).await?;
            serde_json::json!({ "deleted_users": ids, "deleted_keys": keys })
        }
        AdminOp::CustomerNew(f) => {
            let id = required(&f.user_id, "user_id")?;
            let mut rec = EndUserRecord {
                user_id: id.clone(),
                created_at: cx.now,
                ..Default::default()
            };
            apply_end_user(&mut rec, &f);
            create::<Customer>(&mut cx, &id, rec).await?
        }
        AdminOp::CustomerUpdate(f) => {
            let id = required(&f.user_id, "user_id")?;
            update::<Customer>(&mut cx, &id, |_, rec| Ok(apply_end_user(rec, &f))).await?
        }
        AdminOp::CustomerDelete(d) => {
            let ids = texts(d.user_ids, "user_ids")?;
            exist::<Customer>(&cx, &ids)?;
            delete::<Customer>(&mut cx, &ids).await?;
            serde_json::json!({ "deleted_customers": ids })
        }
    };
    Ok((out, cx.fx))
}

fn required(v: &Patch<Text>, name: &str) -> Result<String, ApiError> {
    match v {
        Some(Some(t)) if !t.0.is_empty() => Ok(t.0.clone()),
        _ => Err(ApiError::bad_request(format!("`{name}` is required")).with_param(name)),
    }
}

fn nonempty(t: Text, name: &str) -> Result<String, ApiError> {
    if t.0.is_empty() {
        return Err(ApiError::bad_request(format!("`{name}` is required")).with_param(name));
    }
    Ok(t.0)
}

fn given_or_new(v: &Patch<Text>) -> String {
    match v {
        Some(Some(t)) if !t.0.is_empty() => t.0.clone(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

fn texts(v: Vec<Text>, name: &str) -> Result<Vec<String>, ApiError> {
    if v.is_empty() {
        return Err(
            ApiError::bad_request(format!("`{name}` is required: a non-empty list"))
                .with_param(name),
        );
    }
    Ok(v.into_iter().map(|t| t.0).collect())
}

fn set<T, U: Into<T> + Clone>(target: &mut Option<T>, v: &Patch<U>) {
    if let Some(v) = v {
        *target = v.clone().map(Into::into);
    }
}

fn set_vec(target: &mut Vec<String>, v: &Patch<Vec<Text>>) {
    if let Some(v) = v {
        *target = v.iter().flatten().map(|t| t.0.clone()).collect();
    }
}

fn set_or<T: Clone>(target: &mut T, v: &Patch<T>, unset: T) {
    if let Some(v) = v {
        *target = v.clone().unwrap_or(unset);
    }
}

impl From<Text> for String {
    fn from(t: Text) -> String {
        t.0
    }
}

impl From<super::requests::Usd> for f64 {
    fn from(u: super::requests::Usd) -> f64 {
        u.0
    }
}

impl From<super::requests::Period> for String {
    fn from(p: super::requests::Period) -> String {
        p.0
    }
}

impl From<MemberIn> for Member {
    fn from(m: MemberIn) -> Member {
        Member {
            user_id: m.user_id.map(|t| t.0),
            user_email: m.user_email.map(|t| t.0),
            role: m.role.map(|t| t.0).unwrap_or_else(default_role),
        }
    }
}

// ---- what is particular to each kind --------------------------------------------------------------------

/// Applies the fields of a generate/update body to a key record; says whether the budget duration changed.
fn apply_key(cx: &Ctx<'_>, rec: &mut KeyRecord, f: &KeyFields) -> Result<bool, ApiError> {
    if let Some(Some(t)) = &f.team_id {
        if !cx.accounts.teams.contains_key(&t.0) {
            return Err(ApiError::bad_request(format!(
                "team_id `{}` does not exist; create it with POST /team/new",
                t.0
            ))
            .with_param("team_id"));
        }
    }
    set(&mut rec.key_alias, &f.key_alias);
    set(&mut rec.team_id, &f.team_id);
    set(&mut rec.user_id, &f.user_id);
    set_vec(&mut rec.models, &f.models);
    set(&mut rec.max_budget, &f.max_budget);
    set(&mut rec.budget_duration, &f.budget_duration);
    set(&mut rec.rpm_limit, &f.rpm_limit);
    set(&mut rec.tpm_limit, &f.tpm_limit);
    set(&mut rec.max_parallel_requests, &f.max_parallel_requests);
    set_or(
        &mut rec.model_rpm_limit,
        &f.model_rpm_limit,
        BTreeMap::new(),
    );
    set_or(
        &mut rec.model_tpm_limit,
        &f.model_tpm_limit,
        BTreeMap::new(),
    );
    if let Some(d) = &f.duration {
        rec.expires = next_reset(d.as_ref().map(|p| p.0.as_str()), cx.now);
    }
    set_or(&mut rec.metadata, &f.metadata, Map::new());
    set_or(&mut rec.blocked, &f.blocked, false);
    Ok(f.budget_duration.is_some())
}

async fn key_generate(cx: &mut Ctx<'_>, f: KeyFields) -> Result<Json, ApiError> {
    let key = match &f.key {
        Some(Some(k)) if plausible_key(&k.0) && k.0.len() >= 8 => k.0.clone(),
        Some(Some(_)) => return Err(ApiError::bad_request(
            "`key` must start with `sk-`, be 8 to 256 printable ASCII characters, without spaces",
        )
        .with_param("key")),
        _ => new_key(),
    };
    let token = hash_key(&key);
    if cx.accounts.keys.contains_key(&token) {
        return Err(ApiError::bad_request("this key already exists").with_param("key"));
    }
    let mut rec = KeyRecord {
        token: token.clone(),
        key_name: key_name(&key),
        created_at: cx.now,
        ..Default::default()
    };
    apply_key(cx, &mut rec, &f)?;
    let reset = next_reset(rec.budget_duration.as_deref(), cx.now);
    let mut info = save::<Key>(cx, &token, rec, None, reset).await?;
    cx.accounts.missing_keys.remove(&token);
    // The only time the key itself is shown.
    if let Some(o) = info.as_object_mut() {
        o.insert("key".into(), Json::String(key));
    }
    Ok(info)
}

async fn key_delete(cx: &mut Ctx<'_>, d: KeyDelete) -> Result<Json, ApiError> {
    let mut tokens: Vec<String> = d.keys.iter().flatten().map(|k| token_of(&k.0)).collect();
    for a in d.key_aliases.iter().flatten() {
        let t = cx
            .accounts
            .keys
            .iter()
            .find(|e| e.rec.key_alias.as_deref() == Some(a.0.as_str()))
            .map(|e| e.key().clone());
        tokens.push(t.ok_or_else(|| ApiError::not_found(format!("no key with alias `{}`", a.0)))?);
    }
    if tokens.is_empty() {
        return Err(ApiError::bad_request(
            "`keys` is required: a non-empty list of keys or key hashes",
        )
        .with_param("keys"));
    }
    if let Some(t) = tokens.iter().find(|t| !cx.accounts.keys.contains_key(*t)) {
        return Err(ApiError::not_found(format!(
            "key {} not found",
            &t[..8.min(t.len())]
        )));
    }
    delete::<Key>(cx, &tokens).await?;
    Ok(serde_json::json!({ "deleted_keys": tokens }))
}

/// Applies the fields of a new/update body to a team record; says whether the budget duration changed.
fn apply_team(rec: &mut TeamRecord, f: &TeamFields) -> bool {
    set(&mut rec.team_alias, &f.team_alias);
    set(&mut rec.max_budget, &f.max_budget);
    set(&mut rec.budget_duration, &f.budget_duration);
    set(&mut rec.rpm_limit, &f.rpm_limit);
    set(&mut rec.tpm_limit, &f.tpm_limit);
    set_vec(&mut rec.models, &f.models);
    for m in [&f.members_with_roles, &f.members].into_iter().flatten() {
        rec.members_with_roles = m.iter().flatten().cloned().map(Member::from).collect();
    }
    set_or(&mut rec.metadata, &f.metadata, Map::new());
    set_or(&mut rec.blocked, &f.blocked, false);
    f.budget_duration.is_some()
}

async fn member_add(cx: &mut Ctx<'_>, m: MemberAdd) -> Result<Json, ApiError> {
    let members: Vec<MemberIn> = match m.member {
        Members::One(one) => vec![one],
        Members::Many(many) => many,
    };
    if members.is_empty() {
        return Err(
            ApiError::bad_request("`member` must name at least one member").with_param("member"),
        );
    }
    if members
        .iter()
        .any(|m| m.user_id.is_none() && m.user_email.is_none())
    {
        return Err(
            ApiError::bad_request("each member needs `user_id` or `user_email`")
                .with_param("member"),
        );
    }
    let team_id = nonempty(m.team_id, "team_id")?;
    update::<Team>(cx, &team_id, |_, rec| {
        for m in members.into_iter().map(Member::from) {
            let known = rec.members_with_roles.iter().any(|x| {
                (x.user_id.is_some() && x.user_id == m.user_id)
                    || (m.user_id.is_none()
                        && x.user_email.is_some()
                        && x.user_email == m.user_email)
            });
            if !known {
                rec.members_with_roles.push(m);
            }
        }
        Ok(false)
    })
    .await
}

async fn member_delete(cx: &mut Ctx<'_>, m: MemberDelete) -> Result<Json, ApiError> {
    let team_id = nonempty(m.team_id, "team_id")?;
    let user_id = m.user_id.map(|t| t.0);
    let email = m.user_email.map(|t| t.0);
    if user_id.is_none() && email.is_none() {
        return Err(
            ApiError::bad_request("`user_id` or `user_email` is required").with_param("user_id"),
        );
    }
    update::<Team>(cx, &team_id, |_, rec| {
        let before = rec.members_with_roles.len();
        rec.members_with_roles.retain(|m| {
            !((user_id.is_some() && m.user_id == user_id)
                || (email.is_some() && m.user_email == email))
        });
        if rec.members_with_roles.len() == before {
            return Err(ApiError::not_found("no such member in this team"));
        }
        Ok(false)
    })
    .await
}

/// Applies the fields of a new/update body to a user record; says whether the budget duration changed.
fn apply_user(rec: &mut UserRecord, f: &UserFields) -> bool {
    set(&mut rec.user_email, &f.user_email);
    set(&mut rec.user_alias, &f.user_alias);
    if let Some(Some(r)) = &f.user_role {
        rec.user_role = r.0.clone();
    }
    set(&mut rec.max_budget, &f.max_budget);
    set(&mut rec.budget_duration, &f.budget_duration);
    set(&mut rec.rpm_limit, &f.rpm_limit);
    set(&mut rec.tpm_limit, &f.tpm_limit);
    set_vec(&mut rec.models, &f.models);
    set_vec(&mut rec.teams, &f.teams);
    set_or(&mut rec.metadata, &f.metadata, Map::new());
    f.budget_duration.is_some()
}

async fn user_new(cx: &mut Ctx<'_>, f: UserFields) -> Result<Json, ApiError> {
    let id = given_or_new(&f.user_id);
    let mut rec = UserRecord {
        user_id: id.clone(),
        user_role: default_user_role(),
        created_at: cx.now,
        ..Default::default()
    };
    apply_user(&mut rec, &f);
    let mut info = create::<User>(cx, &id, rec).await?;
    if f.auto_create_key.flatten().unwrap_or(true) {
        let key = KeyFields {
            user_id: Some(Some(Text(id.clone()))),
            ..Default::default()
        };
        match Box::pin(key_generate(cx, key)).await {
            Ok(k) => {
                if let Some(o) = info.as_object_mut() {
                    o.insert("key".into(), k["key"].clone());
                }
            }
            Err(e) => {
                // Nothing half-written: the user goes too.
                let _ = cx
                    .store
                    .delete(Table::Users, std::slice::from_ref(&id))
                    .await;
                cx.accounts.users.remove(&id);
                cx.fx.gauges.clear();
                return Err(e);
            }
        }
    }
    Ok(info)
}

/// Applies the fields of a new/update body to an end user's record; says whether the budget duration
/// changed.
fn apply_end_user(rec: &mut EndUserRecord, f: &CustomerFields) -> bool {
    set(&mut rec.alias, &f.alias);
    set(&mut rec.max_budget, &f.max_budget);
    set(&mut rec.budget_duration, &f.budget_duration);
    set_or(&mut rec.blocked, &f.blocked, false);
    f.budget_duration.is_some()
}

/// Deletes every key of the teams or users `ids` (those in the store, which other replicas may have made,
/// and those in memory); returns their hashes.
async fn delete_keys_of(
    cx: &mut Ctx<'_>,
    owner: KeyOwner,
    ids: &[String],
) -> Result<Vec<String>, ApiError> {
    let mut tokens: Vec<String> = Vec::new();
    for id in ids {
        let stored = cx.store.keys_of(owner, id).await;
        tokens.extend(stored.map_err(|e| ApiError::store(&e))?);
    }
    let owned_by = |rec: &KeyRecord| {
        let of = match owner {
            KeyOwner::Team => rec.team_id.as_ref(),
            KeyOwner::User => rec.user_id.as_ref(),
        };
        of.is_some_and(|o| ids.contains(o))
    };
    tokens.extend(
        cx.accounts
            .keys
            .iter()
            .filter(|e| owned_by(&e.rec))
            .map(|e| e.key().clone()),
    );
    tokens.sort();
    tokens.dedup();
    if !tokens.is_empty() {
        delete::<Key>(cx, &tokens).await?;
    }
    Ok(tokens)
}

/// Team aliases are labels of keys: rebuild the keys' labels after a team changes.
fn refresh_key_labels(accounts: &Accounts) {
    let stale: Vec<Arc<KeyEntry>> = accounts
        .keys
        .iter()
        .filter(|e| e.labels.team_alias != accounts.labels_for(&e.rec).team_alias)
        .map(|e| e.clone())
        .collect();
    for old in stale {
        let entry = accounts.key_entry(old.rec.clone(), Some(&old), 0, old.ledger.reset_at());
        accounts.keys.insert(old.rec.token.clone(), Arc::new(entry));
    }
}
