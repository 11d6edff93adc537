//! A node's session with etcd: a lease, the membership key bound to it, the
//! renewals, and the campaign. A session ends when its lease can no longer
//! be counted on; the node then gives the lease up and starts a new one, as
//! a follower.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use tokio::sync::watch;

use super::failsafe::{self, Failsafe};
use super::{Candidate, ELECTION, ETCD_TIMEOUT, NODES_PREFIX, NodeRecord, Options, View};

/// Why a session ended.
enum Ended {
    /// The node is leaving.
    Stopped,
    /// etcd failed or the lease could not be counted on any more.
    Lost(String),
}

/// A task aborted when this is dropped (the campaign of a session that ended).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs sessions one after another until `stop` says so.
pub(super) async fn run(
    options: Options,
    client: Client,
    view: watch::Sender<View>,
    mut record: watch::Receiver<NodeRecord>,
    failsafe: Arc<Failsafe>,
    mut stop: watch::Receiver<bool>,
) {
    let first_wait = Duration::from_millis(200);
    let mut wait = first_wait;
    loop {
        let ended = tokio::select! {
            e = session(&options, client.clone(), &view, &mut record, &failsafe) => e,
            _ = stop.wait_for(|s| *s) => Ended::Stopped,
        };
        let (lease, held) = {
            let v = view.borrow();
            (v.lease, v.lease_until.is_some())
        };
        // A leader that kept its legs on its peers' word keeps them until
        // that word runs out: if it wins again in the meantime (etcd is
        // back, but its lease expired there), nothing stops.
        let keep = matches!(ended, Ended::Lost(_)) && {
            let v = view.borrow();
            v.failsafe && v.leads()
        };
        view.send_modify(|v| {
            if !keep {
                v.leader_key = None;
                v.failsafe = false;
                if v.leads_until.take().is_some() {
                    v.elections += 1;
                    tracing::warn!(node = %options.node, "This node no longer leads.");
                }
            }
            v.lease = None;
            v.lease_until = None;
            // `leader` stays as last heard: while etcd is away a follower
            // still forwards to a leader that kept its legs (failsafe).
        });
        if !keep {
            // Nothing more goes out under the lease this session held. The
            // view says the lease is gone first: whoever reads the fence's
            // generation, then the view, never pairs the new generation
            // with the old lease (a carrier starting a placement bound to
            // it, `carry.rs`).
            crate::media::fence::close();
        }
        // Given up at once, so the key goes and another node may lead
        // without waiting out the TTL (refused if it expired already).
        if let Some(id) = lease {
            let mut c = client.clone();
            let _ = tokio::time::timeout(Duration::from_secs(1), c.lease_revoke(id)).await;
        }
        match ended {
            Ended::Stopped => break,
            Ended::Lost(why) => {
                if keep {
                    tracing::warn!(node = %options.node, reason = %why, "Cluster session lost; joining again while the peers' word still holds the legs.");
                } else {
                    tracing::warn!(node = %options.node, reason = %why, "Cluster session lost; joining again.");
                }
                view.send_modify(|v| v.etcd = Err(why));
            }
        }
        // A session that held a lease starts the backoff anew.
        if held {
            wait = first_wait;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        wait = (wait * 2).min(Duration::from_secs(2));
    }
    tracing::info!(node = %options.node, "Left the cluster.");
}

/// `f` within `ETCD_TIMEOUT`, its error or the timeout as text.
async fn ask<T>(what: &str, f: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, String> {
    match tokio::time::timeout(ETCD_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: etcd did not answer within {} s", ETCD_TIMEOUT.as_secs())),
    }
}

/// The leader etcd names now (`Some(None)` while an election is under
/// way), or `None` when etcd did not say within `within` (the renewals,
/// not this, decide whether the session holds).
async fn current_leader(client: &mut Client, within: Duration) -> Option<Option<Candidate>> {
    tokio::time::timeout(within, super::leader(client)).await.ok()?.ok()
}

async fn session(
    options: &Options,
    mut client: Client,
    view: &watch::Sender<View>,
    record: &mut watch::Receiver<NodeRecord>,
    failsafe: &Failsafe,
) -> Ended {
    match session_inner(options, &mut client, view, record, failsafe).await {
        Ok(never) => match never {},
        Err(why) => Ended::Lost(why),
    }
}

/// A lease's renewals: the keeper and the stream of etcd's answers.
type Renewals = (etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream);

/// Sends this node's legs on until `until` on others' word while etcd is
/// away (`why`): the send fence opened that long, the view in failsafe;
/// a leader (`leads`) also leads on, and tells followers how long. True
/// if the node was not in failsafe before.
fn on_word(view: &watch::Sender<View>, until: Instant, why: &str, leads: bool) -> bool {
    crate::media::fence::open_until(until);
    let first = !view.borrow().failsafe;
    view.send_modify(|v| {
        v.etcd = Err(why.to_owned());
        v.failsafe = true;
        v.lease_until = Some(until);
        if leads {
            v.leads_until = Some(until);
            v.failsafe_until = Some(until);
        }
    });
    first
}

/// Ends a leadership whose lease or peers' word ran out before a renewal
/// or a new win (counted and said once).
fn lapse(view: &watch::Sender<View>, node: &str) {
    view.send_if_modified(|v| {
        if v.leads_until.is_some() && !v.leads() {
            v.leads_until = None;
            v.leader_key = None;
            v.failsafe = false;
            v.elections += 1;
            tracing::warn!(
                node,
                "This node no longer leads: its lease, or its peers' word, ran out before etcd renewed it."
            );
            true
        } else {
            false
        }
    });
}

async fn session_inner(
    options: &Options,
    client: &mut Client,
    view: &watch::Sender<View>,
    record: &mut watch::Receiver<NodeRecord>,
    failsafe: &Failsafe,
) -> Result<std::convert::Infallible, String> {
    let ttl = options.lease_ttl.as_secs() as i64;
    let sent = Instant::now();
    let grant = ask("granting a lease", client.lease_grant(ttl, None)).await?;
    let lease = grant.id();
    let granted = Duration::from_secs(grant.ttl().max(0) as u64);
    let mut valid_until = sent + granted;
    // The longest a leader waits on one request (see `patience`).
    let step = granted / 5;
    if !view.borrow().leads() {
        crate::media::fence::open_until(valid_until);
    }
    view.send_modify(|v| {
        v.lease = Some(lease);
        v.lease_until = Some(valid_until);
        v.etcd = Ok(());
    });
    let key = format!("{NODES_PREFIX}{}", options.node);
    let joined_utc = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let write = |r: &NodeRecord| {
        let r = NodeRecord { joined_utc: joined_utc.clone(), ..r.clone() };
        serde_json::to_string(&r).unwrap_or_default()
    };
    let value = write(&record.borrow_and_update());
    ask("writing the node's key", client.put(key.as_str(), value, Some(PutOptions::new().with_lease(lease)))).await?;
    failsafe.set_secret(ask("reading the cluster's credential", failsafe::ensure_secret(client)).await?);
    let mut renewals: Option<Renewals> = Some(ask("renewing the lease", client.lease_keep_alive(lease)).await?);
    if grant.ttl() != ttl {
        // etcd raises a TTL below its minimum (1.5 election timeouts,
        // rounded up: 2 s with etcd's defaults).
        tracing::warn!(
            asked_s = ttl,
            granted_s = grant.ttl(),
            "etcd granted another lease TTL than --lease-ttl asked."
        );
    }
    tracing::info!(node = %options.node, lease, ttl_s = grant.ttl(), "Joined the cluster.");
    let me = Candidate { name: options.node.clone(), address: options.address.clone(), page: options.page.clone() };
    // Started once this node is on the failsafe list and vouches for nobody.
    let mut campaign: Option<AbortOnDrop<Result<etcd_client::CampaignResponse, etcd_client::Error>>> = None;
    let mut won = false;
    // The leader's: the list it last wrote (whom it asks when etcd is away).
    // (`None` until written or read once: no failsafe before that.)
    let mut peers: Option<Vec<Candidate>> = None;
    // A write of the node's record that etcd did not take (sent again).
    let mut record_due = false;
    let mut tick = tokio::time::interval(options.lease_ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                lapse(view, &options.node);
                // After a stop (SIGSTOP, a stalled host) the first thing
                // checked: a lease that may have expired is not renewed.
                let sent = Instant::now();
                if sent >= valid_until {
                    return Err("the lease ran out before etcd renewed it".into());
                }
                // A node leaves itself time to ask for its peers' word
                // before its lease (or that word) runs out: each of its
                // etcd requests waits a fifth of the TTL at most, so a
                // renewal, the list and a failed renewal with the peers'
                // answers end within 4/5 of it. A follower then asks the
                // leader (`ask_leader_for_word`), until its lease's end.
                let patience = match view.borrow().failsafe {
                    false => (valid_until - sent).min(step),
                    true => (valid_until - sent).min(granted / 6),
                };
                let renewed = tokio::time::timeout(patience, async {
                    if renewals.is_none() {
                        renewals = Some(client.lease_keep_alive(lease).await?);
                    }
                    let Some((keeper, acks)) = renewals.as_mut() else { return Ok(None) };
                    keeper.keep_alive().await?;
                    acks.message().await
                })
                .await;
                let failed = match renewed {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => None,
                    Ok(Ok(Some(_))) => return Err("etcd says the lease expired".into()),
                    // etcd answered: the lease is gone (it expired while
                    // etcd was away). A new session, not the peers' word.
                    Ok(Err(e)) if e.to_string().contains("lease not found") => {
                        return Err(format!("etcd says the lease is gone: {e}"));
                    }
                    Ok(Ok(None)) => Some("etcd closed the lease's renewal stream".to_owned()),
                    Ok(Err(e)) => Some(format!("renewing the lease: {e}")),
                    Err(_) => Some(format!("no renewal answer within {} ms", patience.as_millis())),
                };
                match failed {
                    None => {
                        valid_until = sent + granted;
                        crate::media::fence::open_until(valid_until);
                        // A leader knows who leads; a follower asks.
                        let leader = if won { None } else { current_leader(client, options.lease_ttl / 4).await };
                        let was_failsafe = view.borrow().failsafe;
                        view.send_modify(|v| {
                            v.etcd = Ok(());
                            if v.failsafe && won {
                                v.synced += 1;
                            }
                            v.failsafe = false;
                            v.lease_until = Some(valid_until);
                            if won {
                                v.leads_until = Some(valid_until);
                            }
                            if let Some(l) = leader {
                                v.leader = l;
                            }
                        });
                        if was_failsafe && won {
                            tracing::info!(node = %options.node, "etcd answers again: this node leads on its lease again.");
                        } else if was_failsafe {
                            tracing::info!(node = %options.node, "etcd answers again: this node's legs run on its lease again.");
                        }
                        if won {
                            peers = keep_list(client, view, &me, peers, step).await;
                        } else if campaign.is_none() {
                            campaign = may_campaign(options, client, failsafe, &me, lease).await;
                        }
                        if record_due {
                            let value = write(&record.borrow());
                            let put = client.put(key.as_str(), value, Some(PutOptions::new().with_lease(lease)));
                            record_due = !matches!(tokio::time::timeout(step, put).await, Ok(Ok(_)));
                        }
                    }
                    Some(why) if won => {
                        // Cut off from etcd, or etcd is down: the peers say which.
                        renewals = None;
                        let secret = failsafe.secret().unwrap_or_default();
                        let asked = match &peers {
                            Some(p) => failsafe::ask_peers(p, &me.name, &secret, granted, step, options.peer_ca.as_deref()).await,
                            None => Err("the failsafe list was never read: nobody to ask".to_owned()),
                        };
                        match asked {
                            // Too late: the lease ran out while asking (the
                            // legs stopped; the coordinator stands down).
                            Ok(_) if Instant::now() >= valid_until => {
                                tracing::warn!(node = %options.node, "The peers vouched only after this node's lease ran out: it does not lead on.");
                            }
                            Ok(vouched) => {
                                valid_until = sent + granted;
                                if on_word(view, valid_until, &why, true) {
                                    tracing::warn!(node = %options.node, reason = %why, vouched, "etcd is away from every node: this node keeps leading and sending on its peers' word (failsafe); changes are refused until etcd is back.");
                                }
                            }
                            Err(refused) => {
                                // No extension; one given before runs out as given.
                                view.send_modify(|v| v.etcd = Err(why.clone()));
                                tracing::warn!(node = %options.node, reason = %why, peers = %refused, "etcd does not answer and not every peer vouches: this node stops leading when its lease runs out.");
                            }
                        }
                    }
                    Some(why) => {
                        // A follower: its legs go on for as long as the
                        // leader's own extension, if it has one.
                        renewals = None;
                        match ask_leader_for_word(options, view, failsafe, valid_until).await {
                            Ok(until) if until > valid_until => {
                                valid_until = until;
                                if on_word(view, valid_until, &why, false) {
                                    tracing::warn!(node = %options.node, reason = %why, "etcd is away from every node: this node sends its legs on the leader's word (failsafe), as long as the leader does.");
                                }
                            }
                            Ok(_) => view.send_modify(|v| v.etcd = Err(why.clone())),
                            Err(refused) => {
                                // No grant: the legs stop at the lease's end
                                // (the fence), and the session with them.
                                view.send_modify(|v| v.etcd = Err(why.clone()));
                                if Instant::now() + Duration::from_millis(100) >= valid_until {
                                    return Err(format!("{why}; the leader's word: {refused}"));
                                }
                            }
                        }
                    }
                }
            }
            r = async {
                match campaign.as_mut() {
                    Some(c) => (&mut c.0).await,
                    None => std::future::pending().await,
                }
            }, if campaign.is_some() && !won => {
                campaign = None;
                match r {
                    Ok(Ok(r)) if Instant::now() < valid_until => {
                        if let Some((until, leader)) = failsafe.vouched() {
                            // The old leader may send until then: give way,
                            // so it can win again, or its word runs out.
                            let left = until.saturating_duration_since(Instant::now());
                            return Err(format!("elected while vouching for {leader} (cut off from etcd) for {} ms more: giving way", left.as_millis()));
                        }
                        won = true;
                        let key = r.leader().map(|l| l.key().to_vec());
                        view.send_modify(|v| {
                            // Won again before the peers' word ran out: the
                            // same leadership, under a new election key.
                            if v.leads() {
                                v.synced += 1;
                            } else {
                                v.term += 1;
                                v.elections += 1;
                            }
                            v.leads_until = Some(valid_until);
                            v.leader_key = key;
                            v.failsafe = false;
                            v.leader = Some(me.clone());
                        });
                        crate::media::fence::open_until(valid_until);
                        peers = keep_list(client, view, &me, None, step).await;
                        tracing::info!(node = %options.node, "This node leads.");
                    }
                    Ok(Ok(_)) => return Err("elected after the lease ran out".into()),
                    // On the leader's word, etcd is away: the campaign is
                    // started again once etcd answers (a renewal).
                    Ok(Err(e)) if view.borrow().failsafe => {
                        tracing::debug!(node = %options.node, error = %e, "The campaign ended while etcd is away; started again once it answers.");
                    }
                    Ok(Err(e)) => return Err(format!("campaigning: {e}")),
                    Err(e) => return Err(format!("the campaign ended: {e}")),
                }
            }
            r = record.changed() => {
                if r.is_err() {
                    return Err("the node's record is gone".into());
                }
                let value = write(&record.borrow_and_update());
                let put = client.put(key.as_str(), value, Some(PutOptions::new().with_lease(lease)));
                // A leader never waits long on etcd here (its renewals and
                // its peers come first): not taken, it is sent again later.
                if won {
                    record_due = !matches!(tokio::time::timeout(step, put).await, Ok(Ok(_)));
                } else {
                    ask("writing the node's key", put).await?;
                }
            }
        }
    }
}

