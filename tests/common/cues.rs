//! A SCTE-35 reader written for the tests (SCTE 35 2019, 9.6 and 9.7.3),
//! independent of the relay's writer: what a partner's ad inserter would
//! find in a capture.

use std::time::Instant;

const PACKET: usize = 188;
const MASK: u64 = (1 << 33) - 1;

/// One splice_insert as read from a capture, `pts_adjustment` applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpliceInsert {
    pub event_id: u32,
    pub cancel: bool,
    pub out_of_network: bool,
    /// The splice time's PTS (90 kHz), if it has one.
    pub pts: Option<u64>,
    /// (auto_return, duration in 90 kHz ticks), if it has a break duration.
    pub duration: Option<(bool, u64)>,
}

/// The MPEG-2 CRC-32 (polynomial 0x04C11DB7, no reflection).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

fn stamp33(b: &[u8]) -> u64 {
    (u64::from(b[0] & 1) << 32) | u64::from(u32::from_be_bytes([b[1], b[2], b[3], b[4]]))
}

/// Reads a whole splice_info_section; `None` unless it is a splice_insert
/// with a good CRC. Panics on a malformed one (a test failure).
pub fn read(s: &[u8]) -> Option<SpliceInsert> {
    if s.len() < 17 || s[0] != 0xfc || crc32(s) != 0 {
        return None;
    }
    let length = 3 + usize::from(u16::from_be_bytes([s[1], s[2]]) & 0x0fff);
    assert_eq!(length, s.len(), "section_length");
    assert_eq!(s[4] & 0x80, 0, "not encrypted");
    let adjustment = stamp33(&s[4..9]);
    if s[13] != 0x05 {
        return None;
    }
    let c = &s[14..];
    let event_id = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    let cancel = c[4] & 0x80 != 0;
    let mut insert = SpliceInsert { event_id, cancel, out_of_network: false, pts: None, duration: None };
    if cancel {
        return Some(insert);
    }
    let flags = c[5];
    insert.out_of_network = flags & 0x80 != 0;
    let (program, with_duration, immediate) = (flags & 0x40 != 0, flags & 0x20 != 0, flags & 0x10 != 0);
    assert!(program, "component splices are not what the relay writes");
    let mut at = 6;
    if !immediate {
        if c[at] & 0x80 != 0 {
            insert.pts = Some((stamp33(&c[at..at + 5]) + adjustment) & MASK);
            at += 5;
        } else {
            at += 1;
        }
    }
    if with_duration {
        insert.duration = Some((c[at] & 0x80 != 0, stamp33(&c[at..at + 5])));
    }
    Some(insert)
}

/// The PSI section that starts in a TS packet (after its pointer field).
fn section(p: &[u8]) -> Option<&[u8]> {
    if p[1] & 0x40 == 0 || p[3] & 0x10 == 0 {
        return None;
    }
    let mut at = 4;
    if p[3] & 0x20 != 0 {
        at += 1 + usize::from(p[4]);
    }
    at += 1 + usize::from(*p.get(at)?);
    let s = p.get(at..)?;
    let n = 3 + usize::from(u16::from_be_bytes([*s.get(1)?, *s.get(2)?]) & 0x0fff);
    s.get(..n)
}

fn pid(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[1], p[2]]) & 0x1fff
}

/// Every whole PMT section (good CRC) in a capture, in order, found
/// through the PAT.
fn pmts(data: &[u8]) -> Vec<&[u8]> {
    let mut pmt_pid = None;
    let mut found = Vec::new();
    for p in data.chunks_exact(PACKET) {
        if pid(p) == 0 {
            if let Some(s) = section(p) {
                pmt_pid = s[8..s.len() - 4]
                    .chunks_exact(4)
                    .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
                    .map(|e| u16::from_be_bytes([e[2], e[3]]) & 0x1fff);
            }
        } else if Some(pid(p)) == pmt_pid
            && let Some(s) = section(p)
            && crc32(s) == 0
        {
            found.push(s);
        }
    }
    found
}

/// (stream_type, PID) of every stream a PMT section lists.
fn streams(s: &[u8]) -> Vec<(u8, u16)> {
    let info = usize::from(u16::from_be_bytes([s[10], s[11]]) & 0x0fff);
    let mut found = Vec::new();
    let mut at = 12 + info;
    while at + 5 <= s.len() - 4 {
        found.push((s[at], u16::from_be_bytes([s[at + 1], s[at + 2]]) & 0x1fff));
        at += 5 + usize::from(u16::from_be_bytes([s[at + 3], s[at + 4]]) & 0x0fff);
    }
    found
}

/// What the PMTs of a capture list: (PIDs of stream type 0x86, whether
/// the programme loop has the registration descriptor `CUEI`), from the
/// last PMT seen.
pub fn cue_pids(data: &[u8]) -> (Vec<u16>, bool) {
    let Some(s) = pmts(data).pop() else { return (Vec::new(), false) };
    let info = usize::from(u16::from_be_bytes([s[10], s[11]]) & 0x0fff);
    let cuei = s[12..12 + info].windows(6).any(|w| w == b"\x05\x04CUEI");
    (streams(s).into_iter().filter(|(t, _)| *t == 0x86).map(|(_, p)| p).collect(), cuei)
}

/// Every splice_insert on `cue_pid` in a timed capture, with the arrival
/// of its packet (the relay's cues fit one packet each).
pub fn splice_inserts(timed: &[(Instant, Vec<u8>)], cue_pid: u16) -> Vec<(Instant, SpliceInsert)> {
    let mut got = Vec::new();
    for (at, d) in timed {
        for p in d.chunks_exact(PACKET).filter(|p| pid(p) == cue_pid) {
            if let Some(i) = section(p).and_then(read) {
                got.push((*at, i));
            }
        }
    }
    got
}

/// (arrival, PTS) of every video PES start on `video_pid`.
pub fn pictures_sent(timed: &[(Instant, Vec<u8>)], video_pid: u16) -> Vec<(Instant, u64)> {
    let mut got = Vec::new();
    for (at, d) in timed {
        for p in d.chunks_exact(PACKET).filter(|p| pid(p) == video_pid && p[1] & 0x40 != 0) {
            let mut i = 4;
            if p[3] & 0x20 != 0 {
                i += 1 + usize::from(p[4]);
            }
            let pes = &p[i..];
            if pes.len() >= 14 && pes[..3] == [0, 0, 1] && pes[7] & 0x80 != 0 {
                let b = &pes[9..14];
                let pts = (u64::from(b[0] & 0x0e) << 29)
                    | (u64::from(b[1]) << 22)
                    | (u64::from(b[2] & 0xfe) << 14)
                    | (u64::from(b[3]) << 7)
                    | (u64::from(b[4]) >> 1);
                got.push((*at, pts));
            }
        }
    }
    got
}

/// The PID of the first video stream (H.264, HEVC, MPEG-2) the capture's
/// first PMT lists.
pub fn video_pid(data: &[u8]) -> Option<u16> {
    let first = *pmts(data).first()?;
    streams(first).into_iter().find(|(t, _)| [0x1b, 0x24, 0x02].contains(t)).map(|(_, p)| p)
}

/// Standard base64 (RFC 4648) decoded; `None` on a character outside it.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | u32::from(value(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
