//! Rehearsals: an event's plan run now on a compressed timeline (pre-roll on
//! slate, programme, post-roll), to the event's real partner ingests, from
//! the built-in test source (titled and clocked) or the real feed, with a
//! verdict per leg an operator, cron or CI can act on.
//!
//! A rehearsal runs in its own task with its own relay, never the live
//! event's: the coordinator refuses to start one while an event is live or
//! due to arm before it would end, and stops one if an event arms anyway.
//! First the [`preflight`] asks every ingest whether it would take the leg,
//! before anything is sent; legs that fail it are not run. Then the run;
//! then [`judge`] gives each leg its verdict.

pub mod preflight;
pub mod recurring;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{self, Channel, Source};
use crate::legview::{Change, LegSeen};
use crate::media::leg::SrtFigures;
use crate::media::program::Cue;
use crate::relay::{Relay, RelayPlan};

/// Default lengths of `simulcastctl rehearse`.
pub const DEFAULT_PREROLL: Duration = Duration::from_secs(10);
/// See [`DEFAULT_PREROLL`].
pub const DEFAULT_PROGRAM: Duration = Duration::from_secs(30);
/// See [`DEFAULT_PREROLL`].
pub const DEFAULT_POSTROLL: Duration = Duration::from_secs(5);
/// The longest a rehearsal may run in all.
pub const MAX_LENGTH: Duration = Duration::from_secs(3600);
/// How far a leg's first programme picture may be from the plan.
pub const PROGRAM_TOLERANCE_MS: i64 = 1000;
/// How often the run looks at its legs.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Where the programme of a rehearsal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RehearsalSource {
    /// Built-in bars, the event's title and a burnt-in UTC clock.
    Test,
    /// The configured contribution feed (and backup).
    Live,
}

impl RehearsalSource {
    /// `test` or `live`.
    pub fn as_str(self) -> &'static str {
        match self {
            RehearsalSource::Test => "test",
            RehearsalSource::Live => "live",
        }
    }
}

/// The compressed timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Slate before the programme.
    pub preroll: Duration,
    /// Programme.
    pub program: Duration,
    /// Slate after it.
    pub postroll: Duration,
    /// Test or live source.
    pub source: RehearsalSource,
    /// Each leg names its own channel in-band ([`crate::media::stamp`]).
    #[serde(default)]
    pub stamp: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            preroll: DEFAULT_PREROLL,
            program: DEFAULT_PROGRAM,
            postroll: DEFAULT_POSTROLL,
            source: RehearsalSource::Test,
            stamp: false,
        }
    }
}

impl Plan {
    /// Everything after preflight.
    pub fn length(&self) -> Duration {
        self.preroll + self.program + self.postroll
    }

    /// Why the plan cannot run, naming the field.
    pub fn check(&self) -> Result<(), config::FieldError> {
        let e = |key: &str, m: &str| config::FieldError { key: key.into(), message: m.into() };
        if self.program < Duration::from_secs(1) {
            return Err(e("program", "must be at least 1 s"));
        }
        if self.length() > MAX_LENGTH {
            return Err(e("program", "preroll + program + postroll must not exceed 1 h"));
        }
        Ok(())
    }
}

/// Where a rehearsal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    /// Asking every ingest; nothing sent yet.
    Preflight,
    /// The plan runs.
    Running,
    /// Verdict final.
    Finished,
}

/// One leg's part of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegReport {
    /// The channel.
    pub channel_id: String,
    /// `srt`, `rtmp`, ...
    pub protocol: String,
    /// The ingest, never a secret.
    pub target: String,
    /// Whether the ingest said it would take the leg.
    pub preflight_ok: bool,
    /// What the preflight found.
    pub preflight: String,
    /// When the ingest first answered during the run.
    pub connected_at: Option<DateTime<Utc>>,
    /// When its first programme picture went out.
    pub first_program_at: Option<DateTime<Utc>>,
    /// That, minus the plan's programme start, in ms.
    pub first_program_error_ms: Option<f64>,
    /// Bytes handed to its sink.
    pub bytes_sent: u64,
    /// Bytes over the time it was connected, in bit/s.
    pub average_bitrate_bps: u64,
    /// Pipeline rebuilds.
    pub reconnects: u32,
    /// Buffers its input dropped.
    pub dropped_buffers: u64,
    /// SRT figures at the end (SRT legs).
    pub srt: Option<SrtFigures>,
    /// Where the leg named its channel, when the run stamped its legs.
    #[serde(default)]
    pub stamp: Option<String>,
    /// The audio languages the partner asks for that the programme lacked
    /// during the run (it got every track instead).
    #[serde(default)]
    pub audio_missing: Vec<String>,
    /// Why it failed, and errors seen on the way; each names the ingest.
    pub errors: Vec<String>,
    /// The verdict.
    pub passed: bool,
}

