//! One supervision loop for every pipeline the relay runs: each leg, each
//! contribution feed and the transcoding program. A run plays its pipeline
//! until it stops or fails; after a failure the loop reports it, waits out
//! a backoff and runs again, until told to stop. A panic inside a run is
//! reported as a failure for good (a leg shows `FAILED` with the panic's
//! message) instead of vanishing with its task, and the run's pipeline
//! still goes to `Null` through its [`NullOnDrop`] guard.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::watch;

use super::BusRx;

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Told to stop.
    Stopped,
    /// Done as planned, to be run again at once (a looped file).
    Again,
    /// Failed; another run follows after the backoff.
    Failed(String),
    /// Failed in a way another run cannot mend (a missing plugin).
    Permanent(String),
}

/// The delays between runs: doubling from `initial` up to `max`, with
/// jitter; a run that lasted `reset_after` starts the count again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

/// What the loop supervises.
pub(crate) trait Supervised: Send + 'static {
    /// Builds, plays and watches the pipeline until it ends.
    fn run_once(&mut self, stop: &watch::Receiver<bool>) -> impl Future<Output = Ended> + Send;
    /// A run failed with `error`; the next one starts in `delay`.
    fn failed(&mut self, error: &str, delay: Duration);
    /// The supervision is over: stopped (`None`), or failed for good.
    fn finished(&mut self, failure: Option<&str>);
}

/// Supervises `what` on its own task until `stop` turns true or a run
/// fails for good.
pub(crate) fn spawn<S: Supervised>(
    what: S,
    backoff: Backoff,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(what, backoff, stop))
}

async fn supervise<S: Supervised>(mut what: S, backoff: Backoff, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0u32;
    let failure = loop {
        if *stop.borrow() {
            break None;
        }
        let started = Instant::now();
        let ended = match catch_unwind(what.run_once(&stop)).await {
            Ok(ended) => ended,
            Err(panic) => Ended::Permanent(format!("its supervisor panicked: {}", panic_text(panic.as_ref()))),
        };
        let error = match ended {
            Ended::Stopped => break None,
            Ended::Again => continue,
            Ended::Permanent(e) => break Some(e),
            Ended::Failed(e) => e,
        };
        if started.elapsed() >= backoff.reset_after {
            attempt = 0;
        }
        let delay = super::backoff_delay(attempt, backoff.initial, backoff.max, fastrand::f64());
        attempt = attempt.saturating_add(1);
        what.failed(&error, delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => break None,
        }
    };
    what.finished(failure.as_deref());
}

/// Runs `future` to its end, or to the panic it raised.
async fn catch_unwind<F: Future>(future: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut future = Box::pin(future);
    std::future::poll_fn(move |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(panic) => Poll::Ready(Err(panic)),
    })
    .await
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// A named thread of the relay (the fan-out, the recorder) whose end can be
/// awaited with a deadline, so that shutdown joins it rather than leaving
/// it behind.
#[derive(Debug)]
pub(crate) struct Thread {
    name: &'static str,
    handle: Option<std::thread::JoinHandle<()>>,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Thread {
    /// Starts `run` on a thread called `name`.
    pub(crate) fn spawn(name: &'static str, run: impl FnOnce() + Send + 'static) -> std::io::Result<Self> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = std::thread::Builder::new().name(name.into()).spawn(move || {
            run();
            let _ = tx.send(());
        })?;
        Ok(Self { name, handle: Some(handle), done: Some(rx) })
    }

    /// Waits up to `within` for the thread to end (it must have been told
    /// to) and joins it; `false`, with a warning, if it is still running.
    pub(crate) async fn join(mut self, within: Duration) -> bool {
        if let Some(done) = self.done.take()
            && tokio::time::timeout(within, done).await.is_err()
        {
            tracing::warn!(thread = self.name, "A relay thread did not end within {within:?}; left running.");
            return false;
        }
        if let Some(handle) = self.handle.take()
            && let Ok(Err(_)) = tokio::task::spawn_blocking(move || handle.join()).await
        {
            tracing::error!(thread = self.name, "A relay thread panicked.");
        }
        true
    }
}

