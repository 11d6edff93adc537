//! The gRPC control plane: tonic services that translate requests for the
//! coordinator, the bearer-token interceptor, proto <-> domain conversion,
//! and the mapping of errors to status codes (here, in one place).
//!
//! Served: ChannelService, EventService, MonitorService,
//! `grpc.health.v1.Health` (SERVING only while the relay is healthy) and
//! server reflection, RehearsalService, AlertService and NodeService.
//! Every RPC is counted by [`GrpcMetricsLayer`]; with a second listener,
//! `/metrics` and `/healthz` are served there (see [`crate::observe`]).

pub mod alerts;
pub mod auth;
pub mod channels;
pub mod convert;
pub mod events;
pub mod monitor;
pub mod nodes;
pub mod rehearsals;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;

use crate::config::FieldError;
use crate::coordinator::{CoordError, Coordinator};
use crate::observe::metrics::{GrpcMetricsLayer, Metrics};
use crate::proto::alert_service_server::AlertServiceServer;
use crate::proto::channel_service_server::ChannelServiceServer;
use crate::proto::event_service_server::EventServiceServer;
use crate::proto::monitor_service_server::MonitorServiceServer;
use crate::proto::node_service_server::NodeServiceServer;
use crate::proto::rehearsal_service_server::RehearsalServiceServer;
use crate::store::StoreError;

/// Largest request or response message, either way.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The encoded descriptor set of `simulcast.v1` (imports included), served
/// by reflection.
pub const DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("simulcast_descriptor");

/// The services whose health is reported (besides the overall `""`).
pub const SERVICES: [&str; 6] = [
    "simulcast.v1.AlertService",
    "simulcast.v1.ChannelService",
    "simulcast.v1.EventService",
    "simulcast.v1.MonitorService",
    "simulcast.v1.NodeService",
    "simulcast.v1.RehearsalService",
];

/// `INVALID_ARGUMENT` naming every offending field.
pub fn invalid(errors: Vec<FieldError>) -> Status {
    const LISTED: usize = 10;
    let mut text: Vec<String> = errors.iter().take(LISTED).map(|e| bounded(e.to_string(), 400)).collect();
    if errors.len() > LISTED {
        text.push(format!("and {} more problem(s)", errors.len() - LISTED));
    }
    Status::invalid_argument(text.join("; "))
}

/// The longest error message the control plane sends.
pub const MAX_ERROR_CHARS: usize = 4096;

/// `m` cut to `max` characters, saying so: an error message stays small
/// whatever a request held (a default gRPC client refuses large ones).
fn bounded(m: String, max: usize) -> String {
    match m.char_indices().nth(max) {
        None => m,
        Some((at, _)) => format!("{}… (cut)", &m[..at]),
    }
}

impl From<CoordError> for Status {
    fn from(e: CoordError) -> Self {
        match e {
            CoordError::Invalid(errs) => invalid(errs),
            CoordError::NotFound(m) => Status::not_found(bounded(m, MAX_ERROR_CHARS)),
            CoordError::AlreadyExists(m) => Status::already_exists(bounded(m, MAX_ERROR_CHARS)),
            CoordError::FailedPrecondition(m) => Status::failed_precondition(bounded(m, MAX_ERROR_CHARS)),
            CoordError::Unimplemented(m) => Status::unimplemented(bounded(m, MAX_ERROR_CHARS)),
            CoordError::Relay(m) => Status::internal(bounded(m, MAX_ERROR_CHARS)),
            CoordError::Stopped => Status::unavailable("the daemon is shutting down"),
            CoordError::Unavailable(m) => Status::unavailable(bounded(m, MAX_ERROR_CHARS)),
            CoordError::Store(StoreError::Shared(m)) => Status::unavailable(bounded(m, MAX_ERROR_CHARS)),
            CoordError::Store(e) => {
                tracing::error!(error = %e, "Store failed.");
                Status::internal("the daemon's store failed; see its log")
            }
        }
    }
}

/// A certificate chain and key, PEM, for TLS on the gRPC port.
#[derive(Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert_pem: Vec<u8>,
    /// Private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFiles { .. }")
    }
}

/// Whether `tls` makes a server configuration (a certificate and key that
/// parse), so a daemon can refuse them before it touches its store.
pub fn check_tls(tls: &TlsFiles) -> Result<(), tonic::transport::Error> {
    let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
    tonic::transport::Server::builder().tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    Ok(())
}

/// The daemon's HTTP ports beside the gRPC one.
#[derive(Debug, Default)]
pub struct HttpPorts {
    /// `/metrics`, `/healthz`, and the multiviewer page unless the gRPC
    /// port has TLS (this port is plain HTTP).
    pub metrics: Option<TcpListener>,
    /// The multiviewer page alone, over TLS when the gRPC port has it.
    pub web: Option<TcpListener>,
}

/// What the daemon serves besides its ports.
#[derive(Debug)]
pub struct Served {
    /// The one owner of state.
    pub coordinator: Coordinator,
    /// Accepted tokens.
    pub tokens: auth::Tokens,
    /// TLS for the gRPC port (and the page's port), if any.
    pub tls: Option<TlsFiles>,
    /// The cluster this node is in, if any (NodeService answers from it).
    pub cluster: Option<crate::cluster::Cluster>,
}

