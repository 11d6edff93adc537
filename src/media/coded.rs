//! A contribution as passthrough takes it: its elementary streams'
//! access units, untouched, each with its timestamps on the shared clock.
//!
//! The feed's MPEG-TS goes through tsdemux only (no parser, no decoder in
//! the path: tsdemux hands each PES payload out as it came, checked byte
//! for byte by the tests). A parser on a side branch of the video reads
//! the picture's size, rate, field order and profile for the status; the
//! audio tracks' rate and channels come from their own frame headers.
//! The built-in test source plays the venue's encoder: it encodes once
//! (H.264 + AAC) and hands those access units on the same way.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::es::{AudioCodec, VideoCodec};
use super::failover::SourceCounters;
use super::{MediaError, lock};

/// Access units kept per track before the program takes them (a few
/// seconds at 50 pictures a second); older ones are dropped.
const QUEUE_MAX: usize = 512;

/// One access unit: a PES payload as the contribution carried it.
#[derive(Debug, Clone)]
pub struct Au {
    /// Presentation time, clock ns.
    pub pts: u64,
    /// Decoding time, clock ns.
    pub dts: u64,
    /// A picture a decoder can start from (always true for audio).
    pub keyframe: bool,
    /// The bytes.
    pub data: gst::Buffer,
}

/// The video as a feed carries it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VideoFormat {
    /// Codec.
    pub codec: VideoCodec,
    /// Profile as the parser names it (`high`, `main`, ...), if known.
    pub profile: Option<String>,
    /// Level, if known.
    pub level: Option<String>,
    /// Picture size, if known.
    pub width: u32,
    /// Picture size, if known.
    pub height: u32,
    /// Frame rate (numerator, denominator), if known.
    pub framerate: (i32, i32),
    /// Interlaced (fields), not progressive.
    pub interlaced: bool,
    /// Top field first, when interlaced.
    pub top_field_first: bool,
}

/// One audio track as a feed carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AudioFormat {
    /// Codec.
    pub codec: AudioCodec,
    /// ISO 639-2 language, if the contribution names one.
    pub language: Option<String>,
    /// Samples per second (0: no frame seen yet).
    pub rate: u32,
    /// Channels (0: no frame seen yet).
    pub channels: u32,
    /// Samples per frame.
    pub samples: u32,
    /// MPEG audio layer, 0 for other codecs.
    pub layer: u8,
    /// The contribution's PID, for messages.
    pub pid: u16,
}

/// What a feed carries: its video (if any) and audio tracks, in the
/// contribution's PMT order.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct FeedFormat {
    /// The video.
    pub video: Option<VideoFormat>,
    /// The audio tracks.
    pub audio: Vec<AudioFormat>,
    /// Whether the contribution's PMT lists a SCTE-35 PID (its cues pass).
    pub scte35: bool,
}

impl FeedFormat {
    /// The `[program]` format: its picture in `codec`, its planned audio
    /// tracks in stereo at 48 kHz (transcode's output, one AAC track;
    /// passthrough's slate before the contribution is known).
    pub fn planned(f: &crate::config::ProgramFormat, codec: VideoCodec, profile: Option<&str>) -> Self {
        FeedFormat {
            video: Some(VideoFormat {
                codec,
                profile: profile.map(str::to_owned),
                level: None,
                width: f.width,
                height: f.height,
                framerate: (f.framerate as i32, 1),
                interlaced: false,
                top_field_first: true,
            }),
            audio: f
                .audio
                .iter()
                .map(|t| AudioFormat {
                    codec: t.codec,
                    language: t.language.clone(),
                    rate: 48000,
                    channels: 2,
                    samples: 0,
                    layer: if t.codec == AudioCodec::Mpeg { 2 } else { 0 },
                    pid: 0,
                })
                .collect(),
            scte35: f.scte35,
        }
    }

