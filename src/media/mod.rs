//! GStreamer media: the program pipeline (contribution source), the fan-out
//! that hands every batch of MPEG-TS to each leg, and one pipeline per leg
//! with its own bus and state, each run by the one supervision loop of
//! `supervise`.

pub mod breaks;
pub mod bridge;
pub mod coded;
pub mod es;
pub mod failover;
pub mod fanout;
pub mod fence;
pub mod leg;
pub mod mux;
pub mod passthrough;
pub mod program;
pub mod recording;
pub mod scte35;
pub mod slate;
pub mod source;
pub mod srt;
pub mod stamp;
pub(crate) mod supervise;
pub mod template;
pub mod thumbs;
pub mod tracks;
pub mod ts;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

pub use gstreamer as gst;
use gstreamer::prelude::*;
use tokio::sync::mpsc;

/// Why a media operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    /// GStreamer itself could not start.
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    /// A pipeline template or skeleton needs elements that are not installed.
    #[error("pipeline part {template} needs GStreamer element(s) not installed here: {}{}", .elements.join(", "), install_hint(.elements))]
    MissingElements {
        /// Template or skeleton name, e.g. `legs/rtmp`, `program/playout`.
        template: String,
        /// Element factory names.
        elements: Vec<String>,
    },
    /// A template could not be rendered or parsed.
    #[error("pipeline template {template}: {message}")]
    Template {
        /// Template name.
        template: String,
        /// What is wrong.
        message: String,
    },
    /// A pipeline could not be assembled or started.
    #[error("{0}")]
    Pipeline(String),
}

impl MediaError {
    /// Whether retrying cannot help (a missing plugin, a broken template).
    pub fn is_permanent(&self) -> bool {
        matches!(self, MediaError::MissingElements { .. } | MediaError::Template { .. } | MediaError::Init(_))
    }
}

fn install_hint(elements: &[String]) -> String {
    let pkgs: Vec<&str> = elements
        .iter()
        .filter_map(|e| match e.as_str() {
            "srtsink" | "srtsrc" | "rtmp2sink" | "ristsink" | "ristsrc" | "mpegtsmux" | "tsparse" | "tsdemux" => {
                Some("gstreamer1.0-plugins-bad")
            }
            "x264enc" => Some("gstreamer1.0-plugins-ugly"),
            "avenc_aac" => Some("gstreamer1.0-libav"),
            "textoverlay" | "clockoverlay" => Some("gstreamer1.0-x"),
            "compositor" | "audiomixer" | "videoconvert" | "videoscale" | "audioconvert" | "audioresample"
            | "videotestsrc" | "audiotestsrc" | "appsrc" | "appsink" => Some("gstreamer1.0-plugins-base"),
            "avdec_h264" | "avdec_aac" | "avenc_mpeg2video" => Some("gstreamer1.0-libav"),
            "h264parse" | "x265enc" => Some("gstreamer1.0-plugins-bad"),
            "aacparse" => Some("gstreamer1.0-plugins-good"),
            "queue" | "capsfilter" | "tee" | "identity" => Some("libgstreamer1.0-0"),
            "pngdec" | "imagefreeze" => Some("gstreamer1.0-plugins-good"),
            "flvmux" | "udpsink" | "udpsrc" | "rtpmp2tpay" => Some("gstreamer1.0-plugins-good"),
            _ => None,
        })
        .collect();
    if pkgs.is_empty() { String::new() } else { format!(" (Debian: apt-get install {})", dedup(pkgs).join(" ")) }
}

fn dedup(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v.dedup();
    v
}

/// Initialises GStreamer once for the process.
pub fn init() -> Result<(), MediaError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().map_err(|e| e.to_string())?;
        source::watch_srt_rejections();
        Ok(())
    })
    .clone()
    .map_err(MediaError::Init)
}

