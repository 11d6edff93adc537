//! One leg: the pipeline that carries the program to one partner's ingest,
//! and the supervisor task that builds it, watches it and rebuilds it.
//!
//! Each leg owns its pipeline, bus and state. A bus error, an end of stream,
//! a stall (input waiting, nothing delivered) or a connection that does not
//! come up in time ends that pipeline only; the supervisor (the loop of
//! `media/supervise.rs`) rebuilds it after a capped, jittered exponential
//! backoff. No other leg and not the program
//! pipeline can notice: the fan-out only ever offers to a leg's appsrc.
//!
//! UDP legs and SRT caller legs have a socket instead of a pipeline, which
//! the fan-out thread writes without ever waiting (`fanout::DirectSend`);
//! their supervisor watches the socket the same way and opens a new one
//! after the same backoff.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::watch;
use tracing::{info, warn};

use super::fanout::LegInput;
use super::supervise::{Backoff, Ended, Playing, Supervised};
use super::{MediaError, lock, template};
use crate::config::{Channel, ChannelId, Ingest, RelaySettings};

/// How often the supervisor looks at its leg.
pub const TICK: Duration = Duration::from_millis(250);
/// A leg that stayed on air this long starts its next backoff from the bottom.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// What a leg is doing (api.md's `LegState`; `SLATE` arrives with the T0 work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LegState {
    /// Not started.
    Idle,
    /// First connection under way.
    Connecting,
    /// Delivering the program.
    OnAir,
    /// Lost its ingest; waiting or trying again.
    Reconnecting,
    /// Cannot work at all (missing plugin, broken template); will not retry.
    Failed,
    /// Stopped on purpose.
    Stopped,
}

impl fmt::Display for LegState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LegState::Idle => "IDLE",
            LegState::Connecting => "CONNECTING",
            LegState::OnAir => "ON_AIR",
            LegState::Reconnecting => "RECONNECTING",
            LegState::Failed => "FAILED",
            LegState::Stopped => "STOPPED",
        })
    }
}

pub use super::srt::SrtFigures;

/// A snapshot of one leg, for tables, the API and tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LegStatus {
    /// The channel.
    pub channel_id: String,
    /// `srt`, `rtmp`, ...
    pub protocol: String,
    /// Where it sends, without secrets.
    pub target: String,
    /// Current state.
    pub state: LegState,
    /// Bytes handed to the protocol sink since start.
    pub bytes_sent: u64,
    /// Over the last second.
    pub bitrate_bps: u64,
    /// Pipeline rebuilds after an error.
    pub reconnects: u32,
    /// Buffers not delivered because the leg's input was full.
    pub dropped_buffers: u64,
    /// The most recent error, if any.
    pub last_error: Option<String>,
    /// SRT legs only.
    pub srt: Option<SrtFigures>,
    /// UTC (ns) the latest program start went out on this leg (its first
    /// program keyframe); `None` if the program has not started here.
    pub program_since_utc_ns: Option<u64>,
    /// What the leg carries: the programme once its first programme
    /// picture went out and while the cue has it on, else the slate.
    pub carries: super::program::Content,
    /// The audio languages the leg asks for (empty: every track).
    pub audio: Vec<String>,
    /// Those the programme lacks: the leg then gets every track.
    pub audio_missing: Vec<String>,
    /// Ad-break cues sent on this leg (every copy).
    pub cues_sent: u64,
    /// Cues that could not be sent before their instant.
    pub cues_missed: u64,
}

impl LegStatus {
    /// A leg of `channel` that has not started here (yet): `state`, no
    /// figures, no error.
    pub fn not_started(channel: &crate::config::Channel, state: LegState) -> LegStatus {
        LegStatus {
            channel_id: channel.id.to_string(),
            protocol: channel.ingest.protocol().to_owned(),
            target: channel.ingest.target(),
            state,
            bytes_sent: 0,
            bitrate_bps: 0,
            reconnects: 0,
            dropped_buffers: 0,
            last_error: None,
            srt: None,
            program_since_utc_ns: None,
            carries: super::program::Content::Slate,
            audio: channel.audio.clone(),
            audio_missing: Vec::new(),
            cues_sent: 0,
            cues_missed: 0,
        }
    }
}

