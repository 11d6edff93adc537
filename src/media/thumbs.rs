//! Thumbnails for the multiviewer page: the programme as the legs carry it,
//! the primary and backup contributions, and the slate, each a small JPEG
//! refreshed about once a second.
//!
//! Each stream's thumbnailer is a pipeline of its own, fed the stream's
//! MPEG-TS by reference (the fan-out's batches for the programme, the
//! feed's packets before its demuxer for a contribution) through a leaky
//! appsrc: when it falls behind, it drops its oldest data, never holding up
//! the relay. It decodes **keyframes only** (every other picture is dropped
//! before the decoder, a keyframe less than [`MIN_INTERVAL`] after the last
//! one too), so a 1080p50 stream costs one picture decode a second, not
//! fifty: in passthrough mode these are the only decodes. A stream whose
//! GOP is longer than a second gets a thumbnail per GOP.
//!
//! The slate is drawn once, at start ([`super::slate::still`]).
//!
//! Each audio track of a stream is decoded too, for the page's meters: its
//! RMS and peak level over each quarter second ([`Level`]), with the
//! language its PMT gives it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::watch;
use tracing::warn;

use super::supervise::{Backoff, Ended, Playing, Supervised};
use super::{MediaError, lock};

/// Thumbnail width.
pub const WIDTH: u32 = 320;
/// Thumbnail height.
pub const HEIGHT: u32 = 180;
/// The least time between two decoded pictures of one stream.
pub const MIN_INTERVAL: Duration = Duration::from_millis(900);
/// What a thumbnailer's appsrc holds before it drops its oldest.
const QUEUE_BYTES: u64 = 4 << 20;
/// Buffers handed over one by one (a feed's datagrams) go to the
/// thumbnailer this many at a time: each hand-over wakes its pipeline's
/// thread, and one wake-up per datagram cost more than the decoding
/// (`cargo bench --bench thumbs`).
const GATHER: usize = 32;
/// Restarts of a thumbnailer that failed (garbage in its stream).
const BACKOFF: Backoff =
    Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(5), reset_after: Duration::from_secs(10) };

/// One thumbnail.
#[derive(Debug, Clone)]
pub struct Thumb {
    /// Counts the thumbnails of every stream: a page fetches a picture
    /// again only when this changed.
    pub seq: u64,
    /// The picture, JPEG.
    pub jpeg: Arc<[u8]>,
    /// Its mean luma, 0-255 (black is 16).
    pub luma: f64,
    /// When it was made.
    pub at: DateTime<Utc>,
}

/// One audio track's level over the last quarter second.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// The track's ISO 639 language, if its PMT gives one.
    pub language: Option<String>,
    /// RMS level, dBFS (-100 for silence).
    pub rms_db: f64,
    /// Peak level, dBFS.
    pub peak_db: f64,
    /// When it was measured.
    pub at: DateTime<Utc>,
}

/// How long a level is measured over.
pub const LEVEL_WINDOW: Duration = Duration::from_millis(250);

/// The latest thumbnail of each stream, by name (`program`, `primary`,
/// `backup`, `slate`), and its audio tracks' levels.
#[derive(Debug, Default)]
pub struct Thumbnails {
    slots: Mutex<BTreeMap<&'static str, Thumb>>,
    levels: Mutex<BTreeMap<(&'static str, usize), Level>>,
    /// The programme's last few pictures, oldest first, for the visual
    /// as-run (the picture partners got at an instant).
    history: Mutex<std::collections::VecDeque<Thumb>>,
    seq: AtomicU64,
}

/// Programme pictures kept for the visual as-run (about 8 s).
const HISTORY: usize = 8;

impl Thumbnails {
    /// An empty set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Keeps `jpeg` as `name`'s latest.
    pub fn put(&self, name: &'static str, jpeg: Vec<u8>, luma: f64) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let thumb = Thumb { seq, jpeg: Arc::from(jpeg), luma, at: Utc::now() };
        if name == "program" {
            let mut h = lock(&self.history);
            if h.len() >= HISTORY {
                h.pop_front();
            }
            h.push_back(thumb.clone());
        }
        lock(&self.slots).insert(name, thumb);
    }

    /// The first programme picture made at or after `t`: what partners
    /// got at that instant (the next keyframe, within about a second);
    /// `None` until there is one (or if `t` is older than the pictures
    /// kept).
    pub fn program_at(&self, t: DateTime<Utc>) -> Option<Thumb> {
        lock(&self.history).iter().find(|th| th.at >= t).cloned()
    }

