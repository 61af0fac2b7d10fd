//! The management API's request bodies, typed: one struct per operation with LiteLLM's field names,
//! `deny_unknown_fields`, and field types that validate themselves ([`Text`], [`Usd`], [`Period`]), so a
//! body that parses is a body the operation can apply. [`parse`] names the offending field in the error
//! (`param`) and never repeats its value (it could be a key).
//!
//! Fields of an update are [`Patch`]es: absent leaves the value as it is, `null` unsets it, a value sets it.

use crate::error::ApiError;
use crate::providers::wire::check_label_text;
use crate::units::parse_duration;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value as Json};
use std::collections::BTreeMap;

/// A field of an update: `None` absent, `Some(None)` explicitly `null`, `Some(Some(v))` a value.
pub type Patch<T> = Option<Option<T>>;

/// Deserializes a present field (value or `null`) as `Some(..)`; an absent one stays `None` (`default`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Patch<T>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A string of the management API (an id, alias, email, role): it becomes label values and database text,
/// so it is bounded and free of control characters (a NUL would make PostgreSQL refuse it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match check_label_text("", &s) {
            Ok(()) => Ok(Text(s)),
            Err(e) => Err(serde::de::Error::custom(
                e.message.trim_start_matches("`` ").to_owned(),
            )),
        }
    }
}

/// USD: a finite number, at least 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usd(pub f64);

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() && v >= 0.0 {
            Ok(Usd(v))
        } else {
            Err(serde::de::Error::custom("must be a number >= 0"))
        }
    }
}

/// A duration as LiteLLM writes it (`30s`, `30m`, `1h`, `1d`, `30d`), kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period(pub String);

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if parse_duration(&s).is_some() && check_label_text("", &s).is_ok() {
            Ok(Period(s))
        } else {
            Err(serde::de::Error::custom(
                "must look like 30s, 30m, 1h, 1d or 30d",
            ))
        }
    }
}

/// A team member as LiteLLM writes one: an object (never a list of values by position).
#[derive(Debug, Clone)]
pub struct MemberIn {
    pub user_id: Option<Text>,
    pub user_email: Option<Text>,
    pub role: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberFields {
    #[serde(default)]
    user_id: Option<Text>,
    #[serde(default)]
    user_email: Option<Text>,
    #[serde(default)]
    role: Option<Text>,
}

impl<'de> Deserialize<'de> for MemberIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // An object first: serde would otherwise take `["alice", "bob"]` as fields by position.
        let map = Map::<String, Json>::deserialize(d)?;
        let f = MemberFields::deserialize(Json::Object(map)).map_err(serde::de::Error::custom)?;
        Ok(MemberIn {
            user_id: f.user_id,
            user_email: f.user_email,
            role: f.role,
        })
    }
}

/// `member` of `/team/member_add`: a list of members or one member.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a member object {user_id, role} or a list of them"
)]
pub enum Members {
    Many(Vec<MemberIn>),
    One(MemberIn),
}

/// `/key/generate` and `/key/update` (`key` names the key to update; on generate, a custom key).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFields {
    #[serde(default, deserialize_with = "present")]
    pub key: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub key_alias: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub team_id: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub user_id: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub models: Patch<Vec<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub max_budget: Patch<Usd>,
    #[serde(default, deserialize_with = "present")]
    pub budget_duration: Patch<Period>,
    #[serde(default, deserialize_with = "present")]
    pub rpm_limit: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub tpm_limit: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub max_parallel_requests: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub model_rpm_limit: Patch<BTreeMap<String, u64>>,
    #[serde(default, deserialize_with = "present")]
    pub model_tpm_limit: Patch<BTreeMap<String, u64>>,
    /// How long the key lives from now.
    #[serde(default, deserialize_with = "present")]
    pub duration: Patch<Period>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Patch<Map<String, Json>>,
    #[serde(default, deserialize_with = "present")]
    pub blocked: Patch<bool>,
}

/// `/key/block`, `/key/unblock`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub key: Text,
}

/// `/key/delete`: keys (or their hashes) and/or aliases.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDelete {
    #[serde(default)]
    pub keys: Option<Vec<Text>>,
    #[serde(default)]
    pub key_aliases: Option<Vec<Text>>,
}

