//! SCTE-35 splice information as passthrough relays it.
//!
//! A contribution's cues name their splice points in the contribution's
//! own PTS. The relay re-times every access unit onto its own clock, so a
//! cue passed byte for byte would point at the wrong picture. SCTE-35
//! provides for exactly this (SCTE 35 section 9.6): a remultiplexer adds
//! its own offset to `pts_adjustment` and leaves the rest of the section,
//! splice times included, as it came. The CRC is computed again; an
//! encrypted section keeps its encrypted part (the adjustment is clear).

use super::ts;

/// The 33 bits of a PTS.
pub const PTS_MASK: u64 = (1 << 33) - 1;
/// `table_id` of a splice_info_section.
pub const TABLE_ID: u8 = 0xFC;
/// PMT `stream_type` of SCTE-35 sections.
pub const STREAM_TYPE: u8 = 0x86;
/// The longest section SCTE-35 allows (`section_length` is 12 bits, at
/// most 4093, plus the 3 bytes before it).
const MAX_SECTION: usize = 4096;

/// `splice_command_type` of a whole, checked section.
pub fn command_type(section: &[u8]) -> Option<u8> {
    section.get(13).copied()
}

/// Whether `section` is one whole splice_info_section with a good CRC.
pub fn is_splice_info(section: &[u8]) -> bool {
    section.len() >= 17
        && section[0] == TABLE_ID
        && 3 + (usize::from(u16::from_be_bytes([section[1], section[2]]) & 0x0fff)) == section.len()
        && ts::crc32_mpeg2(section) == 0
}

/// The section's `pts_adjustment`.
pub fn pts_adjustment(section: &[u8]) -> Option<u64> {
    let b = section.get(4..9)?;
    Some((u64::from(b[0] & 1) << 32) | u64::from(u32::from_be_bytes([b[1], b[2], b[3], b[4]])))
}

/// `section` with `add` (90 kHz ticks) added to its `pts_adjustment`,
/// modulo 2^33, and its CRC made good again. `None` if it is not a whole
/// splice_info_section with a good CRC.
pub fn restamp(section: &[u8], add: u64) -> Option<Vec<u8>> {
    if !is_splice_info(section) {
        return None;
    }
    let mut s = section.to_vec();
    let adjusted = (pts_adjustment(&s)? + add) & PTS_MASK;
    s[4] = (s[4] & 0xfe) | (adjusted >> 32) as u8;
    s[5..9].copy_from_slice(&(adjusted as u32).to_be_bytes());
    let n = s.len();
    let crc = ts::crc32_mpeg2(&s[..n - 4]);
    s[n - 4..].copy_from_slice(&crc.to_be_bytes());
    Some(s)
}

/// `splice_command_type` of a splice_insert.
pub const SPLICE_INSERT: u8 = 0x05;
/// `splice_command_type` of a time_signal.
pub const TIME_SIGNAL: u8 = 0x06;

/// The PTS (90 kHz, `pts_adjustment` applied, 33 bits) of the picture a
/// clear splice_insert or time_signal names. `None` for a splice with no
/// time (immediate, cancelled, per component), an encrypted section,
/// another command, or a section that is not whole.
pub fn splice_pts(section: &[u8]) -> Option<u64> {
    // encrypted_packet: the command cannot be read.
    if !is_splice_info(section) || section[4] & 0x80 != 0 {
        return None;
    }
    let time = match command_type(section)? {
        SPLICE_INSERT => {
            // splice_event_cancel_indicator; then out_of_network,
            // program_splice_flag, duration_flag, splice_immediate_flag.
            let (cancel, flags) = (*section.get(18)?, *section.get(19)?);
            if cancel & 0x80 != 0 || flags & 0x40 == 0 || flags & 0x10 != 0 {
                return None;
            }
            20
        }
        TIME_SIGNAL => 14,
        _ => return None,
    };
    // splice_time(): time_specified_flag, reserved, pts_time. The CRC's 4
    // bytes are not the command's.
    let t = section.get(time..(time + 5).min(section.len() - 4))?;
    if t.len() < 5 || t[0] & 0x80 == 0 {
        return None;
    }
    let pts = (u64::from(t[0] & 1) << 32) | u64::from(u32::from_be_bytes([t[1], t[2], t[3], t[4]]));
    Some((pts + pts_adjustment(section)?) & PTS_MASK)
}