/// Caps glibc's malloc arenas at two. Every GStreamer streaming thread
/// (each leg's, each contribution's, each event's) otherwise gets an arena
/// of its own, and the freed pages of arenas whose threads are gone stay
/// mapped: a daemon's RSS grew 65 -> 153 MB over 40 events and kept going,
/// 65 -> 116 MB and flat with two arenas (`docs/benchmarks.md`, the event
/// soak). Call once, early.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes the allocator's tuning.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives the heap's free pages back to the system (after an event's
/// pipelines, or a slate encode, are gone).
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The delay before restart attempt `attempt` (0-based) of a leg or a
/// contribution: doubling from `initial`, capped at `max`, then shortened
/// by up to 25 % (`jitter` in 0..1) so that pipelines that failed together
/// do not retry in lockstep.
pub fn backoff_delay(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let doubled = initial.saturating_mul(1u32 << attempt.min(20));
    doubled.min(max).mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
}

/// The process-wide system clock, monotonic: every pipeline runs on it so
/// that buffer times mean the same thing in the program and in every leg.
pub fn clock() -> gst::Clock {
    gst::SystemClock::obtain()
}

/// Sets an srtsrc/srtsink from a typed endpoint. Secrets leave their
/// wrapper only here, into the element; a passphrase file that cannot be
/// read fails the pipeline, naming the file.
pub fn configure_srt(element: &gst::Element, s: &crate::config::SrtEndpoint) -> Result<(), MediaError> {
    use gst::prelude::*;
    element.set_property("uri", s.element_uri());
    if let Some(local) = s.local_address() {
        element.set_property("localaddress", local);
    }
    element.set_property_from_str("mode", s.mode.as_str());
    element.set_property("latency", s.latency.as_millis().min(i32::MAX as u128) as i32);
    if let Some(p) = &s.passphrase {
        let value = p.usable().map_err(|why| MediaError::Pipeline(format!("passphrase_file: {why}")))?;
        element.set_property("passphrase", value);
    }
    if let Some(id) = &s.stream_id {
        element.set_property("streamid", id);
    }
    Ok(())
}

/// A pipeline skeleton built in code (the protocol tails are templates):
/// its name, as `simulcastctl check` reports it, and the element factories
/// it makes.
#[derive(Debug)]
pub struct Skeleton {
    /// `program/<part>`.
    pub name: &'static str,
    /// Every factory the skeleton makes.
    pub factories: &'static [&'static str],
}

impl Skeleton {
    /// Makes `factory`, set up by `set`; a factory that is not installed is
    /// named with its Debian package.
    pub(crate) fn make<'a>(
        &self,
        factory: &'a str,
        set: impl FnOnce(gst::element_factory::ElementBuilder<'a>) -> gst::element_factory::ElementBuilder<'a>,
    ) -> Result<gst::Element, MediaError> {
        debug_assert!(self.factories.contains(&factory), "{}: {factory} is not listed", self.name);
        set(gst::ElementFactory::make(factory))
            .build()
            .map_err(|_| MediaError::MissingElements { template: self.name.to_owned(), elements: vec![factory.into()] })
    }

    /// Whether every factory it makes is installed.
    pub fn check(&self) -> Result<(), MediaError> {
        let missing: Vec<String> =
            self.factories.iter().filter(|f| gst::ElementFactory::find(f).is_none()).map(|f| (*f).to_owned()).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(MediaError::MissingElements { template: self.name.to_owned(), elements: missing })
        }
    }
}

/// Checks every template and every skeleton (call [`init`] first): one
/// result per part, in the order `simulcastctl check` reports them.
pub fn check_all() -> Vec<(&'static str, Result<(), MediaError>)> {
    let mut all = template::check_all();
    for s in [&source::DECODE, &program::PLAYOUT, &thumbs::THUMBNAIL] {
        all.push((s.name, s.check()));
    }
    all
}

/// An appsink that never holds up its pipeline: not synced to the clock,
/// dropping its oldest sample when `max_buffers` wait, keeping no last
/// sample; `on_sample` is handed the sink and each sample. Callers add a
/// name, or `async_(false)` for a sink added to a playing pipeline, then
/// build it.
pub(crate) fn dropping_appsink<'a>(
    max_buffers: u32,
    mut on_sample: impl FnMut(&gstreamer_app::AppSink, gst::Sample) -> Result<gst::FlowSuccess, gst::FlowError>
    + Send
    + 'static,
) -> gstreamer_app::app_sink::AppSinkBuilder<'a> {
    gstreamer_app::AppSink::builder()
        .sync(false)
        .max_buffers(max_buffers)
        .drop(true)
        .enable_last_sample(false)
        .callbacks(
            gstreamer_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| on_sample(sink, sink.pull_sample().map_err(|_| gst::FlowError::Eos)?))
                .build(),
        )
}

