//! The coordinator: the one owner of mutable state. API services send it
//! commands over a channel and await the answer; it applies the rules, has
//! the store and the as-run log written (by the store's writer, off its
//! loop: `writes.rs`), runs the clock (arm at T0 - preroll, air at T0,
//! post-roll at the end), starts and stops the relay of the event that
//! runs, and publishes snapshots for watchers. Nothing else changes state.

mod alerting;
pub mod asrun;
pub mod busy;
mod legs;
mod lifecycle;
mod placing;
mod rehearsals;
mod status;
mod transitions;
mod writes;

pub use lifecycle::ABORT_SLATE;
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

use crate::config::{self, Channel, ChannelId, FieldError, Ingest, RelaySettings, Source};
use crate::legview::LegSeen;
use crate::media::failover::SourceChoice;
use crate::media::thumbs::Thumb;
use crate::rehearsal::recurring::Recurring;
use crate::rehearsal::{Plan, Report};
use crate::relay::Relay;
use crate::schedule::breaks::{AdBreak, NewBreak};
use crate::schedule::{self, Action, Clock, Event, EventId};
use crate::store::{AsRunEntry, Store, StoreError, Writer};
use lifecycle::{Started, Starting, Then};
use transitions::Applied;

use asrun::{Actor, Kind, entry, utc_text};
use lifecycle::Stopping;

/// As-run entries about the daemon and its channels, not one event, use this
/// event id.
pub const SYSTEM_EVENT: &str = "-";
/// How often the coordinator looks at the clock and the legs.
pub const DEFAULT_TICK: Duration = Duration::from_millis(250);
/// How often it publishes a snapshot when nothing changed.
pub const DEFAULT_STATUS_EVERY: Duration = Duration::from_millis(500);
/// The shortest time between two snapshots published for changes: the
/// most a watcher's board lags a command, and what bounds the watchers'
/// traffic however fast commands come.
pub const PUBLISH_GAP: Duration = Duration::from_millis(50);

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
    /// Cluster mode: this node does not run master control now.
    #[error("{0}")]
    Unavailable(String),
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
    /// Cluster mode: whether this node leads, with the election key it
    /// holds. Master control (the clock, the relay, every command) runs
    /// only while it does; `None`: single-node mode, it always runs.
    pub leading: Option<watch::Receiver<Option<crate::cluster::Lead>>>,
    /// Cluster mode: this node's name, for the as-run log.
    pub node: Option<String>,
    /// Cluster mode with `--placement spread`: where the live legs go
    /// (`None`: this node carries every leg).
    pub placement: Option<crate::cluster::carry::Placement>,
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
            leading: None,
            node: None,
            placement: None,
        }
    }

    /// The relay plan of `legs` under `title` (no thumbnails), from these
    /// options' contribution, programme, slate and relay settings.
    pub fn relay_plan(&self, title: &str, legs: Vec<Channel>) -> crate::relay::RelayPlan {
        crate::relay::RelayPlan {
            program: crate::media::program::ProgramPlan {
                source: self.source.clone(),
                backup: self.backup.clone(),
                failover: self.failover,
                format: self.program.clone(),
                slate: self.slate.clone(),
                title: title.to_owned(),
                batch_wait: self.relay.batch_wait,
                feed_thumbs: [None, None],
            },
            legs,
            settings: self.relay.clone(),
            thumbnails: false,
            fence: None,
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
    UpdateChannel { channel: Channel, actor: Actor, reply: Reply<Channel> },
    DeleteChannel { id: ChannelId, actor: Actor, reply: Reply<()> },
    Schedule { new: NewEvent, actor: Actor, reply: Reply<Event> },
    GetEvent { id: EventId, reply: Reply<Event> },
    Publish { reply: Reply<()> },
    ListEvents { reply: Reply<Arc<Vec<Arc<Event>>>> },
    Act { id: EventId, action: Action, by: Option<chrono::Duration>, actor: Actor, reply: Reply<Event> },
    SwitchSource { id: EventId, choice: SourceChoice, actor: Actor, reply: Reply<Event> },
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
    TestAlert { actor: Actor, reply: Reply<crate::alerts::Alert> },
    Shutdown { reply: oneshot::Sender<()> },
}

impl Command {
    /// Answers the command with `e()` without doing it.
    fn refuse(self, e: impl Fn() -> CoordError) {
        match self {
            Command::CreateChannel { reply, .. } | Command::UpdateChannel { reply, .. } => drop(reply.send(Err(e()))),
            Command::DeleteChannel { reply, .. } | Command::DeleteSchedule { reply, .. } => drop(reply.send(Err(e()))),
            Command::Publish { reply } => drop(reply.send(Err(e()))),
            Command::Schedule { reply, .. }
            | Command::GetEvent { reply, .. }
            | Command::Act { reply, .. }
            | Command::SwitchSource { reply, .. } => drop(reply.send(Err(e()))),
            Command::ListEvents { reply } => drop(reply.send(Err(e()))),
            Command::AirTimes { reply, .. } => drop(reply.send(Err(e()))),
            Command::StartRehearsal { reply, .. } | Command::GetRehearsal { reply, .. } => drop(reply.send(Err(e()))),
            Command::ListRehearsals { reply, .. } => drop(reply.send(Err(e()))),
            Command::ScheduleRehearsal { reply, .. } => drop(reply.send(Err(e()))),
            Command::ListSchedules { reply, .. } => drop(reply.send(Err(e()))),
            Command::ScheduleBreak { reply, .. } | Command::ListBreaks { reply, .. } => drop(reply.send(Err(e()))),
            Command::CancelBreak { reply, .. } => drop(reply.send(Err(e()))),
            Command::TestAlert { reply, .. } => drop(reply.send(Err(e()))),
            Command::Shutdown { reply } => drop(reply.send(())),
        }
    }

    /// What the loop's turn accounting calls it.
    fn name(&self) -> &'static str {
        match self {
            Command::CreateChannel { .. } => "command:create-channel",
            Command::UpdateChannel { .. } => "command:update-channel",
            Command::DeleteChannel { .. } => "command:delete-channel",
            Command::Schedule { .. } => "command:schedule",
            Command::GetEvent { .. } => "command:get-event",
            Command::Publish { .. } => "command:publish",
            Command::ListEvents { .. } => "command:list-events",
            Command::Act { action, .. } => match action {
                Action::Arm => "command:arm",
                Action::Take => "command:take",
                Action::Hold => "command:hold",
                Action::Extend => "command:extend",
                Action::End => "command:end",
                Action::Abort => "command:abort",
                Action::Cancel => "command:cancel",
                Action::Finish => "command:finish",
            },
            Command::SwitchSource { .. } => "command:switch-source",
            Command::AirTimes { .. } => "command:air-times",
            Command::StartRehearsal { .. } => "command:start-rehearsal",
            Command::GetRehearsal { .. } => "command:get-rehearsal",
            Command::ListRehearsals { .. } => "command:list-rehearsals",
            Command::ScheduleRehearsal { .. } => "command:schedule-rehearsal",
            Command::ListSchedules { .. } => "command:list-schedules",
            Command::DeleteSchedule { .. } => "command:delete-schedule",
            Command::ScheduleBreak { .. } => "command:schedule-break",
            Command::ListBreaks { .. } => "command:list-breaks",
            Command::CancelBreak { .. } => "command:cancel-break",
            Command::TestAlert { .. } => "command:test-alert",
            Command::Shutdown { .. } => "command:shutdown",
        }
    }
}

