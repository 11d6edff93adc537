//! Per-leg audio: a leg that lists languages (`audio = ["kaz", "rus"]`)
//! gets only those of the programme's audio tracks, chosen on its own copy
//! of the shared multiplex. Nothing is encoded again and no other leg is
//! touched: the leg's PMT lists only its tracks (the section rewritten, its
//! CRC computed again, its packet's continuity counter kept; its version
//! changes only when what it lists changes) and the other audio PIDs'
//! packets are left out. A track without a language, video and
//! SCTE-35 always pass.
//!
//! If the programme carries none of the listed languages (the contribution
//! changed mid-event), the leg gets every track rather than none, and
//! [`TrackFilter::missing`] says which are missing, for the status.

use std::collections::{HashMap, HashSet};

use gstreamer as gst;

use super::ts;

/// ISO/IEC 13818-1 stream types that carry sound (private data, 0x06, is
/// DVB's AC-3 and E-AC-3; with a language descriptor it is sound here).
const AUDIO_TYPES: [u8; 7] = [0x03, 0x04, 0x06, 0x0f, 0x11, 0x81, 0x87];

/// One stream of a PMT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmtEntry {
    /// Its stream_type.
    pub stream_type: u8,
    /// Its PID.
    pub pid: u16,
    /// Its ISO 639 language descriptor's code, lower case.
    pub language: Option<String>,
    /// Where the entry lies in the section (start, end).
    span: (usize, usize),
}

/// The streams a whole PMT section (table_id to CRC, CRC correct) lists.
pub fn pmt_entries(s: &[u8]) -> Option<Vec<PmtEntry>> {
    if s.first() != Some(&0x02) || s.len() < 16 || ts::crc32_mpeg2(s) != 0 {
        return None;
    }
    let mut found = Vec::new();
    let info = usize::from(u16::from_be_bytes([s[10], s[11]]) & 0x0fff);
    let end = s.len() - 4;
    let mut at = 12 + info;
    while at + 5 <= end {
        let pid = u16::from_be_bytes([s[at + 1], s[at + 2]]) & 0x1fff;
        let n = usize::from(u16::from_be_bytes([s[at + 3], s[at + 4]]) & 0x0fff);
        let next = (at + 5 + n).min(end);
        let mut language = None;
        let mut d = at + 5;
        while d + 2 <= next {
            let (tag, len) = (s[d], usize::from(s[d + 1]));
            if tag == 0x0a
                && len >= 4
                && let Some(Ok(l)) = s.get(d + 2..d + 5).map(std::str::from_utf8)
            {
                language = Some(l.to_ascii_lowercase());
            }
            d += 2 + len;
        }
        found.push(PmtEntry { stream_type: s[at], pid, language, span: (at, next) });
        at = next;
    }
    Some(found)
}

/// The PMT PID of the first programme a whole PAT section lists.
pub fn pmt_pid(s: &[u8]) -> Option<u16> {
    let len = usize::from(u16::from_be_bytes([*s.get(1)?, *s.get(2)?]) & 0x0fff);
    let body = s.get(8..(3 + len).checked_sub(4)?)?;
    body.chunks_exact(4)
        .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
        .map(|e| u16::from_be_bytes([e[2], e[3]]) & 0x1fff)
}

/// Whether `e` is a sound track in a language not in `keep`.
fn unwanted(e: &PmtEntry, keep: &[String]) -> bool {
    AUDIO_TYPES.contains(&e.stream_type) && e.language.as_ref().is_some_and(|l| !keep.contains(l))
}

/// Chooses one leg's audio tracks by language.
#[derive(Debug)]
pub struct TrackFilter {
    keep: Vec<String>,
    pmt_pid: Option<u16>,
    /// The PIDs left out.
    dropped: HashSet<u16>,
    /// The leg's PMT, rewritten once per change of the programme's.
    rewrite: ts::SectionRewrite,
    /// The version of the leg's own PMT and what it lists (version bits
    /// cleared, no CRC).
    listed: Option<(u8, Vec<u8>)>,
    missing: Vec<String>,
}

impl TrackFilter {
    /// A filter keeping the sound tracks in `languages` (ISO 639-2, lower
    /// case).
    pub fn new(languages: Vec<String>) -> Self {
        Self {
            keep: languages,
            pmt_pid: None,
            dropped: HashSet::new(),
            rewrite: ts::SectionRewrite::default(),
            listed: None,
            missing: Vec::new(),
        }
    }

