//! Fan-out: the program's MPEG-TS, batched, handed to every leg's appsrc.
//!
//! The program pipeline's appsink hands each buffer to one fan-out thread
//! over a bounded channel (the streaming thread never waits on a leg). That
//! thread checks the data is MPEG-TS, cuts it into 7-packet chunks, gathers
//! chunks into a [`gst::BufferList`] of up to [`BATCH_BYTES`] or `batch_wait`
//! ([`DEFAULT_BATCH_WAIT`]), stamps the list once with the absolute clock time and
//! offers the same list to every leg. Per-push overhead dominates fan-out
//! cost (gstreamer-notes.md), so a push carries several milliseconds of
//! program, never one packet.
//!
//! Each leg's input is bounded by time: a leg whose appsrc already holds
//! `leg_buffer` of program does not get the batch, and the drop is counted.
//! Each leg gets its own list object; the buffers in it are shared. A leg
//! stamped with its channel name (rehearsals) adds its own SDT packet to its
//! list ([`super::stamp`]).
//! A leg that blocks, errors or reconnects therefore never slows the others.
//!
//! UDP legs and SRT caller legs have no pipeline: the fan-out thread sends
//! their data itself ([`DirectSend`]: a non-blocking UDP socket,
//! [`DirectUdp`], or libsrt's non-blocking socket, `srt::DirectSrt`), as
//! multiudpsink or ffmpeg's tee would. A pipeline per leg cost a thread
//! wake-up per batch and GStreamer's per-buffer bookkeeping per leg: about
//! twice multiudpsink's CPU per datagram for UDP, and a third of the
//! relay's CPU at 12 SRT legs (docs/benchmarks.md). A UDP leg's batch goes
//! out as one send that the kernel cuts into the datagrams (UDP GSO): one
//! trip through the network stack per batch rather than per datagram,
//! which put the relay's CPU below multiudpsink's own.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::supervise::Thread;
use super::{lock, ts};

/// Largest batch handed to the legs at once.
pub const BATCH_BYTES: usize = 12 * ts::CHUNK;
pub use crate::config::DEFAULT_BATCH_WAIT;
/// Buffers queued between the program pipeline and the fan-out thread.
pub const CHANNEL_DEPTH: usize = 4096;
/// No program start seen (see [`LegInput::mark_program`]).
const NONE: u64 = u64::MAX;

/// What the fan-out has seen of the contribution feed.
#[derive(Debug, Default)]
pub struct InputCounters {
    /// Valid MPEG-TS bytes relayed.
    pub bytes: AtomicU64,
    /// Bytes refused as not MPEG-TS.
    pub garbage_bytes: AtomicU64,
    /// Buffers lost because the fan-out thread fell behind (should stay 0).
    pub overflow_buffers: AtomicU64,
    /// Clock time (ns) of the last valid buffer; 0 if none yet.
    pub last_valid_ns: AtomicU64,
    /// Clock time (ns) of the last garbage buffer; 0 if none yet.
    pub last_garbage_ns: AtomicU64,
}

/// One leg's entrance: the appsrc of its current pipeline, if it has one,
/// and the timestamps of the batches it holds.
///
/// The bound is kept here rather than by appsrc's `max-time`: appsrc 1.22's
/// own time level was seen to refuse whole batches on every leg at once
/// while nothing was backed up. Here the level is exact: the newest batch
/// offered minus the oldest one still inside appsrc (retired by a probe on
/// appsrc's src pad, see [`LegInput::retire`]).
#[derive(Debug)]
pub struct LegInput {
    inner: Mutex<Inner>,
    max_time: u64,
    dropped: AtomicU64,
    /// Stamp of the batch that starts the program; [`NONE`] if none pending.
    program_from: AtomicU64,
    /// Clock time (ns) the program's first batch left appsrc; 0: not yet.
    program_out_ns: AtomicU64,
    /// The send fence's generation this leg sends in (see `fence`).
    fence: AtomicU64,
}

/// A leg the fan-out thread sends to itself, without a pipeline: a UDP
/// socket ([`DirectUdp`]) or an SRT caller socket (`srt::DirectSrt`).
/// `send` must never wait.
pub trait DirectSend: Send + Sync + std::fmt::Debug {
    /// Sends the buffers of `list`; returns how many were not sent.
    fn send(&self, list: &gst::BufferListRef) -> u64;
}

