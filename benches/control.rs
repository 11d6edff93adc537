//! Master-control round trips under watch load: with W concurrent
//! `WatchStatus` streams open (each on its own connection, each reading),
//! the time for `Hold`, `Take` and `Extend` calls on loopback against the
//! real `simulcastd serve`, p50/p99/max; the same loop with no watcher in
//! the same run, for the ratio; and the daemon's resident memory per
//! watcher (VmRSS after opening the streams minus before, over W).
//!
//! `cargo bench --bench control` (`WATCHERS`, default 200; `ROUNDS`,
//! default 40: each round schedules an event on `LEGS` UDP legs, default
//! 12, arms it (untimed), then times Hold, 5 x Extend and Take while the
//! relay and its legs come up, and aborts it; `EVENTS`, default 0, events
//! are scheduled before the first round, a schedule with history). A last phase, with the
//! watchers still open, times GetEvent, ListEvents and a ScheduleEvent +
//! CancelEvent pair while a rehearsal's preflight waits on a black-holed
//! RTMP partner (TCP accepted, never answered). `RUST_LOG` and
//! `DAEMON_LOG` (a file) keep the daemon's log; `SIMULCASTD` runs another
//! build of the daemon (to compare two builds in the same hour).
//!
//! The watchers run in a process of their own (this bench again, with
//! `CONTROL_BENCH_WATCH`), as other people's clients would: decoding 200
//! streams' updates in the timing client's own runtime delayed its replies
//! too. `WATCHERS_IN=bench` puts them back in the bench's process.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use simulcast::api::auth::{hash_token, new_token};
use simulcast::proto::event_service_client::EventServiceClient;
use simulcast::proto::monitor_service_client::MonitorServiceClient;
use simulcast::proto::rehearsal_service_client::RehearsalServiceClient;
use simulcast::proto::{self, schedule_event_request::OnAir};
use simulcast::store::{Store, TokenRecord};
use tonic::transport::Channel;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.to_owned()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[derive(Default)]
struct Samples {
    hold: Vec<Duration>,
    take: Vec<Duration>,
    extend: Vec<Duration>,
}

/// An event an hour (plus `later_h`) from now on `channels`.
fn event_on(channels: &[String], later_h: i64) -> proto::ScheduleEventRequest {
    let at = chrono::Utc::now() + chrono::Duration::hours(1 + later_h);
    proto::ScheduleEventRequest {
        title: "bench".into(),
        on_air: Some(OnAir::OnAirUtc(prost_types::Timestamp { seconds: at.timestamp(), nanos: 0 })),
        duration: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
        channel_ids: channels.to_vec(),
        ..Default::default()
    }
}

async fn rounds(e: &mut EventServiceClient<Channel>, token: &str, n: usize, legs: &[String]) -> Samples {
    let mut s = Samples::default();
    for _ in 0..n {
        let req = event_on(legs, 0);
        let id = e.schedule_event(authed(req, token)).await.expect("schedule").into_inner().id;
        let r = || proto::EventRef { event_id: id.clone() };
        e.arm(authed(r(), token)).await.expect("arm");
        let t = Instant::now();
        e.hold(authed(r(), token)).await.expect("hold");
        s.hold.push(t.elapsed());
        for _ in 0..5 {
            let t = Instant::now();
            let req =
                proto::ExtendRequest { event_id: id.clone(), by: Some(prost_types::Duration { seconds: 1, nanos: 0 }) };
            e.extend(authed(req, token)).await.expect("extend");
            s.extend.push(t.elapsed());
        }
        let t = Instant::now();
        e.take(authed(r(), token)).await.expect("take");
        s.take.push(t.elapsed());
        e.abort(authed(r(), token)).await.expect("abort");
    }
    s
}

/// Read and schedule/cancel round trips while a rehearsal's preflight
/// waits on the black-holed partner, for `span`.
#[derive(Default)]
struct Preflight {
    get: Vec<Duration>,
    list: Vec<Duration>,
    cancel: Vec<Duration>,
    /// How many of the samples were taken with the rehearsal in preflight.
    in_preflight: usize,
}