    /// `name`'s latest thumbnail.
    pub fn get(&self, name: &str) -> Option<Thumb> {
        lock(&self.slots).get(name).cloned()
    }

    /// Every stream's latest, by name.
    pub fn all(&self) -> Vec<(&'static str, Thumb)> {
        lock(&self.slots).iter().map(|(n, t)| (*n, t.clone())).collect()
    }

    /// Keeps `level` as track `track` of `name`'s latest.
    pub fn set_level(&self, name: &'static str, track: usize, level: Level) {
        lock(&self.levels).insert((name, track), level);
    }

    /// `name`'s audio tracks' latest levels, in track order.
    pub fn levels(&self, name: &str) -> Vec<Level> {
        lock(&self.levels).iter().filter(|((n, _), _)| *n == name).map(|(_, l)| l.clone()).collect()
    }
}

/// RMS and peak of a window of samples, in dBFS.
#[derive(Debug, Default)]
struct Meter {
    sum_sq: f64,
    peak: f32,
    samples: usize,
}

impl Meter {
    /// Adds `x` (interleaved f32 samples); once `window` samples are in,
    /// the window's (RMS dB, peak dB), and a new window begins.
    fn add(&mut self, x: &[f32], window: usize) -> Option<(f64, f64)> {
        for &v in x {
            self.sum_sq += f64::from(v) * f64::from(v);
            self.peak = self.peak.max(v.abs());
        }
        self.samples += x.len();
        if self.samples < window.max(1) {
            return None;
        }
        let db = |a: f64| if a > 1e-5 { (20.0 * a.log10()).max(-100.0) } else { -100.0 };
        let out = (db((self.sum_sq / self.samples as f64).sqrt()), db(f64::from(self.peak)));
        *self = Meter::default();
        Some(out)
    }
}

/// The elements a thumbnailer may use.
pub const THUMBNAIL: super::Skeleton = super::Skeleton {
    name: "program/thumbnail",
    factories: &[
        "appsrc",
        "tsdemux",
        "h264parse",
        "h265parse",
        "mpegvideoparse",
        "avdec_h264",
        "avdec_h265",
        "avdec_mpeg2video",
        "videoconvert",
        "videoscale",
        "capsfilter",
        "jpegenc",
        "appsink",
        "aacparse",
        "ac3parse",
        "mpegaudioparse",
        "avdec_aac",
        "avdec_ac3",
        "avdec_eac3",
        "avdec_mp2float",
        "audioconvert",
    ],
};

/// One stream's thumbnailer: hand it the stream's packets with
/// [`Thumbnailer::push`]; pictures land in the shared [`Thumbnails`].
#[derive(Debug)]
pub struct Thumbnailer {
    name: &'static str,
    /// The running pipeline's input, if one runs.
    src: Mutex<Option<gst_app::AppSrc>>,
    /// Buffers gathered by [`Thumbnailer::push`], not handed over yet.
    gathered: Mutex<Vec<gst::Buffer>>,
    /// The programme starts with the next keyframe: it is kept however
    /// soon it follows the last (the programme's first picture, which the
    /// as-run log keeps, is T0's own, often under [`MIN_INTERVAL`] after
    /// the slate's last keyframe).
    program_start: Arc<AtomicBool>,
}

impl Thumbnailer {
    /// Starts `name`'s thumbnailer (supervised: rebuilt after an error,
    /// until `stop`).
    pub fn start(
        name: &'static str,
        thumbs: Arc<Thumbnails>,
        stop: watch::Receiver<bool>,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), MediaError> {
        THUMBNAIL.check()?;
        let me = Arc::new(Self {
            name,
            src: Mutex::new(None),
            gathered: Mutex::new(Vec::with_capacity(GATHER)),
            program_start: Arc::default(),
        });
        let task = super::supervise::spawn(Run { me: Arc::clone(&me), thumbs }, BACKOFF, stop);
        Ok((me, task))
    }

    /// Takes one buffer of whole TS packets, handed over with the next 31
    /// (one wake-up of the thumbnailer per 32 buffers); never waits (the
    /// oldest data goes when the thumbnailer is behind).
    pub fn push(&self, b: gst::Buffer) {
        let full = {
            let mut g = lock(&self.gathered);
            g.push(b);
            if g.len() < GATHER {
                return;
            }
            std::mem::replace(&mut *g, Vec::with_capacity(GATHER))
        };
        if let Some(src) = lock(&self.src).as_ref() {
            let mut list = gst::BufferList::new_sized(full.len());
            if let Some(l) = list.get_mut() {
                full.into_iter().for_each(|b| l.add(b));
            }
            let _ = src.push_buffer_list(list);
        }
    }
}

impl super::fanout::Tap for Thumbnailer {
    fn take(&self, list: &gst::BufferList) {
        if let Some(src) = lock(&self.src).as_ref() {
            let _ = src.push_buffer_list(list.copy());
        }
    }

