//! SRT caller legs without a pipeline: the fan-out thread hands each
//! batch straight to libsrt, as ffmpeg's tee does, instead of waking a
//! streaming thread (appsrc ! srtsink) per leg for every batch.
//!
//! libsrt is the one GStreamer's srt plugin already loads (Debian's
//! `libsrt1.5-gnutls`, or the OpenSSL build), opened at run time so that
//! building simulcast needs no SRT headers. Where it is missing, or is not
//! the 1.5 series whose statistics layout is read here, SRT legs keep
//! their srtsink pipeline (`pipelines/legs/srt.gst`); so do listener legs,
//! whose partners call in.
//!
//! The socket never blocks: it connects in the background, and a batch
//! that finds libsrt's send buffer full is dropped and counted (the
//! partner is not keeping up). What the fan-out hands a socket still
//! connecting goes nowhere, as with srtsink's `wait-for-connection=false`:
//! a partner gets the programme from the moment it answers.
//!
//! Chunks are held and handed to libsrt together, every [`HOLD_MAX`] of
//! programme at most (less for a leg with a short SRT latency), each with
//! its arrival time as its SRT source time. Handed every fan-out batch
//! (a few milliseconds of programme), libsrt's send thread woke about 200
//! times a second per leg, against 120 for ffmpeg's tee, whose bursts are
//! whole frames (measured in docs/benchmarks.md). The source times keep
//! the partner's output paced as the programme came in: its receiver
//! plays each packet out at its source time plus the latency, so the hold
//! takes nothing from the partner's timing, only that much from the
//! latency's room for retransmissions.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::lock;
use crate::config::SrtEndpoint;

/// SRT figures from libsrt's statistics (srtsink's `stats` for a listener).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SrtFigures {
    /// Round-trip time.
    pub rtt_ms: f64,
    /// Packets reported lost by the receiver.
    pub packets_lost: u64,
    /// Packets sent again.
    pub packets_retransmitted: u64,
    /// Packets sent.
    pub packets_sent: u64,
}

/// libsrt's entry points used here (srt.h, 1.5).
struct Lib {
    create_socket: unsafe extern "C" fn() -> c_int,
    setsockflag: unsafe extern "C" fn(c_int, c_int, *const c_void, c_int) -> c_int,
    connect: unsafe extern "C" fn(c_int, *const libc::sockaddr, c_int) -> c_int,
    close: unsafe extern "C" fn(c_int) -> c_int,
    sendmsg2: unsafe extern "C" fn(c_int, *const c_char, c_int, *mut MsgCtrl) -> c_int,
    getlasterror: unsafe extern "C" fn(*mut c_int) -> c_int,
    getlasterror_str: unsafe extern "C" fn() -> *const c_char,
    bstats: unsafe extern "C" fn(c_int, *mut c_void, c_int) -> c_int,
    getsockstate: unsafe extern "C" fn(c_int) -> c_int,
    getrejectreason: unsafe extern "C" fn(c_int) -> c_int,
    rejectreason_str: unsafe extern "C" fn(c_int) -> *const c_char,
    msgctrl_init: unsafe extern "C" fn(*mut MsgCtrl),
    time_now: unsafe extern "C" fn() -> i64,
    connection_time: unsafe extern "C" fn(c_int) -> i64,
}

/// `SRT_MSGCTRL` (srt.h, 1.5): what goes with one message.
#[repr(C)]
#[derive(Clone, Copy)]
struct MsgCtrl {
    flags: c_int,
    msgttl: c_int,
    inorder: c_int,
    boundary: c_int,
    /// Source time, microseconds on libsrt's clock (`srt_time_now`); 0:
    /// the time of the call.
    srctime: i64,
    pktseq: i32,
    msgno: i32,
    grpdata: *mut c_void,
    grpdata_size: usize,
}

/// The longest an SRT caller leg holds chunks before handing them to
/// libsrt together (see the module's notes).
pub const HOLD_MAX: Duration = Duration::from_millis(40);

