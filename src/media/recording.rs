//! The program recorded to disk, for legs that air later (a partner with a
//! local air time), and the paced read-back that feeds such a leg.
//!
//! The recording is a directory of segments, each named by the UTC instant
//! (ns, zero-padded) of its first record, each a run of records
//! `[u64 LE UTC ns][u32 LE length][TS chunk]`. UTC rather than the
//! pipeline clock so that a recording made before a daemon restart (or a
//! reboot) still says when each chunk went out live. A writer thread of its
//! own keeps disk trouble away from the fan-out; segments older than the
//! retention, or past the size bound, are deleted oldest first.
//!
//! A [`DelayedFeed`] reads the segments from T0 on and hands each chunk to a
//! leg's input at its live time plus the delay, paced on the monotonic
//! clock: a wall-clock step moves neither the recording nor the playout.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use tracing::{debug, error, warn};

use super::fanout::{BATCH_BYTES, LegInput};
use super::supervise::Thread;
use super::ts::{self, PACKET};

/// Default length of one segment file.
pub const DEFAULT_SEGMENT: Duration = Duration::from_secs(2);
/// Lists queued for the writer before new ones are dropped (and counted).
const WRITER_DEPTH: usize = 1024;
const HEADER: usize = 12;
/// A delayed leg waits this long in recorded time (ns) for a keyframe to
/// start at; past it, it starts wherever the recording is.
const JOIN_WAIT_NS: u64 = 5_000_000_000;

/// Where and how long the program is kept.
#[derive(Debug, Clone)]
pub struct RecordingPlan {
    /// The directory (created if missing; an existing one is continued).
    pub dir: PathBuf,
    /// Segments older than this are deleted.
    pub retention: Duration,
    /// The directory never holds more than this many bytes.
    pub max_bytes: u64,
}

/// UTC now in ns, counted on the GStreamer clock from one reading of the
/// wall clock, so that it moves only with the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct UtcClock {
    /// UTC ns minus clock ns, read once.
    offset: i128,
}

impl UtcClock {
    /// Reads the wall clock once against `clock`.
    pub fn new(clock: &gst::Clock) -> Self {
        let utc = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as i128;
        Self { offset: utc - clock.time().nseconds() as i128 }
    }

    /// UTC ns now, on the monotonic clock.
    pub fn now(&self) -> u64 {
        self.utc_of(super::clock().time().nseconds())
    }

    /// The UTC ns of clock time `clock_ns`.
    pub fn utc_of(&self, clock_ns: u64) -> u64 {
        (clock_ns as i128 + self.offset).max(0) as u64
    }

    /// The clock time of UTC ns `utc_ns` (0 if before the clock's start).
    pub fn clock_of(&self, utc_ns: u64) -> u64 {
        (utc_ns as i128 - self.offset).max(0) as u64
    }
}

/// The recorder: the fan-out hands it every batch.
#[derive(Debug)]
pub struct Recorder {
    tx: SyncSender<gst::BufferList>,
    /// Chunks written.
    pub chunks: Arc<AtomicU64>,
    /// Batches lost because the writer fell behind or the disk failed.
    pub lost: Arc<AtomicU64>,
    thread: Mutex<Option<Thread>>,
}

