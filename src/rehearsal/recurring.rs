//! Rehearsals set to recur: "every day at 14:00 Asia/Seoul until
//! 2026-11-22". The daemon fires each at that local wall-clock time, which
//! moves in UTC when the zone changes its offset.

use chrono::{DateTime, Duration as ChronoDuration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::Plan;
use crate::config::FieldError;

/// A fire this late (the daemon was down) is skipped, not run.
pub const LATE_LIMIT: ChronoDuration = ChronoDuration::minutes(10);

/// A recurring rehearsal of one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recurring {
    /// `rs-` and 12 hex digits.
    pub id: String,
    /// The event rehearsed.
    pub event_id: String,
    /// The local time of day.
    pub at: NaiveTime,
    /// Its zone (IANA name).
    pub timezone: String,
    /// The last local date it fires on.
    pub until: NaiveDate,
    /// Each run's timeline and source.
    pub plan: Plan,
    /// Who set it.
    pub created_by: String,
    /// When it was set.
    pub created_at: DateTime<Utc>,
    /// The latest instant it fired (or was skipped) for.
    pub last_fired: Option<DateTime<Utc>>,
}

impl Recurring {
    /// The zone; stored names were checked when the schedule was made.
    pub fn tz(&self) -> Tz {
        self.timezone.parse().unwrap_or(Tz::UTC)
    }

    /// The next instant it fires after what it already fired for.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        let from = self.last_fired.unwrap_or(self.created_at).max(self.created_at);
        next_fire(from, self.at, self.tz(), self.until)
    }
}

/// When a recurring rehearsal is asked to fire, as a request gives it:
/// every problem with its key, or the zone, the time of day and the last
/// date, with at least one fire after `now` still to come. Pure.
pub fn when(
    timezone: &str,
    local_time: &str,
    until: &str,
    now: DateTime<Utc>,
) -> Result<(Tz, NaiveTime, NaiveDate), Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut err = |key: &str, message: String| errs.push(FieldError { key: key.into(), message });
    let tz: Option<Tz> = timezone.parse().ok();
    if tz.is_none() {
        err("timezone", format!("{} is not an IANA time zone", crate::config::quote(timezone)));
    }
    let at = NaiveTime::parse_from_str(local_time, "%H:%M").ok();
    if at.is_none() {
        err("local_time", "give HH:MM (14:00)".into());
    }
    let last = NaiveDate::parse_from_str(until, "%Y-%m-%d").ok();
    if last.is_none() {
        err("until", "give a date, YYYY-MM-DD".into());
    }
    let (Some(tz), Some(at), Some(last)) = (tz, at, last) else { return Err(errs) };
    if next_fire(now, at, tz, last).is_none() {
        err("until", format!("{last} is past: the rehearsal would never run"));
        return Err(errs);
    }
    Ok((tz, at, last))
}

/// The first instant strictly after `after` at which the wall clock in `tz`
/// reads `at` on a date no later than `until`. Where `at` falls in a DST
/// gap that day, it fires at the first instant after the gap; where it
/// happens twice (clocks go back), at the first.
pub fn next_fire(after: DateTime<Utc>, at: NaiveTime, tz: Tz, until: NaiveDate) -> Option<DateTime<Utc>> {
    let mut day = after.with_timezone(&tz).date_naive().pred_opt()?;
    while day <= until {
        let local = day.and_time(at);
        let instant = match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => Some(t),
            LocalResult::Ambiguous(first, _) => Some(first),
            // In a gap: the first minute that exists after it.
            LocalResult::None => (1..=180)
                .find_map(|m| tz.from_local_datetime(&(local + ChronoDuration::minutes(m))).earliest())
                .map(|t| {
                    let mut t = t;
                    while let Some(prev) =
                        tz.from_local_datetime(&(t.naive_local() - ChronoDuration::seconds(1))).earliest()
                    {
                        if prev >= t {
                            break;
                        }
                        t = prev;
                    }
                    t
                }),
        };
        if let Some(t) = instant.map(|t| t.with_timezone(&Utc))
            && t > after
        {
            return Some(t);
        }
        day = day.succ_opt()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn daily_at_a_local_time_until_a_local_date() {
        let seoul: Tz = "Asia/Seoul".parse().unwrap();
        let at = NaiveTime::from_hms_opt(14, 0, 0).unwrap();
        let until = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        // 14:00 KST is 05:00 UTC.
        assert_eq!(next_fire(utc("2026-11-20T01:00:00Z"), at, seoul, until), Some(utc("2026-11-20T05:00:00Z")));
        assert_eq!(next_fire(utc("2026-11-20T05:00:00Z"), at, seoul, until), Some(utc("2026-11-21T05:00:00Z")));
        assert_eq!(next_fire(utc("2026-11-22T05:00:00Z"), at, seoul, until), None);
        // Late in the UTC day it is already the next day in Seoul.
        assert_eq!(next_fire(utc("2026-11-20T20:00:00Z"), at, seoul, until), Some(utc("2026-11-21T05:00:00Z")));
    }

    #[test]
    fn the_utc_instant_follows_dst_and_a_gap_fires_after_it() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let until = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        let nine = NaiveTime::from_hms_opt(9, 0, 0).unwrap();
        // 09:00 EDT then 09:00 EST across 1 November 2026.
        assert_eq!(next_fire(utc("2026-10-31T00:00:00Z"), nine, ny, until), Some(utc("2026-10-31T13:00:00Z")));
        assert_eq!(next_fire(utc("2026-11-01T00:00:00Z"), nine, ny, until), Some(utc("2026-11-01T14:00:00Z")));
        // 02:30 does not exist on 8 March 2026: fires at 03:00 EDT (07:00 UTC).
        let half_two = NaiveTime::from_hms_opt(2, 30, 0).unwrap();
        assert_eq!(next_fire(utc("2026-03-08T00:00:00Z"), half_two, ny, until), Some(utc("2026-03-08T07:00:00Z")));
        // 01:30 happens twice on 1 November 2026: the first (EDT, 05:30 UTC), once.
        let half_one = NaiveTime::from_hms_opt(1, 30, 0).unwrap();
        let first = next_fire(utc("2026-11-01T00:00:00Z"), half_one, ny, until).unwrap();
        assert_eq!(first, utc("2026-11-01T05:30:00Z"));
        assert_eq!(next_fire(first, half_one, ny, until), Some(utc("2026-11-02T06:30:00Z")));
    }

    #[test]
    fn a_request_names_each_of_its_mistakes_and_a_last_date_already_past() {
        let now = utc("2026-12-03T05:00:00Z");
        let (tz, at, until) = when("Asia/Seoul", "14:00", "2026-12-10", now).unwrap();
        assert_eq!(
            (tz.name(), at.to_string(), until.to_string()),
            ("Asia/Seoul", "14:00:00".into(), "2026-12-10".into())
        );
        let errs = when("Asia/Seul", "2pm", "10/12/2026", now).unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["timezone", "local_time", "until"]);
        assert!(errs[0].message.contains("`Asia/Seul`"), "{errs:?}");
        // 14:00 in Seoul on 2026-12-03 is 05:00 UTC: already gone by 05:00:01.
        let errs = when("Asia/Seoul", "14:00", "2026-12-03", utc("2026-12-03T05:00:01Z")).unwrap_err();
        assert_eq!(
            (errs[0].key.as_str(), errs[0].message.as_str()),
            ("until", "2026-12-03 is past: the rehearsal would never run")
        );
        assert!(when("Asia/Seoul", "14:00", "2026-12-03", utc("2026-12-03T04:59:59Z")).is_ok());
    }
}
