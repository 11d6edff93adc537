//! The coordinator: the one owner of mutable state. API services send it
//! commands over a channel and await the answer; it applies the rules, writes
//! the store and the as-run log, runs the clock (arm at T0 - preroll, air at
//! T0, post-roll at the end), starts and stops the relay of the event that
//! runs, and publishes snapshots for watchers. Nothing else changes state.

mod alerting;
pub mod asrun;
mod rehearsals;
mod status;

pub use rehearsals::NewRecurring;
pub use status::{LegChange, LegObserver, LegView, Live, Snapshot};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::alerts::Cause;
use crate::config::{self, Channel, ChannelId, FieldError, Ingest, RelaySettings, Source};
use crate::media::failover::{Feed, SourceChoice};
use crate::media::leg::LegState;
use crate::media::program::{Cue, ProgramPlan};
use crate::media::recording::RecordingPlan;
use crate::media::thumbs::Thumb;
use crate::rehearsal::recurring::Recurring;
use crate::rehearsal::{Plan, Report};
use crate::relay::{DelayPlan, Relay, RelayPlan};
use crate::schedule::breaks::{AdBreak, NewBreak};
use crate::schedule::{self, Action, Clock, Event, EventId, EventState};
use crate::store::{AsRunEntry, Store, StoreError};
use alerting::cause_of;

use asrun::{Actor, Kind, entry, utc_text};

/// As-run entries about the daemon and its channels, not one event, use this
/// event id.
pub const SYSTEM_EVENT: &str = "-";
/// How often the coordinator looks at the clock and the legs.
pub const DEFAULT_TICK: Duration = Duration::from_millis(250);
/// How often it publishes a snapshot when nothing changed.
pub const DEFAULT_STATUS_EVERY: Duration = Duration::from_millis(500);

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The request's values are wrong; each names its field.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// It exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// Not allowed in the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not built yet.
    #[error("{0}")]
    Unimplemented(String),
    /// The relay could not start.
    #[error("{0}")]
    Relay(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The coordinator is gone (shutting down).
    #[error("the coordinator has stopped")]
    Stopped,
}

fn invalid(key: &str, message: impl Into<String>) -> CoordError {
    CoordError::Invalid(vec![FieldError { key: key.into(), message: message.into() }])
}

/// What the relay of an event is built from, besides its channels.
#[derive(Debug, Clone)]
pub struct Options {
    /// The contribution feed.
    pub source: Source,
    /// The backup contribution, if any.
    pub backup: Option<Source>,
    /// When the program fails over and comes back.
    pub failover: config::FailoverSettings,
    /// What every leg carries.
    pub program: config::ProgramFormat,
    /// The slate.
    pub slate: config::SlateSettings,
    /// Relay tuning.
    pub relay: RelaySettings,
    /// Clock and leg look interval ([`DEFAULT_TICK`]).
    pub tick: Duration,
    /// Snapshot interval when nothing changes ([`DEFAULT_STATUS_EVERY`]).
    pub status_every: Duration,
    /// Why the media side cannot work at all (GStreamer or a template
    /// missing), found at start; the daemon then reports NOT_SERVING.
    pub media_problem: Option<String>,
    /// Where "now" comes from ([`Clock::System`]).
    pub clock: Clock,
    /// `false`: events go through their life without pipelines (scheduler
    /// tests on paused time, where GStreamer's own clock does not pause).
    pub relay_enabled: bool,
    /// Where events with delayed legs record the program (one directory
    /// per event, removed when the event is over).
    pub recordings: PathBuf,
    /// How long a recording is kept: the longest delay a leg may have
    /// ([`DEFAULT_RETENTION`]).
    pub retention: Duration,
    /// The most disk one event's recording may use ([`DEFAULT_RECORDING_MAX_BYTES`]).
    pub recording_max_bytes: u64,
    /// The directory file legs write in (absolute); a channel's file path
    /// is taken inside it, and refused outside it.
    pub file_legs: PathBuf,
    /// Where alerts go, and how urgent trouble is by air time.
    pub alerts: config::AlertSettings,
}

/// Default longest delay of a leg airing at its own local time.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(6 * 3600);
/// Default disk bound of one event's recording: 6 h at about 7 Mbit/s.
pub const DEFAULT_RECORDING_MAX_BYTES: u64 = 20 << 30;

impl Options {
    /// The embedded default's source and relay settings.
    pub fn from_config(config: &config::Config) -> Self {
        Self {
            source: config.source.clone(),
            backup: config.backup.clone(),
            failover: config.failover,
            program: config.program.clone(),
            slate: config.slate.clone(),
            relay: config.relay.clone(),
            tick: DEFAULT_TICK,
            status_every: DEFAULT_STATUS_EVERY,
            media_problem: None,
            clock: Clock::System,
            relay_enabled: true,
            recordings: std::env::temp_dir().join("simulcast-recordings"),
            retention: DEFAULT_RETENTION,
            recording_max_bytes: DEFAULT_RECORDING_MAX_BYTES,
            file_legs: std::env::temp_dir().join("simulcast-file-legs"),
            alerts: config.alerts.clone(),
        }
    }

    /// Why this daemon cannot air `channel`: an RTMP leg the programme
    /// cannot feed, a file leg outside the file-leg directory.
    pub fn refuses(&self, channel: &Channel) -> Option<String> {
        self.program.refuses(channel).or_else(|| self.file_leg_refused(channel))
    }

    /// Why `channel`'s file leg may not write where it says, if it is one
    /// that may not.
    pub fn file_leg_refused(&self, channel: &Channel) -> Option<String> {
        match &channel.ingest {
            Ingest::File(p) => {
                config::confine_file_leg(p, &self.file_legs).err().map(|why| format!("channel `{}`: {why}", channel.id))
            }
            _ => None,
        }
    }
}

pub use crate::schedule::request::NewEvent;

type Reply<T> = oneshot::Sender<Result<T, CoordError>>;

enum Command {
    CreateChannel { channel: Channel, actor: Actor, reply: Reply<Channel> },
    GetChannel { id: ChannelId, reply: Reply<Channel> },
    ListChannels { reply: Reply<Vec<Channel>> },
    UpdateChannel { channel: Channel, actor: Actor, reply: Reply<Channel> },
    DeleteChannel { id: ChannelId, actor: Actor, reply: Reply<()> },
    Schedule { new: NewEvent, actor: Actor, reply: Reply<Event> },
    GetEvent { id: EventId, reply: Reply<Event> },
    ListEvents { reply: Reply<Vec<Event>> },
    Act { id: EventId, action: Action, by: Option<chrono::Duration>, actor: Actor, reply: Reply<Event> },
    SwitchSource { id: EventId, choice: SourceChoice, actor: Actor, reply: Reply<Event> },
    AsRun { event_id: String, reply: Reply<Vec<AsRunEntry>> },
    AsRunPictures { event_id: String, reply: Reply<Vec<AsRunPicture>> },
    AsRunPictureBytes { id: i64, reply: Reply<(String, String, Vec<u8>)> },
    AirTimes { id: EventId, reply: Reply<Vec<schedule::AirTime>> },
    StartRehearsal { id: EventId, plan: Plan, actor: Actor, reply: Reply<Report> },
    GetRehearsal { id: String, reply: Reply<Report> },
    ListRehearsals { event_id: Option<String>, reply: Reply<Vec<Report>> },
    ScheduleRehearsal { new: NewRecurring, actor: Actor, reply: Reply<Recurring> },
    ListSchedules { event_id: Option<String>, reply: Reply<Vec<Recurring>> },
    DeleteSchedule { id: String, actor: Actor, reply: Reply<()> },
    ScheduleBreak { new: NewBreak, actor: Actor, reply: Reply<Vec<AdBreak>> },
    ListBreaks { event_id: Option<EventId>, reply: Reply<Vec<AdBreak>> },
    CancelBreak { id: String, actor: Actor, reply: Reply<AdBreak> },
    ListAlerts { limit: usize, reply: Reply<Vec<crate::store::StoredAlert>> },
    TestAlert { actor: Actor, reply: Reply<crate::alerts::Alert> },
    Shutdown { reply: oneshot::Sender<()> },
}

/// A handle on the coordinator; cheap to clone.
#[derive(Debug, Clone)]
pub struct Coordinator {
    tx: mpsc::Sender<Command>,
    status: watch::Receiver<Arc<Snapshot>>,
}