/// How long a leg with SRT latency `latency` holds chunks: [`HOLD_MAX`],
/// or a third of a short latency, so that two thirds of it stay room for
/// retransmissions.
pub fn hold_for(latency: Duration) -> Duration {
    (latency / 3).min(HOLD_MAX)
}

// Socket options (SRT_SOCKOPT).
const SRTO_SNDSYN: c_int = 1;
const SRTO_RCVSYN: c_int = 2;
const SRTO_SENDER: c_int = 21;
const SRTO_LATENCY: c_int = 23;
const SRTO_PASSPHRASE: c_int = 26;
const SRTO_STREAMID: c_int = 46;
// Error codes (SRT_ERRNO).
const SRT_EASYNCSND: c_int = 6001;
/// `SRT_REJ_UNKNOWN`: no rejection, the connection broke.
const SRT_REJ_UNKNOWN: c_int = 0;
/// `SRTS_CONNECTED`; the states after it end the socket.
const SRTS_CONNECTED: c_int = 5;

/// Where `CBytePerfMon` (1.5.1, 64-bit Linux: LP64 alignment) keeps the
/// figures read here; checked against the 1.5.1 header with `offsetof`.
mod stats {
    pub const PKT_SENT_TOTAL: usize = 8;
    pub const PKT_SND_LOSS_TOTAL: usize = 24;
    pub const PKT_RETRANS_TOTAL: usize = 32;
    pub const MS_RTT: usize = 328;
    /// The structure's size is 496 bytes; room for later additions.
    pub const ROOM: usize = 2048;
    /// Where libsrt writes it: aligned as the structure is.
    #[repr(C, align(8))]
    pub struct Room(pub [u8; ROOM]);
}

/// The libraries tried, in order: Debian's GnuTLS build (the one its
/// GStreamer srt plugin links), its OpenSSL build, a plain build.
const NAMES: [&str; 3] = ["libsrt-gnutls.so.1.5", "libsrt-openssl.so.1.5", "libsrt.so.1.5"];

static LIB: OnceLock<Option<Lib>> = OnceLock::new();

/// libsrt, if it can be used for legs without a pipeline.
fn lib() -> Option<&'static Lib> {
    LIB.get_or_init(|| {
        let lib = load();
        match &lib {
            Some(_) => tracing::debug!("SRT caller legs send through libsrt directly."),
            None => tracing::info!(tried = ?NAMES, "libsrt 1.5 not found: SRT legs use srtsink pipelines."),
        }
        lib
    })
    .as_ref()
}

/// Whether SRT caller legs can be sent without a pipeline here.
pub fn available() -> bool {
    lib().is_some()
}

fn load() -> Option<Lib> {
    let handle = NAMES.iter().find_map(|name| {
        let name = CString::new(*name).ok()?;
        // SAFETY: dlopen with a NUL-terminated name; a null result is
        // handled. The library stays loaded for the process's life (never
        // dlclose'd), so the symbols below stay valid.
        let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        (!h.is_null()).then_some(h)
    })?;
    let sym = |name: &str| -> Option<*mut c_void> {
        let name = CString::new(name).ok()?;
        // SAFETY: `handle` is a live dlopen handle; the name is NUL-terminated.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    };
    // SAFETY: srt_getversion takes nothing and returns an int (srt.h).
    let version: unsafe extern "C" fn() -> u32 = unsafe { as_fn(sym("srt_getversion")?) };
    // SAFETY: as declared above; it only reads a constant.
    let v = unsafe { version() };
    if v >> 8 != 0x0105 {
        tracing::info!(version = format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff), "libsrt is not 1.5.");
        return None;
    }
    // SAFETY: each symbol below is the libsrt 1.5 function of that name,
    // whose C signature (srt.h) is the field's type.
    let lib = unsafe {
        Lib {
            create_socket: as_fn(sym("srt_create_socket")?),
            setsockflag: as_fn(sym("srt_setsockflag")?),
            connect: as_fn(sym("srt_connect")?),
            close: as_fn(sym("srt_close")?),
            sendmsg2: as_fn(sym("srt_sendmsg2")?),
            getlasterror: as_fn(sym("srt_getlasterror")?),
            getlasterror_str: as_fn(sym("srt_getlasterror_str")?),
            bstats: as_fn(sym("srt_bstats")?),
            getsockstate: as_fn(sym("srt_getsockstate")?),
            getrejectreason: as_fn(sym("srt_getrejectreason")?),
            rejectreason_str: as_fn(sym("srt_rejectreason_str")?),
            msgctrl_init: as_fn(sym("srt_msgctrl_init")?),
            time_now: as_fn(sym("srt_time_now")?),
            connection_time: as_fn(sym("srt_connection_time")?),
        }
    };
    // SAFETY: srt_startup takes nothing; it is counted, and libsrt also
    // starts itself on first use (GStreamer's plugin calls it too).
    let startup: unsafe extern "C" fn() -> c_int = unsafe { as_fn(sym("srt_startup")?) };
    // SAFETY: as declared above.
    if unsafe { startup() } < 0 {
        return None;
    }
    Some(lib)
}

