//! Prometheus metrics (text exposition format, `prometheus-client`).
//!
//! Two kinds: the gRPC request counters and latency histograms, updated by
//! a tower layer around every RPC ([`GrpcMetricsLayer`]); and everything
//! about the daemon's state (events, legs, sources, rehearsals), read at
//! scrape time from the coordinator's latest snapshot, so a scrape always
//! sees one consistent state and nothing is counted twice. Labels are
//! channel, event and feed names and codes, never a secret.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::coordinator::Snapshot;
use crate::media::failover::Feed;
use crate::media::leg::LegState;
use crate::media::source::SourceStatus;
use crate::schedule::EventState;

/// The `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Latency buckets of RPCs, in seconds (0.5 ms to about 16 s).
fn rpc_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: String,
    code: String,
}

/// The daemon's metrics: the registry and the families updated in place.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RpcLabels, Counter>,
    latency: Family<RpcLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// Metrics over the coordinator's snapshots and the control plane's
    /// failed logins, and the node's view of its cluster in cluster mode.
    pub fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        logins: Arc<crate::api::auth::LoginGuard>,
        cluster: Option<crate::cluster::Cluster>,
    ) -> Arc<Self> {
        let mut registry = Registry::with_prefix("simulcast");
        let requests = Family::<RpcLabels, Counter>::default();
        let latency = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(rpc_buckets);
        registry.register("grpc_requests", "gRPC requests answered, by RPC and status code.", requests.clone());
        registry.register(
            "grpc_request_duration_seconds",
            "Time from a gRPC request to its response headers, by RPC and status code.",
            latency.clone(),
        );
        registry.register_collector(Box::new(StateCollector { snapshots }));
        registry.register_collector(Box::new(LoginCollector(logins)));
        if let Some(c) = cluster {
            registry.register_collector(Box::new(ClusterCollector(c)));
        }
        Arc::new(Self { registry, requests, latency })
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a collector error would be ours.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "Metrics could not be encoded.");
        }
        out
    }

    /// Counts one answered RPC.
    pub fn observe_rpc(&self, rpc: &str, code: &str, seconds: f64) {
        let labels = RpcLabels { rpc: rpc.to_owned(), code: code.to_owned() };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }
}

/// Failed logins, by reason.
#[derive(Debug)]
struct LoginCollector(Arc<crate::api::auth::LoginGuard>);

impl prometheus_client::collector::Collector for LoginCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::api::auth::Failure;
        Fam { enc: &mut enc }.counter(
            "auth_failures",
            "Control-plane calls refused before any work: no token, a malformed header, an unknown token, \
             or refused unheard from a peer that kept failing (blocked).",
            Failure::ALL.iter().map(|f| ([("reason", f.as_str().to_owned())] as L1, self.0.count(*f))),
        )
    }
}

/// Cluster mode: this node's own view, read at scrape time.
#[derive(Debug)]
struct ClusterCollector(crate::cluster::Cluster);

impl prometheus_client::collector::Collector for ClusterCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let v = self.0.view();
        let node = || [("node", self.0.node().to_owned())] as L1;
        let mut f = Fam { enc: &mut enc };
        f.gauge(
            "cluster_leader",
            "1 while this node leads (runs master control and carries the legs), by its own fenced view.",
            [(node(), f64::from(u8::from(v.leads())))],
        )?;
        f.gauge(
            "cluster_failsafe",
            "1 while this node sends on its peers' word: etcd answers nobody (a leader has every node that may lead say so; a follower has the leader's word). 0 with cluster_etcd_up 0: this node is cut off alone, and its legs stop at its lease's end.",
            [(node(), f64::from(u8::from(v.failsafe && v.lease_until.is_some_and(|u| std::time::Instant::now() < u))))],
        )?;
        f.gauge(
            "cluster_etcd_up",
            "1 while etcd answers this node's lease renewals; 0 once a request failed or went unanswered.",
            [(node(), f64::from(u8::from(v.etcd.is_ok())))],
        )?;
        let left = v.lease_until.map_or(0.0, |u| u.saturating_duration_since(std::time::Instant::now()).as_secs_f64());
        f.gauge(
            "cluster_lease_remaining_seconds",
            "Until this node's lease, as last renewed, runs out: past it, its legs send nothing.",
            [(node(), left)],
        )?;
        f.counter(
            "cluster_leadership_changes",
            "Times this node won or lost the leadership since it started.",
            [(node(), v.elections)],
        )
    }
}