/// Reads a leg's counters as they are now (cheap to clone; outlives the
/// leg harmlessly, reading its last values).
#[derive(Debug, Clone)]
pub struct LegMeter {
    shared: Arc<Shared>,
    input: Arc<LegInput>,
}

impl LegMeter {
    /// Bytes handed to the protocol sink.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Pipeline rebuilds.
    pub fn reconnects(&self) -> u32 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Buffers dropped at the leg's input.
    pub fn dropped_buffers(&self) -> u64 {
        self.input.dropped()
    }
}

/// Counters shared between the supervisor, the sink probe and readers.
#[derive(Debug)]
struct Shared {
    bytes: AtomicU64,
    /// Buffers (or lists) that reached the sink pad.
    hits: AtomicU64,
    /// Clock time (ns) of the last buffer that reached the sink.
    last_delivered_ns: AtomicU64,
    reconnects: AtomicU32,
    bitrate: AtomicU64,
    mutable: Mutex<Mutable>,
}

#[derive(Debug)]
struct Mutable {
    state: LegState,
    last_error: Option<String>,
    srt: Option<SrtFigures>,
}

/// A running leg: its supervisor task and what it reports.
#[derive(Debug)]
pub struct Leg {
    id: ChannelId,
    protocol: &'static str,
    target: String,
    /// The audio languages it asks for (empty: every track).
    audio: Vec<String>,
    input: Arc<LegInput>,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Leg {
    /// Starts a leg's supervisor; it connects in the background. The leg
    /// begins receiving program once its pipeline is up.
    pub fn start(channel: &Channel, settings: &RelaySettings, stop: watch::Receiver<bool>) -> Self {
        let mut input = LegInput::new(settings.leg_buffer);
        // An RTMP leg's FLV takes the first AAC track its input offers: the
        // one it lists, or the programme's first.
        if !channel.audio.is_empty() {
            input = input.with_audio(channel.audio.clone());
        }
        if matches!(channel.ingest, Ingest::Rtmp(_)) {
            input = input.for_flv();
        }
        if settings.stamp_legs && !matches!(channel.ingest, Ingest::Rtmp(_)) {
            input = input.stamped(super::stamp::text(channel));
        }
        let input = Arc::new(input);
        let shared = Arc::new(Shared {
            bytes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            last_delivered_ns: AtomicU64::new(0),
            reconnects: AtomicU32::new(0),
            bitrate: AtomicU64::new(0),
            mutable: Mutex::new(Mutable { state: LegState::Idle, last_error: None, srt: None }),
        });
        let sup = Supervisor {
            channel: channel.clone(),
            settings: settings.clone(),
            input: Arc::clone(&input),
            shared: Arc::clone(&shared),
        };
        let backoff = Backoff {
            initial: settings.reconnect_initial,
            max: settings.reconnect_max,
            reset_after: BACKOFF_RESET_AFTER,
        };
        let task = super::supervise::spawn(sup, backoff, stop);
        Self {
            id: channel.id.clone(),
            protocol: channel.ingest.protocol(),
            target: channel.ingest.target(),
            audio: channel.audio.clone(),
            input,
            shared,
            task: Some(task),
        }
    }

    /// The leg's fan-out entrance.
    pub fn input(&self) -> &Arc<LegInput> {
        &self.input
    }

    /// The channel this leg serves.
    pub fn id(&self) -> &ChannelId {
        &self.id
    }

    /// A live reader of the leg's counters, for scrapes between snapshots.
    pub fn meter(&self) -> LegMeter {
        LegMeter { shared: Arc::clone(&self.shared), input: Arc::clone(&self.input) }
    }

    /// A snapshot of the leg.
    pub fn status(&self) -> LegStatus {
        let m = lock(&self.shared.mutable);
        LegStatus {
            channel_id: self.id.to_string(),
            protocol: self.protocol.to_owned(),
            target: self.target.clone(),
            state: m.state,
            bytes_sent: self.shared.bytes.load(Ordering::Relaxed),
            bitrate_bps: self.shared.bitrate.load(Ordering::Relaxed),
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
            dropped_buffers: self.input.dropped(),
            last_error: m.last_error.clone(),
            srt: m.srt,
            program_since_utc_ns: None,
            carries: super::program::Content::Slate,
            audio: self.audio.clone(),
            audio_missing: self.input.audio_missing(),
            cues_sent: self.input.cues().0,
            cues_missed: self.input.cues().1,
        }
    }

    /// Waits for the supervisor to finish (after the stop signal).
    pub async fn join(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

struct Supervisor {
    channel: Channel,
    settings: RelaySettings,
    input: Arc<LegInput>,
    shared: Arc<Shared>,
}

/// A built leg pipeline.
struct Built {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    sink: gst::Element,
    bus_rx: super::BusRx,
}

impl Supervisor {
    fn set_state(&self, state: LegState) {
        lock(&self.shared.mutable).state = state;
    }

    fn set_error(&self, error: &str) {
        lock(&self.shared.mutable).last_error = Some(error.to_owned());
    }

    /// A socket leg's latest send error (`error`, kept by the fan-out
    /// thread), logged and set on the leg once; `told` is the last one said.
    fn report_send_error(&self, error: &Mutex<Option<String>>, told: &mut Option<String>, protocol: &str) {
        let e = lock(error).clone();
        if let Some(why) = e.as_deref()
            && e != *told
        {
            warn!(leg = %self.channel.id, error = why, "{protocol} send failed.");
            self.set_error(why);
            *told = e;
        }
    }

    /// Builds the leg's pipeline and runs it until it fails or the leg is
    /// stopped.
    async fn run_pipeline(&mut self, stop: watch::Receiver<bool>) -> Result<Ended, MediaError> {
        let built = build(&self.channel, self.settings.stamp_legs, &self.shared, &self.input)?;
        Ok(self.run_built(built, stop).await)
    }

    /// A UDP leg without a pipeline: the fan-out thread sends to its socket
    /// (see [`super::fanout::DirectUdp`]); this watches the counters.
    async fn run_direct(
        &mut self,
        u: &crate::config::UdpEndpoint,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Ended, MediaError> {
        let (host, port, ttl) = (u.host.bare(), u.port, u.ttl);
        let shared = Arc::clone(&self.shared);
        let made = tokio::task::spawn_blocking(move || udp_socket(&host, port, ttl, shared))
            .await
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
        let direct = match made {
            Ok(d) => d,
            Err(e) => return Ok(Ended::Failed(format!("{}: {e}", self.channel.ingest.target()))),
        };
        let error = Arc::clone(&direct.error);
        self.input.attach_direct(Arc::new(direct));
        let mut window = Window::new(self.shared.bytes.load(Ordering::Relaxed));
        let mut tick = tokio::time::interval(TICK);
        let (mut on_air, mut told) = (false, None::<String>);
        let ended = loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break Ended::Stopped,
                _ = tick.tick() => {
                    let bytes = self.shared.bytes.load(Ordering::Relaxed);
                    self.shared.bitrate.store(window.push(bytes), Ordering::Relaxed);
                    if !on_air && self.shared.hits.load(Ordering::Relaxed) > 0 {
                        on_air = true;
                        self.set_state(LegState::OnAir);
                        info!(leg = %self.channel.id, target = %self.channel.ingest.target(), "On air.");
                    }
                    self.report_send_error(&error, &mut told, "UDP");
                }
            }
        };
        self.input.detach();
        Ok(ended)
    }

    /// An SRT caller leg without a pipeline: the fan-out thread hands its
    /// batches to libsrt (see [`super::srt`]); this watches the socket.
    /// The handshake, the partner's silence (libsrt's 5 s peer idle
    /// timeout) and a partner that stops taking data end this socket as
    /// srtsink's errors ended its pipeline.
    async fn run_direct_srt(
        &mut self,
        s: &crate::config::SrtEndpoint,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Ended, MediaError> {
        let target = self.channel.ingest.target();
        let (endpoint, shared) = (s.clone(), Arc::clone(&self.shared));
        let made = tokio::task::spawn_blocking(move || srt_socket(&endpoint, shared))
            .await
            .map_err(|e| MediaError::Pipeline(e.to_string()))?;
        let direct = match made {
            Ok(d) => Arc::new(d),
            Err(e) => return Ok(Ended::Failed(format!("{target}: {e}"))),
        };
        self.input.attach_direct(Arc::clone(&direct) as Arc<dyn super::fanout::DirectSend>);
        let clock = super::clock();
        let opened_at = clock.time().nseconds();
        let mut window = Window::new(self.shared.bytes.load(Ordering::Relaxed));
        let mut tick = tokio::time::interval(TICK);
        let (mut on_air, mut told) = (false, None::<String>);
        let mut dropped_before = self.input.dropped();
        let mut down = false;
        let ended = loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break Ended::Stopped,
                _ = tick.tick() => {
                    let now = clock.time().nseconds();
                    let bytes = self.shared.bytes.load(Ordering::Relaxed);
                    self.shared.bitrate.store(window.push(bytes), Ordering::Relaxed);
                    let figures = direct.figures();
                    lock(&self.shared.mutable).srt = figures;
                    // libsrt 1.5 reads a socket as broken for an instant
                    // between the handshake's end and "connected" (seen here
                    // on loopback, 1 leg in 4): it is down once read so twice,
                    // a tick apart.
                    let state = direct.state();
                    let was_down = std::mem::replace(&mut down, state == super::srt::State::Down);
                    if down && was_down {
                        break Ended::Failed(if on_air {
                            format!("{target}: the partner stopped answering (SRT connection lost)")
                        } else {
                            format!("{target}: {}", direct.rejection())
                        });
                    }
                    if !on_air && state == super::srt::State::Connected && figures.is_some_and(|f| f.packets_sent > 0) {
                        on_air = true;
                        self.set_state(LegState::OnAir);
                        info!(leg = %self.channel.id, target = %target, "On air.");
                    }
                    self.report_send_error(&direct.error, &mut told, "SRT");
                    let since_open = Duration::from_nanos(now.saturating_sub(opened_at));
                    if !on_air && since_open > self.settings.connect_timeout {
                        break Ended::Failed(format!("no answer from {target} within {} s", since_open.as_secs()));
                    }
                    // Connected, yet libsrt refuses every batch: the partner
                    // has stopped taking data.
                    let dropped = self.input.dropped();
                    let refusing = dropped > dropped_before;
                    dropped_before = dropped;
                    let last = self.shared.last_delivered_ns.load(Ordering::Relaxed).max(opened_at);
                    let since = Duration::from_nanos(now.saturating_sub(last));
                    if refusing && on_air && since > self.settings.stall_timeout {
                        break Ended::Failed(format!(
                            "stalled: nothing delivered to {target} for {} s", since.as_secs()
                        ));
                    }
                }
            }
        };
        self.input.detach();
        Ok(ended)
    }

    /// Runs one pipeline until it fails or the leg is stopped; always leaves
    /// the pipeline in `Null`.
    async fn run_built(&mut self, built: Built, stop: watch::Receiver<bool>) -> Ended {
        let Built { pipeline, appsrc, sink, mut bus_rx } = built;
        let playing = match Playing::start(&pipeline, &mut bus_rx).await {
            Ok(p) => p,
            Err(detail) => return Ended::Failed(format!("{}: cannot start: {detail}", self.channel.ingest.target())),
        };
        self.input.attach(appsrc);
        let ended = self.watch(&sink, &mut bus_rx, stop).await;
        self.input.detach();
        playing.release().await;
        ended
    }

    /// Whether the ingest has really taken data since this pipeline started
    /// (asked only until the leg is on air). The sink-pad probe runs before
    /// render(): a second buffer there proves the first one was taken. Sinks
    /// that take data while still connecting need their own word: srtsink
    /// drops it (on air once SRT reports packets sent), and rtmp2sink queues
    /// it (on air once the server has answered).
    fn delivered(&self, sink: &gst::Element, srt: Option<SrtFigures>, hits_at_start: u64) -> bool {
        if self.shared.hits.load(Ordering::Relaxed) < hits_at_start + 2 {
            return false;
        }
        match &self.channel.ingest {
            Ingest::Srt(_) => srt.is_some_and(|f| f.packets_sent > 0),
            Ingest::Rtmp(_) => stat(sink, "in-bytes-total").is_some_and(|b| b > 0.0),
            _ => true,
        }
    }

    async fn watch(
        &mut self,
        sink: &gst::Element,
        bus_rx: &mut super::BusRx,
        mut stop: watch::Receiver<bool>,
    ) -> Ended {
        let clock = super::clock();
        let connected_at = clock.time().nseconds();
        let hits_at_start = self.shared.hits.load(Ordering::Relaxed);
        let mut window = Window::new(self.shared.bytes.load(Ordering::Relaxed));
        let mut tick = tokio::time::interval(TICK);
        let mut on_air = false;
        let mut dropped_before = self.input.dropped();
        let is_srt = matches!(self.channel.ingest, Ingest::Srt(_));
        // SRT: this pipeline's bytes as libsrt sent them, after the earlier
        // pipelines' (a rebuilt srtsink counts from 0).
        let srt_base = self.shared.bytes.load(Ordering::Relaxed);
        loop {
            tokio::select! {
                msg = bus_rx.recv() => match msg {
                    None => return Ended::Failed("the pipeline's bus closed".into()),
                    Some(m) => match m.view() {
                        gst::MessageView::Error(e) => {
                            return Ended::Failed(format!("{}: {}", self.channel.ingest.target(), super::describe_error(e)));
                        }
                        gst::MessageView::Eos(_) => {
                            return Ended::Failed(format!("{}: the ingest ended the stream", self.channel.ingest.target()));
                        }
                        _ => {}
                    },
                },
                _ = stop.wait_for(|s| *s) => return Ended::Stopped,
                _ = tick.tick() => {
                    let now = clock.time().nseconds();
                    let stats = if is_srt { sink.property::<Option<gst::Structure>>("stats") } else { None };
                    if let Some(sent) = stats.as_ref().and_then(|s| number(s, "bytes-sent-total")) {
                        self.shared.bytes.store(srt_base + sent as u64, Ordering::Relaxed);
                    }
                    let bytes = self.shared.bytes.load(Ordering::Relaxed);
                    self.shared.bitrate.store(window.push(bytes), Ordering::Relaxed);
                    let last = self.shared.last_delivered_ns.load(Ordering::Relaxed);
                    let srt = stats.and_then(srt_figures);
                    if is_srt {
                        lock(&self.shared.mutable).srt = srt;
                    }
                    if !on_air && self.delivered(sink, srt, hits_at_start) {
                        on_air = true;
                        self.set_state(LegState::OnAir);
                        info!(leg = %self.channel.id, target = %self.channel.ingest.target(), "On air.");
                    }
                    // Input is waiting (queued or being dropped) yet nothing
                    // reaches the sink: the ingest is not taking data.
                    let dropped = self.input.dropped();
                    let backed_up = self.input.is_backed_up() || dropped > dropped_before;
                    dropped_before = dropped;
                    let since = Duration::from_nanos(now.saturating_sub(last.max(connected_at)));
                    if backed_up && !on_air && since > self.settings.connect_timeout {
                        return Ended::Failed(format!(
                            "no answer from {} within {} s", self.channel.ingest.target(), since.as_secs()
                        ));
                    }
                    if backed_up && on_air && since > self.settings.stall_timeout {
                        return Ended::Failed(format!(
                            "stalled: nothing delivered to {} for {} s", self.channel.ingest.target(), since.as_secs()
                        ));
                    }
                }
            }
        }
    }
}

impl Supervised for Supervisor {
    async fn run_once(&mut self, stop: &watch::Receiver<bool>) -> Ended {
        let first = self.shared.reconnects.load(Ordering::Relaxed) == 0;
        self.set_state(if first { LegState::Connecting } else { LegState::Reconnecting });
        let ended = match &self.channel.ingest {
            Ingest::Udp(u) if direct_udp_fits(u) => {
                let u = u.clone();
                self.run_direct(&u, stop.clone()).await
            }
            Ingest::Srt(s) if s.mode == crate::config::SrtMode::Caller && super::srt::available() => {
                let s = s.clone();
                self.run_direct_srt(&s, stop.clone()).await
            }
            _ => self.run_pipeline(stop.clone()).await,
        };
        match ended {
            Ok(ended) => ended,
            Err(e) if e.is_permanent() => Ended::Permanent(e.to_string()),
            Err(e) => Ended::Failed(e.to_string()),
        }
    }

