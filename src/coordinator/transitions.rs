//! Event transitions as master control and the clock make them: each
//! checked against the event's state (`schedule::transition`), the relay
//! started on the way into a live state and stopped on the way out, the
//! cue set from the new state, and the as-run entry written; Extend and
//! the source choice beside them.

use super::invalid;

use super::asrun::{Actor, Kind, entry, utc_text};
use super::lifecycle::Then;
use super::{CoordError, State};
use crate::media::failover::SourceChoice;
use crate::media::program::Cue;
use crate::schedule;
use crate::schedule::{Action, Event, EventId, EventState};
use chrono::{DateTime, Utc};
use tracing::{error, info};

/// What [`State::apply`] came to.
pub(super) enum Applied {
    /// The event is in its new state.
    Done(Event),
    /// Its relay is being started off the loop; the action is finished,
    /// and its answer given, when the relay runs.
    Starting,
}

impl State {
    /// Applies `action`; starts the relay on entering a live state and stops
    /// it on leaving one. A relay to start is built off the loop: the
    /// action is then [`Applied::Starting`], finished (and whoever waits
    /// answered) when the media side says the relay runs.
    pub(super) async fn apply(
        &mut self,
        id: &EventId,
        action: Action,
        actor: &Actor,
        why: String,
    ) -> Result<Applied, CoordError> {
        if self.starting.as_ref().is_some_and(|s| s.event_id == *id) {
            return Err(CoordError::FailedPrecondition(format!(
                "event {id}: its relay is starting; try again when it has (a moment)"
            )));
        }
        let event = self.get(id)?;
        let next = schedule::transition(event.state, action)
            .map_err(|m| CoordError::FailedPrecondition(format!("event {id}: {m}")))?;
        if next.is_live() && !event.state.is_live() {
            if let Some(other) = self.events.values().find(|e| e.state.is_live() && e.id != *id) {
                return Err(CoordError::FailedPrecondition(format!(
                    "event {} (\"{}\") is {}: one event runs at a time",
                    other.id, other.title, other.state
                )));
            }
            if let Some(other) = &self.starting {
                return Err(CoordError::FailedPrecondition(format!(
                    "event {}'s relay is starting: one event runs at a time",
                    other.event_id
                )));
            }
            if action == Action::Arm && actor.is_person() {
                // Channels may have changed since the event was scheduled.
                let refused: Vec<String> = event
                    .channel_ids
                    .iter()
                    .filter_map(|c| self.channel(c))
                    .filter(|c| c.enabled)
                    .filter_map(|c| self.options.refuses(&c))
                    .collect();
                if !refused.is_empty() {
                    return Err(CoordError::FailedPrecondition(format!("event {id}: {}", refused.join("; "))));
                }
            }
            let then = Then::Apply { action, actor: actor.clone(), why: why.clone(), reply: None };
            if self.start_relay(&event, then).await? {
                return Ok(Applied::Starting);
            }
        }
        self.finish_apply(id, action, actor, why).await.map(Applied::Done)
    }

    /// The rest of [`State::apply`], once the relay it needed runs: the
    /// new state saved with its as-run entry, the cue set, and the relay
    /// stopped on leaving a live state.
    pub(super) async fn finish_apply(
        &mut self,
        id: &EventId,
        action: Action,
        actor: &Actor,
        why: String,
    ) -> Result<Event, CoordError> {
        let mut event = self.get(id)?;
        let next = schedule::transition(event.state, action)
            .map_err(|m| CoordError::FailedPrecondition(format!("event {id}: {m}")))?;
        let now = self.options.clock.now();
        match action {
            Action::End if actor.is_person() && now < event.end() => event.ended = Some(now),
            Action::Abort => event.ended = Some(now),
            _ => {}
        }
        let from = event.state;
        event.state = next;
        let mut detail = format!("{from} -> {next}");
        if !why.is_empty() {
            detail = format!("{detail}: {why}");
        }
        // Should the write fail, the store is read back and a relay started
        // here stops (`State::store_failed`).
        let event =
            self.save(event, entry(self.options.clock.now(), &id.0, "", None, Kind::entering(next), detail, actor));
        info!(event = %id, from = %from, to = %next, actor = actor.name(), "Event state changed.");
        self.update_cue(&event);
        // Only this event's own relay stops: cancelling another, scheduled
        // event stopped the live one's (and waited out an earlier abort's
        // emergency slate).
        let runs_here = self.running.as_ref().is_some_and(|r| r.event_id == *id);
        if !next.is_live() && runs_here {
            let aborted = next == EventState::Aborted;
            let kind = if aborted { Kind::LegsAborted } else { Kind::LegsClosed };
            let recording = next.is_final().then(|| self.recording_dir(id));
            // Off the loop (an abort's emergency slate first): the legs'
            // totals are logged (`legs-closed`, `legs-aborted`) once their
            // pipelines are down. A leg that cannot close at once (a
            // partner that never answered) holds up nobody.
            self.begin_stop(kind, &format!("event {next}"), aborted, recording);
        }
        Ok(event)
    }

