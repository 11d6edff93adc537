//! Scheduled ad breaks on one leg: SCTE-35 splice_insert cues on a PID of
//! the leg's own.
//!
//! A leg given breaks lists [`LEG_CUE_PID`] in its copy of the PMT (stream
//! type 0x86, with the registration descriptor `CUEI` in the programme
//! loop), as the SDT stamp and the audio choice work: on the leg's own copy
//! of the shared multiplex, nothing encoded again, no other leg touched.
//! The PID is listed from the moment the leg is given its first break, so
//! the partner's receiver knows it well before the first cue.
//!
//! A break is two cues with its `splice_event_id`: out of the network
//! (with the break's duration and `auto_return`) and back in. Each is sent
//! [`ANNOUNCE`] before its instant and once more [`REPEAT`] later, so the
//! last copy is still at least [`MIN_NOTICE`] ahead.
//!
//! The splice time is the PTS of the picture the leg sends nearest the
//! break's instant. The leg learns how its stream's PTS runs against the
//! clock from the pictures it sends (the latest video PES, the clock time
//! of its batch, and the picture period), so the same code serves both
//! program modes, and a delayed leg, whose break instants are its delay
//! later, names the very pictures the live legs name.

use std::time::Duration;

use gstreamer as gst;

use super::scte35::{PTS_MASK, STREAM_TYPE, SpliceInsert};
use super::{mux, tracks, ts};

/// The leg's own SCTE-35 PID (the programme's, when the contribution
/// brings cues, is [`mux::SCTE35_PID`]).
pub const LEG_CUE_PID: u16 = 0x01f1;
/// How long before its instant a cue is first sent.
pub const ANNOUNCE: Duration = Duration::from_secs(5);
/// The second copy follows the first this much later.
pub const REPEAT: Duration = Duration::from_secs(1);
/// The least notice a break is scheduled with: a break due sooner is
/// refused (SCTE 67 asks for at least 4 s between cue and splice).
pub const MIN_NOTICE: Duration = Duration::from_secs(4);
/// The registration descriptor SCTE 35 asks for in the PMT's programme loop.
const CUEI: [u8; 6] = *b"\x05\x04CUEI";

/// One break as the schedule gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Break {
    /// `splice_event_id`.
    pub splice_event_id: u32,
    /// When it starts on the live programme (UTC ns); a delayed leg has it
    /// its delay later.
    pub start_utc_ns: u64,
    /// How long it lasts.
    pub duration: Duration,
}

/// One break on one leg, in the leg's own time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegBreak {
    /// `splice_event_id`.
    pub splice_event_id: u32,
    /// When the break starts on this leg (clock ns; a delayed leg's is its
    /// delay later).
    pub start_ns: u64,
    /// How long it lasts.
    pub duration: Duration,
}

/// One cue to send.
#[derive(Debug, Clone)]
struct Cue {
    /// The splice instant (clock ns).
    at: u64,
    event_id: u32,
    out: bool,
    /// The break's length in 90 kHz ticks, on the out cue.
    duration: Option<u64>,
    /// The break's length in 90 kHz ticks.
    length: u64,
    /// The section, made when the cue is first sent (its PTS fixed then,
    /// so that every copy names the same picture).
    section: Option<Vec<u8>>,
    /// Copies sent.
    sent: u8,
}

impl Cue {
    /// When the next copy is due, if one is.
    fn due(&self) -> Option<u64> {
        let first = self.at.saturating_sub(ANNOUNCE.as_nanos() as u64);
        match self.sent {
            0 => Some(first),
            1 => Some(first + REPEAT.as_nanos() as u64),
            _ => None,
        }
    }
}

/// Pictures whose PTS steps give the picture period.
const PERIOD_WINDOW: usize = 50;