    /// The listed languages the programme lacks (all of them: the leg gets
    /// every track).
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// The leg's own copy of `list`: left-out tracks removed, the PMT
    /// rewritten. Buffers with nothing to change are shared, not copied.
    pub fn filter(&mut self, list: &gst::BufferListRef) -> gst::BufferList {
        let mut out = gst::BufferList::new_sized(list.len());
        let Some(own) = out.get_mut() else { return out };
        for b in list.iter_owned() {
            let touches = |pid: u16| pid == ts::PAT_PID || Some(pid) == self.pmt_pid || self.dropped.contains(&pid);
            if !any_pid(&b, touches) {
                own.add(b);
                continue;
            }
            let rewritten = rewrite_packets(&b, |p, data| {
                let pid = ts::pid(p);
                if pid == ts::PAT_PID {
                    if let Some(pmt) = ts::section(p).and_then(pmt_pid) {
                        self.pmt_pid = Some(pmt);
                    }
                    data.extend_from_slice(p);
                } else if Some(pid) == self.pmt_pid {
                    data.extend_from_slice(&self.pmt_packet(p));
                } else if !self.dropped.contains(&pid) {
                    data.extend_from_slice(p);
                }
            });
            if let Some(nb) = rewritten {
                own.add(nb);
            }
        }
        out
    }

    /// The leg's version of a PMT packet: the section without the left-out
    /// tracks, in the packet's own header (PID, counter); a PMT that does not
    /// fit one packet passes as it is.
    fn pmt_packet(&mut self, p: &[u8]) -> [u8; ts::PACKET] {
        let (keep, missing, dropped, listed) = (&self.keep, &mut self.missing, &mut self.dropped, &mut self.listed);
        self.rewrite.packet(p, |section| {
            let entries = pmt_entries(section)?;
            let has_any = entries.iter().any(|e| e.language.as_ref().is_some_and(|l| keep.contains(l)));
            let sound: Vec<&String> = entries
                .iter()
                .filter(|e| AUDIO_TYPES.contains(&e.stream_type))
                .filter_map(|e| e.language.as_ref())
                .collect();
            *missing = keep.iter().filter(|k| !sound.contains(k)).cloned().collect();
            // None of the leg's languages: every track rather than silence.
            let drop: Vec<&PmtEntry> =
                if has_any { entries.iter().filter(|e| unwanted(e, keep)).collect() } else { vec![] };
            *dropped = drop.iter().map(|e| e.pid).collect();
            let mut s = section[..section.len() - 4].to_vec();
            for e in drop.iter().rev() {
                s.drain(e.span.0..e.span.1);
            }
            ts::set_section_length(&mut s);
            // The leg's own version: it changes only when what the leg's
            // PMT lists changes, not when a track it leaves out does.
            let mut body = s.clone();
            body[5] &= !0x3e;
            let version = match &*listed {
                Some((v, b)) if *b == body => *v,
                Some((v, _)) => (v + 1) & 0x1f,
                None => (s[5] >> 1) & 0x1f,
            };
            s[5] = (s[5] & !0x3e) | (version << 1);
            *listed = Some((version, body));
            ts::seal_section(&mut s);
            Some(s)
        })
    }
}

/// Whether any of `b`'s packets has a PID `f` picks.
fn any_pid(b: &gst::Buffer, f: impl Fn(u16) -> bool) -> bool {
    b.map_readable().is_ok_and(|m| m.chunks_exact(ts::PACKET).any(|p| f(ts::pid(p))))
}

/// A new buffer of `b`'s packets through `each` (which appends what
/// replaces a packet, or nothing), with `b`'s times and flags; `None` if
/// nothing is left.
fn rewrite_packets(b: &gst::Buffer, mut each: impl FnMut(&[u8], &mut Vec<u8>)) -> Option<gst::Buffer> {
    let m = b.map_readable().ok()?;
    let mut data = Vec::with_capacity(m.len());
    for p in m.chunks_exact(ts::PACKET) {
        each(p, &mut data);
    }
    if data.is_empty() {
        return None;
    }
    let mut nb = gst::Buffer::from_mut_slice(data);
    if let Some(n) = nb.get_mut() {
        n.set_pts(b.pts());
        n.set_dts(b.dts());
        n.set_flags(b.flags());
    }
    Some(nb)
}

