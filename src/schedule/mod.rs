//! Events: their life (a pure state machine) and the edge where an
//! operator's local wall-clock time becomes a UTC instant. Everything inside
//! is UTC; zones exist only here and in displays.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::config::{ChannelId, FieldError};

/// Default time legs connect before T0.
pub const DEFAULT_PREROLL: Duration = Duration::from_secs(60);
/// Default time legs stay up after the end.
pub const DEFAULT_POSTROLL: Duration = Duration::from_secs(30);

/// An event's life (design.md, "Event life").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventState {
    /// Waiting for T0 - preroll (or Arm).
    Scheduled,
    /// Legs connected.
    Armed,
    /// Held past T0 until Take.
    Held,
    /// Program on every leg.
    OnAir,
    /// After the end, before the legs close.
    PostRoll,
    /// Done.
    Completed,
    /// Ended by Abort.
    Aborted,
    /// Cancelled before it was armed.
    Cancelled,
}

impl EventState {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Scheduled => "SCHEDULED",
            EventState::Armed => "ARMED",
            EventState::Held => "HELD",
            EventState::OnAir => "ON_AIR",
            EventState::PostRoll => "POST_ROLL",
            EventState::Completed => "COMPLETED",
            EventState::Aborted => "ABORTED",
            EventState::Cancelled => "CANCELLED",
        }
    }

    /// Whether legs run in this state.
    pub fn is_live(self) -> bool {
        matches!(self, EventState::Armed | EventState::Held | EventState::OnAir | EventState::PostRoll)
    }
}

impl FromStr for EventState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            EventState::Scheduled,
            EventState::Armed,
            EventState::Held,
            EventState::OnAir,
            EventState::PostRoll,
            EventState::Completed,
            EventState::Aborted,
            EventState::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown event state `{s}`"))
    }
}

impl fmt::Display for EventState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an operator (or, later, the clock) does to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Connect the legs now.
    Arm,
    /// Program now.
    Take,
    /// Stay off program past T0 until Take.
    Hold,
    /// Move the end.
    Extend,
    /// Go to post-roll now.
    End,
    /// Emergency end.
    Abort,
    /// Drop a scheduled event.
    Cancel,
}

impl Action {
    /// The RPC's name, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Arm => "Arm",
            Action::Take => "Take",
            Action::Hold => "Hold",
            Action::Extend => "Extend",
            Action::End => "EndEvent",
            Action::Abort => "Abort",
            Action::Cancel => "CancelEvent",
        }
    }
}

/// The state `action` leads to from `state`, or why it is not allowed.
pub fn transition(state: EventState, action: Action) -> Result<EventState, String> {
    use Action::*;
    use EventState::*;
    let next = match (state, action) {
        (Scheduled, Arm) => Armed,
        (Armed | Held, Take) => OnAir,
        (Armed, Hold) => Held,
        (Scheduled | Armed | Held | OnAir, Extend) => state,
        (Armed | Held | OnAir, End) => Completed,
        (Armed | Held | OnAir | PostRoll, Abort) => Aborted,
        (Scheduled, Cancel) => Cancelled,
        _ => return Err(format!("{} is not allowed while the event is {state}", action.as_str())),
    };
    Ok(next)
}

/// An event's identifier (`ev-` and 12 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId(pub String);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A scheduled event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its id.
    pub id: EventId,
    /// Title.
    pub title: String,
    /// T0, the on-air instant.
    pub on_air: DateTime<Utc>,
    /// Programme length.
    pub duration: Duration,
    /// Legs connect this long before T0.
    pub preroll: Duration,
    /// Legs stay up this long after the end.
    pub postroll: Duration,
    /// The legs.
    pub channel_ids: Vec<ChannelId>,
    /// Where it is in its life.
    pub state: EventState,
}

/// Which instant a local time that occurs twice (DST fold) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Refuse an ambiguous time.
    Unspecified,
    /// The first occurrence (still on summer time).
    Earlier,
    /// The second occurrence.
    Later,
}

