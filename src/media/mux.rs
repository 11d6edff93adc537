//! The passthrough multiplexer: the programme's access units, whichever
//! feed they come from (the primary, the backup or the slate), into one
//! MPEG-TS with stable PIDs, one PAT and PMT, one continuity counter per
//! PID and one PCR, so a partner's decoder sees one unbroken stream across
//! every switch and restart.
//!
//! Written here rather than taken from mpegtsmux because what matters is
//! what happens at a switch: the access units go in as they are (byte for
//! byte, one PES each), the timestamps are the feeds' own on the shared
//! clock, and the PMT changes version only when a slot's codec or language
//! really changes.
//!
//! Layout: PMT on [`PMT_PID`], video on [`VIDEO_PID`] (which carries the
//! PCR), audio track `i` on `AUDIO_PID + i`, SCTE-35 on [`SCTE35_PID`]. A
//! slot whose codec changes (a slate planned in H.264 before an MPEG-2
//! contribution arrives) moves to a fresh PID from [`FRESH_PIDS`]: a
//! receiver then sees a new elementary stream, not a codec swapped under a
//! PID it already decodes, which many (ffmpeg among them) do not follow.

use super::es::{AudioCodec, VideoCodec};
use super::ts::{self, PACKET, SYNC};

/// The programme's PMT.
pub const PMT_PID: u16 = 0x0020;
/// The video, and the PCR.
pub const VIDEO_PID: u16 = 0x0100;
/// The first audio track; track `i` is on `AUDIO_PID + i`.
pub const AUDIO_PID: u16 = 0x0101;
/// PIDs for a slot whose codec changed, taken in turn.
pub const FRESH_PIDS: std::ops::Range<u16> = 0x0120..0x01f0;
/// SCTE-35 splice information, when the contribution carries it.
pub const SCTE35_PID: u16 = 0x01f0;
/// The programme number in the PAT and PMT.
pub const PROGRAM_NUMBER: u16 = 1;
/// PAT and PMT are repeated at least this often (ns).
pub const PSI_INTERVAL_NS: u64 = 100_000_000;
/// A PCR is sent at least this often (ns), on its own if no video flows.
pub const PCR_INTERVAL_NS: u64 = 40_000_000;

/// One audio track of the programme as the PMT describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSlot {
    /// Its codec.
    pub codec: AudioCodec,
    /// ISO 639-2 language, if the contribution named one.
    pub language: Option<[u8; 3]>,
}

/// What the PMT lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    /// The video codec; `None` before any is known.
    pub video: Option<VideoCodec>,
    /// Every audio track, in order.
    pub audio: Vec<AudioSlot>,
    /// Whether a SCTE-35 PID is listed.
    pub scte35: bool,
}

/// An access unit's times (clock ns) and whether a decoder can start on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Presentation time.
    pub pts: u64,
    /// Decoding time.
    pub dts: u64,
    /// A keyframe (always true for audio).
    pub keyframe: bool,
}

/// Where an access unit goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The video.
    Video,
    /// Audio track `i`.
    Audio(usize),
}

/// The multiplexer's state: layout, PMT version, continuity counters and
/// when PSI and PCR were last sent.
#[derive(Debug, Default)]
pub struct Mux {
    layout: Layout,
    /// The video's PID (and the PCR's), and each audio track's.
    video_pid: u16,
    audio_pids: Vec<u16>,
    /// The next fresh PID to try.
    fresh: u16,
    version: u8,
    /// Continuity counters by PID (index: PID).
    cc: Vec<u8>,
    psi_at: Option<u64>,
    pcr_at: Option<u64>,
    psi_due: bool,
}

/// 27 MHz PCR ticks of a clock time in ns (wrapping as the PCR does).
fn pcr_of(ns: u64) -> u64 {
    ((u128::from(ns) * 27 / 1000) % ((1u128 << 33) * 300)) as u64
}

/// 90 kHz ticks of a clock time in ns, 33 bits.
pub fn ticks_90k(ns: u64) -> u64 {
    ((u128::from(ns) * 9 / 100_000) as u64) & ((1 << 33) - 1)
}

impl Mux {
    /// A multiplexer with nothing listed yet.
    pub fn new() -> Self {
        Self { cc: vec![0; 0x2000], psi_due: true, video_pid: VIDEO_PID, fresh: FRESH_PIDS.start, ..Self::default() }
    }

    /// The PID `slot` is carried on (audio tracks not listed: none).
    pub fn pid(&self, slot: Slot) -> Option<u16> {
        match slot {
            Slot::Video => Some(self.video_pid),
            Slot::Audio(i) => self.audio_pids.get(i).copied(),
        }
    }

