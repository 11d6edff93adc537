//! `watch`: the live status board, redrawn on every update on a terminal,
//! one board (or one JSON line with --json) per update otherwise.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use simulcast::proto::{self, monitor_service_client::MonitorServiceClient};
use simulcast::table::{self, Table};

use super::events::{source_name, state_name, ts};
use super::{Cli, connect, status_line};

/// `T-01:02:03` before T0, `T+00:00:12` after.
pub fn countdown(now: DateTime<Utc>, t0: DateTime<Utc>) -> String {
    let d = (t0 - now).num_seconds();
    let (sign, s) = if d > 0 { ('-', d) } else { ('+', -d) };
    format!("T{sign}{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

fn leg_state(s: i32) -> String {
    proto::LegState::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("LEG_STATE_").to_owned())
        .unwrap_or_else(|_| s.to_string())
}

/// The ANSI colour a leg in `state` is drawn in on a terminal: green on
/// air, yellow while (re)connecting, bold red failed, dim otherwise.
fn leg_colour(state: i32) -> &'static str {
    match proto::LegState::try_from(state) {
        Ok(proto::LegState::OnAir) => "\x1b[32m",
        Ok(proto::LegState::Connecting | proto::LegState::Reconnecting) => "\x1b[33m",
        Ok(proto::LegState::Failed) => "\x1b[1;31m",
        _ => "\x1b[2m",
    }
}

/// Each leg's row of `table` (rendered: a header, then the legs in order)
/// drawn in its state's colour; the columns stay as they are.
fn paint_legs(table: &str, legs: &[proto::LegStatus]) -> String {
    let mut out = String::new();
    for (i, line) in table.lines().enumerate() {
        match i.checked_sub(1).and_then(|i| legs.get(i)) {
            Some(l) => out += &format!("{}{line}\x1b[0m\n", leg_colour(l.state)),
            None => out += &format!("{line}\n"),
        }
    }
    out
}