async fn during_preflight(
    e: &mut EventServiceClient<Channel>,
    r: &mut RehearsalServiceClient<Channel>,
    token: &str,
    hole_event: &str,
    span: Duration,
) -> Preflight {
    let mut s = Preflight::default();
    let end = Instant::now() + span;
    let mut rehearsal: Option<String> = None;
    while Instant::now() < end {
        let state = match &rehearsal {
            Some(id) => {
                let req = proto::RehearsalRef { rehearsal_id: id.clone() };
                Some(r.get_rehearsal_report(authed(req, token)).await.expect("report").into_inner().state)
            }
            None => None,
        };
        let (preflight, finished) = (proto::RehearsalState::Preflight as i32, proto::RehearsalState::Finished as i32);
        if state.is_some_and(|s| s != preflight && s != finished) {
            // Past its preflight (the hole failed it): let it finish.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        if state != Some(preflight) {
            let secs = |s| Some(prost_types::Duration { seconds: s, nanos: 0 });
            let req = proto::StartRehearsalRequest {
                event_id: hole_event.to_owned(),
                preroll: secs(1),
                program: secs(3),
                postroll: secs(1),
                live_source: false,
                stamp_legs: false,
            };
            match r.start_rehearsal(authed(req, token)).await {
                Ok(report) => rehearsal = Some(report.into_inner().rehearsal_id),
                // The last one finished a moment ago; the daemon reaps it
                // on its next tick.
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("rehearse: {s:?}"),
            }
            continue;
        }
        s.in_preflight += 1;
        let t = Instant::now();
        e.get_event(authed(proto::EventRef { event_id: hole_event.to_owned() }, token)).await.expect("get");
        s.get.push(t.elapsed());
        let t = Instant::now();
        e.list_events(authed(proto::ListEventsRequest {}, token)).await.expect("list");
        s.list.push(t.elapsed());
        let t = Instant::now();
        let id = e.schedule_event(authed(event_on(&[], 5), token)).await.expect("schedule").into_inner().id;
        e.cancel_event(authed(proto::EventRef { event_id: id }, token)).await.expect("cancel");
        s.cancel.push(t.elapsed());
        if t.elapsed() > Duration::from_millis(100) {
            eprintln!(
                "slow schedule+cancel: {:?}, started {}",
                t.elapsed(),
                chrono::Utc::now() - chrono::Duration::from_std(t.elapsed()).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s
}

fn report(label: &str, s: &mut Samples) -> serde_json::Value {
    report_each(label, [("hold", &mut s.hold), ("take", &mut s.take), ("extend", &mut s.extend)])
}

fn report_each<'a>(label: &str, each: impl IntoIterator<Item = (&'a str, &'a mut Vec<Duration>)>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, v) in each {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{label:<22} {name:<12} n={:<4} p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            v.len(),
            ms(pct(v, 0.5)),
            ms(pct(v, 0.99)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        );
        out.insert(
            name.into(),
            serde_json::json!({ "n": v.len(), "p50_ms": ms(pct(v, 0.5)), "p99_ms": ms(pct(v, 0.99)), "max_ms": ms(*v.last().unwrap_or(&Duration::ZERO)) }),
        );
    }
    serde_json::Value::Object(out)
}

/// The watchers: in this process, or (the default) in a process of their
/// own, as other people's clients would be, so that decoding their
/// updates does not hold up the timed calls' client.
enum Watchers {
    Here(Counts),
    Process { child: std::process::Child, lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>> },
}

/// Updates received and updates skipped as lagged, counted by the streams.
type Counts = (Arc<AtomicU64>, Arc<AtomicU64>, Vec<tokio::task::JoinHandle<()>>);

impl Watchers {
    /// This bench again as a child that only watches (`CONTROL_BENCH_WATCH`),
    /// once it says its streams are open.
    fn spawn(addr: &str, token: &str, n: usize) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(std::env::current_exe().expect("the bench's path"))
            .env("CONTROL_BENCH_WATCH", format!("{addr} {token} {n}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the watchers' process");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = lines.next().and_then(Result::ok);
        assert_eq!(ready.as_deref(), Some("ready"), "the watchers' process did not open its streams");
        Self::Process { child, lines }
    }

    /// (received, lagged) so far.
    fn counts(&mut self) -> (u64, u64) {
        match self {
            Self::Here((received, lagged, _)) => (received.load(Ordering::Relaxed), lagged.load(Ordering::Relaxed)),
            Self::Process { child, lines } => {
                use std::io::Write;
                writeln!(child.stdin.as_mut().expect("stdin"), "count").expect("ask the watchers");
                let line = lines.next().and_then(Result::ok).expect("the watchers' counts");
                let (r, l) = line.split_once(' ').expect("two counts");
                (r.parse().expect("received"), l.parse().expect("lagged"))
            }
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        match self {
            Self::Here((_, _, tasks)) => tasks.iter().for_each(|t| t.abort()),
            Self::Process { child, .. } => {
                drop(child.stdin.take());
                let _ = child.wait();
            }
        }
    }
}

/// `n` WatchStatus streams on connections of their own, each reading.
async fn open_watchers(addr: &str, token: &str, n: usize) -> Counts {
    let received = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let t = Channel::from_shared(addr.to_owned()).expect("addr").connect().await.expect("watcher connect");
        let mut m = MonitorServiceClient::new(t);
        let mut stream = m.watch_status(authed(proto::EventRef::default(), token)).await.expect("watch").into_inner();
        let (received, lagged) = (Arc::clone(&received), Arc::clone(&lagged));
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(u)) = stream.message().await {
                received.fetch_add(1, Ordering::Relaxed);
                lagged.fetch_add(u.lagged, Ordering::Relaxed);
            }
        }));
    }
    (received, lagged, tasks)
}