/// The state part: one look at the latest snapshot per scrape.
#[derive(Debug)]
struct StateCollector {
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

/// One family written by the collector.
struct Fam<'a, 'b> {
    enc: &'b mut DescriptorEncoder<'a>,
}

impl Fam<'_, '_> {
    fn gauge<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (L, f64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut m = self.enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in rows {
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn counter<L: EncodeLabelSet, N: prometheus_client::encoding::EncodeCounterValue>(
        &mut self,
        name: &str,
        help: &str,
        rows: impl IntoIterator<Item = (L, N)>,
    ) -> Result<(), std::fmt::Error> {
        let mut m = self.enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in rows {
            ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

type L1 = [(&'static str, String); 1];
type L2 = [(&'static str, String); 2];

const LEG_STATES: [LegState; 6] = [
    LegState::Idle,
    LegState::Connecting,
    LegState::OnAir,
    LegState::Reconnecting,
    LegState::Failed,
    LegState::Stopped,
];

fn b(x: bool) -> f64 {
    if x { 1.0 } else { 0.0 }
}

impl prometheus_client::collector::Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = Arc::clone(&self.snapshots.borrow());
        let mut f = Fam { enc: &mut enc };
        let now = chrono::Utc::now();

        f.gauge(
            "healthy",
            "1 while the daemon can relay (what gRPC health and /healthz report), else 0.",
            [([("daemon", "simulcastd".to_owned())] as L1, b(snap.healthy))],
        )?;

        f.gauge(
            "store_unreadable_events",
            "Stored events the daemon could not read at start: left out of the schedule, kept in the store.",
            [([("daemon", "simulcastd".to_owned())] as L1, snap.unreadable_events as f64)],
        )?;

        f.counter(
            "store_write_failures",
            "Store writes that failed (each lost with the rest of its turn's writes; the schedule was read back).",
            [([("daemon", "simulcastd".to_owned())] as L1, snap.store_write_failures)],
        )?;

        let a = &snap.alerts;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        f.counter(
            "alerts_raised",
            "Alerts raised, by severity (page: near or during air time; ticket: earlier; info: news).",
            [crate::alerts::Severity::Info, crate::alerts::Severity::Ticket, crate::alerts::Severity::Page]
                .map(|s| ([("severity", s.as_str().to_owned())] as L1, n(&a.raised[s as usize]))),
        )?;
        f.counter(
            "alert_delivery_attempts",
            "Webhook delivery attempts, by outcome (delivered, failed: tried again, given_up: expired or unconfigured).",
            [("delivered", n(&a.delivered)), ("failed", n(&a.failed_attempts)), ("given_up", n(&a.given_up))]
                .map(|(o, v)| ([("outcome", o.to_owned())] as L1, v)),
        )?;
        f.gauge(
            "alert_deliveries_pending",
            "Alert deliveries not yet taken by their webhook (kept in the store across restarts).",
            [([("daemon", "simulcastd".to_owned())] as L1, n(&a.pending) as f64)],
        )?;

        let turns = snap.loop_times.all();
        // One row per kind of work, with `v` of its turns.
        fn by_work<N>(
            turns: &[(&'static str, crate::coordinator::busy::Turns)],
            v: impl Fn(&crate::coordinator::busy::Turns) -> N,
        ) -> impl Iterator<Item = (L1, N)> {
            turns.iter().map(move |(w, t)| ([("work", (*w).to_owned())] as L1, v(t)))
        }
        f.counter(
            "control_loop_turns",
            "Turns of master control's loop, by what each did (command:<rpc>, tick, relay-stopped); \
             every RPC and status update waits while one runs.",
            by_work(&turns, |t| t.count),
        )?;
        f.counter(
            "control_loop_busy_seconds",
            "Time master control's loop spent in its turns, by work.",
            by_work(&turns, |t| t.busy.as_secs_f64()),
        )?;
        f.counter(
            "control_loop_slow_turns",
            "Turns of master control's loop longer than 10 ms (the control plane's target), by work.",
            by_work(&turns, |t| t.slow),
        )?;
        f.gauge(
            "control_loop_longest_turn_seconds",
            "The longest turn of master control's loop since the daemon started, by work.",
            by_work(&turns, |t| t.longest.as_secs_f64()),
        )?;

        // Events not over yet, and the one whose relay runs.
        let live_id = snap.live.as_ref().map(|l| l.event_id.0.clone());
        let current: Vec<_> =
            snap.events.iter().filter(|e| !e.state.is_final() || Some(&e.id.0) == live_id.as_ref()).collect();
        f.gauge(
            "event_state",
            "1 for the state each event not yet over is in, 0 for the others.",
            current.iter().flat_map(|e| {
                EventState::ALL
                    .iter()
                    .map(move |s| ([("event", e.id.0.clone()), ("state", s.to_string())] as L2, b(*s == e.state)))
            }),
        )?;
        f.gauge(
            "event_seconds_to_t0",
            "Seconds from now to each event's T0 (negative once past).",
            current
                .iter()
                .map(|e| ([("event", e.id.0.clone())] as L1, (e.on_air - now).num_milliseconds() as f64 / 1000.0)),
        )?;

        // The running event's sources and legs.
        let live = snap.live.as_ref();
        let feeds: Vec<(&str, &SourceStatus)> = live
            .map(|l| std::iter::once(("primary", &l.source)).chain(l.backup.as_ref().map(|s| ("backup", s))).collect())
            .unwrap_or_default();
        let fl = |name: &str| [("feed", name.to_owned())] as L1;
        f.gauge(
            "source_healthy",
            "1 while a contribution feed decodes pictures and carries no garbage.",
            feeds.iter().map(|(n, s)| (fl(n), b(s.healthy))),
        )?;
        f.counter(
            "source_bytes_received",
            "Bytes received from a contribution feed.",
            feeds.iter().map(|(n, s)| (fl(n), s.bytes_in)),
        )?;
        f.counter(
            "source_garbage_bytes",
            "Bytes received from a feed that were not MPEG-TS.",
            feeds.iter().map(|(n, s)| (fl(n), s.garbage_bytes)),
        )?;
        f.counter(
            "source_frames_decoded",
            "Pictures received from a feed: access units as they come (in transcode, before they wait to be decoded).",
            feeds.iter().map(|(n, s)| (fl(n), s.frames)),
        )?;
        f.counter(
            "source_restarts",
            "Restarts of a feed's pipeline after errors.",
            feeds.iter().map(|(n, s)| (fl(n), u64::from(s.restarts))),
        )?;
        f.gauge(
            "source_in_use",
            "1 for what the legs carry now (primary, backup or slate), 0 for the others.",
            live.into_iter().flat_map(|l| {
                [Feed::Primary, Feed::Backup, Feed::Slate]
                    .map(|c| ([("source", c.as_str().to_ascii_lowercase())] as L1, b(l.source_in_use == c)))
            }),
        )?;

        f.gauge(
            "program_info",
            "One series while a relay runs: the program mode and the format on air (video codec, profile, size, \
             scan, frame rate, audio tracks as codec:language).",
            live.map(|l| {
                let p = &l.program;
                let v = p.format.video.as_ref();
                let rate = v.map_or(String::new(), |v| match v.framerate {
                    (n, d) if n > 0 && d > 0 => format!("{}", (f64::from(n) / f64::from(d) * 100.0).round() / 100.0),
                    _ => String::new(),
                });
                let audio: Vec<String> = p
                    .format
                    .audio
                    .iter()
                    .map(|a| format!("{}:{}", a.codec.as_str(), a.language.as_deref().unwrap_or("und")))
                    .collect();
                (
                    [
                        ("mode", p.mode.as_str().to_owned()),
                        ("video_codec", v.map_or(String::new(), |v| v.codec.as_str().to_owned())),
                        ("profile", v.and_then(|v| v.profile.clone()).unwrap_or_default()),
                        ("size", v.map_or(String::new(), |v| format!("{}x{}", v.width, v.height))),
                        ("scan", v.map_or("", |v| if v.interlaced { "interlaced" } else { "progressive" }).to_owned()),
                        ("framerate", rate),
                        ("audio", audio.join(",")),
                    ],
                    1.0,
                )
            }),
        )?;

        let legs: Vec<_> = live.map(|l| l.legs.iter().collect()).unwrap_or_default();
        let cl = |id: &str| [("channel", id.to_owned())] as L1;
        f.gauge(
            "leg_info",
            "One series per leg of the running event: its protocol, zone, and (cluster mode) the node carrying \
             it; join on `channel` to label any leg family by node.",
            legs.iter().map(|v| {
                let s = &v.status;
                (
                    [
                        ("channel", s.channel_id.clone()),
                        ("protocol", s.protocol.to_owned()),
                        ("timezone", v.timezone.name().to_owned()),
                        ("node", v.node.clone().or_else(|| live.and_then(|l| l.node.clone())).unwrap_or_default()),
                    ],
                    1.0,
                )
            }),
        )?;
        f.gauge(
            "leg_state",
            "1 for the state each leg is in, 0 for the others.",
            legs.iter().flat_map(|v| {
                LEG_STATES.iter().map(move |st| {
                    (
                        [("channel", v.status.channel_id.clone()), ("state", st.to_string())] as L2,
                        b(*st == v.status.state),
                    )
                })
            }),
        )?;
        // Counters read live where the leg runs (see `Live::meters`).
        let meter = |id: &str| live.and_then(|l| l.meters.iter().find(|(c, _)| c == id).map(|(_, m)| m));
        f.counter(
            "leg_bytes_sent",
            "Bytes handed to a leg's protocol sink.",
            legs.iter().map(|v| {
                let id = &v.status.channel_id;
                (cl(id), meter(id).map_or(v.status.bytes_sent, |m| m.bytes_sent()))
            }),
        )?;
        f.gauge(
            "leg_bitrate_bytes_per_second",
            "A leg's output over the last second, in bytes (bits / 8).",
            legs.iter().map(|v| (cl(&v.status.channel_id), v.status.bitrate_bps as f64 / 8.0)),
        )?;
        f.counter(
            "leg_reconnects",
            "Pipeline rebuilds of a leg after its ingest failed.",
            legs.iter().map(|v| {
                let id = &v.status.channel_id;
                (cl(id), u64::from(meter(id).map_or(v.status.reconnects, |m| m.reconnects())))
            }),
        )?;
        f.counter(
            "leg_dropped_buffers",
            "Buffers a leg did not deliver because its input queue was full.",
            legs.iter().map(|v| {
                let id = &v.status.channel_id;
                (cl(id), meter(id).map_or(v.status.dropped_buffers, |m| m.dropped_buffers()))
            }),
        )?;
        f.counter(
            "leg_break_cues",
            "SCTE-35 ad-break cue sections a leg sent (each break: out and in, each twice).",
            legs.iter().map(|v| (cl(&v.status.channel_id), v.status.cues_sent)),
        )?;
        f.counter(
            "leg_break_cues_missed",
            "Ad-break cues a leg could not send before their instant (no picture had gone out to time them by).",
            legs.iter().map(|v| (cl(&v.status.channel_id), v.status.cues_missed)),
        )?;
        f.gauge(
            "leg_carrying_program",
            "1 while a leg carries the programme, 0 while it carries the slate.",
            legs.iter()
                .map(|v| (cl(&v.status.channel_id), b(v.status.carries == crate::media::program::Content::Program))),
        )?;
        f.gauge(
            "leg_t0_error_seconds",
            "When a leg's first programme picture went out, minus its air time (T0 plus its delay).",
            legs.iter().filter_map(|v| v.t0_error_s.map(|e| (cl(&v.status.channel_id), e))),
        )?;
        f.gauge(
            "rehearsal_running",
            "1 while a rehearsal runs.",
            [([("daemon", "simulcastd".to_owned())] as L1, b(snap.rehearsal.is_some()))],
        )?;
        f.gauge(
            "rehearsal_passed",
            "The verdict of each event's latest finished rehearsal: 1 passed, 0 failed.",
            snap.verdicts.iter().map(|r| ([("event", r.event_id.clone())] as L1, b(r.passed))),
        )?;
        f.gauge(
            "rehearsal_leg_passed",
            "Each leg's verdict in its event's latest finished rehearsal: 1 passed, 0 failed.",
            snap.verdicts.iter().flat_map(|r| {
                r.legs
                    .iter()
                    .map(|l| ([("event", r.event_id.clone()), ("channel", l.channel_id.clone())] as L2, b(l.passed)))
            }),
        )?;
        f.gauge(
            "rehearsal_finished_timestamp_seconds",
            "When each event's latest rehearsal finished (Unix time).",
            snap.verdicts.iter().filter_map(|r| {
                r.finished_at.map(|t| ([("event", r.event_id.clone())] as L1, t.timestamp_millis() as f64 / 1000.0))
            }),
        )?;
        let srt: Vec<_> =
            legs.iter().filter_map(|v| v.status.srt.as_ref().map(|s| (v.status.channel_id.as_str(), s))).collect();
        f.gauge(
            "leg_srt_rtt_seconds",
            "Round-trip time of an SRT leg.",
            srt.iter().map(|(id, s)| (cl(id), s.rtt_ms / 1000.0)),
        )?;
        f.counter(
            "leg_srt_packets_sent",
            "Packets an SRT leg sent.",
            srt.iter().map(|(id, s)| (cl(id), s.packets_sent)),
        )?;
        f.counter(
            "leg_srt_packets_lost",
            "Packets an SRT leg's receiver reported lost.",
            srt.iter().map(|(id, s)| (cl(id), s.packets_lost)),
        )?;
        f.counter(
            "leg_srt_packets_retransmitted",
            "Packets an SRT leg sent again.",
            srt.iter().map(|(id, s)| (cl(id), s.packets_retransmitted)),
        )?;
        Ok(())
    }
}

/// The gRPC status name of a numeric code (`grpc-status`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `rpc` label of a request path: `simulcast.v1.EventService/Arm`, or
/// `other` for a service not served here (so that callers cannot grow the
/// label set at will).
fn rpc_label(path: &str) -> String {
    let p = path.trim_start_matches('/');
    let known = ["simulcast.v1.", "grpc.health.v1.", "grpc.reflection.v1"];
    if known.iter().any(|k| p.starts_with(k)) && p.len() <= 96 && p.matches('/').count() == 1 {
        p.to_owned()
    } else {
        "other".to_owned()
    }
}

/// A tower layer counting every RPC by path and status code. The code is
/// the `grpc-status` header of the response (tonic's trailers-only errors)
/// or `OK` when the answer starts normally; the time is to the headers.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner, metrics: Arc::clone(&self.0) }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let rpc = rpc_label(req.uri().path());
        let start = Instant::now();
        let metrics = Arc::clone(&self.metrics);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            let code = match &r {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or("OK", |n| code_name(tonic::Code::from_i32(n))),
                Err(_) => "UNAVAILABLE",
            };
            metrics.observe_rpc(&rpc, code, start.elapsed().as_secs_f64());
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_labels_are_bounded_to_served_services() {
        assert_eq!(rpc_label("/simulcast.v1.EventService/Arm"), "simulcast.v1.EventService/Arm");
        assert_eq!(rpc_label("/grpc.health.v1.Health/Check"), "grpc.health.v1.Health/Check");
        assert_eq!(rpc_label("/evil.Service/x"), "other");
        assert_eq!(rpc_label("/simulcast.v1.EventService/a/b"), "other");
    }

    #[test]
    fn an_idle_daemon_exposes_its_health_and_rpc_counts() {
        let (_tx, rx) = watch::channel(Arc::new(Snapshot::initial()));
        let m = Metrics::new(rx, Arc::default(), None);
        m.observe_rpc("simulcast.v1.EventService/Arm", "FAILED_PRECONDITION", 0.002);
        let text = m.render();
        assert!(text.contains("simulcast_healthy{daemon=\"simulcastd\"} 0"), "{text}");
        assert!(
            text.contains(
                "simulcast_grpc_requests_total{rpc=\"simulcast.v1.EventService/Arm\",code=\"FAILED_PRECONDITION\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("simulcast_grpc_request_duration_seconds_count{"), "{text}");
    }

    #[test]
    fn rehearsal_verdicts_are_exposed_per_event_and_leg() {
        use crate::rehearsal::{Plan, Report};
        let mut r = Report::new("rh-1".into(), "ev-1".into(), "op".into(), Plan::default(), chrono::Utc::now(), &[]);
        r.program_at = Some(chrono::Utc::now());
        crate::rehearsal::conclude(&mut r, None, chrono::Utc::now());
        let snap = Snapshot { verdicts: Arc::new(vec![r]), ..Snapshot::initial() };
        let (_tx, rx) = watch::channel(Arc::new(snap));
        let text = Metrics::new(rx, Arc::default(), None).render();
        assert!(text.contains("simulcast_rehearsal_passed{event=\"ev-1\"} 0"), "{text}");
        assert!(text.contains("simulcast_rehearsal_running{daemon=\"simulcastd\"} 0"), "{text}");
    }
}
