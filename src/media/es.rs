//! Elementary streams as passthrough carries them: the codecs it knows, the
//! facts it reads from their own bytes (keyframes, audio frame headers),
//! and what a PMT says about each (stream type, descriptors).
//!
//! Nothing here changes a byte of an access unit: the relay only looks.

use std::fmt;

/// A video codec passthrough relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// H.264 / AVC, Annex B byte stream.
    H264,
    /// H.265 / HEVC, Annex B byte stream.
    Hevc,
    /// MPEG-2 video.
    Mpeg2,
}

impl VideoCodec {
    /// Every codec, for messages.
    pub const ALL: [VideoCodec; 3] = [VideoCodec::H264, VideoCodec::Hevc, VideoCodec::Mpeg2];

    /// The config and status name.
    pub fn as_str(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::Hevc => "hevc",
            VideoCodec::Mpeg2 => "mpeg2",
        }
    }

    /// The name a broadcast engineer reads.
    pub fn label(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H.264",
            VideoCodec::Hevc => "HEVC",
            VideoCodec::Mpeg2 => "MPEG-2 video",
        }
    }

    /// From a config name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// From tsdemux's caps name.
    pub fn from_caps(name: &str, mpegversion: Option<i32>) -> Option<Self> {
        match (name, mpegversion) {
            ("video/x-h264", _) => Some(VideoCodec::H264),
            ("video/x-h265", _) => Some(VideoCodec::Hevc),
            ("video/mpeg", Some(2)) => Some(VideoCodec::Mpeg2),
            _ => None,
        }
    }

    /// ISO/IEC 13818-1 stream_type.
    pub fn stream_type(self) -> u8 {
        match self {
            VideoCodec::H264 => 0x1b,
            VideoCodec::Hevc => 0x24,
            VideoCodec::Mpeg2 => 0x02,
        }
    }

    /// Whether an access unit (one PES payload) starts a picture a decoder
    /// can begin from: an IDR or IRAP picture, or one that carries its
    /// sequence parameters (an encoder's periodic I picture); for MPEG-2 a
    /// sequence header or an I picture.
    ///
    /// Only the units up to the first slice are read: the parameter sets
    /// come before it, and the rest of a picture is most of its bytes (a
    /// whole scan of every picture cost more than the parser it spares).
    pub fn is_keyframe(self, au: &[u8]) -> bool {
        let units = start_codes(au);
        match self {
            // Slices are types 1 to 5, 5 an IDR; 7 is the SPS.
            VideoCodec::H264 => {
                units.map(|b| b & 0x1f).find(|t| matches!(t, 1..=5 | 7)).is_some_and(|t| matches!(t, 5 | 7))
            }
            // Slices are types 0 to 31, 16 to 21 IRAP; 32 and 33 are the
            // VPS and SPS.
            VideoCodec::Hevc => {
                units.map(|b| (b >> 1) & 0x3f).find(|&t| t <= 33).is_some_and(|t| matches!(t, 16..=21 | 32 | 33))
            }
            VideoCodec::Mpeg2 => {
                let mut at = 0;
                while let Some(i) = find_start(au, at) {
                    match au.get(i + 3) {
                        Some(0xb3) => return true,
                        // picture_start_code: temporal_reference (10 bits),
                        // then picture_coding_type (3 bits): 1 is I.
                        Some(0x00) => return au.get(i + 5).is_some_and(|b| (b >> 3) & 0x07 == 1),
                        _ => at = i + 3,
                    }
                }
                false
            }
        }
    }
}

impl fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// An audio codec passthrough relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioCodec {
    /// AAC in ADTS.
    Aac,
    /// AC-3 (Dolby Digital).
    Ac3,
    /// E-AC-3 (Dolby Digital Plus).
    Eac3,
    /// MPEG-1/2 audio (layer I, II or III).
    Mpeg,
}

impl AudioCodec {
    /// Every codec, for messages.
    pub const ALL: [AudioCodec; 4] = [AudioCodec::Aac, AudioCodec::Ac3, AudioCodec::Eac3, AudioCodec::Mpeg];

