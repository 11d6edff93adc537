//! The real daemon killed with SIGKILL mid-event and started again: the
//! event keeps its state, its legs are rebuilt and flow to the same real
//! receivers (srt-live-transmit with a passphrase, nginx-rtmp with a stream
//! key, a UDP socket), the as-run log records the restart and keeps every
//! entry written before the kill. Every output captured on the way (daemon
//! logs, every simulcastctl answer) is searched for the two secrets.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, NginxRtmp, SrtReceiver, UdpCapture, free_tcp_port, free_udp_port};

const PASSPHRASE: &str = "restart-pp-9d1c-tashkent";
const STREAM_KEY: &str = "restart-sk-5b7e-ulaanbaatar";

/// The daemon, its log (info level, the default) appended to `log`.
fn start_daemon(db: &Path, config: &Path, port: u16, log: &Path) -> Daemon {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let args = [OsStr::new("--db"), db.as_os_str(), OsStr::new("--config"), config.as_os_str()];
    Daemon::serve(port, &args, Stdio::from(log))
}

/// Runs simulcastctl; every output is kept for the secret search.
struct Ctl {
    addr: String,
    seen: Vec<String>,
}

impl Ctl {
    fn run(&mut self, token: &str, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
            .args(args)
            .env("SIMULCAST_ADDR", &self.addr)
            .env("SIMULCAST_TOKEN", token)
            .output()
            .expect("run simulcastctl");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        self.seen.push(stdout.clone() + &stderr);
        assert!(out.status.success(), "simulcastctl {args:?} failed: {stderr}");
        stdout
    }

