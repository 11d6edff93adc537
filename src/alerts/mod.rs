//! Alerts that push: trouble an on-call engineer must hear of, raised from
//! what the as-run log records, kept in the store with one delivery per
//! webhook, and POSTed (signed) by [`deliver`] until each webhook took it.
//!
//! An alert knows how close air time is: trouble long before a partner's
//! air time is a [`Severity::Ticket`], trouble within
//! [`AlertSettings::page_within`] of it or while it airs is a
//! [`Severity::Page`] ([`severity`]).

pub mod deliver;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{AlertSettings, Channel};
use crate::schedule::{Event, EventState};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record (a switch back to the primary, a test).
    Info,
    /// Someone should look before air time.
    Ticket,
    /// Wake someone: air time is near, or the partner is on air.
    Page,
}

impl Severity {
    /// `info`, `ticket`, `page`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Ticket => "ticket",
            Severity::Page => "page",
        }
    }
}

/// What an alert is about (its `kind`, kebab-case on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// A leg lost its partner and is reconnecting.
    LegLost,
    /// A leg cannot reach its partner (refused, unreachable, timed out),
    /// not having been on air since it started or since it was lost.
    LegUnreachable,
    /// A leg gave up (its pipeline cannot run).
    LegFailed,
    /// A leg was left out when the event armed.
    LegSkipped,
    /// A leg not on air [`AlertSettings::not_on_air_before`] its air time.
    LegNotOnAir,
    /// The programme left the primary for the backup.
    OnBackup,
    /// The programme went to the slate during air time, by itself.
    OnSlate,
    /// Master control put the slate on during air time.
    SlateByHand,
    /// The programme is back on the primary.
    PrimaryBack,
    /// The event's relay could not start (when arming, or after a restart).
    RelayFailed,
    /// A rehearsal's verdict was fail.
    RehearsalFailed,
    /// A recurring rehearsal could not run.
    RehearsalSkipped,
    /// The daemon started again while an event was live.
    DaemonRestarted,
    /// The recording delayed legs air from lost data.
    RecordingLost,
    /// `simulcastctl alerts test`.
    Test,
}

impl Cause {
    /// The wire name (`leg-lost`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::LegLost => "leg-lost",
            Cause::LegUnreachable => "leg-unreachable",
            Cause::LegFailed => "leg-failed",
            Cause::LegSkipped => "leg-skipped",
            Cause::LegNotOnAir => "leg-not-on-air",
            Cause::OnBackup => "on-backup",
            Cause::OnSlate => "on-slate",
            Cause::SlateByHand => "slate-by-hand",
            Cause::PrimaryBack => "primary-back",
            Cause::RelayFailed => "relay-failed",
            Cause::RehearsalFailed => "rehearsal-failed",
            Cause::RehearsalSkipped => "rehearsal-skipped",
            Cause::DaemonRestarted => "daemon-restarted",
            Cause::RecordingLost => "recording-lost",
            Cause::Test => "test",
        }
    }

    /// A few words for the summary line.
    fn says(self) -> &'static str {
        match self {
            Cause::LegLost => "leg lost its partner",
            Cause::LegUnreachable => "leg cannot reach its partner",
            Cause::LegFailed => "leg failed",
            Cause::LegSkipped => "leg left out",
            Cause::LegNotOnAir => "leg not on air",
            Cause::OnBackup => "programme on the backup",
            Cause::OnSlate => "programme on the slate",
            Cause::SlateByHand => "slate put on by master control",
            Cause::PrimaryBack => "programme back on the primary",
            Cause::RelayFailed => "relay could not start",
            Cause::RehearsalFailed => "rehearsal failed",
            Cause::RehearsalSkipped => "rehearsal skipped",
            Cause::DaemonRestarted => "simulcastd restarted mid-event",
            Cause::RecordingLost => "recording lost data",
            Cause::Test => "test alert",
        }
    }

    /// Causes that are news, not trouble, whatever the time.
    fn is_news(self) -> bool {
        matches!(self, Cause::PrimaryBack | Cause::SlateByHand | Cause::Test)
    }
}

/// How urgent trouble is at `now` for something airing at `air` in an
/// event in `state`: a `page` while it airs or within `page_within` of
/// air time, a `ticket` before that.
pub fn severity(settings: &AlertSettings, now: DateTime<Utc>, air: DateTime<Utc>, state: EventState) -> Severity {
    let airing = matches!(state, EventState::Held | EventState::OnAir | EventState::PostRoll);
    let until_air = (air - now).to_std().unwrap_or_default();
    if airing || until_air <= settings.page_within { Severity::Page } else { Severity::Ticket }
}

/// The event an alert concerns, as the receiver sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFacts {
    /// `ev-...`.
    pub id: String,
    /// Title.
    pub title: String,
    /// Its state when the alert was raised.
    pub state: String,
    /// T0, RFC 3339 UTC.
    pub t0_utc: String,
    /// Minutes from the alert to T0 (negative once T0 has passed).
    pub minutes_to_t0: f64,
}

/// The partner an alert concerns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelFacts {
    /// `kz-khabar`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// ISO 3166 code.
    pub country: String,
    /// IANA zone.
    pub timezone: String,
    /// Its air time, local, ISO 8601 with offset (empty when unknown).
    pub local_air_time: String,
    /// Minutes from the alert to its air time (negative once it airs).
    pub minutes_to_air: Option<f64>,
}

