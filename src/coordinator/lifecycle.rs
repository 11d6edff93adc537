//! The running event's relay: started off the coordinator's loop from the
//! event's enabled channels (a leg that cannot carry the programme is
//! skipped with the reason, a delayed leg given its recording), the media
//! side answering when its pipelines are up; and stopped off the loop (the
//! abort's emergency slate first), its legs' totals logged and its
//! recording removed once it has.

use super::asrun::{Actor, Kind, entry};
use super::{CoordError, LegObserver, Reply, Running, State};
use crate::config::{Channel, Ingest};
use crate::legview::LegSeen;
use crate::media::failover::SourceChoice;
use crate::media::program::Cue;
use crate::media::recording::RecordingPlan;
use crate::relay::{DelayPlan, Relay, RelayPlan};
use crate::schedule::{Action, Event, EventId};
use crate::{config, schedule};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, warn};

impl State {
    /// Prepares the relay of `event` and has it started off the loop:
    /// `Ok(true)` when its pipelines are being built (the loop goes on
    /// deciding; [`State::relay_started`] does `then` when the media side
    /// answers), `Ok(false)` when the event's relay runs already, or events
    /// run without pipelines (`then` is the caller's to do, now).
    pub(super) async fn start_relay(&mut self, event: &Event, then: Then) -> Result<bool, CoordError> {
        if self.running.as_ref().is_some_and(|r| r.event_id == event.id) {
            return Ok(false);
        }
        if let Some(problem) = &self.options.media_problem {
            return Err(CoordError::Relay(format!("the relay cannot run: {problem}")));
        }
        // The event's legs go to the same ingests: the event wins.
        self.stop_rehearsal(&format!("event {} went live", event.id)).await;
        let mut channels = Vec::new();
        for id in &event.channel_ids {
            let skipped = match self.channel(id) {
                Some(c) if c.enabled => match self.options.refuses(&c) {
                    // The clock arms without an operator: the other legs go
                    // on air, this one is skipped with the reason.
                    Some(why) => {
                        warn!(leg = %c.id, why = %why, "Leg skipped: it cannot carry the programme.");
                        why
                    }
                    None => {
                        channels.push(c);
                        continue;
                    }
                },
                Some(_) => "channel disabled".into(),
                None => "channel deleted".into(),
            };
            let now = self.options.clock.now();
            let e = entry(now, &event.id.0, id.as_str(), None, Kind::LegSkipped, skipped, &Actor::Daemon);
            self.record(&e, Kind::LegSkipped);
        }
        // Each channel's leg, then its backup's (refused with it, above).
        let channels = config::legs_of(&channels);
        let delays: Vec<(String, Duration)> = channels
            .iter()
            .filter_map(|c| schedule::air_time(event.on_air, c).ok().map(|a| (c.id.to_string(), a.delay)))
            .filter(|(_, d)| !d.is_zero())
            .collect();
        // What this event's log says already (before a restart): only the
        // kinds the loop keeps track of, not a long log whole.
        let kinds = [Kind::LegProgram, Kind::LegNotOnAir, Kind::BreakStart, Kind::BreakEnd].map(Kind::as_str);
        // Read after every write asked for (this turn's too).
        self.flush();
        let event_id = event.id.0.clone();
        let logged = self.writer.call(move |s| s.asrun_kinds(&event_id, &kinds)).await.ok_or(CoordError::Stopped)??;
        let mut starting = Starting {
            event_id: event.id.clone(),
            plan: None,
            running: self.running_for(event, &channels, delays.clone(), logged),
            then,
        };
        if !self.options.relay_enabled {
            self.keep_running(starting.running, None);
            return Ok(false);
        }
        let channels = self.place_legs(&event.id.0, channels, &delays, &mut starting.running.remote);
        let relay_plan = self.relay_plan(&event.title, channels);
        let delay = (!delays.is_empty()).then(|| DelayPlan {
            recording: RecordingPlan {
                dir: self.recording_dir(&event.id),
                retention: self.options.retention,
                max_bytes: self.options.recording_max_bytes,
            },
            t0_utc: event.on_air,
            delays,
        });
        starting.plan = Some((relay_plan, delay));
        self.starting = Some(starting);
        self.launch_start();
        Ok(true)
    }

    /// Starts building the pipelines of the relay waiting to start, in a
    /// task of their own, once the last event's relay is gone (its
    /// pipelines may hold the same ports: a contribution listener). The
    /// task answers on the loop's started channel.
    pub(super) fn launch_start(&mut self) {
        if self.stopping.is_some() {
            return; // Launched when it has stopped.
        }
        let Some(s) = self.starting.as_mut() else { return };
        let Some((plan, delay)) = s.plan.take() else { return };
        let (tx, event_id) = (self.started_tx.clone(), s.event_id.clone());
        tokio::spawn(async move {
            // Slate until the state the event enters sets the cue.
            let relay = Relay::start_with(&plan, Cue::default(), delay).await.map_err(|e| e.to_string());
            let _ = tx.send(Started { event_id, relay });
        });
    }

