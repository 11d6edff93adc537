//! Per-leg stamps: every leg names its own channel inside the stream, so a
//! partner can confirm it received its own leg and not a neighbour's.
//!
//! The programme is encoded once for every leg (see `program.rs`), so the
//! picture cannot differ per leg without one encode per leg; the stamp is in
//! the stream's own service information instead, where any TS analyser,
//! `ffprobe` or a receiver's channel list shows it:
//!
//! - MPEG-TS legs (SRT, UDP, RIST, file) get a DVB Service Description Table
//!   (PID 0x0011) naming the programme `"<channel name> (<channel id>)"`,
//!   provider `simulcast`, added to the leg's own copy of each batch every
//!   [`SDT_EVERY`]. The shared batches are untouched; mpegtsmux writes no SDT
//!   of its own, so there is nothing to replace.
//! - RTMP legs carry FLV, not MPEG-TS: the same text is the `title` of the
//!   stream's `onMetaData`, set on flvmux.

use std::time::Duration;

use gstreamer as gst;

use super::ts;
use crate::config::{Channel, Ingest};

/// How often a stamped MPEG-TS leg carries its SDT (DVB asks for at least
/// every 2 s).
pub const SDT_EVERY: Duration = Duration::from_millis(500);
/// The SDT's provider name.
pub const PROVIDER: &str = "simulcast";

/// The text a leg is stamped with.
pub fn text(channel: &Channel) -> String {
    format!("{} ({})", channel.name, channel.id)
}

/// Where a partner finds the stamp of `channel`'s leg, in words.
pub fn describe(channel: &Channel) -> String {
    let t = text(channel);
    match channel.ingest {
        Ingest::Rtmp(_) => format!("FLV onMetaData title \"{t}\""),
        _ => format!("MPEG-TS SDT service name \"{t}\" (provider \"{PROVIDER}\")"),
    }
}

/// The tags an RTMP leg's `taginject` adds (its `tags` property, in
/// GstStructure field syntax): the title, quoted and escaped.
pub fn flv_tags(channel: &Channel) -> String {
    let escaped = text(channel).replace('\\', "\\\\").replace('"', "\\\"");
    format!("title=\"{escaped}\"")
}

/// Adds an SDT naming one leg to that leg's batches.
#[derive(Debug)]
pub struct SdtStamper {
    service: String,
    /// The SDT packet, built once the programme's own PAT is seen (the SDT
    /// must name the same transport stream and programme); only its
    /// continuity counter changes, and the section's CRC does not cover it.
    packet: Option<[u8; ts::PACKET]>,
    cc: u8,
    last_pts: Option<u64>,
}

impl SdtStamper {
    /// A stamper naming the service `service`.
    pub fn new(service: String) -> Self {
        Self { service, packet: None, cc: 0, last_pts: None }
    }

    /// Adds an SDT packet, stamped `pts`, to the end of `list` when one is
    /// due. Nothing is added before the programme's PAT has been seen.
    pub fn stamp(&mut self, list: &mut gst::BufferListRef, pts: u64) {
        if self.packet.is_none() {
            let pat = list.iter().find_map(|b| {
                let map = b.map_readable().ok()?;
                map.chunks_exact(ts::PACKET).find_map(ts::pat)
            });
            self.packet = pat.map(|pat| ts::sdt_packet(pat, PROVIDER, &self.service, 0));
        }
        let Some(mut packet) = self.packet else { return };
        if self.last_pts.is_some_and(|last| pts.saturating_sub(last) < SDT_EVERY.as_nanos() as u64) {
            return;
        }
        packet[3] = (packet[3] & 0xf0) | self.cc;
        let mut buffer = gst::Buffer::from_slice(packet);
        if let Some(b) = buffer.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(pts));
        }
        list.add(buffer);
        self.cc = (self.cc + 1) & 0x0f;
        self.last_pts = Some(pts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat_buffer() -> gst::Buffer {
        gst::Buffer::from_slice(ts::pat_packet())
    }

    fn sdts(list: &gst::BufferList) -> Vec<(u8, Option<u64>)> {
        list.iter()
            .filter_map(|b| {
                let m = b.map_readable().ok()?;
                (ts::pid(&m) == ts::SDT_PID).then(|| (m[3] & 0x0f, b.pts().map(|p| p.nseconds())))
            })
            .collect()
    }

    #[test]
    fn sdt_follows_the_pat_every_half_second_with_its_own_counter() {
        gst::init().unwrap();
        let mut s = SdtStamper::new("Jibek Joly (kz)".into());
        let ms = 1_000_000u64;
        let mut seen = Vec::new();
        // No PAT yet: nothing added.
        let mut list = gst::BufferList::new();
        list.get_mut().unwrap().add(gst::Buffer::from_slice([0x47u8; 188]));
        s.stamp(list.get_mut().unwrap(), 0);
        assert!(sdts(&list).is_empty());
        for (i, at) in [100, 300, 600, 650, 1100, 1700].into_iter().enumerate() {
            let mut list = gst::BufferList::new();
            if i == 0 {
                list.get_mut().unwrap().add(pat_buffer());
            }
            s.stamp(list.get_mut().unwrap(), at * ms);
            seen.extend(sdts(&list));
        }
        assert_eq!(seen, vec![(0, Some(100 * ms)), (1, Some(600 * ms)), (2, Some(1100 * ms)), (3, Some(1700 * ms))]);
    }
}