    /// One line: `H.264 high 1920x1080 50p, AAC kaz 48 kHz 2 ch, ...`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        match &self.video {
            Some(v) => {
                let mut s = v.codec.label().to_owned();
                if let Some(p) = &v.profile {
                    s += &format!(" {p}");
                }
                if let Some(l) = &v.level {
                    s += &format!(" level {l}");
                }
                if v.width > 0 {
                    let (n, d) = v.framerate;
                    let rate = if d > 0 { f64::from(n) / f64::from(d) } else { 0.0 };
                    let (rate, scan) = if v.interlaced { (rate * 2.0, "i") } else { (rate, "p") };
                    s += &format!(" {}x{} {}{scan}", v.width, v.height, (rate * 100.0).round() / 100.0);
                    if v.interlaced {
                        s += if v.top_field_first { " (top field first)" } else { " (bottom field first)" };
                    }
                }
                parts.push(s);
            }
            None => parts.push("no video".into()),
        }
        for a in &self.audio {
            let lang = a.language.as_deref().unwrap_or("und");
            if a.rate > 0 {
                parts.push(format!("{} {lang} {} kHz {} ch", a.codec.label(), f64::from(a.rate) / 1000.0, a.channels));
            } else {
                parts.push(format!("{} {lang}", a.codec.label()));
            }
        }
        if self.scte35 {
            parts.push("SCTE-35".into());
        }
        parts.join(", ")
    }
}

/// Where a feed's access units wait for the program.
#[derive(Debug, Default)]
pub struct CodedFeed {
    inner: Mutex<Queues>,
    /// ISO 639 languages by PID, from the contribution's PMT.
    languages: Mutex<std::collections::HashMap<u16, String>>,
    /// The contribution's PMT PID, from its PAT.
    pmt_pid: std::sync::atomic::AtomicU32,
    /// The PIDs of its video and of its SCTE-35 sections (0: none), from
    /// its PMT.
    video_pid: std::sync::atomic::AtomicU32,
    scte35_pid: std::sync::atomic::AtomicU32,
    /// The SCTE-35 sections being collected.
    sections: Mutex<super::scte35::Sections>,
}

/// A SCTE-35 section as the contribution carried it.
#[derive(Debug, Clone)]
pub struct SpliceCue {
    /// When it arrived (clock ns).
    pub at: u64,
    /// The whole section, checked (table_id to CRC).
    pub section: Vec<u8>,
    /// (clock ns, contribution PTS in 90 kHz ticks) of one picture of the
    /// feed when the cue arrived: how the contribution's PTS maps to the
    /// clock, and so to the programme's output.
    pub map: Option<(u64, u64)>,
}

/// Most cues kept before the program takes them.
const CUES_MAX: usize = 64;
/// Video PES timestamps read ahead of tsdemux (a few pictures).
const RAW_MAX: usize = 64;
/// How far (90 kHz ticks) a picture's PTS may stray from the mapping the
/// pictures before it gave and still be taken as the same mapping.
const MAP_SLACK: u64 = 900;

/// Beyond this gap between where a track's timestamps say an access unit
/// is and where its frame grid puts it, the track starts a new grid.
const REGRID_NS: u64 = 500_000_000;
/// At most this much correction per access unit toward tsdemux's times.
const STEER_NS: u64 = 50_000;
/// A cue naming a splice point further ahead than this (90 kHz ticks) of
/// the pictures now arriving does not stop the steering.
const STEADY_MAX: u64 = 60 * 90_000;

/// Keeps a track's timestamps on its own frame grid. tsdemux maps PTS to
/// the clock through the PCR's arrival, which follows network jitter (an
/// ffmpeg -re feed comes out with picture intervals 4 % off); partners are
/// owed the contribution's own cadence. So each access unit is placed a
/// whole number of frames after the last, steered by at most
/// `STEER_NS` toward tsdemux's time so that clock drift is followed; a
/// jump of more than `REGRID_NS` starts a new grid. While a SCTE-35 cue
/// waits for its splice point the feed is not steered (see
/// `Queues::place`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Regular {
    /// (tsdemux's DTS, our DTS) of the last access unit.
    last: Option<(u64, u64)>,
}

impl Regular {
    /// Our (pts, dts) for an access unit tsdemux timed (`pts`, `dts`),
    /// with `frame` the track's frame duration (0: not known, times kept),
    /// steered by at most `steer` ns.
    pub fn place(&mut self, pts: u64, dts: u64, frame: u64, steer: u64) -> (u64, u64) {
        let snap = |d: u64| (d + frame / 2).checked_div(frame).map_or(d, |k| k * frame);
        let out = match self.last {
            Some((in_last, out_last)) if frame > 0 && dts > in_last => {
                let grid = out_last + snap(dts - in_last).max(frame);
                if grid.abs_diff(dts) > REGRID_NS {
                    dts
                } else if dts > grid {
                    grid + (dts - grid).min(steer)
                } else {
                    grid - (grid - dts).min(steer)
                }
            }
            _ => dts,
        };
        self.last = Some((dts, out));
        (out + snap(pts.saturating_sub(dts)), out)
    }
}

