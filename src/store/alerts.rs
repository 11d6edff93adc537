//! Alerts and their deliveries: an alert is queued in the same transaction
//! as the as-run entry that raised it, with one delivery per webhook; the
//! deliverer takes the due ones, and settles each attempt here. Nothing
//! is lost across a restart: a delivery stays `pending` until a webhook
//! took it or it expired.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{AsRunEntry, Store, StoreError, corrupt, insert_asrun, utc_text};
use crate::alerts::Alert;

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not taken yet: tried again at its next attempt.
    Pending,
    /// The webhook answered 2xx.
    Delivered,
    /// Given up (expired, or its webhook is no longer configured).
    Failed,
}

impl DeliveryState {
    /// `pending`, `delivered`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        }
    }
}

/// One alert's delivery to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The webhook's name.
    pub webhook: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed (empty when none did).
    pub last_error: String,
    /// When it is tried next (pending only), RFC 3339 UTC.
    pub next_attempt_utc: Option<String>,
    /// When the webhook took it, RFC 3339 UTC.
    pub delivered_utc: Option<String>,
}

/// An alert as stored, with its deliveries.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    /// The alert, as sent.
    pub alert: Alert,
    /// Its deliveries, by webhook name.
    pub deliveries: Vec<Delivery>,
}

/// A delivery whose attempt is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// The alert's idempotency key.
    pub key: String,
    /// The webhook's name.
    pub webhook: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When the alert was raised (RFC 3339 UTC).
    pub raised_utc: String,
    /// The JSON body, byte for byte as every attempt sends it.
    pub body: String,
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Taken at this instant.
    Delivered(DateTime<Utc>),
    /// Not taken, for this reason; tried again at the instant given.
    Retry(String, DateTime<Utc>),
    /// Not taken, for this reason, and not tried again.
    GiveUp(String),
}

/// Queues `alert` with a delivery to each of `webhooks`, due at once.
fn queue(conn: &Connection, alert: &Alert, webhooks: &[String]) -> Result<(), StoreError> {
    let body = serde_json::to_string(alert).map_err(|e| corrupt(&alert.idempotency_key, e))?;
    conn.execute(
        "INSERT INTO alerts (key, raised_utc, event_id, severity, kind, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            alert.idempotency_key,
            alert.raised_at,
            alert.event.as_ref().map_or("", |e| e.id.as_str()),
            alert.severity.as_str(),
            alert.kind.as_str(),
            body
        ],
    )?;
    for w in webhooks {
        conn.execute(
            "INSERT INTO alert_deliveries (key, webhook, state, next_utc) VALUES (?1, ?2, 'pending', ?3)",
            params![alert.idempotency_key, w, alert.raised_at],
        )?;
    }
    Ok(())
}

