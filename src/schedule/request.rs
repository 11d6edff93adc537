//! A request to schedule an event, checked: every problem with its key in
//! one answer, before anything is stored. Pure: the coordinator hands in
//! the channels, the time and its own refusals, and stores what comes out.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{AirTime, Event, EventId, EventState, utc_text};
use crate::config::{self, Channel, FieldError};

/// What an operator asks for (ScheduleEvent).
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Title.
    pub title: String,
    /// T0.
    pub on_air: DateTime<Utc>,
    /// Programme length (must be positive).
    pub duration: chrono::Duration,
    /// Default [`super::DEFAULT_PREROLL`].
    pub preroll: Option<chrono::Duration>,
    /// Default [`super::DEFAULT_POSTROLL`].
    pub postroll: Option<chrono::Duration>,
    /// Empty: every enabled channel.
    pub channel_ids: Vec<String>,
}

/// What the check needs besides the request.
pub struct Context<'a> {
    /// Now.
    pub now: DateTime<Utc>,
    /// Every stored channel.
    pub channels: &'a [Channel],
    /// Why a channel cannot carry the programme, if it cannot (the
    /// programme's format against the channel's protocol and languages).
    pub refuses: &'a dyn Fn(&Channel) -> Option<String>,
    /// How long the recording delayed legs air from is kept.
    pub retention: Duration,
}

/// Checks `new`; the event to store (state SCHEDULED, id `id`), or every
/// problem, each with its key.
pub fn check(new: &NewEvent, id: EventId, cx: &Context<'_>) -> Result<Event, Vec<FieldError>> {
    let now = cx.now;
    let mut errs = Vec::new();
    let title = new.title.trim().to_owned();
    if title.is_empty() || title.chars().count() > config::MAX_NAME_CHARS || title.chars().any(char::is_control) {
        errs.push(field("title", format!("1 to {} characters, no control characters", config::MAX_NAME_CHARS)));
    }
    if new.on_air <= now {
        errs.push(field("on_air", format!("{} is in the past (now {})", utc_text(new.on_air), utc_text(now))));
    }
    let positive = |d: chrono::Duration, key: &str, errs: &mut Vec<FieldError>, allow_zero: bool| {
        let ok = if allow_zero { d >= chrono::Duration::zero() } else { d > chrono::Duration::zero() };
        if !ok || d > chrono::Duration::days(7) {
            let what = if allow_zero { "zero or more" } else { "more than zero" };
            errs.push(field(key, format!("must be {what} and at most 7 days")));
        }
        d.to_std().unwrap_or_default()
    };
    let duration = positive(new.duration, "duration", &mut errs, false);
    let preroll = new.preroll.map_or(super::DEFAULT_PREROLL, |d| positive(d, "preroll", &mut errs, true));
    let postroll = new.postroll.map_or(super::DEFAULT_POSTROLL, |d| positive(d, "postroll", &mut errs, true));
    if new.channel_ids.len() > config::MAX_EVENT_CHANNELS {
        let message = format!("{} channels listed; at most {}", new.channel_ids.len(), config::MAX_EVENT_CHANNELS);
        return Err(vec![field("channel_ids", message)]);
    }
    let mut channel_ids = Vec::new();
    if new.channel_ids.is_empty() {
        channel_ids.extend(cx.channels.iter().filter(|c| c.enabled).map(|c| c.id.clone()));
        if channel_ids.is_empty() {
            errs.push(field("channel_ids", "there is no enabled channel".into()));
        }
    }
    for (i, raw) in new.channel_ids.iter().enumerate() {
        let key = format!("channel_ids[{i}]");
        match cx.channels.iter().find(|c| c.id.as_str() == raw) {
            None => errs.push(field(&key, format!("no channel {}", config::quote(raw)))),
            Some(c) if !c.enabled => errs.push(field(&key, format!("channel {} is disabled", config::quote(raw)))),
            Some(c) if channel_ids.contains(&c.id) => {
                errs.push(field(&key, format!("{} is listed twice", config::quote(raw))))
            }
            Some(c) => channel_ids.push(c.id.clone()),
        }
    }
    let mut max_delay = Duration::ZERO;
    for id in &channel_ids {
        let Some(c) = cx.channels.iter().find(|c| &c.id == id) else { continue };
        // The key names the channel where the request listed it.
        let key = match new.channel_ids.iter().position(|r| r == id.as_str()) {
            Some(i) => format!("channel_ids[{i}]"),
            None => "channel_ids".to_owned(),
        };
        if let Some(why) = (cx.refuses)(c) {
            errs.push(field(&key, why));
        }
        match super::air_time(new.on_air, c) {
            Err(why) => errs.push(field(&key, why)),
            Ok(a) if a.delay > cx.retention => errs.push(field(&key, too_late(id.as_str(), &a, cx.retention))),
            Ok(a) => max_delay = max_delay.max(a.delay),
        }
    }
    errs.extend(outside_wire_range(new.on_air, preroll, duration, max_delay, postroll));
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Event {
        id,
        title,
        on_air: new.on_air,
        duration,
        preroll,
        postroll,
        channel_ids,
        state: EventState::Scheduled,
        ended: None,
        created: now,
        max_delay,
    })
}

