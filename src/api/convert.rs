//! Proto <-> domain conversion. A request's channel is turned into the raw
//! form a configuration file holds ([`RawChannel`]) and compiled by the
//! same code, so the API and the file accept and refuse exactly the same
//! things (keys under `channel.`); a response shows that raw form.
//! Responses never carry a secret: only `has_passphrase` / `has_stream_key`.

use crate::config::raw::{RawAirPolicy, RawChannel, RawFile, RawIngest, RawRist, RawRtmp, RawSrt, RawUdp, SecretText};
use crate::config::{self, Channel, ChannelId, FieldError, Ingest};
use crate::coordinator::{NewEvent, Snapshot};
use crate::media::failover::{Feed, SourceChoice};
use crate::media::leg::LegState;
use crate::media::source::SourceStatus;
use crate::proto;
use crate::schedule::breaks::{AdBreak, BreakAt, NewBreak};
use crate::schedule::{AirTime, Event, EventId, EventState, Fold, resolve_local};
use crate::store::AsRunEntry;
use chrono::{DateTime, Utc};

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn duration_text(d: &prost_types::Duration) -> String {
    format!("{}ms", i128::from(d.seconds) * 1000 + i128::from(d.nanos) / 1_000_000)
}

/// A request's channel, compiled (keys under `channel.`): the proto turned
/// into the raw form a file holds, then the one compile step.
pub fn channel_from_proto(p: &proto::Channel) -> Result<Channel, Vec<FieldError>> {
    let missing = |key: &str| vec![FieldError { key: format!("channel.{key}"), message: "missing".into() }];
    let air_policy = p.air_policy.as_ref().and_then(|a| a.policy.as_ref()).map(|policy| match policy {
        proto::air_policy::Policy::Live(_) => RawAirPolicy::Live,
        proto::air_policy::Policy::LocalTime(at) => RawAirPolicy::LocalTime { at: at.clone() },
    });
    let ingest = raw_ingest(p.ingest.as_ref().and_then(|i| i.kind.as_ref()).ok_or_else(|| missing("ingest"))?);
    let ingest_backup = p.ingest_backup.as_ref().and_then(|i| i.kind.as_ref()).map(raw_ingest);
    let raw = RawChannel {
        id: p.id.clone(),
        name: p.name.clone(),
        country: p.country.clone(),
        timezone: p.timezone.clone(),
        enabled: Some(p.enabled.unwrap_or(true)),
        audio: p.audio.clone(),
        air_policy,
        ingest,
        ingest_backup,
    };
    config::compile_channel(raw.checked("channel")?, "channel")
}

/// A request's ingest in the raw form a file holds.
fn raw_ingest(kind: &proto::ingest::Kind) -> RawIngest {
    use proto::ingest::Kind;
    match kind {
        Kind::Srt(s) => RawIngest::Srt(RawSrt {
            uri: s.uri.clone(),
            mode: Some(match proto::SrtMode::try_from(s.mode) {
                Ok(proto::SrtMode::Listener) => "listener".into(),
                _ => "caller".into(),
            }),
            latency: s.latency.as_ref().map(duration_text),
            passphrase: nonempty(&s.passphrase).map(SecretText),
            passphrase_file: None,
            stream_id: nonempty(&s.stream_id),
        }),
        Kind::Rtmp(r) => RawIngest::Rtmp(RawRtmp {
            url: r.url.clone(),
            stream_key: nonempty(&r.stream_key).map(SecretText),
            stream_key_file: None,
        }),
        Kind::Udp(u) => RawIngest::Udp(RawUdp {
            uri: u.uri.clone(),
            ttl: (u.ttl != 0).then_some(i64::from(u.ttl)),
            interface: nonempty(&u.interface),
        }),
        Kind::Rist(r) => RawIngest::Rist(RawRist { uri: r.uri.clone() }),
        Kind::File(f) => RawIngest::File(RawFile { path: f.path.clone() }),
    }
}

fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// A channel for a request (the CLI creating one): secrets included, a
/// secret file's read here, since a request carries values, not names.
pub fn channel_to_proto_with_secrets(ch: &Channel) -> proto::Channel {
    to_proto(ch, true)
}

/// A channel for a response: secrets never included.
pub fn channel_to_proto(ch: &Channel) -> proto::Channel {
    to_proto(ch, false)
}

/// `ch` as written ([`Channel::spec`]) on the wire; with `secrets`, the
/// values its secrets compiled to.
fn to_proto(ch: &Channel, secrets: bool) -> proto::Channel {
    let spec = &ch.spec;
    let kind = ingest_to_proto(&spec.ingest, &ch.ingest, secrets);
    let backup = match (&spec.ingest_backup, &ch.ingest_backup) {
        (Some(raw), Some(compiled)) => Some(proto::Ingest { kind: Some(ingest_to_proto(raw, compiled, secrets)) }),
        _ => None,
    };
    let policy = match &spec.air_policy {
        None | Some(RawAirPolicy::Live) => proto::air_policy::Policy::Live(proto::air_policy::Live {}),
        Some(RawAirPolicy::LocalTime { at }) => proto::air_policy::Policy::LocalTime(at.clone()),
    };
    proto::Channel {
        id: spec.id.clone(),
        name: spec.name.clone(),
        country: spec.country.clone(),
        timezone: spec.timezone.clone(),
        ingest: Some(proto::Ingest { kind: Some(kind) }),
        air_policy: Some(proto::AirPolicy { policy: Some(policy) }),
        enabled: Some(ch.enabled),
        audio: spec.audio.clone(),
        ingest_backup: backup,
    }
}

/// An ingest as written (`spec`) on the wire; with `secrets`, the values
/// its secrets compiled to.
fn ingest_to_proto(spec: &RawIngest, compiled: &Ingest, secrets: bool) -> proto::ingest::Kind {
    use proto::ingest::Kind;
    let shown = |s: Option<&config::Secret>| match s {
        Some(s) if secrets => s.expose().to_owned(),
        _ => String::new(),
    };
    match (spec, compiled) {
        (RawIngest::Srt(s), compiled) => Kind::Srt(proto::SrtIngest {
            uri: s.uri.clone(),
            mode: match s.mode.as_deref() {
                Some("listener") => proto::SrtMode::Listener as i32,
                _ => proto::SrtMode::Caller as i32,
            },
            latency: s.latency.as_deref().and_then(|l| config::uri::parse_duration(l).ok()).map(duration),
            passphrase: shown(match compiled {
                Ingest::Srt(c) => c.passphrase.as_ref(),
                _ => None,
            }),
            stream_id: s.stream_id.clone().unwrap_or_default(),
            has_passphrase: s.passphrase.is_some() || s.passphrase_file.is_some(),
        }),
        (RawIngest::Rtmp(r), compiled) => Kind::Rtmp(proto::RtmpIngest {
            url: r.url.clone(),
            stream_key: shown(match compiled {
                Ingest::Rtmp(c) => c.stream_key.as_ref(),
                _ => None,
            }),
            has_stream_key: r.stream_key.is_some() || r.stream_key_file.is_some(),
        }),
        (RawIngest::Udp(u), _) => Kind::Udp(proto::UdpIngest {
            uri: u.uri.clone(),
            ttl: u.ttl.and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
            interface: u.interface.clone().unwrap_or_default(),
        }),
        (RawIngest::Rist(r), _) => Kind::Rist(proto::RistIngest { uri: r.uri.clone() }),
        (RawIngest::File(f), _) => Kind::File(proto::FileIngest { path: f.path.clone() }),
    }
}

/// A UTC instant on the wire.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// A wire instant, checked; errors name `key`.
pub fn from_timestamp(t: &prost_types::Timestamp, key: &str) -> Result<DateTime<Utc>, FieldError> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|n| DateTime::from_timestamp(t.seconds, n))
        .ok_or_else(|| FieldError { key: key.into(), message: "not a valid timestamp".into() })
}