    /// A PID from [`FRESH_PIDS`] in turn that neither the layout in force
    /// nor `taken` uses.
    fn fresh_pid(&mut self, taken: &[u16]) -> u16 {
        loop {
            let pid = self.fresh;
            self.fresh = if pid + 1 >= FRESH_PIDS.end { FRESH_PIDS.start } else { pid + 1 };
            if pid != self.video_pid && !self.audio_pids.contains(&pid) && !taken.contains(&pid) {
                return pid;
            }
        }
    }

    /// The layout the PMT lists now.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The PMT's version (0-31).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Lists `layout` from now on. The PMT's version changes, and PAT and
    /// PMT are sent before the next access unit, only if it differs.
    pub fn set_layout(&mut self, layout: Layout) {
        if layout == self.layout {
            return;
        }
        let first = self.layout == Layout::default();
        if !first {
            self.version = (self.version + 1) & 0x1f;
        }
        // A slot keeps its PID while its codec stays; a new codec on a
        // listed slot takes a fresh PID.
        if self.layout.video.is_some() && layout.video.is_some() && self.layout.video != layout.video {
            self.video_pid = self.fresh_pid(&[]);
        }
        let mut pids: Vec<u16> = Vec::with_capacity(layout.audio.len());
        for (i, a) in layout.audio.iter().enumerate() {
            let own = AUDIO_PID + i as u16;
            let pid = match (self.layout.audio.get(i), self.audio_pids.get(i)) {
                (Some(old), Some(&pid)) if old.codec == a.codec => pid,
                (None, _) if own != self.video_pid && !self.audio_pids.contains(&own) => own,
                _ => self.fresh_pid(&pids),
            };
            pids.push(pid);
        }
        self.audio_pids = pids;
        self.layout = layout;
        self.psi_due = true;
    }

    /// PAT and PMT, and a PCR on its own, when due at clock time `now`.
    pub fn tick(&mut self, now: u64, out: &mut Vec<u8>) {
        if self.psi_due || self.psi_at.is_none_or(|t| now.saturating_sub(t) >= PSI_INTERVAL_NS) {
            self.write_psi(now, out);
        }
        if self.layout.video.is_some() && self.pcr_at.is_none_or(|t| now.saturating_sub(t) >= PCR_INTERVAL_NS) {
            self.pcr_at = Some(now);
            let mut p = [0xffu8; PACKET];
            let pid = self.video_pid;
            let cc = self.cc[usize::from(pid)];
            // Adaptation field only: the continuity counter does not move.
            p[..4].copy_from_slice(&[SYNC, (pid >> 8) as u8, pid as u8, 0x20 | cc]);
            p[4] = 183;
            p[5] = 0x10;
            write_pcr(&mut p[6..12], pcr_of(now));
            out.extend_from_slice(&p);
        }
    }

    /// One access unit as one PES on `slot`'s PID, sent at clock time
    /// `now`. A keyframe's first packet says so (random_access_indicator);
    /// a video PES carries the PCR.
    pub fn write_au(&mut self, slot: Slot, t: Timing, data: &[u8], now: u64, out: &mut Vec<u8>) {
        let Timing { pts, dts, keyframe } = t;
        self.tick(now, out);
        let Some(pid) = self.pid(slot) else { return };
        let (stream_id, bounded) = match slot {
            Slot::Video => (0xe0, false),
            Slot::Audio(i) => match self.layout.audio.get(i) {
                Some(a) => (a.codec.stream_id(i), true),
                None => return,
            },
        };
        let (pts, dts) = (ticks_90k(pts), ticks_90k(dts));
        let mut header = vec![0, 0, 1, stream_id, 0, 0, 0x84];
        if dts != pts {
            header.extend_from_slice(&[0xc0, 10]);
            header.extend_from_slice(&timestamp(0x3, pts));
            header.extend_from_slice(&timestamp(0x1, dts));
        } else {
            header.extend_from_slice(&[0x80, 5]);
            header.extend_from_slice(&timestamp(0x2, pts));
        }
        let length = header.len() - 6 + data.len();
        if bounded || length <= 0xffff {
            let length = length.min(0xffff) as u16;
            header[4..6].copy_from_slice(&length.to_be_bytes());
        }
        let pcr = (slot == Slot::Video).then(|| {
            self.pcr_at = Some(now);
            pcr_of(now)
        });
        self.packetize(pid, &header, data, pcr, keyframe, out);
    }

