//! The contribution feed: a pipeline that receives the contribution (test
//! source, SRT, UDP or a looped file), decodes it and hands raw pictures and
//! sound to the program pipeline ([`super::program`]), which switches them
//! with the slate and encodes once for every leg.
//!
//! The feed is supervised like a leg: an error (a caller that cannot reach
//! the contribution encoder, a socket error) restarts the feed's pipeline
//! after a backoff while the program pipeline, and so every leg, keeps
//! running on the slate. Bytes that are not MPEG-TS are dropped before the
//! demuxer, counted, and reported as an error state naming the feed.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::watch;
use tracing::{info, warn};

pub use super::failover::SourceCounters;
use super::failover::{RUN_GAP, health};
use super::supervise::{Backoff, Ended, Playing, Supervised};
use super::{MediaError, lock, template, ts};
use crate::config::{ProgramFormat, Source};

/// First restart delay of the source pipeline.
pub const SOURCE_RESTART_INITIAL: Duration = Duration::from_millis(500);
/// Cap of the source restart delay.
pub const SOURCE_RESTART_MAX: Duration = Duration::from_secs(5);
/// The restarts of a contribution feed, or of the transcoding program: a
/// run that lasted 10 s starts the count again.
pub(crate) const SOURCE_BACKOFF: Backoff =
    Backoff { initial: SOURCE_RESTART_INITIAL, max: SOURCE_RESTART_MAX, reset_after: Duration::from_secs(10) };
/// The program shows a feed's very first picture only after this (the
/// feed's branch of the program pipeline negotiates on it).
const FIRST_PICTURE_SETTLE: Duration = Duration::from_millis(200);
/// A decoded picture (or sound) reaches the program pipeline this long
/// before it is due there, not as soon as it is decoded: a contribution's
/// timestamps run ahead of its arrival (by its encoder's multiplexing
/// delay, 600 ms from ffmpeg), and that wait is spent compressed, in the
/// queue before the decoder, rather than as decoded pictures in the
/// program's queue. Its arrival is counted before the wait (health and
/// failover see it as soon as it comes).
pub const DECODED_AHEAD: Duration = Duration::from_millis(100);
/// How long after the last garbage the source is still reported in error.
pub const GARBAGE_HOLD: Duration = Duration::from_secs(2);

/// What the contribution feed is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceState {
    /// Pipeline up, no pictures arriving.
    Waiting,
    /// Pictures arriving.
    Receiving,
    /// Garbage arriving, or the pipeline failed (see `last_error`).
    Error,
    /// Stopped on purpose.
    Stopped,
}

impl SourceState {
    /// The displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Waiting => "WAITING",
            SourceState::Receiving => "RECEIVING",
            SourceState::Error => "ERROR",
            SourceState::Stopped => "STOPPED",
        }
    }
}

/// A snapshot of the contribution feed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceStatus {
    /// Where it comes from (no secrets).
    pub describe: String,
    /// State.
    pub state: SourceState,
    /// Valid MPEG-TS bytes received (raw bytes for the test source).
    pub bytes_in: u64,
    /// Bytes refused as not MPEG-TS.
    pub garbage_bytes: u64,
    /// Pictures received: access units as they come (see
    /// `SourceCounters::frames`).
    pub frames: u64,
    /// Pictures received within the failover's detection time, and no
    /// garbage within it: the program can carry this feed.
    pub healthy: bool,
    /// Why it is not healthy, if it is not.
    pub loss: Option<String>,
    /// Pipeline restarts after errors.
    pub restarts: u32,
    /// The most recent problem, if any.
    pub last_error: Option<String>,
}

/// Where a feed's media goes: raw pictures and sound for the transcoding
/// program, or the contribution's own access units for passthrough.
#[derive(Debug, Clone)]
pub enum FeedOut {
    /// Decoded, into the transcoding program's appsrcs.
    Raw(Arc<RawSink>),
    /// Untouched access units, for the passthrough program.
    Coded(Arc<super::coded::CodedFeed>),
}

/// Where a feed's raw pictures and sound go: the program pipeline's
/// appsrcs (the pictures, and one for each planned audio track), re-stamped from the feed's running time to the program's (both
/// pipelines run on the one system clock, so the instant is kept).
#[derive(Debug, Default)]
pub struct RawSink {
    target: Mutex<Option<RawTarget>>,
}

#[derive(Debug, Clone)]
struct RawTarget {
    video: gst_app::AppSrc,
    /// One per lane: the programme's planned audio tracks, in order.
    audio: Vec<gst_app::AppSrc>,
}

/// Which of a feed's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// Raw pictures.
    Video,
    /// Raw sound for the programme's planned audio track (lane) `n`.
    Audio(usize),
}

impl RawSink {
    /// A sink with no target yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts handing to these appsrcs (a new program pipeline).
    pub fn attach(&self, video: gst_app::AppSrc, audio: Vec<gst_app::AppSrc>) {
        *lock(&self.target) = Some(RawTarget { video, audio });
    }