/// A rehearsal and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `rh-` and 12 hex digits.
    pub id: String,
    /// The event rehearsed.
    pub event_id: String,
    /// Who started it: a caller's name, or `schedule rs-...`.
    pub actor: String,
    /// The timeline.
    pub plan: Plan,
    /// Where it is.
    pub phase: Phase,
    /// When it was asked for.
    pub started_at: DateTime<Utc>,
    /// When the programme is due (after preflight and pre-roll).
    pub program_at: Option<DateTime<Utc>>,
    /// When the post-roll ends.
    pub ends_at: Option<DateTime<Utc>>,
    /// When the verdict was given.
    pub finished_at: Option<DateTime<Utc>>,
    /// Every leg.
    pub legs: Vec<LegReport>,
    /// Every leg passed (and there was at least one).
    pub passed: bool,
    /// The verdict in words.
    pub summary: String,
}

impl Report {
    /// A report in preflight for `channels`.
    pub fn new(
        id: String,
        event_id: String,
        actor: String,
        plan: Plan,
        now: DateTime<Utc>,
        channels: &[Channel],
    ) -> Self {
        Self {
            id,
            event_id,
            actor,
            plan,
            phase: Phase::Preflight,
            started_at: now,
            program_at: None,
            ends_at: None,
            finished_at: None,
            legs: channels
                .iter()
                .map(|c| LegReport {
                    channel_id: c.id.to_string(),
                    protocol: c.ingest.protocol().into(),
                    target: c.ingest.target(),
                    preflight_ok: false,
                    preflight: "not checked yet".into(),
                    connected_at: None,
                    first_program_at: None,
                    first_program_error_ms: None,
                    bytes_sent: 0,
                    average_bitrate_bps: 0,
                    reconnects: 0,
                    dropped_buffers: 0,
                    srt: None,
                    stamp: None,
                    audio_missing: Vec::new(),
                    errors: Vec::new(),
                    passed: false,
                })
                .collect(),
            passed: false,
            summary: "preflight".into(),
        }
    }
}

/// Gives `leg` its verdict (the reasons go first in `errors`).
pub fn judge(leg: &mut LegReport, program_at: Option<DateTime<Utc>>, ended_early: Option<&str>) {
    let mut why = Vec::new();
    let t = &leg.target;
    if !leg.preflight_ok {
        why.push(format!("preflight failed: {}", leg.preflight));
    } else if let Some(reason) = ended_early.filter(|_| leg.first_program_at.is_none()) {
        why.push(format!("{t}: not rehearsed: {reason}"));
    } else if leg.connected_at.is_none() {
        why.push(format!("{t}: never connected"));
    } else if leg.first_program_at.is_none() {
        why.push(format!("{t}: no programme picture went out"));
    } else {
        if let Some(ms) = leg.first_program_error_ms.filter(|ms| ms.abs() > PROGRAM_TOLERANCE_MS as f64) {
            why.push(format!("{t}: first programme picture {ms:+.0} ms from the plan"));
        }
        if leg.reconnects > 0 {
            why.push(format!("{t}: {} reconnect(s): the partner lost the stream", leg.reconnects));
        }
        if leg.dropped_buffers > 0 {
            why.push(format!("{t}: {} buffer(s) dropped", leg.dropped_buffers));
        }
        if !leg.audio_missing.is_empty() {
            why.push(format!(
                "{t}: the programme lacked its audio language(s) {}: it got every track",
                leg.audio_missing.join(", ")
            ));
        }
    }
    if program_at.is_none() && why.is_empty() {
        why.push(format!("{t}: the run did not start"));
    }
    leg.passed = why.is_empty();
    let seen: Vec<String> = std::mem::take(&mut leg.errors).into_iter().filter(|e| !why.contains(e)).collect();
    leg.errors = why;
    leg.errors.extend(seen);
}

