//! What the coordinator publishes for watchers: a snapshot of the events and,
//! while an event runs, its source and legs. Published on a `watch` channel:
//! the coordinator never waits for a reader, and a slow reader simply sees
//! the latest snapshot next, learning from `seq` how many it skipped.

use super::asrun::Kind;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::media::failover::{Feed, SourceChoice, SourceSwitch};
use crate::media::leg::{LegState, LegStatus};
use crate::media::source::SourceStatus;
use crate::relay::RelayStatus;
use crate::schedule::{Event, EventId};

/// One leg as watchers see it.
#[derive(Debug, Clone)]
pub struct LegView {
    /// The relay's figures (never a secret).
    pub status: LegStatus,
    /// The channel's zone, for its local time.
    pub timezone: Tz,
    /// When its first programme picture went out minus its air time (T0
    /// plus its delay), in seconds; `None` before it went out.
    pub t0_error_s: Option<f64>,
    /// The channel's name, as its partner is known.
    pub name: String,
    /// The channel's country (ISO 3166-1 alpha-2).
    pub country: String,
    /// Its air time after the live T0 (zero for a live leg).
    pub delay: std::time::Duration,
    /// Cluster mode: the node carrying it.
    pub node: Option<String>,
}

/// The running event's media.
#[derive(Debug, Clone)]
pub struct Live {
    /// Which event.
    pub event_id: EventId,
    /// What the legs carry now: the primary, the backup or the slate.
    pub source_in_use: Feed,
    /// Master control's choice: `AUTO`, or a source held by hand.
    pub source_choice: SourceChoice,
    /// The primary contribution feed.
    pub source: SourceStatus,
    /// The backup feed, if one is configured.
    pub backup: Option<SourceStatus>,
    /// The latest switch between feeds, and why.
    pub last_switch: Option<SourceSwitch>,
    /// Every leg.
    pub legs: Vec<LegView>,
    /// Live readers of the running legs' counters: a metrics scrape reads
    /// bytes, reconnects and drops as they are at that instant rather than
    /// as of the last snapshot (up to 500 ms old).
    pub meters: Arc<Vec<(String, crate::media::leg::LegMeter)>>,
    /// The program mode and the format on air.
    pub program: crate::relay::ProgramInfo,
    /// The multiviewer's thumbnails (live: the latest picture of each
    /// stream, read when a page asks).
    pub thumbnails: Option<Arc<crate::media::thumbs::Thumbnails>>,
    /// Cluster mode: the node that carries the legs (the leader).
    pub node: Option<String>,
}

/// One published state of the daemon.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Counts every publication; a watcher that sees a jump skipped some.
    pub seq: u64,
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// Every event, shared between snapshots until one changes.
    pub events: Arc<Vec<Arc<Event>>>,
    /// The running event's media, if one runs.
    pub live: Option<Live>,
    /// Whether the relay is healthy (what `/healthz` and gRPC health say).
    pub healthy: bool,
    /// The rehearsal that runs, if any.
    pub rehearsal: Option<crate::rehearsal::Report>,
    /// The latest finished rehearsal of each event.
    pub verdicts: Arc<Vec<crate::rehearsal::Report>>,
    /// Stored events the daemon could not read at start.
    pub unreadable_events: usize,
    /// Store writes that failed since the daemon started (each lost with
    /// the rest of its turn's writes; the store was read back).
    pub store_write_failures: u64,
    /// Alerts raised and delivered (live counters, shared).
    pub alerts: Arc<crate::alerts::deliver::Counters>,
    /// Every ad break, by start, shared between snapshots until one changes.
    pub breaks: Arc<Vec<crate::schedule::breaks::AdBreak>>,
    /// As-run entries written since the daemon started: a watcher reads
    /// the log again when this changes.
    pub asrun_written: u64,
    /// How long the coordinator's loop turns take, by work (live, shared).
    pub loop_times: Arc<super::busy::LoopTimes>,
}

impl Snapshot {
    /// The empty state before the coordinator's first publication.
    pub fn initial() -> Self {
        Self {
            seq: 0,
            at: Utc::now(),
            events: Arc::default(),
            live: None,
            healthy: false,
            rehearsal: None,
            verdicts: Arc::default(),
            unreadable_events: 0,
            store_write_failures: 0,
            alerts: Arc::default(),
            breaks: Arc::default(),
            asrun_written: 0,
            loop_times: Arc::default(),
        }
    }

    /// The event a watcher asked for; with `None`, the running event, else
    /// the next one to start.
    pub fn event(&self, id: Option<&EventId>) -> Option<&Event> {
        match id {
            Some(id) => self.events.iter().map(AsRef::as_ref).find(|e| &e.id == id),
            None => self
                .live
                .as_ref()
                .and_then(|l| self.events.iter().map(AsRef::as_ref).find(|e| e.id == l.event_id))
                .or_else(|| {
                    self.events.iter().map(AsRef::as_ref).filter(|e| !e.state.is_final()).min_by_key(|e| e.on_air)
                }),
        }
    }
}

/// What happened to a leg between two looks, for the as-run log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegChange {
    /// The leg.
    pub channel_id: String,
    /// `leg-on-air`, `leg-lost`, `leg-error`, `leg-failed`.
    pub kind: super::asrun::Kind,
    /// Why, in words (never a secret: leg errors are built without them).
    pub detail: String,
}

