//! `/metrics` at scale (issue 16): how long the exposition takes to render and how much memory a series
//! costs, driving the metrics actor's own update and render code with synthetic finished requests.
//!
//! `cargo run --release --example metrics_scale -- [series_target ...]`
//!
//! Each finished request comes from one of K keys and one of E end users (distinct pairs), answered by one
//! deployment, so every pair makes its own series in the usage families (6 counters, 3 histograms) and
//! every key its own deployment and per-token series. For each target the program reports the series
//! (label sets) and samples (lines) made, the resident memory they added (RSS from /proc, after the
//! updates, before any render), the render time (median of 5) and the exposition's size. With
//! `--counters-only` only the counter families are enabled (`prometheus_metrics_config`), which is the
//! per-series figure of the memory goal. `--extra '<setting>'` adds a line under `llm_settings`
//! (`\n` for more), to count the series a cardinality setting saves for the same requests.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use llm::actors::metrics::{Attempt, MetricsActor, Outcome, RequestFinished};
use llm::config::Config;
use llm::labels::{DeploymentLabels, KeyLabels};
use llm::providers::wire::Usage;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn config(counters_only: bool, extra: &str) -> Config {
    let mut yaml = String::from(
        "model_list:\n  - {model_name: g, llm_params: {model: mock/m}}\nllm_settings:\n  callbacks: [prometheus]\n  \
         prometheus_end_user_metrics_max_series_per_metric: 10000000\n  prometheus_max_series_per_metric: 10000000\n",
    );
    if counters_only {
        yaml.push_str(
            "  prometheus_metrics_config:\n    - group: counters\n      metrics: [llm_proxy_total_requests_metric, llm_spend_metric, \
             llm_total_tokens, llm_input_tokens, llm_output_tokens, llm_requests_metric, \
             llm_deployment_success_responses, llm_deployment_total_requests]\n",
        );
    }
    yaml.push_str(extra);
    Config::parse(&yaml, Path::new("bench.yaml"), &|_| None).expect("bench config parses")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let counters_only = args.iter().any(|a| a == "--counters-only");
    let targets: Vec<usize> = args
        .iter()
        .filter(|a| !a.contains(':'))
        .filter_map(|a| a.parse().ok())
        .collect::<Vec<_>>();
    let targets = if targets.is_empty() {
        vec![50_000, 400_000]
    } else {
        targets
    };
    // `--extra '<yaml lines under llm_settings>'`: e.g. a cardinality setting, to count what it saves.
    let extra = args
        .iter()
        .position(|a| a == "--extra")
        .and_then(|i| args.get(i + 1))
        .map(|e| format!("  {}\n", e.replace("\\n", "\n  ")))
        .unwrap_or_default();
    let config = config(counters_only, &extra);
    let dep = Arc::new(DeploymentLabels {
        model_group: "g".into(),
        llm_model_name: "m".into(),
        model_id: "0123456789abcdef0123456789abcdef".into(),
        api_base: "http://127.0.0.1:9999/v1".into(),
        api_provider: "openai",
    });
    println!("| families | series | samples | RSS added | bytes/series | render (median of 5) | exposition |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for target in targets {
        let mut actor = MetricsActor::new(&config.metrics, None);
        let families_per_pair = if counters_only { 6 } else { 9 };
        let pairs = target / families_per_pair;
        let keys = 100.min(pairs.max(1));
        let per_key = pairs / keys;
        let key_labels: Vec<Arc<KeyLabels>> = (0..keys)
            .map(|k| {
                Arc::new(KeyLabels {
                    hashed_api_key: format!("{:064x}", k as u128 * 0x9e3779b97f4a7c15),
                    api_key_alias: format!("key-{k}"),
                    team: format!("team-{}", k % 10),
                    team_alias: format!("team alias {}", k % 10),
                    user: format!("user-{}", k % 50),
                })
            })
            .collect();
        let before = rss_bytes();
        for (k, key) in key_labels.iter().enumerate() {
            for e in 0..per_key {
                actor.record(RequestFinished {
                    requested_model: Arc::from("g"),
                    end_user: Some(format!("customer-{k}-{e}")),
                    key: key.clone(),
                    custom: Vec::new(),
                    attempts: vec![Attempt {
                        deployment: dep.clone(),
                        result: Ok(()),
                        remaining_requests: None,
                        remaining_tokens: None,
                    }],
                    outcome: Outcome::Success {
                        deployment: dep.clone(),
                        usage: Usage {
                            prompt_tokens: 12,
                            completion_tokens: 30,
                            total_tokens: 42,
                            ..Default::default()
                        },
                        cost: 0.000123,
                        total_latency: 0.2 + (e % 7) as f64 * 0.1,
                        api_latency: 0.19 + (e % 7) as f64 * 0.1,
                        time_to_first_token: None,
                    },
                    key_entry: None,
                    team_entry: None,
                    user_entry: None,
                    end_user_entry: None,
                    model_limits: None,
                    fallbacks: Vec::new(),
                });
            }
        }
        let added = rss_bytes().saturating_sub(before);
        eprintln!("store: {:.1} MiB", actor.store_bytes() as f64 / 1048576.0);
        // Timed: the chunks as /metrics streams them (each dropped once written, as the socket would).
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let t = Instant::now();
            bytes = 0;
            actor.render_each(|chunk| bytes += chunk.len());
            times.push(t.elapsed());
        }
        times.sort();
        // Not timed: count samples and series.
        let (mut samples, mut series) = (0, 0);
        actor.render_each(|chunk| {
            for l in chunk.lines().filter(|l| !l.starts_with('#')) {
                samples += 1;
                if !l.contains("_created") && !l.contains("_bucket") && !l.contains("_sum{") {
                    series += 1;
                }
            }
        });
        println!(
            "| {} | {series} | {samples} | {:.1} MiB | {} | {:.0} ms | {:.1} MB |",
            if counters_only { "counters" } else { "all" },
            added as f64 / 1048576.0,
            added / series.max(1) as u64,
            times[2].as_secs_f64() * 1000.0,
            bytes as f64 / 1e6,
        );
    }
}
