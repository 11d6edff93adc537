//! The coordinator's side of rehearsals: the rules for starting one, the
//! task that runs it, its reports in the store and the as-run log, and
//! recurring rehearsals fired by the clock.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::asrun::{Actor, Kind, entry, utc_text};
use super::{CoordError, Reply, State};
use crate::config;
use crate::rehearsal::recurring::{self, Recurring};
use crate::rehearsal::{self, Phase, Plan, Report};
use crate::schedule::EventId;

/// Time allowed for preflight when checking a rehearsal fits before an event.
const PREFLIGHT_ALLOWANCE: chrono::Duration = chrono::Duration::seconds(30);

/// The rehearsal that runs.
pub(super) struct Active {
    /// The task's progress: it writes the report, the loop reads the latest.
    pub(super) report: watch::Receiver<Report>,
    stop: watch::Sender<Option<String>>,
    task: tokio::task::JoinHandle<Report>,
}

/// A request for a recurring rehearsal.
#[derive(Debug, Clone)]
pub struct NewRecurring {
    /// The event.
    pub event_id: EventId,
    /// `HH:MM` local time.
    pub local_time: String,
    /// IANA zone.
    pub timezone: String,
    /// Last local date, `YYYY-MM-DD`.
    pub until: String,
    /// Each run's timeline.
    pub plan: Plan,
}

