//! `simulcastctl rehearse` and `simulcastctl rehearsals`: start a rehearsal
//! and follow it to its verdict (exit code 0 passed, 3 failed), set
//! recurring ones, read reports.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use simulcast::proto::{self, rehearsal_service_client::RehearsalServiceClient};
use simulcast::table::{self, Table};

use super::events::ts;
use super::{Cli, connect, status_line};

/// Exit code of a rehearsal that ran and failed (1 is any other error).
pub const FAILED: u8 = 3;

#[derive(Args)]
pub struct RehearseArgs {
    /// Event id.
    event: String,
    /// Slate before the programme.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    preroll: Duration,
    /// Programme length.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    program: Duration,
    /// Slate after the programme.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    postroll: Duration,
    /// `test`: built-in bars with the event's title and a burnt-in clock;
    /// `live`: the configured contribution feed.
    #[arg(long, default_value = "test")]
    source: String,
    /// Stamp each leg with its own channel name, in the stream: MPEG-TS legs
    /// (SRT, UDP, RIST, file) carry a DVB SDT whose service name is
    /// "NAME (ID)", RTMP legs the same text as their onMetaData title. A
    /// partner reads it with ffprobe or any TS analyser to confirm it
    /// received its own leg; the report lists what each should see.
    #[arg(long)]
    stamp: bool,
    /// Instead of now: every day at this local time (HH:MM), run by the
    /// daemon; needs --tz and --until.
    #[arg(long, requires_all = ["tz", "until"])]
    every_day_at: Option<String>,
    /// The zone of --every-day-at (IANA, e.g. Asia/Seoul).
    #[arg(long, requires = "every_day_at")]
    tz: Option<String>,
    /// The last local date of --every-day-at (YYYY-MM-DD).
    #[arg(long, requires = "every_day_at")]
    until: Option<String>,
    /// Also write the verdict as JUnit XML to FILE, one test case per
    /// partner (failed with its reasons), for CI systems.
    #[arg(long, value_name = "FILE", conflicts_with = "every_day_at")]
    junit: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
pub enum RehearsalsCmd {
    /// Rehearsal reports, oldest first (verdict, legs passed, when).
    List {
        /// Only this event's.
        #[arg(long)]
        event: Option<String>,
    },
    /// One report, leg by leg (exit code 3 if it failed).
    Get {
        /// Rehearsal id (rh-...).
        id: String,
        /// Also write it as JUnit XML to FILE, one test case per partner.
        #[arg(long, value_name = "FILE")]
        junit: Option<std::path::PathBuf>,
    },
    /// Recurring rehearsals and when each runs next.
    Schedules {
        /// Only this event's.
        #[arg(long)]
        event: Option<String>,
    },
    /// Delete a recurring rehearsal.
    Unschedule {
        /// Schedule id (rs-...).
        id: String,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    simulcast::config::uri::parse_duration(s)
}

fn wire(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn state_name(s: i32) -> &'static str {
    match proto::RehearsalState::try_from(s) {
        Ok(proto::RehearsalState::Preflight) => "PREFLIGHT",
        Ok(proto::RehearsalState::Running) => "RUNNING",
        Ok(proto::RehearsalState::Finished) => "FINISHED",
        _ => "UNKNOWN",
    }
}

/// `rehearse`: returns the exit code.
pub async fn rehearse(cli: &Cli, a: &RehearseArgs) -> Result<u8, String> {
    let live = match a.source.as_str() {
        "test" => false,
        "live" => true,
        s => return Err(format!("--source `{s}`: use test or live")),
    };
    let mut c = RehearsalServiceClient::new(connect(cli).await?);
    if let (Some(at), Some(tz), Some(until)) = (&a.every_day_at, &a.tz, &a.until) {
        let req = proto::ScheduleRehearsalRequest {
            event_id: a.event.clone(),
            local_time: at.clone(),
            timezone: tz.clone(),
            until: until.clone(),
            preroll: Some(wire(a.preroll)),
            program: Some(wire(a.program)),
            postroll: Some(wire(a.postroll)),
            live_source: live,
            stamp_legs: a.stamp,
        };
        let s = c.schedule_rehearsal(req).await.map_err(|s| status_line(&s))?.into_inner();
        print_schedules(cli, &[s]);
        return Ok(0);
    }
    let req = proto::StartRehearsalRequest {
        event_id: a.event.clone(),
        preroll: Some(wire(a.preroll)),
        program: Some(wire(a.program)),
        postroll: Some(wire(a.postroll)),
        live_source: live,
        stamp_legs: a.stamp,
    };
    let mut report = c.start_rehearsal(req).await.map_err(|s| status_line(&s))?.into_inner();
    let id = report.rehearsal_id.clone();
    let tty = std::io::stderr().is_terminal();
    eprintln!("Rehearsal {id} of {} started ({} source).", report.event_id, report.source);
    let mut last_line = String::new();
    let mut preflight_told = false;
    while report.state != proto::RehearsalState::Finished as i32 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = proto::RehearsalRef { rehearsal_id: id.clone() };
        report = c.get_rehearsal_report(r).await.map_err(|s| status_line(&s))?.into_inner();
        if !preflight_told && report.state != proto::RehearsalState::Preflight as i32 {
            preflight_told = true;
            let ok = report.legs.iter().filter(|l| l.preflight_ok).count();
            let mut err = std::io::stderr().lock();
            let clear = if tty { "\r\x1b[2K" } else { "" };
            let _ = writeln!(err, "{clear}preflight: {ok} of {} ingest(s) ready", report.legs.len());
            for l in report.legs.iter().filter(|l| !l.preflight_ok) {
                let _ = writeln!(err, "  {}: {}", l.channel_id, l.preflight);
            }
        }
        let line = progress(&report);
        if line != last_line || tty {
            let mut err = std::io::stderr().lock();
            if tty {
                let _ = write!(err, "\r\x1b[2K{line}");
            } else if line != last_line {
                let _ = writeln!(err, "{line}");
            }
            let _ = err.flush();
            last_line = line;
        }
    }
    if tty {
        eprintln!();
    }
    print_report(cli, &report);
    if let Some(path) = &a.junit {
        write_junit(path, &report)?;
    }
    Ok(if report.passed { 0 } else { FAILED })
}

/// One line of progress: phase, legs connected, time left.
fn progress(r: &proto::RehearsalReport) -> String {
    let now = chrono::Utc::now();
    let connected = r.legs.iter().filter(|l| l.connected_at.is_some()).count();
    let on_program = r.legs.iter().filter(|l| l.first_program_at.is_some()).count();
    match proto::RehearsalState::try_from(r.state) {
        Ok(proto::RehearsalState::Preflight) => {
            let checked = r.legs.iter().filter(|l| l.preflight != "not checked yet").count();
            format!("preflight: {checked}/{} ingest(s) checked", r.legs.len())
        }
        Ok(proto::RehearsalState::Running) => {
            let program = ts(&r.program_planned_at);
            let end = ts(&r.ends_at);
            let phase = match (program, end) {
                (Some(p), _) if now < p => format!("pre-roll, programme in {} s", (p - now).num_seconds() + 1),
                (_, Some(e)) => format!("{} s left", (e - now).num_seconds().max(0) + 1),
                _ => String::new(),
            };
            format!(
                "running: {phase}; {connected}/{} leg(s) connected, {on_program} carrying the programme",
                r.legs.len()
            )
        }
        _ => "finishing".into(),
    }
}

fn report_json(r: &proto::RehearsalReport) -> serde_json::Value {
    let iso =
        |t: &Option<prost_types::Timestamp>| ts(t).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let ms =
        |d: &Option<prost_types::Duration>| d.as_ref().map(|d| d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6);
    serde_json::json!({
        "rehearsal_id": r.rehearsal_id, "event_id": r.event_id, "state": state_name(r.state),
        "passed": r.passed, "summary": r.summary, "source": r.source, "actor": r.actor,
        "started_at": iso(&r.started_at), "program_planned_at": iso(&r.program_planned_at),
        "ends_at": iso(&r.ends_at), "finished_at": iso(&r.finished_at),
        "preroll_ms": ms(&r.preroll), "program_ms": ms(&r.program), "postroll_ms": ms(&r.postroll),
        "stamp_legs": r.stamp_legs,
        "legs": r.legs.iter().map(|l| serde_json::json!({
            "channel_id": l.channel_id, "protocol": l.protocol, "target": l.target, "passed": l.passed,
            "preflight_ok": l.preflight_ok, "preflight": l.preflight,
            "connected_at": iso(&l.connected_at), "first_program_at": iso(&l.first_program_at),
            "first_program_error_ms": ms(&l.first_program_error),
            "bytes_sent": l.bytes_sent, "average_bitrate_bps": l.average_bitrate_bps,
            "reconnects": l.reconnects, "dropped_buffers": l.dropped_buffers,
            "srt": l.srt.as_ref().map(|s| serde_json::json!({
                "rtt_ms": s.rtt_ms, "packets_lost": s.packets_lost, "packets_retransmitted": s.packets_retransmitted,
            })),
            "stamp": (!l.stamp.is_empty()).then_some(&l.stamp),
            "errors": l.errors,
        })).collect::<Vec<_>>(),
    })
}

fn print_report(cli: &Cli, r: &proto::RehearsalReport) {
    if cli.json {
        say!("{}", serde_json::to_string_pretty(&report_json(r)).unwrap_or_default());
        return;
    }
    let mut t = Table::new(&[
        "CHANNEL",
        "PROTO",
        "VERDICT",
        "PREFLIGHT",
        "CONNECTED",
        "1ST PROGRAMME",
        "VS PLAN",
        "SENT",
        "AVG BITRATE",
        "RECONN",
        "DROPS",
        "SRT RTT/LOSS",
        "WHY",
    ]);
    let hms = |t: &Option<prost_types::Timestamp>| ts(t).map_or("-".into(), |t| t.format("%H:%M:%S%.3f").to_string());
    for l in &r.legs {
        let off = l
            .first_program_error
            .as_ref()
            .map_or("-".into(), |d| format!("{:+.0} ms", d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6));
        t.row(vec![
            l.channel_id.clone(),
            l.protocol.clone(),
            if l.passed { "PASSED".into() } else { "FAILED".into() },
            if l.preflight_ok { "ok".into() } else { "FAILED".into() },
            hms(&l.connected_at),
            hms(&l.first_program_at),
            off,
            table::bytes(l.bytes_sent),
            table::bitrate(l.average_bitrate_bps),
            l.reconnects.to_string(),
            l.dropped_buffers.to_string(),
            l.srt.as_ref().map_or("-".into(), |s| format!("{:.1} ms / {}", s.rtt_ms, s.packets_lost)),
            l.errors.join("; "),
        ]);
    }
    let when = |t: &Option<prost_types::Timestamp>| {
        ts(t).map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    };
    let stamps: String =
        r.legs.iter().filter(|l| !l.stamp.is_empty()).map(|l| format!("\n  {}: {}", l.channel_id, l.stamp)).collect();
    let stamps = if stamps.is_empty() { stamps } else { format!("\nEach partner should find its own stamp:{stamps}") };
    say!(
        "Rehearsal {} of {} ({} source, by {}), {}: programme planned at {}\n{}\n{}{stamps}",
        r.rehearsal_id,
        r.event_id,
        r.source,
        r.actor,
        state_name(r.state),
        when(&r.program_planned_at),
        t.render().trim_end(),
        r.summary
    );
}

/// Text safe inside an XML attribute or element.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no place for other control characters.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The report as JUnit XML: one test suite for the rehearsal, one test
/// case per partner (its channel and protocol), failed with its reasons.
/// A rehearsal not finished yet has its legs marked skipped.
fn junit(r: &proto::RehearsalReport) -> String {
    let secs =
        |d: &Option<prost_types::Duration>| d.as_ref().map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
    let done = r.state == proto::RehearsalState::Finished as i32;
    let failures = if done { r.legs.iter().filter(|l| !l.passed).count() } else { 0 };
    let skipped = if done { 0 } else { r.legs.len() };
    let time = secs(&r.preroll) + secs(&r.program) + secs(&r.postroll);
    let started = ts(&r.started_at).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default();
    let suite = format!("rehearsal {} of {}", r.rehearsal_id, r.event_id);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x += &format!(
        "<testsuites name=\"simulcast rehearsal\" tests=\"{n}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">\n",
        n = r.legs.len()
    );
    x += &format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\" timestamp=\"{}\">\n",
        xml(&suite),
        r.legs.len(),
        xml(&started)
    );
    x += "    <properties>\n";
    for (k, v) in [("event", r.event_id.as_str()), ("source", &r.source), ("by", &r.actor), ("summary", &r.summary)] {
        x += &format!("      <property name=\"{k}\" value=\"{}\"/>\n", xml(v));
    }
    x += "    </properties>\n";
    for l in &r.legs {
        let name = format!("{} ({})", l.channel_id, l.protocol);
        x += &format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">\n",
            xml(&r.event_id),
            xml(&name),
            secs(&r.program)
        );
        if !done {
            x += "      <skipped message=\"the rehearsal has not finished\"/>\n";
        } else if !l.passed {
            let why = if l.errors.is_empty() { "failed".to_owned() } else { l.errors.join("; ") };
            x += &format!(
                "      <failure type=\"leg\" message=\"{}\">{}</failure>\n",
                xml(&why),
                xml(&l.errors.join("\n"))
            );
        }
        let program = ts(&l.first_program_at).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        x += &format!(
            "      <system-out>{}</system-out>\n    </testcase>\n",
            xml(&format!(
                "target {}; preflight {}; first programme picture {}; sent {} at {}; reconnects {}; drops {}",
                l.target,
                l.preflight,
                program.as_deref().unwrap_or("never"),
                table::bytes(l.bytes_sent),
                table::bitrate(l.average_bitrate_bps),
                l.reconnects,
                l.dropped_buffers
            ))
        );
    }
    x += "  </testsuite>\n</testsuites>\n";
    x
}

