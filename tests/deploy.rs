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

/// The unit as shipped, its `/usr/bin` binaries pointed at this build (the
/// verifier checks that each command exists), in a scratch directory.
fn unit_for_this_build(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(common::deploy("systemd/simulcastd.service")).expect("unit");
    let unit = unit
        .replace("/usr/bin/simulcastd", env!("CARGO_BIN_EXE_simulcastd"))
        .replace("/usr/bin/simulcastctl", env!("CARGO_BIN_EXE_simulcastctl"));
    let path = dir.join("simulcastd.service");
    std::fs::write(&path, unit).expect("write unit");
    path
}

#[test]
fn the_service_unit_passes_systemd_analyze_verify() {
    common::require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = unit_for_this_build(dir.path());
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // An unknown or misspelt key is only a warning to systemd: none allowed.
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
    let unit = std::fs::read_to_string(&path).expect("unit");
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "StateDirectoryMode=0700",
        "User=simulcast",
        &format!("ExecStartPre={} check --config", env!("CARGO_BIN_EXE_simulcastctl")),
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "the unit has no {line}");
    }
    let sysusers = std::fs::read_to_string(common::deploy("systemd/simulcast.sysusers")).expect("sysusers");
    assert!(sysusers.lines().any(|l| l.starts_with("u simulcast ")), "{sysusers}");
}

/// What `simulcastd serve` says on `$NOTIFY_SOCKET`, as systemd would read
/// it: READY once health is SERVING, watchdog pings at half `WATCHDOG_USEC`,
/// STOPPING when asked to stop.
#[test]
fn simulcastd_tells_systemd_it_is_ready_pings_the_watchdog_and_says_it_stops() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("s.db");
    let made = Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
        .args(["token", "create", "--role", "admin", "--name", "a", "--db"])
        .arg(&db)
        .output()
        .expect("simulcastctl");
    assert!(made.status.success(), "{made:?}");
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let port = common::free_tcp_port();
    let mut daemon = common::Daemon(
        Command::new(env!("CARGO_BIN_EXE_simulcastd"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "400000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("simulcastd"),
    );
    let pid = daemon.0.id();
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
    assert!(first.lines().any(|l| l.starts_with("STATUS=Serving")), "{first}");
    assert!(first.lines().any(|l| l == format!("MAINPID={pid}")), "{first}");
    // Pings every 200 ms while serving.
    let started = Instant::now();
    let pings = (0..3).map(|_| next()).filter(|m| m == "WATCHDOG=1").count();
    let took = started.elapsed();
    assert_eq!(pings, 3, "the watchdog is pinged");
    assert!(took < Duration::from_millis(1500), "3 pings took {took:?}");
    let stopped = Command::new("kill").args(["-INT", &pid.to_string()]).status().expect("kill");
    assert!(stopped.success());
    let said: Vec<String> = (0..10).map(|_| next()).take_while(|m| m != "STOPPING=1").collect();
    assert!(said.len() < 10, "no STOPPING=1 after SIGINT: {said:?}");
    assert!(daemon.0.wait().expect("wait").success(), "simulcastd stops cleanly");
}