    /// Whole SCTE-35 sections (each from table_id to CRC), on
    /// [`SCTE35_PID`].
    pub fn write_section(&mut self, section: &[u8], now: u64, out: &mut Vec<u8>) {
        self.tick(now, out);
        self.packetize(SCTE35_PID, &[0], section, None, false, out);
    }

    fn write_psi(&mut self, now: u64, out: &mut Vec<u8>) {
        self.psi_due = false;
        self.psi_at = Some(now);
        let mut pat = vec![0x00, 0, 0, 0x00, 0x01, 0xc1, 0, 0];
        pat.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
        pat.extend_from_slice(&(0xe000 | PMT_PID).to_be_bytes());
        self.section(ts::PAT_PID, pat, out);

        let mut pmt = vec![0x02, 0, 0];
        pmt.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
        pmt.extend_from_slice(&[0xc1 | (self.version << 1), 0, 0]);
        pmt.extend_from_slice(&(0xe000 | self.video_pid).to_be_bytes());
        let program_info: &[u8] = if self.layout.scte35 { b"\x05\x04CUEI" } else { b"" };
        pmt.extend_from_slice(&(0xf000 | program_info.len() as u16).to_be_bytes());
        pmt.extend_from_slice(program_info);
        let mut es = |stream_type: u8, pid: u16, descriptors: &[u8]| {
            pmt.push(stream_type);
            pmt.extend_from_slice(&(0xe000 | pid).to_be_bytes());
            pmt.extend_from_slice(&(0xf000 | descriptors.len() as u16).to_be_bytes());
            pmt.extend_from_slice(descriptors);
        };
        if let Some(v) = self.layout.video {
            es(v.stream_type(), self.video_pid, &[]);
        }
        for (a, &pid) in self.layout.audio.iter().zip(&self.audio_pids) {
            let mut d = Vec::new();
            match a.codec {
                AudioCodec::Ac3 => d.extend_from_slice(&[0x6a, 1, 0x00]),
                AudioCodec::Eac3 => d.extend_from_slice(&[0x7a, 1, 0x00]),
                _ => {}
            }
            if let Some(lang) = a.language {
                d.extend_from_slice(&[0x0a, 4, lang[0], lang[1], lang[2], 0]);
            }
            es(a.codec.stream_type(), pid, &d);
        }
        if self.layout.scte35 {
            es(0x86, SCTE35_PID, &[]);
        }
        self.section(PMT_PID, pmt, out);
    }

    /// A PSI section (header fields after the length, without CRC) in
    /// packets of `pid`.
    fn section(&mut self, pid: u16, mut s: Vec<u8>, out: &mut Vec<u8>) {
        let length = (s.len() - 3 + 4) as u16;
        s[1..3].copy_from_slice(&(0xb000 | length).to_be_bytes());
        let crc = ts::crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        self.packetize(pid, &[0], &s, None, false, out);
    }

    /// `head` then `data` in packets of `pid`; the first with
    /// payload_unit_start, an adaptation field with the PCR and the random
    /// access flag when asked, the last padded by adaptation-field stuffing
    /// (0xff stuffing for sections).
    fn packetize(
        &mut self,
        pid: u16,
        head: &[u8],
        data: &[u8],
        pcr: Option<u64>,
        random_access: bool,
        out: &mut Vec<u8>,
    ) {
        let psi = head == [0];
        let total = head.len() + data.len();
        let mut at = 0;
        let mut first = true;
        while at < total || first {
            let cc = &mut self.cc[usize::from(pid)];
            let mut p = [0xffu8; PACKET];
            p[0] = SYNC;
            p[1] = (if first { 0x40 } else { 0 }) | (pid >> 8) as u8;
            p[2] = pid as u8;
            // Adaptation field: flags and PCR on the first packet if asked.
            let mut af: Option<Vec<u8>> = None;
            if first && (pcr.is_some() || random_access) {
                let mut a = vec![(if random_access { 0x40 } else { 0 }) | (if pcr.is_some() { 0x10 } else { 0 })];
                if let Some(pcr) = pcr {
                    let mut b = [0u8; 6];
                    write_pcr(&mut b, pcr);
                    a.extend_from_slice(&b);
                }
                af = Some(a);
            }
            let left = total - at;
            let room = 184 - af.as_ref().map_or(0, |a| 1 + a.len());
            if !psi && left < room {
                // Stuff the adaptation field so that the payload ends the
                // packet: 184 - left bytes of it, its length byte included.
                let body = 184 - left - 1;
                let a = af.get_or_insert_with(|| if body > 0 { vec![0x00] } else { Vec::new() });
                a.resize(body, 0xff);
            }
            let payload_at = match &af {
                Some(a) => {
                    p[4] = a.len() as u8;
                    p[5..5 + a.len()].copy_from_slice(a);
                    5 + a.len()
                }
                None => 4,
            };
            let room = PACKET - payload_at;
            let n = room.min(left);
            p[3] = (if payload_at > 4 { 0x30 } else { 0x10 }) | *cc;
            // The payload: the rest of `head`, then of `data`, copied a
            // slice at a time (a byte at a time, this was most of the
            // splicer's own CPU).
            let mut k = 0;
            while k < n {
                let i = at + k;
                let (from, off) = if i < head.len() { (head, i) } else { (data, i - head.len()) };
                let take = (n - k).min(from.len() - off);
                p[payload_at + k..payload_at + k + take].copy_from_slice(&from[off..off + take]);
                k += take;
            }
            *cc = (*cc + 1) & 0x0f;
            at += n;
            first = false;
            out.extend_from_slice(&p);
        }
    }
}

