//! The relay: one program pipeline, its fan-out, and one supervised leg per
//! enabled channel. Start it with [`Relay::start`], read [`Relay::status`],
//! end it with [`Relay::shutdown`] (every pipeline goes to `Null`).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::media::fanout::Fanout;
use crate::media::leg::{Leg, LegStatus};
use crate::media::source::{Program, SourceStatus};
use crate::media::{self, MediaError};

/// A snapshot of the whole relay.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayStatus {
    /// Seconds since start.
    pub uptime_s: f64,
    /// The contribution feed.
    pub source: SourceStatus,
    /// Every leg, in config order.
    pub legs: Vec<LegStatus>,
    /// Buffers lost between the program and the fan-out thread (should be 0).
    pub fanout_overflow: u64,
}

impl RelayStatus {
    /// The leg of `channel_id`, if any.
    pub fn leg(&self, channel_id: &str) -> Option<&LegStatus> {
        self.legs.iter().find(|l| l.channel_id == channel_id)
    }
}

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    program: Program,
    fanout: Arc<Fanout>,
    legs: Vec<Leg>,
    stop: watch::Sender<bool>,
    started: Instant,
}

impl Relay {
    /// Starts the program pipeline and one leg per enabled channel. Fails
    /// only if the program itself cannot be built; a leg that cannot reach
    /// its ingest keeps trying without holding up the others.
    pub async fn start(config: &Config) -> Result<Self, MediaError> {
        media::init()?;
        let (stop, stop_rx) = watch::channel(false);
        let fanout = Fanout::new();
        let mut legs = Vec::new();
        for channel in config.enabled_channels() {
            let leg = Leg::start(channel, &config.relay, stop_rx.clone());
            fanout.add(Arc::clone(leg.input()));
            legs.push(leg);
        }
        let program = match Program::start(
            &config.source,
            &config.event.title,
            config.relay.batch_wait,
            Arc::clone(&fanout),
            stop_rx,
        ) {
            Ok(p) => p,
            Err(e) => {
                let _ = stop.send(true);
                for leg in &mut legs {
                    leg.join().await;
                }
                return Err(e);
            }
        };
        info!(legs = legs.len(), source = %config.source.describe(), "Relay started.");
        Ok(Self { program, fanout, legs, stop, started: Instant::now() })
    }

    /// A snapshot of the feed and every leg.
    pub fn status(&self) -> RelayStatus {
        RelayStatus {
            uptime_s: self.started.elapsed().as_secs_f64(),
            source: self.program.status(),
            legs: self.legs.iter().map(Leg::status).collect(),
            fanout_overflow: self.fanout.counters().overflow_buffers.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Stops every pipeline and waits for them; returns the final status.
    pub async fn shutdown(mut self) -> RelayStatus {
        let _ = self.stop.send(true);
        self.program.join().await;
        for leg in &mut self.legs {
            leg.join().await;
        }
        info!("Relay stopped.");
        self.status()
    }
}
