//! Delivery: a task that POSTs each queued alert to each webhook, signed,
//! and retries with backoff until the webhook answers 2xx. What it has not
//! delivered stays in the store, so a restarted daemon carries on where
//! the killed one stopped, with the same idempotency key and the same
//! bytes (at least once; receivers de-duplicate on the key).
//!
//! The request: `POST`, `Content-Type: application/json`, the alert as
//! body, and three headers:
//! - [`KEY_HEADER`]: the alert's idempotency key;
//! - [`SIGNATURE_HEADER`]: `sha256=` and the hex HMAC-SHA256 of the body
//!   under the webhook's secret (as GitHub signs its webhooks);
//! - [`ATTEMPT_HEADER`]: 1 for the first attempt, 2 for the next, ...

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::config::Webhook;
use crate::store::{DeliveryOutcome, DueDelivery, Store, StoreError};

/// The idempotency key's header.
pub const KEY_HEADER: &str = "idempotency-key";
/// The signature's header: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-simulcast-signature-256";
/// Which attempt this is (1, 2, ...).
pub const ATTEMPT_HEADER: &str = "x-simulcast-delivery-attempt";

/// The longest one attempt may take, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// An alert not delivered this long after it was raised is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length: there is no error to meet here.
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret) else { return String::new() };
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!("sha256={}", tag.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The wait after `attempts` failed attempts: 1 s, 2 s, 4 s, ... up to
/// [`MAX_BACKOFF`].
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// What deliveries did, for the metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Alerts raised, by severity (info, ticket, page).
    pub raised: [AtomicU64; 3],
    /// Deliveries a webhook took.
    pub delivered: AtomicU64,
    /// Attempts that failed and will be made again.
    pub failed_attempts: AtomicU64,
    /// Deliveries given up (their last attempt failed too).
    pub given_up: AtomicU64,
    /// Deliveries waiting, as of the deliverer's last look.
    pub pending: AtomicU64,
}