fn write_junit(path: &std::path::Path, r: &proto::RehearsalReport) -> Result<(), String> {
    std::fs::write(path, junit(r)).map_err(|e| format!("--junit {}: {e}", path.display()))?;
    eprintln!("JUnit report written to {}.", path.display());
    Ok(())
}

fn print_schedules(cli: &Cli, list: &[proto::RehearsalSchedule]) {
    let next =
        |s: &proto::RehearsalSchedule| ts(&s.next_at).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    if cli.json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
                serde_json::json!({
                    "schedule_id": s.schedule_id, "event_id": s.event_id, "local_time": s.local_time,
                    "timezone": s.timezone, "until": s.until, "next_at": next(s), "live_source": s.live_source,
                    "stamp_legs": s.stamp_legs,
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    let mut t = Table::new(&["SCHEDULE", "EVENT", "EVERY DAY AT", "UNTIL", "NEXT (UTC)", "SOURCE"]);
    for s in list {
        t.row(vec![
            s.schedule_id.clone(),
            s.event_id.clone(),
            format!("{} {}", s.local_time, s.timezone),
            s.until.clone(),
            next(s).unwrap_or_else(|| "(over)".into()),
            format!(
                "{}{}",
                if s.live_source { "live" } else { "test" },
                if s.stamp_legs { ", legs stamped" } else { "" }
            ),
        ]);
    }
    say_raw!("{}", t.render());
}

/// `rehearsals ...`: returns the exit code.
pub async fn rehearsals(cli: &Cli, cmd: &RehearsalsCmd) -> Result<u8, String> {
    let mut c = RehearsalServiceClient::new(connect(cli).await?);
    match cmd {
        RehearsalsCmd::List { event } => {
            let req = proto::ListRehearsalsRequest { event_id: event.clone().unwrap_or_default() };
            let list = c.list_rehearsals(req).await.map_err(|s| status_line(&s))?.into_inner().rehearsals;
            if cli.json {
                let v: Vec<_> = list.iter().map(report_json).collect();
                say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(0);
            }
            let mut t = Table::new(&["REHEARSAL", "EVENT", "STARTED (UTC)", "STATE", "VERDICT", "LEGS PASSED", "BY"]);
            for r in &list {
                let passed = r.legs.iter().filter(|l| l.passed).count();
                t.row(vec![
                    r.rehearsal_id.clone(),
                    r.event_id.clone(),
                    ts(&r.started_at).map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                    state_name(r.state).into(),
                    match (r.state == proto::RehearsalState::Finished as i32, r.passed) {
                        (false, _) => "-".into(),
                        (true, true) => "PASSED".into(),
                        (true, false) => "FAILED".into(),
                    },
                    format!("{passed}/{}", r.legs.len()),
                    r.actor.clone(),
                ]);
            }
            say_raw!("{}", t.render());
            Ok(0)
        }
        RehearsalsCmd::Get { id, junit } => {
            let r = c
                .get_rehearsal_report(proto::RehearsalRef { rehearsal_id: id.clone() })
                .await
                .map_err(|s| status_line(&s))?
                .into_inner();
            print_report(cli, &r);
            if let Some(path) = junit {
                write_junit(path, &r)?;
            }
            let done = r.state == proto::RehearsalState::Finished as i32;
            Ok(if done && !r.passed { FAILED } else { 0 })
        }
        RehearsalsCmd::Schedules { event } => {
            let req = proto::ListRehearsalSchedulesRequest { event_id: event.clone().unwrap_or_default() };
            let list = c.list_rehearsal_schedules(req).await.map_err(|s| status_line(&s))?.into_inner().schedules;
            print_schedules(cli, &list);
            Ok(0)
        }
        RehearsalsCmd::Unschedule { id } => {
            let req = proto::RehearsalScheduleRef { schedule_id: id.clone() };
            c.delete_rehearsal_schedule(req).await.map_err(|s| status_line(&s))?;
            say!("Deleted recurring rehearsal {id}.");
            Ok(0)
        }
    }
}