fn new_id(prefix: &str) -> String {
    let mut b = [0u8; 6];
    if getrandom::fill(&mut b).is_err() {
        b = fastrand::u64(..).to_le_bytes()[..6].try_into().unwrap_or_default();
    }
    format!("{prefix}-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

impl State {
    /// Starts a rehearsal of `event_id` now, or says why not.
    pub(super) fn start_rehearsal(&mut self, id: &EventId, plan: Plan, actor: &Actor) -> Result<Report, CoordError> {
        plan.check().map_err(|e| CoordError::Invalid(vec![e]))?;
        let event = self.get(id)?;
        if event.state.is_final() {
            return Err(CoordError::FailedPrecondition(format!(
                "event {id} is {}: there is nothing left to rehearse",
                event.state
            )));
        }
        if let Some(live) = self.events.values().find(|e| e.state.is_live()) {
            return Err(CoordError::FailedPrecondition(format!(
                "event {} is {}: a rehearsal never runs while an event is live",
                live.id, live.state
            )));
        }
        if let Some(a) = &self.rehearsal {
            let r = a.report.borrow();
            return Err(CoordError::FailedPrecondition(format!(
                "rehearsal {} of event {} is still running",
                r.id, r.event_id
            )));
        }
        let now = self.options.clock.now();
        let ends = now + crate::schedule::chrono_duration(plan.length()) + PREFLIGHT_ALLOWANCE;
        if let Some(next) = self
            .events
            .values()
            .filter(|e| !e.state.is_final())
            .find(|e| e.on_air - crate::schedule::chrono_duration(e.preroll) < ends)
        {
            return Err(CoordError::FailedPrecondition(format!(
                "event {} arms at {}, before this rehearsal would end ({})",
                next.id,
                utc_text(next.on_air - crate::schedule::chrono_duration(next.preroll)),
                utc_text(ends)
            )));
        }
        if let Some(problem) = &self.options.media_problem {
            return Err(CoordError::FailedPrecondition(format!("the relay cannot run here: {problem}")));
        }
        let mut channels = Vec::new();
        for cid in &event.channel_ids {
            if let Some(c) = self.channel(cid).filter(|c| c.enabled) {
                channels.push(c);
            }
        }
        // A backup ingest is rehearsed as its own leg, as it airs.
        let channels = crate::config::legs_of(&channels);
        let report = Report::new(new_id("rh"), id.0.clone(), actor.name().to_owned(), plan, now, &channels);
        self.save_rehearsal(&report);
        let detail = format!(
            "{}: pre-roll {}, programme {}, post-roll {}, {} source, {} leg(s){}",
            report.id,
            config::uri::format_duration(plan.preroll),
            config::uri::format_duration(plan.program),
            config::uri::format_duration(plan.postroll),
            plan.source.as_str(),
            channels.len(),
            if plan.stamp { ", each stamped with its channel name" } else { "" }
        );
        self.log(&id.0, Kind::RehearsalStarted, detail, actor);
        info!(rehearsal = %report.id, event = %id, actor = actor.name(), "Rehearsal started.");
        let setup = rehearsal::Setup {
            title: event.title.clone(),
            base: self.relay_plan(&event.title, channels.clone()),
            channels,
            media: self.options.relay_enabled,
        };
        let (progress, progress_rx) = watch::channel(report.clone());
        let (stop, stop_rx) = watch::channel(None);
        let task = tokio::spawn(rehearsal::run(setup, progress, stop_rx));
        self.rehearsal = Some(Active { report: progress_rx, stop, task });
        Ok(report)
    }

    /// The rehearsal that runs, as it is now.
    pub(super) fn active_rehearsal(&self) -> Option<Report> {
        self.rehearsal.as_ref().map(|a| a.report.borrow().clone())
    }

    /// Answers with a report: the running one from memory, others read
    /// from the store after every write asked for (a report just saved
    /// included), in the store's writer.
    pub(super) fn rehearsal_report(&self, id: String, reply: Reply<Report>) {
        if let Some(r) = self.active_rehearsal().filter(|r| r.id == id) {
            self.answer(reply, Ok(r));
            return;
        }
        self.flush();
        self.writer.run(move |s| {
            let found = s.rehearsals(None).map_err(CoordError::from).and_then(|all| {
                all.into_iter()
                    .find(|r| r.id == id)
                    .ok_or_else(|| CoordError::NotFound(format!("no rehearsal {}", crate::config::quote(&id))))
            });
            let _ = reply.send(found);
        });
    }

    /// Answers with the reports of one event (or all), oldest first; the
    /// running one current (see [`State::rehearsal_report`]).
    pub(super) fn rehearsal_reports(&self, event_id: Option<String>, reply: Reply<Vec<Report>>) {
        let active = self.active_rehearsal();
        self.flush();
        self.writer.run(move |s| {
            let all = s.rehearsals(event_id.as_deref()).map_err(CoordError::from).map(|all| {
                all.into_iter()
                    .map(|r| match &active {
                        Some(a) if a.id == r.id => a.clone(),
                        _ => r,
                    })
                    .collect()
            });
            let _ = reply.send(all);
        });
    }

    /// Asks for `report` to be stored.
    pub(super) fn save_rehearsal(&self, report: &Report) {
        let stored = report.clone();
        self.write(format!("rehearsal report {}", report.id), move |s| s.save_rehearsal(&stored));
    }

    /// Collects a finished rehearsal: stores its report and writes the
    /// as-run entries. Returns whether one finished.
    pub(super) async fn collect_rehearsal(&mut self) -> bool {
        if !self.rehearsal.as_ref().is_some_and(|a| a.task.is_finished()) {
            return false;
        }
        let Some(active) = self.rehearsal.take() else { return false };
        let report = match active.task.await {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "The rehearsal task failed.");
                let mut r = active.report.borrow().clone();
                rehearsal::conclude(&mut r, Some("the rehearsal task failed"), Utc::now());
                r
            }
        };
        self.record_rehearsal(&report);
        true
    }

    fn record_rehearsal(&mut self, report: &Report) {
        self.save_rehearsal(report);
        let at = report.finished_at.unwrap_or_else(|| self.options.clock.now());
        for leg in &report.legs {
            let id = config::ChannelId::parse(&leg.channel_id).ok();
            let tz = id.and_then(|id| self.channel(&id)).map(|c| c.timezone);
            let verdict = if leg.passed { "PASSED".to_owned() } else { format!("FAILED: {}", leg.errors.join("; ")) };
            let stamp = leg.stamp.as_ref().map(|s| format!("; stamped: {s}")).unwrap_or_default();
            let detail = format!("{}: {verdict}; {} bytes sent{stamp}", report.id, leg.bytes_sent);
            let e = entry(at, &report.event_id, &leg.channel_id, tz, Kind::RehearsalLeg, detail, &Actor::Daemon);
            self.record(&e, Kind::RehearsalLeg);
        }
        let e = entry(
            at,
            &report.event_id,
            "",
            None,
            Kind::RehearsalFinished,
            format!("{}: {}", report.id, report.summary),
            &Actor::Daemon,
        );
        self.record_raising(&e, (!report.passed).then_some(crate::alerts::Cause::RehearsalFailed));
        self.note_verdict(report);
    }

    /// The latest finished report of each event, for metrics, read from
    /// the store at start.
    pub(super) async fn load_verdicts(&mut self) {
        match self.writer.call(|s| s.rehearsals(None)).await {
            Some(Ok(all)) => {
                for r in all.iter().filter(|r| r.phase == Phase::Finished) {
                    self.note_verdict(r);
                }
            }
            Some(Err(e)) => error!(error = %e, "Cannot read rehearsal reports."),
            None => {}
        }
    }

    /// `report`, finished, is its event's latest verdict.
    fn note_verdict(&mut self, report: &Report) {
        if report.phase != Phase::Finished {
            return;
        }
        let verdicts = Arc::make_mut(&mut self.verdicts);
        verdicts.retain(|r| r.event_id != report.event_id);
        verdicts.push(report.clone());
        verdicts.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    }

    /// Stops a running rehearsal (an event arms, the daemon stops) and
    /// records it.
    pub(super) async fn stop_rehearsal(&mut self, why: &str) {
        let Some(active) = self.rehearsal.take() else { return };
        warn!(why, "Stopping the rehearsal.");
        let _ = active.stop.send(Some(why.to_owned()));
        let report = match active.task.await {
            Ok(r) => r,
            Err(_) => {
                let mut r = active.report.borrow().clone();
                rehearsal::conclude(&mut r, Some(why), Utc::now());
                r
            }
        };
        self.record_rehearsal(&report);
    }

    /// Sets a recurring rehearsal.
    pub(super) fn schedule_rehearsal(&mut self, new: NewRecurring, actor: &Actor) -> Result<Recurring, CoordError> {
        new.plan.check().map_err(|e| CoordError::Invalid(vec![e]))?;
        let event = self.get(&new.event_id)?;
        if event.state.is_final() {
            return Err(CoordError::FailedPrecondition(format!("event {} is {}", event.id, event.state)));
        }
        let now = self.options.clock.now();
        let (tz, at, until) =
            recurring::when(&new.timezone, &new.local_time, &new.until, now).map_err(CoordError::Invalid)?;
        let rec = Recurring {
            id: new_id("rs"),
            event_id: event.id.0.clone(),
            at,
            timezone: tz.name().to_owned(),
            until,
            plan: new.plan,
            created_by: actor.name().to_owned(),
            created_at: now,
            last_fired: None,
        };
        let stored = rec.clone();
        self.write(format!("recurring rehearsal {}", rec.id), move |s| s.save_schedule(&stored));
        let detail = format!("{}: every day at {} {} until {}", rec.id, at.format("%H:%M"), rec.timezone, until);
        self.log(&event.id.0, Kind::RehearsalScheduled, detail, actor);
        self.schedules.push(rec.clone());
        Ok(rec)
    }

    /// Deletes a recurring rehearsal.
    pub(super) fn delete_schedule(&mut self, id: &str, actor: &Actor) -> Result<(), CoordError> {
        let Some(rec) = self.schedules.iter().find(|s| s.id == id).cloned() else {
            return Err(CoordError::NotFound(format!("no recurring rehearsal {}", crate::config::quote(id))));
        };
        let gone = id.to_owned();
        self.write(format!("recurring rehearsal {id} deleted"), move |s| {
            super::writes::done_or_conflict(s.delete_schedule(&gone)?, || {
                format!("recurring rehearsal {gone} is not stored")
            })
        });
        self.schedules.retain(|s| s.id != id);
        self.log(&rec.event_id, Kind::RehearsalUnscheduled, rec.id.clone(), actor);
        Ok(())
    }

    /// Fires the recurring rehearsals that are due; returns whether any did.
    pub(super) fn fire_schedules(&mut self) -> bool {
        let now = self.options.clock.now();
        let mut fired = false;
        for i in 0..self.schedules.len() {
            let Some(due) = self.schedules[i].next() else { continue };
            if due > now {
                continue;
            }
            let rec = self.schedules[i].clone();
            let outcome = if now - due > recurring::LATE_LIMIT {
                Err(format!("missed: the daemon was not running at {}", utc_text(due)))
            } else {
                let actor = Actor::Schedule(format!("schedule {}", rec.id));
                self.start_rehearsal(&EventId(rec.event_id.clone()), rec.plan, &actor)
                    .map(|r| r.id)
                    .map_err(|e| e.to_string())
            };
            match outcome {
                Ok(id) => info!(schedule = %rec.id, rehearsal = %id, "Recurring rehearsal fired."),
                Err(why) => {
                    warn!(schedule = %rec.id, why = %why, "Recurring rehearsal skipped.");
                    self.log(&rec.event_id, Kind::RehearsalSkipped, format!("{}: {why}", rec.id), &Actor::Daemon);
                }
            }
            self.schedules[i].last_fired = Some(due);
            let stored = self.schedules[i].clone();
            self.write(format!("the last run of recurring rehearsal {}", stored.id), move |s| {
                if let Err(e) = s.save_schedule(&stored) {
                    // Fired again at the next start, as late as it is then.
                    error!(error = %e, "Cannot store a recurring rehearsal's last run.");
                }
                Ok(())
            });
            fired = true;
        }
        fired
    }
}