    pub(super) fn extend(
        &mut self,
        id: &EventId,
        by: Option<chrono::Duration>,
        actor: &Actor,
    ) -> Result<Event, CoordError> {
        let mut event = self.get(id)?;
        schedule::transition(event.state, Action::Extend)
            .map_err(|m| CoordError::FailedPrecondition(format!("event {id}: {m}")))?;
        let by = by.ok_or_else(|| invalid("by", "missing: how far to move the end"))?;
        if by.is_zero() {
            return Err(invalid("by", "zero moves nothing"));
        }
        let new_duration = schedule::chrono_duration(event.duration) + by;
        let new_end = event.on_air + new_duration;
        if new_duration <= chrono::Duration::zero() || new_end <= self.options.clock.now() {
            return Err(invalid(
                "by",
                format!("the end would move to {}, which is past or before T0", utc_text(new_end)),
            ));
        }
        if new_duration > chrono::Duration::days(7) {
            return Err(invalid("by", "the event would last more than 7 days"));
        }
        let new_std = new_duration.to_std().unwrap_or_default();
        if let Some(mut e) =
            schedule::request::outside_wire_range(event.on_air, event.preroll, new_std, event.max_delay, event.postroll)
        {
            e.key = "by".into();
            return Err(CoordError::Invalid(vec![e]));
        }
        let old_end = event.end();
        event.duration = new_std;
        let detail = format!("end moved from {} to {}", utc_text(old_end), utc_text(event.end()));
        let event = self.save(event, entry(self.options.clock.now(), &id.0, "", None, Kind::Extended, detail, actor));
        self.update_cue(&event);
        Ok(event)
    }

    pub(super) fn switch_source(
        &mut self,
        id: &EventId,
        choice: SourceChoice,
        actor: &Actor,
    ) -> Result<Event, CoordError> {
        let event = self.get(id)?;
        let Some(running) = self.running.as_mut().filter(|r| r.event_id == *id) else {
            return Err(CoordError::FailedPrecondition(format!(
                "event {id} is {}: the source can be switched only while its legs run",
                event.state
            )));
        };
        if choice == SourceChoice::Backup && self.options.backup.is_none() {
            return Err(CoordError::FailedPrecondition(
                "no backup source is configured for this daemon ([backup] in its config)".into(),
            ));
        }
        let from = running.choice;
        running.choice = choice;
        if let Some(relay) = &running.relay {
            relay.set_source_choice(choice);
        }
        // The request; the switch itself is logged as `source-switched`
        // when the program's picture changes.
        let detail = format!("source {} -> {} (by hand)", from.as_str(), choice.as_str());
        self.log(&id.0, Kind::SourceSelected, detail, actor);
        self.update_cue(&event);
        Ok(event)
    }

    /// Moves every event the clock has made due; returns whether any moved.
    pub(super) async fn step_clock(&mut self) -> bool {
        let mut changed = false;
        // A daemon started late may apply several steps to one event.
        for _ in 0..8 {
            let now = self.options.clock.now();
            let due: Vec<(EventId, Action)> =
                self.events.values().filter_map(|e| e.due(now).map(|a| (e.id.clone(), a))).collect();
            if due.is_empty() {
                break;
            }
            let mut moved = false;
            for (id, action) in due {
                if self.starting.as_ref().is_some_and(|s| s.event_id == id) {
                    continue; // Its relay is starting; the step is taken when it has.
                }
                let other_runs = self.events.values().any(|e| e.state.is_live() && e.id != id);
                if action == Action::Arm && (other_runs || self.starting.is_some()) {
                    continue; // Another event runs; this one waits for an operator.
                }
                let Some(event) = self.events.get(&id.0) else { continue };
                let (why, due_at) = match action {
                    Action::Arm => ("T0 - preroll reached", event.arm_at()),
                    Action::Take => ("T0 reached", event.on_air),
                    Action::End => ("end reached", event.end()),
                    _ => ("post-roll over", event.finish_at()),
                };
                // A step taken late (the store refused it until now: etcd
                // away in cluster mode; the daemon down) says when it was
                // due: the legs' cue switched then if a relay ran. Not an
                // arm: an event scheduled inside its preroll arms at once.
                let late = now - due_at;
                let why = if late > chrono::Duration::seconds(1) && action != Action::Arm {
                    format!(
                        "{why} (due {}, written {:.1} s late)",
                        due_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        late.num_milliseconds() as f64 / 1e3
                    )
                } else {
                    why.to_owned()
                };
                match self.apply(&id, action, &Actor::Scheduler, why).await {
                    Ok(Applied::Done(_)) => {
                        moved = true;
                        self.clock_moved(&id, action, Ok(()));
                    }
                    // Finished when the relay runs.
                    Ok(Applied::Starting) => {}
                    Err(e) => self.clock_moved(&id, action, Err(e.to_string())),
                }
            }
            changed |= moved;
            if !moved {
                break;
            }
        }
        changed
    }

