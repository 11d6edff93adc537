//! The send fence of cluster mode: until when this process may send to
//! partners. A node holds its legs under its etcd lease; once the lease as
//! last renewed may have lapsed, another node may take the legs, so this
//! one must not send a single packet more. The coordinator stops the legs
//! when it learns it lost the lease, but a process that was stopped
//! (SIGSTOP, a stalled host) wakes with its streaming threads running
//! before any task can: every leg therefore checks the fence on each
//! batch, on its way out (the fan-out for UDP legs sent directly, a probe
//! before the protocol sink for the others) and drops it past the
//! deadline. What a sink library already holds (libsrt's send buffer, up
//! to the leg's SRT latency) is beyond this fence.
//!
//! Each closing starts a new *generation*. A leg sends only while the
//! fence is open in the generation it was started in
//! ([`open_in`]): legs started under a lease that was lost can never send
//! again, even once the node holds a new lease and the fence is open
//! again (a carrier's placement was bound to the old lease; another node
//! may carry those legs now).
//!
//! Single-node mode never sets it: the fence is open for ever.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Nanoseconds after [`epoch`] until which sending is allowed.
static UNTIL: AtomicU64 = AtomicU64::new(u64::MAX);
/// Counts the closings.
static GENERATION: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn ns(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos().min(u64::MAX as u128 - 1) as u64
}

/// Allows sending until `at` (the lease's end as last renewed).
pub fn open_until(at: Instant) {
    UNTIL.store(ns(at), Ordering::Release);
}

/// Allows no sending from now on (the lease is lost), and starts a new
/// generation: what was started before never sends again.
pub fn close() {
    UNTIL.store(0, Ordering::Release);
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The generation now: a leg started now sends only in it.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Whether a batch may go out now.
pub fn open() -> bool {
    allows(UNTIL.load(Ordering::Acquire), || ns(Instant::now()))
}

/// Whether a batch of a leg started in `generation` may go out now.
pub fn open_in(generation: u64) -> bool {
    GENERATION.load(Ordering::Acquire) == generation && open()
}

/// Whether a fence set to `until` lets a batch out at `now` (read only if needed).
fn allows(until: u64, now: impl FnOnce() -> u64) -> bool {
    until == u64::MAX || now() < until
}

#[cfg(test)]
mod tests {
    use super::*;

    // The process-wide fence itself is left alone here: other tests of
    // this binary send through it. The cluster tests close it for real.
    #[test]
    fn a_fence_lets_batches_out_only_before_its_deadline() {
        assert!(allows(u64::MAX, || unreachable!("an unset fence reads no clock")));
        assert!(allows(1_000, || 999));
        assert!(!allows(1_000, || 1_000));
        assert!(!allows(0, || 0), "closed");
        assert!(ns(epoch()) < 1_000_000_000);
    }
}
