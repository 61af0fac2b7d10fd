//! The command line: `--check-config` on good and broken files, and the example configs.

use std::process::Command;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llm"))
        .args(["--check-config", "--config", path.to_str().unwrap()])
        .env_remove("OPENAI_API_KEY")
        // What config/docker.yaml reads from the environment (docker-compose.yml sets them).
        .env("LLM_MASTER_KEY", "sk-example-master")
        .env("DATABASE_URL", "postgresql://llm@127.0.0.1:5432/llm")
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .output()
        .expect("llm runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn example_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let (ok, out) = check(&path);
            assert!(ok, "{}: {out}", path.display());
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn broken_configs_fail_with_every_problem_listed() {
    let dir = std::env::temp_dir().join(format!("llm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "model_list:\n  - model_name: a\n    llm_params: {model: nope/x}\n  - model_name: b\n    llm_params: {model: openai/x, api_key: os.environ/LLM_TEST_UNSET_VAR}\n",
    )
    .unwrap();
    let (ok, out) = check(&bad);
    assert!(!ok);
    assert!(out.contains("LLM_TEST_UNSET_VAR"), "{out}");
    std::fs::write(&bad, "model_list:\n  - model_name: a\n    llm_params: {model: nope/x}\n  - model_name: b\n    llm_params: {model: hosted_vllm/x}\n").unwrap();
    let (ok, out) = check(&bad);
    assert!(!ok);
    assert!(
        out.contains("model_list[0].llm_params.model")
            && out.contains("model_list[1].llm_params.api_base"),
        "{out}"
    );
    std::fs::write(&bad, "model_list: [\n  {model_name: a,\n").unwrap();
    let (ok, out) = check(&bad);
    assert!(!ok);
    assert!(out.contains("line"), "{out}");
    std::fs::write(
        &bad,
        "model_list:\n  - model_name: a\n    llm_params: {model: mock/a}\ngeneral_settings:\n  maximum_spend_logs_retention_period: a week\n  maximum_spend_logs_retention_interval: 0d\n",
    )
    .unwrap();
    let (ok, out) = check(&bad);
    assert!(!ok);
    assert!(
        out.contains("general_settings.maximum_spend_logs_retention_period")
            && out.contains("a week")
            && out.contains("general_settings.maximum_spend_logs_retention_interval"),
        "{out}"
    );
    std::fs::write(
        &bad,
        "model_list:\n  - model_name: a\n    llm_params: {model: mock/a}\nllm_settings:\n  prometheus_exclude_labels: [end_user, enduser]\n  prometheus_max_series_per_metric: 0\n",
    )
    .unwrap();
    let (ok, out) = check(&bad);
    assert!(!ok);
    assert!(
        out.contains("llm_settings.prometheus_exclude_labels[1]")
            && out.contains("enduser")
            && out.contains("llm_settings.prometheus_max_series_per_metric"),
        "{out}"
    );
    // An upstream key that cannot be sent (a line break from a bad paste or environment variable) used to
    // turn the deployment into the built-in mock, billed at list price; now it is an error with its path.
    std::fs::write(
        &bad,
        "model_list:\n  - model_name: a\n    llm_params: {model: mock/a}\n  - model_name: b\n    llm_params: {model: openai/gpt-4o, api_key: \"sk-real\\nkey\"}\n",
    )
    .unwrap();
    let (ok, out) = check(&bad);
    assert!(!ok, "{out}");
    assert!(out.contains("`model_list[1].llm_params.api_key`"), "{out}");
    assert!(!out.contains("sk-real"), "the key is not printed: {out}");
    let (ok, out) = check(&dir.join("missing.yaml"));
    assert!(!ok);
    assert!(out.contains("cannot read"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_logs_are_json() {
    let dir = std::env::temp_dir().join(format!("llm-cli-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.yaml");
    // An unknown top-level section is a warning: one log line to look at.
    std::fs::write(
        &path,
        "model_list:\n  - {model_name: a, llm_params: {model: mock/x}}\nsurprise: 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_llm"))
        .args([
            "--check-config",
            "--json-logs",
            "--config",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("surprise"))
        .expect("a warning about the unknown section");
    let v: serde_json::Value = serde_json::from_str(line).expect("the log line is JSON");
    assert_eq!(v["level"], "WARN");
    let _ = std::fs::remove_dir_all(&dir);
}