/// The function at `p`, as `F`.
///
/// # Safety
/// `F` must be the `extern "C"` function pointer type of the function at `p`.
unsafe fn as_fn<F: Copy>(p: *mut c_void) -> F {
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller's word: `F` is a function pointer, a pointer's size.
    unsafe { std::mem::transmute_copy(&p) }
}

impl Lib {
    /// libsrt's last error on this thread, in its words.
    fn last_error(&self) -> String {
        // SAFETY: returns a pointer to a thread-local, NUL-terminated
        // string owned by libsrt, valid until the next call on this thread.
        let p = unsafe { (self.getlasterror_str)() };
        if p.is_null() {
            return "unknown SRT error".into();
        }
        // SAFETY: non-null, NUL-terminated (above); copied at once.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// How the socket stands, as the supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Handshake under way.
    Connecting,
    /// The partner answered.
    Connected,
    /// Broken or closed: this socket is done.
    Down,
}

/// One SRT caller leg's socket, written from the fan-out thread and
/// watched by the leg's supervisor. Closed on drop.
pub struct DirectSrt {
    lib: &'static Lib,
    sock: c_int,
    target: String,
    /// Told the bytes libsrt took from each batch.
    count: Box<dyn Fn(u64) + Send + Sync>,
    /// The latest send error other than a full buffer, for the status.
    pub error: Arc<Mutex<Option<String>>>,
    /// Chunks not yet handed to libsrt, oldest first.
    held: Mutex<Vec<gst::Buffer>>,
    /// How much programme (ns, by arrival) is held before a hand-over.
    hold_ns: u64,
}

impl std::fmt::Debug for DirectSrt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSrt").field("target", &self.target).field("sock", &self.sock).finish_non_exhaustive()
    }
}

impl DirectSrt {
    /// Opens a non-blocking caller socket to `to` with `endpoint`'s
    /// latency, passphrase and stream id, and starts connecting; `count`
    /// is told the bytes of each batch libsrt takes. `None` if libsrt
    /// cannot be used here (see [`available`]).
    pub fn connect(
        endpoint: &SrtEndpoint,
        to: SocketAddr,
        count: impl Fn(u64) + Send + Sync + 'static,
    ) -> Option<Result<Self, String>> {
        let lib = lib()?;
        // SAFETY: takes nothing; returns a socket id or -1.
        let sock = unsafe { (lib.create_socket)() };
        if sock < 0 {
            return Some(Err(lib.last_error()));
        }
        // From here, the socket is closed on every path (Drop).
        let me = Self {
            lib,
            sock,
            target: endpoint.uri(),
            count: Box::new(count),
            error: Arc::default(),
            held: Mutex::default(),
            hold_ns: hold_for(endpoint.latency).as_nanos().min(u64::MAX as u128) as u64,
        };
        Some(me.open(endpoint, to).map(|()| me))
    }