    /// What the clock's step on `id` came to: a failure is logged once
    /// (`arm-failed`), until a step succeeds.
    pub(super) fn clock_moved(&mut self, id: &EventId, action: Action, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.arm_failure = None,
            Err(text) => {
                if self.arm_failure.as_deref() != Some(&text) {
                    error!(event = %id, action = action.as_str(), error = %text, "The clock could not move the event.");
                    self.log(&id.0, Kind::ArmFailed, text.clone(), &Actor::Scheduler);
                    self.arm_failure = Some(text);
                }
            }
        }
    }

    /// Sets the relay's cue from the event's state: slate before T0, on
    /// hold and from the end; program from T0 (or from a Take) until the end.
    pub(super) fn update_cue(&mut self, event: &Event) {
        let now = self.options.clock.now();
        let Some(r) = self.running.as_mut().filter(|r| r.event_id == event.id) else { return };
        let Some(relay) = &r.relay else { return };
        let cue = cue_for(event, now, relay.cue(), r.choice == SourceChoice::Slate);
        if cue != relay.cue() {
            info!(event = %event.id, ?cue, "Cue set.");
            relay.set_cue(cue);
        }
    }
}

/// The cue for `event` in its current state (see [`State::update_cue`]).
/// `prev` keeps a program start already passed (T0, or an earlier Take).
pub(super) fn cue_for(event: &Event, now: DateTime<Utc>, prev: Cue, slate_by_hand: bool) -> Cue {
    let program_from = match event.state {
        EventState::Scheduled | EventState::Armed => Some(event.on_air),
        EventState::OnAir | EventState::PostRoll => Some(prev.program_from.filter(|t| *t <= now).unwrap_or(now)),
        _ => None,
    };
    Cue { program_from, program_until: Some(event.end()), force_slate: slate_by_hand || event.state.is_final() }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn event(state: EventState) -> Event {
        Event {
            id: EventId("ev-000000000001".into()),
            title: "t".into(),
            on_air: at("2026-11-22T15:00:00Z"),
            duration: Duration::from_secs(3 * 3600),
            preroll: Duration::from_secs(600),
            postroll: Duration::from_secs(60),
            channel_ids: vec![],
            state,
            ended: None,
            created: at("2026-11-01T00:00:00Z"),
            max_delay: Duration::ZERO,
        }
    }

    #[test]
    fn the_cue_follows_the_event() {
        let t0 = at("2026-11-22T15:00:00Z");
        let end = at("2026-11-22T18:00:00Z");
        let none = Cue::default();
        // Armed: programme from T0 to the end.
        let armed = cue_for(&event(EventState::Armed), at("2026-11-22T14:55:00Z"), none, false);
        assert_eq!(armed, Cue { program_from: Some(t0), program_until: Some(end), force_slate: false });
        // The clock's Take at T0 (a tick late) keeps T0; an early Take is now.
        let on = cue_for(&event(EventState::OnAir), at("2026-11-22T15:00:00.2Z"), armed, false);
        assert_eq!(on.program_from, Some(t0));
        let early = at("2026-11-22T14:58:00Z");
        assert_eq!(cue_for(&event(EventState::OnAir), early, armed, false).program_from, Some(early));
        // Held: slate; Take after the hold: programme from then.
        let held = cue_for(&event(EventState::Held), at("2026-11-22T15:01:00Z"), armed, false);
        assert_eq!(held.program_from, None);
        let taken = at("2026-11-22T15:03:00Z");
        assert_eq!(cue_for(&event(EventState::OnAir), taken, held, false).program_from, Some(taken));
        // Ended early: slate from the new end; slate by hand; aborted.
        let mut ended = event(EventState::PostRoll);
        ended.ended = Some(at("2026-11-22T16:00:00Z"));
        let post = cue_for(&ended, at("2026-11-22T16:00:00Z"), on, false);
        assert_eq!((post.program_from, post.program_until), (Some(t0), ended.ended));
        assert!(cue_for(&event(EventState::OnAir), taken, on, true).force_slate);
        assert!(cue_for(&event(EventState::Aborted), taken, on, false).force_slate);
    }
}