    /// Stops handing anything (the program pipeline is going away).
    pub fn detach(&self) {
        *lock(&self.target) = None;
    }

    /// Hands over one raw buffer whose clock time is `clock_ns`.
    fn push(&self, track: Track, mut buffer: gst::Buffer, caps: Option<gst::Caps>, clock_ns: u64) {
        let Some(t) = lock(&self.target).clone() else { return };
        let src = match track {
            Track::Video => t.video,
            Track::Audio(lane) => match t.audio.into_iter().nth(lane) {
                Some(src) => src,
                None => return,
            },
        };
        let Some(base) = src.base_time() else { return };
        let Some(pts) = clock_ns.checked_sub(base.nseconds()) else { return };
        {
            let b = buffer.make_mut();
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_dts(gst::ClockTime::NONE);
        }
        let mut sample = gst::Sample::builder().buffer(&buffer);
        if let Some(caps) = &caps {
            sample = sample.caps(caps);
        }
        let _ = src.push_sample(&sample.build());
    }
}

#[derive(Debug)]
struct Shared {
    /// The feed is MPEG-TS (bytes are counted before the demuxer).
    ts_input: bool,
    restarts: AtomicU32,
    flags: Mutex<Flags>,
    counters: Arc<SourceCounters>,
    /// The failover's detection time, for the health in the status.
    detect_after: Duration,
    /// The feed is an SRT listener: callers it refuses are reported.
    srt_listener: bool,
    /// The feed is decoded here (transcode): a stall is watched for.
    decoded: bool,
    /// What the contribution carries that this programme cannot decode
    /// (`HEVC video: ...`), found when the demuxer exposed it.
    unfit: Mutex<Option<String>>,
    /// How the contribution's sound tracks differ from `[program] audio`
    /// (a track left out, a planned one missing), as the demuxer found.
    audio_note: Mutex<Option<String>>,
    /// The feed's thumbnailer, handed the contribution's MPEG-TS.
    thumb: Option<Arc<super::thumbs::Thumbnailer>>,
}

/// A decoding feed whose data stopped moving for this long, after it had
/// moved, is rebuilt: a stuck demuxer or decoder must not keep the feed
/// down while the venue sends (a fresh pipeline that gets nothing waits).
pub const STALL_RESTART: Duration = Duration::from_secs(3);
/// A decoding feed taking data without a picture for this long is rebuilt
/// (longer than any contribution's GOP).
pub const NO_PICTURE_RESTART: Duration = Duration::from_secs(5);

/// Clock time (ns) libsrt last refused a caller for its passphrase (0:
/// never). libsrt tells GStreamer only through its log (category
/// `srtlib`): "KMREQ result abnornal - rejecting per enforced encryption".
static SRT_SECRET_REFUSED_NS: AtomicU64 = AtomicU64::new(0);

/// Watches libsrt's log for callers refused for a wrong (or missing)
/// passphrase, so a listener's status can say so; libsrt's warnings are
/// kept at WARNING whatever the default threshold.
pub(crate) fn watch_srt_rejections() {
    gst::log::set_threshold_for_name("srtlib", gst::DebugLevel::Warning);
    gst::log::add_log_function(|category, _level, _file, _function, _line, _object, message| {
        if category.name() != "srtlib" {
            return;
        }
        if let Some(text) = message.get()
            && text.contains("KMREQ")
            && (text.contains("reject") || text.contains("BADSECRET"))
        {
            SRT_SECRET_REFUSED_NS.store(super::clock().time().nseconds().max(1), Ordering::Relaxed);
        }
    });
}

/// How long a refused caller is reported.
const REFUSAL_HOLD: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default)]
struct Flags {
    /// The last pipeline error.
    last_error: Option<String>,
    /// The pipeline is down, waiting to be restarted.
    failing: bool,
    /// Stopped on purpose.
    stopped: bool,
}