/// Judges every leg and sets the overall verdict.
pub fn conclude(report: &mut Report, ended_early: Option<&str>, now: DateTime<Utc>) {
    for leg in &mut report.legs {
        judge(leg, report.program_at, ended_early);
    }
    let failed: Vec<&str> = report.legs.iter().filter(|l| !l.passed).map(|l| l.channel_id.as_str()).collect();
    report.passed = !report.legs.is_empty() && failed.is_empty();
    report.summary = if report.legs.is_empty() {
        "FAILED: the event has no leg to rehearse".into()
    } else if failed.is_empty() {
        format!("PASSED: all {} leg(s) passed", report.legs.len())
    } else {
        format!("FAILED: {} of {} leg(s) failed: {}", failed.len(), report.legs.len(), failed.join(", "))
    };
    if let Some(why) = ended_early {
        report.summary.push_str(&format!(" (stopped early: {why})"));
    }
    report.phase = Phase::Finished;
    report.finished_at = Some(now);
}

/// What a rehearsal's relay is built from.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The event's title (burnt into the test source).
    pub title: String,
    /// The event's enabled channels.
    pub channels: Vec<Channel>,
    /// The relay plan from the daemon's source, backup, failover,
    /// programme, slate and relay settings (its legs are replaced).
    pub base: RelayPlan,
    /// `false`: no pipelines (scheduler tests on paused time).
    pub media: bool,
}

