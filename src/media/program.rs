//! The program pipeline: the slate and the contribution's raw pictures and
//! sound, switched and encoded once for every leg, ending in the fan-out.
//!
//! Why re-encode rather than splice the contribution's own MPEG-TS: the
//! slate and the contribution come from different encoders, so a splice
//! would change SPS/PPS, PIDs, continuity counters and PCR at every switch,
//! and could only cut at the contribution's keyframes (up to a GOP late).
//! Switching raw pictures before one encoder and one multiplexer keeps one
//! format, one set of PIDs and one PCR by construction, and lets the switch
//! land on the first frame at or after T0 with a keyframe forced there.
//!
//! The switch is decided on output timestamps: the compositor and the audio
//! mixer emit `samples-selected` for every output buffer before mixing it,
//! with its running time; that time, on the pipeline's monotonic clock,
//! mapped to UTC once at start ([`UtcClock`]), is looked up in the [`Cue`].
//! A step of the wall clock after start changes nothing.
//!
//! Failover ([`super::failover`]) goes through the same place: the
//! compositor has the slate, the primary and the backup on three pads, and
//! for every output picture the selector looks at each feed's health and
//! picks one; the chosen pad is made opaque, the others transparent, and the
//! encoder is asked for a keyframe on the first picture of the new feed.
//! Because the output is re-encoded, the first picture after a switch is
//! decodable whatever the incoming feed's GOP, and PIDs, continuity
//! counters and PCR run on unbroken. Each feed's sound and pictures keep the
//! capture times they had in their own pipeline, so they stay in sync; the
//! audio mixer follows the video's decisions by timestamp.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::watch;
use tracing::{info, warn};

use super::failover::{Feed, Look, Selector, SourceChoice, SourceSwitch, health};
use super::fanout::{Fanout, FanoutSender};
use super::recording::UtcClock;
use super::source::{Contribution, FeedOut, RawSink, SOURCE_BACKOFF, SourceCounters, SourceState, SourceStatus};
use super::supervise::{Ended, Playing, Supervised};
use super::{MediaError, lock, template, ts};
use crate::config::{FailoverSettings, ProgramFormat, SlateSettings, Source};

/// Extra time the compositor and mixer wait for late input: the feed's
/// pictures arrive a few milliseconds after their capture time.
pub const MIX_LATENCY: Duration = Duration::from_millis(100);

/// What the cue puts out: the programme or the slate. Which source fills
/// the programme is the failover's [`Feed`] (the slate too, when every
/// feed is lost); what master control asked for is its
/// [`super::failover::SourceChoice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Content {
    /// The slate.
    Slate,
    /// The contribution.
    Program,
}

impl Content {
    /// The displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Content::Slate => "SLATE",
            Content::Program => "PROGRAM",
        }
    }
}

/// When the program is on: from `program_from` (inclusive) until
/// `program_until` (exclusive), unless `force_slate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Cue {
    /// Program from this instant; `None`: slate (not taken yet, or held).
    pub program_from: Option<DateTime<Utc>>,
    /// Slate again from this instant (the end); `None`: no end set.
    pub program_until: Option<DateTime<Utc>>,
    /// Slate whatever the times say (an operator's choice, an abort).
    pub force_slate: bool,
}

impl Cue {
    /// What goes out at UTC `at_ns`.
    pub fn content_at(&self, at_ns: u64) -> Content {
        let ns = |t: DateTime<Utc>| t.timestamp_nanos_opt().unwrap_or(i64::MAX).max(0) as u64;
        let on = !self.force_slate
            && self.program_from.is_some_and(|f| ns(f) <= at_ns)
            && self.program_until.is_none_or(|u| at_ns < ns(u));
        if on { Content::Program } else { Content::Slate }
    }
}

/// Turns master control's slate (a cue forcing the slate while the
/// programme window is open) into switches for the status and the as-run
/// log, as the failover's are: partners see the picture change either way.
#[derive(Debug, Default)]
pub struct HandSlate {
    forced: bool,
}

impl HandSlate {
    /// The switch a partner sees at UTC `at_ns` if the cue's forced slate
    /// starts or ends there, with `feed` on the selector; `None` when
    /// nothing changes on screen (outside the programme window, or the
    /// selector on the slate already).
    pub fn observe(&mut self, cue: &Cue, at_ns: u64, feed: Feed) -> Option<SourceSwitch> {
        if cue.force_slate == self.forced {
            return None;
        }
        self.forced = cue.force_slate;
        let window = Cue { force_slate: false, ..*cue }.content_at(at_ns) == Content::Program;
        if !window || feed == Feed::Slate {
            return None;
        }
        let (from, to, reason) = if self.forced {
            (feed, Feed::Slate, "slate by master control")
        } else {
            (Feed::Slate, feed, "slate released by master control")
        };
        Some(SourceSwitch { at_utc_ns: at_ns, from, to, reason: reason.into(), by_hand: true })
    }
}

