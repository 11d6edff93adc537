//! The program pipeline: the contribution feed (test source, SRT, UDP or a
//! looped file) ending in an appsink that hands every buffer to the fan-out.
//!
//! The feed is supervised like a leg: an error (a caller that cannot reach
//! the contribution encoder, a socket error) restarts the source pipeline
//! after a backoff, and the legs stay connected meanwhile. Bytes that are not
//! MPEG-TS are refused in the fan-out and reported here as an error state
//! with a message that names the feed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::watch;
use tracing::{info, warn};

use super::fanout::{Fanout, FanoutSender, GARBAGE_HOLD};
use super::leg::backoff_delay;
use super::{MediaError, lock, template};
use crate::config::{Source, TestSource};

/// First restart delay of the source pipeline.
pub const SOURCE_RESTART_INITIAL: Duration = Duration::from_millis(500);
/// Cap of the source restart delay.
pub const SOURCE_RESTART_MAX: Duration = Duration::from_secs(5);
/// No valid data for this long: the feed is reported as waiting.
pub const SOURCE_IDLE_AFTER: Duration = Duration::from_secs(1);

/// What the contribution feed is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceState {
    /// Pipeline up, no valid MPEG-TS arriving.
    Waiting,
    /// Valid MPEG-TS arriving.
    Receiving,
    /// Garbage arriving, or the pipeline failed (see `last_error`).
    Error,
    /// Stopped on purpose.
    Stopped,
}

impl SourceState {
    /// The displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceState::Waiting => "WAITING",
            SourceState::Receiving => "RECEIVING",
            SourceState::Error => "ERROR",
            SourceState::Stopped => "STOPPED",
        }
    }
}

/// A snapshot of the contribution feed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceStatus {
    /// Where it comes from (no secrets).
    pub describe: String,
    /// State.
    pub state: SourceState,
    /// Valid MPEG-TS bytes relayed.
    pub bytes_in: u64,
    /// Bytes refused as not MPEG-TS.
    pub garbage_bytes: u64,
    /// Pipeline restarts after errors.
    pub restarts: u32,
    /// The most recent problem, if any.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    restarts: AtomicU32,
    flags: Mutex<Flags>,
}

#[derive(Debug, Clone, Default)]
struct Flags {
    /// The last pipeline error.
    last_error: Option<String>,
    /// The pipeline is down, waiting to be restarted.
    failing: bool,
    /// Stopped on purpose.
    stopped: bool,
}

