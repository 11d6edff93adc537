//! Failover time: from the primary's last packet to the first backup
//! picture at a partner, and (with the backup already gone) to the first
//! slate picture; p50/p99/max over repeated cuts, default 500 ms detection.
//!
//! One relay, two ffmpeg contribution feeds (primary white, backup grey)
//! through UDP gates that know the instant they passed the last datagram
//! before a cut; one UDP leg, every datagram timed on arrival. ffmpeg
//! decodes the capture (mean luma per picture) and each picture is timed
//! by the arrival of its first packet.
//!
//! Each cycle: cut the primary (→ backup); restore it and cut the backup
//! (→ primary at once); cut the primary (→ slate); restore both (→ primary).
//!
//! No peer runs here: no stock GStreamer or ffmpeg element in Debian 12
//! fails over on its own (gst-plugins-rs' fallbacksrc, 5 s default timeout,
//! is not packaged), so the figures stand against the target, 1 s.
//!
//! `cargo bench --bench failover` (`FAILOVER_CYCLES`, default 10).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

#[allow(dead_code)]
#[path = "../tests/common/pictures.rs"]
mod pictures;

#[allow(dead_code)]
#[path = "../tests/common/feeds.rs"]
mod feeds;

use std::net::UdpSocket;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use feeds::{Gate, GateMode, feed_of, ffmpeg_feed};
use simulcast::config;
use simulcast::media::failover::Feed;
use simulcast::relay::{Relay, RelayPlan};

/// What `feeds` needs from the tests' common module.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn require(tool: &str, package: &str) {
    let found =
        Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is not installed: apt-get install {package}");
}

/// Datagrams with their arrival times.
type Timed = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("free port")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn wait_in_use(relay: &Relay, want: Feed) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while relay.status().source_in_use != want {
        assert!(Instant::now() < deadline, "not on {want:?}: {:#?}", relay.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn report(what: &str, mut v: Vec<f64>, target: &str) {
    v.sort_by(f64::total_cmp);
    println!(
        "{what:<50} n={:<3} p50 {:>5.0} ms  p99 {:>5.0} ms  max {:>5.0} ms  {target}",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(0.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cycles: usize = std::env::var("FAILOVER_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let (p_port, b_port) = (free_udp_port(), free_udp_port());
    let (gate_p, gate_b) = (Gate::start(p_port), Gate::start(b_port));
    let _primary = ffmpeg_feed(gate_p.port, "white", true);
    let _backup = ffmpeg_feed(gate_b.port, "0x808080", true);

    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let leg_port = socket.local_addr().expect("addr").port();
    socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let timed: Timed = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let capture = {
        let (d, s) = (Arc::clone(&timed), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    d.lock().unwrap().push((Instant::now(), buf[..n].to_vec()));
                }
            }
        })
    };
    let text = format!(
        "[event]\ntitle = \"failover bench\"\n\
         [source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{p_port}\"\n\
         [backup]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{b_port}\"\n\
         [program]\nmode = \"transcode\"\nwidth = 320\nheight = 180\nframerate = 25\nvideo_kbps = 800\ngop = 25\n\
         [[channels]]\nid = \"partner\"\nname = \"partner\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
         ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{leg_port}\" }}\n"
    );
    let cfg = config::parse(&text).expect("bench config");
    let relay = Relay::start(&RelayPlan::from_config(&cfg)).await.expect("relay starts");
    wait_in_use(&relay, Feed::Primary).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let settle = Duration::from_secs(1);
    let (mut to_backup, mut to_slate) = (Vec::new(), Vec::new());
    // Where the switch landed (its picture's timestamp) after the cut, ms.
    let (mut landed_b, mut landed_s) = (Vec::new(), Vec::new());
    let utc_of = |at: Instant| {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as f64 / 1e6;
        now - at.elapsed().as_secs_f64() * 1000.0
    };
    let landed = |relay: &Relay, cut: Instant| {
        let sw = relay.status().last_switch.expect("a switch");
        sw.at_utc_ns as f64 / 1e6 - utc_of(cut)
    };
    for i in 0..cycles {
        eprintln!("cycle {}/{cycles}", i + 1);
        to_backup.push(gate_p.set(GateMode::Closed).expect("primary sent"));
        wait_in_use(&relay, Feed::Backup).await;
        landed_b.push(landed(&relay, *to_backup.last().unwrap()));
        if std::env::var("FAILOVER_DEBUG").is_ok() {
            let st = relay.status();
            eprintln!("{:?}\n{:?}\n{:?}", st.last_switch, st.source, st.backup);
        }
        tokio::time::sleep(settle).await;
        gate_p.set(GateMode::Open);
        tokio::time::sleep(Duration::from_millis(300)).await;
        gate_b.set(GateMode::Closed);
        wait_in_use(&relay, Feed::Primary).await;
        tokio::time::sleep(settle).await;
        to_slate.push(gate_p.set(GateMode::Closed).expect("primary sent"));
        wait_in_use(&relay, Feed::Slate).await;
        landed_s.push(landed(&relay, *to_slate.last().unwrap()));
        tokio::time::sleep(settle).await;
        gate_p.set(GateMode::Open);
        gate_b.set(GateMode::Open);
        wait_in_use(&relay, Feed::Primary).await;
        tokio::time::sleep(settle).await;
    }
    relay.shutdown().await;
    stop.store(true, Ordering::Relaxed);
    let _ = capture.join();

    let timed = timed.lock().unwrap().clone();
    let pics = pictures::pictures(&timed);
    assert!(!pics.is_empty(), "nothing decoded from the partner's capture");
    // The first picture of `want` arriving after `cut`, after a primary picture.
    let first_after = |cut: Instant, want: Feed| {
        let i = pics.iter().position(|p| p.arrived > cut).expect("pictures after the cut");
        let j = i + pics[i..].iter().position(|p| feed_of(p.luma) == want).expect("the switch in the capture");
        assert!(pics[i..j].iter().all(|p| feed_of(p.luma) == Feed::Primary), "other pictures between cut and switch");
        (pics[j].arrived - cut).as_secs_f64() * 1000.0
    };
    let b: Vec<f64> = to_backup.iter().map(|c| first_after(*c, Feed::Backup)).collect();
    let s: Vec<f64> = to_slate.iter().map(|c| first_after(*c, Feed::Slate)).collect();
    println!("failover, {cycles} cycles, detection 500 ms, 320x180@25, one UDP partner on loopback");
    report("primary's last packet -> first backup picture", b, "(target < 1000 ms)");
    report("primary's last packet -> first slate picture", s, "(target < 1000 ms)");
    report("  its timestamp: where the backup switch landed", landed_b, "");
    report("  its timestamp: where the slate switch landed", landed_s, "");
}
