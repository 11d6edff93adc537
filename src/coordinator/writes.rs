//! The loop's store work, off the loop. A turn decides and changes its
//! memory; the writes it asks for ([`State::write`]) go, at the end of the
//! turn, to the store's writer ([`crate::store::Writer`]) as one job
//! ([`State::flush`]). A client whose command changed something is
//! answered by that job, once the writes are committed ([`State::answer`]):
//! "done" still means stored, and the loop does not wait on the disk. It
//! waits on the writer only where it needs a read that follows every write
//! (the as-run kinds an arming relay starts from, the read-back below).
//!
//! A write that fails stops its turn's other writes, answers the client
//! with the store's error, and tells the loop, which reads the schedule,
//! the channels, the breaks and the recurring rehearsals back from the
//! store ([`State::store_failed`]): nothing stored is lost, and memory
//! holds what the store holds again. In cluster mode, a turn etcd refused
//! keeps its entries of what the legs did ([`Lost::again`]): the leader
//! appends them again until etcd takes them.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::{error, warn};

use super::asrun::Kind;

/// The most as-run entries kept while etcd is away.
const MAX_KEPT: usize = 10_000;
/// How often entries etcd refused are tried again.
const AGAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
use super::{CoordError, Reply, State};
use crate::store::{Store, StoreError};

/// What a write does, in the writer.
type Run = Box<dyn FnOnce(&Store) -> Result<(), StoreError> + Send>;

/// An as-run entry reporting what the media side saw (and the alert it
/// raises), kept to be written again if etcd refused its turn.
pub(super) type Observed = (crate::store::AsRunEntry, Option<crate::alerts::Alert>);

/// One write a turn asks for.
pub(super) struct Write {
    /// What is lost if it fails, for the log.
    what: String,
    run: Run,
    /// An observed entry this write appends (see [`Lost::again`]).
    again: Option<Observed>,
}

/// A turn's writes that failed, told to the loop.
pub(super) struct Lost {
    /// What was lost, and why.
    pub(super) why: String,
    /// Cluster mode, etcd away: the observed as-run entries the turn held,
    /// to append again later. A state change is not among them: memory is
    /// read back and the clock or the operator makes it again.
    pub(super) again: Vec<Observed>,
}

/// `Ok` if the store did what a write asked (`done`); else the conflict
/// `what` names (memory and store differ: the write fails, and the store
/// is read back).
pub(super) fn done_or_conflict(done: bool, what: impl FnOnce() -> String) -> Result<(), StoreError> {
    if done { Ok(()) } else { Err(StoreError::Conflict(what())) }
}

/// A turn's writes, run in order in the writer; the first failure
/// stops them, is logged and is told to the loop.
fn run_all(store: &Store, writes: Vec<Write>, failed: &Failed) -> Result<(), StoreError> {
    let mut lost = String::new();
    let again: Vec<Observed> = writes.iter().filter_map(|w| w.again.clone()).collect();
    // In cluster mode the turn's writes commit together, once etcd holds
    // them, or not at all.
    let r = store.shared(|| {
        for w in writes {
            if let Err(e) = (w.run)(store) {
                lost = w.what;
                return Err(e);
            }
        }
        Ok(())
    });
    if let Err(e) = &r {
        if lost.is_empty() {
            lost = "the turn's writes (etcd did not take them)".into();
        }
        // etcd refused the turn (it rolled back whole): its observed
        // entries are kept and written again once etcd takes them.
        let again = if matches!(e, StoreError::Shared(_)) { again } else { Vec::new() };
        if again.is_empty() {
            error!(error = %e, lost = %lost, "A store write failed: it and the rest of its turn's writes are lost.");
        } else {
            error!(error = %e, lost = %lost, kept = again.len(), "A store write failed: its turn's writes are lost but for the as-run entries of what the legs did, kept to be written again.");
        }
        failed.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = failed.tell.send(Lost { why: format!("{lost}: {e}"), again });
    }
    r
}

/// Where a failed write is counted and told.
struct Failed {
    count: Arc<std::sync::atomic::AtomicU64>,
    tell: tokio::sync::mpsc::UnboundedSender<Lost>,
}

impl State {
    /// Asks for a write at the end of this turn, after the ones asked for
    /// before it. `what` names what is lost should it fail.
    pub(super) fn write(
        &self,
        what: impl Into<String>,
        run: impl FnOnce(&Store) -> Result<(), StoreError> + Send + 'static,
    ) {
        crate::media::lock(&self.batch).push(Write { what: what.into(), run: Box::new(run), again: None });
    }