/// `ticks` rounded to the nearest whole `period`, if one is known: a
/// splice named on the pictures' own grid is a picture's PTS exactly.
fn on_grid(ticks: u64, period: Option<u64>) -> u64 {
    match period {
        Some(p) if p > 0 => (ticks + p / 2) / p * p,
        _ => ticks,
    }
}

/// Adds one leg's break cues to its copy of each batch.
#[derive(Debug, Default)]
pub struct CueInserter {
    cues: Vec<Cue>,
    pmt_pid: Option<u16>,
    /// The leg's PMT, rewritten once per change of the programme's.
    rewrite: ts::SectionRewrite,
    /// (clock ns, PTS) of the latest picture sent.
    anchor: Option<(u64, u64)>,
    /// The picture period (90 kHz): the smallest step between consecutive
    /// pictures' PTS among the last [`PERIOD_WINDOW`] (reordered pictures
    /// step by several periods, or back).
    steps: std::collections::VecDeque<u64>,
    cc: u8,
    sent: u64,
    missed: u64,
    /// The PTS each break's out cue named, by `splice_event_id`: its in
    /// cue names that plus the duration exactly.
    out_pts: std::collections::BTreeMap<u32, u64>,
}

impl CueInserter {
    /// An inserter with no breaks yet (the PID is listed from now on).
    pub fn new() -> Self {
        Self::default()
    }

    /// The leg's breaks from now on. A cue already sent keeps its section:
    /// a break left in place names the same picture in every copy.
    pub fn set(&mut self, breaks: &[LegBreak]) {
        let mut cues = Vec::with_capacity(2 * breaks.len());
        for b in breaks {
            let end = b.start_ns + b.duration.as_nanos() as u64;
            let ticks = mux::ticks_90k(b.duration.as_nanos() as u64);
            for (at, out, duration) in [(b.start_ns, true, Some(ticks)), (end, false, None)] {
                let kept = self.cues.iter().find(|c| c.event_id == b.splice_event_id && c.out == out && c.at == at);
                let (section, sent) = kept.map_or((None, 0), |c| (c.section.clone(), c.sent));
                cues.push(Cue { at, event_id: b.splice_event_id, out, duration, length: ticks, section, sent });
            }
        }
        cues.sort_by_key(|c| c.at);
        self.out_pts.retain(|id, _| cues.iter().any(|c| c.event_id == *id));
        self.cues = cues;
    }

    /// Cue sections sent (every copy).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Cues that could not be sent before their instant (no picture had
    /// gone out on the leg to time them by).
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The leg's copy of `list`, sent at clock time `now` (ns): its PMT
    /// listing the cue PID, and any cue due now added at the end. `None`:
    /// nothing to change, send `list` as it is.
    pub fn apply(&mut self, list: &gst::BufferListRef, now: u64) -> Option<gst::BufferList> {
        let mut touches = false;
        for b in list.iter() {
            let Ok(m) = b.map_readable() else { continue };
            for p in m.chunks_exact(ts::PACKET) {
                let pid = ts::pid(p);
                if pid == ts::PAT_PID {
                    if let Some(pmt) = ts::section(p).and_then(tracks::pmt_pid) {
                        self.pmt_pid = Some(pmt);
                    }
                } else if Some(pid) == self.pmt_pid {
                    touches = true;
                } else if p[1] & 0x40 != 0
                    && let Some(pes) = ts::pes_start(p).filter(|s| s.is_video())
                    && let Some(pts) = pes.pts
                {
                    if let Some((_, last)) = self.anchor {
                        let step = pts.wrapping_sub(last) & PTS_MASK;
                        if step > 0 && step < 90_000 {
                            self.steps.push_back(step);
                            if self.steps.len() > PERIOD_WINDOW {
                                self.steps.pop_front();
                            }
                        }
                    }
                    self.anchor = Some((now, pts));
                }
            }
        }
        let cues = self.due_cues(now);
        if !touches && cues.is_empty() {
            return None;
        }
        let mut out = gst::BufferList::new_sized(list.len() + 1);
        let own = out.get_mut()?;
        for b in list.iter_owned() {
            let pmt = self.pmt_pid;
            let has_pmt = b.map_readable().is_ok_and(|m| m.chunks_exact(ts::PACKET).any(|p| Some(ts::pid(p)) == pmt));
            if !has_pmt {
                own.add(b);
                continue;
            }
            let Ok(m) = b.map_readable() else { continue };
            let mut data = Vec::with_capacity(m.len());
            for p in m.chunks_exact(ts::PACKET) {
                if Some(ts::pid(p)) == pmt {
                    data.extend_from_slice(&self.pmt_packet(p));
                } else {
                    data.extend_from_slice(p);
                }
            }
            let mut nb = gst::Buffer::from_mut_slice(data);
            if let Some(n) = nb.get_mut() {
                n.set_pts(b.pts());
                n.set_flags(b.flags());
            }
            own.add(nb);
        }
        if !cues.is_empty() {
            let mut data = Vec::with_capacity(cues.len() * ts::PACKET);
            for section in cues {
                data.extend_from_slice(&self.cue_packet(&section));
            }
            let mut nb = gst::Buffer::from_mut_slice(data);
            if let Some(n) = nb.get_mut() {
                n.set_pts(gst::ClockTime::from_nseconds(now));
            }
            own.add(nb);
        }
        Some(out)
    }