/// A feed's queues, as the program drains them.
#[derive(Debug, Default)]
pub struct Queues {
    /// Per track (video first, then each audio track): its frame grid.
    grids: Vec<Regular>,
    /// Counts the feed's pipeline runs: a new run starts a new stream.
    pub epoch: u64,
    /// What the feed carries.
    pub format: FeedFormat,
    /// tsdemux has added a pad for every track of the programme
    /// (`no-more-pads`) since the pipeline (re)started: `format` lists all
    /// of them. Until then it is being built, track by track.
    pub complete: bool,
    /// Video access units, oldest first.
    pub video: VecDeque<Au>,
    /// Audio access units per track, oldest first.
    pub audio: Vec<VecDeque<Au>>,
    /// SCTE-35 cues, oldest first.
    pub cues: VecDeque<SpliceCue>,
    /// The PTS (90 kHz) of video PES read from the contribution and not
    /// yet handed out by tsdemux, in order.
    raw_pts: VecDeque<u64>,
    /// (clock ns, contribution PTS) of the latest picture handed out.
    pts_map: Option<(u64, u64)>,
    /// The contribution PTS of the splice point the pending cues name, the
    /// furthest one: until a picture at or past it is handed out, no track
    /// of the feed is steered.
    steady_until: Option<u64>,
}

impl Queues {
    /// Our (pts, dts) for an access unit of `track` (0 the video, then
    /// each audio track): on the track's frame grid, steered toward
    /// tsdemux's times unless a cue is pending. A cue's mapping ties the
    /// contribution's PTS to ours at one picture; steering between that
    /// picture and the splice point would move the picture the cue names
    /// away from where the cue lands (by up to `STEER_NS` per picture,
    /// 2.5 ms in 2 s at 25 fps). Held, every track keeps its cadence and
    /// the audio its place against the pictures.
    fn place(&mut self, track: usize, pts: u64, dts: u64, frame: u64) -> (u64, u64) {
        if self.grids.len() <= track {
            self.grids.resize(track + 1, Regular::default());
        }
        let steer = if self.steady_until.is_some() { 0 } else { STEER_NS };
        self.grids[track].place(pts, dts, frame, steer)
    }

    /// A picture handed out at `pts` (clock ns, placed): its contribution
    /// PTS is read, and a splice point reached lets the steering go on.
    fn picture(&mut self, pts: u64) {
        self.map_picture(pts);
        if let (Some(until), Some((_, raw))) = (self.steady_until, self.pts_map)
            && raw.wrapping_sub(until) & super::scte35::PTS_MASK < 1 << 32
        {
            self.steady_until = None;
        }
    }

    /// A cue the contribution carried, arrived at clock time `at`: kept
    /// with the mapping of the latest picture, and if it names a splice
    /// point ahead, the steering waits for that point.
    fn cue(&mut self, section: Vec<u8>, at: u64) {
        if self.cues.len() >= CUES_MAX {
            self.cues.pop_front();
        }
        if let (Some(point), Some((_, raw))) = (super::scte35::splice_pts(&section), self.pts_map) {
            let ahead = |from: u64, to: u64| to.wrapping_sub(from) & super::scte35::PTS_MASK;
            if ahead(raw, point) <= STEADY_MAX {
                let until =
                    self.steady_until.filter(|&u| ahead(raw, u) > ahead(raw, point) && ahead(raw, u) <= STEADY_MAX);
                self.steady_until = Some(until.unwrap_or(point));
            }
        }
        let map = self.pts_map;
        self.cues.push_back(SpliceCue { at, section, map });
    }

    /// Pairs the picture tsdemux handed out at clock time `pts` with the
    /// contribution PTS it came with: the oldest one read, unless a PES
    /// tsdemux dropped (a damaged one) stands before the one that keeps
    /// the mapping the pictures before gave.
    fn map_picture(&mut self, pts: u64) {
        let expected = self.pts_map.map(|(at, raw)| {
            let moved = super::mux::ticks_90k(pts).wrapping_sub(super::mux::ticks_90k(at));
            raw.wrapping_add(moved) & super::scte35::PTS_MASK
        });
        let near = |r: u64, e: u64| {
            let d = r.wrapping_sub(e) & super::scte35::PTS_MASK;
            d.min(super::scte35::PTS_MASK + 1 - d) <= MAP_SLACK
        };
        let k = expected.and_then(|e| self.raw_pts.iter().position(|&r| near(r, e))).unwrap_or(0);
        self.raw_pts.drain(..k.min(self.raw_pts.len()));
        if let Some(raw) = self.raw_pts.pop_front() {
            self.pts_map = Some((pts, raw));
        }
    }
}

