//! Observability against the real thing: `/metrics` scraped during a run
//! with real receivers (srt-live-transmit with a passphrase, nginx-rtmp with
//! a stream key, a UDP socket) and checked by `promtool check metrics`
//! (Debian's prometheus package); byte counters against what the receivers
//! got; `/healthz` against gRPC health; and the real daemon, logging JSON
//! at debug level with chatty GStreamer categories, never printing a secret
//! in a log line, a metric or an export.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{ApiServer, authed, http_get, sample};
use common::*;
use simulcast::api::auth::Role;
use simulcast::config;
use simulcast::coordinator::Options;
use simulcast::proto::{self, event_service_client::EventServiceClient, monitor_service_client::MonitorServiceClient};

const PASSPHRASE: &str = "observe-pp-4f2a-almaty";
const STREAM_KEY: &str = "observe-sk-81c3-bishkek";

/// A small programme, to keep the machine's two cores free.
const SMALL: &str = "[event]\ntitle = \"Silk Way Star: grand final\"\n[source]\ntype = \"test\"\n\
    [program]\nwidth = 320\nheight = 180\nframerate = 25\nvideo_kbps = 600\ngop = 25\n";

fn schedule_in(seconds: i64) -> proto::ScheduleEventRequest {
    proto::ScheduleEventRequest {
        title: "Silk Way Star: grand final".into(),
        on_air: Some(proto::schedule_event_request::OnAir::OnAirUtc(simulcast::api::convert::timestamp(
            chrono::Utc::now() + chrono::Duration::seconds(seconds),
        ))),
        duration: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
        preroll: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
        postroll: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        channel_ids: vec![],
    }
}

