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
    let pid = (u16::from(packet[1] & 0x1f) << 8) | u16::from(packet[2]);
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
    let pts = (p[7] & 0x80 != 0 && p.len() >= 14).then(|| {
        (u64::from(p[9] & 0x0e) << 29)
            | (u64::from(p[10]) << 22)
            | (u64::from(p[11] & 0xfe) << 14)
            | (u64::from(p[12]) << 7)
            | (u64::from(p[13]) >> 1)
    });
    let es = p.get(9 + usize::from(p[8])..).unwrap_or(&[]);
    let keyframe = (0xE0..=0xEF).contains(&stream_id)
        && es.windows(4).any(|w| w[0] == 0 && w[1] == 0 && w[2] == 1 && matches!(w[3] & 0x1f, 5 | 7));
    Some(PesStart { pid, stream_id, pts, keyframe })
}

/// Every PES start in `data` (whole packets), in order.
pub fn pes_starts(data: &[u8]) -> impl Iterator<Item = PesStart> + '_ {
    data.chunks_exact(PACKET).filter_map(pes_start)
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
}