impl Coordinator {
    /// Starts the coordinator task over `store`. An event the store holds in
    /// a live state (the daemon was killed mid-event) is resumed: moved to
    /// where the clock says it should be, its legs rebuilt, and the restart
    /// written to its as-run log.
    /// Alerts are delivered by a task it starts, and stops with it.
    pub fn start(store: impl Into<Arc<Store>>, options: Options) -> (Self, tokio::task::JoinHandle<()>) {
        let store = store.into();
        let (tx, rx) = mpsc::channel(256);
        let (status_tx, status) = watch::channel(Arc::new(Snapshot::initial()));
        let alerting = alerting::Alerting::start(&store, &options.alerts);
        let state = State {
            store,
            alerting,
            options,
            events: BTreeMap::new(),
            events_arc: Arc::default(),
            running: None,
            status: status_tx,
            seq: 0,
            arm_failure: None,
            rehearsal: None,
            verdicts: Arc::default(),
            schedules: Vec::new(),
            breaks: Arc::default(),
            unreadable: BTreeMap::new(),
            stopping: None,
            stopped: Arc::default(),
        };
        let task = tokio::spawn(state.run(rx));
        (Self { tx, status }, task)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, CoordError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| CoordError::Stopped)?;
        rx.await.map_err(|_| CoordError::Stopped)?
    }

    /// Watch the published snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.status.clone()
    }

    /// Adds a channel.
    pub async fn create_channel(&self, channel: Channel, actor: &str) -> Result<Channel, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::CreateChannel { channel, actor, reply }).await
    }

    /// One channel.
    pub async fn channel(&self, id: ChannelId) -> Result<Channel, CoordError> {
        self.ask(|reply| Command::GetChannel { id, reply }).await
    }

    /// Every channel.
    pub async fn channels(&self) -> Result<Vec<Channel>, CoordError> {
        self.ask(|reply| Command::ListChannels { reply }).await
    }

    /// Replaces a channel. A secret left empty keeps the stored one: secrets
    /// are write-only, so a client cannot send back what it never saw.
    pub async fn update_channel(&self, channel: Channel, actor: &str) -> Result<Channel, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::UpdateChannel { channel, actor, reply }).await
    }

    /// Deletes a channel.
    pub async fn delete_channel(&self, id: ChannelId, actor: &str) -> Result<(), CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::DeleteChannel { id, actor, reply }).await
    }

    /// Schedules an event.
    pub async fn schedule(&self, new: NewEvent, actor: &str) -> Result<Event, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::Schedule { new, actor, reply }).await
    }

    /// One event.
    pub async fn event(&self, id: EventId) -> Result<Event, CoordError> {
        self.ask(|reply| Command::GetEvent { id, reply }).await
    }

    /// Every event, by T0.
    pub async fn events(&self) -> Result<Vec<Event>, CoordError> {
        self.ask(|reply| Command::ListEvents { reply }).await
    }

    /// Master control: `action` on event `id` (`by` for Extend).
    pub async fn act(
        &self,
        id: EventId,
        action: Action,
        by: Option<chrono::Duration>,
        actor: &str,
    ) -> Result<Event, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::Act { id, action, by, actor, reply }).await
    }

    /// Chooses the program's source by hand (or back to automatic).
    pub async fn switch_source(&self, id: EventId, choice: SourceChoice, actor: &str) -> Result<Event, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::SwitchSource { id, choice, actor, reply }).await
    }

    /// The pictures kept with an event's as-run entries (the visual
    /// as-run): which entry each belongs to.
    pub async fn asrun_pictures(&self, event_id: &str) -> Result<Vec<AsRunPicture>, CoordError> {
        let event_id = event_id.to_owned();
        self.ask(|reply| Command::AsRunPictures { event_id, reply }).await
    }

    /// As-run picture `id`: (its event, when it was taken, the JPEG).
    pub async fn asrun_picture(&self, id: i64) -> Result<(String, String, Vec<u8>), CoordError> {
        self.ask(|reply| Command::AsRunPictureBytes { id, reply }).await
    }

    /// The as-run log of an event ([`SYSTEM_EVENT`] for channel changes).
    pub async fn asrun(&self, event_id: &str) -> Result<Vec<AsRunEntry>, CoordError> {
        let event_id = event_id.to_owned();
        self.ask(|reply| Command::AsRun { event_id, reply }).await
    }

    /// Each leg's air time in its own zone.
    pub async fn air_times(&self, id: EventId) -> Result<Vec<schedule::AirTime>, CoordError> {
        self.ask(|reply| Command::AirTimes { id, reply }).await
    }

    /// Stops the relay (every pipeline to `Null`) and the coordinator. Events
    /// keep their state in the store: a daemon started again resumes them.
    /// Starts a rehearsal of an event now (see [`crate::rehearsal`]).
    pub async fn start_rehearsal(&self, id: EventId, plan: Plan, actor: &str) -> Result<Report, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::StartRehearsal { id, plan, actor, reply }).await
    }

    /// One rehearsal's report, current while it runs.
    pub async fn rehearsal(&self, id: String) -> Result<Report, CoordError> {
        self.ask(|reply| Command::GetRehearsal { id, reply }).await
    }

    /// Rehearsal reports of one event (or all), oldest first.
    pub async fn rehearsals(&self, event_id: Option<String>) -> Result<Vec<Report>, CoordError> {
        self.ask(|reply| Command::ListRehearsals { event_id, reply }).await
    }

    /// Sets a recurring rehearsal.
    pub async fn schedule_rehearsal(&self, new: NewRecurring, actor: &str) -> Result<Recurring, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::ScheduleRehearsal { new, actor, reply }).await
    }

    /// Recurring rehearsals of one event (or all).
    pub async fn rehearsal_schedules(&self, event_id: Option<String>) -> Result<Vec<Recurring>, CoordError> {
        self.ask(|reply| Command::ListSchedules { event_id, reply }).await
    }

    /// Schedules an ad break (one per distinct start: a local time without
    /// a zone gives each channel its own).
    pub async fn schedule_break(&self, new: NewBreak, actor: &str) -> Result<Vec<AdBreak>, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::ScheduleBreak { new, actor, reply }).await
    }

    /// The breaks of one event (or all), by start.
    pub async fn breaks(&self, event_id: Option<EventId>) -> Result<Vec<AdBreak>, CoordError> {
        self.ask(|reply| Command::ListBreaks { event_id, reply }).await
    }

    /// Cancels a break whose cue has not gone out yet.
    pub async fn cancel_break(&self, id: String, actor: &str) -> Result<AdBreak, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::CancelBreak { id, actor, reply }).await
    }

    /// The latest `limit` alerts, newest first, with their deliveries.
    pub async fn alerts(&self, limit: usize) -> Result<Vec<crate::store::StoredAlert>, CoordError> {
        self.ask(|reply| Command::ListAlerts { limit, reply }).await
    }

    /// Queues a test alert to every webhook.
    pub async fn test_alert(&self, actor: &str) -> Result<crate::alerts::Alert, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::TestAlert { actor, reply }).await
    }

    /// Deletes a recurring rehearsal.
    pub async fn delete_rehearsal_schedule(&self, id: String, actor: &str) -> Result<(), CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::DeleteSchedule { id, actor, reply }).await
    }

    /// Stops the coordinator: the rehearsal, the relay (legs closed, as-run
    /// written) and the alert deliverer; returns once it is done.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A picture kept with an as-run entry: the programme as partners got it
/// at the entry's instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsRunPicture {
    /// Its id (`GetAsRunPicture`, `/api/web/picture/{id}`).
    pub id: i64,
    /// Its entry's kind, leg and UTC time.
    pub kind: String,
    /// Its entry's leg (empty for event-wide entries).
    pub channel_id: String,
    /// Its entry's UTC time, as the entry has it.
    pub utc: String,
}

impl AsRunPicture {
    /// The picture of `e` among `pictures`, if one was kept.
    pub fn of(e: &AsRunEntry, pictures: &[AsRunPicture]) -> Option<i64> {
        pictures.iter().find(|p| p.kind == e.kind && p.channel_id == e.channel_id && p.utc == e.utc).map(|p| p.id)
    }
}

/// How long an as-run entry waits for its picture (the programme's next
/// keyframe, decoded by its thumbnailer).
const PICTURE_WAIT: Duration = Duration::from_secs(10);

/// An as-run entry waiting for the picture partners got at its instant.
struct WaitingPicture {
    entry: AsRunEntry,
    /// When it went out.
    at: DateTime<Utc>,
    /// The leg's delay: a delayed leg airs the recording, so its picture
    /// is the live programme's `delay` earlier.
    delay: Duration,
}

/// The event whose relay runs.
struct Running {
    event_id: EventId,
    /// `None` when the options say events run without pipelines.
    relay: Option<Relay>,
    zones: Vec<(String, Tz)>,
    /// Each leg's channel name and country, for watchers.
    labels: BTreeMap<String, (String, String)>,
    /// As-run entries waiting for their picture.
    pictures: Vec<WaitingPicture>,
    /// The programme's first picture from its start (T0): what each
    /// delayed leg airs first, its delay later, long after the
    /// thumbnailer's short history has moved on.
    live_start: Option<Thumb>,
    observer: LegObserver,
    choice: SourceChoice,
    /// Each delayed leg's delay.
    delays: Vec<(String, Duration)>,
    /// The program start last logged per leg (UTC ns).
    program_logged: BTreeMap<String, u64>,
    /// Each leg's first programme picture minus its air time, in seconds:
    /// its T0 error, measured once.
    t0_errors: BTreeMap<String, f64>,
    /// Legs whose first programme picture is in the as-run log (this run
    /// or before a restart): a later return to programme is logged as
    /// `leg-program-resumed`, and leaves the T0 error alone.
    program_first_logged: std::collections::BTreeSet<String>,
    /// When its legs were started (this run): the not-on-air check gives
    /// them [`NOT_ON_AIR_GRACE`] to connect.
    armed_at: DateTime<Utc>,
    /// Legs whose `leg-not-on-air` was raised.
    not_on_air_raised: std::collections::BTreeSet<String>,
    /// Legs off air whose trouble was raised (cleared when back on air).
    off_air_raised: std::collections::BTreeSet<String>,
    /// Break starts and ends in the as-run log: (break id, channel, end).
    breaks_logged: std::collections::BTreeSet<(String, String, bool)>,
    /// Recording batches lost, as last said in the as-run log, and when.
    recording_lost_said: u64,
    recording_lost_at: Option<DateTime<Utc>>,
}