/// One alert: what a webhook receives, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The same for every delivery attempt of this alert: receivers
    /// de-duplicate on it (deliveries are at least once).
    pub idempotency_key: String,
    /// When it was raised, RFC 3339 UTC.
    pub raised_at: String,
    /// What it is about.
    pub kind: Cause,
    /// How urgent.
    pub severity: Severity,
    /// One line for a pager.
    pub summary: String,
    /// What the as-run log says.
    pub detail: String,
    /// The event, if it concerns one.
    pub event: Option<EventFacts>,
    /// The partner, if it concerns one leg.
    pub channel: Option<ChannelFacts>,
    /// The daemon that raised it (host name).
    pub source: String,
}

/// Minutes from `now` to `t`.
fn minutes(now: DateTime<Utc>, t: DateTime<Utc>) -> f64 {
    ((t - now).num_milliseconds() as f64 / 60_000.0 * 10.0).round() / 10.0
}

/// "in 1 h 59 min", "in 4 min", "on air for 3 min".
fn when(mins: f64) -> String {
    let m = mins.abs().round() as i64;
    let span = if m >= 60 { format!("{} h {} min", m / 60, m % 60) } else { format!("{m} min") };
    if mins >= 0.0 { format!("air in {span}") } else { format!("on air for {span}") }
}

/// A fresh idempotency key: `alr-` and 128 random bits.
pub fn new_key() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b = fastrand::u128(..).to_be_bytes();
    }
    format!("alr-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// This machine's name, for [`Alert::source`].
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

/// Raises an alert for `cause` at `now`, about `event` (and one leg of it,
/// `channel`, when given).
pub fn raise(
    settings: &AlertSettings,
    now: DateTime<Utc>,
    cause: Cause,
    detail: String,
    event: Option<&Event>,
    channel: Option<&Channel>,
) -> Alert {
    // A leg's own air time: a delayed leg airs later than T0.
    let air = match (event, channel) {
        (Some(e), Some(c)) => crate::schedule::air_time(e.on_air, c).ok().map(|a| a.local_on_air),
        _ => None,
    };
    let air_utc = air.map(|a| a.with_timezone(&Utc)).or(event.map(|e| e.on_air));
    let severity = match (event, air_utc) {
        _ if cause.is_news() => Severity::Info,
        (Some(e), Some(air)) => severity(settings, now, air, e.state),
        // Trouble outside any event (a rehearsal of none): a ticket.
        _ => Severity::Ticket,
    };
    let channel_facts = channel.map(|c| ChannelFacts {
        id: c.id.to_string(),
        name: c.name.clone(),
        country: c.country.clone(),
        timezone: c.timezone.name().to_owned(),
        local_air_time: air.map(|a| a.to_rfc3339()).unwrap_or_default(),
        minutes_to_air: air.map(|a| minutes(now, a.with_timezone(&Utc))),
    });
    let mut summary = format!("{}: {}", severity.as_str().to_uppercase(), cause.says());
    if let Some(c) = channel {
        summary += &format!(" — {} ({}, {})", c.id, c.name, c.country);
    }
    if let Some(e) = event {
        summary += &format!(" — {}", e.title);
        if let Some(air) = air_utc
            && !e.state.is_final()
        {
            summary += &format!(", {}", when(minutes(now, air)));
        }
        if let Some(a) = air.filter(|_| channel.is_some()) {
            summary += &format!(" (local {} {})", a.format("%H:%M"), a.format("%Z"));
        }
    }
    if !detail.is_empty() {
        summary += &format!(": {detail}");
    }
    Alert {
        idempotency_key: new_key(),
        raised_at: crate::coordinator::asrun::utc_text(now),
        kind: cause,
        severity,
        summary: crate::observe::redact::scrub(&summary).into_owned(),
        detail: crate::observe::redact::scrub(&detail).into_owned(),
        event: event.map(|e| EventFacts {
            id: e.id.0.clone(),
            title: e.title.clone(),
            state: e.state.as_str().to_owned(),
            t0_utc: crate::coordinator::asrun::utc_text(e.on_air),
            minutes_to_t0: minutes(now, e.on_air),
        }),
        channel: channel_facts,
        source: host_name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn trouble_pages_near_air_time_and_during_it_and_is_a_ticket_before() {
        let s = AlertSettings::default();
        let t0 = at("2026-12-05T16:00:00Z");
        let armed = EventState::Armed;
        assert_eq!(severity(&s, at("2026-12-05T14:00:00Z"), t0, armed), Severity::Ticket);
        assert_eq!(severity(&s, at("2026-12-05T15:29:59Z"), t0, armed), Severity::Ticket);
        assert_eq!(severity(&s, at("2026-12-05T15:30:00Z"), t0, armed), Severity::Page);
        assert_eq!(severity(&s, at("2026-12-05T15:55:00Z"), t0, armed), Severity::Page);
        // On air: always a page, even with T0 hours away on paper (held).
        assert_eq!(severity(&s, at("2026-12-05T10:00:00Z"), t0, EventState::Held), Severity::Page);
        assert_eq!(severity(&s, at("2026-12-05T17:00:00Z"), t0, EventState::OnAir), Severity::Page);
        let s = AlertSettings { page_within: Duration::from_secs(3 * 3600), ..s };
        assert_eq!(severity(&s, at("2026-12-05T14:00:00Z"), t0, armed), Severity::Page);
    }

    #[test]
    fn the_wire_names_are_kebab_case_and_keys_differ() {
        for c in [Cause::LegNotOnAir, Cause::OnSlate, Cause::RehearsalFailed, Cause::DaemonRestarted] {
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::Value::String(c.as_str().into()));
        }
        assert_eq!(serde_json::to_value(Severity::Page).unwrap(), "page");
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 32);
    }
}