    fn open(&self, endpoint: &SrtEndpoint, to: SocketAddr) -> Result<(), String> {
        self.set_int(SRTO_SENDER, 1, "sender")?;
        // Never wait: not to connect, not to send.
        self.set_int(SRTO_RCVSYN, 0, "non-blocking connect")?;
        self.set_int(SRTO_SNDSYN, 0, "non-blocking send")?;
        let latency = endpoint.latency.as_millis().min(i32::MAX as u128) as c_int;
        self.set_int(SRTO_LATENCY, latency, "latency")?;
        if let Some(p) = &endpoint.passphrase {
            let value = p.usable().map_err(|why| format!("passphrase_file: {why}"))?;
            self.set_bytes(SRTO_PASSPHRASE, value.as_bytes(), "passphrase")?;
        }
        if let Some(id) = &endpoint.stream_id {
            self.set_bytes(SRTO_STREAMID, id.as_bytes(), "streamid")?;
        }
        let (addr, len) = sockaddr(to);
        // SAFETY: `addr` holds a sockaddr_in or sockaddr_in6 of `len` bytes,
        // alive for the call; the socket is non-blocking, so this returns
        // at once with the handshake under way.
        if unsafe { (self.lib.connect)(self.sock, (&raw const addr).cast(), len) } < 0 {
            return Err(self.lib.last_error());
        }
        Ok(())
    }

    fn set_int(&self, opt: c_int, value: c_int, what: &str) -> Result<(), String> {
        // SAFETY: an int option, given a pointer to an int and its size.
        let r = unsafe { (self.lib.setsockflag)(self.sock, opt, (&raw const value).cast(), 4) };
        if r < 0 { Err(format!("{what}: {}", self.lib.last_error())) } else { Ok(()) }
    }

    fn set_bytes(&self, opt: c_int, value: &[u8], what: &str) -> Result<(), String> {
        let len = c_int::try_from(value.len()).map_err(|_| format!("{what}: too long"))?;
        // SAFETY: a string option, given its bytes and their length (libsrt
        // copies them; no NUL needed).
        let r = unsafe { (self.lib.setsockflag)(self.sock, opt, value.as_ptr().cast(), len) };
        if r < 0 { Err(format!("{what}: {}", self.lib.last_error())) } else { Ok(()) }
    }

    /// Where the socket stands.
    pub fn state(&self) -> State {
        // SAFETY: any socket id is accepted; a closed one reads NONEXIST.
        match unsafe { (self.lib.getsockstate)(self.sock) } {
            s if s < SRTS_CONNECTED => State::Connecting,
            SRTS_CONNECTED => State::Connected,
            _ => State::Down,
        }
    }

