//! The monitoring shipped in `deploy/`: the Prometheus alert rules pass
//! promtool's own check and their unit tests (series written for each
//! rule, in `deploy/prometheus/simulcast.rules.test.yml`), and the Grafana
//! dashboard is a dashboard whose every panel queries Prometheus. That
//! every metric they name is one the daemon exports is checked against a
//! live scrape in `tests/observe.rs`.

mod common;

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> String {
    common::require("promtool", "prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus"))
        .output()
        .expect("promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "simulcast.rules.yml"]);
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "simulcast.rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(common::deploy("prometheus/simulcast.rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(common::deploy("prometheus/simulcast.rules.test.yml")).expect("tests");
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {alert}\n")), "no unit test for {alert}");
    }
}

#[test]
fn the_dashboard_is_grafana_json_whose_every_panel_queries_prometheus() {
    let text = std::fs::read_to_string(common::deploy("grafana/simulcast.json")).expect("dashboard");
    let d: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(d["uid"], "simulcast-mcr");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "{}", d["schemaVersion"]);
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(ids.insert(p["id"].as_u64().expect("a panel id")), "{title}: duplicate id");
        assert!(p["gridPos"]["w"].as_u64().is_some_and(|w| (1..=24).contains(&w)), "{title}: width");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["type"], "prometheus", "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("simulcast_")), "{title}: {t}");
        }
    }
    // What the issue asks the dashboard to show.
    let exprs = text.to_string();
    for m in [
        "simulcast_leg_state",
        "simulcast_leg_bitrate_bytes_per_second",
        "simulcast_leg_srt_rtt_seconds",
        "simulcast_leg_srt_packets_lost_total",
        "simulcast_source_in_use",
        "simulcast_event_seconds_to_t0",
    ] {
        assert!(exprs.contains(m), "the dashboard does not show {m}");
    }
}
