//! The multiviewer page in a real browser (Debian's chromium, headless,
//! over WebDriver) during a real event with four legs: one tile per leg
//! with its partner's local time and air time, a countdown that moves, a
//! partner that vanishes seen on its tile, and a screenshot kept.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use common::browser::Browser;
use common::server::{ApiServer, authed, create_channel};
use common::{ChildGuard, SrtReceiver, UdpCapture, channel, config_with, peer_port, require, wait_for};
use serde_json::{Value, json};
use simulcast::api::auth::Role;
use simulcast::api::convert::timestamp;
use simulcast::coordinator::Options;
use simulcast::proto::event_service_client::EventServiceClient;
use simulcast::proto::monitor_service_client::MonitorServiceClient;
use simulcast::proto::{self};

/// Every tile as the page shows it: (leg, state, local now, air time).
const TILES: &str = "return [...document.querySelectorAll('[data-leg]')].map(t => [t.dataset.leg, \
    t.querySelector('.state').textContent, t.querySelector('.local-now').textContent, \
    t.querySelector('.local-air').textContent]);";

fn tiles(b: &Browser) -> Vec<(String, String, String, String)> {
    let v = b.eval(TILES, json!([]));
    let text = |x: &Value| x.as_str().unwrap_or_default().to_owned();
    v.as_array().unwrap().iter().map(|t| (text(&t[0]), text(&t[1]), text(&t[2]), text(&t[3]))).collect()
}

/// Seconds between two times of day `HH:MM:SS`, the short way round midnight.
fn apart(a: &str, b: &str) -> i64 {
    let secs = |t: &str| {
        chrono::NaiveTime::parse_from_str(t, "%H:%M:%S")
            .unwrap()
            .signed_duration_since(chrono::NaiveTime::MIN)
            .num_seconds()
    };
    let d = (secs(a) - secs(b)).rem_euclid(86_400);
    d.min(86_400 - d)
}

/// The venue: ffmpeg sending a moving test picture (H.264, GOP 1 s) and a
/// tone to the relay's UDP input, in real time, for `seconds`.
fn venue(port: u16, seconds: u32) -> ChildGuard {
    require("ffmpeg", "ffmpeg");
    let child = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start ffmpeg");
    ChildGuard(child)
}

/// An event starting at `t0`: an hour long, pre-roll 60 s (armed at once
/// when T0 is nearer), post-roll 5 s, every channel.
fn schedule(title: &str, t0: chrono::DateTime<Utc>) -> proto::ScheduleEventRequest {
    proto::ScheduleEventRequest {
        title: title.into(),
        on_air: Some(proto::schedule_event_request::OnAir::OnAirUtc(timestamp(t0))),
        duration: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        preroll: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
        postroll: Some(prost_types::Duration { seconds: 5, nanos: 0 }),
        channel_ids: vec![],
    }
}

