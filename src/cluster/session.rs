//! A node's session with etcd: a lease, the membership key bound to it, the
//! renewals, and the campaign. A session ends when its lease can no longer
//! be counted on; the node then gives the lease up and starts a new one, as
//! a follower.

use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use tokio::sync::watch;

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
    mut stop: watch::Receiver<bool>,
) {
    let mut wait = Duration::from_millis(200);
    loop {
        let ended = tokio::select! {
            e = session(&options, client.clone(), &view, &mut record) => e,
            _ = stop.wait_for(|s| *s) => Ended::Stopped,
        };
        // Nothing more goes out under the lease this session held.
        crate::media::fence::close();
        let lease = view.borrow().lease;
        view.send_modify(|v| {
            v.leader_key = None;
            if v.leads_until.take().is_some() {
                v.elections += 1;
                tracing::warn!(node = %options.node, "This node no longer leads.");
            }
            v.lease = None;
            v.lease_until = None;
            v.leader = None;
        });
        // Given up at once, so the key goes and another node may lead
        // without waiting out the TTL (refused if it expired already).
        if let Some(id) = lease {
            let mut c = client.clone();
            let _ = tokio::time::timeout(Duration::from_secs(1), c.lease_revoke(id)).await;
        }
        match ended {
            Ended::Stopped => break,
            Ended::Lost(why) => {
                tracing::warn!(node = %options.node, reason = %why, "Cluster session lost; joining again.");
                view.send_modify(|v| v.etcd = Err(why));
            }
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
) -> Ended {
    match session_inner(options, &mut client, view, record).await {
        Ok(never) => match never {},
        Err(why) => Ended::Lost(why),
    }
}

async fn session_inner(
    options: &Options,
    client: &mut Client,
    view: &watch::Sender<View>,
    record: &mut watch::Receiver<NodeRecord>,
) -> Result<std::convert::Infallible, String> {
    let ttl = options.lease_ttl.as_secs() as i64;
    let sent = Instant::now();
    let grant = ask("granting a lease", client.lease_grant(ttl, None)).await?;
    let lease = grant.id();
    let mut valid_until = sent + Duration::from_secs(grant.ttl().max(0) as u64);
    crate::media::fence::open_until(valid_until);
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
    let (mut keeper, mut acks) = ask("renewing the lease", client.lease_keep_alive(lease)).await?;
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
    let mut campaign = {
        let me = Candidate { name: options.node.clone(), address: options.address.clone() };
        let (mut c, value) = (client.clone(), serde_json::to_vec(&me).unwrap_or_default());
        AbortOnDrop(tokio::spawn(async move { c.campaign(ELECTION, value, lease).await }))
    };
    let mut won = false;
    let mut tick = tokio::time::interval(options.lease_ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // After a stop (SIGSTOP, a stalled host) the first thing
                // checked: a lease that may have expired is not renewed.
                let sent = Instant::now();
                if sent >= valid_until {
                    return Err("the lease ran out before etcd renewed it".into());
                }
                let renewed = tokio::time::timeout(valid_until - sent, async {
                    keeper.keep_alive().await?;
                    acks.message().await
                })
                .await;
                match renewed {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => {
                        valid_until = sent + Duration::from_secs(r.ttl() as u64);
                        crate::media::fence::open_until(valid_until);
                        let leader = current_leader(client, options.lease_ttl / 4).await;
                        view.send_modify(|v| {
                            v.etcd = Ok(());
                            v.lease_until = Some(valid_until);
                            if won {
                                v.leads_until = Some(valid_until);
                            }
                            if let Some(l) = leader {
                                v.leader = l;
                            }
                        });
                    }
                    Ok(Ok(Some(_))) => return Err("etcd says the lease expired".into()),
                    Ok(Ok(None)) => return Err("etcd closed the lease's renewal stream".into()),
                    Ok(Err(e)) => return Err(format!("renewing the lease: {e}")),
                    Err(_) => return Err("no renewal answer before the lease ran out".into()),
                }
            }
            r = &mut campaign.0, if !won => {
                match r {
                    Ok(Ok(r)) if Instant::now() < valid_until => {
                        won = true;
                        let me = Candidate { name: options.node.clone(), address: options.address.clone() };
                        let key = r.leader().map(|l| l.key().to_vec());
                        view.send_modify(|v| {
                            v.leads_until = Some(valid_until);
                            v.leader_key = key;
                            v.elections += 1;
                            v.leader = Some(me);
                        });
                        tracing::info!(node = %options.node, "This node leads.");
                    }
                    Ok(Ok(_)) => return Err("elected after the lease ran out".into()),
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
                ask("writing the node's key", put).await?;
            }
        }
    }
}
