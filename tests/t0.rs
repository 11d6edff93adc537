//! The T0 switch, end to end: an event a few seconds ahead, two live legs
//! (UDP, and SRT through srt-live-transmit) and one leg airing at its own
//! local time four seconds later. What each partner decodes (ffmpeg) is
//! told apart by picture: the slate card is dark, the programme's colour
//! bars bright. Each picture is timed by the arrival of its first packet.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::server::{ApiServer, asrun, authed, create_channel};
use common::{Picture, SrtReceiver, UdpCapture, channel, config_with, peer_port, pictures, wait_for};
use simulcast::api::auth::Role;
use simulcast::api::convert::timestamp;
use simulcast::coordinator::Options;
use simulcast::proto::event_service_client::EventServiceClient;
use simulcast::proto::{self, EventState};

const DELAY_S: i64 = 4;
const DURATION_S: i64 = 5;
/// Luma between the dark slate card and the bright colour bars.
const PROGRAM_LUMA: f64 = 80.0;
/// One GOP of the test program (25 frames at 25 fps).
const GOP: f64 = 1.0;
/// One picture of the test program.
const FRAME: f64 = 0.04;
/// Generous transport latency on a loaded 2-core machine: the mixers'
/// wait, the encoder, SRT's 120 ms, and the scheduler's noise.
const LATENCY: f64 = 0.7;

async fn create(server: &ApiServer, id: &str, ingest: &str, air: &str) {
    let text = format!(
        "id = \"{id}\"\nname = \"{id}\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n{air}ingest = {ingest}\n"
    );
    create_channel(server, &text).await;
}

/// Seconds from `instant` (mapped to UTC) to `t`.
fn since(t: DateTime<Utc>, base: (Instant, DateTime<Utc>), instant: Instant) -> f64 {
    let at = base.1 + chrono::Duration::from_std(instant.saturating_duration_since(base.0)).unwrap()
        - chrono::Duration::from_std(base.0.saturating_duration_since(instant)).unwrap();
    (at - t).num_microseconds().unwrap() as f64 / 1e6
}

/// The first programme picture, after slate pictures.
fn first_program(pics: &[Picture], leg: &str) -> (usize, Picture) {
    let i = pics.iter().position(|p| p.luma > PROGRAM_LUMA).unwrap_or_else(|| panic!("{leg}: no programme picture"));
    (i, pics[i])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_leg_switches_from_slate_to_programme_at_its_air_time() {
    at_air_time(simulcast::config::ProgramMode::Transcode).await;
}

/// The same in passthrough: the test source's own encode relayed. T0
/// lands on the first picture at or after it, not on the next keyframe
/// up to a GOP later: the keyframe bridge re-encodes the pictures between
/// (the first of them a keyframe) and the contribution's own resume at
/// its keyframe. The end lands on the slate at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_passthrough_every_leg_switches_at_its_air_time_bridged_to_the_next_keyframe() {
    at_air_time(simulcast::config::ProgramMode::Passthrough).await;
}

