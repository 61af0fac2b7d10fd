//! Deployment logic with no actix types: health state and outcome statistics, unit-tested synchronously.
//! The DeploymentActor (`actors/deployment.rs`) owns one [`health::Health`] per deployment.

pub mod health;
pub mod live;
