//! Events: their life (a pure state machine) and the edge where an
//! operator's local wall-clock time becomes a UTC instant. Everything inside
//! is UTC; zones exist only here and in displays.

pub mod breaks;
pub mod clock;
pub mod request;

pub use clock::Clock;

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

/// The last instant a protobuf `Timestamp` may carry (and RFC 3339 can
/// write with a four-digit year): 9999-12-31T23:59:59.999999999Z. Every
/// instant of an event, from arming to the end of post-roll, must lie
/// within `[0001-01-01T00:00:00Z, LAST_INSTANT]`.
pub const LAST_INSTANT_SECONDS: i64 = 253_402_300_799;

/// Whether `t` is within the protobuf `Timestamp` range (0001-01-01 to
/// 9999-12-31, UTC).
pub fn in_wire_range(t: DateTime<Utc>) -> bool {
    const FIRST_INSTANT_SECONDS: i64 = -62_135_596_800;
    (FIRST_INSTANT_SECONDS..=LAST_INSTANT_SECONDS).contains(&t.timestamp())
}

/// An instant as every message and log line writes it: RFC 3339, UTC,
/// milliseconds.
pub fn utc_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

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

    /// Whether its life is over.
    pub fn is_final(self) -> bool {
        matches!(self, EventState::Completed | EventState::Aborted | EventState::Cancelled)
    }

    /// Whether legs run in this state.
    pub fn is_live(self) -> bool {
        matches!(self, EventState::Armed | EventState::Held | EventState::OnAir | EventState::PostRoll)
    }
}

impl EventState {
    /// Every state, in the order of an event's life.
    pub const ALL: [EventState; 8] = [
        EventState::Scheduled,
        EventState::Armed,
        EventState::Held,
        EventState::OnAir,
        EventState::PostRoll,
        EventState::Completed,
        EventState::Aborted,
        EventState::Cancelled,
    ];
}

impl FromStr for EventState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EventState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown event state `{s}`"))
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
    /// The clock: post-roll is over.
    Finish,
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
            Action::Finish => "Finish",
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
        (Armed | Held | OnAir, End) => PostRoll,
        (PostRoll, Finish) => Completed,
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
    /// When it went to post-roll early (EndEvent) or was aborted; `None`
    /// while the planned end holds.
    pub ended: Option<DateTime<Utc>>,
    /// When it was scheduled.
    pub created: DateTime<Utc>,
    /// The longest delay of a leg airing at its own local time (0 if all
    /// legs are live): the event lasts that much longer for them.
    pub max_delay: Duration,
}

impl Event {
    /// The end of the programme: when EndEvent or Abort came, else T0 +
    /// duration (Extend moves it).
    pub fn end(&self) -> DateTime<Utc> {
        self.ended.unwrap_or_else(|| self.on_air + chrono_duration(self.duration))
    }

    /// When the legs connect by themselves: T0 - preroll.
    pub fn arm_at(&self) -> DateTime<Utc> {
        self.on_air - chrono_duration(self.preroll)
    }

    /// When post-roll is over, for the last delayed leg too.
    pub fn finish_at(&self) -> DateTime<Utc> {
        self.end() + chrono_duration(self.max_delay) + chrono_duration(self.postroll)
    }

    /// What the clock does to this event at `now`, if anything: Arm at
    /// T0 - preroll, Take at T0 (not from Held: a hold lasts until Take),
    /// End at the end, Finish after post-roll. A daemon restarted late
    /// applies these one after another until the event is where the clock
    /// says it should be.
    pub fn due(&self, now: DateTime<Utc>) -> Option<Action> {
        match self.state {
            EventState::Scheduled if now >= self.arm_at() => Some(Action::Arm),
            EventState::Armed if now >= self.end() => Some(Action::End),
            EventState::Armed if now >= self.on_air => Some(Action::Take),
            EventState::OnAir if now >= self.end() => Some(Action::End),
            EventState::PostRoll if now >= self.finish_at() => Some(Action::Finish),
            _ => None,
        }
    }
}

/// A std duration as a chrono one (saturating; our durations are hours).
pub fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// When a leg airs, in its channel's zone.
#[derive(Debug, Clone, PartialEq)]
pub struct AirTime {
    /// The channel.
    pub channel_id: ChannelId,
    /// Its zone.
    pub timezone: Tz,
    /// Its first program frame, local.
    pub local_on_air: DateTime<Tz>,
    /// The zone's offset from UTC at that instant.
    pub utc_offset_seconds: i32,
    /// `+05`, `IST`, `KST`, ...
    pub abbreviation: String,
    /// How long after T0 it airs (0 for live legs).
    pub delay: Duration,
}