/// Runs a rehearsal to its verdict, reporting its progress on `progress`
/// (the task is the report's one writer; the coordinator reads the latest).
/// `stop` ends it early (an event arming, the daemon stopping).
pub async fn run(setup: Setup, progress: watch::Sender<Report>, mut stop: watch::Receiver<Option<String>>) -> Report {
    let shared = &progress;
    let update = |f: &mut dyn FnMut(&mut Report)| shared.send_modify(|r| f(r));
    let plan = shared.borrow().plan;
    let id = shared.borrow().id.clone();
    info!(rehearsal = %id, legs = setup.channels.len(), "Rehearsal preflight.");

    // Preflight: every ingest at once, nothing sent, within one deadline
    // (a partner that never answers, or a name that never resolves, holds
    // up no one), and given up at once when the rehearsal is stopped.
    let mut checks = tokio::task::JoinSet::new();
    for (i, c) in setup.channels.iter().enumerate() {
        let ingest = c.ingest.clone();
        checks.spawn_blocking(move || (i, preflight::check(&ingest)));
    }
    let mut answered = vec![false; setup.channels.len()];
    let deadline = tokio::time::sleep(preflight::DEADLINE);
    tokio::pin!(deadline);
    loop {
        let (i, result) = tokio::select! {
            done = checks.join_next() => match done {
                None => break,
                Some(Ok(found)) => found,
                Some(Err(_)) => continue,
            },
            _ = &mut deadline => break,
            r = stop.changed() => {
                if r.is_err() || stop.borrow().is_some() { break }
                continue;
            }
        };
        answered[i] = true;
        update(&mut |r| {
            let leg = &mut r.legs[i];
            match &result {
                Ok(found) => (leg.preflight_ok, leg.preflight) = (true, found.clone()),
                Err(why) => {
                    warn!(leg = %leg.channel_id, rehearsal = %r.id, why = %why, "Preflight failed.");
                    (leg.preflight_ok, leg.preflight) = (false, why.clone());
                }
            }
        });
    }
    // Checks still under way are left to end on their own (a blocking
    // thread cannot be cut short); their answer is no longer awaited.
    checks.detach_all();
    let stopped = stop.borrow().is_some();
    update(&mut |r| {
        for (leg, _) in r.legs.iter_mut().zip(&answered).filter(|(_, a)| !**a) {
            leg.preflight = if stopped {
                format!("{}: not checked: the rehearsal was stopped", leg.target)
            } else {
                format!("{}: no answer within {} s", leg.target, preflight::DEADLINE.as_secs())
            };
        }
    });
    let passing: Vec<Channel> = {
        let r = shared.borrow();
        setup
            .channels
            .iter()
            .filter(|c| r.legs.iter().any(|l| l.channel_id == c.id.as_str() && l.preflight_ok))
            .cloned()
            .collect()
    };
    let early = stop.borrow().clone();
    if passing.is_empty() || early.is_some() || !setup.media {
        let why = early.or_else(|| (!setup.media).then(|| "media disabled in this daemon".to_owned()));
        return finish(shared, why.as_deref());
    }

    // The run: slate, programme at start + preroll, slate until the end.
    let now = Utc::now();
    let program_at = now + crate::schedule::chrono_duration(plan.preroll);
    let program_until = program_at + crate::schedule::chrono_duration(plan.program);
    let ends_at = program_until + crate::schedule::chrono_duration(plan.postroll);
    let mut relay_plan = setup.base.clone();
    relay_plan.program.title = format!("REHEARSAL - {}", setup.title);
    relay_plan.legs = passing;
    relay_plan.settings.stamp_legs |= plan.stamp;
    if relay_plan.settings.stamp_legs {
        update(&mut |r| {
            r.plan.stamp = true;
            for c in &relay_plan.legs {
                if let Some(leg) = r.legs.iter_mut().find(|l| l.channel_id == c.id.as_str()) {
                    leg.stamp = Some(crate::media::stamp::describe(c));
                }
            }
        });
    }
    if plan.source == RehearsalSource::Test {
        relay_plan.program.source = Source::Test(config::TestSource::default());
        relay_plan.program.backup = None;
    }
    let cue = Cue { program_from: Some(program_at), program_until: Some(program_until), force_slate: false };
    let relay = match Relay::start_with(&relay_plan, cue, None).await {
        Ok(r) => r,
        Err(e) => {
            let why = format!("the relay could not start: {e}");
            update(&mut |r| {
                for leg in r.legs.iter_mut().filter(|l| l.preflight_ok) {
                    leg.errors.push(why.clone());
                }
            });
            return finish(shared, Some(&why));
        }
    };
    update(&mut |r| {
        r.phase = Phase::Running;
        r.program_at = Some(program_at);
        r.ends_at = Some(ends_at);
    });
    info!(rehearsal = %id, program_at = %program_at, ends_at = %ends_at, "Rehearsal running.");
    let mut early = None;
    let mut seen = LegsSeen::new();
    loop {
        look(&relay, shared, &mut seen, program_at);
        if Utc::now() >= ends_at {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            r = stop.changed() => {
                early = if r.is_ok() { stop.borrow().clone() } else { Some("the daemon stopped".into()) };
                if early.is_some() { break; }
            }
        }
    }
    let last = relay.shutdown().await;
    update(&mut |r| {
        for s in &last.legs {
            let Some(leg) = r.legs.iter_mut().find(|l| l.channel_id == s.channel_id) else { continue };
            leg.bytes_sent = s.bytes_sent;
            leg.reconnects = s.reconnects;
            leg.dropped_buffers = s.dropped_buffers;
            leg.srt = s.srt;
            if let Some(c) = leg.connected_at {
                let secs = (Utc::now() - c).num_milliseconds().max(1) as f64 / 1000.0;
                leg.average_bitrate_bps = (s.bytes_sent as f64 * 8.0 / secs) as u64;
            }
        }
    });
    finish(shared, early.as_deref())
}

/// Folds one look at the relay into the report.
fn look(relay: &Relay, progress: &watch::Sender<Report>, seen: &mut LegsSeen, program_at: DateTime<Utc>) {
    let status = relay.status();
    let now = Utc::now();
    progress.send_modify(|r| fold(r, seen, &status, now, program_at));
}

/// Each leg's view so far, by channel (the fold master control uses too).
type LegsSeen = std::collections::BTreeMap<String, LegSeen>;

