//! Cluster mode with `--placement spread`: master control places each live
//! leg of the running event on one node (`crate::cluster::carry`), keeps
//! the other nodes' placements in step with the cue and the source choice
//! each tick, moves the legs of a node whose lease etcd let go, and reads
//! what the other nodes carry into the status, the metrics and the as-run
//! log as it reads its own relay's legs.
//!
//! A delayed leg and a file leg stay with the leader: they need its
//! recording and its file-leg directory.

use std::collections::BTreeMap;
use std::time::Duration;

use super::State;
use super::asrun::{Actor, Kind, entry};
use crate::cluster::carry::{self, Carry, Placement};
use crate::config::{self, Channel, Ingest};
use crate::media::leg::{LegState, LegStatus};
use tracing::{info, warn};

/// A roster older than this says nothing about who is alive: no leg moves
/// on it (etcd is slow or away; the legs flow on their last placement).
const FRESH: Duration = Duration::from_secs(1);

/// Whether `channel` may go to another node.
fn movable(channel: &Channel, delays: &[(String, Duration)]) -> bool {
    let delayed = delays.iter().any(|(id, d)| *id == channel.id.as_str() && !d.is_zero());
    !delayed && !matches!(channel.ingest, Ingest::File(_))
}

impl State {
    /// Splits the event's `channels` between this node (returned) and the
    /// others (`remote`, by node), keeping legs where etcd says they run
    /// (a new leader finds them there), and says so in the as-run log.
    pub(super) fn place_legs(
        &self,
        event_id: &str,
        channels: Vec<Channel>,
        delays: &[(String, Duration)],
        remote: &mut BTreeMap<String, Vec<Channel>>,
    ) -> Vec<Channel> {
        let Some(p) = &self.options.placement else { return channels };
        let me = p.node().to_owned();
        let roster = p.roster();
        let placed_now = p.placed();
        // The nodes up, and those holding a placement: it is bound to their
        // lease, so they live (a leader just elected may not have read the
        // roster yet; it keeps the legs where they run).
        let mut nodes = roster.up();
        nodes.extend(placed_now.keys().cloned());
        let placed: BTreeMap<String, Vec<String>> =
            placed_now.into_iter().filter(|(_, c)| c.event_id == event_id).map(|(n, c)| (n, c.legs)).collect();
        let ids: Vec<String> = channels.iter().filter(|c| movable(c, delays)).map(|c| c.id.to_string()).collect();
        let plan = carry::place(&ids, &nodes, &me, &placed);
        let mut local = Vec::new();
        for c in channels {
            let at = plan.iter().find(|(_, ids)| ids.contains(&c.id.to_string())).map(|(n, _)| n.clone());
            match at.filter(|n| *n != me) {
                Some(node) => remote.entry(node).or_default().push(c),
                None => local.push(c),
            }
        }
        let mut detail = format!("{}: {}", me, local.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", "));
        for (node, cs) in remote.iter() {
            detail += &format!("; {node}: {}", cs.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", "));
        }
        info!(event = %event_id, placement = %detail, "Legs placed.");
        let now = self.options.clock.now();
        let e = entry(now, event_id, "", None, Kind::LegsPlaced, format!("legs placed: {detail}"), &Actor::Daemon);
        self.record(&e, Kind::LegsPlaced);
        local
    }

    /// Each tick: moves the legs of nodes whose lease etcd let go, and
    /// asks for the other nodes' placements with the cue and choice now.
    pub(super) fn tend_placement(&mut self) {
        let Some(p) = self.options.placement.clone() else { return };
        if self.starting.is_some() {
            return; // Decided when the relay runs.
        }
        let Some(r) = &mut self.running else {
            p.want(Some(BTreeMap::new()));
            return;
        };
        let Some(relay) = &mut r.relay else { return };
        let me = p.node().to_owned();
        let roster = p.roster();
        // A node that sent its legs on this leader's word through an etcd
        // outage may send until that word runs out: nothing moves before.
        let gone: Vec<String> = if p.may_move() {
            r.remote.keys().filter(|n| roster.alive(n, FRESH) == Some(false)).cloned().collect()
        } else {
            Vec::new()
        };
        let mut moved = Vec::new();
        if !gone.is_empty() {
            let orphans: Vec<(String, Channel)> = gone
                .iter()
                .filter_map(|n| r.remote.remove(n).map(|cs| (n, cs)))
                .flat_map(|(n, cs)| cs.into_iter().map(move |c| (n.clone(), c)))
                .collect();
            let mut now_placed: BTreeMap<String, Vec<String>> =
                r.remote.iter().map(|(n, cs)| (n.clone(), cs.iter().map(|c| c.id.to_string()).collect())).collect();
            now_placed.insert(me.clone(), relay.carries());
            let all: Vec<String> =
                now_placed.values().flatten().cloned().chain(orphans.iter().map(|(_, c)| c.id.to_string())).collect();
            let plan = carry::place(&all, &roster.up(), &me, &now_placed);
            let now = self.options.clock.now();
            for (from, c) in orphans {
                let id = c.id.to_string();
                let to = plan.iter().find(|(_, ids)| ids.contains(&id)).map_or(me.clone(), |(n, _)| n.clone());
                let detail = format!("moved to node {to}: node {from}'s lease ran out (it stopped renewing)");
                warn!(leg = %id, detail = %detail, "Leg moved.");
                let tz = r.zones.iter().find(|(z, _)| *z == id).map(|(_, tz)| *tz);
                moved.push(entry(now, &r.event_id.0, &id, tz, Kind::LegMoved, detail, &Actor::Daemon));
                if to == me {
                    relay.add_leg(&c);
                } else {
                    r.remote.entry(to).or_default().push(c);
                }
            }
        }
        let title = self.events.get(&r.event_id.0).map(|e| e.title.clone()).unwrap_or_default();
        let (cue, choice) = (relay.cue(), r.choice);
        let want = r
            .remote
            .iter()
            .map(|(node, cs)| {
                // A backup leg's spec is its channel's: each channel once.
                let mut channels: Vec<String> = cs.iter().filter_map(|c| config::channel_to_toml(c).ok()).collect();
                channels.sort_unstable();
                channels.dedup();
                let legs = cs.iter().map(|c| c.id.to_string()).collect();
                let carry = Carry { event_id: r.event_id.0.clone(), title: title.clone(), channels, legs, cue, choice };
                (node.clone(), carry)
            })
            .collect();
        p.want(Some(want));
        for e in moved {
            self.record(&e, Kind::LegMoved);
        }
    }
}

/// The legs other nodes carry for `event_id` (`remote`: by node), each
/// with its node: as that node last said, or `CONNECTING` until it says
/// (not an error: no as-run entry, no alert).
pub(super) fn remote_legs(
    event_id: &str,
    remote: &BTreeMap<String, Vec<Channel>>,
    p: Option<&Placement>,
) -> Vec<(String, LegStatus)> {
    let Some(p) = p else { return Vec::new() };
    let said = p.carrying();
    let mut out = Vec::new();
    for (node, channels) in remote {
        let theirs = said.get(node).filter(|c| c.event_id == event_id);
        for c in channels {
            let id = c.id.to_string();
            let status = theirs
                .and_then(|t| t.legs.iter().find(|l| l.channel_id == id).cloned())
                .unwrap_or_else(|| LegStatus::not_started(c, LegState::Connecting));
            out.push((node.clone(), status));
        }
    }
    out
}