/// How long legs have after they start before one not on air near its air
/// time raises `leg-not-on-air` (connecting takes a moment).
pub const NOT_ON_AIR_GRACE: Duration = Duration::from_secs(10);

struct State {
    store: Arc<Store>,
    alerting: alerting::Alerting,
    options: Options,
    events: BTreeMap<String, Event>,
    events_arc: Arc<Vec<Event>>,
    running: Option<Running>,
    status: watch::Sender<Arc<Snapshot>>,
    seq: u64,
    /// The last reason the clock could not arm an event, logged once.
    arm_failure: Option<String>,
    /// The rehearsal that runs, if one does.
    rehearsal: Option<rehearsals::Active>,
    /// The latest finished rehearsal of each event.
    verdicts: Arc<Vec<Report>>,
    /// Recurring rehearsals.
    schedules: Vec<Recurring>,
    /// Ad breaks, by start (shared with the snapshots until one changes).
    breaks: Arc<Vec<AdBreak>>,
    /// Stored events that could not be read at start, by id, with why
    /// (left in the store, out of the schedule; their as-run log reads).
    unreadable: BTreeMap<String, String>,
    /// The relay being stopped, if one is, and the signal that it has.
    stopping: Option<Stopping>,
    stopped: Arc<tokio::sync::Notify>,
}