impl Store {
    /// Appends an as-run entry and, in the same transaction, queues the
    /// alert it raised: the log and the alert queue never disagree.
    pub fn append_asrun_alerting(
        &self,
        e: &AsRunEntry,
        alert: Option<&Alert>,
        webhooks: &[String],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint()?;
        insert_asrun(&tx, e, &self.asrun_written)?;
        if let Some(a) = alert {
            queue(&tx, a, webhooks)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// [`Store::append_asrun_alerting`], unless the log holds this very
    /// entry already (same event, leg, kind, instant and words): an entry
    /// written again after a write whose outcome was unknown (etcd may have
    /// applied it after all). `false` when it was there.
    pub fn append_asrun_once(
        &self,
        e: &AsRunEntry,
        alert: Option<&Alert>,
        webhooks: &[String],
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint()?;
        let there: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM asrun WHERE event_id = ?1 AND utc = ?2 AND channel_id = ?3 AND kind = ?4 AND detail = ?5)",
            params![e.event_id, e.utc, e.channel_id, e.kind, e.detail],
            |r| r.get(0),
        )?;
        if there {
            return Ok(false);
        }
        insert_asrun(&tx, e, &self.asrun_written)?;
        if let Some(a) = alert {
            queue(&tx, a, webhooks)?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Queues an alert no as-run entry records (a test alert).
    pub fn queue_alert(&self, alert: &Alert, webhooks: &[String]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.savepoint()?;
        queue(&tx, alert, webhooks)?;
        tx.commit()?;
        Ok(())
    }

    /// Up to `limit` pending deliveries due at `now`, oldest first.
    pub fn due_deliveries(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<DueDelivery>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT d.key, d.webhook, d.attempts, a.raised_utc, a.body FROM alert_deliveries d
             JOIN alerts a ON a.key = d.key
             WHERE d.state = 'pending' AND d.next_utc <= ?1 ORDER BY d.next_utc, d.key LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![utc_text(now), limit as i64], |r| {
            Ok(DueDelivery {
                key: r.get(0)?,
                webhook: r.get(1)?,
                attempts: r.get::<_, i64>(2)?.max(0) as u32,
                raised_utc: r.get(3)?,
                body: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next pending delivery is due, if one is.
    pub fn next_delivery_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let next: Option<String> =
            self.conn()
                .query_row("SELECT MIN(next_utc) FROM alert_deliveries WHERE state = 'pending'", [], |r| r.get(0))?;
        Ok(next.and_then(|t| t.parse().ok()))
    }

    /// Pending deliveries, for the metrics.
    pub fn pending_deliveries(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn().query_row("SELECT COUNT(*) FROM alert_deliveries WHERE state = 'pending'", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Records what became of an attempt at a delivery.
    pub fn settle_delivery(&self, key: &str, webhook: &str, outcome: &DeliveryOutcome) -> Result<(), StoreError> {
        let (state, error, next, delivered) = match outcome {
            DeliveryOutcome::Delivered(at) => (DeliveryState::Delivered, String::new(), None, Some(utc_text(*at))),
            DeliveryOutcome::Retry(why, at) => (DeliveryState::Pending, why.clone(), Some(utc_text(*at)), None),
            DeliveryOutcome::GiveUp(why) => (DeliveryState::Failed, why.clone(), None, None),
        };
        self.conn().execute(
            "UPDATE alert_deliveries SET state = ?3, attempts = attempts + 1, last_error = ?4, next_utc = ?5,
                 delivered_utc = ?6 WHERE key = ?1 AND webhook = ?2",
            params![key, webhook, state.as_str(), error, next, delivered],
        )?;
        Ok(())
    }

    /// Gives up the pending deliveries to webhooks not in `configured`
    /// (renamed or removed from the configuration), saying so.
    pub fn drop_unknown_webhooks(&self, configured: &[String]) -> Result<usize, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT webhook FROM alert_deliveries WHERE state = 'pending'")?;
        let names: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let mut n = 0;
        for name in names.iter().filter(|n| !configured.contains(n)) {
            n += conn.execute(
                "UPDATE alert_deliveries SET state = 'failed', last_error = ?2, next_utc = NULL
                 WHERE state = 'pending' AND webhook = ?1",
                params![name, format!("webhook `{name}` is no longer configured")],
            )?;
        }
        Ok(n)
    }

    /// The latest `limit` alerts, newest first, with their deliveries.
    pub fn alerts(&self, limit: usize) -> Result<Vec<StoredAlert>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT key, body FROM alerts ORDER BY raised_utc DESC, rowid DESC LIMIT ?1")?;
        let rows: Vec<(String, String)> =
            stmt.query_map(params![limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        let mut deliveries = conn.prepare(
            "SELECT webhook, state, attempts, last_error, next_utc, delivered_utc FROM alert_deliveries
             WHERE key = ?1 ORDER BY webhook",
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, body) in rows {
            let alert: Alert = serde_json::from_str(&body).map_err(|e| corrupt(&key, e))?;
            let deliveries = deliveries
                .query_map(params![key], |r| {
                    Ok(Delivery {
                        webhook: r.get(0)?,
                        state: DeliveryState::parse(&r.get::<_, String>(1)?),
                        attempts: r.get::<_, i64>(2)?.max(0) as u32,
                        last_error: r.get(3)?,
                        next_attempt_utc: r.get(4)?,
                        delivered_utc: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            out.push(StoredAlert { alert, deliveries });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{Cause, Severity};

    fn alert(key: &str, at: &str) -> Alert {
        Alert {
            idempotency_key: key.into(),
            raised_at: at.into(),
            kind: Cause::LegLost,
            severity: Severity::Page,
            summary: "PAGE: leg lost".into(),
            detail: "refused".into(),
            event: None,
            channel: None,
            source: "test".into(),
        }
    }

    #[test]
    fn an_entry_written_again_is_not_logged_twice_nor_its_alert_queued_twice() {
        let s = Store::open_in_memory().unwrap();
        let e = AsRunEntry {
            event_id: "ev-1".into(),
            utc: "2026-12-02T10:00:00.189Z".into(),
            channel_id: "kr-kbs".into(),
            local_time: "2026-12-02T19:00:00.189+09:00".into(),
            timezone: "Asia/Seoul".into(),
            kind: "leg-program".into(),
            detail: "first program picture".into(),
            actor: "simulcastd".into(),
        };
        let hooks = ["a".to_owned()];
        let a = alert("alr-1", "2026-12-02T10:00:00.189Z");
        assert!(s.append_asrun_once(&e, Some(&a), &hooks).unwrap());
        assert!(!s.append_asrun_once(&e, Some(&a), &hooks).unwrap());
        // Another instant is another entry.
        let later = AsRunEntry { utc: "2026-12-02T10:00:01.000Z".into(), ..e.clone() };
        assert!(s.append_asrun_once(&later, None, &hooks).unwrap());
        assert_eq!(s.asrun("ev-1").unwrap().len(), 2);
        let due = s.due_deliveries("2026-12-02T10:00:02Z".parse().unwrap(), 10).unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
    }

    #[test]
    fn a_queued_alert_is_due_once_per_webhook_until_settled() {
        let s = Store::open_in_memory().unwrap();
        let t = |x: &str| x.parse::<DateTime<Utc>>().unwrap();
        let hooks = ["a".to_owned(), "b".to_owned()];
        s.queue_alert(&alert("alr-1", "2026-12-02T10:00:00.000Z"), &hooks).unwrap();
        let due = s.due_deliveries(t("2026-12-02T10:00:00Z"), 10).unwrap();
        assert_eq!(due.iter().map(|d| d.webhook.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(due[0].body.contains("\"idempotency_key\":\"alr-1\""));
        let retry = DeliveryOutcome::Retry("HTTP 500".into(), t("2026-12-02T10:00:02Z"));
        s.settle_delivery("alr-1", "a", &retry).unwrap();
        s.settle_delivery("alr-1", "b", &DeliveryOutcome::Delivered(t("2026-12-02T10:00:00Z"))).unwrap();
        assert!(s.due_deliveries(t("2026-12-02T10:00:01Z"), 10).unwrap().is_empty());
        assert_eq!(s.next_delivery_due().unwrap(), Some(t("2026-12-02T10:00:02Z")));
        let again = s.due_deliveries(t("2026-12-02T10:00:02Z"), 10).unwrap();
        assert_eq!((again.len(), again[0].attempts), (1, 1));
        assert_eq!(s.pending_deliveries().unwrap(), 1);
        assert_eq!(s.drop_unknown_webhooks(&["b".to_owned()]).unwrap(), 1);
        let listed = s.alerts(10).unwrap();
        let states: Vec<_> = listed[0].deliveries.iter().map(|d| (d.state, d.attempts)).collect();
        assert_eq!(states, [(DeliveryState::Failed, 1), (DeliveryState::Delivered, 1)]);
        assert_eq!(listed[0].deliveries[0].last_error, "webhook `a` is no longer configured");
    }
}
