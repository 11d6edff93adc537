//! A leg airing at its own local time, from the recording: two live legs
//! and one delayed by a few seconds, all to UDP sockets. The delayed
//! partner gets the very same MPEG-TS the live partners got from T0 on,
//! its delay later; a delay beyond the recording's retention is refused.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::server::{ApiServer, asrun, authed, create_channel};
use common::{UdpCapture, channel, config_with, wait_for};
use simulcast::api::auth::Role;
use simulcast::api::convert::timestamp;
use simulcast::coordinator::Options;
use simulcast::proto::event_service_client::EventServiceClient;
use simulcast::proto::{self, EventState};
use tonic::Code;

const DELAY_S: i64 = 4;

fn options(recordings: &std::path::Path) -> Options {
    let cfg = config_with(&[channel("x", "{ type = \"udp\", uri = \"udp://127.0.0.1:9\" }")]);
    let mut o = Options::from_config(&cfg);
    o.recordings = recordings.to_owned();
    o
}

async fn create(server: &ApiServer, id: &str, port: u16, air: &str) {
    let text = format!(
        "id = \"{id}\"\nname = \"{id}\"\ncountry = \"KR\"\ntimezone = \"Asia/Seoul\"\n{air}\
         ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{port}\" }}\n"
    );
    create_channel(server, &text).await;
}

/// Where a delayed leg's copy joins what went out live: its first chunk
/// is the PAT and PMT, its second the end of a live chunk from a keyframe
/// on (a decoder can start there), and from its third on the live chunks
/// follow whole. Returns the index in `live` of the keyframe's chunk.
fn joined(delayed: &[(Instant, Vec<u8>)], live: &[(Instant, Vec<u8>)]) -> usize {
    use simulcast::media::ts;
    let pids: Vec<u16> = delayed[0].1.chunks_exact(ts::PACKET).map(ts::pid).collect();
    assert_eq!(pids.first(), Some(&0), "the delayed leg's first chunk is not the PAT and PMT: PIDs {pids:?}");
    let key = &delayed[1].1;
    assert!(
        key.chunks_exact(ts::PACKET).next().is_some_and(ts::starts_random_access),
        "the delayed leg's second chunk does not start with a keyframe"
    );
    live.iter().position(|(_, d)| d.ends_with(key)).expect("the delayed leg's keyframe chunk never went out live")
}

fn schedule(t0: chrono::DateTime<Utc>) -> proto::ScheduleEventRequest {
    proto::ScheduleEventRequest {
        title: "Silk Way Star: grand final".into(),
        on_air: Some(proto::schedule_event_request::OnAir::OnAirUtc(timestamp(t0))),
        duration: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        preroll: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        postroll: Some(prost_types::Duration { seconds: 5, nanos: 0 }),
        channel_ids: vec![],
    }
}

