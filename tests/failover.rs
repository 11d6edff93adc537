//! Source failover, end to end: two contribution feeds from ffmpeg (the
//! primary white, the backup grey) over UDP through gates that cut them at
//! known instants; legs received by a UDP socket and by srt-live-transmit.
//! What each partner decodes (ffmpeg) is told apart by mean luma: primary
//! white, backup grey, slate card dark.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::feeds::{Gate, GateMode, feed_of, ffmpeg_feed};
use common::server::{ApiServer, asrun_when_closed, authed, watch_until};
use common::{Picture, SrtReceiver, UdpCapture, check_ts, decodes_cleanly, peer_port, pictures, require, wait_for};
use simulcast::api::auth::Role;
use simulcast::config;
use simulcast::coordinator::Options;
use simulcast::media::failover::Feed;
use simulcast::proto;
use simulcast::proto::event_service_client::EventServiceClient;
use simulcast::proto::monitor_service_client::MonitorServiceClient;
use simulcast::relay::{Relay, RelayPlan};

/// Generous bounds on a loaded 2-core machine for "lost for 500 ms, then
/// switched": the detection time, the mixers' wait, the encoder, transport.
const SWITCH_MIN: f64 = 0.4;
const SWITCH_MAX: f64 = 2.5;
const RETURN_AFTER: f64 = 2.0;

/// Consecutive pictures of one feed: (feed, first picture, count).
fn runs(pics: &[Picture]) -> Vec<(Feed, Picture, usize)> {
    let mut out: Vec<(Feed, Picture, usize)> = Vec::new();
    for p in pics {
        match out.last_mut() {
            Some((f, _, n)) if *f == feed_of(p.luma) => *n += 1,
            _ => out.push((feed_of(p.luma), *p, 1)),
        }
    }
    out
}

fn config_text(primary: u16, backup: u16, channels: &str) -> String {
    config_in(primary, backup, channels, "transcode")
}

/// The failover config with `[program] mode = mode`.
fn config_in(primary: u16, backup: u16, channels: &str, mode: &str) -> String {
    format!(
        "[event]\ntitle = \"Silk Way Star failover test\"\n\
         [source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{primary}\"\n\
         [backup]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{backup}\"\n\
         [failover]\nreturn_after = \"{RETURN_AFTER}s\"\n\
         [program]\nmode = \"{mode}\"\nwidth = 320\nheight = 180\nframerate = 25\nvideo_kbps = 800\ngop = 25\n{channels}"
    )
}

fn secs(from: Instant, to: Instant) -> f64 {
    to.duration_since(from).as_secs_f64()
}

