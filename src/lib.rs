//! simulcast: relay one live contribution feed to every partner channel's
//! ingest (SRT, RTMP, UDP MPEG-TS, RIST, file), each leg in its own GStreamer
//! pipeline so that one partner's trouble never reaches another.
//!
//! Start with [`config`] (what an operator writes), then [`relay::Relay`]
//! (what runs it) and [`media`] (the pipelines).

pub mod alerts;
pub mod api;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod legview;
pub mod media;
pub mod observe;
pub mod packaging;
pub mod rehearsal;
pub mod relay;
pub mod schedule;
pub mod standin;
pub mod store;
pub mod table;
pub mod web;

/// Generated gRPC types for `simulcast.v1` (the control API of api.md).
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("simulcast.v1");
}

pub use config::{Channel, ChannelId, Config, Ingest};
pub use relay::{Relay, RelayStatus};
