//! The coordinator: the one owner of mutable state. API services send it
//! commands over a channel and await the answer; it applies the rules, writes
//! the store and the as-run log, and nothing else changes state.
//!
//! Built so far: partner channels and the as-run log. Events, master control
//! and status fan-out come with the rest of the control plane.

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Channel, ChannelId, FieldError, Ingest};
use crate::store::{AsRunEntry, Store, StoreError};

/// As-run entries about the daemon and its channels, not one event, use this
/// event id.
pub const SYSTEM_EVENT: &str = "-";

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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The coordinator is gone (shutting down).
    #[error("the coordinator has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, CoordError>>;

enum Command {
    CreateChannel { channel: Channel, actor: String, reply: Reply<Channel> },
    GetChannel { id: ChannelId, reply: Reply<Channel> },
    ListChannels { reply: Reply<Vec<Channel>> },
    UpdateChannel { channel: Channel, actor: String, reply: Reply<Channel> },
    DeleteChannel { id: ChannelId, actor: String, reply: Reply<()> },
    AsRun { event_id: String, reply: Reply<Vec<AsRunEntry>> },
}

/// A handle on the coordinator; cheap to clone.
#[derive(Debug, Clone)]
pub struct Coordinator {
    tx: mpsc::Sender<Command>,
}

impl Coordinator {
    /// Starts the coordinator task over `store`.
    pub fn start(store: Store) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(State { store }.run(rx));
        (Self { tx }, task)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, CoordError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| CoordError::Stopped)?;
        rx.await.map_err(|_| CoordError::Stopped)?
    }

    /// Adds a channel.
    pub async fn create_channel(&self, channel: Channel, actor: &str) -> Result<Channel, CoordError> {
        let actor = actor.to_owned();
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
        let actor = actor.to_owned();
        self.ask(|reply| Command::UpdateChannel { channel, actor, reply }).await
    }

    /// Deletes a channel.
    pub async fn delete_channel(&self, id: ChannelId, actor: &str) -> Result<(), CoordError> {
        let actor = actor.to_owned();
        self.ask(|reply| Command::DeleteChannel { id, actor, reply }).await
    }

    /// The as-run log of an event ([`SYSTEM_EVENT`] for channel changes).
    pub async fn asrun(&self, event_id: &str) -> Result<Vec<AsRunEntry>, CoordError> {
        let event_id = event_id.to_owned();
        self.ask(|reply| Command::AsRun { event_id, reply }).await
    }
}

struct State {
    store: Store,
}

impl State {
    async fn run(self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.recv().await {
            self.handle(cmd);
        }
    }

    fn handle(&self, cmd: Command) {
        match cmd {
            Command::CreateChannel { channel, actor, reply } => {
                let _ = reply.send(self.create_channel(channel, &actor));
            }
            Command::GetChannel { id, reply } => {
                let r = self.store.channel(&id).map_err(CoordError::from).and_then(|c| c.ok_or_else(|| not_found(&id)));
                let _ = reply.send(r);
            }
            Command::ListChannels { reply } => {
                let _ = reply.send(self.store.channels().map_err(CoordError::from));
            }
            Command::UpdateChannel { channel, actor, reply } => {
                let _ = reply.send(self.update_channel(channel, &actor));
            }
            Command::DeleteChannel { id, actor, reply } => {
                let r = match self.store.delete_channel(&id) {
                    Ok(true) => self.record(&id, "channel-deleted", "", &actor),
                    Ok(false) => Err(not_found(&id)),
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(r);
            }
            Command::AsRun { event_id, reply } => {
                let _ = reply.send(self.store.asrun(&event_id).map_err(CoordError::from));
            }
        }
    }

    fn create_channel(&self, channel: Channel, actor: &str) -> Result<Channel, CoordError> {
        if !self.store.insert_channel(&channel)? {
            return Err(CoordError::AlreadyExists(format!("channel `{}` exists already", channel.id)));
        }
        self.record(&channel.id, "channel-created", &describe(&channel), actor)?;
        Ok(channel)
    }

    fn update_channel(&self, mut channel: Channel, actor: &str) -> Result<Channel, CoordError> {
        let old = self.store.channel(&channel.id)?.ok_or_else(|| not_found(&channel.id))?;
        keep_secrets(&old, &mut channel);
        self.store.update_channel(&channel)?;
        self.record(&channel.id, "channel-updated", &describe(&channel), actor)?;
        Ok(channel)
    }

    /// Writes an as-run entry about a channel; the entry is committed before
    /// the caller hears "done".
    fn record(&self, id: &ChannelId, kind: &str, detail: &str, actor: &str) -> Result<(), CoordError> {
        let now = Utc::now();
        self.store.append_asrun(&AsRunEntry {
            event_id: SYSTEM_EVENT.into(),
            utc: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            channel_id: id.to_string(),
            local_time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            kind: kind.into(),
            detail: detail.into(),
            actor: actor.into(),
        })?;
        Ok(())
    }
}

fn not_found(id: &ChannelId) -> CoordError {
    CoordError::NotFound(format!("no channel `{id}`"))
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