    fn failed(&mut self, error: &str, delay: Duration) {
        let leg = &self.channel.id;
        warn!(leg = %leg, error, "Leg lost its ingest.");
        self.set_error(error);
        let attempt = self.shared.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.bitrate.store(0, Ordering::Relaxed);
        self.set_state(LegState::Reconnecting);
        info!(leg = %leg, attempt, delay_ms = delay.as_millis() as u64, "Reconnecting.");
    }

    fn finished(&mut self, failure: Option<&str>) {
        self.shared.bitrate.store(0, Ordering::Relaxed);
        match failure {
            None => self.set_state(LegState::Stopped),
            Some(error) => {
                tracing::error!(leg = %self.channel.id, error, "Leg failed for good; it will not carry the program.");
                self.set_error(error);
                self.set_state(LegState::Failed);
            }
        }
    }
}

/// One second of byte counts, for the bitrate.
struct Window {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl Window {
    fn new(bytes: u64) -> Self {
        Self { samples: [(Instant::now(), bytes)].into() }
    }

    fn push(&mut self, bytes: u64) -> u64 {
        let now = Instant::now();
        self.samples.push_back((now, bytes));
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= Duration::from_secs(1) {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        let dt = now.duration_since(t0).as_secs_f64();
        if dt <= 0.0 { 0 } else { ((bytes - b0) as f64 * 8.0 / dt) as u64 }
    }
}

/// An RTMP leg's break cues: each `onCuePoint` tag goes to the sink just
/// before the first tag flvmux pushes at or after its instant, with that
/// tag's FLV time (rtmp2sink takes one FLV tag per buffer).
fn add_flv_cues(tail: &gst::Bin, template: &str, input: &Arc<LegInput>) -> Result<(), MediaError> {
    let src = tail.by_name("mux").and_then(|m| m.static_pad("src")).ok_or_else(|| MediaError::Template {
        template: template.into(),
        message: "has no flvmux named `mux` to carry break cues".into(),
    })?;
    let input = Arc::clone(input);
    let clock = super::clock();
    src.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &info.data else { return gst::PadProbeReturn::Ok };
        let Some(flv_ms) = buffer.map_readable().ok().and_then(|m| super::breaks::flv_time(&m)) else {
            return gst::PadProbeReturn::Ok;
        };
        let tags = input.flv_cues(clock.time().nseconds(), flv_ms);
        if let (false, Some(peer)) = (tags.is_empty(), pad.peer()) {
            for tag in tags {
                let mut cue = gst::Buffer::from_mut_slice(tag);
                if let Some(c) = cue.get_mut() {
                    c.set_pts(buffer.pts());
                    c.set_dts(buffer.dts());
                }
                if let Err(e) = peer.chain(cue) {
                    tracing::warn!(error = ?e, "An onCuePoint did not reach the RTMP sink.");
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Builds the leg's pipeline: a bounded live appsrc, then the protocol tail
/// from its template, properties set from typed config.
fn build(channel: &Channel, stamp: bool, shared: &Arc<Shared>, input: &Arc<LegInput>) -> Result<Built, MediaError> {
    let name = channel.ingest.template();
    let tail = template::get(name)?.instantiate(&[])?;
    let sink = tail
        .by_name("sink")
        .ok_or_else(|| MediaError::Template { template: name.into(), message: "has no element named `sink`".into() })?;
    configure_sink(&sink, &channel.ingest)?;
    if stamp && matches!(channel.ingest, Ingest::Rtmp(_)) {
        // FLV has no SDT: the stamp is the stream's onMetaData title. flvmux
        // clears tags set on it when it starts, so they come as an event.
        let inject = tail.by_name("stamp").ok_or_else(|| MediaError::Template {
            template: name.into(),
            message: "has no element named `stamp` (taginject) to stamp the leg".into(),
        })?;
        inject.set_property("tags", super::stamp::flv_tags(channel));
    }

    if matches!(channel.ingest, Ingest::Rtmp(_)) {
        add_flv_cues(&tail, name, input)?;
    }

    let caps = gst::Caps::builder("video/mpegts").field("systemstream", true).field("packetsize", 188i32).build();
    let appsrc = gst_app::AppSrc::builder()
        .name("src")
        .caps(&caps)
        .is_live(true)
        .format(gst::Format::Time)
        .do_timestamp(false)
        .property("emit-signals", false)
        .max_bytes(0)
        .max_buffers(0)
        // Unbounded here on purpose: LegInput keeps the time bound itself.
        .max_time(gst::ClockTime::ZERO)
        .block(false)
        .build();

    let pipeline = gst::Pipeline::with_name(&format!("leg-{}", channel.id));
    // One time base for every pipeline: the fan-out's absolute timestamps
    // are this leg's running time.
    pipeline.use_clock(Some(&super::clock()));
    pipeline.set_start_time(gst::ClockTime::NONE);
    pipeline.set_base_time(gst::ClockTime::ZERO);
    pipeline
        .add_many([appsrc.upcast_ref::<gst::Element>(), tail.upcast_ref()])
        .map_err(|e| MediaError::Pipeline(format!("leg {}: {e}", channel.id)))?;
    appsrc
        .link(&tail)
        .map_err(|e| MediaError::Pipeline(format!("leg {}: cannot link appsrc to the {name} tail: {e}", channel.id)))?;

    // Retire batches from the leg's time bound as they leave appsrc.
    let src_pad = appsrc
        .static_pad("src")
        .ok_or_else(|| MediaError::Pipeline(format!("leg {}: appsrc has no src pad", channel.id)))?;
    let retire = Arc::clone(input);
    src_pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, info| {
        let pts = match &info.data {
            Some(gst::PadProbeData::BufferList(l)) => l.get(0).and_then(|b| b.pts()),
            Some(gst::PadProbeData::Buffer(b)) => b.pts(),
            _ => None,
        };
        if let Some(pts) = pts {
            retire.retire(pts.nseconds());
        }
        gst::PadProbeReturn::Ok
    });

    // Count what reaches the protocol sink: that is what the partner is
    // sent. Not for SRT: srtsink takes data while no partner answers and
    // drops it, so its bytes are read from its own statistics, what
    // libsrt really sent (see `watch`).
    let pad = sink
        .static_pad("sink")
        .ok_or_else(|| MediaError::Pipeline(format!("leg {}: sink has no sink pad", channel.id)))?;
    // Cluster mode: what this leg queued goes nowhere once the node's lease
    // may have lapsed (a process woken from SIGSTOP sends from here first).
    let fenced = Arc::clone(input);
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, info| {
        if fenced.fence_open() { gst::PadProbeReturn::Ok } else { super::drop_data(info) }
    });
    let counters = Arc::clone(shared);
    let clock = super::clock();
    let counted_here = !matches!(channel.ingest, Ingest::Srt(_));
    super::count_bytes(&pad, move |size| {
        if counted_here {
            counters.bytes.fetch_add(size as u64, Ordering::Relaxed);
        }
        counters.hits.fetch_add(1, Ordering::Relaxed);
        counters.last_delivered_ns.store(clock.time().nseconds(), Ordering::Relaxed);
    });

    let bus_rx = super::forward_bus(&pipeline)?;
    Ok(Built { pipeline, appsrc, sink, bus_rx })
}

/// Whether a UDP leg is sent without a pipeline: not when it names a
/// multicast interface or is IPv6 multicast (udpsink's own options then).
fn direct_udp_fits(u: &crate::config::UdpEndpoint) -> bool {
    let v6_multicast = matches!(&u.host, crate::config::Host::Ip(std::net::IpAddr::V6(a)) if a.is_multicast());
    u.interface.is_none() && !v6_multicast
}

/// A non-blocking socket sending to `host`:`port` (a name is resolved
/// here), TTL `ttl` for IPv4 multicast, counting into `shared`.
fn udp_socket(host: &str, port: u16, ttl: u8, shared: Arc<Shared>) -> std::io::Result<super::fanout::DirectUdp> {
    use std::net::ToSocketAddrs;
    let to = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolves to no address"))?;
    let any: std::net::SocketAddr =
        if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = std::net::UdpSocket::bind(any)?;
    if let std::net::IpAddr::V4(a) = to.ip()
        && a.is_multicast()
    {
        socket.set_multicast_ttl_v4(u32::from(ttl))?;
    }
    let clock = super::clock();
    super::fanout::DirectUdp::new(socket, to, move |bytes| {
        shared.bytes.fetch_add(bytes, Ordering::Relaxed);
        shared.hits.fetch_add(1, Ordering::Relaxed);
        shared.last_delivered_ns.store(clock.time().nseconds(), Ordering::Relaxed);
    })
}

/// A non-blocking SRT caller socket connecting to `s` (a name is resolved
/// here), counting into `shared`.
fn srt_socket(s: &crate::config::SrtEndpoint, shared: Arc<Shared>) -> Result<super::srt::DirectSrt, String> {
    use std::net::ToSocketAddrs;
    let to = (s.host.bare().as_str(), s.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "the name resolves to no address".to_owned())?;
    let clock = super::clock();
    let count = move |bytes| {
        shared.bytes.fetch_add(bytes, Ordering::Relaxed);
        shared.hits.fetch_add(1, Ordering::Relaxed);
        shared.last_delivered_ns.store(clock.time().nseconds(), Ordering::Relaxed);
    };
    super::srt::DirectSrt::connect(s, to, count).unwrap_or_else(|| Err("libsrt is not available".into()))
}

/// Sets the sink's properties from the typed ingest. The only place a secret
/// leaves its wrapper is here, into the element.
fn configure_sink(sink: &gst::Element, ingest: &Ingest) -> Result<(), MediaError> {
    match ingest {
        Ingest::Srt(s) => super::configure_srt(sink, s)?,
        Ingest::Rtmp(r) => {
            let location = match &r.stream_key {
                Some(key) => {
                    let key = key.usable().map_err(|why| MediaError::Pipeline(format!("stream_key_file: {why}")))?;
                    format!("{}/{key}", r.url)
                }
                None => r.url.clone(),
            };
            sink.set_property("location", location);
        }
        Ingest::Udp(u) => {
            sink.set_property("host", u.host.bare());
            sink.set_property("port", i32::from(u.port));
            sink.set_property("ttl-mc", i32::from(u.ttl));
            if let Some(iface) = &u.interface {
                sink.set_property("multicast-iface", iface);
            }
        }
        Ingest::Rist(r) => {
            sink.set_property("address", r.host.bare());
            sink.set_property("port", u32::from(r.port));
        }
        Ingest::File(path) => {
            sink.set_property("location", path.display().to_string());
        }
    }
    Ok(())
}

/// One numeric field of a sink's `stats` structure.
fn stat(sink: &gst::Element, field: &str) -> Option<f64> {
    let stats = sink.property::<Option<gst::Structure>>("stats")?;
    number(&stats, field)
}

fn number(s: &gst::StructureRef, field: &str) -> Option<f64> {
    s.value(field).ok().and_then(|v| v.transform::<f64>().ok()).and_then(|v| v.get::<f64>().ok())
}

/// RTT, loss and retransmits from srtsink's `stats` (a caller's own
/// figures, or the first caller's when we listen).
fn srt_figures(stats: gst::Structure) -> Option<SrtFigures> {
    // A listener reports per caller, in a GValueArray (1.22), not a GstValueArray.
    let s = match stats.value("callers") {
        Ok(callers) => {
            let first: Option<gst::glib::SendValue> = if let Ok(a) = callers.get::<gst::glib::ValueArray>() {
                a.first().and_then(|v| v.get::<gst::Structure>().ok()).map(|s| s.to_send_value())
            } else if let Ok(a) = callers.get::<gst::Array>() {
                a.first().cloned()
            } else {
                None
            };
            first?.get::<gst::Structure>().ok()?
        }
        Err(_) => stats,
    };
    let num = |field: &str| number(&s, field);
    Some(SrtFigures {
        rtt_ms: num("rtt-ms").unwrap_or(0.0),
        packets_lost: num("packets-sent-lost").unwrap_or(0.0) as u64,
        packets_retransmitted: num("packets-retransmitted").unwrap_or(0.0) as u64,
        packets_sent: num("packets-sent").unwrap_or(0.0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::backoff_delay;

    #[test]
    fn backoff_doubles_and_is_capped_with_jitter_below_the_cap() {
        let (i, m) = (Duration::from_millis(250), Duration::from_secs(2));
        assert_eq!(backoff_delay(0, i, m, 0.0), Duration::from_millis(250));
        assert_eq!(backoff_delay(2, i, m, 0.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(3, i, m, 0.0), m);
        assert_eq!(backoff_delay(40, i, m, 0.0), m);
        assert_eq!(backoff_delay(40, i, m, 1.0), Duration::from_millis(1500));
        for j in [0.0, 0.3, 0.99] {
            assert!(backoff_delay(10, i, m, j) <= m);
        }
    }
}
