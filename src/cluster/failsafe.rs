//! Failsafe: a leader keeps its legs while etcd is away, on its peers' word.
//!
//! From one node, etcd being down and this node being cut off from it look
//! the same. A leader that assumed the worst would stop every leg whenever
//! etcd hiccups; one that assumed the best could send beside a new leader
//! elected on the other side of a partition. Patroni's DCS failsafe mode
//! resolves this with the rule used here:
//!
//! - the leader keeps, in etcd, the list of nodes that may lead
//!   ([`FAILSAFE_KEY`]); a node not on it does not campaign;
//! - when its renewals fail, the leader asks every listed node whether it
//!   reaches etcd. Only if every one answers, and none does, does it keep
//!   leading, for one more TTL counted from before it asked;
//! - a node that said no vouches for that leader until its own clock has
//!   run a TTL (and a margin) past the question, and does not lead before
//!   then. So whichever node wins once etcd is back starts sending only
//!   after the old leader's last extension has run out.
//!
//! A peer that cannot be reached, or that reaches etcd, ends the
//! extensions: the leader then stops at its lease's end, as without
//! failsafe. Only the cluster's own credential ([`SECRET_KEY`], kept in
//! etcd) may ask.
//!
//! A follower carrying legs (legs spread over the nodes) has the same
//! problem with its own lease. It does not ask the peers itself: it asks
//! the leader how much of the leader's extension is left, and sends its
//! legs that long, counted from *before it asked* (so at most until the
//! leader's extension ends, in real time, whatever the question's flight).
//! Every voucher's word runs past that end, so no node elected once etcd
//! is back places those legs before then; the leader itself moves no leg
//! off a node before its last extension (and the margin) has run out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};

use super::Candidate;

/// The nodes that may lead (JSON list of candidates), kept by the leader.
pub const FAILSAFE_KEY: &str = "/simulcast/failsafe";
/// The credential nodes present to each other (a token, made once).
pub const SECRET_KEY: &str = "/simulcast/cluster-secret";
/// What a vouching node adds to the TTL: the question's flight and the
/// two machines' clock rates.
pub(super) const VOUCH_MARGIN: Duration = Duration::from_millis(250);
/// The longest a peer's look at etcd may take before it counts as "no"
/// (an eighth of the hold asked for, if less: the leader waits a fifth).
const PROBE: Duration = Duration::from_millis(500);

/// What this node knows for failsafe: the vouch it gave, the credential.
#[derive(Debug, Default)]
pub(super) struct Failsafe {
    /// Until when this node vouched for a leader cut off from etcd, and for whom.
    vouched: Mutex<Option<(Instant, String)>>,
    /// The cluster's credential, once read from etcd.
    secret: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Failsafe {
    /// The vouch this node gave that still runs, if any.
    pub(super) fn vouched(&self) -> Option<(Instant, String)> {
        lock(&self.vouched).clone().filter(|(until, _)| Instant::now() < *until)
    }

    /// Notes a vouch for `leader`, which may send for `hold` from before it asked.
    fn vouch(&self, leader: &str, hold: Duration) {
        let until = Instant::now() + hold + VOUCH_MARGIN;
        let mut v = lock(&self.vouched);
        if v.as_ref().is_none_or(|(u, _)| *u < until) {
            *v = Some((until, leader.to_owned()));
        }
    }

    /// The cluster's credential, once this node has read it.
    pub(super) fn secret(&self) -> Option<String> {
        lock(&self.secret).clone()
    }

    pub(super) fn set_secret(&self, s: String) {
        *lock(&self.secret) = Some(s);
    }

    /// `Err` unless `credential` (an `authorization` header) is the
    /// cluster's own.
    pub(super) fn check(&self, credential: Option<&str>) -> Result<(), &'static str> {
        let Some(secret) = self.secret() else {
            return Err("this node has not read the cluster's credential from etcd yet");
        };
        let given = credential.unwrap_or_default().strip_prefix("Bearer ").unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), secret.as_bytes()) {
            return Err("only the cluster's own nodes may ask this");
        }
        Ok(())
    }

    /// A leader asks: does this node reach etcd? If not, it vouches.
    /// `Err` when the credential is not the cluster's.
    pub(super) async fn answer(
        &self,
        endpoints: &[String],
        credential: Option<&str>,
        leader: &str,
        hold: Duration,
    ) -> Result<bool, &'static str> {
        self.check(credential)?;
        let reachable = etcd_answers(endpoints, (hold / 8).min(PROBE)).await;
        if !reachable {
            self.vouch(leader, hold);
            tracing::warn!(
                leader,
                hold_ms = hold.as_millis() as u64,
                "etcd is away from here too: vouched for the leader."
            );
        }
        Ok(reachable)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether etcd answers a linearizable read `within`, over a new