    /// The config and status name.
    pub fn as_str(self) -> &'static str {
        match self {
            AudioCodec::Aac => "aac",
            AudioCodec::Ac3 => "ac3",
            AudioCodec::Eac3 => "eac3",
            AudioCodec::Mpeg => "mp2",
        }
    }

    /// The name a broadcast engineer reads.
    pub fn label(self) -> &'static str {
        match self {
            AudioCodec::Aac => "AAC",
            AudioCodec::Ac3 => "AC-3",
            AudioCodec::Eac3 => "E-AC-3",
            AudioCodec::Mpeg => "MPEG audio",
        }
    }

    /// From a config name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// From tsdemux's caps.
    pub fn from_caps(name: &str, mpegversion: Option<i32>) -> Option<Self> {
        match (name, mpegversion) {
            ("audio/mpeg", Some(2 | 4)) => Some(AudioCodec::Aac),
            ("audio/mpeg", Some(1)) => Some(AudioCodec::Mpeg),
            ("audio/x-ac3", _) => Some(AudioCodec::Ac3),
            ("audio/x-eac3", _) => Some(AudioCodec::Eac3),
            _ => None,
        }
    }

    /// ISO/IEC 13818-1 stream_type (DVB carries AC-3 and E-AC-3 as private
    /// data, 0x06, named by a descriptor).
    pub fn stream_type(self) -> u8 {
        match self {
            AudioCodec::Aac => 0x0f,
            AudioCodec::Ac3 | AudioCodec::Eac3 => 0x06,
            AudioCodec::Mpeg => 0x04,
        }
    }

    /// The PES stream_id: MPEG audio streams, or private_stream_1 for
    /// Dolby.
    pub fn stream_id(self, index: usize) -> u8 {
        match self {
            AudioCodec::Ac3 | AudioCodec::Eac3 => 0xbd,
            _ => 0xc0 + (index as u8 & 0x1f),
        }
    }

    /// The first frame header in `data`, if one parses.
    pub fn frame(self, data: &[u8]) -> Option<AudioFrame> {
        match self {
            AudioCodec::Aac => adts(data),
            AudioCodec::Ac3 => ac3(data),
            AudioCodec::Eac3 => eac3(data),
            AudioCodec::Mpeg => mpeg_audio(data),
        }
    }
}

impl fmt::Display for AudioCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What one audio frame header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFrame {
    /// Samples per second.
    pub rate: u32,
    /// Channels.
    pub channels: u32,
    /// Samples per channel in one frame.
    pub samples: u32,
    /// MPEG audio layer (1-3), 0 for other codecs.
    pub layer: u8,
}