/// A running contribution feed.
#[derive(Debug)]
pub struct Contribution {
    describe: String,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Contribution {
    /// Builds the feed's pipeline once (so a missing plugin or a broken
    /// template is an error here, at start-up) and starts its supervisor.
    /// What it delivers is counted in `counters` (the failover reads them);
    /// its MPEG-TS also goes to `thumb`, if given.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        source: &Source,
        format: &ProgramFormat,
        title: &str,
        out: FeedOut,
        counters: Arc<SourceCounters>,
        detect_after: Duration,
        thumb: Option<Arc<super::thumbs::Thumbnailer>>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, MediaError> {
        let shared = Arc::new(Shared {
            ts_input: !matches!(source, Source::Test(_)),
            restarts: AtomicU32::new(0),
            flags: Mutex::new(Flags::default()),
            counters,
            detect_after,
            srt_listener: matches!(source, Source::Srt(s) if s.mode == crate::config::SrtMode::Listener),
            decoded: matches!(out, FeedOut::Raw(_)) && !matches!(source, Source::Test(_)),
            unfit: Mutex::new(None),
            audio_note: Mutex::new(None),
            thumb,
        });
        let first = build(source, format, title, &out, &shared)?;
        let sup = Supervisor {
            source: source.clone(),
            format: format.clone(),
            title: title.to_owned(),
            out,
            shared: Arc::clone(&shared),
            next: Some(first),
        };
        let task = super::supervise::spawn(sup, SOURCE_BACKOFF, stop);
        Ok(Self { describe: source.describe(), shared, task: Some(task) })
    }

    /// What the feed has delivered.
    pub fn counters(&self) -> &SourceCounters {
        &self.shared.counters
    }

    /// A snapshot of the feed.
    pub fn status(&self) -> SourceStatus {
        let c = &self.shared.counters;
        let now = super::clock().time().nseconds();
        let since = |ns: u64| (ns > 0).then(|| Duration::from_nanos(now.saturating_sub(ns)));
        let garbage = c.garbage_bytes.load(Ordering::Relaxed);
        let Flags { last_error: pipeline_error, failing, stopped } = lock(&self.shared.flags).clone();
        let recent_garbage = since(c.last_garbage_ns.load(Ordering::Relaxed)).is_some_and(|d| d < GARBAGE_HOLD);
        // No picture for the failover's detection time: waiting, as the
        // failover sees it.
        let idle_after = self.shared.detect_after;
        let pictures = since(c.last_frame_ns.load(Ordering::Relaxed)).is_some_and(|d| d < idle_after);
        let ts_only = since(c.last_valid_ns.load(Ordering::Relaxed)).is_some_and(|d| d < idle_after);
        let (state, last_error) = if stopped {
            (SourceState::Stopped, pipeline_error)
        } else if recent_garbage {
            let msg = format!(
                "contribution feed {} carries data that is not MPEG-TS ({garbage} bytes refused so far); \
                 the legs are kept connected",
                self.describe
            );
            (SourceState::Error, Some(msg))
        } else if failing {
            (SourceState::Error, pipeline_error)
        } else if pictures {
            let note = lock(&self.shared.audio_note).clone();
            (
                SourceState::Receiving,
                pipeline_error.or(note.map(|n| format!("contribution feed {}: {n}", self.describe))),
            )
        } else if let Some(unfit) = lock(&self.shared.unfit).clone() {
            (SourceState::Error, Some(format!("contribution feed {}: {unfit}", self.describe)))
        } else if ts_only {
            let msg = format!("contribution feed {} carries MPEG-TS but no picture decodes from it", self.describe);
            (SourceState::Waiting, Some(msg))
        } else {
            (SourceState::Waiting, self.refused_caller(now).or(pipeline_error))
        };
        let loss = health(now, c.seen(), self.shared.detect_after).err();
        SourceStatus {
            describe: self.describe.clone(),
            state,
            bytes_in: c.bytes.load(Ordering::Relaxed),
            garbage_bytes: garbage,
            frames: c.frames.load(Ordering::Relaxed),
            healthy: loss.is_none() && !stopped,
            loss,
            restarts: self.shared.restarts.load(Ordering::Relaxed),
            last_error,
        }
    }

    /// Why nothing comes in, if an SRT listener refused a caller lately.
    /// libsrt names neither the caller nor the listener in what it tells
    /// (its log), so every waiting SRT listener of the process reports it.
    fn refused_caller(&self, now: u64) -> Option<String> {
        let at = SRT_SECRET_REFUSED_NS.load(Ordering::Relaxed);
        let recent = at > 0 && Duration::from_nanos(now.saturating_sub(at)) < REFUSAL_HOLD;
        (self.shared.srt_listener && recent).then(|| {
            format!(
                "contribution feed {}: caller refused: wrong passphrase (the caller's does not match this listener's, \
                 or one side has none)",
                self.describe
            )
        })
    }

    /// Waits for the supervisor to finish (after the stop signal).
    pub async fn join(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

struct Built {
    pipeline: gst::Pipeline,
    bus_rx: super::BusRx,
}

struct Supervisor {
    source: Source,
    format: ProgramFormat,
    title: String,
    out: FeedOut,
    shared: Arc<Shared>,
    /// The pipeline built at start, for the first run.
    next: Option<Built>,
}

impl Supervised for Supervisor {
    async fn run_once(&mut self, stop: &watch::Receiver<bool>) -> Ended {
        let built = match self.next.take() {
            Some(b) => Ok(b),
            None => build(&self.source, &self.format, &self.title, &self.out, &self.shared),
        };
        let Built { pipeline, mut bus_rx } = match built {
            Ok(b) => b,
            Err(e) if e.is_permanent() => return Ended::Permanent(e.to_string()),
            Err(e) => return Ended::Failed(e.to_string()),
        };
        let playing = match Playing::start(&pipeline, &mut bus_rx).await {
            Ok(p) => p,
            Err(refused) => return Ended::Failed(format!("contribution feed {}: {refused}", self.source.describe())),
        };
        lock(&self.shared.flags).failing = false;
        info!(source = %self.source.describe(), "Contribution feed pipeline running.");
        let ended = self.watch(&mut bus_rx, stop.clone()).await;
        playing.release().await;
        ended
    }

    fn failed(&mut self, error: &str, _delay: Duration) {
        warn!(source = %self.source.describe(), error, "Contribution feed failed; restarting it.");
        *lock(&self.shared.flags) = Flags { last_error: Some(error.to_owned()), failing: true, stopped: false };
        self.shared.restarts.fetch_add(1, Ordering::Relaxed);
    }

    fn finished(&mut self, failure: Option<&str>) {
        let mut flags = lock(&self.shared.flags);
        match failure {
            None => flags.stopped = true,
            Some(error) => {
                tracing::error!(source = %self.source.describe(), error, "Contribution feed failed for good.");
                *flags = Flags { last_error: Some(error.to_owned()), failing: true, stopped: false };
            }
        }
    }
}

impl Supervisor {
    async fn watch(&mut self, bus_rx: &mut super::BusRx, mut stop: watch::Receiver<bool>) -> Ended {
        let c = Arc::clone(&self.shared.counters);
        let clock = super::clock();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        // (bytes, when they last moved), and when a picture last came.
        let started = clock.time().nseconds();
        let mut bytes = (c.bytes.load(Ordering::Relaxed), started);
        let mut moved = false;
        let mut frames = (c.decoded.load(Ordering::Relaxed), started);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ended::Stopped,
                _ = tick.tick(), if self.shared.decoded => {
                    let now = clock.time().nseconds();
                    let (b, f) = (c.bytes.load(Ordering::Relaxed), c.decoded.load(Ordering::Relaxed));
                    if b != bytes.0 {
                        moved = true;
                        bytes = (b, now);
                    }
                    if f != frames.0 {
                        frames = (f, now);
                    }
                    let quiet = |since: u64| Duration::from_nanos(now.saturating_sub(since));
                    let unfit = lock(&self.shared.unfit).clone().map(|u| format!(" ({u})")).unwrap_or_default();
                    if moved && quiet(bytes.1) >= STALL_RESTART && quiet(frames.1) >= STALL_RESTART {
                        return Ended::Failed(format!(
                            "contribution feed {}: its data stopped moving through the pipeline{unfit}; rebuilt",
                            self.source.describe()
                        ));
                    }
                    if moved && quiet(bytes.1) < STALL_RESTART && quiet(frames.1) >= NO_PICTURE_RESTART {
                        return Ended::Failed(format!(
                            "contribution feed {}: data arrives but no picture decoded for {} s{unfit}; rebuilt",
                            self.source.describe(),
                            NO_PICTURE_RESTART.as_secs()
                        ));
                    }
                }
                msg = bus_rx.recv() => {
                    let Some(msg) = msg else { return Ended::Failed("the source pipeline's bus closed".into()) };
                    match msg.view() {
                        gst::MessageView::Error(e) => return Ended::Failed(describe(&self.source, e)),
                        // A file is looped by starting it again: tsparse fed
                        // by filesrc refuses seeks (checked by a test), and a
                        // fresh pipeline also restarts the real-time pacing.
                        // Partners see a timestamp jump at the loop point.
                        gst::MessageView::Eos(_) if matches!(self.source, Source::File(_)) => return Ended::Again,
                        gst::MessageView::Eos(_) => {
                            return Ended::Failed(format!("{} ended the stream", self.source.describe()));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Why a stream of these caps cannot be decoded in transcode mode (which
/// takes H.264 and AAC), if it cannot.
fn unfit_for_transcode(s: &gst::StructureRef) -> Option<String> {
    let mpeg = s.get::<i32>("mpegversion").ok();
    let (kind, codec) = match (s.name().as_str(), mpeg) {
        ("video/x-h264", _) | ("audio/mpeg", Some(2 | 4)) => return None,
        ("video/x-h265", _) => ("video", "HEVC"),
        ("video/mpeg", Some(2)) => ("video", "MPEG-2"),
        ("video/mpeg", _) => ("video", "MPEG video"),
        ("audio/mpeg", _) => ("audio", "MPEG audio"),
        ("audio/x-ac3", _) => ("audio", "AC-3"),
        ("audio/x-eac3", _) => ("audio", "E-AC-3"),
        (name, _) if name.starts_with("video/") => ("video", name),
        (name, _) if name.starts_with("audio/") => ("audio", name),
        _ => return None,
    };
    let wanted = if kind == "video" { "H.264" } else { "AAC" };
    Some(format!(
        "{codec} {kind}: this programme expects {wanted} in transcode mode ([program] mode = \"passthrough\" relays it as it comes)"
    ))
}

fn describe(source: &Source, e: &gst::message::Error) -> String {
    format!("contribution feed {}: {}", source.describe(), super::describe_error(e))
}

/// Builds the feed's pipeline for `source`: raw pictures and sound to two
/// appsinks that hand them to `out`.
fn build(
    source: &Source,
    format: &ProgramFormat,
    title: &str,
    out: &FeedOut,
    shared: &Arc<Shared>,
) -> Result<Built, MediaError> {
    let name = match source {
        Source::Test(_) => "ingest/test",
        Source::Srt(_) => "ingest/srt",
        Source::Udp(_) => "ingest/udp",
        Source::File(_) => "ingest/file",
    };
    let params: Vec<(&str, u64)> = match source {
        Source::Test(t) => vec![
            ("width", u64::from(format.width)),
            ("height", u64::from(format.height)),
            ("framerate", u64::from(format.framerate)),
            ("tone_hz", u64::from(t.tone_hz)),
        ],
        _ => vec![],
    };
    let bin = template::get(name)?.instantiate(&params)?;
    let named = |n: &str| {
        bin.by_name(n).ok_or_else(|| MediaError::Template {
            template: name.into(),
            message: format!("has no element named `{n}`"),
        })
    };
    match source {
        Source::Test(_) => {
            named("title")?.set_property("text", title);
            let clock = named("clock")?;
            let pad = clock
                .static_pad("video_sink")
                .ok_or_else(|| MediaError::Pipeline("textoverlay without video_sink pad".into()))?;
            // The overlay is reached through the pad, not held by the
            // probe: a probe on its own pad holding it would be a reference
            // cycle, and every event would leak the element with its text
            // images and fonts (issue 15, defect 11).
            pad.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
                if let Some(overlay) = pad.parent_element() {
                    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string();
                    overlay.set_property("text", now);
                }
                gst::PadProbeReturn::Ok
            });
        }
        Source::Srt(s) => super::configure_srt(&named("src")?, s)?,
        Source::Udp(u) => {
            let src = named("src")?;
            src.set_property("address", u.host.bare());
            src.set_property("port", i32::from(u.port));
            if let Some(iface) = &u.interface {
                src.set_property("multicast-iface", iface);
            }
        }
        Source::File(path) => {
            named("src")?.set_property("location", path.display().to_string());
        }
    }

    let pipeline = gst::Pipeline::with_name("contribution");
    pipeline.use_clock(Some(&super::clock()));
    let err = |e: gst::glib::BoolError| MediaError::Pipeline(format!("contribution pipeline: {e}"));
    pipeline.add(&bin).map_err(err)?;
    let out = match out {
        FeedOut::Raw(raw) => raw,
        FeedOut::Coded(coded) => {
            if matches!(source, Source::Test(_)) {
                super::coded::encode_into(&pipeline, bin.upcast_ref(), format, coded, &shared.counters)?;
            } else {
                let ts_pad =
                    bin.static_pad("src").ok_or_else(|| MediaError::Pipeline(format!("{name} has no src pad")))?;
                refuse_garbage(&ts_pad, shared);
                super::coded::demux_into(&pipeline, &ts_pad, coded, &shared.counters)?;
            }
            let bus_rx = super::forward_bus(&pipeline)?;
            return Ok(Built { pipeline, bus_rx });
        }
    };
    // Where raw pictures and sound come out: the test source's `video`
    // and `audio` pads (its one tone is the first planned track), or the
    // decoder's (each AAC track its own, added as the demuxer finds it).
    let raw: Vec<(Track, gst::Pad)> = if matches!(source, Source::Test(_)) {
        let pad = |n: &str| bin.static_pad(n).ok_or_else(|| MediaError::Pipeline(format!("{name} has no {n} pad")));
        vec![(Track::Video, pad("video")?), (Track::Audio(0), pad("audio")?)]
    } else {
        let (demux, video) = decoder(&pipeline, shared)?;
        *lock(&shared.unfit) = None;
        *lock(&shared.audio_note) = None;
        {
            let shared = Arc::clone(shared);
            demux.connect_pad_added(move |_, pad| {
                let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
                if let Some(why) = caps.structure(0).and_then(unfit_for_transcode) {
                    warn!(%why, "The contribution carries what transcode mode cannot decode.");
                    *lock(&shared.unfit) = Some(why);
                }
            });
        }
        let ts_pad = bin.static_pad("src").ok_or_else(|| MediaError::Pipeline(format!("{name} has no src pad")))?;
        refuse_garbage(&ts_pad, shared);
        let planned = format.audio.iter().map(|t| t.language.clone()).collect();
        decode_audio(&pipeline, &demux, &ts_pad, planned, out, shared);
        bin.link(&demux).map_err(|e| MediaError::Pipeline(format!("cannot link {name} to the decoder: {e}")))?;
        let video =
            video.static_pad("src").ok_or_else(|| MediaError::Pipeline("converter without a src pad".into()))?;
        vec![(Track::Video, video)]
    };
    let decoding = !matches!(source, Source::Test(_));
    for (track, out_pad) in raw {
        let sink = raw_sink(track, out, shared, decoding);
        pipeline.add(&sink).map_err(err)?;
        let sink_pad =
            sink.static_pad("sink").ok_or_else(|| MediaError::Pipeline("appsink without a sink pad".into()))?;
        out_pad
            .link(&sink_pad)
            .map_err(|e| MediaError::Pipeline(format!("contribution pipeline: cannot link {track:?}: {e}")))?;
    }
    let bus_rx = super::forward_bus(&pipeline)?;
    Ok(Built { pipeline, bus_rx })
}

/// The transcoding feed's decoder, built in code: a contribution's MPEG-TS
/// (H.264 + AAC) demultiplexed and decoded to raw video and raw audio.
pub const DECODE: super::Skeleton = super::Skeleton {
    name: "program/decode",
    factories: &[
        "tsdemux",
        "h264parse",
        "aacparse",
        "queue",
        "avdec_h264",
        "avdec_aac",
        "videoconvert",
        "audioconvert",
    ],
};

/// Adds the decoder to `pipeline`: MPEG-TS in on the returned demuxer, raw
/// video out of the returned converter. The demuxer's first H.264 stream
/// is decoded; the sound is [`decode_audio`]'s. Each picture is counted
/// in `shared`'s counters as it reaches the decoder's queue, before it
/// waits for its time (see [`DECODED_AHEAD`]).
fn decoder(pipeline: &gst::Pipeline, shared: &Arc<Shared>) -> Result<(gst::Element, gst::Element), MediaError> {
    let err = |e: gst::glib::BoolError| MediaError::Pipeline(format!("contribution decoder: {e}"));
    let demux = DECODE.make("tsdemux", |b| b.name("in"))?;
    let video = [
        DECODE.make("h264parse", |b| b)?,
        decode_queue()?,
        DECODE.make("avdec_h264", |b| b)?,
        DECODE.make("videoconvert", |b| b)?,
    ];
    pipeline.add(&demux).map_err(err)?;
    pipeline.add_many(video.iter()).map_err(err)?;
    gst::Element::link_many(video.iter()).map_err(err)?;
    let parsed =
        video[0].static_pad("src").ok_or_else(|| MediaError::Pipeline("h264parse without a src pad".into()))?;
    {
        let shared = Arc::clone(shared);
        let clock = super::clock();
        parsed.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                let now = clock.time().nseconds();
                let due = due_at(pad, b.pts()).unwrap_or(now);
                note_arrival(&shared.counters, due, now);
            }
            gst::PadProbeReturn::Ok
        });
    }
    let parser = video[0].clone();
    demux.connect_pad_added(move |_, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let h264 = caps.structure(0).is_some_and(|s| s.name() == "video/x-h264");
        let Some(sink) = parser.static_pad("sink").filter(|s| h264 && !s.is_linked()) else { return };
        if let Err(e) = pad.link(&sink) {
            warn!(pad = %pad.name(), error = ?e, "Cannot link the contribution's pictures to their decoder.");
        }
    });
    let [.., vout] = video;
    Ok((demux, vout))
}

/// The clock time (ns) a buffer leaving `pad` with timestamp `pts` is due.
fn due_at(pad: &gst::Pad, pts: Option<gst::ClockTime>) -> Option<u64> {
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    let rt = segment.segment().downcast_ref::<gst::ClockTime>()?.to_running_time(pts?)?;
    let base = pad.parent_element()?.base_time()?;
    Some((rt + base).nseconds())
}

/// A picture due at clock time `due` came at `now`: counted, and after a
/// gap of [`RUN_GAP`] the start of a new run noted (when the program can
/// first show it).
fn note_arrival(c: &SourceCounters, due: u64, now: u64) {
    c.frames.fetch_add(1, Ordering::Relaxed);
    let prev = c.last_frame_ns.swap(now, Ordering::Relaxed);
    if prev == 0 || now.saturating_sub(prev) >= RUN_GAP.as_nanos() as u64 {
        // The program pipeline's branch for this feed negotiates on its
        // very first picture and shows a few later: not before then.
        let settle = if prev == 0 { FIRST_PICTURE_SETTLE.as_nanos() as u64 } else { 0 };
        c.run_start_pts_ns.store(due + settle, Ordering::Relaxed);
    }
}

/// The queue between a parser and its decoder: up to 2 s. Decoding
/// feeds' pictures wait here, compressed, until [`DECODED_AHEAD`] before
/// they are due, so it holds the contribution's lead: a lead past 2 s
/// holds up the demuxer.
fn decode_queue() -> Result<gst::Element, MediaError> {
    DECODE.make("queue", |b| {
        b.property("max-size-time", 2_000_000_000u64)
            .property("max-size-bytes", 0u32)
            .property("max-size-buffers", 0u32)
    })
}

/// Decodes each of the contribution's AAC tracks into its lane, one of the
/// programme's `planned` audio tracks (by language, see
/// [`super::tracks::lane_for`]): a decoding chain is added for each track
/// as the demuxer finds it, its language read from the contribution's PMT
/// as it passes `ts_pad`. A track without a lane is left out, and a lane
/// without a track carries the mixer's silence; either is noted for the
/// status and logged.
fn decode_audio(
    pipeline: &gst::Pipeline,
    demux: &gst::Element,
    ts_pad: &gst::Pad,
    planned: Vec<Option<String>>,
    out: &Arc<RawSink>,
    shared: &Arc<Shared>,
) {
    let languages = Arc::new(Mutex::new(super::tracks::PmtLanguages::default()));
    {
        let languages = Arc::clone(&languages);
        ts_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                && let Ok(m) = b.map_readable()
            {
                lock(&languages).read(&m);
            }
            gst::PadProbeReturn::Ok
        });
    }
    let taken = Arc::new(Mutex::new(vec![false; planned.len()]));
    let planned = Arc::new(planned);
    let name = |planned: &[Option<String>], lane: usize| match &planned[lane] {
        Some(l) => l.clone(),
        None => format!("track {}", lane + 1),
    };
    {
        let (weak, out, shared) = (pipeline.downgrade(), Arc::clone(out), Arc::clone(shared));
        let (taken, planned) = (Arc::clone(&taken), Arc::clone(&planned));
        demux.connect_pad_added(move |_, pad| {
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let aac = caps
                .structure(0)
                .is_some_and(|s| s.name() == "audio/mpeg" && matches!(s.get::<i32>("mpegversion").ok(), Some(2 | 4)));
            if !aac {
                return;
            }
            let pid = pad.name().rsplit('_').next().and_then(|h| u16::from_str_radix(h, 16).ok()).unwrap_or(0);
            let language = lock(&languages).of(pid).map(str::to_owned);
            let lane = {
                let mut taken = lock(&taken);
                let lane = super::tracks::lane_for(&planned, &taken, language.as_deref());
                if let Some(t) = lane.and_then(|l| taken.get_mut(l)) {
                    *t = true;
                }
                lane
            };
            let Some(lane) = lane else {
                let what =
                    language.map_or_else(|| format!("an untagged AAC track (PID {pid})"), |l| format!("AAC {l}"));
                let note = format!("{what} has no place in [program] audio; it is left out");
                warn!(%note, "The contribution carries a sound track the programme does not plan.");
                add_note(&shared, note);
                return;
            };
            let Some(pipeline) = weak.upgrade() else { return };
            match decode_track(&pipeline, pad, lane, &out, &shared) {
                Ok(()) => {
                    info!(pid, language = ?language, lane = %name(&planned, lane), "Contribution sound track decoded.")
                }
                Err(e) => warn!(pad = %pad.name(), error = %e, "Cannot decode a sound track of the contribution."),
            }
        });
    }
    let shared = Arc::clone(shared);
    demux.connect_no_more_pads(move |_| {
        let taken = lock(&taken).clone();
        let lacking: Vec<String> = (0..planned.len()).filter(|&l| !taken[l]).map(|l| name(&planned, l)).collect();
        if !lacking.is_empty() {
            let note = format!(
                "[program] audio plans {} but the contribution carries no such AAC track: partners hear silence there",
                lacking.join(", ")
            );
            warn!(%note, "A planned sound track is missing from the contribution.");
            add_note(&shared, note);
        }
    });
}

/// Adds `note` to what the status says of the feed's sound tracks.
fn add_note(shared: &Shared, note: String) {
    let mut n = lock(&shared.audio_note);
    *n = Some(match n.take() {
        Some(before) => format!("{before}; {note}"),
        None => note,
    });
}

/// Decodes the AAC track on the demuxer's `pad` into `lane`, with elements
/// added to the running `pipeline`.
fn decode_track(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    lane: usize,
    out: &Arc<RawSink>,
    shared: &Arc<Shared>,
) -> Result<(), MediaError> {
    let chain = [
        DECODE.make("aacparse", |b| b)?,
        decode_queue()?,
        DECODE.make("avdec_aac", |b| b)?,
        DECODE.make("audioconvert", |b| b)?,
        raw_sink(Track::Audio(lane), out, shared, true),
    ];
    super::attach_chain(pipeline, pad, &chain)
}

/// Drops (and counts) what is not whole MPEG-TS packets before the
/// demuxer; hands the rest to the feed's thumbnailer too, if it has one.
fn refuse_garbage(pad: &gst::Pad, shared: &Arc<Shared>) {
    let shared = Arc::clone(shared);
    let clock = super::clock();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(b)) = &info.data else { return gst::PadProbeReturn::Ok };
        let now = clock.time().nseconds();
        let c = &shared.counters;
        if b.map_readable().map(|m| ts::is_aligned_ts(&m)).unwrap_or(false) {
            c.bytes.fetch_add(b.size() as u64, Ordering::Relaxed);
            c.last_valid_ns.store(now, Ordering::Relaxed);
            if let Some(thumb) = &shared.thumb {
                thumb.push(b.clone());
            }
            gst::PadProbeReturn::Ok
        } else {
            c.garbage_bytes.fetch_add(b.size() as u64, Ordering::Relaxed);
            c.last_garbage_ns.store(now, Ordering::Relaxed);
            super::drop_data(info)
        }
    });
}