/// Adds `chain` (linked in order) to the running `pipeline`, brings it to
/// the pipeline's state and links `pad` (a demuxer's new pad) to its
/// first element: the dynamic branch a demuxer's `pad-added` builds.
pub(crate) fn attach_chain(pipeline: &gst::Pipeline, pad: &gst::Pad, chain: &[gst::Element]) -> Result<(), MediaError> {
    let err = |e: gst::glib::BoolError| MediaError::Pipeline(format!("{}: {e}", pipeline.name()));
    pipeline.add_many(chain.iter()).map_err(err)?;
    gst::Element::link_many(chain.iter()).map_err(err)?;
    for e in chain {
        e.sync_state_with_parent().map_err(err)?;
    }
    let first = chain.first().and_then(|e| e.static_pad("sink"));
    let sink = first.ok_or_else(|| MediaError::Pipeline(format!("{}: no sink pad to link to", pipeline.name())))?;
    pad.link(&sink)
        .map(|_| ())
        .map_err(|e| MediaError::Pipeline(format!("{}: cannot link {}: {e}", pipeline.name(), pad.name())))
}

/// What a data probe returns to drop the buffer (or list) it was handed.
/// `PadProbeReturn::Drop` does not do on a sink pad: gstreamer-rs has
/// taken the data out of the probe's info by then, and GStreamer 1.22's
/// chain path unrefs the empty pointer, a `GStreamer-CRITICAL` on stderr
/// for every buffer dropped (seen at 20 a second in a relay's log).
/// `Handled` with the data gone is the same drop, on any pad, silently.
pub(crate) fn drop_data(info: &mut gst::PadProbeInfo) -> gst::PadProbeReturn {
    info.data = None;
    gst::PadProbeReturn::Handled
}

/// Locks a mutex; a panic elsewhere must not take the relay down with a
/// poisoned lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pipeline's errors and end of stream, as its supervisor reads them.
pub(crate) type BusRx = mpsc::UnboundedReceiver<gst::Message>;

/// Forwards `pipeline`'s error and end-of-stream messages to its supervisor
/// (from the posting thread: no GLib main loop needed); drops the rest.
pub(crate) fn forward_bus(pipeline: &gst::Pipeline) -> Result<BusRx, MediaError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let bus = pipeline.bus().ok_or_else(|| MediaError::Pipeline("pipeline without a bus".into()))?;
    bus.set_sync_handler(move |_, msg| {
        if matches!(msg.view(), gst::MessageView::Error(_) | gst::MessageView::Eos(_)) {
            let _ = tx.send(msg.clone());
        }
        gst::BusSyncReply::Drop
    });
    Ok(rx)
}

/// `element: message` of an error message.
pub(crate) fn describe_error(e: &gst::message::Error) -> String {
    let from = e.src().map(|s| s.name().to_string()).unwrap_or_else(|| "pipeline".into());
    format!("{from}: {}", e.error())
}

/// The first error already on the bus, if any.
pub(crate) fn first_error(rx: &mut BusRx) -> Option<String> {
    while let Ok(m) = rx.try_recv() {
        if let gst::MessageView::Error(e) = m.view() {
            return Some(describe_error(e));
        }
    }
    None
}

