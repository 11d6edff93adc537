//! MPEG-TS framing facts the relay relies on.

/// Size of one transport stream packet.
pub const PACKET: usize = 188;
/// Seven packets: the usual payload of one UDP datagram or SRT message.
pub const CHUNK: usize = 7 * PACKET;
/// Sync byte at the start of every packet.
pub const SYNC: u8 = 0x47;

/// Whether `data` is a whole number of TS packets, each starting with the
/// sync byte. Anything else on the contribution port is refused as garbage.
pub fn is_aligned_ts(data: &[u8]) -> bool {
    !data.is_empty() && data.len().is_multiple_of(PACKET) && data.chunks_exact(PACKET).all(|p| p[0] == SYNC)
}

/// A PES that starts in one TS packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PesStart {
    /// The packet's PID.
    pub pid: u16,
    /// The PES stream id (0xE0.. video, 0xC0.. audio).
    pub stream_id: u8,
    /// The PES presentation timestamp (90 kHz, 33 bits), if present.
    pub pts: Option<u64>,
    /// The decoding timestamp: the PES's own, or its PTS when it has none.
    pub dts: Option<u64>,
    /// Video whose first packet carries an SPS or an IDR slice (H.264): a
    /// picture a decoder can start from.
    pub keyframe: bool,
}

impl PesStart {
    /// Whether this is a video PES.
    pub fn is_video(&self) -> bool {
        (0xE0..=0xEF).contains(&self.stream_id)
    }
}

/// The PES that starts in `packet` (188 bytes), if one does.
pub fn pes_start(packet: &[u8]) -> Option<PesStart> {
    if packet.len() != PACKET || packet[0] != SYNC || packet[1] & 0x40 == 0 {
        return None;
    }
    let pid = pid(packet);
    let mut at = 4;
    if packet[3] & 0x20 != 0 {
        at += 1 + usize::from(packet[4]);
    }
    if packet[3] & 0x10 == 0 || at + 9 > PACKET {
        return None;
    }
    let p = &packet[at..];
    if p[0] != 0 || p[1] != 0 || p[2] != 1 {
        return None;
    }
    let stream_id = p[3];
    let stamp = |b: &[u8]| {
        (u64::from(b[0] & 0x0e) << 29)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] & 0xfe) << 14)
            | (u64::from(b[3]) << 7)
            | (u64::from(b[4]) >> 1)
    };
    let pts = (p[7] & 0x80 != 0 && p.len() >= 14).then(|| stamp(&p[9..14]));
    let dts = if p[7] & 0xc0 == 0xc0 && p.len() >= 19 { Some(stamp(&p[14..19])) } else { pts };
    let es = p.get(9 + usize::from(p[8])..).unwrap_or(&[]);
    let keyframe = (0xE0..=0xEF).contains(&stream_id)
        && es.windows(4).any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && matches!(w[3] & 0x1f, 5 | 7));
    Some(PesStart { pid, stream_id, pts, dts, keyframe })
}

/// Whether a decoder can start at `packet`: it starts a video PES that is
/// a keyframe, by its adaptation field's random_access_indicator (any
/// codec) or by its first NAL units (H.264, [`PesStart::keyframe`]).
pub fn starts_random_access(packet: &[u8]) -> bool {
    let Some(start) = pes_start(packet).filter(PesStart::is_video) else { return false };
    let indicator = packet[3] & 0x20 != 0 && packet[4] > 0 && packet[5] & 0x40 != 0;
    start.keyframe || indicator
}

/// Every PES start in `data` (whole packets), in order.
pub fn pes_starts(data: &[u8]) -> impl Iterator<Item = PesStart> + '_ {
    data.chunks_exact(PACKET).filter_map(pes_start)
}

/// PID of the Program Association Table.
pub const PAT_PID: u16 = 0x0000;
/// PID of the Service Description Table (DVB, ETSI EN 300 468).
pub const SDT_PID: u16 = 0x0011;

/// A packet's PID.
pub fn pid(packet: &[u8]) -> u16 {
    (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2])
}

/// CRC-32/MPEG-2, the checksum closing every PSI/SI section.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

/// What a PAT says: the transport stream id and its first programme's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pat {
    /// `transport_stream_id`.
    pub transport_stream_id: u16,
    /// The first programme number that is not the network PID entry (0).
    pub program_number: u16,
}

