//! What ad-break cues cost a leg: 60 s of a 1080p50 programme at about
//! 12 Mbit/s (as the passthrough multiplexer writes it), batched as the
//! fan-out batches it, through one UDP leg's input, with and without a
//! break every 10 s (the cue inserter then reads every packet's header and
//! rewrites each PMT). Measured in the thread's own CPU time; the figure
//! is the ratio, and the cost per second of programme.
//!
//!   cargo bench --bench cues

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a bench fails

use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use simulcast::media::breaks::LegBreak;
use simulcast::media::es::{AudioCodec, VideoCodec};
use simulcast::media::fanout::{BATCH_BYTES, DirectUdp, LegInput};
use simulcast::media::mux::{AudioSlot, Layout, Mux, Slot, Timing};
use simulcast::media::ts;

const SECONDS: u64 = 60;
const MS: u64 = 1_000_000;

/// The programme's batches, each with its clock time (ns).
fn programme() -> Vec<(u64, gst::BufferList)> {
    let mut mux = Mux::new();
    mux.set_layout(Layout {
        video: Some(VideoCodec::H264),
        audio: vec![AudioSlot { codec: AudioCodec::Aac, language: Some(*b"kaz") }],
        scte35: false,
    });
    let picture = vec![0x5au8; 12_000_000 / 8 / 50];
    let sound = vec![0xa5u8; 128_000 / 8 * 21 / 1000];
    let mut data = Vec::new();
    let mut batches = Vec::new();
    for i in 0..SECONDS * 50 {
        let now = 1_000 * MS + i * 20 * MS;
        let t = Timing { pts: now + 600 * MS, dts: now + 600 * MS, keyframe: i % 50 == 0 };
        mux.write_au(Slot::Video, t, &picture, now, &mut data);
        let a = Timing { pts: now + 600 * MS, dts: now + 600 * MS, keyframe: true };
        mux.write_au(Slot::Audio(0), a, &sound, now, &mut data);
        while data.len() >= BATCH_BYTES {
            let rest = data.split_off(BATCH_BYTES);
            let mut list = gst::BufferList::new();
            for chunk in data.chunks(ts::CHUNK) {
                list.get_mut().unwrap().add(gst::Buffer::from_slice(chunk.to_vec()));
            }
            batches.push((now, list));
            data = rest;
        }
    }
    batches
}

/// This thread's CPU time.
fn cpu() -> Duration {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec the call writes.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU time to offer every batch to one UDP leg, with `breaks` set.
fn run(batches: &[(u64, gst::BufferList)], breaks: Option<&[LegBreak]>) -> Duration {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_nonblocking(true).unwrap();
    let input = LegInput::new(Duration::from_secs(1));
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    input.attach_direct(Arc::new(DirectUdp::new(tx, rx.local_addr().unwrap(), |_| {}).unwrap()));
    if let Some(b) = breaks {
        input.set_breaks(b);
    }
    let mut buf = vec![0u8; 2048];
    let mut spent = Duration::ZERO;
    for (now, list) in batches {
        let start = cpu();
        input.offer(list, *now);
        spent += cpu() - start;
        // The receiver's side is not the leg's cost: drained, not counted.
        while rx.recv(&mut buf).is_ok() {}
    }
    if breaks.is_some() {
        assert!(input.cues().0 > 0, "no cue was sent");
    }
    spent
}

fn main() {
    gst::init().unwrap();
    let batches = programme();
    let breaks: Vec<LegBreak> = (1..SECONDS / 10)
        .map(|k| LegBreak {
            splice_event_id: k as u32,
            start_ns: 1_000 * MS + k * 10_000 * MS,
            duration: Duration::from_secs(5),
        })
        .collect();
    // Warm up, then seven rounds each, alternating; the best of each.
    run(&batches, None);
    let (mut plain, mut with) = (Duration::MAX, Duration::MAX);
    for _ in 0..7 {
        plain = plain.min(run(&batches, None));
        with = with.min(run(&batches, Some(&breaks)));
    }
    let per_s = |d: Duration| d.as_secs_f64() * 1e6 / SECONDS as f64;
    println!("{} batches, {SECONDS} s of 1080p50 programme at ~12 Mbit/s, one UDP leg", batches.len());
    println!("leg without breaks : {:8.1} µs CPU per second of programme", per_s(plain));
    println!("leg with breaks    : {:8.1} µs CPU per second of programme", per_s(with));
    println!("ratio              : {:.2}x", with.as_secs_f64() / plain.as_secs_f64());
}