    /// The media side's answer to a start: the relay runs (and what waited
    /// for it is done), or the start failed (and whoever waited is told).
    pub(super) async fn relay_started(&mut self, started: Started) {
        let Some(s) = self.starting.take_if(|s| s.event_id == started.event_id) else {
            // Nobody waits for it any more.
            started.stop().await;
            return;
        };
        let result = match started.relay {
            Ok(relay) => {
                self.keep_running(s.running, Some(relay));
                Ok(())
            }
            Err(e) => Err(CoordError::Relay(format!("the relay could not start: {e}"))),
        };
        let id = s.event_id;
        match s.then {
            Then::Resume => self.resumed(&id, result),
            Then::Apply { action, actor, why, reply } => {
                let r = match result {
                    Ok(()) => self.finish_apply(&id, action, &actor, why).await,
                    Err(e) => Err(e),
                };
                let still_runs = self.running.as_ref().is_some_and(|x| x.event_id == id);
                if r.is_err() && still_runs && !self.events.get(&id.0).is_some_and(|e| e.state.is_live()) {
                    self.stop_relay(Kind::LegsClosed, "the event did not change").await;
                }
                if actor == Actor::Scheduler {
                    self.clock_moved(&id, action, r.as_ref().map(|_| ()).map_err(ToString::to_string));
                }
                match reply {
                    Some(reply) => self.answer_change(reply, r),
                    None if r.is_ok() => self.changed(),
                    None => {}
                }
            }
        }
    }

    /// Makes `running` the running event's, with its relay, and gives its
    /// legs their ad breaks.
    fn keep_running(&mut self, mut running: Running, relay: Option<Relay>) {
        running.relay = relay;
        running.armed_at = self.options.clock.now();
        self.running = Some(running);
        self.push_breaks();
    }

    /// What the loop keeps about `event`'s relay, before it has one.
    fn running_for(
        &self,
        event: &Event,
        channels: &[Channel],
        delays: Vec<(String, Duration)>,
        logged: Vec<crate::store::AsRunEntry>,
    ) -> Running {
        let legs_with =
            |kind: Kind| logged.iter().filter(move |e| e.kind == kind.as_str()).map(|e| e.channel_id.clone());
        Running {
            event_id: event.id.clone(),
            relay: None,
            zones: channels.iter().map(|c| (c.id.to_string(), c.timezone)).collect(),
            labels: channels.iter().map(|c| (c.id.to_string(), (c.name.clone(), c.country.clone()))).collect(),
            pictures: Vec::new(),
            live_start: None,
            observer: LegObserver::default(),
            choice: SourceChoice::Auto,
            delays,
            seen: legs_with(Kind::LegProgram).map(|id| (id, LegSeen::after_restart())).collect(),
            armed_at: self.options.clock.now(),
            not_on_air_raised: legs_with(Kind::LegNotOnAir).collect(),
            off_air_raised: Default::default(),
            breaks_logged: logged
                .iter()
                .filter(|e| e.kind == Kind::BreakStart.as_str() || e.kind == Kind::BreakEnd.as_str())
                .filter_map(|e| {
                    let id = e.detail.split(':').next()?.to_owned();
                    Some((id, e.channel_id.clone(), e.kind == Kind::BreakEnd.as_str()))
                })
                .collect(),
            recording_lost_said: 0,
            recording_lost_at: None,
            remote: BTreeMap::new(),
        }
    }

    /// The relay plan of `channels` from the daemon's options.
    pub(super) fn relay_plan(&self, title: &str, channels: Vec<Channel>) -> RelayPlan {
        // File legs write inside the file-leg directory, and nowhere else.
        let channels = channels
            .into_iter()
            .filter_map(|mut c| {
                if let Ingest::File(p) = &mut c.ingest {
                    match config::confine_file_leg(p, &self.options.file_legs) {
                        Ok(full) => {
                            if let Some(parent) = full.parent()
                                && let Err(e) = std::fs::create_dir_all(parent)
                            {
                                warn!(leg = %c.id, dir = %parent.display(), error = %e, "Cannot create a file leg's directory.");
                            }
                            *p = full;
                        }
                        Err(why) => {
                            warn!(leg = %c.id, why = %why, "File leg left out.");
                            return None;
                        }
                    }
                }
                Some(c)
            })
            .collect();
        // The daemon serves the multiviewer page.
        RelayPlan { thumbnails: true, ..self.options.relay_plan(title, channels) }
    }

