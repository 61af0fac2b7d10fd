//! System-health metrics (`llm_settings.service_callback: ["prometheus_system"]`), in the reference's
//! layout: per service `S`, `llm_S_latency` (histogram of successful calls, seconds),
//! `llm_S_total_requests` (every call) and `llm_S_fails` (failed calls, with `error_class` and
//! `function_name`), each with one label named `S` whose value is `S`. Services: `redis` (the spec's
//! `llm_redis_latency` / `llm_redis_fails`), `postgres` and `sqlite` (the store), and `self` (each
//! successful upstream LLM call, the spec's `llm_self_latency`).
//!
//! The handles are made here and registered by the metrics actor in its registry; the parts that make the
//! calls (the store, the metrics actor for `self`) observe them directly: a histogram observation is an
//! atomic add, no message needed.

use prometheus::{Counter, CounterVec, Histogram, HistogramOpts, HistogramVec, Opts};
use std::time::Duration;

pub struct ServiceMetrics {
    pub service: &'static str,
    pub latency_name: &'static str,
    pub total_name: &'static str,
    pub fails_name: &'static str,
    pub latency: HistogramVec,
    pub total: CounterVec,
    pub fails: CounterVec,
    latency_one: Histogram,
    total_one: Counter,
}

impl ServiceMetrics {
    fn new(service: &'static str, buckets: &[f64]) -> ServiceMetrics {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let latency_name = leak(format!("llm_{service}_latency"));
        let total_name = leak(format!("llm_{service}_total_requests"));
        let fails_name = leak(format!("llm_{service}_fails"));
        let latency = HistogramVec::new(
            HistogramOpts::new(latency_name, format!("Latency for {service} service"))
                .buckets(buckets.to_vec()),
            &[service],
        )
        .expect("static metric definition is valid");
        let total = CounterVec::new(
            Opts::new(total_name, format!("Total requests for {service} service")),
            &[service],
        )
        .expect("static metric definition is valid");
        let fails = CounterVec::new(
            Opts::new(
                fails_name,
                format!("Total failed requests for {service} service"),
            ),
            &[service, "error_class", "function_name"],
        )
        .expect("static metric definition is valid");
        ServiceMetrics {
            service,
            latency_name,
            total_name,
            fails_name,
            latency_one: latency.with_label_values(&[service]),
            total_one: total.with_label_values(&[service]),
            latency,
            total,
            fails,
        }
    }

    /// A successful call that took `took`.
    pub fn ok(&self, took: Duration) {
        self.latency_one.observe(took.as_secs_f64());
        self.total_one.inc();
    }

    /// A failed call of `function`.
    pub fn fail(&self, error_class: &str, function: &str) {
        self.total_one.inc();
        self.fails
            .with_label_values(&[self.service, error_class, function])
            .inc();
    }
}

pub struct SystemMetrics {
    pub redis: std::sync::Arc<ServiceMetrics>,
    pub postgres: std::sync::Arc<ServiceMetrics>,
    pub sqlite: std::sync::Arc<ServiceMetrics>,
    pub self_: std::sync::Arc<ServiceMetrics>,
}

impl SystemMetrics {
    pub fn new(buckets: &[f64]) -> SystemMetrics {
        let s = |name| std::sync::Arc::new(ServiceMetrics::new(name, buckets));
        SystemMetrics {
            redis: s("redis"),
            postgres: s("postgres"),
            sqlite: s("sqlite"),
            self_: s("self"),
        }
    }

    pub fn services(&self) -> [&ServiceMetrics; 4] {
        [&self.redis, &self.postgres, &self.sqlite, &self.self_]
    }

    /// The store's service for a store of `kind` (`"postgres"` or `"sqlite"`).
    pub fn store(&self, kind: &str) -> std::sync::Arc<ServiceMetrics> {
        match kind {
            "postgres" => self.postgres.clone(),
            _ => self.sqlite.clone(),
        }
    }
}