impl Recorder {
    /// Starts the writer thread.
    pub fn start(plan: RecordingPlan, utc: UtcClock) -> std::io::Result<Arc<Self>> {
        // The programme as partners got it: the owner's only, whatever the
        // umask (directories this creates are 0700, segments 0600).
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&plan.dir)?;
        }
        let (tx, rx) = mpsc::sync_channel(WRITER_DEPTH);
        let chunks = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let (c, l) = (Arc::clone(&chunks), Arc::clone(&lost));
        let thread = Thread::spawn("recorder", move || write_loop(plan, utc, rx, c, l))?;
        Ok(Arc::new(Self { tx, chunks, lost, thread: Mutex::new(Some(thread)) }))
    }

    /// The writer thread, to join once every holder of the recorder (the
    /// relay, the fan-out's tap) has let go: it ends when its queue closes.
    pub(crate) fn take_thread(&self) -> Option<Thread> {
        super::lock(&self.thread).take()
    }

    /// Queues a batch; never waits.
    pub fn record(&self, list: &gst::BufferList) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(list.copy()) {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl super::fanout::Tap for Recorder {
    fn take(&self, list: &gst::BufferList) {
        self.record(list);
    }
}

fn segment_start(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_suffix(".seg")?.parse().ok()
}

/// Segments in `dir`, oldest first.
pub fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter_map(|p| segment_start(&p).map(|s| (s, p))).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn write_loop(
    plan: RecordingPlan,
    utc: UtcClock,
    rx: mpsc::Receiver<gst::BufferList>,
    chunks: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
) {
    let mut current: Option<(u64, BufWriter<File>)> = None;
    let mut last_sweep = 0u64;
    loop {
        let list = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if let Some(list) = list {
            let mut failed = false;
            for buffer in list.iter() {
                let Some(pts) = buffer.pts() else { continue };
                let at = utc.utc_of(pts.nseconds());
                if current.as_ref().is_none_or(|(start, _)| at >= start + DEFAULT_SEGMENT.as_nanos() as u64) {
                    if let Some((_, mut w)) = current.take() {
                        let _ = w.flush();
                    }
                    let path = plan.dir.join(format!("{at:020}.seg"));
                    let made = {
                        use std::os::unix::fs::OpenOptionsExt;
                        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)
                    };
                    match made {
                        Ok(f) => current = Some((at, BufWriter::new(f))),
                        Err(e) => {
                            error!(path = %path.display(), error = %e, "Cannot create a recording segment; the delayed legs lose this part.");
                            failed = true;
                            break;
                        }
                    }
                }
                let (Some((_, w)), Ok(map)) = (current.as_mut(), buffer.map_readable()) else { continue };
                let ok = w.write_all(&at.to_le_bytes()).is_ok()
                    && w.write_all(&(map.len() as u32).to_le_bytes()).is_ok()
                    && w.write_all(&map).is_ok();
                if !ok {
                    failed = true;
                    break;
                }
                chunks.fetch_add(1, Ordering::Relaxed);
            }
            // Whole records only reach the file: the reader may be right behind.
            if let Some((_, w)) = current.as_mut()
                && w.flush().is_err()
            {
                failed = true;
            }
            if failed {
                lost.fetch_add(1, Ordering::Relaxed);
                current = None;
            }
        }
        let now = utc.now();
        if now.saturating_sub(last_sweep) >= 1_000_000_000 {
            last_sweep = now;
            sweep(&plan, now, current.as_ref().map(|(s, _)| *s));
        }
    }
    if let Some((_, mut w)) = current {
        let _ = w.flush();
    }
}

/// Deletes segments past the retention, then the oldest while over the size
/// bound; never the one being written.
fn sweep(plan: &RecordingPlan, now_utc: u64, writing: Option<u64>) {
    let keep_from = now_utc.saturating_sub(plan.retention.as_nanos() as u64);
    let mut segs = segments(&plan.dir);
    let mut total: u64 = segs.iter().filter_map(|(_, p)| fs::metadata(p).ok()).map(|m| m.len()).sum();
    segs.retain(|(s, _)| Some(*s) != writing);
    for (i, (start, path)) in segs.iter().enumerate() {
        // A segment ends where the next one starts.
        let end = segs.get(i + 1).map_or(*start, |(s, _)| *s);
        if end < keep_from || total > plan.max_bytes {
            let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(path) {
                Ok(()) => {
                    total = total.saturating_sub(len);
                    debug!(path = %path.display(), "Recording segment deleted.");
                }
                Err(e) => warn!(path = %path.display(), error = %e, "Cannot delete a recording segment."),
            }
        }
    }
}