    fn program_start(&self) {
        self.program_start.store(true, Ordering::Relaxed);
    }
}

struct Run {
    me: Arc<Thumbnailer>,
    thumbs: Arc<Thumbnails>,
}

impl Supervised for Run {
    async fn run_once(&mut self, stop: &watch::Receiver<bool>) -> Ended {
        let (pipeline, src, mut bus_rx) = match build(self.me.name, &self.thumbs, &self.me.program_start) {
            Ok(b) => b,
            Err(e) => return Ended::Permanent(e.to_string()),
        };
        let playing = match Playing::start(&pipeline, &mut bus_rx).await {
            Ok(p) => p,
            Err(refused) => return Ended::Failed(refused),
        };
        *lock(&self.me.src) = Some(src);
        let mut stop = stop.clone();
        let ended = tokio::select! {
            _ = stop.wait_for(|s| *s) => Ended::Stopped,
            msg = bus_rx.recv() => match msg.as_ref().map(|m| m.view()) {
                Some(gst::MessageView::Error(e)) => Ended::Failed(super::describe_error(e)),
                _ => Ended::Failed("the thumbnailer ended".into()),
            },
        };
        *lock(&self.me.src) = None;
        playing.release().await;
        ended
    }

    fn failed(&mut self, error: &str, _delay: Duration) {
        warn!(stream = self.me.name, error, "Thumbnailer failed; rebuilt (the relay is not affected).");
    }

