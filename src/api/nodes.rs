//! NodeService: the cluster's nodes as etcd holds them (observer).

use tonic::{Request, Response, Status};

use super::auth::{Role, require};
use super::convert::timestamp;
use crate::cluster::{Cluster, ClusterError, Member};
use crate::proto::{self, node_service_server::NodeService};

/// The service; `None` in single-node mode.
#[derive(Debug, Clone)]
pub struct NodeApi {
    /// This node's cluster, if it runs in one.
    pub cluster: Option<Cluster>,
}

impl From<ClusterError> for Status {
    fn from(e: ClusterError) -> Self {
        Status::unavailable(super::bounded(e.to_string(), super::MAX_ERROR_CHARS))
    }
}

fn node_to_proto(m: Member) -> proto::Node {
    let health = if m.up() { proto::NodeHealth::Up } else { proto::NodeHealth::Lapsing };
    proto::Node {
        leader: m.leader,
        health: health.into(),
        legs: m.record.legs,
        source: m.record.source,
        lease_remaining_s: m.lease_remaining_s,
        lease_ttl_s: m.lease_ttl_s,
        may_lead: m.may_lead,
        joined_at: m.record.joined_utc.parse::<chrono::DateTime<chrono::Utc>>().ok().map(timestamp),
        name: m.record.name,
        address: m.record.address,
    }
}

impl NodeApi {
    /// What a question from another node needs: this node's cluster, the
    /// credential it came with, and the asking (or named) node's name in
    /// `field` checked.
    fn peer<T>(&self, req: &Request<T>, field: &str, name: &str) -> Result<(&Cluster, Option<String>), Status> {
        require(req, Role::Observer)?;
        let Some(cluster) = &self.cluster else {
            return Err(Status::failed_precondition("this daemon runs in single-node mode (no --cluster)"));
        };
        if name.is_empty() || name.len() > 63 {
            return Err(Status::invalid_argument(format!("{field}: a node name is 1 to 63 characters")));
        }
        let credential = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok((cluster, credential))
    }
}

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn list_nodes(
        &self,
        req: Request<proto::ListNodesRequest>,
    ) -> Result<Response<proto::ListNodesResponse>, Status> {
        require(&req, Role::Observer)?;
        let Some(cluster) = &self.cluster else {
            return Err(Status::failed_precondition(
                "this daemon runs in single-node mode (no --cluster): it is the only node",
            ));
        };
        let members = cluster.members().await?;
        Ok(Response::new(proto::ListNodesResponse {
            nodes: members.into_iter().map(node_to_proto).collect(),
            answered_by: cluster.node().to_owned(),
            answered_by_leads: cluster.view().leads(),
        }))
    }

    async fn failsafe(
        &self,
        req: Request<proto::FailsafeRequest>,
    ) -> Result<Response<proto::FailsafeResponse>, Status> {
        let (cluster, credential) = self.peer(&req, "leader", &req.get_ref().leader)?;
        let r = req.into_inner();
        let hold = std::time::Duration::from_millis(u64::from(r.hold_ms));
        let reachable =
            cluster.answer_failsafe(credential.as_deref(), &r.leader, hold).await.map_err(Status::permission_denied)?;
        Ok(Response::new(proto::FailsafeResponse { node: cluster.node().to_owned(), etcd_reachable: reachable }))
    }

    async fn failsafe_grant(
        &self,
        req: Request<proto::FailsafeGrantRequest>,
    ) -> Result<Response<proto::FailsafeGrantResponse>, Status> {
        let node = &req.get_ref().node;
        let (cluster, credential) = self.peer(&req, "node", node)?;
        cluster.check_peer(credential.as_deref()).map_err(Status::permission_denied)?;
        let leader = cluster.node().to_owned();
        Ok(Response::new(match cluster.grant_failsafe(node) {
            Ok(left) => proto::FailsafeGrantResponse {
                leader,
                // At least 1 ms: 0 means no grant.
                remaining_ms: u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1),
                refused: String::new(),
            },
            Err(why) => proto::FailsafeGrantResponse { leader, remaining_ms: 0, refused: why },
        }))
    }
}