/// One look at the relay's legs, folded into the report.
fn fold(
    r: &mut Report,
    seen: &mut LegsSeen,
    status: &crate::relay::RelayStatus,
    now: DateTime<Utc>,
    program_at: DateTime<Utc>,
) {
    for s in &status.legs {
        let Some(leg) = r.legs.iter_mut().find(|l| l.channel_id == s.channel_id) else { continue };
        for change in seen.entry(s.channel_id.clone()).or_default().fold(s, now, Some(program_at)) {
            match change {
                Change::OnAir(at) => leg.connected_at = Some(at),
                Change::FirstProgram { at, error_ms } => {
                    leg.first_program_at = Some(at);
                    leg.first_program_error_ms = error_ms;
                }
                // A rehearsal times the first picture only.
                Change::ProgramAgain(_) => {}
                Change::Error(e) => leg.errors.push(e),
            }
        }
        leg.bytes_sent = s.bytes_sent;
        leg.reconnects = s.reconnects;
        leg.dropped_buffers = s.dropped_buffers;
        leg.srt = s.srt;
        for l in &s.audio_missing {
            if !leg.audio_missing.contains(l) {
                leg.audio_missing.push(l.clone());
            }
        }
    }
}

fn finish(progress: &watch::Sender<Report>, early: Option<&str>) -> Report {
    progress.send_modify(|r| conclude(r, early, Utc::now()));
    let r = progress.borrow().clone();
    for leg in &r.legs {
        if leg.passed {
            info!(leg = %leg.channel_id, rehearsal = %r.id, "Rehearsal leg passed.");
        } else {
            warn!(leg = %leg.channel_id, rehearsal = %r.id, why = %leg.errors.join("; "), "Rehearsal leg failed.");
        }
    }
    info!(rehearsal = %r.id, passed = r.passed, summary = %r.summary, "Rehearsal finished.");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg() -> LegReport {
        LegReport {
            channel_id: "kz".into(),
            protocol: "srt".into(),
            target: "srt://127.0.0.1:9000 (caller)".into(),
            preflight_ok: true,
            preflight: "ok".into(),
            connected_at: Some(Utc::now()),
            first_program_at: Some(Utc::now()),
            first_program_error_ms: Some(80.0),
            bytes_sent: 1_000_000,
            average_bitrate_bps: 1_000_000,
            reconnects: 0,
            dropped_buffers: 0,
            srt: None,
            stamp: None,
            audio_missing: vec![],
            errors: vec![],
            passed: false,
        }
    }

    #[test]
    fn a_leg_passes_only_when_it_connected_carried_the_programme_on_time_and_never_broke() {
        let at = Some(Utc::now());
        let mut l = leg();
        judge(&mut l, at, None);
        assert!(l.passed, "{l:?}");
        type Spoil<'a> = &'a dyn Fn(&mut LegReport);
        let cases: [(Spoil, &str); 7] = [
            (
                &|l| (l.preflight_ok, l.preflight) = (false, "srt://x: no SRT handshake answer".into()),
                "preflight failed: srt://x",
            ),
            (&|l| l.connected_at = None, "never connected"),
            (&|l| l.first_program_at = None, "no programme picture"),
            (&|l| l.first_program_error_ms = Some(1500.0), "+1500 ms from the plan"),
            (&|l| l.reconnects = 2, "2 reconnect(s)"),
            (&|l| l.dropped_buffers = 7, "7 buffer(s) dropped"),
            (&|l| l.audio_missing = vec!["tgk".into()], "lacked its audio language(s) tgk"),
        ];
        for (spoil, want) in cases {
            let mut l = leg();
            spoil(&mut l);
            judge(&mut l, at, None);
            assert!(!l.passed && l.errors[0].contains(want), "{want}: {:?}", l.errors);
        }
    }

    #[test]
    fn the_verdict_fails_when_any_leg_fails_and_names_them() {
        let mut r = Report::new("rh-1".into(), "ev-1".into(), "op".into(), Plan::default(), Utc::now(), &[]);
        r.program_at = Some(Utc::now());
        r.legs = vec![leg(), LegReport { channel_id: "kg".into(), connected_at: None, ..leg() }];
        conclude(&mut r, None, Utc::now());
        assert!(!r.passed);
        assert_eq!(r.summary, "FAILED: 1 of 2 leg(s) failed: kg");
        assert_eq!(r.phase, Phase::Finished);
        r.legs.truncate(1);
        conclude(&mut r, None, Utc::now());
        assert!(r.passed && r.summary.starts_with("PASSED"), "{}", r.summary);
    }

    #[test]
    fn plans_are_bounded() {
        assert!(Plan::default().check().is_ok());
        assert!(Plan { program: Duration::ZERO, ..Plan::default() }.check().is_err());
        assert!(Plan { program: Duration::from_secs(7200), ..Plan::default() }.check().is_err());
    }
}
