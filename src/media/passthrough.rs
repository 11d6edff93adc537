//! The passthrough program: the contribution's own access units, switched
//! with the slate at keyframes and remultiplexed once for every leg.
//!
//! Each feed (primary, backup) runs its own supervised pipeline that
//! demultiplexes the contribution into access units on the shared clock
//! ([`super::coded`]). The slate is a loop encoded once to match the
//! primary's format ([`super::slate`]). One thread, the splicer, hands
//! access units to the multiplexer ([`super::mux`]) [`HOLD`] after their
//! decoding time, in decoding order; holding them that long is what lets a
//! switch be decided on the media timeline with the incoming keyframe
//! already in hand:
//!
//! - a switch to a contribution (T0, take, failover, a manual choice)
//!   lands on its first keyframe whose presentation time is at or after
//!   the switch instant; the old feed runs until that keyframe's decoding
//!   time;
//! - T0, known ahead, lands on its own picture instead, the first at or
//!   after it: a keyframe bridge ([`super::bridge`]) re-encodes the
//!   pictures from there to the contribution's next keyframe;
//! - a switch to the slate lands on the next picture, the slate loop's
//!   keyframe;
//! - audio follows the video: each track takes a feed's frames from the
//!   presentation time of the picture the switch landed on.
//!
//! Output timestamps are the feeds' own clock times plus [`DELAY`]; the
//! PCR is the clock time the packets leave. A partner's decoder therefore
//! has `DELAY - HOLD` of buffer, the same across every switch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer::prelude::*;
use tokio::sync::watch;
use tracing::{info, warn};

use super::bridge::{self, Bridge};
use super::coded::{Au, CodedFeed, FeedFormat, SpliceCue};
use super::failover::{Feed, Look, Selector, SourceChoice, SourceSwitch, health};
use super::fanout::{Fanout, FanoutSender};
use super::mux::{AudioSlot, Layout, Mux, Slot, Timing};
use super::program::{Content, Cue, HandSlate, ProgramPlan};
use super::recording::UtcClock;
use super::slate::{SlateLook, SlateLoop};
use super::source::{Contribution, FeedOut, SourceCounters, SourceStatus};
use super::{MediaError, lock};

/// How long after its decoding time an access unit is multiplexed: room
/// for the slate's and a late feed's access units to arrive, so that
/// decisions see both sides of a switch.
pub const HOLD: Duration = Duration::from_millis(200);
/// Added to every timestamp: the decoder's buffer is `DELAY - HOLD`.
pub const DELAY: Duration = Duration::from_millis(600);
/// The splicer's period: an access unit leaves up to this late, at 100
/// wake-ups a second. Against 5 ms, the splicer's CPU falls by a quarter
/// to a third (12 SRT legs, docs/benchmarks.md); what a partner sees is
/// UDP datagrams in bursts of 10 ms, inside a decoder buffer of
/// `DELAY - HOLD`. SRT legs hold longer anyway.
const TICK: Duration = Duration::from_millis(10);
/// A feed whose pictures jump by more than this starts a new stream.
const JUMP: u64 = 2_000_000_000;
/// Over how long a feed's video bit rate is measured (for the bridge's
/// encoder).
const RATE_WINDOW: u64 = 2_000_000_000;
/// The most an audio unit's timestamp is moved so that it starts where
/// the previous one ends.
const AUDIO_NUDGE: u64 = 5_000_000;

/// The switch state the status reads.
#[derive(Debug)]
struct Shared {
    cue: Mutex<Cue>,
    selector: Mutex<Selector>,
    /// What the video carries now.
    shown: Mutex<Feed>,
    video_program: AtomicBool,
    switched_utc: AtomicU64,
    switches: Mutex<Vec<SourceSwitch>>,
    last_switch: Mutex<Option<SourceSwitch>>,
    /// The programme's format as the legs carry it now.
    format: Mutex<FeedFormat>,
    stop: AtomicBool,
}