#[tokio::test]
async fn a_delayed_leg_airs_the_live_program_its_delay_later() {
    let rec = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start_with(&dir.path().join("s.db"), options(rec.path())).await;
    let (live_a, live_b, late) = (UdpCapture::start(), UdpCapture::start(), UdpCapture::start());
    // T0 three to four seconds ahead; the delayed partner airs DELAY_S later in Seoul.
    let (now_instant, now_utc) = (Instant::now(), Utc::now());
    // A whole second (the local air time has seconds, not fractions).
    let t0 = chrono::DateTime::from_timestamp(now_utc.timestamp() + 4, 0).unwrap();
    let t0_instant = now_instant + (t0 - now_utc).to_std().unwrap();
    let local = (t0 + chrono::Duration::seconds(DELAY_S)).with_timezone(&chrono_tz::Asia::Seoul);
    create(&server, "kr-live-a", live_a.port, "").await;
    create(&server, "kr-live-b", live_b.port, "").await;
    let air = format!("air_policy = {{ type = \"local_time\", at = \"{}\" }}\n", local.format("%H:%M:%S"));
    create(&server, "kr-late", late.port, &air).await;

    let mut e = EventServiceClient::new(server.transport().await);
    let admin = server.token(Role::Admin).to_owned();
    let ev = e.schedule_event(authed(schedule(t0), &admin)).await.expect("schedule").into_inner();
    let airs = e.get_air_times(authed(proto::EventRef { event_id: ev.id.clone() }, &admin)).await.unwrap().into_inner();
    let late_air = airs.air_times.iter().find(|a| a.channel_id == "kr-late").unwrap();
    assert_eq!(late_air.delay.as_ref().map(|d| d.seconds), Some(DELAY_S), "{late_air:?}");

    // The scheduler arms at once (T0 - preroll is past) and airs at T0; the
    // delayed leg is idle until its time, then gets the recording.
    assert!(wait_for(Duration::from_secs(10), || live_a.bytes() > 0).await, "the live legs never started");
    assert_eq!(late.bytes(), 0, "the delayed leg sent before its time");
    assert!(
        wait_for(Duration::from_secs(20), || late.bytes() > 500_000).await,
        "the delayed leg got {} bytes",
        late.bytes()
    );
    let ev_now = e.get_event(authed(proto::EventRef { event_id: ev.id.clone() }, &admin)).await.unwrap().into_inner();
    assert_eq!(ev_now.state, EventState::OnAir as i32);

    let live = live_a.timed();
    let delayed = late.timed();
    // It starts at the first keyframe of the recorded slate from T0 less
    // DELAYED_SLATE on: within the slate's GOP (1 s here) of that.
    let i0 = joined(&delayed, &live);
    let live_at = live[i0].0.saturating_duration_since(t0_instant).as_secs_f64()
        - t0_instant.saturating_duration_since(live[i0].0).as_secs_f64();
    let lead = -simulcast::relay::DELAYED_SLATE.as_secs_f64();
    assert!((lead - 0.05..lead + 1.5).contains(&live_at), "its keyframe went out live {live_at:.3} s from T0");
    let lag = delayed[1].0.duration_since(live[i0].0).as_secs_f64();
    assert!((lag - DELAY_S as f64).abs() < 0.3, "delayed by {lag:.3} s, wanted {DELAY_S} s");
    // And then the same stream, chunk for chunk.
    let n = 200.min(delayed.len());
    for k in 2..n {
        assert_eq!(delayed[k].1, live[i0 + k - 1].1, "chunk {k} differs from the live one");
    }
    assert!(live_b.bytes() > 0);
    let log = asrun(&server, &ev.id, &admin).await;
    assert!(log.iter().any(|x| x.kind == "leg-delayed-start" && x.channel_id == "kr-late"), "{log:?}");
    assert!(std::fs::read_dir(rec.path().join(&ev.id)).unwrap().count() > 0, "no recording on disk");

    // Abort: every leg stops after the emergency slate, then the recording goes.
    e.abort(authed(proto::EventRef { event_id: ev.id.clone() }, server.token(Role::Operator))).await.unwrap();
    let gone = common::wait_for(Duration::from_secs(10), || !rec.path().join(&ev.id).exists()).await;
    assert!(gone, "the recording outlived the event");
    server.stop().await;
}

#[tokio::test]
async fn a_delay_longer_than_the_retention_is_refused() {
    let rec = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(rec.path());
    o.retention = Duration::from_secs(3600);
    let server = ApiServer::start_with(&dir.path().join("s.db"), o).await;
    // 10:00 in Seoul tomorrow, so that two hours later is the same local date
    // whatever the hour the test runs at.
    let tomorrow = (Utc::now() + chrono::Duration::days(1)).date_naive();
    let t0 = tomorrow.and_hms_opt(1, 0, 0).unwrap().and_utc();
    let local = (t0 + chrono::Duration::hours(2)).with_timezone(&chrono_tz::Asia::Seoul);
    create(&server, "kr-live", 9, "").await;
    let air = format!("air_policy = {{ type = \"local_time\", at = \"{}\" }}\n", local.format("%H:%M"));
    create(&server, "kr-late", 11, &air).await;
    let mut e = EventServiceClient::new(server.transport().await);
    let err = e.schedule_event(authed(schedule(t0), server.token(Role::Admin))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("channel_ids: channel `kr-late`")
            && err.message().contains("longer than the recording is kept (1h)"),
        "{}",
        err.message()
    );
    server.stop().await;
}