    pub(super) fn recording_dir(&self, id: &EventId) -> PathBuf {
        self.options.recordings.join(&id.0)
    }

    /// Stops the running relay and waits for it, logging each leg's totals.
    pub(super) async fn stop_relay(&mut self, kind: Kind, why: &str) {
        self.begin_stop(kind, why, false, None);
        self.finish_stop().await;
    }

    /// Starts stopping the running relay off the loop: with `slate`, the
    /// emergency slate goes out on every leg for [`ABORT_SLATE`] first;
    /// then every pipeline goes to Null. [`State::finish_stop`] writes the
    /// legs' totals and removes `recording` once that is done; the loop
    /// goes on deciding meanwhile.
    pub(super) fn begin_stop(&mut self, kind: Kind, why: &str, slate: bool, recording: Option<PathBuf>) {
        let Some(r) = self.running.take() else { return };
        let Some(relay) = r.relay else { return };
        if slate {
            relay.set_cue(Cue { force_slate: true, ..relay.cue() });
        }
        let done = Arc::clone(&self.stopped);
        let task = tokio::spawn(async move {
            if slate {
                tokio::time::sleep(ABORT_SLATE).await;
            }
            let status = relay.shutdown().await;
            // The event's pipelines are freed: their pages go back too
            // (malloc_trim walks the heap: milliseconds, off the loop).
            let _ = tokio::task::spawn_blocking(crate::media::trim_heap).await;
            done.notify_one();
            status
        });
        self.stopping =
            Some(Stopping { event_id: r.event_id, zones: r.zones, kind, why: why.to_owned(), recording, task });
    }

    /// Waits for a relay stopping, if one is, then logs each leg's totals
    /// and removes its recording (off the loop).
    pub(super) async fn finish_stop(&mut self) {
        let Some(s) = self.stopping.take() else { return };
        let status = match s.task.await {
            Ok(status) => status,
            Err(e) => {
                error!(event = %s.event_id, error = %e, "The relay's stop failed.");
                return;
            }
        };
        let now = self.options.clock.now();
        let totals: Vec<_> = status
            .legs
            .iter()
            .map(|leg| {
                let tz = s.zones.iter().find(|(id, _)| *id == leg.channel_id).map(|(_, tz)| *tz);
                let detail = format!(
                    "{}; {} bytes sent, {} reconnect(s), {} dropped buffer(s)",
                    s.why, leg.bytes_sent, leg.reconnects, leg.dropped_buffers
                );
                entry(now, &s.event_id.0, &leg.channel_id, tz, s.kind, detail, &Actor::Daemon)
            })
            .collect();
        // One commit for every leg (they raise no alert).
        self.write(format!("the totals of {} leg(s) of event {}", totals.len(), s.event_id), move |store| {
            store.append_asrun_all(&totals)
        });
        if let Some(dir) = s.recording {
            tokio::task::spawn_blocking(move || {
                if dir.exists()
                    && let Err(e) = std::fs::remove_dir_all(&dir)
                {
                    warn!(dir = %dir.display(), error = %e, "Cannot remove the event's recording.");
                }
            });
        }
    }
}

/// A relay being stopped off the coordinator's loop (see
/// [`State::begin_stop`]).
pub(super) struct Stopping {
    event_id: EventId,
    zones: Vec<(String, Tz)>,
    kind: Kind,
    why: String,
    recording: Option<PathBuf>,
    task: tokio::task::JoinHandle<crate::relay::RelayStatus>,
}

/// What the loop does once an event's relay has started off it.
pub(super) enum Then {
    /// Finish the transition that needed the relay (an operator's action
    /// or the clock's), answering the operator if one waits.
    Apply { action: Action, actor: Actor, why: String, reply: Option<Reply<Event>> },
    /// An event found live at start: its legs are back.
    Resume,
}

/// An event's relay being started off the loop (see [`State::start_relay`]).
pub(super) struct Starting {
    pub(super) event_id: EventId,
    /// What the task builds the relay from; taken when it is launched.
    plan: Option<(RelayPlan, Option<DelayPlan>)>,
    /// What the loop keeps once it runs.
    running: Running,
    pub(super) then: Then,
}

impl Starting {
    /// Whether its pipelines are being built (rather than waiting for the
    /// last relay to be gone).
    pub(super) fn launched(&self) -> bool {
        self.plan.is_none()
    }
}

/// The media side's answer to a start.
pub(super) struct Started {
    event_id: EventId,
    relay: Result<Relay, String>,
}

impl Started {
    /// Stops the relay it brings, if it brings one (nobody waits for it).
    pub(super) async fn stop(self) {
        if let Ok(relay) = self.relay {
            relay.shutdown().await;
        }
    }
}

/// How long the emergency slate goes out after an abort, before the legs close.
pub const ABORT_SLATE: Duration = Duration::from_secs(1);
