//! Criterion benchmark of routing decisions (`cargo bench --bench routing`).
//!
//! - `choose/<strategy>/<n>`: the strategy function alone over n candidates.
//! - `table_pick/<strategy>/<n>`: what a request pays on an HTTP worker: read the published table, look up
//!   the group, read each deployment's live state (cooldown gate, in flight, latency, usage), choose.
//! - `router_actor_round_trip/<n>`: the same decision asked of the RouterActor with `send().await` from
//!   another thread, which is what the request path avoids.
//!
//! Numbers are in bench/README.md.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use llm::accounts::Accounts;
use llm::actors::router::Route;
use llm::config::{Config, RoutingStrategy};
use llm::router::strategy::{choose, Candidate};
use llm::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const STRATEGIES: [(&str, RoutingStrategy); 4] = [
    ("simple-shuffle", RoutingStrategy::SimpleShuffle),
    ("least-busy", RoutingStrategy::LeastBusy),
    ("latency-based-routing", RoutingStrategy::LatencyBased),
    ("usage-based-routing", RoutingStrategy::UsageBased),
];

fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate {
            index: i,
            weight: 1.0 + i as f64,
            in_flight: (i * 7 % 5) as u32,
            latency: Some(0.1 + (i * 3 % 7) as f64 / 100.0),
            rpm_used: i as u64 * 3,
            tpm_used: i as u64 * 1000,
            rpm_limit: Some(1000),
            tpm_limit: Some(1_000_000),
            remaining_requests: Some(100),
            remaining_tokens: Some(100_000),
        })
        .collect()
}

fn config(n: usize, strategy: &str) -> Config {
    let mut yaml = String::from("model_list:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - model_name: g\n    llm_params: {{model: mock/m{i}, rpm: 100000, tpm: 100000000}}\n"
        ));
    }
    yaml.push_str(&format!(
        "llm_settings:\n  callbacks: [prometheus]\nrouter_settings:\n  routing_strategy: {strategy}\n"
    ));
    Config::parse(&yaml, Path::new("bench.yaml"), &|_| None).expect("bench config")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("choose");
    for (name, s) in STRATEGIES {
        for n in [2, 8] {
            let cands = candidates(n);
            let mut r = 0.0f64;
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    r = (r + 0.618_033_988_7) % 1.0;
                    choose(black_box(s), black_box(&cands), r, 500)
                })
            });
        }
    }
    g.finish();

    let dir = std::env::temp_dir().join(format!("llm-bench-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sys = actix::System::new();
    let mut pick = c.benchmark_group("table_pick");
    for (name, _) in STRATEGIES {
        for n in [2, 8] {
            let config = config(n, name);
            let handles = sys.block_on(async {
                let store = Store::connect(None, &dir).await.unwrap();
                llm::actors::start(&config, Arc::new(Accounts::default()), store, Vec::new())
            });
            let mut r = 0.0f64;
            pick.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    r = (r + 0.618_033_988_7) % 1.0;
                    let now = llm::units::now_ms();
                    handles.routes.load().pick(black_box("g"), now, r, 500)
                })
            });
        }
    }
    pick.finish();

    let mut trip = c.benchmark_group("router_actor_round_trip");
    for n in [2, 8] {
        let config = config(n, "simple-shuffle");
        let handles = sys.block_on(async {
            let store = Store::connect(None, &dir).await.unwrap();
            llm::actors::start(&config, Arc::new(Accounts::default()), store, Vec::new())
        });
        trip.bench_function(BenchmarkId::new("simple-shuffle", n), |b| {
            b.iter_custom(|iters| {
                sys.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let d = handles
                            .router
                            .send(Route {
                                model: "g".into(),
                                tokens: 500,
                            })
                            .await
                            .unwrap();
                        black_box(d);
                    }
                    start.elapsed()
                })
            })
        });
    }
    trip.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
