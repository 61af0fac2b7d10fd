use super::*;
use crate::labels::BudgetGauge;
use crate::providers::wire::Usage;

fn dep(id: &str) -> Arc<DeploymentLabels> {
    Arc::new(DeploymentLabels {
        model_group: "g".into(),
        llm_model_name: "m".into(),
        model_id: id.into(),
        api_base: "http://127.0.0.1:1".into(),
        api_provider: "openai",
    })
}

#[test]
fn series_cache_makes_one_entry_per_source_and_starts_over_past_its_cap() {
    let mut cache: SeriesCache<usize> = SeriesCache::default();
    let (k1, k2) = (
        Arc::new(KeyLabels::default()),
        Arc::new(KeyLabels::default()),
    );
    let (d1, d2) = (dep("a"), dep("b"));
    let model: Arc<str> = Arc::from("g");
    let mut made = 0;
    let mut get = |c: &mut SeriesCache<usize>, k: &Arc<KeyLabels>, d, m: &str, eu: &str| {
        *c.get_or_insert_with(k, d, &Arc::from(m), eu, &[], || {
            made += 1;
            made
        })
    };
    assert_eq!(get(&mut cache, &k1, &d1, &model, ""), 1);
    assert_eq!(
        get(&mut cache, &k1, &d1, &model, ""),
        1,
        "same source, same entry"
    );
    // Another Arc with equal labels is another source (a key edited since); so is every other field.
    assert_eq!(get(&mut cache, &k2, &d1, &model, ""), 2);
    assert_eq!(get(&mut cache, &k1, &d2, &model, ""), 3);
    assert_eq!(get(&mut cache, &k1, &d1, "other", ""), 4);
    assert_eq!(get(&mut cache, &k1, &d1, &model, "customer"), 5);
    assert_eq!(get(&mut cache, &k1, &d1, &model, "customer"), 5);
    assert_eq!(cache.len(), 5);
    cache.max = 5;
    assert_eq!(
        get(&mut cache, &k1, &d1, &model, ""),
        1,
        "a hit does not clear"
    );
    assert_eq!(
        get(&mut cache, &k1, &d1, &model, "new"),
        6,
        "a miss at the cap starts over"
    );
    assert_eq!(cache.len(), 1);
    assert_eq!(get(&mut cache, &k1, &d1, &model, ""), 7);
}

fn actor(settings: &str) -> MetricsActor {
    let yaml = format!(
            "model_list:\n  - {{model_name: g, llm_params: {{model: mock/m}}}}\nllm_settings:\n  callbacks: [prometheus]\n{settings}"
        );
    let config = crate::config::Config::parse(&yaml, std::path::Path::new("t.yaml"), &|_| None)
        .expect("test config parses");
    MetricsActor::new(&config.metrics, None)
}

fn key_budget(hash: &str, alias: &str, max: Option<f64>) -> BudgetGauge {
    BudgetGauge {
        scope: BudgetScope::Key {
            hashed_api_key: hash.into(),
            api_key_alias: alias.into(),
        },
        max_budget: max,
        spend: 1.0,
        reset_at_ms: None,
    }
}

fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// `include_labels` can give the three budget families different labels: each gets its own values.
#[test]
fn budget_families_with_different_labels_each_get_theirs() {
    let mut a = actor("  prometheus_metrics_config:\n    - {metrics: [llm_remaining_api_key_budget_metric], include_labels: [hashed_api_key]}\n    - {metrics: [llm_api_key_max_budget_metric]}\n");
    a.before_updates();
    a.set_budgets(&[key_budget("h1", "one", Some(5.0))]);
    let text = a.render_text();
    assert_eq!(
        lines(&text, "llm_remaining_api_key_budget_metric{"),
        ["llm_remaining_api_key_budget_metric{hashed_api_key=\"h1\"} 4.0"]
    );
    assert_eq!(
        lines(&text, "llm_api_key_max_budget_metric{"),
        ["llm_api_key_max_budget_metric{api_key_alias=\"one\",hashed_api_key=\"h1\"} 5.0"]
    );
}

