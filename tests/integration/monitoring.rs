//! The monitoring examples of `examples/monitoring/`: promtool checks the alert rules and runs
//! their unit tests, and checks the dashboard's queries; the dashboard is well-formed
//! Grafana JSON on a `${datasource}` variable; and every `gatehouse_*` name and label the
//! examples use is in a real scrape of an instance that has served a mix of requests and a
//! Redis outage, so the examples cannot drift from what gatehouse exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, eventually, promql, promtool};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/monitoring")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(example(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana-dashboard.json")).expect("the dashboard is JSON")
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let rules = example("alerts.yml");
    let tests = example("rules.test.yml");
    let checked = promtool::passes(&["check", "rules", &rules.to_string_lossy()], None);
    if checked {
        promtool::passes(&["test", "rules", &tests.to_string_lossy()], None);
    }
}

/// The dashboard's queries as recording rules (Grafana's variables given values), so that
/// promtool parses them as Prometheus would.
#[test]
fn promtool_parses_the_dashboard_queries() {
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for Query {
        panel,
        ref_id,
        expr,
        ..
    } in dashboard_queries(&dashboard())
    {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        // A JSON string is a YAML double-quoted scalar.
        rules.push_str(&format!(
            "      - record: dashboard:panel_{panel}:{ref_id}\n        expr: {}\n",
            json!(expr)
        ));
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, &rules).expect("write the rules");
    promtool::passes(&["check", "rules", &file.to_string_lossy()], None);
}

/// One target of a dashboard panel.
struct Query {
    panel: u64,
    ref_id: String,
    expr: String,
    legend: String,
}

/// Every panel target of the dashboard.
fn dashboard_queries(dashboard: &Value) -> Vec<Query> {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(Query {
                panel: panel["id"].as_u64().unwrap_or(0),
                ref_id: text(&target["refId"]),
                expr: text(&target["expr"]),
                legend: text(&target["legendFormat"]),
            });
        }
    }
    queries
}

