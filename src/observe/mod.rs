//! Observability: Prometheus metrics and the `/metrics` + `/healthz` HTTP
//! port, logs (text or JSON, GStreamer's included), and the secret scrubber
//! every log line goes through.

pub mod http;
pub mod logs;
pub mod metrics;
pub mod redact;
pub mod systemd;