/// The watchers' process: opens the streams, says `ready`, then answers
/// each `count` line on stdin with its counts, until stdin closes.
async fn watch_only(spec: &str) {
    let mut parts = spec.split(' ');
    let (addr, token) = (parts.next().expect("addr"), parts.next().expect("token"));
    let n: usize = parts.next().and_then(|n| n.parse().ok()).expect("count");
    let (received, lagged, _tasks) = open_watchers(addr, token, n).await;
    println!("ready");
    tokio::task::spawn_blocking(move || {
        for _ in std::io::stdin().lines().map_while(Result::ok) {
            println!("{} {}", received.load(Ordering::Relaxed), lagged.load(Ordering::Relaxed));
        }
    })
    .await
    .expect("stdin");
}

#[tokio::main]
async fn main() {
    if let Ok(spec) = std::env::var("CONTROL_BENCH_WATCH") {
        return watch_only(&spec).await;
    }
    let watchers = env_num("WATCHERS", 200);
    let n = env_num("ROUNDS", 40);
    let leg_count = env_num("LEGS", 12);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.db");
    let token = new_token().expect("token");
    let store = Store::open(&db).expect("store");
    let rec = TokenRecord { name: "bench".into(), role: "admin".into(), sha256: hash_token(&token) };
    store.insert_token(&rec, "2026-11-26T00:00:00Z").expect("token");
    drop(store);
    // LEGS UDP legs, each into a socket that drains it; the small test
    // source; and a partner that accepts TCP and never answers RTMP.
    let mut text = String::from(
        "[event]\ntitle = \"bench\"\n[source]\ntype = \"test\"\n\
         [program]\nwidth = 480\nheight = 270\nframerate = 25\nvideo_kbps = 800\n",
    );
    let mut legs = Vec::new();
    for i in 0..leg_count {
        let drain = std::net::UdpSocket::bind("127.0.0.1:0").expect("drain");
        let drain_port = drain.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let mut b = [0u8; 65536];
            while drain.recv(&mut b).is_ok() {}
        });
        let id = format!("drain-{i:02}");
        text += &format!(
            "[[channels]]\nid = \"{id}\"\nname = \"drain\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{drain_port}\" }}\n"
        );
        legs.push(id);
    }
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("hole");
    text += &format!(
        "[[channels]]\nid = \"hole\"\nname = \"hole\"\ncountry = \"MN\"\ntimezone = \"Asia/Ulaanbaatar\"\n\
         ingest = {{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{}/live\", stream_key = \"k\" }}\n",
        hole.local_addr().expect("addr").port()
    );
    let config = dir.path().join("bench.toml");
    std::fs::write(&config, text).expect("config");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let (port, metrics_port) = (free(), free());
    // SIMULCASTD: another build of the daemon, to compare two builds in
    // one hour with the same bench.
    let daemon_path = std::env::var_os("SIMULCASTD").unwrap_or_else(|| env!("CARGO_BIN_EXE_simulcastd").into());
    let mut daemon = Command::new(daemon_path)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--metrics-listen"])
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .stderr(match std::env::var_os("DAEMON_LOG") {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("DAEMON_LOG")),
            None => Stdio::null(),
        })
        .spawn()
        .expect("simulcastd");
    let addr = format!("http://127.0.0.1:{port}");
    let connect = || async { Channel::from_shared(addr.clone()).expect("addr").connect().await };
    let mut transport = None;
    for _ in 0..100 {
        if let Ok(t) = connect().await {
            transport = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let transport = transport.expect("simulcastd did not listen");
    let mut e = EventServiceClient::new(transport.clone());
    let mut r = RehearsalServiceClient::new(transport);
    let pid = daemon.id();

    // A schedule with history: EVENTS events scheduled beforehand.
    let history = env_num("EVENTS", 0);
    for i in 0..history {
        e.schedule_event(authed(event_on(&[], 24 + i as i64), &token)).await.expect("schedule");
    }
    // Warm up, then the baseline without watchers.
    rounds(&mut e, &token, 2, &legs).await;
    let mut base = rounds(&mut e, &token, n, &legs).await;
    let rss_before = rss_kib(pid);

    let in_process = std::env::var("WATCHERS_IN").is_ok_and(|w| w == "bench");
    let mut watching = if in_process {
        Watchers::Here(open_watchers(&addr, &token, watchers).await)
    } else {
        Watchers::spawn(&addr, &token, watchers)
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid);
    let (got_before, _) = watching.counts();
    let started = Instant::now();
    let mut loaded = rounds(&mut e, &token, n, &legs).await;
    let secs = started.elapsed().as_secs_f64();
    let updates = watching.counts().0 - got_before;
    let hole_event =
        e.schedule_event(authed(event_on(&["hole".into()], 2), &token)).await.expect("schedule").into_inner().id;
    let mut pre = during_preflight(&mut e, &mut r, &token, &hole_event, Duration::from_secs(20)).await;

    println!(
        "simulcastd serve, loopback, {n} round(s) of an Arm with {leg_count} UDP legs, {history} events \
         scheduled beforehand; {watchers} WatchStatus streams, each on its own connection, {}",
        if in_process { "in the timing client's process (WATCHERS_IN=bench)" } else { "in a process of their own" }
    );
    let lagged = watching.counts().1;
    let b = report("no watchers", &mut base);
    let l = report(&format!("{watchers} watchers"), &mut loaded);
    let p = report_each(
        &format!("preflight, {watchers} w"),
        [("get", &mut pre.get), ("list", &mut pre.list), ("sched+cancel", &mut pre.cancel)],
    );
    println!("({} samples with the rehearsal in preflight on the black hole)", pre.in_preflight);
    let per = (rss_after.saturating_sub(rss_before)) as f64 / watchers.max(1) as f64;
    println!(
        "memory: daemon VmRSS {rss_before} KiB before the streams, {rss_after} KiB with them: {per:.1} KiB per watcher"
    );
    println!(
        "watchers received {updates} updates in {secs:.1} s ({:.1} per watcher per second), {} skipped as lagged",
        updates as f64 / secs / watchers.max(1) as f64,
        lagged
    );
    let ratio = |k: &str| l[k]["p99_ms"].as_f64().unwrap_or(0.0) / b[k]["p99_ms"].as_f64().unwrap_or(1.0).max(1e-9);
    println!(
        "p99 ratio loaded/unloaded: hold {:.2}, take {:.2}, extend {:.2}",
        ratio("hold"),
        ratio("take"),
        ratio("extend")
    );
    let turns = loop_turns(metrics_port);
    println!("master control's loop over the whole run (work: turns, turns over 10 ms, longest ms):");
    for (work, t) in &turns {
        println!("  {work:<24} {:>7} {:>5} {:>9.2}", t[0] as u64, t[1] as u64, t[2] * 1000.0);
    }
    println!(
        "{}",
        serde_json::json!({
            "loop_turns": turns,
            "watchers": watchers, "rounds": n, "legs": leg_count, "unloaded": b, "loaded": l, "preflight": p,
            "rss_kib_before": rss_before, "rss_kib_after": rss_after, "kib_per_watcher": per,
            "updates": updates, "lagged": lagged, "watchers_in": if in_process { "bench" } else { "process" },
        })
    );
    drop(watching);
    let _ = daemon.kill();
    let _ = daemon.wait();
    drop(hole);
}

/// The daemon's `simulcast_control_loop_*` figures by work: [turns, slow
/// turns, longest seconds], read from its metrics port.
fn loop_turns(port: u16) -> BTreeMap<String, [f64; 3]> {
    use std::io::{Read, Write};
    let mut text = String::new();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("metrics request");
    s.read_to_string(&mut text).expect("metrics");
    let mut out: BTreeMap<String, [f64; 3]> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once("{work=\"") else { continue };
        let Some((work, value)) = rest.split_once("\"} ") else { continue };
        let i = match name {
            "simulcast_control_loop_turns_total" => 0,
            "simulcast_control_loop_slow_turns_total" => 1,
            "simulcast_control_loop_longest_turn_seconds" => 2,
            _ => continue,
        };
        out.entry(work.to_owned()).or_default()[i] = value.trim().parse().unwrap_or(f64::NAN);
    }
    out
}