fn field(key: &str, message: String) -> FieldError {
    FieldError { key: key.into(), message }
}

fn too_late(id: &str, a: &AirTime, retention: Duration) -> String {
    format!(
        "channel `{id}` airs at {} local, {} after T0: longer than the recording is kept ({})",
        a.local_on_air.format("%H:%M:%S %Z"),
        config::uri::format_duration(a.delay),
        config::uri::format_duration(retention)
    )
}

/// The first of an event's instants (arming, T0, end, the latest delayed
/// leg's end, the end of post-roll) that a protobuf `Timestamp` cannot
/// carry, as the error of the field that puts it there.
pub fn outside_wire_range(
    on_air: DateTime<Utc>,
    preroll: Duration,
    duration: Duration,
    max_delay: Duration,
    postroll: Duration,
) -> Option<FieldError> {
    let last = || {
        utc_text(DateTime::<Utc>::from_timestamp(super::LAST_INSTANT_SECONDS, 0).unwrap_or(DateTime::<Utc>::MAX_UTC))
    };
    let add = |t: Option<DateTime<Utc>>, d: Duration| t.and_then(|t| t.checked_add_signed(super::chrono_duration(d)));
    let fits = |t: Option<DateTime<Utc>>| t.is_some_and(super::in_wire_range);
    let error = |key: &str, what: String| {
        Some(field(key, format!("{what}: instants after {} cannot be stored or sent", last())))
    };
    if !fits(Some(on_air)) {
        return error("on_air", format!("T0 {} is out of range", utc_text(on_air)));
    }
    if !fits(on_air.checked_sub_signed(super::chrono_duration(preroll))) {
        return error("preroll", "the legs would connect before 0001-01-01".into());
    }
    let end = add(Some(on_air), duration);
    if !fits(end) {
        return error("duration", "the programme would end out of range".into());
    }
    if !fits(add(end, max_delay)) {
        return error(
            "channel_ids",
            format!("a leg airing {} after T0 would end out of range", config::uri::format_duration(max_delay)),
        );
    }
    if !fits(add(add(end, max_delay), postroll)) {
        return error("postroll", "post-roll would end out of range".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(id: &str, enabled: bool, policy: &str) -> Channel {
        let text = format!(
            "id = \"{id}\"\nname = \"N\"\ncountry = \"KR\"\ntimezone = \"Asia/Seoul\"\nenabled = {enabled}\n{policy}\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:7000\" }}\n"
        );
        config::parse_channel(&text).expect("channel")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc)
    }

    fn request(ids: &[&str]) -> NewEvent {
        NewEvent {
            title: " Silk Way Star: grand final ".into(),
            on_air: at("2026-12-24T15:00:00Z"),
            duration: chrono::Duration::hours(2),
            preroll: None,
            postroll: Some(chrono::Duration::minutes(1)),
            channel_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Every problem of one request comes back at once, each with its key;
    /// a good request becomes the event to store, nothing else needed.
    #[test]
    fn a_request_is_checked_whole_without_the_coordinator() {
        let channels = [channel("kr-kbs", true, ""), channel("off", false, ""), channel("rtmp-like", true, "")];
        let refuses = |c: &Channel| (c.id.as_str() == "rtmp-like").then(|| "cannot carry HEVC".to_owned());
        let cx = Context {
            now: at("2026-12-02T12:00:00Z"),
            channels: &channels,
            refuses: &refuses,
            retention: Duration::from_secs(86_400),
        };

        let event = check(&request(&["kr-kbs"]), EventId("e1".into()), &cx).expect("valid");
        assert_eq!((event.title.as_str(), event.state), ("Silk Way Star: grand final", EventState::Scheduled));
        assert_eq!((event.preroll, event.postroll), (crate::schedule::DEFAULT_PREROLL, Duration::from_secs(60)));
        assert_eq!(event.channel_ids.len(), 1);

        let mut bad = request(&["kr-kbs", "off", "nope", "kr-kbs", "rtmp-like"]);
        bad.title = "\u{7}".into();
        bad.on_air = at("2026-12-01T00:00:00Z");
        bad.duration = chrono::Duration::zero();
        let errs = check(&bad, EventId("e2".into()), &cx).expect_err("invalid");
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["title", "on_air", "duration", "channel_ids[1]", "channel_ids[2]", "channel_ids[3]", "channel_ids[4]"],
            "{errs:?}"
        );
        assert!(errs[6].message.contains("HEVC"), "{errs:?}");

        // No channel listed: every enabled one, each checked (the refusing
        // one named, not silently dropped).
        let errs = check(&request(&[]), EventId("e3".into()), &cx).expect_err("one refuses");
        assert_eq!((errs.len(), errs[0].key.as_str()), (1, "channel_ids"), "{errs:?}");
        let only_good = [channel("kr-kbs", true, ""), channel("off", false, "")];
        let cx = Context { channels: &only_good, ..cx };
        assert_eq!(check(&request(&[]), EventId("e4".into()), &cx).expect("valid").channel_ids.len(), 1);
    }
}