    fn json(&mut self, token: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(token, &all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }

    /// Polls `watch --once --json` until every leg is ON_AIR.
    fn wait_legs_on_air(&mut self, token: &str, event: &str, legs: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let u = self.json(token, &["watch", event, "--once"]);
            let on_air = u["legs"].as_array().map_or(0, |l| l.iter().filter(|l| l["state"] == "ON_AIR").count());
            if on_air == legs {
                return u;
            }
            assert!(Instant::now() < deadline, "legs not all on air: {u:#}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn wait_growth(what: &str, bytes: impl Fn() -> u64, by: u64) {
    let start = bytes();
    let deadline = Instant::now() + Duration::from_secs(30);
    while bytes() < start + by {
        assert!(Instant::now() < deadline, "{what} stopped receiving: {} bytes, wanted {}", bytes(), start + by);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_daemon_killed_mid_event_resumes_it_and_its_legs_flow_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("simulcast.db");
    let log = dir.path().join("simulcastd.log");
    let (srt_port, rtmp_port) = (free_udp_port(), free_tcp_port());
    let srt = SrtReceiver::start_with_passphrase(srt_port, PASSPHRASE);
    let nginx = NginxRtmp::start(rtmp_port);
    let udp = UdpCapture::start();
    let config = dir.path().join("final.toml");
    std::fs::write(
        &config,
        format!(
            "[event]\ntitle = \"Silk Way Star: grand final\"\n\
             [source]\ntype = \"test\"\n[program]\nwidth = 480\nheight = 270\nframerate = 25\nvideo_kbps = 800\ngop = 25\n\
             [[channels]]\nid = \"uz-mtrk\"\nname = \"MTRK\"\ncountry = \"UZ\"\ntimezone = \"Asia/Tashkent\"\n\
             ingest = {{ type = \"srt\", uri = \"srt://127.0.0.1:{srt_port}\", passphrase = \"{PASSPHRASE}\" }}\n\
             [[channels]]\nid = \"mn-mnb\"\nname = \"MNB\"\ncountry = \"MN\"\ntimezone = \"Asia/Ulaanbaatar\"\n\
             ingest = {{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{rtmp_port}/live\", stream_key = \"{STREAM_KEY}\" }}\n\
             [[channels]]\nid = \"kr-kbs\"\nname = \"KBS\"\ncountry = \"KR\"\ntimezone = \"Asia/Seoul\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}\n",
            udp.port
        ),
    )
    .unwrap();
    let port = free_tcp_port();
    let mut ctl = Ctl { addr: format!("http://127.0.0.1:{port}"), seen: Vec::new() };
    let db_arg = db.to_str().unwrap();
    let admin = ctl.json("", &["token", "create", "--role", "admin", "--name", "night-admin", "--db", db_arg])["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let op = ctl.json("", &["token", "create", "--role", "operator", "--name", "night-shift", "--db", db_arg])["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut daemon = start_daemon(&db, &config, port, &log);
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ev = ctl.json(
        &admin,
        &["events", "schedule", "--title", "Silk Way Star: grand final", "--at", &at, "--duration", "2h"],
    );
    let id = ev[0]["id"].as_str().unwrap().to_owned();
    ctl.run(&op, &["events", "arm", &id]);
    ctl.run(&op, &["events", "take", &id]);
    ctl.wait_legs_on_air(&op, &id, 3);
    wait_growth("srt", || srt.bytes(), 50_000);
    wait_growth("rtmp", || nginx.recorded_bytes(STREAM_KEY), 50_000);
    wait_growth("udp", || udp.bytes(), 50_000);
    ctl.run(&admin, &["channels", "list"]);
    let before = ctl.json(&op, &["asrun", &id]);
    let before = before.as_array().unwrap().clone();
    assert!(before.iter().any(|e| e["kind"] == "on-air" && e["actor"] == "night-shift"), "{before:#?}");

    // SIGKILL: no chance to clean up.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (srt_at_kill, rtmp_at_kill, udp_at_kill) = (srt.bytes(), nginx.recorded_bytes(STREAM_KEY), udp.bytes());

    let _daemon = start_daemon(&db, &config, port, &log);
    let got = ctl.json(&op, &["events", "get", &id]);
    assert_eq!(got[0]["state"], "ON_AIR", "the event lost its state: {got:#}");
    let u = ctl.wait_legs_on_air(&op, &id, 3);
    assert_eq!(u["event_state"], "ON_AIR");
    wait_growth("srt after the restart", || srt.bytes(), 100_000);
    wait_growth("rtmp after the restart", || nginx.recorded_bytes(STREAM_KEY), 100_000);
    wait_growth("udp after the restart", || udp.bytes(), 100_000);
    assert!(srt.bytes() > srt_at_kill && nginx.recorded_bytes(STREAM_KEY) > rtmp_at_kill && udp.bytes() > udp_at_kill);
    assert!(nginx.recordings(STREAM_KEY).len() >= 2, "nginx saw no second publish");

    // Nothing written before the kill is lost; the restart is recorded.
    let after = ctl.json(&op, &["asrun", &id]);
    let after = after.as_array().unwrap();
    assert_eq!(&after[..before.len()], &before[..], "entries written before the kill changed or vanished");
    let kinds: Vec<&str> = after[before.len()..].iter().filter_map(|e| e["kind"].as_str()).collect();
    let restart = kinds.iter().position(|k| *k == "daemon-restarted").expect("no daemon-restarted entry");
    let rebuilt = kinds.iter().position(|k| *k == "legs-rebuilt").expect("no legs-rebuilt entry");
    assert!(restart < rebuilt, "{kinds:?}");
    for leg in ["uz-mtrk", "mn-mnb", "kr-kbs"] {
        assert!(
            after[before.len()..].iter().any(|e| e["kind"] == "leg-on-air" && e["channel_id"] == leg),
            "{leg} not back on air in the log: {kinds:?}"
        );
    }
    // The leg's local time is in its own zone (Seoul is UTC+9 all year).
    let seoul = after.iter().find(|e| e["channel_id"] == "kr-kbs").unwrap();
    assert!(seoul["local_time"].as_str().unwrap().ends_with("+09:00"), "{seoul}");

    ctl.run(&op, &["events", "end", &id]);
    let watch = ctl.run(&op, &["watch", &id, "--once"]);
    assert!(watch.contains("POST_ROLL") || watch.contains("COMPLETED"), "{watch}");
    ctl.run(&admin, &["channels", "get", "uz-mtrk"]);
    ctl.run(&admin, &["channels", "get", "mn-mnb"]);

    // No secret anywhere an operator or the on-call engineer would look.
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("Resuming an event after a restart."), "{logs}");
    for (what, text) in std::iter::once(("daemon log", &logs)).chain(ctl.seen.iter().map(|s| ("simulcastctl", s))) {
        assert!(!text.contains(PASSPHRASE) && !text.contains(STREAM_KEY), "secret in the {what}: {text}");
    }
}