impl State {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        if let Err(e) = self.resume().await {
            error!(error = %e, "Cannot read events from the store; the schedule is empty until it can.");
        }
        self.publish();
        let mut tick = tokio::time::interval(self.options.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_publish = tokio::time::Instant::now();
        let stopped = Arc::clone(&self.stopped);
        loop {
            tokio::select! {
                _ = stopped.notified() => {
                    self.finish_stop().await;
                    self.publish();
                    last_publish = tokio::time::Instant::now();
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.stop_rehearsal("the daemon stopped").await;
                        self.stop_relay(Kind::DaemonStopped, "simulcastd stopped; legs closed").await;
                        self.alerting.stop().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) => self.handle(cmd).await,
                    None => {
                        self.stop_rehearsal("the daemon stopped").await;
                        self.stop_relay(Kind::DaemonStopped, "simulcastd stopped; legs closed").await;
                        self.alerting.stop().await;
                        break;
                    }
                },
                _ = tick.tick() => {
                    let changed = self.on_tick().await;
                    // Due on the tick nearest `status_every`: the last
                    // publish came a moment after its tick, so "at least
                    // 500 ms" would miss the 500 ms tick and wait for the
                    // next one (watchers saw 750 ms gaps).
                    let due = self.options.status_every.saturating_sub(self.options.tick / 2);
                    if changed || last_publish.elapsed() >= due {
                        self.publish();
                        last_publish = tokio::time::Instant::now();
                    }
                }
            }
        }
    }

    /// Loads events; an event found live means the daemon died mid-event.
    async fn resume(&mut self) -> Result<(), CoordError> {
        let (events, unreadable) = self.store.events()?;
        for e in events {
            self.events.insert(e.id.0.clone(), e);
        }
        for bad in unreadable {
            error!(error = %bad, "A stored event cannot be read: it is left out of the schedule (and left in the store); every other event is loaded.");
            if let StoreError::Corrupt { id, reason } = &bad {
                self.log(id, Kind::EventUnreadable, format!("{reason}; left out of the schedule"), &Actor::Daemon)?;
                self.unreadable.insert(id.clone(), reason.clone());
            }
        }
        self.schedules = self.store.schedules()?;
        self.breaks = Arc::new(self.store.breaks()?);
        // A rehearsal the store holds unfinished died with the daemon.
        for mut r in self.store.rehearsals(None)?.into_iter().filter(|r| r.phase != crate::rehearsal::Phase::Finished) {
            crate::rehearsal::conclude(&mut r, Some("the daemon stopped during it"), self.options.clock.now());
            self.store.save_rehearsal(&r)?;
            let detail = format!("{}: {}", r.id, r.summary);
            let e =
                entry(self.options.clock.now(), &r.event_id, "", None, Kind::RehearsalFinished, detail, &Actor::Daemon);
            self.append_raising(&e, Some(crate::alerts::Cause::RehearsalFailed))?;
        }
        self.refresh_verdicts();
        self.refresh_events();
        let live: Vec<Event> = self.events.values().filter(|e| e.state.is_live()).cloned().collect();
        for e in live {
            let detail = format!("simulcastd started again while the event was {}; resuming", e.state);
            warn!(event = %e.id, state = %e.state, "Resuming an event after a restart.");
            self.log(&e.id.0, Kind::DaemonRestarted, detail, &Actor::Daemon)?;
        }
        self.step_clock().await;
        // The clock may have ended the event; if not, its legs come back.
        if let Some(e) = self.events.values().find(|e| e.state.is_live()).cloned() {
            match self.start_relay(&e).await {
                Ok(()) => {
                    self.update_cue(&e);
                    let detail = format!("{} leg(s) rebuilt", self.running.as_ref().map_or(0, |r| r.zones.len()));
                    self.log(&e.id.0, Kind::LegsRebuilt, detail, &Actor::Daemon)?;
                }
                Err(err) => {
                    error!(event = %e.id, error = %err, "Cannot rebuild the legs of a resumed event.");
                    self.log(&e.id.0, Kind::RelayFailed, err.to_string(), &Actor::Daemon)?;
                }
            }
        }
        Ok(())
    }

    /// Appends an event-wide as-run entry (committed before this returns).
    fn log(&self, event_id: &str, kind: Kind, detail: String, actor: &Actor) -> Result<(), CoordError> {
        let now = self.options.clock.now();
        self.append(&entry(now, event_id, "", None, kind, detail, actor), kind)?;
        Ok(())
    }

    fn refresh_events(&mut self) {
        let mut v: Vec<Event> = self.events.values().cloned().collect();
        v.sort_by(|a, b| a.on_air.cmp(&b.on_air).then_with(|| a.id.0.cmp(&b.id.0)));
        self.events_arc = Arc::new(v);
    }

    fn publish(&mut self) {
        self.seq += 1;
        let live = self.running.as_ref().and_then(|r| r.relay.as_ref().map(|relay| (r, relay))).map(|(r, relay)| {
            let s = relay.status();
            Live {
                meters: Arc::new(relay.meters()),
                thumbnails: relay.thumbnails(),
                event_id: r.event_id.clone(),
                source_in_use: s.source_in_use,
                source_choice: r.choice,
                source: s.source,
                backup: s.backup,
                last_switch: s.last_switch,
                program: s.program,
                legs: s
                    .legs
                    .into_iter()
                    .map(|status| {
                        let timezone =
                            r.zones.iter().find(|(id, _)| *id == status.channel_id).map_or(Tz::UTC, |(_, tz)| *tz);
                        let t0_error_s = r.t0_errors.get(&status.channel_id).copied();
                        let (name, country) = r.labels.get(&status.channel_id).cloned().unwrap_or_default();
                        let delay = r
                            .delays
                            .iter()
                            .find(|(id, _)| *id == status.channel_id)
                            .map_or(Duration::ZERO, |(_, d)| *d);
                        LegView { status, timezone, t0_error_s, name, country, delay }
                    })
                    .collect(),
            }
        });
        let healthy = self.options.media_problem.is_none()
            && live.as_ref().is_none_or(|l| l.source.state != crate::media::source::SourceState::Error)
            && self.arm_failure.is_none();
        self.status.send_replace(Arc::new(Snapshot {
            seq: self.seq,
            at: self.options.clock.now(),
            events: Arc::clone(&self.events_arc),
            live,
            healthy,
            rehearsal: self.active_rehearsal(),
            verdicts: Arc::clone(&self.verdicts),
            unreadable_events: self.unreadable.len(),
            alerts: Arc::clone(&self.alerting.counters),
            breaks: Arc::clone(&self.breaks),
            asrun_written: self.store.asrun_written(),
        }));
    }

    /// Answers one command; a change is published before the answer goes.
    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::CreateChannel { channel, actor, reply } => {
                let r = self.create_channel(channel, &actor);
                let _ = reply.send(r);
            }
            Command::GetChannel { id, reply } => {
                let r = self.store.channel(&id).map_err(CoordError::from).and_then(|c| c.ok_or_else(|| not_found(&id)));
                let _ = reply.send(r);
            }
            Command::ListChannels { reply } => {
                let _ = reply.send(self.store.channels().map_err(CoordError::from));
            }
            Command::UpdateChannel { channel, actor, reply } => {
                let r = self.update_channel(channel, &actor);
                let _ = reply.send(r);
            }
            Command::DeleteChannel { id, actor, reply } => {
                let r = self.delete_channel(&id, &actor);
                let _ = reply.send(r);
            }
            Command::Schedule { new, actor, reply } => {
                let r = self.schedule(new, &actor);
                self.answer_change(reply, r);
            }
            Command::GetEvent { id, reply } => {
                let _ = reply.send(self.get(&id));
            }
            Command::ListEvents { reply } => {
                let _ = reply.send(Ok(self.events_arc.as_ref().clone()));
            }
            Command::Act { id, action, by, actor, reply } => {
                let r = match action {
                    Action::Extend => self.extend(&id, by, &actor),
                    _ => self.apply(&id, action, &actor, String::new()).await,
                };
                self.answer_change(reply, r);
            }
            Command::SwitchSource { id, choice, actor, reply } => {
                let r = self.switch_source(&id, choice, &actor);
                self.answer_change(reply, r);
            }
            Command::AsRun { event_id, reply } => {
                let known = self.events.contains_key(&event_id) || self.unreadable.contains_key(&event_id);
                let r = if event_id != SYSTEM_EVENT && !known {
                    Err(event_not_found(&EventId(event_id)))
                } else {
                    self.store.asrun(&event_id).map_err(CoordError::from)
                };
                let _ = reply.send(r);
            }
            Command::AsRunPictures { event_id, reply } => {
                let r = self.store.asrun_pictures(&event_id).map_err(CoordError::from).map(|v| {
                    v.into_iter()
                        .map(|(id, kind, channel_id, utc)| AsRunPicture { id, kind, channel_id, utc })
                        .collect()
                });
                let _ = reply.send(r);
            }
            Command::AsRunPictureBytes { id, reply } => {
                let r = self
                    .store
                    .asrun_picture(id)
                    .map_err(CoordError::from)
                    .and_then(|p| p.ok_or_else(|| CoordError::NotFound(format!("no as-run picture {id}"))));
                let _ = reply.send(r);
            }
            Command::AirTimes { id, reply } => {
                let _ = reply.send(self.air_times(&id));
            }
            Command::StartRehearsal { id, plan, actor, reply } => {
                let r = self.start_rehearsal(&id, plan, &actor);
                self.answer_change(reply, r);
            }
            Command::GetRehearsal { id, reply } => {
                let _ = reply.send(self.rehearsal_report(&id));
            }
            Command::ListRehearsals { event_id, reply } => {
                let _ = reply.send(self.rehearsal_reports(event_id.as_deref()));
            }
            Command::ScheduleRehearsal { new, actor, reply } => {
                let r = self.schedule_rehearsal(new, &actor);
                let _ = reply.send(r);
            }
            Command::ListSchedules { event_id, reply } => {
                let v = self.schedules.iter().filter(|s| event_id.as_ref().is_none_or(|e| *e == s.event_id)).cloned();
                let _ = reply.send(Ok(v.collect()));
            }
            Command::DeleteSchedule { id, actor, reply } => {
                let _ = reply.send(self.delete_schedule(&id, &actor));
            }
            Command::ScheduleBreak { new, actor, reply } => {
                let r = self.schedule_break(new, &actor);
                self.answer_change(reply, r);
            }
            Command::ListBreaks { event_id, reply } => {
                let v = self.breaks.iter().filter(|b| event_id.as_ref().is_none_or(|e| *e == b.event_id)).cloned();
                let _ = reply.send(Ok(v.collect()));
            }
            Command::CancelBreak { id, actor, reply } => {
                let r = self.cancel_break(&id, &actor);
                self.answer_change(reply, r);
            }
            Command::ListAlerts { limit, reply } => {
                let _ = reply.send(self.store.alerts(limit).map_err(CoordError::from));
            }
            Command::TestAlert { actor, reply } => {
                let _ = reply.send(self.test_alert(actor.name()).map_err(CoordError::from));
            }
            // run() answers Shutdown itself, after stopping the relay.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    /// Answers a command that may have changed state: watchers see the
    /// change before the caller hears of it.
    fn answer_change<T>(&mut self, reply: Reply<T>, r: Result<T, CoordError>) {
        if r.is_ok() {
            self.publish();
        }
        let _ = reply.send(r);
    }

    fn live_event_with(&self, id: &ChannelId) -> Option<&Event> {
        self.events.values().find(|e| e.state.is_live() && e.channel_ids.contains(id))
    }

    /// The checks a config file makes across its channels, for one channel
    /// created or changed alone: no UDP host:port another channel sends
    /// to; and a file leg inside the file-leg directory. (An RTMP leg the
    /// programme cannot feed is refused when an event would air it: a
    /// channel outlives one event's contribution format.)
    fn fits_beside_others(&self, channel: &Channel) -> Result<(), CoordError> {
        let mut errs = Vec::new();
        if let Some(why) = config::port_clash(channel, &self.store.channels()?) {
            errs.push(FieldError { key: "ingest.uri".into(), message: why });
        }
        if let Some(why) = self.options.file_leg_refused(channel) {
            errs.push(FieldError { key: "ingest.path".into(), message: why });
        }
        if errs.is_empty() { Ok(()) } else { Err(CoordError::Invalid(errs)) }
    }

    fn create_channel(&self, channel: Channel, actor: &Actor) -> Result<Channel, CoordError> {
        if self.store.channel(&channel.id)?.is_some() {
            return Err(CoordError::AlreadyExists(format!("channel `{}` exists already", channel.id)));
        }
        self.fits_beside_others(&channel)?;
        if !self.store.insert_channel(&channel)? {
            return Err(CoordError::AlreadyExists(format!("channel `{}` exists already", channel.id)));
        }
        self.record_channel(&channel, Kind::ChannelCreated, describe(&channel), actor)?;
        Ok(channel)
    }

    fn update_channel(&self, mut channel: Channel, actor: &Actor) -> Result<Channel, CoordError> {
        let old = self.store.channel(&channel.id)?.ok_or_else(|| not_found(&channel.id))?;
        if let Some(e) = self.live_event_with(&channel.id) {
            return Err(CoordError::FailedPrecondition(format!(
                "channel `{}` is on air in event {} ({}); change it after the event",
                channel.id, e.id, e.state
            )));
        }
        keep_secrets(&old, &mut channel);
        self.fits_beside_others(&channel)?;
        self.store.update_channel(&channel)?;
        self.record_channel(&channel, Kind::ChannelUpdated, describe(&channel), actor)?;
        Ok(channel)
    }

    fn delete_channel(&self, id: &ChannelId, actor: &Actor) -> Result<(), CoordError> {
        let ch = self.store.channel(id)?.ok_or_else(|| not_found(id))?;
        if let Some(e) = self.live_event_with(id) {
            return Err(CoordError::FailedPrecondition(format!(
                "channel `{id}` is on air in event {} ({}); delete it after the event",
                e.id, e.state
            )));
        }
        self.store.delete_channel(id)?;
        self.record_channel(&ch, Kind::ChannelDeleted, String::new(), actor)
    }

    /// Writes an as-run entry about a channel; the entry is committed before
    /// the caller hears "done".
    fn record_channel(&self, ch: &Channel, kind: Kind, detail: String, actor: &Actor) -> Result<(), CoordError> {
        self.store.append_asrun(&entry(
            self.options.clock.now(),
            SYSTEM_EVENT,
            ch.id.as_str(),
            Some(ch.timezone),
            kind,
            detail,
            actor,
        ))?;
        Ok(())
    }

    fn schedule(&mut self, new: NewEvent, actor: &Actor) -> Result<Event, CoordError> {
        let channels = self.store.channels()?;
        let refuses = |c: &Channel| self.options.refuses(c);
        let cx = schedule::request::Context {
            now: self.options.clock.now(),
            channels: &channels,
            refuses: &refuses,
            retention: self.options.retention,
        };
        let event = schedule::request::check(&new, new_event_id(), &cx).map_err(CoordError::Invalid)?;
        if !self.store.insert_event(&event)? {
            return Err(CoordError::AlreadyExists(format!("event {} exists already", event.id)));
        }
        let detail = format!(
            "\"{}\" at {} for {}, {} leg(s), preroll {}, postroll {}",
            event.title,
            utc_text(event.on_air),
            config::uri::format_duration(event.duration),
            event.channel_ids.len(),
            config::uri::format_duration(event.preroll),
            config::uri::format_duration(event.postroll),
        );
        self.log(&event.id.0, Kind::Scheduled, detail, actor)?;
        info!(event = %event.id, on_air = %utc_text(event.on_air), legs = event.channel_ids.len(), "Event scheduled.");
        self.events.insert(event.id.0.clone(), event.clone());
        self.refresh_events();
        Ok(event)
    }

    fn schedule_break(&mut self, new: NewBreak, actor: &Actor) -> Result<Vec<AdBreak>, CoordError> {
        let event = self.get(&new.event_id)?;
        let mut channels = Vec::new();
        for id in &event.channel_ids {
            channels.extend(self.store.channel(id)?.filter(|c| c.enabled));
        }
        let existing: Vec<AdBreak> = self.breaks.iter().filter(|b| b.event_id == event.id).cloned().collect();
        let cx = schedule::breaks::BreakContext {
            now: self.options.clock.now(),
            event: &event,
            channels: &channels,
            existing: &existing,
        };
        let mut next_splice = self.breaks.iter().map(|b| b.splice_event_id).max().unwrap_or(0);
        let make_id = || {
            next_splice = next_splice.wrapping_add(1);
            (new_id("br"), next_splice)
        };
        let made = schedule::breaks::check(&new, make_id, &cx).map_err(CoordError::Invalid)?;
        let detail = made.iter().map(describe_break).collect::<Vec<_>>().join("; ");
        let e = entry(self.options.clock.now(), &event.id.0, "", None, Kind::BreakScheduled, detail, actor);
        self.store.insert_breaks(&made, &e)?;
        for b in &made {
            info!(event = %event.id, brk = %b.id, start = %utc_text(b.start), legs = b.channel_ids.len(), "Break scheduled.");
        }
        let breaks = Arc::make_mut(&mut self.breaks);
        breaks.extend(made.iter().cloned());
        breaks.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
        self.push_breaks();
        Ok(made)
    }

    /// Cancels a break, unless its first cue may have gone out.
    fn cancel_break(&mut self, id: &str, actor: &Actor) -> Result<AdBreak, CoordError> {
        let b = self
            .breaks
            .iter()
            .find(|b| b.id == id)
            .cloned()
            .ok_or_else(|| CoordError::NotFound(format!("no break {}", config::quote(id))))?;
        let now = self.options.clock.now();
        let announced = b.start - schedule::chrono_duration(crate::media::breaks::ANNOUNCE);
        if now >= announced {
            return Err(CoordError::FailedPrecondition(format!(
                "break {id}: its cue went out at {} ({} s ahead of its start); an announced break stays",
                utc_text(announced),
                crate::media::breaks::ANNOUNCE.as_secs()
            )));
        }
        let e = entry(now, &b.event_id.0, "", None, Kind::BreakCancelled, describe_break(&b), actor);
        if !self.store.delete_break(id, &e)? {
            return Err(CoordError::NotFound(format!("no break {}", config::quote(id))));
        }
        info!(brk = %id, "Break cancelled.");
        Arc::make_mut(&mut self.breaks).retain(|x| x.id != id);
        self.push_breaks();
        Ok(b)
    }

    /// Gives the running relay each of its legs' breaks (all of them: a
    /// leg's list is replaced whole).
    fn push_breaks(&mut self) {
        let Some(r) = self.running.as_mut() else { return };
        let Some(relay) = r.relay.as_mut() else { return };
        for (channel, _) in &r.zones {
            let id = ChannelId::parse(channel).ok();
            let on_leg: Vec<crate::media::breaks::Break> = self
                .breaks
                .iter()
                .filter(|b| b.event_id == r.event_id && id.as_ref().is_some_and(|c| b.covers(c)))
                .map(|b| crate::media::breaks::Break {
                    splice_event_id: b.splice_event_id,
                    start_utc_ns: b.start.timestamp_nanos_opt().unwrap_or(0).max(0) as u64,
                    duration: b.duration,
                })
                .collect();
            relay.set_breaks(channel, on_leg);
        }
    }

    fn air_times(&self, id: &EventId) -> Result<Vec<schedule::AirTime>, CoordError> {
        let event = self.get(id)?;
        let mut out = Vec::new();
        for cid in &event.channel_ids {
            // A channel deleted since has no zone any more: it is left out.
            if let Some(ch) = self.store.channel(cid)? {
                out.push(schedule::air_time(event.on_air, &ch).map_err(CoordError::FailedPrecondition)?);
            }
        }
        Ok(out)
    }

    fn get(&self, id: &EventId) -> Result<Event, CoordError> {
        self.events.get(&id.0).cloned().ok_or_else(|| match self.unreadable.get(&id.0) {
            Some(why) => CoordError::FailedPrecondition(format!(
                "event {id} is in the store but cannot be read ({why}); it is out of the schedule"
            )),
            None => event_not_found(id),
        })
    }

    /// Persists `event` with the entry explaining it, then updates memory.
    fn save(&mut self, event: Event, e: AsRunEntry) -> Result<Event, CoordError> {
        self.store.update_event(&event, &e)?;
        self.events.insert(event.id.0.clone(), event.clone());
        self.refresh_events();
        Ok(event)
    }

    /// Applies `action`; starts the relay on entering a live state and stops
    /// it on leaving one.
    async fn apply(&mut self, id: &EventId, action: Action, actor: &Actor, why: String) -> Result<Event, CoordError> {
        let mut event = self.get(id)?;
        let next = schedule::transition(event.state, action)
            .map_err(|m| CoordError::FailedPrecondition(format!("event {id}: {m}")))?;
        if next.is_live() && !event.state.is_live() {
            if let Some(other) = self.events.values().find(|e| e.state.is_live() && e.id != *id) {
                return Err(CoordError::FailedPrecondition(format!(
                    "event {} (\"{}\") is {}: one event runs at a time",
                    other.id, other.title, other.state
                )));
            }
            if action == Action::Arm && actor.is_person() {
                // Channels may have changed since the event was scheduled.
                let refused: Vec<String> = event
                    .channel_ids
                    .iter()
                    .filter_map(|c| self.store.channel(c).ok().flatten())
                    .filter(|c| c.enabled)
                    .filter_map(|c| self.options.refuses(&c))
                    .collect();
                if !refused.is_empty() {
                    return Err(CoordError::FailedPrecondition(format!("event {id}: {}", refused.join("; "))));
                }
            }
            self.start_relay(&event).await?;
        }
        let started_here = !event.state.is_live() && next.is_live();
        let now = self.options.clock.now();
        match action {
            Action::End if actor.is_person() && now < event.end() => event.ended = Some(now),
            Action::Abort => event.ended = Some(now),
            _ => {}
        }
        let from = event.state;
        event.state = next;
        let mut detail = format!("{from} -> {next}");
        if !why.is_empty() {
            detail = format!("{detail}: {why}");
        }
        let event = match self
            .save(event, entry(self.options.clock.now(), &id.0, "", None, Kind::entering(next), detail, actor))
        {
            Ok(e) => e,
            Err(e) => {
                if started_here {
                    self.stop_relay(Kind::LegsClosed, "the store failed; the event did not change").await;
                }
                return Err(e);
            }
        };
        info!(event = %id, from = %from, to = %next, actor = actor.name(), "Event state changed.");
        self.update_cue(&event);
        // Only this event's own relay stops: cancelling another, scheduled
        // event stopped the live one's (and waited out an earlier abort's
        // emergency slate).
        let runs_here = self.running.as_ref().is_some_and(|r| r.event_id == *id);
        if !next.is_live() && runs_here {
            let aborted = next == EventState::Aborted;
            let kind = if aborted { Kind::LegsAborted } else { Kind::LegsClosed };
            let recording = next.is_final().then(|| self.recording_dir(id));
            self.begin_stop(kind, &format!("event {next}"), aborted, recording);
            // An abort's emergency slate runs its second off the loop (the
            // legs' totals are logged when they have closed); any other
            // stop is a moment's work, done before the answer, so a leg
            // shown stopped has stopped sending.
            if !aborted {
                self.finish_stop().await;
            }
        }
        Ok(event)
    }

    fn extend(&mut self, id: &EventId, by: Option<chrono::Duration>, actor: &Actor) -> Result<Event, CoordError> {
        let mut event = self.get(id)?;
        schedule::transition(event.state, Action::Extend)
            .map_err(|m| CoordError::FailedPrecondition(format!("event {id}: {m}")))?;
        let by = by.ok_or_else(|| invalid("by", "missing: how far to move the end"))?;
        if by.is_zero() {
            return Err(invalid("by", "zero moves nothing"));
        }
        let new_duration = schedule::chrono_duration(event.duration) + by;
        let new_end = event.on_air + new_duration;
        if new_duration <= chrono::Duration::zero() || new_end <= self.options.clock.now() {
            return Err(invalid(
                "by",
                format!("the end would move to {}, which is past or before T0", utc_text(new_end)),
            ));
        }
        if new_duration > chrono::Duration::days(7) {
            return Err(invalid("by", "the event would last more than 7 days"));
        }
        let new_std = new_duration.to_std().unwrap_or_default();
        if let Some(mut e) =
            schedule::request::outside_wire_range(event.on_air, event.preroll, new_std, event.max_delay, event.postroll)
        {
            e.key = "by".into();
            return Err(CoordError::Invalid(vec![e]));
        }
        let old_end = event.end();
        event.duration = new_std;
        let detail = format!("end moved from {} to {}", utc_text(old_end), utc_text(event.end()));
        let event =
            self.save(event, entry(self.options.clock.now(), &id.0, "", None, Kind::Extended, detail, actor))?;
        self.update_cue(&event);
        Ok(event)
    }

    fn switch_source(&mut self, id: &EventId, choice: SourceChoice, actor: &Actor) -> Result<Event, CoordError> {
        let event = self.get(id)?;
        let Some(running) = self.running.as_mut().filter(|r| r.event_id == *id) else {
            return Err(CoordError::FailedPrecondition(format!(
                "event {id} is {}: the source can be switched only while its legs run",
                event.state
            )));
        };
        if choice == SourceChoice::Backup && self.options.backup.is_none() {
            return Err(CoordError::FailedPrecondition(
                "no backup source is configured for this daemon ([backup] in its config)".into(),
            ));
        }
        let from = running.choice;
        running.choice = choice;
        if let Some(relay) = &running.relay {
            relay.set_source_choice(choice);
        }
        // The request; the switch itself is logged as `source-switched`
        // when the program's picture changes.
        let detail = format!("source {} -> {} (by hand)", from.as_str(), choice.as_str());
        self.log(&id.0, Kind::SourceSelected, detail, actor)?;
        self.update_cue(&event);
        Ok(event)
    }

    /// Moves every event the clock has made due; returns whether any moved.
    async fn step_clock(&mut self) -> bool {
        let mut changed = false;
        // A daemon started late may apply several steps to one event.
        for _ in 0..8 {
            let now = self.options.clock.now();
            let due: Vec<(EventId, Action)> =
                self.events.values().filter_map(|e| e.due(now).map(|a| (e.id.clone(), a))).collect();
            if due.is_empty() {
                break;
            }
            let mut moved = false;
            for (id, action) in due {
                if action == Action::Arm && self.events.values().any(|e| e.state.is_live() && e.id != id) {
                    continue; // Another event runs; this one waits for an operator.
                }
                let why = match action {
                    Action::Arm => "T0 - preroll reached",
                    Action::Take => "T0 reached",
                    Action::End => "end reached",
                    _ => "post-roll over",
                };
                match self.apply(&id, action, &Actor::Scheduler, why.into()).await {
                    Ok(_) => {
                        moved = true;
                        self.arm_failure = None;
                    }
                    Err(e) => {
                        let text = e.to_string();
                        if self.arm_failure.as_deref() != Some(&text) {
                            error!(event = %id, action = action.as_str(), error = %text, "The clock could not move the event.");
                            let _ = self.log(&id.0, Kind::ArmFailed, text.clone(), &Actor::Scheduler);
                            self.arm_failure = Some(text);
                        }
                    }
                }
            }
            changed |= moved;
            if !moved {
                break;
            }
        }
        changed
    }

    async fn on_tick(&mut self) -> bool {
        let mut changed = self.step_clock().await;
        changed |= self.collect_rehearsal().await;
        changed |= self.fire_schedules();
        // Entries are written once the running event is let go of.
        let mut out: Vec<(AsRunEntry, Option<Cause>)> = Vec::new();
        let now = self.options.clock.now();
        let event = self.running.as_ref().and_then(|r| self.events.get(&r.event_id.0)).cloned();
        let not_on_air_before = schedule::chrono_duration(self.options.alerts.not_on_air_before);
        if let Some(r) = &mut self.running
            && let Some(relay) = &mut r.relay
        {
            let tz_of = |id: &str| r.zones.iter().find(|(z, _)| z == id).map(|(_, tz)| *tz);
            for id in relay.poll() {
                let detail = "airs from the recording at its own local time".to_owned();
                let e = entry(now, &r.event_id.0, &id, tz_of(&id), Kind::LegDelayedStart, detail, &Actor::Daemon);
                out.push((e, None));
            }
            for sw in relay.take_source_switches() {
                let at = DateTime::<Utc>::from_timestamp_nanos(sw.at_utc_ns.min(i64::MAX as u64) as i64);
                let detail = format!("{} -> {}: {}", sw.from.as_str(), sw.to.as_str(), sw.reason);
                if sw.to == Feed::Slate || sw.from == Feed::Primary {
                    warn!(event = %r.event_id, detail = %detail, "Source switched.");
                } else {
                    info!(event = %r.event_id, detail = %detail, "Source switched.");
                }
                let cause = match (sw.to, sw.by_hand) {
                    (Feed::Primary, _) => Cause::PrimaryBack,
                    (Feed::Backup, _) => Cause::OnBackup,
                    (Feed::Slate, true) => Cause::SlateByHand,
                    (Feed::Slate, false) => Cause::OnSlate,
                };
                // The slate before T0 and after the end is the plan, not news.
                let airing = event.as_ref().is_some_and(|e| e.state == EventState::OnAir);
                let e = entry(at, &r.event_id.0, "", None, Kind::SourceSwitched, detail, &Actor::Daemon);
                r.pictures.push(WaitingPicture { entry: e.clone(), at, delay: Duration::ZERO });
                out.push((e, (airing || sw.to != Feed::Slate).then_some(cause)));
            }
            let status = relay.status();
            let from = relay.cue().program_from;
            for leg in &status.legs {
                let Some(at_ns) = leg.program_since_utc_ns else { continue };
                if r.program_logged.get(&leg.channel_id) == Some(&at_ns) {
                    continue;
                }
                r.program_logged.insert(leg.channel_id.clone(), at_ns);
                let at = DateTime::<Utc>::from_timestamp_nanos(at_ns.min(i64::MAX as u64) as i64);
                let tz = tz_of(&leg.channel_id);
                if !r.program_first_logged.insert(leg.channel_id.clone()) {
                    // Back on programme after the slate (by hand, a
                    // failover to it, a restart): not its T0 any more.
                    let detail = format!("programme pictures again from {}", utc_text(at));
                    info!(leg = %leg.channel_id, detail = %detail, "Leg carries the program again.");
                    let e =
                        entry(at, &r.event_id.0, &leg.channel_id, tz, Kind::LegProgramResumed, detail, &Actor::Daemon);
                    out.push((e, None));
                    continue;
                }
                let delay = r.delays.iter().find(|(c, _)| *c == leg.channel_id).map(|(_, d)| *d).unwrap_or_default();
                let detail = match from {
                    Some(f) => {
                        let due = f + schedule::chrono_duration(delay);
                        let ms = (at - due).num_microseconds().unwrap_or(0) as f64 / 1000.0;
                        r.t0_errors.insert(leg.channel_id.clone(), ms / 1000.0);
                        format!(
                            "first program picture went out at {}, {ms:+.1} ms from its air time {}",
                            utc_text(at),
                            utc_text(due)
                        )
                    }
                    None => format!("first program picture went out at {}", utc_text(at)),
                };
                info!(leg = %leg.channel_id, detail = %detail, "Leg carries the program.");
                let e = entry(at, &r.event_id.0, &leg.channel_id, tz, Kind::LegProgram, detail, &Actor::Daemon);
                r.pictures.push(WaitingPicture { entry: e.clone(), at, delay });
                out.push((e, None));
            }
            for c in r.observer.observe(&status) {
                match c.kind {
                    Kind::LegOnAir => info!(leg = %c.channel_id, detail = %c.detail, "Leg on air."),
                    _ => warn!(leg = %c.channel_id, kind = c.kind.as_str(), detail = %c.detail, "Leg trouble."),
                }
                // One alert per spell off air: a leg that cannot reach its
                // partner, or lost it, is not raised again for each new
                // error of its retries.
                let cause = match c.kind {
                    Kind::LegOnAir => {
                        r.off_air_raised.remove(&c.channel_id);
                        None
                    }
                    Kind::LegError => r.off_air_raised.insert(c.channel_id.clone()).then_some(Cause::LegUnreachable),
                    Kind::LegLost => {
                        r.off_air_raised.insert(c.channel_id.clone());
                        Some(Cause::LegLost)
                    }
                    k => cause_of(k),
                };
                let tz = tz_of(&c.channel_id);
                out.push((entry(now, &r.event_id.0, &c.channel_id, tz, c.kind, c.detail, &Actor::Daemon), cause));
            }
            // Legs not on air shortly before their air time (a delayed leg
            // waiting for its own is not late), once per leg and event.
            if let Some(ev) = event.as_ref().filter(|e| matches!(e.state, EventState::Armed | EventState::Held))
                && now - r.armed_at >= chrono::Duration::from_std(NOT_ON_AIR_GRACE).unwrap_or_default()
            {
                for leg in &status.legs {
                    let delay = r.delays.iter().find(|(c, _)| *c == leg.channel_id).map(|(_, d)| *d);
                    let air = ev.on_air + schedule::chrono_duration(delay.unwrap_or_default());
                    let waiting = delay.is_some() && leg.state == LegState::Idle;
                    if leg.state == LegState::OnAir || waiting || now < air - not_on_air_before {
                        continue;
                    }
                    if !r.not_on_air_raised.insert(leg.channel_id.clone()) {
                        continue;
                    }
                    let mins = (air - now).num_seconds().max(0) / 60;
                    let why = leg.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                    let detail = format!("{} {mins} min before its air time{why}", leg.state);
                    warn!(leg = %leg.channel_id, detail = %detail, "Leg not on air before its air time.");
                    let tz = tz_of(&leg.channel_id);
                    let e = entry(now, &r.event_id.0, &leg.channel_id, tz, Kind::LegNotOnAir, detail, &Actor::Daemon);
                    out.push((e, cause_of(Kind::LegNotOnAir)));
                }
            }
            // Each break's start and end on each leg, at the leg's own
            // time (a delayed leg's is its delay later).
            for b in self.breaks.iter().filter(|b| b.event_id == r.event_id) {
                for (channel, tz) in &r.zones {
                    if !b.channel_ids.iter().any(|c| c.as_str() == channel) {
                        continue;
                    }
                    let delay = r.delays.iter().find(|(c, _)| c == channel).map(|(_, d)| *d).unwrap_or_default();
                    let cues = status.legs.iter().find(|l| l.channel_id == *channel).map(|l| l.cues_missed);
                    for (end, kind) in [(false, Kind::BreakStart), (true, Kind::BreakEnd)] {
                        let at = if end { b.end() } else { b.start } + schedule::chrono_duration(delay);
                        if now < at || !r.breaks_logged.insert((b.id.clone(), channel.clone(), end)) {
                            continue;
                        }
                        let mut detail = describe_break(b);
                        if let Some(missed) = cues.filter(|m| *m > 0) {
                            detail = format!("{detail}; {missed} cue(s) on this leg could not be sent in time");
                        }
                        info!(leg = %channel, brk = %b.id, kind = kind.as_str(), "Break.");
                        out.push((entry(at, &r.event_id.0, channel, Some(*tz), kind, detail, &Actor::Daemon), None));
                    }
                }
            }
            // The recording delayed legs air from lost data: said once per
            // minute at most, with how much.
            let lost = relay.recording_lost();
            if lost > r.recording_lost_said
                && r.recording_lost_at.is_none_or(|t| now - t >= chrono::Duration::minutes(1))
            {
                let detail = format!(
                    "{} batch(es) of the programme not recorded ({lost} in all): the disk is too slow or failed; \
                     delayed legs will miss them",
                    lost - r.recording_lost_said
                );
                error!(event = %r.event_id, detail = %detail, "Recording lost data.");
                r.recording_lost_said = lost;
                r.recording_lost_at = Some(now);
                let e = entry(now, &r.event_id.0, "", None, Kind::RecordingLost, detail, &Actor::Daemon);
                out.push((e, cause_of(Kind::RecordingLost)));
            }
        }
        for (e, cause) in out {
            self.record_raising(&e, cause);
        }
        self.keep_pictures(now);
        changed
    }

    /// The visual as-run: each entry waiting for its picture gets the
    /// first programme picture made at or after its instant, kept in the
    /// store with it; one still without a picture after
    /// [`PICTURE_WAIT`] (no thumbnails, the programme stalled) goes
    /// without.
    ///
    /// A delayed leg airs the recording from T0: its first programme
    /// picture is the live programme's first, `live_start`, kept with the
    /// time the partner got it (its delay later). That is the first live
    /// leg's picture, or, with every leg delayed, the first made after
    /// T0. A daemon started again after T0 has no such picture: a delayed
    /// leg's first picture then goes without.
    fn keep_pictures(&mut self, now: DateTime<Utc>) {
        let Some(r) = &mut self.running else { return };
        let thumbs = r.relay.as_ref().and_then(Relay::thumbnails);
        let wait = schedule::chrono_duration(PICTURE_WAIT);
        let delayed = |id: &str| r.delays.iter().any(|(c, d)| c == id && !d.is_zero());
        let all_delayed = !r.zones.is_empty() && r.zones.iter().all(|(id, _)| delayed(id));
        if r.live_start.is_none()
            && all_delayed
            && let Some(from) = r.relay.as_ref().and_then(|x| x.cue().program_from)
            && let Some(first) = thumbs.as_ref().and_then(|t| t.program_at(from))
            && first.at - from < wait
        {
            r.live_start = Some(first);
        }
        let store = &self.store;
        let live_start = &mut r.live_start;
        r.pictures.retain(|p| {
            let e = &p.entry;
            let found = if p.delay.is_zero() {
                let t = thumbs.as_ref().and_then(|t| t.program_at(p.at));
                if e.kind == Kind::LegProgram.as_str() && live_start.is_none() {
                    live_start.clone_from(&t);
                }
                t.map(|t| (t.at, t.jpeg))
            } else {
                live_start.as_ref().map(|t| (t.at + schedule::chrono_duration(p.delay), Arc::clone(&t.jpeg)))
            };
            if let Some((taken, jpeg)) = found {
                if let Err(err) = store.insert_asrun_picture(e, &utc_text(taken), &jpeg) {
                    warn!(kind = %e.kind, error = %err, "The picture of an as-run entry could not be kept.");
                }
                return false;
            }
            now - p.at < wait
        });
    }

    async fn start_relay(&mut self, event: &Event) -> Result<(), CoordError> {
        if self.running.as_ref().is_some_and(|r| r.event_id == event.id) {
            return Ok(());
        }
        if let Some(problem) = &self.options.media_problem {
            return Err(CoordError::Relay(format!("the relay cannot run: {problem}")));
        }
        // The last event's pipelines may still hold its ports (a
        // contribution listener): they are gone before new ones start.
        self.finish_stop().await;
        // The event's legs go to the same ingests: the event wins.
        self.stop_rehearsal(&format!("event {} went live", event.id)).await;
        let mut channels = Vec::new();
        for id in &event.channel_ids {
            let skipped = match self.store.channel(id)? {
                Some(c) if c.enabled => match self.options.refuses(&c) {
                    // The clock arms without an operator: the other legs go
                    // on air, this one is skipped with the reason.
                    Some(why) => {
                        warn!(leg = %c.id, why = %why, "Leg skipped: it cannot carry the programme.");
                        why
                    }
                    None => {
                        channels.push(c);
                        continue;
                    }
                },
                Some(_) => "channel disabled".into(),
                None => "channel deleted".into(),
            };
            let now = self.options.clock.now();
            let e = entry(now, &event.id.0, id.as_str(), None, Kind::LegSkipped, skipped, &Actor::Daemon);
            self.append(&e, Kind::LegSkipped)?;
        }
        let relay_plan = self.relay_plan(&event.title, channels.clone());
        let delays: Vec<(String, Duration)> = channels
            .iter()
            .filter_map(|c| schedule::air_time(event.on_air, c).ok().map(|a| (c.id.to_string(), a.delay)))
            .filter(|(_, d)| !d.is_zero())
            .collect();
        let plan = (!delays.is_empty()).then(|| DelayPlan {
            recording: RecordingPlan {
                dir: self.recording_dir(&event.id),
                retention: self.options.retention,
                max_bytes: self.options.recording_max_bytes,
            },
            t0_utc: event.on_air,
            delays: delays.clone(),
        });
        let relay = if self.options.relay_enabled {
            // Slate until the state the event enters sets the cue.
            let r = Relay::start_with(&relay_plan, Cue::default(), plan).await;
            Some(r.map_err(|e| CoordError::Relay(format!("the relay could not start: {e}")))?)
        } else {
            None
        };
        let zones = channels.iter().map(|c| (c.id.to_string(), c.timezone)).collect();
        let labels = channels.iter().map(|c| (c.id.to_string(), (c.name.clone(), c.country.clone()))).collect();
        // What this event's log says already (before a restart).
        let logged = self.store.asrun(&event.id.0)?;
        let legs_with =
            |kind: Kind| logged.iter().filter(move |e| e.kind == kind.as_str()).map(|e| e.channel_id.clone());
        self.running = Some(Running {
            event_id: event.id.clone(),
            relay,
            zones,
            labels,
            pictures: Vec::new(),
            live_start: None,
            observer: LegObserver::default(),
            choice: SourceChoice::Auto,
            delays,
            program_logged: BTreeMap::new(),
            t0_errors: BTreeMap::new(),
            program_first_logged: legs_with(Kind::LegProgram).collect(),
            armed_at: self.options.clock.now(),
            not_on_air_raised: legs_with(Kind::LegNotOnAir).collect(),
            off_air_raised: Default::default(),
            breaks_logged: logged
                .iter()
                .filter(|e| e.kind == Kind::BreakStart.as_str() || e.kind == Kind::BreakEnd.as_str())
                .filter_map(|e| {
                    let id = e.detail.split(':').next()?.to_owned();
                    Some((id, e.channel_id.clone(), e.kind == Kind::BreakEnd.as_str()))
                })
                .collect(),
            recording_lost_said: 0,
            recording_lost_at: None,
        });
        self.push_breaks();
        Ok(())
    }

    /// Sets the relay's cue from the event's state: slate before T0, on
    /// hold and from the end; program from T0 (or from a Take) until the end.
    fn update_cue(&mut self, event: &Event) {
        let now = self.options.clock.now();
        let Some(r) = self.running.as_mut().filter(|r| r.event_id == event.id) else { return };
        let Some(relay) = &r.relay else { return };
        let cue = cue_for(event, now, relay.cue(), r.choice == SourceChoice::Slate);
        if cue != relay.cue() {
            info!(event = %event.id, ?cue, "Cue set.");
            relay.set_cue(cue);
        }
    }

    /// The relay plan of `channels` from the daemon's options.
    fn relay_plan(&self, title: &str, channels: Vec<Channel>) -> RelayPlan {
        // File legs write inside the file-leg directory, and nowhere else.
        let channels = channels
            .into_iter()
            .filter_map(|mut c| {
                if let Ingest::File(p) = &mut c.ingest {
                    match config::confine_file_leg(p, &self.options.file_legs) {
                        Ok(full) => {
                            if let Some(parent) = full.parent()
                                && let Err(e) = std::fs::create_dir_all(parent)
                            {
                                warn!(leg = %c.id, dir = %parent.display(), error = %e, "Cannot create a file leg's directory.");
                            }
                            *p = full;
                        }
                        Err(why) => {
                            warn!(leg = %c.id, why = %why, "File leg left out.");
                            return None;
                        }
                    }
                }
                Some(c)
            })
            .collect();
        RelayPlan {
            program: ProgramPlan {
                source: self.options.source.clone(),
                backup: self.options.backup.clone(),
                failover: self.options.failover,
                format: self.options.program.clone(),
                slate: self.options.slate.clone(),
                title: title.to_owned(),
                batch_wait: self.options.relay.batch_wait,
                feed_thumbs: [None, None],
            },
            legs: channels,
            settings: self.options.relay.clone(),
            // The daemon serves the multiviewer page.
            thumbnails: true,
        }
    }

    fn recording_dir(&self, id: &EventId) -> PathBuf {
        self.options.recordings.join(&id.0)
    }

    /// Stops the running relay and waits for it, logging each leg's totals.
    async fn stop_relay(&mut self, kind: Kind, why: &str) {
        self.begin_stop(kind, why, false, None);
        self.finish_stop().await;
    }

    /// Starts stopping the running relay off the loop: with `slate`, the
    /// emergency slate goes out on every leg for [`ABORT_SLATE`] first;
    /// then every pipeline goes to Null. [`State::finish_stop`] writes the
    /// legs' totals and removes `recording` once that is done; the loop
    /// goes on deciding meanwhile.
    fn begin_stop(&mut self, kind: Kind, why: &str, slate: bool, recording: Option<PathBuf>) {
        let Some(r) = self.running.take() else { return };
        let Some(relay) = r.relay else { return };
        if slate {
            relay.set_cue(Cue { force_slate: true, ..relay.cue() });
        }
        let done = Arc::clone(&self.stopped);
        let task = tokio::spawn(async move {
            if slate {
                tokio::time::sleep(ABORT_SLATE).await;
            }
            let status = relay.shutdown().await;
            done.notify_one();
            status
        });
        self.stopping =
            Some(Stopping { event_id: r.event_id, zones: r.zones, kind, why: why.to_owned(), recording, task });
    }

    /// Waits for a relay stopping, if one is, then logs each leg's totals
    /// and removes its recording (off the loop).
    async fn finish_stop(&mut self) {
        let Some(s) = self.stopping.take() else { return };
        let status = match s.task.await {
            Ok(status) => status,
            Err(e) => {
                error!(event = %s.event_id, error = %e, "The relay's stop failed.");
                return;
            }
        };
        // The event's pipelines are freed: their pages go back too.
        crate::media::trim_heap();
        for leg in &status.legs {
            let tz = s.zones.iter().find(|(id, _)| *id == leg.channel_id).map(|(_, tz)| *tz);
            let detail = format!(
                "{}; {} bytes sent, {} reconnect(s), {} dropped buffer(s)",
                s.why, leg.bytes_sent, leg.reconnects, leg.dropped_buffers
            );
            let e = entry(self.options.clock.now(), &s.event_id.0, &leg.channel_id, tz, s.kind, detail, &Actor::Daemon);
            self.record(&e, s.kind);
        }
        if let Some(dir) = s.recording {
            tokio::task::spawn_blocking(move || {
                if dir.exists()
                    && let Err(e) = std::fs::remove_dir_all(&dir)
                {
                    warn!(dir = %dir.display(), error = %e, "Cannot remove the event's recording.");
                }
            });
        }
    }
}