/// `/team/new` and `/team/update`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamFields {
    #[serde(default, deserialize_with = "present")]
    pub team_id: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub team_alias: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub max_budget: Patch<Usd>,
    #[serde(default, deserialize_with = "present")]
    pub budget_duration: Patch<Period>,
    #[serde(default, deserialize_with = "present")]
    pub rpm_limit: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub tpm_limit: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub models: Patch<Vec<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub members_with_roles: Patch<Vec<MemberIn>>,
    /// LiteLLM's older name of `members_with_roles`.
    #[serde(default, deserialize_with = "present")]
    pub members: Patch<Vec<MemberIn>>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Patch<Map<String, Json>>,
    #[serde(default, deserialize_with = "present")]
    pub blocked: Patch<bool>,
}

/// `/team/member_add`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberAdd {
    pub team_id: Text,
    pub member: Members,
}

/// `/team/member_delete`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberDelete {
    pub team_id: Text,
    #[serde(default)]
    pub user_id: Option<Text>,
    #[serde(default)]
    pub user_email: Option<Text>,
}

/// `/user/new` and `/user/update`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFields {
    #[serde(default, deserialize_with = "present")]
    pub user_id: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub user_email: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub user_alias: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub user_role: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub max_budget: Patch<Usd>,
    #[serde(default, deserialize_with = "present")]
    pub budget_duration: Patch<Period>,
    #[serde(default, deserialize_with = "present")]
    pub rpm_limit: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub tpm_limit: Patch<u64>,
    #[serde(default, deserialize_with = "present")]
    pub models: Patch<Vec<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub teams: Patch<Vec<Text>>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Patch<Map<String, Json>>,
    /// `/user/new` only: make a key for the user too (default true, as LiteLLM does).
    #[serde(default, deserialize_with = "present")]
    pub auto_create_key: Patch<bool>,
}

/// `/customer/new` and `/customer/update` (end users).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerFields {
    #[serde(default, deserialize_with = "present")]
    pub user_id: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub alias: Patch<Text>,
    #[serde(default, deserialize_with = "present")]
    pub max_budget: Patch<Usd>,
    #[serde(default, deserialize_with = "present")]
    pub budget_duration: Patch<Period>,
    #[serde(default, deserialize_with = "present")]
    pub blocked: Patch<bool>,
}

/// `/team/delete`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamDelete {
    pub team_ids: Vec<Text>,
}

/// `/user/delete` and `/customer/delete`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDelete {
    pub user_ids: Vec<Text>,
}

/// `/model/new`: a deployment as a `model_list` entry (validated by the config's own rules).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelNew {
    #[serde(default)]
    pub model_name: Option<Json>,
    /// LiteLLM's name; `llm_params` (this gateway's config name) is accepted too.
    #[serde(alias = "llm_params")]
    pub litellm_params: Map<String, Json>,
    #[serde(default)]
    pub model_info: Option<Map<String, Json>>,
}

/// `/model/update`: the deployment `model_info.id` (or `id`); only the fields given change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelUpdate {
    /// `null` is kept (and refused by validation): a deployment needs its group name.
    #[serde(default, deserialize_with = "present")]
    pub model_name: Patch<Json>,
    #[serde(default, alias = "llm_params", deserialize_with = "present")]
    pub litellm_params: Patch<Map<String, Json>>,
    #[serde(default)]
    pub model_info: Option<Map<String, Json>>,
    #[serde(default)]
    pub id: Option<Text>,
}

/// `/model/delete`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDelete {
    pub id: Text,
}

/// A request body as `T`, or a 400 naming the field that is wrong (as `param`) without repeating its value.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Json = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    from_value(value)
}

/// [`parse`] of a JSON value already read.
pub fn from_value<T: serde::de::DeserializeOwned>(value: Json) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        field_error(&path, &inner)
    })
}