/// A wire duration, checked (sign and nanos consistent); errors name `key`.
pub fn from_duration(d: &prost_types::Duration, key: &str) -> Result<chrono::Duration, FieldError> {
    let bad = || FieldError { key: key.into(), message: "not a valid duration".into() };
    if d.nanos.abs() >= 1_000_000_000 || (d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0) {
        return Err(bad());
    }
    chrono::Duration::try_seconds(d.seconds)
        .and_then(|s| s.checked_add(&chrono::Duration::nanoseconds(i64::from(d.nanos))))
        .ok_or_else(bad)
}

/// An event for a response.
pub fn event_to_proto(e: &Event) -> proto::Event {
    proto::Event {
        id: e.id.to_string(),
        title: e.title.clone(),
        on_air_utc: Some(timestamp(e.on_air)),
        duration: Some(duration(e.duration)),
        preroll: Some(duration(e.preroll)),
        postroll: Some(duration(e.postroll)),
        channel_ids: e.channel_ids.iter().map(ToString::to_string).collect(),
        state: event_state(e.state) as i32,
        end_utc: Some(timestamp(e.end())),
        created_utc: Some(timestamp(e.created)),
    }
}

/// The wire form of an event state.
pub fn event_state(s: EventState) -> proto::EventState {
    match s {
        EventState::Scheduled => proto::EventState::Scheduled,
        EventState::Armed => proto::EventState::Armed,
        EventState::Held => proto::EventState::Held,
        EventState::OnAir => proto::EventState::OnAir,
        EventState::PostRoll => proto::EventState::PostRoll,
        EventState::Completed => proto::EventState::Completed,
        EventState::Aborted => proto::EventState::Aborted,
        EventState::Cancelled => proto::EventState::Cancelled,
    }
}

/// A schedule request, with a local T0 resolved in its zone. Every problem
/// is reported, each naming its field.
pub fn new_event_from_proto(r: &proto::ScheduleEventRequest) -> Result<NewEvent, Vec<FieldError>> {
    let mut errs = Vec::new();
    let on_air = match &r.on_air {
        Some(proto::schedule_event_request::OnAir::OnAirUtc(t)) => {
            from_timestamp(t, "on_air_utc").map_err(|e| errs.push(e)).ok()
        }
        Some(proto::schedule_event_request::OnAir::OnAirLocal(l)) => {
            resolve_local(&l.local, &l.timezone, fold(l.fold), "on_air_local").map_err(|e| errs.push(e)).ok()
        }
        None => {
            errs.push(FieldError { key: "on_air".into(), message: "missing: give on_air_utc or on_air_local".into() });
            None
        }
    };
    let duration = required_duration(&r.duration, "how long the programme lasts", &mut errs);
    let mut optional = |d: &Option<prost_types::Duration>, key: &str| {
        d.as_ref().and_then(|d| from_duration(d, key).map_err(|e| errs.push(e)).ok())
    };
    let preroll = optional(&r.preroll, "preroll");
    let postroll = optional(&r.postroll, "postroll");
    match (on_air, duration) {
        (Some(on_air), Some(duration)) if errs.is_empty() => Ok(NewEvent {
            title: r.title.clone(),
            on_air,
            duration,
            preroll,
            postroll,
            channel_ids: r.channel_ids.clone(),
        }),
        _ => Err(errs),
    }
}

/// A request's `duration`, which must be there (`what` says what it is);
/// a problem goes to `errs`.
fn required_duration(
    d: &Option<prost_types::Duration>,
    what: &str,
    errs: &mut Vec<FieldError>,
) -> Option<chrono::Duration> {
    match d {
        Some(d) => from_duration(d, "duration").map_err(|e| errs.push(e)).ok(),
        None => {
            errs.push(FieldError { key: "duration".into(), message: format!("missing: {what}") });
            None
        }
    }
}

