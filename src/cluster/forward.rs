//! A follower forwards master control's RPCs to the leader, so an operator
//! may ask any node: the leader's coordinator stays the one owner of the
//! schedule, and a write is applied once. Health, reflection and
//! `NodeService` are answered by every node itself.
//!
//! The request goes as it came (headers, token and deadline included, the
//! body streamed both ways, `WatchStatus` too); the leader checks the
//! token. A request is forwarded once at most: one that arrives forwarded
//! at a node that does not lead (leadership moved on the way) is answered
//! `UNAVAILABLE`, as is one that finds no leader or a leader that does not
//! answer. The client retries.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::Status;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceExt;

use super::Cluster;

/// How long a follower that knows no leader asks etcd for one.
const LOOK_UP: Duration = Duration::from_millis(500);

/// The header a forwarded request carries: the node that forwarded it.
pub const FORWARDED_BY: &str = "x-simulcast-forwarded-by";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether every node answers `path` itself.
fn answered_here(path: &str) -> bool {
    path.starts_with("/grpc.") || path.starts_with("/simulcast.v1.NodeService/")
}

/// The layer; with no cluster it passes every request through.
#[derive(Debug, Clone)]
pub struct ForwardLayer(pub Option<Cluster>);

impl<S> tower::Layer<S> for ForwardLayer {
    type Service = Forward<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Forward { inner, cluster: self.0.clone(), to: Arc::default() }
    }
}

/// See [`ForwardLayer`].
#[derive(Debug, Clone)]
pub struct Forward<S> {
    inner: S,
    cluster: Option<Cluster>,
    /// The channel to the leader last forwarded to, by its address.
    to: Arc<Mutex<Option<(String, Channel)>>>,
}

/// A channel to `address` (TLS checked against `ca`, when the nodes speak
/// it), kept in `to` while the leader stays there.
fn channel(to: &Mutex<Option<(String, Channel)>>, address: &str, ca: Option<&[u8]>) -> Result<Channel, String> {
    let mut to = to.lock().map_err(|_| "the forwarding channel's lock is poisoned".to_owned())?;
    if let Some((a, c)) = to.as_ref()
        && a == address
    {
        return Ok(c.clone());
    }
    let endpoint = super::peer_endpoint(address, ca)
        .map_err(|e| format!("the leader: {e}"))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    let c = endpoint.connect_lazy();
    *to = Some((address.to_owned(), c.clone()));
    Ok(c)
}

fn refuse(s: Status) -> Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>> {
    Box::pin(std::future::ready(Ok(s.into_http())))
}

impl<S> tower::Service<http::Request<Body>> for Forward<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let view = match &self.cluster {
            Some(c) if !answered_here(req.uri().path()) => c.view(),
            _ => {
                let f = self.inner.call(req);
                return Box::pin(async move { f.await.map_err(Into::into) });
            }
        };
        if view.leads() {
            let f = self.inner.call(req);
            return Box::pin(async move { f.await.map_err(Into::into) });
        }
        let me = self.cluster.as_ref().map(|c| c.node().to_owned()).unwrap_or_default();
        if let Some(by) = req.headers().get(FORWARDED_BY) {
            let by = String::from_utf8_lossy(by.as_bytes()).chars().take(64).collect::<String>();
            return refuse(Status::unavailable(format!(
                "{by} forwarded this to {me}, which does not lead: leadership moved; retry"
            )));
        }
        if let Ok(v) = http::HeaderValue::from_str(&me) {
            req.headers_mut().insert(FORWARDED_BY, v);
        }
        let (cluster, to) = (self.cluster.clone(), Arc::clone(&self.to));
        Box::pin(async move {
            let (leader, ca) = match &cluster {
                Some(c) => (c.other_leader(LOOK_UP).await, c.peer_ca()),
                None => (None, None),
            };
            let Some(leader) = leader else {
                let etcd = view.etcd.err().map(|e| format!(" (etcd: {e})")).unwrap_or_default();
                return Ok(Status::unavailable(format!("no node leads now: an election is under way{etcd}; retry"))
                    .into_http());
            };
            let channel = match channel(&to, &leader.address, ca) {
                Ok(c) => c,
                Err(e) => return Ok(Status::unavailable(e).into_http()),
            };
            let answer = async { channel.ready_oneshot().await?.call(req).await };
            match answer.await {
                Ok(r) => Ok(r),
                Err(e) => Ok(Status::unavailable(format!(
                    "the leader {} ({}) did not answer: {}; retry",
                    leader.name,
                    leader.address,
                    super::with_causes(&e)
                ))
                .into_http()),
            }
        })
    }
}