async fn at_air_time(mode: simulcast::config::ProgramMode) {
    let rec = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_with(&[channel("x", "{ type = \"udp\", uri = \"udp://127.0.0.1:9\" }")]);
    cfg.program.mode = mode;
    let mut o = Options::from_config(&cfg);
    o.recordings = rec.path().to_owned();
    let server = ApiServer::start_with(&dir.path().join("s.db"), o).await;
    // The relay runs in this process: its clock, read against UTC here,
    // gives the timestamp T0's picture has at the partner.
    simulcast::media::init().expect("GStreamer");
    let utc = simulcast::media::recording::UtcClock::new(&simulcast::media::clock());

    let (udp, late, via_srt) = (UdpCapture::start(), UdpCapture::start(), UdpCapture::start());
    let srt_port = peer_port();
    let mut srt = SrtReceiver::start_to_udp(srt_port, via_srt.port);
    let base = (Instant::now(), Utc::now());
    let t0 = DateTime::from_timestamp(base.1.timestamp() + 6, 0).unwrap();
    let local = (t0 + chrono::Duration::seconds(DELAY_S)).with_timezone(&chrono_tz::Asia::Almaty);
    create(&server, "kz-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port), "").await;
    create(&server, "kz-srt", &format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{srt_port}\" }}"), "").await;
    let air = format!("air_policy = {{ type = \"local_time\", at = \"{}\" }}\n", local.format("%H:%M:%S"));
    create(&server, "kz-late", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", late.port), &air).await;

    let mut e = EventServiceClient::new(server.transport().await);
    let admin = server.token(Role::Admin).to_owned();
    let req = proto::ScheduleEventRequest {
        title: "Silk Way Star: grand final".into(),
        on_air: Some(proto::schedule_event_request::OnAir::OnAirUtc(timestamp(t0))),
        duration: Some(prost_types::Duration { seconds: DURATION_S, nanos: 0 }),
        preroll: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        postroll: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
        channel_ids: vec![],
    };
    let ev = e.schedule_event(authed(req, &admin)).await.expect("schedule").into_inner();
    let end = t0 + chrono::Duration::seconds(DURATION_S);

    // Armed at once (T0 - preroll is past): slate; T0: programme; the end:
    // slate; the delayed leg the same, DELAY_S later. Wait past it all.
    let done = wait_for(Duration::from_secs(40), || {
        Utc::now() > end + chrono::Duration::seconds(DELAY_S) + chrono::Duration::milliseconds(1500)
    })
    .await;
    assert!(done);
    let state = e.get_event(authed(proto::EventRef { event_id: ev.id.clone() }, &admin)).await.unwrap().into_inner();
    assert_eq!(state.state, EventState::PostRoll as i32, "{state:?}");
    let log = asrun(&server, &ev.id, &admin).await;
    server.stop().await;
    srt.stop();

    let t_late = t0 + chrono::Duration::seconds(DELAY_S);
    let end_late = end + chrono::Duration::seconds(DELAY_S);
    for (leg, capture, air, off) in
        [("kz-udp", &udp, t0, end), ("kz-srt", &via_srt, t0, end), ("kz-late", &late, t_late, end_late)]
    {
        let timed = capture.timed();
        let pics = pictures(&timed);
        assert!(pics.len() > 50, "{leg}: only {} pictures decoded", pics.len());
        // Over both switches (and the bridge's own parameter sets): one
        // clean transport stream, every picture decoded without an error.
        let data: Vec<u8> = timed.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        common::check_ts(&data).assert_clean(leg);
        // The delayed leg too: its copy starts at a keyframe of the
        // recorded slate, after the tables, as a live leg starts.
        common::decodes_cleanly(&data, leg);
        let (i, first) = first_program(&pics, leg);
        // Slate before: pictures that decoded, all dark, for a while.
        assert!(i >= 10, "{leg}: only {i} slate pictures before the programme");
        assert!(pics[..i].iter().all(|p| p.luma < PROGRAM_LUMA));
        // The switch lands on a keyframe: the partner's decoder needs nothing earlier.
        assert!(first.keyframe, "{leg}: the first programme picture is not a keyframe");
        // In passthrough, T0's own picture, by its timestamp: the first at
        // or after T0 (the bridge), not the contribution's next keyframe.
        let picture_ms = (mode == simulcast::config::ProgramMode::Passthrough && leg != "kz-late").then(|| {
            let delay = simulcast::media::passthrough::DELAY.as_nanos() as u64;
            let at = utc.clock_of(air.timestamp_nanos_opt().unwrap() as u64) + delay;
            let mask = (1u64 << 33) - 1;
            let d = first.pts.wrapping_sub(simulcast::media::mux::ticks_90k(at)) & mask;
            let d = if d > mask / 2 { d as i64 - (mask as i64 + 1) } else { d as i64 };
            d as f64 / 90.0
        });
        if let Some(ms) = picture_ms {
            assert!(
                (-2.0..1000.0 * FRAME + 2.0).contains(&ms),
                "{leg}: the first programme picture is {ms:+.1} ms from T0, not T0's picture"
            );
            // Every picture from there is the programme's, the bridge's
            // and then the contribution's from its keyframe, a GOP later
            // at most: no gap, no slate between them.
            let next_key = pics[i + 1..].iter().position(|p| p.keyframe).map(|k| i + 1 + k);
            let next_key = next_key.unwrap_or_else(|| panic!("{leg}: no keyframe after the first programme picture"));
            assert!(next_key - i <= 25, "{leg}: {} pictures to the next keyframe", next_key - i);
            let steps: Vec<u64> = pics[i..=next_key].windows(2).map(|w| w[1].pts - w[0].pts).collect();
            assert!(steps.iter().all(|&d| d == 3600), "{leg}: picture steps over the bridge {steps:?} (90 kHz)");
            assert!(pics[i..=next_key].iter().all(|p| p.luma > PROGRAM_LUMA), "{leg}: slate inside the bridge");
        }
        let after = since(air, base, first.arrived);
        assert!(
            (-0.02..GOP + LATENCY).contains(&after),
            "{leg}: first programme picture arrived {after:+.3} s from its air time"
        );
        // The programme runs until the end, then slate again.
        let back = pics[i..].iter().position(|p| p.luma < PROGRAM_LUMA).map(|k| pics[i + k]);
        let back = back.unwrap_or_else(|| panic!("{leg}: no slate after the end"));
        let at_end = since(off, base, back.arrived);
        assert!((-0.02..GOP + LATENCY).contains(&at_end), "{leg}: slate came back {at_end:+.3} s from the end");
        let program_s = (back.pts - first.pts) as f64 / 90_000.0;
        // Both modes start at T0's picture and end on time.
        assert!((-0.25..0.25).contains(&(program_s - DURATION_S as f64)), "{leg}: {program_s:.3} s of programme");

        // The as-run log has the instant the first programme picture went
        // out on this leg: after its air time, before the partner got it.
        let entry = log
            .iter()
            .find(|x| x.kind == "leg-program" && x.channel_id == leg)
            .unwrap_or_else(|| panic!("{leg}: no leg-program entry in {log:?}"));
        let went_out: DateTime<Utc> =
            entry.utc.as_ref().map(|t| DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()).unwrap();
        let out_after = (went_out - air).num_milliseconds();
        assert!((0..(1000.0 * (GOP + LATENCY)) as i64).contains(&out_after), "{leg}: {entry:?}");
        assert!(entry.local_time.ends_with("+05:00"), "{leg}: local time not in Almaty: {entry:?}");
        let got = since(went_out, base, first.arrived);
        assert!(got > -0.005, "{leg}: the partner got the picture {got:.3} s before it went out: {entry:?}");
        eprintln!(
            "{mode:?} {leg}: first programme picture at the partner {after:+.3} s from air time, its timestamp {} from T0; slate back {at_end:+.3} s from the end; {}",
            picture_ms.map_or("-".into(), |ms| format!("{ms:+.1} ms")),
            entry.detail
        );
    }
}

/// Hold past T0, then Take, then End, in passthrough: the partner sees the
/// slate through the hold, the programme from its first keyframe after
/// the Take, the slate again at once after End; one clean TS throughout
/// that ffmpeg decodes without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_passthrough_hold_take_and_end_land_on_keyframes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_with(&[channel("x", "{ type = \"udp\", uri = \"udp://127.0.0.1:9\" }")]);
    cfg.program.mode = simulcast::config::ProgramMode::Passthrough;
    let server = ApiServer::start_with(&dir.path().join("s.db"), Options::from_config(&cfg)).await;
    let udp = UdpCapture::start();
    create(&server, "kz-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port), "").await;
    let mut e = EventServiceClient::new(server.transport().await);
    let (admin, op) = (server.token(Role::Admin).to_owned(), server.token(Role::Operator).to_owned());
    let t0 = Utc::now() + chrono::Duration::seconds(3);
    let req = proto::ScheduleEventRequest {
        title: "Silk Way Star: hold".into(),
        on_air: Some(proto::schedule_event_request::OnAir::OnAirUtc(timestamp(t0))),
        duration: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        preroll: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        postroll: Some(prost_types::Duration { seconds: 5, nanos: 0 }),
        channel_ids: vec![],
    };
    let ev = e.schedule_event(authed(req, &admin)).await.expect("schedule").into_inner();
    let r = || proto::EventRef { event_id: ev.id.clone() };
    assert!(wait_for(Duration::from_secs(10), || Utc::now() > t0 - chrono::Duration::seconds(2)).await);
    e.hold(authed(r(), &op)).await.expect("hold");
    // Held two seconds past T0, then taken, then ended four seconds later.
    assert!(wait_for(Duration::from_secs(10), || Utc::now() > t0 + chrono::Duration::seconds(2)).await);
    let took = Instant::now();
    e.take(authed(r(), &op)).await.expect("take");
    // A slate break by master control, two seconds into the programme.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sw = |s: proto::SourceSelection| proto::SwitchSourceRequest { event_id: ev.id.clone(), source: s as i32 };
    let slated = Instant::now();
    e.switch_source(authed(sw(proto::SourceSelection::Slate), &op)).await.expect("slate");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let released = Instant::now();
    e.switch_source(authed(sw(proto::SourceSelection::Auto), &op)).await.expect("auto");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ended = Instant::now();
    e.end_event(authed(r(), &op)).await.expect("end");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = asrun(&server, &ev.id, &admin).await;
    server.stop().await;

    let timed = udp.timed();
    let data: Vec<u8> = timed.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    common::check_ts(&data).assert_clean("UDP partner");
    common::decodes_cleanly(&data, "UDP partner");
    let pics = pictures(&timed);
    let (i, first) = first_program(&pics, "kz-udp");
    assert!(pics[..i].iter().all(|p| p.luma < PROGRAM_LUMA), "programme during the hold");
    assert!(first.keyframe, "the first programme picture after Take is not a keyframe");
    let after_take = first.arrived.duration_since(took).as_secs_f64();
    assert!((0.0..GOP + LATENCY).contains(&after_take), "programme {after_take:.3} s after Take");
    // The break: slate from a keyframe at once, programme again from the
    // contribution's next keyframe; both switches in the as-run log.
    let k = pics[i..].iter().position(|p| p.luma < PROGRAM_LUMA).expect("the slate break");
    let brk = pics[i + k];
    assert!(brk.keyframe && brk.arrived.saturating_duration_since(slated).as_secs_f64() < LATENCY, "slate break late");
    let j = pics[i + k..].iter().position(|p| p.luma >= PROGRAM_LUMA).expect("programme after the break");
    let again = pics[i + k + j];
    assert!(again.keyframe, "the programme's first picture after the break is not a keyframe");
    let after_release = again.arrived.saturating_duration_since(released).as_secs_f64();
    assert!(after_release < GOP + LATENCY, "programme {after_release:.3} s after the release");
    let switched: Vec<&str> = log.iter().filter(|x| x.kind == "source-switched").map(|x| x.detail.as_str()).collect();
    assert!(switched.contains(&"PRIMARY -> SLATE: slate by master control"), "{switched:?}");
    assert!(switched.contains(&"SLATE -> PRIMARY: slate released by master control"), "{switched:?}");
    let i = i + k + j;
    let k = pics[i..].iter().position(|p| p.luma < PROGRAM_LUMA).expect("slate after End");
    let back = pics[i + k];
    assert!(back.keyframe, "the slate's first picture after End is not a keyframe");
    let after_end = back.arrived.saturating_duration_since(ended).as_secs_f64();
    assert!(after_end < LATENCY, "slate {after_end:.3} s after End");
    assert!(pics[i + k..].iter().all(|p| p.luma < PROGRAM_LUMA), "programme after End");
    let entry = log.iter().find(|x| x.kind == "leg-program").expect("a leg-program entry");
    eprintln!("Take to programme at the partner {after_take:.3} s; End to slate {after_end:.3} s; {}", entry.detail);
}