/// A UDP leg's socket, written from the fan-out thread.
pub struct DirectUdp {
    socket: std::net::UdpSocket,
    to: std::net::SocketAddr,
    /// Told the bytes of each batch sent.
    count: Box<dyn Fn(u64) + Send + Sync>,
    /// The latest send error, if any, for the leg's status.
    pub error: Arc<Mutex<Option<String>>>,
    /// Whether the kernel cuts one send into datagrams (UDP GSO, see
    /// [`DirectUdp::send_runs`]); cleared if a send says it cannot.
    gso: AtomicBool,
    /// Sends that went out as several datagrams in one (UDP GSO).
    gso_sends: AtomicU64,
}

impl std::fmt::Debug for DirectUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectUdp").field("to", &self.to).finish_non_exhaustive()
    }
}

impl DirectSend for DirectUdp {
    fn send(&self, list: &gst::BufferListRef) -> u64 {
        self.send_list(list)
    }
}

impl DirectUdp {
    /// Sends to `to` from `socket` (connected to it, so the kernel keeps
    /// the route; made non-blocking here); `count` is told the bytes of
    /// each batch sent.
    pub fn new(
        socket: std::net::UdpSocket,
        to: std::net::SocketAddr,
        count: impl Fn(u64) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        socket.connect(to)?;
        socket.set_nonblocking(true)?;
        let gso = AtomicBool::new(gso_supported(&socket));
        Ok(Self { socket, to, count: Box::new(count), error: Arc::default(), gso, gso_sends: AtomicU64::new(0) })
    }

