//! Cluster mode: nodes that join through etcd, each under a lease,
//! and elect one leader with etcd's election API. Nothing here is a protocol
//! of our own: membership is a key bound to the node's lease, leadership is
//! etcd's `Campaign` on that same lease.
//!
//! What a node knows of itself is fenced by time. It counts its lease as
//! held only until the TTL that etcd last granted runs out, measured from
//! when the renewal was *sent*; once that instant passes without a newer
//! answer (etcd lost, the process stopped), it no longer calls itself
//! leader, gives the lease up, and joins again as a follower with a new
//! one. etcd expires the old lease no earlier than that instant, so no two
//! nodes count themselves leader at once.
//!
//! The same instant bounds what the node sends: its legs check
//! `crate::media::fence` on every batch.
//!
//! Built so far: membership, health (a node whose renewals stop shows
//! LAPSING, then leaves the list), the election, `ListNodes`, forwarding to
//! the leader ([`forward`]), the shared store (`crate::store::mirror`), and
//! master control on the leader alone, failsafe (`failsafe.rs`, Patroni's
//! rule): a leader whose renewals fail keeps its legs while every node that
//! may lead says etcd is away from it too, and leg placement ([`carry`]):
//! the leader carries every leg, or each leg runs on one node under that
//! node's lease. Backup ingests are not built yet (docs/cluster.md).

pub mod carry;
mod failsafe;
pub mod forward;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Where every node's membership key lives (one key per node, bound to its lease).
pub const NODES_PREFIX: &str = "/simulcast/nodes/";
/// The election every node campaigns in.
pub const ELECTION: &str = "/simulcast/election/leader";
/// The longest an etcd request may take before it counts as unanswered.
pub const ETCD_TIMEOUT: Duration = Duration::from_secs(2);

/// How a node joins.
#[derive(Debug, Clone)]
pub struct Options {
    /// etcd's client URLs (`http://127.0.0.1:2379`, ...).
    pub endpoints: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// The gRPC address other nodes and operators reach this node on.
    pub address: String,
    /// The lease's time to live: how long a silent node keeps its place.
    pub lease_ttl: Duration,
    /// Its multiviewer page as others reach it (`http://HOST:PORT/`), if
    /// it serves one: a follower's page sends the operator there.
    pub page: Option<String>,
    /// When the nodes speak TLS: the PEM certificate(s) another node's
    /// certificate is checked against, for forwarding and the failsafe's
    /// questions. `None`: the nodes speak plain HTTP/2 to each other.
    pub peer_ca: Option<Vec<u8>>,
}

/// `e` and each error under it, `: `-separated (tonic's own says only
/// "transport error"; what went wrong, a refused certificate say, is
/// underneath).
pub(crate) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut under = e.source();
    while let Some(cause) = under {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        under = cause.source();
    }
    text
}

/// An endpoint for another node's gRPC `address` (`HOST:PORT`, as it
/// advertises it): TLS checked against `ca` when the nodes speak it (the
/// certificate must name `HOST`), plain HTTP/2 otherwise.
pub(crate) fn peer_endpoint(address: &str, ca: Option<&[u8]>) -> Result<tonic::transport::Endpoint, String> {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| format!("the node address `{address}`: {e}"))?;
    match ca {
        Some(pem) => {
            let tls =
                tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
            endpoint.tls_config(tls).map_err(|e| format!("TLS to the node at `{address}`: {e}"))
        }
        None => Ok(endpoint),
    }
}

impl Options {
    /// The problems with these options, one message each (empty: fine).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.endpoints.is_empty() {
            out.push("--cluster needs at least one etcd URL (http://HOST:PORT)".to_owned());
        }
        for e in &self.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() > 256 {
                out.push(format!("--cluster: `{e}` is not an etcd URL (http://HOST:PORT)"));
            }
        }
        let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
        if self.node.is_empty() || self.node.len() > 63 || !self.node.chars().all(name_ok) {
            out.push(format!(
                "--node `{}`: a node name is 1 to 63 letters, digits, `-`, `_` or `.`",
                self.node.chars().take(80).collect::<String>()
            ));
        }
        if let Ok(a) = self.address.parse::<std::net::SocketAddr>()
            && a.ip().is_unspecified()
        {
            out.push(format!("the node's address {a} is no address other nodes can reach: give --advertise HOST:PORT"));
        }
        let ttl = self.lease_ttl.as_secs();
        if !(1..=60).contains(&ttl) || self.lease_ttl.subsec_nanos() != 0 {
            out.push(format!("--lease-ttl {:?}: etcd leases count whole seconds; give 1s to 60s", self.lease_ttl));
        }
        out
    }
}