/// connection (the node's own may be waiting out a reconnect backoff).
async fn etcd_answers(endpoints: &[String], within: Duration) -> bool {
    let look = async {
        let options = ConnectOptions::new().with_connect_timeout(within).with_timeout(within);
        let mut c = Client::connect(endpoints, Some(options)).await?;
        c.get(FAILSAFE_KEY, None).await
    };
    matches!(tokio::time::timeout(within, look).await, Ok(Ok(_)))
}

/// Makes the cluster's credential if nobody has, and reads it.
pub(super) async fn ensure_secret(client: &mut Client) -> Result<String, etcd_client::Error> {
    if let Ok(fresh) = crate::api::auth::new_token() {
        let absent = Compare::version(SECRET_KEY, CompareOp::Equal, 0);
        let txn = Txn::new().when([absent]).and_then([TxnOp::put(SECRET_KEY, fresh, None)]);
        client.txn(txn).await?;
    }
    let got = client.get(SECRET_KEY, None).await?;
    let value = got.kvs().first().and_then(|kv| kv.value_str().ok()).unwrap_or_default();
    Ok(value.to_owned())
}

/// The failsafe list as etcd holds it; `None` when none was written yet
/// (a new cluster: every node may campaign).
pub(super) async fn listed(client: &mut Client) -> Result<Option<Vec<Candidate>>, etcd_client::Error> {
    let got = client.get(FAILSAFE_KEY, None).await?;
    Ok(got.kvs().first().map(|kv| serde_json::from_slice(kv.value()).unwrap_or_default()))
}

/// Writes the list, only while `leader_key` (this leader's election key) exists.
pub(super) async fn write_list(
    client: &mut Client,
    leader_key: &[u8],
    list: &[Candidate],
) -> Result<bool, etcd_client::Error> {
    let value = serde_json::to_vec(list).unwrap_or_default();
    let held = Compare::create_revision(leader_key.to_vec(), CompareOp::Greater, 0);
    let txn = Txn::new().when([held]).and_then([TxnOp::put(FAILSAFE_KEY, value, None)]);
    Ok(client.txn(txn).await?.succeeded())
}

