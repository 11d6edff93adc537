//! The keyframe bridge: at a scheduled switch to a contribution (T0), the
//! programme starts on the first picture at or after the instant, not on
//! the contribution's next keyframe, which may be most of a GOP later.
//!
//! A few seconds before T0 the splicer starts a bridge on the feed that
//! will go on air and hands it every picture of that feed from its next
//! keyframe on, in decoding order. The bridge decodes them (`avdec_h264`,
//! slice threads: no frame of latency), drops what is shown before T0,
//! and encodes the rest with the slate's encoder settings and parameter
//! sets of its own ([`BRIDGE_SPS_ID`]), the first picture a keyframe. It
//! stops at the contribution's first keyframe at or after T0: from there
//! the partner gets the contribution's own access units again. So only
//! the pictures between T0 and that keyframe are re-encoded. In an open
//! GOP, the pictures after that keyframe in decoding order but shown
//! before it (its leading pictures, which refer to pictures before it)
//! are bridged too: the splicer leaves the contribution's own out.
//!
//! What is bridged: H.264, progressive or interlaced (then the bridge's
//! pictures are coded interlaced too, x264's MBAFF, in the contribution's
//! field order: the decoder's caps carry it to the encoder). HEVC and
//! MPEG-2 contributions, switches nobody scheduled (take, failover), and a
//! bridge that is not ready in time fall back to the keyframe (the
//! splicer's rule), as before.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::coded::{Au, VideoFormat};
use super::es::VideoCodec;
use super::{MediaError, lock};

/// The bridge starts this long before T0: a GOP of up to 3 s has its
/// keyframe before T0 in hand.
pub const PREPARE: Duration = Duration::from_secs(4);
/// How late a bridged picture may be before the bridge is given up (the
/// partner's decoder has `DELAY - HOLD` of buffer).
pub const WAIT: Duration = Duration::from_millis(100);
/// The bridge's parameter set ids: neither the contribution's (0) nor the
/// slate's (31), so that no decoder sees one redefined.
pub const BRIDGE_SPS_ID: u32 = 30;

/// One tick of the multiplexer's 90 kHz clock, in ns (rounded up).
const TICK_90K: u64 = 11_112;

/// What the appsink got, for the splicer.
#[derive(Debug, Default)]
struct Out {
    pictures: VecDeque<gst::Buffer>,
    eos: bool,
}

/// One bridge: a decoder and an encoder for one feed and one instant.
#[derive(Debug)]
pub struct Bridge {
    /// The feed's index (0 primary, 1 backup).
    pub feed: usize,
    /// The switch instant, clock ns (presentation).
    pub t0: u64,
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    out: Arc<Mutex<Out>>,
    /// Pictures are handed on from the feed's first keyframe.
    started: bool,
    /// The presentation time of the contribution's first keyframe at or
    /// after `t0`: nothing shown from it on is bridged.
    keyframe: Option<u64>,
    /// That keyframe's presentation time, for the decoder's probe (until
    /// it is known, none).
    until: Arc<AtomicU64>,
    /// Every picture the bridge needs has been handed on.
    ended: bool,
    /// How far the feed's keyframes are decoded before they are shown:
    /// the bridged pictures' decoding times are their presentation times
    /// less this, so that they stay before the keyframe's.
    offset: u64,
    /// The contribution's keyframe's decoding time, once known: every
    /// bridged picture is decoded before it. An open GOP's keyframe is
    /// decoded further ahead of its showing than the first keyframe the
    /// offset was taken from (by its leading pictures' reordering).
    ceiling: Option<u64>,
    /// The pipeline's error, if it failed.
    pub failed: Option<String>,
    /// Pictures handed out so far.
    pub given: u64,
}

impl Bridge {
    /// Whether a contribution in `format` can be bridged.
    pub fn supports(format: &VideoFormat) -> bool {
        format.codec == VideoCodec::H264
            && format.width > 0
            && format.height > 0
            && format.framerate.0 > 0
            && format.framerate.1 > 0
    }

