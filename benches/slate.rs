//! What the passthrough slate costs: one encode of the card and its sound
//! in the programme's format, per codec, at 1080p50 with three audio
//! tracks (AAC, AAC, AC-3), as the splicer does it when the contribution's
//! format becomes known. Wall time, CPU time of the process and the growth
//! of its peak RSS over the encode; `SLATE_RUNS` each (default 3).
//!
//! The peers have nothing to compare here (a relay that copies has no
//! slate); the figure stands against what the slate is for: ready before a
//! switch needs it, at a cost paid once per format, not per picture. The
//! last column is a second relay asking for the same slate: it gets the
//! kept encode (`media::slate` keeps the last few across relays).
//!
//! `cargo bench --bench slate`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

use std::time::Instant;

use simulcast::media::coded::{AudioFormat, FeedFormat, VideoFormat};
use simulcast::media::es::{AudioCodec, VideoCodec};
use simulcast::media::slate::{SlateLook, encode, forget_kept};

/// (user + system CPU seconds, peak RSS in KiB) of this process so far.
fn usage() -> (f64, u64) {
    // SAFETY: rusage is plain integers; all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(u.ru_utime) + secs(u.ru_stime), u.ru_maxrss as u64)
}

fn main() {
    gstreamer::init().expect("GStreamer");
    let runs: usize = std::env::var("SLATE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let look = SlateLook {
        settings: Default::default(),
        title: "Silk Way Star - Grand Final".into(),
        gop: 50,
        video_kbps: 12000,
    };
    let track = |codec, language: &str| AudioFormat {
        codec,
        language: Some(language.into()),
        rate: 48000,
        channels: 2,
        samples: 0,
        layer: 0,
        pid: 0,
    };
    println!(
        "| codec | pictures in the loop | wall s (p50) | CPU s (p50) | peak RSS growth MB (first run) | the same slate again, kept: wall ms |"
    );
    println!("|---|---|---|---|---|---|");
    for codec in [VideoCodec::H264, VideoCodec::Hevc, VideoCodec::Mpeg2] {
        let format = FeedFormat {
            video: Some(VideoFormat {
                codec,
                profile: None,
                level: None,
                width: 1920,
                height: 1080,
                framerate: (50, 1),
                interlaced: false,
                top_field_first: true,
            }),
            audio: vec![track(AudioCodec::Aac, "kaz"), track(AudioCodec::Aac, "rus"), track(AudioCodec::Ac3, "eng")],
            scte35: false,
        };
        let (mut walls, mut cpus) = (Vec::new(), Vec::new());
        let (mut pictures, mut grew, mut kept) = (0, 0, 0.0);
        for i in 0..runs {
            let (cpu0, rss0) = usage();
            let t = Instant::now();
            // What an earlier run encoded is kept (see `kept` below): this
            // measures an encode, video and audio.
            forget_kept();
            let slate = encode(&format, &look).unwrap_or_else(|e| panic!("{codec}: {e}"));
            walls.push(t.elapsed().as_secs_f64());
            let (cpu1, rss1) = usage();
            cpus.push(cpu1 - cpu0);
            pictures = slate.video.len();
            if i == 0 {
                grew = rss1.saturating_sub(rss0);
            }
            if i + 1 == runs {
                let t = Instant::now();
                let again = encode(&format, &look).unwrap_or_else(|e| panic!("{codec}: {e}"));
                kept = t.elapsed().as_secs_f64() * 1e3;
                assert!(again.video.iter().zip(&slate.video).all(|(a, b)| a.as_ptr() == b.as_ptr()), "not kept");
            }
        }
        let p50 = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "| {} | {pictures} | {:.2} | {:.2} | {:.1} | {kept:.2} |",
            codec.label(),
            p50(&mut walls),
            p50(&mut cpus),
            grew as f64 / 1024.0
        );
    }
}