/// The switch's state, shared by the mixers' callbacks, the encoder probe
/// and the appsink.
#[derive(Debug)]
struct Switch {
    cue: Mutex<Cue>,
    utc: UtcClock,
    /// What the video output carries now (`true`: program).
    video_program: AtomicBool,
    /// Running time of the first program picture not yet seen leaving the
    /// encoder; `u64::MAX`: none pending.
    switch_rt: AtomicU64,
    /// Keyframes out of the encoder, counted.
    keyframes_encoded: AtomicU64,
    /// The count of the keyframe that starts the program; 0: none.
    program_keyframe: AtomicU64,
    /// Keyframe PES starts seen in the multiplexer's output, counted.
    keyframes_muxed: AtomicU64,
    /// UTC (ns) of the timestamp of the latest first programme picture.
    switched_utc: AtomicU64,
    /// What each feed has delivered: the primary, then the backup if any.
    feeds: Vec<Arc<SourceCounters>>,
    failover: FailoverSettings,
    selector: Mutex<Selector>,
    /// What the picture shows now, and from which running time each
    /// recent change holds (the audio mixer follows it).
    shown: Mutex<Shown>,
    /// Switches between feeds not yet taken by [`Program::take_switches`].
    switches: Mutex<Vec<SourceSwitch>>,
    /// The latest switch between feeds.
    last_switch: Mutex<Option<SourceSwitch>>,
    hand: Mutex<HandSlate>,
}

/// What the program pipeline's picture shows, and since when.
#[derive(Debug, Default)]
struct Shown {
    now: Option<Feed>,
    /// (running time, feed) of recent changes, oldest first.
    changes: VecDeque<(u64, Feed)>,
}

impl Shown {
    /// The feed shown at running time `rt` (the slate before any change).
    fn at(&self, rt: u64) -> Feed {
        self.changes.iter().rev().find(|(t, _)| *t <= rt).map_or(Feed::Slate, |(_, f)| *f)
    }
}

impl Switch {
    fn content_at_rt(&self, rt: u64, base: u64) -> Content {
        lock(&self.cue).content_at(self.utc.utc_of(rt + base))
    }

    /// Looks at the feeds' health at clock time `now` and returns the feed
    /// the output picture of clock time `picture` should carry; a change is
    /// recorded with its reason.
    fn select(&self, now: u64, picture: u64, at_utc: u64) -> Feed {
        let d = self.failover.detect_after;
        let look = |c: &SourceCounters| Look { health: health(now, c.seen(), d), shows_from_ns: c.shows_from() };
        let primary = look(&self.feeds[0]);
        let backup = self.feeds.get(1).map(|c| look(c));
        let mut sel = lock(&self.selector);
        let from = sel.on();
        if let Some((to, reason)) = sel.decide(now, picture, primary, backup) {
            self.record(SourceSwitch { at_utc_ns: at_utc, from, to, reason, by_hand: false });
        }
        let feed = sel.on();
        drop(sel);
        let cue = *lock(&self.cue);
        if let Some(sw) = lock(&self.hand).observe(&cue, at_utc, feed) {
            self.record(sw);
        }
        feed
    }

    fn record(&self, sw: SourceSwitch) {
        info!(from = sw.from.as_str(), to = sw.to.as_str(), reason = %sw.reason, utc = %utc_text(sw.at_utc_ns), "Source switched.");
        lock(&self.switches).push(sw.clone());
        *lock(&self.last_switch) = Some(sw);
    }
}

