//! AlertService: recent alerts and their delivery (observer), a test
//! alert (admin).

use tonic::{Request, Response, Status};

use super::auth::{Role, require};
use super::convert::timestamp;
use crate::coordinator::Coordinator;
use crate::proto::{self, alert_service_server::AlertService};
use crate::store::StoredAlert;

/// The most alerts one list returns.
pub const MAX_LIST: u32 = 1000;
/// Alerts listed when the request says 0.
pub const DEFAULT_LIST: u32 = 50;

/// The service, a thin translation onto the coordinator.
#[derive(Debug, Clone)]
pub struct AlertApi {
    /// The one owner of state.
    pub coordinator: Coordinator,
}

fn instant(t: Option<&str>) -> Option<prost_types::Timestamp> {
    t.and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok()).map(timestamp)
}

/// An alert as the API shows it.
pub fn alert_to_proto(a: &crate::alerts::Alert, deliveries: &[crate::store::Delivery]) -> proto::Alert {
    proto::Alert {
        key: a.idempotency_key.clone(),
        raised_at: instant(Some(&a.raised_at)),
        kind: a.kind.as_str().into(),
        severity: a.severity.as_str().into(),
        summary: a.summary.clone(),
        event_id: a.event.as_ref().map(|e| e.id.clone()).unwrap_or_default(),
        channel_id: a.channel.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
        deliveries: deliveries
            .iter()
            .map(|d| proto::AlertDelivery {
                webhook: d.webhook.clone(),
                state: d.state.as_str().into(),
                attempts: d.attempts,
                last_error: d.last_error.clone(),
                next_attempt_at: instant(d.next_attempt_utc.as_deref()),
                delivered_at: instant(d.delivered_utc.as_deref()),
            })
            .collect(),
        body: serde_json::to_string(a).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl AlertService for AlertApi {
    async fn list_alerts(
        &self,
        req: Request<proto::ListAlertsRequest>,
    ) -> Result<Response<proto::ListAlertsResponse>, Status> {
        require(&req, Role::Observer)?;
        let limit = match req.get_ref().limit {
            0 => DEFAULT_LIST,
            n if n > MAX_LIST => {
                return Err(Status::invalid_argument(format!("limit: {n} is more than {MAX_LIST}")));
            }
            n => n,
        };
        let alerts = self.coordinator.alerts(limit as usize).await?;
        let alerts = alerts.iter().map(|StoredAlert { alert, deliveries }| alert_to_proto(alert, deliveries)).collect();
        Ok(Response::new(proto::ListAlertsResponse { alerts }))
    }

    async fn send_test_alert(
        &self,
        req: Request<proto::SendTestAlertRequest>,
    ) -> Result<Response<proto::Alert>, Status> {
        let caller = require(&req, Role::Admin)?;
        let a = self.coordinator.test_alert(&caller.name).await?;
        Ok(Response::new(alert_to_proto(&a, &[])))
    }
}