/// `section` (a whole PMT, its CRC correct) with the ISO 639 language of
/// each PID in `languages` set to the one given: the stream's own
/// language descriptor replaced, or added; every other byte as it was,
/// the CRC computed again. `None` if it is not a well-formed PMT.
pub fn with_languages(section: &[u8], languages: &[(u16, String)]) -> Option<Vec<u8>> {
    let entries = pmt_entries(section)?;
    let info = usize::from(u16::from_be_bytes([section[10], section[11]]) & 0x0fff);
    let mut s = section.get(..12 + info)?.to_vec();
    for e in &entries {
        let entry = &section[e.span.0..e.span.1];
        let wanted = languages.iter().find(|(pid, _)| *pid == e.pid).map(|(_, l)| l.as_bytes());
        let Some(language) = wanted.filter(|l| l.len() == 3) else {
            s.extend_from_slice(entry);
            continue;
        };
        let mut descriptors = Vec::with_capacity(entry.len());
        let mut d = 5;
        while d + 2 <= entry.len() {
            let end = (d + 2 + usize::from(entry[d + 1])).min(entry.len());
            if entry[d] != 0x0a {
                descriptors.extend_from_slice(&entry[d..end]);
            }
            d = end;
        }
        // ISO_639_language_descriptor: the code, audio_type 0 (undefined).
        descriptors.extend_from_slice(&[0x0a, 4]);
        descriptors.extend_from_slice(language);
        descriptors.push(0);
        s.extend_from_slice(&entry[..3]);
        s.extend_from_slice(&(0xf000 | descriptors.len() as u16).to_be_bytes());
        s.extend_from_slice(&descriptors);
    }
    ts::seal_section(&mut s);
    Some(s)
}

/// Writes the planned languages into a multiplex's PMT: the transcoding
/// programme's encoded tracks are tagged with `[program] audio`'s ISO
/// 639-2 codes exactly. (mpegtsmux would take a language tag, but writes
/// the bibliographic form: `hye` becomes `arm`, `kat` `geo`, `zho` `chi`,
/// and a code without a two-letter form is dropped.)
#[derive(Debug)]
pub struct LanguageStamp {
    /// (PID, language) of each tagged track.
    languages: Vec<(u16, String)>,
    pmt_pid: Option<u16>,
    rewrite: ts::SectionRewrite,
}

impl LanguageStamp {
    /// A stamp giving each PID its language.
    pub fn new(languages: Vec<(u16, String)>) -> Self {
        Self { languages, pmt_pid: None, rewrite: ts::SectionRewrite::default() }
    }

    /// `b` with its PMT packets stamped; shared as it is when it has none
    /// (or there is nothing to stamp).
    pub fn apply(&mut self, b: gst::Buffer) -> gst::Buffer {
        if self.languages.is_empty() {
            return b;
        }
        if !any_pid(&b, |pid| pid == ts::PAT_PID || Some(pid) == self.pmt_pid) {
            return b;
        }
        let rewritten = rewrite_packets(&b, |p, data| {
            let pid = ts::pid(p);
            if pid == ts::PAT_PID
                && let Some(pmt) = ts::section(p).and_then(pmt_pid)
            {
                self.pmt_pid = Some(pmt);
            }
            if Some(pid) == self.pmt_pid {
                let languages = &self.languages;
                data.extend_from_slice(&self.rewrite.packet(p, |s| with_languages(s, languages)));
            } else {
                data.extend_from_slice(p);
            }
        });
        rewritten.unwrap_or(b)
    }
}

/// The languages a transport stream's PMT gives its PIDs, read from the
/// packets as they pass (its PAT names the PMT's PID).
#[derive(Debug, Default)]
pub struct PmtLanguages {
    pmt_pid: Option<u16>,
    languages: HashMap<u16, String>,
}