/// The daemon (in this process) relaying a UDP contribution in
/// passthrough, 640x360p25: it, the contribution's port, and its store's
/// and recordings' directories (kept while it runs).
async fn passthrough_daemon() -> (ApiServer, u16, [tempfile::TempDir; 2]) {
    let (rec, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source_port = peer_port();
    let config = simulcast::config::parse(&format!(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{source_port}\"\n\
         [program]\nwidth = 640\nheight = 360\nframerate = 25\ngop = 25\n"
    ))
    .expect("config");
    let mut options = Options::from_config(&config);
    options.recordings = rec.path().to_owned();
    let server = ApiServer::start_with(&dir.path().join("s.db"), options).await;
    (server, source_port, [rec, dir])
}

/// `n` UDP partners whose sockets are open but never read (the kernel
/// drops what overflows): a capture kept in this process would count as
/// the daemon's memory.
async fn unread_partners(server: &ApiServer, n: usize) -> Vec<std::net::UdpSocket> {
    let legs: Vec<std::net::UdpSocket> = (0..n).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for (i, rx) in legs.iter().enumerate() {
        let text = format!(
            "id = \"leg-{i}\"\nname = \"Partner {i}\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}\n",
            rx.local_addr().unwrap().port()
        );
        create_channel(server, &text).await;
    }
    legs
}

/// What the page shows of each picture card: (name, width of the loaded
/// picture, mean luma).
const CARDS: &str = "return [...document.querySelectorAll('[data-feed]')].map(c => [c.dataset.feed, \
    c.querySelector('img').naturalWidth, Number(c.dataset.luma || -1)]);";

/// The bytes of `name`'s thumbnail as the page fetches it.
fn thumb_bytes(b: &Browser, token: &str, name: &str) -> Vec<u8> {
    let v = b.call_async(
        "const [token, name, done] = arguments; fetch('/api/web/thumb/' + name, { headers: { authorization: 'Bearer ' + token } }) \
         .then(r => r.arrayBuffer()).then(a => done([...new Uint8Array(a)]), e => done(String(e)));",
        json!([token, name]),
    );
    v.as_array().unwrap_or_else(|| panic!("{v}")).iter().map(|x| x.as_u64().unwrap() as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_every_leg_in_its_partners_time_and_a_partner_that_vanishes() {
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();
    // A real contribution over UDP, relayed in passthrough: the
    // thumbnails are the only decode.
    let (server, source_port, _dirs) = passthrough_daemon().await;
    let _venue = venue(source_port, 60);

    // Four partners in four zones, one of them (Tbilisi) over SRT.
    let mut srt = SrtReceiver::start(peer_port());
    let udp = [UdpCapture::start(), UdpCapture::start(), UdpCapture::start()];
    let zones: [(&str, &str, &str); 4] = [
        ("ge-gpb", "GE", "Asia/Tbilisi"),
        ("kz-khabar", "KZ", "Asia/Almaty"),
        ("in-dd", "IN", "Asia/Kolkata"),
        ("kr-kbs", "KR", "Asia/Seoul"),
    ];
    for (i, (id, country, zone)) in zones.iter().enumerate() {
        let ingest = match i {
            0 => format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{}\" }}", srt.port),
            _ => format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp[i - 1].port),
        };
        let text = format!(
            "id = \"{id}\"\nname = \"Partner {country}\"\ncountry = \"{country}\"\ntimezone = \"{zone}\"\ningest = {ingest}\n"
        );
        create_channel(&server, &text).await;
    }
    // T0 on a whole second, 12 s ahead: armed at once (pre-roll 60 s).
    let t0 = Utc.timestamp_opt(Utc::now().timestamp() + 12, 0).unwrap();
    let admin = server.token(Role::Admin).to_owned();
    let mut events = EventServiceClient::new(server.transport().await);
    let request = schedule("Silk Way Star: grand final", t0);
    let event_id = events.schedule_event(authed(request, &admin)).await.expect("schedule").into_inner().id;

    // An observer signs in on the page.
    let observer = server.token(Role::Observer).to_owned();
    let observer_token = observer.clone();
    let url = server.http_addr.clone();
    let browser = tokio::task::spawn_blocking(move || {
        browser.open(&format!("{url}/"));
        browser.eval(
            "document.getElementById('token').value = arguments[0]; document.getElementById('signin').requestSubmit();",
            json!([observer]),
        );
        browser
    })
    .await
    .unwrap();
    let b = std::sync::Arc::new(browser);
    let four = {
        let b = std::sync::Arc::clone(&b);
        wait_for(Duration::from_secs(10), move || tiles(&b).len() == 4).await
    };
    assert!(four, "the page shows {:?}", tiles(&b));

    // One tile per leg, each with its partner's local time now and its air
    // time, as chrono-tz has them.
    let shown = tiles(&b);
    let now = Utc::now();
    for (id, _, zone) in zones {
        let (_, _, local_now, local_air) =
            shown.iter().find(|t| t.0 == id).unwrap_or_else(|| panic!("no tile for {id}"));
        let tz: Tz = zone.parse().unwrap();
        let want_now = now.with_timezone(&tz).format("%H:%M:%S").to_string();
        assert!(apart(local_now, &want_now) <= 2, "{id}: local time {local_now}, wanted about {want_now}");
        assert_eq!(local_air, &t0.with_timezone(&tz).format("%H:%M:%S %Z").to_string(), "{id}");
    }
    // The countdown moves.
    let countdown = || b.eval("return document.getElementById('countdown').textContent;", json!([]));
    let first = countdown();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = countdown();
    assert_ne!(first, second, "the countdown stood still");
    assert!(first.as_str().unwrap().starts_with("-00:00:"), "{first}");

    // On air: the pictures. The programme's and the primary's thumbnails
    // are loaded on the page, the programme's bytes change from one second
    // to the next (a moving picture), and the programme (test bars) is
    // brighter than the slate (a dark card).
    let on_air = wait_for(Duration::from_secs(25), || tiles(&b).iter().all(|t| t.1 == "ON_AIR")).await;
    assert!(on_air, "not every tile went ON_AIR: {:?}", tiles(&b));
    let cards = |b: &Browser| -> Vec<(String, i64, f64)> {
        let v = b.eval(CARDS, json!([]));
        let card = |c: &Value| (c[0].as_str().unwrap().to_owned(), c[1].as_i64().unwrap(), c[2].as_f64().unwrap());
        v.as_array().unwrap().iter().map(card).collect()
    };
    let luma_of = |cards: &[(String, i64, f64)], name: &str| cards.iter().find(|c| c.0 == name).map_or(-1.0, |c| c.2);
    let pictures = wait_for(Duration::from_secs(10), || {
        let c = cards(&b);
        let loaded = ["program", "primary", "slate"].iter().all(|n| c.iter().any(|x| x.0 == *n && x.1 == 320));
        // The programme thumbnail of the first second after T0 may still show the slate.
        loaded && luma_of(&c, "program") > luma_of(&c, "slate") + 20.0
    })
    .await;
    let shown = cards(&b);
    assert!(pictures, "the picture cards show {shown:?}");
    // The programme's card says master control's choice and the feed on air.
    let said = b.eval("return document.querySelectorAll('[data-feed=\"program\"] .sub')[1].textContent;", json!([]));
    assert_eq!(said, json!("source AUTO · on air: PRIMARY"));
    // Under the programme's and the primary's pictures, a meter for their
    // one audio track: ffmpeg's sine, 1/8 of full scale, -21 dBFS RMS.
    let meters = "return [...document.querySelectorAll('[data-feed]')].map(c => [c.dataset.feed, \
        [...c.querySelectorAll('.meter')].map(m => m.dataset.rms)]);";
    let heard = wait_for(Duration::from_secs(5), || {
        let v = b.eval(meters, json!([]));
        ["program", "primary"].iter().all(|n| {
            v.as_array().unwrap().iter().any(|c| {
                let rms = c[1]
                    .as_array()
                    .map(|r| r.iter().filter_map(|x| x.as_str()?.parse::<f64>().ok()).collect::<Vec<_>>());
                c[0] == *n && rms.is_some_and(|r| r.len() == 1 && (-24.0..-18.0).contains(&r[0]))
            })
        })
    })
    .await;
    assert!(heard, "the meters show {}", b.eval(meters, json!([])));
    let first = thumb_bytes(&b, &observer_token, "program");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let later = thumb_bytes(&b, &observer_token, "program");
    assert_eq!((&first[..2], &later[..2]), (&b"\xff\xd8"[..], &b"\xff\xd8"[..]), "JPEG pictures");
    assert_ne!(first, later, "the programme's thumbnail did not change in 2.2 s");
    // The visual as-run: each leg's first programme picture and the switch
    // to the primary at T0 keep the picture partners got then, in the log
    // (GetAsRunLog, GetAsRunPicture) and on the page, downloadable.
    let mut monitor = MonitorServiceClient::new(server.transport().await);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (kept, log) = loop {
        let req = authed(proto::GetAsRunLogRequest { event_id: event_id.clone(), ..Default::default() }, &admin);
        let log = monitor.get_as_run_log(req).await.expect("as-run").into_inner().entries;
        let with = |kind: &str| log.iter().filter(|e| e.kind == kind && e.picture_id > 0).count();
        if with("leg-program") == 4 && with("source-switched") >= 1 {
            break (true, log);
        }
        if Instant::now() > deadline {
            break (false, log);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(kept, "entries without their picture: {log:#?}");
    let id = log.iter().find(|e| e.kind == "leg-program").unwrap().picture_id;
    let req = authed(proto::AsRunPictureRef { picture_id: id }, &observer_token);
    let pic = monitor.get_as_run_picture(req).await.expect("picture").into_inner();
    assert_eq!((pic.event_id.as_str(), &pic.jpeg[..2]), (event_id.as_str(), &b"\xff\xd8"[..]));
    let proofs = "return [...document.querySelectorAll('#asrun img.proof')].filter(i => i.naturalWidth === 320).length \
        + ':' + document.querySelectorAll('#asrun a.download').length;";
    let on_page = wait_for(Duration::from_secs(5), || b.eval(proofs, json!([])) == json!("5:5")).await;
    assert!(on_page, "the page shows {} as-run pictures (loaded:links)", b.eval(proofs, json!([])));
    let shot = b.screenshot(&std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("multiviewer.png"));
    assert_eq!(&shot[..8], b"\x89PNG\r\n\x1a\n");

    // Then the Tbilisi partner's receiver goes away: its tile says so
    // within 2 s.
    let killed = Instant::now();
    srt.stop();
    let lost = |s: &str| matches!(s, "RECONNECTING" | "CONNECTING" | "FAILED");
    let seen = wait_for(Duration::from_secs(15), || tiles(&b).iter().any(|t| t.0 == "ge-gpb" && lost(&t.1))).await;
    let on_page = killed.elapsed();
    assert!(seen, "the vanished partner's tile still says {:?}", tiles(&b));
    println!("The vanished partner's tile changed {:.2} s after its receiver was killed.", on_page.as_secs_f64());
    assert!(on_page <= Duration::from_secs(2), "the tile changed {on_page:?} after the receiver was killed");
    let others = tiles(&b);
    assert!(others.iter().filter(|t| t.0 != "ge-gpb").all(|t| t.1 == "ON_AIR"), "{others:?}");
    // A page left open does not hold the daemon up when it stops.
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.stop()).await;
    assert!(stopped.is_ok(), "the daemon did not stop within 10 s with a page open");
    drop(b);
}

/// How long the delayed legs of the visual as-run tests wait.
const DELAY_S: i64 = 4;

/// A passthrough event whose `kr-late` leg airs `DELAY_S` after T0 at its
/// own local time, beside a live `kz-live` leg when `with_live`: the
/// pictures kept with each leg's first programme entry (live, delayed),
/// and when the delayed one went out.
async fn delayed_proof(with_live: bool) -> (Option<proto::AsRunPicture>, proto::AsRunPicture, chrono::DateTime<Utc>) {
    let (server, source_port, _dirs) = passthrough_daemon().await;
    let _venue = venue(source_port, 40);
    let (live, late) = (UdpCapture::start(), UdpCapture::start());
    let t0 = Utc.timestamp_opt(Utc::now().timestamp() + 6, 0).unwrap();
    let local = (t0 + chrono::Duration::seconds(DELAY_S)).with_timezone(&chrono_tz::Asia::Seoul);
    let air = format!("air_policy = {{ type = \"local_time\", at = \"{}\" }}\n", local.format("%H:%M:%S"));
    let mut legs = vec![("kr-late", late.port, air)];
    if with_live {
        legs.push(("kz-live", live.port, String::new()));
    }
    for (id, port, air) in legs {
        let text = format!(
            "id = \"{id}\"\nname = \"{id}\"\ncountry = \"KR\"\ntimezone = \"Asia/Seoul\"\n{air}\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{port}\" }}\n"
        );
        create_channel(&server, &text).await;
    }
    let admin = server.token(Role::Admin).to_owned();
    let request = schedule("Silk Way Star: delayed proof", t0);
    let mut events = EventServiceClient::new(server.transport().await);
    let event_id = events.schedule_event(authed(request, &admin)).await.expect("schedule").into_inner().id;
    // The legs' first programme entries, with their pictures.
    let mut monitor = MonitorServiceClient::new(server.transport().await);
    let deadline = Instant::now() + Duration::from_secs(40);
    let first = |log: &[proto::AsRunEntry], leg: &str| {
        log.iter().find(|e| e.kind == "leg-program" && e.channel_id == leg && e.picture_id > 0).cloned()
    };
    let (live_entry, late_entry) = loop {
        let req = authed(proto::GetAsRunLogRequest { event_id: event_id.clone(), ..Default::default() }, &admin);
        let log = monitor.get_as_run_log(req).await.expect("as-run").into_inner().entries;
        let (a, b) = (first(&log, "kz-live"), first(&log, "kr-late"));
        if let Some(b) = b
            && (a.is_some() || !with_live)
        {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "a first programme entry without its picture: {log:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut get = async |id: i64| {
        let req = authed(proto::AsRunPictureRef { picture_id: id }, &admin);
        monitor.get_as_run_picture(req).await.expect("picture").into_inner()
    };
    let live_pic = match live_entry {
        Some(e) => Some(get(e.picture_id).await),
        None => None,
    };
    let late_pic = get(late_entry.picture_id).await;
    server.stop().await;
    (live_pic, late_pic, utc_of(late_entry.utc.as_ref().unwrap()))
}

fn utc_of(t: &prost_types::Timestamp) -> chrono::DateTime<Utc> {
    simulcast::api::convert::from_timestamp(t, "utc").unwrap()
}

/// Issue 17, the visual as-run for a delayed leg: it airs the recording
/// from T0 at its own local time, so the picture kept with its first
/// programme instant is the live programme's first (the live leg's), taken
/// its delay later; not the live picture at its air time, which the
/// moving test picture has left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_legs_as_run_picture_is_the_live_programmes_first_its_delay_later() {
    let (live, late, aired) = delayed_proof(true).await;
    let live = live.unwrap();
    assert_eq!(&late.jpeg[..2], b"\xff\xd8", "a JPEG");
    assert!(late.jpeg == live.jpeg, "the delayed leg's picture is not the live programme's first");
    let later = utc_of(late.taken_utc.as_ref().unwrap()) - utc_of(live.taken_utc.as_ref().unwrap());
    assert!(
        (later - chrono::Duration::seconds(DELAY_S)).num_milliseconds().abs() <= 1,
        "the delayed picture's time is {later} after the live one's"
    );
    // Its time is when the partner got it: about its air time.
    let off = (utc_of(late.taken_utc.as_ref().unwrap()) - aired).num_milliseconds();
    assert!(off.abs() < 1500, "the delayed picture is dated {off} ms from the leg's first programme instant");
}

/// With every leg delayed there is no live leg's picture: the delayed
/// leg's is the programme's first after T0, dated its delay later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_leg_delayed_the_as_run_picture_is_the_programmes_first_after_t0() {
    let (live, late, aired) = delayed_proof(false).await;
    assert!(live.is_none());
    assert_eq!(&late.jpeg[..2], b"\xff\xd8", "a JPEG");
    let off = (utc_of(late.taken_utc.as_ref().unwrap()) - aired).num_milliseconds();
    assert!(off.abs() < 1500, "the delayed picture is dated {off} ms from the leg's first programme instant");
}

/// `GET path` on `addr` (`http://host:port`) with `headers`; the status
/// line and the body, as a browser's fetch would get them.
fn get(addr: &str, path: &str, headers: &str) -> (String, String) {
    use std::io::{Read, Write};
    let host = addr.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The first bytes a port answers to a plain `GET /` (none if it closes).
fn plain_answer(port: u16) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = vec![0; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// `simulcastd serve` in its own process with TLS (a throwaway openssl
/// certificate) and the page on its own port (as `--web-listen` would),
/// its three sockets bound by the test and handed over.
struct TlsDaemon {
    daemon: common::Daemon,
    /// The gRPC port.
    port: u16,
    /// The page's `host:port`.
    web_at: String,
    /// The plain metrics port's `host:port`.
    metrics_at: String,
    cert: std::path::PathBuf,
    /// The tokens asked for, in order.
    tokens: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Starts one with a token for each `(name, role)`, the configuration
/// `config` if given, and `extra` arguments.
fn tls_daemon(tokens: &[(&str, &str)], config: Option<&str>, extra: &[&str]) -> TlsDaemon {
    use simulcast::api::auth::{hash_token, new_token};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    common::self_signed(&cert, &key, "simulcastd-page");
    let db = dir.path().join("s.db");
    let store = simulcast::store::Store::open(&db).unwrap();
    let tokens: Vec<String> = tokens
        .iter()
        .map(|(name, role)| {
            let t = new_token().unwrap();
            let record =
                simulcast::store::TokenRecord { name: (*name).into(), role: (*role).into(), sha256: hash_token(&t) };
            store.insert_token(&record, "2026-12-03T00:00:00Z").unwrap();
            t
        })
        .collect();
    drop(store);
    // Every port bound here and handed over, named as systemd would.
    let (grpc, web, metrics) = (common::tcp_listener(), common::tcp_listener(), common::tcp_listener());
    let port = grpc.local_addr().unwrap().port();
    let web_at = web.local_addr().unwrap().to_string();
    let metrics_at = metrics.local_addr().unwrap().to_string();
    let mut args: Vec<std::ffi::OsString> =
        vec!["--db".into(), db.into(), "--tls-cert".into(), cert.clone().into(), "--tls-key".into(), key.into()];
    if let Some(text) = config {
        let path = dir.path().join("simulcast.toml");
        std::fs::write(&path, text).unwrap();
        args.extend(["--config".into(), path.into()]);
    }
    args.extend(extra.iter().map(std::ffi::OsString::from));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let sockets: [(&str, &dyn std::os::fd::AsRawFd); 3] = [("grpc", &grpc), ("web", &web), ("metrics", &metrics)];
    let mut daemon = common::Daemon::serve_on(&sockets, &args, std::process::Stdio::null());
    common::wait_answering(&mut daemon.0, grpc.local_addr().unwrap());
    TlsDaemon { daemon, port, web_at, metrics_at, cert, tokens, _dir: dir }
}

/// Issue 17: when the gRPC port has TLS, so does the page, on its own port
/// (`--web-listen`) with the same certificate; the plain metrics port
/// names where it is instead. The browser speaks HTTP/2 to it, so eight
/// pages in one browser all follow the board: over HTTP/1.1 a browser
/// opens six connections to a host and each page holds one for its
/// stream, so the seventh and eighth would wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_page_speaks_https_and_http2_so_eight_pages_in_one_browser_follow_the_board() {
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();
    let d = tls_daemon(&[("noc", "observer")], None, &[]);
    let (token, web_at, metrics_at) = (d.tokens[0].clone(), d.web_at.clone(), d.metrics_at.clone());
    let web: u16 = web_at.rsplit_once(':').unwrap().1.parse().unwrap();

    // The plain port: metrics yes, the page no, and it says where it is.
    let metrics_addr = format!("http://{metrics_at}");
    let (ok, (head, body)) =
        tokio::task::spawn_blocking(move || (get(&metrics_addr, "/metrics", "").0, get(&metrics_addr, "/", "")))
            .await
            .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(body.contains(&format!("Open https://127.0.0.1:{web}/ instead")), "{body}");
    // The page's port speaks no plain HTTP.
    let answer = tokio::task::spawn_blocking(move || plain_answer(web)).await.unwrap();
    assert!(!answer.starts_with(b"HTTP/"), "{}", String::from_utf8_lossy(&answer));

    // In the browser: signed in over HTTPS, over HTTP/2.
    let b = std::sync::Arc::new(browser);
    let url = format!("https://127.0.0.1:{web}");
    let live = |b: &Browser| {
        b.eval(
            "return [document.getElementById('who').textContent, document.getElementById('conn').textContent, \
                document.getElementById('utc').textContent];",
            json!([]),
        )
    };
    sign_in(&b, &url, &token);
    let signed_in = wait_for(Duration::from_secs(10), || live(&b)[1] == json!("live")).await;
    assert!(signed_in, "the page over TLS shows {}", live(&b));
    assert_eq!(live(&b)[0], json!("noc (observer)"));
    let protocol = b.eval("return performance.getEntriesByType('navigation')[0].nextHopProtocol;", json!([]));
    assert_eq!(protocol, json!("h2"));
    assert!(!b.eval("return location.href;", json!([])).as_str().unwrap().contains(&token));

    // Seven more pages in the same browser: each signs in and follows.
    for _ in 0..7 {
        b.new_tab();
        sign_in(&b, &url, &token);
    }
    let tabs = b.tabs();
    assert_eq!(tabs.len(), 8);
    for (i, tab) in tabs.iter().enumerate() {
        b.switch_to(tab);
        let first = live(&b);
        let moving = wait_for(Duration::from_secs(10), || {
            let now = live(&b);
            now[1] == json!("live") && now[2] != first[2] && now[2] != json!("")
        })
        .await;
        assert!(moving, "page {} of 8 does not follow the board: {} then {}", i + 1, first, live(&b));
    }
    drop(b);
}

#[tokio::test]
async fn the_page_carries_no_secret_and_its_data_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::start(&dir.path().join("s.db")).await;
    let addr = server.http_addr.clone();
    let observer = server.token(Role::Observer).to_owned();
    let replies = tokio::task::spawn_blocking(move || {
        let page = get(&addr, "/", "");
        let none = get(&addr, "/api/web/whoami", "");
        let wrong = get(&addr, "/api/web/whoami", "Authorization: Bearer sct_not-a-token\r\n");
        let good = get(&addr, "/api/web/whoami", &format!("Authorization: Bearer {observer}\r\n"));
        (page, none, wrong, good, observer)
    })
    .await
    .unwrap();
    let (page, none, wrong, good, observer) = replies;
    // The page: served to anyone, with a policy that lets it load nothing
    // from elsewhere, and no token in it.
    assert!(page.0.starts_with("HTTP/1.1 200"), "{}", page.0);
    let head = page.0.to_ascii_lowercase();
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{head}");
    assert!(page.1.contains("<script src=\"/app.js\">") && !page.1.contains("http"), "{}", page.1);
    assert!(!page.1.contains(&observer));
    // Its data: refused without a good token, named with one.
    assert!(none.0.starts_with("HTTP/1.1 401") && none.1.contains("missing"), "{none:?}");
    assert!(wrong.0.starts_with("HTTP/1.1 401") && wrong.1.contains("unknown token"), "{wrong:?}");
    assert!(good.0.starts_with("HTTP/1.1 200"), "{good:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&good.1).unwrap(),
        json!({ "name": "observer-tester", "role": "observer" })
    );
    server.stop().await;
}

/// Signs in on the page at `url` with `token` (typed into the form).
fn sign_in(b: &Browser, url: &str, token: &str) {
    b.open(&format!("{url}/"));
    b.eval(
        "document.getElementById('token').value = arguments[0]; document.getElementById('signin').requestSubmit();",
        json!([token]),
    );
}

/// Whether event `id` is in `want` within `timeout` (looked at every 100 ms).
async fn reaches(
    events: &mut EventServiceClient<tonic::transport::Channel>,
    id: &str,
    token: &str,
    want: proto::EventState,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let req = authed(proto::EventRef { event_id: id.to_owned() }, token);
        if events.get_event(req).await.expect("get").into_inner().state == want as i32 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The page's master-control buttons, by their action.
fn buttons(b: &Browser) -> Vec<String> {
    let v = b.eval("return [...document.querySelectorAll('[data-action]')].map(x => x.dataset.action);", json!([]));
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_owned()).collect()
}

/// A POST of `body` to the action endpoint from the page, with its token,
/// as a forged request would be: the HTTP status.
fn post_from_page(b: &Browser, token: &str, body: Value) -> i64 {
    let v = b.call_async(
        "const [token, body, done] = arguments; fetch('/api/web/action', { method: 'POST', \
         headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json' }, \
         body: JSON.stringify(body) }).then(r => done(r.status), e => done(String(e)));",
        json!([token, body]),
    );
    v.as_i64().unwrap_or_else(|| panic!("{v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_control_from_the_page_is_for_operators_and_lands_in_the_as_run_log_by_name() {
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();
    let b = std::sync::Arc::new(browser);
    let rec = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut options =
        Options::from_config(&config_with(&[channel("x", "{ type = \"udp\", uri = \"udp://127.0.0.1:9\" }")]));
    options.recordings = rec.path().to_owned();
    let server = ApiServer::start_with(&dir.path().join("s.db"), options).await;
    let rx = UdpCapture::start();
    let text = format!(
        "id = \"kz-khabar\"\nname = \"Khabar\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
         ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}\n",
        rx.port
    );
    create_channel(&server, &text).await;
    // T0 in ten minutes: scheduled, not armed yet.
    let t0 = Utc.timestamp_opt(Utc::now().timestamp() + 600, 0).unwrap();
    let admin = server.token(Role::Admin).to_owned();
    let mut events = EventServiceClient::new(server.transport().await);
    let request = schedule("Silk Way Star: semi-final", t0);
    let ev = events.schedule_event(authed(request, &admin)).await.expect("schedule").into_inner();
    let url = server.http_addr.clone();
    let title = "return document.getElementById('event-title').textContent;";

    // An observer: the board, no buttons, and an action forged from its
    // page is refused; the event does not move.
    let observer = server.token(Role::Observer).to_owned();
    sign_in(&b, &url, &observer);
    let shown =
        wait_for(Duration::from_secs(10), || b.eval(title, json!([])) == json!("Silk Way Star: semi-final")).await;
    assert!(shown, "the observer's page shows no event");
    assert!(buttons(&b).is_empty(), "an observer sees {:?}", buttons(&b));
    let forged = post_from_page(&b, &observer, json!({ "event_id": ev.id, "action": "arm" }));
    assert_eq!(forged, 403);
    assert!(reaches(&mut events, &ev.id, &admin, proto::EventState::Scheduled, Duration::ZERO).await);

    // An operator: Arm (no question asked), then Take, asked and confirmed;
    // Hold asked and cancelled changes nothing.
    b.eval("document.getElementById('signout').click();", json!([]));
    let operator = server.token(Role::Operator).to_owned();
    sign_in(&b, &url, &operator);
    let enabled = "return [...document.querySelectorAll('[data-action]')].filter(x => !x.disabled).length;";
    let ready = wait_for(Duration::from_secs(10), || b.eval(enabled, json!([])) == json!(10)).await;
    assert!(ready, "the operator's page has {:?}", buttons(&b));
    let click =
        |action: &str| b.eval("document.querySelector(`[data-action=\"${arguments[0]}\"]`).click();", json!([action]));
    click("arm");
    let armed = reaches(&mut events, &ev.id, &admin, proto::EventState::Armed, Duration::from_secs(10)).await;
    let result = "return document.getElementById('action-result').textContent;";
    assert!(armed, "Arm from the page did not arm: {}", b.eval(result, json!([])));
    let asked =
        "return document.getElementById('confirm').open ? document.getElementById('confirm-text').textContent : null;";
    click("hold");
    let question = b.eval(asked, json!([]));
    assert!(question.as_str().unwrap_or_default().starts_with("Hold"), "{question}");
    b.eval("document.getElementById('confirm-no').click();", json!([]));
    click("take");
    let question = b.eval(asked, json!([]));
    assert!(question.as_str().unwrap_or_default().starts_with("Take"), "{question}");
    b.eval("document.getElementById('confirm-yes').click();", json!([]));
    let on_air = reaches(&mut events, &ev.id, &admin, proto::EventState::OnAir, Duration::from_secs(10)).await;
    assert!(on_air, "Take from the page did not put the event on air: {}", b.eval(result, json!([])));
    // The page says so once the answer to its request is in (the event
    // may be on air a moment before that answer reaches the page).
    let said = wait_for(Duration::from_secs(5), || b.eval(result, json!([])) == json!("take: ON_AIR")).await;
    assert!(said, "the page said {}", b.eval(result, json!([])));
    // The page's as-run tail shows it too, by name, without a reload.
    let tail = "return [...document.querySelectorAll('#asrun li')].map(l => l.textContent).join('\\n');";
    let listed = wait_for(Duration::from_secs(5), || {
        b.eval(tail, json!([])).as_str().is_some_and(|t| t.contains("ARMED -> ON_AIR (operator-tester)"))
    })
    .await;
    assert!(listed, "the page's as-run tail: {}", b.eval(tail, json!([])));
    let log = common::server::asrun(&server, &ev.id, &admin).await;
    let by_page: Vec<(&str, &str)> =
        log.iter().filter(|e| e.actor == "operator-tester").map(|e| (e.kind.as_str(), e.actor.as_str())).collect();
    assert!(by_page.iter().any(|(k, _)| k.contains("arm")), "{log:?}");
    assert!(by_page.iter().any(|(k, _)| k.contains("take") || k.contains("on-air")), "{log:?}");
    assert!(!log.iter().any(|e| e.kind.contains("hold")), "the cancelled Hold reached the log: {log:?}");
    drop(b);
    server.stop().await;
}

/// This process's resident memory (the daemon runs in it), MB.
fn rss_mb() -> f64 {
    rss_mb_of("self")
}

/// Process `pid`'s resident memory (`self`: this one), MB.
fn rss_mb_of(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb / 1024.0
}

/// The page left open during a live event with the status pushed at the
/// normal rate (every 500 ms, four legs, pictures every second): the
/// daemon's resident memory and the page's JS heap (after a garbage
/// collection) stay flat. Opt-in (it takes `SOAK_MINUTES`, 10 by default):
/// `cargo test --release --test web -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn a_page_left_open_keeps_its_memory_and_the_daemons_flat() {
    let minutes: u64 = std::env::var("SOAK_MINUTES").ok().and_then(|m| m.parse().ok()).unwrap_or(10);
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();
    let (server, source_port, _dirs) = passthrough_daemon().await;
    let _venue = venue(source_port, (minutes * 60 + 60) as u32);
    let _legs = unread_partners(&server, 4).await;
    let t0 = Utc.timestamp_opt(Utc::now().timestamp() + 5, 0).unwrap();
    let admin = server.token(Role::Admin).to_owned();
    // On air for the whole run: the programme outlasts it by 10 minutes
    // (a 90-minute run once saw the event end at 60, its tiles go, and
    // the relay's memory return).
    let mut request = schedule("Silk Way Star: the long night", t0);
    request.duration = Some(prost_types::Duration { seconds: (minutes * 60 + 600) as i64, nanos: 0 });
    EventServiceClient::new(server.transport().await).schedule_event(authed(request, &admin)).await.expect("schedule");
    let b = std::sync::Arc::new(browser);
    sign_in(&b, &server.http_addr, server.token(Role::Observer));
    let on_air =
        wait_for(Duration::from_secs(30), || tiles(&b).len() == 4 && tiles(&b).iter().all(|t| t.1 == "ON_AIR")).await;
    assert!(on_air, "{:?}", tiles(&b));
    let heap = "gc(); return [performance.memory.usedJSHeapSize / 1048576, document.getElementsByTagName('*').length];";
    let mut samples: Vec<(f64, f64, f64, i64)> = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(minutes * 60) {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let v = b.eval(heap, json!([]));
        let sample = (start.elapsed().as_secs_f64() / 60.0, rss_mb(), v[0].as_f64().unwrap(), v[1].as_i64().unwrap());
        println!(
            "{:5.1} min: daemon RSS {:6.1} MB, page JS heap {:5.2} MB, {} elements",
            sample.0, sample.1, sample.2, sample.3
        );
        samples.push(sample);
    }
    server.stop().await;
    // From the second minute on (pipelines and caches warm), against the
    // last samples.
    let settled: Vec<_> = samples.iter().filter(|s| s.0 >= 2.0).collect();
    let (first, last) = (settled.first().unwrap(), settled.last().unwrap());
    assert!(last.1 - first.1 < 8.0, "the daemon grew from {:.1} to {:.1} MB", first.1, last.1);
    assert!(last.2 - first.2 < 2.0, "the page's heap grew from {:.2} to {:.2} MB", first.2, last.2);
    assert_eq!(first.3, last.3, "the page's element count changed");
}

/// This process's user + system CPU time (the daemon runs in it).
fn cpu_s() -> f64 {
    // SAFETY: rusage is plain integers; all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid rusage the call writes.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// What open pages cost the daemon: its CPU and memory over a minute of a
/// live event with one page open, then with ten (five tabs in each of two
/// chromiums, every one signed in and drawing: a browser opens at most six
/// HTTP/1.1 connections to one host, and each page holds one for its
/// stream, so a seventh tab would wait). Opt-in, like the long run:
/// `cargo test --release --test web -- --ignored --nocapture ten_pages`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn ten_pages_cost_the_daemon_next_to_nothing() {
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();
    let (server, source_port, _dirs) = passthrough_daemon().await;
    let _venue = venue(source_port, 240);
    let _legs = unread_partners(&server, 4).await;
    let t0 = Utc.timestamp_opt(Utc::now().timestamp() + 5, 0).unwrap();
    let admin = server.token(Role::Admin).to_owned();
    let request = schedule("Silk Way Star: ten screens", t0);
    EventServiceClient::new(server.transport().await).schedule_event(authed(request, &admin)).await.expect("schedule");
    let b = std::sync::Arc::new(browser);
    let observer = server.token(Role::Observer).to_owned();
    sign_in(&b, &server.http_addr, &observer);
    let on_air = wait_for(Duration::from_secs(30), || tiles(&b).iter().filter(|t| t.1 == "ON_AIR").count() == 4).await;
    assert!(on_air, "{:?}", tiles(&b));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let measure = || async {
        let (c0, r0) = (cpu_s(), rss_mb());
        tokio::time::sleep(Duration::from_secs(60)).await;
        (cpu_s() - c0, rss_mb() - r0, rss_mb())
    };
    let one = measure().await;
    let second = std::sync::Arc::new(tokio::task::spawn_blocking(Browser::start).await.unwrap());
    for i in 0..9 {
        let browser = if i < 4 { &b } else { &second };
        if i != 4 {
            browser.new_tab();
        }
        sign_in(browser, &server.http_addr, &observer);
    }
    let ten = wait_for(Duration::from_secs(20), || tiles(&b).len() == 4 && tiles(&second).len() == 4).await;
    assert!(ten, "the last pages show {:?} and {:?}", tiles(&b), tiles(&second));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let tens = measure().await;
    server.stop().await;
    pages_cost("One page", "Ten pages", one, tens);
}

/// Prints what one page and ten cost the daemon over 60 s each (CPU s,
/// RSS change, RSS), and checks that nine more cost next to nothing.
fn pages_cost(one_is: &str, ten_are: &str, one: (f64, f64, f64), tens: (f64, f64, f64)) {
    let cost = |(cpu, grew, rss): (f64, f64, f64)| {
        format!("{cpu:.2} CPU s in 60 s ({:.2} % of a core), RSS {rss:.1} MB ({grew:+.1} MB)", cpu / 60.0 * 100.0)
    };
    println!("{one_is}: the daemon used {}", cost(one));
    let more = (tens.0 - one.0) / 60.0 * 100.0;
    println!("{ten_are}: {}; nine pages more cost {more:.2} % of a core", cost(tens));
    assert!(more < 3.0, "nine more pages cost more than 3 % of a core");
    assert!(tens.2 - one.2 < 10.0, "nine more pages cost {:.1} MB", tens.2 - one.2);
}

/// Process `pid`'s user + system CPU time, from /proc.
fn cpu_s_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a constant.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The same over HTTPS, as a control room serving the page beyond
/// loopback would run it: `simulcastd serve` with TLS and `--web-listen`
/// in its own process, and the ten pages as ten tabs of one chromium (one
/// HTTP/2 connection). Its CPU and memory from /proc, over a minute with
/// one page, then with ten. Opt-in:
/// `cargo test --release --test web -- --ignored --nocapture ten_pages_in_one`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn ten_pages_in_one_browser_over_https_cost_the_daemon_next_to_nothing() {
    let browser = tokio::task::spawn_blocking(Browser::start).await.unwrap();
    let source_port = peer_port();
    let legs: Vec<std::net::UdpSocket> = (0..4).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    let mut config = format!(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{source_port}\"\n\
         [program]\nwidth = 640\nheight = 360\nframerate = 25\ngop = 25\n"
    );
    for (i, rx) in legs.iter().enumerate() {
        config += &format!(
            "[[channels]]\nid = \"leg-{i}\"\nname = \"Partner {i}\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}\n",
            rx.local_addr().unwrap().port()
        );
    }
    let d = tls_daemon(&[("night-admin", "admin"), ("noc", "observer")], Some(&config), &[]);
    let (admin, observer) = (d.tokens[0].clone(), d.tokens[1].clone());
    let (port, cert, web_at) = (d.port, d.cert.clone(), d.web_at.clone());
    let pid = d.daemon.0.id();
    let _venue = venue(source_port, 240);
    let t0 = Utc.timestamp_opt(Utc::now().timestamp() + 5, 0).unwrap();
    let scheduled = std::process::Command::new(env!("CARGO_BIN_EXE_simulcastctl"))
        .args(["--addr", &format!("https://127.0.0.1:{port}"), "--token", &admin])
        .arg("--ca-cert")
        .arg(&cert)
        .args(["events", "schedule", "--title", "Silk Way Star: ten screens", "--duration", "1h"])
        .args(["--at", &t0.format("%Y-%m-%dT%H:%M:%SZ").to_string()])
        .output()
        .unwrap();
    assert!(scheduled.status.success(), "{}", String::from_utf8_lossy(&scheduled.stderr));

    let b = std::sync::Arc::new(browser);
    let url = format!("https://{web_at}");
    sign_in(&b, &url, &observer);
    let on_air = wait_for(Duration::from_secs(30), || tiles(&b).iter().filter(|t| t.1 == "ON_AIR").count() == 4).await;
    assert!(on_air, "{:?}", tiles(&b));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let measure = || async {
        let (c0, r0) = (cpu_s_of(pid), rss_mb_of(&pid.to_string()));
        tokio::time::sleep(Duration::from_secs(60)).await;
        let r1 = rss_mb_of(&pid.to_string());
        (cpu_s_of(pid) - c0, r1 - r0, r1)
    };
    let one = measure().await;
    for _ in 0..9 {
        b.new_tab();
        sign_in(&b, &url, &observer);
    }
    let tabs = b.tabs();
    assert_eq!(tabs.len(), 10);
    for (i, tab) in tabs.iter().enumerate() {
        b.switch_to(tab);
        let four = wait_for(Duration::from_secs(20), || tiles(&b).len() == 4).await;
        assert!(four, "page {} of 10 shows {:?}", i + 1, tiles(&b));
    }
    let protocol = b.eval("return performance.getEntriesByType('navigation')[0].nextHopProtocol;", json!([]));
    assert_eq!(protocol, json!("h2"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let tens = measure().await;
    drop(d);
    pages_cost("One page over HTTPS", "Ten pages, one browser, HTTP/2", one, tens);
}