/// How long the ADTS frames of one access unit play, in ns (a PES may
/// carry several: ffmpeg packs about 100 ms of AAC in one); `None` when
/// `d` does not start with an ADTS frame.
pub fn adts_duration_ns(d: &[u8]) -> Option<u64> {
    let mut at = 0;
    let mut ns = 0u64;
    while let Some(f) = d.get(at..).and_then(adts) {
        let h = &d[at..];
        let length = (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        if length < 7 {
            break;
        }
        ns += u64::from(f.samples) * 1_000_000_000 / u64::from(f.rate);
        at += length;
    }
    (ns > 0).then_some(ns)
}

fn adts(d: &[u8]) -> Option<AudioFrame> {
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    if d.len() < 7 || d[0] != 0xff || d[1] & 0xf6 != 0xf0 {
        return None;
    }
    let rate = *RATES.get(usize::from((d[2] >> 2) & 0x0f))?;
    let channels = u32::from(((d[2] & 0x01) << 2) | (d[3] >> 6));
    let blocks = u32::from(d[6] & 0x03) + 1;
    Some(AudioFrame { rate, channels: channels.max(1), samples: 1024 * blocks, layer: 0 })
}

fn ac3(d: &[u8]) -> Option<AudioFrame> {
    if d.len() < 8 || d[0] != 0x0b || d[1] != 0x77 {
        return None;
    }
    let rate = [48000, 44100, 32000].get(usize::from(d[4] >> 6)).copied()?;
    let acmod = d[6] >> 5;
    let channels = [2, 1, 2, 3, 3, 4, 4, 5][usize::from(acmod)];
    // The LFE flag follows acmod after optional mix levels.
    let mut bit = 3 + u32::from(acmod & 0x01 != 0 && acmod != 1) * 2 + u32::from(acmod & 0x04 != 0) * 2;
    if acmod == 2 {
        bit += 2;
    }
    let lfe = (u16::from_be_bytes([d[6], d[7]]) >> (15 - bit)) & 1;
    Some(AudioFrame { rate, channels: channels + u32::from(lfe), samples: 1536, layer: 0 })
}

fn eac3(d: &[u8]) -> Option<AudioFrame> {
    if d.len() < 6 || d[0] != 0x0b || d[1] != 0x77 {
        return None;
    }
    let fscod = d[4] >> 6;
    let (rate, blocks) = if fscod == 3 {
        ([24000, 22050, 16000].get(usize::from((d[4] >> 4) & 0x03)).copied()?, 6)
    } else {
        ([48000, 44100, 32000][usize::from(fscod)], [1, 2, 3, 6][usize::from((d[4] >> 4) & 0x03)])
    };
    let acmod = (d[4] >> 1) & 0x07;
    let lfe = u32::from(d[4] & 0x01);
    let channels = [2, 1, 2, 3, 3, 4, 4, 5][usize::from(acmod)] + lfe;
    Some(AudioFrame { rate, channels, samples: 256 * blocks, layer: 0 })
}

fn mpeg_audio(d: &[u8]) -> Option<AudioFrame> {
    if d.len() < 4 || d[0] != 0xff || d[1] & 0xe0 != 0xe0 {
        return None;
    }
    let version = (d[1] >> 3) & 0x03; // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    let layer = match (d[1] >> 1) & 0x03 {
        3 => 1,
        2 => 2,
        1 => 3,
        _ => return None,
    };
    let base = [44100, 48000, 32000].get(usize::from((d[2] >> 2) & 0x03)).copied()?;
    let rate = match version {
        3 => base,
        2 => base / 2,
        0 => base / 4,
        _ => return None,
    };
    let samples = match (layer, version) {
        (1, _) => 384,
        (2, _) | (3, 3) => 1152,
        _ => 576,
    };
    let channels = if d[3] >> 6 == 3 { 1 } else { 2 };
    Some(AudioFrame { rate, channels, samples, layer })
}

/// Offset of the next `00 00 01` start code at or after `from`.
fn find_start(d: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 3 <= d.len() {
        if d[i + 2] > 1 {
            i += 3;
        } else if d[i] == 0 && d[i + 1] == 0 && d[i + 2] == 1 {
            return Some(i);
        } else {
            i += 1;
        }
    }
    None
}

/// The first byte after every start code (the NAL unit header).
fn start_codes(d: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let i = find_start(d, at)?;
        at = i + 3;
        d.get(i + 3).copied()
    })
}

