//! The real daemon killed with SIGKILL mid-event and started again: the
//! event keeps its state, its legs are rebuilt and flow to the same real
//! receivers (srt-live-transmit with a passphrase, nginx-rtmp with a stream
//! key, a UDP socket), the as-run log records the restart and keeps every
//! entry written before the kill. Every output captured on the way (daemon
//! logs, every simulcastctl answer) is searched for the two secrets.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, NginxRtmp, SrtReceiver, UdpCapture, peer_port};

const PASSPHRASE: &str = "restart-pp-9d1c-tashkent";
const STREAM_KEY: &str = "restart-sk-5b7e-ulaanbaatar";

/// The daemon on `grpc` (bound by the test, kept across restarts), its log
/// (info level, the default) appended to `log`.
fn start_daemon(db: &Path, config: &Path, grpc: &std::net::TcpListener, log: &Path) -> Daemon {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let args = [OsStr::new("--db"), db.as_os_str(), OsStr::new("--config"), config.as_os_str()];
    Daemon::serve(grpc, &args, Stdio::from(log))
}

/// Runs simulcastctl; every output is kept for the secret search.
struct Ctl {
    addr: String,
    seen: Vec<String>,
}

impl Ctl {
    /// Its output; a call still waiting after 30 s is killed (coreutils'
    /// `timeout`), so a daemon that never answers fails the test.
    fn output(&self, token: &str, args: &[&str]) -> std::process::Output {
        Command::new("timeout")
            .args(["30", env!("CARGO_BIN_EXE_simulcastctl")])
            .args(args)
            .env("SIMULCAST_ADDR", &self.addr)
            .env("SIMULCAST_TOKEN", token)
            .output()
            .expect("run simulcastctl")
    }