/// The daemon stops between T0 and the delayed leg's air time: started
/// again, it airs that leg from what the first run recorded.
#[tokio::test]
async fn the_recording_survives_a_restart() {
    const DELAY: i64 = 6;
    let rec = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let server = ApiServer::start_with(&db, options(rec.path())).await;
    let (live, late) = (UdpCapture::start(), UdpCapture::start());
    let (now_instant, now_utc) = (Instant::now(), Utc::now());
    let t0 = chrono::DateTime::from_timestamp(now_utc.timestamp() + 4, 0).unwrap();
    let t0_instant = now_instant + (t0 - now_utc).to_std().unwrap();
    let local = (t0 + chrono::Duration::seconds(DELAY)).with_timezone(&chrono_tz::Asia::Seoul);
    create(&server, "kr-live", live.port, "").await;
    let air = format!("air_policy = {{ type = \"local_time\", at = \"{}\" }}\n", local.format("%H:%M:%S"));
    create(&server, "kr-late", late.port, &air).await;
    let mut e = EventServiceClient::new(server.transport().await);
    let ev = e.schedule_event(authed(schedule(t0), server.token(Role::Admin))).await.expect("schedule").into_inner();

    // Stop 2 s after T0: the first run recorded [T0, T0 + 2 s].
    tokio::time::sleep_until((t0_instant + Duration::from_secs(2)).into()).await;
    let db = server.stop().await;
    let before = live.timed();
    assert!(!before.is_empty(), "nothing went out live before the stop");
    assert_eq!(late.bytes(), 0);

    let server = ApiServer::start_with(&db, options(rec.path())).await;
    assert!(
        wait_for(Duration::from_secs(20), || late.bytes() > 300_000).await,
        "the delayed leg got {} bytes after the restart",
        late.bytes()
    );
    let delayed = late.timed();
    // From the first run's recording, at a keyframe.
    let i0 = joined(&delayed, &before);
    let lag = delayed[1].0.duration_since(before[i0].0).as_secs_f64();
    assert!((lag - DELAY as f64).abs() < 0.3, "delayed by {lag:.3} s across the restart, wanted {DELAY} s");
    let same = delayed[2..].iter().zip(&before[i0 + 1..]).take_while(|(d, l)| d.1 == l.1).count();
    assert!(same > 100, "only {same} chunks match the first run's");
    let e2 = EventServiceClient::new(server.transport().await)
        .get_event(authed(proto::EventRef { event_id: ev.id.clone() }, server.token(Role::Observer)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e2.state, EventState::OnAir as i32);
    server.stop().await;
}

/// Ad breaks through the API, to real UDP partners: a break for the
/// Korean legs reaches the live one at its instant and the delayed one its
/// delay later (same picture), never the Kazakh one; the as-run log has
/// each leg's start and end in its own local time; a break in a channel's
/// own local time, a break too soon, an overlap, and the cancel of an
/// announced break are answered as the operator expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_reaches_its_partners_the_delayed_one_its_delay_later_and_no_other() {
    use common::cues;
    let rec = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start_with(&dir.path().join("s.db"), options(rec.path())).await;
    let (kr, kz, late) = (UdpCapture::start(), UdpCapture::start(), UdpCapture::start());
    let (now_instant, now_utc) = (Instant::now(), Utc::now());
    let t0 = chrono::DateTime::from_timestamp(now_utc.timestamp() + 4, 0).unwrap();
    let at_instant = |t: chrono::DateTime<Utc>| now_instant + (t - now_utc).to_std().unwrap();
    let local = (t0 + chrono::Duration::seconds(DELAY_S)).with_timezone(&chrono_tz::Asia::Seoul);
    create(&server, "kr-live", kr.port, "").await;
    create_channel(
        &server,
        &format!(
            "id = \"kz-live\"\nname = \"kz\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}\n",
            kz.port
        ),
    )
    .await;
    let air = format!("air_policy = {{ type = \"local_time\", at = \"{}\" }}\n", local.format("%H:%M:%S"));
    create(&server, "kr-late", late.port, &air).await;
    let mut e = EventServiceClient::new(server.transport().await);
    let (admin, operator) = (server.token(Role::Admin).to_owned(), server.token(Role::Operator).to_owned());
    let ev = e.schedule_event(authed(schedule(t0), &admin)).await.expect("schedule").into_inner();

    let request =
        |at: proto::schedule_break_request::At, seconds: i64, channels: &[&str]| proto::ScheduleBreakRequest {
            event_id: ev.id.clone(),
            at: Some(at),
            duration: Some(prost_types::Duration { seconds, nanos: 0 }),
            channel_ids: channels.iter().map(|c| c.to_string()).collect(),
        };
    use proto::schedule_break_request::At;
    // 8 s into the programme, 2 s long, on both Korean legs.
    let start = t0 + chrono::Duration::seconds(8);
    let made = e
        .schedule_break(authed(request(At::AtUtc(timestamp(start)), 2, &["kr-live", "kr-late"]), &operator))
        .await
        .expect("a break")
        .into_inner()
        .breaks;
    assert_eq!(made.len(), 1);
    let b = &made[0];
    // The live board shows it.
    let mut watch = simulcast::proto::monitor_service_client::MonitorServiceClient::new(server.transport().await)
        .watch_status(authed(proto::EventRef { event_id: ev.id.clone() }, &operator))
        .await
        .expect("watch")
        .into_inner();
    let update = watch.message().await.expect("an update").expect("an update");
    assert_eq!(update.breaks.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), [b.id.as_str()]);
    drop(watch);
    let late_leg = b.legs.iter().find(|l| l.channel_id == "kr-late").expect("the delayed leg's time");
    let late_start = chrono::DateTime::parse_from_rfc3339(&late_leg.local_start).unwrap();
    assert_eq!(late_start, start + chrono::Duration::seconds(DELAY_S), "{late_leg:?}");
    assert_eq!(late_leg.timezone, "Asia/Seoul");

    // A break in a channel's own local time: 20 s into the programme on
    // Seoul's wall clock, for the live Korean leg; then cancelled.
    let seoul = (t0 + chrono::Duration::seconds(20)).with_timezone(&chrono_tz::Asia::Seoul);
    let own = proto::LocalTime { local: seoul.format("%H:%M:%S").to_string(), timezone: String::new(), fold: 0 };
    let later = e
        .schedule_break(authed(request(At::AtLocal(own), 1, &["kr-live"]), &operator))
        .await
        .expect("local")
        .into_inner();
    assert_eq!(later.breaks[0].start_utc, Some(timestamp(t0 + chrono::Duration::seconds(20))));
    // Refusals, each naming what is wrong.
    let refused = |r: Result<tonic::Response<proto::ScheduleBreakResponse>, tonic::Status>| {
        let s = r.expect_err("refused");
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        s.message().to_owned()
    };
    let soon = refused(
        e.schedule_break(authed(request(At::After(prost_types::Duration { seconds: 2, nanos: 0 }), 1, &[]), &operator))
            .await,
    );
    assert!(soon.contains("after: ") && soon.contains("at least 4 s of notice"), "{soon}");
    let overlap =
        refused(e.schedule_break(authed(request(At::AtUtc(timestamp(start)), 1, &["kr-live"]), &operator)).await);
    assert!(overlap.contains(&format!("overlaps break {} on kr-live", b.id)), "{overlap}");
    let outside = refused(
        e.schedule_break(authed(request(At::AtUtc(timestamp(t0 + chrono::Duration::hours(2))), 1, &[]), &operator))
            .await,
    );
    assert!(outside.contains("at_utc: ") && outside.contains("ends after the programme"), "{outside}");
    let observer =
        e.schedule_break(authed(request(At::AtUtc(timestamp(start)), 1, &[]), server.token(Role::Observer))).await;
    assert_eq!(observer.unwrap_err().code(), Code::PermissionDenied);
    e.cancel_break(authed(proto::CancelBreakRequest { break_id: later.breaks[0].id.clone() }, &operator))
        .await
        .expect("a break not announced yet is cancelled");

    // Until the delayed leg's break is over.
    let end_late = at_instant(start + chrono::Duration::seconds(2 + DELAY_S)) + Duration::from_millis(1500);
    tokio::time::sleep_until(end_late.into()).await;
    let announced = e.cancel_break(authed(proto::CancelBreakRequest { break_id: b.id.clone() }, &operator)).await;
    assert_eq!(announced.unwrap_err().code(), Code::FailedPrecondition);
    let listed = e.list_breaks(authed(proto::ListBreaksRequest { event_id: ev.id.clone() }, &operator)).await.unwrap();
    let ids: Vec<String> = listed.into_inner().breaks.iter().map(|x| x.id.clone()).collect();
    assert_eq!(ids, [b.id.as_str()]);

    let (kr_timed, kz_timed, late_timed) = (kr.timed(), kz.timed(), late.timed());
    let first_cue = |timed: &[(Instant, Vec<u8>)], what: &str| {
        let data: Vec<u8> = timed.iter().flat_map(|(_, d)| d.clone()).collect();
        let (pids, cuei) = cues::cue_pids(&data);
        assert!(pids.len() == 1 && cuei, "{what}: one SCTE-35 PID with CUEI: {pids:?}");
        let got = cues::splice_inserts(timed, pids[0]);
        let outs: Vec<_> = got.iter().filter(|(_, c)| c.out_of_network).cloned().collect();
        assert!(!outs.is_empty() && got.len() > outs.len(), "{what}: out and in cues: {got:?}");
        assert!(got.iter().all(|(_, c)| c.event_id == b.splice_event_id), "{what}: {got:?}");
        let (arrived, cue) = outs[0].clone();
        let video = cues::video_pid(&data).expect("a video PID");
        (arrived, cue.pts.expect("a splice time"), cues::pictures_sent(timed, video))
    };
    let (live_arrived, live_pts, live_pictures) = first_cue(&kr_timed, "live");
    let (late_arrived, late_pts, _) = first_cue(&late_timed, "delayed");
    let ahead = at_instant(start).saturating_duration_since(live_arrived);
    assert!(ahead >= Duration::from_millis(3_900), "the live cue came only {ahead:?} ahead");
    let lag = late_arrived.saturating_duration_since(live_arrived).as_secs_f64();
    assert!((lag - DELAY_S as f64).abs() < 0.5, "the delayed leg's cue came {lag:.3} s after the live one's");
    assert!(late_pts.abs_diff(live_pts) <= 3_600, "the delayed cue names another picture: {late_pts} vs {live_pts}");
    let instant = at_instant(start);
    let off = |t: &Instant| t.saturating_duration_since(instant).max(instant.saturating_duration_since(*t));
    // The picture going out nearest the instant (one comes every frame).
    let (_, shown) = live_pictures.iter().min_by_key(|(t, _)| off(t)).expect("pictures at the break");
    assert!(shown.abs_diff(live_pts) <= 3_600, "the cue names {live_pts}, the picture at its instant is {shown}");
    let data: Vec<u8> = kz_timed.iter().flat_map(|(_, d)| d.clone()).collect();
    assert_eq!(cues::cue_pids(&data), (vec![], false), "the Kazakh leg lists no cue PID");

    let log = asrun(&server, &ev.id, &admin).await;
    let entry = |kind: &str, leg: &str| {
        log.iter()
            .find(|x| x.kind == kind && x.channel_id == leg)
            .unwrap_or_else(|| panic!("no {kind} on {leg}: {log:?}"))
    };
    for (leg, delay) in [("kr-live", 0), ("kr-late", DELAY_S)] {
        let s = entry("break-start", leg);
        let want = (start + chrono::Duration::seconds(delay)).with_timezone(&chrono_tz::Asia::Seoul);
        assert_eq!(s.local_time, want.to_rfc3339_opts(chrono::SecondsFormat::Millis, false), "{leg}");
        assert_eq!(s.timezone, "Asia/Seoul");
        assert!(s.detail.starts_with(&b.id), "{}", s.detail);
        entry("break-end", leg);
    }
    assert!(!log.iter().any(|x| x.channel_id == "kz-live" && x.kind.starts_with("break")), "{log:?}");
    assert!(log.iter().any(|x| x.kind == "break-scheduled" && x.actor != "simulcastd"));
    assert!(log.iter().any(|x| x.kind == "break-cancelled" && x.detail.starts_with(&later.breaks[0].id)));
    server.stop().await;
}
