//! The passthrough slate: encoded like the programme (same codec, picture
//! size, frame rate, field order; every audio track in its own codec, rate
//! and channels), so that a switch changes pictures, never the format.
//!
//! A slate is a still card with a steady tone or silence, so it is encoded
//! once, not continuously: one closed GOP of pictures (a keyframe, then
//! pictures predicted from it) and a whole number of tone periods of each
//! audio track. The program replays them in a loop with new timestamps. A
//! switch to the slate starts the loop at its keyframe, on the next
//! picture: immediate, and decodable from its first picture. What this
//! costs at run time is copying a few buffers; the encode itself is
//! measured in the benchmarks.
//!
//! Encodes are kept across relays (the last [`KEPT`] of each kind), keyed
//! by everything that goes into them, the slate image's size and
//! modification time included: a re-arm, or the live event after its
//! rehearsal, has its slate and its multiviewer still at once instead of
//! encoding them again (an H.264 1080p50 loop costs 0.4 to 0.6 s of CPU,
//! HEVC 2.2 to 2.8 s, on the cores the relay and master control share).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::coded::{AudioFormat, FeedFormat, VideoFormat};
use super::es::{AudioCodec, VideoCodec};
use super::{MediaError, lock};
use crate::config::SlateSettings;

/// Longest audio loop, in frames; a tone whose period does not fit is
/// looped with a small phase jump.
const MAX_AUDIO_LOOP: u64 = 400;
/// Pictures in an MPEG-2 slate loop. GStreamer 1.22.0's avenc_mpeg2video
/// refuses every frame rate (its time base is 1/10^9 s), so MPEG-2 comes
/// from mpeg2enc, which takes about 0.65 s of CPU per 1080 picture even for
/// a still card: the loop is one I and one P picture, a keyframe every
/// second picture.
const MPEG2_LOOP: u32 = 2;
/// The H.264 slate's SPS and PPS id.
pub const SLATE_SPS_ID: u32 = 31;
/// How long one encode may take before it is given up.
const ENCODE_TIMEOUT: Duration = Duration::from_secs(20);

/// One audio track's loop.
#[derive(Debug, Clone)]
pub struct AudioLoop {
    /// The frames, in order.
    pub frames: Vec<gst::Buffer>,
    /// One frame's duration, as samples / rate.
    pub samples: u64,
    /// Samples per second.
    pub rate: u64,
}

impl AudioLoop {
    /// Clock ns of frame `n` counted from 0.
    pub fn frame_at(&self, n: u64) -> u64 {
        ((u128::from(n) * u128::from(self.samples) * 1_000_000_000) / u128::from(self.rate.max(1))) as u64
    }
}

/// The slate, encoded once.
#[derive(Debug, Clone)]
pub struct SlateLoop {
    /// What it was made to match.
    pub format: FeedFormat,
    /// One closed GOP: the first a keyframe.
    pub video: Vec<gst::Buffer>,
    /// Frame rate as (numerator, denominator).
    pub framerate: (u64, u64),
    /// Every audio track's loop, in the programme's order.
    pub audio: Vec<AudioLoop>,
}

impl SlateLoop {
    /// Clock ns of picture `n` counted from 0.
    pub fn picture_at(&self, n: u64) -> u64 {
        let (num, den) = self.framerate;
        ((u128::from(n) * u128::from(den) * 1_000_000_000) / u128::from(num.max(1))) as u64
    }
}

/// What the slate's pictures say.
#[derive(Debug, Clone)]
pub struct SlateLook {
    /// The slate settings.
    pub settings: SlateSettings,
    /// The event title, on the generated card.
    pub title: String,
    /// Pictures in the loop (the program's GOP).
    pub gop: u32,
    /// Video bitrate, kbit/s.
    pub video_kbps: u32,
}