/// ISO 639-2 code as a PMT carries it: three lowercase ASCII letters.
pub fn language_code(s: &str) -> Option<[u8; 3]> {
    let b = s.as_bytes();
    (b.len() == 3 && b.iter().all(u8::is_ascii_alphabetic)).then(|| [b[0], b[1], b[2]].map(|c| c.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_are_found_in_each_codec() {
        let aud_idr = [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x65, 0x88];
        let aud_p = [0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x41, 0x9a];
        assert!(VideoCodec::H264.is_keyframe(&aud_idr));
        assert!(!VideoCodec::H264.is_keyframe(&aud_p));
        // SPS and PPS ahead of an I slice that is not an IDR: an
        // encoder's periodic I picture.
        assert!(VideoCodec::H264.is_keyframe(&[0, 0, 1, 0x67, 0x64, 0, 0, 1, 0x68, 0xee, 0, 0, 1, 0x41, 0x88]));
        // What follows the first slice is not read: the picture is decided
        // by it (the bytes after it here only look like an IDR's header).
        let p_then_idr = [&aud_p[..], &[0, 0, 1, 0x65, 0x88]].concat();
        assert!(!VideoCodec::H264.is_keyframe(&p_then_idr));
        // HEVC: AUD (35), then IDR_W_RADL (19) / TRAIL_R (1).
        let hevc_idr = [0, 0, 1, 0x46, 0x01, 0x10, 0, 0, 1, 0x26, 0x01];
        let hevc_p = [0, 0, 1, 0x46, 0x01, 0x10, 0, 0, 1, 0x02, 0x01];
        assert!(VideoCodec::Hevc.is_keyframe(&hevc_idr));
        assert!(!VideoCodec::Hevc.is_keyframe(&hevc_p));
        assert!(!VideoCodec::Hevc.is_keyframe(&[&hevc_p[..], &[0, 0, 1, 0x26, 0x01]].concat()));
        // VPS (32) first: a keyframe.
        assert!(VideoCodec::Hevc.is_keyframe(&[0, 0, 1, 0x40, 0x01, 0, 0, 1, 0x02, 0x01]));
        // MPEG-2: picture header with coding type I (1) and P (2).
        let i = [0, 0, 1, 0x00, 0x00, 0x0f, 0xff, 0xf8];
        let p = [0, 0, 1, 0x00, 0x00, 0x17, 0xff, 0xf8];
        assert!(VideoCodec::Mpeg2.is_keyframe(&i));
        assert!(!VideoCodec::Mpeg2.is_keyframe(&p));
        assert!(VideoCodec::Mpeg2.is_keyframe(&[0, 0, 1, 0xb3, 0x78, 0x04]));
    }

    #[test]
    fn audio_frame_headers_give_rate_channels_and_length() {
        // ADTS, 48 kHz (index 3), stereo, one block.
        let adts = [0xff, 0xf1, 0x4c, 0x80, 0x2e, 0x7f, 0xfc];
        let f = AudioCodec::Aac.frame(&adts).unwrap();
        assert_eq!((f.rate, f.channels, f.samples), (48000, 2, 1024));
        // AC-3, 48 kHz, acmod 2 (stereo), no LFE.
        let ac3 = [0x0b, 0x77, 0, 0, 0x0e, 0x40, 0x40, 0x00];
        let f = AudioCodec::Ac3.frame(&ac3).unwrap();
        assert_eq!((f.rate, f.channels, f.samples), (48000, 2, 1536));
        // MPEG-1 layer II, 48 kHz, stereo.
        let mp2 = [0xff, 0xfd, 0x84, 0x00];
        let f = AudioCodec::Mpeg.frame(&mp2).unwrap();
        assert_eq!((f.rate, f.channels, f.samples, f.layer), (48000, 2, 1152, 2));
        assert!(AudioCodec::Aac.frame(b"GET / HTTP").is_none());
    }

    #[test]
    fn a_pes_of_several_adts_frames_plays_for_all_of_them() {
        // Frame length 371 in the header: two whole frames back to back.
        let mut frame = vec![0xff, 0xf1, 0x4c, 0x80, 0x2e, 0x7f, 0xfc];
        frame.resize(371, 0);
        let two = [frame.clone(), frame].concat();
        assert_eq!(adts_duration_ns(&two), Some(2 * 21_333_333));
        assert_eq!(adts_duration_ns(&two[..371]), Some(21_333_333));
        assert_eq!(adts_duration_ns(b"not adts"), None);
    }

    #[test]
    fn language_codes_are_three_letters() {
        assert_eq!(language_code("KAZ"), Some(*b"kaz"));
        assert_eq!(language_code("ru"), None);
        assert_eq!(language_code("r1s"), None);
    }
}