async fn wait_in_use(relay: &Relay, want: Feed, timeout: Duration, why: &str) {
    let ok = wait_for(timeout, || relay.status().source_in_use == want).await;
    assert!(ok, "{why}: not on {want:?} within {timeout:?}: {:#?}", relay.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_lost_backup_then_slate_and_back_with_every_leg_connected() {
    lost_backup_then_slate_and_back("transcode").await;
}

/// The same story in passthrough: the feeds' own pictures, each switch on
/// a keyframe of the feed switched to, one clean TS throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_passthrough_primary_lost_backup_then_slate_and_back_on_keyframes() {
    lost_backup_then_slate_and_back("passthrough").await;
}

async fn lost_backup_then_slate_and_back(mode: &str) {
    require("srt-live-transmit", "srt-tools");
    let (p_port, b_port) = (peer_port(), peer_port());
    let (gate_p, gate_b) = (Gate::start(p_port), Gate::start(b_port));
    let _primary = ffmpeg_feed(gate_p.port, "white", true);
    let _backup = ffmpeg_feed(gate_b.port, "0x808080", true);
    let (udp, via_srt) = (UdpCapture::start(), UdpCapture::start());
    let srt_port = peer_port();
    let mut srt = SrtReceiver::start_to_udp(srt_port, via_srt.port);
    let channels = format!(
        "{}{}",
        common::channel("kz-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port)),
        common::channel("kz-srt", &format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{srt_port}\" }}")),
    );
    let cfg = config::parse(&config_in(p_port, b_port, &channels, mode)).expect("config");
    let relay = Relay::start(&RelayPlan::from_config(&cfg)).await.expect("relay starts");
    wait_in_use(&relay, Feed::Primary, Duration::from_secs(10), "at start").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // 1. The primary's link dies.
    let cut_primary = gate_p.set(GateMode::Closed).expect("the primary had sent");
    wait_in_use(&relay, Feed::Backup, Duration::from_secs(5), "primary cut").await;
    let s = relay.status();
    assert!(!s.source.healthy && s.source.loss.as_deref().is_some_and(|l| l.contains("no data")), "{:?}", s.source);
    assert!(s.backup.as_ref().is_some_and(|b| b.healthy), "{:?}", s.backup);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. The primary comes back: the backup stays on for the stability window.
    gate_p.set(GateMode::Open);
    let back = Instant::now();
    wait_in_use(&relay, Feed::Primary, Duration::from_secs(10), "primary back").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // 3. Both gone (the backup first, unnoticed while the primary is on).
    gate_b.set(GateMode::Closed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(relay.status().source_in_use, Feed::Primary, "a lost backup must not move the program");
    let cut_both = gate_p.set(GateMode::Closed).expect("the primary had sent");
    wait_in_use(&relay, Feed::Slate, Duration::from_secs(5), "both cut").await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let switches = relay.take_source_switches();
    let status = relay.shutdown().await;
    srt.stop();
    let pairs: Vec<(Feed, Feed)> = switches.iter().map(|s| (s.from, s.to)).collect();
    use Feed::{Backup as B, Primary as P, Slate as S};
    assert_eq!(pairs, [(S, P), (P, B), (B, P), (P, S)], "{switches:#?}");
    assert!(switches[1].reason.contains("primary lost: no data for 500 ms"), "{switches:#?}");
    assert!(switches[2].reason.contains("healthy again for 2.0 s"), "{switches:#?}");
    assert!(switches[3].reason.contains("backup lost"), "{switches:#?}");
    for s in &switches {
        let ms = s.at_utc_ns / 1_000_000;
        assert!(ms > 1_700_000_000_000, "switch time is UTC: {s:?}");
    }
    for leg in &status.legs {
        assert_eq!((leg.reconnects, leg.dropped_buffers), (0, 0), "a leg was disturbed: {leg:?}");
    }

    for (what, cap) in [("UDP partner", udp), ("SRT partner", via_srt)] {
        let timed = cap.timed();
        let data: Vec<u8> = timed.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        check_ts(&data).assert_clean(what);
        let pics = pictures(&timed);
        let r = runs(&pics);
        let seq: Vec<Feed> = r.iter().map(|(f, _, _)| *f).skip_while(|f| *f == S).collect();
        assert_eq!(seq, [P, B, P, S], "{what}: pictures by feed: {:?}", runs_text(&r));
        let first =
            |feed: Feed, nth: usize| r.iter().filter(|(f, _, _)| *f == feed).nth(nth).map(|(_, p, _)| *p).expect("run");
        let to_backup = secs(cut_primary, first(B, 0).arrived);
        let to_primary = secs(back, first(P, 1).arrived);
        let to_slate = secs(cut_both, r.last().unwrap().1.arrived);
        eprintln!(
            "{mode}, {what}: backup {to_backup:.3} s after the primary's last packet; primary {to_primary:.3} s after its \
             return; slate {to_slate:.3} s after the last packet"
        );
        assert!((SWITCH_MIN..SWITCH_MAX).contains(&to_backup), "{what}: backup after {to_backup:.3} s");
        assert!(
            (RETURN_AFTER - 0.1..RETURN_AFTER + SWITCH_MAX).contains(&to_primary),
            "{what}: primary back after {to_primary:.3} s"
        );
        assert!((SWITCH_MIN..SWITCH_MAX).contains(&to_slate), "{what}: slate after {to_slate:.3} s");
        for (i, p) in pics.iter().enumerate() {
            if i > 0 && feed_of(p.luma) != feed_of(pics[i - 1].luma) {
                let around: Vec<String> = pics[i.saturating_sub(3)..(i + 3).min(pics.len())]
                    .iter()
                    .map(|p| format!("{:.0}{}", p.luma, if p.keyframe { "K" } else { "" }))
                    .collect();
                eprintln!("{what}: switch at picture {i}: {around:?}");
            }
        }
        let ks: Vec<usize> = pics.iter().enumerate().filter(|(_, p)| p.keyframe).map(|(i, _)| i).collect();
        eprintln!("{what}: keyframes at {ks:?}");
        // A decoder can start on the first picture after each switch.
        for (feed, pic, _) in r.iter().skip(1) {
            assert!(pic.keyframe, "{what}: the first {feed:?} picture after a switch is not a keyframe");
        }
        if what == "UDP partner" {
            // Captured from the very first packet: every byte must decode.
            decodes_cleanly(&data, what);
        }
    }
}

fn runs_text(r: &[(Feed, Picture, usize)]) -> Vec<String> {
    r.iter().map(|(f, p, n)| format!("{f:?} x{n} (luma {:.0})", p.luma)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_no_picture_on_the_primary_counts_as_loss() {
    let (p_port, b_port) = (peer_port(), peer_port());
    let (gate_p, gate_b) = (Gate::start(p_port), Gate::start(b_port));
    let mut primary = ffmpeg_feed(gate_p.port, "white", true);
    let _backup = ffmpeg_feed(gate_b.port, "0x808080", true);
    let udp = UdpCapture::start();
    let channels = common::channel("kz-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port));
    let cfg = config::parse(&config_text(p_port, b_port, &channels)).expect("config");
    let relay = Relay::start(&RelayPlan::from_config(&cfg)).await.expect("relay starts");
    wait_in_use(&relay, Feed::Primary, Duration::from_secs(10), "at start").await;

    // Valid TS still arrives, and pictures may still decode, but garbage is
    // mixed in: the feed is not trusted.
    gate_p.set(GateMode::Garbage);
    wait_in_use(&relay, Feed::Backup, Duration::from_secs(5), "garbage on the primary").await;
    let s = relay.status();
    assert!(s.source.garbage_bytes > 0, "{:?}", s.source);
    assert!(s.source.loss.as_deref().is_some_and(|l| l.contains("not MPEG-TS")), "{:?}", s.source);
    let sw = s.last_switch.expect("a switch");
    assert!(sw.reason.contains("not MPEG-TS"), "{sw:?}");

    // Clean again: back after the window.
    gate_p.set(GateMode::Open);
    wait_in_use(&relay, Feed::Primary, Duration::from_secs(10), "garbage stopped").await;

    // A stream without video (sound only) on the primary's port.
    primary.interrupt();
    let _sound_only = ffmpeg_feed(gate_p.port, "white", false);
    wait_in_use(&relay, Feed::Backup, Duration::from_secs(5), "no video on the primary").await;
    let ok = wait_for(Duration::from_secs(5), || {
        relay.status().source.loss.as_deref().is_some_and(|l| l.contains("no picture decoded"))
    })
    .await;
    assert!(ok, "the primary's loss is not named: {:?}", relay.status().source);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let status = relay.shutdown().await;
    let leg = &status.legs[0];
    assert_eq!((leg.reconnects, leg.dropped_buffers), (0, 0), "{leg:?}");
    let data: Vec<u8> = udp.timed().iter().flat_map(|(_, d)| d.clone()).collect();
    check_ts(&data).assert_clean("UDP partner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_holds_the_backup_until_auto_and_the_as_run_log_has_each_switch_and_exports_to_csv() {
    let dir = tempfile::tempdir().unwrap();
    let rec = tempfile::tempdir().unwrap();
    let cfg = config::parse(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"test\"\n[backup]\ntype = \"test\"\ntone_hz = 440\n\
         [program]\nwidth = 320\nheight = 180\nframerate = 25\nvideo_kbps = 800\ngop = 25\n",
    )
    .unwrap();
    let mut o = Options::from_config(&cfg);
    o.recordings = rec.path().to_owned();
    let server = ApiServer::start_with(&dir.path().join("s.db"), o).await;
    let (udp, udp_kr) = (UdpCapture::start(), UdpCapture::start());
    for (id, zone, port) in [("kz", "Asia/Almaty", udp.port), ("kr", "Asia/Seoul", udp_kr.port)] {
        let text = format!(
            "id = \"{id}\"\nname = \"{id}\"\ncountry = \"KZ\"\ntimezone = \"{zone}\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{port}\" }}\n"
        );
        common::server::create_channel(&server, &text).await;
    }
    let mut e = EventServiceClient::new(server.transport().await);
    let mut m = MonitorServiceClient::new(server.transport().await);
    let (admin, op, obs) =
        (server.token(Role::Admin).to_owned(), server.token(Role::Operator).to_owned(), server.token(Role::Observer));
    let req = proto::ScheduleEventRequest {
        title: "Silk Way Star: grand final".into(),
        on_air: Some(proto::schedule_event_request::OnAir::OnAirUtc(simulcast::api::convert::timestamp(
            chrono::Utc::now() + chrono::Duration::hours(1),
        ))),
        duration: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        preroll: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        postroll: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        channel_ids: vec![],
    };
    let ev = e.schedule_event(authed(req, &admin)).await.expect("schedule").into_inner();
    let r = || proto::EventRef { event_id: ev.id.clone() };
    e.arm(authed(r(), &op)).await.expect("arm");
    e.take(authed(r(), &op)).await.expect("take");
    let sw = |s: proto::SourceSelection| proto::SwitchSourceRequest { event_id: ev.id.clone(), source: s as i32 };
    let t = Duration::from_secs(10);
    let on = |want: proto::SourceSelection| move |u: &proto::StatusUpdate| u.source_in_use == want as i32;
    watch_until(&mut m, &ev.id, obs, t, on(proto::SourceSelection::Primary)).await;
    e.switch_source(authed(sw(proto::SourceSelection::Backup), &op)).await.expect("backup by hand");
    let u = watch_until(&mut m, &ev.id, obs, t, on(proto::SourceSelection::Backup)).await;
    assert_eq!(u.source_mode, proto::SourceSelection::Backup as i32);
    assert!(u.backup.as_ref().is_some_and(|b| b.healthy && b.describe.contains("440 Hz")), "{:?}", u.backup);
    assert!(u.source.as_ref().is_some_and(|p| p.healthy), "the primary is healthy, only not in use: {:?}", u.source);
    let last = u.last_switch.as_ref().expect("last switch");
    assert_eq!((last.to, last.reason.as_str()), (proto::SourceSelection::Backup as i32, "held by hand: BACKUP"));
    // Held: still the backup a while later, though the primary is healthy.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let u = watch_until(&mut m, &ev.id, obs, t, |_| true).await;
    assert_eq!(u.source_in_use, proto::SourceSelection::Backup as i32);
    e.switch_source(authed(sw(proto::SourceSelection::Auto), &op)).await.expect("auto");
    // The primary has been healthy for longer than the window: back at once.
    watch_until(&mut m, &ev.id, obs, t, on(proto::SourceSelection::Primary)).await;
    e.end_event(authed(r(), &op)).await.expect("end");
    watch_until(&mut m, &ev.id, obs, t, |u| u.event_state == proto::EventState::Completed as i32).await;

    // Read once the legs' totals are in: the export below must match it.
    let log = asrun_when_closed(&server, &ev.id, obs, 2).await;
    let lines: Vec<(String, String, String)> = log
        .iter()
        .filter(|e| e.kind.starts_with("source-"))
        .map(|e| (e.kind.clone(), e.detail.clone(), e.actor.clone()))
        .collect();
    let find = |kind: &str, detail: &str| lines.iter().find(|(k, d, _)| k == kind && d.contains(detail));
    let sel = find("source-selected", "AUTO -> BACKUP").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(sel.2, "operator-tester");
    let held = find("source-switched", "PRIMARY -> BACKUP: held by hand").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(held.2, "simulcastd");
    find("source-selected", "BACKUP -> AUTO").unwrap_or_else(|| panic!("{lines:#?}"));
    find("source-switched", "BACKUP -> PRIMARY: primary healthy again").unwrap_or_else(|| panic!("{lines:#?}"));

    // The export for a spreadsheet: read back with a standard CSV reader.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
        .args(["asrun", &ev.id, "--format", "csv"])
        .env("SIMULCAST_ADDR", &server.addr)
        .env("SIMULCAST_TOKEN", obs)
        .output()
        .expect("run simulcastctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let header: Vec<String> = reader.headers().expect("header").iter().map(String::from).collect();
    assert_eq!(header, ["utc", "channel_id", "local_time", "timezone", "kind", "detail", "actor", "picture_id"]);
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("CSV parses");
    assert_eq!(rows.len(), log.len(), "one row per as-run entry");
    for (row, entry) in rows.iter().zip(&log) {
        assert_eq!(
            (&row[1], &row[4], &row[5], &row[6]),
            (&*entry.channel_id, &*entry.kind, &*entry.detail, &*entry.actor)
        );
        let utc = chrono::DateTime::parse_from_rfc3339(&row[0]).expect("UTC time");
        let local = chrono::DateTime::parse_from_rfc3339(&row[2]).expect("local time");
        assert_eq!(utc, local, "the same instant: {row:?}");
        let (zone, offset) = match &row[1] {
            "kz" => ("Asia/Almaty", 5 * 3600),
            "kr" => ("Asia/Seoul", 9 * 3600),
            _ => ("UTC", 0),
        };
        assert_eq!((&row[3], local.offset().local_minus_utc()), (zone, offset), "{row:?}");
    }
    assert!(rows.iter().any(|r| &r[1] == "kr") && rows.iter().any(|r| &r[1] == "kz"), "{rows:?}");
    assert!(rows.iter().any(|r| r[5].contains(',')), "a detail with a comma, quoted: {rows:?}");
    // The visual as-run: each source switch kept the picture partners got
    // then; `--pictures` saves them, one JPEG per entry that has one.
    let with_picture: Vec<&csv::StringRecord> = rows.iter().filter(|r| !r[7].is_empty()).collect();
    assert!(with_picture.iter().any(|r| &r[4] == "source-switched"), "no switch kept its picture: {rows:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
        .args(["asrun", &ev.id, "--pictures"])
        .arg(dir.path())
        .env("SIMULCAST_ADDR", &server.addr)
        .env("SIMULCAST_TOKEN", obs)
        .output()
        .expect("run simulcastctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved: Vec<Vec<u8>> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|f| std::fs::read(f.expect("entry").path()).expect("read"))
        .collect();
    // (a picture may have been kept since the CSV was read: at least as many)
    assert!(saved.len() >= with_picture.len(), "{} saved: {}", saved.len(), String::from_utf8_lossy(&out.stderr));
    assert!(saved.iter().all(|j| j.starts_with(b"\xff\xd8")), "JPEG pictures");
    server.stop().await;
}
