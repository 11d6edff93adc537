//! The as-run log's vocabulary: what happened ([`Kind`]), written as the
//! stable kebab-case names the store, the API and every export carry, and
//! the one way an entry is made ([`entry`]); the coordinator writes it
//! (with the alert it raises, if any) through `State::record`.

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

use crate::store::AsRunEntry;

/// What an as-run entry records.
#[allow(missing_docs, reason = "each variant is documented by its kebab-case name in `as_str` and in api.md")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    // An event entering a state.
    Scheduled,
    Armed,
    Held,
    OnAir,
    PostRoll,
    Completed,
    Aborted,
    Cancelled,
    // The event and the daemon.
    Extended,
    ArmFailed,
    RelayFailed,
    DaemonRestarted,
    DaemonStopped,
    EventUnreadable,
    LegsRebuilt,
    LegsClosed,
    LegsPlaced,
    LegsAborted,
    SourceSelected,
    SourceSwitched,
    // One leg.
    LegOnAir,
    LegLost,
    LegError,
    LegFailed,
    LegSkipped,
    LegProgram,
    LegProgramResumed,
    LegDelayedStart,
    LegNotOnAir,
    LegMoved,
    // The recording delayed legs air from.
    RecordingLost,
    // Ad breaks.
    BreakScheduled,
    BreakCancelled,
    BreakStart,
    BreakEnd,
    // Channels.
    ChannelCreated,
    ChannelUpdated,
    ChannelDeleted,
    // Rehearsals.
    RehearsalStarted,
    RehearsalLeg,
    RehearsalFinished,
    RehearsalScheduled,
    RehearsalUnscheduled,
    RehearsalSkipped,
}

impl Kind {
    /// Kinds that report what the relay did (a leg's first programme
    /// picture, a source switch, a break cued): facts the loop does not
    /// derive again from the store, so an entry etcd refused is kept and
    /// written again. A state change is not among them: after a refused
    /// write memory is read back and the change is made again.
    const OBSERVED: [Kind; 16] = [
        Kind::SourceSwitched,
        Kind::LegOnAir,
        Kind::LegLost,
        Kind::LegError,
        Kind::LegFailed,
        Kind::LegProgram,
        Kind::LegProgramResumed,
        Kind::LegDelayedStart,
        Kind::LegNotOnAir,
        Kind::RecordingLost,
        Kind::BreakStart,
        Kind::BreakEnd,
        Kind::LegsRebuilt,
        Kind::LegsClosed,
        Kind::LegsPlaced,
        Kind::LegMoved,
    ];

    /// Whether an entry of kind `name` (stored name) reports what the relay did.
    pub fn is_observed(name: &str) -> bool {
        Self::OBSERVED.iter().any(|k| k.as_str() == name)
    }

