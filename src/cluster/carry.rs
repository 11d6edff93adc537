//! Leg placement (`simulcastd serve --placement spread`): the leader's
//! master control places each live leg on one node, and every node carries
//! what is placed on it with a relay of its own, from its own contribution
//! input, following the shared cue.
//!
//! Nothing here is a protocol of our own; it is etcd keys and leases:
//!
//! - `/simulcast/carry/NODE` holds what the leader asks `NODE` to carry
//!   (a [`Carry`]: the event, the channels, the cue and the source
//!   choice). The leader puts it **bound to `NODE`'s lease**, in a
//!   transaction conditional on the leader's election key: when `NODE`
//!   stops renewing, etcd deletes its placement with its membership, and
//!   a deposed leader cannot place anything.
//! - `/simulcast/carrying/NODE` holds what `NODE` says it carries (each
//!   leg's status), bound to its own lease, written every second: the
//!   leader's status, metrics and as-run log read the other nodes' legs
//!   from there.
//!
//! The fence is the leadership's (docs/cluster.md): a node counts its
//! lease until TTL after it *sent* the last renewal and its legs check
//! `crate::media::fence` on every batch; etcd deletes the lease, and with
//! it the placement, no earlier than TTL after it *received* that renewal;
//! the leader moves the legs only once the placement is gone. So two
//! nodes never send one leg at once.
//!
//! The leader carries its own share in master control's relay (the
//! delayed and file legs too: they need its recording and its file-leg
//! directory); the other nodes each run a [`Carrier`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Cluster, ETCD_TIMEOUT};
use crate::media::failover::SourceChoice;
use crate::media::leg::LegStatus;
use crate::media::program::Cue;
use crate::relay::{Relay, RelayPlan};

/// Where the leader puts each node's placement (bound to that node's lease).
pub const CARRY_PREFIX: &str = "/simulcast/carry/";
/// Where each node says what it carries (bound to its own lease).
pub const CARRYING_PREFIX: &str = "/simulcast/carrying/";
/// How often the leader reads the roster and the nodes' legs, and a node
/// reads its placement: a moved leg starts within about a lease TTL and
/// two of these.
pub const PERIOD: Duration = Duration::from_millis(100);
/// How often a node says what it carries.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Where legs run: the leader alone (the default), or spread over every
/// node that is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlacementMode {
    /// The leader carries every leg.
    #[default]
    Leader,
    /// Each live leg is placed on one node (least loaded first).
    Spread,
}

/// What the leader asks one node to carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Carry {
    /// The event the legs belong to.
    pub event_id: String,
    /// Its title (the slate shows it).
    pub title: String,
    /// Each channel as the store keeps it (its spec as TOML, secrets
    /// included: the placement is readable by etcd's users only).
    pub channels: Vec<String>,
    /// The legs to carry, by leg id: a channel's id, or `ID+backup` for
    /// its backup ingest's leg.
    pub legs: Vec<String>,
    /// When the programme is on.
    pub cue: Cue,
    /// The source master control chose.
    pub choice: SourceChoice,
}

/// What a node says it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Carrying {
    /// The event (empty: nothing).
    pub event_id: String,
    /// Each leg's status.
    pub legs: Vec<LegStatus>,
    /// Its contribution's state (`-` when no relay runs).
    pub source: String,
}

/// A node that may carry legs now: its name and lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carrier {
    /// The node.
    pub node: String,
    /// Its lease (a placement on it is bound to it).
    pub lease: i64,
}

/// The nodes whose lease etcd holds, as the leader last read them.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// When they were read (`None`: not yet, or etcd did not answer).
    pub read_at: Option<Instant>,
    /// The nodes, each with whether it may take legs now: up (renewing on
    /// time, not lapsing) and carrying placed legs (`--placement spread`).
    pub nodes: Vec<(Carrier, bool)>,
}

impl Roster {
    /// Whether `node`'s lease is alive, on a roster read within `fresh`
    /// (`None`: the roster is too old to say).
    pub fn alive(&self, node: &str, fresh: Duration) -> Option<bool> {
        let read = self.read_at?;
        (read.elapsed() <= fresh).then(|| self.nodes.iter().any(|(c, _)| c.node == node))
    }

    /// The nodes that may take legs now (up and carrying), by name.
    pub fn up(&self) -> Vec<String> {
        self.nodes.iter().filter(|(_, up)| *up).map(|(c, _)| c.node.clone()).collect()
    }
}