/// A follower whose renewal failed asks the leader how long it may send
/// its legs on the peers' word: the instant (this node's clock) until
/// which it may, counted from before it asked. The leader may not be on
/// its peers' word yet (it asks them once its own renewal fails): asked
/// again every 100 ms until `until`, this node's lease's end.
async fn ask_leader_for_word(
    options: &Options,
    view: &watch::Sender<View>,
    failsafe: &Failsafe,
    until: Instant,
) -> Result<Instant, String> {
    let leader = view.borrow().leader.clone().ok_or("no leader known")?;
    if leader.name == options.node {
        return Err("this node was the leader".into());
    }
    let secret = failsafe.secret().ok_or("the cluster's credential was never read")?;
    // What the leader said, else why it said nothing.
    let (mut refused, mut silent) = (None, format!("{} gave no word before this node's lease ran out", leader.name));
    loop {
        let asked = Instant::now();
        let left = until.saturating_duration_since(asked);
        if left.is_zero() {
            break;
        }
        match failsafe::ask_grant(&leader, &options.node, &secret, left, options.peer_ca.as_deref()).await {
            Ok(word) => return Ok(asked + word),
            Err(failsafe::NoWord::Refused(r)) => refused = Some(r),
            Err(failsafe::NoWord::Silent(s)) => silent = s,
        }
        let again = Instant::now() + Duration::from_millis(100);
        if again >= until {
            break;
        }
        tokio::time::sleep_until(again.into()).await;
    }
    Err(refused.unwrap_or(silent))
}

