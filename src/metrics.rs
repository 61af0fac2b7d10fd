//! Prometheus metrics: the catalog of families of `spec/prometheus.md` ([`catalog`]), the families made
//! from it under the configuration ([`families`]), the series store that holds and renders them
//! ([`store`]), the system-health families ([`system`]) and their renderer ([`render`]), and the sample format
//! ([`text`]). The store belongs to the metrics actor (`actors/metrics.rs`); nothing else writes to it.

pub mod catalog;
pub mod families;
pub mod render;
pub mod store;
pub mod system;
pub mod text;
