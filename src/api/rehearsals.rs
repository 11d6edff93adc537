//! RehearsalService: operators start and schedule rehearsals; observers read
//! reports. `StartRehearsal` answers at once (state PREFLIGHT); the report
//! fills in as the rehearsal runs (poll `GetRehearsalReport`).

use std::time::Duration;

use tonic::{Request, Response, Status};

use super::auth::{Role, require};
use super::convert::{from_duration, timestamp};
use super::events::event_id;
use super::invalid;
use crate::config::FieldError;
use crate::coordinator::{Coordinator, NewRecurring};
use crate::proto::{self, rehearsal_service_server::RehearsalService};
use crate::rehearsal::recurring::Recurring;
use crate::rehearsal::{self, Phase, Plan, RehearsalSource, Report};

/// The service.
#[derive(Debug, Clone)]
pub struct RehearsalApi {
    /// The one owner of state.
    pub coordinator: Coordinator,
}

fn wire(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// A plan from the wire; unset lengths take the defaults.
fn plan(
    pre: &Option<prost_types::Duration>,
    program: &Option<prost_types::Duration>,
    post: &Option<prost_types::Duration>,
    live: bool,
    stamp: bool,
) -> Result<Plan, Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut one = |d: &Option<prost_types::Duration>, key: &str, default: Duration| match d {
        None => default,
        Some(d) => match from_duration(d, key).map(|d| d.to_std()) {
            Ok(Ok(d)) => d,
            _ => {
                errs.push(FieldError { key: key.into(), message: "must be a duration of zero or more".into() });
                default
            }
        },
    };
    let p = Plan {
        preroll: one(pre, "preroll", rehearsal::DEFAULT_PREROLL),
        program: one(program, "program", rehearsal::DEFAULT_PROGRAM),
        postroll: one(post, "postroll", rehearsal::DEFAULT_POSTROLL),
        source: if live { RehearsalSource::Live } else { RehearsalSource::Test },
        stamp,
    };
    if errs.is_empty() { Ok(p) } else { Err(errs) }
}

/// A report for the wire.
pub fn report_to_proto(r: &Report) -> proto::RehearsalReport {
    let ts = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(timestamp);
    proto::RehearsalReport {
        rehearsal_id: r.id.clone(),
        event_id: r.event_id.clone(),
        passed: r.passed,
        legs: r
            .legs
            .iter()
            .map(|l| proto::RehearsalLeg {
                channel_id: l.channel_id.clone(),
                passed: l.passed,
                connected_at: ts(l.connected_at),
                first_program_at: ts(l.first_program_at),
                bytes_sent: l.bytes_sent,
                reconnects: l.reconnects,
                dropped_buffers: l.dropped_buffers,
                errors: l.errors.clone(),
                protocol: l.protocol.clone(),
                target: l.target.clone(),
                preflight_ok: l.preflight_ok,
                preflight: l.preflight.clone(),
                first_program_error: l.first_program_error_ms.map(|ms| {
                    let ns = (ms * 1e6) as i64;
                    prost_types::Duration { seconds: ns / 1_000_000_000, nanos: (ns % 1_000_000_000) as i32 }
                }),
                average_bitrate_bps: l.average_bitrate_bps,
                srt: l.srt.map(|s| proto::SrtStats {
                    rtt_ms: s.rtt_ms,
                    packets_lost: s.packets_lost,
                    packets_retransmitted: s.packets_retransmitted,
                }),
                stamp: l.stamp.clone().unwrap_or_default(),
            })
            .collect(),
        state: match r.phase {
            Phase::Preflight => proto::RehearsalState::Preflight,
            Phase::Running => proto::RehearsalState::Running,
            Phase::Finished => proto::RehearsalState::Finished,
        } as i32,
        started_at: Some(timestamp(r.started_at)),
        program_planned_at: ts(r.program_at),
        ends_at: ts(r.ends_at),
        finished_at: ts(r.finished_at),
        source: r.plan.source.as_str().into(),
        actor: r.actor.clone(),
        summary: r.summary.clone(),
        preroll: Some(wire(r.plan.preroll)),
        program: Some(wire(r.plan.program)),
        postroll: Some(wire(r.plan.postroll)),
        stamp_legs: r.plan.stamp,
    }
}

