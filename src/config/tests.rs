use super::*;
use crate::providers::ProviderKind;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.yaml"), &|name| match name {
        "OPENAI_API_KEY" => Some("sk-upstream".into()),
        _ => None,
    })
}

#[test]
fn minimal_mock_config() {
    let c =
        parse("model_list:\n  - model_name: m\n    llm_params:\n      model: mock/echo\n").unwrap();
    assert_eq!(c.model_list.len(), 1);
    assert_eq!(c.model_list[0].provider, ProviderKind::Mock);
    assert_eq!(c.model_list[0].model, "echo");
    assert_eq!(c.model_list[0].id.len(), 64);
    assert!(!c.metrics.enabled);
    assert!(!c.metrics.require_auth);
}

#[test]
fn litellm_spellings_are_aliases() {
    let c = parse(
            "model_list:\n  - model_name: g\n    litellm_params:\n      model: openai/gpt-4o\n      api_key: os.environ/OPENAI_API_KEY\nlitellm_settings:\n  callbacks: [prometheus]\n",
        )
        .unwrap();
    assert!(c.metrics.enabled);
    let d = &c.model_list[0];
    assert_eq!(d.api_base, "https://api.openai.com/v1");
    assert_eq!(d.api_key.as_ref().unwrap().expose(), "sk-upstream");
}

#[test]
fn ids_are_stable_and_independent_of_key_order() {
    let a =
        parse("model_list:\n  - model_name: g\n    llm_params: {model: mock/a, rpm: 5}\n").unwrap();
    let b =
        parse("model_list:\n  - model_name: g\n    llm_params: {rpm: 5, model: mock/a}\n").unwrap();
    assert_eq!(a.model_list[0].id, b.model_list[0].id);
    let twice = parse(
            "model_list:\n  - model_name: g\n    llm_params: {model: mock/a}\n  - model_name: g\n    llm_params: {model: mock/a}\n",
        )
        .unwrap();
    assert_ne!(twice.model_list[0].id, twice.model_list[1].id);
}

#[test]
fn ids_and_shown_urls_carry_no_secrets() {
    let entry = |key: &str| {
        format!("model_list:\n  - model_name: g\n    llm_params: {{model: openai/x, api_base: 'http://u:pw@h:1/v1?key=s', api_key: {key}, max_tokens: 5}}\n")
    };
    let (a, b) = (
        parse(&entry("sk-one")).unwrap(),
        parse(&entry("sk-two")).unwrap(),
    );
    let (a, b) = (&a.model_list[0], &b.model_list[0]);
    assert_eq!(a.id, b.id, "the id does not depend on the key");
    let without_secrets = crate::secret::hash_key(
        r#"["g",{"api_base":"http://h:1/v1","max_tokens":5,"model":"openai/x"}]"#,
    );
    assert_eq!(a.id, without_secrets);
    assert_eq!(a.api_base_shown, "http://h:1/v1");
    assert_eq!(a.api_base, "http://u:pw@h:1/v1?key=s");
    for (url, shown) in [
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("http://user@10.0.0.1:8000", "http://10.0.0.1:8000"),
        ("http://a:b@c@host/x#frag", "http://host/x"),
    ] {
        assert_eq!(shown_url(url), shown);
    }
}

#[test]
fn a_key_that_cannot_be_sent_is_a_config_error() {
    let err = parse("model_list:\n  - model_name: g\n    llm_params: {model: openai/x, api_base: 'http://127.0.0.1:1/v1', api_key: \"sk-a\\nb\"}\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("`model_list[0].llm_params.api_key`"), "{err}");
    assert!(!err.contains("sk-a"), "the key itself is not shown: {err}");
}

#[test]
fn collects_every_problem_with_its_path() {
    let err = parse(
            "model_list:\n  - model_name: a\n    llm_params: {model: nope/x}\n  - model_name: b\n    llm_params: {model: hosted_vllm/x}\n    model_info: {id: same}\n  - model_name: c\n    llm_params: {model: mock/x}\n    model_info: {id: same}\nrouter_settings:\n  fallbacks: [{c: [zzz]}]\n",
        )
        .unwrap_err();
    let all = err.to_string();
    assert!(
        all.contains("`model_list[0].llm_params.model`: unknown provider `nope`"),
        "{all}"
    );
    assert!(
        all.contains("`model_list[1].llm_params.api_base` is required"),
        "{all}"
    );
    assert!(all.contains("fallback `zzz` is not a model_name"), "{all}");
}

#[test]
fn duplicate_ids_are_rejected() {
    let err = parse(
            "model_list:\n  - model_name: a\n    llm_params: {model: mock/x}\n    model_info: {id: same}\n  - model_name: b\n    llm_params: {model: mock/y}\n    model_info: {id: same}\n",
        )
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("`model_list[1].model_info.id`: `same` is already the id of model_list[0]"));
}