/// The PAT that starts in `packet`, if it is a whole, well-formed section
/// with a correct CRC (the muxer writes the PAT in one packet).
pub fn pat(packet: &[u8]) -> Option<Pat> {
    if packet.len() != PACKET || packet[0] != SYNC || packet[1] & 0x40 == 0 || pid(packet) != PAT_PID {
        return None;
    }
    let mut at = 4;
    if packet[3] & 0x20 != 0 {
        at += 1 + usize::from(packet[4]);
    }
    if packet[3] & 0x10 == 0 || at >= PACKET {
        return None;
    }
    at += 1 + usize::from(packet[at]);
    let section = packet.get(at..)?;
    if section.len() < 12 || section[0] != 0x00 {
        return None;
    }
    let length = usize::from(section[1] & 0x0f) << 8 | usize::from(section[2]);
    let section = section.get(..3 + length)?;
    if length < 9 || crc32_mpeg2(section) != 0 {
        return None;
    }
    let transport_stream_id = u16::from_be_bytes([section[3], section[4]]);
    section[8..section.len() - 4]
        .chunks_exact(4)
        .map(|e| u16::from_be_bytes([e[0], e[1]]))
        .find(|&n| n != 0)
        .map(|program_number| Pat { transport_stream_id, program_number })
}

/// The whole PSI section that starts in `packet` (after its pointer
/// field), if it fits the packet: from table_id to CRC.
pub fn section(packet: &[u8]) -> Option<&[u8]> {
    if packet.len() != PACKET || packet[0] != SYNC || packet[1] & 0x40 == 0 || packet[3] & 0x10 == 0 {
        return None;
    }
    let mut at = 4;
    if packet[3] & 0x20 != 0 {
        at += 1 + usize::from(packet[4]);
    }
    at += 1 + usize::from(*packet.get(at)?);
    let s = packet.get(at..)?;
    let length = usize::from(u16::from_be_bytes([*s.get(1)?, *s.get(2)?]) & 0x0fff);
    s.get(..3 + length)
}

/// Sets the section_length of `s` (a PSI section from its table_id,
/// without its CRC yet; its flag bits kept).
pub fn set_section_length(s: &mut [u8]) {
    let length = (s.len() - 3 + 4) as u16;
    let flags = u16::from(s[1]) << 8 & 0xf000;
    s[1..3].copy_from_slice(&(flags | length).to_be_bytes());
}

/// Sets the section_length of `s` (as [`set_section_length`]) and appends
/// its CRC.
pub fn seal_section(s: &mut Vec<u8>) {
    set_section_length(s);
    let crc = crc32_mpeg2(s);
    s.extend_from_slice(&crc.to_be_bytes());
}

/// One leg's rewrite of a one-packet PSI section (its PMT), kept for the
/// next packet carrying the same section.
#[derive(Debug, Default)]
pub struct SectionRewrite {
    /// The section last seen, and what replaces it.
    last: Option<(Vec<u8>, Vec<u8>)>,
}

impl SectionRewrite {
    /// `p` carrying `rewrite(section)` (a whole section, CRC included)
    /// instead of its own, in `p`'s header (sync, PUSI, PID, counter):
    /// payload only, the pointer field, the section, stuffing. `p` as it
    /// is if it holds no whole section, `rewrite` declines, or the result
    /// does not fit one packet. `rewrite` runs only for a section not seen
    /// just before.
    pub fn packet(&mut self, p: &[u8], rewrite: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> [u8; PACKET] {
        let mut out = [0xffu8; PACKET];
        out.copy_from_slice(p);
        let Some(section) = section(p) else { return out };
        if self.last.as_ref().is_none_or(|(s, _)| s.as_slice() != section) {
            match rewrite(section) {
                Some(new) if new.len() <= PACKET - 5 => self.last = Some((section.to_vec(), new)),
                _ => return out,
            }
        }
        let Some((_, rewritten)) = &self.last else { return out };
        out[3] = (p[3] & 0x0f) | 0x10;
        out[4] = 0;
        out[5..5 + rewritten.len()].copy_from_slice(rewritten);
        out[5 + rewritten.len()..].fill(0xff);
        out
    }
}

/// DVB strings are ISO/IEC 6937 unless their first byte says otherwise;
/// 0x15 says UTF-8. ASCII is the same in both, so only other text is marked.
fn dvb_text(text: &str, max: usize) -> Vec<u8> {
    let (mut out, budget) = if text.is_ascii() { (Vec::new(), max) } else { (vec![0x15], max - 1) };
    let mut end = text.len().min(budget);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&text.as_bytes()[..end]);
    out
}