/// Resolves `local` (`YYYY-MM-DDTHH:MM[:SS]`) in IANA zone `zone` to UTC.
/// A time in a DST gap is refused, naming the gap; a time in a fold is
/// refused unless `fold` says which one. Errors name `at.local` or
/// `at.timezone`.
pub fn resolve_local(local: &str, zone: &str, fold: Fold, at: &str) -> Result<DateTime<Utc>, FieldError> {
    let err = |key: &str, message: String| FieldError { key: format!("{at}.{key}"), message };
    let tz = Tz::from_str(zone)
        .map_err(|_| err("timezone", format!("`{zone}` is not an IANA time zone (for example Asia/Almaty)")))?;
    let naive = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M"))
        .map_err(|_| err("local", format!("`{local}` is not a local time as YYYY-MM-DDTHH:MM[:SS]")))?;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => match fold {
            Fold::Earlier => Ok(first.with_timezone(&Utc)),
            Fold::Later => Ok(second.with_timezone(&Utc)),
            Fold::Unspecified => Err(err(
                "local",
                format!(
                    "{local} happens twice in {zone} (clocks go back): {} or {}; say which with fold EARLIER or LATER",
                    first.format("%H:%M %Z (UTC%:z)"),
                    second.format("%H:%M %Z (UTC%:z)")
                ),
            )),
        },
        LocalResult::None => {
            // Find the gap's edges: the last valid minute before, the first after.
            let before = (1..=180)
                .map(|m| naive - chrono::Duration::minutes(m))
                .find_map(|n| tz.from_local_datetime(&n).earliest());
            let after = (1..=180)
                .map(|m| naive + chrono::Duration::minutes(m))
                .find_map(|n| tz.from_local_datetime(&n).earliest());
            let gap = match (before, after) {
                // The wall clock reads `b + 1 min` in the old offset at the
                // instant it jumps to `a` in the new one.
                (Some(b), Some(a)) => format!(
                    " (clocks jump from {} {} to {})",
                    (b.naive_local() + chrono::Duration::minutes(1)).format("%H:%M"),
                    b.format("%Z"),
                    a.format("%H:%M %Z")
                ),
                _ => String::new(),
            };
            Err(err("local", format!("{local} does not exist in {zone}: it falls in a daylight-saving gap{gap}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transition_and_every_refusal() {
        use Action::*;
        use EventState::*;
        let states = [Scheduled, Armed, Held, OnAir, PostRoll, Completed, Aborted, Cancelled];
        let actions = [Arm, Take, Hold, Extend, End, Abort, Cancel];
        let allowed = [
            (Scheduled, Arm, Armed),
            (Armed, Take, OnAir),
            (Held, Take, OnAir),
            (Armed, Hold, Held),
            (Scheduled, Extend, Scheduled),
            (Armed, Extend, Armed),
            (Held, Extend, Held),
            (OnAir, Extend, OnAir),
            (Armed, End, Completed),
            (Held, End, Completed),
            (OnAir, End, Completed),
            (Armed, Abort, Aborted),
            (Held, Abort, Aborted),
            (OnAir, Abort, Aborted),
            (PostRoll, Abort, Aborted),
            (Scheduled, Cancel, Cancelled),
        ];
        for s in states {
            for a in actions {
                let expected = allowed.iter().find(|(fs, fa, _)| *fs == s && *fa == a).map(|t| t.2);
                match (transition(s, a), expected) {
                    (Ok(got), Some(want)) => assert_eq!(got, want, "{s} + {a:?}"),
                    (Err(msg), None) => assert!(msg.contains(s.as_str()), "{msg}"),
                    (got, want) => panic!("{s} + {a:?}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn local_times_resolve_in_their_zone() {
        // Almaty is UTC+5 since 1 March 2024: 20:00 local is 15:00 UTC.
        let t = resolve_local("2026-11-22T20:00", "Asia/Almaty", Fold::Unspecified, "on_air_local").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-22T15:00:00+00:00");
        let t = resolve_local("2026-11-22T20:30:15", "Asia/Kolkata", Fold::Unspecified, "x").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-22T15:00:15+00:00");
    }

    #[test]
    fn a_dst_gap_is_refused_naming_the_gap() {
        // Europe/London, 29 March 2026: 01:00 GMT jumps to 02:00 BST.
        let e = resolve_local("2026-03-29T01:30", "Europe/London", Fold::Earlier, "on_air_local").unwrap_err();
        assert_eq!(e.key, "on_air_local.local");
        assert!(
            e.message.contains("daylight-saving gap") && e.message.contains("01:00 GMT to 02:00 BST"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_dst_fold_needs_a_choice() {
        // America/New_York, 1 November 2026: 01:30 happens at UTC-4, then UTC-5.
        let e = resolve_local("2026-11-01T01:30", "America/New_York", Fold::Unspecified, "on_air_local").unwrap_err();
        assert!(e.message.contains("happens twice"), "{}", e.message);
        let early = resolve_local("2026-11-01T01:30", "America/New_York", Fold::Earlier, "x").unwrap();
        let late = resolve_local("2026-11-01T01:30", "America/New_York", Fold::Later, "x").unwrap();
        assert_eq!(early.to_rfc3339(), "2026-11-01T05:30:00+00:00");
        assert_eq!(late.to_rfc3339(), "2026-11-01T06:30:00+00:00");
    }

    #[test]
    fn unknown_zones_and_bad_times_name_their_field() {
        let e = resolve_local("2026-11-22T20:00", "Asia/Almati", Fold::Unspecified, "on_air_local").unwrap_err();
        assert_eq!(e.key, "on_air_local.timezone");
        let e = resolve_local("22.11.2026 20:00", "Asia/Almaty", Fold::Unspecified, "on_air_local").unwrap_err();
        assert_eq!(e.key, "on_air_local.local");
    }
}