    /// Starts a bridge for feed `feed` at `t0`, encoding at about `kbps`.
    pub fn start(feed: usize, t0: u64, format: &VideoFormat, kbps: u32) -> Result<Self, MediaError> {
        let err = |what: &str| MediaError::Pipeline(format!("keyframe bridge: {what}"));
        let make = |factory: &str| {
            gst::ElementFactory::make(factory).build().map_err(|_| MediaError::MissingElements {
                template: "keyframe bridge".into(),
                elements: vec![factory.into()],
            })
        };
        let caps =
            gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build();
        let src = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .max_bytes(64 * 1024 * 1024)
            .block(false)
            .build();
        let parse = make("h264parse")?;
        let decode = make("avdec_h264")?;
        // Slice threads: frame threads would hold back a picture per thread.
        decode.set_property_from_str("thread-type", "slice");
        let queue = make("queue")?;
        let convert = make("videoconvert")?;
        let (w, h) = (format.width, format.height);
        let raw = gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", w as i32)
            .field("height", h as i32);
        let filter = gst::ElementFactory::make("capsfilter")
            .property("caps", raw.build())
            .build()
            .map_err(|_| err("capsfilter"))?;
        // Caps last in a description would be read as an element's name.
        let desc =
            format!("{} ! identity", super::slate::h264_encoder(format, u32::MAX / 2, kbps.max(200), BRIDGE_SPS_ID));
        let encode = gst::parse::bin_from_description(&desc, true).map_err(|e| err(&e.to_string()))?;
        // Sliced threads (zerolatency): both cores, no picture of latency.
        if let Some(x264) =
            encode.iterate_elements().into_iter().flatten().find(|e| e.factory().is_some_and(|f| f.name() == "x264enc"))
        {
            x264.set_property("threads", 0u32);
        }
        let sink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = gst::Pipeline::with_name("keyframe-bridge");
        let elements =
            [src.upcast_ref(), &parse, &decode, &queue, &convert, &filter, encode.upcast_ref(), sink.upcast_ref()];
        pipeline.add_many(elements).map_err(|e| err(&e.to_string()))?;
        gst::Element::link_many(elements).map_err(|e| err(&e.to_string()))?;

        // What is shown before T0 is decoded (later pictures need it) but
        // not encoded: the encoder's first picture, a keyframe, is T0's.
        // Nor is the contribution's keyframe, decoded only for its
        // leading pictures.
        let until = Arc::new(AtomicU64::new(u64::MAX));
        let shown_until = Arc::clone(&until);
        let pad = decode.static_pad("src").ok_or_else(|| err("avdec_h264 has no src pad"))?;
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let pts = info.buffer().and_then(|b| b.pts()).map(|p| p.nseconds());
            let outside = pts.is_some_and(|p| p < t0 || p >= shown_until.load(Ordering::Relaxed));
            if outside { super::drop_data(info) } else { gst::PadProbeReturn::Ok }
        });
        let out = Arc::new(Mutex::new(Out::default()));
        let (o1, o2) = (Arc::clone(&out), Arc::clone(&out));
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    // x264enc moves its timestamps 1000 h on (room for
                    // negative decoding times) and its segment with them:
                    // the running time is the picture's clock time again.
                    let segment = sample.segment().and_then(|s| s.downcast_ref::<gst::format::Time>().cloned());
                    if let (Some(mut b), Some(segment)) = (sample.buffer_owned(), segment) {
                        let at = segment.to_running_time(b.pts());
                        let b_mut = b.make_mut();
                        b_mut.set_pts(at);
                        b_mut.set_dts(gst::ClockTime::NONE);
                        lock(&o1).pictures.push_back(b);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| lock(&o2).eos = true)
                .build(),
        );
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let _ = pipeline.set_state(gst::State::Null);
            return Err(err(&e.to_string()));
        }
        Ok(Self {
            feed,
            t0,
            pipeline,
            src,
            out,
            started: false,
            keyframe: None,
            until,
            ended: false,
            offset: 0,
            ceiling: None,
            failed: None,
            given: 0,
        })
    }

    /// Hands on the feed's next picture (decoding order).
    pub fn push(&mut self, au: &Au) {
        if self.ended || self.failed.is_some() {
            return;
        }
        if let Some(shown) = self.keyframe
            && (au.keyframe || au.pts > shown)
        {
            // Past the keyframe's leading pictures: the bridge ends.
            self.end();
            return;
        }
        if au.keyframe && au.pts >= self.t0 && self.keyframe.is_none() {
            // The contribution's own keyframe: the bridge ends before it
            // is shown. Decoded all the same, for its leading pictures.
            self.keyframe = Some(au.pts);
            self.until.store(au.pts, Ordering::Relaxed);
            if !self.started {
                // No keyframe before it: nothing to bridge from.
                self.end();
                return;
            }
        }
        if au.keyframe && !self.started {
            self.started = true;
            self.offset = au.pts.saturating_sub(au.dts);
        }
        if !self.started {
            return;
        }
        let mut b = au.data.copy();
        {
            let b = b.make_mut();
            b.set_pts(gst::ClockTime::from_nseconds(au.pts));
            b.set_dts(gst::ClockTime::from_nseconds(au.dts));
        }
        if let Err(e) = self.src.push_buffer(b) {
            self.failed = Some(format!("the decoder refused a picture: {e}"));
        }
    }

    /// Every picture the bridge needs is in: the decoder drains.
    fn end(&mut self) {
        self.ended = true;
        let _ = self.src.end_of_stream();
    }

    /// Reads the pipeline's bus: an error fails the bridge.
    pub fn check(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let Some(bus) = self.pipeline.bus()
            && let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
            && let gst::MessageView::Error(e) = msg.view()
        {
            self.failed = Some(super::describe_error(e));
        }
    }

    /// The next bridged picture's (decoding, presentation) time.
    pub fn front(&self) -> Option<(u64, u64)> {
        let out = lock(&self.out);
        let pts = out.pictures.front()?.pts()?.nseconds();
        Some((self.dts_of(pts, out.pictures.len()), pts))
    }

    /// Every bridged picture is to be decoded before `dts`, the
    /// contribution's keyframe's.
    pub fn decoded_before(&mut self, dts: u64) {
        self.ceiling = Some(dts);
    }

    /// The decoding time of a bridged picture shown at `pts`, `left` the
    /// pictures not handed out yet, it among them: its presentation time
    /// less the offset, but before the ceiling by a 90 kHz tick for each
    /// picture left, so that the multiplexer's decoding times still rise.
    fn dts_of(&self, pts: u64, left: usize) -> u64 {
        let dts = pts.saturating_sub(self.offset);
        match self.ceiling {
            Some(c) => dts.min(c.saturating_sub(TICK_90K * left as u64)),
            None => dts,
        }
    }

    /// Decoding times after `dts`, the last picture out before the
    /// bridge: a contribution decoded well ahead of showing would
    /// otherwise put the bridge's first picture before it.
    pub fn after(&mut self, dts: u64) {
        if let Some((d, p)) = self.front()
            && d <= dts
        {
            self.offset = p.saturating_sub(dts + 1);
        }
    }

    /// The next bridged picture, as an access unit.
    pub fn pop(&mut self) -> Option<Au> {
        let (b, left) = {
            let mut out = lock(&self.out);
            let left = out.pictures.len();
            (out.pictures.pop_front()?, left)
        };
        let pts = b.pts()?.nseconds();
        self.given += 1;
        let keyframe = !b.flags().contains(gst::BufferFlags::DELTA_UNIT);
        Some(Au { pts, dts: self.dts_of(pts, left), keyframe, data: b })
    }

    /// Whether every bridged picture has come out of the encoder.
    pub fn done(&self) -> bool {
        lock(&self.out).eos
    }

    /// Drops every picture not handed out yet: what is left of the bridge
    /// is not shown.
    pub fn abandon(&mut self) {
        let mut out = lock(&self.out);
        out.pictures.clear();
        out.eos = true;
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Stopping a pipeline joins its threads: not on the splicer's.
        let pipeline = self.pipeline.clone();
        let stopped = std::thread::Builder::new().name("bridge-stop".into()).spawn(move || {
            let _ = pipeline.set_state(gst::State::Null);
        });
        if stopped.is_err() {
            let _ = self.pipeline.set_state(gst::State::Null);
        }
    }
}