fn schedule_to_proto(s: &Recurring) -> proto::RehearsalSchedule {
    proto::RehearsalSchedule {
        schedule_id: s.id.clone(),
        event_id: s.event_id.clone(),
        local_time: s.at.format("%H:%M").to_string(),
        timezone: s.timezone.clone(),
        until: s.until.to_string(),
        next_at: s.next().map(timestamp),
        preroll: Some(wire(s.plan.preroll)),
        program: Some(wire(s.plan.program)),
        postroll: Some(wire(s.plan.postroll)),
        live_source: s.plan.source == RehearsalSource::Live,
        stamp_legs: s.plan.stamp,
    }
}

fn optional_event(id: &str) -> Result<Option<String>, Status> {
    if id.is_empty() { Ok(None) } else { event_id(id).map(|e| Some(e.0)) }
}

#[tonic::async_trait]
impl RehearsalService for RehearsalApi {
    async fn start_rehearsal(
        &self,
        req: Request<proto::StartRehearsalRequest>,
    ) -> Result<Response<proto::RehearsalReport>, Status> {
        let caller = require(&req, Role::Operator)?;
        let r = req.get_ref();
        let id = event_id(&r.event_id)?;
        let plan = plan(&r.preroll, &r.program, &r.postroll, r.live_source, r.stamp_legs).map_err(invalid)?;
        let report = self.coordinator.start_rehearsal(id, plan, &caller.name).await?;
        Ok(Response::new(report_to_proto(&report)))
    }

    async fn get_rehearsal_report(
        &self,
        req: Request<proto::RehearsalRef>,
    ) -> Result<Response<proto::RehearsalReport>, Status> {
        require(&req, Role::Observer)?;
        let id = req.get_ref().rehearsal_id.clone();
        if id.is_empty() {
            return Err(Status::invalid_argument("rehearsal_id: missing"));
        }
        Ok(Response::new(report_to_proto(&self.coordinator.rehearsal(id).await?)))
    }

    async fn list_rehearsals(
        &self,
        req: Request<proto::ListRehearsalsRequest>,
    ) -> Result<Response<proto::ListRehearsalsResponse>, Status> {
        require(&req, Role::Observer)?;
        let event = optional_event(&req.get_ref().event_id)?;
        let list = self.coordinator.rehearsals(event).await?;
        Ok(Response::new(proto::ListRehearsalsResponse { rehearsals: list.iter().map(report_to_proto).collect() }))
    }

    async fn schedule_rehearsal(
        &self,
        req: Request<proto::ScheduleRehearsalRequest>,
    ) -> Result<Response<proto::RehearsalSchedule>, Status> {
        let caller = require(&req, Role::Operator)?;
        let r = req.get_ref();
        let new = NewRecurring {
            event_id: event_id(&r.event_id)?,
            local_time: r.local_time.clone(),
            timezone: r.timezone.clone(),
            until: r.until.clone(),
            plan: plan(&r.preroll, &r.program, &r.postroll, r.live_source, r.stamp_legs).map_err(invalid)?,
        };
        let s = self.coordinator.schedule_rehearsal(new, &caller.name).await?;
        Ok(Response::new(schedule_to_proto(&s)))
    }

    async fn list_rehearsal_schedules(
        &self,
        req: Request<proto::ListRehearsalSchedulesRequest>,
    ) -> Result<Response<proto::ListRehearsalSchedulesResponse>, Status> {
        require(&req, Role::Observer)?;
        let event = optional_event(&req.get_ref().event_id)?;
        let list = self.coordinator.rehearsal_schedules(event).await?;
        Ok(Response::new(proto::ListRehearsalSchedulesResponse {
            schedules: list.iter().map(schedule_to_proto).collect(),
        }))
    }

    async fn delete_rehearsal_schedule(
        &self,
        req: Request<proto::RehearsalScheduleRef>,
    ) -> Result<Response<proto::DeleteRehearsalScheduleResponse>, Status> {
        let caller = require(&req, Role::Operator)?;
        let id = req.get_ref().schedule_id.clone();
        self.coordinator.delete_rehearsal_schedule(id, &caller.name).await?;
        Ok(Response::new(proto::DeleteRehearsalScheduleResponse {}))
    }
}
