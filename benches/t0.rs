//! T0 accuracy: when each partner gets its first programme picture, against
//! T0, over repeated runs with 12 UDP legs; and, measured by the same
//! harness in the same run, what a control room does without a media-clock
//! switch: a timer starts `gst-launch-1.0 ... ! tee` to the 12 partners at T0.
//!
//! Each run: the relay starts 3 s before T0 with the legs on slate (a dark
//! card), the cue puts the test source's colour bars on at T0; 12 sockets
//! time every datagram. ffmpeg decodes each capture (mean luma per picture)
//! and the first bright picture is the first programme picture; its arrival
//! is the arrival of its first packet. Spread = latest - earliest first
//! programme picture across the 12 legs of one run.
//!
//! `cargo bench --bench t0` (`T0_RUNS`, default 10; `T0_MODE=passthrough`
//! relays the test source's own encode: T0 lands on its own picture through
//! the keyframe bridge, or with `T0_BRIDGE=off` on the next keyframe, up to
//! its GOP, 1 s, later; `RUST_LOG=simulcast::media=info` logs each switch).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

#[allow(dead_code)]
#[path = "../tests/common/pictures.rs"]
mod pictures;

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use simulcast::config;
use simulcast::media::program::Cue;
use simulcast::relay::{Relay, RelayPlan};

const LEGS: usize = 12;
const PROGRAM_LUMA: f64 = 80.0;
const FRAME_MS: f64 = 40.0;

type Timed = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

struct Captures {
    ports: Vec<u16>,
    data: Vec<Timed>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn captures(n: usize) -> Captures {
    let stop = Arc::new(AtomicBool::new(false));
    let (mut ports, mut data, mut threads) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        ports.push(socket.local_addr().expect("addr").port());
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let d: Timed = Arc::default();
        let (dd, s) = (Arc::clone(&d), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok(len) = socket.recv(&mut buf) {
                    dd.lock().unwrap().push((Instant::now(), buf[..len].to_vec()));
                }
            }
        }));
        data.push(d);
    }
    Captures { ports, data, stop, threads }
}

impl Captures {
    fn finish(self) -> Vec<Vec<(Instant, Vec<u8>)>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.data.iter().map(|d| std::mem::take(&mut *d.lock().unwrap())).collect()
    }
}

/// Milliseconds from T0 to `at` (an instant, mapped with `base`).
fn ms_after(t0: DateTime<Utc>, base: (Instant, DateTime<Utc>), at: Instant) -> f64 {
    let utc = base.1 + chrono::Duration::from_std(at.saturating_duration_since(base.0)).unwrap();
    (utc - t0).num_microseconds().unwrap() as f64 / 1000.0
}

/// CPU seconds this process has used (user and system, every thread).
fn cpu_s() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// A recorded contribution's picture: width, height, frames a second
/// (whole), and its field order as ffprobe names it (empty: progressive).
fn probe(file: &str) -> (u32, u32, u32, String) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-of", "csv=p=0", "-show_entries"])
        .args(["stream=width,height,r_frame_rate,field_order", file])
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    // In ffprobe's order: width, height, field_order, r_frame_rate.
    let f: Vec<&str> = text.lines().next().unwrap_or_default().split(',').collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u32>().ok()).expect("ffprobe reads the contribution");
    let rate =
        f.get(3).and_then(|r| r.split_once('/')).map(|(n, d)| n.parse::<u32>().unwrap() / d.parse::<u32>().unwrap());
    let order = f.get(2).copied().filter(|o| !matches!(*o, "progressive" | "unknown" | "")).unwrap_or_default();
    (num(0), num(1), rate.expect("a frame rate"), order.to_owned())
}