/// An appsink handing each raw buffer to `out` at its clock time. The
/// decoder's (`decoded`) hand each over [`DECODED_AHEAD`] before it is due
/// and count only that a picture decoded (its arrival was counted before
/// the decoder); the test source's count each picture here.
fn raw_sink(track: Track, out: &Arc<RawSink>, shared: &Arc<Shared>, decoded: bool) -> gst::Element {
    let out = Arc::clone(out);
    let shared = Arc::clone(shared);
    let clock = super::clock();
    let builder = super::dropping_appsink(64, move |sink, sample| {
        let (Some(buffer), Some(segment)) = (sample.buffer_owned(), sample.segment()) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let segment = segment.downcast_ref::<gst::ClockTime>();
        let rt = segment.and_then(|s| s.to_running_time(buffer.pts()));
        let (Some(rt), Some(base)) = (rt, sink.base_time()) else { return Ok(gst::FlowSuccess::Ok) };
        if !shared.ts_input {
            shared.counters.bytes.fetch_add(buffer.size() as u64, Ordering::Relaxed);
        }
        if track == Track::Video {
            let c = &shared.counters;
            c.decoded.fetch_add(1, Ordering::Relaxed);
            if !decoded {
                note_arrival(c, (rt + base).nseconds(), clock.time().nseconds());
            }
        }
        out.push(track, buffer, sample.caps_owned(), (rt + base).nseconds());
        Ok(gst::FlowSuccess::Ok)
    })
    .name(match track {
        Track::Video => "raw_video".to_owned(),
        Track::Audio(lane) => format!("raw_audio_{lane}"),
    });
    if !decoded {
        return builder.build().upcast();
    }
    let sink = builder
        .sync(true)
        .ts_offset(-(DECODED_AHEAD.as_nanos() as i64))
        .processing_deadline(gst::ClockTime::ZERO)
        .build();
    // It waits for each buffer's time counted from its timestamp alone:
    // what is upstream reports no latency to the pipeline (tsdemux alone
    // reports 700 ms, for timestamps running that far ahead), so none is
    // added to the wait.
    if let Some(pad) = sink.static_pad("sink") {
        pad.add_probe(gst::PadProbeType::QUERY_UPSTREAM | gst::PadProbeType::PULL, |_, info| {
            if let Some(gst::PadProbeData::Query(q)) = &mut info.data
                && let gst::QueryViewMut::Latency(l) = q.view_mut()
            {
                let (live, _, max) = l.result();
                l.set(live, gst::ClockTime::ZERO, max);
            }
            gst::PadProbeReturn::Ok
        });
    }
    sink.upcast()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event builds the test source again: an element its own pad
    /// probe holds would never be freed, and each event would leak it with
    /// its text images and fonts (issue 15, defect 11).
    #[test]
    fn the_test_sources_elements_are_freed_with_its_pipeline() {
        crate::media::init().expect("GStreamer");
        let shared = Arc::new(Shared {
            ts_input: false,
            restarts: AtomicU32::new(0),
            flags: Mutex::new(Flags::default()),
            counters: Arc::default(),
            detect_after: Duration::from_millis(500),
            srt_listener: false,
            decoded: false,
            unfit: Mutex::new(None),
            audio_note: Mutex::new(None),
            thumb: None,
        });
        let source = Source::Test(crate::config::TestSource::default());
        let format = ProgramFormat { width: 160, height: 90, ..ProgramFormat::default() };
        let built = build(&source, &format, "Silk Way Star", &FeedOut::Raw(RawSink::new()), &shared).expect("build");
        let weak: Vec<(&str, gst::glib::WeakRef<gst::Element>)> =
            ["clock", "title"].into_iter().map(|n| (n, built.pipeline.by_name(n).expect(n).downgrade())).collect();
        // A few pictures through the overlays, then stopped and dropped.
        built.pipeline.set_state(gst::State::Playing).expect("playing");
        std::thread::sleep(Duration::from_millis(300));
        built.pipeline.set_state(gst::State::Null).expect("null");
        drop(built);
        // A reference held for a moment elsewhere (seen once on a loaded
        // machine) goes within this; a reference cycle never does.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while weak.iter().any(|(_, w)| w.upgrade().is_some()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (name, w) in weak {
            assert!(w.upgrade().is_none(), "`{name}` outlived its pipeline by 3 s");
        }
    }
}