    fn finished(&mut self, failure: Option<&str>) {
        if let Some(error) = failure {
            warn!(stream = self.me.name, error, "Thumbnailer stopped for good (the relay is not affected).");
        }
    }
}

/// The thumbnailer's pipeline: the leaky appsrc and the demuxer; the
/// decoding chain is added for the first video stream the demuxer finds.
fn build(
    name: &'static str,
    thumbs: &Arc<Thumbnails>,
    program_start: &Arc<AtomicBool>,
) -> Result<(gst::Pipeline, gst_app::AppSrc, super::BusRx), MediaError> {
    let err = |e: gst::glib::BoolError| MediaError::Pipeline(format!("thumbnailer: {e}"));
    let pipeline = gst::Pipeline::with_name(&format!("thumbnail-{name}"));
    let caps = gst::Caps::builder("video/mpegts").field("systemstream", true).field("packetsize", 188i32).build();
    let src = THUMBNAIL.make("appsrc", |b| {
        b.property("caps", &caps)
            .property("is-live", false)
            .property_from_str("format", "bytes")
            .property("max-bytes", QUEUE_BYTES)
            .property("block", false)
            .property_from_str("leaky-type", "downstream")
    })?;
    let demux = THUMBNAIL.make("tsdemux", |b| b)?;
    pipeline.add_many([&src, &demux]).map_err(err)?;
    src.link(&demux).map_err(err)?;
    // The audio tracks' languages, from the PMT as it passes.
    let languages = Arc::new(Mutex::new(super::tracks::PmtLanguages::default()));
    if let Some(pad) = src.static_pad("src") {
        let languages = Arc::clone(&languages);
        pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, info| {
            let mut l = lock(&languages);
            match &info.data {
                Some(gst::PadProbeData::Buffer(b)) => {
                    if let Ok(m) = b.map_readable() {
                        l.read(&m);
                    }
                }
                Some(gst::PadProbeData::BufferList(list)) => {
                    for b in list.iter() {
                        if let Ok(m) = b.map_readable() {
                            l.read(&m);
                        }
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        });
    }
    let weak = pipeline.downgrade();
    let thumbs = Arc::clone(thumbs);
    let program_start = Arc::clone(program_start);
    let tracks = AtomicU64::new(0);
    demux.connect_pad_added(move |_, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(s) = caps.structure(0) else { return };
        let Some(pipeline) = weak.upgrade() else { return };
        let mpeg = s.get::<i32>("mpegversion").ok();
        let audio = match (s.name().as_str(), mpeg) {
            ("audio/mpeg", Some(2 | 4)) => Some(("aacparse", "avdec_aac")),
            ("audio/mpeg", _) => Some(("mpegaudioparse", "avdec_mp2float")),
            ("audio/x-ac3", _) => Some(("ac3parse", "avdec_ac3")),
            ("audio/x-eac3", _) => Some(("ac3parse", "avdec_eac3")),
            _ => None,
        };
        if let Some(elements) = audio {
            let track = tracks.fetch_add(1, Ordering::Relaxed) as usize;
            let pid = pad.name().rsplit('_').next().and_then(|h| u16::from_str_radix(h, 16).ok()).unwrap_or(0);
            let language = lock(&languages).of(pid).map(str::to_owned);
            if let Err(e) = meter(&pipeline, pad, elements, (name, track, language), &thumbs) {
                warn!(stream = name, error = %e, "Cannot decode an audio track for its meter.");
            }
            return;
        }
        let (parser, decoder) = match (s.name().as_str(), mpeg) {
            ("video/x-h264", _) => ("h264parse", "avdec_h264"),
            ("video/x-h265", _) => ("h265parse", "avdec_h265"),
            ("video/mpeg", Some(1 | 2)) => ("mpegvideoparse", "avdec_mpeg2video"),
            _ => return,
        };
        if pipeline.by_name("decoder").is_some() {
            return; // One video stream is enough.
        }
        if let Err(e) = decode(&pipeline, pad, (parser, decoder), name, &thumbs, Arc::clone(&program_start)) {
            warn!(stream = name, error = %e, "Cannot decode the stream for its thumbnail.");
        }
    });
    let app = src.downcast::<gst_app::AppSrc>().map_err(|_| MediaError::Pipeline("appsrc is not an AppSrc".into()))?;
    let bus_rx = super::forward_bus(&pipeline)?;
    Ok((pipeline, app, bus_rx))
}

/// parser ! (keyframes, at most one per [`MIN_INTERVAL`]) decoder !
/// videoconvert ! videoscale ! 320x180 ! jpegenc ! appsink, added to the
/// running `pipeline` after `pad`. The sinks added while the pipeline runs
/// take no part in its state changes (`async=false`): a dynamic sink that
/// waits for its first buffer holds the pipeline in PAUSED, and then the
/// other sink, prerolled, holds the demuxer's thread, which that first
/// buffer needs (seen: the audio meter's sink starving the pictures).
fn decode(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    (parser, decoder): (&str, &str),
    name: &'static str,
    thumbs: &Arc<Thumbnails>,
    program_start: Arc<AtomicBool>,
) -> Result<(), MediaError> {
    let raw = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", WIDTH as i32)
        .field("height", HEIGHT as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    let luma = Arc::new(AtomicU64::new(0));
    let sink = {
        let (thumbs, luma) = (Arc::clone(thumbs), Arc::clone(&luma));
        super::dropping_appsink(1, move |_, sample| {
            if let Some(m) = sample.buffer().and_then(|b| b.map_readable().ok()) {
                thumbs.put(name, m.to_vec(), f64::from_bits(luma.load(Ordering::Relaxed)));
            }
            Ok(gst::FlowSuccess::Ok)
        })
        .async_(false)
        .build()
    };
    let chain = [
        THUMBNAIL.make(parser, |b| b)?,
        THUMBNAIL.make(decoder, |b| b.name("decoder").property("max-threads", 1i32))?,
        THUMBNAIL.make("videoconvert", |b| b)?,
        THUMBNAIL.make("videoscale", |b| b.property("add-borders", true))?,
        THUMBNAIL.make("capsfilter", |b| b.property("caps", &raw))?,
        THUMBNAIL.make("jpegenc", |b| b.property("quality", 70i32))?,
        sink.upcast(),
    ];
    keyframes_only(&chain[0], program_start)?;
    measure_luma(&chain[5], luma)?;
    super::attach_chain(pipeline, pad, &chain)
}

/// parser ! decoder ! audioconvert ! F32 ! appsink, added to the running
/// `pipeline` after `pad`: track `track` of `name`'s levels, each
/// [`LEVEL_WINDOW`].
fn meter(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    (parser, decoder): (&str, &str),
    (name, track, language): (&'static str, usize, Option<String>),
    thumbs: &Arc<Thumbnails>,
) -> Result<(), MediaError> {
    let f32 = gst::Caps::builder("audio/x-raw").field("format", "F32LE").field("layout", "interleaved").build();
    let meter = Mutex::new(Meter::default());
    let thumbs = Arc::clone(thumbs);
    let sink = super::dropping_appsink(8, move |_, sample| {
        let info = sample.caps().and_then(audio_format);
        let (Some(b), Some((rate, channels))) = (sample.buffer(), info) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let Ok(m) = b.map_readable() else { return Ok(gst::FlowSuccess::Ok) };
        let x: Vec<f32> = m.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let window = (rate as f64 * LEVEL_WINDOW.as_secs_f64()) as usize * channels;
        if let Some((rms_db, peak_db)) = lock(&meter).add(&x, window) {
            let language = language.clone();
            thumbs.set_level(name, track, Level { language, rms_db, peak_db, at: Utc::now() });
        }
        Ok(gst::FlowSuccess::Ok)
    })
    .async_(false)
    .build();
    let chain = [
        THUMBNAIL.make(parser, |b| b)?,
        THUMBNAIL.make(decoder, |b| b)?,
        THUMBNAIL.make("audioconvert", |b| b)?,
        THUMBNAIL.make("capsfilter", |b| b.property("caps", &f32))?,
        sink.upcast(),
    ];
    super::attach_chain(pipeline, pad, &chain)
}

/// (rate, channels) of raw audio caps.
fn audio_format(caps: &gst::CapsRef) -> Option<(i32, usize)> {
    let s = caps.structure(0)?;
    Some((s.get::<i32>("rate").ok()?, s.get::<i32>("channels").ok()?.max(1) as usize))
}

/// Drops, after `parser`, every picture but keyframes, and a keyframe
/// less than [`MIN_INTERVAL`] (by its timestamp) after the last one kept,
/// but for the first after `program_start` was set.
fn keyframes_only(parser: &gst::Element, program_start: Arc<AtomicBool>) -> Result<(), MediaError> {
    let pad = parser.static_pad("src").ok_or_else(|| MediaError::Pipeline("parser without a src pad".into()))?;
    // The timestamp (ns) of the last keyframe kept; u64::MAX: none yet.
    let last = AtomicU64::new(u64::MAX);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(b)) = &info.data else { return gst::PadProbeReturn::Ok };
        if b.flags().contains(gst::BufferFlags::DELTA_UNIT) {
            return super::drop_data(info);
        }
        let Some(at) = b.pts().or(b.dts()).map(gst::ClockTime::nseconds) else { return gst::PadProbeReturn::Ok };
        let before = last.load(Ordering::Relaxed);
        let first_of_programme = program_start.swap(false, Ordering::Relaxed);
        if !first_of_programme && before != u64::MAX && at >= before && at - before < MIN_INTERVAL.as_nanos() as u64 {
            return super::drop_data(info);
        }
        last.store(at, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Notes the mean luma of each raw picture entering `encoder` (I420 at
/// [`WIDTH`]x[`HEIGHT`]: the first `WIDTH * HEIGHT` bytes are the Y plane).
pub(crate) fn measure_luma(encoder: &gst::Element, luma: Arc<AtomicU64>) -> Result<(), MediaError> {
    let pad = encoder.static_pad("sink").ok_or_else(|| MediaError::Pipeline("jpegenc without a sink pad".into()))?;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(b)) = &info.data
            && let Ok(m) = b.map_readable()
        {
            let y = &m[..m.len().min((WIDTH * HEIGHT) as usize)];
            if !y.is_empty() {
                let mean = y.iter().map(|&v| u64::from(v)).sum::<u64>() as f64 / y.len() as f64;
                luma.store(mean.to_bits(), Ordering::Relaxed);
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_gives_rms_and_peak_in_dbfs_per_window() {
        let mut m = Meter::default();
        // A full-scale square wave: 0 dBFS RMS and peak; the window closes
        // once 4 samples are in, not before.
        assert_eq!(m.add(&[1.0, -1.0], 4), None);
        let (rms, peak) = m.add(&[1.0, -1.0], 4).unwrap();
        assert!(rms.abs() < 1e-9 && peak.abs() < 1e-9, "{rms} {peak}");
        // A sine at half scale: RMS -9 dBFS, peak -6 dBFS.
        let x: Vec<f32> = (0..48_000).map(|i| 0.5 * (i as f32 * 0.05).sin()).collect();
        let (rms, peak) = m.add(&x, 48_000).unwrap();
        assert!((rms + 9.03).abs() < 0.05 && (peak + 6.02).abs() < 0.05, "{rms} {peak}");
        // Silence is -100, not minus infinity.
        assert_eq!(m.add(&[0.0; 8], 8), Some((-100.0, -100.0)));
    }
}