/// Encodes the slate to match `format` (whose video must be known with
/// its size and rate), or takes what was encoded before for the same
/// pictures and sounds: a contribution that differs from the plan in its
/// audio alone costs no second encode of the pictures (at 1080p the costly
/// part, in CPU and in memory), nor does a second relay with the same slate.
pub fn encode(format: &FeedFormat, look: &SlateLook) -> Result<SlateLoop, MediaError> {
    let v = format
        .video
        .as_ref()
        .ok_or_else(|| MediaError::Pipeline("the slate needs the programme's video format".into()))?;
    let (n, d) = (v.framerate.0.max(1) as u64, v.framerate.1.max(1) as u64);
    let video = kept_video(v, look)?;
    let audio = format.audio.iter().map(|a| kept_audio(a, look.settings.tone_hz)).collect::<Result<Vec<_>, _>>()?;
    Ok(SlateLoop { format: format.clone(), video, framerate: (n, d), audio })
}

/// How many encodes of each kind (video loops, audio loops, stills) are
/// kept for the next relay.
pub const KEPT: usize = 4;

/// The last [`KEPT`] results of one kind of encode, the most recent first.
struct Kept<K, V> {
    entries: Mutex<VecDeque<(K, V)>>,
}

impl<K: PartialEq, V: Clone> Kept<K, V> {
    const fn new() -> Self {
        Self { entries: Mutex::new(VecDeque::new()) }
    }

    /// What was kept for `key`, or `make`'s result, kept. The encode runs
    /// without the lock: two relays wanting the same slate at once both
    /// encode it, and neither waits on the other.
    fn get_or(&self, key: K, make: impl FnOnce() -> Result<V, MediaError>) -> Result<V, MediaError> {
        {
            let mut entries = lock(&self.entries);
            if let Some(i) = entries.iter().position(|(k, _)| *k == key)
                && let Some(hit) = entries.remove(i)
            {
                let value = hit.1.clone();
                entries.push_front(hit);
                return Ok(value);
            }
        }
        let value = make()?;
        let mut entries = lock(&self.entries);
        entries.retain(|(k, _)| *k != key);
        entries.push_front((key, value.clone()));
        entries.truncate(KEPT);
        Ok(value)
    }
}

/// What the card or image looks like: its settings and title, and the
/// image file's size and modification time (a replaced PNG is drawn anew).
#[derive(Debug, Clone, PartialEq)]
struct CardKey {
    settings: SlateSettings,
    title: String,
    image: Option<(u64, Option<SystemTime>)>,
}

impl CardKey {
    fn of(look: &SlateLook) -> Self {
        let image =
            look.settings.image.as_ref().and_then(|p| std::fs::metadata(p).ok()).map(|m| (m.len(), m.modified().ok()));
        Self { settings: look.settings.clone(), title: look.title.clone(), image }
    }
}

/// What the slate's pictures are encoded for: the card, and the codec,
/// size, rate and field order. Not the profile: a slate in another profile
/// of the same codec (its own SPS, see [`SLATE_SPS_ID`]) decodes wherever
/// the programme does, and a second 1080 encode costs 20 MB at its peak.
#[derive(Debug, Clone, PartialEq)]
struct VideoKey {
    card: CardKey,
    codec: VideoCodec,
    size: (u32, u32),
    framerate: (i32, i32),
    fields: Option<bool>,
    gop: u32,
    kbps: u32,
}

/// What one audio track's loop is encoded for, as the encoder is told it
/// (the language is the PMT's business, not the frames').
#[derive(Debug, Clone, PartialEq)]
struct AudioKey {
    codec: AudioCodec,
    rate: u32,
    channels: u32,
    samples: u32,
    layer: u8,
    tone_hz: Option<u32>,
}

impl AudioKey {
    fn of(a: &AudioFormat, tone_hz: Option<u32>) -> Self {
        let samples = if a.samples > 0 {
            a.samples
        } else {
            match a.codec {
                AudioCodec::Aac => 1024,
                AudioCodec::Ac3 | AudioCodec::Eac3 => 1536,
                AudioCodec::Mpeg => 1152,
            }
        };
        Self {
            codec: a.codec,
            rate: if a.rate > 0 { a.rate } else { 48000 },
            channels: a.channels.clamp(1, 2),
            samples,
            layer: a.layer,
            tone_hz,
        }
    }
}