/// A handle on the coordinator; cheap to clone.
#[derive(Debug, Clone)]
pub struct Coordinator {
    tx: mpsc::Sender<Command>,
    status: watch::Receiver<Arc<Snapshot>>,
    /// What reads the store beside the loop (see [`Coordinator::read`]).
    reads: Arc<Store>,
}

impl Coordinator {
    /// Starts the coordinator task over `store`. An event the store holds in
    /// a live state (the daemon was killed mid-event) is resumed: moved to
    /// where the clock says it should be, its legs rebuilt, and the restart
    /// written to its as-run log.
    /// Alerts are delivered by a task it starts, and stops with it.
    pub fn start(store: impl Into<Arc<Store>>, options: Options) -> (Self, tokio::task::JoinHandle<()>) {
        let store = store.into();
        let reads = match store.reader() {
            Some(Ok(reader)) => Arc::new(reader),
            Some(Err(e)) => {
                warn!(error = %e, "No reading connection to the store; reads share the coordinator's.");
                Arc::clone(&store)
            }
            None => Arc::clone(&store),
        };
        let (tx, rx) = mpsc::channel(256);
        let (status_tx, status) = watch::channel(Arc::new(Snapshot::initial()));
        let (started_tx, started_rx) = mpsc::unbounded_channel();
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let alerting = alerting::Alerting::start(&store, &options.alerts);
        let state = State {
            writer: Writer::start(Arc::clone(&store)),
            batch: std::sync::Mutex::default(),
            failed_tx,
            observed_again: Vec::new(),
            observed_tried: None,
            write_failures: Arc::default(),
            channels: Vec::new(),
            store,
            alerting,
            options,
            events: BTreeMap::new(),
            listed: BTreeMap::new(),
            events_arc: Arc::default(),
            running: None,
            status: status_tx,
            seq: 0,
            published_at: tokio::time::Instant::now(),
            publish_due: None,
            arm_failure: None,
            rehearsal: None,
            verdicts: Arc::default(),
            schedules: Vec::new(),
            breaks: Arc::default(),
            unreadable: BTreeMap::new(),
            stopping: None,
            stopped: Arc::default(),
            starting: None,
            started_tx,
            loop_times: Arc::default(),
            leads: false,
            fence: None,
            take_over_again: None,
        };
        let task = tokio::spawn(state.run(rx, started_rx, failed_rx));
        (Self { tx, status, reads }, task)
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

    /// [`Coordinator::subscribe`], its first snapshot holding every change
    /// answered before this call (one still waiting for the end of its
    /// [`PUBLISH_GAP`] is published first): a client that schedules a
    /// break and then opens a watch sees the break at once.
    pub async fn subscribe_fresh(&self) -> Result<watch::Receiver<Arc<Snapshot>>, CoordError> {
        self.ask(|reply| Command::Publish { reply }).await?;
        Ok(self.subscribe())
    }

    /// Adds a channel.
    pub async fn create_channel(&self, channel: Channel, actor: &str) -> Result<Channel, CoordError> {
        let actor = Actor::Token(actor.to_owned());
        self.ask(|reply| Command::CreateChannel { channel, actor, reply }).await
    }

    /// Reads the store on a blocking task, beside the coordinator's loop
    /// (its own connection where the store is a file): a long read, an
    /// as-run log of thousands of entries, holds up no command.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, CoordError> + Send + 'static,
    ) -> Result<T, CoordError> {
        let store = Arc::clone(&self.reads);
        tokio::task::spawn_blocking(move || f(&store)).await.map_err(|_| CoordError::Stopped)?
    }

