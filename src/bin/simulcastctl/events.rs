//! `events`, `airtimes`, `source` and `asrun`: the schedule, master control
//! and the as-run log, as tables or `--json`.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use simulcast::config::uri::{format_duration, parse_duration};
use simulcast::proto::{self, event_service_client::EventServiceClient, monitor_service_client::MonitorServiceClient};
use simulcast::table::Table;

use super::{Cli, connect, status_line};

#[derive(Subcommand)]
pub enum EventsCmd {
    /// Schedule an event: T0 as --at (UTC) or --local with --tz.
    Schedule {
        /// Title.
        #[arg(long)]
        title: String,
        /// T0 in UTC, RFC 3339 (2026-11-22T15:00:00Z).
        #[arg(long, conflicts_with_all = ["local", "tz"], required_unless_present = "local")]
        at: Option<String>,
        /// T0 as a local wall-clock time, YYYY-MM-DDTHH:MM[:SS], with --tz.
        #[arg(long, requires = "tz")]
        local: Option<String>,
        /// The IANA zone of --local (Asia/Almaty).
        #[arg(long, requires = "local")]
        tz: Option<String>,
        /// Where --local happens twice (clocks go back): earlier or later.
        #[arg(long, requires = "local")]
        fold: Option<String>,
        /// Programme length (2h, 90m).
        #[arg(long, value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Legs connect this long before T0 (default 60s).
        #[arg(long, value_parser = parse_duration)]
        preroll: Option<std::time::Duration>,
        /// Legs stay up this long after the end (default 30s).
        #[arg(long, value_parser = parse_duration)]
        postroll: Option<std::time::Duration>,
        /// A channel to air on (repeat); default: every enabled channel.
        #[arg(long = "channel")]
        channels: Vec<String>,
    },
    /// Every event, by T0.
    List,
    /// One event.
    Get {
        /// Event id.
        event: String,
    },
    /// Cancel a scheduled event.
    Cancel {
        /// Event id.
        event: String,
    },
    /// Connect the legs now (before T0 - preroll).
    Arm {
        /// Event id.
        event: String,
    },
    /// Program now (early start, or the end of a hold).
    Take {
        /// Event id.
        event: String,
    },
    /// Stay off program past T0 until take.
    Hold {
        /// Event id.
        event: String,
    },
    /// Move the end: --by 10m later, --by=-5m earlier.
    Extend {
        /// Event id.
        event: String,
        /// How far.
        #[arg(long, allow_hyphen_values = true)]
        by: String,
    },
    /// Go to post-roll now.
    End {
        /// Event id.
        event: String,
    },
    /// Emergency: stop every leg now and end the event.
    Abort {
        /// Event id.
        event: String,
    },
    /// Schedule an ad break (operator): a SCTE-35 splice_insert out and in
    /// on each MPEG-TS leg, announced 5 s ahead, and an AMF onCuePoint at
    /// the start and the end on each RTMP leg. When: --in 2m, --at UTC,
    /// --at 21:15 --tz Asia/Seoul, or --local 21:15 (each channel's own
    /// wall clock, on its own air).
    Break {
        /// Event id.
        event: String,
        /// From now (2m, 90s).
        #[arg(long = "in", value_parser = parse_duration, conflicts_with_all = ["at", "local"])]
        after: Option<std::time::Duration>,
        /// An RFC 3339 instant (2026-12-20T15:15:00Z), or with --tz a local
        /// HH:MM[:SS] (during the programme) or YYYY-MM-DDTHH:MM[:SS].
        #[arg(long, conflicts_with = "local")]
        at: Option<String>,
        /// The IANA zone of a local --at.
        #[arg(long, requires = "at")]
        tz: Option<String>,
        /// HH:MM[:SS] or YYYY-MM-DDTHH:MM[:SS] on each listed channel's own
        /// wall clock (a delayed leg's own air).
        #[arg(long)]
        local: Option<String>,
        /// Where a local time happens twice (clocks go back): earlier or later.
        #[arg(long)]
        fold: Option<String>,
        /// Break length (90s, 2m).
        #[arg(long, value_parser = parse_duration)]
        duration: std::time::Duration,
        /// A channel to break on (repeat); default: every leg.
        #[arg(long = "channel")]
        channels: Vec<String>,
    },
    /// Ad breaks, one row per leg with its local start (every event's
    /// without an id).
    Breaks {
        /// Event id.
        event: Option<String>,
    },
    /// Cancel a break whose cue has not gone out (operator).
    CancelBreak {
        /// Break id (br-...).
        id: String,
    },
}