/// A ScheduleBreak request as the schedule's own; every problem at once.
pub fn new_break_from_proto(r: &proto::ScheduleBreakRequest, event_id: EventId) -> Result<NewBreak, Vec<FieldError>> {
    use proto::schedule_break_request::At;
    let mut errs = Vec::new();
    let at = match &r.at {
        Some(At::AtUtc(t)) => from_timestamp(t, "at_utc").map(BreakAt::Utc).map_err(|e| errs.push(e)).ok(),
        Some(At::AtLocal(l)) => Some(BreakAt::Local {
            local: l.local.clone(),
            zone: (!l.timezone.is_empty()).then(|| l.timezone.clone()),
            fold: fold(l.fold),
        }),
        Some(At::After(d)) => from_duration(d, "after").map(BreakAt::After).map_err(|e| errs.push(e)).ok(),
        None => {
            errs.push(FieldError { key: "at".into(), message: "missing: give at_utc, at_local or after".into() });
            None
        }
    };
    let duration = required_duration(&r.duration, "how long the break lasts", &mut errs);
    if r.channel_ids.len() > crate::config::MAX_EVENT_CHANNELS {
        errs.push(FieldError {
            key: "channel_ids".into(),
            message: format!("{} channels; at most {}", r.channel_ids.len(), crate::config::MAX_EVENT_CHANNELS),
        });
    }
    match (at, duration) {
        (Some(at), Some(duration)) if errs.is_empty() => {
            Ok(NewBreak { event_id, at, duration, channel_ids: r.channel_ids.clone() })
        }
        _ => Err(errs),
    }
}

/// A break for a response, with each leg's start in its own zone.
pub fn break_to_proto(
    b: &AdBreak,
    legs: &[(ChannelId, DateTime<chrono_tz::Tz>, std::time::Duration)],
) -> proto::AdBreak {
    proto::AdBreak {
        id: b.id.clone(),
        event_id: b.event_id.to_string(),
        start_utc: Some(timestamp(b.start)),
        duration: Some(duration(b.duration)),
        channel_ids: b.channel_ids.iter().map(ToString::to_string).collect(),
        splice_event_id: b.splice_event_id,
        legs: legs
            .iter()
            .map(|(id, local, delay)| proto::BreakAirTime {
                channel_id: id.to_string(),
                local_start: local.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
                timezone: local.timezone().name().to_owned(),
                delay: Some(duration(*delay)),
            })
            .collect(),
        created_utc: Some(timestamp(b.created)),
    }
}

fn fold(f: i32) -> Fold {
    match proto::Fold::try_from(f) {
        Ok(proto::Fold::Earlier) => Fold::Earlier,
        Ok(proto::Fold::Later) => Fold::Later,
        _ => Fold::Unspecified,
    }
}

/// A leg's air time for a response.
pub fn air_time_to_proto(a: &AirTime) -> proto::AirTime {
    proto::AirTime {
        channel_id: a.channel_id.to_string(),
        timezone: a.timezone.name().to_owned(),
        local_on_air: a.local_on_air.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        utc_offset_seconds: a.utc_offset_seconds,
        zone_abbreviation: a.abbreviation.clone(),
        delay: Some(duration(a.delay)),
    }
}

/// The wire form of a source choice.
pub fn source_choice(c: SourceChoice) -> proto::SourceSelection {
    match c {
        SourceChoice::Auto => proto::SourceSelection::Auto,
        SourceChoice::Primary => proto::SourceSelection::Primary,
        SourceChoice::Backup => proto::SourceSelection::Backup,
        SourceChoice::Slate => proto::SourceSelection::Slate,
    }
}

/// The wire form of a leg state.
pub fn leg_state(s: LegState) -> proto::LegState {
    match s {
        LegState::Idle => proto::LegState::Idle,
        LegState::Connecting => proto::LegState::Connecting,
        LegState::OnAir => proto::LegState::OnAir,
        LegState::Reconnecting => proto::LegState::Reconnecting,
        LegState::Failed => proto::LegState::Failed,
        LegState::Stopped => proto::LegState::Stopped,
    }
}