static VIDEO: Kept<VideoKey, Vec<gst::Buffer>> = Kept::new();
static AUDIO: Kept<AudioKey, AudioLoop> = Kept::new();
/// A still: the card or image and the picture size.
type StillKey = (CardKey, (u32, u32));
/// A still: the JPEG and its mean luma.
type Still = (Vec<u8>, f64);
static STILLS: Kept<StillKey, Still> = Kept::new();

/// Drops every kept encode and still: the next [`encode`] and [`still`]
/// encode afresh (the slate bench measures an encode with it).
pub fn forget_kept() {
    lock(&VIDEO.entries).clear();
    lock(&AUDIO.entries).clear();
    lock(&STILLS.entries).clear();
}

/// [`encode_video`], or the pictures encoded before for the same card and
/// format.
fn kept_video(v: &VideoFormat, look: &SlateLook) -> Result<Vec<gst::Buffer>, MediaError> {
    let key = VideoKey {
        card: CardKey::of(look),
        codec: v.codec,
        size: (v.width, v.height),
        framerate: v.framerate,
        fields: v.interlaced.then_some(v.top_field_first),
        gop: look.gop,
        kbps: look.video_kbps,
    };
    VIDEO.get_or(key, || encode_video(v, look))
}

/// [`encode_audio`], or the loop encoded before for the same track format
/// and tone.
fn kept_audio(a: &AudioFormat, tone_hz: Option<u32>) -> Result<AudioLoop, MediaError> {
    let key = AudioKey::of(a, tone_hz);
    AUDIO.get_or(key.clone(), || encode_audio(&key))
}

/// The x264 profile the slate is encoded in for `v`.
fn h264_profile(v: &VideoFormat) -> &str {
    v.profile
        .as_deref()
        .filter(|p| matches!(*p, "high" | "main" | "constrained-baseline" | "baseline"))
        .unwrap_or("high")
}

/// x264enc as a launch description for `v`'s profile and field order, a
/// keyframe every `gop` pictures, no B-pictures, no lookahead, its
/// parameter sets numbered `sps_id`.
pub(crate) fn h264_encoder(v: &VideoFormat, gop: u32, kbps: u32, sps_id: u32) -> String {
    format!(
        "x264enc key-int-max={gop} bframes=0 speed-preset=ultrafast tune=zerolatency threads=1 bitrate={kbps} interlaced={} \
         option-string=sps-id={sps_id} ! video/x-h264,stream-format=byte-stream,alignment=au,profile={}",
        v.interlaced,
        h264_profile(v)
    )
}

