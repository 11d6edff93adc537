//! MonitorService: status streams and the as-run log (observer and up).
//!
//! Each `WatchStatus` stream has its own task reading the coordinator's
//! `watch` channel. The coordinator never waits for it; when the client
//! reads slowly, the task's send waits (HTTP/2 flow control), and the next
//! update it sends is the latest snapshot, with `lagged` counting the ones
//! skipped. So a stalled client costs one task and a few buffered messages,
//! and slows nobody else. A change reaches the streams spread over
//! `WATCH_SPREAD`, not all in one burst.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::auth::{Role, require};
use super::convert::{asrun_with_picture, status_update, timestamp};
use super::events::event_id;
use crate::coordinator::{AsRunPicture, Coordinator, SYSTEM_EVENT};
use crate::proto::{self, monitor_service_server::MonitorService};

/// As-run entries in a page unless the client asks for fewer.
pub const ASRUN_PAGE: usize = 2000;
/// The most a client may ask for in one page.
pub const ASRUN_PAGE_MAX: usize = 5000;
/// A page ends before its entries pass this many bytes, so that the
/// response stays under [`super::MAX_MESSAGE_BYTES`].
pub const ASRUN_PAGE_BYTES: usize = 960 * 1024;

/// Updates buffered per stream before the skipping starts.
pub const WATCH_BUFFER: usize = 2;

/// A change reaches the streams spread over this long, each stream at its
/// own offset (1 ms apart, the timer's step), rather than all at once: 200
/// streams woken together are 400 tasks (the stream's, then its
/// connection's) queued ahead of any RPC that comes meanwhile.
pub const WATCH_SPREAD: Duration = Duration::from_millis(40);

/// The next stream's offset within [`WATCH_SPREAD`] (the web page's
/// boards take one too).
pub(crate) fn next_offset() -> Duration {
    static STREAMS: AtomicU64 = AtomicU64::new(0);
    let n = STREAMS.fetch_add(1, Ordering::Relaxed);
    Duration::from_millis(n % WATCH_SPREAD.as_millis() as u64)
}

/// Waits out a stream's `offset` after a change: false if the server
/// began closing meanwhile.
pub(crate) async fn after_offset(offset: Duration, closing: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if offset.is_zero() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(offset) => true,
        _ = closing.wait_for(|c| *c) => false,
    }
}

/// The service, a thin translation onto the coordinator.
#[derive(Debug, Clone)]
pub struct MonitorApi {
    /// The one owner of state.
    pub coordinator: Coordinator,
    /// Becomes true when the server stops: every stream then ends, so that
    /// the graceful shutdown does not wait for watchers forever.
    pub closing: tokio::sync::watch::Receiver<bool>,
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<proto::StatusUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl MonitorService for MonitorApi {
    type WatchStatusStream = UpdateStream;

    async fn watch_status(&self, req: Request<proto::EventRef>) -> Result<Response<UpdateStream>, Status> {
        require(&req, Role::Observer)?;
        let raw = &req.get_ref().event_id;
        let watched = if raw.is_empty() {
            None
        } else {
            let id = event_id(raw)?;
            self.coordinator.event(id.clone()).await?;
            Some(id)
        };
        // From a snapshot with every change the caller has been answered.
        let mut rx = self.coordinator.subscribe_fresh().await?;
        let (tx, out) = mpsc::channel(WATCH_BUFFER);
        let mut closing = self.closing.clone();
        let offset = next_offset();
        tokio::spawn(async move {
            let mut last_seq: Option<u64> = None;
            loop {
                let snap = rx.borrow_and_update().clone();
                let lagged = last_seq.map_or(0, |l| snap.seq.saturating_sub(l + 1));
                last_seq = Some(snap.seq);
                tokio::select! {
                    sent = tx.send(Ok(status_update(&snap, watched.as_ref(), lagged))) => {
                        if sent.is_err() {
                            break; // The client went away.
                        }
                    }
                    _ = closing.wait_for(|c| *c) => break,
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    _ = tx.closed() => break,
                    _ = closing.wait_for(|c| *c) => break,
                }
                // What is sent is the snapshot as it stands after the
                // offset, with any change made meanwhile.
                if !after_offset(offset, &mut closing).await {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn get_as_run_log(
        &self,
        req: Request<proto::GetAsRunLogRequest>,
    ) -> Result<Response<proto::GetAsRunLogResponse>, Status> {
        use prost::Message;
        require(&req, Role::Observer)?;
        let r = req.get_ref();
        // `-` is the daemon's own log (channel changes).
        let id = if r.event_id == SYSTEM_EVENT { SYSTEM_EVENT.to_owned() } else { event_id(&r.event_id)?.0 };
        let after = match r.page_token.as_str() {
            "" => 0,
            t => t.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                Status::invalid_argument("page_token: not one this server gave (use next_page_token as it came)")
            })?,
        };
        let size = match r.page_size {
            0 => ASRUN_PAGE,
            n => (n as usize).min(ASRUN_PAGE_MAX),
        };
        // One more than asked: whether another page follows.
        let mut page = self.coordinator.asrun_page(&id, after, size + 1).await?;
        let more = page.len() > size;
        page.truncate(size);
        let pictures = self.coordinator.asrun_pictures(&id).await?;
        let mut entries = Vec::with_capacity(page.len());
        let (mut bytes, mut last) = (0, None);
        for (seq, e) in &page {
            let entry = asrun_with_picture(e, AsRunPicture::of(e, &pictures));
            let len = entry.encoded_len() + 8;
            if bytes + len > ASRUN_PAGE_BYTES && !entries.is_empty() {
                break;
            }
            bytes += len;
            entries.push(entry);
            last = Some(*seq);
        }
        let next_page_token = match last {
            Some(seq) if more || entries.len() < page.len() => seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(proto::GetAsRunLogResponse { entries, next_page_token }))
    }

    async fn get_as_run_picture(
        &self,
        req: Request<proto::AsRunPictureRef>,
    ) -> Result<Response<proto::AsRunPicture>, Status> {
        require(&req, Role::Observer)?;
        let id = req.get_ref().picture_id;
        let (event_id, taken, jpeg) = self.coordinator.asrun_picture(id).await?;
        let taken_utc = chrono::DateTime::parse_from_rfc3339(&taken).ok().map(|t| timestamp(t.to_utc()));
        Ok(Response::new(proto::AsRunPicture { picture_id: id, event_id, taken_utc, jpeg }))
    }
}