#[derive(Subcommand)]
pub enum SourceCmd {
    /// Choose the program's source by hand: primary, backup or slate; auto
    /// returns to automatic failover. A manual choice holds until auto.
    Switch {
        /// Event id.
        event: String,
        /// primary, backup, slate or auto.
        source: String,
    },
}

pub fn ts(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.as_ref().and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

fn ts_text(t: &Option<prost_types::Timestamp>) -> String {
    ts(t).map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn dur(d: &Option<prost_types::Duration>) -> String {
    match d {
        Some(d) if d.seconds >= 0 && d.nanos >= 0 => {
            format_duration(std::time::Duration::new(d.seconds as u64, d.nanos as u32))
        }
        Some(d) => {
            format!("-{}", format_duration(std::time::Duration::new(d.seconds.unsigned_abs(), d.nanos.unsigned_abs())))
        }
        None => "-".into(),
    }
}

fn proto_dur(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// `SOURCE_SELECTION_PRIMARY` -> `PRIMARY` (empty if unknown).
pub fn source_name(s: i32) -> String {
    proto::SourceSelection::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("SOURCE_SELECTION_").to_owned())
        .unwrap_or_default()
}

/// `EVENT_STATE_ON_AIR` -> `ON_AIR`.
pub fn state_name(s: i32) -> String {
    proto::EventState::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("EVENT_STATE_").to_owned())
        .unwrap_or_else(|_| s.to_string())
}

fn event_json(e: &proto::Event) -> serde_json::Value {
    let iso =
        |t: &Option<prost_types::Timestamp>| ts(t).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    serde_json::json!({
        "id": e.id, "title": e.title, "state": state_name(e.state),
        "on_air_utc": iso(&e.on_air_utc), "end_utc": iso(&e.end_utc),
        "duration": dur(&e.duration), "preroll": dur(&e.preroll), "postroll": dur(&e.postroll),
        "channel_ids": e.channel_ids, "created_utc": iso(&e.created_utc),
    })
}

fn print_events(list: &[proto::Event], json: bool) {
    if json {
        let v: Vec<_> = list.iter().map(event_json).collect();
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    let mut t = Table::new(&["ID", "TITLE", "STATE", "T0 (UTC)", "END (UTC)", "DURATION", "PREROLL", "LEGS"]);
    for e in list {
        t.row(vec![
            e.id.clone(),
            e.title.clone(),
            state_name(e.state),
            ts_text(&e.on_air_utc),
            ts_text(&e.end_utc),
            dur(&e.duration),
            dur(&e.preroll),
            e.channel_ids.len().to_string(),
        ]);
    }
    say_raw!("{}", t.render());
}

fn event_ref(id: &str) -> proto::EventRef {
    proto::EventRef { event_id: id.to_owned() }
}

fn fold_of(fold: Option<&str>) -> Result<proto::Fold, String> {
    match fold {
        None => Ok(proto::Fold::Unspecified),
        Some("earlier") => Ok(proto::Fold::Earlier),
        Some("later") => Ok(proto::Fold::Later),
        Some(f) => Err(format!("--fold `{f}`: use earlier or later")),
    }
}

fn break_json(b: &proto::AdBreak) -> serde_json::Value {
    let iso =
        |t: &Option<prost_types::Timestamp>| ts(t).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let legs: Vec<_> = b
        .legs
        .iter()
        .map(|l| {
            serde_json::json!({
                "channel_id": l.channel_id, "local_start": l.local_start, "timezone": l.timezone, "delay": dur(&l.delay),
            })
        })
        .collect();
    serde_json::json!({
        "id": b.id, "event_id": b.event_id, "start_utc": iso(&b.start_utc), "duration": dur(&b.duration),
        "splice_event_id": b.splice_event_id, "channel_ids": b.channel_ids, "legs": legs,
        "created_utc": iso(&b.created_utc),
    })
}

fn print_breaks(list: &[proto::AdBreak], json: bool) {
    if json {
        let v: Vec<_> = list.iter().map(break_json).collect();
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    let mut t = Table::new(&[
        "BREAK",
        "EVENT",
        "START (UTC)",
        "DURATION",
        "SPLICE ID",
        "CHANNEL",
        "LOCAL START",
        "ZONE",
        "DELAY",
    ]);
    for b in list {
        for l in &b.legs {
            let local = DateTime::parse_from_rfc3339(&l.local_start)
                .map_or(l.local_start.clone(), |t| t.format("%Y-%m-%d %H:%M:%S %:z").to_string());
            t.row(vec![
                b.id.clone(),
                b.event_id.clone(),
                ts_text(&b.start_utc),
                dur(&b.duration),
                b.splice_event_id.to_string(),
                l.channel_id.clone(),
                local,
                l.timezone.clone(),
                dur(&l.delay),
            ]);
        }
    }
    say_raw!("{}", t.render());
}

/// `events break`, `events breaks` and `events cancel-break`; `false` if
/// `cmd` is none of them.
async fn breaks(c: &mut EventServiceClient<super::Conn>, cli: &Cli, cmd: &EventsCmd) -> Result<bool, String> {
    use proto::schedule_break_request::At;
    let st = |s: tonic::Status| status_line(&s);
    let shown = match cmd {
        EventsCmd::Break { event, after, at, tz, local, fold, duration, channels } => {
            let fold = fold_of(fold.as_deref())? as i32;
            let at = match (after, at, tz, local) {
                (Some(d), ..) => At::After(proto_dur(*d)),
                (None, Some(at), None, None) => {
                    let t = DateTime::parse_from_rfc3339(at)
                        .map_err(|e| format!("--at `{at}`: not an RFC 3339 instant ({e}); a local time needs --tz"))?;
                    At::AtUtc(prost_types::Timestamp {
                        seconds: t.timestamp(),
                        nanos: t.timestamp_subsec_nanos() as i32,
                    })
                }
                (None, Some(at), Some(tz), None) => {
                    At::AtLocal(proto::LocalTime { local: at.clone(), timezone: tz.clone(), fold })
                }
                (None, None, None, Some(local)) => {
                    At::AtLocal(proto::LocalTime { local: local.clone(), timezone: String::new(), fold })
                }
                _ => return Err("give --in, --at (with --tz for a local time) or --local".into()),
            };
            let req = proto::ScheduleBreakRequest {
                event_id: event.clone(),
                at: Some(at),
                duration: Some(proto_dur(*duration)),
                channel_ids: channels.clone(),
            };
            c.schedule_break(req).await.map_err(st)?.into_inner().breaks
        }
        EventsCmd::Breaks { event } => {
            let req = proto::ListBreaksRequest { event_id: event.clone().unwrap_or_default() };
            c.list_breaks(req).await.map_err(st)?.into_inner().breaks
        }
        EventsCmd::CancelBreak { id } => {
            vec![c.cancel_break(proto::CancelBreakRequest { break_id: id.clone() }).await.map_err(st)?.into_inner()]
        }
        _ => return Ok(false),
    };
    print_breaks(&shown, cli.json);
    Ok(true)
}

pub async fn run(cli: &Cli, cmd: &EventsCmd) -> Result<(), String> {
    let mut c = EventServiceClient::new(connect(cli).await?);
    if breaks(&mut c, cli, cmd).await? {
        return Ok(());
    }
    let st = |s: tonic::Status| status_line(&s);
    let shown = match cmd {
        EventsCmd::Schedule { title, at, local, tz, fold, duration, preroll, postroll, channels } => {
            let on_air = match (at, local, tz) {
                (Some(at), _, _) => {
                    let t = DateTime::parse_from_rfc3339(at).map_err(|e| {
                        format!("--at `{at}`: not an RFC 3339 instant ({e}), e.g. 2026-11-22T15:00:00Z")
                    })?;
                    proto::schedule_event_request::OnAir::OnAirUtc(prost_types::Timestamp {
                        seconds: t.timestamp(),
                        nanos: t.timestamp_subsec_nanos() as i32,
                    })
                }
                (None, Some(local), Some(tz)) => proto::schedule_event_request::OnAir::OnAirLocal(proto::LocalTime {
                    local: local.clone(),
                    timezone: tz.clone(),
                    fold: fold_of(fold.as_deref())? as i32,
                }),
                _ => return Err("give --at, or --local with --tz".into()),
            };
            let req = proto::ScheduleEventRequest {
                title: title.clone(),
                on_air: Some(on_air),
                duration: Some(proto_dur(*duration)),
                preroll: preroll.map(proto_dur),
                postroll: postroll.map(proto_dur),
                channel_ids: channels.clone(),
            };
            vec![c.schedule_event(req).await.map_err(st)?.into_inner()]
        }
        EventsCmd::List => c.list_events(proto::ListEventsRequest {}).await.map_err(st)?.into_inner().events,
        EventsCmd::Get { event } => vec![c.get_event(event_ref(event)).await.map_err(st)?.into_inner()],
        EventsCmd::Cancel { event } => vec![c.cancel_event(event_ref(event)).await.map_err(st)?.into_inner()],
        EventsCmd::Arm { event } => vec![c.arm(event_ref(event)).await.map_err(st)?.into_inner()],
        EventsCmd::Take { event } => vec![c.take(event_ref(event)).await.map_err(st)?.into_inner()],
        EventsCmd::Hold { event } => vec![c.hold(event_ref(event)).await.map_err(st)?.into_inner()],
        EventsCmd::End { event } => vec![c.end_event(event_ref(event)).await.map_err(st)?.into_inner()],
        EventsCmd::Abort { event } => vec![c.abort(event_ref(event)).await.map_err(st)?.into_inner()],
        EventsCmd::Break { .. } | EventsCmd::Breaks { .. } | EventsCmd::CancelBreak { .. } => vec![],
        EventsCmd::Extend { event, by } => {
            let (neg, text) = match by.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, by.as_str()),
            };
            let d = parse_duration(text).map_err(|e| format!("--by: {e}"))?;
            let mut p = proto_dur(d);
            if neg {
                p = prost_types::Duration { seconds: -p.seconds, nanos: -p.nanos };
            }
            let req = proto::ExtendRequest { event_id: event.clone(), by: Some(p) };
            vec![c.extend(req).await.map_err(st)?.into_inner()]
        }
    };
    print_events(&shown, cli.json);
    Ok(())
}

pub async fn source(cli: &Cli, cmd: &SourceCmd) -> Result<(), String> {
    let SourceCmd::Switch { event, source } = cmd;
    let selection = match source.to_ascii_lowercase().as_str() {
        "primary" => proto::SourceSelection::Primary,
        "backup" => proto::SourceSelection::Backup,
        "slate" => proto::SourceSelection::Slate,
        "auto" => proto::SourceSelection::Auto,
        other => return Err(format!("source `{other}`: use primary, backup, slate or auto")),
    };
    let mut c = EventServiceClient::new(connect(cli).await?);
    let req = proto::SwitchSourceRequest { event_id: event.clone(), source: selection as i32 };
    let e = c.switch_source(req).await.map_err(|s| status_line(&s))?.into_inner();
    if cli.json {
        say!("{}", serde_json::json!({ "event": event_json(&e), "source": source.to_ascii_uppercase() }));
    } else {
        say!("Event {} ({}): source set to {}.", e.id, state_name(e.state), source.to_ascii_uppercase());
    }
    Ok(())
}

pub async fn airtimes(cli: &Cli, event: &str) -> Result<(), String> {
    let conn = connect(cli).await?;
    let mut c = EventServiceClient::new(conn);
    let ev = c.get_event(event_ref(event)).await.map_err(|s| status_line(&s))?.into_inner();
    let list = c.get_air_times(event_ref(event)).await.map_err(|s| status_line(&s))?.into_inner().air_times;
    let t0 = ts(&ev.on_air_utc);
    let rows: Vec<(proto::AirTime, Option<DateTime<chrono::FixedOffset>>)> = list
        .into_iter()
        .map(|a| {
            let l = DateTime::parse_from_rfc3339(&a.local_on_air).ok();
            (a, l)
        })
        .collect();
    if cli.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(a, l)| {
                serde_json::json!({
                    "channel_id": a.channel_id, "timezone": a.timezone, "local_on_air": a.local_on_air,
                    "weekday": l.map(|l| l.format("%A").to_string()),
                    "utc_offset_seconds": a.utc_offset_seconds, "zone_abbreviation": a.zone_abbreviation,
                    "delay": dur(&a.delay),
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    // The reference date: T0's UTC date. A leg on another local date is marked.
    let ref_date = t0.map(|t| t.date_naive());
    say!("Event {} \"{}\": T0 {} UTC", ev.id, ev.title, ts_text(&ev.on_air_utc));
    let mut t = Table::new(&["CHANNEL", "TIMEZONE", "LOCAL DATE", "DAY", "LOCAL TIME", "UTC OFFSET", "ZONE", "DELAY"]);
    for (a, l) in &rows {
        let (date, day, time, offset) = match l {
            Some(l) => {
                let mark = if Some(l.date_naive()) != ref_date { " *" } else { "" };
                let off = a.utc_offset_seconds;
                let sign = if off < 0 { '-' } else { '+' };
                (
                    format!("{}{mark}", l.format("%Y-%m-%d")),
                    l.format("%a").to_string(),
                    l.format("%H:%M:%S").to_string(),
                    format!("UTC{sign}{:02}:{:02}", off.abs() / 3600, (off.abs() % 3600) / 60),
                )
            }
            None => ("?".into(), "?".into(), a.local_on_air.clone(), "?".into()),
        };
        t.row(vec![
            a.channel_id.clone(),
            a.timezone.clone(),
            date,
            day,
            time,
            offset,
            a.zone_abbreviation.clone(),
            dur(&a.delay),
        ]);
    }
    say_raw!("{}", t.render());
    if rows.iter().any(|(_, l)| l.is_some_and(|l| Some(l.date_naive()) != ref_date)) {
        say!("* local date differs from T0's UTC date");
    }
    Ok(())
}

/// Saves each entry's picture in `dir` (created if missing) as
/// EVENT-ID-KIND[-LEG].jpg; says how many on stderr.
async fn save_pictures(
    c: &mut MonitorServiceClient<crate::Conn>,
    event: &str,
    entries: &[proto::AsRunEntry],
    dir: &std::path::Path,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut saved = 0;
    for e in entries.iter().filter(|e| e.picture_id > 0) {
        let req = proto::AsRunPictureRef { picture_id: e.picture_id };
        let p = c.get_as_run_picture(req).await.map_err(|s| status_line(&s))?.into_inner();
        let leg = if e.channel_id.is_empty() { String::new() } else { format!("-{}", e.channel_id) };
        let path = dir.join(format!("{event}-{}-{}{leg}.jpg", e.picture_id, e.kind));
        std::fs::write(&path, &p.jpeg).map_err(|err| format!("cannot write {}: {err}", path.display()))?;
        saved += 1;
    }
    eprintln!("{saved} picture(s) saved in {}", dir.display());
    Ok(())
}

pub async fn asrun(cli: &Cli, event: &str, format: &str, pictures: Option<&std::path::Path>) -> Result<(), String> {
    let format = if cli.json { "json" } else { format };
    if !["table", "csv", "json"].contains(&format) {
        return Err(format!("--format `{format}`: use table, csv or json"));
    }
    let mut c = MonitorServiceClient::new(connect(cli).await?);
    // Page after page: a long event's log outgrows one message.
    let (mut entries, mut page_token) = (Vec::new(), String::new());
    loop {
        let req = proto::GetAsRunLogRequest { event_id: event.to_owned(), page_size: 0, page_token };
        let page = c.get_as_run_log(req).await.map_err(|s| status_line(&s))?.into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if let Some(dir) = pictures {
        save_pictures(&mut c, event, &entries, dir).await?;
    }
    let utc = |e: &proto::AsRunEntry| ts(&e.utc).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    match format {
        "json" => {
            let v: Vec<_> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "utc": utc(e), "channel_id": e.channel_id, "local_time": e.local_time,
                        "timezone": e.timezone, "kind": e.kind, "detail": e.detail, "actor": e.actor,
                        "picture_id": (e.picture_id > 0).then_some(e.picture_id),
                    })
                })
                .collect();
            say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        "csv" => {
            let mut w = csv::Writer::from_writer(std::io::stdout().lock());
            let err = |e: csv::Error| format!("cannot write CSV: {e}");
            let header = ["utc", "channel_id", "local_time", "timezone", "kind", "detail", "actor", "picture_id"];
            w.write_record(header).map_err(err)?;
            for e in &entries {
                let u = utc(e).unwrap_or_default();
                let p = if e.picture_id > 0 { e.picture_id.to_string() } else { String::new() };
                w.write_record([&u, &e.channel_id, &e.local_time, &e.timezone, &e.kind, &e.detail, &e.actor, &p])
                    .map_err(err)?;
            }
            w.flush().map_err(|e| format!("cannot write CSV: {e}"))?;
        }
        _ => {
            let mut t = Table::new(&["UTC", "LEG", "LOCAL TIME", "ZONE", "KIND", "ACTOR", "PICTURE", "DETAIL"]);
            for e in &entries {
                let utc = ts(&e.utc).map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string());
                let leg = if e.channel_id.is_empty() { "(event)".to_owned() } else { e.channel_id.clone() };
                let zone = if e.timezone.is_empty() { "-".to_owned() } else { e.timezone.clone() };
                let picture = if e.picture_id > 0 { e.picture_id.to_string() } else { "-".to_owned() };
                let row = vec![utc, leg, e.local_time.clone(), zone, e.kind.clone(), e.actor.clone(), picture];
                t.row([row, vec![e.detail.clone()]].concat());
            }
            say_raw!("{}", t.render());
        }
    }
    Ok(())
}
