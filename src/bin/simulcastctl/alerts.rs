//! `simulcastctl alerts`: recent alerts and their delivery to each
//! webhook, and a test alert.

use clap::Subcommand;
use simulcast::proto;
use simulcast::proto::alert_service_client::AlertServiceClient;
use simulcast::table::Table;

use crate::{Cli, connect, status_line};

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// Recent alerts, newest first: when, severity, kind, summary, and
    /// each webhook's delivery (delivered, pending with its attempts and
    /// last error, or failed).
    List {
        /// How many (at most 1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Queue a test alert to every webhook of simulcastd's [alerts]
    /// (admin); `alerts list` then shows whether each took it.
    Test,
}

fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// One webhook's delivery in a few words.
fn delivery(d: &proto::AlertDelivery) -> String {
    match d.state.as_str() {
        "delivered" => format!("{}: delivered ({} attempt(s))", d.webhook, d.attempts),
        "pending" if d.attempts == 0 => format!("{}: pending", d.webhook),
        "pending" => format!(
            "{}: pending, {} failed attempt(s), next {} UTC ({})",
            d.webhook,
            d.attempts,
            when(d.next_attempt_at.as_ref()),
            d.last_error
        ),
        _ => format!("{}: failed after {} attempt(s) ({})", d.webhook, d.attempts, d.last_error),
    }
}

fn json(a: &proto::Alert) -> serde_json::Value {
    serde_json::json!({
        "key": a.key,
        "raised_at": when(a.raised_at.as_ref()),
        "kind": a.kind,
        "severity": a.severity,
        "summary": a.summary,
        "event_id": a.event_id,
        "channel_id": a.channel_id,
        "deliveries": a.deliveries.iter().map(|d| serde_json::json!({
            "webhook": d.webhook, "state": d.state, "attempts": d.attempts, "last_error": d.last_error,
            "next_attempt_at": when(d.next_attempt_at.as_ref()), "delivered_at": when(d.delivered_at.as_ref()),
        })).collect::<Vec<_>>(),
        "body": serde_json::from_str::<serde_json::Value>(&a.body).unwrap_or_default(),
    })
}

pub async fn run(cli: &Cli, cmd: &AlertsCmd) -> Result<(), String> {
    let mut c = AlertServiceClient::new(connect(cli).await?);
    let st = |s: tonic::Status| status_line(&s);
    match cmd {
        AlertsCmd::List { limit } => {
            let alerts =
                c.list_alerts(proto::ListAlertsRequest { limit: *limit }).await.map_err(st)?.into_inner().alerts;
            if cli.json {
                say!(
                    "{}",
                    serde_json::to_string_pretty(&alerts.iter().map(json).collect::<Vec<_>>()).unwrap_or_default()
                );
                return Ok(());
            }
            if alerts.is_empty() {
                say!("No alerts.");
                return Ok(());
            }
            let mut t = Table::new(&["RAISED (UTC)", "SEVERITY", "KIND", "EVENT", "CHANNEL", "DELIVERY", "SUMMARY"]);
            for a in &alerts {
                let deliveries = if a.deliveries.is_empty() {
                    "no webhook configured".to_owned()
                } else {
                    a.deliveries.iter().map(delivery).collect::<Vec<_>>().join("; ")
                };
                t.row(vec![
                    when(a.raised_at.as_ref()),
                    a.severity.to_uppercase(),
                    a.kind.clone(),
                    a.event_id.clone(),
                    a.channel_id.clone(),
                    deliveries,
                    a.summary.clone(),
                ]);
            }
            say_raw!("{}", t.render());
        }
        AlertsCmd::Test => {
            let a = c.send_test_alert(proto::SendTestAlertRequest {}).await.map_err(st)?.into_inner();
            if cli.json {
                say!("{}", serde_json::to_string_pretty(&json(&a)).unwrap_or_default());
            } else {
                say!("Test alert {} queued to every webhook; `simulcastctl alerts list` shows its delivery.", a.key);
            }
        }
    }
    Ok(())
}