    /// One channel.
    pub async fn channel(&self, id: ChannelId) -> Result<Channel, CoordError> {
        self.read(move |s| s.channel(&id)?.ok_or_else(|| not_found(&id))).await
    }

    /// Every channel.
    pub async fn channels(&self) -> Result<Vec<Channel>, CoordError> {
        self.read(|s| Ok(s.channels()?)).await
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
    pub async fn events(&self) -> Result<Arc<Vec<Arc<Event>>>, CoordError> {
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
        self.read(move |s| {
            let all = s.asrun_pictures(&event_id)?;
            Ok(all.into_iter().map(|(id, kind, channel_id, utc)| AsRunPicture { id, kind, channel_id, utc }).collect())
        })
        .await
    }

    /// As-run picture `id`: (its event, when it was taken, the JPEG).
    pub async fn asrun_picture(&self, id: i64) -> Result<(String, String, Vec<u8>), CoordError> {
        self.read(move |s| s.asrun_picture(id)?.ok_or_else(|| CoordError::NotFound(format!("no as-run picture {id}"))))
            .await
    }

    /// The as-run log of an event ([`SYSTEM_EVENT`] for channel changes).
    /// An event the store cannot read has its entries (`event-unreadable`
    /// first); an id with none and no event is not found.
    pub async fn asrun(&self, event_id: &str) -> Result<Vec<AsRunEntry>, CoordError> {
        Ok(self.asrun_page(event_id, 0, usize::MAX).await?.into_iter().map(|(_, e)| e).collect())
    }

    /// The newest `n` entries of an event's as-run log, oldest first.
    pub async fn asrun_tail(&self, event_id: &str, n: usize) -> Result<Vec<AsRunEntry>, CoordError> {
        let event_id = event_id.to_owned();
        let scheduled = self.status.borrow().events.iter().any(|e| e.id.0 == event_id);
        self.read(move |s| {
            let tail = s.asrun_tail(&event_id, n)?;
            if tail.is_empty() && !scheduled && event_id != SYSTEM_EVENT {
                return Err(event_not_found(&EventId(event_id)));
            }
            Ok(tail)
        })
        .await
    }

    /// Up to `limit` entries of an event's as-run log after the one
    /// numbered `after` (0: from the start), each with its number.
    pub async fn asrun_page(
        &self,
        event_id: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, AsRunEntry)>, CoordError> {
        let event_id = event_id.to_owned();
        let scheduled = self.status.borrow().events.iter().any(|e| e.id.0 == event_id);
        self.read(move |s| {
            let page = s.asrun_page(&event_id, after, limit)?;
            if page.is_empty() && after == 0 && !scheduled && event_id != SYSTEM_EVENT {
                return Err(event_not_found(&EventId(event_id)));
            }
            Ok(page)
        })
        .await
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
        self.read(move |s| Ok(s.alerts(limit)?)).await
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
    /// What each leg has shown so far (the fold rehearsals use too): its
    /// first programme picture (logged as `leg-program` with its T0 error,
    /// measured once; a leg logged so before a restart starts as
    /// returned), and each later return (`leg-program-resumed`).
    seen: BTreeMap<String, LegSeen>,
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
    /// Cluster mode: the legs other nodes carry, by node.
    remote: BTreeMap<String, Vec<Channel>>,
}

/// How long legs have after they start before one not on air near its air
/// time raises `leg-not-on-air` (connecting takes a moment).
pub const NOT_ON_AIR_GRACE: Duration = Duration::from_secs(10);

struct State {
    /// Read by the loop only at start; every other store access goes
    /// through `writer`.
    store: Arc<Store>,
    /// The store's writer (see `writes.rs`).
    writer: Writer,
    /// This turn's writes, handed to the writer at its end.
    batch: std::sync::Mutex<Vec<writes::Write>>,
    /// Where the writer says a write failed.
    failed_tx: mpsc::UnboundedSender<writes::Lost>,
    /// Observed as-run entries etcd refused, to append again.
    observed_again: Vec<writes::Observed>,
    /// When those were last tried.
    observed_tried: Option<std::time::Instant>,
    /// Writes that failed (counted by the writer).
    write_failures: Arc<std::sync::atomic::AtomicU64>,
    /// Every channel, as stored, in the store's order (creation).
    channels: Vec<Channel>,
    alerting: alerting::Alerting,
    options: Options,
    events: BTreeMap<String, Event>,
    /// The events as clients read them, by T0, each shared until it
    /// changes: a change to one event copies that event alone.
    listed: BTreeMap<(DateTime<Utc>, String), Arc<Event>>,
    /// `listed` in order, shared with every snapshot until an event changes.
    events_arc: Arc<Vec<Arc<Event>>>,
    running: Option<Running>,
    status: watch::Sender<Arc<Snapshot>>,
    seq: u64,
    /// When the last snapshot was published.
    published_at: tokio::time::Instant,
    /// When a change made since then is to be published (the end of
    /// [`PUBLISH_GAP`] after the last publication), if one waits.
    publish_due: Option<tokio::time::Instant>,
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
    /// The relay being started off the loop, if one is, and where the
    /// media side says it has.
    starting: Option<Starting>,
    started_tx: mpsc::UnboundedSender<Started>,
    /// How long each turn of the loop took, by what it did.
    loop_times: Arc<busy::LoopTimes>,
    /// Whether master control runs here: always in single-node mode; in
    /// cluster mode while this node leads and holds the shared state.
    leads: bool,
    /// Cluster mode: the election key (and term) master control runs under here.
    fence: Option<crate::cluster::Lead>,
    /// Cluster mode: elected, but taking the shared state failed; when to
    /// try again.
    take_over_again: Option<tokio::time::Instant>,
}

/// How long an elected node waits before taking the shared state again
/// after it failed to (etcd away).
const TAKE_OVER_AGAIN: Duration = Duration::from_secs(2);

impl State {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut started: mpsc::UnboundedReceiver<Started>,
        mut failed: mpsc::UnboundedReceiver<writes::Lost>,
    ) {
        let mut leading = self.options.leading.clone();
        match &mut leading {
            None => {
                self.leads = true;
                if let Err(e) = self.resume().await {
                    error!(error = %e, "Cannot read events from the store; the schedule is empty until it can.");
                }
            }
            Some(l) => {
                info!("Cluster mode: master control runs on the leader; this node waits to be elected.");
                let key = l.borrow_and_update().clone();
                self.leadership(key, &mut started).await;
            }
        }
        self.flush();
        self.publish();
        let mut tick = tokio::time::interval(self.options.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let stopped = Arc::clone(&self.stopped);
        let mut alive = self.options.placement.as_ref().map(crate::cluster::carry::Placement::alive);
        loop {
            let publish_due = self.publish_due;
            tokio::select! {
                Some(()) = async {
                    match &mut alive {
                        Some(a) => a.changed().await.ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    // A node joined or left: its legs move now.
                    if self.leads {
                        let at = std::time::Instant::now();
                        self.tend_placement();
                        self.flush();
                        self.loop_times.turn("nodes-changed", at);
                    }
                }
                _ = stopped.notified() => {
                    let at = std::time::Instant::now();
                    self.finish_stop().await;
                    // A relay waiting for this one to be gone starts now.
                    self.launch_start();
                    self.changed();
                    self.flush();
                    self.loop_times.turn("relay-stopped", at);
                }
                Some(why) = failed.recv() => {
                    let at = std::time::Instant::now();
                    self.store_failed(why).await;
                    self.flush();
                    self.loop_times.turn("store-failed", at);
                }
                _ = tokio::time::sleep_until(publish_due.unwrap_or_else(tokio::time::Instant::now)),
                    if publish_due.is_some() => {
                    let at = std::time::Instant::now();
                    self.publish();
                    self.loop_times.turn("publish", at);
                }
                Some(s) = started.recv() => {
                    let at = std::time::Instant::now();
                    self.relay_started(s).await;
                    self.flush();
                    self.loop_times.turn("relay-started", at);
                }
                Some(key) = async {
                    match &mut leading {
                        Some(l) => {
                            // A take-over that failed is tried again.
                            let again = self.take_over_again;
                            tokio::select! {
                                r = l.changed() => r.ok().map(|()| l.borrow_and_update().clone()),
                                () = async {
                                    match again {
                                        Some(at) => tokio::time::sleep_until(at).await,
                                        None => std::future::pending().await,
                                    }
                                } => Some(l.borrow().clone()),
                            }
                        }
                        None => std::future::pending().await,
                    }
                } => {
                    self.take_over_again = None;
                    let at = std::time::Instant::now();
                    self.leadership(key, &mut started).await;
                    self.flush();
                    self.loop_times.turn("leadership", at);
                }
                cmd = rx.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.shut_down(&mut started).await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(cmd) if !self.leads => {
                        let leader = "this node does not run master control now (cluster mode: it is not the leader, \
                                      or lost its lease); ask again: a follower forwards to the leader";
                        cmd.refuse(|| CoordError::Unavailable(leader.to_owned()));
                    }
                    Some(cmd) => {
                        let (at, work) = (std::time::Instant::now(), cmd.name());
                        // A write that failed is read back first: the
                        // client told of it then sees the store's state.
                        while let Ok(why) = failed.try_recv() {
                            self.store_failed(why).await;
                        }
                        self.handle(cmd).await;
                        self.flush();
                        self.loop_times.turn(work, at);
                    }
                    None => {
                        self.shut_down(&mut started).await;
                        break;
                    }
                },
                _ = tick.tick() => {
                    let started = std::time::Instant::now();
                    let changed = self.on_tick().await;
                    // Due on the tick nearest `status_every`: the last
                    // publish came a moment after its tick, so "at least
                    // 500 ms" would miss the 500 ms tick and wait for the
                    // next one (watchers saw 750 ms gaps).
                    let due = self.options.status_every.saturating_sub(self.options.tick / 2);
                    if changed || self.published_at.elapsed() >= due {
                        self.publish();
                    }
                    self.flush();
                    self.loop_times.turn("tick", started);
                }
            }
        }
    }

    /// At shutdown: the rehearsal, the relay and the alert deliverer
    /// stopped, and every write asked for committed.
    async fn shut_down(&mut self, started: &mut mpsc::UnboundedReceiver<Started>) {
        self.abandon_start(started).await;
        self.stop_rehearsal("the daemon stopped").await;
        self.stop_relay(Kind::DaemonStopped, "simulcastd stopped; legs closed").await;
        self.flush();
        self.writer.close().await;
        self.alerting.stop().await;
    }

    /// Cluster mode: leadership won (`Some`, with the election key) or lost.
    /// Won: the shared state is taken from etcd into the store, then loaded
    /// as at a restart (a live event resumes here). Lost: nothing written
    /// here is shared any more, the relay and any rehearsal stop, and
    /// memory is emptied: a follower runs nothing. The same term again
    /// (the node kept leading on its peers' word while etcd was away, and
    /// etcd answers again, or it won again before that word ran out): the
    /// shared state is read again from etcd, under the new key if any,
    /// and the relay runs on.
    async fn leadership(&mut self, lead: Option<crate::cluster::Lead>, started: &mut mpsc::UnboundedReceiver<Started>) {
        if lead == self.fence {
            return;
        }
        // The same term: taken again from etcd (a new key, or etcd back
        // after failsafe), the relay running on.
        if let (true, Some(old), Some(new)) = (self.leads, &self.fence, &lead)
            && old.term == new.term
        {
            let held = new.key.clone();
            match self.writer.call(move |s| s.take_over(held)).await {
                Some(Ok(what)) => {
                    info!(what = %what, "This node leads on, without a lapse (etcd answers again): the shared state was read again from etcd; its legs ran on.");
                    self.fence = lead;
                    self.read_back().await;
                    self.changed();
                    return;
                }
                Some(Err(e)) => {
                    // Writes under the old key are refused meanwhile (it
                    // is gone from etcd); the legs run on.
                    warn!(error = %e, "etcd answers again, but the shared state cannot be read from it yet; trying again in 2 s.");
                    self.take_over_again = Some(tokio::time::Instant::now() + TAKE_OVER_AGAIN);
                    return;
                }
                None => {}
            }
        }
        // Lost, or won again under another election key (a lease lost and
        // taken anew between two looks): what runs under the old key stops.
        if self.leads {
            self.store.follow();
            self.leads = false;
            self.fence = None;
            warn!("This node no longer leads: master control stops here (the new leader resumes it).");
            self.abandon_start(started).await;
            self.stop_rehearsal("this node no longer leads").await;
            self.stop_relay(Kind::LegsClosed, "this node no longer leads; the new leader takes the legs").await;
            if let Some(p) = &self.options.placement {
                // The next leader decides; nothing more is put from here.
                p.want(None);
            }
            self.forget();
        }
        if let Some(fence) = lead {
            let held = fence.key.clone();
            match self.writer.call(move |s| s.take_over(held)).await {
                Some(Ok(what)) => {
                    info!(what = %what, "This node leads: master control runs here.");
                    self.leads = true;
                    self.fence = Some(fence);
                    self.forget();
                    if let Err(e) = self.resume().await {
                        error!(error = %e, "Cannot read events from the store; the schedule is empty until it can.");
                    }
                }
                Some(Err(e)) => {
                    error!(error = %e, "Elected, but the shared state cannot be taken: master control does not run here; trying again in 2 s.");
                    self.take_over_again = Some(tokio::time::Instant::now() + TAKE_OVER_AGAIN);
                }
                None => {}
            }
        }
        self.changed();
    }

    /// Empties what memory holds of the store (a follower's state).
    fn forget(&mut self) {
        if !self.observed_again.is_empty() {
            error!(
                lost = self.observed_again.len(),
                "As-run entries kept for etcd are lost: this node no longer runs master control."
            );
            self.observed_again.clear();
        }
        self.events.clear();
        self.channels.clear();
        self.schedules.clear();
        self.breaks = Arc::default();
        self.verdicts = Arc::default();
        self.unreadable.clear();
        self.refresh_events();
    }

    /// Loads events; an event found live means the daemon died mid-event.
    async fn resume(&mut self) -> Result<(), CoordError> {
        self.channels = self.store.channels()?;
        let (events, unreadable) = self.store.events()?;
        for e in events {
            self.events.insert(e.id.0.clone(), e);
        }
        for bad in unreadable {
            error!(error = %bad, "A stored event cannot be read: it is left out of the schedule (and left in the store); every other event is loaded.");
            if let StoreError::Corrupt { id, reason } = &bad {
                self.log(id, Kind::EventUnreadable, format!("{reason}; left out of the schedule"), &Actor::Daemon);
                self.unreadable.insert(id.clone(), reason.clone());
            }
        }
        self.schedules = self.store.schedules()?;
        self.breaks = Arc::new(self.store.breaks()?);
        // A rehearsal the store holds unfinished died with the daemon.
        for mut r in self.store.rehearsals(None)?.into_iter().filter(|r| r.phase != crate::rehearsal::Phase::Finished) {
            crate::rehearsal::conclude(&mut r, Some("the daemon stopped during it"), self.options.clock.now());
            self.save_rehearsal(&r);
            let detail = format!("{}: {}", r.id, r.summary);
            let e =
                entry(self.options.clock.now(), &r.event_id, "", None, Kind::RehearsalFinished, detail, &Actor::Daemon);
            self.record_raising(&e, Some(crate::alerts::Cause::RehearsalFailed));
        }
        self.flush();
        self.load_verdicts().await;
        self.refresh_events();
        let live: Vec<Event> = self.events.values().filter(|e| e.state.is_live()).cloned().collect();
        for e in live {
            let detail = match &self.options.node {
                Some(n) => format!("node {n} took over as leader while the event was {}; resuming", e.state),
                None => format!("simulcastd started again while the event was {}; resuming", e.state),
            };
            warn!(event = %e.id, state = %e.state, "Resuming an event after a restart.");
            self.log(&e.id.0, Kind::DaemonRestarted, detail, &Actor::Daemon);
        }
        self.step_clock().await;
        // The clock may have ended the event (or be starting its relay);
        // if not, its legs come back, built off the loop.
        let idle = self.running.is_none() && self.starting.is_none();
        if let Some(e) = self.events.values().find(|e| e.state.is_live()).filter(|_| idle).cloned() {
            match self.start_relay(&e, Then::Resume).await {
                Ok(true) => {}
                Ok(false) => self.resumed(&e.id, Ok(())),
                Err(err) => self.resumed(&e.id, Err(err)),
            }
        }
        Ok(())
    }

    /// A resumed event's legs are rebuilt, or cannot be: said in its log.
    fn resumed(&mut self, id: &EventId, result: Result<(), CoordError>) {
        match result {
            Ok(()) => {
                if let Some(e) = self.events.get(&id.0).cloned() {
                    self.update_cue(&e);
                }
                let mut detail = format!("{} leg(s) rebuilt", self.running.as_ref().map_or(0, |r| r.zones.len()));
                if let Some(n) = &self.options.node {
                    detail += &format!(" on node {n}");
                }
                self.log(&id.0, Kind::LegsRebuilt, detail, &Actor::Daemon);
            }
            Err(err) => {
                error!(event = %id, error = %err, "Cannot rebuild the legs of a resumed event.");
                self.log(&id.0, Kind::RelayFailed, err.to_string(), &Actor::Daemon);
            }
        }
        self.publish();
    }

    /// At shutdown: a relay being started is waited for and stopped, and
    /// whoever waits for it is told the daemon stopped.
    async fn abandon_start(&mut self, started: &mut mpsc::UnboundedReceiver<Started>) {
        let Some(s) = self.starting.take() else { return };
        if s.launched()
            && let Some(answer) = started.recv().await
        {
            answer.stop().await;
        }
        if let Then::Apply { reply: Some(reply), .. } = s.then {
            let _ = reply.send(Err(CoordError::Stopped));
        }
    }

    /// Appends an event-wide as-run entry (with this turn's writes).
    fn log(&self, event_id: &str, kind: Kind, detail: String, actor: &Actor) {
        let now = self.options.clock.now();
        self.record(&entry(now, event_id, "", None, kind, detail, actor), kind);
    }

    /// Lists every event again (after they were all read or dropped).
    fn refresh_events(&mut self) {
        self.listed = self.events.values().map(|e| ((e.on_air, e.id.0.clone()), Arc::new(e.clone()))).collect();
        self.events_arc = Arc::new(self.listed.values().cloned().collect());
    }

    /// Lists `event` (new, or in place of `old`), sharing every other one.
    fn refresh_event(&mut self, event: &Event, old: Option<Event>) {
        if let Some(old) = old {
            self.listed.remove(&(old.on_air, old.id.0));
        }
        self.listed.insert((event.on_air, event.id.0.clone()), Arc::new(event.clone()));
        self.events_arc = Arc::new(self.listed.values().cloned().collect());
    }

    /// Publishes a change: now, or, within [`PUBLISH_GAP`] of the last
    /// publication, at the end of that gap, one snapshot for every change
    /// made meanwhile. However fast commands come, the watchers get at most
    /// one snapshot per gap for them (a burst of five Extends is one
    /// snapshot, not five sent to every watcher).
    fn changed(&mut self) {
        let next = self.published_at + PUBLISH_GAP;
        if tokio::time::Instant::now() >= next {
            self.publish();
        } else {
            self.publish_due.get_or_insert(next);
        }
    }

    fn publish(&mut self) {
        self.published_at = tokio::time::Instant::now();
        self.publish_due = None;
        self.seq += 1;
        let live = self.running.as_ref().and_then(|r| r.relay.as_ref().map(|relay| (r, relay))).map(|(r, relay)| {
            let mut s = relay.status();
            let mut nodes: BTreeMap<String, String> = BTreeMap::new();
            for (node, leg) in placing::remote_legs(&r.event_id.0, &r.remote, self.options.placement.as_ref()) {
                nodes.insert(leg.channel_id.clone(), node);
                s.legs.push(leg);
            }
            Live {
                meters: Arc::new(relay.meters()),
                thumbnails: relay.thumbnails(),
                node: self.options.node.clone(),
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
                        let t0_error_s = r
                            .seen
                            .get(&status.channel_id)
                            .and_then(LegSeen::first_program_error_ms)
                            .map(|ms| ms / 1000.0);
                        let (name, country) = r.labels.get(&status.channel_id).cloned().unwrap_or_default();
                        let delay = r
                            .delays
                            .iter()
                            .find(|(id, _)| *id == status.channel_id)
                            .map_or(Duration::ZERO, |(_, d)| *d);
                        let node = nodes.get(&status.channel_id).cloned().or_else(|| self.options.node.clone());
                        LegView { status, timezone, t0_error_s, name, country, delay, node }
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
            store_write_failures: self.write_failures.load(std::sync::atomic::Ordering::Relaxed),
            alerts: Arc::clone(&self.alerting.counters),
            breaks: Arc::clone(&self.breaks),
            asrun_written: self.store.asrun_written(),
            loop_times: Arc::clone(&self.loop_times),
        }));
    }

    /// Answers one command; a change is published after the answer.
    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::CreateChannel { channel, actor, reply } => {
                let r = self.create_channel(channel, &actor);
                self.answer(reply, r);
            }
            Command::UpdateChannel { channel, actor, reply } => {
                let r = self.update_channel(channel, &actor);
                self.answer(reply, r);
            }
            Command::DeleteChannel { id, actor, reply } => {
                let r = self.delete_channel(&id, &actor);
                self.answer(reply, r);
            }
            Command::Schedule { new, actor, reply } => {
                let r = self.schedule(new, &actor);
                self.answer_change(reply, r);
            }
            Command::GetEvent { id, reply } => {
                let _ = reply.send(self.get(&id));
            }
            Command::Publish { reply } => {
                if self.publish_due.is_some() {
                    self.publish();
                }
                let _ = reply.send(Ok(()));
            }
            Command::ListEvents { reply } => {
                // Shared, not copied: the caller's task converts it.
                let _ = reply.send(Ok(Arc::clone(&self.events_arc)));
            }
            Command::Act { id, action, by, actor, reply } => {
                let r = match action {
                    Action::Extend => self.extend(&id, by, &actor),
                    _ => match self.apply(&id, action, &actor, String::new()).await {
                        Ok(Applied::Done(e)) => Ok(e),
                        Ok(Applied::Starting) => {
                            // Answered when the relay runs (or cannot).
                            if let Some(Starting { then: Then::Apply { reply: waiting, .. }, .. }) = &mut self.starting
                            {
                                *waiting = Some(reply);
                            }
                            return;
                        }
                        Err(e) => Err(e),
                    },
                };
                self.answer_change(reply, r);
            }
            Command::SwitchSource { id, choice, actor, reply } => {
                let r = self.switch_source(&id, choice, &actor);
                self.answer_change(reply, r);
            }
            Command::AirTimes { id, reply } => {
                let _ = reply.send(self.air_times(&id));
            }
            Command::StartRehearsal { id, plan, actor, reply } => {
                let r = self.start_rehearsal(&id, plan, &actor);
                self.answer_change(reply, r);
            }
            Command::GetRehearsal { id, reply } => self.rehearsal_report(id, reply),
            Command::ListRehearsals { event_id, reply } => self.rehearsal_reports(event_id, reply),
            Command::ScheduleRehearsal { new, actor, reply } => {
                let r = self.schedule_rehearsal(new, &actor);
                self.answer(reply, r);
            }
            Command::ListSchedules { event_id, reply } => {
                let v = self.schedules.iter().filter(|s| event_id.as_ref().is_none_or(|e| *e == s.event_id)).cloned();
                let _ = reply.send(Ok(v.collect()));
            }
            Command::DeleteSchedule { id, actor, reply } => {
                let r = self.delete_schedule(&id, &actor);
                self.answer(reply, r);
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
            Command::TestAlert { actor, reply } => {
                let r = Ok(self.test_alert(actor.name()));
                self.answer(reply, r);
            }
            // run() answers Shutdown itself, after stopping the relay.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    /// Answers a command that may have changed state, then publishes the
    /// change ([`State::changed`]: at once, or with the others of the same
    /// [`PUBLISH_GAP`]). The caller is woken first: published first, it
    /// waited behind every watcher's task (200 watchers: Hold p50 10.3 ms,
    /// 1.6 ms without them; GetEvent, which publishes nothing, 0.4 ms).
    /// A command after it reads the loop's state, never the snapshot.
    /// The answer waits for the command's writes ([`State::answer`]).
    fn answer_change<T: Send + 'static>(&mut self, reply: Reply<T>, r: Result<T, CoordError>) {
        let changed = r.is_ok();
        self.answer(reply, r);
        if changed {
            self.changed();
        }
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
        if let Some(why) = config::port_clash(channel, &self.channel_list()) {
            errs.push(FieldError { key: "ingest.uri".into(), message: why });
        }
        if let Some(why) = self.options.file_leg_refused(channel) {
            errs.push(FieldError { key: "ingest.path".into(), message: why });
        }
        if errs.is_empty() { Ok(()) } else { Err(CoordError::Invalid(errs)) }
    }

    /// The stored channel `id`, if there is one.
    fn channel(&self, id: &ChannelId) -> Option<Channel> {
        self.channels.iter().find(|c| c.id == *id).cloned()
    }

    /// Every stored channel.
    fn channel_list(&self) -> Vec<Channel> {
        self.channels.clone()
    }

    fn create_channel(&mut self, channel: Channel, actor: &Actor) -> Result<Channel, CoordError> {
        if self.channels.iter().any(|c| c.id == channel.id) {
            return Err(CoordError::AlreadyExists(format!("channel `{}` exists already", channel.id)));
        }
        self.fits_beside_others(&channel)?;
        let stored = channel.clone();
        self.write(format!("channel `{}` created", channel.id), move |s| {
            writes::done_or_conflict(s.insert_channel(&stored)?, || {
                format!("channel `{}` is stored already", stored.id)
            })
        });
        self.record_channel(&channel, Kind::ChannelCreated, describe(&channel), actor);
        self.channels.push(channel.clone());
        Ok(channel)
    }

    fn update_channel(&mut self, mut channel: Channel, actor: &Actor) -> Result<Channel, CoordError> {
        let old = self.channel(&channel.id).ok_or_else(|| not_found(&channel.id))?;
        if let Some(e) = self.live_event_with(&channel.id) {
            return Err(CoordError::FailedPrecondition(format!(
                "channel `{}` is on air in event {} ({}); change it after the event",
                channel.id, e.id, e.state
            )));
        }
        channel.keep_secrets(&old);
        self.fits_beside_others(&channel)?;
        let stored = channel.clone();
        self.write(format!("channel `{}` updated", channel.id), move |s| {
            writes::done_or_conflict(s.update_channel(&stored)?, || format!("channel `{}` is not stored", stored.id))
        });
        self.record_channel(&channel, Kind::ChannelUpdated, describe(&channel), actor);
        if let Some(c) = self.channels.iter_mut().find(|c| c.id == channel.id) {
            *c = channel.clone();
        }
        Ok(channel)
    }

    fn delete_channel(&mut self, id: &ChannelId, actor: &Actor) -> Result<(), CoordError> {
        let ch = self.channel(id).ok_or_else(|| not_found(id))?;
        if let Some(e) = self.live_event_with(id) {
            return Err(CoordError::FailedPrecondition(format!(
                "channel `{id}` is on air in event {} ({}); delete it after the event",
                e.id, e.state
            )));
        }
        let gone = id.clone();
        self.write(format!("channel `{id}` deleted"), move |s| {
            writes::done_or_conflict(s.delete_channel(&gone)?, || format!("channel `{gone}` is not stored"))
        });
        self.record_channel(&ch, Kind::ChannelDeleted, String::new(), actor);
        self.channels.retain(|c| c.id != *id);
        Ok(())
    }

    /// Writes an as-run entry about a channel, with the channel's change:
    /// the caller hears "done" once both are committed.
    fn record_channel(&self, ch: &Channel, kind: Kind, detail: String, actor: &Actor) {
        let e = entry(self.options.clock.now(), SYSTEM_EVENT, ch.id.as_str(), Some(ch.timezone), kind, detail, actor);
        self.record(&e, kind);
    }

    fn schedule(&mut self, new: NewEvent, actor: &Actor) -> Result<Event, CoordError> {
        let channels = self.channel_list();
        let refuses = |c: &Channel| self.options.refuses(c);
        let cx = schedule::request::Context {
            now: self.options.clock.now(),
            channels: &channels,
            refuses: &refuses,
            retention: self.options.retention,
        };
        let event = schedule::request::check(&new, new_event_id(), &cx).map_err(CoordError::Invalid)?;
        if self.events.contains_key(&event.id.0) {
            return Err(CoordError::AlreadyExists(format!("event {} exists already", event.id)));
        }
        let stored = event.clone();
        self.write(format!("event {} scheduled", event.id), move |s| {
            writes::done_or_conflict(s.insert_event(&stored)?, || format!("event {} is stored already", stored.id))
        });
        let detail = format!(
            "\"{}\" at {} for {}, {} leg(s), preroll {}, postroll {}",
            event.title,
            utc_text(event.on_air),
            config::uri::format_duration(event.duration),
            event.channel_ids.len(),
            config::uri::format_duration(event.preroll),
            config::uri::format_duration(event.postroll),
        );
        self.log(&event.id.0, Kind::Scheduled, detail, actor);
        info!(event = %event.id, on_air = %utc_text(event.on_air), legs = event.channel_ids.len(), "Event scheduled.");
        let old = self.events.insert(event.id.0.clone(), event.clone());
        self.refresh_event(&event, old);
        Ok(event)
    }

    fn schedule_break(&mut self, new: NewBreak, actor: &Actor) -> Result<Vec<AdBreak>, CoordError> {
        let event = self.get(&new.event_id)?;
        let mut channels = Vec::new();
        for id in &event.channel_ids {
            channels.extend(self.channel(id).filter(|c| c.enabled));
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
        let stored = made.clone();
        self.write(format!("{} break(s) of event {}", made.len(), event.id), move |s| s.insert_breaks(&stored, &e));
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
        let gone = id.to_owned();
        self.write(format!("break {id} cancelled"), move |s| {
            writes::done_or_conflict(s.delete_break(&gone, &e)?, || format!("break {gone} is not stored"))
        });
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
            // A backup leg has its channel's breaks.
            let id = ChannelId::parse(config::main_of(channel)).ok();
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
            if let Some(ch) = self.channel(cid) {
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

    /// Updates memory and asks for `event` to be stored with the entry
    /// explaining it.
    fn save(&mut self, event: Event, e: AsRunEntry) -> Event {
        let stored = event.clone();
        self.write(format!("event {} ({}): {}", event.id, event.state, e.detail), move |s| s.update_event(&stored, &e));
        let old = self.events.insert(event.id.0.clone(), event.clone());
        self.refresh_event(&event, old);
        event
    }
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
