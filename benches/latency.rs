//! Added latency (contribution in to leg out) and skew between legs, for the
//! relay and, measured by the same harness in the same run, gst-launch's
//! `udpsrc ! tee ! queue ! udpsink` per leg.
//!
//! A sender paces ~8 Mbit/s of valid MPEG-TS (7 packets per datagram, a
//! sequence number in each payload) to the contribution port; N sockets
//! receive. Latency = receive time - send time per datagram and leg; skew =
//! latest - earliest arrival of one datagram across the legs.
//!
//! `cargo bench --bench latency` (N = 1, 12, 50; `LATENCY_SECONDS`, default 8;
//! `BATCH_WAIT`, simulcast's relay.batch_wait, default 2ms).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simulcast::config;
use simulcast::relay::Relay;

const DATAGRAM: usize = 1316;
const BITRATE: f64 = 8_000_000.0;

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A datagram of 7 TS packets on PID 0x100 carrying `seq`.
fn datagram(seq: u64, cc: &mut u8) -> Vec<u8> {
    let mut d = vec![0xffu8; DATAGRAM];
    for p in d.chunks_exact_mut(188) {
        p[0] = 0x47;
        p[1] = 0x01;
        p[2] = 0x00;
        p[3] = 0x10 | (*cc & 0x0f);
        *cc = cc.wrapping_add(1);
        p[4..12].copy_from_slice(&seq.to_be_bytes());
    }
    d
}

struct Receivers {
    ports: Vec<u16>,
    arrivals: Arc<Mutex<Vec<HashMap<u64, Instant>>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn receivers(n: usize) -> Receivers {
    let arrivals = Arc::new(Mutex::new(vec![HashMap::new(); n]));
    let stop = Arc::new(AtomicBool::new(false));
    let mut ports = Vec::new();
    let mut threads = Vec::new();
    for i in 0..n {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
        ports.push(socket.local_addr().expect("addr").port());
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let (arr, stop) = (Arc::clone(&arrivals), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut local = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(len) = socket.recv(&mut buf) {
                    let now = Instant::now();
                    if len >= 12 {
                        let seq = u64::from_be_bytes(buf[4..12].try_into().unwrap_or([0; 8]));
                        local.entry(seq).or_insert(now);
                    }
                }
            }
            arr.lock().unwrap_or_else(|e| e.into_inner())[i] = local;
        }));
    }
    Receivers { ports, arrivals, stop, threads }
}

/// Sends for `seconds`, returns send times by sequence number.
fn send(port: u16, seconds: u64) -> HashMap<u64, Instant> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    let interval = Duration::from_secs_f64(DATAGRAM as f64 * 8.0 / BITRATE);
    let start = Instant::now();
    let mut sent = HashMap::new();
    let mut cc = 0u8;
    let mut seq = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let due = start + interval * seq as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let d = datagram(seq, &mut cc);
        let at = Instant::now();
        if socket.send_to(&d, ("127.0.0.1", port)).is_ok() {
            sent.insert(seq, at);
        }
        seq += 1;
    }
    sent
}

struct Figures {
    latency: Vec<f64>,
    skew: Vec<f64>,
    lost: usize,
    expected: usize,
}

fn measure(sent: &HashMap<u64, Instant>, r: Receivers, warmup: u64) -> Figures {
    r.stop.store(true, Ordering::Relaxed);
    for t in r.threads {
        let _ = t.join();
    }
    let arrivals = r.arrivals.lock().unwrap_or_else(|e| e.into_inner());
    let mut latency = Vec::new();
    let mut skew = Vec::new();
    let mut lost = 0;
    let mut expected = 0;
    for (seq, at) in sent.iter().filter(|(s, _)| **s >= warmup) {
        let times: Vec<Instant> = arrivals.iter().filter_map(|a| a.get(seq).copied()).collect();
        expected += arrivals.len();
        lost += arrivals.len() - times.len();
        for t in &times {
            latency.push(t.duration_since(*at).as_secs_f64() * 1e3);
        }
        if times.len() == arrivals.len() && times.len() > 1 {
            let (min, max) = (times.iter().min(), times.iter().max());
            if let (Some(min), Some(max)) = (min, max) {
                skew.push(max.duration_since(*min).as_secs_f64() * 1e3);
            }
        }
    }
    Figures { latency, skew, lost, expected }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, n: usize, mut f: Figures) {
    let (l50, l99, lmax) = (pct(&mut f.latency, 0.5), pct(&mut f.latency, 0.99), pct(&mut f.latency, 1.0));
    let skew = if f.skew.is_empty() {
        "- | - | -".to_string()
    } else {
        let (s50, s99, smax) = (pct(&mut f.skew, 0.5), pct(&mut f.skew, 0.99), pct(&mut f.skew, 1.0));
        format!("{s50:.2} | {s99:.2} | {smax:.2}")
    };
    println!("| {name} | {n} | {l50:.2} | {l99:.2} | {lmax:.2} | {skew} | {} of {} |", f.lost, f.expected);
}

async fn run_simulcast(n: usize, seconds: u64) -> Figures {
    let input = free_port();
    let r = receivers(n);
    let batch_wait = std::env::var("BATCH_WAIT").unwrap_or_else(|_| "2ms".into());
    let mut text = format!(
        "[event]\ntitle = \"latency\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{input}\"\n\
         [relay]\nbatch_wait = \"{batch_wait}\"\n"
    );
    for (i, port) in r.ports.iter().enumerate() {
        text += &format!(
            "[[channels]]\nid = \"leg-{i}\"\nname = \"l\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{port}\" }}\n"
        );
    }
    let cfg = config::parse(&text).expect("bench config");
    let relay = Relay::start(&cfg).await.expect("relay");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = tokio::task::spawn_blocking(move || send(input, seconds)).await.expect("sender");
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.shutdown().await;
    measure(&sent, r, 500)
}

fn run_gst_tee(n: usize, seconds: u64) -> Option<Figures> {
    let input = free_port();
    let r = receivers(n);
    let mut args = vec![
        "-q".to_string(),
        "udpsrc".into(),
        format!("port={input}"),
        "address=127.0.0.1".into(),
        "caps=video/mpegts,systemstream=true".into(),
        "!".into(),
        "tee".into(),
        "name=t".into(),
    ];
    for port in &r.ports {
        for a in ["t.", "!", "queue", "!", "udpsink", "host=127.0.0.1", "sync=false", "async=false"] {
            args.push(a.into());
        }
        args.push(format!("port={port}"));
    }
    let mut child =
        Command::new("gst-launch-1.0").args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
    std::thread::sleep(Duration::from_millis(800));
    let sent = send(input, seconds);
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    Some(measure(&sent, r, 500))
}

#[tokio::main]
async fn main() {
    simulcast::media::init().expect("GStreamer");
    let seconds: u64 = std::env::var("LATENCY_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let batch_wait = std::env::var("BATCH_WAIT").unwrap_or_else(|_| "2ms".into());
    println!(
        "Added latency and skew, ~8 Mbit/s MPEG-TS over UDP on loopback, {seconds} s per run, \
         simulcast batch_wait={batch_wait} (ms):\n"
    );
    println!("| relay | N | lat p50 | lat p99 | lat max | skew p50 | skew p99 | skew max | lost |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in [1usize, 12, 50] {
        report("simulcast", n, run_simulcast(n, seconds).await);
        match run_gst_tee(n, seconds) {
            Some(f) => report("gst-launch tee", n, f),
            None => println!("| gst-launch tee | {n} | gst-launch-1.0 not found | | | | | | |"),
        }
    }
}