    /// The sections of the cue copies due at `now`; cues whose instant
    /// passed are dropped (counted as missed if never sent).
    fn due_cues(&mut self, now: u64) -> Vec<Vec<u8>> {
        let mut due = Vec::new();
        let anchor = self.anchor;
        let period = self.steps.iter().min().copied();
        for c in &mut self.cues {
            if c.at <= now {
                continue;
            }
            if c.due().is_none_or(|d| now < d) {
                continue;
            }
            if c.section.is_none() {
                // The in cue of a break whose out cue was timed: exactly
                // the break's length on from it.
                let back_in = (!c.out).then(|| self.out_pts.get(&c.event_id)).flatten();
                let pts = match (back_in, anchor) {
                    (Some(&out), _) => (out + c.length) & PTS_MASK,
                    (None, Some((clock, pts))) => {
                        (pts + on_grid(mux::ticks_90k(c.at.saturating_sub(clock)), period)) & PTS_MASK
                    }
                    // No picture yet to time the splice by: try again later.
                    (None, None) => continue,
                };
                if c.out {
                    self.out_pts.insert(c.event_id, pts);
                }
                let insert = SpliceInsert {
                    event_id: c.event_id,
                    out_of_network: c.out,
                    pts,
                    duration: c.duration,
                    program_id: 1,
                };
                c.section = Some(insert.section());
            }
            if let Some(s) = &c.section {
                due.push(s.clone());
                c.sent += 1;
                // Announced late (scheduled inside the window): one copy.
                if now >= c.at.saturating_sub(MIN_NOTICE.as_nanos() as u64) {
                    c.sent = 2;
                }
            }
        }
        let missed = self.cues.iter().filter(|c| c.at <= now && c.sent == 0).count() as u64;
        self.missed += missed;
        self.cues.retain(|c| c.at > now);
        let cues = &self.cues;
        self.out_pts.retain(|id, _| cues.iter().any(|c| c.event_id == *id));
        self.sent += due.len() as u64;
        due
    }

    /// One packet of the leg's cue PID carrying `section`.
    fn cue_packet(&mut self, section: &[u8]) -> [u8; ts::PACKET] {
        let mut p = [0xffu8; ts::PACKET];
        p[0] = ts::SYNC;
        p[1] = 0x40 | (LEG_CUE_PID >> 8) as u8;
        p[2] = LEG_CUE_PID as u8;
        p[3] = 0x10 | self.cc;
        self.cc = (self.cc + 1) & 0x0f;
        p[4] = 0;
        let n = section.len().min(ts::PACKET - 5);
        p[5..5 + n].copy_from_slice(&section[..n]);
        p
    }