/// What a node writes under its membership key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    /// The node's name.
    pub name: String,
    /// Its gRPC address.
    pub address: String,
    /// When it joined (this lease), UTC, RFC 3339.
    pub joined_utc: String,
    /// Legs its relay carries now.
    pub legs: u32,
    /// Its source's state (`-` when no relay runs).
    pub source: String,
    /// Whether it carries legs placed on it (`--placement spread`, and
    /// its media work): the leader places legs on no other node.
    #[serde(default)]
    pub carries: bool,
}

/// This node's own view, published by its session.
#[derive(Debug, Clone)]
pub struct View {
    /// Whether etcd answered the last request, and if not why.
    pub etcd: Result<(), String>,
    /// The lease held now, if any.
    pub lease: Option<i64>,
    /// When that lease, as last renewed, runs out (counted from when the
    /// renewal was sent).
    pub lease_until: Option<Instant>,
    /// Until when this node leads: set once its campaign won, to the end
    /// of the lease as last renewed. Past it, it does not lead.
    pub leads_until: Option<Instant>,
    /// The election key this node holds while it leads: the shared
    /// store's writes are conditional on it (a deposed leader's fail).
    pub leader_key: Option<Vec<u8>>,
    /// Leadership changes seen (won or lost) since the node started.
    pub elections: u64,
    /// The leader as etcd last said (a few hundred ms old at most while
    /// etcd answers): where a follower forwards requests.
    pub leader: Option<Candidate>,
    /// Whether this node sends on its peers' word now: etcd does not
    /// answer, and every listed node said it does not reach it either (a
    /// leader asked them; a follower has the leader's word for it).
    pub failsafe: bool,
    /// The end of this leader's last extension on its peers' word, kept
    /// after etcd is back: the nodes it granted their legs to may send
    /// until then, so it moves none of their legs before.
    pub failsafe_until: Option<Instant>,
    /// Counts leaderships: a node that wins again before its failsafe
    /// word ran out keeps the same term (its legs never stopped).
    pub term: u64,
    /// Counts the times etcd answered this leader again after failsafe:
    /// each time, the shared state is read again from etcd (a write sent
    /// while it was away may have landed).
    pub synced: u64,
}

/// What a leading node holds: the election key its writes are
/// conditional on, and the term (unchanged when it won again without a
/// lapse, under a new key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lead {
    /// The election key.
    pub key: Vec<u8>,
    /// The leadership's term.
    pub term: u64,
    /// See `View::synced`.
    pub synced: u64,
}

/// What a node campaigns with: its name, gRPC address and page.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Candidate {
    /// The node's name.
    pub name: String,
    /// Its gRPC address (`HOST:PORT`).
    pub address: String,
    /// Its multiviewer page (`http://HOST:PORT/`), if it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
}

impl Candidate {
    /// The candidate in an election value, if it is one.
    pub fn parse(value: &[u8]) -> Option<Candidate> {
        serde_json::from_slice(value).ok()
    }
}

impl View {
    /// Whether this node leads at this instant.
    pub fn leads(&self) -> bool {
        self.leads_until.is_some_and(|u| Instant::now() < u)
    }
}

/// A node in `ListNodes`.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// What it wrote.
    pub record: NodeRecord,
    /// Whether it holds the election.
    pub leader: bool,
    /// Whether it is on the failsafe list (may campaign).
    pub may_lead: bool,
    /// Seconds left on its lease, as etcd counts them.
    pub lease_remaining_s: i64,
    /// Its lease's time to live.
    pub lease_ttl_s: i64,
    /// Its lease (what is put for it under [`carry`] is bound to it).
    pub lease: i64,
}

impl Member {
    /// Whether it renews on time. A node renews every third of its TTL; one
    /// with less than half of it left (etcd counts whole seconds, rounded
    /// down) missed renewals: it is lapsing (stopped, partitioned, or etcd
    /// is slow to it) and leaves the list when the lease runs out.
    pub fn up(&self) -> bool {
        self.lease_remaining_s >= self.lease_ttl_s / 2
    }
}

/// The leader etcd names now; `None` while an election is under way.
async fn leader(client: &mut Client) -> Result<Option<Candidate>, etcd_client::Error> {
    match client.leader(ELECTION).await {
        Ok(r) => Ok(r.kv().and_then(|kv| Candidate::parse(kv.value()))),
        // etcd answers "election: no leader" while nobody holds it.
        Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("no leader") => Ok(None),
        Err(e) => Err(e),
    }
}

