//! What the running relay's status says, each tick, folded into as-run
//! entries and alerts: delayed legs starting, source switches, each leg's
//! first programme picture (its T0 error) and returns to the programme,
//! legs on air, lost or failing, legs not on air before their air time,
//! and ad breaks on each leg; then the visual as-run's pictures.

use super::alerting::cause_of;
use super::asrun::{Actor, Kind, entry, utc_text};
use super::{NOT_ON_AIR_GRACE, State, WaitingPicture, describe_break};
use crate::alerts::Cause;
use crate::legview::Change;
use crate::media::failover::Feed;
use crate::media::leg::LegState;
use crate::relay::Relay;
use crate::schedule;
use crate::schedule::EventState;
use crate::store::AsRunEntry;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tracing::{error, info, warn};

/// How long an as-run entry waits for its picture (the programme's next
/// keyframe, decoded by its thumbnailer).
const PICTURE_WAIT: Duration = Duration::from_secs(10);

impl State {
    pub(super) async fn on_tick(&mut self) -> bool {
        // A follower runs no clock (cluster mode).
        if !self.leads {
            return false;
        }
        self.append_kept();
        let mut changed = self.step_clock().await;
        changed |= self.collect_rehearsal().await;
        changed |= self.fire_schedules();
        // Entries are written once the running event is let go of.
        let mut out: Vec<(AsRunEntry, Option<Cause>)> = Vec::new();
        let now = self.options.clock.now();
        let event = self.running.as_ref().and_then(|r| self.events.get(&r.event_id.0)).cloned();
        let not_on_air_before = schedule::chrono_duration(self.options.alerts.not_on_air_before);
        if let Some(r) = &mut self.running
            && let Some(relay) = &mut r.relay
        {
            let tz_of = |id: &str| r.zones.iter().find(|(z, _)| z == id).map(|(_, tz)| *tz);
            for id in relay.poll() {
                let detail = "airs from the recording at its own local time".to_owned();
                let e = entry(now, &r.event_id.0, &id, tz_of(&id), Kind::LegDelayedStart, detail, &Actor::Daemon);
                out.push((e, None));
            }
            for sw in relay.take_source_switches() {
                let at = DateTime::<Utc>::from_timestamp_nanos(sw.at_utc_ns.min(i64::MAX as u64) as i64);
                let detail = format!("{} -> {}: {}", sw.from.as_str(), sw.to.as_str(), sw.reason);
                if sw.to == Feed::Slate || sw.from == Feed::Primary {
                    warn!(event = %r.event_id, detail = %detail, "Source switched.");
                } else {
                    info!(event = %r.event_id, detail = %detail, "Source switched.");
                }
                let cause = match (sw.to, sw.by_hand) {
                    (Feed::Primary, _) => Cause::PrimaryBack,
                    (Feed::Backup, _) => Cause::OnBackup,
                    (Feed::Slate, true) => Cause::SlateByHand,
                    (Feed::Slate, false) => Cause::OnSlate,
                };
                // The slate before T0 and after the end is the plan, not news.
                let airing = event.as_ref().is_some_and(|e| e.state == EventState::OnAir);
                let e = entry(at, &r.event_id.0, "", None, Kind::SourceSwitched, detail, &Actor::Daemon);
                r.pictures.push(WaitingPicture { entry: e.clone(), at, delay: Duration::ZERO });
                out.push((e, (airing || sw.to != Feed::Slate).then_some(cause)));
            }
            let mut status = relay.status();
            let placement = self.options.placement.as_ref();
            status
                .legs
                .extend(super::placing::remote_legs(&r.event_id.0, &r.remote, placement).into_iter().map(|(_, l)| l));
            let from = relay.cue().program_from;
            for leg in &status.legs {
                let id = &leg.channel_id;
                let delay = r.delays.iter().find(|(c, _)| c == id).map(|(_, d)| *d).unwrap_or_default();
                let due = from.map(|f| f + schedule::chrono_duration(delay));
                let tz = tz_of(id);
                // On air and errors: the observer below says those, with
                // their details; here, the programme's starts.
                for change in r.seen.entry(id.clone()).or_default().fold(leg, now, due) {
                    match change {
                        Change::ProgramAgain(at) => {
                            // Back on programme after the slate (by hand,
                            // a failover to it, a restart): not its T0.
                            let detail = format!("programme pictures again from {}", utc_text(at));
                            info!(leg = %id, detail = %detail, "Leg carries the program again.");
                            let e = entry(at, &r.event_id.0, id, tz, Kind::LegProgramResumed, detail, &Actor::Daemon);
                            out.push((e, None));
                        }
                        Change::FirstProgram { at, error_ms } => {
                            let detail = match (error_ms, due) {
                                (Some(ms), Some(due)) => format!(
                                    "first program picture went out at {}, {ms:+.1} ms from its air time {}",
                                    utc_text(at),
                                    utc_text(due)
                                ),
                                _ => format!("first program picture went out at {}", utc_text(at)),
                            };
                            info!(leg = %id, detail = %detail, "Leg carries the program.");
                            let e = entry(at, &r.event_id.0, id, tz, Kind::LegProgram, detail, &Actor::Daemon);
                            r.pictures.push(WaitingPicture { entry: e.clone(), at, delay });
                            out.push((e, None));
                        }
                        Change::OnAir(_) | Change::Error(_) => {}
                    }
                }
            }
            for c in r.observer.observe(&status) {
                match c.kind {
                    Kind::LegOnAir => info!(leg = %c.channel_id, detail = %c.detail, "Leg on air."),
                    _ => warn!(leg = %c.channel_id, kind = c.kind.as_str(), detail = %c.detail, "Leg trouble."),
                }
                // One alert per spell off air: a leg that cannot reach its
                // partner, or lost it, is not raised again for each new
                // error of its retries.
                let cause = match c.kind {
                    Kind::LegOnAir => {
                        r.off_air_raised.remove(&c.channel_id);
                        None
                    }
                    Kind::LegError => r.off_air_raised.insert(c.channel_id.clone()).then_some(Cause::LegUnreachable),
                    Kind::LegLost => {
                        r.off_air_raised.insert(c.channel_id.clone());
                        Some(Cause::LegLost)
                    }
                    k => cause_of(k),
                };
                let tz = tz_of(&c.channel_id);
                out.push((entry(now, &r.event_id.0, &c.channel_id, tz, c.kind, c.detail, &Actor::Daemon), cause));
            }
            // Legs not on air shortly before their air time (a delayed leg
            // waiting for its own is not late), once per leg and event.
            if let Some(ev) = event.as_ref().filter(|e| matches!(e.state, EventState::Armed | EventState::Held))
                && now - r.armed_at >= chrono::Duration::from_std(NOT_ON_AIR_GRACE).unwrap_or_default()
            {
                for leg in &status.legs {
                    let delay = r.delays.iter().find(|(c, _)| *c == leg.channel_id).map(|(_, d)| *d);
                    let air = ev.on_air + schedule::chrono_duration(delay.unwrap_or_default());
                    let waiting = delay.is_some() && leg.state == LegState::Idle;
                    if leg.state == LegState::OnAir || waiting || now < air - not_on_air_before {
                        continue;
                    }
                    if !r.not_on_air_raised.insert(leg.channel_id.clone()) {
                        continue;
                    }
                    let mins = (air - now).num_seconds().max(0) / 60;
                    let why = leg.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                    let detail = format!("{} {mins} min before its air time{why}", leg.state);
                    warn!(leg = %leg.channel_id, detail = %detail, "Leg not on air before its air time.");
                    let tz = tz_of(&leg.channel_id);
                    let e = entry(now, &r.event_id.0, &leg.channel_id, tz, Kind::LegNotOnAir, detail, &Actor::Daemon);
                    out.push((e, cause_of(Kind::LegNotOnAir)));
                }
            }
            // Each break's start and end on each leg, at the leg's own
            // time (a delayed leg's is its delay later).
            for b in self.breaks.iter().filter(|b| b.event_id == r.event_id) {
                for (channel, tz) in &r.zones {
                    if !b.channel_ids.iter().any(|c| c.as_str() == channel) {
                        continue;
                    }
                    let delay = r.delays.iter().find(|(c, _)| c == channel).map(|(_, d)| *d).unwrap_or_default();
                    let cues = status.legs.iter().find(|l| l.channel_id == *channel).map(|l| l.cues_missed);
                    for (end, kind) in [(false, Kind::BreakStart), (true, Kind::BreakEnd)] {
                        let at = if end { b.end() } else { b.start } + schedule::chrono_duration(delay);
                        if now < at || !r.breaks_logged.insert((b.id.clone(), channel.clone(), end)) {
                            continue;
                        }
                        let mut detail = describe_break(b);
                        if let Some(missed) = cues.filter(|m| *m > 0) {
                            detail = format!("{detail}; {missed} cue(s) on this leg could not be sent in time");
                        }
                        info!(leg = %channel, brk = %b.id, kind = kind.as_str(), "Break.");
                        out.push((entry(at, &r.event_id.0, channel, Some(*tz), kind, detail, &Actor::Daemon), None));
                    }
                }
            }
            // The recording delayed legs air from lost data: said once per
            // minute at most, with how much.
            let lost = relay.recording_lost();
            if lost > r.recording_lost_said
                && r.recording_lost_at.is_none_or(|t| now - t >= chrono::Duration::minutes(1))
            {
                let detail = format!(
                    "{} batch(es) of the programme not recorded ({lost} in all): the disk is too slow or failed; \
                     delayed legs will miss them",
                    lost - r.recording_lost_said
                );
                error!(event = %r.event_id, detail = %detail, "Recording lost data.");
                r.recording_lost_said = lost;
                r.recording_lost_at = Some(now);
                let e = entry(now, &r.event_id.0, "", None, Kind::RecordingLost, detail, &Actor::Daemon);
                out.push((e, cause_of(Kind::RecordingLost)));
            }
        }
        for (e, cause) in out {
            self.record_raising(&e, cause);
        }
        self.tend_placement();
        self.keep_pictures(now);
        changed
    }