/// The longest service name an SDT packet from [`sdt_packet`] carries with
/// `provider`: the section must fit one packet.
fn service_budget(provider: &[u8]) -> usize {
    // 184 payload bytes - pointer field (1) - section header (3) - fixed
    // fields (8) - service entry (5) - descriptor header (2) - type (1) -
    // two lengths (2) - CRC (4) = 158 for both names.
    158usize.saturating_sub(provider.len())
}

/// One TS packet carrying a whole SDT (actual transport stream, version 0)
/// that names programme `pat.program_number` as a digital TV service called
/// `service` from `provider`. `cc` is the packet's continuity counter. Names
/// that do not fit are cut at a character boundary.
pub fn sdt_packet(pat: Pat, provider: &str, service: &str, cc: u8) -> [u8; PACKET] {
    let provider = dvb_text(provider, 64);
    let service = dvb_text(service, service_budget(&provider));
    let descriptor_len = 3 + provider.len() + service.len();
    let mut s = Vec::with_capacity(183);
    s.push(0x42); // table_id: service_description_section, actual TS
    s.extend_from_slice(&[0, 0]); // section_length, below
    s.extend_from_slice(&pat.transport_stream_id.to_be_bytes());
    s.push(0xc1); // reserved, version 0, current_next_indicator
    s.extend_from_slice(&[0, 0]); // section_number, last_section_number
    s.extend_from_slice(&0xff01u16.to_be_bytes()); // original_network_id (private range)
    s.push(0xff); // reserved_future_use
    s.extend_from_slice(&pat.program_number.to_be_bytes()); // service_id
    s.push(0xfc); // reserved, no EIT schedule, no EIT present/following
    let loop_len = (2 + descriptor_len) as u16;
    s.extend_from_slice(&((4u16 << 13) | loop_len).to_be_bytes()); // running, not scrambled
    s.extend_from_slice(&[0x48, descriptor_len as u8, 0x01]); // service_descriptor, digital TV
    s.push(provider.len() as u8);
    s.extend_from_slice(&provider);
    s.push(service.len() as u8);
    s.extend_from_slice(&service);
    let length = (s.len() - 3 + 4) as u16;
    s[1..3].copy_from_slice(&(0xf000 | length).to_be_bytes());
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());

    let mut packet = [0xffu8; PACKET];
    packet[..5].copy_from_slice(&[SYNC, 0x40 | (SDT_PID >> 8) as u8, SDT_PID as u8, 0x10 | (cc & 0x0f), 0x00]);
    packet[5..5 + s.len()].copy_from_slice(&s);
    packet
}