fn encode_video(v: &VideoFormat, look: &SlateLook) -> Result<Vec<gst::Buffer>, MediaError> {
    let (w, h) = (v.width.max(16), v.height.max(16));
    let (fn_, fd) = (v.framerate.0.max(1), v.framerate.1.max(1));
    let interlace = if v.interlaced {
        format!(
            ",interlace-mode=interleaved,field-order={}",
            if v.top_field_first { "top-field-first" } else { "bottom-field-first" }
        )
    } else {
        String::new()
    };
    let gop = if v.codec == VideoCodec::Mpeg2 { MPEG2_LOOP } else { look.gop.max(2) };
    let kbps = look.video_kbps.max(200);
    let enc = match v.codec {
        // Parameter sets numbered 31, not the 0 encoders use: ffmpeg's
        // decoder mis-parses pictures after an SPS/PPS is redefined under
        // the same id (slate to contribution and back).
        VideoCodec::H264 => h264_encoder(v, gop, kbps, SLATE_SPS_ID),
        VideoCodec::Hevc => format!(
            "x265enc key-int-max={gop} bitrate={kbps} speed-preset=veryfast tune=zerolatency option-string=bframes=0 \
             ! video/x-h265,stream-format=byte-stream,alignment=au"
        ),
        VideoCodec::Mpeg2 => format!(
            "mpeg2enc format=3 constraints=false closed-gop=true b-per-refframe=0 min-gop-size={gop} \
             max-gop-size={gop} bitrate={kbps} interlace-mode={} ! mpegvideoparse \
             ! video/mpeg,mpegversion=2,systemstream=false",
            if v.interlaced { 1 } else { 0 }
        ),
    };
    let src = picture(look, (w, h), (fn_, fd), gop);
    let desc = format!(
        "{src} ! videoconvert ! video/x-raw,format=I420,width={w},height={h},framerate={fn_}/{fd}{interlace} ! {enc} \
         ! appsink name=sink sync=false"
    );
    let pipeline = launch(&desc)?;
    dress(&pipeline, look);
    let frames = run(&pipeline, "slate video")?;
    let frames: Vec<gst::Buffer> = frames.into_iter().take(gop as usize).collect();
    match frames.first() {
        Some(f) if !f.flags().contains(gst::BufferFlags::DELTA_UNIT) => Ok(frames),
        Some(_) => Err(MediaError::Pipeline(format!("the {} slate's first picture is not a keyframe", v.codec))),
        None => Err(MediaError::Pipeline(format!("the {} slate encoder gave no picture", v.codec))),
    }
}

/// The slate's picture as a launch description: the PNG, or the card (a
/// plain colour with the title), `n` frames; [`dress`] gives it its file
/// or words once launched.
fn picture(look: &SlateLook, (w, h): (u32, u32), (fn_, fd): (i32, i32), n: u32) -> String {
    match &look.settings.image {
        Some(_) => format!("filesrc name=src ! pngdec ! imagefreeze num-buffers={n} ! videoconvert ! videoscale"),
        None => format!(
            "videotestsrc pattern=solid-color foreground-color=0xff10213a num-buffers={n} \
             ! video/x-raw,format=I420,width={w},height={h},framerate={fn_}/{fd} \
             ! textoverlay name=text valignment=center halignment=center line-alignment=center font-desc=\"Sans Bold 24\""
        ),
    }
}

/// Gives a launched [`picture`] its PNG file or its words.
fn dress(pipeline: &gst::Pipeline, look: &SlateLook) {
    if let Some(path) = &look.settings.image
        && let Some(src) = pipeline.by_name("src")
    {
        src.set_property("location", path.display().to_string());
    }
    if let Some(text) = pipeline.by_name("text") {
        let line = look.settings.text.as_deref().unwrap_or("We will be on air shortly");
        text.set_property("text", format!("{}\n\n{line}", look.title));
    }
}

/// The slate as the multiviewer shows it: one JPEG picture, `w`x`h`
/// (drawn at 1280x720, then scaled, so the card looks as partners see it),
/// and its mean luma.
pub fn still(look: &SlateLook, (w, h): (u32, u32)) -> Result<(Vec<u8>, f64), MediaError> {
    STILLS.get_or((CardKey::of(look), (w, h)), || draw_still(look, (w, h)))
}