impl CodedFeed {
    /// An empty feed.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The queues, locked.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        lock(&self.inner)
    }

    /// A new run of the feed's pipeline: what was queued is from the last.
    fn new_epoch(&self) {
        let mut q = self.lock();
        q.epoch += 1;
        q.video.clear();
        q.audio.clear();
        q.grids.clear();
        q.format = FeedFormat::default();
        q.complete = false;
        q.cues.clear();
        q.raw_pts.clear();
        q.pts_map = None;
        q.steady_until = None;
        drop(q);
        *lock(&self.sections) = super::scte35::Sections::default();
    }
}

/// Reads the contribution's tables as they pass `pad`, ahead of tsdemux:
/// - each stream's ISO 639 language from the PMT (tsdemux's language tags
///   are shortened to ISO 639-1; the PMT keeps the three letters partners
///   expect), and whether it lists a SCTE-35 PID;
/// - the SCTE-35 sections themselves, whole (tsdemux does not hand them
///   out unless asked, and then only as parsed events);
/// - the PTS of each video PES, which ties the contribution's time to the
///   clock for the cues.
fn read_tables(pad: &gst::Pad, out: &Arc<CodedFeed>) {
    let out = Arc::clone(out);
    let clock = super::clock();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(b)) = &info.data else { return gst::PadProbeReturn::Ok };
        let Ok(m) = b.map_readable() else { return gst::PadProbeReturn::Ok };
        for p in m.chunks_exact(super::ts::PACKET) {
            let pid = u32::from(super::ts::pid(p));
            // Read per packet: the PMT may come in the same buffer as the
            // first picture, which tsdemux hands out too.
            let video = out.video_pid.load(Ordering::Relaxed);
            let scte35 = out.scte35_pid.load(Ordering::Relaxed);
            if pid == u32::from(super::ts::PAT_PID) {
                if let Some(pmt) = super::ts::section(p).and_then(super::tracks::pmt_pid) {
                    out.pmt_pid.store(u32::from(pmt), Ordering::Relaxed);
                }
            } else if pid == out.pmt_pid.load(Ordering::Relaxed)
                && let Some(section) = super::ts::section(p)
                && let Some(streams) = super::tracks::pmt_entries(section)
            {
                note_pmt(&out, &streams);
            } else if pid == video && video != 0 {
                if let Some(raw) = super::ts::pes_start(p).and_then(|s| s.pts) {
                    let mut q = out.lock();
                    if q.raw_pts.len() >= RAW_MAX {
                        q.raw_pts.pop_front();
                    }
                    q.raw_pts.push_back(raw);
                }
            } else if pid == scte35 && scte35 != 0 {
                let found = lock(&out.sections).push(p);
                for section in found.into_iter().filter(|s| super::scte35::is_splice_info(s)) {
                    out.lock().cue(section, clock.time().nseconds());
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// What a PMT says of the feed: languages, the video PID, the SCTE-35 PID.
fn note_pmt(out: &CodedFeed, streams: &[super::tracks::PmtEntry]) {
    let video = streams.iter().find(|s| matches!(s.stream_type, 0x01 | 0x02 | 0x1b | 0x24)).map_or(0, |s| s.pid);
    let scte35 = streams.iter().find(|s| s.stream_type == super::scte35::STREAM_TYPE).map_or(0, |s| s.pid);
    out.video_pid.store(u32::from(video), Ordering::Relaxed);
    out.scte35_pid.store(u32::from(scte35), Ordering::Relaxed);
    let mut q = out.lock();
    q.format.scte35 = scte35 != 0;
    for a in q.format.audio.iter_mut() {
        if let Some(l) = streams.iter().find(|s| s.pid == a.pid).and_then(|s| s.language.clone()) {
            a.language = Some(l);
        }
    }
    drop(q);
    lock(&out.languages).extend(streams.iter().filter_map(|s| s.language.clone().map(|l| (s.pid, l))));
}

/// Which track of a feed a pad carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Video(VideoCodec),
    Audio(usize, AudioCodec),
}

/// Adds a tsdemux after `ts_pad` whose streams go, untouched, to `out`;
/// streams passthrough does not carry are counted out into a fakesink.
pub fn demux_into(
    pipeline: &gst::Pipeline,
    ts_pad: &gst::Pad,
    out: &Arc<CodedFeed>,
    counters: &Arc<SourceCounters>,
) -> Result<(), MediaError> {
    out.new_epoch();
    read_tables(ts_pad, out);
    let demux = gst::ElementFactory::make("tsdemux").name("demux").build().map_err(|_| {
        MediaError::MissingElements { template: "passthrough".into(), elements: vec!["tsdemux".into()] }
    })?;
    pipeline.add(&demux).map_err(|e| MediaError::Pipeline(format!("contribution pipeline: {e}")))?;
    let sink = demux.static_pad("sink").ok_or_else(|| MediaError::Pipeline("tsdemux without sink pad".into()))?;
    ts_pad.link(&sink).map_err(|e| MediaError::Pipeline(format!("cannot link the contribution to tsdemux: {e}")))?;
    let built = Arc::clone(out);
    demux.connect_no_more_pads(move |_| built.lock().complete = true);
    let weak = pipeline.downgrade();
    let out = Arc::clone(out);
    let counters = Arc::clone(counters);
    demux.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else { return };
        let caps = pad.current_caps().or_else(|| pad.query_caps(None).into());
        let s = caps.as_ref().and_then(|c| c.structure(0).map(|s| s.to_owned()));
        let name = s.as_ref().map(|s| s.name().to_string()).unwrap_or_default();
        let mpegversion = s.as_ref().and_then(|s| s.get::<i32>("mpegversion").ok());
        let pid = pad.name().rsplit('_').next().and_then(|h| u16::from_str_radix(h, 16).ok()).unwrap_or(0);
        let which = if let Some(v) = VideoCodec::from_caps(&name, mpegversion) {
            let mut q = out.lock();
            if q.format.video.is_some() {
                None
            } else {
                q.format.video = Some(VideoFormat {
                    codec: v,
                    profile: None,
                    level: None,
                    width: 0,
                    height: 0,
                    framerate: (0, 1),
                    interlaced: false,
                    top_field_first: true,
                });
                Some(Which::Video(v))
            }
        } else if let Some(a) = AudioCodec::from_caps(&name, mpegversion) {
            let mut q = out.lock();
            let i = q.format.audio.len();
            let language = lock(&out.languages).get(&pid).cloned();
            q.format.audio.push(AudioFormat { codec: a, language, rate: 0, channels: 0, samples: 0, layer: 0, pid });
            q.audio.push(VecDeque::new());
            Some(Which::Audio(i, a))
        } else {
            None
        };
        if let Err(e) = attach(&pipeline, pad, which, &out, &counters) {
            tracing::warn!(pad = %pad.name(), error = %e, "Cannot take a stream of the contribution.");
        }
    });
    Ok(())
}

