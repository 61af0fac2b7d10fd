//! The admin UI as the gateway serves it (`/ui`: on with a master key, off without one or with `ui: false`,
//! its security headers), and the admin API calls it relies on: end users listed, spend logs filtered by
//! model, the spend report per day, a team member's teams.

use crate::support::*;
use serde_json::json;

const MOCK_MODELS: &str = "model_list:
  - model_name: m1
    llm_params: {model: mock/m1, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}
  - model_name: m2
    llm_params: {model: mock/m2, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}
";

#[actix_rt::test]
async fn the_ui_is_served_with_a_master_key_only_and_forbids_inline_script_and_framing() {
    let gw = Gateway::start(&format!(
        "{MOCK_MODELS}general_settings:\n  master_key: sk-master\n"
    ))
    .await;
    for path in ["/ui", "/ui/", "/ui/app.js", "/ui/app.css"] {
        let r = gw.get(path, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        let csp = &r.headers["content-security-policy"];
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
    }
    let page = gw.get("/ui", &[]).await;
    assert!(page.headers["content-type"].starts_with("text/html"));
    assert!(page.body.contains("/ui/app.js"), "{}", page.body);
    // No inline script: every <script> names its source.
    assert!(!page.body.contains("<script>"), "{}", page.body);
    assert_eq!(gw.get("/ui/../config.yaml", &[]).await.status, 404);
    assert_eq!(gw.get("/ui/nope.js", &[]).await.status, 404);

    // Without a master key there is no UI; `ui: false` turns it off.
    let open = Gateway::start(MOCK_MODELS).await;
    assert_eq!(open.get("/ui", &[]).await.status, 404);
    let off = Gateway::start(&format!(
        "{MOCK_MODELS}general_settings:\n  master_key: sk-master\n  ui: false\n"
    ))
    .await;
    let r = off.get("/ui", &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.error()["message"].as_str().unwrap().contains("UI"));
}

#[actix_rt::test]
async fn the_admin_calls_the_ui_makes_filter_and_report_per_day() {
    let gw = Gateway::start(&format!(
        "{MOCK_MODELS}general_settings:\n  master_key: sk-master\n"
    ))
    .await;
    let team = gw
        .admin("/team/new", &json!({"team_alias": "t"}))
        .await
        .json()["team_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = gw
        .admin("/key/generate", &json!({"team_id": team}))
        .await
        .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = gw
        .admin(
            "/customer/new",
            &json!({"user_id": "customer-1", "max_budget": 10}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let auth = format!("Bearer {key}");
    for model in ["m1", "m1", "m2"] {
        let mut body = chat(model);
        body["user"] = json!("customer-1");
        let r = gw
            .post_with("/v1/chat/completions", &body, &[("authorization", &auth)])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Spend logs by model group.
    let logs = gw.admin_get("/spend/logs?model=m1").await.json();
    assert_eq!(logs["total"], 2, "{logs}");
    assert!(logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["model_group"] == "m1"));
    // The report per day and model: today, both models, in one call.
    let report = gw
        .admin_get("/global/spend/report?group_by=model&per_day=true")
        .await
        .json();
    let rows = report["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    let day = rows[0]["day"].as_str().unwrap();
    assert!(day.len() == 10 && day.starts_with("20"), "{report}");
    assert!(rows.iter().all(|r| r["day"] == day), "{report}");
    let m1 = rows.iter().find(|r| r["group"] == "m1").unwrap();
    assert_eq!(m1["requests"], 2, "{report}");
    assert!(m1["spend"].as_f64().unwrap() > 0.0);
    let r = gw.admin_get("/global/spend/report?per_day=maybe").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error()["param"], "per_day");
    // Without `per_day` the report has no days (as before).
    let plain = gw
        .admin_get("/global/spend/report?group_by=model")
        .await
        .json();
    assert!(plain["data"][0].get("day").is_none(), "{plain}");

    // End users are listed with their spend.
    let customers = gw.admin_get("/customer/list").await.json();
    let c = customers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["user_id"] == "customer-1")
        .unwrap_or_else(|| panic!("{customers}"));
    assert!(c["spend"].as_f64().unwrap() > 0.0, "{c}");

    // A member's teams, in the user's own record too; a member named by email only is added once.
    gw.admin("/user/new", &json!({"user_id": "alice"})).await;
    for member in [
        json!({"user_id": "alice", "role": "admin"}),
        json!({"user_email": "bob@example.com", "role": "user"}),
        json!({"user_email": "bob@example.com", "role": "user"}),
    ] {
        let r = gw
            .admin(
                "/team/member_add",
                &json!({"team_id": team, "member": member}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let info = gw.admin_get("/user/info?user_id=alice").await.json();
    assert_eq!(info["user_info"]["teams"], json!([team]), "{info}");
    let t = gw
        .admin_get(&format!("/team/info?team_id={team}"))
        .await
        .json();
    let members = t["team_info"]["members_with_roles"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{t}");
}
