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

#[cfg(test)]
mod tests {
    use super::*;

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