fn attach(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    which: Option<Which>,
    out: &Arc<CodedFeed>,
    counters: &Arc<SourceCounters>,
) -> Result<(), MediaError> {
    let err = |e: gst::glib::BoolError| MediaError::Pipeline(format!("contribution pipeline: {e}"));
    let Some(which) = which else {
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .property("enable-last-sample", false)
            .build()
            .map_err(err)?;
        pipeline.add(&sink).map_err(err)?;
        sink.sync_state_with_parent().map_err(err)?;
        let sinkpad = sink.static_pad("sink").ok_or_else(|| MediaError::Pipeline("fakesink without pad".into()))?;
        pad.link(&sinkpad).map_err(|e| MediaError::Pipeline(format!("{e}")))?;
        return Ok(());
    };
    let appsink = au_sink(which, out, counters);
    pipeline.add(&appsink).map_err(err)?;
    let target = if let Which::Video(codec) = which {
        // tee: the access units to the appsink; a parser on a leaky side
        // branch reads the format from the stream's headers.
        let tee = gst::ElementFactory::make("tee").build().map_err(err)?;
        let q1 = gst::ElementFactory::make("queue").build().map_err(err)?;
        let q2 = gst::ElementFactory::make("queue")
            .property_from_str("leaky", "downstream")
            .property("max-size-buffers", 8u32)
            .build()
            .map_err(err)?;
        let parser_name = match codec {
            VideoCodec::H264 => "h264parse",
            VideoCodec::Hevc => "h265parse",
            VideoCodec::Mpeg2 => "mpegvideoparse",
        };
        let parser = gst::ElementFactory::make(parser_name).build().map_err(|_| MediaError::MissingElements {
            template: "passthrough".into(),
            elements: vec![parser_name.into()],
        })?;
        let fake = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .property("enable-last-sample", false)
            .build()
            .map_err(err)?;
        pipeline.add_many([&tee, &q1, &q2, &parser, &fake]).map_err(err)?;
        gst::Element::link_many([&tee, &q1, &appsink]).map_err(err)?;
        gst::Element::link_many([&tee, &q2, &parser, &fake]).map_err(err)?;
        // The parser sees keyframes only: every header it reads the format
        // from (H.264/HEVC SPS, an MPEG-2 sequence header) makes its access
        // unit a keyframe (`VideoCodec::is_keyframe`), and parsing every
        // picture cost a thread's wake-up and a scan of each at 50 a second.
        if let Some(sink) = q2.static_pad("sink") {
            sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let Some(gst::PadProbeData::Buffer(b)) = &info.data else { return gst::PadProbeReturn::Ok };
                if b.map_readable().is_ok_and(|m| !codec.is_keyframe(&m)) {
                    return super::drop_data(info);
                }
                gst::PadProbeReturn::Ok
            });
        }
        if let Some(src) = parser.static_pad("src") {
            let out = Arc::clone(out);
            src.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(ev)) = &info.data
                    && let gst::EventView::Caps(c) = ev.view()
                    && let Some(s) = c.caps().structure(0)
                    && let Some(v) = out.lock().format.video.as_mut()
                {
                    v.width = s.get::<i32>("width").unwrap_or(0).max(0) as u32;
                    v.height = s.get::<i32>("height").unwrap_or(0).max(0) as u32;
                    if let Ok(f) = s.get::<gst::Fraction>("framerate") {
                        v.framerate = (f.numer(), f.denom());
                    }
                    v.profile = s.get::<String>("profile").ok();
                    v.level = s.get::<String>("level").ok();
                    // h264parse (1.22) names no interlace-mode for field-coded
                    // H.264, only its coded picture structure.
                    let mode = s.get::<String>("interlace-mode").unwrap_or_default();
                    let fields = s.get::<String>("coded-picture-structure").is_ok_and(|p| p == "field");
                    v.interlaced = fields || !mode.is_empty() && mode != "progressive";
                    v.top_field_first = s.get::<String>("field-order").map_or(true, |o| o != "bottom-field-first");
                }
                gst::PadProbeReturn::Ok
            });
        }
        for e in [&tee, &q1, &q2, &parser, &fake] {
            e.sync_state_with_parent().map_err(err)?;
        }
        tee
    } else {
        appsink.clone()
    };
    appsink.sync_state_with_parent().map_err(err)?;
    let sinkpad = target.static_pad("sink").ok_or_else(|| MediaError::Pipeline("no sink pad".into()))?;
    pad.link(&sinkpad).map_err(|e| MediaError::Pipeline(format!("cannot link {}: {e}", pad.name())))?;
    Ok(())
}

