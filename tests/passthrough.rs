//! Passthrough: the contribution's own access units reach partners byte for
//! byte, every audio track with its language, through real receivers.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Run, SrtReceiver, UdpCapture, channel, free_udp_port, require};

/// Per-packet hashes of stream `map` (e.g. `0:v:0`) as ffmpeg's framemd5
/// with `-c copy` gives them: the access units, untouched. The sixth
/// column is the packet's own hash; a line may end with the hash of side
/// data ffmpeg's parser attached (new extradata), which is not the packet.
fn hashes(path: &Path, map: &str) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-map", map, "-c", "copy", "-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg framemd5");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(',').nth(5).map(|h| h.trim().to_owned()))
        .collect()
}

/// The longest run of `got` that appears, in order and unbroken, in `sent`.
fn longest_run(sent: &[String], got: &[String]) -> usize {
    let mut best = 0;
    for (i, h) in got.iter().enumerate() {
        for start in sent.iter().enumerate().filter(|(_, s)| *s == h).map(|(j, _)| j) {
            let n = got[i..].iter().zip(&sent[start..]).take_while(|(a, b)| a == b).count();
            best = best.max(n);
        }
    }
    best
}

/// (codec, profile, language) of every stream.
fn streams(path: &Path) -> Vec<(String, String, String)> {
    let out = Command::new("ffprobe")
        .args(["-hide_banner", "-loglevel", "error", "-show_entries"])
        .args(["stream=codec_name,profile,field_order:stream_tags=language", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // ffprobe lists the programme's streams, then every stream: the latter.
    let last = text.rsplit("\n\n").next().unwrap_or_default().to_owned();
    last.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let g = |i: usize| f.get(i).copied().unwrap_or_default().to_owned();
            (g(0), g(1), f.last().copied().unwrap_or_default().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_unit_and_audio_track_reaches_partners_untouched() {
    require("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    // The venue's encoder: H.264 High 1080p50, AAC kaz, AAC rus, AC-3 eng.
    let contribution = dir.path().join("contribution.ts");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=50"])
        .args(["-f", "lavfi", "-i", "sine=f=440:r=48000", "-f", "lavfi", "-i", "sine=f=660:r=48000"])
        .args(["-f", "lavfi", "-i", "sine=f=880:r=48000", "-t", "6"])
        .args(["-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:a"])
        .args(["-c:v", "libx264", "-profile:v", "high", "-preset", "ultrafast", "-b:v", "8M", "-g", "25"])
        .args(["-c:a:0", "aac", "-c:a:1", "aac", "-c:a:2", "ac3"])
        .args(["-metadata:s:a:0", "language=kaz", "-metadata:s:a:1", "language=rus"])
        .args(["-metadata:s:a:2", "language=eng", "-f", "mpegts"])
        .arg(&contribution)
        .status()
        .expect("ffmpeg");
    assert!(made.success(), "the contribution could not be made");

    let source_port = free_udp_port();
    let srt = SrtReceiver::start(free_udp_port());
    let udp = UdpCapture::start();
    let file = dir.path().join("leg.ts");
    let channels = [
        channel("kz-srt", &format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{}\" }}", srt.port)),
        channel("ru-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port)),
        channel("archive", &format!("{{ type = \"file\", path = \"{}\" }}", file.display())),
    ];
    let config = simulcast::config::parse(&format!(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{source_port}\"\n\
         [program]\nwidth = 1920\nheight = 1080\nframerate = 50\ngop = 25\n{}",
        channels.join("\n")
    ))
    .expect("config");
    assert_eq!(config.program.mode, simulcast::config::ProgramMode::Passthrough, "the default for a UDP source");
    let run = Run::start(&config).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&contribution)
        .args(["-map", "0", "-c", "copy", "-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{source_port}?pkt_size=1316"))
        .stdin(Stdio::null())
        .status()
        .expect("ffmpeg sends");
    assert!(sent.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = run.relay.status();
    assert_eq!(status.program.mode, simulcast::config::ProgramMode::Passthrough);
    assert!(status.program.describe.contains("AC-3 eng"), "{}", status.program.describe);
    run.relay.shutdown().await;
    let (udp_path, _) = udp.finish();
    let srt_path = srt.path.clone();
    drop(srt);

    let sent_video = hashes(&contribution, "0:v:0");
    for (what, path) in [("SRT", srt_path), ("UDP", udp_path), ("file", file)] {
        let got = streams(&path);
        assert_eq!(got.len(), 4, "{what}: {got:?}");
        assert_eq!(got[0].0, "h264", "{what}: {got:?}");
        let audio: Vec<(&str, &str)> = got[1..].iter().map(|s| (s.0.as_str(), s.2.as_str())).collect();
        assert_eq!(audio, [("aac", "kaz"), ("aac", "rus"), ("ac3", "eng")], "{what}");
        // About 6 s of 50p: the programme runs unbroken from a keyframe on.
        let run_v = longest_run(&sent_video, &hashes(&path, "0:v:0"));
        assert!(run_v >= 200, "{what}: only {run_v} of {} pictures arrived untouched in a row", sent_video.len());
        for a in 0..3 {
            let map = format!("0:a:{a}");
            let run_a = longest_run(&hashes(&contribution, &map), &hashes(&path, &map));
            assert!(run_a >= 150, "{what}: audio track {a}: only {run_a} frames untouched in a row");
        }
    }
}
