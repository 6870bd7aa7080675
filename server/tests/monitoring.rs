//! The operators' files in deploy/monitoring against a live rir-serve: every
//! series the Grafana dashboard and the alert rules name is one the server
//! exports on /metrics, and, where `promtool` is installed, Prometheus's
//! own parser accepts the rules and every dashboard query.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rir_testkit::requests::fp32_request;
use rir_testserver::server::TestServer;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

/// Every query of the dashboard, with Grafana's variables given values.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring().join("rir-serve-dashboard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = vec![];
    for panel in d["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            out.push(
                expr.replace("$__rate_interval", "1m")
                    .replace("$model", ".*")
                    .replace("$instance", ".*"),
            );
        }
    }
    out
}

/// Every `expr:` of the rules file: one line, or a `|` block below it.
fn rule_queries() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring().join("rir-serve-alerts.yml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = vec![];
    for (k, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        if rest.trim() != "|" {
            out.push(rest.trim().to_string());
            continue;
        }
        let indent = |l: &str| l.len() - l.trim_start().len();
        let block: Vec<&str> = lines[k + 1..]
            .iter()
            .take_while(|l| indent(l) > indent(line) && !l.trim().is_empty())
            .map(|l| l.trim())
            .collect();
        out.push(block.join(" "));
    }
    out
}

/// The names a query uses that the server would have to export.
fn series_named(query: &str) -> BTreeSet<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| {
            ["nv_inference_", "rir_", "process_"]
                .iter()
                .any(|p| t.starts_with(p))
        })
        .map(String::from)
        .collect()
}

/// The series names of a /metrics page: each family, and a histogram's
/// `_bucket`, `_sum` and `_count`.
fn exported(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_name_only_series_the_server_exports() {
    let s = TestServer::start(None, &[]).await;
    let mut c = s.kserve().await;
    let image: Vec<f32> = (0..784).map(|i| (i % 255) as f32 / 255.0).collect();
    c.model_infer(fp32_request("gray", 1, &image, true))
        .await
        .unwrap();
    let page = s.metrics().await;
    s.shutdown().await.unwrap();
    let live = exported(&page);
    assert!(live.contains("rir_request_seconds_bucket"), "{live:?}");
    let (dashboard, rules) = (dashboard_queries(), rule_queries());
    assert_eq!(dashboard.len(), 23, "every panel's queries");
    assert_eq!(rules.len(), 7, "every alert: {rules:#?}");
    let mut used = BTreeSet::new();
    for q in dashboard.iter().chain(&rules) {
        let named = series_named(q);
        let missing: Vec<&String> = named.difference(&live).collect();
        assert!(
            missing.is_empty(),
            "{q}\nnames {missing:?}, not on /metrics"
        );
        used.extend(named);
    }
    // What operators watch is all there: throughput, latency, queue and
    // compute, batches, failures, loads, readiness, connections, restarts.
    for family in [
        "nv_inference_request_success",
        "rir_request_seconds_bucket",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "rir_batch_size_bucket",
        "rir_requests_total",
        "rir_model_loads_total",
        "rir_model_ready",
        "rir_stalled_requests_total",
        "rir_connections_refused_total",
        "process_start_time_seconds",
    ] {
        assert!(used.contains(family), "nothing watches {family}");
    }
    // The model's readiness and the start time carry values.
    assert!(
        page.contains("rir_model_ready{model=\"gray\",version=\"1\"} 1"),
        "{page}"
    );
    promtool_accepts(&dashboard);
}

/// `promtool check rules` on the alert rules, and on every dashboard query
/// written as a recording rule (so Prometheus's parser reads each), when
/// promtool is installed (Debian's `prometheus` package); skipped, and
/// said, when it is not.
fn promtool_accepts(dashboard: &[String]) {
    let Ok(version) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        eprintln!("promtool not installed: the queries' syntax is not checked");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (k, q) in dashboard.iter().enumerate() {
        let quoted = serde_json::to_string(q).unwrap();
        rules.push_str(&format!(
            "      - record: panel_query_{k}\n        expr: {quoted}\n"
        ));
    }
    let queries = dir.path().join("dashboard-rules.yml");
    std::fs::write(&queries, rules).unwrap();
    for file in [monitoring().join("rir-serve-alerts.yml"), queries] {
        let out = std::process::Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
