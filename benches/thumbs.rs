//! What the multiviewer's thumbnails cost: four thumbnailers (the page's
//! programme, primary, backup and one more) each fed a 1080p50 H.264 High
//! contribution at about 12 Mbit/s (GOP 1 s) with one AAC track, in real
//! time for 20 s, as the relay feeds them (pictures, and the audio decoded
//! for its level meter), against ffmpeg making the same thumbnails the
//! cheapest way it can (`-skip_frame nokey`, keyframes only, scaled to
//! 320x180, JPEG; it decodes no audio), four processes, same input, same
//! run. CPU is user + system time
//! of the whole process (this bench's pushing loop alone is measured too
//! and taken off).
//!
//!   cargo bench --bench thumbs

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a bench fails

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use simulcast::media::thumbs::{Thumbnailer, Thumbnails};

const SECONDS: u64 = 20;
const STREAMS: usize = 4;
const CHUNK: usize = 7 * 188;

/// User + system CPU time of this process, or of its waited-for children.
fn cpu(who: i32) -> Duration {
    // SAFETY: rusage is plain integers; all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid rusage the call writes.
    unsafe { libc::getrusage(who, &mut u) };
    let t = |v: libc::timeval| Duration::new(v.tv_sec as u64, v.tv_usec as u32 * 1000);
    t(u.ru_utime) + t(u.ru_stime)
}

/// Hands `data` to `push` in 1316-byte chunks at its own bit rate, in real time.
fn pace(data: &[u8], mut push: impl FnMut(&[u8])) {
    let rate = data.len() as f64 / SECONDS as f64;
    let start = Instant::now();
    for (i, chunk) in data.chunks(CHUNK).enumerate() {
        let due = start + Duration::from_secs_f64((i * CHUNK) as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        push(chunk);
    }
}

fn main() {
    gst::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ts");
    eprintln!("Making the input: {SECONDS} s of 1920x1080p50 H.264 High at ~12 Mbit/s...");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
        .args(["-i", "testsrc2=size=1920x1080:rate=50,noise=alls=12:allf=t"])
        .args(["-f", "lavfi", "-i", "sine=f=440:r=48000", "-t", &SECONDS.to_string()])
        .args(["-c:v", "libx264", "-profile:v", "high", "-preset", "ultrafast", "-b:v", "12M", "-maxrate", "12M"])
        .args(["-bufsize", "6M", "-g", "50", "-c:a", "aac", "-b:a", "128k", "-f", "mpegts"])
        .arg(&input)
        .status()
        .unwrap();
    assert!(made.success());
    let data = std::fs::read(&input).unwrap();

    // The pushing loop alone.
    let c0 = cpu(libc::RUSAGE_SELF);
    pace(&data, |c| {
        std::hint::black_box(gst::Buffer::from_slice(c.to_vec()));
    });
    let idle = cpu(libc::RUSAGE_SELF) - c0;

    // Four thumbnailers.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let thumbs = Thumbnails::new();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let names = ["program", "primary", "backup", "fourth"];
    let mut tasks = Vec::new();
    let mut feeds: Vec<Arc<Thumbnailer>> = Vec::new();
    for name in names {
        let (t, task) = rt.block_on(async { Thumbnailer::start(name, Arc::clone(&thumbs), stop_rx.clone()) }).unwrap();
        feeds.push(t);
        tasks.push(task);
    }
    std::thread::sleep(Duration::from_millis(500));
    let c0 = cpu(libc::RUSAGE_SELF);
    pace(&data, |c| {
        let b = gst::Buffer::from_slice(c.to_vec());
        for f in &feeds {
            f.push(b.clone());
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let ours = cpu(libc::RUSAGE_SELF) - c0 - idle;
    let made: Vec<u64> = names.iter().map(|n| thumbs.get(n).map_or(0, |t| t.seq)).collect();
    let streams = thumbs.all().len();
    let _ = stop.send(true);
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    // Thumbnails made, all streams: the shared counter's last value.
    let pictures = made.iter().copied().max().unwrap_or(0);
    let per_stream = pictures as f64 / STREAMS as f64 / SECONDS as f64;

    // ffmpeg: four processes, keyframes only, in real time.
    let c0 = cpu(libc::RUSAGE_CHILDREN);
    let peers: Vec<_> = (0..STREAMS)
        .map(|i| {
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y", "-skip_frame", "nokey", "-re", "-i"])
                .arg(&input)
                .args(["-vf", "scale=320:180", "-fps_mode", "vfr", "-q:v", "5", "-update", "1"])
                .arg(dir.path().join(format!("peer{i}.jpg")))
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut p in peers {
        assert!(p.wait().unwrap().success());
    }
    let theirs = cpu(libc::RUSAGE_CHILDREN) - c0;

    let pct = |d: Duration| 100.0 * d.as_secs_f64() / SECONDS as f64;
    println!();
    println!(
        "Input: {} kbit/s 1920x1080p50 H.264 High, GOP 50, + AAC, {SECONDS} s in real time, {STREAMS} streams, 2 cores.",
        data.len() as u64 * 8 / SECONDS / 1000
    );
    println!();
    println!("| thumbnailer | CPU s | CPU % of a core | vs ffmpeg | pictures |");
    println!("|---|---|---|---|---|");
    println!(
        "| simulcast (4 thumbnailers) | {:.2} | {:.1} | {:.2} | {pictures} from {streams} streams, {per_stream:.2}/s each |",
        ours.as_secs_f64(),
        pct(ours),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
    println!(
        "| ffmpeg -skip_frame nokey (4 processes) | {:.2} | {:.1} | 1.00 | - |",
        theirs.as_secs_f64(),
        pct(theirs)
    );
    println!("(the pushing loop alone: {:.2} CPU s, taken off)", idle.as_secs_f64());
}