/// One run of simulcast, T0 `phase_ms` past a whole second after the
/// relay's start (the contribution's keyframes fall at a different place
/// around T0 in each run): per leg, ms from T0 to the first programme
/// picture at the partner, and ms from T0 to when it left the relay; ms
/// from T0 to that picture's own timestamp; and the CPU seconds of the run.
async fn run_simulcast(phase_ms: i64) -> (Vec<(f64, f64)>, f64, f64) {
    let c = captures(LEGS);
    let mode = std::env::var("T0_MODE").unwrap_or_else(|_| "transcode".into());
    // A recorded contribution (MPEG-TS, 1080p50) played in real time by
    // ffmpeg over UDP, or the built-in test source.
    let file = std::env::var("T0_CONTRIBUTION").ok();
    let mut player = None;
    let source = match &file {
        Some(f) => {
            let port = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("port").port();
            let url = format!("udp://127.0.0.1:{port}?pkt_size=1316");
            player = Command::new("ffmpeg")
                .args(["-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i", f, "-map", "0", "-c", "copy"])
                .args(["-f", "mpegts", &url])
                .stdout(Stdio::null())
                .spawn()
                .ok();
            format!("type = \"udp\"\nuri = \"udp://127.0.0.1:{port}\"\n")
        }
        None => "type = \"test\"\n".to_owned(),
    };
    let picture = match &file {
        Some(f) => {
            let (w, h, rate, _) = probe(f);
            format!("width = {w}\nheight = {h}\nframerate = {rate}\nvideo_kbps = 12000\ngop = 50\n")
        }
        None => "width = 640\nheight = 360\nframerate = 25\nvideo_kbps = 1500\ngop = 25\n".to_owned(),
    };
    let mut text = format!("[event]\ntitle = \"T0 bench\"\n[source]\n{source}[program]\nmode = \"{mode}\"\n{picture}");
    if std::env::var("T0_BRIDGE").is_ok_and(|v| v == "off") {
        text.push_str("keyframe_bridge = false\n");
    }
    for (i, port) in c.ports.iter().enumerate() {
        text.push_str(&format!(
            "[[channels]]\nid = \"leg-{i:02}\"\nname = \"leg {i}\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{port}\" }}\n"
        ));
    }
    let cfg = config::parse(&text).expect("config");
    let base = (Instant::now(), Utc::now());
    let t0 = base.1 + chrono::Duration::milliseconds(3000 + phase_ms);
    let cue = Cue { program_from: Some(t0), program_until: None, force_slate: false };
    let cpu = cpu_s();
    let relay = Relay::start_with(&RelayPlan::from_config(&cfg), cue, None).await.expect("relay");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = relay.shutdown().await;
    let cpu = cpu_s() - cpu;
    if let Some(mut p) = player {
        let _ = p.kill();
        let _ = p.wait();
    }
    let ms =
        |ns: u64| (DateTime::<Utc>::from_timestamp_nanos(ns as i64) - t0).num_microseconds().unwrap() as f64 / 1000.0;
    let stamped = status.switched_utc_ns.map_or(f64::NAN, ms);
    let grams = c.finish();
    let mut out = Vec::new();
    for (i, g) in grams.iter().enumerate() {
        let pics = pictures::pictures(g);
        let Some(first) = pics.iter().find(|p| p.luma > PROGRAM_LUMA) else {
            eprintln!("leg {i}: no programme picture ({} pictures decoded)", pics.len());
            continue;
        };
        let sent = status.legs[i].program_since_utc_ns.map_or(f64::NAN, ms);
        out.push((ms_after(t0, base, first.arrived), sent));
    }
    (out, stamped, cpu)
}

/// One run of the timer-started peer: per leg, ms from T0 to the first
/// picture at the partner.
async fn run_gst_timer() -> Option<Vec<f64>> {
    let c = captures(LEGS);
    let mut args: Vec<String> =
        "-q videotestsrc is-live=true pattern=smpte ! video/x-raw,width=640,height=360,framerate=25/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=1500 key-int-max=25 bframes=0 ! h264parse \
         ! mpegtsmux alignment=7 ! tee name=t"
            .split_whitespace()
            .map(String::from)
            .collect();
    for port in &c.ports {
        args.extend(
            format!("t. ! queue ! udpsink host=127.0.0.1 port={port} sync=false").split_whitespace().map(String::from),
        );
    }
    let base = (Instant::now(), Utc::now());
    let t0 = base.1 + chrono::Duration::seconds(2);
    tokio::time::sleep((t0 - Utc::now()).to_std().unwrap_or_default()).await;
    let mut child =
        Command::new("gst-launch-1.0").args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().ok()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = child.kill();
    let _ = child.wait();
    let grams = c.finish();
    let mut out = Vec::new();
    for g in &grams {
        if let Some(first) = pictures::pictures(g).first() {
            out.push(ms_after(t0, base, first.arrived));
        }
    }
    Some(out)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn spread(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max) - v.iter().copied().fold(f64::MAX, f64::min)
}