/// The air time of `channel` for an event at `on_air`. A live leg airs at
/// T0; a leg with a local air time airs at that wall-clock time on T0's
/// local date in its zone, which must not be before T0 (the error says why).
pub fn air_time(on_air: DateTime<Utc>, channel: &crate::config::Channel) -> Result<AirTime, String> {
    use chrono::Offset;
    let tz = channel.timezone;
    let live_local = on_air.with_timezone(&tz);
    let local = match channel.air_policy {
        crate::config::AirPolicy::Live => live_local,
        crate::config::AirPolicy::LocalTime(t) => {
            let naive = live_local.date_naive().and_time(t);
            // In a DST gap the wall clock skips `t`: air at the gap's end.
            let at = tz
                .from_local_datetime(&naive)
                .earliest()
                .or_else(|| {
                    (1..=180).find_map(|m| tz.from_local_datetime(&(naive + chrono::Duration::minutes(m))).earliest())
                })
                .ok_or_else(|| format!("{} does not exist in {}", naive, tz.name()))?;
            if at < live_local {
                return Err(format!(
                    "channel `{}` airs at {} {} local, before the live T0 ({} there)",
                    channel.id,
                    crate::config::format_time_of_day(t),
                    tz.name(),
                    live_local.format("%H:%M")
                ));
            }
            at
        }
    };
    let delay = (local.with_timezone(&Utc) - on_air).to_std().unwrap_or_default();
    Ok(AirTime {
        channel_id: channel.id.clone(),
        timezone: tz,
        utc_offset_seconds: local.offset().fix().local_minus_utc(),
        abbreviation: local.format("%Z").to_string(),
        local_on_air: local,
        delay,
    })
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
    let tz = Tz::from_str(zone).map_err(|_| {
        err("timezone", format!("{} is not an IANA time zone (for example Asia/Almaty)", crate::config::quote(zone)))
    })?;
    let naive = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M"))
        .map_err(|_| {
            err("local", format!("{} is not a local time as YYYY-MM-DDTHH:MM[:SS]", crate::config::quote(local)))
        })?;
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
    fn the_wire_range_is_years_1_to_9999_utc() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap();
        assert!(in_wire_range(t("9999-12-31T23:59:59.999Z")));
        assert!(in_wire_range(t("0001-01-01T00:00:00Z")));
        assert!(!in_wire_range(t("9999-12-31T23:00:00-05:00")));
        assert!(!in_wire_range(t("0000-12-31T23:59:59Z")));
        assert!(!in_wire_range(DateTime::<Utc>::from_timestamp(LAST_INSTANT_SECONDS + 1, 0).unwrap()));
    }

    #[test]
    fn every_transition_and_every_refusal() {
        use Action::*;
        use EventState::*;
        let states = [Scheduled, Armed, Held, OnAir, PostRoll, Completed, Aborted, Cancelled];
        let actions = [Arm, Take, Hold, Extend, End, Abort, Cancel, Finish];
        let allowed = [
            (Scheduled, Arm, Armed),
            (Armed, Take, OnAir),
            (Held, Take, OnAir),
            (Armed, Hold, Held),
            (Scheduled, Extend, Scheduled),
            (Armed, Extend, Armed),
            (Held, Extend, Held),
            (OnAir, Extend, OnAir),
            (Armed, End, PostRoll),
            (Held, End, PostRoll),
            (OnAir, End, PostRoll),
            (PostRoll, Finish, Completed),
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

    fn event(state: EventState) -> Event {
        let on_air = DateTime::parse_from_rfc3339("2026-11-22T15:00:00Z").unwrap().with_timezone(&Utc);
        Event {
            id: EventId("ev-1".into()),
            title: "t".into(),
            on_air,
            duration: Duration::from_secs(3600),
            preroll: Duration::from_secs(60),
            postroll: Duration::from_secs(30),
            channel_ids: vec![],
            state,
            ended: None,
            created: on_air - chrono::Duration::days(1),
            max_delay: Duration::ZERO,
        }
    }

    #[test]
    fn the_clock_moves_an_event_at_its_instants() {
        use EventState::*;
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let cases = [
            (Scheduled, "2026-11-22T14:58:59Z", None),
            (Scheduled, "2026-11-22T14:59:00Z", Some(Action::Arm)),
            (Armed, "2026-11-22T14:59:59.999Z", None),
            (Armed, "2026-11-22T15:00:00Z", Some(Action::Take)),
            (Held, "2026-11-22T15:30:00Z", None),
            (Held, "2026-11-22T18:00:00Z", None),
            (OnAir, "2026-11-22T15:59:59Z", None),
            (OnAir, "2026-11-22T16:00:00Z", Some(Action::End)),
            (Armed, "2026-11-22T16:00:00Z", Some(Action::End)),
            (PostRoll, "2026-11-22T16:00:29Z", None),
            (PostRoll, "2026-11-22T16:00:30Z", Some(Action::Finish)),
            (Completed, "2026-11-23T00:00:00Z", None),
            (Cancelled, "2026-11-22T15:00:00Z", None),
        ];
        for (state, now, want) in cases {
            assert_eq!(event(state).due(at(now)), want, "{state} at {now}");
        }
        // EndEvent at 15:10 moves the end and so the finish.
        let mut e = event(PostRoll);
        e.ended = Some(at("2026-11-22T15:10:00Z"));
        assert_eq!(e.due(at("2026-11-22T15:10:29Z")), None);
        assert_eq!(e.due(at("2026-11-22T15:10:30Z")), Some(Action::Finish));
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