/// Places `legs` (channel ids, in order) on `nodes`: a leg already placed
/// on one of them (`placed`) stays there; the others go, one at a time,
/// to the node carrying fewest (ties: `me`, then by name). With no node
/// at all, everything goes to `me`.
pub fn place(
    legs: &[String],
    nodes: &[String],
    me: &str,
    placed: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut names: BTreeSet<&str> = nodes.iter().map(String::as_str).collect();
    names.insert(me);
    for n in &names {
        out.insert((*n).to_owned(), Vec::new());
    }
    let mut left = Vec::new();
    for leg in legs {
        let at = placed.iter().find(|(n, ids)| names.contains(n.as_str()) && ids.contains(leg)).map(|(n, _)| n);
        match at {
            Some(n) => out.entry(n.clone()).or_default().push(leg.clone()),
            None => left.push(leg.clone()),
        }
    }
    for leg in left {
        // A channel's main and backup legs on two nodes when there are two
        // (anti-affinity: one node's death costs the partner one path).
        let pair = |ids: &Vec<String>| ids.iter().any(|i| crate::config::main_of(i) == crate::config::main_of(&leg));
        let to = out
            .iter()
            .min_by_key(|(n, ids)| (pair(ids), ids.len(), n.as_str() != me, (*n).clone()))
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| me.to_owned());
        out.entry(to).or_default().push(leg);
    }
    out.retain(|_, ids| !ids.is_empty());
    out
}

/// The leader's side: the roster and the other nodes' legs as etcd holds
/// them, and the placements master control wants, kept in step with etcd.
#[derive(Debug, Clone)]
pub struct Placement {
    node: String,
    roster: watch::Receiver<Roster>,
    alive: watch::Receiver<Vec<String>>,
    carrying: watch::Receiver<BTreeMap<String, Carrying>>,
    /// Each node's placement with the lease it is bound to.
    placed: watch::Receiver<BTreeMap<String, (Carry, i64)>>,
    want: watch::Sender<Option<BTreeMap<String, Carry>>>,
    cluster: Cluster,
}

