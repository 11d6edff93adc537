//! Alerts that push, end to end: the real daemon POSTs to a webhook
//! receiver nobody here wrote (Python's `http.server`, which checks each
//! signature with Python's own `hmac`), retries while it answers 500,
//! keeps what it has not delivered across a SIGKILL, and grades a leg
//! down by how close its partner's air time is.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, peer_port, tcp_listener};

const SECRET: &str = "webhook-secret-3f9a-almaty-final";

/// The receiver: answers each POST with the status held in `answer`, and
/// writes one JSON line per request to `log`, with whether its signature
/// is the HMAC-SHA256 of the body under the secret.
const RECEIVER: &str = r#"
import hashlib, hmac, http.server, json, socket, sys
log_path, answer_path, secret = sys.argv[1], sys.argv[2], sys.argv[3].encode()
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        got = self.headers.get("X-Simulcast-Signature-256", "")
        status = int(open(answer_path).read().strip())
        with open(log_path, "a") as log:
            log.write(json.dumps({
                "path": self.path, "key": self.headers.get("Idempotency-Key"),
                "attempt": self.headers.get("X-Simulcast-Delivery-Attempt"),
                "content_type": self.headers.get("Content-Type"),
                "signature_ok": hmac.compare_digest(want, got), "answered": status,
                "body": body.decode(),
            }) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
# The test bound the socket and handed it over as descriptor 3.
server = http.server.HTTPServer(("127.0.0.1", 0), Hook, bind_and_activate=False)
server.socket.close()
server.socket = socket.socket(fileno=3)
server.serve_forever()
"#;

struct Receiver {
    child: Child,
    log: PathBuf,
    answer: PathBuf,
    port: u16,
}

impl Receiver {
    fn start(dir: &Path) -> Self {
        common::require("python3", "python3");
        let (script, log, answer) = (dir.join("receiver.py"), dir.join("hooks.jsonl"), dir.join("answer"));
        std::fs::write(&script, RECEIVER).unwrap();
        std::fs::write(&answer, "500").unwrap();
        // Bound here and handed over: it listens before python starts.
        let socket = common::tcp_listener();
        let port = socket.local_addr().unwrap().port();
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args([log.display().to_string(), answer.display().to_string(), SECRET.to_owned()])
            .stdout(Stdio::null());
        common::hand_over(&mut cmd, vec![std::os::fd::AsRawFd::as_raw_fd(&socket)]);
        let child = cmd.spawn().expect("python3");
        Self { child, log, answer, port }
    }

    fn answer(&self, status: u16) {
        std::fs::write(&self.answer, status.to_string()).unwrap();
    }

    /// Every request so far.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("receiver log line"))
            .collect()
    }

    /// Waits until `pred` holds for the requests; returns them.
    fn wait(&self, what: &str, secs: u64, pred: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.requests();
            if pred(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "{what}: the receiver got {r:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The alert a request carried.
fn alert(r: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(r["body"].as_str().unwrap()).unwrap()
}

/// A daemon config: a small test source, one RTMP partner whose server is
/// down (its port refuses), alerts to the receiver with the secret in a
/// file.
fn setup(dir: &Path, hook_port: u16) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let secret_file = dir.join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let refused = peer_port();
    let config = dir.join("final.toml");
    std::fs::write(
        &config,
        format!(
            "[event]\ntitle = \"Silk Way Star: grand final\"\n\
             [source]\ntype = \"test\"\n[program]\nwidth = 320\nheight = 180\nframerate = 25\nvideo_kbps = 400\ngop = 25\n\
             [alerts]\n\
             [[alerts.webhooks]]\nname = \"oncall\"\nurl = \"http://127.0.0.1:{hook_port}/simulcast/alerts\"\n\
             secret_file = \"{}\"\n\
             [[channels]]\nid = \"kz-khabar\"\nname = \"Khabar\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
             ingest = {{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{refused}/live\", stream_key = \"k\" }}\n",
            secret_file.display()
        ),
    )
    .unwrap();
    config
}

fn ctl(port: u16, token: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
        .args(args)
        .env("SIMULCAST_ADDR", format!("http://127.0.0.1:{port}"))
        .env("SIMULCAST_TOKEN", token)
        .output()
        .expect("simulcastctl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "simulcastctl {args:?}: {}{text}", String::from_utf8_lossy(&out.stderr));
    text
}

fn ctl_json(port: u16, token: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ctl(port, token, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn token(db: &Path, role: &str) -> String {
    let v = ctl_json(
        0,
        "",
        &["token", "create", "--role", role, "--name", &format!("{role}-1"), "--db", db.to_str().unwrap()],
    );
    v["token"].as_str().unwrap().to_owned()
}

fn daemon(db: &Path, config: &Path, grpc: &std::net::TcpListener) -> Daemon {
    let args = [OsStr::new("--db"), db.as_os_str(), OsStr::new("--config"), config.as_os_str()];
    Daemon::serve(grpc, &args, Stdio::null())
}

#[test]
fn an_alert_is_signed_retried_while_refused_and_delivered_after_a_kill_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(dir.path());
    let config = setup(dir.path(), hook.port);
    let db = dir.path().join("simulcast.db");
    let admin = token(&db, "admin");
    let grpc = tcp_listener();
    let port = grpc.local_addr().unwrap().port();
    let mut d = daemon(&db, &config, &grpc);
    // An event armed an hour before air: live when the daemon is killed.
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ev =
        ctl_json(port, &admin, &["events", "schedule", "--title", "Silk Way Star", "--at", &at, "--duration", "2h"]);
    let event = ev[0]["id"].as_str().unwrap().to_owned();
    ctl(port, &admin, &["events", "arm", &event]);

    let sent = ctl_json(port, &admin, &["alerts", "test"]);
    let key = sent["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("alr-"), "{sent:#}");
    // Refused twice (500), one second apart.
    let refused = hook.wait("two refused attempts", 20, |r| r.iter().filter(|x| x["key"] == key.as_str()).count() >= 2);
    let mine: Vec<&serde_json::Value> = refused.iter().filter(|x| x["key"] == key.as_str()).collect();
    assert_eq!((mine[0]["attempt"].as_str(), mine[1]["attempt"].as_str()), (Some("1"), Some("2")));
    for r in &mine {
        assert_eq!(r["signature_ok"], true, "bad signature: {r:#}");
        assert_eq!(r["answered"], 500);
        assert_eq!(r["path"], "/simulcast/alerts");
        assert_eq!(r["content_type"], "application/json");
        assert_eq!(r["body"], mine[0]["body"], "a retry must send the same bytes");
    }
    let body = alert(mine[0]);
    assert_eq!((body["kind"].as_str(), body["severity"].as_str()), (Some("test"), Some("info")));
    assert_eq!(body["idempotency_key"], key.as_str());
    let listed = ctl_json(port, &admin, &["alerts", "list"]);
    let row = listed.as_array().unwrap().iter().find(|a| a["key"] == key.as_str()).expect("listed");
    assert_eq!(row["deliveries"][0]["state"], "pending", "{row:#}");
    assert!(row["deliveries"][0]["last_error"].as_str().unwrap().contains("500"), "{row:#}");

    // Killed before the webhook took it; the next daemon delivers it.
    d.0.kill().unwrap();
    d.0.wait().unwrap();
    let before_kill = hook.requests().iter().filter(|x| x["key"] == key.as_str()).count();
    hook.answer(200);
    let _d = daemon(&db, &config, &grpc);
    let all = hook.wait("the delivery after the restart", 30, |r| {
        r.iter().any(|x| x["key"] == key.as_str() && x["answered"] == 200)
    });
    let mine: Vec<&serde_json::Value> = all.iter().filter(|x| x["key"] == key.as_str()).collect();
    let last = mine.last().unwrap();
    assert_eq!(last["signature_ok"], true);
    assert_eq!(last["body"], mine[0]["body"], "the alert changed across the restart");
    assert_eq!(last["attempt"].as_str(), Some(mine.len().to_string().as_str()));
    assert!(mine.len() > before_kill, "{mine:#?}");
    // Delivered once: nothing more arrives for it.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hook.requests().iter().filter(|x| x["key"] == key.as_str()).count(), mine.len());
    let listed = ctl_json(port, &admin, &["alerts", "list"]);
    let row = listed.as_array().unwrap().iter().find(|a| a["key"] == key.as_str()).expect("listed");
    assert_eq!(row["deliveries"][0]["state"], "delivered", "{row:#}");
    assert_eq!(row["deliveries"][0]["attempts"], mine.len() as u64);
    let table = ctl(port, &admin, &["alerts", "list"]);
    assert!(table.contains("oncall: delivered") && table.contains("INFO"), "{table}");
    // The restart itself, mid-event, was alerted: a ticket an hour before air.
    let restarted = hook.wait("the restart's alert", 10, |r| {
        r.iter().any(|x| alert(x)["kind"] == "daemon-restarted" && alert(x)["event"]["id"] == event.as_str())
    });
    let a = restarted.iter().map(alert).find(|a| a["kind"] == "daemon-restarted").unwrap();
    assert_eq!(a["severity"], "ticket", "{a:#}");
    assert_eq!(a["event"]["state"], "ARMED", "{a:#}");
    ctl(port, &admin, &["events", "abort", &event]);
}

#[test]
fn a_leg_down_two_hours_before_air_is_a_ticket_and_five_minutes_before_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Receiver::start(dir.path());
    hook.answer(200);
    let config = setup(dir.path(), hook.port);
    let db = dir.path().join("simulcast.db");
    let (admin, op) = (token(&db, "admin"), token(&db, "operator"));
    let grpc = tcp_listener();
    let port = grpc.local_addr().unwrap().port();
    let _d = daemon(&db, &config, &grpc);

    let schedule = |in_min: i64| {
        let at =
            (chrono::Utc::now() + chrono::Duration::minutes(in_min)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let ev = ctl_json(
            port,
            &admin,
            &["events", "schedule", "--title", "Silk Way Star", "--at", &at, "--duration", "2h"],
        );
        ev[0]["id"].as_str().unwrap().to_owned()
    };
    let alert_of = |event: &str, kind: &str| {
        let r = hook.wait(&format!("{kind} of {event}"), 30, |r| {
            r.iter().any(|x| alert(x)["event"]["id"] == event && alert(x)["kind"] == kind)
        });
        let hit = r.iter().find(|x| alert(x)["event"]["id"] == event && alert(x)["kind"] == kind).unwrap();
        assert_eq!(hit["signature_ok"], true);
        alert(hit)
    };

    // T-2h: the partner's server is down; someone should look, nobody wakes.
    let early = schedule(120);
    ctl(port, &op, &["events", "arm", &early]);
    let a = alert_of(&early, "leg-unreachable");
    assert_eq!(a["severity"], "ticket", "{a:#}");
    assert_eq!(a["channel"]["id"], "kz-khabar");
    assert_eq!(a["channel"]["country"], "KZ");
    assert_eq!(a["channel"]["timezone"], "Asia/Almaty");
    let local = a["channel"]["local_air_time"].as_str().unwrap();
    let local = chrono::DateTime::parse_from_rfc3339(local).unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339(a["event"]["t0_utc"].as_str().unwrap()).unwrap();
    assert_eq!(local, t0, "the local air time is T0");
    assert_eq!(local.offset().local_minus_utc(), 5 * 3600, "Almaty is UTC+5: {local}");
    let mins = a["channel"]["minutes_to_air"].as_f64().unwrap();
    assert!((115.0..=120.0).contains(&mins), "{a:#}");
    assert!(a["summary"].as_str().unwrap().starts_with("TICKET: leg cannot reach its partner"), "{a:#}");
    ctl(port, &op, &["events", "abort", &early]);

    // T-5min: the same trouble pages, and the leg is reported not on air.
    let near = schedule(5);
    ctl(port, &op, &["events", "arm", &near]);
    let a = alert_of(&near, "leg-unreachable");
    assert_eq!(a["severity"], "page", "{a:#}");
    let a = alert_of(&near, "leg-not-on-air");
    assert_eq!(a["severity"], "page", "{a:#}");
    assert!(a["detail"].as_str().unwrap().contains("before its air time"), "{a:#}");
    // Two hours out, the leg was not yet late.
    assert!(
        !hook
            .requests()
            .iter()
            .any(|x| alert(x)["event"]["id"] == early.as_str() && alert(x)["kind"] == "leg-not-on-air")
    );
    let listed = ctl(port, &op, &["alerts", "list"]);
    assert!(listed.contains("PAGE") && listed.contains("TICKET"), "{listed}");
    ctl(port, &op, &["events", "abort", &near]);
}
