//! Ad breaks: what an operator asks for (ScheduleBreak), checked with every
//! problem named by its key, and what is stored. Pure: the coordinator
//! hands in the event, its channels, the breaks it has and the time.
//!
//! A break's instant is on the live programme. A leg airing later from a
//! delayed copy gets it its delay later, on the same pictures. A local
//! time without a zone means each channel's own wall clock: `21:15` is
//! 21:15 in Seoul for the Korean partner and 21:15 in Almaty for the
//! Kazakh one, each on its own air (a delayed leg's 21:15 is its delay
//! earlier on the live programme), so one request may give several breaks.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use chrono_tz::Tz;

use super::{Event, EventId, EventState, Fold, air_time, chrono_duration, resolve_local, utc_text};
use crate::config::{Channel, ChannelId, FieldError, quote};

/// A break needs this much notice: its cue goes out ahead of it.
pub use crate::media::breaks::MIN_NOTICE;
/// The shortest break.
pub const MIN_BREAK: Duration = Duration::from_secs(1);

/// An ad break of an event, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdBreak {
    /// `br-` and 12 hex digits.
    pub id: String,
    /// Its event.
    pub event_id: EventId,
    /// When it starts on the live programme.
    pub start: DateTime<Utc>,
    /// How long it lasts.
    pub duration: Duration,
    /// The legs that carry it.
    pub channel_ids: Vec<ChannelId>,
    /// The SCTE-35 `splice_event_id` its cues carry.
    pub splice_event_id: u32,
    /// When it was scheduled.
    pub created: DateTime<Utc>,
}

impl AdBreak {
    /// Its end on the live programme.
    pub fn end(&self) -> DateTime<Utc> {
        self.start + chrono_duration(self.duration)
    }

    /// Whether it is carried by `channel`.
    pub fn covers(&self, channel: &ChannelId) -> bool {
        self.channel_ids.contains(channel)
    }
}

/// Where each leg of `b` has it: (channel, its start in the channel's
/// zone, the leg's delay). Channels gone since are left out.
pub fn leg_times(b: &AdBreak, event: &Event, channels: &[Channel]) -> Vec<(ChannelId, DateTime<Tz>, Duration)> {
    b.channel_ids
        .iter()
        .filter_map(|id| channels.iter().find(|c| c.id == *id))
        .map(|c| {
            let delay = air_time(event.on_air, c).map(|a| a.delay).unwrap_or_default();
            (c.id.clone(), (b.start + chrono_duration(delay)).with_timezone(&c.timezone), delay)
        })
        .collect()
}

/// When a requested break starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakAt {
    /// An instant.
    Utc(DateTime<Utc>),
    /// A local time, `YYYY-MM-DDTHH:MM[:SS]` or a time of day
    /// `HH:MM[:SS]` (its occurrence during the event); in `zone`, or with
    /// none in each channel's own zone, on its own air.
    Local {
        /// The wall-clock time.
        local: String,
        /// An IANA zone; `None`: each channel's.
        zone: Option<String>,
        /// Which instant a time that occurs twice means.
        fold: Fold,
    },
    /// This long from now.
    After(chrono::Duration),
}

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct NewBreak {
    /// The event.
    pub event_id: EventId,
    /// When.
    pub at: BreakAt,
    /// How long.
    pub duration: chrono::Duration,
    /// Empty: every enabled leg of the event.
    pub channel_ids: Vec<String>,
}

/// What the check needs besides the request.
pub struct BreakContext<'a> {
    /// Now.
    pub now: DateTime<Utc>,
    /// The event.
    pub event: &'a Event,
    /// Its channels.
    pub channels: &'a [Channel],
    /// Its breaks already scheduled.
    pub existing: &'a [AdBreak],
}

