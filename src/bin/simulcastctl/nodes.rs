//! `simulcastctl nodes`: the cluster's nodes, their health and the leader.

use simulcast::proto;
use simulcast::proto::node_service_client::NodeServiceClient;
use simulcast::table::Table;

use crate::{Cli, connect, status_line};

fn health(h: i32) -> &'static str {
    match proto::NodeHealth::try_from(h) {
        Ok(proto::NodeHealth::Up) => "UP",
        Ok(proto::NodeHealth::Lapsing) => "LAPSING",
        _ => "?",
    }
}

fn joined(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn json(r: &proto::ListNodesResponse) -> serde_json::Value {
    serde_json::json!({
        "answered_by": r.answered_by,
        "answered_by_leads": r.answered_by_leads,
        "nodes": r.nodes.iter().map(|n| serde_json::json!({
            "name": n.name, "address": n.address, "leader": n.leader, "health": health(n.health),
            "legs": n.legs, "source": n.source, "lease_remaining_s": n.lease_remaining_s,
            "lease_ttl_s": n.lease_ttl_s, "joined_utc": joined(n.joined_at.as_ref()), "may_lead": n.may_lead,
        })).collect::<Vec<_>>(),
    })
}

pub async fn run(cli: &Cli) -> Result<(), String> {
    let mut c = NodeServiceClient::new(connect(cli).await?);
    let r = c.list_nodes(proto::ListNodesRequest {}).await.map_err(|s| status_line(&s))?.into_inner();
    if cli.json {
        say!("{}", serde_json::to_string_pretty(&json(&r)).unwrap_or_default());
        return Ok(());
    }
    let mut t =
        Table::new(&["NODE", "ROLE", "HEALTH", "ADDRESS", "LEGS", "SOURCE", "LEASE", "MAY LEAD", "JOINED (UTC)"]);
    for n in &r.nodes {
        t.row(vec![
            n.name.clone(),
            if n.leader { "LEADER" } else { "follower" }.to_owned(),
            health(n.health).to_owned(),
            n.address.clone(),
            n.legs.to_string(),
            n.source.clone(),
            format!("{}/{} s", n.lease_remaining_s, n.lease_ttl_s),
            if n.may_lead { "yes" } else { "not yet" }.to_owned(),
            joined(n.joined_at.as_ref()),
        ]);
    }
    let leader = r.nodes.iter().find(|n| n.leader).map_or("none (an election is under way)", |n| n.name.as_str());
    say!("{} node(s); leader: {leader}; answered by {}.", r.nodes.len(), r.answered_by);
    say_raw!("{}", t.render());
    Ok(())
}
