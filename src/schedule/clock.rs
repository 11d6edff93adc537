//! Where the coordinator reads "now" in UTC.

use chrono::{DateTime, Utc};

/// The coordinator's clock.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's wall clock.
    System,
    /// UTC counted on tokio's monotonic time from a fixed start: tests pause
    /// and advance it, and a step of the wall clock does not move it.
    Tokio {
        /// UTC at `start`.
        start_utc: DateTime<Utc>,
        /// The tokio instant that `start_utc` stands for.
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock reading `start_utc` now and running on tokio time.
    pub fn tokio_from(start_utc: DateTime<Utc>) -> Self {
        Clock::Tokio { start_utc, start: tokio::time::Instant::now() }
    }

    /// Now, in UTC.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { start_utc, start } => *start_utc + super::chrono_duration(start.elapsed()),
        }
    }
}
