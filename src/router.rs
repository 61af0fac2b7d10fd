//! Routing logic with no actix types. The RouterActor (`actors/router.rs`) owns the model groups and
//! publishes them as an immutable [`table::RoutingTable`]; HTTP workers pick from the latest table without a
//! message round trip, so a routing decision costs no cross-thread wake-up.

pub mod policy;
pub mod strategy;
pub mod table;
