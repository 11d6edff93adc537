//! EventService and MonitorService against a real tonic server on loopback,
//! with the relay really running to UDP sockets: every RPC and its error
//! codes, the role matrix, the status stream (lag skipping, a stalled
//! watcher blocking nobody), and health following the relay.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::time::Duration;

use chrono::Utc;
use common::server::{ApiServer, authed, default_options, watch_until};
use common::{UdpCapture, channel, config_with, wait_for};
use simulcast::api::auth::Role;
use simulcast::api::convert::{channel_to_proto_with_secrets, timestamp};
use simulcast::config;
use simulcast::coordinator::Options;
use simulcast::proto::channel_service_client::ChannelServiceClient;
use simulcast::proto::event_service_client::EventServiceClient;
use simulcast::proto::monitor_service_client::MonitorServiceClient;
use simulcast::proto::{self, EventState, LegState};
use simulcast::store::Store;
use tonic::Code;
use tonic::transport::Channel as Transport;

/// The small test source (cheap to encode), the default relay settings.
fn options() -> Options {
    let cfg = config_with(&[channel("x", "{ type = \"udp\", uri = \"udp://127.0.0.1:9\" }")]);
    let mut o = Options::from_config(&cfg);
    o.status_every = Duration::from_millis(200);
    o
}

/// Two UDP channels sending to `captures`, created through the API.
async fn seed_channels(server: &ApiServer, captures: &[&UdpCapture]) -> Vec<String> {
    let mut c = ChannelServiceClient::new(server.transport().await);
    let zones = ["Asia/Almaty", "Asia/Seoul", "Asia/Kolkata"];
    let mut ids = Vec::new();
    for (i, cap) in captures.iter().enumerate() {
        let id = format!("leg-{i}");
        let text = format!(
            "id = \"{id}\"\nname = \"Leg {i}\"\ncountry = \"KZ\"\ntimezone = \"{}\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}\n",
            zones[i % zones.len()],
            cap.port
        );
        let ch = config::parse_channel(&text).expect("channel");
        let req = proto::CreateChannelRequest { channel: Some(channel_to_proto_with_secrets(&ch)) };
        c.create_channel(authed(req, server.token(Role::Admin))).await.expect("create channel");
        ids.push(id);
    }
    ids
}

/// A server on a fresh store with one channel, to a partner that drains
/// its leg (kept alive with the store's directory).
async fn one_partner() -> (tempfile::TempDir, ApiServer, UdpCapture) {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start_with(&dir.path().join("s.db"), options()).await;
    let cap = UdpCapture::start();
    seed_channels(&server, &[&cap]).await;
    (dir, server, cap)
}

fn dur(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: s, nanos: 0 })
}

fn schedule_in(secs: i64, title: &str) -> proto::ScheduleEventRequest {
    proto::ScheduleEventRequest {
        title: title.into(),
        on_air: Some(proto::schedule_event_request::OnAir::OnAirUtc(timestamp(
            Utc::now() + chrono::Duration::seconds(secs),
        ))),
        duration: dur(3600),
        preroll: dur(60),
        postroll: dur(1),
        channel_ids: vec![],
    }
}

fn r(id: &str) -> proto::EventRef {
    proto::EventRef { event_id: id.into() }
}

/// The first page of event `id`'s as-run log.
fn log_of(id: &str) -> proto::GetAsRunLogRequest {
    proto::GetAsRunLogRequest { event_id: id.to_owned(), ..Default::default() }
}

fn state(e: &proto::Event) -> EventState {
    EventState::try_from(e.state).unwrap()
}

async fn asrun_kinds(m: &mut MonitorServiceClient<Transport>, id: &str, token: &str) -> Vec<(String, String, String)> {
    let log = m.get_as_run_log(authed(log_of(id), token)).await.expect("asrun").into_inner().entries;
    log.into_iter().map(|e| (e.kind, e.channel_id, e.actor)).collect()
}

