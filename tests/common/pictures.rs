//! What a partner got, picture by picture: decoded by ffmpeg, timed by the
//! arrival of each picture's first packet. Shared by tests and benchmarks.

use std::process::Command;
use std::time::Instant;

/// One decoded picture of a capture: its PTS (90 kHz), mean luma, and when
/// the datagram carrying the start of its PES arrived.
#[derive(Debug, Clone, Copy)]
pub struct Picture {
    pub pts: u64,
    pub luma: f64,
    pub arrived: Instant,
    /// Its PES starts with an SPS or IDR: a decoder can start on it.
    pub keyframe: bool,
}

/// Decodes a timed UDP capture with ffmpeg (signalstats: mean luma per
/// picture) and times each picture by the arrival of its PES start. The
/// slate card is dark, the test source's colour bars bright.
pub fn pictures(timed: &[(Instant, Vec<u8>)]) -> Vec<Picture> {
    let mut arrivals = std::collections::HashMap::new();
    for (at, gram) in timed {
        for pes in simulcast::media::ts::pes_starts(gram) {
            if let (true, Some(pts)) = (pes.is_video(), pes.pts) {
                arrivals.entry(pts).or_insert((*at, pes.keyframe));
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("capture.ts");
    let data: Vec<u8> = timed.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    std::fs::write(&path, data).expect("write capture");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-copyts", "-i"])
        .arg(&path)
        .args(["-an", "-vf", "signalstats,metadata=mode=print:key=lavfi.signalstats.YAVG:file=-", "-f", "null", "-"])
        .output()
        .expect("run ffmpeg (Debian: apt-get install ffmpeg)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut pics = Vec::new();
    // "frame:N pts:P pts_time:T" then the value; with -copyts, P is the
    // stream's own 90 kHz PTS (pts_time is rounded, so not used).
    let mut pts = None;
    for line in text.lines() {
        if let Some(rest) = line.split(" pts:").nth(1) {
            pts = rest.split_whitespace().next().and_then(|v| v.parse::<u64>().ok());
        } else if let Some(v) = line.strip_prefix("lavfi.signalstats.YAVG=")
            && let (Some(pts), Ok(luma)) = (pts.take(), v.trim().parse::<f64>())
            && let Some(&(arrived, keyframe)) = arrivals.get(&pts)
        {
            pics.push(Picture { pts, luma, arrived, keyframe });
        }
    }
    pics
}
