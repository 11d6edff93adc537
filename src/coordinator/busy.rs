//! How long each turn of the coordinator's loop takes, by what it did: the
//! proof that master control stays fast. Every RPC and every status
//! snapshot waits while a turn runs, so a slow turn is logged (naming its
//! work) and counted; the metrics give turns, time and slow turns by work.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A turn longer than this is counted as slow: the control plane's target
/// for an operator's command (`cargo bench --bench control`).
pub const SLOW_TURN: Duration = Duration::from_millis(10);

/// A turn longer than this is also logged at WARN, naming its work.
pub const WARN_TURN: Duration = Duration::from_millis(100);

/// One kind of work's turns so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Turns {
    /// Turns taken.
    pub count: u64,
    /// Their total time.
    pub busy: Duration,
    /// Turns longer than [`SLOW_TURN`].
    pub slow: u64,
    /// The longest one.
    pub longest: Duration,
}

/// The loop's turns by work (`command:<name>`, `tick`, `relay-stopped`),
/// written by the coordinator and read by metrics scrapes.
#[derive(Debug, Default)]
pub struct LoopTimes {
    by_work: Mutex<BTreeMap<&'static str, Turns>>,
}

impl LoopTimes {
    /// Counts one turn of `work` that began at `started`, and says so at
    /// WARN when it held the loop longer than [`WARN_TURN`].
    pub fn turn(&self, work: &'static str, started: Instant) {
        let took = started.elapsed();
        if took > WARN_TURN {
            tracing::warn!(
                work,
                took_ms = took.as_millis() as u64,
                "Master control's loop was busy; every RPC and status update waited."
            );
        }
        let mut by_work = self.by_work.lock().unwrap_or_else(|e| e.into_inner());
        let t = by_work.entry(work).or_default();
        t.count += 1;
        t.busy += took;
        t.slow += u64::from(took > SLOW_TURN);
        t.longest = t.longest.max(took);
    }

    /// Every work's turns so far.
    pub fn all(&self) -> Vec<(&'static str, Turns)> {
        let by_work = self.by_work.lock().unwrap_or_else(|e| e.into_inner());
        by_work.iter().map(|(w, t)| (*w, *t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_add_up_by_work_and_slow_ones_are_counted() {
        let times = LoopTimes::default();
        let now = Instant::now();
        times.turn("tick", now);
        times.turn("tick", now - SLOW_TURN * 2);
        times.turn("command:take", now);
        let all = times.all();
        assert_eq!(all.iter().map(|(w, _)| *w).collect::<Vec<_>>(), ["command:take", "tick"]);
        let tick = all[1].1;
        assert_eq!((tick.count, tick.slow), (2, 1));
        assert!(tick.longest >= SLOW_TURN * 2 && tick.busy >= tick.longest, "{tick:?}");
        assert_eq!(all[0].1.slow, 0);
    }
}