fn board(u: &proto::StatusUpdate, colour: bool) -> String {
    let now = ts(&u.at).unwrap_or_else(Utc::now);
    if u.event_id.is_empty() {
        return format!("simulcast  UTC {}  |  no event scheduled\n", now.format("%H:%M:%S"));
    }
    let t0 = ts(&u.on_air_utc);
    let mut out = format!(
        "{} \"{}\"  {}  |  T0 {} UTC  {}  |  UTC now {}\n",
        u.event_id,
        u.title,
        state_name(u.event_state),
        t0.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
        t0.map_or(String::new(), |t| countdown(now, t)),
        now.format("%H:%M:%S"),
    );
    if u.source.is_some() {
        out += &format!("on air: {}  (mode {})\n", source_name(u.source_in_use), source_name(u.source_mode));
    }
    if let Some(p) = &u.program {
        out += &format!("programme: {}  {}\n", program_mode(p.mode), p.describe);
    }
    for (role, s) in [("primary", &u.source), ("backup", &u.backup)] {
        let Some(s) = s else { continue };
        let health = if s.healthy { "healthy".to_owned() } else { format!("LOST: {}", s.loss) };
        out += &format!("  {role:<8} {}  {}  {health}  ({} in)", s.describe, s.state, table::bytes(s.bytes_in));
        if !s.last_error.is_empty() {
            out += &format!("  last error: {}", s.last_error);
        }
        out.push('\n');
    }
    if let Some(sw) = &u.last_switch {
        out += &format!(
            "  last switch {} UTC: {} -> {}: {}\n",
            ts(&sw.at).map_or("-".into(), |t| t.format("%H:%M:%S%.3f").to_string()),
            source_name(sw.from),
            source_name(sw.to),
            sw.reason
        );
    }
    for b in &u.breaks {
        out += &break_line(b, now);
    }
    if u.lagged > 0 {
        out += &format!("(this board fell behind: {} update(s) skipped)\n", u.lagged);
    }
    // Cluster mode: the nodes carrying the legs; with legs spread over
    // several, a NODE column says which carries each.
    let mut nodes: Vec<&str> = u.legs.iter().map(|l| l.node.as_str()).filter(|n| !n.is_empty()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if !nodes.is_empty() {
        let s = if nodes.len() > 1 { "s" } else { "" };
        out += &format!("legs carried by node{s} {}\n", nodes.join(", "));
    }
    let spread = nodes.len() > 1;
    let mut headers = vec![
        "CHANNEL",
        "PROTO",
        "LOCAL TIME",
        "STATE",
        "BITRATE",
        "SENT",
        "RECONN",
        "DROPS",
        "SRT RTT/LOSS",
        "AUDIO",
        "CUES",
        "LAST ERROR",
    ];
    if spread {
        headers.insert(1, "NODE");
    }
    let mut t = Table::new(&headers);
    for l in &u.legs {
        let local = DateTime::parse_from_rfc3339(&l.local_time)
            .map(|t| t.format("%a %H:%M:%S %:z").to_string())
            .unwrap_or_else(|_| "-".into());
        let srt = l.srt.as_ref().map_or("-".into(), |s| format!("{:.1} ms / {}", s.rtt_ms, s.packets_lost));
        let mut row = vec![
            l.channel_id.clone(),
            if l.protocol.is_empty() { "-".into() } else { l.protocol.clone() },
            local,
            leg_state(l.state),
            table::bitrate(l.bitrate_bps),
            table::bytes(l.bytes_sent),
            l.reconnects.to_string(),
            l.dropped_buffers.to_string(),
            srt,
            match (l.audio.is_empty(), l.audio_missing.is_empty()) {
                (true, _) => "all".into(),
                (false, true) => l.audio.join(","),
                (false, false) => format!("all (lacks {})", l.audio_missing.join(",")),
            },
            match l.break_cues_missed {
                0 => l.break_cues_sent.to_string(),
                missed => format!("{} ({missed} missed)", l.break_cues_sent),
            },
            l.last_error.clone(),
        ];
        if spread {
            row.insert(1, if l.node.is_empty() { "-".into() } else { l.node.clone() });
        }
        t.row(row);
    }
    let legs = t.render();
    out + &if colour { paint_legs(&legs, &u.legs) } else { legs }
}

/// One line of the board for an ad break: coming (with its countdown) or
/// on now (live programme; a delayed leg has it its delay later).
fn break_line(b: &proto::AdBreak, now: DateTime<Utc>) -> String {
    let (Some(start), Some(len)) = (ts(&b.start_utc), b.duration.as_ref()) else { return String::new() };
    let end = start + chrono::Duration::seconds(len.seconds) + chrono::Duration::nanoseconds(i64::from(len.nanos));
    let when = if now < start {
        format!("in {}", countdown(now, start).trim_start_matches("T-").trim())
    } else if now < end {
        format!("ON NOW, back {} UTC", end.format("%H:%M:%S"))
    } else {
        "over live (delayed legs still to come)".into()
    };
    format!(
        "  break {} (splice {}): {} UTC for {}s, {when}  on {}\n",
        b.id,
        b.splice_event_id,
        start.format("%H:%M:%S"),
        len.seconds,
        b.channel_ids.join(", ")
    )
}

fn update_json(u: &proto::StatusUpdate) -> serde_json::Value {
    let iso =
        |t: &Option<prost_types::Timestamp>| ts(t).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    serde_json::json!({
        "seq": u.seq, "at": iso(&u.at), "lagged": u.lagged,
        "event_id": u.event_id, "title": u.title, "event_state": state_name(u.event_state),
        "on_air_utc": iso(&u.on_air_utc), "end_utc": iso(&u.end_utc),
        "source_in_use": source_name(u.source_in_use),
        "source_mode": source_name(u.source_mode),
        "source": u.source.as_ref().map(health_json),
        "backup": u.backup.as_ref().map(health_json),
        "program": u.program.as_ref().map(|p| serde_json::json!({
            "mode": program_mode(p.mode), "video_codec": p.video_codec, "profile": p.profile, "level": p.level,
            "width": p.width, "height": p.height, "framerate": [p.framerate_num, p.framerate_den],
            "field_order": p.field_order, "describe": p.describe,
            "audio": p.audio.iter().map(|a| serde_json::json!({
                "codec": a.codec, "language": a.language, "rate": a.rate, "channels": a.channels,
            })).collect::<Vec<_>>(),
        })),
        "breaks": u.breaks.iter().map(|b| serde_json::json!({
            "id": b.id, "splice_event_id": b.splice_event_id, "start_utc": iso(&b.start_utc),
            "duration_s": b.duration.as_ref().map_or(0, |d| d.seconds), "channel_ids": b.channel_ids,
        })).collect::<Vec<_>>(),
        "last_switch": u.last_switch.as_ref().map(|sw| serde_json::json!({
            "at": iso(&sw.at), "from": source_name(sw.from), "to": source_name(sw.to), "reason": sw.reason,
        })),
        "legs": u.legs.iter().map(|l| serde_json::json!({
            "channel_id": l.channel_id, "protocol": l.protocol, "state": leg_state(l.state),
            "timezone": l.timezone, "local_time": l.local_time,
            "bytes_sent": l.bytes_sent, "bitrate_bps": l.bitrate_bps, "reconnects": l.reconnects,
            "dropped_buffers": l.dropped_buffers, "last_error": l.last_error,
            "audio": l.audio, "audio_missing": l.audio_missing,
            "break_cues_sent": l.break_cues_sent, "break_cues_missed": l.break_cues_missed,
            "node": l.node,
            "srt": l.srt.as_ref().map(|s| serde_json::json!({
                "rtt_ms": s.rtt_ms, "packets_lost": s.packets_lost, "packets_retransmitted": s.packets_retransmitted,
            })),
        })).collect::<Vec<_>>(),
    })
}

/// PASSTHROUGH or TRANSCODE.
fn program_mode(mode: i32) -> &'static str {
    match proto::ProgramMode::try_from(mode) {
        Ok(proto::ProgramMode::Passthrough) => "PASSTHROUGH",
        Ok(proto::ProgramMode::Transcode) => "TRANSCODE",
        _ => "-",
    }
}