fn field_error(path: &str, inner: &str) -> ApiError {
    // serde's unknown-field and missing-field messages name the field and no value: kept as they are.
    if let Some(rest) = inner.strip_prefix("unknown field ") {
        let field = rest.split('`').nth(1).unwrap_or("");
        let known = rest.split_once("expected ").map_or("", |(_, k)| k);
        // The path ends with the unknown field itself.
        let param = if path == "." || path.is_empty() {
            field.to_owned()
        } else {
            path.to_owned()
        };
        return ApiError::bad_request(format!("unknown field `{field}`; known fields: {known}"))
            .with_param(&param);
    }
    if let Some(rest) = inner.strip_prefix("missing field ") {
        let field = rest.trim_matches('`');
        return ApiError::bad_request(format!("`{field}` is required")).with_param(field);
    }
    // Type and value errors repeat the value ("invalid type: string \"sk-…\", expected …"): only what was
    // expected is kept.
    if let Some(rest) = inner.strip_prefix("duplicate field ") {
        let field = rest.split('`').nth(1).unwrap_or("");
        return ApiError::bad_request(format!(
            "`{field}` is given twice (under one of its names, e.g. `litellm_params` and `llm_params`)"
        ))
        .with_param(field);
    }
    // The last ", expected ": a value that itself holds the words is never repeated.
    let what = match inner.rsplit_once(", expected ") {
        Some((_, expected)) => format!("must be {}", plain(expected)),
        None => inner.to_owned(),
    };
    ApiError::bad_request(format!("`{path}` {what}")).with_param(path)
}

/// serde's names of what it expected, in words.
fn plain(expected: &str) -> &str {
    match expected {
        "u64" | "u32" | "usize" => "a non-negative integer",
        "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "a list",
        "a map" => "an object",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: serde::de::DeserializeOwned + std::fmt::Debug>(body: &str) -> ApiError {
        parse::<T>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn fields_are_named_and_values_never_repeated() {
        let e = err::<KeyFields>(r#"{"max_budget": "sk-secret-value"}"#);
        assert_eq!(e.param.as_deref(), Some("max_budget"));
        assert!(!e.message.contains("sk-secret"), "{}", e.message);
        assert_eq!(e.message, "`max_budget` must be a number");
        let e = err::<KeyFields>(r#"{"max_budget": -1}"#);
        assert_eq!(e.message, "`max_budget` must be a number >= 0");
        let e = err::<KeyFields>(r#"{"budget_duration": "soon"}"#);
        assert_eq!(e.param.as_deref(), Some("budget_duration"));
        let e = err::<KeyFields>(r#"{"colour": "red"}"#);
        assert!(
            e.message.starts_with("unknown field `colour`"),
            "{}",
            e.message
        );
        assert_eq!(e.param.as_deref(), Some("colour"));
        let e = err::<TeamFields>("{\"team_id\": \"a\\u0000b\"}");
        assert_eq!(e.param.as_deref(), Some("team_id"));
        assert!(e.message.contains("control characters"), "{}", e.message);
        let e = err::<KeyFields>(r#"{"models": ["a", 3]}"#);
        assert_eq!(e.param.as_deref(), Some("models[1]"));
        let e = err::<TeamDelete>("{}");
        assert_eq!(e.message, "`team_ids` is required");
        let e = err::<KeyFields>("[1]");
        assert_eq!(e.message, "the body must be a JSON object");
    }

    #[test]
    fn absent_null_and_value_differ() {
        let f: KeyFields = parse(br#"{"key_alias": null, "rpm_limit": 5}"#).unwrap();
        assert_eq!(f.key_alias, Some(None));
        assert_eq!(f.rpm_limit, Some(Some(5)));
        assert_eq!(f.tpm_limit, None);
        let m: MemberAdd = parse(br#"{"team_id": "t", "member": {"user_id": "u"}}"#).unwrap();
        assert!(matches!(m.member, Members::One(_)));
        let m: MemberAdd = parse(br#"{"team_id": "t", "member": [{"user_id": "u"}]}"#).unwrap();
        assert!(matches!(m.member, Members::Many(ref v) if v.len() == 1));
        let m: MemberAdd = parse(br#"{"team_id": "t", "member": []}"#).unwrap();
        assert!(matches!(m.member, Members::Many(ref v) if v.is_empty()));
        // A list of values is not a member by position.
        assert!(parse::<MemberAdd>(br#"{"team_id": "t", "member": ["alice", "bob"]}"#).is_err());
        assert!(parse::<TeamFields>(br#"{"members_with_roles": [["u"]]}"#).is_err());
        let e = parse::<ModelUpdate>(br#"{"id": "x", "litellm_params": {}, "llm_params": {}}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("litellm_params"));
        let u: ModelUpdate = parse(br#"{"id": "x", "model_name": null}"#).unwrap();
        assert_eq!(u.model_name, Some(None));
    }
}