/// Checks `new`: the breaks to store (one per distinct start; `make_id`
/// gives each its id and `splice_event_id`), or every problem with its key.
pub fn check(
    new: &NewBreak,
    mut make_id: impl FnMut() -> (String, u32),
    cx: &BreakContext<'_>,
) -> Result<Vec<AdBreak>, Vec<FieldError>> {
    let mut errs = Vec::new();
    let event = cx.event;
    if matches!(event.state, EventState::PostRoll) || event.state.is_final() {
        errs.push(field("event_id", format!("{} is {}: its programme is over", event.id, event.state.as_str())));
    }
    let duration = new.duration.to_std().unwrap_or_default();
    if new.duration < chrono_duration(MIN_BREAK) || new.duration > chrono::Duration::days(1) {
        errs.push(field("duration", "must be at least 1 s and fit the programme".into()));
    }
    // The legs.
    let mut legs: Vec<&Channel> = Vec::new();
    if new.channel_ids.is_empty() {
        legs.extend(cx.channels.iter());
        if legs.is_empty() {
            errs.push(field("channel_ids", "the event has no enabled leg to carry a break".into()));
        }
    }
    for (i, id) in new.channel_ids.iter().enumerate() {
        let key = format!("channel_ids[{i}]");
        match cx.channels.iter().find(|c| c.id.as_str() == id) {
            None => errs.push(field(&key, format!("{} is not an enabled channel of {}", quote(id), event.id))),
            Some(c) if legs.iter().any(|l| l.id == c.id) => {
                errs.push(field(&key, format!("{} is listed twice", quote(id))))
            }
            Some(c) => legs.push(c),
        }
    }
    // The start on each leg's programme (live), grouped by instant.
    let mut starts: Vec<(DateTime<Utc>, Vec<ChannelId>)> = Vec::new();
    if let BreakAt::Local { local, .. } = &new.at
        && let Err(e) = local_form(local)
    {
        errs.push(e);
        legs.clear();
    }
    for leg in &legs {
        let start = match start_of(&new.at, leg, cx) {
            Ok(t) => t,
            Err(e) => {
                if !errs.contains(&e) {
                    errs.push(e);
                }
                continue;
            }
        };
        match starts.iter_mut().find(|(t, _)| *t == start) {
            Some((_, ids)) => ids.push(leg.id.clone()),
            None => starts.push((start, vec![leg.id.clone()])),
        }
    }
    let key = at_key(&new.at);
    let end = event.end();
    for (start, ids) in &starts {
        let stop = *start + chrono_duration(duration);
        let whose = if starts.len() > 1 { format!(" (for {})", join(ids)) } else { String::new() };
        if *start < event.on_air {
            errs.push(field(
                key,
                format!("{}{whose} is before the programme starts (T0 {})", utc_text(*start), utc_text(event.on_air)),
            ));
        } else if stop > end {
            errs.push(field(
                key,
                format!(
                    "a break from {} for {} s{whose} ends after the programme (its end {})",
                    utc_text(*start),
                    duration.as_secs_f64(),
                    utc_text(end)
                ),
            ));
        }
        let notice = (*start - cx.now).to_std().unwrap_or_default();
        if *start <= cx.now || notice < MIN_NOTICE {
            errs.push(field(
                key,
                format!(
                    "{}{whose} is {} s from now: a break needs at least {} s of notice (its cue goes out ahead)",
                    utc_text(*start),
                    ((*start - cx.now).num_milliseconds() as f64 / 1000.0),
                    MIN_NOTICE.as_secs()
                ),
            ));
        }
        for other in cx.existing {
            let shared: Vec<ChannelId> = ids.iter().filter(|c| other.covers(c)).cloned().collect();
            if !shared.is_empty() && *start < other.end() && other.start < stop {
                errs.push(field(
                    key,
                    format!(
                        "overlaps break {} on {} ({} to {})",
                        other.id,
                        join(&shared),
                        utc_text(other.start),
                        utc_text(other.end())
                    ),
                ));
            }
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(starts
        .into_iter()
        .map(|(start, channel_ids)| {
            let (id, splice_event_id) = make_id();
            AdBreak { id, event_id: event.id.clone(), start, duration, channel_ids, splice_event_id, created: cx.now }
        })
        .collect())
}

fn join(ids: &[ChannelId]) -> String {
    ids.iter().map(ChannelId::as_str).collect::<Vec<_>>().join(", ")
}

fn field(key: &str, message: String) -> FieldError {
    FieldError { key: key.into(), message }
}

/// The key the request's instant has.
fn at_key(at: &BreakAt) -> &'static str {
    match at {
        BreakAt::Utc(_) => "at_utc",
        BreakAt::Local { .. } => "at_local",
        BreakAt::After(_) => "after",
    }
}

/// The live instant `leg` has the break at.
fn start_of(at: &BreakAt, leg: &Channel, cx: &BreakContext<'_>) -> Result<DateTime<Utc>, FieldError> {
    match at {
        BreakAt::Utc(t) => Ok(*t),
        BreakAt::After(d) if *d < chrono::Duration::zero() => Err(field("after", "must not be negative".into())),
        BreakAt::After(d) => Ok(cx.now + *d),
        BreakAt::Local { local, zone: Some(zone), fold } => local_instant(local, zone, *fold, cx.event, Duration::ZERO),
        BreakAt::Local { local, zone: None, fold } => {
            // The channel's own wall clock on its own air: a delayed leg
            // airs the live programme its delay later.
            let delay = air_time(cx.event.on_air, leg).map(|a| a.delay).unwrap_or_default();
            let own = local_instant(local, leg.timezone.name(), *fold, cx.event, delay)
                .map_err(|e| FieldError { message: format!("{} (in {}'s zone)", e.message, leg.id), ..e })?;
            Ok(own - chrono_duration(delay))
        }
    }
}

/// The time of day `local` gives (`None`: it is a whole date and time),
/// or why it is neither.
fn local_form(local: &str) -> Result<Option<NaiveTime>, FieldError> {
    let time = NaiveTime::parse_from_str(local, "%H:%M:%S").or_else(|_| NaiveTime::parse_from_str(local, "%H:%M"));
    if let Ok(t) = time {
        return Ok(Some(t));
    }
    let whole = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M"));
    match whole {
        Ok(_) => Ok(None),
        Err(_) => Err(field(
            "at_local.local",
            format!("{} is not a local time as HH:MM[:SS] or YYYY-MM-DDTHH:MM[:SS]", quote(local)),
        )),
    }
}

/// `local` in `zone`: a whole date and time, or a time of day taken on the
/// first date (in that zone, from T0's) that puts it inside the programme
/// as aired `delay` after the live one.
fn local_instant(
    local: &str,
    zone: &str,
    fold: Fold,
    event: &Event,
    delay: Duration,
) -> Result<DateTime<Utc>, FieldError> {
    let Some(time) = local_form(local)? else {
        return resolve_local(local, zone, fold, "at_local");
    };
    let tz: Tz = zone.parse().map_err(|_| {
        field("at_local.timezone", format!("{} is not an IANA time zone (for example Asia/Seoul)", quote(zone)))
    })?;
    let (from, to) = (event.on_air + chrono_duration(delay), event.end() + chrono_duration(delay));
    let first: NaiveDate = from.with_timezone(&tz).date_naive();
    for day in first.iter_days().take_while(|d| *d <= to.with_timezone(&tz).date_naive()) {
        let text = day.and_time(time).format("%Y-%m-%dT%H:%M:%S").to_string();
        let at = resolve_local(&text, zone, fold, "at_local")?;
        if at >= from && at < to {
            return Ok(at);
        }
    }
    Err(field(
        "at_local.local",
        format!(
            "{local} in {zone} is not during the programme ({} to {} there)",
            from.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
            to.with_timezone(&tz).format("%Y-%m-%d %H:%M")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(on_air: &str, minutes: i64) -> Event {
        Event {
            id: EventId("ev-000000000001".into()),
            title: "Silk Way Star".into(),
            on_air: DateTime::parse_from_rfc3339(on_air).unwrap().with_timezone(&Utc),
            duration: Duration::from_secs(minutes as u64 * 60),
            preroll: Duration::from_secs(60),
            postroll: Duration::from_secs(30),
            channel_ids: vec![],
            state: EventState::Scheduled,
            ended: None,
            created: Utc::now(),
            max_delay: Duration::ZERO,
        }
    }

    fn channels() -> Vec<Channel> {
        let config = crate::config::parse(
            "[event]\ntitle = \"t\"\n[source]\ntype = \"test\"\n\
             [[channels]]\nid = \"kr-kbs\"\nname = \"KBS\"\ncountry = \"KR\"\ntimezone = \"Asia/Seoul\"\n\
             ingest = { type = \"udp\", uri = \"udp://127.0.0.1:5000\" }\n\
             [[channels]]\nid = \"kz-khabar\"\nname = \"Khabar\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
             ingest = { type = \"srt\", uri = \"srt://127.0.0.1:5001\" }\n\
             [[channels]]\nid = \"in-dd\"\nname = \"DD\"\ncountry = \"IN\"\ntimezone = \"Asia/Kolkata\"\n\
             ingest = { type = \"rtmp\", url = \"rtmp://127.0.0.1/live\", stream_key = \"k\" }\n",
        )
        .unwrap();
        config.channels
    }

    fn ids() -> impl FnMut() -> (String, u32) {
        let mut n = 0;
        move || {
            n += 1;
            (format!("br-{n:012x}"), n)
        }
    }

    fn new(at: BreakAt, seconds: i64, channels: &[&str]) -> NewBreak {
        NewBreak {
            event_id: EventId("ev-000000000001".into()),
            at,
            duration: chrono::Duration::seconds(seconds),
            channel_ids: channels.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn keys(r: Result<Vec<AdBreak>, Vec<FieldError>>) -> Vec<String> {
        r.expect_err("refused").into_iter().map(|e| format!("{}: {}", e.key, e.message)).collect()
    }

    #[test]
    fn each_channel_its_own_local_time_and_every_refusal_named() {
        // T0 20:00 in Seoul (11:00 UTC), an hour long.
        let e = event("2026-12-10T11:00:00Z", 60);
        let ch = channels();
        let now = e.on_air - chrono::Duration::hours(1);
        let cx = BreakContext { now, event: &e, channels: &ch, existing: &[] };
        let local = |l: &str, zone: Option<&str>| BreakAt::Local {
            local: l.into(),
            zone: zone.map(Into::into),
            fold: Fold::Unspecified,
        };

        // 20:15 in each partner's own zone: Seoul 11:15 UTC; Almaty (UTC+5)
        // 15:15 UTC is after the programme.
        let got = check(&new(local("20:15", None), 90, &["kr-kbs"]), ids(), &cx).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(utc_text(got[0].start), "2026-12-10T11:15:00.000Z");
        let refused = keys(check(&new(local("20:15", None), 90, &[]), ids(), &cx));
        assert!(refused.iter().any(|e| e.contains("at_local") && e.contains("kz-khabar")), "{refused:?}");
        // 16:30 Almaty, 20:30 Seoul: two breaks, one per instant.
        let kr = check(&new(local("20:30", None), 60, &["kr-kbs"]), ids(), &cx).unwrap();
        let kz = check(&new(local("16:30", None), 60, &["kz-khabar"]), ids(), &cx).unwrap();
        assert_eq!(kr[0].start, kz[0].start);
        let all = check(&new(local("20:30", Some("Asia/Seoul")), 60, &[]), ids(), &cx).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].channel_ids.len(), 3, "every leg, the RTMP one (onCuePoint) too");

        // The refusals, each named.
        let cases: [(NewBreak, &str); 7] = [
            (new(local("20:10", None), 30, &["kr-kbs", "kr-kbs"]), "channel_ids[1]: `kr-kbs` is listed twice"),
            (new(BreakAt::Utc(e.on_air - chrono::Duration::minutes(5)), 60, &[]), "at_utc: 2026-12-10T10:55"),
            (new(BreakAt::Utc(e.on_air + chrono::Duration::minutes(59)), 90, &[]), "ends after the programme"),
            (new(BreakAt::After(chrono::Duration::seconds(2)), 30, &[]), "at least 4 s of notice"),
            (new(local("25:00", None), 30, &[]), "at_local.local: `25:00` is not a local time"),
            (new(local("20:10", Some("Mars/Olympus")), 30, &[]), "at_local.timezone"),
            (new(local("20:10", None), 0, &["nowhere"]), "channel_ids[0]: `nowhere` is not an enabled channel"),
        ];
        for (request, expected) in cases {
            let got = keys(check(&request, ids(), &cx));
            assert!(got.iter().any(|e| e.contains(expected)), "{expected}: {got:?}");
        }
    }

    #[test]
    fn a_break_overlapping_another_on_the_same_leg_is_refused() {
        let e = event("2026-12-10T11:00:00Z", 60);
        let ch = channels();
        let now = e.on_air - chrono::Duration::hours(1);
        let at = |m: i64| BreakAt::Utc(e.on_air + chrono::Duration::minutes(m));
        let cx = BreakContext { now, event: &e, channels: &ch, existing: &[] };
        let first = check(&new(at(10), 120, &["kr-kbs"]), ids(), &cx).unwrap();
        let cx = BreakContext { existing: &first, ..cx };
        let got = keys(check(&new(at(11), 60, &[]), ids(), &cx));
        assert!(got.iter().any(|e| e.contains("overlaps break br-000000000001 on kr-kbs")), "{got:?}");
        // Another leg at the same time, or the same leg right after: fine.
        assert!(check(&new(at(11), 60, &["kz-khabar"]), ids(), &cx).is_ok());
        assert!(check(&new(at(12), 60, &["kr-kbs"]), ids(), &cx).is_ok());
    }

    #[test]
    fn a_delayed_leg_has_its_own_local_time_on_its_own_air() {
        // Khabar airs at 20:00 Almaty (15:00 UTC) a final that goes live at
        // 11:00 UTC: its 20:15 is 11:15 on the live programme.
        let e = event("2026-12-10T11:00:00Z", 60);
        let mut ch = channels();
        ch[1].air_policy = crate::config::AirPolicy::LocalTime(NaiveTime::from_hms_opt(20, 0, 0).unwrap());
        let cx = BreakContext { now: e.on_air - chrono::Duration::hours(1), event: &e, channels: &ch, existing: &[] };
        let local = BreakAt::Local { local: "20:15".into(), zone: None, fold: Fold::Unspecified };
        let got = check(&new(local, 60, &["kz-khabar"]), ids(), &cx).unwrap();
        assert_eq!(utc_text(got[0].start), "2026-12-10T11:15:00.000Z");
    }
}