impl Placement {
    /// Starts keeping etcd's placements in step with what master control
    /// wants, while this node leads.
    pub fn start(cluster: &Cluster) -> Placement {
        let (roster_tx, roster) = watch::channel(Roster::default());
        let (alive_tx, alive) = watch::channel(Vec::new());
        let (carrying_tx, carrying) = watch::channel(BTreeMap::new());
        let (placed_tx, placed) = watch::channel(BTreeMap::new());
        let (want, want_rx) = watch::channel(None);
        let c = cluster.clone();
        tokio::spawn(async move {
            let mut want_rx = want_rx;
            let mut stop = c.inner.stop.subscribe();
            loop {
                tokio::select! {
                    r = want_rx.changed() => if r.is_err() { break },
                    () = tokio::time::sleep(PERIOD) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                // Read on every node: one elected finds the legs where they run.
                let (Ok(placed), Ok(carrying)) =
                    (read_prefix::<Carry>(&c, CARRY_PREFIX).await, read_prefix::<Carrying>(&c, CARRYING_PREFIX).await)
                else {
                    continue;
                };
                placed_tx.send_replace(placed.clone());
                carrying_tx.send_replace(carrying.into_iter().map(|(n, (c, _))| (n, c)).collect());
                let view = c.view();
                let Some(key) = view.leader_key.clone().filter(|_| view.leads()) else {
                    roster_tx.send_replace(Roster::default());
                    continue;
                };
                let placed = placed.into_iter().map(|(n, (carry, _))| (n, carry)).collect();
                sync(&c, &key, &want_rx, &roster_tx, &placed).await;
                let names: Vec<String> = roster_tx.borrow().nodes.iter().map(|(n, _)| n.node.clone()).collect();
                alive_tx.send_if_modified(|a| {
                    let changed = *a != names;
                    *a = names;
                    changed
                });
            }
        });
        Placement { node: cluster.node().to_owned(), roster, alive, carrying, placed, want, cluster: cluster.clone() }
    }

    /// Whether legs may move off a node whose lease is gone now: not while
    /// this leader's word may still cover them (failsafe, see
    /// `Cluster::may_move_legs`).
    pub fn may_move(&self) -> bool {
        self.cluster.may_move_legs()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The roster as last read.
    pub fn roster(&self) -> Roster {
        self.roster.borrow().clone()
    }

    /// The nodes whose lease etcd holds, changed when one joins or goes
    /// (master control moves a dead node's legs at once, not at its next
    /// tick).
    pub fn alive(&self) -> watch::Receiver<Vec<String>> {
        self.alive.clone()
    }

    /// What each other node said it carries, as last read.
    pub fn carrying(&self) -> BTreeMap<String, Carrying> {
        self.carrying.borrow().clone()
    }

    /// The placements etcd held when last read (a new leader keeps legs
    /// where they run).
    pub fn placed(&self) -> BTreeMap<String, Carry> {
        self.placed.borrow().iter().map(|(n, (carry, _))| (n.clone(), carry.clone())).collect()
    }

    /// This node's own placement as last read, with the lease it is bound
    /// to (what its carrier carries; unchanged while etcd does not answer).
    fn placed_here(&self) -> Option<(Carry, i64)> {
        self.placed.borrow().get(&self.node).cloned()
    }

    /// Asks for these placements (`None`: leave etcd's as they are, as
    /// while master control has not decided yet).
    pub fn want(&self, want: Option<BTreeMap<String, Carry>>) {
        self.want.send_if_modified(|w| {
            let changed = *w != want;
            *w = want;
            changed
        });
    }
}

/// One round of the leader's: reads the roster, then puts and deletes
/// placements (`placed`: as etcd holds them) to match what is wanted.
async fn sync(
    c: &Cluster,
    key: &[u8],
    want: &watch::Receiver<Option<BTreeMap<String, Carry>>>,
    roster_tx: &watch::Sender<Roster>,
    placed: &BTreeMap<String, Carry>,
) {
    match c.members().await {
        Ok(m) => {
            let nodes = m
                .iter()
                .map(|m| (Carrier { node: m.record.name.clone(), lease: m.lease }, m.up() && m.record.carries))
                .collect();
            roster_tx.send_replace(Roster { read_at: Some(Instant::now()), nodes });
        }
        Err(e) => {
            warn!(error = %e, "Cannot read the nodes for leg placement.");
            return;
        }
    }
    let Some(want) = want.borrow().clone() else { return };
    let roster = roster_tx.borrow().clone();
    let mut ops = Vec::new();
    for (node, carry) in &want {
        if placed.get(node) == Some(carry) {
            continue;
        }
        let Some(lease) = roster.nodes.iter().find(|(n, _)| n.node == *node).map(|(n, _)| n.lease) else {
            continue; // Gone: master control moves its legs.
        };
        let Ok(value) = serde_json::to_string(carry) else { continue };
        ops.push(TxnOp::put(format!("{CARRY_PREFIX}{node}"), value, Some(PutOptions::new().with_lease(lease))));
    }
    for node in placed.keys().filter(|n| !want.contains_key(*n)) {
        ops.push(TxnOp::delete(format!("{CARRY_PREFIX}{node}"), None));
    }
    if ops.is_empty() {
        return;
    }
    let txn = Txn::new().when([Compare::create_revision(key.to_vec(), CompareOp::Greater, 0)]).and_then(ops);
    let mut client = c.inner.client.clone();
    match tokio::time::timeout(ETCD_TIMEOUT, client.txn(txn)).await {
        Ok(Ok(r)) if r.succeeded() => {}
        Ok(Ok(_)) => warn!("Leg placement not written: this node no longer holds the election."),
        Ok(Err(e)) => warn!(error = %e, "Leg placement not written."),
        Err(_) => warn!("Leg placement not written: etcd did not answer in time."),
    }
}

/// Every value under `prefix`, by the key's last part (a node's name),
/// with the lease its key is bound to.
async fn read_prefix<T: for<'de> Deserialize<'de>>(
    c: &Cluster,
    prefix: &str,
) -> Result<BTreeMap<String, (T, i64)>, ()> {
    let mut client = c.inner.client.clone();
    let ask = client.get(prefix, Some(GetOptions::new().with_prefix()));
    let Ok(Ok(r)) = tokio::time::timeout(ETCD_TIMEOUT, ask).await else { return Err(()) };
    Ok(r.kvs()
        .iter()
        .filter_map(|kv| {
            let node = String::from_utf8_lossy(kv.key()).strip_prefix(prefix)?.to_owned();
            Some((node, (serde_json::from_slice(kv.value()).ok()?, kv.lease())))
        })
        .collect())
}

/// A node's side: carries what the leader placed on it, while it follows.
#[derive(Debug)]
pub struct Carriage {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Carriage {
    /// Starts carrying this node's placement as `placement` reads it, each
    /// relay built from `base` (the programme of this node's own config:
    /// its contribution input) with the placed channels as legs.
    pub fn start(cluster: &Cluster, placement: Placement, base: RelayPlan) -> Carriage {
        let (stop, stop_rx) = watch::channel(false);
        cluster.inner.carries.store(true, std::sync::atomic::Ordering::Relaxed);
        cluster.inner.record.send_modify(|r| r.carries = true);
        let task = tokio::spawn(carry(cluster.clone(), placement, base, stop_rx));
        Carriage { stop, task }
    }

    /// Stops: every pipeline of its relay goes to Null.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The relay a node runs for its placement.
struct Carried {
    event_id: String,
    relay: Relay,
    choice: SourceChoice,
    /// The send fence's generation its legs send in: that of the lease
    /// the placement was bound to.
    fence: u64,
}

async fn carry(c: Cluster, placement: Placement, base: RelayPlan, mut stop: watch::Receiver<bool>) {
    let mut now: Option<Carried> = None;
    let mut reported = Instant::now() - REPORT_EVERY;
    let mut leading = c.leading();
    loop {
        tokio::select! {
            () = tokio::time::sleep(PERIOD) => {}
            r = leading.changed() => if r.is_err() { break },
            _ = stop.wait_for(|s| *s) => break,
        }
        // The fence's generation before the view (see `session::run`): a
        // placement bound to the lease the view shows is started in it, so
        // a lease lost meanwhile leaves its legs silent for good.
        let generation = crate::media::fence::generation();
        let view = c.view();
        if view.leads() {
            // Master control carries this node's share in its own relay.
            if let Some(old) = now.take() {
                info!(event = %old.event_id, "This node leads: its placed legs move to master control's relay.");
                old.relay.shutdown().await;
            }
            continue;
        }
        if let Some(old) = now.take_if(|n| n.fence != generation) {
            info!(event = %old.event_id, "The lease this node's legs were placed under is lost; its relay stops.");
            old.relay.shutdown().await;
        }
        // As last read (every `PERIOD`; while etcd does not answer, the
        // legs flow on their last placement and the fence stops them at
        // the lease's end), and only a placement bound to the lease this
        // node holds now.
        let placed = placement.placed_here().filter(|(_, lease)| view.lease == Some(*lease)).map(|(carry, _)| carry);
        now = apply(now, placed, &base, generation).await;
        if reported.elapsed() >= REPORT_EVERY {
            reported = Instant::now();
            report(&c, now.as_ref(), view.lease).await;
        }
    }
    if let Some(old) = now.take() {
        old.relay.shutdown().await;
    }
}

/// Makes the node's relay carry `placed` (or nothing).
async fn apply(now: Option<Carried>, placed: Option<Carry>, base: &RelayPlan, generation: u64) -> Option<Carried> {
    let Some(placed) = placed else {
        if let Some(old) = now {
            info!(event = %old.event_id, "No legs placed on this node any more; its relay stops.");
            old.relay.shutdown().await;
        }
        return None;
    };
    let compiled: Vec<crate::config::Channel> = placed
        .channels
        .iter()
        .filter_map(|doc| match crate::config::parse_stored_channel(doc) {
            Ok(ch) => Some(ch),
            Err(e) => {
                warn!(error = ?e, "A placed channel does not compile here; left out.");
                None
            }
        })
        .collect();
    let channels: Vec<crate::config::Channel> = crate::config::legs_of(&compiled)
        .into_iter()
        .filter(|leg| placed.legs.iter().any(|id| *id == leg.id.as_str()))
        .collect();
    let ids: BTreeSet<String> = channels.iter().map(|c| c.id.to_string()).collect();
    let mut now = match now {
        // Legs only added: the running ones go on untouched.
        Some(n) if n.event_id == placed.event_id && n.relay.carries().iter().all(|id| ids.contains(id)) => n,
        other => {
            if let Some(old) = other {
                old.relay.shutdown().await;
            }
            let mut plan = base.clone();
            plan.program.title.clone_from(&placed.title);
            plan.legs = channels.clone();
            plan.fence = Some(generation);
            match Relay::start_with(&plan, placed.cue, None).await {
                Ok(relay) => {
                    info!(event = %placed.event_id, legs = ids.len(), "Carrying the legs placed on this node.");
                    Carried { event_id: placed.event_id.clone(), relay, choice: SourceChoice::Auto, fence: generation }
                }
                Err(e) => {
                    warn!(event = %placed.event_id, error = %e, "Cannot start the relay for the legs placed here.");
                    return None;
                }
            }
        }
    };
    for ch in &channels {
        now.relay.add_leg(ch);
    }
    if now.relay.cue() != placed.cue {
        now.relay.set_cue(placed.cue);
    }
    if now.choice != placed.choice {
        now.relay.set_source_choice(placed.choice);
        now.choice = placed.choice;
    }
    Some(now)
}

/// Says what this node carries, bound to its lease; and in its record.
async fn report(c: &Cluster, now: Option<&Carried>, lease: Option<i64>) {
    let carrying = match now {
        Some(n) => {
            let s = n.relay.status();
            Carrying { event_id: n.event_id.clone(), legs: s.legs, source: s.source.state.as_str().to_owned() }
        }
        None => Carrying { event_id: String::new(), legs: Vec::new(), source: "-".into() },
    };
    c.set_load(carrying.legs.len() as u32, &carrying.source);
    let Some(lease) = lease else { return };
    let Ok(value) = serde_json::to_string(&carrying) else { return };
    let mut client = c.inner.client.clone();
    let put = client.put(format!("{CARRYING_PREFIX}{}", c.node()), value, Some(PutOptions::new().with_lease(lease)));
    let _ = tokio::time::timeout(ETCD_TIMEOUT, put).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn legs_go_to_the_node_carrying_fewest_and_placed_legs_stay() {
        let legs = ids(&["a", "b", "c", "d", "e", "f"]);
        let nodes = ids(&["n1", "n2", "n3"]);
        let p = place(&legs, &nodes, "n2", &BTreeMap::new());
        assert_eq!(p.values().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2], "{p:?}");
        assert_eq!(p["n2"], ids(&["a", "d"]), "the leader first on a tie: {p:?}");
        // n3 died: its legs go to the others, the rest stay where they run.
        let survivors = ids(&["n1", "n2"]);
        let q = place(&legs, &survivors, "n2", &p);
        assert_eq!(q["n1"][..2], p["n1"][..], "{q:?}");
        assert_eq!(q["n2"][..2], p["n2"][..], "{q:?}");
        assert_eq!(q.values().map(Vec::len).sum::<usize>(), 6, "{q:?}");
        assert!(!q.contains_key("n3"), "{q:?}");
        // Nobody else: the leader carries it all.
        assert_eq!(place(&legs, &[], "n9", &p)["n9"], legs);
    }

    #[test]
    fn a_channels_backup_leg_goes_to_another_node_than_its_main() {
        let legs = ids(&["a", "a+backup", "b", "b+backup"]);
        let p = place(&legs, &ids(&["n1", "n2"]), "n1", &BTreeMap::new());
        for n in p.values() {
            assert!(!(n.contains(&"a".into()) && n.contains(&"a+backup".into())), "{p:?}");
            assert!(!(n.contains(&"b".into()) && n.contains(&"b+backup".into())), "{p:?}");
        }
        // Where load alone would put both on the emptier node.
        let busy = BTreeMap::from([("n1".to_owned(), ids(&["x", "y"]))]);
        let r = place(&ids(&["x", "y", "c", "c+backup"]), &ids(&["n1", "n2"]), "n1", &busy);
        assert_eq!((r["n1"].len(), r["n2"].len()), (3, 1), "{r:?}");
        assert!(r["n2"] == ids(&["c"]) || r["n2"] == ids(&["c+backup"]), "{r:?}");
        // The main's node died: its leg goes to the other node, even the backup's.
        let q = place(&legs, &ids(&["n2"]), "n2", &p);
        assert_eq!(q["n2"].len(), 4, "{q:?}");
        // One node only: both there.
        assert_eq!(place(&legs, &[], "n1", &BTreeMap::new())["n1"].len(), 4);
    }

    #[test]
    fn a_roster_says_nothing_when_it_is_old() {
        let mut r = Roster::default();
        assert_eq!(r.alive("n1", Duration::from_secs(1)), None);
        r.read_at = Some(Instant::now());
        r.nodes.push((Carrier { node: "n1".into(), lease: 7 }, false));
        assert_eq!(r.alive("n1", Duration::from_secs(1)), Some(true));
        assert_eq!(r.alive("n2", Duration::from_secs(1)), Some(false));
        assert!(r.up().is_empty(), "lapsing (or not carrying) is alive but takes no leg");
        r.read_at = Instant::now().checked_sub(Duration::from_secs(5));
        assert_eq!(r.alive("n1", Duration::from_secs(1)), None);
    }
}