    /// The leg's version of a PMT packet: the cue PID listed, `CUEI` in
    /// the programme loop, the version one on from the programme's (a
    /// receiver that saw the programme's PMT sees a new one). A PMT that
    /// does not fit one packet, or already lists the PID, passes as it is.
    fn pmt_packet(&mut self, p: &[u8]) -> [u8; ts::PACKET] {
        self.rewrite.packet(p, |section| {
            let entries = tracks::pmt_entries(section)?;
            if entries.iter().any(|e| e.pid == LEG_CUE_PID) {
                return None;
            }
            let info = usize::from(u16::from_be_bytes([section[10], section[11]]) & 0x0fff);
            let program_info = section.get(12..12 + info)?;
            let has_cuei = program_info.windows(CUEI.len()).any(|w| w == CUEI);
            let mut s = section[..10].to_vec();
            let info_len = info + if has_cuei { 0 } else { CUEI.len() };
            s.extend_from_slice(&(0xf000 | info_len as u16).to_be_bytes());
            s.extend_from_slice(program_info);
            if !has_cuei {
                s.extend_from_slice(&CUEI);
            }
            s.extend_from_slice(&section[12 + info..section.len() - 4]);
            s.push(STREAM_TYPE);
            s.extend_from_slice(&(0xe000 | LEG_CUE_PID).to_be_bytes());
            s.extend_from_slice(&0xf000u16.to_be_bytes());
            let version = (((s[5] >> 1) & 0x1f) + 1) & 0x1f;
            s[5] = (s[5] & !0x3e) | (version << 1);
            ts::seal_section(&mut s);
            Some(s)
        })
    }
}

/// How late an RTMP leg may still send a cue whose instant passed (its
/// FLV had no tag to carry it at the instant: the leg was reconnecting).
pub const FLV_LATE: Duration = Duration::from_secs(2);

/// One RTMP leg's break cues: an AMF0 `onCuePoint` data message at each
/// break's start and end, in the leg's FLV. What it carries follows the
/// "SCTE-35 mode" that ingests taking ad markers over RTMP read (Adobe
/// Primetime's, as Azure Media Services and Elemental use it): `name` and
/// `type` `scte35`, `time` (s, the tag's FLV time), `id` (the
/// `splice_event_id`), `duration` (s, on the start) and `cue`, the
/// `splice_insert` an MPEG-TS leg gets, base64, its splice time the tag's
/// own (90 kHz).
#[derive(Debug, Default)]
pub struct FlvCues {
    breaks: Vec<LegBreak>,
    /// (splice_event_id, out) sent or given up.
    done: std::collections::BTreeSet<(u32, bool)>,
    sent: u64,
    missed: u64,
}

impl FlvCues {
    /// The leg's breaks from now on.
    pub fn set(&mut self, breaks: &[LegBreak]) {
        self.breaks = breaks.to_vec();
    }

    /// Cue messages sent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Cues not sent (more than [`FLV_LATE`] after their instant).
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The FLV tags (each with its previous-tag-size) due at clock time
    /// `now`, stamped `flv_ms`, the FLV time of the tag they go before.
    pub fn due(&mut self, now: u64, flv_ms: u32) -> Vec<Vec<u8>> {
        let mut tags = Vec::new();
        for b in &self.breaks {
            let end = b.start_ns + b.duration.as_nanos() as u64;
            for (at, out) in [(b.start_ns, true), (end, false)] {
                if now < at || !self.done.insert((b.splice_event_id, out)) {
                    continue;
                }
                if now - at > FLV_LATE.as_nanos() as u64 {
                    self.missed += 1;
                    continue;
                }
                tags.push(on_cue_point(b, out, flv_ms));
                self.sent += 1;
            }
        }
        tags
    }
}