#[derive(Debug, Clone, Default)]
struct Seen {
    state: Option<LegState>,
    reconnects_at_loss: u32,
    error: Option<String>,
}

/// Compares each look at the legs with the last one and reports what an
/// operator would want in the log: on air, lost, a new error, failed. The
/// same error repeated by every retry is reported once.
#[derive(Debug, Default)]
pub struct LegObserver {
    seen: HashMap<String, Seen>,
}

impl LegObserver {
    /// The changes since the last call.
    pub fn observe(&mut self, status: &RelayStatus) -> Vec<LegChange> {
        let mut out = Vec::new();
        for leg in &status.legs {
            let seen = self.seen.entry(leg.channel_id.clone()).or_default();
            let change = |kind, detail| LegChange { channel_id: leg.channel_id.clone(), kind, detail };
            if seen.state != Some(leg.state) {
                match leg.state {
                    LegState::OnAir => {
                        let n = leg.reconnects.saturating_sub(seen.reconnects_at_loss);
                        let detail = if seen.state.is_none() || seen.state == Some(LegState::Connecting) && n == 0 {
                            format!("{} accepts the stream", leg.target)
                        } else {
                            format!("{} accepts the stream again, after {n} reconnect(s)", leg.target)
                        };
                        out.push(change(Kind::LegOnAir, detail));
                        seen.error = None;
                    }
                    LegState::Reconnecting if seen.state == Some(LegState::OnAir) => {
                        seen.reconnects_at_loss = leg.reconnects;
                        let why = leg.last_error.clone().unwrap_or_else(|| "no reason given".into());
                        out.push(change(Kind::LegLost, why));
                        seen.error = leg.last_error.clone();
                    }
                    LegState::Failed => {
                        out.push(change(Kind::LegFailed, leg.last_error.clone().unwrap_or_default()));
                        seen.error = leg.last_error.clone();
                    }
                    _ => {}
                }
                seen.state = Some(leg.state);
            }
            if leg.state != LegState::OnAir && leg.last_error.is_some() && leg.last_error != seen.error {
                out.push(change(Kind::LegError, leg.last_error.clone().unwrap_or_default()));
                seen.error = leg.last_error.clone();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::source::SourceState;

    fn relay(legs: Vec<(LegState, u32, Option<&str>)>) -> RelayStatus {
        RelayStatus {
            uptime_s: 1.0,
            source: SourceStatus {
                describe: "test".into(),
                state: SourceState::Receiving,
                bytes_in: 0,
                garbage_bytes: 0,
                frames: 0,
                healthy: true,
                loss: None,
                restarts: 0,
                last_error: None,
            },
            backup: None,
            source_in_use: Feed::Primary,
            source_choice: SourceChoice::Auto,
            last_switch: None,
            legs: legs
                .into_iter()
                .enumerate()
                .map(|(i, (state, reconnects, err))| LegStatus {
                    channel_id: format!("leg-{i}"),
                    protocol: "srt".into(),
                    target: format!("srt://127.0.0.1:{}", 9000 + i),
                    state,
                    bytes_sent: 0,
                    bitrate_bps: 0,
                    reconnects,
                    dropped_buffers: 0,
                    last_error: err.map(Into::into),
                    srt: None,
                    program_since_utc_ns: None,
                    carries: crate::media::program::Content::Program,
                    audio: Vec::new(),
                    audio_missing: Vec::new(),
                    cues_sent: 0,
                    cues_missed: 0,
                })
                .collect(),
            fanout_overflow: 0,
            content: crate::media::program::Content::Program,
            switched_utc_ns: None,
            program: crate::relay::ProgramInfo {
                mode: crate::config::ProgramMode::Passthrough,
                format: Default::default(),
                describe: String::new(),
            },
        }
    }

    #[test]
    fn a_leg_story_is_told_once_per_change() {
        let mut o = LegObserver::default();
        let kinds = |v: Vec<LegChange>| v.into_iter().map(|c| c.kind).collect::<Vec<_>>();
        assert!(o.observe(&relay(vec![(LegState::Connecting, 0, None)])).is_empty());
        let c = o.observe(&relay(vec![(LegState::OnAir, 0, None)]));
        assert_eq!(c[0].detail, "srt://127.0.0.1:9000 accepts the stream");
        assert!(o.observe(&relay(vec![(LegState::OnAir, 0, None)])).is_empty(), "nothing new, nothing logged");
        assert_eq!(kinds(o.observe(&relay(vec![(LegState::Reconnecting, 1, Some("refused"))]))), [Kind::LegLost]);
        // The same error on every retry is not news.
        assert!(o.observe(&relay(vec![(LegState::Reconnecting, 2, Some("refused"))])).is_empty());
        assert_eq!(kinds(o.observe(&relay(vec![(LegState::Reconnecting, 3, Some("timed out"))]))), [Kind::LegError]);
        let c = o.observe(&relay(vec![(LegState::OnAir, 4, Some("timed out"))]));
        assert_eq!(c[0].detail, "srt://127.0.0.1:9000 accepts the stream again, after 3 reconnect(s)");
        assert_eq!(kinds(o.observe(&relay(vec![(LegState::Failed, 4, Some("no srtsink"))]))), [Kind::LegFailed]);
    }
}