#[test]
fn missing_env_names_the_path() {
    let err = parse("general_settings:\n  master_key: os.environ/NOPE\n").unwrap_err();
    assert!(err
        .to_string()
        .contains("`general_settings.master_key`: environment variable `NOPE` is not set"));
}

#[test]
fn malformed_yaml_gives_line_and_column() {
    let err = parse("model_list:\n  - model_name: a\n   llm_params: [\n").unwrap_err();
    assert!(err.to_string().contains("line "), "{err}");
}

#[test]
fn wrong_type_names_the_path() {
    let err = parse("model_list:\n  - model_name: a\n    llm_params: {model: mock/x, rpm: lots}\n")
        .unwrap_err();
    assert!(
        err.to_string().contains("`model_list[0].llm_params.rpm`"),
        "{err}"
    );
}

#[test]
fn custom_labels_are_sanitized_and_checked() {
    let c = parse(
        "llm_settings:\n  custom_prometheus_metadata_labels: [metadata.foo-bar, metadata.a.b]\n",
    )
    .unwrap();
    let labels: Vec<&str> = c
        .metrics
        .custom_metadata_labels
        .iter()
        .map(|l| l.label.as_str())
        .collect();
    assert_eq!(labels, ["metadata_foo_bar", "metadata_a_b"]);
    assert_eq!(c.metrics.custom_metadata_labels[1].path, ["a", "b"]);
    assert_eq!(sanitize_label_name("1abc"), "_1abc");
    let err = parse("llm_settings:\n  custom_prometheus_metadata_labels: [team]\n").unwrap_err();
    assert!(err.to_string().contains("already uses"));
}

#[test]
fn unknown_sections_warn_and_unimplemented_keys_are_kept() {
    let c = parse("foo: 1\nllm_settings:\n  drop_params: true\n").unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.not_implemented, ["llm_settings.drop_params"]);
}

#[test]
fn built_in_prices_by_name_and_dated_snapshot() {
    assert_eq!(list_price("gpt-4o-mini"), Some((0.00000015, 0.0000006)));
    assert_eq!(list_price("gpt-4o-2024-08-06"), list_price("gpt-4o"));
    assert_eq!(
        list_price("claude-3-5-sonnet-20241022"),
        Some((0.000003, 0.000015))
    );
    assert_eq!(list_price("my-own-model"), None);
    let c = Config::parse(
            "model_list:\n  - {model_name: a, llm_params: {model: openai/gpt-4o}}\n  - {model_name: b, llm_params: {model: openai/gpt-4o, input_cost_per_token: 0.5}}\n  - {model_name: c, llm_params: {model: mock/gpt-4o}}\n",
            Path::new("t.yaml"),
            &|_| None,
        )
        .unwrap();
    assert_eq!(c.model_list[0].input_cost_per_token, Some(0.0000025));
    assert_eq!(c.model_list[1].input_cost_per_token, Some(0.5));
    assert_eq!(c.model_list[1].output_cost_per_token, Some(0.00001));
    assert_eq!(c.model_list[2].input_cost_per_token, None);
}

#[test]
fn azure_and_anthropic_deployments_are_checked_at_load() {
    let c = parse("model_list:\n  - model_name: a\n    llm_params: {model: azure/my-dep, api_base: https://r.openai.azure.com, api_version: 2024-10-21, api_key: k}\n    model_info: {base_model: gpt-4o}\n  - model_name: c\n    llm_params: {model: anthropic/claude-3-5-sonnet-20241022, api_key: k}\n").unwrap();
    assert_eq!(c.model_list[0].provider, ProviderKind::Azure);
    assert_eq!(c.model_list[0].model, "my-dep");
    // Priced by its base model.
    assert_eq!(c.model_list[0].input_cost_per_token, Some(0.0000025));
    assert_eq!(c.model_list[1].provider, ProviderKind::Anthropic);
    assert_eq!(c.model_list[1].api_base, "https://api.anthropic.com");
    assert!(c.model_list[1].input_cost_per_token.is_some());
    let problems = parse("model_list:\n  - model_name: a\n    llm_params: {model: azure/d, api_key: k}\n  - model_name: b\n    llm_params: {model: azure/d, api_base: https://r.openai.azure.com, api_key: k}\n  - model_name: c\n    llm_params: {model: azure/d, api_base: https://r.openai.azure.com, api_version: v1}\n  - model_name: d\n    llm_params: {model: anthropic/claude-x}\n")
        .unwrap_err()
        .problems
        .join("\n");
    assert!(
        problems.contains("`model_list[0].llm_params.api_base` is required for `azure`"),
        "{problems}"
    );
    assert!(
        problems.contains("`model_list[1].llm_params.api_version` is required"),
        "{problems}"
    );
    assert!(
        problems.contains("`model_list[2].llm_params.api_key` (or `azure_ad_token`) is required"),
        "{problems}"
    );
    assert!(
        problems.contains("`model_list[3].llm_params.api_key` is required for anthropic"),
        "{problems}"
    );
}