/// One watcher's update from a snapshot: the event it watches (or the
/// running one), with legs while that event's relay runs.
pub fn status_update(snap: &Snapshot, watched: Option<&EventId>, lagged: u64) -> proto::StatusUpdate {
    let event = snap.event(watched);
    let live = snap.live.as_ref().filter(|l| event.is_some_and(|e| e.id == l.event_id));
    let now = snap.at;
    let legs = match (live, event) {
        (Some(l), _) => l
            .legs
            .iter()
            .map(|v| {
                let s = &v.status;
                proto::LegStatus {
                    channel_id: s.channel_id.clone(),
                    state: match (s.state, s.carries) {
                        (LegState::OnAir, crate::media::program::Content::Slate) => proto::LegState::Slate,
                        (state, _) => leg_state(state),
                    } as i32,
                    bytes_sent: s.bytes_sent,
                    bitrate_bps: s.bitrate_bps,
                    reconnects: s.reconnects,
                    dropped_buffers: s.dropped_buffers,
                    last_error: s.last_error.clone().unwrap_or_default(),
                    srt: s.srt.map(|f| proto::SrtStats {
                        rtt_ms: f.rtt_ms,
                        packets_lost: f.packets_lost,
                        packets_retransmitted: f.packets_retransmitted,
                    }),
                    protocol: s.protocol.clone(),
                    timezone: v.timezone.name().to_owned(),
                    local_time: now.with_timezone(&v.timezone).to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                    audio: s.audio.clone(),
                    audio_missing: s.audio_missing.clone(),
                    break_cues_sent: s.cues_sent,
                    break_cues_missed: s.cues_missed,
                    node: v.node.clone().or_else(|| l.node.clone()).unwrap_or_default(),
                }
            })
            .collect(),
        // Not running: its legs are idle (or stopped, once it is over).
        (None, Some(e)) => e
            .channel_ids
            .iter()
            .map(|id| proto::LegStatus {
                channel_id: id.to_string(),
                state: if e.state.is_final() { proto::LegState::Stopped } else { proto::LegState::Idle } as i32,
                ..Default::default()
            })
            .collect(),
        (None, None) => vec![],
    };
    proto::StatusUpdate {
        event_id: event.map(|e| e.id.to_string()).unwrap_or_default(),
        event_state: event.map_or(proto::EventState::Unspecified, |e| event_state(e.state)) as i32,
        source_in_use: live.map_or(proto::SourceSelection::Unspecified, |l| feed(l.source_in_use)) as i32,
        legs,
        at: Some(timestamp(now)),
        lagged,
        title: event.map(|e| e.title.clone()).unwrap_or_default(),
        on_air_utc: event.map(|e| timestamp(e.on_air)),
        end_utc: event.map(|e| timestamp(e.end())),
        source: live.map(|l| source_health(&l.source)),
        seq: snap.seq,
        source_mode: live.map_or(proto::SourceSelection::Unspecified, |l| source_choice(l.source_choice)) as i32,
        backup: live.and_then(|l| l.backup.as_ref().map(source_health)),
        last_switch: live.and_then(|l| l.last_switch.as_ref()).map(|sw| proto::SourceSwitch {
            at: Some(timestamp(DateTime::<Utc>::from_timestamp_nanos(sw.at_utc_ns.min(i64::MAX as u64) as i64))),
            from: feed(sw.from) as i32,
            to: feed(sw.to) as i32,
            reason: sw.reason.clone(),
        }),
        program: live.map(|l| program_format(&l.program)),
        breaks: event.map_or_else(Vec::new, |e| {
            let over = |b: &AdBreak| b.end() + crate::schedule::chrono_duration(e.max_delay) <= now;
            snap.breaks.iter().filter(|b| b.event_id == e.id && !over(b)).map(|b| break_to_proto(b, &[])).collect()
        }),
    }
}