    /// Sends every buffer of `list` as one datagram; returns how many were
    /// not sent (a full socket buffer, or an error, kept for the status).
    /// Where the kernel can, runs of full chunks go out as one segmented
    /// send each ([`DirectUdp::send_runs`]); otherwise, and for whatever
    /// that did not take, the datagrams go out in one `sendmmsg` call per
    /// [`MMSG_MAX`] (one system call for the batch, as multiudpsink does);
    /// whatever that does not take goes one by one, which names the error.
    fn send_list(&self, list: &gst::BufferListRef) -> u64 {
        let maps: Vec<gst::buffer::BufferMap<'_, gst::buffer::Readable>> =
            list.iter().filter_map(|b| b.map_readable().ok()).collect();
        let (mut lost, mut sent) = (0, 0);
        let mut from = 0;
        if self.gso.load(Ordering::Relaxed) {
            (from, sent) = self.send_runs(&maps);
        }
        for chunk in maps[from..].chunks(MMSG_MAX) {
            let (n, bytes) = self.send_many(chunk);
            sent += bytes;
            from += n;
            if n < chunk.len() {
                break;
            }
        }
        for m in &maps[from..] {
            // An ICMP "port unreachable" for an earlier datagram fails the
            // next send on a connected socket, this datagram unsent: the
            // error is consumed by that call, so send it once more.
            let result = match self.socket.send(m) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    self.nobody_listens();
                    self.socket.send(m)
                }
                r => r,
            };
            match result {
                Ok(n) => sent += n as u64,
                Err(e) => {
                    lost += 1;
                    let why = match e.kind() {
                        std::io::ErrorKind::WouldBlock => None,
                        // The partner's host answered "port unreachable"
                        // (ICMP) to an earlier datagram: nobody listens.
                        std::io::ErrorKind::ConnectionRefused => Some(NOBODY_LISTENS.into()),
                        _ => Some(e.to_string()),
                    };
                    if let Some(why) = why {
                        *lock(&self.error) = Some(format!("udp://{}: {why}", self.to));
                    }
                }
            }
        }
        if sent > 0 {
            (self.count)(sent);
        }
        lost
    }

    /// Sends `datagrams` as runs of [`ts::CHUNK`]-sized datagrams, each
    /// run closed by a shorter one, with one `sendmsg` per run that the
    /// kernel cuts into the datagrams (`UDP_SEGMENT`, Linux 4.18): one trip
    /// through the network stack per run instead of one per datagram, and
    /// the same datagrams on the wire. Returns (how many datagrams went,
    /// their bytes); it stops at the first send that fails, or at a buffer
    /// larger than a chunk, and leaves the rest to `sendmmsg`. A kernel or
    /// device that cannot segment (`EIO`, `EINVAL`, ...) turns it off.
    fn send_runs(&self, datagrams: &[gst::buffer::BufferMap<'_, gst::buffer::Readable>]) -> (usize, u64) {
        use std::os::fd::AsRawFd;
        let (mut from, mut bytes) = (0, 0);
        while from < datagrams.len() {
            let mut end = from;
            while end < datagrams.len() && end - from < GSO_MAX {
                let len = datagrams[end].len();
                if len > ts::CHUNK {
                    break;
                }
                end += 1;
                if len < ts::CHUNK {
                    break;
                }
            }
            if end == from {
                break;
            }
            let run = &datagrams[from..end];
            // SAFETY: iovec is a plain C struct; all zeroes is valid.
            let mut iov: [libc::iovec; GSO_MAX] = unsafe { std::mem::zeroed() };
            for (v, d) in iov.iter_mut().zip(run) {
                *v = libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() };
            }
            // The control message: the segment size, a u16.
            let mut control = [0u64; 4];
            // SAFETY: msghdr is a plain C struct; all zeroes is valid.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = run.len();
            if run.len() > 1 {
                msg.msg_control = control.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE only computes a size.
                msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
                // SAFETY: `control` is aligned for cmsghdr and larger than
                // CMSG_SPACE(2), so the first header and its data fit in it.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&msg);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = libc::UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
                    libc::CMSG_DATA(c).cast::<u16>().write_unaligned(ts::CHUNK as u16);
                }
            }
            // SAFETY: the socket is open for the call; `msg` points at
            // `run.len()` iovecs of `iov`, each at a mapped buffer of
            // `datagrams`, and at `control`, all alive until it returns; the
            // kernel only reads them. A connected socket needs no address.
            let sent = unsafe { libc::sendmsg(self.socket.as_raw_fd(), &msg, 0) };
            if sent < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    // The ICMP "port unreachable" of an earlier datagram,
                    // consumed by this call: the next send goes through.
                    Some(libc::ECONNREFUSED) => {
                        self.nobody_listens();
                    }
                    Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP) => {
                        self.gso.store(false, Ordering::Relaxed);
                        tracing::info!(to = %self.to, error = %e, "UDP segmentation offload refused; sending datagram by datagram");
                    }
                    _ => {}
                }
                break;
            }
            if run.len() > 1 {
                self.gso_sends.fetch_add(1, Ordering::Relaxed);
            }
            bytes += sent as u64;
            from = end;
        }
        (from, bytes)
    }

    /// Keeps, for the leg's status, that the partner's host answered "port
    /// unreachable" (ICMP) to an earlier datagram.
    fn nobody_listens(&self) {
        *lock(&self.error) = Some(format!("udp://{}: {NOBODY_LISTENS}", self.to));
    }

    /// Sends `datagrams` with one `sendmmsg`; (how many went, their bytes).
    fn send_many(&self, datagrams: &[gst::buffer::BufferMap<'_, gst::buffer::Readable>]) -> (usize, u64) {
        use std::os::fd::AsRawFd;
        let n = datagrams.len().min(MMSG_MAX);
        // SAFETY: iovec and mmsghdr are plain C structs; all zeroes is valid.
        let mut iov: [libc::iovec; MMSG_MAX] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; MMSG_MAX] = unsafe { std::mem::zeroed() };
        for (i, d) in datagrams.iter().take(n).enumerate() {
            iov[i] = libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() };
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the socket is open for the call; each message points at
        // one iovec of `iov`, each iovec at a mapped buffer of `datagrams`,
        // all alive until it returns; the kernel only reads them and writes
        // `msg_len`. A connected socket needs no address.
        let sent = unsafe { libc::sendmmsg(self.socket.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
        // An ICMP "port unreachable" for an earlier datagram fails the call
        // and is consumed by it: say so here, the next send goes through.
        if sent < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::ConnectionRefused {
            self.nobody_listens();
        }
        let went = usize::try_from(sent).unwrap_or(0);
        (went, msgs[..went].iter().map(|m| u64::from(m.msg_len)).sum())
    }
}

/// Datagrams per `sendmmsg` call (a batch holds [`BATCH_BYTES`], 12
/// datagrams, at most).
const MMSG_MAX: usize = 16;
/// A UDP leg's error when its partner's host says nobody listens.
const NOBODY_LISTENS: &str = "nobody listens (ICMP port unreachable)";
/// Datagrams per segmented send: 48 chunks stay under a UDP datagram's
/// 65 507 bytes and the kernel's 64 segments.
const GSO_MAX: usize = 48;

/// Whether the kernel knows UDP segmentation offload (`UDP_SEGMENT`, Linux
/// 4.18; an older kernel refuses the option, and would ignore the control
/// message, sending one oversized datagram).
fn gso_supported(socket: &std::net::UdpSocket) -> bool {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the socket is open; `value` and `len` are valid for writes of
    // the sizes given.
    let r = unsafe {
        libc::getsockopt(socket.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, (&raw mut value).cast(), &mut len)
    };
    r == 0
}

#[derive(Debug, Default)]
struct Inner {
    appsrc: Option<gst_app::AppSrc>,
    /// A leg without a pipeline (UDP, SRT caller) sends from here.
    direct: Option<Arc<dyn DirectSend>>,
    /// PTS (ns) of batches pushed into appsrc and not yet out of it.
    queued: VecDeque<u64>,
    /// Names this leg's channel in its copy of each batch (stamped legs).
    stamper: Option<super::stamp::SdtStamper>,
    /// Chooses this leg's audio tracks (legs that list languages).
    tracks: Option<super::tracks::TrackFilter>,
    /// Adds this leg's ad-break cues (MPEG-TS legs given breaks).
    cues: Option<super::breaks::CueInserter>,
    /// An FLV leg's cues, for its pipeline to add (see [`LegInput::for_flv`]).
    flv: Option<super::breaks::FlvCues>,
}

impl LegInput {
    /// An input bounded to `max_time` of queued program.
    pub fn new(max_time: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_time: max_time.as_nanos() as u64,
            dropped: AtomicU64::new(0),
            program_from: AtomicU64::new(NONE),
            program_out_ns: AtomicU64::new(0),
            fence: AtomicU64::new(super::fence::generation()),
        }
    }

    /// Sends only in the send fence's `generation` (by default, the one
    /// it was made in): a relay started under a lease gives its legs
    /// that lease's.
    pub fn fence_in(&self, generation: u64) {
        self.fence.store(generation, Ordering::Relaxed);
    }

    /// Whether the send fence lets this leg's batches out now.
    pub fn fence_open(&self) -> bool {
        super::fence::open_in(self.fence.load(Ordering::Relaxed))
    }

    /// Stamps this leg's copy of every batch with an SDT naming `service`
    /// (see [`super::stamp`]).
    pub fn stamped(self, service: String) -> Self {
        lock(&self.inner).stamper = Some(super::stamp::SdtStamper::new(service));
        self
    }

    /// Gives this leg only the programme's audio tracks in `languages`
    /// (see [`super::tracks`]).
    pub fn with_audio(self, languages: Vec<String>) -> Self {
        lock(&self.inner).tracks = Some(super::tracks::TrackFilter::new(languages));
        self
    }

    /// This leg's ad breaks from now on (see [`super::breaks`]): its PMT
    /// lists its cue PID from its first break on (and keeps it: a PMT
    /// that came and went with each break would be news to receivers).
    /// An FLV leg's breaks go out as the `onCuePoint` messages its
    /// pipeline asks for ([`LegInput::flv_cues`]); the MPEG-TS it reads is
    /// left as it is.
    pub fn set_breaks(&self, breaks: &[super::breaks::LegBreak]) {
        let mut inner = lock(&self.inner);
        if let Some(flv) = inner.flv.as_mut() {
            flv.set(breaks);
            return;
        }
        match inner.cues.as_mut() {
            Some(cues) => cues.set(breaks),
            None if breaks.is_empty() => {}
            None => inner.cues.insert(super::breaks::CueInserter::new()).set(breaks),
        }
    }

    /// This leg carries FLV (RTMP): its breaks are AMF `onCuePoint`
    /// messages, not SCTE-35 in its MPEG-TS (a PMT that changed under its
    /// tsdemux could cost the FLV leg its pads).
    pub fn for_flv(self) -> Self {
        lock(&self.inner).flv = Some(super::breaks::FlvCues::default());
        self
    }

    /// An FLV leg's cue tags due at clock time `now`, stamped `flv_ms`.
    pub fn flv_cues(&self, now: u64, flv_ms: u32) -> Vec<Vec<u8>> {
        lock(&self.inner).flv.as_mut().map(|f| f.due(now, flv_ms)).unwrap_or_default()
    }

    /// Break cues sent on this leg, and those missed (not sent before
    /// their instant).
    pub fn cues(&self) -> (u64, u64) {
        let inner = lock(&self.inner);
        let ts = inner.cues.as_ref().map_or((0, 0), |c| (c.sent(), c.missed()));
        let flv = inner.flv.as_ref().map_or((0, 0), |c| (c.sent(), c.missed()));
        (ts.0 + flv.0, ts.1 + flv.1)
    }

    /// The languages this leg lists that the programme lacks.
    pub fn audio_missing(&self) -> Vec<String> {
        lock(&self.inner).tracks.as_ref().map(|t| t.missing().to_vec()).unwrap_or_default()
    }

    /// The batch stamped `pts` starts the program (its first keyframe):
    /// when it leaves appsrc, its time is kept for the as-run log.
    pub fn mark_program(&self, pts: u64) {
        self.program_from.store(pts, Ordering::Relaxed);
    }

    /// Clock time (ns) the latest program start left this leg's input.
    pub fn program_out_ns(&self) -> Option<u64> {
        Some(self.program_out_ns.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// Starts feeding `src` (a new pipeline of the leg).
    pub fn attach(&self, src: gst_app::AppSrc) {
        let mut inner = lock(&self.inner);
        inner.appsrc = Some(src);
        inner.queued.clear();
    }

    /// Starts sending straight to a socket (no pipeline).
    pub fn attach_direct(&self, direct: Arc<dyn DirectSend>) {
        let mut inner = lock(&self.inner);
        inner.direct = Some(direct);
        inner.queued.clear();
    }

    /// Stops feeding (the leg's pipeline or socket is going away).
    pub fn detach(&self) {
        let mut inner = lock(&self.inner);
        inner.appsrc = None;
        inner.direct = None;
        inner.queued.clear();
    }

    /// A batch stamped `pts` has left appsrc: it no longer counts.
    pub fn retire(&self, pts: u64) {
        let from = self.program_from.load(Ordering::Relaxed);
        if from != NONE && pts >= from {
            self.program_from.store(NONE, Ordering::Relaxed);
            self.program_out_ns.store(super::clock().time().nseconds(), Ordering::Relaxed);
        }
        let mut inner = lock(&self.inner);
        while inner.queued.front().is_some_and(|&front| front <= pts) {
            inner.queued.pop_front();
        }
    }

    /// Buffers this leg did not get because its input was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether anything waits inside the leg's appsrc.
    pub fn is_backed_up(&self) -> bool {
        !lock(&self.inner).queued.is_empty()
    }

    /// Offers a batch stamped `pts` (clock ns); dropped and counted if the
    /// leg already holds `max_time` of program.
    pub fn offer(&self, list: &gst::BufferList, pts: u64) {
        // Cluster mode: nothing goes out once this node's lease may have
        // lapsed (see `fence`).
        if !self.fence_open() {
            return;
        }
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        // The leg's own copy where it differs: its tracks, its cues.
        let mut own: Option<gst::BufferList> = inner.tracks.as_mut().map(|t| t.filter(list));
        if let Some(cues) = inner.cues.as_mut()
            && let Some(with_cues) = cues.apply(own.as_ref().unwrap_or(list), pts)
        {
            own = Some(with_cues);
        }
        let list = own.as_ref().unwrap_or(list);
        if inner.direct.is_some() {
            let lost = match inner.stamper.as_mut() {
                Some(stamper) => {
                    let mut own = list.copy();
                    if let Some(own) = own.get_mut() {
                        stamper.stamp(own, pts);
                    }
                    inner.direct.as_ref().map_or(0, |d| d.send(&own))
                }
                None => inner.direct.as_ref().map_or(0, |d| d.send(list)),
            };
            self.dropped.fetch_add(lost, Ordering::Relaxed);
            drop(guard);
            // Sent now: the program's first batch left this leg's input.
            self.retire(pts);
            return;
        }
        let Some(src) = inner.appsrc.clone() else {
            return;
        };
        if inner.queued.front().is_some_and(|&oldest| pts.saturating_sub(oldest) >= self.max_time) {
            self.dropped.fetch_add(list.len() as u64, Ordering::Relaxed);
            return;
        }
        // A list of its own per leg (the buffers inside are shared, not
        // copied): one GstBufferList pushed into several appsrcs made 1.22
        // stall legs and then abort on `GST_IS_BUFFER_LIST`, seen here.
        let mut list = list.copy();
        if let (Some(stamper), Some(own)) = (inner.stamper.as_mut(), list.get_mut()) {
            stamper.stamp(own, pts);
        }
        if src.push_buffer_list(list).is_ok() {
            inner.queued.push_back(pts);
        }
    }
}

/// What also gets every batch, beside the legs: the recording that
/// delayed legs air from (`recording.rs`, which depends on this module,
/// not the other way round). It must never wait.
pub trait Tap: Send + Sync + std::fmt::Debug {
    /// Takes (or drops, and counts) one batch.
    fn take(&self, list: &gst::BufferList);

    /// The next batch starts the programme (its first picture, after the
    /// slate).
    fn program_start(&self) {}
}

/// The set of legs fed from the program.
#[derive(Debug, Default)]
pub struct Fanout {
    legs: RwLock<Vec<Arc<LegInput>>>,
    taps: RwLock<Vec<Arc<dyn Tap>>>,
    counters: InputCounters,
    /// Stamps (clock ns) of the batches that started the program, oldest
    /// first: delayed legs mark the same instants in the recording.
    program_starts: Mutex<Vec<u64>>,
    /// The fan-out thread, once started.
    thread: Mutex<Option<Thread>>,
}

impl Fanout {
    /// An empty fan-out.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds a leg.
    pub fn add(&self, leg: Arc<LegInput>) {
        self.legs.write().unwrap_or_else(|e| e.into_inner()).push(leg);
    }

    /// Removes a leg.
    pub fn remove(&self, leg: &Arc<LegInput>) {
        self.legs.write().unwrap_or_else(|e| e.into_inner()).retain(|l| !Arc::ptr_eq(l, leg));
    }

    /// Also hands every batch to `tap` (the recording delayed legs read
    /// back, the programme's thumbnailer).
    pub fn add_tap(&self, tap: Arc<dyn Tap>) {
        self.taps.write().unwrap_or_else(|e| e.into_inner()).push(tap);
    }

    /// What has come in.
    pub fn counters(&self) -> &InputCounters {
        &self.counters
    }

    /// Stamps (clock ns) of the batches that started the program.
    pub fn program_starts(&self) -> Vec<u64> {
        lock(&self.program_starts).clone()
    }

    /// Starts the fan-out thread; returns the sender the program's appsink
    /// callback uses. The thread ends when every sender is dropped.
    /// `batch_wait` is the longest a chunk waits for company (zero: send
    /// whatever is queued, never wait).
    pub fn spawn(self: &Arc<Self>, batch_wait: Duration) -> std::io::Result<FanoutSender> {
        let (tx, rx) = mpsc::sync_channel::<Item>(CHANNEL_DEPTH);
        let me = Arc::clone(self);
        let thread = Thread::spawn("fanout", move || me.run(rx, batch_wait))?;
        *lock(&self.thread) = Some(thread);
        Ok(FanoutSender { tx, fanout: Arc::clone(self) })
    }

    /// Waits for the fan-out thread to end (every sender dropped: the
    /// program is gone), and lets go of the tap; `false` if the thread was
    /// still running after `within`.
    pub async fn join(&self, within: Duration) -> bool {
        let thread = lock(&self.thread).take();
        let ended = match thread {
            Some(t) => t.join(within).await,
            None => true,
        };
        self.taps.write().unwrap_or_else(|e| e.into_inner()).clear();
        ended
    }

    fn run(&self, rx: mpsc::Receiver<Item>, batch_wait: Duration) {
        let clock = super::clock();
        let mut batch = Batch::default();
        loop {
            let first = match rx.recv() {
                Ok(Item::Buffer(b)) => b,
                Ok(Item::ProgramStart) => {
                    // The program starts a batch of its own.
                    self.flush(&mut batch);
                    batch.program_start = true;
                    continue;
                }
                Err(_) => return,
            };
            self.take(&mut batch, first, &clock);
            let deadline = Instant::now() + batch_wait;
            while batch.bytes < BATCH_BYTES {
                // What is already queued joins the batch at no cost in latency.
                let next = match rx.try_recv() {
                    Ok(b) => Ok(b),
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                    Err(TryRecvError::Empty) => {
                        let wait = deadline.saturating_duration_since(Instant::now());
                        if wait.is_zero() {
                            break;
                        }
                        rx.recv_timeout(wait)
                    }
                };
                match next {
                    Ok(Item::Buffer(b)) => self.take(&mut batch, b, &clock),
                    Ok(Item::ProgramStart) => {
                        self.flush(&mut batch);
                        batch.program_start = true;
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.flush(&mut batch);
                        return;
                    }
                }
            }
            self.flush(&mut batch);
        }
    }

    /// Checks a buffer and adds its 7-packet chunks to the batch.
    fn take(&self, batch: &mut Batch, buffer: gst::Buffer, clock: &gst::Clock) {
        let now = clock.time().nseconds();
        let valid = buffer.map_readable().map(|m| ts::is_aligned_ts(&m)).unwrap_or(false);
        if !valid {
            self.counters.garbage_bytes.fetch_add(buffer.size() as u64, Ordering::Relaxed);
            self.counters.last_garbage_ns.store(now, Ordering::Relaxed);
            return;
        }
        self.counters.bytes.fetch_add(buffer.size() as u64, Ordering::Relaxed);
        self.counters.last_valid_ns.store(now, Ordering::Relaxed);
        // Every chunk carries its arrival time on the shared clock: RTP legs
        // (RIST) take their timestamps from it, and the legs' time bound too.
        let pts = gst::ClockTime::from_nseconds(now);
        let size = buffer.size();
        if size <= ts::CHUNK {
            batch.push(buffer, pts);
            return;
        }
        let mut offset = 0;
        while offset < size {
            let len = ts::CHUNK.min(size - offset);
            // Shares the memory: no copy of the payload.
            if let Ok(chunk) = buffer.copy_region(gst::BufferCopyFlags::MEMORY, offset..offset + len) {
                batch.push(chunk, pts);
            }
            offset += len;
        }
    }

    fn flush(&self, batch: &mut Batch) {
        let Some(list) = batch.list.take() else { return };
        batch.bytes = 0;
        // Every leg pipeline runs on the same clock with base time 0, so an
        // absolute timestamp means the same instant in all of them.
        let Some(pts) = list.get(0).and_then(|b| b.pts()) else { return };
        let pts = pts.nseconds();
        let start = std::mem::take(&mut batch.program_start);
        if start {
            let mut starts = lock(&self.program_starts);
            starts.push(pts);
            let excess = starts.len().saturating_sub(64);
            starts.drain(..excess);
        }
        let legs = self.legs.read().unwrap_or_else(|e| e.into_inner());
        for leg in legs.iter() {
            if start {
                leg.mark_program(pts);
            }
            leg.offer(&list, pts);
        }
        for tap in self.taps.read().unwrap_or_else(|e| e.into_inner()).iter() {
            if start {
                tap.program_start();
            }
            tap.take(&list);
        }
    }
}

#[derive(Default)]
struct Batch {
    list: Option<gst::BufferList>,
    bytes: usize,
    /// The next batch flushed starts the program.
    program_start: bool,
}

impl Batch {
    fn push(&mut self, mut buffer: gst::Buffer, pts: gst::ClockTime) {
        self.bytes += buffer.size();
        // Replace the program pipeline's own times (its running time) with
        // the shared clock's; copies the buffer's header only, if shared.
        let b = buffer.make_mut();
        b.set_pts(pts);
        b.set_dts(gst::ClockTime::NONE);
        let list = self.list.get_or_insert_with(|| gst::BufferList::new_sized(16));
        if let Some(l) = list.get_mut() {
            l.add(buffer);
        }
    }
}

/// The program side's handle on the fan-out thread.
#[derive(Debug, Clone)]
pub struct FanoutSender {
    tx: SyncSender<Item>,
    fanout: Arc<Fanout>,
}

/// What the program pipeline hands the fan-out thread.
#[derive(Debug)]
enum Item {
    /// Multiplexed program.
    Buffer(gst::Buffer),
    /// The next buffer carries the first program keyframe.
    ProgramStart,
}

impl FanoutSender {
    /// Hands a buffer to the fan-out thread without ever blocking.
    pub fn send(&self, buffer: gst::Buffer) {
        match self.tx.try_send(Item::Buffer(buffer)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.fanout.counters.overflow_buffers.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// The next buffer sent carries the program's first keyframe.
    pub fn mark_program_start(&self) {
        let _ = self.tx.try_send(Item::ProgramStart);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch goes out whole and in order, each buffer one datagram of
    /// its own size, its bytes counted, whether the kernel segments runs of
    /// chunks (one send per run) or `sendmmsg` sends them; a port nobody
    /// listens on is named in the leg's error.
    #[test]
    fn a_udp_leg_sends_a_batch_in_order_and_names_a_port_nobody_listens_on() {
        gst::init().expect("init");
        let sock = || std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        // Two runs of chunks, each closed by a shorter buffer, then a third.
        let sizes = [4, 4, 4, 4, 2, 4, 4, 1, 4, 4, 4, 4].map(|c| c * ts::CHUNK / 4);
        let mut list = gst::BufferList::new();
        for (i, &size) in sizes.iter().enumerate() {
            list.get_mut().expect("writable").add(gst::Buffer::from_mut_slice(vec![i as u8; size]));
        }
        for segmented in [true, false] {
            let rx = sock();
            rx.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            let counted = Arc::new(AtomicU64::new(0));
            let c = Arc::clone(&counted);
            let leg = DirectUdp::new(sock(), rx.local_addr().expect("addr"), move |n| {
                c.fetch_add(n, Ordering::Relaxed);
            })
            .expect("leg");
            assert!(leg.gso.load(Ordering::Relaxed), "this kernel has no UDP segmentation offload");
            leg.gso.store(segmented, Ordering::Relaxed);
            assert_eq!(leg.send(&list), 0);
            let mut got = [0u8; 2048];
            for (i, &size) in sizes.iter().enumerate() {
                let n = rx.recv(&mut got).expect("datagram");
                assert_eq!((n, got[0], got[n - 1]), (size, i as u8, i as u8), "datagram {i}, segmented: {segmented}");
            }
            assert_eq!(counted.load(Ordering::Relaxed), sizes.iter().sum::<usize>() as u64);
            assert_eq!(leg.gso_sends.load(Ordering::Relaxed), if segmented { 3 } else { 0 });
        }

        let closed = sock().local_addr().expect("addr");
        let leg = DirectUdp::new(sock(), closed, |_| {}).expect("leg");
        for _ in 0..3 {
            leg.send(&list);
            std::thread::sleep(Duration::from_millis(20));
        }
        let error = lock(&leg.error).clone().unwrap_or_default();
        assert!(error.contains("nobody listens"), "{error:?}");
    }

    fn ts_buffer(packets: usize) -> gst::Buffer {
        let mut data = vec![0u8; packets * ts::PACKET];
        for p in data.chunks_exact_mut(ts::PACKET) {
            p[0] = ts::SYNC;
        }
        gst::Buffer::from_mut_slice(data)
    }

    #[test]
    fn large_buffers_are_cut_into_udp_sized_chunks_and_garbage_is_refused() {
        crate::media::init().unwrap();
        let fanout = Fanout::new();
        let clock = crate::media::clock();
        let mut batch = Batch::default();
        fanout.take(&mut batch, ts_buffer(20), &clock);
        let list = batch.list.as_ref().unwrap();
        let sizes: Vec<usize> = list.iter().map(|b| b.size()).collect();
        assert_eq!(sizes, [ts::CHUNK, ts::CHUNK, 6 * ts::PACKET]);
        fanout.take(&mut batch, gst::Buffer::from_slice(b"GET / HTTP/1.1\r\n"), &clock);
        assert_eq!(batch.list.as_ref().unwrap().len(), 3);
        assert_eq!(fanout.counters().garbage_bytes.load(Ordering::Relaxed), 16);
        assert_eq!(fanout.counters().bytes.load(Ordering::Relaxed), 20 * ts::PACKET as u64);
    }
}
