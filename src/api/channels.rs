//! ChannelService: the partner channels (admin to change, observer to read).

use tonic::{Request, Response, Status};

use super::auth::{Role, require};
use super::convert::{channel_from_proto, channel_to_proto};
use super::invalid;
use crate::config::ChannelId;
use crate::coordinator::Coordinator;
use crate::proto::{self, channel_service_server::ChannelService};

/// The service, a thin translation onto the coordinator.
#[derive(Debug, Clone)]
pub struct ChannelApi {
    /// The one owner of state.
    pub coordinator: Coordinator,
}

fn channel_id(id: &str) -> Result<ChannelId, Status> {
    ChannelId::parse(id).map_err(|e| Status::invalid_argument(format!("id: {e}")))
}

#[tonic::async_trait]
impl ChannelService for ChannelApi {
    async fn create_channel(
        &self,
        req: Request<proto::CreateChannelRequest>,
    ) -> Result<Response<proto::Channel>, Status> {
        let caller = require(&req, Role::Admin)?;
        let p = req.into_inner().channel.ok_or_else(|| Status::invalid_argument("channel: missing"))?;
        let ch = channel_from_proto(&p).map_err(invalid)?;
        let ch = self.coordinator.create_channel(ch, &caller.name).await?;
        Ok(Response::new(channel_to_proto(&ch)))
    }

    async fn get_channel(&self, req: Request<proto::GetChannelRequest>) -> Result<Response<proto::Channel>, Status> {
        require(&req, Role::Observer)?;
        let id = channel_id(&req.get_ref().id)?;
        Ok(Response::new(channel_to_proto(&self.coordinator.channel(id).await?)))
    }

    async fn list_channels(
        &self,
        req: Request<proto::ListChannelsRequest>,
    ) -> Result<Response<proto::ListChannelsResponse>, Status> {
        require(&req, Role::Observer)?;
        let channels = self.coordinator.channels().await?.iter().map(channel_to_proto).collect();
        Ok(Response::new(proto::ListChannelsResponse { channels }))
    }

    async fn update_channel(
        &self,
        req: Request<proto::UpdateChannelRequest>,
    ) -> Result<Response<proto::Channel>, Status> {
        let caller = require(&req, Role::Admin)?;
        let p = req.into_inner().channel.ok_or_else(|| Status::invalid_argument("channel: missing"))?;
        let ch = channel_from_proto(&p).map_err(invalid)?;
        let ch = self.coordinator.update_channel(ch, &caller.name).await?;
        Ok(Response::new(channel_to_proto(&ch)))
    }

    async fn delete_channel(
        &self,
        req: Request<proto::DeleteChannelRequest>,
    ) -> Result<Response<proto::DeleteChannelResponse>, Status> {
        let caller = require(&req, Role::Admin)?;
        let id = channel_id(&req.get_ref().id)?;
        self.coordinator.delete_channel(id, &caller.name).await?;
        Ok(Response::new(proto::DeleteChannelResponse {}))
    }
}