/// A PAT as mpegtsmux writes it: tsid 1, programme 1 on PID 0x20.
#[cfg(test)]
pub(crate) fn pat_packet() -> [u8; PACKET] {
    let mut section = vec![0x00, 0xb0, 13, 0x00, 0x01, 0xc1, 0, 0, 0x00, 0x01, 0xe0, 0x20];
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    let mut p = [0xffu8; PACKET];
    p[..5].copy_from_slice(&[SYNC, 0x40, 0x00, 0x10, 0x00]);
    p[5..5 + section.len()].copy_from_slice(&section);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_video_keyframe_pes_and_its_pts() {
        let mut p = vec![0xffu8; PACKET];
        p[..4].copy_from_slice(&[SYNC, 0x40 | 0x01, 0x00, 0x10]);
        // PES: video, PTS only (flags 0x80, header length 5), PTS = 900_000.
        let pts: u64 = 900_000;
        let hdr = [
            0,
            0,
            1,
            0xE0,
            0,
            0,
            0x80,
            0x80,
            5,
            (0x21 | ((pts >> 29) & 0x0e)) as u8,
            (pts >> 22) as u8,
            (((pts >> 14) & 0xfe) | 1) as u8,
            (pts >> 7) as u8,
            (((pts << 1) & 0xfe) | 1) as u8,
        ];
        p[4..4 + hdr.len()].copy_from_slice(&hdr);
        let es = [0u8, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67];
        p[4 + hdr.len()..4 + hdr.len() + es.len()].copy_from_slice(&es);
        let s = pes_start(&p).expect("a PES start");
        assert_eq!((s.pid, s.stream_id, s.pts, s.keyframe), (0x100, 0xE0, Some(pts), true));
        // A delta slice (type 1) is not a keyframe; no PUSI, no start.
        p[4 + hdr.len() + 10] = 0x41;
        assert!(!pes_start(&p).unwrap().keyframe);
        p[1] &= !0x40;
        assert!(pes_start(&p).is_none());
    }

    #[test]
    fn recognises_ts_and_refuses_garbage() {
        let mut ok = vec![0u8; CHUNK];
        for p in ok.chunks_exact_mut(PACKET) {
            p[0] = SYNC;
        }
        assert!(is_aligned_ts(&ok));
        assert!(!is_aligned_ts(&ok[..CHUNK - 1]));
        ok[PACKET * 3] = 0x00;
        assert!(!is_aligned_ts(&ok));
        assert!(!is_aligned_ts(b""));
        assert!(!is_aligned_ts(&[0x47; 100]));
    }

    #[test]
    fn crc32_matches_the_mpeg2_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn reads_the_pat_and_refuses_a_damaged_one() {
        let p = pat_packet();
        assert_eq!(pat(&p), Some(Pat { transport_stream_id: 1, program_number: 1 }));
        let mut bad = p;
        bad[12] ^= 0x01;
        assert_eq!(pat(&bad), None, "a wrong CRC is not a PAT");
        let mut other = p;
        other[2] = 0x20;
        assert_eq!(pat(&other), None, "not PID 0");
    }

    #[test]
    fn an_sdt_packet_is_one_well_formed_section_naming_the_service() {
        let at = Pat { transport_stream_id: 7, program_number: 3 };
        let p = sdt_packet(at, "simulcast", "Jibek Joly (kz-jibek-joly)", 5);
        assert_eq!((p[0], pid(&p), p[3] & 0x0f, p[4]), (SYNC, SDT_PID, 5, 0));
        let length = usize::from(p[6] & 0x0f) << 8 | usize::from(p[7]);
        let section = &p[5..5 + 3 + length];
        assert_eq!(crc32_mpeg2(section), 0, "CRC");
        assert_eq!((section[0], u16::from_be_bytes([section[3], section[4]])), (0x42, 7));
        assert_eq!(u16::from_be_bytes([section[11], section[12]]), 3, "service_id is the programme");
        let d = &section[16..];
        assert_eq!((d[0], d[2]), (0x48, 0x01));
        let provider = &d[4..4 + usize::from(d[3])];
        let at_name = 4 + provider.len();
        let name = &d[at_name + 1..at_name + 1 + usize::from(d[at_name])];
        assert_eq!((provider, name), (&b"simulcast"[..], &b"Jibek Joly (kz-jibek-joly)"[..]));
        assert!(p[5 + 3 + length..].iter().all(|&b| b == 0xff), "stuffing");
    }

    #[test]
    fn names_out_of_ascii_are_marked_utf8_and_long_ones_cut_on_a_character() {
        let at = Pat { transport_stream_id: 1, program_number: 1 };
        let p = sdt_packet(at, "simulcast", "Монгол ТВ", 0);
        let d = &p[5 + 16..];
        let at_name = 4 + usize::from(d[3]);
        let name = &d[at_name + 1..at_name + 1 + usize::from(d[at_name])];
        assert_eq!(name[0], 0x15);
        assert_eq!(std::str::from_utf8(&name[1..]).unwrap(), "Монгол ТВ");
        let long = "한".repeat(100);
        let p = sdt_packet(at, "simulcast", &long, 0);
        let length = usize::from(p[6] & 0x0f) << 8 | usize::from(p[7]);
        assert!(3 + length <= 183);
        assert_eq!(crc32_mpeg2(&p[5..5 + 3 + length]), 0);
        let d = &p[5 + 16..];
        let at_name = 4 + usize::from(d[3]);
        let name = &d[at_name + 1..at_name + 1 + usize::from(d[at_name])];
        assert!(std::str::from_utf8(&name[1..]).is_ok_and(|n| n.chars().all(|c| c == '한')));
    }
}