/// The wire form of the mode and format on air.
pub fn program_format(p: &crate::relay::ProgramInfo) -> proto::ProgramFormat {
    let v = p.format.video.as_ref();
    proto::ProgramFormat {
        mode: match p.mode {
            crate::config::ProgramMode::Passthrough => proto::ProgramMode::Passthrough,
            crate::config::ProgramMode::Transcode => proto::ProgramMode::Transcode,
        } as i32,
        video_codec: v.map(|v| v.codec.as_str().to_owned()).unwrap_or_default(),
        profile: v.and_then(|v| v.profile.clone()).unwrap_or_default(),
        level: v.and_then(|v| v.level.clone()).unwrap_or_default(),
        width: v.map_or(0, |v| v.width),
        height: v.map_or(0, |v| v.height),
        framerate_num: v.map_or(0, |v| v.framerate.0.max(0) as u32),
        framerate_den: v.map_or(0, |v| v.framerate.1.max(0) as u32),
        field_order: match v {
            Some(v) if v.interlaced && v.top_field_first => "top-field-first",
            Some(v) if v.interlaced => "bottom-field-first",
            Some(_) => "progressive",
            None => "",
        }
        .to_owned(),
        audio: p
            .format
            .audio
            .iter()
            .map(|a| proto::AudioTrack {
                codec: a.codec.as_str().to_owned(),
                language: a.language.clone().unwrap_or_default(),
                rate: a.rate,
                channels: a.channels,
            })
            .collect(),
        describe: p.describe.clone(),
    }
}

fn source_health(s: &SourceStatus) -> proto::SourceHealth {
    proto::SourceHealth {
        describe: s.describe.clone(),
        state: s.state.as_str().to_owned(),
        bytes_in: s.bytes_in,
        garbage_bytes: s.garbage_bytes,
        restarts: s.restarts,
        last_error: s.last_error.clone().unwrap_or_default(),
        healthy: s.healthy,
        loss: s.loss.clone().unwrap_or_default(),
        frames: s.frames,
    }
}

fn feed(f: Feed) -> proto::SourceSelection {
    match f {
        Feed::Primary => proto::SourceSelection::Primary,
        Feed::Backup => proto::SourceSelection::Backup,
        Feed::Slate => proto::SourceSelection::Slate,
    }
}

/// An as-run entry for a response.
pub fn asrun_to_proto(e: &AsRunEntry) -> proto::AsRunEntry {
    asrun_with_picture(e, None)
}

/// An as-run entry for a response, with the id of its picture, if one was kept.
pub fn asrun_with_picture(e: &AsRunEntry, picture: Option<i64>) -> proto::AsRunEntry {
    proto::AsRunEntry {
        utc: DateTime::parse_from_rfc3339(&e.utc).ok().map(|t| timestamp(t.with_timezone(&Utc))),
        channel_id: e.channel_id.clone(),
        local_time: e.local_time.clone(),
        kind: e.kind.clone(),
        detail: e.detail.clone(),
        actor: e.actor.clone(),
        timezone: e.timezone.clone(),
        picture_id: picture.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_channel_round_trips_and_responses_hold_no_secret() {
        for ch in config::default_config().channels {
            let back = channel_from_proto(&channel_to_proto_with_secrets(&ch)).unwrap();
            // The same channel; its raw form now says what the file left
            // to the defaults (the wire has no "absent" for them).
            assert_eq!(Channel { spec: ch.spec.clone(), ..back }, ch);
            let shown = format!("{:?}", channel_to_proto(&ch));
            for secret in ["demo-passphrase-kz", "am-1tv-demo", "kg-ktrk-demo"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn errors_name_the_request_field() {
        let mut p = channel_to_proto(&config::default_config().channels[0]);
        p.timezone = "Asia/Nowhere".into();
        let errs = channel_from_proto(&p).unwrap_err();
        assert_eq!(errs[0].key, "channel.timezone");
        assert!(errs[0].message.contains("Asia/Nowhere"));
    }
}