/// Draws [`still`]'s picture.
fn draw_still(look: &SlateLook, (w, h): (u32, u32)) -> Result<(Vec<u8>, f64), MediaError> {
    let src = picture(look, (1280, 720), (25, 1), 1);
    let desc = format!(
        "{src} ! videoconvert ! videoscale add-borders=true ! video/x-raw,format=I420,width={w},height={h},pixel-aspect-ratio=1/1 \
         ! jpegenc name=jpeg quality=80 ! appsink name=sink sync=false"
    );
    let pipeline = launch(&desc)?;
    dress(&pipeline, look);
    let luma = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    if let Some(jpeg) = pipeline.by_name("jpeg") {
        super::thumbs::measure_luma(&jpeg, std::sync::Arc::clone(&luma))?;
    }
    let frames = run(&pipeline, "slate still")?;
    let first = frames.first().ok_or_else(|| MediaError::Pipeline("the slate still: no picture".into()))?;
    let map = first.map_readable().map_err(|_| MediaError::Pipeline("the slate still: unreadable".into()))?;
    Ok((map.to_vec(), f64::from_bits(luma.load(std::sync::atomic::Ordering::Relaxed))))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn encode_audio(k: &AudioKey) -> Result<AudioLoop, MediaError> {
    let AudioKey { codec, rate, channels, samples, layer, tone_hz } = *k;
    let samples = u64::from(samples);
    // Frames whose length is a whole number of the tone's periods.
    let frames = match tone_hz {
        Some(hz) if hz > 0 => {
            let period = u64::from(rate) / gcd(u64::from(rate), u64::from(hz));
            (period / gcd(period, samples)).min(MAX_AUDIO_LOOP)
        }
        _ => 1,
    };
    let wave = match tone_hz {
        Some(hz) if hz > 0 => format!("wave=sine freq={hz} volume=0.25"),
        _ => "wave=silence".to_owned(),
    };
    let enc = match codec {
        AudioCodec::Aac => "avenc_aac ! aacparse ! audio/mpeg,stream-format=adts".to_owned(),
        AudioCodec::Ac3 => "avenc_ac3 ! ac3parse".to_owned(),
        AudioCodec::Eac3 => "avenc_eac3 ! ac3parse".to_owned(),
        AudioCodec::Mpeg if layer == 3 => "lamemp3enc ! mpegaudioparse".to_owned(),
        AudioCodec::Mpeg => "avenc_mp2 ! mpegaudioparse".to_owned(),
    };
    let warm = 8;
    let total = 2 * frames + 2 * warm;
    let desc = format!(
        "audiotestsrc {wave} samplesperbuffer={samples} num-buffers={total} ! audio/x-raw,rate={rate},channels={channels} \
         ! audioconvert ! {enc} ! appsink name=sink sync=false"
    );
    let out = run(&launch(&desc)?, "slate audio")?;
    // From the middle: past the encoder's start-up.
    let from = (warm + frames) as usize;
    let frames: Vec<gst::Buffer> = out.into_iter().skip(from).take(frames as usize).collect();
    if frames.is_empty() {
        return Err(MediaError::Pipeline(format!("the {} slate encoder gave no audio frame", codec)));
    }
    Ok(AudioLoop { frames, samples, rate: u64::from(rate) })
}

fn launch(desc: &str) -> Result<gst::Pipeline, MediaError> {
    let element = gst::parse::launch(desc).map_err(|e| MediaError::Pipeline(format!("slate encoder: {e}")))?;
    element.downcast::<gst::Pipeline>().map_err(|_| MediaError::Pipeline("slate encoder is not a pipeline".into()))
}

/// Runs `pipeline` to its end; every buffer its appsink `sink` got.
fn run(pipeline: &gst::Pipeline, what: &str) -> Result<Vec<gst::Buffer>, MediaError> {
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| MediaError::Pipeline(format!("{what}: no appsink")))?;
    let guard = super::supervise::NullOnDrop(pipeline.clone());
    pipeline.set_state(gst::State::Playing).map_err(|e| MediaError::Pipeline(format!("{what}: {e}")))?;
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + ENCODE_TIMEOUT;
    loop {
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
            if let Some(b) = sample.buffer_owned() {
                out.push(b);
            }
            continue;
        }
        if sink.is_eos() {
            break;
        }
        if let Some(bus) = pipeline.bus()
            && let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
            && let gst::MessageView::Error(e) = msg.view()
        {
            return Err(MediaError::Pipeline(format!("{what}: {}", super::describe_error(e))));
        }
        if std::time::Instant::now() > deadline {
            return Err(MediaError::Pipeline(format!("{what}: the encode took longer than {ENCODE_TIMEOUT:?}")));
        }
    }
    drop(guard);
    Ok(out)
}