/// The campaign, started if this node may lead now: on the failsafe list
/// (or no list yet) and vouching for no leader cut off from etcd.
async fn may_campaign(
    options: &Options,
    client: &mut Client,
    failsafe: &Failsafe,
    me: &Candidate,
    lease: i64,
) -> Option<AbortOnDrop<Result<etcd_client::CampaignResponse, etcd_client::Error>>> {
    if failsafe.vouched().is_some() {
        return None;
    }
    let listed = tokio::time::timeout(options.lease_ttl / 4, failsafe::listed(client)).await.ok()?.ok()?;
    if let Some(list) = listed
        && !list.iter().any(|c| c.name == me.name)
    {
        tracing::debug!(node = %me.name, "Not on the failsafe list yet: not campaigning.");
        return None;
    }
    let (mut c, value) = (client.clone(), serde_json::to_vec(me).unwrap_or_default());
    Some(AbortOnDrop(tokio::spawn(async move { c.campaign(ELECTION, value, lease).await })))
}

/// The leader keeps the failsafe list equal to the nodes etcd lists, and
/// returns whom to ask when etcd is away: the list as written, or, when a
/// write's outcome is unknown, everyone it may hold (the old list, the
/// stored one and the new one together).
async fn keep_list(
    client: &mut Client,
    view: &watch::Sender<View>,
    me: &Candidate,
    was: Option<Vec<Candidate>>,
    within: Duration,
) -> Option<Vec<Candidate>> {
    let Some(leader_key) = view.borrow().leader_key.clone() else { return was };
    let read = async {
        let nodes = client.get(NODES_PREFIX, Some(etcd_client::GetOptions::new().with_prefix())).await?;
        let mut now: Vec<Candidate> = nodes
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<NodeRecord>(kv.value()).ok())
            .map(|r| Candidate { name: r.name, address: r.address, page: None })
            .collect();
        if !now.iter().any(|c| c.name == me.name) {
            now.push(me.clone());
        }
        now.sort_by(|a, b| a.name.cmp(&b.name));
        // Unchanged since this leader wrote it: nothing more to read.
        if was.as_ref() == Some(&now) {
            return Ok((now, None, true));
        }
        let stored = failsafe::listed(client).await?;
        Ok::<_, etcd_client::Error>((now, stored, false))
    };
    let (now, stored) = match tokio::time::timeout(within, read).await {
        Ok(Ok((now, _, true))) => return Some(now),
        Ok(Ok((now, stored, false))) => (now, stored),
        _ => return was,
    };
    if stored.as_ref() == Some(&now) {
        return Some(now);
    }
    let written = tokio::time::timeout(within, failsafe::write_list(client, &leader_key, &now)).await;
    if matches!(written, Ok(Ok(true))) {
        tracing::info!(nodes = %now.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(","), "The failsafe list: the nodes that may lead.");
        return Some(now);
    }
    let mut all: Vec<Candidate> = was.into_iter().chain(stored).flatten().chain(now).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all.dedup_by(|a, b| a.name == b.name);
    Some(all)
}