impl PmtLanguages {
    /// Reads the PAT and PMT among `data`'s whole packets.
    pub fn read(&mut self, data: &[u8]) {
        for p in data.chunks_exact(ts::PACKET) {
            let pid = ts::pid(p);
            if pid == ts::PAT_PID {
                if let Some(pmt) = ts::section(p).and_then(pmt_pid) {
                    self.pmt_pid = Some(pmt);
                }
            } else if Some(pid) == self.pmt_pid
                && let Some(entries) = ts::section(p).and_then(pmt_entries)
            {
                self.languages = entries.into_iter().filter_map(|e| e.language.map(|l| (e.pid, l))).collect();
            }
        }
    }

    /// The language the PMT gives `pid`, if any.
    pub fn of(&self, pid: u16) -> Option<&str> {
        self.languages.get(&pid).map(String::as_str)
    }
}

/// Which lane (one of a transcoded programme's planned audio tracks, each
/// `planned` in a language or none) a contribution's sound track in
/// `language` is decoded into, the lanes in `taken` being in use:
/// - the lane planned in its language;
/// - else, for a track in a language no lane names, a lane planned
///   without one;
/// - an untagged track takes a lane planned without a language, else the
///   first free lane (the venue's tracks in the planned order).
///
/// `None`: the track is left out rather than put under another language.
pub fn lane_for(planned: &[Option<String>], taken: &[bool], language: Option<&str>) -> Option<usize> {
    let free = |i: &usize| !taken.get(*i).copied().unwrap_or(true);
    let untagged = (0..planned.len()).filter(free).find(|&i| planned[i].is_none());
    match language {
        Some(l) => (0..planned.len()).filter(free).find(|&i| planned[i].as_deref() == Some(l)).or(untagged),
        None => untagged.or_else(|| (0..planned.len()).find(free)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-packet PMT section: video 0x100, AAC kaz 0x101, AAC rus 0x102,
    /// AC-3 eng 0x103 (private data with a language), AAC without a language
    /// 0x104, SCTE-35 0x1f0.
    fn pmt() -> Vec<u8> {
        pmt_v(0, b"kaz")
    }

    /// [`pmt`] at `version`, its first AAC track in `first`.
    fn pmt_v(version: u8, first: &[u8; 3]) -> Vec<u8> {
        let mut s = vec![0x02, 0xb0, 0, 0x00, 0x01, 0xc1 | (version << 1), 0, 0, 0xe1, 0x00, 0xf0, 0x00];
        let mut es = |t: u8, pid: u16, d: &[u8]| {
            s.push(t);
            s.extend_from_slice(&(0xe000 | pid).to_be_bytes());
            s.extend_from_slice(&(0xf000 | d.len() as u16).to_be_bytes());
            s.extend_from_slice(d);
        };
        es(0x1b, 0x100, &[]);
        es(0x0f, 0x101, &[&[0x0a, 0x04][..], first, &[0]].concat());
        es(0x0f, 0x102, b"\x0a\x04rus\x00");
        es(0x06, 0x103, b"\x6a\x01\x00\x0a\x04eng\x00");
        es(0x0f, 0x104, &[]);
        es(0x86, 0x1f0, &[]);
        let len = (s.len() - 3 + 4) as u16;
        s[1..3].copy_from_slice(&(0xb000 | len).to_be_bytes());
        let crc = ts::crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    fn packet(pid: u16, cc: u8, payload: &[u8], start: bool) -> [u8; ts::PACKET] {
        let mut p = [0xffu8; ts::PACKET];
        p[0] = ts::SYNC;
        p[1..3].copy_from_slice(&((if start { 0x4000 } else { 0 }) | pid).to_be_bytes());
        p[3] = 0x10 | cc;
        p[4..4 + payload.len()].copy_from_slice(payload);
        p
    }

    fn psi(pid: u16, cc: u8, section: &[u8]) -> [u8; ts::PACKET] {
        let mut payload = vec![0];
        payload.extend_from_slice(section);
        packet(pid, cc, &payload, true)
    }

    #[test]
    fn a_leg_keeps_its_languages_with_a_pmt_of_its_own_and_the_rest_untouched() {
        gst::init().unwrap();
        let pat = ts::pat_packet();
        let pmt_pid = pmt_pid(ts::section(&pat).unwrap()).unwrap();
        let mut data = Vec::new();
        for p in [
            pat,
            psi(pmt_pid, 7, &pmt()),
            packet(0x100, 0, b"video", true),
            packet(0x101, 0, b"kaz", true),
            packet(0x102, 0, b"rus", true),
            packet(0x103, 0, b"eng", true),
            packet(0x104, 0, b"und", true),
            packet(0x1f0, 0, b"cue", true),
        ] {
            data.extend_from_slice(&p);
        }
        let mut list = gst::BufferList::new();
        let mut b = gst::Buffer::from_mut_slice(data);
        b.get_mut().unwrap().set_pts(gst::ClockTime::from_mseconds(40));
        list.get_mut().unwrap().add(b);
        // A buffer without PSI or left-out PIDs is shared as it is.
        list.get_mut().unwrap().add(gst::Buffer::from_mut_slice(packet(0x100, 1, b"more", false).to_vec()));

        let mut f = TrackFilter::new(vec!["rus".into(), "eng".into()]);
        let out = f.filter(list.get_mut().unwrap());
        assert_eq!(out.len(), 2);
        let first = out.get(0).unwrap();
        assert_eq!(first.pts(), Some(gst::ClockTime::from_mseconds(40)));
        let m = first.map_readable().unwrap();
        let pids: Vec<u16> = m.chunks_exact(ts::PACKET).map(ts::pid).collect();
        assert_eq!(pids, [0, pmt_pid, 0x100, 0x102, 0x103, 0x104, 0x1f0]);
        let pmt_out = &m[ts::PACKET..2 * ts::PACKET];
        assert_eq!(pmt_out[3] & 0x0f, 7, "the PMT packet keeps its counter");
        let entries = pmt_entries(ts::section(pmt_out).unwrap()).expect("a PMT with a good CRC");
        let listed: Vec<u16> = entries.iter().map(|e| e.pid).collect();
        assert_eq!(listed, [0x100, 0x102, 0x103, 0x104, 0x1f0]);
        assert!(f.missing().is_empty());
        assert_eq!(out.get(1).unwrap().as_ptr(), list.get(1).unwrap().as_ptr(), "an untouched buffer is shared");

        // A language the programme lacks: every track, and said.
        let mut f = TrackFilter::new(vec!["tgk".into()]);
        let out = f.filter(list.get_mut().unwrap());
        let m = out.get(0).unwrap().map_readable().unwrap();
        assert_eq!(m.chunks_exact(ts::PACKET).count(), 8);
        assert_eq!(f.missing(), ["tgk"]);
    }

    #[test]
    fn a_legs_pmt_version_changes_only_when_what_it_lists_changes() {
        gst::init().unwrap();
        let pat = ts::pat_packet();
        let pmt_pid = pmt_pid(ts::section(&pat).unwrap()).unwrap();
        let mut f = TrackFilter::new(vec!["rus".into()]);
        let mut version_after = |section: Vec<u8>| {
            let mut data = pat.to_vec();
            data.extend_from_slice(&psi(pmt_pid, 0, &section));
            let mut list = gst::BufferList::new();
            list.get_mut().unwrap().add(gst::Buffer::from_mut_slice(data));
            let out = f.filter(list.get_mut().unwrap());
            let m = out.get(0).unwrap().map_readable().unwrap();
            (ts::section(&m[ts::PACKET..2 * ts::PACKET]).unwrap()[5] >> 1) & 0x1f
        };
        assert_eq!(version_after(pmt_v(3, b"kaz")), 3, "the programme's version to start with");
        // The programme's PMT changes a track this leg leaves out: not its own.
        assert_eq!(version_after(pmt_v(4, b"tgk")), 3);
        // It drops a track this leg leaves out (a shorter section): not its own either.
        let mut fewer = pmt_v(5, b"tgk");
        let eng = pmt_entries(&fewer).unwrap().into_iter().find(|e| e.pid == 0x103).unwrap();
        fewer.truncate(fewer.len() - 4);
        fewer.drain(eng.span.0..eng.span.1);
        ts::seal_section(&mut fewer);
        assert_eq!(version_after(fewer), 3);
        // One it keeps appears (the first track now in its language): its own changes.
        assert_eq!(version_after(pmt_v(6, b"rus")), 4);
    }

    #[test]
    fn the_programmes_pmt_gets_the_planned_languages_exactly() {
        gst::init().unwrap();
        // mpegtsmux writes `arm` for `hye` (or nothing): the stamp writes
        // the planned code, replacing or adding the descriptor, and leaves
        // every other byte and PID as it was.
        let planned = vec![(0x101, "hye".to_owned()), (0x104, "kat".to_owned())];
        let out = with_languages(&pmt(), &planned).expect("a PMT");
        assert_eq!(ts::crc32_mpeg2(&out), 0, "the CRC is computed again");
        let got: Vec<(u16, Option<String>)> =
            pmt_entries(&out).unwrap().into_iter().map(|e| (e.pid, e.language)).collect();
        let want = [
            (0x100, None),
            (0x101, Some("hye")),
            (0x102, Some("rus")),
            (0x103, Some("eng")),
            (0x104, Some("kat")),
            (0x1f0, None),
        ];
        assert_eq!(got, want.map(|(p, l)| (p, l.map(str::to_owned))));
        assert_eq!((out[0], &out[3..12]), (pmt()[0], &pmt()[3..12]), "the header kept, but its length");
        let ac3 = pmt_entries(&out).unwrap().into_iter().find(|e| e.pid == 0x103).unwrap();
        assert_eq!(&out[ac3.span.0..ac3.span.1], b"\x06\xe1\x03\xf0\x09\x6a\x01\x00\x0a\x04eng\x00");

        // In a buffer: the PMT packet rewritten (its counter kept), the
        // rest untouched; a buffer without PSI is the same buffer.
        let pat = ts::pat_packet();
        let pmt_pid = pmt_pid(ts::section(&pat).unwrap()).unwrap();
        let mut stamp = LanguageStamp::new(planned);
        let data = [pat, psi(pmt_pid, 9, &pmt()), packet(0x101, 0, b"kaz", true)].concat();
        let b = stamp.apply(gst::Buffer::from_mut_slice(data.clone()));
        let m = b.map_readable().unwrap();
        assert_eq!(m[..ts::PACKET], data[..ts::PACKET]);
        assert_eq!(m[2 * ts::PACKET..], data[2 * ts::PACKET..]);
        assert_eq!(m[ts::PACKET + 3] & 0x0f, 9);
        assert_eq!(ts::section(&m[ts::PACKET..2 * ts::PACKET]).unwrap(), out.as_slice());
        let plain = gst::Buffer::from_mut_slice(packet(0x100, 1, b"v", true).to_vec());
        let ptr = plain.as_ptr();
        assert_eq!(stamp.apply(plain).as_ptr(), ptr);

        // And the languages are read back as a feed's decoder reads them.
        let mut read = PmtLanguages::default();
        read.read(&m);
        assert_eq!((read.of(0x101), read.of(0x104), read.of(0x100)), (Some("hye"), Some("kat"), None));
    }

    #[test]
    fn a_contributions_sound_track_goes_to_the_lane_of_its_language_or_none() {
        let planned = |l: &[Option<&str>]| l.iter().map(|x| x.map(str::to_owned)).collect::<Vec<_>>();
        let p = planned(&[Some("kaz"), Some("rus"), Some("eng")]);
        // By language, whatever the order the venue sends them in.
        assert_eq!(lane_for(&p, &[false; 3], Some("eng")), Some(2));
        assert_eq!(lane_for(&p, &[false, false, true], Some("kaz")), Some(0));
        // A language not planned is left out rather than put under another.
        assert_eq!(lane_for(&p, &[false; 3], Some("tgk")), None);
        assert_eq!(lane_for(&p, &[false, true, false], Some("rus")), None, "its lane is taken");
        // Untagged tracks fill the lanes in order.
        assert_eq!(lane_for(&p, &[true, false, false], None), Some(1));
        assert_eq!(lane_for(&p, &[true; 3], None), None);
        // A lane planned without a language takes any track.
        let q = planned(&[Some("kaz"), None]);
        assert_eq!(lane_for(&q, &[false; 2], Some("uzb")), Some(1));
        assert_eq!(lane_for(&q, &[false; 2], None), Some(1));
        assert_eq!(lane_for(&q, &[false; 2], Some("kaz")), Some(0));
        // The default plan: one untagged track, the first the venue sends.
        let one = planned(&[None]);
        assert_eq!(lane_for(&one, &[false], Some("kaz")), Some(0));
        assert_eq!(lane_for(&one, &[true], Some("rus")), None);
    }
}