/// A relay being stopped off the coordinator's loop (see
/// [`State::begin_stop`]).
struct Stopping {
    event_id: EventId,
    zones: Vec<(String, Tz)>,
    kind: Kind,
    why: String,
    recording: Option<PathBuf>,
    task: tokio::task::JoinHandle<crate::relay::RelayStatus>,
}

/// How long the emergency slate goes out after an abort, before the legs close.
pub const ABORT_SLATE: Duration = Duration::from_secs(1);

/// The cue for `event` in its current state (see [`State::update_cue`]).
/// `prev` keeps a program start already passed (T0, or an earlier Take).
/// The first of an event's instants, from arming to the end of its last
/// leg's post-roll, that a protobuf `Timestamp` cannot carry (after
/// 9999-12-31 UTC), as an error naming the field that puts it there.
fn cue_for(event: &Event, now: DateTime<Utc>, prev: Cue, slate_by_hand: bool) -> Cue {
    let program_from = match event.state {
        EventState::Scheduled | EventState::Armed => Some(event.on_air),
        EventState::OnAir | EventState::PostRoll => Some(prev.program_from.filter(|t| *t <= now).unwrap_or(now)),
        _ => None,
    };
    Cue { program_from, program_until: Some(event.end()), force_slate: slate_by_hand || event.state.is_final() }
}

