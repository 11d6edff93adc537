//! Contribution feeds for failover tests and benchmarks: ffmpeg encoding a
//! solid colour and a tone to MPEG-TS over UDP (a peer nobody here wrote),
//! through a gate that can cut the feed at a known instant or mix garbage
//! into it.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simulcast::media::failover::Feed;

use super::{ChildGuard, require};

/// Which feed a decoded picture came from, by its mean luma: the primary
/// is white, the backup grey, the slate card dark.
pub fn feed_of(luma: f64) -> Feed {
    if luma > 185.0 {
        Feed::Primary
    } else if luma > 85.0 {
        Feed::Backup
    } else {
        Feed::Slate
    }
}

/// `ffmpeg` sending `colour` (an ffmpeg colour name or 0xRRGGBB) and a
/// tone as H.264 + AAC in MPEG-TS to 127.0.0.1:`port`, in real time.
/// With `video: false`, the tone alone: a stream with no picture.
pub fn ffmpeg_feed(port: u16, colour: &str, video: bool) -> ChildGuard {
    require("ffmpeg", "ffmpeg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-re"]);
    if video {
        cmd.args(["-f", "lavfi", "-i", &format!("color=c={colour}:s=320x180:r=25")]);
    }
    cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
    if video {
        cmd.args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
        ]);
    }
    cmd.args(["-c:a", "aac", "-b:a", "64k", "-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    ChildGuard(cmd.spawn().expect("start ffmpeg"))
}

/// What a [`Gate`] does with the datagrams it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMode {
    /// Passes them on.
    Open = 0,
    /// Drops them: the feed is cut.
    Closed = 1,
    /// Passes them on, with a datagram of random bytes after each.
    Garbage = 2,
}

/// A UDP forwarder between a feed and the relay's contribution port: it
/// knows the instant it passed the last datagram on.
pub struct Gate {
    /// Where the feed sends (the gate's own port).
    pub port: u16,
    /// The mode and the instant the last datagram passed, under one lock
    /// the forwarder holds while it passes one on: a change of mode is
    /// never overtaken by a datagram already under way.
    state: Arc<Mutex<(GateMode, Option<Instant>)>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gate {
    /// A gate passing datagrams on to 127.0.0.1:`to`.
    pub fn start(to: u16) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind gate");
        let port = socket.local_addr().expect("addr").port();
        socket.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let out = UdpSocket::bind("127.0.0.1:0").expect("bind gate out");
        out.connect(("127.0.0.1", to)).expect("connect gate");
        let state = Arc::new(Mutex::new((GateMode::Open, None)));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, s) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut junk = vec![0u8; 1316];
            while !s.load(Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else { continue };
                let mut state = st.lock().unwrap();
                if state.0 == GateMode::Closed {
                    continue;
                }
                // A refused send (nobody listening yet) is not the gate's business.
                let _ = out.send(&buf[..n]);
                state.1 = Some(Instant::now());
                if state.0 == GateMode::Garbage {
                    junk.iter_mut().for_each(|b| *b = fastrand::u8(..));
                    let _ = out.send(&junk);
                }
            }
        });
        Self { port, state, stop, thread: Some(thread) }
    }

    /// Sets what the gate does; returns the instant the last datagram went
    /// through before the change (`None`: none yet).
    pub fn set(&self, mode: GateMode) -> Option<Instant> {
        let mut state = self.state.lock().unwrap();
        state.0 = mode;
        state.1
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