/// Feeds a leg from the recording, `delay` after each chunk went out live,
/// from UTC `from` on (T0: the programme's start).
#[derive(Debug)]
pub struct DelayedFeed {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DelayedFeed {
    /// Starts the reader thread.
    pub fn start(
        dir: PathBuf,
        from_utc: u64,
        delay: Duration,
        input: Arc<LegInput>,
        utc: UtcClock,
        program_starts: Arc<dyn Fn() -> Vec<u64> + Send + Sync>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("delayed-feed".into()).spawn(move || {
            let feed = Playback { from_utc, delay: delay.as_nanos() as u64, input: &input, utc, program_starts };
            feed.run(&dir, &s)
        })?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for DelayedFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A cursor over the segments: the file being read and where.
struct Cursor {
    dir: PathBuf,
    file: Option<(u64, File)>,
}

impl Cursor {
    /// The next whole record, or `None` if none is there yet (`now_utc`
    /// spares a directory listing at the live edge: the writer starts a new
    /// segment only once the current one is a segment long).
    fn next(&mut self, now_utc: u64) -> Option<(u64, Vec<u8>)> {
        loop {
            if self.file.is_none() {
                let (start, path) = segments(&self.dir).into_iter().next()?;
                self.file = Some((start, File::open(path).ok()?));
            }
            let (start, file) = self.file.as_mut()?;
            let pos = file.stream_position().ok()?;
            let mut header = [0u8; HEADER];
            if file.read_exact(&mut header).is_ok() {
                let at = u64::from_le_bytes(header[..8].try_into().ok()?);
                let len = u32::from_le_bytes(header[8..].try_into().ok()?) as usize;
                let mut data = vec![0u8; len];
                if file.read_exact(&mut data).is_ok() {
                    return Some((at, data));
                }
            }
            // End of what is written: a later segment means this one is done.
            let _ = file.seek(SeekFrom::Start(pos));
            let start = *start;
            if now_utc < start + DEFAULT_SEGMENT.as_nanos() as u64 {
                return None;
            }
            let later = segments(&self.dir).into_iter().find(|(s, _)| *s > start)?;
            self.file = Some((later.0, File::open(later.1).ok()?));
        }
    }

    /// Positions at the last segment starting at or before `utc` (the
    /// record wanted is in it or after it).
    fn seek_to(&mut self, utc: u64) {
        let segs = segments(&self.dir);
        let pick = segs.iter().rev().find(|(s, _)| *s <= utc).or_else(|| segs.first());
        self.file = pick.and_then(|(s, p)| File::open(p).ok().map(|f| (*s, f)));
    }
}

/// Where a delayed leg's copy starts: at a keyframe, after the tables in
/// force, as a live leg starts on the programme. Started anywhere else, a
/// partner's decoder gets pictures whose parameter sets and references it
/// never saw. The records before are held back.
#[derive(Debug, Default)]
struct Join {
    /// The latest PAT, SDT and PMT seen, one packet per PID.
    tables: Vec<[u8; PACKET]>,
    /// When the first record looked at was recorded (UTC ns).
    since: Option<u64>,
    started: bool,
}

impl Join {
    /// The chunks of record `data` (recorded at UTC `at`) that go out:
    /// none before the first keyframe; then the tables, as a chunk of
    /// their own (no datagram grows past a record's size), and the record
    /// from that keyframe on; every record after it, whole.
    fn offer(&mut self, at: u64, data: Vec<u8>) -> Vec<Vec<u8>> {
        if self.started {
            return vec![data];
        }
        let since = *self.since.get_or_insert(at);
        for (i, p) in data.chunks_exact(PACKET).enumerate() {
            if ts::starts_random_access(p) {
                self.started = true;
                self.tables.sort_by_key(|t| ts::pid(t));
                let tables: Vec<u8> = self.tables.concat();
                let from_keyframe = data[i * PACKET..].to_vec();
                return [tables, from_keyframe].into_iter().filter(|c| !c.is_empty()).collect();
            }
            let table = ts::section(p).and_then(|s| s.first().copied());
            if let (Some(0x00 | 0x02 | 0x42), Ok(packet)) = (table, <[u8; PACKET]>::try_from(p)) {
                self.tables.retain(|t| ts::pid(t) != ts::pid(p));
                self.tables.push(packet);
            }
        }
        if at.saturating_sub(since) >= JOIN_WAIT_NS {
            warn!(
                waited_s = JOIN_WAIT_NS / 1_000_000_000,
                "No keyframe in the recording: the delayed leg starts without one."
            );
            self.started = true;
            return vec![data];
        }
        Vec::new()
    }
}

/// A delayed leg's reader.
struct Playback<'a> {
    from_utc: u64,
    delay: u64,
    input: &'a LegInput,
    utc: UtcClock,
    /// The live program's starts (clock ns), from the fan-out.
    program_starts: Arc<dyn Fn() -> Vec<u64> + Send + Sync>,
}

impl Playback<'_> {
    fn run(&self, dir: &Path, stop: &AtomicBool) {
        let (from_utc, delay, input, utc) = (self.from_utc, self.delay, self.input, self.utc);
        let clock = super::clock();
        let now = || utc.now();
        let mut cursor = Cursor { dir: dir.to_owned(), file: None };
        // After a restart, resume where the delayed air is now, not at T0.
        cursor.seek_to(from_utc.max(now().saturating_sub(delay)));
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0;
        // The next program start (UTC ns) to mark on this leg, and the last marked.
        let mut marked = 0u64;
        let mut next_start: Option<u64> = None;
        let mut looked = 0u64;
        let mut mark_next = false;
        let mut join = Join::default();
        let flush = |batch: &mut Vec<Vec<u8>>, bytes: &mut usize, mark: &mut bool| {
            if batch.is_empty() {
                return;
            }
            let pts = clock.time();
            let mut list = gst::BufferList::new_sized(batch.len());
            if let Some(l) = list.get_mut() {
                for data in batch.drain(..) {
                    let mut b = gst::Buffer::from_mut_slice(data);
                    if let Some(bm) = b.get_mut() {
                        bm.set_pts(pts);
                    }
                    l.add(b);
                }
            }
            if std::mem::take(mark) {
                input.mark_program(pts.nseconds());
            }
            input.offer(&list, pts.nseconds());
            *bytes = 0;
        };
        while !stop.load(Ordering::Relaxed) {
            let Some((at, data)) = cursor.next(now()) else {
                flush(&mut batch, &mut bytes, &mut mark_next);
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            // Before T0, or aired already (the daemon was down): not for air now.
            if at < from_utc || at + delay + 1_000_000_000 < now() {
                continue;
            }
            let chunks = join.offer(at, data);
            if chunks.is_empty() {
                continue;
            }
            // The chunk that started the live program starts it here too
            // (the fan-out's list is looked at every 100 ms of programme).
            if next_start.is_none() && at >= looked + 100_000_000 {
                looked = at;
                next_start = (self.program_starts)().into_iter().map(|c| utc.utc_of(c)).find(|&s| s > marked);
            }
            if let Some(start) = next_start
                && at >= start
            {
                next_start = None;
                marked = start;
                flush(&mut batch, &mut bytes, &mut mark_next);
                mark_next = true;
            }
            let due = at + delay;
            loop {
                let n = now();
                if n >= due || stop.load(Ordering::Relaxed) {
                    break;
                }
                flush(&mut batch, &mut bytes, &mut mark_next);
                std::thread::sleep(Duration::from_nanos((due - n).min(5_000_000)));
            }
            for data in chunks {
                bytes += data.len();
                batch.push(data);
            }
            if bytes >= BATCH_BYTES {
                flush(&mut batch, &mut bytes, &mut mark_next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_clock_times_convert_both_ways() {
        crate::media::init().unwrap();
        let u = UtcClock::new(&crate::media::clock());
        let c = crate::media::clock().time().nseconds();
        assert_eq!(u.clock_of(u.utc_of(c)), c);
        let wall = chrono::Utc::now().timestamp_nanos_opt().unwrap() as u64;
        assert!(u.utc_of(c).abs_diff(wall) < 50_000_000, "UTC of now is off by more than 50 ms");
    }

    /// A delayed leg's copy starts at the recording's first keyframe (here
    /// HEVC, known by its random_access_indicator), after the PAT and PMT
    /// recorded before it; nothing before that keyframe goes out.
    #[test]
    fn a_delayed_copy_starts_at_a_keyframe_after_the_tables() {
        use crate::media::es::VideoCodec;
        use crate::media::mux::{Layout, Mux, PMT_PID, Slot, Timing, VIDEO_PID};
        let mut mux = Mux::new();
        mux.set_layout(Layout { video: Some(VideoCodec::Hevc), audio: vec![], scte35: false });
        let ms = 1_000_000u64;
        let mut record = |at: u64, keyframe: bool| {
            let au: Vec<u8> = [&[0u8, 0, 1, if keyframe { 0x26 } else { 0x02 }, 1][..], &[0x55; 400]].concat();
            let mut out = Vec::new();
            mux.write_au(Slot::Video, Timing { pts: at, dts: at, keyframe }, &au, at, &mut out);
            out
        };
        // The tables go out with the first picture, not with the keyframe.
        let (r1, r2, r3, r4) =
            (record(0, false), record(40 * ms, false), record(80 * ms, true), record(120 * ms, false));
        assert_eq!(ts::pid(&r1), 0, "the multiplexer's first record starts with the PAT");
        assert!(r3.chunks_exact(PACKET).all(|p| ts::pid(p) == VIDEO_PID), "the keyframe's record has no tables");
        let mut join = Join::default();
        assert!(join.offer(0, r1).is_empty(), "a picture before the first keyframe went out");
        assert!(join.offer(40 * ms, r2).is_empty(), "a picture before the first keyframe went out");
        let first = join.offer(80 * ms, r3.clone());
        let pids: Vec<Vec<u16>> = first.iter().map(|c| c.chunks_exact(PACKET).map(ts::pid).collect()).collect();
        assert_eq!(pids[0], [0, PMT_PID], "the PAT and the PMT, a chunk of their own");
        let key = r3.chunks_exact(PACKET).position(ts::starts_random_access).expect("a keyframe in its record");
        assert_eq!(first[1], r3[key * PACKET..], "then the keyframe's record from the keyframe on");
        assert!(first.iter().all(|c| c.len() <= r3.len()), "a chunk longer than the record");
        assert_eq!(join.offer(120 * ms, r4.clone()), [r4], "after the start, records go out as they are");

        // A recording without a keyframe starts anyway, five seconds on.
        let mut join = Join::default();
        let p = record(200 * ms, false);
        assert!(join.offer(0, p.clone()).is_empty());
        assert_eq!(join.offer(JOIN_WAIT_NS, p.clone()), [p]);
    }

    #[test]
    fn the_sweep_keeps_the_retention_and_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let s = 1_000_000_000u64;
        for i in 0..10u64 {
            fs::write(dir.path().join(format!("{:020}.seg", i * 2 * s)), vec![0u8; 1000]).unwrap();
        }
        let plan = RecordingPlan { dir: dir.path().to_owned(), retention: Duration::from_secs(6), max_bytes: 1 << 20 };
        // Now = 20 s: keep what ends after 14 s (segments from 12 s on).
        sweep(&plan, 20 * s, Some(18 * s));
        let left: Vec<u64> = segments(dir.path()).into_iter().map(|(t, _)| t / s).collect();
        assert_eq!(left, [12, 14, 16, 18]);
        let plan = RecordingPlan { max_bytes: 2500, ..plan };
        sweep(&plan, 20 * s, Some(18 * s));
        let left: Vec<u64> = segments(dir.path()).into_iter().map(|(t, _)| t / s).collect();
        assert_eq!(left, [16, 18], "over the size bound: oldest deleted first");
    }

    #[test]
    fn recordings_are_the_owners_alone_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        crate::media::init().unwrap();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("recordings").join("ev-0123456789ab");
        let plan = RecordingPlan { dir: dir.clone(), retention: Duration::from_secs(60), max_bytes: 1 << 20 };
        let rec = Recorder::start(plan, UtcClock::new(&crate::media::clock())).unwrap();
        let mut list = gst::BufferList::new();
        let mut b = gst::Buffer::from_mut_slice(vec![0x47u8; 1316]);
        b.get_mut().unwrap().set_pts(crate::media::clock().time());
        list.get_mut().unwrap().add(b);
        rec.record(&list);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while segments(&dir).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let segs = segments(&dir);
        assert!(!segs.is_empty(), "no segment written");
        assert_eq!(mode(&dir), 0o700, "the event's directory");
        assert_eq!(mode(&root.path().join("recordings")), 0o700, "a directory it created");
        for (_, p) in segs {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}