impl Counters {
    /// Counts an alert raised.
    pub fn raised(&self, severity: super::Severity) {
        self.raised[severity as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs until `stop` says so: delivers what is due, then sleeps until the
/// next attempt is due or `wake` says an alert was queued.
pub async fn run(
    store: Arc<Store>,
    hooks: Vec<Webhook>,
    wake: Arc<Notify>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let names: Vec<String> = hooks.iter().map(|h| h.name.clone()).collect();
    match blocking(&store, move |s| s.drop_unknown_webhooks(&names)).await {
        Ok(0) => {}
        Ok(n) => warn!(deliveries = n, "Deliveries to webhooks no longer configured are given up."),
        Err(e) => error!(error = %e, "Cannot read the alert queue."),
    }
    let tls = Tls::default();
    loop {
        let now = Utc::now();
        let due = match blocking(&store, move |s| s.due_deliveries(now, 16)).await {
            Ok(d) => d,
            Err(e) => {
                error!(error = %e, "Cannot read the alert queue; trying again in 5 s.");
                Vec::new()
            }
        };
        for d in &due {
            if *stop.borrow() {
                return;
            }
            let outcome = match hooks.iter().find(|h| h.name == d.webhook) {
                // Stopping cuts an attempt short: unsettled, it is made
                // again at the next start.
                Some(hook) => tokio::select! {
                    o = attempt(hook, d, &tls) => o,
                    _ = stop.changed() => return,
                },
                None => DeliveryOutcome::GiveUp(format!("webhook `{}` is no longer configured", d.webhook)),
            };
            note(&counters, d, &outcome);
            let (key, webhook) = (d.key.clone(), d.webhook.clone());
            if let Err(e) = blocking(&store, move |s| s.settle_delivery(&key, &webhook, &outcome)).await {
                error!(error = %e, key = %d.key, "Cannot record a delivery attempt; it will be made again.");
            }
        }
        if let Ok(n) = blocking(&store, |s| s.pending_deliveries()).await {
            counters.pending.store(n, Ordering::Relaxed);
        }
        if !due.is_empty() {
            continue;
        }
        let wait = match blocking(&store, |s| s.next_delivery_due()).await {
            Ok(Some(next)) => (next - Utc::now()).to_std().unwrap_or_default(),
            Ok(None) => Duration::from_secs(3600),
            Err(_) => Duration::from_secs(5),
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
            r = stop.changed() => if r.is_err() || *stop.borrow() { return },
        }
    }
}

/// A store call off the async threads.
async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let s = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .unwrap_or_else(|e| Err(StoreError::File(std::io::Error::other(e.to_string()))))
}

fn note(counters: &Counters, d: &DueDelivery, outcome: &DeliveryOutcome) {
    let attempt = d.attempts + 1;
    match outcome {
        DeliveryOutcome::Delivered(_) => {
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            info!(key = %d.key, webhook = %d.webhook, attempt, "Alert delivered.");
        }
        DeliveryOutcome::Retry(why, next) => {
            counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
            warn!(key = %d.key, webhook = %d.webhook, attempt, error = %why, next = %next.to_rfc3339(),
                "Alert not delivered; trying again.");
        }
        DeliveryOutcome::GiveUp(why) => {
            counters.given_up.fetch_add(1, Ordering::Relaxed);
            error!(key = %d.key, webhook = %d.webhook, attempt, error = %why, "Alert delivery given up.");
        }
    }
}

/// One attempt, and what follows from it.
async fn attempt(hook: &Webhook, d: &DueDelivery, tls: &Tls) -> DeliveryOutcome {
    let attempt = d.attempts + 1;
    let result = match tokio::time::timeout(ATTEMPT_TIMEOUT, post(hook, d, attempt, tls)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
    };
    let now = Utc::now();
    match result {
        Ok(()) => DeliveryOutcome::Delivered(now),
        Err(why) => {
            let raised = d.raised_utc.parse::<DateTime<Utc>>().unwrap_or(now);
            if (now - raised).to_std().unwrap_or_default() >= GIVE_UP_AFTER {
                DeliveryOutcome::GiveUp(format!("{why}; undelivered for {} h", GIVE_UP_AFTER.as_secs() / 3600))
            } else {
                DeliveryOutcome::Retry(why, now + crate::schedule::chrono_duration(backoff(attempt)))
            }
        }
    }
}

/// TLS for `https://` webhooks: the system's roots (or `SSL_CERT_FILE`),
/// loaded at the first https delivery.
#[derive(Default)]
struct Tls(tokio::sync::OnceCell<Result<tokio_rustls::TlsConnector, String>>);

impl Tls {
    async fn connector(&self) -> Result<&tokio_rustls::TlsConnector, String> {
        self.0.get_or_init(|| async { make_connector() }).await.as_ref().map_err(Clone::clone)
    }
}

fn make_connector() -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("no trusted certificate authority found on this machine ({:?})", found.errors));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// POSTs `d` to `hook`; `Ok` when it answered 2xx.
async fn post(hook: &Webhook, d: &DueDelivery, attempt: u32, tls: &Tls) -> Result<(), String> {
    let uri = &hook.url;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let request = http::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, uri.authority().map_or(host.as_str(), |a| a.as_str()))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("simulcast/", env!("CARGO_PKG_VERSION")))
        .header(KEY_HEADER, &d.key)
        .header(SIGNATURE_HEADER, signature(hook.secret.expose().as_bytes(), d.body.as_bytes()))
        .header(ATTEMPT_HEADER, attempt.to_string())
        .body(Full::new(Bytes::from(d.body.clone())))
        .map_err(|e| format!("cannot make the request: {e}"))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let status = if https {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("`{host}` is not a TLS server name: {e}"))?;
        let stream = tls.connector().await?.connect(name, tcp).await.map_err(|e| format!("TLS with {host}: {e}"))?;
        exchange(stream, request).await?
    } else {
        exchange(tcp, request).await?
    };
    if status.is_success() { Ok(()) } else { Err(format!("HTTP {status}")) }
}

async fn exchange<S>(io: S, request: http::Request<Full<Bytes>>) -> Result<http::StatusCode, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let driver = tokio::spawn(conn);
    let answer = sender.send_request(request).await.map_err(|e| format!("HTTP: {e}"));
    driver.abort();
    Ok(answer?.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_as_rfc_4231_computes_it() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        let waits: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
