//! The relay: one program pipeline, its fan-out, and one supervised leg per
//! enabled channel. Start it with [`Relay::start`], read [`Relay::status`],
//! end it with [`Relay::shutdown`] (every pipeline goes to `Null`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tracing::info;

use std::time::Duration;

use crate::config::ProgramMode;
use crate::config::{Channel, Config, RelaySettings};
use crate::media::breaks::{Break, LegBreak};
use crate::media::coded::FeedFormat;
use crate::media::es::VideoCodec;
use crate::media::failover::{Feed, SourceChoice, SourceSwitch};
use crate::media::fanout::Fanout;
use crate::media::leg::{Leg, LegState, LegStatus};
use crate::media::passthrough::Passthrough;
use crate::media::program::{Content, Cue, Program, ProgramPlan};
use crate::media::recording::{DelayedFeed, Recorder, RecordingPlan, UtcClock};
use crate::media::source::SourceStatus;
use crate::media::thumbs::{Thumbnailer, Thumbnails};
use crate::media::{self, MediaError};

/// A delayed leg's pipeline starts this long before its first chunk is due,
/// so that it is connected when the chunk comes.
pub const DELAYED_LEAD: Duration = Duration::from_secs(3);
/// A delayed leg's copy starts this long before its air time, at the
/// recorded slate's first keyframe from there (the copy's first picture):
/// more than a GOP, so that the partner decodes slate before the
/// programme (a GOP of up to 2 s).
pub const DELAYED_SLATE: Duration = Duration::from_secs(2);

/// What a relay runs: the programme, the legs and their settings. Nothing
/// else of a config (event length, time zone, alerts) reaches the media.
#[derive(Debug, Clone)]
pub struct RelayPlan {
    /// The contribution(s), the failover, the slate and the programme format.
    pub program: ProgramPlan,
    /// One leg per channel, in this order (status lists them so).
    pub legs: Vec<Channel>,
    /// Buffers, timeouts, reconnects and stamps for every leg.
    pub settings: RelaySettings,
    /// Make the multiviewer's thumbnails (the programme, each feed, the
    /// slate): the daemon does, `simulcastd run` and the benchmarks do not.
    pub thumbnails: bool,
    /// Cluster mode: the send fence's generation the legs send in (a
    /// carrier's: the one its placement's lease was read in); `None`: the
    /// generation when the relay starts (see `crate::media::fence`).
    pub fence: Option<u64>,
}

impl RelayPlan {
    /// The plan of a config file: its enabled channels, in file order.
    pub fn from_config(config: &Config) -> Self {
        Self {
            program: ProgramPlan {
                source: config.source.clone(),
                backup: config.backup.clone(),
                failover: config.failover,
                format: config.program.clone(),
                slate: config.slate.clone(),
                title: config.event.title.clone(),
                batch_wait: config.relay.batch_wait,
                feed_thumbs: [None, None],
            },
            legs: crate::config::legs_of(config.enabled_channels()),
            settings: config.relay.clone(),
            thumbnails: false,
            fence: None,
        }
    }
}

/// How long shutdown waits for each relay thread that was told to end.
pub const THREAD_GRACE: Duration = Duration::from_secs(5);

/// Legs that air later than the live T0, from a recording of the program.
#[derive(Debug, Clone)]
pub struct DelayPlan {
    /// Where the program is recorded.
    pub recording: RecordingPlan,
    /// The live T0 (UTC): delayed legs air the programme from here.
    pub t0_utc: chrono::DateTime<chrono::Utc>,
    /// Each delayed channel's delay after T0.
    pub delays: Vec<(String, Duration)>,
}

/// A delayed leg waiting for its air time.
#[derive(Debug)]
struct Pending {
    channel: Channel,
    delay: Duration,
}

/// A snapshot of the whole relay.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayStatus {
    /// Seconds since start.
    pub uptime_s: f64,
    /// The primary contribution feed.
    pub source: SourceStatus,
    /// The backup feed, if one is configured.
    pub backup: Option<SourceStatus>,
    /// What the legs carry: the slate, the primary or the backup.
    pub source_in_use: Feed,
    /// Automatic failover, or a feed held by hand.
    pub source_choice: SourceChoice,
    /// The latest switch between feeds, and why.
    pub last_switch: Option<SourceSwitch>,
    /// Every leg, in config order.
    pub legs: Vec<LegStatus>,
    /// Buffers lost between the program and the fan-out thread (should be 0).
    pub fanout_overflow: u64,
    /// What the program pipeline's picture carries now.
    pub content: Content,
    /// UTC (ns) of the timestamp of the latest first programme picture.
    pub switched_utc_ns: Option<u64>,
    /// The mode and the programme's format.
    pub program: ProgramInfo,
}

