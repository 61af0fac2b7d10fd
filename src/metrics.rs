//! Prometheus metrics: the families of `spec/prometheus.md` ([`families`]) and their text exposition with
//! `_total` and `_created` samples ([`render`]). The registry itself belongs to the metrics actor
//! (`actors/metrics.rs`); nothing else writes to it.

pub mod families;
pub mod render;
pub mod system;
