//! The coordinator's side of alerts: which as-run entries raise one, the
//! entry and its alert written in one transaction, and the deliverer woken.
//! The rules of urgency and the wire form are in [`crate::alerts`].

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use super::State;
use super::asrun::Kind;
use crate::alerts::deliver::Counters;
use crate::alerts::{self, Alert, Cause};
use crate::config::{AlertSettings, ChannelId};
use crate::store::{AsRunEntry, Store};

/// What the coordinator holds for alerts.
pub(super) struct Alerting {
    names: Vec<String>,
    wake: Arc<Notify>,
    pub(super) counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Alerting {
    /// Starts the deliverer over `store`.
    pub(super) fn start(store: &Arc<Store>, settings: &AlertSettings) -> Self {
        let wake = Arc::new(Notify::new());
        let counters = Arc::new(Counters::default());
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(alerts::deliver::run(
            Arc::clone(store),
            settings.webhooks.clone(),
            Arc::clone(&wake),
            Arc::clone(&counters),
            stop_rx,
        ));
        let names = settings.webhooks.iter().map(|h| h.name.clone()).collect();
        Self { names, wake, counters, stop, task: Some(task) }
    }

    /// Stops the deliverer (an attempt under way is cut: it is made again
    /// at the next start) and waits for it.
    pub(super) async fn stop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take()
            && tokio::time::timeout(std::time::Duration::from_secs(2), t).await.is_err()
        {
            tracing::warn!("The alert deliverer did not stop within 2 s.");
        }
    }
}

/// The alert an entry of `kind` raises by its kind alone, if any. Source
/// switches, rehearsal verdicts and a leg's errors depend on more than the
/// kind; their writers say which cause applies.
pub(super) fn cause_of(kind: Kind) -> Option<Cause> {
    match kind {
        Kind::LegLost => Some(Cause::LegLost),
        Kind::LegFailed => Some(Cause::LegFailed),
        Kind::LegSkipped => Some(Cause::LegSkipped),
        Kind::LegNotOnAir => Some(Cause::LegNotOnAir),
        Kind::ArmFailed | Kind::RelayFailed => Some(Cause::RelayFailed),
        Kind::RehearsalSkipped => Some(Cause::RehearsalSkipped),
        Kind::DaemonRestarted => Some(Cause::DaemonRestarted),
        Kind::RecordingLost => Some(Cause::RecordingLost),
        _ => None,
    }
}

impl State {
    /// Appends `e`, with the alert its kind raises, in one transaction
    /// (with this turn's writes; a loss is logged by the writer).
    pub(super) fn record(&self, e: &AsRunEntry, kind: Kind) {
        self.record_raising(e, cause_of(kind));
    }

    /// Appends `e` and queues the alert for `cause`, if any, in one
    /// transaction; the deliverer is woken once it is committed.
    pub(super) fn record_raising(&self, e: &AsRunEntry, cause: Option<Cause>) {
        let alert = cause.map(|c| self.alert_for(c, e));
        if let Some(a) = &alert {
            self.raised(a);
        }
        if Kind::is_observed(&e.kind) {
            self.append_observed(e.clone(), alert, false);
            return;
        }
        let (entry, names, wake) = (e.clone(), self.alerting.names.clone(), Arc::clone(&self.alerting.wake));
        self.write(format!("as-run entry {} of {}", e.kind, e.event_id), move |s| {
            s.append_asrun_alerting(&entry, alert.as_ref(), &names)?;
            if alert.is_some() {
                wake.notify_one();
            }
            Ok(())
        });
    }

    /// Appends an observed entry (and its alert, already counted): kept
    /// and written again if etcd refuses its turn. `again`: it was kept,
    /// and may be in the log already (an earlier write etcd never answered
    /// may have landed): then it is not written twice.
    pub(super) fn append_observed(&self, entry: AsRunEntry, alert: Option<Alert>, again: bool) {
        let (names, wake) = (self.alerting.names.clone(), Arc::clone(&self.alerting.wake));
        let (e, a) = (entry.clone(), alert.clone());
        self.write_observed((entry, alert), move |s| {
            let added = if again {
                s.append_asrun_once(&e, a.as_ref(), &names)?
            } else {
                s.append_asrun_alerting(&e, a.as_ref(), &names)?;
                true
            };
            if added && a.is_some() {
                wake.notify_one();
            }
            Ok(())
        });
    }

    /// Queues a test alert to every webhook.
    pub(super) fn test_alert(&self, by: &str) -> Alert {
        let now = self.options.clock.now();
        let detail = format!("sent by {by} with `simulcastctl alerts test`");
        let a = alerts::raise(&self.options.alerts, now, Cause::Test, detail, None, None);
        self.raised(&a);
        let (queued, names, wake) = (a.clone(), self.alerting.names.clone(), Arc::clone(&self.alerting.wake));
        self.write(format!("test alert {}", a.idempotency_key), move |s| {
            s.queue_alert(&queued, &names)?;
            wake.notify_one();
            Ok(())
        });
        a
    }

    /// Counts and logs an alert (the deliverer is woken once it is stored).
    fn raised(&self, a: &Alert) {
        self.alerting.counters.raised(a.severity);
        tracing::warn!(key = %a.idempotency_key, kind = a.kind.as_str(), severity = a.severity.as_str(),
            summary = %a.summary, "Alert raised.");
    }

    /// The alert `cause` raises for the entry `e`: its event and leg looked
    /// up for their air time, zone and country.
    fn alert_for(&self, cause: Cause, e: &AsRunEntry) -> Alert {
        let event = self.events.get(&e.event_id);
        let channel = ChannelId::parse(&e.channel_id).ok().and_then(|id| self.channel(&id));
        let now = e.utc.parse().unwrap_or_else(|_| self.options.clock.now());
        alerts::raise(&self.options.alerts, now, cause, e.detail.clone(), event, channel.as_ref())
    }
}
