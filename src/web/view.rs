//! What the page shows, as JSON: the coordinator's snapshot (the one
//! `WatchStatus` sends) in the page's terms. Times are formatted here, in
//! each channel's zone, with the same zone data as every other local time
//! simulcast prints; the page only lays them out.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::coordinator::{AsRunPicture, LegView, Snapshot};
use crate::media::leg::LegState;
use crate::media::program::Content;
use crate::media::source::SourceStatus;
use crate::media::thumbs::Thumbnails;
use crate::schedule::{Event, EventState};

/// The board: the event clock, the feeds and one tile per leg.
pub fn board(s: &Snapshot) -> Value {
    let event = s.event(None);
    let live = s.live.as_ref().filter(|l| event.is_some_and(|e| e.id == l.event_id));
    json!({
        "seq": s.seq,
        "utc": s.at.format("%H:%M:%S").to_string(),
        "date": s.at.format("%Y-%m-%d").to_string(),
        "healthy": s.healthy,
        // The page reads the as-run tail and the alerts again when these change.
        "asrun_seq": s.asrun_written,
        "alerts_seq": s.alerts.raised.iter().map(|r| r.load(std::sync::atomic::Ordering::Relaxed)).sum::<u64>(),
        "event": event.map(|e| clock(e, s.at)),
        "live": live.map(|l| json!({
            "source_in_use": l.source_in_use.as_str(),
            "source_choice": l.source_choice.as_str(),
            "program": l.program.describe,
            "source": feed(&l.source),
            "backup": l.backup.as_ref().map(feed),
            "legs": l.legs.iter().map(|v| leg(v, event, s.at)).collect::<Vec<_>>(),
            "thumbs": l.thumbnails.as_ref().map(|t| thumbs(t, s.at)),
            "levels": l.thumbnails.as_ref().map(|t| levels(t, s.at)),
        })),
    })
}

/// The event, its T0 and where the clock stands against it.
fn clock(e: &Event, now: DateTime<Utc>) -> Value {
    let to_t0 = (e.on_air - now).num_milliseconds() as f64 / 1000.0;
    let on_air = matches!(e.state, EventState::OnAir | EventState::PostRoll);
    json!({
        "id": e.id.0,
        "title": e.title,
        "state": e.state.as_str(),
        "t0_utc": e.on_air.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        "end_utc": e.end().format("%H:%M:%S UTC").to_string(),
        // Seconds to T0 while it is ahead; seconds since T0 once on air.
        "to_t0_s": (!on_air).then_some(to_t0.max(0.0)),
        "on_air_s": on_air.then_some((-to_t0).max(0.0)),
    })
}

/// The newest `n` entries of an as-run log, newest first, each with the
/// id of its picture if one was kept.
pub fn asrun_tail(log: &[crate::store::AsRunEntry], pictures: &[AsRunPicture], n: usize) -> Value {
    let entries: Vec<Value> = log
        .iter()
        .rev()
        .take(n)
        .map(|e| {
            json!({
                "utc": e.utc,
                "channel_id": e.channel_id,
                "local_time": e.local_time,
                "kind": e.kind,
                "detail": e.detail,
                "actor": e.actor,
                "picture": AsRunPicture::of(e, pictures),
            })
        })
        .collect();
    Value::Array(entries)
}

/// The latest alerts, newest first.
pub fn alerts(list: &[crate::store::StoredAlert]) -> Value {
    let entries: Vec<Value> = list
        .iter()
        .map(|a| {
            json!({
                "raised_at": a.alert.raised_at,
                "severity": a.alert.severity.as_str(),
                "summary": a.alert.summary,
            })
        })
        .collect();
    Value::Array(entries)
}

/// Each stream's latest thumbnail: its number (a page fetches the picture
/// again when it changes), mean luma and age.
fn thumbs(t: &Thumbnails, now: DateTime<Utc>) -> Value {
    let all: serde_json::Map<String, Value> = t
        .all()
        .into_iter()
        .map(|(name, th)| {
            let age = (now - th.at).num_milliseconds().max(0) as f64 / 1000.0;
            (name.to_owned(), json!({ "seq": th.seq, "luma": (th.luma * 10.0).round() / 10.0, "age_s": age }))
        })
        .collect();
    Value::Object(all)
}

/// Each stream's audio tracks' levels (dBFS), in track order; a level
/// older than 2 s is not shown (the track stopped).
fn levels(t: &Thumbnails, now: DateTime<Utc>) -> Value {
    let streams = ["program", "primary", "backup"].into_iter().map(|name| {
        let tracks: Vec<Value> = t
            .levels(name)
            .into_iter()
            .map(|l| {
                let fresh = (now - l.at).num_milliseconds() < 2000;
                json!({
                    "language": l.language,
                    "rms_db": fresh.then_some((l.rms_db * 10.0).round() / 10.0),
                    "peak_db": fresh.then_some((l.peak_db * 10.0).round() / 10.0),
                })
            })
            .collect();
        (name.to_owned(), Value::Array(tracks))
    });
    Value::Object(streams.collect())
}

fn feed(f: &SourceStatus) -> Value {
    json!({
        "describe": f.describe,
        "state": f.state.as_str(),
        "healthy": f.healthy,
        "frames": f.frames,
        "last_error": f.last_error,
    })
}

/// One leg's tile: who, where, its local clock and air time, its health.
fn leg(v: &LegView, event: Option<&Event>, now: DateTime<Utc>) -> Value {
    let s = &v.status;
    let tz = v.timezone;
    let state = match (s.state, s.carries) {
        (LegState::OnAir, Content::Slate) => "SLATE".to_owned(),
        (state, _) => state.to_string(),
    };
    let air = event.and_then(|e| chrono::Duration::from_std(v.delay).ok().map(|d| e.on_air + d));
    json!({
        "id": s.channel_id,
        "name": v.name,
        "country": v.country,
        "protocol": s.protocol,
        "state": state,
        "zone": tz.name(),
        "local_now": now.with_timezone(&tz).format("%H:%M:%S").to_string(),
        "local_air": air.map(|a| a.with_timezone(&tz).format("%H:%M:%S %Z").to_string()),
        "delayed": !v.delay.is_zero(),
        "bitrate_kbps": s.bitrate_bps / 1000,
        "reconnects": s.reconnects,
        "drops": s.dropped_buffers,
        "rtt_ms": s.srt.map(|f| (f.rtt_ms * 10.0).round() / 10.0),
        "lost": s.srt.map(|f| f.packets_lost),
        "audio": s.audio,
        "last_error": s.last_error,
    })
}