/// The appsink handing each access unit to `out`, on the shared clock.
fn au_sink(which: Which, out: &Arc<CodedFeed>, counters: &Arc<SourceCounters>) -> gst::Element {
    let out = Arc::clone(out);
    let counters = Arc::clone(counters);
    let clock = super::clock();
    // Not async: a sink added while the pipeline plays must not hold the
    // others in preroll until its own stream's first buffer.
    super::dropping_appsink(256, move |sink, sample| {
        let (Some(buffer), Some(segment)) = (sample.buffer_owned(), sample.segment()) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let segment = segment.downcast_ref::<gst::ClockTime>();
        let base = sink.base_time().map(|b| b.nseconds()).unwrap_or(0);
        let rt = |t: Option<gst::ClockTime>| segment.and_then(|s| s.to_running_time(t)).map(|r| r.nseconds() + base);
        let Some(pts) = rt(buffer.pts()).or_else(|| rt(buffer.dts())) else {
            return Ok(gst::FlowSuccess::Ok);
        };
        let dts = rt(buffer.dts()).unwrap_or(pts).min(pts);
        let now = clock.time().nseconds();
        deliver(which, &out, &counters, Au { pts, dts, keyframe: true, data: buffer }, now);
        Ok(gst::FlowSuccess::Ok)
    })
    .async_(false)
    .build()
    .upcast()
}

