//! The leg-view fold: what one leg has shown so far, folded from the
//! relay's looks at it ([`LegStatus`]). Master control turns what changed
//! into as-run entries; a rehearsal into its verdicts. One fold, so that a
//! leg's first programme picture, and its error from the leg's air time,
//! are measured the same way by both.

use chrono::{DateTime, Utc};

use crate::media::leg::{LegState, LegStatus};

/// What one leg has shown so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LegSeen {
    /// When it was first seen on air.
    pub on_air_since: Option<DateTime<Utc>>,
    /// Its first programme picture, and how far from its air time it went
    /// out (ms, positive late) when the air time was known: measured once.
    pub first_program: Option<(DateTime<Utc>, Option<f64>)>,
    /// Its first programme picture went out before this fold began (the
    /// daemon restarted): the next one is a return, not its first.
    earlier_run: bool,
    /// The programme start last seen (UTC ns): a new one is a return to
    /// programme (after the slate, a failover, a restart of the leg).
    program_seen_ns: Option<u64>,
    /// Every distinct error, in the order seen.
    pub errors: Vec<String>,
}

/// What one look at a leg showed that it had not shown before.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// On air for the first time.
    OnAir(DateTime<Utc>),
    /// Its first programme picture, and its error from the air time (ms).
    FirstProgram {
        /// When it went out.
        at: DateTime<Utc>,
        /// How far from the air time, when that was known.
        error_ms: Option<f64>,
    },
    /// Programme pictures again, from `at`.
    ProgramAgain(DateTime<Utc>),
    /// An error not seen before.
    Error(String),
}

/// A UTC instant from nanoseconds since the epoch (saturating).
fn utc(ns: u64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_nanos(ns.min(i64::MAX as u64) as i64)
}

impl LegSeen {
    /// A leg whose first programme picture is on record from before (a
    /// restart): its next programme start is a return.
    pub fn after_restart() -> Self {
        Self { earlier_run: true, ..Self::default() }
    }

    /// Folds one look (`s`, taken at `now`) in; `air_time` is when the leg
    /// was due to carry the programme, if known yet. Returns what changed.
    pub fn fold(&mut self, s: &LegStatus, now: DateTime<Utc>, air_time: Option<DateTime<Utc>>) -> Vec<Change> {
        let mut changes = Vec::new();
        if s.state == LegState::OnAir && self.on_air_since.is_none() {
            self.on_air_since = Some(now);
            changes.push(Change::OnAir(now));
        }
        if let Some(ns) = s.program_since_utc_ns
            && self.program_seen_ns != Some(ns)
        {
            self.program_seen_ns = Some(ns);
            let at = utc(ns);
            if self.first_program.is_some() || self.earlier_run {
                changes.push(Change::ProgramAgain(at));
            } else {
                let error_ms = air_time.map(|due| (at - due).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                self.first_program = Some((at, error_ms));
                changes.push(Change::FirstProgram { at, error_ms });
            }
        }
        if let Some(e) = &s.last_error
            && !self.errors.contains(e)
        {
            self.errors.push(e.clone());
            changes.push(Change::Error(e.clone()));
        }
        changes
    }

    /// The first programme picture's error from the air time, in ms.
    pub fn first_program_error_ms(&self) -> Option<f64> {
        self.first_program.and_then(|(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(state: LegState, program_ns: Option<u64>, error: Option<&str>) -> LegStatus {
        LegStatus {
            channel_id: "kz".into(),
            protocol: "srt".into(),
            target: "srt://127.0.0.1:9000 (caller)".into(),
            state,
            bytes_sent: 0,
            bitrate_bps: 0,
            reconnects: 0,
            dropped_buffers: 0,
            last_error: error.map(str::to_owned),
            srt: None,
            program_since_utc_ns: program_ns,
            carries: crate::media::program::Content::Program,
            audio: Vec::new(),
            audio_missing: Vec::new(),
            cues_sent: 0,
            cues_missed: 0,
        }
    }

    #[test]
    fn a_leg_is_on_air_once_its_first_programme_is_timed_once_and_each_error_is_new_once() {
        let t0 = utc(1_800_000_000_000_000_000);
        let now = t0;
        let mut seen = LegSeen::default();
        assert_eq!(seen.fold(&look(LegState::Connecting, None, None), now, Some(t0)), []);
        assert_eq!(seen.fold(&look(LegState::OnAir, None, None), now, Some(t0)), [Change::OnAir(now)]);
        let late = 1_800_000_000_040_000_000;
        assert_eq!(
            seen.fold(&look(LegState::OnAir, Some(late), None), now, Some(t0)),
            [Change::FirstProgram { at: utc(late), error_ms: Some(40.0) }]
        );
        assert_eq!(seen.fold(&look(LegState::OnAir, Some(late), None), now, Some(t0)), []);
        let refused = Some("srt://kz: connection refused");
        assert_eq!(
            seen.fold(&look(LegState::Reconnecting, Some(late), refused), now, Some(t0)),
            [Change::Error("srt://kz: connection refused".into())]
        );
        assert_eq!(seen.fold(&look(LegState::Reconnecting, Some(late), refused), now, Some(t0)), []);
        let again = late + 5_000_000_000;
        assert_eq!(
            seen.fold(&look(LegState::OnAir, Some(again), None), now, Some(t0)),
            [Change::ProgramAgain(utc(again))]
        );
        assert_eq!(seen.first_program_error_ms(), Some(40.0), "measured once");
    }

    #[test]
    fn after_a_restart_the_first_programme_seen_is_a_return_and_without_an_air_time_it_is_not_timed() {
        let at = 1_800_000_000_000_000_000;
        let mut resumed = LegSeen::after_restart();
        assert_eq!(
            resumed.fold(&look(LegState::OnAir, Some(at), None), utc(at), None)[1],
            Change::ProgramAgain(utc(at))
        );
        let mut fresh = LegSeen::default();
        fresh.fold(&look(LegState::OnAir, Some(at), None), utc(at), None);
        assert_eq!(fresh.first_program, Some((utc(at), None)));
    }
}