/// The leader, its renewals failing, asks every listed node but itself
/// whether it reaches etcd. `Ok` with how many vouched when every one
/// answered within `within` and none does; else why not.
pub(super) async fn ask_peers(
    peers: &[Candidate],
    me: &str,
    secret: &str,
    hold: Duration,
    within: Duration,
    ca: Option<&[u8]>,
) -> Result<usize, String> {
    let mut asks = tokio::task::JoinSet::new();
    for p in peers.iter().filter(|p| p.name != me).cloned() {
        let (me, bearer) = (me.to_owned(), format!("Bearer {secret}"));
        let endpoint = super::peer_endpoint(&p.address, ca);
        asks.spawn(async move {
            let ask = async {
                let endpoint = endpoint?.connect_timeout(within);
                let channel = endpoint.connect().await.map_err(|e| super::with_causes(&e))?;
                let mut client = crate::proto::node_service_client::NodeServiceClient::new(channel);
                let hold_ms = u32::try_from(hold.as_millis()).unwrap_or(u32::MAX);
                let mut req = tonic::Request::new(crate::proto::FailsafeRequest { leader: me, hold_ms });
                let value = bearer.parse().map_err(|_| "the credential is not a header value".to_owned())?;
                req.metadata_mut().insert("authorization", value);
                let r = client.failsafe(req).await.map_err(|s| s.message().to_owned())?;
                Ok::<bool, String>(r.into_inner().etcd_reachable)
            };
            let answer = match tokio::time::timeout(within, ask).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} ms", within.as_millis())),
            };
            (p.name, answer)
        });
    }
    let mut vouched = 0;
    let mut refused = Vec::new();
    while let Some(done) = asks.join_next().await {
        match done {
            Ok((_, Ok(false))) => vouched += 1,
            Ok((name, Ok(true))) => refused.push(format!("{name} reaches etcd")),
            Ok((name, Err(e))) => refused.push(format!("{name}: {e}")),
            Err(e) => refused.push(format!("a question failed: {e}")),
        }
    }
    if refused.is_empty() { Ok(vouched) } else { Err(refused.join("; ")) }
}

/// Why a leader gave no word.
#[derive(Debug)]
pub(super) enum NoWord {
    /// It answered, and says why not.
    Refused(String),
    /// It did not answer.
    Silent(String),
}

/// A node carrying legs, its renewals failing, asks `leader` how long it
/// may send them on the peers' word.
pub(super) async fn ask_grant(
    leader: &Candidate,
    me: &str,
    secret: &str,
    within: Duration,
    ca: Option<&[u8]>,
) -> Result<Duration, NoWord> {
    let ask = async {
        let endpoint = super::peer_endpoint(&leader.address, ca)?.connect_timeout(within);
        let channel = endpoint.connect().await.map_err(|e| super::with_causes(&e))?;
        let mut client = crate::proto::node_service_client::NodeServiceClient::new(channel);
        let mut req = tonic::Request::new(crate::proto::FailsafeGrantRequest { node: me.to_owned() });
        let value =
            format!("Bearer {secret}").parse().map_err(|_| "the credential is not a header value".to_owned())?;
        req.metadata_mut().insert("authorization", value);
        let r = client.failsafe_grant(req).await.map_err(|s| s.message().to_owned())?.into_inner();
        Ok::<_, String>(r)
    };
    match tokio::time::timeout(within, ask).await {
        Ok(Ok(r)) if r.remaining_ms > 0 => Ok(Duration::from_millis(u64::from(r.remaining_ms))),
        Ok(Ok(r)) => Err(NoWord::Refused(format!("{}: {}", r.leader, r.refused))),
        Ok(Err(e)) => Err(NoWord::Silent(format!("{}: {e}", leader.name))),
        Err(_) => Err(NoWord::Silent(format!("{}: no answer within {} ms", leader.name, within.as_millis()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vouch_runs_a_hold_and_a_margin_and_only_grows() {
        let f = Failsafe::default();
        assert!(f.vouched().is_none());
        f.vouch("n1", Duration::from_secs(2));
        let (until, who) = f.vouched().unwrap();
        assert_eq!(who, "n1");
        let left = until - Instant::now();
        assert!(left > Duration::from_secs(2) && left <= Duration::from_secs(2) + VOUCH_MARGIN, "{left:?}");
        // A shorter vouch later does not shorten it.
        f.vouch("n1", Duration::ZERO);
        assert_eq!(f.vouched().unwrap().0, until);
        f.vouch("n1", Duration::from_secs(5));
        assert!(f.vouched().unwrap().0 > until);
    }

    #[test]
    fn only_the_clusters_credential_is_compared_equal() {
        assert!(constant_time_eq(b"sct_ab", b"sct_ab"));
        assert!(!constant_time_eq(b"sct_ab", b"sct_ac"));
        assert!(!constant_time_eq(b"sct_ab", b"sct_a"));
    }
}