impl RelayStatus {
    /// The leg of `channel_id`, if any.
    pub fn leg(&self, channel_id: &str) -> Option<&LegStatus> {
        self.legs.iter().find(|l| l.channel_id == channel_id)
    }
}

/// The program pipeline in either mode; both answer the same questions.
#[derive(Debug)]
enum Run {
    Transcode(Program),
    Passthrough(Passthrough),
}

/// Calls the same method on whichever program runs.
macro_rules! each {
    ($run:expr, $p:ident => $e:expr) => {
        match $run {
            Run::Transcode($p) => $e,
            Run::Passthrough($p) => $e,
        }
    };
}

impl Run {
    fn status(&self) -> SourceStatus {
        each!(self, p => p.status())
    }
    fn backup_status(&self) -> Option<SourceStatus> {
        each!(self, p => p.backup_status())
    }
    fn shown(&self) -> Feed {
        each!(self, p => p.shown())
    }
    fn source_choice(&self) -> SourceChoice {
        each!(self, p => p.source_choice())
    }
    fn set_source_choice(&self, choice: SourceChoice) {
        each!(self, p => p.set_source_choice(choice))
    }
    fn last_switch(&self) -> Option<SourceSwitch> {
        each!(self, p => p.last_switch())
    }
    fn take_switches(&self) -> Vec<SourceSwitch> {
        each!(self, p => p.take_switches())
    }
    fn content(&self) -> Content {
        each!(self, p => p.content())
    }
    fn switched_utc_ns(&self) -> Option<u64> {
        each!(self, p => p.switched_utc_ns())
    }
    fn set_cue(&self, cue: Cue) {
        each!(self, p => p.set_cue(cue))
    }
    fn cue(&self) -> Cue {
        each!(self, p => p.cue())
    }
    async fn join(&mut self) {
        each!(self, p => p.join().await)
    }
}

