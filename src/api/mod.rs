//! The gRPC control plane: tonic services that translate requests for the
//! coordinator, the bearer-token interceptor, proto <-> domain conversion,
//! and the mapping of errors to status codes (here, in one place).
//!
//! Served so far: ChannelService, `grpc.health.v1.Health` and server
//! reflection. EventService, MonitorService and RehearsalService are in the
//! proto and not yet served.

pub mod auth;
pub mod channels;
pub mod convert;

use std::future::Future;

use tokio::net::TcpListener;
use tonic::Status;

use crate::config::FieldError;
use crate::coordinator::{CoordError, Coordinator};
use crate::proto::channel_service_server::ChannelServiceServer;

/// Largest request or response message, either way.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The encoded descriptor set of `simulcast.v1` (imports included), served
/// by reflection.
pub const DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("simulcast_descriptor");

/// `INVALID_ARGUMENT` naming every offending field.
pub fn invalid(errors: Vec<FieldError>) -> Status {
    Status::invalid_argument(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
}

impl From<CoordError> for Status {
    fn from(e: CoordError) -> Self {
        match e {
            CoordError::Invalid(errs) => invalid(errs),
            CoordError::NotFound(m) => Status::not_found(m),
            CoordError::AlreadyExists(m) => Status::already_exists(m),
            CoordError::FailedPrecondition(m) => Status::failed_precondition(m),
            CoordError::Stopped => Status::unavailable("the daemon is shutting down"),
            CoordError::Store(e) => {
                tracing::error!(error = %e, "Store failed.");
                Status::internal("the daemon's store failed; see its log")
            }
        }
    }
}

/// Serves the control plane on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    coordinator: Coordinator,
    tokens: auth::Tokens,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let channels = ChannelServiceServer::new(channels::ChannelApi { coordinator })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    health.set_serving::<ChannelServiceServer<channels::ChannelApi>>().await;
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(tonic::service::interceptor::InterceptedService::new(channels, tokens.interceptor()))
        .serve_with_incoming_shutdown(incoming, async {
            shutdown.await;
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        })
        .await?;
    Ok(())
}
