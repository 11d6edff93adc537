//! EventService: the schedule (admin to schedule and cancel, observer to
//! read) and master control (operator: arm, take, hold, extend, end, abort,
//! switch source).

use tonic::{Request, Response, Status};

use super::auth::{Role, require};
use super::convert::{
    air_time_to_proto, break_to_proto, event_to_proto, from_duration, new_break_from_proto, new_event_from_proto,
};
use super::invalid;
use crate::coordinator::Coordinator;
use crate::media::failover::SourceChoice;
use crate::proto::{self, event_service_server::EventService};
use crate::schedule::breaks::{AdBreak, leg_times};
use crate::schedule::{Action, EventId};

/// The service, a thin translation onto the coordinator.
#[derive(Debug, Clone)]
pub struct EventApi {
    /// The one owner of state.
    pub coordinator: Coordinator,
}

/// An id from a request in `field`: `prefix`, a dash and 12 hex digits;
/// the error names the field and says what `what` looks like.
fn prefixed_id(field: &str, prefix: &str, what: &str, id: &str) -> Result<String, Status> {
    let ok = id.len() == prefix.len() + 13
        && id
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|r| r.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(id.to_owned())
    } else if id.is_empty() {
        Err(Status::invalid_argument(format!("{field}: missing")))
    } else {
        Err(Status::invalid_argument(format!(
            "{field}: {} is not {what} ({prefix}- and 12 hex digits)",
            crate::config::quote(id)
        )))
    }
}

/// An event id from a request: `ev-` and 12 hex digits.
pub fn event_id(id: &str) -> Result<EventId, Status> {
    prefixed_id("event_id", "ev", "an event id", id).map(EventId)
}

/// A break id from a request: `br-` and 12 hex digits.
pub fn break_id(id: &str) -> Result<String, Status> {
    prefixed_id("break_id", "br", "a break id", id)
}

impl EventApi {
    /// `breaks` for a response, each leg's start in its own zone.
    async fn with_leg_times(&self, breaks: &[AdBreak]) -> Result<Vec<proto::AdBreak>, Status> {
        let channels = self.coordinator.channels().await?;
        let mut out = Vec::with_capacity(breaks.len());
        for b in breaks {
            let event = self.coordinator.event(b.event_id.clone()).await?;
            out.push(break_to_proto(b, &leg_times(b, &event, &channels)));
        }
        Ok(out)
    }

    async fn act(&self, req: Request<proto::EventRef>, action: Action) -> Result<Response<proto::Event>, Status> {
        let caller = require(&req, Role::Operator)?;
        let id = event_id(&req.get_ref().event_id)?;
        let e = self.coordinator.act(id, action, None, &caller.name).await?;
        Ok(Response::new(event_to_proto(&e)))
    }
}

#[tonic::async_trait]
impl EventService for EventApi {
    async fn schedule_event(
        &self,
        req: Request<proto::ScheduleEventRequest>,
    ) -> Result<Response<proto::Event>, Status> {
        let caller = require(&req, Role::Admin)?;
        let new = new_event_from_proto(req.get_ref()).map_err(invalid)?;
        let e = self.coordinator.schedule(new, &caller.name).await?;
        Ok(Response::new(event_to_proto(&e)))
    }

    async fn get_event(&self, req: Request<proto::EventRef>) -> Result<Response<proto::Event>, Status> {
        require(&req, Role::Observer)?;
        let id = event_id(&req.get_ref().event_id)?;
        Ok(Response::new(event_to_proto(&self.coordinator.event(id).await?)))
    }

    async fn list_events(
        &self,
        req: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        require(&req, Role::Observer)?;
        let events = self.coordinator.events().await?.iter().map(|e| event_to_proto(e)).collect();
        Ok(Response::new(proto::ListEventsResponse { events }))
    }

    async fn cancel_event(&self, req: Request<proto::EventRef>) -> Result<Response<proto::Event>, Status> {
        let caller = require(&req, Role::Admin)?;
        let id = event_id(&req.get_ref().event_id)?;
        let e = self.coordinator.act(id, Action::Cancel, None, &caller.name).await?;
        Ok(Response::new(event_to_proto(&e)))
    }

