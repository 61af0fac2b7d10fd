//! Integration tests: the real `llm` binary against the `llm-mock` upstream, asserted through HTTP and by
//! parsing `/metrics`. One test binary (faster to link than one per file).

mod budgets;
mod cardinality;
mod cli;
mod errors;
mod faults;
mod fuzz;
mod hardening;
mod messages;
mod metrics;
mod models;
mod providers;
mod proxy;
mod replicas;
mod routing;
mod support;
mod ui;