    /// Why the handshake failed, in libsrt's words ("Connection timeout",
    /// "Incorrect passphrase", ...).
    pub fn rejection(&self) -> String {
        // SAFETY: any socket id is accepted.
        let reason = unsafe { (self.lib.getrejectreason)(self.sock) };
        if reason == SRT_REJ_UNKNOWN {
            // libsrt's words for it, "Unknown or erroneous", say nothing.
            return "the connection broke before the programme went out".into();
        }
        // SAFETY: returns a static string for any id (or null).
        let p = unsafe { (self.lib.rejectreason_str)(reason) };
        if p.is_null() {
            return format!("rejected (reason {reason})");
        }
        // SAFETY: non-null, static and NUL-terminated.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Round-trip time, loss and retransmits, as libsrt counts them.
    pub fn figures(&self) -> Option<SrtFigures> {
        let mut room = stats::Room([0; stats::ROOM]);
        // SAFETY: `room` is 8-byte aligned and larger than CBytePerfMon;
        // libsrt fills the structure in place.
        if unsafe { (self.lib.bstats)(self.sock, room.0.as_mut_ptr().cast(), 0) } < 0 {
            return None;
        }
        let at = |o: usize| -> [u8; 8] { room.0[o..o + 8].try_into().unwrap_or([0; 8]) };
        let i32_at = |o: usize| i32::from_ne_bytes([room.0[o], room.0[o + 1], room.0[o + 2], room.0[o + 3]]);
        Some(SrtFigures {
            rtt_ms: f64::from_ne_bytes(at(stats::MS_RTT)),
            packets_lost: i32_at(stats::PKT_SND_LOSS_TOTAL).max(0) as u64,
            packets_retransmitted: i32_at(stats::PKT_RETRANS_TOTAL).max(0) as u64,
            packets_sent: i64::from_ne_bytes(at(stats::PKT_SENT_TOTAL)).max(0) as u64,
        })
    }
}

impl super::fanout::DirectSend for DirectSrt {
    /// Holds the buffers of `list` (7-packet chunks at most, SRT's live
    /// payload, stamped with their arrival on the shared clock); once the
    /// oldest held arrived the hold before the newest, hands them all to
    /// libsrt, one message each. Returns how many libsrt refused. Nothing
    /// is counted lost while the partner has not answered.
    fn send(&self, list: &gst::BufferListRef) -> u64 {
        let mut held = lock(&self.held);
        held.extend(list.iter_owned());
        let arrived = |b: Option<&gst::Buffer>| b.and_then(|b| b.pts()).map(gst::ClockTime::nseconds);
        let (Some(oldest), Some(newest)) = (arrived(held.first()), arrived(held.last())) else {
            // Unstamped: nothing to pace by, so nothing to hold for.
            return self.hand_over(&mut held);
        };
        if newest.saturating_sub(oldest) < self.hold_ns {
            return 0;
        }
        self.hand_over(&mut held)
    }
}

impl DirectSrt {
    /// Hands every held chunk to libsrt with its arrival time as its
    /// source time; returns how many it refused.
    fn hand_over(&self, held: &mut Vec<gst::Buffer>) -> u64 {
        let mut template = std::mem::MaybeUninit::<MsgCtrl>::uninit();
        // SAFETY: srt_msgctrl_init fills the whole structure with libsrt's
        // defaults; it is `repr(C)` as srt.h declares it.
        let template = unsafe {
            (self.lib.msgctrl_init)(template.as_mut_ptr());
            template.assume_init()
        };
        // SAFETY: takes nothing; reads libsrt's clock.
        let srt_now = unsafe { (self.lib.time_now)() };
        // SAFETY: any socket id is accepted (an error is negative). libsrt
        // refuses a source time before it.
        let start = unsafe { (self.lib.connection_time)(self.sock) };
        let now = super::clock().time().nseconds();
        let (mut sent, mut lost) = (0u64, 0u64);
        for buffer in held.drain(..) {
            let Ok(map) = buffer.map_readable() else { continue };
            let mut ctrl = template;
            if let (Some(pts), true) = (buffer.pts(), start > 0) {
                let age_us = i64::try_from(now.saturating_sub(pts.nseconds()) / 1000).unwrap_or(i64::MAX);
                ctrl.srctime = srt_now.saturating_sub(age_us).max(start).min(srt_now);
            }
            let len = c_int::try_from(map.len()).unwrap_or(c_int::MAX);
            // SAFETY: the mapped buffer is alive and `len` bytes long for the
            // call; libsrt copies it into its send buffer; `ctrl` is a valid
            // control block it may write its output fields into.
            let r = unsafe { (self.lib.sendmsg2)(self.sock, map.as_ptr().cast(), len, &raw mut ctrl) };
            if r >= 0 {
                sent += r as u64;
                continue;
            }
            // SAFETY: a null errno pointer is allowed.
            if unsafe { (self.lib.getlasterror)(std::ptr::null_mut()) } == SRT_EASYNCSND {
                lost += 1;
                continue;
            }
            // Not connected (yet, or any more): the supervisor sees the
            // socket's state and says why. The rest of the hold goes too.
            if self.state() == State::Connected {
                *lock(&self.error) = Some(format!("{}: {}", self.target, self.lib.last_error()));
            }
            break;
        }
        if sent > 0 {
            (self.count)(sent);
        }
        lost
    }
}

impl Drop for DirectSrt {
    fn drop(&mut self) {
        // SAFETY: the socket is ours; closing it ends libsrt's use of it.
        unsafe { (self.lib.close)(self.sock) };
    }
}

/// `to` as a C socket address and its length.
fn sockaddr(to: SocketAddr) -> (libc::sockaddr_storage, c_int) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as c_int)
}
