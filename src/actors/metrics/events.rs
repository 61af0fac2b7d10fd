//! What the rest of the gateway tells the MetricsActor: finished requests, deployment state changes,
//! budget changes.

use crate::accounts::{EndUserEntry, KeyEntry, Limits, TeamEntry, UserEntry};
use crate::labels::{BudgetGauge, BudgetScope, DeploymentLabels, HealthState, KeyLabels};
use crate::providers::wire::Usage;
use actix::prelude::*;
use std::sync::Arc;

// ---- messages -------------------------------------------------------------------------------------------

/// A batch of finished requests from one HTTP worker (see `actors/outbox.rs`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RequestsFinished(pub Vec<RequestFinished>);

/// One client request has been answered (successfully or not), with every upstream attempt it made.
pub struct RequestFinished {
    /// The model group asked for; `other` when it does not exist; empty when the body named none.
    pub requested_model: Arc<str>,
    pub end_user: Option<String>,
    pub key: Arc<KeyLabels>,
    /// Values of the configured custom metadata labels, in configuration order (`""` when absent).
    pub custom: Vec<String>,
    pub attempts: Vec<Attempt>,
    pub outcome: Outcome,
    /// The caller's key and team: their budget gauges are refreshed from the ledgers.
    pub key_entry: Option<Arc<KeyEntry>>,
    pub team_entry: Option<Arc<TeamEntry>>,
    /// The key's internal user and the request's end user (customer): their budget gauges too.
    pub user_entry: Option<Arc<UserEntry>>,
    pub end_user_entry: Option<Arc<EndUserEntry>>,
    /// The key's windows on the requested model, when it has model-specific limits.
    pub model_limits: Option<Arc<Limits>>,
    /// Fallback groups tried after the requested group failed, in order.
    pub fallbacks: Vec<FallbackTried>,
}

/// One fallback model group tried for a request.
pub struct FallbackTried {
    pub fallback_model: Arc<str>,
    pub ok: bool,
    /// The requested group's failure that sent the request to its fallbacks: (status, exception class).
    pub cause: (u16, String),
}

/// The gauge `llm_deployment_state` of one deployment has a new value.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeploymentStateChanged {
    pub deployment: Arc<DeploymentLabels>,
    pub state: HealthState,
    /// Set when the change is a new cooldown: the status of the failure that started it and the custom
    /// metadata label values of its request (configuration order; empty when unknown).
    pub cooled_down: Option<(u16, Vec<String>)>,
}

/// Budget gauges changed outside a request (create, update, reset), or entities went away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BudgetsChanged {
    pub gauges: Vec<BudgetGauge>,
    pub removed: Vec<BudgetScope>,
}

// ---- message payloads -----------------------------------------------------------------------------------

/// One upstream call.
pub struct Attempt {
    pub deployment: Arc<DeploymentLabels>,
    /// `Err((status, exception_class))` for a failed call.
    pub result: Result<(), (u16, String)>,
    pub remaining_requests: Option<f64>,
    pub remaining_tokens: Option<f64>,
}

pub enum Outcome {
    Success {
        deployment: Arc<DeploymentLabels>,
        usage: Usage,
        /// USD.
        cost: f64,
        /// Seconds from arrival to the last byte sent.
        total_latency: f64,
        /// Seconds of the upstream call that answered.
        api_latency: f64,
        /// Seconds from the upstream call's start to its first token (streams only).
        time_to_first_token: Option<f64>,
    },
    Failure {
        status: u16,
        exception_class: String,
    },
}
