//! Routing logic with no actix types: which deployment of a model group serves a request. The RouterActor
//! (`actors/router.rs`) owns the groups and calls into [`strategy`].

pub mod strategy;