    /// The visual as-run: each entry waiting for its picture gets the
    /// first programme picture made at or after its instant, kept in the
    /// store with it; one still without a picture after
    /// [`PICTURE_WAIT`] (no thumbnails, the programme stalled) goes
    /// without.
    ///
    /// A delayed leg airs the recording from T0: its first programme
    /// picture is the live programme's first, `live_start`, kept with the
    /// time the partner got it (its delay later). That is the first live
    /// leg's picture, or, with every leg delayed, the first made after
    /// T0. A daemon started again after T0 has no such picture: a delayed
    /// leg's first picture then goes without.
    pub(super) fn keep_pictures(&mut self, now: DateTime<Utc>) {
        let Some(r) = &mut self.running else { return };
        let thumbs = r.relay.as_ref().and_then(Relay::thumbnails);
        let wait = schedule::chrono_duration(PICTURE_WAIT);
        let delayed = |id: &str| r.delays.iter().any(|(c, d)| c == id && !d.is_zero());
        let all_delayed = !r.zones.is_empty() && r.zones.iter().all(|(id, _)| delayed(id));
        if r.live_start.is_none()
            && all_delayed
            && let Some(from) = r.relay.as_ref().and_then(|x| x.cue().program_from)
            && let Some(first) = thumbs.as_ref().and_then(|t| t.program_at(from))
            && first.at - from < wait
        {
            r.live_start = Some(first);
        }
        let mut kept = Vec::new();
        let live_start = &mut r.live_start;
        r.pictures.retain(|p| {
            let e = &p.entry;
            let found = if p.delay.is_zero() {
                let t = thumbs.as_ref().and_then(|t| t.program_at(p.at));
                if e.kind == Kind::LegProgram.as_str() && live_start.is_none() {
                    live_start.clone_from(&t);
                }
                t.map(|t| (t.at, t.jpeg))
            } else {
                live_start.as_ref().map(|t| (t.at + schedule::chrono_duration(p.delay), Arc::clone(&t.jpeg)))
            };
            if let Some((taken, jpeg)) = found {
                kept.push((e.clone(), utc_text(taken), jpeg));
                return false;
            }
            now - p.at < wait
        });
        for (e, taken, jpeg) in kept {
            // A picture that cannot be kept is only a picture: the turn's
            // other writes go on.
            self.write(format!("the picture of as-run entry {}", e.kind), move |s| {
                if let Err(err) = s.insert_asrun_picture(&e, &taken, &jpeg) {
                    warn!(kind = %e.kind, error = %err, "The picture of an as-run entry could not be kept.");
                }
                Ok(())
            });
        }
    }
}