/// One splice_insert as the relay writes it for a scheduled break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceInsert {
    /// `splice_event_id`: the break's, the same in its out and in cues.
    pub event_id: u32,
    /// Out of the network (the break starts) or back in (it ends).
    pub out_of_network: bool,
    /// The PTS (90 kHz, 33 bits) of the picture the splice lands on.
    pub pts: u64,
    /// The break's length (90 kHz ticks), on the out cue: the receiver
    /// returns by itself after it (`auto_return`).
    pub duration: Option<u64>,
    /// `unique_program_id`.
    pub program_id: u16,
}

impl SpliceInsert {
    /// The whole splice_info_section (SCTE 35 2019 9.6 and 9.7.3): a
    /// programme splice at a given time, `pts_adjustment` 0, no
    /// descriptors, its CRC.
    pub fn section(&self) -> Vec<u8> {
        let mut cmd = self.event_id.to_be_bytes().to_vec();
        // Not a cancel; reserved bits set.
        cmd.push(0x7f);
        // out_of_network, program_splice, duration, not immediate,
        // event_id_compliance, reserved.
        let duration_flag = self.duration.is_some();
        cmd.push((u8::from(self.out_of_network) << 7) | 0x40 | (u8::from(duration_flag) << 5) | 0x0f);
        // splice_time: time_specified_flag, reserved, 33-bit PTS.
        let pts = self.pts & PTS_MASK;
        cmd.push(0xfe | (pts >> 32) as u8);
        cmd.extend_from_slice(&(pts as u32).to_be_bytes());
        if let Some(d) = self.duration {
            // break_duration: auto_return, reserved, 33-bit duration.
            let d = d & PTS_MASK;
            cmd.push(0xfe | (d >> 32) as u8);
            cmd.extend_from_slice(&(d as u32).to_be_bytes());
        }
        cmd.extend_from_slice(&self.program_id.to_be_bytes());
        // avail_num, avails_expected: not used.
        cmd.extend_from_slice(&[0, 0]);
        // table_id; section_syntax 0, private 0, sap_type 3 (not
        // specified); section_length below; protocol_version 0;
        // not encrypted, pts_adjustment 0; cw_index; tier 0xfff and the
        // command's length; its type.
        let mut s = vec![TABLE_ID, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0xff];
        s.push(0xf0 | (cmd.len() >> 8) as u8);
        s.push(cmd.len() as u8);
        s.push(SPLICE_INSERT);
        s.extend_from_slice(&cmd);
        // descriptor_loop_length.
        s.extend_from_slice(&[0, 0]);
        let length = s.len() + 4 - 3;
        s[1] = 0x30 | (length >> 8) as u8;
        s[2] = length as u8;
        let crc = ts::crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }
}

/// Collects the sections of one PID from its TS packets, in order. A
/// packet lost in between spoils one section, which its CRC then refuses.
#[derive(Debug, Default)]
pub struct Sections {
    partial: Vec<u8>,
}

