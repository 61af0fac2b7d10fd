//! The label sets the metrics speak of, shared by the request path, the store and the actors: who called
//! (key, team, user), which deployment answered, its health, whose budget a gauge shows. Nothing here
//! imports anything from the crate.

/// Whose budget a gauge describes.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetScope {
    Key {
        hashed_api_key: String,
        api_key_alias: String,
    },
    Team {
        team_id: String,
        team_alias: String,
    },
    User {
        user_id: String,
    },
    EndUser {
        end_user_id: String,
    },
}

/// The budget of a key or a team as the gauges show it.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetGauge {
    pub scope: BudgetScope,
    pub max_budget: Option<f64>,
    /// USD.
    pub spend: f64,
    pub reset_at_ms: Option<i64>,
}

/// Labels describing the caller: virtual key, team and internal user. Empty until virtual keys exist.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct KeyLabels {
    pub hashed_api_key: String,
    pub api_key_alias: String,
    pub team: String,
    pub team_alias: String,
    pub user: String,
}

/// Labels describing one deployment, built once at startup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeploymentLabels {
    pub model_group: String,
    /// The model name the upstream knows (`gpt-4o` for `openai/gpt-4o`).
    pub llm_model_name: String,
    pub model_id: String,
    pub api_base: String,
    pub api_provider: &'static str,
}

/// Health of a deployment as `llm_deployment_state` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Healthy = 0,
    PartialOutage = 1,
    CompleteOutage = 2,
}