    fn run(&mut self, token: &str, args: &[&str]) -> String {
        let out = self.output(token, args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        self.seen.push(stdout.clone() + &stderr);
        assert!(out.status.success(), "simulcastctl {args:?} failed: {stderr}");
        stdout
    }

    /// Runs simulcastctl expecting a refusal; returns what it printed.
    fn fails(&mut self, token: &str, args: &[&str]) -> String {
        let out = self.output(token, args);
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "simulcastctl {args:?} was accepted: {text}");
        text
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
    let srt_port = peer_port();
    let srt = SrtReceiver::start_with_passphrase(srt_port, PASSPHRASE);
    let nginx = NginxRtmp::start();
    let rtmp_port = nginx.port;
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
    let grpc = common::tcp_listener();
    let port = grpc.local_addr().unwrap().port();
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

    let mut daemon = start_daemon(&db, &config, &grpc, &log);
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
    // What the partners had once the last bytes in flight landed.
    let (srt_at_kill, rtmp_at_kill, udp_at_kill) =
        settled(|| (srt.bytes(), nginx.recorded_bytes(STREAM_KEY), udp.bytes()), Duration::from_secs(5));

    let _daemon = start_daemon(&db, &config, &grpc, &log);
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

/// One UDP partner, a test source, small pictures.
fn one_udp_partner(dir: &Path, udp_port: u16) -> std::path::PathBuf {
    let config = dir.join("one.toml");
    std::fs::write(
        &config,
        format!(
            "[event]\ntitle = \"Restart\"\n[source]\ntype = \"test\"\n[program]\nwidth = 320\nheight = 180\nframerate = 25\nvideo_kbps = 400\ngop = 25\n\
             [[channels]]\nid = \"kr-kbs\"\nname = \"KBS\"\ncountry = \"KR\"\ntimezone = \"Asia/Seoul\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{udp_port}\" }}\n"
        ),
    )
    .unwrap();
    config
}

/// Admin and operator tokens made in `db` before the daemon starts.
fn tokens(ctl: &mut Ctl, db: &Path) -> (String, String) {
    let db = db.to_str().unwrap();
    let mut make = |role: &str, name: &str| {
        ctl.json("", &["token", "create", "--role", role, "--name", name, "--db", db])["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    (make("admin", "night-admin"), make("operator", "night-shift"))
}

#[test]
fn a_t0_past_year_9999_is_refused_naming_its_field_and_an_unreadable_stored_event_costs_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("simulcast.db");
    let log = dir.path().join("simulcastd.log");
    let udp = UdpCapture::start();
    let config = one_udp_partner(dir.path(), udp.port);
    let (grpc, metrics_socket) = (common::tcp_listener(), common::tcp_listener());
    let port = grpc.local_addr().unwrap().port();
    let mut ctl = Ctl { addr: format!("http://127.0.0.1:{port}"), seen: Vec::new() };
    let (admin, op) = tokens(&mut ctl, &db);
    let metrics = metrics_socket.local_addr().unwrap().to_string();
    let start = |log: &Path| {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let args = [OsStr::new("--db"), db.as_os_str(), OsStr::new("--config"), config.as_os_str()];
        let mut daemon = Daemon::serve_on(&[("grpc", &grpc), ("metrics", &metrics_socket)], &args, Stdio::from(log));
        common::wait_answering(&mut daemon.0, grpc.local_addr().unwrap());
        daemon
    };
    let mut daemon = start(&log);

    // Every way past the last instant a timestamp can carry is refused,
    // naming the field that goes there.
    fn schedule<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["events", "schedule", "--title", "Far"];
        args.extend_from_slice(extra);
        args
    }
    for (extra, field) in [
        (&["--local", "9999-12-31T23:00", "--tz", "America/New_York", "--duration", "1h"][..], "on_air"),
        (&["--local", "+10000-01-01T00:00", "--tz", "UTC", "--duration", "1h"][..], "on_air"),
        (&["--at", "9999-12-31T23:00:00Z", "--duration", "2h"][..], "duration"),
        (&["--at", "9999-12-31T22:00:00Z", "--duration", "1h", "--postroll", "2h"][..], "postroll"),
    ] {
        let said = ctl.fails(&admin, &schedule(extra));
        assert!(said.contains(field) && said.contains("out of range"), "{extra:?}: {said}");
    }
    let far = ctl.json(&admin, &schedule(&["--at", "9999-12-31T20:00:00Z", "--duration", "1h"]));
    let far = far[0]["id"].as_str().unwrap().to_owned();
    let said = ctl.fails(&op, &["events", "extend", &far, "--by", "4h"]);
    assert!(said.contains("by") && said.contains("out of range"), "{said}");

    // A live event, and a row this version cannot read (written by hand,
    // as an older version wrote far-future rows).
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let live = ctl.json(&admin, &schedule(&["--at", &at, "--duration", "2h"]));
    let live = live[0]["id"].as_str().unwrap().to_owned();
    ctl.run(&op, &["events", "arm", &live]);
    ctl.run(&op, &["events", "take", &live]);
    ctl.wait_legs_on_air(&op, &live, 1);
    wait_growth("udp", || udp.bytes(), 50_000);
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "INSERT INTO events (id, title, on_air_utc, duration_ms, preroll_ms, postroll_ms, channel_ids, state, \
             ended_utc, created_utc, max_delay_ms) VALUES ('ev-00000000dead', 'Far', '+10000-01-01T04:00:00.000Z', \
             3600000, 60000, 30000, 'kr-kbs', 'SCHEDULED', NULL, '2026-12-01T00:00:00.000Z', 0)",
            [],
        )
        .unwrap();
    }
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();

    let _daemon = start(&log);
    let list = ctl.json(&op, &["events", "list"]);
    let ids: Vec<&str> = list.as_array().unwrap().iter().filter_map(|e| e["id"].as_str()).collect();
    assert!(ids.contains(&live.as_str()) && ids.contains(&far.as_str()), "good events lost: {list:#}");
    assert!(!ids.contains(&"ev-00000000dead"), "{list:#}");
    assert_eq!(ctl.json(&op, &["events", "get", &live])[0]["state"], "ON_AIR");
    ctl.wait_legs_on_air(&op, &live, 1);
    wait_growth("udp after the restart", || udp.bytes(), 100_000);