/// Queues one access unit of `which`, reading what it says of the format.
fn deliver(which: Which, out: &CodedFeed, counters: &SourceCounters, mut au: Au, now: u64) {
    let Ok(map) = au.data.map_readable() else { return };
    let mut q = out.lock();
    match which {
        Which::Video(codec) => {
            au.keyframe = codec.is_keyframe(&map);
            drop(map);
            let frame = q.format.video.as_ref().map_or(0, |v| match v.framerate {
                (n, d) if n > 0 && d > 0 => d as u64 * 1_000_000_000 / n as u64,
                _ => 0,
            });
            (au.pts, au.dts) = q.place(0, au.pts, au.dts, frame);
            q.picture(au.pts);
            counters.note_picture(au.pts, now);
            push(&mut q.video, au);
        }
        Which::Audio(i, codec) => {
            if let Some(a) = q.format.audio.get_mut(i)
                && a.rate == 0
                && let Some(f) = codec.frame(&map)
            {
                (a.rate, a.channels, a.samples, a.layer) = (f.rate, f.channels, f.samples, f.layer);
            }
            drop(map);
            let frame =
                q.format.audio.get(i).map_or(0, |a| {
                    if a.rate > 0 { u64::from(a.samples) * 1_000_000_000 / u64::from(a.rate) } else { 0 }
                });
            (au.pts, au.dts) = q.place(i + 1, au.pts, au.dts, frame);
            if let Some(track) = q.audio.get_mut(i) {
                push(track, au);
            }
        }
    }
}

fn push(q: &mut VecDeque<Au>, au: Au) {
    if q.len() >= QUEUE_MAX {
        q.pop_front();
    }
    q.push_back(au);
}

/// The built-in test source as the venue's encoder: its raw pictures and
/// sound (pads `video` and `audio` of `raw`) encoded once, H.264 and AAC,
/// into `out`.
pub fn encode_into(
    pipeline: &gst::Pipeline,
    raw: &gst::Element,
    format: &crate::config::ProgramFormat,
    out: &Arc<CodedFeed>,
    counters: &Arc<SourceCounters>,
) -> Result<(), MediaError> {
    out.new_epoch();
    let err = |e: gst::glib::BoolError| MediaError::Pipeline(format!("test source: {e}"));
    let make = |factory: &str| {
        gst::ElementFactory::make(factory)
            .build()
            .map_err(|_| MediaError::MissingElements { template: "ingest/test".into(), elements: vec![factory.into()] })
    };
    let vconv = make("videoconvert")?;
    let venc = make("x264enc")?;
    venc.set_property_from_str("tune", "zerolatency");
    venc.set_property_from_str("speed-preset", "ultrafast");
    venc.set_property("bitrate", format.video_kbps);
    venc.set_property("key-int-max", format.gop);
    venc.set_property("bframes", 0u32);
    let vcaps =
        gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build();
    let vfilter = gst::ElementFactory::make("capsfilter").property("caps", &vcaps).build().map_err(err)?;
    let aconv = make("audioconvert")?;
    let aenc = make("avenc_aac")?;
    aenc.set_property("bitrate", i32::try_from(format.audio_kbps * 1000).unwrap_or(128_000));
    let aparse = make("aacparse")?;
    let acaps = gst::Caps::builder("audio/mpeg").field("stream-format", "adts").build();
    let afilter = gst::ElementFactory::make("capsfilter").property("caps", &acaps).build().map_err(err)?;
    {
        let mut q = out.lock();
        q.format.video = Some(VideoFormat {
            codec: VideoCodec::H264,
            profile: Some("constrained-baseline".into()),
            level: None,
            width: format.width,
            height: format.height,
            framerate: (format.framerate as i32, 1),
            interlaced: false,
            top_field_first: true,
        });
        q.format.audio = vec![AudioFormat {
            codec: AudioCodec::Aac,
            language: None,
            rate: 0,
            channels: 0,
            samples: 0,
            layer: 0,
            pid: 0,
        }];
        q.audio = vec![VecDeque::new()];
    }
    let vsink = au_sink(Which::Video(VideoCodec::H264), out, counters);
    let asink = au_sink(Which::Audio(0, AudioCodec::Aac), out, counters);
    pipeline.add_many([&vconv, &venc, &vfilter, &vsink, &aconv, &aenc, &aparse, &afilter, &asink]).map_err(err)?;
    gst::Element::link_many([&vconv, &venc, &vfilter, &vsink]).map_err(err)?;
    gst::Element::link_many([&aconv, &aenc, &aparse, &afilter, &asink]).map_err(err)?;
    raw.link_pads(Some("video"), &vconv, None).map_err(|e| MediaError::Pipeline(format!("test source video: {e}")))?;
    raw.link_pads(Some("audio"), &aconv, None).map_err(|e| MediaError::Pipeline(format!("test source audio: {e}")))?;
    Ok(())
}