/// Sets its pipeline to `Null` when dropped: every pipeline goes to `Null`
/// before it is released, even when its task is aborted or panics.
#[derive(Debug)]
pub(crate) struct NullOnDrop(pub gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// A pipeline set playing; to `Null` when released or dropped.
#[derive(Debug)]
pub(crate) struct Playing {
    /// Held for its drop.
    _guard: NullOnDrop,
}

impl Playing {
    /// Sets `pipeline` playing, off the runtime (a state change may block);
    /// the first error on its bus if it refuses.
    pub(crate) async fn start(pipeline: &gst::Pipeline, bus_rx: &mut BusRx) -> Result<Self, String> {
        let guard = NullOnDrop(pipeline.clone());
        let p = pipeline.clone();
        let started = tokio::task::spawn_blocking(move || p.set_state(gst::State::Playing)).await;
        match started {
            Ok(Ok(_)) => Ok(Self { _guard: guard }),
            _ => {
                let refused = super::first_error(bus_rx).unwrap_or_else(|| "the pipeline refused to start".into());
                tokio::task::spawn_blocking(move || drop(guard)).await.ok();
                Err(refused)
            }
        }
    }

    /// Sets the pipeline to `Null`, off the runtime: going to `Null`
    /// unblocks a sink stuck in a send, which may take a moment.
    pub(crate) async fn release(self) {
        tokio::task::spawn_blocking(move || drop(self)).await.ok();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Plays a script of run endings (then waits for the stop) and writes
    /// down what the loop tells it.
    struct Script {
        ends: Vec<Option<Ended>>,
        said: Arc<Mutex<Vec<String>>>,
    }

    impl Supervised for Script {
        fn run_once(&mut self, stop: &watch::Receiver<bool>) -> impl Future<Output = Ended> + Send {
            let next = if self.ends.is_empty() { None } else { self.ends.remove(0) };
            let mut stop = stop.clone();
            async move {
                match next {
                    // A run that panics in the middle of its work.
                    None => panic!("leg state went missing"),
                    Some(Ended::Stopped) => {
                        let _ = stop.wait_for(|s| *s).await;
                        Ended::Stopped
                    }
                    Some(e) => e,
                }
            }
        }
        fn failed(&mut self, error: &str, _delay: Duration) {
            self.said.lock().expect("lock").push(format!("failed: {error}"));
        }
        fn finished(&mut self, failure: Option<&str>) {
            self.said.lock().expect("lock").push(format!("finished: {failure:?}"));
        }
    }

    const QUICK: Backoff =
        Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(2), reset_after: Duration::MAX };

    #[tokio::test]
    async fn a_run_that_panics_is_reported_as_a_failure_for_good() {
        let said = Arc::new(Mutex::new(Vec::new()));
        let script = Script { ends: vec![Some(Ended::Failed("no answer".into()))], said: Arc::clone(&said) };
        let (_stop, stop_rx) = watch::channel(false);
        let task = spawn(script, QUICK, stop_rx);
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("the task itself ends well");
        assert_eq!(
            *said.lock().expect("lock"),
            ["failed: no answer", "finished: Some(\"its supervisor panicked: leg state went missing\")"]
        );
    }

    #[tokio::test]
    async fn failures_are_retried_a_looped_run_starts_again_and_a_stop_ends_it() {
        let said = Arc::new(Mutex::new(Vec::new()));
        let ends = vec![
            Some(Ended::Failed("a".into())),
            Some(Ended::Again),
            Some(Ended::Failed("b".into())),
            Some(Ended::Stopped),
        ];
        let (stop, stop_rx) = watch::channel(false);
        let task = spawn(Script { ends, said: Arc::clone(&said) }, QUICK, stop_rx);
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.send(true).expect("send");
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("no panic");
        assert_eq!(*said.lock().expect("lock"), ["failed: a", "failed: b", "finished: None"]);
    }

    #[tokio::test]
    async fn a_permanent_failure_is_not_retried() {
        let said = Arc::new(Mutex::new(Vec::new()));
        let ends = vec![Some(Ended::Permanent("no srtsink".into()))];
        let (_stop, stop_rx) = watch::channel(false);
        let task = spawn(Script { ends, said: Arc::clone(&said) }, QUICK, stop_rx);
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("ends").expect("no panic");
        assert_eq!(*said.lock().expect("lock"), ["finished: Some(\"no srtsink\")"]);
    }
}