/// Serves the control plane on `listener` until `shutdown` resolves, and
/// `/metrics`, `/healthz` and the multiviewer page on the `http` ports.
pub async fn serve(
    listener: TcpListener,
    served: Served,
    http: HttpPorts,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Served { coordinator, tokens, tls, cluster } = served;
    let metrics = Metrics::new(coordinator.subscribe(), tokens.guard(), cluster.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    let interceptor = tokens.interceptor();
    let channels = ChannelServiceServer::new(channels::ChannelApi { coordinator: coordinator.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let events = EventServiceServer::new(events::EventApi { coordinator: coordinator.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let rehearsals = RehearsalServiceServer::new(rehearsals::RehearsalApi { coordinator: coordinator.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let alerts = AlertServiceServer::new(alerts::AlertApi { coordinator: coordinator.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let forward = crate::cluster::forward::ForwardLayer(cluster.clone());
    let nodes = NodeServiceServer::new(nodes::NodeApi { cluster: cluster.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let monitor = MonitorServiceServer::new(monitor::MonitorApi {
        coordinator: coordinator.clone(),
        closing: closing_rx.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);

    // Health follows the coordinator's snapshots: SERVING while the relay
    // is healthy, NOT_SERVING when it is not or the daemon is stopping.
    // `/healthz` reads `serving`, set in the same step as the gRPC status.
    let (stop_health, mut stop_health_rx) = tokio::sync::watch::channel(false);
    let (serving_tx, serving) = tokio::sync::watch::channel(false);
    let mut snaps = coordinator.subscribe();
    let reporter = health.clone();
    let health_task = tokio::spawn(async move {
        let mut last = None;
        loop {
            let healthy = snaps.borrow_and_update().healthy && !*stop_health_rx.borrow();
            if last != Some(healthy) {
                let status = if healthy { ServingStatus::Serving } else { ServingStatus::NotServing };
                for name in std::iter::once("").chain(SERVICES) {
                    reporter.set_service_status(name, status).await;
                }
                serving_tx.send_replace(healthy);
                tracing::info!(healthy, "Health changed.");
                last = Some(healthy);
            }
            tokio::select! {
                r = snaps.changed() => if r.is_err() { break },
                r = stop_health_rx.changed() => if r.is_err() { break },
            }
        }
        serving_tx.send_replace(false);
        for name in std::iter::once("").chain(SERVICES) {
            reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
    });

    let systemd = crate::observe::systemd::Notifier::from_env().map(|n| {
        let serving = serving.clone();
        tokio::spawn(async move {
            crate::observe::systemd::follow(n, serving).await;
        })
    });

    let page = crate::web::routes(tokens.clone(), coordinator.clone(), closing_rx.clone(), cluster.clone());
    let web_config = match &tls {
        Some(t) if http.web.is_some() => Some(crate::web::tls::server_config(t)?),
        _ => None,
    };
    let web_addr = http.web.as_ref().map(TcpListener::local_addr).transpose()?;
    let web_task = http.web.map(|l| {
        let (page, mut closing) = (page.clone(), closing_rx.clone());
        tokio::spawn(async move {
            let closed = async move {
                let _ = closing.wait_for(|c| *c).await;
            };
            if let Err(e) = crate::web::serve(l, web_config, page, closed).await {
                tracing::error!(error = %e, "The page's port failed.");
            }
        })
    });
    // A plain-HTTP port does not carry the page beside a TLS gRPC port.
    let page = if tls.is_some() { crate::web::refused_without_tls(web_addr) } else { page };
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_task = http.metrics.map(|l| {
        let (m, serving) = (Arc::clone(&metrics), serving.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::observe::http::serve(l, m, serving, page, async {
                let _ = http_stopped.await;
            })
            .await
            {
                tracing::error!(error = %e, "The metrics port failed.");
            }
        })
    });

    // Reflection in both versions: older grpcurl and grpcui builds and
    // Python's grpcio-reflection speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let reflection = reflection().build_v1()?;
    // Nagle and the client's delayed ACK held every response ~40 ms: a
    // reply goes out in more than one write. Off on every accepted socket.
    let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| {
        s.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::warn!(error = %e, "Cannot set TCP_NODELAY on a control connection.");
            }
        })
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        let identity = tonic::transport::Identity::from_pem(t.cert_pem, t.key_pem);
        builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    let result = builder
        .layer(GrpcMetricsLayer(Arc::clone(&metrics)))
        .layer(forward)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(InterceptedService::new(channels, interceptor.clone()))
        .add_service(InterceptedService::new(events, interceptor.clone()))
        .add_service(InterceptedService::new(monitor, interceptor.clone()))
        .add_service(InterceptedService::new(nodes, interceptor.clone()))
        .add_service(InterceptedService::new(rehearsals, interceptor.clone()))
        .add_service(InterceptedService::new(alerts, interceptor))
        .serve_with_incoming_shutdown(incoming, async {
            shutdown.await;
            if let Some(n) = crate::observe::systemd::Notifier::from_env() {
                n.notify("STOPPING=1");
            }
            let _ = stop_health.send(true);
            let _ = closing.send(true);
        })
        .await;
    // The health task's last word is NOT_SERVING, to every service and to
    // systemd: it ends once its stop sender is gone, after saying so.
    drop(stop_health);
    if tokio::time::timeout(std::time::Duration::from_secs(2), health_task).await.is_err() {
        tracing::warn!("The health task did not end within 2 s.");
    }
    if let Some(t) = systemd
        && tokio::time::timeout(std::time::Duration::from_secs(1), t).await.is_err()
    {
        tracing::warn!("The systemd notifier did not end within 1 s.");
    }
    let _ = http_stop.send(());
    if let Some(t) = http_task {
        let _ = t.await;
    }
    if let Some(t) = web_task {
        let _ = t.await;
    }
    result?;
    Ok(())
}