#[tokio::test]
async fn every_event_rpc_and_its_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start_with(&dir.path().join("s.db"), options()).await;
    let (a, b) = (UdpCapture::start(), UdpCapture::start());
    let legs = seed_channels(&server, &[&a, &b]).await;
    let (admin, op, obs) = (
        server.token(Role::Admin).to_owned(),
        server.token(Role::Operator).to_owned(),
        server.token(Role::Observer).to_owned(),
    );
    let mut e = EventServiceClient::new(server.transport().await);
    let mut m = MonitorServiceClient::new(server.transport().await);
    let mut ch = ChannelServiceClient::new(server.transport().await);

    // ScheduleEvent: each bad field named.
    let bad = |f: &dyn Fn(&mut proto::ScheduleEventRequest)| {
        let mut req = schedule_in(3600, "Silk Way Star");
        f(&mut req);
        req
    };
    let cases: Vec<(proto::ScheduleEventRequest, &str, &str)> = vec![
        (bad(&|r| r.on_air = None), "on_air", "missing"),
        (bad(&|r| r.title = String::new()), "title", "characters"),
        (
            bad(&|r| {
                r.on_air = Some(proto::schedule_event_request::OnAir::OnAirUtc(timestamp(
                    Utc::now() - chrono::Duration::minutes(5),
                )))
            }),
            "on_air",
            "in the past",
        ),
        (bad(&|r| r.duration = dur(0)), "duration", "more than zero"),
        (bad(&|r| r.duration = dur(-60)), "duration", "more than zero"),
        (bad(&|r| r.duration = None), "duration", "missing"),
        (bad(&|r| r.channel_ids = vec!["leg-9".into()]), "channel_ids[0]", "no channel `leg-9`"),
        (
            bad(&|r| {
                r.on_air = Some(proto::schedule_event_request::OnAir::OnAirLocal(proto::LocalTime {
                    local: "2030-11-22T20:00".into(),
                    timezone: "Asia/Almati".into(),
                    fold: 0,
                }))
            }),
            "on_air_local.timezone",
            "Asia/Almati",
        ),
        (
            bad(&|r| {
                r.on_air = Some(proto::schedule_event_request::OnAir::OnAirLocal(proto::LocalTime {
                    local: "2030-03-31T01:30".into(),
                    timezone: "Europe/London".into(),
                    fold: 0,
                }))
            }),
            "on_air_local.local",
            "daylight-saving gap",
        ),
    ];
    for (req, field, why) in cases {
        let err = e.schedule_event(authed(req, &admin)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(&format!("{field}: ")) && err.message().contains(why),
            "{field}: {}",
            err.message()
        );
    }

    // A local T0 is stored in UTC: 20:00 in Almaty (UTC+5) is 15:00Z.
    let mut local = schedule_in(0, "Silk Way Star: grand final");
    local.on_air = Some(proto::schedule_event_request::OnAir::OnAirLocal(proto::LocalTime {
        local: "2030-11-22T20:00".into(),
        timezone: "Asia/Almaty".into(),
        fold: 0,
    }));
    let fin = e.schedule_event(authed(local, &admin)).await.expect("schedule local").into_inner();
    assert_eq!(fin.on_air_utc.as_ref().unwrap().seconds, 1_921_590_000, "2030-11-22T15:00:00Z");
    assert_eq!(fin.channel_ids, legs, "empty channel_ids means every enabled channel");
    assert_eq!(state(&fin), EventState::Scheduled);
    let air = e.get_air_times(authed(r(&fin.id), &obs)).await.expect("air times").into_inner().air_times;
    let seoul = air.iter().find(|a| a.channel_id == "leg-1").unwrap();
    assert_eq!(seoul.local_on_air, "2030-11-23T00:00:00+09:00");
    assert_eq!((seoul.utc_offset_seconds, seoul.zone_abbreviation.as_str()), (9 * 3600, "KST"));

    // Get, List; NOT_FOUND and a malformed id.
    let got = e.get_event(authed(r(&fin.id), &obs)).await.expect("get").into_inner();
    assert_eq!(got, fin);
    let err = e.get_event(authed(r("ev-000000000000"), &obs)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = e.get_event(authed(r("final"), &obs)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("event_id: "), "{}", err.message());
    let err = m.get_as_run_log(authed(log_of("ev-000000000000"), &obs)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Cancel, and the transitions a cancelled event refuses.
    let c = e.cancel_event(authed(r(&fin.id), &admin)).await.expect("cancel").into_inner();
    assert_eq!(state(&c), EventState::Cancelled);
    let err = e.cancel_event(authed(r(&fin.id), &admin)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = e.arm(authed(r(&fin.id), &op)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("CANCELLED"), "{}", err.message());

    // Master control on a live event.
    let ev = e.schedule_event(authed(schedule_in(3600, "Semi-final"), &admin)).await.unwrap().into_inner();
    let other = e.schedule_event(authed(schedule_in(7200, "Gala"), &admin)).await.unwrap().into_inner();
    assert_eq!(e.list_events(authed(proto::ListEventsRequest {}, &obs)).await.unwrap().into_inner().events.len(), 3);
    let err = e.take(authed(r(&ev.id), &op)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "Take on a scheduled event");
    let err = e.switch_source(authed(proto::SwitchSourceRequest { event_id: ev.id.clone(), source: 2 }, &op)).await;
    assert_eq!(err.unwrap_err().code(), Code::FailedPrecondition, "switching before the legs run");

    let armed = e.arm(authed(r(&ev.id), &op)).await.expect("arm").into_inner();
    assert_eq!(state(&armed), EventState::Armed);
    // Armed: the legs connect and carry the slate.
    let u = watch_until(&mut m, &ev.id, &obs, Duration::from_secs(20), |u| {
        u.legs.len() == 2 && u.legs.iter().all(|l| l.state == LegState::Slate as i32 && l.bytes_sent > 0)
    })
    .await;
    assert_eq!(u.event_state, EventState::Armed as i32);
    // Before T0 the legs carry the slate, whatever the feed does.
    assert_eq!(u.source_in_use, proto::SourceSelection::Slate as i32);
    assert_eq!(u.source_mode, proto::SourceSelection::Auto as i32);
    assert!(u.source.as_ref().is_some_and(|s| s.state == "RECEIVING" && s.healthy), "{:?}", u.source);
    assert!(u.backup.is_none(), "no backup configured: {:?}", u.backup);
    assert!(
        wait_for(Duration::from_secs(10), || a.bytes() > 100_000 && b.bytes() > 100_000).await,
        "receivers got nothing"
    );
    let err = e.arm(authed(r(&other.id), &op)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(&ev.id) && err.message().contains("one event runs at a time"), "{}", err.message());
    let err = ch.delete_channel(authed(proto::DeleteChannelRequest { id: "leg-0".into() }, &admin)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "a channel on air cannot be deleted");

    let held = e.hold(authed(r(&ev.id), &op)).await.expect("hold").into_inner();
    assert_eq!(state(&held), EventState::Held);
    assert_eq!(e.hold(authed(r(&ev.id), &op)).await.unwrap_err().code(), Code::FailedPrecondition);
    let ext = e
        .extend(authed(proto::ExtendRequest { event_id: ev.id.clone(), by: dur(600) }, &op))
        .await
        .expect("extend")
        .into_inner();
    assert_eq!(ext.end_utc.unwrap().seconds - ev.end_utc.as_ref().unwrap().seconds, 600);
    let err = e.extend(authed(proto::ExtendRequest { event_id: ev.id.clone(), by: None }, &op)).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().starts_with("by: "), "{err:?}");
    let err =
        e.extend(authed(proto::ExtendRequest { event_id: ev.id.clone(), by: dur(-9000) }, &op)).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().contains("past or before T0"), "{err:?}");
    let on = e.take(authed(r(&ev.id), &op)).await.expect("take").into_inner();
    assert_eq!(state(&on), EventState::OnAir);
    let all = |want: LegState| move |u: &proto::StatusUpdate| u.legs.iter().all(|l| l.state == want as i32);
    watch_until(&mut m, &ev.id, &obs, Duration::from_secs(10), |u| {
        all(LegState::OnAir)(u) && u.source_in_use == proto::SourceSelection::Primary as i32
    })
    .await;
    let sw = |s: proto::SourceSelection| proto::SwitchSourceRequest { event_id: ev.id.clone(), source: s as i32 };
    e.switch_source(authed(sw(proto::SourceSelection::Primary), &op)).await.expect("switch to primary");
    let err = e.switch_source(authed(sw(proto::SourceSelection::Backup), &op)).await.unwrap_err();
    assert!(err.code() == Code::FailedPrecondition && err.message().contains("no backup"), "{err:?}");
    // Slate by hand holds until AUTO.
    e.switch_source(authed(sw(proto::SourceSelection::Slate), &op)).await.expect("switch to slate");
    // The legs' state follows the cue at once; the source in use, the
    // picture, a frame or a few later.
    let in_use = |want: proto::SourceSelection| move |u: &proto::StatusUpdate| u.source_in_use == want as i32;
    let u = watch_until(&mut m, &ev.id, &obs, Duration::from_secs(10), |u| {
        all(LegState::Slate)(u) && in_use(proto::SourceSelection::Slate)(u)
    })
    .await;
    assert_eq!(u.source_mode, proto::SourceSelection::Slate as i32);
    let err = e.switch_source(authed(sw(proto::SourceSelection::Unspecified), &op)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let t0_error = |page: &str, leg: &str| {
        common::server::sample(page, "simulcast_leg_t0_error_seconds", &format!("channel=\"{leg}\""))
    };
    let (_, page) = common::server::http_get(&server.http_addr, "/metrics").await;
    let t0_errors: Vec<Option<f64>> = legs.iter().map(|l| t0_error(&page, l)).collect();
    assert!(t0_errors.iter().all(Option::is_some), "{page}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    e.switch_source(authed(sw(proto::SourceSelection::Auto), &op)).await.expect("back to auto");
    // The switch back is the status's latest switch, named as master control's.
    let u = watch_until(&mut m, &ev.id, &obs, Duration::from_secs(10), |u| {
        all(LegState::OnAir)(u)
            && u.last_switch.as_ref().is_some_and(|s| s.to == proto::SourceSelection::Primary as i32)
    })
    .await;
    let last = u.last_switch.unwrap();
    assert_eq!(last.from, proto::SourceSelection::Slate as i32);
    assert!(last.reason.contains("master control"), "{last:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    // A slate break does not rewrite a leg's T0 error.
    let (_, page) = common::server::http_get(&server.http_addr, "/metrics").await;
    assert_eq!(legs.iter().map(|l| t0_error(&page, l)).collect::<Vec<_>>(), t0_errors, "{page}");

    // EndEvent: post-roll now, then the clock completes it after 1 s and the legs stop.
    let ended = e.end_event(authed(r(&ev.id), &op)).await.expect("end").into_inner();
    assert_eq!(state(&ended), EventState::PostRoll);
    assert!((ended.end_utc.unwrap().seconds - Utc::now().timestamp()).abs() <= 2, "end moved to now");
    let u =
        watch_until(&mut m, &ev.id, &obs, Duration::from_secs(10), |u| u.event_state == EventState::Completed as i32)
            .await;
    assert!(u.legs.iter().all(|l| l.state == LegState::Stopped as i32), "{:?}", u.legs);
    // The legs close off master control's loop; their totals say when.
    common::server::asrun_when_closed(&server, &ev.id, &obs, legs.len()).await;
    let frozen = (a.bytes(), b.bytes());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!((a.bytes(), b.bytes()), frozen, "legs still sending after the event completed");

    let log = asrun_kinds(&mut m, &ev.id, &obs).await;
    // The feed's own switches (`source-switched`) are timed by the picture
    // they landed on; the requests and state changes by when they were made.
    let event_kinds: Vec<&str> =
        log.iter().filter(|(k, c, _)| c.is_empty() && k != "source-switched").map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        event_kinds,
        [
            "scheduled",
            "armed",
            "held",
            "extended",
            "on-air",
            "source-selected",
            "source-selected",
            "source-selected",
            "post-roll",
            "completed"
        ]
    );
    // The primary's start, then master control's slate and its release,
    // each as the picture changed.
    let full = common::server::asrun(&server, &ev.id, &obs).await;
    let switched: Vec<&str> = full.iter().filter(|e| e.kind == "source-switched").map(|e| e.detail.as_str()).collect();
    assert_eq!(switched.len(), 3, "{switched:?}");
    assert!(switched[0].starts_with("SLATE -> PRIMARY"), "{switched:?}");
    assert_eq!(switched[1], "PRIMARY -> SLATE: slate by master control");
    assert_eq!(switched[2], "SLATE -> PRIMARY: slate released by master control");
    // Each leg's T0 error once; the return after the slate is its own kind.
    for leg in &legs {
        let kinds: Vec<&str> = full
            .iter()
            .filter(|e| &e.channel_id == leg && e.kind.starts_with("leg-program"))
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(kinds, ["leg-program", "leg-program-resumed"], "{leg}");
    }
    let actor = |kind: &str| log.iter().find(|(k, _, _)| k == kind).map(|(_, _, a)| a.as_str()).unwrap();
    assert_eq!(actor("scheduled"), "admin-tester");
    assert_eq!(actor("armed"), "operator-tester");
    assert_eq!(actor("completed"), "scheduler");
    for leg in &legs {
        for kind in ["leg-on-air", "leg-program", "legs-closed"] {
            assert!(log.iter().any(|(k, c, _)| k == kind && c == leg), "no {kind} for {leg}: {log:?}");
        }
    }

    // Abort: from armed, at once.
    e.arm(authed(r(&other.id), &op)).await.expect("arm the other");
    let asked = std::time::Instant::now();
    let ab = e.abort(authed(r(&other.id), &op)).await.expect("abort").into_inner();
    // The answer does not wait for the emergency slate (1 s) or the legs
    // to close: the coordinator's loop only decides.
    let answered = asked.elapsed();
    assert!(answered < std::time::Duration::from_millis(500), "Abort took {answered:?}");
    assert_eq!(state(&ab), EventState::Aborted);
    // The legs close after the emergency slate, each logged with its totals.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = asrun_kinds(&mut m, &other.id, &obs).await;
        if log.iter().filter(|(k, _, _)| k == "legs-aborted").count() == 2 || std::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(log.iter().filter(|(k, _, _)| k == "legs-aborted").count(), 2, "{log:?}");
    assert_eq!(e.abort(authed(r(&other.id), &op)).await.unwrap_err().code(), Code::FailedPrecondition);

    // The daemon's own log holds the channel changes.
    let sys = asrun_kinds(&mut m, "-", &obs).await;
    assert_eq!(sys.iter().filter(|(k, _, _)| k == "channel-created").count(), 2);
    server.stop().await;
}

/// Which mutating RPCs each role may call.
#[tokio::test]
async fn the_role_matrix_for_events_and_monitoring() {
    let (_dir, server, _cap) = one_partner().await;
    let admin = server.token(Role::Admin).to_owned();
    let mut e = EventServiceClient::new(server.transport().await);
    let mut m = MonitorServiceClient::new(server.transport().await);

    for role in [Role::Observer, Role::Operator, Role::Admin] {
        let t = server.token(role).to_owned();
        let ev = e.schedule_event(authed(schedule_in(3600, "Matrix"), &admin)).await.unwrap().into_inner();
        let spare = e.schedule_event(authed(schedule_in(7200, "Spare"), &admin)).await.unwrap().into_inner();
        let log_before = asrun_kinds(&mut m, &ev.id, &admin).await.len();

        // Reads: everyone.
        assert!(e.get_event(authed(r(&ev.id), &t)).await.is_ok(), "{role} get");
        assert!(e.list_events(authed(proto::ListEventsRequest {}, &t)).await.is_ok(), "{role} list");
        assert!(e.get_air_times(authed(r(&ev.id), &t)).await.is_ok(), "{role} air times");
        assert!(m.get_as_run_log(authed(log_of(&ev.id), &t)).await.is_ok(), "{role} as-run");
        let mut w = m.watch_status(authed(r(&ev.id), &t)).await.expect("watch").into_inner();
        assert!(w.message().await.unwrap().is_some(), "{role} watch");

        // Master control, in an order each call allows: operator and admin.
        let mc = role != Role::Observer;
        let results = vec![
            ("Arm", e.arm(authed(r(&ev.id), &t)).await.err()),
            ("Hold", e.hold(authed(r(&ev.id), &t)).await.err()),
            ("Extend", e.extend(authed(proto::ExtendRequest { event_id: ev.id.clone(), by: dur(60) }, &t)).await.err()),
            ("Take", e.take(authed(r(&ev.id), &t)).await.err()),
            (
                "SwitchSource",
                e.switch_source(authed(proto::SwitchSourceRequest { event_id: ev.id.clone(), source: 2 }, &t))
                    .await
                    .err(),
            ),
            ("EndEvent", e.end_event(authed(r(&ev.id), &t)).await.err()),
            ("Abort", e.abort(authed(r(&ev.id), &t)).await.err()),
        ];
        for (rpc, err) in results {
            match (mc, err) {
                (true, None) => {}
                (false, Some(err)) => assert_eq!(err.code(), Code::PermissionDenied, "{role} {rpc}: {err:?}"),
                (true, Some(err)) => panic!("{role} refused {rpc}: {err:?}"),
                (false, None) => panic!("{role} was allowed {rpc}"),
            }
        }
        // Schedule and cancel: admin only.
        let s = e.schedule_event(authed(schedule_in(9000, "By role"), &t)).await;
        let c = e.cancel_event(authed(r(&spare.id), &t)).await;
        if role == Role::Admin {
            assert!(s.is_ok() && c.is_ok(), "admin refused: {s:?} {c:?}");
            e.cancel_event(authed(r(&s.unwrap().into_inner().id), &admin)).await.unwrap();
        } else {
            assert_eq!(s.unwrap_err().code(), Code::PermissionDenied, "{role} schedule");
            assert_eq!(c.unwrap_err().code(), Code::PermissionDenied, "{role} cancel");
            e.cancel_event(authed(r(&spare.id), &admin)).await.unwrap();
        }

        // Denied calls changed nothing.
        let now = e.get_event(authed(r(&ev.id), &admin)).await.unwrap().into_inner();
        if mc {
            assert_eq!(state(&now), EventState::Aborted, "{role}");
        } else {
            assert_eq!(now, ev, "a denied call by {role} changed the event");
            assert_eq!(asrun_kinds(&mut m, &ev.id, &admin).await.len(), log_before, "{role} left as-run entries");
            e.cancel_event(authed(r(&ev.id), &admin)).await.unwrap();
        }
    }

    // No token, or an unknown one: UNAUTHENTICATED everywhere.
    let ev =
        e.list_events(authed(proto::ListEventsRequest {}, &admin)).await.unwrap().into_inner().events[0].id.clone();
    for token in [None, Some("sct_00")] {
        fn with_token<T>(token: Option<&str>, x: T) -> tonic::Request<T> {
            match token {
                Some(t) => authed(x, t),
                None => tonic::Request::new(x),
            }
        }
        let req = |x: proto::EventRef| with_token(token, x);
        let log_req = |x: proto::GetAsRunLogRequest| with_token(token, x);
        let codes = [
            e.arm(req(r(&ev))).await.unwrap_err().code(),
            e.get_event(req(r(&ev))).await.unwrap_err().code(),
            m.get_as_run_log(log_req(log_of(&ev))).await.unwrap_err().code(),
            m.watch_status(req(r(&ev))).await.map(|_| ()).unwrap_err().code(),
        ];
        assert!(codes.iter().all(|c| *c == Code::Unauthenticated), "{token:?}: {codes:?}");
    }
    server.stop().await;
}

/// A watcher that stops reading skips to the latest state and is told how
/// much it missed; meanwhile another watcher and master control go on.
#[tokio::test]
async fn a_stalled_watcher_skips_ahead_and_blocks_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options();
    o.status_every = Duration::from_millis(10);
    o.tick = Duration::from_millis(10);
    let server = ApiServer::start_with(&dir.path().join("s.db"), o).await;
    let cap = UdpCapture::start();
    seed_channels(&server, &[&cap]).await;
    let (admin, op, obs) = (
        server.token(Role::Admin).to_owned(),
        server.token(Role::Operator).to_owned(),
        server.token(Role::Observer).to_owned(),
    );
    let mut e = EventServiceClient::new(server.transport().await);
    let ev = e.schedule_event(authed(schedule_in(3600, "Lag"), &admin)).await.unwrap().into_inner();

    // The stalled watcher's connection has a tiny HTTP/2 window, so the
    // server must hold back after a few updates.
    let slow_transport = Transport::from_shared(server.addr.clone())
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut slow = MonitorServiceClient::new(slow_transport);
    let mut stalled = slow.watch_status(authed(r(&ev.id), &obs)).await.unwrap().into_inner();
    let first = stalled.message().await.unwrap().unwrap();

    let mut fast = MonitorServiceClient::new(server.transport().await)
        .watch_status(authed(r(&ev.id), &obs))
        .await
        .unwrap()
        .into_inner();
    let started = tokio::time::Instant::now();
    let mut fast_updates = 0u32;
    let mut extends = 0u32;
    while started.elapsed() < Duration::from_secs(3) {
        let u = tokio::time::timeout(Duration::from_secs(2), fast.message()).await.expect("the fast watcher starved");
        assert!(u.unwrap().is_some());
        fast_updates += 1;
        if fast_updates.is_multiple_of(20) {
            e.extend(authed(proto::ExtendRequest { event_id: ev.id.clone(), by: dur(1) }, &op)).await.expect("extend");
            extends += 1;
        }
    }
    assert!(fast_updates >= 60, "the fast watcher got only {fast_updates} updates in 3 s");
    assert!(extends >= 3);

    // Now read the stalled stream: it catches up by skipping.
    let mut skipped = 0u64;
    let mut last = first.clone();
    for _ in 0..200 {
        let u = tokio::time::timeout(Duration::from_secs(2), stalled.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(u.seq, last.seq + 1 + u.lagged, "seq and lagged disagree");
        skipped += u.lagged;
        last = u;
        if last.lagged > 0
            && last.end_utc.as_ref().unwrap().seconds == ev.end_utc.as_ref().unwrap().seconds + i64::from(extends)
        {
            break;
        }
    }
    assert!(skipped > 0, "the stalled watcher never skipped");
    assert_eq!(
        last.end_utc.unwrap().seconds,
        ev.end_utc.unwrap().seconds + i64::from(extends),
        "it did not reach the latest state"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_is_serving_only_while_the_relay_can_run() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let dir = tempfile::tempdir().unwrap();
    let mut o = default_options();
    o.media_problem = Some("legs/rist: no element \"ristsink\"".into());
    let server = ApiServer::start_with(&dir.path().join("s.db"), o).await;
    let cap = UdpCapture::start();
    seed_channels(&server, &[&cap]).await;
    let mut h = HealthClient::new(server.transport().await);
    let status = |h: &mut HealthClient<Transport>, svc: &str| {
        let mut h = h.clone();
        let svc = svc.to_owned();
        async move { h.check(HealthCheckRequest { service: svc }).await.unwrap().into_inner().status }
    };
    // The health service says so as soon as the daemon has looked.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for svc in ["", "simulcast.v1.EventService"] {
        while status(&mut h, svc).await != ServingStatus::NotServing as i32 {
            assert!(std::time::Instant::now() < deadline, "{svc} still SERVING 5 s in");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Arm says why.
    let mut e = EventServiceClient::new(server.transport().await);
    let ev =
        e.schedule_event(authed(schedule_in(3600, "No relay"), server.token(Role::Admin))).await.unwrap().into_inner();
    let err = e.arm(authed(r(&ev.id), server.token(Role::Operator))).await.unwrap_err();
    assert!(err.code() == Code::Internal && err.message().contains("ristsink"), "{err:?}");
    let still = e.get_event(authed(r(&ev.id), server.token(Role::Observer))).await.unwrap().into_inner();
    assert_eq!(state(&still), EventState::Scheduled, "a failed Arm changed the state");
    server.stop().await;

    // The same store with a working relay: SERVING, before and during an event.
    let server = ApiServer::start_with(&dir.path().join("s.db"), options()).await;
    let mut h = HealthClient::new(server.transport().await);
    let mut serving = false;
    for _ in 0..50 {
        if status(&mut h, "").await == ServingStatus::Serving as i32 {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(serving, "a healthy daemon is not SERVING");
    let mut e = EventServiceClient::new(server.transport().await);
    e.arm(authed(r(&ev.id), server.token(Role::Operator))).await.expect("arm");
    assert_eq!(status(&mut h, "simulcast.v1.MonitorService").await, ServingStatus::Serving as i32);
    server.stop().await;
}

#[tokio::test]
async fn an_rtmp_leg_is_refused_at_schedule_and_arm_for_a_passthrough_programme_in_hevc() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options();
    o.relay_enabled = false;
    o.program.mode = config::ProgramMode::Passthrough;
    o.program.video_codec = simulcast::media::es::VideoCodec::Hevc;
    let server = ApiServer::start_with(&dir.path().join("s.db"), o).await;
    let a = UdpCapture::start();
    let legs = seed_channels(&server, &[&a]).await;
    let (admin, op) = (server.token(Role::Admin).to_owned(), server.token(Role::Operator).to_owned());
    let mut e = EventServiceClient::new(server.transport().await);
    let mut ch = ChannelServiceClient::new(server.transport().await);
    let kg = config::default_config().channels.into_iter().find(|c| c.id.as_str() == "kg-ktrk").unwrap();
    let req = proto::CreateChannelRequest { channel: Some(channel_to_proto_with_secrets(&kg)) };
    ch.create_channel(authed(req, &admin)).await.expect("create the RTMP channel");

    // Every enabled channel, so the RTMP one too: refused, naming it and the codec.
    let err = e.schedule_event(authed(schedule_in(3600, "Final"), &admin)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("`kg-ktrk` is an RTMP leg") && err.message().contains("HEVC"), "{err:?}");

    // Without it, the event is scheduled; the RTMP channel then joins it by
    // an update of its ingest, and Arm says so before anything runs.
    let mut req = schedule_in(3600, "Final");
    req.channel_ids = legs.clone();
    let ev = e.schedule_event(authed(req, &admin)).await.expect("schedule").into_inner();
    let mut spec = kg.spec.clone();
    spec.id = legs[0].clone();
    let leg = config::compile_channel(spec, "").unwrap();
    let upd = proto::UpdateChannelRequest { channel: Some(channel_to_proto_with_secrets(&leg)) };
    ch.update_channel(authed(upd, &admin)).await.expect("update the channel to RTMP");
    let err = e.arm(authed(r(&ev.id), &op)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&format!("`{}` is an RTMP leg", legs[0])), "{err:?}");
    let now = e.get_event(authed(r(&ev.id), &op)).await.unwrap().into_inner();
    assert_eq!(state(&now), EventState::Scheduled, "nothing moved");
}

/// A file channel `id` writing to `path`, as the API gets it.
fn file_channel(id: &str, path: &str) -> proto::Channel {
    common::server::proto_channel(id, &format!("{{ type = \"file\", path = \"{path}\" }}"))
}

#[tokio::test]
async fn file_legs_write_only_inside_their_directory() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let db = dir.path().join("s.db");
    // A channel stored before the rule (an older version, an import).
    Store::open(&db)
        .unwrap()
        .insert_channel(
            &config::parse_channel(&format!(
                "id = \"old-archive\"\nname = \"Old\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
         ingest = {{ type = \"file\", path = \"{}\" }}\n",
                victim.display()
            ))
            .unwrap(),
        )
        .unwrap();
    let mut o = options();
    o.file_legs = files.clone();
    let server = ApiServer::start_with(&db, o).await;
    let (admin, op) = (server.token(Role::Admin).to_owned(), server.token(Role::Operator).to_owned());
    let mut c = ChannelServiceClient::new(server.transport().await);
    let mut e = EventServiceClient::new(server.transport().await);

    for path in ["/etc/passwd", &victim.display().to_string(), "../victim.txt", "a/../../victim.txt"] {
        let req = proto::CreateChannelRequest { channel: Some(file_channel("archive", path)) };
        let err = c.create_channel(authed(req, &admin)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
        assert!(err.message().contains("file leg path"), "{path}: {}", err.message());
    }
    let req = proto::CreateChannelRequest { channel: Some(file_channel("archive", "final/silk-way.ts")) };
    c.create_channel(authed(req, &admin)).await.expect("a path inside the directory");
    let moved = proto::UpdateChannelRequest { channel: Some(file_channel("archive", "/etc/passwd")) };
    assert_eq!(c.update_channel(authed(moved, &admin)).await.unwrap_err().code(), Code::InvalidArgument);

    // Scheduling names the old channel; the rest air, into the directory.
    let mut req = schedule_in(30, "Final");
    req.channel_ids = vec!["old-archive".into(), "archive".into()];
    let err = e.schedule_event(authed(req, &admin)).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().contains("old-archive"), "{err:?}");
    let mut req = schedule_in(30, "Final");
    req.channel_ids = vec!["archive".into()];
    let ev = e.schedule_event(authed(req, &admin)).await.expect("schedule").into_inner();
    e.arm(authed(r(&ev.id), &op)).await.expect("arm");
    let written = files.join("final/silk-way.ts");
    assert!(
        wait_for(Duration::from_secs(15), || std::fs::metadata(&written).is_ok_and(|m| m.len() > 50_000)).await,
        "nothing written to {}",
        written.display()
    );
    e.abort(authed(r(&ev.id), &op)).await.expect("abort");
    server.stop().await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

/// Two events on two UDP partners: A armed, its legs connected and
/// sending (the slate, before T0); B scheduled `b_in` seconds from now.
struct AArmed {
    _dir: tempfile::TempDir,
    server: ApiServer,
    _partners: (UdpCapture, UdpCapture),
    admin: String,
    op: String,
    e: EventServiceClient<Transport>,
    m: MonitorServiceClient<Transport>,
    a: proto::Event,
    b: proto::Event,
}

async fn a_armed_b_scheduled(b_in: i64) -> AArmed {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start_with(&dir.path().join("s.db"), options()).await;
    let partners = (UdpCapture::start(), UdpCapture::start());
    seed_channels(&server, &[&partners.0, &partners.1]).await;
    let (admin, op) = (server.token(Role::Admin).to_owned(), server.token(Role::Operator).to_owned());
    let mut e = EventServiceClient::new(server.transport().await);
    let a = e.schedule_event(authed(schedule_in(3600, "A"), &admin)).await.expect("A").into_inner();
    let b = e.schedule_event(authed(schedule_in(b_in, "B"), &admin)).await.expect("B").into_inner();
    e.arm(authed(r(&a.id), &op)).await.expect("arm A");
    let mut m = MonitorServiceClient::new(server.transport().await);
    watch_until(&mut m, &a.id, &op, Duration::from_secs(15), sending).await;
    AArmed { _dir: dir, server, _partners: partners, admin, op, e, m, a, b }
}

/// Both legs connected and sending (the slate or the programme).
fn sending(u: &proto::StatusUpdate) -> bool {
    let sending = [LegState::Slate as i32, LegState::OnAir as i32];
    u.legs.len() == 2 && u.legs.iter().all(|l| sending.contains(&l.state))
}

/// Cancelling (or ending) one event never touches another's relay: with
/// event A armed and its legs on air, cancelling scheduled event B answers
/// at once, and A's legs stay on air with nothing closed in its log. (The
/// coordinator stopped whatever relay ran on any event's way out of being
/// live, B's cancel included: A's partners went black.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_another_event_leaves_the_armed_ones_legs_on_air() {
    let AArmed { _dir, server, _partners, admin, op, mut e, mut m, a, b } = a_armed_b_scheduled(4 * 3600).await;

    let asked = std::time::Instant::now();
    let cancelled = e.cancel_event(authed(r(&b.id), &admin)).await.expect("cancel B").into_inner();
    let took = asked.elapsed();
    assert_eq!(state(&cancelled), EventState::Cancelled);
    assert!(took < Duration::from_millis(200), "CancelEvent of B took {took:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = watch_until(&mut m, &a.id, &op, Duration::from_secs(2), |_| true).await;
    assert!(sending(&after), "A's legs after B was cancelled: {:#?}", after.legs);
    let kinds = asrun_kinds(&mut m, &a.id, &op).await;
    assert!(!kinds.iter().any(|(k, _, _)| k == "legs-closed" || k == "legs-aborted"), "{kinds:?}");
    e.abort(authed(r(&a.id), &op)).await.expect("abort A");
    server.stop().await;
}

/// Master control never waits on a relay being built: an Arm whose relay
/// must wait for the last one to be gone (an abort's second of emergency
/// slate) is answered when its legs are up, and meanwhile reads answer at
/// once and a second action on the arming event is refused, naming why.
/// (The coordinator built the relay on its loop, after waiting for the
/// last one: every RPC waited about a second behind the Arm.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arm_waiting_for_the_last_relay_leaves_master_control_answering() {
    let AArmed { _dir, server, _partners, admin: _, op, mut e, mut m, a, b } = a_armed_b_scheduled(2 * 3600).await;

    e.abort(authed(r(&a.id), &op)).await.expect("abort A");
    let arm_b = {
        let (mut e, id, op) = (e.clone(), b.id.clone(), op.clone());
        tokio::spawn(async move {
            let asked = std::time::Instant::now();
            let armed = e.arm(authed(r(&id), &op)).await;
            (armed, asked.elapsed())
        })
    };
    // B's Arm is under way (its relay waits for A's to be gone): master
    // control refuses to move B, saying why.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let refused = e.hold(authed(r(&b.id), &op)).await.expect_err("hold B before its relay runs");
        if refused.message().contains("relay is starting") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B's Arm never got under way: {refused:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut reads = Vec::new();
    for _ in 0..8 {
        let asked = std::time::Instant::now();
        let got = e.get_event(authed(r(&a.id), &op)).await.expect("get A").into_inner();
        assert_eq!(state(&got), EventState::Aborted);
        e.list_events(authed(proto::ListEventsRequest::default(), &op)).await.expect("list");
        reads.push(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slowest = reads.iter().max().copied().unwrap_or_default();
    assert!(slowest < Duration::from_millis(100), "reads while B armed took {reads:?}");
    let again = e.hold(authed(r(&b.id), &op)).await.expect_err("hold B while its relay starts");
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("relay is starting"), "{}", again.message());
    let (armed, took) = arm_b.await.expect("arm task");
    let armed = armed.expect("arm B").into_inner();
    assert_eq!(state(&armed), EventState::Armed);
    assert!(
        took > Duration::from_millis(500),
        "B's Arm did not wait for A's relay ({took:?}): the reads proved nothing"
    );
    watch_until(&mut m, &b.id, &op, Duration::from_secs(15), |u| u.event_id == b.id && sending(u)).await;
    e.abort(authed(r(&b.id), &op)).await.expect("abort B");
    server.stop().await;
}

/// A long event's as-run log comes in pages. With 200 000 entries (27 MB
/// of messages) GetAsRunLog failed outright (OUT_OF_RANGE: the response
/// passed the 1 MiB message limit) and `simulcastctl asrun` with it. Now
/// each page stays under the limit, the pages give every entry once, in
/// order, a forged page token is refused, and master control answers
/// while a client pages through the log (its reads go beside the loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_as_run_log_comes_in_pages_and_holds_up_no_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let server = ApiServer::start_with(&db, options()).await;
    let partner = UdpCapture::start();
    seed_channels(&server, &[&partner]).await;
    let (admin, op) = (server.token(Role::Admin).to_owned(), server.token(Role::Operator).to_owned());
    let mut e = EventServiceClient::new(server.transport().await);
    let ev = e.schedule_event(authed(schedule_in(3600, "Export"), &admin)).await.expect("schedule").into_inner();
    {
        // Written beside the daemon, as years of entries would be.
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let tx = conn.transaction().unwrap();
        let mut insert = tx
            .prepare(
                "INSERT INTO asrun (event_id, utc, channel_id, local_time, kind, detail, actor, timezone) \
                 VALUES (?1, '2026-12-03T10:00:00Z', 'kz-khabar', '2026-12-03T15:00:00+05:00', 'leg-error', ?2, \
                 'simulcastd', 'Asia/Almaty')",
            )
            .unwrap();
        for i in 0..200_000 {
            insert
                .execute(rusqlite::params![ev.id, format!("srt://127.0.0.1:9000: connection refused ({i})")])
                .unwrap();
        }
        drop(insert);
        tx.commit().unwrap();
    }
    let paging = {
        let mut m = MonitorServiceClient::new(server.transport().await);
        let (id, op) = (ev.id.clone(), op.clone());
        tokio::spawn(async move {
            let (mut details, mut pages, mut token) = (Vec::new(), 0, String::new());
            loop {
                let req = proto::GetAsRunLogRequest { event_id: id.clone(), page_size: 0, page_token: token };
                let page = m.get_as_run_log(authed(req, &op)).await.expect("a page").into_inner();
                assert!(prost::Message::encoded_len(&page) < 1 << 20, "page {pages} is too big");
                assert!(page.entries.len() <= 2000, "page {pages}: {} entries", page.entries.len());
                details.extend(page.entries.into_iter().map(|e| e.detail));
                pages += 1;
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            (details, pages)
        })
    };
    let mut answers = Vec::new();
    while !paging.is_finished() {
        let asked = std::time::Instant::now();
        e.get_event(authed(r(&ev.id), &op)).await.expect("get");
        answers.push(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (details, pages) = paging.await.unwrap();
    let refused = |i: usize| format!("srt://127.0.0.1:9000: connection refused ({i})");
    let written: Vec<&String> = details.iter().filter(|d| d.contains("connection refused (")).collect();
    assert_eq!(written.len(), 200_000, "{pages} pages");
    assert!(written.iter().enumerate().all(|(i, d)| **d == refused(i)), "out of order or repeated");
    // The event's own `scheduled` entry, written before them, comes first.
    assert_eq!(details.len(), 200_001);
    assert!(!details[0].contains("connection refused"), "{:?}", &details[..2]);
    let slowest = answers.iter().max().copied().unwrap_or_default();
    eprintln!("{pages} pages; {} GetEvent while paging, slowest {slowest:?}", answers.len());
    assert!(slowest < Duration::from_millis(50), "GetEvent took {slowest:?} while a client paged the log");
    // Beyond the last page, and a token this server never gave.
    let mut m = MonitorServiceClient::new(server.transport().await);
    let forged = proto::GetAsRunLogRequest { event_id: ev.id.clone(), page_size: 10, page_token: "x".into() };
    let err = m.get_as_run_log(authed(forged, &op)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("page_token"), "{}", err.message());
    let small = proto::GetAsRunLogRequest { event_id: ev.id.clone(), page_size: 10, page_token: String::new() };
    let first = m.get_as_run_log(authed(small, &op)).await.expect("10").into_inner();
    assert_eq!(first.entries.len(), 10);
    assert!(!first.next_page_token.is_empty());
    // simulcastctl reads every page.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
        .args(["--json", "asrun", &ev.id])
        .env("SIMULCAST_ADDR", &server.addr)
        .env("SIMULCAST_TOKEN", &op)
        .output()
        .expect("simulcastctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(all.as_array().map(Vec::len), Some(details.len()));
    server.stop().await;
}

/// A write the store refuses (a trigger here, as a full disk would) fails
/// the command that asked for it, and only that: the client hears the
/// store failed, nothing stored before is lost, and master control's
/// memory follows the store (the refused event is not in the schedule).
/// Once the store takes writes again, scheduling works, and a daemon
/// started again on the store finds what was answered "done".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_store_refuses_fails_its_command_and_the_schedule_follows_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("simulcast.db");
    let server = ApiServer::start_with(&db, options()).await;
    let admin = server.token(Role::Admin).to_owned();
    // One channel (nothing is armed: nothing is sent to it).
    let ch = config::parse_channel(
        "id = \"kz\"\nname = \"KZ\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
         ingest = { type = \"udp\", uri = \"udp://127.0.0.1:9\" }\n",
    )
    .expect("channel");
    let req = proto::CreateChannelRequest { channel: Some(channel_to_proto_with_secrets(&ch)) };
    let mut c = ChannelServiceClient::new(server.transport().await);
    c.create_channel(authed(req, &admin)).await.expect("create channel");
    let mut e = EventServiceClient::new(server.transport().await);
    let titles = |events: &[proto::Event]| events.iter().map(|e| e.title.clone()).collect::<Vec<_>>();
    let kept = e.schedule_event(authed(schedule_in(3600, "Kept"), &admin)).await.expect("schedule").into_inner();

    // Another connection to the same file, as an operator's sqlite3.
    let other = rusqlite::Connection::open(&db).unwrap();
    other
        .execute_batch("CREATE TRIGGER refuse BEFORE INSERT ON events BEGIN SELECT RAISE(FAIL, 'disk full'); END;")
        .unwrap();
    let refused = e.schedule_event(authed(schedule_in(7200, "Refused"), &admin)).await.expect_err("refused");
    assert_eq!(refused.code(), Code::Internal, "{refused:?}");
    assert!(refused.message().contains("store failed"), "{}", refused.message());
    let listed = e.list_events(authed(proto::ListEventsRequest {}, &admin)).await.expect("list").into_inner();
    assert_eq!(titles(&listed.events), ["Kept"], "memory holds what the store holds");
    // Counted for the on-call engineer (the published snapshot follows
    // within the 50 ms publish gap).
    let counted = "simulcast_store_write_failures_total{daemon=\"simulcastd\"} 1\n";
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let mut page = String::new();
    while std::time::Instant::now() < end && !page.contains(counted) {
        page = common::server::http_get(&server.http_addr, "/metrics").await.1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(page.contains(counted), "{page}");
    // Writes of other kinds still go through.
    let cancelled = e.cancel_event(authed(r(&kept.id), &admin)).await.expect("cancel").into_inner();
    assert_eq!(state(&cancelled), EventState::Cancelled);

    other.execute_batch("DROP TRIGGER refuse;").unwrap();
    e.schedule_event(authed(schedule_in(7200, "Again"), &admin)).await.expect("schedule again");
    server.stop().await;

    let again = ApiServer::start_with(&db, options()).await;
    let mut e = EventServiceClient::new(again.transport().await);
    let listed = e.list_events(authed(proto::ListEventsRequest {}, again.token(Role::Admin))).await.unwrap();
    let listed = listed.into_inner().events;
    assert_eq!(titles(&listed), ["Kept", "Again"]);
    assert_eq!(state(&listed[0]), EventState::Cancelled);
    again.stop().await;
}

/// A change reaches the watchers spread over `WATCH_SPREAD` (40 ms), each
/// stream at its own offset, not in one burst: 200 streams woken at once
/// were 400 tasks queued ahead of any RPC that came meanwhile (the control
/// bench's Hold p99 with 200 watchers, 12.6 and 15.1 ms in one burst, 7.6
/// and 8.7 ms spread; docs/benchmarks.md). Every watcher still gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_the_watchers_spread_out_not_in_one_burst() {
    use simulcast::api::monitor::WATCH_SPREAD;

    let (_dir, server, _cap) = one_partner().await;
    let (admin, obs) = (server.token(Role::Admin).to_owned(), server.token(Role::Observer).to_owned());
    let mut e = EventServiceClient::new(server.transport().await);
    let ev = e.schedule_event(authed(schedule_in(3600, "Spread"), &admin)).await.unwrap().into_inner();
    let extended = ev.end_utc.as_ref().unwrap().seconds + 60;

    // 40 watchers, each on its own connection, each noting when the
    // extended end first reaches it.
    let mut readers = Vec::new();
    for _ in 0..40 {
        let mut m = MonitorServiceClient::new(server.transport().await);
        let mut s = m.watch_status(authed(r(&ev.id), &obs)).await.expect("watch").into_inner();
        assert!(s.message().await.unwrap().is_some(), "no first update");
        readers.push(tokio::spawn(async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(5), s.message()).await {
                    Ok(Ok(Some(u))) if u.end_utc.as_ref().is_some_and(|t| t.seconds == extended) => {
                        return Some(tokio::time::Instant::now());
                    }
                    Ok(Ok(Some(_))) => {}
                    _ => return None,
                }
            }
        }));
    }
    let op = server.token(Role::Operator).to_owned();
    e.extend(authed(proto::ExtendRequest { event_id: ev.id.clone(), by: dur(60) }, &op)).await.expect("extend");
    let mut got = Vec::new();
    for reader in readers {
        got.push(reader.await.unwrap().expect("a watcher never saw the extension"));
    }
    let spread = *got.iter().max().unwrap() - *got.iter().min().unwrap();
    println!("the extension reached 40 watchers over {spread:?}");
    assert!(
        spread >= WATCH_SPREAD / 2,
        "the extension reached 40 watchers within {spread:?}: in one burst, not spread over {WATCH_SPREAD:?}"
    );
    server.stop().await;
}

/// A change to one event copies that event alone into the list clients
/// read (and every snapshot carries): the others are shared. Every change
/// used to copy every event, so master control slowed with the schedule's
/// history (the control bench with 3 000 events scheduled: Hold p50 12 to
/// 14 ms, turns up to 25 ms; shared, 1.7 to 2.1 ms; docs/benchmarks.md).
#[tokio::test]
async fn a_change_to_one_event_leaves_the_others_shared_in_the_list() {
    use std::sync::Arc;

    let (_dir, server, _cap) = one_partner().await;
    let (admin, op) = (server.token(Role::Admin).to_owned(), server.token(Role::Operator).to_owned());
    let mut e = EventServiceClient::new(server.transport().await);
    let first = e.schedule_event(authed(schedule_in(3600, "First"), &admin)).await.unwrap().into_inner();
    let second = e.schedule_event(authed(schedule_in(7200, "Second"), &admin)).await.unwrap().into_inner();
    let before = server.coordinator.events().await.unwrap();
    e.extend(authed(proto::ExtendRequest { event_id: first.id.clone(), by: dur(60) }, &op)).await.expect("extend");
    let after = server.coordinator.events().await.unwrap();

    let find = |list: &Arc<Vec<Arc<simulcast::schedule::Event>>>, id: &str| {
        Arc::clone(list.iter().find(|e| e.id.0 == id).expect("listed"))
    };
    assert!(
        Arc::ptr_eq(&find(&before, &second.id), &find(&after, &second.id)),
        "extending one event copied another into the list"
    );
    assert!(
        !Arc::ptr_eq(&find(&before, &first.id), &find(&after, &first.id)),
        "the extended event was not listed again"
    );
    assert_eq!(
        find(&after, &first.id).duration,
        find(&before, &first.id).duration + Duration::from_secs(60),
        "the list does not show the extension"
    );
    let order: Vec<&str> = after.iter().map(|e| e.id.0.as_str()).collect();
    assert_eq!(order, [first.id.as_str(), second.id.as_str()], "the list is not by T0");
    server.stop().await;
}