fn timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ts >> 29) & 0x0e) as u8) | 1,
        (ts >> 22) as u8,
        (((ts >> 14) & 0xfe) as u8) | 1,
        (ts >> 7) as u8,
        (((ts << 1) & 0xfe) as u8) | 1,
    ]
}

fn write_pcr(b: &mut [u8], pcr: u64) {
    let (base, ext) = (pcr / 300, pcr % 300);
    b[0] = (base >> 25) as u8;
    b[1] = (base >> 17) as u8;
    b[2] = (base >> 9) as u8;
    b[3] = (base >> 1) as u8;
    b[4] = (((base & 1) as u8) << 7) | 0x7e | ((ext >> 8) as u8);
    b[5] = ext as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            video: Some(VideoCodec::H264),
            audio: vec![
                AudioSlot { codec: AudioCodec::Aac, language: Some(*b"kaz") },
                AudioSlot { codec: AudioCodec::Ac3, language: Some(*b"eng") },
            ],
            scte35: false,
        }
    }

    /// The PES payloads of `pid` in `out`, reassembled, with each
    /// packet's continuity counter checked.
    fn payloads(out: &[u8], pid: u16) -> Vec<Vec<u8>> {
        let mut pes: Vec<Vec<u8>> = Vec::new();
        let mut cc: Option<u8> = None;
        for p in out.chunks_exact(PACKET) {
            assert_eq!(p[0], SYNC);
            if ts::pid(p) != pid {
                continue;
            }
            let afc = p[3] >> 4 & 0x03;
            let mut at = 4;
            if afc & 0x02 != 0 {
                at += 1 + usize::from(p[4]);
            }
            if afc & 0x01 == 0 {
                continue;
            }
            if let Some(prev) = cc {
                assert_eq!(p[3] & 0x0f, (prev + 1) & 0x0f, "continuity");
            }
            cc = Some(p[3] & 0x0f);
            if p[1] & 0x40 != 0 {
                pes.push(Vec::new());
            }
            pes.last_mut().expect("starts with PUSI").extend_from_slice(&p[at..]);
        }
        pes
    }

    #[test]
    fn an_access_unit_comes_out_byte_for_byte_in_one_pes() {
        for len in [1usize, 150, 170, 176, 177, 178, 183, 184, 300, 5000, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut mux = Mux::new();
            mux.set_layout(layout());
            let mut out = Vec::new();
            let t = Timing { pts: 2_000_000_000, dts: 1_960_000_000, keyframe: true };
            mux.write_au(Slot::Video, t, &data, 1_000_000_000, &mut out);
            let t = Timing { pts: 2_000_000_000, dts: 2_000_000_000, keyframe: true };
            mux.write_au(Slot::Audio(1), t, &data[..len.min(4000)], 1_000_000_000, &mut out);
            assert_eq!(out.len() % PACKET, 0);
            let v = payloads(&out, VIDEO_PID);
            assert_eq!(v.len(), 1, "len {len}");
            let hdr = 9 + usize::from(v[0][8]);
            assert_eq!(&v[0][hdr..], &data[..], "video, len {len}");
            assert_eq!(v[0][7] & 0xc0, 0xc0, "PTS and DTS");
            let a = payloads(&out, AUDIO_PID + 1);
            assert_eq!(a[0][3], 0xbd, "AC-3 is private_stream_1");
            let alen = usize::from(u16::from_be_bytes([a[0][4], a[0][5]]));
            assert_eq!(alen, 3 + 5 + len.min(4000), "bounded PES length");
            assert_eq!(&a[0][14..], &data[..len.min(4000)], "audio, len {len}");
        }
    }

    #[test]
    fn psi_lists_every_track_with_its_language_and_changes_version_only_on_change() {
        let mut mux = Mux::new();
        mux.set_layout(layout());
        let mut out = Vec::new();
        mux.tick(0, &mut out);
        let pmt = payloads(&out, PMT_PID);
        let s = &pmt[0][1..];
        let len = usize::from(u16::from_be_bytes([s[1], s[2]]) & 0x0fff);
        assert_eq!(ts::crc32_mpeg2(&s[..3 + len]), 0, "PMT CRC");
        assert_eq!((s[5] >> 1) & 0x1f, 0, "version 0");
        let body = &s[..3 + len];
        assert!(body.windows(6).any(|w| w == [0x0a, 4, b'k', b'a', b'z', 0]));
        assert!(body.windows(3).any(|w| w == [0x6a, 1, 0]), "AC-3 descriptor");
        let pat = payloads(&out, 0);
        assert_eq!(ts::pat(&out[..PACKET]).map(|p| p.program_number), Some(1), "{pat:?}");
        mux.set_layout(layout());
        assert_eq!(mux.version(), 0, "the same layout keeps the version");
        let mut l = layout();
        l.audio.pop();
        mux.set_layout(l);
        assert_eq!(mux.version(), 1);
    }

    #[test]
    fn a_slot_keeps_its_pid_while_its_codec_stays_and_moves_when_it_changes() {
        let mut mux = Mux::new();
        mux.set_layout(layout());
        assert_eq!((mux.pid(Slot::Video), mux.pid(Slot::Audio(1))), (Some(VIDEO_PID), Some(AUDIO_PID + 1)));
        // A language changes: same PIDs. A track is added: its own PID.
        let mut l = layout();
        l.audio[0].language = Some(*b"rus");
        l.audio.push(AudioSlot { codec: AudioCodec::Aac, language: None });
        mux.set_layout(l.clone());
        assert_eq!(mux.pid(Slot::Video), Some(VIDEO_PID));
        assert_eq!(mux.pid(Slot::Audio(0)), Some(AUDIO_PID));
        assert_eq!(mux.pid(Slot::Audio(2)), Some(AUDIO_PID + 2));
        // The video becomes MPEG-2 and track 0 MPEG audio: both move, the
        // PCR with the video; the others stay.
        l.video = Some(VideoCodec::Mpeg2);
        l.audio[0].codec = AudioCodec::Mpeg;
        mux.set_layout(l.clone());
        let (v, a0) = (mux.pid(Slot::Video).unwrap(), mux.pid(Slot::Audio(0)).unwrap());
        assert!(FRESH_PIDS.contains(&v) && FRESH_PIDS.contains(&a0) && v != a0, "{v:#x} {a0:#x}");
        assert_eq!(mux.pid(Slot::Audio(1)), Some(AUDIO_PID + 1));
        let mut out = Vec::new();
        mux.tick(0, &mut out);
        let pmt = &payloads(&out, PMT_PID)[0][1..];
        assert_eq!((u16::from(pmt[8] & 0x1f) << 8) | u16::from(pmt[9]), v, "PCR PID follows the video");
        assert!(pmt.windows(3).any(|w| w == [0x02, 0xe0 | (v >> 8) as u8, v as u8]), "MPEG-2 on its new PID");
        assert!(mux.pid(Slot::Audio(3)).is_none());
    }

    #[test]
    fn a_pcr_flows_even_without_video() {
        let mut mux = Mux::new();
        mux.set_layout(layout());
        let mut out = Vec::new();
        for ms in 0..200u64 {
            mux.tick(ms * 1_000_000, &mut out);
        }
        let pcrs: Vec<u64> = out
            .chunks_exact(PACKET)
            .filter(|p| ts::pid(p) == VIDEO_PID && p[3] & 0x20 != 0 && p[5] & 0x10 != 0)
            .map(|p| {
                (u64::from(p[6]) << 25)
                    | (u64::from(p[7]) << 17)
                    | (u64::from(p[8]) << 9)
                    | (u64::from(p[9]) << 1)
                    | u64::from(p[10] >> 7)
            })
            .collect();
        assert_eq!(pcrs.len(), 5, "every 40 ms over 200 ms");
        assert!(pcrs.windows(2).all(|w| w[1] - w[0] == 3600), "{pcrs:?}");
    }
}