impl Sections {
    /// Takes one 188-byte packet of the PID; returns the sections it
    /// completes.
    pub fn push(&mut self, packet: &[u8]) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        if packet.len() != ts::PACKET || packet[3] & 0x10 == 0 {
            return done;
        }
        let mut at = 4;
        if packet[3] & 0x20 != 0 {
            at += 1 + usize::from(packet[4]);
        }
        let Some(payload) = packet.get(at..) else { return done };
        if packet[1] & 0x40 != 0 {
            let Some((&pointer, rest)) = payload.split_first() else { return done };
            let pointer = usize::from(pointer).min(rest.len());
            // The end of the section in progress, then a new one.
            if !self.partial.is_empty() {
                self.partial.extend_from_slice(&rest[..pointer]);
                self.complete(&mut done);
            }
            self.partial.clear();
            self.partial.extend_from_slice(&rest[pointer..]);
        } else if !self.partial.is_empty() {
            self.partial.extend_from_slice(payload);
        }
        self.complete(&mut done);
        done
    }

    fn complete(&mut self, done: &mut Vec<Vec<u8>>) {
        loop {
            match self.partial.first() {
                None => return,
                Some(0xFF) => {
                    // Stuffing: the rest of the packet is empty.
                    self.partial.clear();
                    return;
                }
                Some(_) => {}
            }
            if self.partial.len() < 3 {
                return;
            }
            let n = 3 + usize::from(u16::from_be_bytes([self.partial[1], self.partial[2]]) & 0x0fff);
            if self.partial.len() < n {
                if self.partial.len() > MAX_SECTION {
                    self.partial.clear();
                }
                return;
            }
            let rest = self.partial.split_off(n);
            done.push(std::mem::replace(&mut self.partial, rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A splice_insert (out of network, 30 s break) at `splice` with
    /// `pts_adjustment` `adj`, as an ad server writes it.
    fn splice_insert(splice: u64, adj: u64) -> Vec<u8> {
        let mut cmd = vec![0x00, 0x00, 0x00, 0x2a, 0x7f, 0xef];
        cmd.push(0xfe | (splice >> 32) as u8);
        cmd.extend_from_slice(&(splice as u32).to_be_bytes());
        // break_duration: auto_return, 30 s.
        let d: u64 = 30 * 90_000;
        cmd.push(0xfe | (d >> 32) as u8);
        cmd.extend_from_slice(&(d as u32).to_be_bytes());
        cmd.extend_from_slice(&[0x00, 0x01, 0x01, 0x01]);
        let mut s = vec![TABLE_ID, 0, 0, 0x00, (adj >> 32) as u8 & 1];
        s.extend_from_slice(&(adj as u32).to_be_bytes());
        s.push(0x00);
        s.extend_from_slice(&[0xff, 0xf0 | (cmd.len() >> 8) as u8, cmd.len() as u8, 0x05]);
        s.extend_from_slice(&cmd);
        s.extend_from_slice(&[0x00, 0x00]);
        let len = s.len() + 4 - 3;
        s[1] = 0x30 | (len >> 8) as u8;
        s[2] = len as u8;
        let crc = ts::crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    fn packets(pid: u16, section: &[u8], start_cc: u8) -> Vec<[u8; 188]> {
        let mut data = vec![0u8];
        data.extend_from_slice(section);
        data.chunks(184)
            .enumerate()
            .map(|(i, chunk)| {
                let mut p = [0xffu8; 188];
                p[0] = ts::SYNC;
                p[1] = (if i == 0 { 0x40 } else { 0 }) | (pid >> 8) as u8;
                p[2] = pid as u8;
                p[3] = 0x10 | ((start_cc + i as u8) & 0x0f);
                p[4..4 + chunk.len()].copy_from_slice(chunk);
                p
            })
            .collect()
    }

    #[test]
    fn restamping_moves_only_the_adjustment_and_keeps_the_crc_good() {
        let s = splice_insert(0x1_2345_6789, 0);
        assert!(is_splice_info(&s));
        assert_eq!(command_type(&s), Some(0x05));
        let moved = restamp(&s, 90_000).expect("a good section");
        assert!(is_splice_info(&moved), "the CRC is made good again");
        assert_eq!(pts_adjustment(&moved), Some(90_000));
        // Everything but the adjustment and the CRC is as it came.
        assert_eq!(moved[..4], s[..4]);
        assert_eq!(moved[9..moved.len() - 4], s[9..s.len() - 4]);
        // Modulo 2^33, across the top bit.
        let wrapped = restamp(&splice_insert(0, PTS_MASK - 10), 20).expect("good");
        assert_eq!(pts_adjustment(&wrapped), Some(9));
        let high = restamp(&s, 1 << 32).expect("good");
        assert_eq!(pts_adjustment(&high), Some(1 << 32));
        // A damaged section is refused, not repaired.
        let mut bad = s.clone();
        bad[20] ^= 1;
        assert!(restamp(&bad, 1).is_none());
        assert!(restamp(&s[..10], 1).is_none());
    }

    /// `s` with its CRC made good after an edit.
    fn crc_again(mut s: Vec<u8>) -> Vec<u8> {
        let n = s.len();
        let crc = ts::crc32_mpeg2(&s[..n - 4]);
        s[n - 4..].copy_from_slice(&crc.to_be_bytes());
        s
    }

    #[test]
    fn the_splice_point_is_read_with_its_adjustment_and_only_when_it_is_given() {
        let s = splice_insert(0x1_2345_6789, 0);
        assert_eq!(splice_pts(&s), Some(0x1_2345_6789));
        assert_eq!(splice_pts(&splice_insert(PTS_MASK - 10, 20)), Some(9), "modulo 2^33");
        let moved = restamp(&s, 90_000).expect("good");
        assert_eq!(splice_pts(&moved), Some(0x1_2345_6789 + 90_000));
        // splice_immediate_flag: no time to read.
        let mut immediate = s.clone();
        immediate[19] |= 0x10;
        assert_eq!(splice_pts(&crc_again(immediate)), None);
        // A cancel.
        let mut cancel = s.clone();
        cancel[18] |= 0x80;
        assert_eq!(splice_pts(&crc_again(cancel)), None);
        // Encrypted: the command is not clear.
        let mut encrypted = s.clone();
        encrypted[4] |= 0x80;
        assert_eq!(splice_pts(&crc_again(encrypted)), None);
        // A damaged section.
        let mut bad = s.clone();
        bad[21] ^= 1;
        assert_eq!(splice_pts(&bad), None);
        // A time_signal with its time; one without.
        let signal = |time: &[u8]| {
            let mut t = vec![TABLE_ID, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xf0, time.len() as u8, TIME_SIGNAL];
            t.extend_from_slice(time);
            t.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            let len = t.len() - 3;
            (t[1], t[2]) = (0x30 | (len >> 8) as u8, len as u8);
            crc_again(t)
        };
        assert_eq!(splice_pts(&signal(&[0xff, 0x00, 0x00, 0x01, 0x00])), Some((1 << 32) | 0x100));
        assert_eq!(splice_pts(&signal(&[0x7e])), None);
    }

    #[test]
    fn a_splice_insert_is_written_as_an_ad_server_writes_it() {
        let out = SpliceInsert {
            event_id: 42,
            out_of_network: true,
            pts: 0x1_2345_6789,
            duration: Some(30 * 90_000),
            program_id: 1,
        };
        let s = out.section();
        assert!(is_splice_info(&s));
        assert_eq!(command_type(&s), Some(SPLICE_INSERT));
        let by_hand = splice_insert(0x1_2345_6789, 0);
        // The same bits, but for avail_num and avails_expected (the hand
        // one says 1 of 1, the relay 0 of 0) and so the CRC.
        let n = s.len();
        assert_eq!(n, by_hand.len());
        assert_eq!(s[..n - 8], by_hand[..n - 8]);
        assert_eq!(s[n - 8..n - 6], [0, 0]);
        // Back in: no duration, the out flag clear.
        let back = SpliceInsert { out_of_network: false, duration: None, ..out }.section();
        assert!(is_splice_info(&back));
        assert_eq!(back.len(), n - 5);
        assert_eq!(back[19] & 0xe0, 0x40, "in, programme splice, no duration");
    }

    #[test]
    fn sections_are_collected_across_packets_and_a_lost_packet_spoils_one() {
        let one = splice_insert(900_000, 0);
        // A long section (a big descriptor loop) over three packets.
        let mut long = splice_insert(1_800_000, 0);
        let n = long.len();
        long.truncate(n - 4);
        let extra = 400;
        long.extend(std::iter::repeat_n(0u8, extra));
        let len = long.len() + 4 - 3;
        long[1] = 0x30 | (len >> 8) as u8;
        long[2] = len as u8;
        let crc = ts::crc32_mpeg2(&long);
        long.extend_from_slice(&crc.to_be_bytes());
        let mut c = Sections::default();
        let mut got = Vec::new();
        for p in packets(0x1f0, &one, 0).iter().chain(&packets(0x1f0, &long, 1)) {
            got.extend(c.push(p));
        }
        assert_eq!(got, vec![one.clone(), long.clone()]);
        // The middle packet of the long one lost: nothing whole comes of it,
        // and the next section is whole again.
        let ps = packets(0x1f0, &long, 4);
        let mut got = Vec::new();
        for p in [&ps[0], &ps[2]] {
            got.extend(c.push(p));
        }
        got.extend(c.push(&packets(0x1f0, &one, 7)[0]));
        assert!(got.iter().all(|s| s == &one || !is_splice_info(s)), "{got:?}");
        assert!(got.contains(&one));
    }
}