    async fn get_air_times(
        &self,
        req: Request<proto::EventRef>,
    ) -> Result<Response<proto::GetAirTimesResponse>, Status> {
        require(&req, Role::Observer)?;
        let id = event_id(&req.get_ref().event_id)?;
        let air_times = self.coordinator.air_times(id).await?.iter().map(air_time_to_proto).collect();
        Ok(Response::new(proto::GetAirTimesResponse { air_times }))
    }

    async fn arm(&self, req: Request<proto::EventRef>) -> Result<Response<proto::Event>, Status> {
        self.act(req, Action::Arm).await
    }

    async fn take(&self, req: Request<proto::EventRef>) -> Result<Response<proto::Event>, Status> {
        self.act(req, Action::Take).await
    }

    async fn hold(&self, req: Request<proto::EventRef>) -> Result<Response<proto::Event>, Status> {
        self.act(req, Action::Hold).await
    }

    async fn extend(&self, req: Request<proto::ExtendRequest>) -> Result<Response<proto::Event>, Status> {
        let caller = require(&req, Role::Operator)?;
        let r = req.get_ref();
        let id = event_id(&r.event_id)?;
        let by = r.by.as_ref().map(|d| from_duration(d, "by")).transpose().map_err(|e| invalid(vec![e]))?;
        let e = self.coordinator.act(id, Action::Extend, by, &caller.name).await?;
        Ok(Response::new(event_to_proto(&e)))
    }

    async fn end_event(&self, req: Request<proto::EventRef>) -> Result<Response<proto::Event>, Status> {
        self.act(req, Action::End).await
    }

    async fn abort(&self, req: Request<proto::EventRef>) -> Result<Response<proto::Event>, Status> {
        self.act(req, Action::Abort).await
    }

    async fn schedule_break(
        &self,
        req: Request<proto::ScheduleBreakRequest>,
    ) -> Result<Response<proto::ScheduleBreakResponse>, Status> {
        let caller = require(&req, Role::Operator)?;
        let id = event_id(&req.get_ref().event_id)?;
        let new = new_break_from_proto(req.get_ref(), id).map_err(invalid)?;
        let made = self.coordinator.schedule_break(new, &caller.name).await?;
        Ok(Response::new(proto::ScheduleBreakResponse { breaks: self.with_leg_times(&made).await? }))
    }

    async fn list_breaks(
        &self,
        req: Request<proto::ListBreaksRequest>,
    ) -> Result<Response<proto::ListBreaksResponse>, Status> {
        require(&req, Role::Observer)?;
        let wanted = &req.get_ref().event_id;
        let id = if wanted.is_empty() { None } else { Some(event_id(wanted)?) };
        let breaks = self.coordinator.breaks(id).await?;
        Ok(Response::new(proto::ListBreaksResponse { breaks: self.with_leg_times(&breaks).await? }))
    }

    async fn cancel_break(&self, req: Request<proto::CancelBreakRequest>) -> Result<Response<proto::AdBreak>, Status> {
        let caller = require(&req, Role::Operator)?;
        let id = break_id(&req.get_ref().break_id)?;
        let b = self.coordinator.cancel_break(id, &caller.name).await?;
        let mut out = self.with_leg_times(std::slice::from_ref(&b)).await?;
        Ok(Response::new(out.remove(0)))
    }

    async fn switch_source(&self, req: Request<proto::SwitchSourceRequest>) -> Result<Response<proto::Event>, Status> {
        let caller = require(&req, Role::Operator)?;
        let r = req.get_ref();
        let id = event_id(&r.event_id)?;
        let choice = match proto::SourceSelection::try_from(r.source) {
            Ok(proto::SourceSelection::Auto) => SourceChoice::Auto,
            Ok(proto::SourceSelection::Primary) => SourceChoice::Primary,
            Ok(proto::SourceSelection::Backup) => SourceChoice::Backup,
            Ok(proto::SourceSelection::Slate) => SourceChoice::Slate,
            _ => return Err(Status::invalid_argument("source: one of AUTO, PRIMARY, BACKUP, SLATE")),
        };
        let e = self.coordinator.switch_source(id, choice, &caller.name).await?;
        Ok(Response::new(event_to_proto(&e)))
    }
}