/// The programme as the legs carry it: the mode and, in passthrough, the
/// contribution's format.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProgramInfo {
    /// Passthrough or transcode.
    pub mode: ProgramMode,
    /// The format on air (in transcode: the `[program]` format, H.264 + AAC).
    pub format: FeedFormat,
    /// One line for tables.
    pub describe: String,
}

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    program: Run,
    format: crate::config::ProgramFormat,
    fanout: Arc<Fanout>,
    legs: Vec<Leg>,
    stop: watch::Sender<bool>,
    started: Instant,
    /// Channel ids in config order, for status.
    order: Vec<String>,
    settings: RelaySettings,
    delay: Option<DelayPlan>,
    utc: UtcClock,
    pending: Vec<Pending>,
    feeds: Vec<DelayedFeed>,
    /// The recording delayed legs air from, if any.
    recorder: Option<Arc<Recorder>>,
    /// Each channel's ad breaks (a delayed leg gets them when it starts).
    breaks: BTreeMap<String, Vec<Break>>,
    /// The multiviewer's thumbnails, if this relay makes them.
    thumbnails: Option<Arc<Thumbnails>>,
    /// The send fence's generation every leg sends in.
    fence: u64,
    /// The thumbnailers' supervisors, joined at shutdown.
    thumb_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// Starts the program pipeline and one leg per enabled channel. Fails
    /// only if the program itself cannot be built; a leg that cannot reach
    /// its ingest keeps trying without holding up the others.
    pub async fn start(plan: &RelayPlan) -> Result<Self, MediaError> {
        let always = Cue { program_from: Some(chrono::DateTime::UNIX_EPOCH), program_until: None, force_slate: false };
        Self::start_with(plan, always, None).await
    }

    /// As [`Relay::start`] (which airs the program at once), with the legs
    /// on slate until `cue` says program; channels listed in `delay` air
    /// later, each from the recording, its pipeline started when its air
    /// time comes near (see [`Relay::poll`]).
    pub async fn start_with(plan: &RelayPlan, cue: Cue, delay: Option<DelayPlan>) -> Result<Self, MediaError> {
        media::init()?;
        let utc = UtcClock::new(&media::clock());
        let (stop, stop_rx) = watch::channel(false);
        let fanout = Fanout::new();
        let fence = plan.fence.unwrap_or_else(media::fence::generation);
        let mut legs = Vec::new();
        let mut pending = Vec::new();
        let delayed = |id: &str| delay.as_ref().and_then(|d| d.delays.iter().find(|(c, _)| c == id).map(|(_, d)| *d));
        for channel in &plan.legs {
            if let Some(d) = delayed(channel.id.as_str()).filter(|d| !d.is_zero()) {
                pending.push(Pending { channel: channel.clone(), delay: d });
                continue;
            }
            let leg = Leg::start(channel, &plan.settings, stop_rx.clone());
            leg.input().fence_in(fence);
            fanout.add(Arc::clone(leg.input()));
            legs.push(leg);
        }
        let mut recorder = None;
        if let Some(d) = delay.as_ref().filter(|_| !pending.is_empty()) {
            let r = Recorder::start(d.recording.clone(), utc).map_err(|e| {
                MediaError::Pipeline(format!("cannot record the program to {}: {e}", d.recording.dir.display()))
            })?;
            fanout.add_tap(Arc::clone(&r) as Arc<dyn crate::media::fanout::Tap>);
            recorder = Some(r);
        }
        let mut p = plan.program.clone();
        let mut thumb_tasks = Vec::new();
        let thumbnails = if plan.thumbnails {
            // The relay runs without them rather than not at all.
            match start_thumbnails(&mut p, &fanout, &stop_rx, &mut thumb_tasks) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "No thumbnails for the multiviewer; the relay runs without.");
                    None
                }
            }
        } else {
            None
        };
        let p = &p;
        let started = match p.format.mode {
            ProgramMode::Transcode => Program::start(p, cue, utc, Arc::clone(&fanout), stop_rx).map(Run::Transcode),
            ProgramMode::Passthrough => {
                Passthrough::start(p, cue, utc, Arc::clone(&fanout), stop_rx).map(Run::Passthrough)
            }
        };
        let program = match started {
            Ok(p) => p,
            Err(e) => {
                let _ = stop.send(true);
                for leg in &mut legs {
                    leg.join().await;
                }
                return Err(e);
            }
        };
        info!(
            legs = legs.len(),
            delayed = pending.len(),
            source = %p.source.describe(),
            mode = p.format.mode.as_str(),
            "Relay started."
        );
        Ok(Self {
            program,
            format: p.format.clone(),
            fanout,
            legs,
            stop,
            started: Instant::now(),
            order: plan.legs.iter().map(|c| c.id.to_string()).collect(),
            settings: plan.settings.clone(),
            delay,
            utc,
            pending,
            feeds: Vec::new(),
            recorder,
            breaks: BTreeMap::new(),
            thumbnails,
            fence,
            thumb_tasks,
        })
    }

    /// The multiviewer's thumbnails, if this relay makes them.
    pub fn thumbnails(&self) -> Option<Arc<Thumbnails>> {
        self.thumbnails.clone()
    }

    /// Starts the delayed legs whose air time is near. Call it often (the
    /// coordinator does, every tick); returns the ids started.
    pub fn poll(&mut self) -> Vec<String> {
        let Some(plan) = &self.delay else { return vec![] };
        let now = self.utc.now();
        let t0 = plan.t0_utc.timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
        let mut started = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            let start_at = (t0 + p.delay.as_nanos() as u64).saturating_sub(DELAYED_LEAD.as_nanos() as u64);
            if now < start_at {
                i += 1;
                continue;
            }
            let p = self.pending.remove(i);
            let leg = Leg::start(&p.channel, &self.settings, self.stop.subscribe());
            leg.input().fence_in(self.fence);
            let fanout = Arc::clone(&self.fanout);
            let starts = Arc::new(move || fanout.program_starts());
            // From just before T0: the leg carries a moment of slate first.
            let from = t0.saturating_sub(DELAYED_SLATE.as_nanos() as u64);
            match DelayedFeed::start(
                plan.recording.dir.clone(),
                from,
                p.delay,
                Arc::clone(leg.input()),
                self.utc,
                starts,
            ) {
                Ok(feed) => self.feeds.push(feed),
                Err(e) => tracing::error!(leg = %p.channel.id, error = %e, "Cannot start the delayed feed."),
            }
            self.give_breaks(&leg);
            info!(leg = %p.channel.id, delay_s = p.delay.as_secs_f64(), "Delayed leg started.");
            started.push(p.channel.id.to_string());
            self.legs.push(leg);
        }
        started
    }

    /// Starts a live leg for `channel` on the running programme (cluster
    /// mode: a leg moved here from a node that died). Its first batch is
    /// the fan-out's next; a passthrough leg starts at the next keyframe
    /// the splicer hands over with its tables. A channel already carried
    /// is left as it is (returns `false`).
    pub fn add_leg(&mut self, channel: &Channel) -> bool {
        if self.legs.iter().any(|l| l.id() == &channel.id) || self.pending.iter().any(|p| p.channel.id == channel.id) {
            return false;
        }
        let leg = Leg::start(channel, &self.settings, self.stop.subscribe());
        leg.input().fence_in(self.fence);
        if self.program.content() == Content::Program {
            // Joining the programme under way: its first batch is the
            // leg's programme start (the status and the as-run log say
            // when it went out).
            leg.input().mark_program(0);
        }
        self.fanout.add(Arc::clone(leg.input()));
        self.give_breaks(&leg);
        if !self.order.iter().any(|id| *id == channel.id.as_str()) {
            self.order.push(channel.id.to_string());
        }
        info!(leg = %channel.id, "Leg added to the running relay.");
        self.legs.push(leg);
        true
    }

    /// The channels whose legs run (or wait for their air time) here.
    pub fn carries(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.legs.iter().map(|l| l.id().to_string()).collect();
        ids.extend(self.pending.iter().map(|p| p.channel.id.to_string()));
        ids
    }

    /// `channel_id`'s ad breaks from now on (see [`crate::media::breaks`]).
    /// A delayed leg has each its delay later; a leg not started yet gets
    /// them when it starts. MPEG-TS legs carry SCTE-35, RTMP legs AMF
    /// `onCuePoint` messages.
    pub fn set_breaks(&mut self, channel_id: &str, breaks: Vec<Break>) {
        self.breaks.insert(channel_id.to_owned(), breaks);
        if let Some(leg) = self.legs.iter().find(|l| l.id().as_str() == channel_id) {
            self.give_breaks(leg);
        }
    }

    fn give_breaks(&self, leg: &Leg) {
        let Some(breaks) = self.breaks.get(leg.id().as_str()) else { return };
        let delay = self.delay_of(leg.id().as_str()).as_nanos() as u64;
        let on_leg: Vec<LegBreak> = breaks
            .iter()
            .map(|b| LegBreak {
                splice_event_id: b.splice_event_id,
                start_ns: self.utc.clock_of(b.start_utc_ns + delay),
                duration: b.duration,
            })
            .collect();
        leg.input().set_breaks(&on_leg);
    }

    /// A channel's delay (zero for a live leg).
    fn delay_of(&self, id: &str) -> Duration {
        let d = self.delay.as_ref().and_then(|p| p.delays.iter().find(|(c, _)| c == id).map(|(_, d)| *d));
        d.unwrap_or_default()
    }

    /// A snapshot of the feed and every leg.
    pub fn status(&self) -> RelayStatus {
        RelayStatus {
            uptime_s: self.started.elapsed().as_secs_f64(),
            source: self.program.status(),
            backup: self.program.backup_status(),
            source_in_use: self.program.shown(),
            source_choice: self.program.source_choice(),
            last_switch: self.program.last_switch(),
            legs: self.leg_statuses(),
            fanout_overflow: self.fanout.counters().overflow_buffers.load(std::sync::atomic::Ordering::Relaxed),
            content: self.program.content(),
            switched_utc_ns: self.program.switched_utc_ns(),
            program: self.program_info(),
        }
    }

    /// The mode and the programme's format as the legs carry it.
    pub fn program_info(&self) -> ProgramInfo {
        let format = match &self.program {
            Run::Passthrough(p) => p.format(),
            Run::Transcode(_) => transcode_format(&self.format),
        };
        ProgramInfo { mode: self.format.mode, describe: format.describe(), format }
    }

    /// Replaces the cue (what the legs carry when); the switch happens on
    /// the first output frame the new cue changes.
    pub fn set_cue(&self, cue: Cue) {
        self.program.set_cue(cue);
    }

    /// The cue in force.
    pub fn cue(&self) -> Cue {
        self.program.cue()
    }

    /// Automatic failover, or a feed held by hand (see
    /// [`crate::media::failover`]); takes effect on the next picture.
    pub fn set_source_choice(&self, choice: SourceChoice) {
        self.program.set_source_choice(choice);
    }

    /// The switches between feeds since the last call, oldest first, for
    /// the as-run log.
    pub fn take_source_switches(&self) -> Vec<SourceSwitch> {
        self.program.take_switches()
    }

    /// Programme batches the recording of delayed legs lost (0 without one).
    pub fn recording_lost(&self) -> u64 {
        self.recorder.as_ref().map_or(0, |r| r.lost.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Live readers of every running leg's counters, by channel id.
    pub fn meters(&self) -> Vec<(String, crate::media::leg::LegMeter)> {
        self.legs.iter().map(|l| (l.id().to_string(), l.meter())).collect()
    }

    fn leg_statuses(&self) -> Vec<LegStatus> {
        let cue = self.program.cue();
        let now = self.utc.now();
        let delay_of = |id: &str| self.delay_of(id).as_nanos() as u64;
        // A contribution that arrives in another codec than planned: RTMP
        // legs say why they carry nothing rather than fail quietly.
        let refused = match &self.program {
            Run::Passthrough(p) => p.format().video.map(|v| v.codec).filter(|c| *c != VideoCodec::H264),
            Run::Transcode(_) => None,
        };
        let mut all: Vec<LegStatus> = self
            .legs
            .iter()
            .map(|leg| {
                let mut status = leg.status();
                if let Some(codec) = refused
                    && status.protocol.starts_with("rtmp")
                {
                    status.last_error = Some(crate::config::rtmp_refusal(&status.channel_id, codec));
                }
                let since = leg.input().program_out_ns().map(|c| self.utc.utc_of(c));
                let on = since.is_some()
                    && cue.content_at(now.saturating_sub(delay_of(&status.channel_id))) == Content::Program;
                LegStatus {
                    program_since_utc_ns: since,
                    carries: if on { Content::Program } else { Content::Slate },
                    ..status
                }
            })
            .collect();
        all.extend(self.pending.iter().map(|p| LegStatus::not_started(&p.channel, LegState::Idle)));
        all.sort_by_key(|l| self.order.iter().position(|id| *id == l.channel_id));
        all
    }

    /// Stops every pipeline and waits for them; returns the final status.
    /// Every thread of the relay is joined: the program's supervisor and
    /// splicer, each leg's, the delayed feeds', then the fan-out thread
    /// (it ends with the program) and the recorder's (it ends once the
    /// fan-out lets go of it), each given [`THREAD_GRACE`].
    pub async fn shutdown(mut self) -> RelayStatus {
        self.feeds.clear();
        let _ = self.stop.send(true);
        self.program.join().await;
        for leg in &mut self.legs {
            leg.join().await;
        }
        self.fanout.join(THREAD_GRACE).await;
        for task in self.thumb_tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(recorder) = self.recorder.take() {
            let thread = recorder.take_thread();
            drop(recorder);
            if let Some(t) = thread {
                t.join(THREAD_GRACE).await;
            }
        }
        info!("Relay stopped.");
        self.status()
    }
}

/// Starts the programme's thumbnailer (a fan-out tap), the primary's and
/// the backup's (given to their feeds through `p`), and draws the slate's.
fn start_thumbnails(
    p: &mut ProgramPlan,
    fanout: &Arc<Fanout>,
    stop: &watch::Receiver<bool>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Arc<Thumbnails>, MediaError> {
    let thumbs = Thumbnails::new();
    let (program, task) = Thumbnailer::start("program", Arc::clone(&thumbs), stop.clone())?;
    tasks.push(task);
    fanout.add_tap(program as Arc<dyn crate::media::fanout::Tap>);
    let feeds = [("primary", true), ("backup", p.backup.is_some())];
    for (i, (name, wanted)) in feeds.into_iter().enumerate() {
        if wanted {
            let (t, task) = Thumbnailer::start(name, Arc::clone(&thumbs), stop.clone())?;
            tasks.push(task);
            p.feed_thumbs[i] = Some(t);
        }
    }
    let look = media::slate::SlateLook { settings: p.slate.clone(), title: p.title.clone(), gop: 1, video_kbps: 0 };
    let slate = Arc::clone(&thumbs);
    tasks.push(tokio::task::spawn_blocking(move || {
        match media::slate::still(&look, (media::thumbs::WIDTH, media::thumbs::HEIGHT)) {
            Ok((jpeg, luma)) => slate.put("slate", jpeg, luma),
            Err(e) => tracing::warn!(error = %e, "Cannot draw the slate's thumbnail."),
        }
    }));
    Ok(thumbs)
}

/// What transcode mode sends: the [program] format, H.264 and one AAC track.
fn transcode_format(f: &crate::config::ProgramFormat) -> FeedFormat {
    FeedFormat::planned(f, crate::media::es::VideoCodec::H264, Some("constrained-baseline"))
}