/// The running program pipeline.
#[derive(Debug)]
pub struct Program {
    describe: String,
    fanout: Arc<Fanout>,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Program {
    /// Builds the program pipeline once (so a missing plugin or a broken
    /// template is an error here, at start-up) and starts its supervisor.
    pub fn start(
        source: &Source,
        title: &str,
        batch_wait: Duration,
        fanout: Arc<Fanout>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, MediaError> {
        let sender = fanout
            .spawn(batch_wait)
            .map_err(|e| MediaError::Pipeline(format!("cannot start the fan-out thread: {e}")))?;
        let first = build(source, title, sender.clone())?;
        let shared = Arc::new(Shared { restarts: AtomicU32::new(0), flags: Mutex::new(Flags::default()) });
        let sup =
            Supervisor { source: source.clone(), title: title.to_owned(), sender, shared: Arc::clone(&shared), stop };
        let task = tokio::spawn(sup.run(first));
        Ok(Self { describe: source.describe(), fanout, shared, task: Some(task) })
    }

    /// A snapshot of the feed.
    pub fn status(&self) -> SourceStatus {
        let c = self.fanout.counters();
        let now = super::clock().time().nseconds();
        let since = |ns: u64| (ns > 0).then(|| Duration::from_nanos(now.saturating_sub(ns)));
        let garbage = c.garbage_bytes.load(Ordering::Relaxed);
        let Flags { last_error: pipeline_error, failing, stopped } = lock(&self.shared.flags).clone();
        let recent_garbage = since(c.last_garbage_ns.load(Ordering::Relaxed)).is_some_and(|d| d < GARBAGE_HOLD);
        let receiving = since(c.last_valid_ns.load(Ordering::Relaxed)).is_some_and(|d| d < SOURCE_IDLE_AFTER);
        let (state, last_error) = if stopped {
            (SourceState::Stopped, pipeline_error)
        } else if recent_garbage {
            let msg = format!(
                "contribution feed {} carries data that is not MPEG-TS ({garbage} bytes refused so far); \
                 the legs are kept connected",
                self.describe
            );
            (SourceState::Error, Some(msg))
        } else if failing {
            (SourceState::Error, pipeline_error)
        } else if receiving {
            (SourceState::Receiving, pipeline_error)
        } else {
            (SourceState::Waiting, pipeline_error)
        };
        SourceStatus {
            describe: self.describe.clone(),
            state,
            bytes_in: c.bytes.load(Ordering::Relaxed),
            garbage_bytes: garbage,
            restarts: self.shared.restarts.load(Ordering::Relaxed),
            last_error,
        }
    }

    /// Waits for the supervisor to finish (after the stop signal).
    pub async fn join(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

struct Built {
    pipeline: gst::Pipeline,
    bus_rx: super::BusRx,
}

struct Supervisor {
    source: Source,
    title: String,
    sender: FanoutSender,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
}

impl Supervisor {
    async fn run(mut self, first: Built) {
        let mut next = Some(first);
        let mut attempt = 0u32;
        loop {
            let built = match next.take() {
                Some(b) => Ok(b),
                None => build(&self.source, &self.title, self.sender.clone()),
            };
            let ended = match built {
                Ok(b) => self.run_once(b).await,
                Err(e) => Ended::Failed(e.to_string()),
            };
            let error = match ended {
                Ended::Stopped => break,
                Ended::Looped => continue,
                Ended::Failed(e) => e,
            };
            warn!(source = %self.source.describe(), %error, "Contribution feed failed; restarting it.");
            *lock(&self.shared.flags) = Flags { last_error: Some(error), failing: true, stopped: false };
            let delay = backoff_delay(attempt, SOURCE_RESTART_INITIAL, SOURCE_RESTART_MAX, fastrand::f64());
            attempt = attempt.saturating_add(1);
            self.shared.restarts.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.wait_for(|s| *s) => break,
            }
        }
        lock(&self.shared.flags).stopped = true;
    }

    /// Runs the pipeline; `None` when stopped, the error otherwise.
    async fn run_once(&mut self, built: Built) -> Ended {
        let Built { pipeline, mut bus_rx } = built;
        let guard = super::NullOnDrop(pipeline.clone());
        let p = pipeline.clone();
        let started = tokio::task::spawn_blocking(move || p.set_state(gst::State::Playing)).await;
        let result = if matches!(started, Ok(Ok(_))) {
            lock(&self.shared.flags).failing = false;
            info!(source = %self.source.describe(), "Contribution feed pipeline running.");
            self.watch(&mut bus_rx).await
        } else {
            Ended::Failed(
                super::first_error(&mut bus_rx).unwrap_or_else(|| "the source pipeline refused to start".into()),
            )
        };
        let _ = tokio::task::spawn_blocking(move || drop(guard)).await;
        result
    }

    async fn watch(&mut self, bus_rx: &mut super::BusRx) -> Ended {
        loop {
            tokio::select! {
                _ = self.stop.wait_for(|s| *s) => return Ended::Stopped,
                msg = bus_rx.recv() => {
                    let Some(msg) = msg else { return Ended::Failed("the source pipeline's bus closed".into()) };
                    match msg.view() {
                        gst::MessageView::Error(e) => return Ended::Failed(describe(&self.source, e)),
                        // A file is looped by starting it again: tsparse fed
                        // by filesrc refuses seeks (checked by a test), and a
                        // fresh pipeline also restarts the real-time pacing.
                        // Partners see a timestamp jump at the loop point.
                        gst::MessageView::Eos(_) if matches!(self.source, Source::File(_)) => return Ended::Looped,
                        gst::MessageView::Eos(_) => {
                            return Ended::Failed(format!("{} ended the stream", self.source.describe()));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// How one run of the source pipeline ended.
enum Ended {
    Stopped,
    Looped,
    Failed(String),
}

fn describe(source: &Source, e: &gst::message::Error) -> String {
    format!("contribution feed {}: {}", source.describe(), super::describe_error(e))
}

fn test_params(t: &TestSource) -> Vec<(&'static str, u64)> {
    vec![
        ("width", u64::from(t.width)),
        ("height", u64::from(t.height)),
        ("framerate", u64::from(t.framerate)),
        ("video_kbps", u64::from(t.video_kbps)),
        ("audio_bps", u64::from(t.audio_kbps) * 1000),
        ("tone_hz", u64::from(t.tone_hz)),
        ("gop", u64::from(t.gop)),
    ]
}

/// Builds the program pipeline for `source`, ending in the fan-out.
fn build(source: &Source, title: &str, sender: FanoutSender) -> Result<Built, MediaError> {
    let (name, params) = match source {
        Source::Test(t) => ("ingest/test", test_params(t)),
        Source::Srt(_) => ("ingest/srt", vec![]),
        Source::Udp(_) => ("ingest/udp", vec![]),
        Source::File(_) => ("ingest/file", vec![]),
    };
    let bin = template::get(name)?.instantiate(&params)?;
    let named = |n: &str| {
        bin.by_name(n).ok_or_else(|| MediaError::Template {
            template: name.into(),
            message: format!("has no element named `{n}`"),
        })
    };
    match source {
        Source::Test(_) => {
            named("title")?.set_property("text", title);
            let clock = named("clock")?;
            let pad = clock
                .static_pad("video_sink")
                .ok_or_else(|| MediaError::Pipeline("textoverlay without video_sink pad".into()))?;
            let overlay = clock.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string();
                overlay.set_property("text", now);
                gst::PadProbeReturn::Ok
            });
        }
        Source::Srt(s) => super::configure_srt(&named("src")?, s),
        Source::Udp(u) => {
            let src = named("src")?;
            src.set_property("address", u.host.bare());
            src.set_property("port", i32::from(u.port));
            if let Some(iface) = &u.interface {
                src.set_property("multicast-iface", iface);
            }
        }
        Source::File(path) => {
            named("src")?.set_property("location", path.display().to_string());
        }
    }

    let appsink = gst_app::AppSink::builder()
        .name("program")
        .sync(false)
        .max_buffers(1024)
        .drop(true)
        .enable_last_sample(false)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(buffer) = sample.buffer_owned() {
                        sender.send(buffer);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build();

    let pipeline = gst::Pipeline::with_name("program");
    pipeline.use_clock(Some(&super::clock()));
    pipeline
        .add_many([bin.upcast_ref::<gst::Element>(), appsink.upcast_ref()])
        .map_err(|e| MediaError::Pipeline(format!("program pipeline: {e}")))?;
    bin.link(&appsink)
        .map_err(|e| MediaError::Pipeline(format!("program pipeline: cannot link {name} to the fan-out: {e}")))?;

    let bus_rx = super::forward_bus(&pipeline)?;
    Ok(Built { pipeline, bus_rx })
}
