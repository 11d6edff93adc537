//! The store's writer: the coordinator's store work, one job at a time in
//! the order it was asked for. The coordinator's loop hands it jobs and
//! goes on deciding; a job that answers a client answers after its writes
//! are committed. A read that must see every write asked for before it
//! (a report just saved, an as-run entry just appended) is a job too.
//!
//! The jobs run in one task of their own, each inside `block_in_place`:
//! the task is woken on the thread that queued the job (tokio runs a task
//! woken by the running one next, on the same worker), and the job runs
//! there at once while the worker's other tasks move to another thread.
//! A handoff to a thread of its own cost a wake-up per command, measured
//! (docs/benchmarks.md). On a current-thread runtime (the scheduler tests
//! on paused time), where `block_in_place` is not allowed, the job runs
//! in the task as it is; the runtime is busy meanwhile, so the paused
//! clock does not run ahead.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::Store;

type Job = Box<dyn FnOnce(&Store) + Send>;

/// The queue to the writer task.
#[derive(Debug)]
pub struct Writer {
    tx: Option<mpsc::UnboundedSender<Job>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer task over `store` (on the current runtime).
    pub fn start(store: Arc<Store>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let multi_thread =
            tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                if multi_thread {
                    tokio::task::block_in_place(|| job(&store));
                } else {
                    job(&store);
                }
            }
        });
        Self { tx: Some(tx), task: Some(task) }
    }

    /// Queues `job` after every job queued before it. `false` once the
    /// writer is closed: the job was not run.
    pub fn run(&self, job: impl FnOnce(&Store) + Send + 'static) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(Box::new(job)).is_ok())
    }

    /// Runs `f` after every job queued before it and hands back its
    /// result; `None` once the writer is closed.
    pub async fn call<T: Send + 'static>(&self, f: impl FnOnce(&Store) -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if !self.run(move |s| {
            let _ = tx.send(f(s));
        }) {
            return None;
        }
        rx.await.ok()
    }

    /// Runs every job queued, then ends the task; nothing runs after.
    pub async fn close(&mut self) {
        self.tx = None;
        if let Some(t) = self.task.take()
            && t.await.is_err()
        {
            tracing::error!("The store writer task failed.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_and_a_call_sees_every_write_before_it() {
        let store = Arc::new(Store::open_in_memory().expect("store"));
        let mut w = Writer::start(Arc::clone(&store));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..100 {
            let order = Arc::clone(&order);
            assert!(w.run(move |_| order.lock().expect("lock").push(i)));
        }
        let seen = w.call({
            let order = Arc::clone(&order);
            move |_| order.lock().expect("lock").len()
        });
        assert_eq!(seen.await, Some(100));
        assert_eq!(*order.lock().expect("lock"), (0..100).collect::<Vec<_>>());
        w.close().await;
        assert!(!w.run(|_| {}), "closed: nothing more runs");
        assert_eq!(w.call(|_| 1).await, None);
    }
}