    /// [`State::write`] of an observed as-run entry: kept if etcd refuses
    /// its turn (see [`Lost::again`]).
    pub(super) fn write_observed(
        &self,
        observed: Observed,
        run: impl FnOnce(&Store) -> Result<(), StoreError> + Send + 'static,
    ) {
        let what = format!("as-run entry {} of {}", observed.0.kind, observed.0.event_id);
        crate::media::lock(&self.batch).push(Write { what, run: Box::new(run), again: Some(observed) });
    }

    /// Keeps entries etcd refused, to append again (the oldest dropped,
    /// with an error, past `MAX_KEPT`).
    pub(super) fn keep_observed(&mut self, again: Vec<Observed>) {
        self.observed_again.extend(again);
        let over = self.observed_again.len().saturating_sub(MAX_KEPT);
        if over > 0 {
            error!(dropped = over, "Too many as-run entries waiting for etcd: the oldest are lost.");
            self.observed_again.drain(..over);
        }
    }

    /// Appends again the entries etcd refused, at most every
    /// `AGAIN_EVERY` (a refusal brings them back).
    pub(super) fn append_kept(&mut self) {
        let due = self.observed_tried.is_none_or(|t| t.elapsed() >= AGAIN_EVERY);
        if self.observed_again.is_empty() || !due {
            return;
        }
        self.observed_tried = Some(std::time::Instant::now());
        for (entry, alert) in std::mem::take(&mut self.observed_again) {
            self.append_observed(entry, alert, true);
        }
    }

    fn failed(&self) -> Failed {
        Failed { count: Arc::clone(&self.write_failures), tell: self.failed_tx.clone() }
    }

    /// Hands the turn's writes to the writer.
    pub(super) fn flush(&self) {
        let writes = std::mem::take(&mut *crate::media::lock(&self.batch));
        if writes.is_empty() {
            return;
        }
        let failed = self.failed();
        self.writer.run(move |store| {
            let _ = run_all(store, writes, &failed);
        });
    }

    /// Answers `reply` with `r` once the writes asked for so far are
    /// committed: with the store's error instead if one failed.
    pub(super) fn answer<T: Send + 'static>(&self, reply: Reply<T>, r: Result<T, CoordError>) {
        let writes = std::mem::take(&mut *crate::media::lock(&self.batch));
        if writes.is_empty() {
            let _ = reply.send(r);
            return;
        }
        let failed = self.failed();
        self.writer.run(move |store| {
            let r = run_all(store, writes, &failed).map_err(CoordError::Store).and(r);
            let _ = reply.send(r);
        });
    }

    /// A write failed (the writer logged it): memory is read
    /// back from the store, after every write queued so far. A running
    /// relay whose event the store does not hold live is stopped, as an
    /// event that could not be saved live never went on air.
    pub(super) async fn store_failed(&mut self, lost: Lost) {
        self.keep_observed(lost.again);
        let why = lost.why;
        warn!(why = %why, "Reading the schedule back from the store after a failed write.");
        self.read_back().await;
    }

    /// Memory reloaded from the store (the events, channels, breaks and
    /// rehearsal schedules); a relay whose event is no longer live there
    /// stops.
    pub(super) async fn read_back(&mut self) {
        let read = self
            .writer
            .call(|s| -> Result<_, StoreError> { Ok((s.events()?.0, s.channels()?, s.breaks()?, s.schedules()?)) })
            .await;
        let (events, channels, breaks, schedules) = match read {
            Some(Ok(all)) => all,
            Some(Err(e)) => {
                error!(error = %e, "Cannot read the store back either; memory keeps what it has.");
                return;
            }
            None => return,
        };
        self.events = events.into_iter().map(|e| (e.id.0.clone(), e)).collect::<BTreeMap<_, _>>();
        self.channels = channels;
        self.breaks = Arc::new(breaks);
        self.schedules = schedules;
        self.refresh_events();
        let stale =
            self.running.as_ref().is_some_and(|r| self.events.get(&r.event_id.0).is_none_or(|e| !e.state.is_live()));
        if stale {
            self.begin_stop(Kind::LegsClosed, "the store failed; the event did not change", false, None);
        }
        self.changed();
    }
}