/// The running passthrough program.
#[derive(Debug)]
pub struct Passthrough {
    primary: Contribution,
    backup: Option<Contribution>,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Passthrough {
    /// Starts the feeds and the splicer. The legs carry the slate until
    /// the cue says otherwise.
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
        let counters: Vec<Arc<SourceCounters>> =
            std::iter::repeat_with(Arc::default).take(1 + usize::from(plan.backup.is_some())).collect();
        let feeds: Vec<Arc<CodedFeed>> = counters.iter().map(|_| CodedFeed::new()).collect();
        let start = |source, i: usize| {
            let (f, d) = (&plan.format, plan.failover.detect_after);
            let out = FeedOut::Coded(Arc::clone(&feeds[i]));
            let thumb = plan.feed_thumbs[i].clone();
            Contribution::start(source, f, &plan.title, out, Arc::clone(&counters[i]), d, thumb, stop.clone())
        };
        let primary = start(&plan.source, 0)?;
        let backup = plan.backup.as_ref().map(|b| start(b, 1)).transpose()?;
        let shared = Arc::new(Shared {
            cue: Mutex::new(cue),
            selector: Mutex::new(Selector::new(plan.failover, plan.backup.is_some())),
            shown: Mutex::new(Feed::Slate),
            video_program: AtomicBool::new(false),
            switched_utc: AtomicU64::new(0),
            switches: Mutex::default(),
            last_switch: Mutex::default(),
            format: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let look = SlateLook {
            settings: plan.slate.clone(),
            title: plan.title.clone(),
            gop: plan.format.gop,
            video_kbps: plan.format.video_kbps.min(2000),
        };
        let splicer = Splicer::new(plan, look, Arc::clone(&shared), feeds, counters, utc, sender);
        let thread = std::thread::Builder::new()
            .name("splicer".into())
            .spawn(move || splicer.run())
            .map_err(|e| MediaError::Pipeline(format!("cannot start the splicer thread: {e}")))?;
        Ok(Self { primary, backup, shared, thread: Some(thread) })
    }

    /// Automatic failover, or a feed held by hand.
    pub fn set_source_choice(&self, choice: SourceChoice) {
        lock(&self.shared.selector).set_choice(choice);
    }

    /// The choice in force.
    pub fn source_choice(&self) -> SourceChoice {
        lock(&self.shared.selector).choice()
    }

    /// What the legs' pictures come from now.
    pub fn shown(&self) -> Feed {
        *lock(&self.shared.shown)
    }

    /// The latest switch between feeds.
    pub fn last_switch(&self) -> Option<SourceSwitch> {
        lock(&self.shared.last_switch).clone()
    }

    /// The switches between feeds since the last call, oldest first.
    pub fn take_switches(&self) -> Vec<SourceSwitch> {
        std::mem::take(&mut *lock(&self.shared.switches))
    }

    /// Replaces the cue.
    pub fn set_cue(&self, cue: Cue) {
        *lock(&self.shared.cue) = cue;
    }

    /// The cue in force.
    pub fn cue(&self) -> Cue {
        *lock(&self.shared.cue)
    }

    /// What the legs carry now.
    pub fn content(&self) -> Content {
        if self.shared.video_program.load(Ordering::Relaxed) { Content::Program } else { Content::Slate }
    }

    /// UTC (ns) of the latest first programme picture, by its timestamp.
    pub fn switched_utc_ns(&self) -> Option<u64> {
        Some(self.shared.switched_utc.load(Ordering::Relaxed)).filter(|&n| n > 0)
    }

    /// The programme's format as the legs carry it.
    pub fn format(&self) -> FeedFormat {
        lock(&self.shared.format).clone()
    }

    /// The primary feed.
    pub fn status(&self) -> SourceStatus {
        self.primary.status()
    }

    /// The backup feed.
    pub fn backup_status(&self) -> Option<SourceStatus> {
        self.backup.as_ref().map(Contribution::status)
    }

    /// Waits for the feeds and the splicer to end (after the stop signal).
    pub async fn join(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.primary.join().await;
        if let Some(b) = &mut self.backup {
            b.join().await;
        }
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Passthrough {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// A switch asked for and not landed yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    to: Feed,
    /// Lands at or after this clock time (presentation).
    from: u64,
    /// When it was asked (clock ns).
    asked: u64,
}

/// The slate loop's place.
#[derive(Debug, Default)]
struct SlatePlay {
    /// Clock time of the loop's current keyframe.
    origin: u64,
    /// Pictures given since `origin`.
    count: u64,
}

struct Splicer {
    shared: Arc<Shared>,
    feeds: Vec<Arc<CodedFeed>>,
    counters: Vec<Arc<SourceCounters>>,
    utc: UtcClock,
    sender: FanoutSender,
    clock: gstreamer::Clock,
    failover_detect: Duration,
    look: SlateLook,
    /// The [program] format, for the slate until the primary's is known.
    planned: FeedFormat,
    slate: Option<Arc<SlateLoop>>,
    /// The format the slate is being encoded for, and its result.
    encoding: Option<(FeedFormat, mpsc::Receiver<Result<SlateLoop, MediaError>>)>,
    slate_for: Option<FeedFormat>,
    /// The last contribution format found to differ from the plan (told once).
    told: Option<FeedFormat>,
    mux: Mux,
    /// Per feed: the last epoch seen, and access units taken from it.
    epochs: Vec<u64>,
    video: Vec<VecDeque<Au>>,
    audio: Vec<Vec<VecDeque<Au>>>,
    formats: Vec<FeedFormat>,
    /// Per feed: tsdemux has added every track's pad since the feed's
    /// pipeline last started ([`Queues::complete`](super::coded::Queues)).
    /// A format still being built never sets the layout: a feed
    /// restarting on air would otherwise announce a PMT without its
    /// tracks, and partners would see two PMT changes.
    complete: Vec<bool>,
    on: Feed,
    pending: Option<Pending>,
    play: SlatePlay,
    /// Per track: the slate audio loop's start (clock ns) and frames given.
    slate_audio: Vec<Option<(u64, u64)>>,
    /// The T0 a bridge was last started for (one try each).
    bridge_tried: Option<u64>,
    /// `[program] keyframe_bridge`.
    bridge_on: bool,
    /// A T0 still ahead (clock ns) that will put a feed on: the slate's
    /// last picture before it ends by it, so that T0's own picture (or a
    /// keyframe just after T0) can follow at once.
    t0_ahead: Option<u64>,
    /// Where the feeds change, by presentation time: audio follows them.
    changes: VecDeque<(u64, Feed)>,
    last_video_dts: u64,
    /// Where the pictures out so far stop being shown: the greatest
    /// presentation time plus a picture. A contribution with B-pictures
    /// shows pictures decoded earlier after its last one decoded: what
    /// follows a switch starts after them, or a decoder would show two
    /// pictures at one instant, or time going back.
    shown_until: u64,
    last_audio_pts: Vec<u64>,
    /// Per track: where the last audio access unit written ends (its pts
    /// plus its span). A contribution's PES may carry several frames
    /// (ffmpeg packs about 100 ms of AAC in one): the next source's sound
    /// must not start inside it, or a decoder sees time go back.
    audio_end: Vec<u64>,
    /// Per feed and track: the last access unit's pts taken, and the
    /// spacing of that feed's access units (what one spans).
    audio_span: Vec<Vec<(u64, u64)>>,
    delay: u64,
    hand: HandSlate,
    /// Per feed: SCTE-35 cues taken, oldest first.
    cues: Vec<VecDeque<SpliceCue>>,
    /// Whether a feed has carried SCTE-35: the PMT lists its PID from
    /// then on, on the slate too, so that switches do not change the PMT.
    scte35: bool,
    /// The feed the selector has for the programme (the slate while
    /// neither contribution is fit).
    chosen: Feed,
    /// The keyframe bridge for the next scheduled T0, or the one on air.
    bridge: Option<Bridge>,
    /// What is on air is the bridge's pictures (until its keyframe).
    bridging: bool,
    /// The presentation time of the keyframe a switch landed on, and the
    /// pictures left out so far: until a picture is shown after it, what
    /// follows it in decoding order but is shown before it (the leading
    /// pictures of an open GOP: HEVC's RASL, an H.264 recovery point's or
    /// an MPEG-2 open GOP's B-pictures) is left out. Such pictures refer
    /// to pictures before the keyframe, which partners never got from
    /// this feed: a decoder would show them broken or drop them.
    leading: Option<(u64, u64)>,
    /// Per feed: the video's bit rate, over about two seconds (window
    /// start, bytes since, the last figure in kbit/s).
    rates: Vec<(u64, u64, u32)>,
}

impl Splicer {
    fn new(
        plan: &ProgramPlan,
        look: SlateLook,
        shared: Arc<Shared>,
        feeds: Vec<Arc<CodedFeed>>,
        counters: Vec<Arc<SourceCounters>>,
        utc: UtcClock,
        sender: FanoutSender,
    ) -> Self {
        let planned = FeedFormat::planned(&plan.format, plan.format.video_codec, None);
        let n = feeds.len();
        Self {
            shared,
            feeds,
            counters,
            utc,
            sender,
            clock: super::clock(),
            failover_detect: plan.failover.detect_after,
            look,
            planned,
            slate: None,
            encoding: None,
            slate_for: None,
            told: None,
            mux: Mux::new(),
            epochs: vec![0; n],
            video: vec![VecDeque::new(); n],
            audio: vec![Vec::new(); n],
            formats: vec![FeedFormat::default(); n],
            complete: vec![false; n],
            on: Feed::Slate,
            // The first slate picture starts the stream.
            pending: Some(Pending { to: Feed::Slate, from: 0, asked: 0 }),
            play: SlatePlay { origin: u64::MAX, count: 0 },
            slate_audio: Vec::new(),
            changes: VecDeque::from([(0, Feed::Slate)]),
            last_video_dts: 0,
            shown_until: 0,
            last_audio_pts: Vec::new(),
            audio_end: Vec::new(),
            audio_span: vec![Vec::new(); n],
            delay: DELAY.as_nanos() as u64,
            hand: HandSlate::default(),
            cues: vec![VecDeque::new(); n],
            scte35: plan.format.scte35,
            chosen: Feed::Slate,
            bridge: None,
            bridging: false,
            leading: None,
            bridge_tried: None,
            bridge_on: plan.format.keyframe_bridge,
            t0_ahead: None,
            rates: vec![(0, 0, 0); n],
        }
    }

    fn run(mut self) {
        let hold = HOLD.as_nanos() as u64;
        // Each tick's output starts as big as the last one's with a
        // margin, so that it is not grown by doubling from nothing (a
        // dozen reallocations a tick), up to `ROOM_MAX`: the buffer keeps
        // its capacity downstream, and a keyframe's tick would otherwise
        // make every later one as big.
        const ROOM_MAX: usize = 32 * 1024;
        let mut room = 0;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = self.clock.time().nseconds();
            let mut out = Vec::with_capacity(room);
            self.tick(now, now.saturating_sub(hold), &mut out);
            room = (out.len() + out.len() / 4).min(ROOM_MAX);
            if !out.is_empty() {
                self.sender.send(gstreamer::Buffer::from_mut_slice(out));
            }
            std::thread::sleep(TICK);
        }
    }

    /// The slate to match the primary's format once it is known; the
    /// planned format until then.
    fn keep_slate(&mut self) {
        if let Some((format, rx)) = &self.encoding {
            match rx.try_recv() {
                Ok(Ok(slate)) => {
                    info!(format = %format.describe(), "Slate encoded to match the programme.");
                    self.slate_for = Some(format.clone());
                    // On air, the new slate starts from its keyframe at the
                    // old one's next picture: never a picture of one
                    // encode after a keyframe of the other.
                    if self.on == Feed::Slate
                        && self.play.origin != u64::MAX
                        && let Some(old) = &self.slate
                    {
                        let next = self.play.origin + old.picture_at(self.play.count);
                        self.play = SlatePlay { origin: next, count: 0 };
                    }
                    self.slate = Some(Arc::new(slate));
                    self.slate_audio.iter_mut().for_each(|a| *a = None);
                    self.encoding = None;
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "Cannot encode the slate to match the programme.");
                    self.slate_for = Some(format.clone());
                    self.encoding = None;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => self.encoding = None,
            }
            return;
        }
        let primary = &self.formats[0];
        let known = primary.video.as_ref().is_some_and(|v| v.width > 0 && v.framerate.0 > 0)
            && primary.audio.iter().all(|a| a.rate > 0);
        if known && !same_layout(primary, &self.planned) && self.told.as_ref() != Some(primary) {
            warn!(
                contribution = %primary.describe(),
                planned = %self.planned.describe(),
                "The contribution differs from [program] video_codec/audio/scte35: partners see the PMT change where it \
                 arrives, and receivers that cannot follow a codec change (ffmpeg among them) mis-decode it. \
                 Plan the contribution's codecs and tracks in [program]."
            );
            self.told = Some(primary.clone());
        }
        let want = if known { primary.clone() } else { self.planned.clone() };
        let same = self.slate_for.as_ref().is_some_and(|f| matches_format(f, &want));
        if !same {
            let (tx, rx) = mpsc::channel();
            let look = self.look.clone();
            let format = want.clone();
            let spawned = std::thread::Builder::new().name("slate-encode".into()).spawn(move || {
                let _ = tx.send(super::slate::encode(&format, &look));
                // The encoder's frames are freed, but glibc keeps the pages
                // of the thread's arena: give them back.
                super::trim_heap();
            });
            if spawned.is_ok() {
                self.encoding = Some((want, rx));
            }
        }
    }

    /// Takes what the feeds delivered; a feed that restarted begins a new
    /// stream (its next picture on air must be a keyframe).
    fn take_feeds(&mut self, due: u64) {
        for i in 0..self.feeds.len() {
            let mut q = self.feeds[i].lock();
            if q.epoch != self.epochs[i] {
                self.epochs[i] = q.epoch;
                if self.bridge.as_ref().is_some_and(|b| b.feed == i) {
                    self.bridge = None;
                    self.bridging = false;
                }
                self.video[i].clear();
                self.audio[i].clear();
                self.cues[i].clear();
                if self.on == feed_of(i) {
                    self.pending = Some(Pending { to: self.on, from: due, asked: due });
                }
            }
            self.formats[i] = q.format.clone();
            self.complete[i] = q.complete;
            self.scte35 |= q.format.scte35;
            self.cues[i].extend(q.cues.drain(..));
            let (since, bytes, kbps) = &mut self.rates[i];
            for au in q.video.drain(..) {
                if let Some(b) = self.bridge.as_mut().filter(|b| b.feed == i) {
                    b.push(&au);
                }
                if au.dts < *since || au.dts > *since + 2 * RATE_WINDOW {
                    (*since, *bytes) = (au.dts, 0);
                } else if au.dts >= *since + RATE_WINDOW {
                    *kbps = kbps_of(*bytes, au.dts - *since);
                    (*since, *bytes) = (au.dts, 0);
                }
                *bytes += au.data.size() as u64;
                self.video[i].push_back(au);
            }
            let tracks = q.audio.len();
            self.audio[i].resize_with(tracks, VecDeque::new);
            for (t, a) in q.audio.iter_mut().enumerate() {
                self.audio[i][t].extend(a.drain(..));
            }
        }
    }

    fn decide(&mut self, now: u64, due: u64) -> Feed {
        let d = self.failover_detect;
        let look = |c: &SourceCounters| Look { health: health(now, c.seen(), d), shows_from_ns: c.shows_from() };
        let primary = look(&self.counters[0]);
        let backup = self.counters.get(1).map(|c| look(c));
        let mut sel = lock(&self.shared.selector);
        let from = sel.on();
        let at_utc = self.utc.utc_of(due);
        let mut switched = sel.decide(now, due, primary, backup).map(|(to, reason)| SourceSwitch {
            at_utc_ns: at_utc,
            from,
            to,
            reason,
            by_hand: false,
        });
        let feed = sel.on();
        self.chosen = feed;
        drop(sel);
        let cue = *lock(&self.shared.cue);
        let by_hand = self.hand.observe(&cue, at_utc, feed);
        for sw in switched.take().into_iter().chain(by_hand) {
            info!(from = sw.from.as_str(), to = sw.to.as_str(), reason = %sw.reason, "Source switched.");
            lock(&self.shared.switches).push(sw.clone());
            *lock(&self.shared.last_switch) = Some(sw);
        }
        if cue.content_at(at_utc) == Content::Program { feed } else { Feed::Slate }
    }

    /// The cue's T0 on the clock, if one is set; and the keyframe bridge
    /// for it, started [`bridge::PREPARE`] before it on the feed the
    /// selector has (if that feed's video can be bridged), dropped once it
    /// is of no use.
    fn prepare_bridge(&mut self, due: u64) -> Option<u64> {
        let cue = *lock(&self.shared.cue);
        let t0 = cue
            .program_from
            .filter(|_| !cue.force_slate)
            .map(|f| self.utc.clock_of(f.timestamp_nanos_opt().unwrap_or(i64::MAX).max(0) as u64));
        let prepare = bridge::PREPARE.as_nanos() as u64;
        if !self.bridging
            && let Some(b) = &self.bridge
        {
            let feed = feed_of(b.feed);
            let awaited = self.chosen == feed || self.pending.is_some_and(|p| p.to == feed);
            if t0 != Some(b.t0) || !awaited || due > b.t0 + prepare {
                info!(feed = feed.as_str(), "Keyframe bridge dropped: its switch did not come as planned.");
                self.bridge = None;
            }
        }
        let t = t0?;
        let ahead = t > due && t - due <= prepare;
        if self.bridge_on
            && self.bridge.is_none()
            && ahead
            && self.on == Feed::Slate
            && self.chosen != Feed::Slate
            && self.bridge_tried != Some(t)
        {
            let i = index(self.chosen);
            let video = self.formats[i].video.clone().filter(Bridge::supports);
            if let Some(v) = video {
                self.bridge_tried = Some(t);
                // A feed that came up within RATE_WINDOW of T0 has no
                // measured rate yet: what it has queued stands in.
                let measured = self.rates[i].2;
                let kbps = if measured > 0 { measured } else { queued_kbps(&self.video[i]) };
                let kbps = kbps.max(self.look.video_kbps);
                match Bridge::start(i, t, &v, kbps) {
                    Ok(mut b) => {
                        for au in &self.video[i] {
                            b.push(au);
                        }
                        info!(feed = self.chosen.as_str(), kbps, "Keyframe bridge started for T0.");
                        self.bridge = Some(b);
                    }
                    Err(e) => warn!(error = %e, "Cannot start the keyframe bridge: T0 lands on the next keyframe."),
                }
            }
        }
        t0
    }

    fn tick(&mut self, now: u64, due: u64, out: &mut Vec<u8>) {
        self.keep_slate();
        self.take_feeds(due);
        let want = self.decide(now, due);
        let t0 = self.prepare_bridge(due);
        self.t0_ahead = t0.filter(|&t| t > due && self.chosen != Feed::Slate);
        let target = self.pending.map_or(self.on, |p| p.to);
        if want != target {
            // A scheduled switch lands from its instant, not from the tick
            // that saw it come.
            let from = t0.filter(|&t| want != Feed::Slate && t <= due && due - t < HOLD.as_nanos() as u64);
            self.pending = Some(Pending { to: want, from: from.unwrap_or(due), asked: now });
        }
        self.video(now, due, out);
        if self.on != Feed::Slate && self.complete[index(self.on)] {
            let format = self.formats[index(self.on)].clone();
            self.set_layout(&format);
        }
        self.audio(now, due, out);
        self.cues(now, due, out);
        if self.slate.is_some() {
            self.mux.tick(now, out);
        }
    }

    fn video(&mut self, now: u64, due: u64, out: &mut Vec<u8>) {
        loop {
            self.advance_bridge(due);
            let next_on = self.next_on().filter(|&(dts, _)| dts <= due);
            let Some(p) = self.pending else {
                match next_on {
                    Some((n, _)) if !self.ends_after_t0(n) => self.emit_on(now, out),
                    _ => break,
                }
                continue;
            };
            // Where the switch lands, once the picture it lands on is known
            // (possibly not due yet).
            let Some((at, at_pts, ready)) = self.landing(p, due) else {
                match next_on {
                    Some(_) => self.emit_on(now, out),
                    None => break,
                }
                continue;
            };
            // A picture of what is on goes out only if it is shown for its
            // whole duration before the switch: the first that is not, and
            // everything after it in decoding order, is dropped.
            let frame = self.on_frame_ns();
            match next_on {
                Some((n, np)) if at >= n + frame && at_pts >= np + frame => self.emit_on(now, out),
                _ if at <= due && ready => self.land(p, at, now),
                _ => break,
            }
        }
        // What is not on air and not awaited is not kept past its time,
        // but for a keyframe shown at or after a T0 ahead that puts its
        // feed on (see `ends_after_t0`).
        let t0 = self.t0_ahead.filter(|_| self.on == Feed::Slate);
        for i in 0..self.video.len() {
            let feed = feed_of(i);
            let kept = |a: &Au| t0.is_some_and(|t| feed == self.chosen && a.keyframe && a.pts >= t);
            if feed != self.on && self.pending.is_none_or(|p| p.to != feed) {
                while self.video[i].front().is_some_and(|a| a.dts <= due && !kept(a)) {
                    self.video[i].pop_front();
                }
            }
        }
    }

    /// Whether a slate picture at `dts` waits for a T0 that puts a feed
    /// on (the switch lands in its place): it would still be shown at T0,
    /// or T0's own picture is a keyframe of that feed decoded before it
    /// would be (B-pictures put a feed's decoding times ahead of its
    /// presentation): the slate leaves that decoding time free, or the
    /// switch would wait for the next keyframe, up to a GOP later. The
    /// partner's decoder holds the last slate picture for the slots left.
    fn ends_after_t0(&self, dts: u64) -> bool {
        let Some(t) = self.t0_ahead.filter(|_| self.on == Feed::Slate) else { return false };
        let end = dts + self.on_frame_ns();
        if dts < t && end > t {
            return true;
        }
        let frame = self.frame_ns(self.chosen);
        self.video[index(self.chosen)].iter().any(|a| a.keyframe && a.pts >= t && a.pts < t + frame && a.dts < end)
    }

    /// One picture's duration of what is on (20 ms until known).
    fn on_frame_ns(&self) -> u64 {
        self.frame_ns(self.on)
    }

    /// One picture's duration of `feed` (20 ms until known).
    fn frame_ns(&self, feed: Feed) -> u64 {
        let rate = match feed {
            Feed::Slate => self.slate.as_ref().map(|s| (s.framerate.0, s.framerate.1)),
            f => self.formats[index(f)]
                .video
                .as_ref()
                .map(|v| (v.framerate.0.max(0) as u64, v.framerate.1.max(0) as u64)),
        };
        match rate {
            Some((n, d)) if n > 0 && d > 0 => d * 1_000_000_000 / n,
            _ => 20_000_000,
        }
    }

    /// (decoding, presentation) time of the next picture of what is on.
    fn next_on(&self) -> Option<(u64, u64)> {
        match self.on {
            Feed::Slate if self.play.origin == u64::MAX => None,
            Feed::Slate => self.slate.as_ref().map(|s| {
                let t = self.play.origin + s.picture_at(self.play.count);
                (t, t)
            }),
            _ if self.bridging => self.bridge.as_ref().and_then(Bridge::front),
            f => self.video[index(f)].front().map(|a| (a.dts, a.pts)),
        }
    }

    /// While the bridge is on air: the feed's own pictures before the
    /// keyframe it ends at are never shown, and the bridge ends once it
    /// has given every picture and that keyframe is in hand. A bridge
    /// whose next picture is more than [`bridge::WAIT`] late, or that
    /// failed, gives up: the feed's keyframe comes next, after a freeze.
    fn advance_bridge(&mut self, due: u64) {
        if !self.bridging {
            return;
        }
        let frame = self.on_frame_ns();
        let Some(b) = self.bridge.as_mut() else {
            self.bridging = false;
            return;
        };
        b.check();
        let q = &mut self.video[b.feed];
        while q.front().is_some_and(|a| !(a.keyframe && a.pts >= b.t0)) {
            q.pop_front();
        }
        let keyframe = q.front().map(|a| (a.dts, a.pts));
        let late =
            b.front().is_none() && !b.done() && due > self.last_video_dts + frame + bridge::WAIT.as_nanos() as u64;
        if late || b.failed.is_some() {
            let error = b.failed.clone().unwrap_or_else(|| "its next picture is late".into());
            warn!(error = %error, pictures = b.given, "Keyframe bridge given up: the contribution's keyframe comes next.");
            b.abandon();
        }
        // Nothing bridged shown from the keyframe on, and what is shown
        // before it decoded before it.
        if let Some((kd, kp)) = keyframe {
            b.decoded_before(kd);
            while b.front().is_some_and(|(_, p)| p >= kp) {
                b.pop();
            }
        }
        if b.front().is_none() && b.done() && keyframe.is_some() {
            let after_ms = keyframe.map_or(0, |(_, kp)| kp.saturating_sub(b.t0)) / 1_000_000;
            info!(
                pictures = b.given,
                keyframe_after_ms = after_ms,
                "Keyframe bridge ended: the contribution's own pictures from its keyframe on."
            );
            self.bridging = false;
            self.bridge = None;
            self.leading = keyframe.map(|(_, kp)| (kp, 0));
        }
    }

    /// Where a switch to a contribution lands with the keyframe bridge:
    /// on its first picture, or where that will be while it is not ready
    /// (false). `None` where the bridge is not for this switch, or is not
    /// used: not needed (a keyframe within a picture of T0), failed, or
    /// not ready [`bridge::WAIT`] after T0 (dropped: the keyframe rule).
    fn bridge_landing(&mut self, p: Pending, due: u64) -> Option<(u64, u64, bool)> {
        let after = self.last_video_dts + self.on_frame_ns();
        let shown = self.shown(due);
        let frame = self.frame_ns(p.to);
        let b = self.bridge.as_mut()?;
        if self.bridging || feed_of(b.feed) != p.to || p.from != b.t0 {
            return None;
        }
        b.check();
        let (t0, wait) = (b.t0, bridge::WAIT.as_nanos() as u64);
        // The keyframe rule lands there anyway: a keyframe within a
        // picture of T0, decoded after the last picture out has ended.
        let on_time =
            self.video[b.feed].iter().any(|a| a.keyframe && a.pts >= t0 && a.pts < t0 + frame && a.dts >= after);
        let empty = b.done() && b.front().is_none();
        let why = if on_time {
            Some("the contribution has a keyframe within a picture of T0".to_owned())
        } else if let Some(e) = &b.failed {
            Some(e.clone())
        } else if empty {
            Some("it has no picture before the contribution's keyframe".to_owned())
        } else if b.front().is_some_and(|(_, pts)| pts < shown) {
            Some("its first picture would be shown before the last picture out has ended".to_owned())
        } else if b.front().is_none() && due > t0 + wait {
            Some(format!("its first picture was not ready {} ms after T0", wait / 1_000_000))
        } else {
            None
        };
        if let Some(why) = why {
            info!(reason = %why, "Keyframe bridge not used: T0 lands on the contribution's keyframe.");
            self.bridge = None;
            return None;
        }
        // Decoded after every picture already out.
        b.after(self.last_video_dts);
        Some(b.front().map_or((t0, t0, false), |(dts, pts)| (dts, pts, true)))
    }

    /// Where a pending switch lands as (decoding, presentation) time, and
    /// whether it can land there yet: the slate's next picture (by `due`),
    /// the keyframe bridge's first picture, or the feed's first keyframe
    /// at or after the switch, once it is queued (perhaps not due yet).
    fn landing(&mut self, p: Pending, due: u64) -> Option<(u64, u64, bool)> {
        match p.to {
            Feed::Slate => {
                let slate = self.slate.as_ref()?;
                let frame = slate.picture_at(1).max(1);
                // On the picture grid of what is on, just after the last
                // picture, once every picture out has been shown.
                let at = (self.last_video_dts + frame).max(self.shown(due)).max(due.saturating_sub(frame));
                (at <= due).then_some((at, at, true))
            }
            f => {
                if let Some(bridged) = self.bridge_landing(p, due) {
                    return Some(bridged);
                }
                // The last picture on air keeps its whole duration.
                let after = if self.last_video_dts == 0 { 0 } else { self.last_video_dts + self.on_frame_ns() };
                let shown = self.shown(due);
                let q = &mut self.video[index(f)];
                // What comes before the keyframe the switch lands on is
                // never shown.
                while q.front().is_some_and(|a| !(a.keyframe && a.pts >= p.from.max(shown) && a.dts >= after)) {
                    q.pop_front();
                }
                q.front().map(|a| (a.dts, a.pts, true))
            }
        }
    }

    /// [`Self::shown_until`], if it is near `due` (a stream that jumped
    /// does not hold switches up).
    fn shown(&self, due: u64) -> u64 {
        if self.shown_until > due + JUMP / 2 { 0 } else { self.shown_until }
    }

    fn land(&mut self, p: Pending, at: u64, now: u64) {
        self.pending = None;
        let from = self.on;
        self.on = p.to;
        // On the bridge's first picture ([`Self::bridge_landing`] kept it
        // for this switch only when it had one).
        let bridged = self.bridge.as_ref().filter(|b| !self.bridging && feed_of(b.feed) == p.to && p.from == b.t0);
        let bridged = bridged.and_then(|b| b.front()).map(|(_, pts)| pts);
        self.bridging = bridged.is_some();
        if !self.bridging {
            self.bridge = None;
        }
        self.leading = None;
        let (pts, format) = match p.to {
            Feed::Slate => {
                self.play = SlatePlay { origin: at, count: 0 };
                (at, Some(self.slate.as_ref().map(|s| s.format.clone()).unwrap_or_default()))
            }
            f => {
                // Not bridged: the keyframe it lands on (the queue's front).
                let landed = self.video[index(f)].front().filter(|a| a.keyframe && !self.bridging).map(|a| a.pts);
                self.leading = landed.map(|k| (k, 0));
                let pts = bridged.or(landed).or_else(|| self.video[index(f)].front().map(|a| a.pts)).unwrap_or(at);
                (pts, self.complete[index(f)].then(|| self.formats[index(f)].clone()))
            }
        };
        self.changes.push_back((pts, p.to));
        while self.changes.len() > 32 {
            self.changes.pop_front();
        }
        if let Some(format) = format {
            self.set_layout(&format);
        }
        *lock(&self.shared.shown) = p.to;
        let program = p.to != Feed::Slate;
        let waited_ms = now.saturating_sub(p.asked.max(1)) as f64 / 1e6;
        let late_ms = pts.saturating_sub(p.from) as f64 / 1e6;
        let utc = self.utc.utc_of(pts);
        if self.shared.video_program.swap(program, Ordering::Relaxed) != program || from != p.to {
            if program {
                self.shared.switched_utc.store(utc, Ordering::Relaxed);
                self.sender.mark_program_start();
            }
            let on =
                if self.bridging { "T0's picture, bridged to the contribution's next keyframe" } else { "a keyframe" };
            info!(
                from = from.as_str(),
                to = p.to.as_str(),
                on,
                after_ms = late_ms,
                waited_ms,
                "Passthrough switch landed."
            );
        }
    }

    fn set_layout(&mut self, format: &FeedFormat) {
        let layout = Layout {
            video: format.video.as_ref().map(|v| v.codec),
            audio: format
                .audio
                .iter()
                .map(|a| AudioSlot {
                    codec: a.codec,
                    language: a.language.as_deref().and_then(super::es::language_code),
                })
                .collect(),
            scte35: self.scte35 || format.scte35,
        };
        self.mux.set_layout(layout);
        self.last_audio_pts.resize(format.audio.len(), 0);
        self.audio_end.resize(format.audio.len(), 0);
        self.slate_audio.resize(format.audio.len(), None);
        *lock(&self.shared.format) = format.clone();
    }

    fn emit_on(&mut self, now: u64, out: &mut Vec<u8>) {
        let d = self.delay;
        match self.on {
            Feed::Slate => {
                let Some(slate) = self.slate.clone() else { return };
                let t = self.play.origin + slate.picture_at(self.play.count);
                let i = (self.play.count % slate.video.len() as u64) as usize;
                self.play.count += 1;
                let b = &slate.video[i];
                if let Ok(m) = b.map_readable() {
                    let at = Timing { pts: t + d, dts: t + d, keyframe: i == 0 };
                    self.mux.write_au(Slot::Video, at, &m, now, out);
                }
                self.last_video_dts = t;
                self.shown_until = t + slate.picture_at(1);
            }
            f => {
                let next = if self.bridging {
                    self.bridge.as_mut().and_then(Bridge::pop)
                } else {
                    self.video[index(f)].pop_front()
                };
                let Some(au) = next else { return };
                if !self.bridging && self.leaves_out(&au) {
                    return;
                }
                if au.dts < self.last_video_dts || au.dts > self.last_video_dts + JUMP && self.last_video_dts > 0 {
                    // Out of order or a jump: a new stream, from a keyframe.
                    if !au.keyframe {
                        self.pending = Some(Pending { to: f, from: au.pts, asked: now });
                        return;
                    }
                }
                if let Ok(m) = au.data.map_readable() {
                    let at = Timing { pts: au.pts + d, dts: au.dts + d, keyframe: au.keyframe };
                    self.mux.write_au(Slot::Video, at, &m, now, out);
                }
                self.last_video_dts = au.dts;
                self.shown_until = self.shown_until.max(au.pts + self.on_frame_ns());
            }
        }
    }

    /// Whether `au`, the feed's next picture, is a leading picture of the
    /// keyframe a switch landed on (see [`Self::leading`]): left out.
    fn leaves_out(&mut self, au: &Au) -> bool {
        let Some((keyframe, n)) = self.leading else { return false };
        if au.pts < keyframe && !au.keyframe {
            self.leading = Some((keyframe, n + 1));
            return true;
        }
        if au.pts <= keyframe {
            // The keyframe itself.
            return false;
        }
        self.leading = None;
        if n > 0 {
            info!(
                pictures = n,
                "Leading pictures of the keyframe the switch landed on left out: they refer to pictures before it."
            );
        }
        false
    }

    /// The SCTE-35 cues of the feed on air, when their time in the stream
    /// comes, re-timed to the programme's clock (their `pts_adjustment`
    /// moved by as much as the feed's pictures were): each still names
    /// the picture it named in the contribution. A cue of a feed not on
    /// air is not passed: a partner's ad break follows what it sees.
    fn cues(&mut self, now: u64, due: u64, out: &mut Vec<u8>) {
        for i in 0..self.cues.len() {
            while self.cues[i].front().is_some_and(|c| c.at <= due) {
                let Some(cue) = self.cues[i].pop_front() else { break };
                let command = super::scte35::command_type(&cue.section).unwrap_or(0);
                if feed_of(i) != self.on {
                    if command != 0 {
                        info!(feed = feed_of(i).as_str(), command, "SCTE-35 cue of a feed not on air left out.");
                    }
                    continue;
                }
                let Some((at, raw)) = cue.map else {
                    warn!(command, "SCTE-35 cue before any picture of its feed: left out (its time cannot be mapped).");
                    continue;
                };
                let offset = super::mux::ticks_90k(at + self.delay).wrapping_sub(raw) & super::scte35::PTS_MASK;
                if let Some(section) = super::scte35::restamp(&cue.section, offset) {
                    if command != 0 {
                        info!(feed = feed_of(i).as_str(), command, "SCTE-35 cue relayed.");
                    }
                    self.mux.write_section(&section, now, out);
                }
            }
        }
    }

    /// The feed whose sound goes with the picture at `pts`.
    fn feed_at(&self, pts: u64) -> Feed {
        self.changes.iter().rev().find(|(t, _)| *t <= pts).map_or(Feed::Slate, |(_, f)| *f)
    }

    fn audio(&mut self, now: u64, due: u64, out: &mut Vec<u8>) {
        let d = self.delay;
        let tracks = self.mux.layout().audio.len();
        for t in 0..tracks {
            // (pts, data, span) of every access unit due now, from the
            // feed it goes with.
            let mut due_now: Vec<(u64, gstreamer::Buffer, u64)> = Vec::new();
            for i in 0..self.audio.len() {
                let feed = feed_of(i);
                let Some(q) = self.audio[i].get_mut(t) else { continue };
                let mut taken = Vec::new();
                while q.front().is_some_and(|a| a.dts <= due) {
                    taken.extend(q.pop_front());
                }
                if self.audio_span[i].len() <= t {
                    self.audio_span[i].resize(t + 1, (0, 0));
                }
                let aac = self.mux.layout().audio.get(t).is_some_and(|s| s.codec == super::es::AudioCodec::Aac);
                for a in taken {
                    let (prev, span) = self.audio_span[i][t];
                    // A plausible spacing (under 1 s) is this feed's span.
                    let span =
                        if prev > 0 && a.pts > prev && a.pts - prev < 1_000_000_000 { a.pts - prev } else { span };
                    self.audio_span[i][t] = (a.pts, span);
                    // AAC says how long it plays: its frames, counted.
                    let exact = if aac {
                        a.data.map_readable().ok().and_then(|m| super::es::adts_duration_ns(&m))
                    } else {
                        None
                    };
                    let span = exact.unwrap_or(span);
                    if self.feed_at(a.pts) == feed {
                        due_now.push((a.pts, a.data, span));
                    }
                }
            }
            // Slate frames: continuous on their own grid.
            if let Some(slate) = self.slate.clone()
                && let Some(lp) = slate.audio.get(t)
            {
                let (origin, _) = *self.slate_audio[t].get_or_insert((due, 0));
                while let Some((_, n)) = self.slate_audio[t] {
                    let at = origin + lp.frame_at(n);
                    if at > due {
                        break;
                    }
                    self.slate_audio[t] = Some((origin, n + 1));
                    if self.feed_at(at) == Feed::Slate {
                        let span = lp.frame_at(n + 1) - lp.frame_at(n);
                        due_now.push((at, lp.frames[(n % lp.frames.len() as u64) as usize].clone(), span));
                    }
                }
            }
            due_now.sort_by_key(|(pts, _, _)| *pts);
            for (pts, data, span) in due_now {
                // Sound starting inside the previous unit would take time
                // back for a decoder: a unit of another source that starts
                // well inside is left out; one starting a hair early (the
                // timestamp grid's steering, two grids meeting) is moved
                // to the end, by at most `AUDIO_NUDGE`.
                let end = self.audio_end[t];
                if pts < self.last_audio_pts[t] || pts + AUDIO_NUDGE < end {
                    continue;
                }
                let pts = pts.max(end);
                self.last_audio_pts[t] = pts;
                self.audio_end[t] = pts + span;
                if let Ok(m) = data.map_readable() {
                    let at = Timing { pts: pts + d, dts: pts + d, keyframe: true };
                    self.mux.write_au(Slot::Audio(t), at, &m, now, out);
                }
            }
        }
    }
}

fn feed_of(i: usize) -> Feed {
    if i == 0 { Feed::Primary } else { Feed::Backup }
}

fn index(f: Feed) -> usize {
    usize::from(f == Feed::Backup)
}

/// The video bit rate, kbps, of the access units `queued` (0 for fewer
/// than two, or under 100 ms of them).
fn queued_kbps(queued: &VecDeque<Au>) -> u32 {
    let (Some(first), Some(last)) = (queued.front(), queued.back()) else { return 0 };
    let span = last.dts.saturating_sub(first.dts);
    if span < 100_000_000 {
        return 0;
    }
    // The last unit's bytes are for the span after it: left out.
    let bytes: u64 = queued.iter().take(queued.len() - 1).map(|a| a.data.size() as u64).sum();
    kbps_of(bytes, span)
}

/// `bytes` over `ns` nanoseconds, in kbps.
fn kbps_of(bytes: u64, ns: u64) -> u32 {
    u32::try_from(bytes * 8_000_000 / ns.max(1)).unwrap_or(u32::MAX)
}

/// Whether `a` and `b` list the same codecs, languages and SCTE-35 (the PMT).
fn same_layout(a: &FeedFormat, b: &FeedFormat) -> bool {
    let l = |f: &FeedFormat| {
        let audio: Vec<_> = f.audio.iter().map(|a| (a.codec, a.language.clone())).collect();
        (f.video.as_ref().map(|v| v.codec), audio, f.scte35)
    };
    l(a) == l(b)
}

/// Whether a slate made for `a` also matches `b`: same codecs, picture,
/// rate, field order, and audio tracks (codec, language, rate, channels).
fn matches_format(a: &FeedFormat, b: &FeedFormat) -> bool {
    let v = |f: &FeedFormat| f.video.as_ref().map(|v| (v.codec, v.width, v.height, v.framerate, v.interlaced));
    let au = |f: &FeedFormat| -> Vec<_> {
        f.audio.iter().map(|a| (a.codec, a.language.clone(), a.rate, a.channels, a.layer)).collect()
    };
    v(a) == v(b) && au(a) == au(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn au(dts_ms: u64, bytes: usize) -> Au {
        gstreamer::init().expect("GStreamer");
        let dts = dts_ms * 1_000_000;
        Au { pts: dts, dts, keyframe: false, data: gstreamer::Buffer::from_mut_slice(vec![0u8; bytes]) }
    }

    #[test]
    fn a_feeds_queued_pictures_give_the_bridge_its_rate_before_one_is_measured() {
        // 50 pictures a second of 30 000 bytes: 12 000 kbps, over 0.6 s.
        let queued: VecDeque<Au> = (0..31).map(|i| au(i * 20, 30_000)).collect();
        assert_eq!(queued_kbps(&queued), 12_000);
        // Too little to tell.
        assert_eq!(queued_kbps(&queued.iter().take(3).cloned().collect()), 0);
        assert_eq!(queued_kbps(&VecDeque::new()), 0);
    }
}