#[tokio::main]
async fn main() {
    // RUST_LOG=simulcast::media=info shows each switch and bridge.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    simulcast::media::init().expect("GStreamer");
    let runs: usize = std::env::var("T0_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let (mut at_partner, mut left_relay, mut spreads) = (Vec::new(), Vec::new(), Vec::new());
    let (mut stamps, mut cpus) = (Vec::new(), Vec::new());
    let (mut peer, mut peer_spreads) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // T0 moves by 370 ms a run against the contribution's keyframes.
        let (legs, stamped, cpu) = run_simulcast((run as i64 * 370) % 1000).await;
        stamps.push(stamped);
        cpus.push(cpu);
        let arrivals: Vec<f64> = legs.iter().map(|l| l.0).collect();
        eprintln!(
            "run {run}: simulcast {} legs, its own timestamp {stamped:.1} ms, at the partners {:.1}..{:.1} ms after T0; \
             {cpu:.2} s of CPU",
            legs.len(),
            arrivals.iter().copied().fold(f64::MAX, f64::min),
            arrivals.iter().copied().fold(f64::MIN, f64::max)
        );
        spreads.push(spread(&arrivals));
        at_partner.extend(arrivals);
        left_relay.extend(legs.iter().map(|l| l.1));
        if let Some(p) = run_gst_timer().await {
            eprintln!("run {run}: gst-launch timer {} legs", p.len());
            peer_spreads.push(spread(&p));
            peer.extend(p);
        }
    }
    let mode = std::env::var("T0_MODE").unwrap_or_else(|_| "transcode".into());
    let bridge = if std::env::var("T0_BRIDGE").is_ok_and(|v| v == "off") { ", no keyframe bridge" } else { "" };
    let (what, frame_ms) = match std::env::var("T0_CONTRIBUTION") {
        Ok(f) => {
            let (w, h, rate, field_order) = probe(&f);
            let scan = if field_order.is_empty() { "p".to_owned() } else { format!("i ({field_order})") };
            (format!("{f} relayed, {w}x{h}{scan}@{rate}"), 1000.0 / f64::from(rate))
        }
        Err(_) => ("the test source, 640x360@25, GOP 1 s".to_owned(), FRAME_MS),
    };
    println!("\nT0 accuracy, {mode}{bridge}, {runs} runs x {LEGS} UDP legs, {what} (one frame = {frame_ms} ms)\n");
    println!("| | legs measured | p50 ms | p99 ms | max ms | spread p50 ms | spread max ms |");
    println!("|---|---|---|---|---|---|---|");
    let row = |name: &str, v: &mut Vec<f64>, s: &mut Vec<f64>| {
        let n = v.len();
        let (p50, p99, max) = (pct(v, 0.5), pct(v, 0.99), pct(v, 1.0));
        let (s50, smax) = (pct(s, 0.5), pct(s, 1.0));
        let show = |x: f64| if s.is_empty() { "-".to_owned() } else { format!("{x:.1}") };
        println!("| {name} | {n} | {p50:.1} | {p99:.1} | {max:.1} | {} | {} |", show(s50), show(smax));
        (p50, s50)
    };
    let (ours, our_spread) =
        row("simulcast: first programme picture at the partner - T0", &mut at_partner, &mut spreads);
    let mut none = Vec::new();
    row("simulcast: first programme picture out of the relay - T0", &mut left_relay, &mut none);
    row("simulcast: the first programme picture's own timestamp - T0", &mut stamps, &mut Vec::new());
    let mean = cpus.iter().sum::<f64>() / cpus.len().max(1) as f64;
    println!("\nsimulcast's CPU per run (the relay's 5 s and 12 capture threads): mean {mean:.2} s");
    if peer.is_empty() {
        println!("| gst-launch started by a timer at T0 | gst-launch-1.0 not found | | | | | |");
    } else {
        let (theirs, their_spread) = row("gst-launch tee started by a timer at T0", &mut peer, &mut peer_spreads);
        println!(
            "\nRatio (gst-launch timer / simulcast), p50 of T0 error: {:.1}x; of spread: {:.1}x",
            theirs / ours,
            their_spread / our_spread.max(0.001)
        );
    }
}