impl SourceCounters {
    /// A picture with timestamp `pts` (clock ns) arrived at clock time
    /// `now`: counted, and a new run noted after a gap.
    pub(crate) fn note_picture(&self, pts: u64, now: u64) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        let prev = self.last_frame_ns.swap(now, Ordering::Relaxed);
        if prev == 0 || now.saturating_sub(prev) >= super::failover::RUN_GAP.as_nanos() as u64 {
            self.run_start_pts_ns.store(pts.min(now), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_the_frame_grid_through_jitter_follow_drift_and_regrid_on_a_jump() {
        const F: u64 = 40_000_000;
        let mut r = Regular::default();
        let mut outs = Vec::new();
        // tsdemux's times: 25p with up to 4 % jitter and 1 ms/s of drift.
        for i in 0..500u64 {
            let jitter = [0, 1_600_000, 400_000, 1_200_000][i as usize % 4];
            let t = 1_000_000_000 + i * (F + 40_000) + jitter;
            outs.push(r.place(t + 80_000_000, t, F, STEER_NS));
        }
        for w in outs.windows(2) {
            let step = w[1].1 - w[0].1;
            assert!(step.abs_diff(F) <= STEER_NS, "a step of {step} ns");
            assert_eq!(w[1].0 - w[1].1, 80_000_000, "PTS stays two frames after DTS");
        }
        let last_in = 1_000_000_000 + 499 * (F + 40_000);
        assert!(outs[499].1.abs_diff(last_in) < 5_000_000, "drift followed: {} vs {last_in}", outs[499].1);
        // A jump of seconds (a new stream): a new grid, not a run of steps.
        let (_, d) = r.place(last_in + 10_000_000_000, last_in + 10_000_000_000, F, STEER_NS);
        assert_eq!(d, last_in + 10_000_000_000);
        // Unknown frame duration: times kept.
        assert_eq!(Regular::default().place(7, 5, 0, STEER_NS), (7, 5));
    }

    /// Where the cue the program relays lands (the mapping its offset is
    /// made from, applied to the splice point), in our 90 kHz ticks.
    fn lands(cue: &SpliceCue, point: u64) -> u64 {
        let (at, raw) = cue.map.expect("a mapping");
        super::super::mux::ticks_90k(at).wrapping_sub(raw).wrapping_add(point) & super::super::scte35::PTS_MASK
    }

    #[test]
    fn a_pending_cue_holds_the_steering_so_it_lands_on_the_picture_it_names() {
        const F: u64 = 40_000_000;
        let mut q = Queues::default();
        let raw = |i: u64| 900_000 + i * 3_600;
        // tsdemux's times drift 5 ms/s from the contribution's cadence
        // (a PCR arriving ever later on a loaded machine): every picture
        // is steered as far as it may be.
        let tsdemux = |i: u64| 1_000_000_000 + i * (F + 200_000);
        let point = raw(70);
        let cue = crate::media::scte35::SpliceInsert {
            event_id: 1,
            out_of_network: true,
            pts: point,
            duration: None,
            program_id: 1,
        };
        let mut placed = Vec::new();
        for i in 0..100 {
            if i == 20 {
                q.cue(cue.section(), tsdemux(i));
            }
            q.raw_pts.push_back(raw(i));
            let (pts, _) = q.place(0, tsdemux(i), tsdemux(i), F);
            q.picture(pts);
            placed.push(pts);
        }
        let relayed = q.cues.front().expect("the cue is kept");
        let shown = super::super::mux::ticks_90k(placed[70]);
        assert_eq!(lands(relayed, point), shown, "the cue names the picture it named");
        // Held from the cue to the splice point, steered before and after.
        assert_eq!(placed[70] - placed[20], 50 * F);
        assert_eq!(placed[19] - placed[18], F + STEER_NS);
        assert_eq!(placed[99] - placed[98], F + STEER_NS);
        // A cue naming a point a minute and more ahead holds nothing.
        q.cue(crate::media::scte35::SpliceInsert { pts: raw(99) + 61 * 90_000, ..cue }.section(), 0);
        assert_eq!(q.steady_until, None);
    }
}