/// The FLV script tag of one `onCuePoint` (see [`FlvCues`]).
fn on_cue_point(b: &LegBreak, out: bool, flv_ms: u32) -> Vec<u8> {
    let string = |body: &mut Vec<u8>, s: &str| {
        body.push(0x02);
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    };
    let key = |body: &mut Vec<u8>, k: &str| {
        body.extend_from_slice(&(k.len() as u16).to_be_bytes());
        body.extend_from_slice(k.as_bytes());
    };
    let number = |body: &mut Vec<u8>, n: f64| {
        body.push(0x00);
        body.extend_from_slice(&n.to_be_bytes());
    };
    let pts = u64::from(flv_ms) * 90;
    let duration = out.then(|| mux::ticks_90k(b.duration.as_nanos() as u64));
    let section =
        SpliceInsert { event_id: b.splice_event_id, out_of_network: out, pts, duration, program_id: 1 }.section();
    let mut body = Vec::new();
    string(&mut body, "onCuePoint");
    body.push(0x03);
    key(&mut body, "name");
    string(&mut body, "scte35");
    key(&mut body, "type");
    string(&mut body, "scte35");
    key(&mut body, "time");
    number(&mut body, f64::from(flv_ms) / 1000.0);
    key(&mut body, "id");
    string(&mut body, &b.splice_event_id.to_string());
    if out {
        key(&mut body, "duration");
        number(&mut body, b.duration.as_secs_f64());
    }
    key(&mut body, "cue");
    string(&mut body, &base64(&section));
    body.extend_from_slice(&[0, 0, 0x09]);
    let mut tag = vec![18];
    tag.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    tag.extend_from_slice(&flv_ms.to_be_bytes()[1..]);
    tag.push((flv_ms >> 24) as u8);
    tag.extend_from_slice(&[0, 0, 0]);
    tag.extend_from_slice(&body);
    let size = tag.len() as u32;
    tag.extend_from_slice(&size.to_be_bytes());
    tag
}

/// The FLV time (ms) of a tag flvmux pushes, if `tag` is one (audio,
/// video or script data; the file header is not).
pub fn flv_time(tag: &[u8]) -> Option<u32> {
    if tag.len() < 11 || ![8, 9, 18].contains(&tag[0]) {
        return None;
    }
    Some(u32::from_be_bytes([tag[7], tag[4], tag[5], tag[6]]))
}