fn health_json(s: &proto::SourceHealth) -> serde_json::Value {
    serde_json::json!({
        "describe": s.describe, "state": s.state, "healthy": s.healthy, "loss": s.loss,
        "bytes_in": s.bytes_in, "frames": s.frames, "garbage_bytes": s.garbage_bytes,
        "restarts": s.restarts, "last_error": s.last_error,
    })
}

pub async fn run(cli: &Cli, event: Option<&str>, once: bool) -> Result<(), String> {
    let mut c = MonitorServiceClient::new(connect(cli).await?);
    let req = proto::EventRef { event_id: event.unwrap_or_default().to_owned() };
    let mut stream = c.watch_status(req).await.map_err(|s| status_line(&s))?.into_inner();
    let tty = std::io::stdout().is_terminal() && !cli.json;
    loop {
        let update = tokio::select! {
            m = stream.message() => m.map_err(|s| status_line(&s))?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(u) = update else {
            return Err("simulcastd closed the status stream".into());
        };
        let mut out = std::io::stdout().lock();
        let written = if cli.json {
            writeln!(out, "{}", update_json(&u))
        } else if tty {
            // Redrawn in place, without clearing first (no flicker): each
            // line overwrites the last board's and clears what is left of
            // it, then everything below goes.
            let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            let mut frame = String::from("\x1b[H");
            for line in board(&u, colour).lines().chain(["Ctrl-C to leave the board (the event is not affected)."]) {
                frame += line;
                frame += "\x1b[K\n";
            }
            write!(out, "{frame}\x1b[J")
        } else {
            writeln!(out, "{}", board(&u, false))
        };
        // A board nobody reads any more (`watch | head`) ends the watch.
        if let Err(e) = written.and_then(|()| out.flush()) {
            crate::closed_stdout(&e);
        }
        if once {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(id: &str, state: proto::LegState) -> proto::LegStatus {
        proto::LegStatus { channel_id: id.into(), state: state as i32, ..Default::default() }
    }

    #[test]
    fn each_legs_row_is_drawn_in_its_states_colour_and_the_columns_stay() {
        let u = proto::StatusUpdate {
            event_id: "ev-1".into(),
            legs: vec![leg("kr-kbs", proto::LegState::OnAir), leg("cn-cctv", proto::LegState::Failed)],
            ..Default::default()
        };
        let plain = board(&u, false);
        let painted = board(&u, true);
        assert!(!plain.contains('\x1b'), "{plain}");
        let row = |text: &str, id: &str| text.lines().find(|l| l.contains(id)).unwrap_or_default().to_owned();
        assert!(row(&painted, "kr-kbs").starts_with("\x1b[32m"), "{painted}");
        assert!(row(&painted, "cn-cctv").starts_with("\x1b[1;31m"), "{painted}");
        assert!(row(&painted, "cn-cctv").ends_with("\x1b[0m"), "{painted}");
        // Without the colour codes, the very same board.
        let stripped = painted.replace("\x1b[32m", "").replace("\x1b[1;31m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn the_board_counts_down_to_a_break_shows_it_on_and_counts_each_legs_cues() {
        let start = DateTime::parse_from_rfc3339("2026-12-20T15:15:00Z").unwrap().with_timezone(&Utc);
        let b = proto::AdBreak {
            id: "br-0123456789ab".into(),
            start_utc: Some(prost_types::Timestamp { seconds: start.timestamp(), nanos: 0 }),
            duration: Some(prost_types::Duration { seconds: 90, nanos: 0 }),
            channel_ids: vec!["kr-kbs".into(), "kz-khabar".into()],
            splice_event_id: 7,
            ..Default::default()
        };
        let before = break_line(&b, start - chrono::Duration::seconds(42));
        assert!(before.contains("15:15:00 UTC for 90s, in 00:00:42  on kr-kbs, kz-khabar"), "{before}");
        let during = break_line(&b, start + chrono::Duration::seconds(10));
        assert!(during.contains("ON NOW, back 15:16:30 UTC"), "{during}");
        let u = proto::StatusUpdate {
            event_id: "ev-1".into(),
            at: Some(prost_types::Timestamp { seconds: start.timestamp() - 42, nanos: 0 }),
            breaks: vec![b],
            legs: vec![proto::LegStatus {
                channel_id: "kr-kbs".into(),
                break_cues_sent: 2,
                break_cues_missed: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let board = board(&u, false);
        assert!(board.contains("break br-0123456789ab (splice 7)"), "{board}");
        assert!(board.contains("CUES") && board.contains("2 (1 missed)"), "{board}");
    }

    #[test]
    fn legs_spread_over_nodes_get_a_node_column_and_one_node_a_line() {
        let on = |id: &str, node: &str| proto::LegStatus { node: node.into(), ..leg(id, proto::LegState::OnAir) };
        let u = proto::StatusUpdate {
            event_id: "ev-1".into(),
            legs: vec![on("kr-kbs", "n2"), on("cn-cctv", "n1"), on("kz-khabar", "n2")],
            ..Default::default()
        };
        let b = board(&u, false);
        assert!(b.contains("legs carried by nodes n1, n2\n"), "{b}");
        let header = b.lines().find(|l| l.starts_with("CHANNEL")).unwrap_or_default();
        assert!(header.starts_with("CHANNEL") && header.contains(" NODE "), "{b}");
        let row = b.lines().find(|l| l.starts_with("cn-cctv")).unwrap_or_default();
        assert_eq!(row.split_whitespace().nth(1), Some("n1"), "{b}");
        // One node (the leader carries every leg): a line, no column.
        let u = proto::StatusUpdate { legs: vec![on("kr-kbs", "n2"), on("cn-cctv", "n2")], ..u };
        let b = board(&u, false);
        assert!(b.contains("legs carried by node n2\n") && !b.contains(" NODE "), "{b}");
    }
}
