//! The monitoring shipped in `deploy/`: the Prometheus alert rules pass
//! promtool's own check and their unit tests (series written for each
//! rule, in `deploy/prometheus/simulcast.rules.test.yml`), and the Grafana
//! dashboard is a dashboard whose every panel queries Prometheus. That
//! every metric they name is one the daemon exports is checked against a
//! live scrape in `tests/observe.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

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
    assert!(checked.contains("SUCCESS: 14 rules found"), "{checked}");
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
    let socket = std::fs::read_to_string(common::deploy("systemd/simulcastd.socket")).expect("socket unit");
    std::fs::write(dir.join("simulcastd.socket"), socket).expect("write socket unit");
    path
}

#[test]
fn the_service_and_socket_units_pass_systemd_analyze_verify() {
    common::require("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = unit_for_this_build(dir.path());
    // Its Documentation= man pages, as the package installs them: the
    // verifier asks man for each.
    let pages = dir.path().join("share");
    for bin in [env!("CARGO_BIN_EXE_simulcastd"), env!("CARGO_BIN_EXE_simulcastctl")] {
        let made = Command::new(bin).arg("generate").arg(&pages).status().expect("generate");
        assert!(made.success(), "{bin} generate");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .arg(dir.path().join("simulcastd.socket"))
        .env("MANPATH", &pages)
        .output()
        .expect("systemd-analyze");
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
    // The socket unit hands simulcastd its gRPC socket by the name it looks for.
    let socket = std::fs::read_to_string(dir.path().join("simulcastd.socket")).expect("socket unit");
    for line in ["FileDescriptorName=grpc", "ListenStream=127.0.0.1:50051", "Service=simulcastd.service"] {
        assert!(socket.lines().any(|l| l == line), "the socket unit has no {line}");
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
    let grpc = common::tcp_listener();
    let mut daemon = common::Daemon(
        common::simulcastd_on(&[("grpc", &grpc)])
            .args(["serve", "--metrics-listen", "127.0.0.1:0", "--db"])
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
    // Before health is first known it may say NOT_SERVING; then READY.
    let first = (0..5).map(|_| next()).find(|m| m.lines().any(|l| l == "READY=1")).expect("READY=1");
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
    // Its last word: health NOT_SERVING (pings may still come before it).
    let last = (0..10).map(|_| next()).find(|m| m.starts_with("STATUS=NOT_SERVING"));
    assert!(last.is_some(), "no NOT_SERVING status after STOPPING=1");
    assert!(daemon.0.wait().expect("wait").success(), "simulcastd stops cleanly");
}

/// `simulcastctl --help`'s subcommands (the "Commands:" section, but `help`).
fn subcommands_in_help(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn the_debian_package_installs_into_a_scratch_root_with_man_pages_that_match_help() {
    common::require("dpkg-deb", "dpkg");
    let dir = tempfile::tempdir().expect("tempdir");
    let bins = Path::new(env!("CARGO_BIN_EXE_simulcastd")).parent().expect("the binaries' directory");
    let built = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package.sh"))
        .env("BIN_DIR", bins)
        .env("OUT", dir.path().join("out"))
        .env("COMPRESS", "none")
        .output()
        .expect("scripts/package.sh");
    let stdout = String::from_utf8_lossy(&built.stdout);
    assert!(built.status.success(), "package.sh: {stdout}{}", String::from_utf8_lossy(&built.stderr));
    let deb = stdout.lines().last().expect("the package's path").to_owned();

    // dpkg -i into a scratch root: its own database, maintainer scripts
    // told by $DPKG_ROOT not to touch this machine's users or systemd.
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).expect("admin dir");
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).expect("admin dir");
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
    let dpkg = |args: &[&str]| {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-script-chrootless", "--force-depends", "--force-not-root", "--log=/dev/null"])
            .args(args)
            .output()
            .expect("dpkg");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "dpkg {args:?}:\n{text}");
        text
    };
    dpkg(&["-i", &deb]);
    assert!(dpkg(&["-s", "simulcast"]).contains("Status: install ok installed"));
    for f in [
        "usr/bin/simulcastd",
        "usr/bin/simulcastctl",
        "lib/systemd/system/simulcastd.service",
        "usr/lib/sysusers.d/simulcast.conf",
        "usr/share/man/man1/simulcastd.1.gz",
        "usr/share/man/man1/simulcastd-serve.1.gz",
        "usr/share/bash-completion/completions/simulcastctl",
        "usr/share/zsh/vendor-completions/_simulcastctl",
        "usr/share/fish/vendor_completions.d/simulcastd.fish",
        "usr/share/doc/simulcast/README.md",
    ] {
        assert!(root.join(f).is_file(), "the package has no {f}");
    }
    // The installed client runs, and its man pages say what its --help says.
    let ctl = root.join("usr/bin/simulcastctl");
    let help = Command::new(&ctl).arg("--help").output().expect("simulcastctl --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let commands = subcommands_in_help(&help);
    assert!(commands.len() >= 10 && commands.contains(&"rehearse".to_owned()), "{help}");
    let man = |page: &str| {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man1").join(format!("{page}.1.gz")))
            .output()
            .expect("gzip");
        assert!(out.status.success(), "no man page {page}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let main_page = man("simulcastctl");
    assert!(main_page.contains("simulcast operator client"), "{main_page}");
    for c in &commands {
        assert!(main_page.contains(&format!("simulcastctl\\-{c}(1)")), "simulcastctl.1 does not list {c}");
        let sub = man(&format!("simulcastctl-{c}"));
        assert!(sub.contains(".TH simulcastctl-"), "simulcastctl-{c}.1 is not a man page");
    }
    // Not the hidden packaging command.
    assert!(!main_page.contains("generate"), "the man page lists the packaging command");
}