    /// The stored name (`leg-program`, `source-switched`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Scheduled => "scheduled",
            Kind::Armed => "armed",
            Kind::Held => "held",
            Kind::OnAir => "on-air",
            Kind::PostRoll => "post-roll",
            Kind::Completed => "completed",
            Kind::Aborted => "aborted",
            Kind::Cancelled => "cancelled",
            Kind::Extended => "extended",
            Kind::ArmFailed => "arm-failed",
            Kind::RelayFailed => "relay-failed",
            Kind::DaemonRestarted => "daemon-restarted",
            Kind::DaemonStopped => "daemon-stopped",
            Kind::EventUnreadable => "event-unreadable",
            Kind::LegsRebuilt => "legs-rebuilt",
            Kind::LegsClosed => "legs-closed",
            Kind::LegsPlaced => "legs-placed",
            Kind::LegsAborted => "legs-aborted",
            Kind::SourceSelected => "source-selected",
            Kind::SourceSwitched => "source-switched",
            Kind::LegOnAir => "leg-on-air",
            Kind::LegLost => "leg-lost",
            Kind::LegError => "leg-error",
            Kind::LegFailed => "leg-failed",
            Kind::LegSkipped => "leg-skipped",
            Kind::LegProgram => "leg-program",
            Kind::LegProgramResumed => "leg-program-resumed",
            Kind::LegDelayedStart => "leg-delayed-start",
            Kind::LegNotOnAir => "leg-not-on-air",
            Kind::LegMoved => "leg-moved",
            Kind::RecordingLost => "recording-lost",
            Kind::BreakScheduled => "break-scheduled",
            Kind::BreakCancelled => "break-cancelled",
            Kind::BreakStart => "break-start",
            Kind::BreakEnd => "break-end",
            Kind::ChannelCreated => "channel-created",
            Kind::ChannelUpdated => "channel-updated",
            Kind::ChannelDeleted => "channel-deleted",
            Kind::RehearsalStarted => "rehearsal-started",
            Kind::RehearsalLeg => "rehearsal-leg",
            Kind::RehearsalFinished => "rehearsal-finished",
            Kind::RehearsalScheduled => "rehearsal-scheduled",
            Kind::RehearsalUnscheduled => "rehearsal-unscheduled",
            Kind::RehearsalSkipped => "rehearsal-skipped",
        }
    }

    /// Entering `state`.
    pub fn entering(state: crate::schedule::EventState) -> Self {
        use crate::schedule::EventState as S;
        match state {
            S::Scheduled => Kind::Scheduled,
            S::Armed => Kind::Armed,
            S::Held => Kind::Held,
            S::OnAir => Kind::OnAir,
            S::PostRoll => Kind::PostRoll,
            S::Completed => Kind::Completed,
            S::Aborted => Kind::Aborted,
            S::Cancelled => Kind::Cancelled,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who did what an entry records. The clock and the daemon are not token
/// names: a person whose token is named `scheduler` is still a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The schedule's clock (arming at T0 - preroll, T0, the end).
    Scheduler,
    /// The daemon itself (legs, sources, restarts, rehearsals it runs).
    Daemon,
    /// A recurring rehearsal firing: `schedule rs-...`.
    Schedule(String),
    /// The holder of an access token, by the token's name.
    Token(String),
}

impl Actor {
    /// The name the as-run log shows.
    pub fn name(&self) -> &str {
        match self {
            Actor::Scheduler => "scheduler",
            Actor::Daemon => "simulcastd",
            Actor::Token(name) | Actor::Schedule(name) => name,
        }
    }

    /// Whether a person did it (not the clock, not the daemon).
    pub fn is_person(&self) -> bool {
        matches!(self, Actor::Token(_))
    }
}

pub use crate::schedule::utc_text;

/// An entry at `now`: event-wide when `channel` is empty, its local time
/// in `tz` (UTC when none).
pub fn entry(
    now: DateTime<Utc>,
    event_id: &str,
    channel: &str,
    tz: Option<Tz>,
    kind: Kind,
    detail: String,
    actor: &Actor,
) -> AsRunEntry {
    let local = match tz {
        Some(tz) => now.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Millis, false),
        None => now.to_rfc3339_opts(SecondsFormat::Millis, false),
    };
    AsRunEntry {
        event_id: event_id.into(),
        utc: utc_text(now),
        channel_id: channel.into(),
        local_time: local,
        timezone: tz.map_or("UTC", |tz| tz.name()).into(),
        kind: kind.as_str().into(),
        detail,
        actor: actor.name().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_legs_did_is_kept_for_etcd_and_state_changes_are_not() {
        assert!(Kind::is_observed("leg-program"));
        assert!(Kind::is_observed("source-switched"));
        assert!(Kind::is_observed("break-start"));
        // Made again by the clock or the operator after a read-back.
        assert!(!Kind::is_observed("on-air"));
        assert!(!Kind::is_observed("scheduled"));
        assert!(!Kind::is_observed("channel-created"));
        assert!(!Kind::is_observed("nonsense"));
    }

    #[test]
    fn every_event_state_has_its_kind_and_names_are_kebab_case() {
        use crate::schedule::EventState;
        for s in EventState::ALL {
            let k = Kind::entering(s);
            assert_eq!(k.as_str(), s.as_str().to_ascii_lowercase().replace('_', "-"), "{s}");
        }
        assert_eq!(Kind::LegProgramResumed.to_string(), "leg-program-resumed");
    }
}