/// Standard base64 with padding (RFC 4648).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::es::VideoCodec;
    use crate::media::mux::{Layout, Mux, Slot, Timing};
    use crate::media::scte35::{self, Sections};

    const MS: u64 = 1_000_000;

    /// Ten seconds of 25 fps pictures through the passthrough multiplexer,
    /// one batch per picture, stamped with the clock time it is sent (the
    /// picture's PTS runs `lead` ahead of it, as the relay's do); each
    /// batch through `cues`. Returns every packet out, with the clock time
    /// of its batch.
    fn run(cues: &mut CueInserter, lead: u64) -> Vec<(u64, [u8; ts::PACKET])> {
        gst::init().unwrap();
        let mut mux = Mux::new();
        mux.set_layout(Layout { video: Some(VideoCodec::H264), ..Layout::default() });
        let mut got = Vec::new();
        for i in 0..250u64 {
            let now = 1_000 * MS + i * 40 * MS;
            let mut data = Vec::new();
            let t = Timing { pts: now + lead, dts: now + lead, keyframe: i % 25 == 0 };
            mux.write_au(Slot::Video, t, &[0, 0, 1, 0x65, i as u8], now, &mut data);
            let mut list = gst::BufferList::new();
            list.get_mut().unwrap().add(gst::Buffer::from_mut_slice(data));
            let out = cues.apply(list.get_mut().unwrap(), now).unwrap_or(list);
            for b in out.iter() {
                let m = b.map_readable().unwrap();
                got.extend(m.chunks_exact(ts::PACKET).map(|p| (now, <[u8; ts::PACKET]>::try_from(p).unwrap())));
            }
        }
        got
    }

    #[test]
    fn a_break_is_announced_twice_on_the_legs_own_pid_naming_the_picture_at_its_instant() {
        let lead = 200 * MS;
        let mut cues = CueInserter::new();
        let start = 8_000 * MS;
        cues.set(&[LegBreak { splice_event_id: 7, start_ns: start, duration: Duration::from_secs(1) }]);
        let got = run(&mut cues, lead);

        // Every PMT lists the cue PID and CUEI, one version on.
        let pmts: Vec<&[u8]> = got.iter().filter(|(_, p)| ts::pid(p) == mux::PMT_PID).map(|(_, p)| &p[..]).collect();
        assert!(!pmts.is_empty());
        for p in &pmts {
            let s = ts::section(p).expect("a whole PMT");
            let entries = tracks::pmt_entries(s).expect("a good CRC");
            assert!(entries.iter().any(|e| e.pid == LEG_CUE_PID && e.stream_type == 0x86), "{entries:?}");
            assert!(s.windows(6).any(|w| w == b"\x05\x04CUEI"));
            assert_eq!((s[5] >> 1) & 0x1f, 1, "the programme's version is 0");
        }

        // The cues: out twice (5 s and 4 s ahead), then in twice.
        let mut sections = Sections::default();
        let mut cues_got = Vec::new();
        for (now, p) in got.iter().filter(|(_, p)| ts::pid(p) == LEG_CUE_PID) {
            for s in sections.push(p) {
                cues_got.push((*now, s));
            }
        }
        let sent_at: Vec<u64> = cues_got.iter().map(|(t, _)| *t / MS).collect();
        assert_eq!(sent_at, [3_000, 4_000, 4_000, 5_000]);
        assert_eq!(cues.sent(), 4);
        // The picture sent at the break's instant, and at its end.
        let picture_at = |t: u64| {
            got.iter()
                .filter(|(now, p)| *now == t && ts::pid(p) == mux::VIDEO_PID)
                .find_map(|(_, p)| ts::pes_start(p)?.pts)
        };
        let (out_pts, in_pts) = (picture_at(start).unwrap(), picture_at(start + 1_000 * MS).unwrap());
        for (i, (_, s)) in cues_got.iter().enumerate() {
            assert!(scte35::is_splice_info(s));
            assert_eq!(scte35::command_type(s), Some(scte35::SPLICE_INSERT));
            assert_eq!(u32::from_be_bytes([s[14], s[15], s[16], s[17]]), 7, "splice_event_id");
            let out = s[19] & 0x80 != 0;
            let pts = (u64::from(s[20] & 1) << 32) | u64::from(u32::from_be_bytes([s[21], s[22], s[23], s[24]]));
            if i < 2 {
                assert!(out && s[19] & 0x20 != 0, "out, with a duration");
                assert_eq!(pts, out_pts);
                let d = (u64::from(s[25] & 1) << 32) | u64::from(u32::from_be_bytes([s[26], s[27], s[28], s[29]]));
                assert_eq!(d, 90_000);
            } else {
                assert!(!out);
                assert_eq!(pts, in_pts);
            }
        }
        // Counters of the cue PID run on.
        let ccs: Vec<u8> = got.iter().filter(|(_, p)| ts::pid(p) == LEG_CUE_PID).map(|(_, p)| p[3] & 0x0f).collect();
        assert_eq!(ccs, [0, 1, 2, 3]);
    }

    #[test]
    fn an_rtmp_leg_gets_an_on_cue_point_at_each_instant_once() {
        let mut cues = FlvCues::default();
        let b = LegBreak { splice_event_id: 9, start_ns: 5_000 * MS, duration: Duration::from_secs(2) };
        cues.set(&[b]);
        assert!(cues.due(4_999 * MS, 3_999).is_empty(), "nothing before the break");
        let tags = cues.due(5_010 * MS, 4_010);
        assert_eq!(tags.len(), 1);
        assert!(cues.due(5_050 * MS, 4_050).is_empty(), "sent once");
        let tag = &tags[0];
        assert_eq!((tag[0], flv_time(tag)), (18, Some(4_010)));
        let size = usize::from(tag[1]) << 16 | usize::from(tag[2]) << 8 | usize::from(tag[3]);
        assert_eq!(tag.len(), 11 + size + 4);
        assert_eq!(u32::from_be_bytes(tag[tag.len() - 4..].try_into().unwrap()) as usize, 11 + size);
        let body = &tag[11..11 + size];
        assert!(body.starts_with(b"\x02\x00\x0aonCuePoint\x03"));
        let text = String::from_utf8_lossy(body);
        for k in ["name", "scte35", "time", "id", "duration", "cue"] {
            assert!(text.contains(k), "{k} in {text:?}");
        }
        // The cue is the splice_insert, base64; its splice time the tag's.
        let at = body.windows(5).position(|w| w == b"\x00\x03cue").unwrap() + 5;
        assert_eq!(body[at], 0x02, "a string");
        let n = usize::from(u16::from_be_bytes([body[at + 1], body[at + 2]]));
        let encoded = std::str::from_utf8(&body[at + 3..at + 3 + n]).unwrap();
        let out =
            SpliceInsert { event_id: 9, out_of_network: true, pts: 4_010 * 90, duration: Some(180_000), program_id: 1 };
        assert_eq!(encoded, base64(&out.section()));
        // The end, then a break whose start passed long ago (a reconnect).
        assert_eq!(cues.due(7_020 * MS, 6_020).len(), 1);
        cues.set(&[b, LegBreak { splice_event_id: 10, start_ns: 1_000 * MS, duration: Duration::from_secs(1) }]);
        assert!(cues.due(7_100 * MS, 6_100).is_empty());
        assert_eq!((cues.sent(), cues.missed()), (2, 2));
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
    }

    #[test]
    fn a_break_between_two_pictures_names_the_nearer_one() {
        let lead = 200 * MS;
        let mut cues = CueInserter::new();
        // 15 ms after the picture sent at 8 s, 25 ms before the next.
        cues.set(&[LegBreak { splice_event_id: 3, start_ns: 8_015 * MS, duration: Duration::from_millis(1_030) }]);
        let got = run(&mut cues, lead);
        let mut sections = Sections::default();
        let named: Vec<u64> = got
            .iter()
            .filter(|(_, p)| ts::pid(p) == LEG_CUE_PID)
            .flat_map(|(_, p)| sections.push(p))
            .map(|s| (u64::from(s[20] & 1) << 32) | u64::from(u32::from_be_bytes([s[21], s[22], s[23], s[24]])))
            .collect();
        let picture_at = |t: u64| {
            got.iter()
                .filter(|(now, p)| *now == t && ts::pid(p) == mux::VIDEO_PID)
                .find_map(|(_, p)| ts::pes_start(p)?.pts)
        };
        // Out names the 8 s picture; in, the break's length after it (as
        // its break_duration says), wherever that falls.
        assert_eq!(named.len(), 4);
        assert_eq!(named[0], picture_at(8_000 * MS).unwrap());
        assert_eq!(named[2], named[0] + 92_700, "{named:?}");
    }

    #[test]
    fn a_break_without_a_picture_to_time_it_by_is_missed_and_counted() {
        gst::init().unwrap();
        let mut cues = CueInserter::new();
        cues.set(&[LegBreak { splice_event_id: 1, start_ns: 6_000 * MS, duration: Duration::from_secs(1) }]);
        let list = gst::BufferList::new();
        for t in [1_000, 2_000, 6_500, 7_500] {
            assert!(cues.apply(&list, t * MS).is_none(), "nothing to add without a picture");
        }
        assert_eq!((cues.sent(), cues.missed()), (0, 2));
    }
}