/// Keys that share a budget series (their distinguishing label excluded): one losing its max-budget
/// series must not leave another's handle on the freed slot, where a third key's series lands.
#[test]
fn a_removed_budget_series_leaves_no_stale_handle() {
    let mut a = actor("  prometheus_exclude_labels: [hashed_api_key]\n");
    a.before_updates();
    a.set_budgets(&[key_budget("a", "", Some(5.0))]);
    let now = crate::units::now_ms() as f64;
    // B shares A's series and has no max: the max series goes.
    a.set_budget(
        (0, "b"),
        || key_budget("b", "", None).scope,
        None,
        0,
        None,
        now,
    );
    a.set_budgets(&[key_budget("c", "x", Some(7.0))]);
    // A's next update (its cached shape unchanged) must not write into C's series.
    a.set_budget(
        (0, "a"),
        || key_budget("a", "", None).scope,
        Some(5.0),
        1_000_000,
        None,
        now,
    );
    let text = a.render_text();
    let max = lines(&text, "llm_api_key_max_budget_metric{");
    assert!(
        max.contains(&"llm_api_key_max_budget_metric{api_key_alias=\"x\"} 7.0"),
        "{max:?}"
    );
    assert!(
        max.contains(&"llm_api_key_max_budget_metric{api_key_alias=\"\"} 5.0"),
        "{max:?}"
    );
}

/// A label value a client chose (`end_user`) with `} ` in it stays inside its quotes on every
/// histogram line.
#[test]
fn client_label_values_cannot_break_histogram_lines() {
    let mut a = actor("");
    let d = dep("d1");
    a.record(RequestFinished {
        requested_model: Arc::from("g"),
        end_user: Some("a} b\\\"c".into()),
        key: Arc::new(KeyLabels::default()),
        custom: Vec::new(),
        attempts: Vec::new(),
        outcome: Outcome::Success {
            deployment: d,
            usage: Usage::default(),
            cost: 0.0,
            total_latency: 0.1,
            api_latency: 0.05,
            time_to_first_token: None,
        },
        key_entry: None,
        team_entry: None,
        user_entry: None,
        end_user_entry: None,
        model_limits: None,
        fallbacks: Vec::new(),
    });
    let text = a.render_text();
    let buckets = lines(&text, "llm_request_total_latency_metric_bucket{");
    assert!(!buckets.is_empty());
    for l in buckets {
        assert!(l.contains("end_user=\"a} b\\\\\\\"c\""), "{l}");
        assert!(l.contains(",le=\""), "{l}");
    }
}

#[test]
fn a_removed_deployment_loses_its_series_and_the_others_keep_theirs() {
    let mut a = actor("");
    let (d1, d2) = (dep("d1"), dep("d2"));
    for d in [&d1, &d2] {
        a.record(RequestFinished {
            requested_model: Arc::from("g"),
            end_user: None,
            key: Arc::new(KeyLabels::default()),
            custom: Vec::new(),
            attempts: vec![Attempt {
                deployment: d.clone(),
                result: Ok(()),
                remaining_requests: Some(5.0),
                remaining_tokens: None,
            }],
            outcome: Outcome::Failure {
                status: 500,
                exception_class: "x".into(),
            },
            key_entry: None,
            team_entry: None,
            user_entry: None,
            end_user_entry: None,
            model_limits: None,
            fallbacks: Vec::new(),
        });
    }
    a.remove_deployments(std::slice::from_ref(&d1), std::slice::from_ref(&d2));
    let text = a.render_text();
    assert!(!text.contains("model_id=\"d1\""), "{text}");
    assert_eq!(
        lines(&text, "llm_remaining_requests_metric{").len(),
        1,
        "d2 keeps its gauge"
    );
    assert_eq!(
        lines(&text, "llm_deployment_success_responses_total{").len(),
        1
    );
}