/// The running program: the contribution feeds and the program pipeline.
#[derive(Debug)]
pub struct Program {
    primary: Contribution,
    backup: Option<Contribution>,
    switch: Arc<Switch>,
    /// Why the program pipeline failed for good, if it did.
    failure: Arc<Mutex<Option<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Everything the program pipeline is built from.
#[derive(Debug, Clone)]
pub struct ProgramPlan {
    /// The contribution.
    pub source: Source,
    /// The backup contribution, if any.
    pub backup: Option<Source>,
    /// When to fail over and come back.
    pub failover: FailoverSettings,
    /// The output format.
    pub format: ProgramFormat,
    /// The slate.
    pub slate: SlateSettings,
    /// The event title (slate card, test source).
    pub title: String,
    /// The fan-out's batching wait.
    pub batch_wait: Duration,
    /// The primary's and the backup's thumbnailers, if the relay makes
    /// thumbnails: each feed hands them its MPEG-TS.
    pub feed_thumbs: [Option<Arc<super::thumbs::Thumbnailer>>; 2],
}

impl Program {
    /// Builds both pipelines once (a missing plugin or a broken template is
    /// an error here) and starts their supervisors. The legs carry the slate
    /// until the cue says otherwise.
    pub fn start(
        plan: &ProgramPlan,
        cue: Cue,
        utc: UtcClock,
        fanout: Arc<Fanout>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, MediaError> {
        let sender = fanout
            .spawn(plan.batch_wait)
            .map_err(|e| MediaError::Pipeline(format!("cannot start the fan-out thread: {e}")))?;
        let switch = Arc::new(Switch {
            cue: Mutex::new(cue),
            utc,
            video_program: AtomicBool::new(false),
            switch_rt: AtomicU64::new(u64::MAX),
            keyframes_encoded: AtomicU64::new(0),
            program_keyframe: AtomicU64::new(0),
            keyframes_muxed: AtomicU64::new(0),
            switched_utc: AtomicU64::new(0),
            feeds: std::iter::repeat_with(Arc::default).take(1 + usize::from(plan.backup.is_some())).collect(),
            failover: plan.failover,
            selector: Mutex::new(Selector::new(plan.failover, plan.backup.is_some())),
            shown: Mutex::default(),
            switches: Mutex::default(),
            last_switch: Mutex::default(),
            hand: Mutex::default(),
        });
        let raws = [RawSink::new(), RawSink::new()];
        let first = build(plan, &switch, sender.clone())?;
        let feed = |source: &Source, i: usize| {
            let counters = Arc::clone(&switch.feeds[i]);
            let (f, d) = (&plan.format, plan.failover.detect_after);
            let out = FeedOut::Raw(Arc::clone(&raws[i]));
            let thumb = plan.feed_thumbs[i].clone();
            Contribution::start(source, f, &plan.title, out, counters, d, thumb, stop.clone())
        };
        let primary = feed(&plan.source, 0)?;
        let backup = plan.backup.as_ref().map(|b| feed(b, 1)).transpose()?;
        let failure = Arc::new(Mutex::new(None));
        let sup = Supervisor {
            plan: plan.clone(),
            switch: Arc::clone(&switch),
            raws,
            sender,
            next: Some(first),
            failure: Arc::clone(&failure),
        };
        let task = super::supervise::spawn(sup, SOURCE_BACKOFF, stop);
        Ok(Self { primary, backup, switch, failure, task: Some(task) })
    }

    /// Automatic failover, or a feed held by hand; takes effect on the next
    /// output picture.
    pub fn set_source_choice(&self, choice: SourceChoice) {
        lock(&self.switch.selector).set_choice(choice);
    }

    /// The choice in force.
    pub fn source_choice(&self) -> SourceChoice {
        lock(&self.switch.selector).choice()
    }

    /// What the picture shows now: the slate, or the feed on air.
    pub fn shown(&self) -> Feed {
        lock(&self.switch.shown).now.unwrap_or(Feed::Slate)
    }

    /// The latest switch between feeds.
    pub fn last_switch(&self) -> Option<SourceSwitch> {
        lock(&self.switch.last_switch).clone()
    }

    /// The switches between feeds since the last call, oldest first.
    pub fn take_switches(&self) -> Vec<SourceSwitch> {
        std::mem::take(&mut *lock(&self.switch.switches))
    }

    /// Replaces the cue; takes effect on the next output frame.
    pub fn set_cue(&self, cue: Cue) {
        *lock(&self.switch.cue) = cue;
    }

    /// The cue in force.
    pub fn cue(&self) -> Cue {
        *lock(&self.switch.cue)
    }

    /// What the picture carries now.
    pub fn content(&self) -> Content {
        if self.switch.video_program.load(Ordering::Relaxed) { Content::Program } else { Content::Slate }
    }

    /// UTC (ns) of the timestamp of the latest first programme picture:
    /// the picture the switch landed on, by its own timestamp.
    pub fn switched_utc_ns(&self) -> Option<u64> {
        Some(self.switch.switched_utc.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// A snapshot of the primary feed; in error, whatever the feed does,
    /// once the program pipeline has failed for good.
    pub fn status(&self) -> SourceStatus {
        let status = self.primary.status();
        match lock(&self.failure).clone() {
            Some(why) => SourceStatus { state: SourceState::Error, healthy: false, last_error: Some(why), ..status },
            None => status,
        }
    }

    /// A snapshot of the backup feed, if there is one.
    pub fn backup_status(&self) -> Option<SourceStatus> {
        self.backup.as_ref().map(Contribution::status)
    }

    /// Waits for every supervisor to finish (after the stop signal).
    pub async fn join(&mut self) {
        self.primary.join().await;
        if let Some(b) = &mut self.backup {
            b.join().await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

struct Built {
    pipeline: gst::Pipeline,
    bus_rx: super::BusRx,
    /// The appsrcs of the primary, then of the backup.
    inputs: [FeedInputs; 2],
}

/// One feed's way into the program pipeline: its pictures, and its sound
/// for each planned audio track (lane), in order.
struct FeedInputs {
    video: gst_app::AppSrc,
    audio: Vec<gst_app::AppSrc>,
}

struct Supervisor {
    plan: ProgramPlan,
    switch: Arc<Switch>,
    raws: [Arc<RawSink>; 2],
    sender: FanoutSender,
    /// The pipeline built at start, for the first run.
    next: Option<Built>,
    failure: Arc<Mutex<Option<String>>>,
}

/// Runs the program pipeline; rebuilds it after an error (it has no network
/// part, so this is for the unexpected), with a backoff. The legs stay
/// connected meanwhile.
impl Supervised for Supervisor {
    async fn run_once(&mut self, stop: &watch::Receiver<bool>) -> Ended {
        let built = match self.next.take() {
            Some(b) => Ok(b),
            None => build(&self.plan, &self.switch, self.sender.clone()),
        };
        let Built { pipeline, mut bus_rx, inputs } = match built {
            Ok(b) => b,
            Err(e) if e.is_permanent() => return Ended::Permanent(e.to_string()),
            Err(e) => return Ended::Failed(e.to_string()),
        };
        let playing = match Playing::start(&pipeline, &mut bus_rx).await {
            Ok(p) => p,
            Err(refused) => return Ended::Failed(format!("program pipeline: {refused}")),
        };
        for (raw, FeedInputs { video, audio }) in self.raws.iter().zip(inputs) {
            raw.attach(video, audio);
        }
        info!("Program pipeline running.");
        let mut stop = stop.clone();
        let ended = loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break Ended::Stopped,
                msg = bus_rx.recv() => {
                    let Some(msg) = msg else { break Ended::Failed("the program pipeline's bus closed".into()) };
                    match msg.view() {
                        gst::MessageView::Error(e) => {
                            break Ended::Failed(format!("program pipeline: {}", super::describe_error(e)));
                        }
                        gst::MessageView::Eos(_) => break Ended::Failed("the program pipeline ended".into()),
                        _ => {}
                    }
                }
            }
        };
        for raw in &self.raws {
            raw.detach();
        }
        playing.release().await;
        ended
    }

    fn failed(&mut self, error: &str, _delay: Duration) {
        warn!(error, "Program pipeline failed; restarting it (the legs stay connected).");
    }

    fn finished(&mut self, failure: Option<&str>) {
        if let Some(error) = failure {
            tracing::error!(error, "Program pipeline failed for good; the legs carry nothing new.");
            *lock(&self.failure) = Some(error.to_owned());
        }
    }
}

fn format_params(f: &ProgramFormat) -> Vec<(&'static str, u64)> {
    vec![("width", u64::from(f.width)), ("height", u64::from(f.height)), ("framerate", u64::from(f.framerate))]
}

/// The transcoding program's skeleton: the slate (compositor and mixer pads
/// `sink_0`), the primary (`sink_1`) and the backup (`sink_2`) switched on
/// raw pictures and sound, then encoded once and multiplexed once for every
/// leg. Slate and programme therefore share codec, picture size, frame
/// rate, audio rate and layout, PIDs, continuity counters and PCR by
/// construction: partner decoders never re-initialise at a switch. The
/// switch sets the pads' alpha and mute from code, on output timestamps.
/// The backup's appsrcs are there even without a backup: they never push.
///
/// Sound goes through one lane per `[program] audio` track (its own mixer,
/// slate tone, encoder and PID, tagged with the planned language), so a
/// contribution's commentaries stay apart and each leg can choose them.
pub const PLAYOUT: super::Skeleton = super::Skeleton {
    name: "program/playout",
    factories: &[
        "appsrc",
        "queue",
        "videoconvert",
        "videoscale",
        "audioconvert",
        "audioresample",
        "capsfilter",
        "audiotestsrc",
        "compositor",
        "audiomixer",
        "x264enc",
        "h264parse",
        "avenc_aac",
        "aacparse",
        "mpegtsmux",
    ],
};

/// A queue holding up to `time` and nothing else as a bound.
fn timed_queue(time: Duration) -> Result<gst::Element, MediaError> {
    PLAYOUT.make("queue", |b| {
        b.property("max-size-time", time.as_nanos() as u64)
            .property("max-size-bytes", 0u32)
            .property("max-size-buffers", 0u32)
    })
}

/// The elements of the skeleton the build needs to reach again.
struct Playout {
    /// The appsrcs of the primary, then of the backup.
    inputs: [FeedInputs; 2],
    vmix: gst::Element,
    venc: gst::Element,
    /// One per planned audio track.
    lanes: Vec<Lane>,
    mux: gst::Element,
}

/// One planned audio track's part of the program pipeline.
struct Lane {
    /// Its mixer: slate, primary, backup.
    mixer: gst::Element,
    /// The slate's sound for it.
    tone: gst::Element,
    /// The PID the multiplexer gives it.
    pid: u16,
}

/// Builds the skeleton into `pipeline`, up to the multiplexer.
fn playout(pipeline: &gst::Pipeline, f: &ProgramFormat) -> Result<Playout, MediaError> {
    let err = |e: gst::glib::BoolError| MediaError::Pipeline(format!("program pipeline: {e}"));
    let link = |chain: &[&gst::Element]| -> Result<(), MediaError> {
        pipeline.add_many(chain.iter().copied()).map_err(err)?;
        gst::Element::link_many(chain.iter().copied()).map_err(err)
    };
    let caps = |c: gst::Caps| PLAYOUT.make("capsfilter", |b| b.property("caps", c));
    let raw_video =
        || gst::Caps::builder("video/x-raw").field("width", f.width as i32).field("height", f.height as i32);
    let raw_audio = || gst::Caps::builder("audio/x-raw").field("rate", 48_000i32).field("channels", 2i32).build();
    let two_s = Duration::from_secs(2);
    let latency = MIX_LATENCY.as_nanos() as u64;

    let vmix = PLAYOUT
        .make("compositor", |b| b.name("vmix").property_from_str("background", "black").property("latency", latency))?;
    let venc = PLAYOUT.make("x264enc", |b| {
        b.name("venc")
            .property_from_str("tune", "zerolatency")
            .property_from_str("speed-preset", "ultrafast")
            .property("bitrate", f.video_kbps)
            .property("key-int-max", f.gop)
            .property("bframes", 0u32)
            .property("byte-stream", true)
    })?;
    let mux = PLAYOUT.make("mpegtsmux", |b| b.name("out").property("alignment", 7i32))?;

    // The four inputs: live appsrcs that drop their oldest rather than
    // hold up a feed's pipeline.
    let input = |name: &str, video: bool| -> Result<(gst_app::AppSrc, gst::Pad), MediaError> {
        let src = PLAYOUT.make("appsrc", |b| {
            b.name(name)
                .property("is-live", true)
                .property_from_str("format", "time")
                .property("max-time", two_s.as_nanos() as u64)
                .property_from_str("leaky-type", "downstream")
        })?;
        let chain = if video {
            [
                src.clone(),
                timed_queue(two_s)?,
                PLAYOUT.make("videoconvert", |b| b)?,
                PLAYOUT.make("videoscale", |b| b)?,
                caps(raw_video().build())?,
            ]
        } else {
            [
                src.clone(),
                timed_queue(two_s)?,
                PLAYOUT.make("audioconvert", |b| b)?,
                PLAYOUT.make("audioresample", |b| b)?,
                caps(raw_audio())?,
            ]
        };
        link(&chain.iter().collect::<Vec<_>>())?;
        let out =
            chain[4].static_pad("src").ok_or_else(|| MediaError::Pipeline("capsfilter without a src pad".into()))?;
        let app =
            src.downcast::<gst_app::AppSrc>().map_err(|_| MediaError::Pipeline("appsrc is not an AppSrc".into()))?;
        Ok((app, out))
    };
    let to_pad = |out: gst::Pad, mixer: &gst::Element, pad: &str| -> Result<(), MediaError> {
        let sink = mixer
            .request_pad_simple(pad)
            .ok_or_else(|| MediaError::Pipeline(format!("{} has no pad {pad}", mixer.name())))?;
        out.link(&sink)
            .map(|_| ())
            .map_err(|e| MediaError::Pipeline(format!("program pipeline: cannot link to {}.{pad}: {e}", mixer.name())))
    };
    let lane_count = f.audio.len().max(1);
    let mixers = (0..lane_count)
        .map(|l| PLAYOUT.make("audiomixer", |b| b.name(format!("amix_{l}")).property("latency", latency)))
        .collect::<Result<Vec<_>, _>>()?;
    pipeline.add_many([&vmix, &mux]).map_err(err)?;
    pipeline.add_many(mixers.iter()).map_err(err)?;
    let mut inputs = Vec::new();
    for (i, feed) in ["program", "backup"].iter().enumerate() {
        let (video, vout) = input(&format!("{feed}_video"), true)?;
        to_pad(vout, &vmix, &format!("sink_{}", i + 1))?;
        let mut audio = Vec::new();
        for (l, mixer) in mixers.iter().enumerate() {
            let (a, aout) = input(&format!("{feed}_audio_{l}"), false)?;
            to_pad(aout, mixer, &format!("sink_{}", i + 1))?;
            audio.push(a);
        }
        inputs.push(FeedInputs { video, audio });
    }
    let inputs: [_; 2] = inputs.try_into().map_err(|_| MediaError::Pipeline("program inputs: not two feeds".into()))?;

    // The slate's sound, one tone for each lane; its picture is linked by
    // the caller.
    let mut tones = Vec::new();
    for (l, mixer) in mixers.iter().enumerate() {
        let tone = PLAYOUT.make("audiotestsrc", |b| {
            b.name(format!("slate_tone_{l}"))
                .property("is-live", true)
                .property("samplesperbuffer", 960i32)
                .property("volume", 0.25f64)
        })?;
        let tone_caps = caps(raw_audio())?;
        link(&[&tone, &tone_caps])?;
        let tone_out =
            tone_caps.static_pad("src").ok_or_else(|| MediaError::Pipeline("capsfilter without a src pad".into()))?;
        to_pad(tone_out, mixer, "sink_0")?;
        tones.push(tone);
    }

    // One encode each, then the one multiplex. Video first: it gets the
    // first PID, as partners have always seen it.
    let i420 =
        raw_video().field("framerate", gst::Fraction::new(f.framerate as i32, 1)).field("format", "I420").build();
    let baseline = gst::Caps::builder("video/x-h264").field("profile", "constrained-baseline").build();
    let vparse = PLAYOUT.make("h264parse", |b| b.name("vparse").property("config-interval", -1i32))?;
    let vchain = [caps(i420)?, venc.clone(), caps(baseline)?, vparse, timed_queue(Duration::from_secs(1))?];
    pipeline.add_many(vchain.iter()).map_err(err)?;
    gst::Element::link_many([&vmix].into_iter().chain(vchain.iter()).chain([&mux])).map_err(err)?;
    // Then each lane's sound, on PIDs in lane order.
    let mut lanes = Vec::new();
    for (mixer, tone) in mixers.into_iter().zip(tones) {
        let aenc = PLAYOUT.make("avenc_aac", |b| {
            b.property("bitrate", i32::try_from(u64::from(f.audio_kbps) * 1000).unwrap_or(128_000))
        })?;
        let achain = [
            caps(raw_audio())?,
            PLAYOUT.make("audioconvert", |b| b)?,
            aenc,
            PLAYOUT.make("aacparse", |b| b)?,
            timed_queue(Duration::from_secs(1))?,
        ];
        pipeline.add_many(achain.iter()).map_err(err)?;
        gst::Element::link_many([&mixer].into_iter().chain(achain.iter())).map_err(err)?;
        let mux_pad = mux
            .request_pad_simple("sink_%d")
            .ok_or_else(|| MediaError::Pipeline("the multiplexer gives no more pads".into()))?;
        // mpegtsmux names a pad after its PID.
        let pid = mux_pad.name().strip_prefix("sink_").and_then(|n| n.parse::<u16>().ok()).unwrap_or(0);
        let out = achain[4].static_pad("src").ok_or_else(|| MediaError::Pipeline("queue without a src pad".into()))?;
        out.link(&mux_pad)
            .map_err(|e| MediaError::Pipeline(format!("program pipeline: cannot link a sound track: {e}")))?;
        lanes.push(Lane { mixer, tone, pid });
    }
    Ok(Playout { inputs, vmix, venc, lanes, mux })
}

/// Builds the program pipeline: slate and contribution into the compositor
/// and the mixer, one encoder each, one multiplexer, the fan-out's appsink.
fn build(plan: &ProgramPlan, switch: &Arc<Switch>, sender: FanoutSender) -> Result<Built, MediaError> {
    let f = &plan.format;
    let pipeline = gst::Pipeline::with_name("program");
    pipeline.use_clock(Some(&super::clock()));
    let err = |e: gst::glib::BoolError| MediaError::Pipeline(format!("program pipeline: {e}"));
    let Playout { inputs, vmix, venc, lanes, mux } = playout(&pipeline, f)?;
    for Lane { tone, .. } in &lanes {
        match plan.slate.tone_hz {
            Some(hz) => {
                tone.set_property_from_str("wave", "sine");
                tone.set_property("freq", f64::from(hz));
            }
            None => tone.set_property_from_str("wave", "silence"),
        }
    }

    // The slate's picture, into the compositor's bottom pad.
    let slate_name = if plan.slate.image.is_some() { "program/slate-image" } else { "program/slate-card" };
    let slate = template::get(slate_name)?.instantiate(&format_params(f))?;
    match &plan.slate.image {
        Some(path) => {
            if let Some(src) = slate.by_name("src") {
                src.set_property("location", path.display().to_string());
            }
        }
        None => {
            if let Some(text) = slate.by_name("text") {
                let line = plan.slate.text.as_deref().unwrap_or("We will be on air shortly");
                text.set_property("text", format!("{}\n\n{line}", plan.title));
            }
        }
    }

    // Each lane's track under its planned language, in the PMT.
    let languages =
        lanes.iter().zip(&f.audio).filter_map(|(lane, t)| t.language.clone().map(|l| (lane.pid, l))).collect();
    let appsink = fanout_sink(switch, sender, super::tracks::LanguageStamp::new(languages));
    pipeline.add_many([slate.upcast_ref::<gst::Element>(), &appsink]).map_err(err)?;
    mux.link(&appsink)
        .map_err(|e| MediaError::Pipeline(format!("program pipeline: cannot link to the fan-out: {e}")))?;

    let vpad = |n: &str| {
        vmix.static_pad(n)
            .or_else(|| vmix.request_pad_simple(n))
            .ok_or_else(|| MediaError::Pipeline(format!("compositor has no pad {n}")))
    };
    let slate_target = vpad("sink_0")?;
    let slate_out =
        slate.static_pad("video").ok_or_else(|| MediaError::Pipeline("the slate has no video pad".into()))?;
    slate_out
        .link(&slate_target)
        .map_err(|e| MediaError::Pipeline(format!("program pipeline: cannot link the slate to the compositor: {e}")))?;
    // Pads by feed: slate, primary, backup.
    let video_pads = [slate_target, vpad("sink_1")?, vpad("sink_2")?];
    let mut lane_pads = Vec::new();
    for lane in &lanes {
        let apad = |n: &str| {
            lane.mixer.static_pad(n).ok_or_else(|| MediaError::Pipeline(format!("audio mixer has no pad {n}")))
        };
        lane_pads.push([apad("sink_0")?, apad("sink_1")?, apad("sink_2")?]);
    }
    for (i, pad) in video_pads.iter().enumerate() {
        pad.set_property("zorder", i as u32);
        if i > 0 {
            pad.set_property("width", f.width as i32);
            pad.set_property("height", f.height as i32);
        }
    }
    show_video(&video_pads, Feed::Slate);
    for pads in &lane_pads {
        show_audio(pads, Feed::Slate);
    }
    switch.video_program.store(false, Ordering::Relaxed);
    *lock(&switch.shown) = Shown::default();

    vmix.set_property("emit-signals", true);
    {
        let switch = Arc::clone(switch);
        let venc_src = venc.static_pad("src").ok_or_else(|| MediaError::Pipeline("x264enc has no src pad".into()))?;
        let clock = super::clock();
        vmix.connect("samples-selected", false, move |args| {
            let agg = args[0].get::<gst::Element>().ok()?;
            let rt = args[2].get::<Option<gst::ClockTime>>().ok().flatten()?.nseconds();
            let base = agg.base_time()?.nseconds();
            let utc = switch.utc.utc_of(rt + base);
            let feed = switch.select(clock.time().nseconds(), rt + base, utc);
            let content = switch.content_at_rt(rt, base);
            let program = content == Content::Program;
            let show = if program { feed } else { Feed::Slate };
            let (changed, first) = {
                let mut shown = lock(&switch.shown);
                let first = shown.now.is_none();
                let changed = shown.now != Some(show);
                if changed {
                    shown.now = Some(show);
                    shown.changes.push_back((rt, show));
                    if shown.changes.len() > 32 {
                        shown.changes.pop_front();
                    }
                }
                (changed, first)
            };
            if changed {
                show_video(&video_pads, show);
            }
            // The very first picture is a keyframe anyway.
            if changed && !first {
                // A keyframe on the first picture of what is now shown: a
                // partner's decoder can start on it, and the as-run log can
                // name the programme's first one. "As soon as possible"
                // rather than at `rt`: the encoder is the next element, so
                // the next picture it gets is this one; and x264enc shifts
                // its running times by 1000 h (room for negative DTS), so a
                // request at `rt` would count as already served after the
                // first one.
                let fku = gst::Structure::builder("GstForceKeyUnit")
                    .field("running-time", u64::MAX)
                    .field("all-headers", true)
                    .field("count", 0u32)
                    .build();
                venc_src.send_event(gst::event::CustomUpstream::new(fku));
            }
            if switch.video_program.swap(program, Ordering::Relaxed) != program {
                if program {
                    switch.switched_utc.store(utc, Ordering::Relaxed);
                    switch.switch_rt.store(rt, Ordering::Relaxed);
                }
                info!(content = content.as_str(), utc = %utc_text(utc), "Program switched.");
            }
            None
        });
    }
    // Each lane's sound follows the picture by timestamp.
    for (lane, audio_pads) in lanes.iter().zip(lane_pads) {
        let switch = Arc::clone(switch);
        let heard = std::sync::atomic::AtomicUsize::new(pad_index(Feed::Slate));
        lane.mixer.set_property("emit-signals", true);
        lane.mixer.connect("samples-selected", false, move |args| {
            let rt = args[2].get::<Option<gst::ClockTime>>().ok().flatten()?.nseconds();
            let show = lock(&switch.shown).at(rt);
            if heard.swap(pad_index(show), Ordering::Relaxed) != pad_index(show) {
                show_audio(&audio_pads, show);
            }
            None
        });
    }
    // Count keyframes leaving the encoder; note which one starts the program.
    {
        let switch = Arc::clone(switch);
        let pad = venc.static_pad("src").ok_or_else(|| MediaError::Pipeline("x264enc has no src pad".into()))?;
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                && !b.flags().contains(gst::BufferFlags::DELTA_UNIT)
            {
                let n = switch.keyframes_encoded.fetch_add(1, Ordering::Relaxed) + 1;
                let pending = switch.switch_rt.load(Ordering::Relaxed);
                if pending != u64::MAX && b.pts().is_some_and(|p| p.nseconds() >= pending) {
                    switch.switch_rt.store(u64::MAX, Ordering::Relaxed);
                    switch.program_keyframe.store(n, Ordering::Relaxed);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }

    let bus_rx = super::forward_bus(&pipeline)?;
    Ok(Built { pipeline, bus_rx, inputs })
}

/// The index of `feed`'s pads: slate, primary, backup.
fn pad_index(feed: Feed) -> usize {
    match feed {
        Feed::Slate => 0,
        Feed::Primary => 1,
        Feed::Backup => 2,
    }
}

/// Makes `feed`'s picture the one shown: its pad opaque, the feeds' other
/// pads transparent (the slate, at the bottom, stays opaque underneath).
fn show_video(pads: &[gst::Pad; 3], feed: Feed) {
    for (i, pad) in pads.iter().enumerate().skip(1) {
        pad.set_property("alpha", if i == pad_index(feed) { 1.0f64 } else { 0.0 });
    }
}

/// Makes `feed`'s sound the one heard; every other pad muted.
fn show_audio(pads: &[gst::Pad; 3], feed: Feed) {
    for (i, pad) in pads.iter().enumerate() {
        pad.set_property("mute", i != pad_index(feed));
    }
}

/// The appsink handing the multiplexed program to the fan-out, its PMT
/// given the planned languages by `stamp`; it marks the buffer carrying the
/// first program keyframe, so each leg can tell when its first program
/// picture went out.
fn fanout_sink(switch: &Arc<Switch>, sender: FanoutSender, mut stamp: super::tracks::LanguageStamp) -> gst::Element {
    let switch = Arc::clone(switch);
    super::dropping_appsink(1024, move |_, sample| {
        let Some(buffer) = sample.buffer_owned() else { return Ok(gst::FlowSuccess::Ok) };
        let buffer = stamp.apply(buffer);
        let keyframes = buffer
            .map_readable()
            .map(|m| ts::pes_starts(&m).filter(|p| p.is_video() && p.keyframe).count() as u64)
            .unwrap_or(0);
        if keyframes > 0 {
            let before = switch.keyframes_muxed.fetch_add(keyframes, Ordering::Relaxed);
            let wanted = switch.program_keyframe.load(Ordering::Relaxed);
            if wanted > before && wanted <= before + keyframes {
                switch.program_keyframe.store(0, Ordering::Relaxed);
                sender.mark_program_start();
            }
        }
        sender.send(buffer);
        Ok(gst::FlowSuccess::Ok)
    })
    .name("program")
    .build()
    .upcast()
}

fn utc_text(ns: u64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns.min(i64::MAX as u64) as i64).format("%H:%M:%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn ns(s: &str) -> u64 {
        at(s).timestamp_nanos_opt().unwrap() as u64
    }

    #[test]
    fn master_controls_slate_is_a_switch_only_when_partners_see_it() {
        let cue = Cue {
            program_from: Some(at("2026-11-22T15:00:00Z")),
            program_until: Some(at("2026-11-22T18:00:00Z")),
            force_slate: false,
        };
        let forced = Cue { force_slate: true, ..cue };
        let mut hand = HandSlate::default();
        let t = ns("2026-11-22T16:00:00Z");
        assert_eq!(hand.observe(&cue, t, Feed::Primary), None);
        let sw = hand.observe(&forced, t, Feed::Primary).expect("slate by hand");
        assert_eq!((sw.from, sw.to, sw.at_utc_ns), (Feed::Primary, Feed::Slate, t));
        assert_eq!(hand.observe(&forced, t + 1, Feed::Primary), None, "told once");
        let sw = hand.observe(&cue, t + 2, Feed::Backup).expect("released");
        assert_eq!((sw.from, sw.to), (Feed::Slate, Feed::Backup));
        // Before T0 the slate shows anyway; with the selector on the slate
        // (no feed), nothing changes on screen.
        assert_eq!(hand.observe(&forced, ns("2026-11-22T14:00:00Z"), Feed::Primary), None);
        assert_eq!(hand.observe(&cue, t, Feed::Slate), None);
    }

    #[test]
    fn the_cue_puts_the_program_on_from_t0_until_the_end() {
        let cue = Cue {
            program_from: Some(at("2026-11-22T15:00:00Z")),
            program_until: Some(at("2026-11-22T18:00:00Z")),
            force_slate: false,
        };
        assert_eq!(cue.content_at(ns("2026-11-22T14:59:59.999999999Z")), Content::Slate);
        assert_eq!(cue.content_at(ns("2026-11-22T15:00:00Z")), Content::Program);
        assert_eq!(cue.content_at(ns("2026-11-22T17:59:59.96Z")), Content::Program);
        assert_eq!(cue.content_at(ns("2026-11-22T18:00:00Z")), Content::Slate);
        let held = Cue { program_from: None, ..cue };
        assert_eq!(held.content_at(ns("2026-11-22T16:00:00Z")), Content::Slate);
        let forced = Cue { force_slate: true, ..cue };
        assert_eq!(forced.content_at(ns("2026-11-22T16:00:00Z")), Content::Slate);
        let open = Cue { program_until: None, ..cue };
        assert_eq!(open.content_at(ns("2026-11-23T16:00:00Z")), Content::Program);
    }

    /// The transcoding slate is drawn in the compositor's own format: with
    /// no format in its caps, videotestsrc took the first the compositor
    /// accepts (a 16-bit one, Y412 or ABGR64: 8 bytes a pixel), and the
    /// card cost 4 MB a picture at 960x540 and a conversion each frame.
    #[test]
    fn the_slate_card_reaches_the_compositor_in_i420() {
        crate::media::init().expect("GStreamer");
        let f = ProgramFormat { width: 320, height: 180, framerate: 25, ..ProgramFormat::default() };
        let card = template::get("program/slate-card").unwrap().instantiate(&format_params(&f)).unwrap();
        let pipeline = gst::Pipeline::new();
        let vmix = gst::ElementFactory::make("compositor").build().unwrap();
        let sink = gst::ElementFactory::make("fakesink").property("sync", false).build().unwrap();
        pipeline.add_many([card.upcast_ref(), &vmix, &sink]).unwrap();
        let out = card.static_pad("video").expect("the card's video pad");
        out.link(&vmix.request_pad_simple("sink_%u").unwrap()).unwrap();
        vmix.link(&sink).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let caps = loop {
            if let Some(caps) = out.current_caps() {
                break caps;
            }
            assert!(std::time::Instant::now() < deadline, "the card negotiated no caps in 5 s");
            std::thread::sleep(Duration::from_millis(10));
        };
        pipeline.set_state(gst::State::Null).unwrap();
        let format = caps.structure(0).and_then(|s| s.get::<String>("format").ok());
        assert_eq!(format.as_deref(), Some("I420"), "{caps}");
    }
}