/// Calls `count` with the size of every buffer or buffer list crossing `pad`.
pub(crate) fn count_bytes(pad: &gst::Pad, count: impl Fn(usize) + Send + Sync + 'static) {
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, info| {
        match &info.data {
            Some(gst::PadProbeData::Buffer(b)) => count(b.size()),
            Some(gst::PadProbeData::BufferList(l)) => count(l.calculate_size()),
            _ => {}
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// The modules of `media/` each one names (`super::x`, `crate::media::x`),
    /// outside comments and its tests.
    fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/media");
        let mut names = BTreeSet::new();
        let mut texts = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).expect("src/media") {
            let path = entry.expect("entry").path();
            let Some(name) = path.file_stem().and_then(|n| n.to_str()).filter(|n| *n != "mod") else { continue };
            let text = std::fs::read_to_string(&path).expect("read");
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            names.insert(name.to_owned());
            texts.insert(name.to_owned(), code);
        }
        let mut deps = BTreeMap::new();
        for (name, code) in &texts {
            let mut uses = BTreeSet::new();
            for other in names.iter().filter(|o| *o != name) {
                let grouped = code.split("use super::{").skip(1).any(|g| {
                    g.split('}')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .any(|x| x.trim().split("::").next() == Some(other))
                });
                if grouped || code.contains(&format!("super::{other}::")) || code.contains(&format!("media::{other}::"))
                {
                    uses.insert(other.clone());
                }
            }
            deps.insert(name.clone(), uses);
        }
        deps
    }

    /// `simulcastctl check` covers the skeletons built in code as it covers
    /// templates: each is listed, and a missing factory is named.
    #[test]
    fn every_skeleton_is_checked_and_a_missing_factory_is_named() {
        super::init().expect("init");
        let all = super::check_all();
        for name in ["program/playout", "program/decode", "legs/srt"] {
            assert!(all.iter().any(|(n, r)| *n == name && r.is_ok()), "{name}: {all:?}");
        }
        let bogus = super::Skeleton { name: "program/bogus", factories: &["queue", "no-such-element"] };
        let err = bogus.check().expect_err("missing");
        assert!(
            matches!(&err, super::MediaError::MissingElements { template, elements }
                if template == "program/bogus" && elements == &["no-such-element"]),
            "{err:?}"
        );
        assert!(bogus.make("no-such-element", |b| b).is_err());
    }

    /// `media/` is layered: no module reaches, through others, back to
    /// itself (issue 14 named fanout <-> recording and leg -> program ->
    /// source -> leg).
    #[test]
    fn media_modules_form_no_import_cycle() {
        let deps = dependencies();
        assert!(deps["recording"].contains("fanout") && deps["program"].contains("source"), "{deps:?}");
        for start in deps.keys() {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
            while let Some((at, path)) = todo.pop() {
                for next in &deps[&at] {
                    assert!(next != start, "import cycle: {} -> {next}", path.join(" -> "));
                    if seen.insert(next.clone()) {
                        todo.push((next.clone(), [path.clone(), vec![next.clone()]].concat()));
                    }
                }
            }
        }
    }

    /// A buffer a probe on a sink pad drops goes nowhere and leaves nothing
    /// on stderr (`PadProbeReturn::Drop` left a critical per buffer there;
    /// on a source pad it did not).
    #[test]
    fn a_probe_drops_a_buffer_without_a_gstreamer_critical() {
        use gstreamer as gst;
        use gstreamer::prelude::*;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        super::init().expect("GStreamer");
        // What GStreamer says of a bad unref: counted, from any thread.
        let criticals = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&criticals);
        let handler = gst::glib::log_set_handler(
            Some("GStreamer"),
            gst::glib::LogLevels::LEVEL_CRITICAL,
            false,
            false,
            move |_, _, message| {
                if message.contains("mini_object") {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            },
        );
        let chained = Arc::new(AtomicUsize::new(0));
        let reached = Arc::clone(&chained);
        let sink = gst::Pad::builder(gst::PadDirection::Sink)
            .chain_function(move |_, _, _| {
                reached.fetch_add(1, Ordering::Relaxed);
                Ok(gst::FlowSuccess::Ok)
            })
            .build();
        let src = gst::Pad::builder(gst::PadDirection::Src).build();
        src.link(&sink).expect("link");
        sink.set_active(true).expect("activate");
        src.set_active(true).expect("activate");
        sink.add_probe(gst::PadProbeType::BUFFER, |_, info| super::drop_data(info));
        assert!(src.push_event(gst::event::StreamStart::new("drop")));
        assert!(src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new())));
        for _ in 0..5 {
            assert_eq!(src.push(gst::Buffer::with_size(188).expect("buffer")), Ok(gst::FlowSuccess::Ok));
        }
        gst::glib::log_remove_handler(Some("GStreamer"), handler);
        assert_eq!(chained.load(Ordering::Relaxed), 0, "a dropped buffer went downstream");
        assert_eq!(criticals.load(Ordering::Relaxed), 0, "dropping a buffer made GStreamer criticals");
    }
}