fn new_event_id() -> EventId {
    EventId(new_id("ev"))
}

/// `prefix`, a dash and 12 random hex digits.
fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 6];
    if getrandom::fill(&mut b).is_err() {
        // Only uniqueness matters here, not secrecy.
        b = fastrand::u64(..).to_le_bytes()[..6].try_into().unwrap_or_default();
    }
    format!("{prefix}-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// A break in the as-run log's words.
fn describe_break(b: &AdBreak) -> String {
    let legs = b.channel_ids.iter().map(ChannelId::as_str).collect::<Vec<_>>().join(", ");
    format!(
        "{}: {} for {}, splice event {}, on {legs}",
        b.id,
        utc_text(b.start),
        config::uri::format_duration(b.duration),
        b.splice_event_id
    )
}

fn not_found(id: &ChannelId) -> CoordError {
    CoordError::NotFound(format!("no channel `{id}`"))
}

fn event_not_found(id: &EventId) -> CoordError {
    CoordError::NotFound(format!("no event `{id}`"))
}

/// A channel for the as-run log: never a secret.
fn describe(ch: &Channel) -> String {
    format!("{} ({}, {}): {} {}", ch.name, ch.country, ch.timezone.name(), ch.ingest.protocol(), ch.ingest.target())
}

fn keep_secrets(old: &Channel, new: &mut Channel) {
    match (&old.ingest, &mut new.ingest) {
        (Ingest::Srt(o), Ingest::Srt(n)) if n.passphrase.is_none() => n.passphrase = o.passphrase.clone(),
        (Ingest::Rtmp(o), Ingest::Rtmp(n)) if n.stream_key.is_none() => n.stream_key = o.stream_key.clone(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn event(state: EventState) -> Event {
        Event {
            id: EventId("ev-000000000001".into()),
            title: "t".into(),
            on_air: at("2026-11-22T15:00:00Z"),
            duration: Duration::from_secs(3 * 3600),
            preroll: Duration::from_secs(600),
            postroll: Duration::from_secs(60),
            channel_ids: vec![],
            state,
            ended: None,
            created: at("2026-11-01T00:00:00Z"),
            max_delay: Duration::ZERO,
        }
    }

    #[test]
    fn the_cue_follows_the_event() {
        let t0 = at("2026-11-22T15:00:00Z");
        let end = at("2026-11-22T18:00:00Z");
        let none = Cue::default();
        // Armed: programme from T0 to the end.
        let armed = cue_for(&event(EventState::Armed), at("2026-11-22T14:55:00Z"), none, false);
        assert_eq!(armed, Cue { program_from: Some(t0), program_until: Some(end), force_slate: false });
        // The clock's Take at T0 (a tick late) keeps T0; an early Take is now.
        let on = cue_for(&event(EventState::OnAir), at("2026-11-22T15:00:00.2Z"), armed, false);
        assert_eq!(on.program_from, Some(t0));
        let early = at("2026-11-22T14:58:00Z");
        assert_eq!(cue_for(&event(EventState::OnAir), early, armed, false).program_from, Some(early));
        // Held: slate; Take after the hold: programme from then.
        let held = cue_for(&event(EventState::Held), at("2026-11-22T15:01:00Z"), armed, false);
        assert_eq!(held.program_from, None);
        let taken = at("2026-11-22T15:03:00Z");
        assert_eq!(cue_for(&event(EventState::OnAir), taken, held, false).program_from, Some(taken));
        // Ended early: slate from the new end; slate by hand; aborted.
        let mut ended = event(EventState::PostRoll);
        ended.ended = Some(at("2026-11-22T16:00:00Z"));
        let post = cue_for(&ended, at("2026-11-22T16:00:00Z"), on, false);
        assert_eq!((post.program_from, post.program_until), (Some(t0), ended.ended));
        assert!(cue_for(&event(EventState::OnAir), taken, on, true).force_slate);
        assert!(cue_for(&event(EventState::Aborted), taken, on, false).force_slate);
    }
}