#[test]
fn the_dashboard_is_well_formed() {
    let dashboard = dashboard();
    let variable = |name: &str| {
        dashboard["templating"]["list"]
            .as_array()
            .expect("templating.list")
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no `{name}` variable"))
    };
    let datasource = variable("datasource");
    assert_eq!(
        (&datasource["type"], &datasource["query"]),
        (&json!("datasource"), &json!("prometheus"))
    );
    let instance = variable("instance");
    assert_eq!(instance["type"], "query");
    assert_eq!(instance["datasource"]["uid"], "${datasource}");
    assert_eq!(
        (&instance["multi"], &instance["includeAll"]),
        (&json!(true), &json!(true))
    );
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");

    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("");
        let at = format!("panel {} `{title}`", panel["id"]);
        if !ids.insert(panel["id"].as_u64().unwrap_or(0)) || panel["id"].as_u64().is_none() {
            problems.push(format!("{at}: id missing or used twice"));
        }
        if title.trim().is_empty() {
            problems.push(format!("{at}: no title"));
        }
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        if grid["h"].as_u64().is_none()
            || grid["y"].as_u64().is_none()
            || x.zip(w).is_none_or(|(x, w)| x + w > 24)
        {
            problems.push(format!("{at}: gridPos {grid}"));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("{at}: datasource {}", panel["datasource"]));
        }
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if targets.is_empty() {
            problems.push(format!("{at}: no targets"));
        }
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or("");
            let at = format!("{at} target {}", target["refId"]);
            if expr.trim().is_empty() || target["refId"].as_str().is_none() {
                problems.push(format!("{at}: no expr or refId"));
            }
            if !target["datasource"].is_null() && target["datasource"]["uid"] != "${datasource}" {
                problems.push(format!("{at}: datasource {}", target["datasource"]));
            }
            for selector in promql::usage(expr).selectors {
                let filtered = selector
                    .matchers
                    .iter()
                    .any(|m| m.label == "instance" && m.op == "=~" && m.value == "$instance");
                if !filtered {
                    problems.push(format!(
                        "{at}: {} not filtered by $instance",
                        selector.metric
                    ));
                }
            }
        }
    }
    assert!(panels.len() > 10, "{} panels", panels.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every metric, label and `=` label value the examples name, against a real scrape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_name_only_what_gatehouse_exports() {
    let Some(mut backend) = Backend::redis() else {
        return;
    };
    let scrape = scrape_after_a_mix(&mut backend).await;
    let exported = promql::exported(&scrape);
    let mut problems = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut check = |at: &str, usage: &promql::Usage, values: bool| {
        names.extend(usage.selectors.iter().map(|s| s.metric.clone()));
        problems.extend(
            promql::unknown(&exported, usage, values)
                .into_iter()
                .map(|p| format!("{at}: {p}")),
        );
    };

    let rules = read("alerts.yml");
    // Everything in the file (annotations name metrics too); groupings and $labels per rule.
    check(
        "alerts.yml",
        &promql::usage(&rules).without_groupings(),
        true,
    );
    let alerts: Vec<&str> = rules.split("- alert: ").skip(1).collect();
    assert!(alerts.len() >= 8, "{} alerts found", alerts.len());
    for alert in &alerts {
        let name = alert.lines().next().unwrap_or("").trim();
        let expr = yaml_expr(alert).unwrap_or_else(|| panic!("{name}: no expr found"));
        let mut usage = promql::usage(&expr);
        usage
            .output_labels
            .extend(promql::templated_labels(alert, "$labels."));
        check(&format!("alerts.yml {name}"), &usage, true);
    }
    // The unit tests' series must look like gatehouse's too (their label values are made up).
    check(
        "rules.test.yml",
        &promql::usage(&read("rules.test.yml")).without_groupings(),
        false,
    );

    let dashboard = dashboard();
    for query in dashboard_queries(&dashboard) {
        let mut usage = promql::usage(&query.expr);
        usage
            .output_labels
            .extend(promql::templated_labels(&query.legend, "{{"));
        let at = format!("dashboard panel {} {}", query.panel, query.ref_id);
        check(&at, &usage, true);
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = variable["query"]["query"].as_str().unwrap_or("");
        check(
            "dashboard variable",
            &promql::usage(query).without_groupings(),
            true,
        );
    }
    // The reading found the names (22 when this was written), not nothing.
    assert!(names.len() >= 20, "only {names:?}");
    let problems: Vec<String> = problems.into_iter().collect();
    assert!(
        problems.is_empty(),
        "{}\n\nnot in this scrape:\n{scrape}",
        problems.join("\n")
    );
}

/// The reader the check above relies on, on a known expression and scrape.
#[test]
fn the_name_reader_finds_selectors_groupings_and_samples() {
    let expr = r#"histogram_quantile(0.99, sum by (le, route) (rate(gatehouse_x_bucket{instance=~"$instance", route="/v1/{id}"}[5m]))) / on (job) gatehouse_y"#;
    let usage = promql::usage(expr);
    let metrics: Vec<_> = usage.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(metrics, ["gatehouse_x_bucket", "gatehouse_y"]);
    let route = &usage.selectors[0].matchers[1];
    assert_eq!(
        (&*route.label, &*route.op, &*route.value),
        ("route", "=", "/v1/{id}")
    );
    assert_eq!(usage.groupings, ["le", "route", "job"]);

    let scrape = "# TYPE gatehouse_x histogram\ngatehouse_x_bucket{route=\"/v1/{id}\",le=\"0.1\"} 3\ngatehouse_y 1\n";
    let exported = promql::exported(scrape);
    assert_eq!(
        promql::unknown(&exported, &usage, true),
        Vec::<String>::new()
    );
    let wrong = promql::usage(r#"sum by (path) (gatehouse_x_bucket{route="/v2"}) + gatehouse_z"#);
    assert_eq!(
        promql::unknown(&exported, &wrong, true),
        [
            r#"gatehouse_x_bucket{route="/v2"}: value not seen (seen: {"/v1/{id}"})"#,
            "metric gatehouse_z is not exported",
            "grouping by path, a label none of its metrics has",
        ]
    );
    assert_eq!(
        promql::templated_labels("{{route}} {{ status }}", "{{"),
        ["route", "status"]
    );
}

/// The `expr:` of one rule: a block scalar (`expr: |` and the lines indented below it) or
/// one line.
fn yaml_expr(rule: &str) -> Option<String> {
    let mut lines = rule.lines();
    let line = lines.find(|l| l.trim_start().starts_with("expr:"))?;
    let indent = line.len() - line.trim_start().len();
    let value = line.trim_start()["expr:".len()..].trim();
    if value != "|" && value != "|-" {
        return Some(value.to_owned());
    }
    let block: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .collect();
    Some(block.join("\n"))
}

/// One instance on Redis, after checks allowed, would-deny and denied, refused credentials,
/// an admin 403, and a Redis outage (store errors, a fail-closed denial); its `/metrics` once
/// Redis is back.
async fn scrape_after_a_mix(backend: &mut Backend) -> String {
    let app = TestApp::spawn(backend, &[]).await;
    app.claim("mon-1", "alice").await;
    let (alice, bob) = (app.user("alice"), app.user("bob"));
    let owner = app.validate(&alice, json!({ "session_id": "mon-1" })).await;
    assert_eq!(owner.body["reason"], "owner", "{owner:?}");
    let would = app.validate(&bob, json!({ "session_id": "mon-1" })).await;
    assert_eq!(would.body["decision"], "would_deny", "{would:?}");
    app.set_mode("ENFORCED").await;
    let denied = app.validate(&bob, json!({ "session_id": "mon-1" })).await;
    assert_eq!(denied.status, 403, "{denied:?}");
    let anonymous = app
        .call(
            Method::POST,
            "/v1/validate",
            None,
            Some(json!({ "session_id": "mon-1" })),
        )
        .await;
    assert_eq!(anonymous.status, 401);
    let not_admin = app.call(Method::GET, "/v1/audit", Some(&bob), None).await;
    assert_eq!(not_admin.status, 403);

    let redis = backend.redis_server().expect("a Redis backend");
    redis.stop();
    // A session no check has looked up yet: not in the owner cache, so the store is called.
    let closed = app.validate(&alice, json!({ "session_id": "mon-2" })).await;
    assert_eq!(
        (closed.status, &closed.body["reason"]),
        (503, &json!("store_unavailable")),
        "{closed:?}"
    );
    redis.restart();
    eventually(Duration::from_secs(10), "readiness to recover", || async {
        let ready = app.call(Method::GET, "/readyz", None, None).await;
        (ready.status == 200).then_some(())
    })
    .await;
    let scrape = app.scrape().await;
    app.stop().await;
    scrape
}