fn promtool_check(page: &str) {
    require("promtool", "prometheus");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(page.as_bytes()).expect("feed promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics failed ({}):\n{}{}\n--- page ---\n{page}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_during_a_real_run_pass_promtool_and_match_the_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let mut srt = SrtReceiver::start_with_passphrase(peer_port(), PASSPHRASE);
    let mut nginx = NginxRtmp::start();
    let udp = UdpCapture::start();
    let mut options = Options::from_config(&config::parse(SMALL).unwrap());
    options.recordings = dir.path().join("rec");
    let server = ApiServer::start_with(&dir.path().join("s.db"), options).await;
    common::server::create_three_partners(&server, (srt.port, Some(PASSPHRASE)), (nginx.port, STREAM_KEY), udp.port)
        .await;
    let (admin, obs) = (server.token(Role::Admin).to_owned(), server.token(Role::Observer).to_owned());
    let mut e = EventServiceClient::new(server.transport().await);
    let ev = e.schedule_event(authed(schedule_in(3), &admin)).await.expect("schedule").into_inner();
    // One refused call, to see a code other than OK counted.
    let missing = proto::EventRef { event_id: "ev-000000000000".into() };
    assert_eq!(e.get_event(authed(missing, &obs)).await.unwrap_err().code(), tonic::Code::NotFound);

    let mut m = MonitorServiceClient::new(server.transport().await);
    let on_air = proto::LegState::OnAir as i32;
    common::server::watch_until(&mut m, &ev.id, &obs, Duration::from_secs(30), |u| {
        u.event_state == proto::EventState::OnAir as i32
            && u.program.as_ref().is_some_and(|p| p.mode == proto::ProgramMode::Transcode as i32)
            && u.legs.len() == 3
            && u.legs.iter().all(|l| l.state == on_air)
    })
    .await;
    // nginx's recording of a publish comes out about 50 kB short of what
    // rtmp2sink was handed (measured: constant, whatever the length): run
    // long enough for that to stay well inside 5 %.
    tokio::time::sleep(Duration::from_secs(14)).await;

    let (code, page) = http_get(&server.http_addr, "/metrics").await;
    // Each receiver read right after the scrape.
    let got = [
        ("kz-jibek-joly", srt.bytes() as f64),
        ("kg-ktrk", nginx.recorded_bytes(STREAM_KEY) as f64),
        ("mn-mnb", udp.bytes() as f64),
    ];
    assert_eq!(code, 200, "{page}");
    promtool_check(&page);
    for (id, received) in got {
        let counted = sample(&page, "simulcast_leg_bytes_sent_total", &format!("channel=\"{id}\"")).expect(id);
        common::server::within_5_percent(id, counted as u64, received as u64);
        let state = sample(&page, "simulcast_leg_state", &format!("channel=\"{id}\",state=\"ON_AIR\""));
        assert_eq!(state, Some(1.0), "{id} not ON_AIR in the metrics");
        assert_eq!(sample(&page, "simulcast_leg_reconnects_total", &format!("channel=\"{id}\"")), Some(0.0));
        let t0 = sample(&page, "simulcast_leg_t0_error_seconds", &format!("channel=\"{id}\"")).expect("T0 error");
        assert!(t0.abs() < 1.0, "{id}: T0 error {t0} s");
        assert!(sample(&page, "simulcast_leg_bitrate_bytes_per_second", &format!("channel=\"{id}\"")).unwrap() > 10e3);
    }
    let rtt = sample(&page, "simulcast_leg_srt_rtt_seconds", "channel=\"kz-jibek-joly\"").expect("SRT RTT");
    assert!((0.0..1.0).contains(&rtt), "{rtt}");
    assert!(sample(&page, "simulcast_leg_srt_packets_sent_total", "channel=\"kz-jibek-joly\"").unwrap() > 100.0);
    assert_eq!(sample(&page, "simulcast_event_state", &format!("event=\"{}\",state=\"ON_AIR\"", ev.id)), Some(1.0));
    assert_eq!(sample(&page, "simulcast_event_state", &format!("event=\"{}\",state=\"ARMED\"", ev.id)), Some(0.0));
    let to_t0 = sample(&page, "simulcast_event_seconds_to_t0", &format!("event=\"{}\"", ev.id)).unwrap();
    assert!(to_t0 < -13.0, "{to_t0}");
    assert_eq!(sample(&page, "simulcast_source_in_use", "source=\"primary\""), Some(1.0));
    let program = "mode=\"transcode\",video_codec=\"h264\",profile=\"constrained-baseline\",size=\"320x180\",\
                   scan=\"progressive\",framerate=\"25\",audio=\"aac:und\"";
    assert_eq!(sample(&page, "simulcast_program_info", program), Some(1.0), "{page}");
    assert_eq!(sample(&page, "simulcast_source_in_use", "source=\"slate\""), Some(0.0));
    assert_eq!(sample(&page, "simulcast_source_healthy", "feed=\"primary\""), Some(1.0));
    assert_eq!(sample(&page, "simulcast_healthy", "daemon=\"simulcastd\""), Some(1.0));
    let rpc = |name: &str, code: &str| format!("rpc=\"simulcast.v1.{name}\",code=\"{code}\"");
    assert_eq!(sample(&page, "simulcast_grpc_requests_total", &rpc("EventService/ScheduleEvent", "OK")), Some(1.0));
    assert_eq!(sample(&page, "simulcast_grpc_requests_total", &rpc("EventService/GetEvent", "NOT_FOUND")), Some(1.0));
    assert_eq!(sample(&page, "simulcast_grpc_requests_total", &rpc("ChannelService/CreateChannel", "OK")), Some(3.0));
    let count =
        sample(&page, "simulcast_grpc_request_duration_seconds_count", &rpc("EventService/GetEvent", "NOT_FOUND"));
    assert_eq!(count, Some(1.0));
    assert!(!page.contains(PASSPHRASE) && !page.contains(STREAM_KEY), "a secret in /metrics");
    // The shipped alert rules and dashboard (deploy/) query only families
    // the daemon exports.
    // (Cluster mode's families exist only with --cluster: tests/cluster.rs
    // checks those.)
    for name in common::monitored_metrics().into_iter().filter(|n| !n.starts_with("simulcast_cluster_")) {
        let family = ["_total", "_count", "_sum", "_bucket"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
        assert!(
            page.contains(&format!("# TYPE {name} ")) || page.contains(&format!("# TYPE {family} ")),
            "deploy/ queries {name}, which /metrics does not export"
        );
    }

    server.stop().await;
    srt.stop();
    nginx.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_what_grpc_health_says() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    let mut broken = common::server::default_options();
    broken.media_problem = Some("no element x264enc".into());
    for (options, want) in [(common::server::default_options(), true), (broken, false)] {
        let db = dir.path().join(format!("{want}.db"));
        let server = ApiServer::start_with(&db, options).await;
        let mut h = HealthClient::new(server.transport().await);
        // Health is set by a task following the coordinator; wait for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (grpc, http) = loop {
            let grpc = h.check(HealthCheckRequest { service: String::new() }).await.map(|r| r.into_inner().status);
            let http = http_get(&server.http_addr, "/healthz").await;
            let serving = grpc.as_ref().is_ok_and(|s| *s == ServingStatus::Serving as i32);
            if serving == want || Instant::now() > deadline {
                break (grpc, http);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let grpc = grpc.expect("health check");
        if want {
            assert_eq!(grpc, ServingStatus::Serving as i32);
            assert_eq!(http, (200, "SERVING\n".to_owned()));
        } else {
            assert_eq!(grpc, ServingStatus::NotServing as i32);
            assert_eq!(http, (503, "NOT_SERVING\n".to_owned()));
        }
        let (_, page) = http_get(&server.http_addr, "/metrics").await;
        assert_eq!(sample(&page, "simulcast_healthy", "daemon=\"simulcastd\""), Some(if want { 1.0 } else { 0.0 }));
        server.stop().await;
    }
}

/// Runs simulcastctl against the daemon; returns stdout, and keeps stdout
/// and stderr in `seen`.
fn ctl(seen: &mut Vec<String>, addr: &str, token: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
        .args(args)
        .env("SIMULCAST_ADDR", addr)
        .env("SIMULCAST_TOKEN", token)
        .output()
        .expect("run simulcastctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "simulcastctl {args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    seen.push(stdout.clone() + &stderr);
    stdout
}

#[test]
fn no_secret_in_any_log_line_metric_or_export() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let mut srt = SrtReceiver::start_with_passphrase(peer_port(), PASSPHRASE);
    let mut nginx = NginxRtmp::start();
    let config = dir.path().join("final.toml");
    // The SRT passphrase as systemd's LoadCredential= hands it over: a
    // private file in $CREDENTIALS_DIRECTORY, named in the config.
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("kz-srt"), format!("{PASSPHRASE}\n")).unwrap();
    std::fs::set_permissions(credentials.join("kz-srt"), std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    std::fs::write(
        &config,
        format!(
            "{SMALL}[[channels]]\nid = \"kz-jibek-joly\"\nname = \"Jibek Joly\"\ncountry = \"KZ\"\n\
             timezone = \"Asia/Almaty\"\ningest = {{ type = \"srt\", uri = \"srt://127.0.0.1:{}\", passphrase_file = \"kz-srt\" }}\n\
             [[channels]]\nid = \"kg-ktrk\"\nname = \"KTRK\"\ncountry = \"KG\"\ntimezone = \"Asia/Bishkek\"\n\
             ingest = {{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{}/live\", stream_key = \"{STREAM_KEY}\" }}\n",
            srt.port, nginx.port
        ),
    )
    .unwrap();
    let db_arg = db.to_str().unwrap();
    let token = |role: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
            .args(["--json", "token", "create", "--role", role, "--name", role, "--db", db_arg])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("token json");
        v["token"].as_str().unwrap().to_owned()
    };
    let (admin, operator) = (token("admin"), token("operator"));
    let (grpc, metrics) = (common::tcp_listener(), common::tcp_listener());
    let port = grpc.local_addr().unwrap().port();
    let metrics_port = metrics.local_addr().unwrap().port();
    let addr = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // Debug everywhere in simulcast, and GStreamer's SRT and RTMP elements
    // at DEBUG: the elements that hold the secrets talk about their
    // connections at that level.
    let mut daemon = {
        let mut cmd = common::simulcastd_on(&[("grpc", &grpc), ("metrics", &metrics)]);
        cmd.args(["--log-json", "serve"])
            .args([OsStr::new("--db"), db.as_os_str(), OsStr::new("--config"), config.as_os_str()])
            .arg("--recordings")
            .arg(dir.path().join("rec"))
            .env("RUST_LOG", "debug,h2=info,hyper=info,tower=info")
            .env("GST_DEBUG", "2,rtmp2*:5,srt*:5")
            .env("CREDENTIALS_DIRECTORY", &credentials)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        ChildGuard(cmd.spawn().expect("start simulcastd"))
    };
    common::wait_answering(&mut daemon.0, grpc.local_addr().unwrap());
    let mut seen = Vec::new();
    let at = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let args =
        ["--json", "events", "schedule", "--title", "Final", "--at", &at, "--duration", "10m", "--preroll", "2s"];
    let out = ctl(&mut seen, &addr, &admin, &args);
    let v = serde_json::from_str::<serde_json::Value>(&out).expect("event json");
    let id = v[0]["id"].as_str().unwrap_or_else(|| panic!("no id: {out}")).to_owned();
    // Both legs on air, carrying the programme, then a few seconds more.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctl(&mut seen, &addr, &operator, &["--json", "watch", &id, "--once"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let legs = v["legs"].as_array().cloned().unwrap_or_default();
        if v["event_state"] == "ON_AIR" && legs.len() == 2 && legs.iter().all(|l| l["state"] == "ON_AIR") {
            break;
        }
        assert!(Instant::now() < deadline, "legs not on air: {v:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (code, page) = rt.block_on(http_get(&format!("http://127.0.0.1:{metrics_port}"), "/metrics"));
    assert_eq!(code, 200);
    assert!(page.contains("simulcast_leg_bytes_sent_total{channel=\"kg-ktrk\"}"), "{page}");
    seen.push(page);
    for format in ["csv", "json", "table"] {
        ctl(&mut seen, &addr, &operator, &["asrun", &id, "--format", format]);
    }
    ctl(&mut seen, &addr, &admin, &["--json", "channels", "list"]);
    ctl(&mut seen, &addr, &admin, &["channels", "get", "kg-ktrk"]);
    ctl(&mut seen, &addr, &operator, &["events", "end", &id]);
    // Three wrong tokens: each logged with the peer, never the token, and counted.
    const WRONG: &str = "sct_wrong-guess-7f3a9c";
    for _ in 0..3 {
        let out = Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
            .args(["events", "list"])
            .env("SIMULCAST_ADDR", &addr)
            .env("SIMULCAST_TOKEN", WRONG)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"), "{out:?}");
    }
    let (_, page) = rt.block_on(http_get(&format!("http://127.0.0.1:{metrics_port}"), "/metrics"));
    assert!(page.contains("simulcast_auth_failures_total{reason=\"unknown_token\"} 3"), "{page}");
    std::thread::sleep(Duration::from_secs(2));
    daemon.interrupt();
    // The passphrase reached the partner: its encrypted stream was taken.
    assert!(srt.bytes() > 100_000, "the SRT partner received {} bytes", srt.bytes());
    srt.stop();
    nginx.stop();
    // The store keeps the credential's name, never what it holds.
    let mut stored = Vec::new();
    for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if f.file_name().to_string_lossy().starts_with("s.db") {
            stored.extend(std::fs::read(f.path()).unwrap());
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(stored.contains("passphrase_file = \"kz-srt\""), "the store does not name the credential");
    assert!(!stored.contains(PASSPHRASE), "the passphrase from a file is in the store");

    let logs = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 50, "only {} log lines", lines.len());
    // GStreamer's own messages came through, attributed to their leg.
    let gst_leg = lines.iter().filter(|l| l["target"] == "gst" && l["fields"]["leg"].is_string()).count();
    assert!(gst_leg > 0, "no GStreamer log line with a leg id");
    // The RTMP leg runs a pipeline; the SRT caller leg has none (the
    // fan-out hands its batches to libsrt), so its lines are simulcast's own.
    assert!(
        lines.iter().any(|l| l["target"] == "gst" && l["fields"]["leg"] == "kg-ktrk"),
        "no GStreamer line for leg kg-ktrk"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "On air." && l["fields"]["leg"] == "kz-jibek-joly"),
        "no line says the SRT leg kz-jibek-joly went on air"
    );
    let failed: Vec<&serde_json::Value> = lines.iter().filter(|l| l["fields"]["message"] == "Login failed.").collect();
    assert_eq!(failed.len(), 3, "failed logins logged: {failed:?}");
    assert!(failed.iter().all(|l| l["fields"]["peer"] == "127.0.0.1" && l["fields"]["reason"] == "unknown_token"));
    assert!(!logs.contains(WRONG), "a presented token in the daemon's log");
    // Our own lines about a leg carry its id as a field.
    assert!(lines.iter().any(|l| l["fields"]["leg"] == "kg-ktrk" && l["target"] != "gst"));
    let masked = logs.matches(simulcast::observe::redact::MASK).count();
    eprintln!("{} log lines, {gst_leg} from GStreamer with a leg id, {masked} masked secret(s)", lines.len());
    for secret in [PASSPHRASE, STREAM_KEY] {
        assert!(!logs.contains(secret), "a secret in the daemon's log");
        for (i, s) in seen.iter().enumerate() {
            assert!(!s.contains(secret), "a secret in output {i}: {s}");
        }
    }
}