/// The cluster as one node sees it, with the etcd it talks to.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    options: Options,
    client: Client,
    view: watch::Receiver<View>,
    /// What this node writes under its key (legs and source change).
    record: watch::Sender<NodeRecord>,
    /// The vouch this node gave and the cluster's credential.
    failsafe: Arc<failsafe::Failsafe>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Whether a `carry::Carriage` says what this node carries while it
    /// follows.
    carries: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.inner.options.node).finish_non_exhaustive()
    }
}

/// Why a cluster request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd did not answer, or refused.
    #[error("etcd ({endpoints}) did not answer: {reason}")]
    Etcd {
        /// The URLs tried.
        endpoints: String,
        /// What went wrong.
        reason: String,
    },
}

impl Cluster {
    /// Joins: connects to etcd (lazily: a node starts while etcd is away,
    /// and joins once it answers) and starts the session that keeps the
    /// lease, the membership key and the campaign.
    pub async fn join(options: Options) -> anyhow::Result<Cluster> {
        let problems = options.problems();
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("; "));
        }
        // No leg sends before this node holds a lease.
        crate::media::fence::close();
        let connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| anyhow::anyhow!("--cluster {}: {e}", options.endpoints.join(",")))?;
        let initial = View {
            etcd: Err("not yet asked".into()),
            lease: None,
            lease_until: None,
            leads_until: None,
            leader_key: None,
            elections: 0,
            leader: None,
            failsafe: false,
            failsafe_until: None,
            term: 0,
            synced: 0,
        };
        let (view_tx, view) = watch::channel(initial);
        let record = NodeRecord {
            name: options.node.clone(),
            address: options.address.clone(),
            joined_utc: String::new(),
            legs: 0,
            source: "-".into(),
            carries: false,
        };
        let (record, record_rx) = watch::channel(record);
        let (stop, stop_rx) = watch::channel(false);
        let failsafe = Arc::new(failsafe::Failsafe::default());
        let session = session::run(options.clone(), client.clone(), view_tx, record_rx, Arc::clone(&failsafe), stop_rx);
        let task = tokio::spawn(session);
        let inner = Inner {
            options,
            client,
            view,
            record,
            failsafe,
            stop,
            task: std::sync::Mutex::new(Some(task)),
            carries: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(Cluster { inner: Arc::new(inner) })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.options.node
    }

    /// This node's own view now.
    pub fn view(&self) -> View {
        self.inner.view.borrow().clone()
    }

    /// Whether this node leads, as it changes, with the election key it
    /// holds and the term (`None`: it follows). It turns to `None` when
    /// the lease as last renewed (or the peers' word) runs out, even if no
    /// news came from etcd (a node stopped, then woken).
    pub fn leading(&self) -> watch::Receiver<Option<Lead>> {
        let mut view = self.inner.view.clone();
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            loop {
                let (now, until) = {
                    let v = view.borrow_and_update();
                    let lead = v.leader_key.clone().map(|key| Lead { key, term: v.term, synced: v.synced });
                    (if v.leads() { lead } else { None }, v.leads_until)
                };
                tx.send_if_modified(|k| {
                    let changed = *k != now;
                    *k = now.clone();
                    changed
                });
                let wake = async {
                    match until.filter(|_| now.is_some()) {
                        Some(u) => tokio::time::sleep_until(u.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = view.changed() => if r.is_err() { break },
                    () = wake => {}
                    () = tx.closed() => break,
                }
            }
        });
        rx
    }

    /// A receiver of this node's view as its session changes it.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.inner.view.clone()
    }

    /// Says what this node's relay carries (written under its key).
    pub fn set_load(&self, legs: u32, source: &str) {
        self.inner.record.send_if_modified(|r| {
            let changed = r.legs != legs || r.source != source;
            r.legs = legs;
            source.clone_into(&mut r.source);
            changed
        });
    }

    /// Keeps this node's record in step with what its coordinator runs
    /// (legs carried, the source's state) while this node leads, until the
    /// coordinator stops. A follower's record says what it carries
    /// (`carry::Carriage`).
    pub fn follow(
        &self,
        mut snaps: watch::Receiver<std::sync::Arc<crate::coordinator::Snapshot>>,
    ) -> tokio::task::JoinHandle<()> {
        let cluster = self.clone();
        tokio::spawn(async move {
            let me = cluster.node().to_owned();
            loop {
                let leads = cluster.view().leads();
                let (legs, source) = {
                    let s = snaps.borrow_and_update();
                    match &s.live {
                        // Its own legs: not those placed on other nodes.
                        Some(live) => {
                            let own = live.legs.iter().filter(|l| l.node.as_deref().is_none_or(|n| n == me)).count();
                            (own as u32, live.source.state.as_str())
                        }
                        None => (0, "-"),
                    }
                };
                if leads {
                    cluster.set_load(legs, source);
                } else if !cluster.inner.carries.load(std::sync::atomic::Ordering::Relaxed) {
                    cluster.set_load(0, "-");
                }
                if snaps.changed().await.is_err() {
                    break;
                }
            }
        })
    }

    fn etcd_error(&self, e: impl std::fmt::Display) -> ClusterError {
        ClusterError::Etcd { endpoints: self.inner.options.endpoints.join(","), reason: e.to_string() }
    }

    /// Every node whose lease is alive, by name, with the leader marked:
    /// read from etcd now (a node that cannot reach etcd answers an error
    /// naming it, never a stale list).
    pub async fn members(&self) -> Result<Vec<Member>, ClusterError> {
        let mut client = self.inner.client.clone();
        let ask = async {
            let nodes = client.get(NODES_PREFIX, Some(GetOptions::new().with_prefix())).await?;
            let leader = leader(&mut client).await?.map(|c| c.name);
            let listed = failsafe::listed(&mut client).await?;
            let mut out = Vec::new();
            for kv in nodes.kvs() {
                let Ok(record) = serde_json::from_slice::<NodeRecord>(kv.value()) else {
                    tracing::warn!(key = %String::from_utf8_lossy(kv.key()), "A node key that is not a node record; skipped.");
                    continue;
                };
                let lease = client.lease_time_to_live(kv.lease(), None).await?;
                out.push(Member {
                    leader: leader.as_deref() == Some(record.name.as_str()),
                    may_lead: listed.as_ref().is_none_or(|l| l.iter().any(|c| c.name == record.name)),
                    record,
                    lease_remaining_s: lease.ttl(),
                    lease_ttl_s: lease.granted_ttl(),
                    lease: kv.lease(),
                });
            }
            Ok::<_, etcd_client::Error>(out)
        };
        match tokio::time::timeout(ETCD_TIMEOUT, ask).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(self.etcd_error(e)),
            Err(_) => Err(self.etcd_error(format!("no answer within {} s", ETCD_TIMEOUT.as_secs()))),
        }
    }

    /// The leader, when it is another node: as this node last heard, else
    /// as etcd says now, asked within `within` (a node that just joined
    /// again has not heard yet). `None`: none, or etcd did not say in time.
    pub async fn other_leader(&self, within: Duration) -> Option<Candidate> {
        let me = self.node();
        if let Some(l) = self.view().leader.filter(|l| l.name != me) {
            return Some(l);
        }
        let mut client = self.inner.client.clone();
        let now = tokio::time::timeout(within, leader(&mut client)).await.ok()?.ok()?;
        now.filter(|l| l.name != me)
    }

    /// What another node's TLS certificate is checked against (`None`:
    /// the nodes speak plain HTTP/2); see [`Options::peer_ca`].
    pub fn peer_ca(&self) -> Option<&[u8]> {
        self.inner.options.peer_ca.as_deref()
    }

    /// The cluster's own credential (made once, kept in etcd), once this
    /// node has read it: nodes present it to each other.
    pub fn credential(&self) -> Option<String> {
        self.inner.failsafe.secret()
    }

    /// Answers a leader cut off from etcd (`NodeService.Failsafe`):
    /// whether this node reaches etcd; if not, it vouches for that leader
    /// for `hold` (and will not lead itself before that has run out).
    /// `Err` names why the question is refused (not the cluster's
    /// credential).
    pub async fn answer_failsafe(
        &self,
        credential: Option<&str>,
        leader: &str,
        hold: Duration,
    ) -> Result<bool, &'static str> {
        // The longest TTL a node may run with (a bound on what a question
        // may ask; the vouch must cover the leader's whole extension).
        let hold = hold.min(Duration::from_secs(60));
        self.inner.failsafe.answer(&self.inner.options.endpoints, credential, leader, hold).await
    }

    /// `Err` unless `credential` (an `authorization` header) is the
    /// cluster's own: only its nodes may ask each other for their word.
    pub fn check_peer(&self, credential: Option<&str>) -> Result<(), &'static str> {
        self.inner.failsafe.check(credential)
    }

    /// A node carrying legs asks this leader how long it may send them on
    /// the peers' word: what is left of the leader's own extension.
    /// `Err` names why not (not leading, not on its peers' word now).
    /// Ask [`Cluster::check_peer`] first.
    pub fn grant_failsafe(&self, node: &str) -> Result<Duration, String> {
        let v = self.view();
        if !v.leads() {
            return Err("this node does not lead".into());
        }
        if !v.failsafe {
            return Err(
                "this leader does not send on its peers' word now (it reaches etcd, or not every peer vouched)".into(),
            );
        }
        let left = v.leads_until.map(|u| u.saturating_duration_since(Instant::now())).unwrap_or_default();
        tracing::info!(
            node,
            left_ms = left.as_millis() as u64,
            "A node sends its legs on the peers' word too (failsafe)."
        );
        Ok(left)
    }

    /// Whether this leader may move legs off a node whose lease is gone:
    /// not while a node it granted its legs to (failsafe) may still send
    /// them.
    pub fn may_move_legs(&self) -> bool {
        self.view().failsafe_until.is_none_or(|u| Instant::now() >= u + failsafe::VOUCH_MARGIN)
    }

    /// The token records the cluster shares (name, role, SHA-256), read
    /// from etcd now.
    pub async fn tokens(&self) -> Result<Vec<crate::store::TokenRecord>, ClusterError> {
        let mut client = self.inner.client.clone();
        let prefix = format!("{}tokens/", crate::store::mirror::STATE_PREFIX);
        let ask = client.get(prefix, Some(GetOptions::new().with_prefix()));
        let rows = match tokio::time::timeout(ETCD_TIMEOUT, ask).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.etcd_error(e)),
            Err(_) => return Err(self.etcd_error(format!("no answer within {} s", ETCD_TIMEOUT.as_secs()))),
        };
        #[derive(Deserialize)]
        struct Row {
            name: String,
            role: String,
            sha256: String,
        }
        Ok(rows
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Row>(kv.value()).ok())
            .map(|r| crate::store::TokenRecord { name: r.name, role: r.role, sha256: r.sha256 })
            .collect())
    }

    /// Leaves: stops the session and revokes the lease, so the node's key
    /// goes and another node may lead at once instead of after the TTL.
    pub async fn leave(&self) {
        let _ = self.inner.stop.send(true);
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task
            && tokio::time::timeout(ETCD_TIMEOUT + Duration::from_secs(1), t).await.is_err()
        {
            tracing::warn!("The cluster session did not end in time.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            node: "node-a".into(),
            address: "127.0.0.1:50051".into(),
            lease_ttl: Duration::from_secs(2),
            page: None,
            peer_ca: None,
        }
    }

    #[test]
    fn options_name_each_problem() {
        assert!(options().problems().is_empty());
        let mut o = options();
        o.endpoints = vec!["127.0.0.1:2379".into()];
        o.node = "a b".into();
        o.lease_ttl = Duration::from_millis(1500);
        let p = o.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("`127.0.0.1:2379` is not an etcd URL"), "{p:?}");
        assert!(p[1].contains("--node `a b`"), "{p:?}");
        assert!(p[2].contains("whole seconds"), "{p:?}");
        o.endpoints.clear();
        assert!(o.problems()[0].contains("at least one etcd URL"));
        let mut o = options();
        o.address = "0.0.0.0:50051".into();
        assert!(o.problems()[0].contains("give --advertise"), "{:?}", o.problems());
    }

    #[test]
    fn a_member_with_less_than_half_its_ttl_left_is_not_up() {
        let m = |remaining| Member {
            record: NodeRecord {
                name: "n".into(),
                address: String::new(),
                joined_utc: String::new(),
                legs: 0,
                source: String::new(),
                carries: false,
            },
            leader: false,
            may_lead: true,
            lease_remaining_s: remaining,
            lease_ttl_s: 10,
            lease: 1,
        };
        assert!(m(10).up());
        assert!(m(6).up());
        assert!(m(5).up());
        assert!(!m(4).up());
        assert!(!m(0).up());
    }

    #[test]
    fn leadership_ends_with_the_lease_as_last_renewed() {
        let mut v = View {
            etcd: Ok(()),
            lease: Some(1),
            lease_until: None,
            leads_until: None,
            leader_key: None,
            elections: 0,
            leader: None,
            failsafe: false,
            failsafe_until: None,
            term: 0,
            synced: 0,
        };
        assert!(!v.leads());
        v.leads_until = Some(Instant::now() + Duration::from_secs(1));
        assert!(v.leads());
        v.leads_until = Instant::now().checked_sub(Duration::from_millis(1));
        assert!(!v.leads());
    }
}