    // Loudly reported: the log, the row's own as-run entry, a metric.
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("A stored event cannot be read") && logs.contains("ev-00000000dead"), "{logs}");
    let said = ctl.fails(&op, &["events", "get", "ev-00000000dead"]);
    assert!(said.contains("cannot be read") && said.contains("+10000-01-01"), "{said}");
    let poison = ctl.json(&op, &["asrun", "ev-00000000dead"]);
    assert!(poison.as_array().unwrap().iter().any(|e| e["kind"] == "event-unreadable"), "{poison:#}");
    let page = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&metrics).expect("metrics port");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n").unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        page
    };
    assert!(page.contains("simulcast_store_unreadable_events{daemon=\"simulcastd\"} 1"), "{page}");
}

/// `simulcastd serve ARGS` expected to refuse to start: its exit and what
/// it printed, within 20 s.
fn refused_start(args: &[&OsStr]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_simulcastd"))
        .arg("serve")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start simulcastd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("simulcastd {args:?} started; it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn one_store_one_daemon_and_a_start_that_fails_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("simulcast.db");
    let log = dir.path().join("simulcastd.log");
    let udp = UdpCapture::start();
    let config = one_udp_partner(dir.path(), udp.port);
    let grpc = common::tcp_listener();
    let port = grpc.local_addr().unwrap().port();
    let mut ctl = Ctl { addr: format!("http://127.0.0.1:{port}"), seen: Vec::new() };
    let (admin, op) = tokens(&mut ctl, &db);
    let mut daemon = start_daemon(&db, &config, &grpc, &log);
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ev = ctl.json(&admin, &["events", "schedule", "--title", "Final", "--at", &at, "--duration", "2h"]);
    let id = ev[0]["id"].as_str().unwrap().to_owned();
    ctl.run(&op, &["events", "arm", &id]);
    ctl.run(&op, &["events", "take", &id]);
    ctl.wait_legs_on_air(&op, &id, 1);
    wait_growth("udp", || udp.bytes(), 50_000);

    // A second daemon on the same store, on another port (any free one),
    // is refused before it resumes anything: the partner keeps one copy.
    let other = "127.0.0.1:0".to_owned();
    let base = [OsStr::new("--db"), db.as_os_str(), OsStr::new("--config"), config.as_os_str()];
    let said = refused_start(&[&base[..], &[OsStr::new("--listen"), OsStr::new(&other)]].concat());
    assert!(said.contains("in use by another simulcastd") && said.contains(&daemon.0.id().to_string()), "{said}");
    let asrun_kinds = |ctl: &mut Ctl| -> Vec<String> {
        let all = ctl.json(&op, &["asrun", &id]);
        all.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
    };
    let kinds = asrun_kinds(&mut ctl);
    assert!(!kinds.iter().any(|k| k == "daemon-restarted"), "{kinds:?}");
    let rate = |udp: &UdpCapture| {
        let b = udp.bytes();
        std::thread::sleep(Duration::from_secs(2));
        (udp.bytes() - b) / 2
    };
    let one_copy = rate(&udp);

    // Killed, its ports taken by someone else: each start fails without a
    // word in the as-run log, and the next good start resumes the event.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    let before = asrun_kinds_offline(&db, &id);
    // The test's own socket (kept across restarts) takes the port.
    let said =
        refused_start(&[&base[..], &[OsStr::new("--listen"), OsStr::new(&format!("127.0.0.1:{port}"))]].concat());
    assert!(said.contains(&format!("binding 127.0.0.1:{port}")), "{said}");
    let metrics_squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = metrics_squatter.local_addr().unwrap().to_string();
    let said = refused_start(
        &[&base[..], &[OsStr::new("--listen"), OsStr::new(&other), OsStr::new("--metrics-listen"), OsStr::new(&busy)]]
            .concat(),
    );
    assert!(said.contains("binding the metrics port"), "{said}");
    // Metrics off loopback need the same permission as the gRPC port.
    let said = refused_start(
        &[
            &base[..],
            &[OsStr::new("--listen"), OsStr::new(&other), OsStr::new("--metrics-listen"), OsStr::new("0.0.0.0:0")],
        ]
        .concat(),
    );
    assert!(said.contains("refusing to serve metrics on 0.0.0.0:0"), "{said}");
    assert_eq!(asrun_kinds_offline(&db, &id), before, "a failed start wrote into the live event's as-run log");

    let _daemon = start_daemon(&db, &config, &grpc, &log);
    ctl.wait_legs_on_air(&op, &id, 1);
    wait_growth("udp after the restart", || udp.bytes(), 50_000);
    let kinds = asrun_kinds(&mut ctl);
    assert_eq!(kinds.iter().filter(|k| *k == "daemon-restarted").count(), 1, "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "daemon-stopped"), "{kinds:?}");
    let after = rate(&udp);
    assert!(after < one_copy * 3 / 2, "two copies? {after} B/s now, {one_copy} B/s with one daemon");
}

/// The as-run kinds of `id`, read from the store file itself.
fn asrun_kinds_offline(db: &Path, id: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT kind FROM asrun WHERE event_id = ?1 ORDER BY seq").unwrap();
    stmt.query_map([id], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

/// SIGTERM in the middle of an Arm with 12 legs (issue 16): the daemon
/// ends cleanly within 5 s, exit code 0, having closed every leg (its log
/// says the relay stopped and the store took the daemon-stopped entry), and
/// nothing panicked on the way.
#[test]
fn sigterm_during_an_arm_with_12_legs_ends_the_daemon_cleanly_within_5_s() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("simulcast.db");
    let log = dir.path().join("simulcastd.log");
    // Twelve partners' ports, bound for the whole test and never read.
    let ports: Vec<std::net::UdpSocket> =
        (0..12).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    let mut text = String::from(
        "[event]\ntitle = \"Twelve\"\n[source]\ntype = \"test\"\n\
         [program]\nwidth = 320\nheight = 180\nframerate = 25\nvideo_kbps = 400\ngop = 25\n",
    );
    for (i, p) in ports.iter().enumerate() {
        text += &format!(
            "[[channels]]\nid = \"leg-{i:02}\"\nname = \"Leg {i}\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://{}\" }}\n",
            p.local_addr().unwrap()
        );
    }
    let config = dir.path().join("twelve.toml");
    std::fs::write(&config, text).unwrap();
    let grpc = common::tcp_listener();
    let port = grpc.local_addr().unwrap().port();
    let mut ctl = Ctl { addr: format!("http://127.0.0.1:{port}"), seen: Vec::new() };
    let (admin, op) = tokens(&mut ctl, &db);
    let mut daemon = start_daemon(&db, &config, &grpc, &log);
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ev = ctl.json(&admin, &["events", "schedule", "--title", "Twelve", "--at", &at, "--duration", "1h"]);
    let id = ev[0]["id"].as_str().unwrap().to_owned();

    // The Arm is sent, and the daemon told to stop while its 12 legs come up.
    let arm = Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
        .args(["events", "arm", &id])
        .env("SIMULCAST_ADDR", &ctl.addr)
        .env("SIMULCAST_TOKEN", &op)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("simulcastctl arm");
    let armed = Instant::now();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    while !log_text().contains("Relay started.") {
        assert!(armed.elapsed() < Duration::from_secs(10), "the Arm never started the relay:\n{}", log_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    common::terminate(&daemon.0);
    let told = Instant::now();
    let status = loop {
        if let Some(s) = daemon.0.try_wait().expect("wait") {
            break s;
        }
        assert!(told.elapsed() < Duration::from_secs(5), "simulcastd still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = told.elapsed();
    let mut arm = common::ChildGuard(arm);
    let _ = arm.0.wait();
    let said = log_text();
    eprintln!("simulcastd ended {took:?} after SIGTERM with {status}");
    assert!(status.success(), "simulcastd exited with {status}:\n{said}");
    assert!(said.contains("Relay stopped."), "the relay was not stopped:\n{said}");
    assert!(!said.contains("panicked") && !said.contains("did not end within"), "{said}");
    let kinds = asrun_kinds_offline(&db, &id);
    assert!(kinds.iter().any(|k| k == "daemon-stopped"), "{kinds:?}");
    drop(ports);
}

/// Socket activation (`deploy/systemd/simulcastd.socket`): simulcastd
/// serves gRPC and metrics on sockets handed over as systemd does (the
/// test plays systemd and keeps them), in place of its flags' addresses.
/// Killed and started again, it loses no client: one that asks while no
/// daemon runs waits in the socket's backlog and is answered by the next.
/// A socket that is not a listening one is refused, naming it.
#[test]
fn a_daemon_on_sockets_handed_over_restarts_without_refusing_a_client() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("simulcast.db");
    let log = dir.path().join("simulcastd.log");
    let udp = UdpCapture::start();
    let config = one_udp_partner(dir.path(), udp.port);
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc_addr = grpc.local_addr().unwrap().to_string();
    let mut ctl = Ctl { addr: format!("http://{grpc_addr}"), seen: Vec::new() };
    let (admin, op) = tokens(&mut ctl, &db);
    let log_to = || Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap());
    // --listen names the handed-over socket's own address: bound again,
    // it would be in use.
    let args = [
        OsStr::new("--db"),
        db.as_os_str(),
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--listen"),
        OsStr::new(&grpc_addr),
    ];
    let sockets: [(&str, &dyn AsRawFd); 2] = [("grpc", &grpc), ("metrics", &metrics)];
    let mut first = Daemon::serve_on(&sockets, &args, log_to());
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ev = ctl.json(&admin, &["events", "schedule", "--title", "Final", "--at", &at, "--duration", "2h"]);
    let id = ev[0]["id"].as_str().unwrap().to_owned();
    let scrape = || {
        use std::io::{Read, Write};
        let addr = metrics.local_addr().unwrap();
        let mut s = std::net::TcpStream::connect(addr).expect("metrics port");
        write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        page
    };
    // The metrics read the published snapshot: the event is in it once
    // its change is published (within 50 ms of the answer).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = scrape();
        if page.contains("simulcast_event_state{") {
            break;
        }
        assert!(Instant::now() < deadline, "{page}");
        std::thread::sleep(Duration::from_millis(20));
    }

    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let asking = {
        let (addr, op) = (ctl.addr.clone(), op.clone());
        std::thread::spawn(move || Ctl { addr, seen: Vec::new() }.json(&op, &["events", "list"]))
    };
    std::thread::sleep(Duration::from_secs(1));
    assert!(!asking.is_finished(), "a client was answered (refused) while no daemon ran");
    let _second = Daemon::serve_on(&sockets, &args, log_to());
    let listed = asking.join().expect("the client asking between the daemons");
    assert!(listed.as_array().unwrap().iter().any(|e| e["id"] == id), "{listed:#}");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logs.matches("Listening on a socket systemd handed over").count(), 4, "{logs}");
    drop(_second);

    // A socket that does not listen is refused, naming what it was given as.
    let not_listening = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bad = Daemon::serve_on(&[("grpc", &not_listening)], &args, Stdio::piped());
    let status = bad.0.wait().unwrap();
    let mut said = String::new();
    std::io::Read::read_to_string(bad.0.stderr.as_mut().unwrap(), &mut said).unwrap();
    assert!(!status.success());
    assert!(said.contains("the socket systemd handed over as grpc is not a listening stream socket"), "{said}");
}

/// `read()` once it has stopped changing (the same for 200 ms), within
/// `deadline`.
fn settled<T: PartialEq + Copy + std::fmt::Debug>(read: impl Fn() -> T, deadline: Duration) -> T {
    let end = Instant::now() + deadline;
    let mut last = read();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = read();
        if now == last {
            return now;
        }
        assert!(Instant::now() < end, "still changing after {deadline:?}: {now:?}");
        last = now;
    }
}
