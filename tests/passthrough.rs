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

/// Plays `contribution` in real time to the relay's UDP input on `port`
/// (ffmpeg, every stream as it is), with 2 s before and after.
async fn send_live(contribution: &Path, port: u16) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(contribution)
        .args(["-map", "0", "-c", "copy", "-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
        .stdin(Stdio::null())
        .status()
        .expect("ffmpeg sends");
    assert!(sent.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// (codec, profile, language) of every stream, as ffprobe reads them.
fn streams(path: &Path) -> Vec<(String, String, String)> {
    let out = Command::new("ffprobe")
        .args(["-hide_banner", "-loglevel", "error", "-show_entries"])
        .args(["stream=codec_name,profile:stream_tags=language", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe's JSON");
    let text = |s: &serde_json::Value, k: &str| s.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    v["streams"]
        .as_array()
        .map(|a| a.iter().map(|s| (text(s, "codec_name"), text(s, "profile"), text(&s["tags"], "language"))).collect())
        .unwrap_or_default()
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
         [program]\nwidth = 1920\nheight = 1080\nframerate = 50\ngop = 25\n\
         audio = [\"aac:kaz\", \"aac:rus\", \"ac3:eng\"]\n{}",
        channels.join("\n")
    ))
    .expect("config");
    assert_eq!(config.program.mode, simulcast::config::ProgramMode::Passthrough, "the default for a UDP source");
    let run = Run::start(&config).await;
    send_live(&contribution, source_port).await;
    let status = run.relay.status();
    assert_eq!(status.program.mode, simulcast::config::ProgramMode::Passthrough);
    assert!(status.program.describe.contains("AC-3 eng"), "{}", status.program.describe);
    run.relay.shutdown().await;
    let (udp_path, datagrams) = udp.finish();
    // Planned as it came: one PAT and PMT from the pre-show slate on.
    common::check_ts(&datagrams.concat()).assert_clean("UDP leg");
    let srt_path = srt.path.clone();
    drop(srt);

    let sent_video = hashes(&contribution, "0:v:0");
    for (what, path) in [("SRT", srt_path), ("UDP", udp_path), ("file", file)] {
        let got = streams(&path);
        assert_eq!(got.len(), 4, "{what}: {got:?}");
        assert_eq!(got[0].0, "h264", "{what}: {got:?}");
        assert_eq!(got[0].1, streams(&contribution)[0].1, "{what}: the profile is the contribution's");
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

/// A contribution in `video` (an ffmpeg encoder and its options) with one
/// audio track in `audio`, relayed to a UDP leg and a file leg: the
/// pictures and the sound arrive untouched, in their own codecs.
async fn relays_untouched(video: &[&str], audio: &str, declared: &str, codecs: (&str, &str)) {
    require("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    let contribution = dir.path().join("contribution.ts");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=f=440:r=48000", "-t", "6", "-map", "0:v", "-map", "1:a"])
        .args(video)
        .args(["-c:a", audio, "-metadata:s:a:0", "language=aze", "-f", "mpegts"])
        .arg(&contribution)
        .status()
        .expect("ffmpeg");
    assert!(made.success(), "the contribution could not be made");

    let source_port = free_udp_port();
    let udp = UdpCapture::start();
    let file = dir.path().join("leg.ts");
    let channels = [
        channel("az-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port)),
        channel("archive", &format!("{{ type = \"file\", path = \"{}\" }}", file.display())),
    ];
    let config = simulcast::config::parse(&format!(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{source_port}\"\n\
         [program]\nwidth = 1280\nheight = 720\nframerate = 25\n{declared}{}",
        channels.join("\n")
    ))
    .expect("config");
    let run = Run::start(&config).await;
    send_live(&contribution, source_port).await;
    let describe = run.relay.status().program.describe;
    run.relay.shutdown().await;
    let (udp_path, datagrams) = udp.finish();
    // The slate before and after is in the contribution's codecs: one PMT.
    common::check_ts(&datagrams.concat()).assert_clean("UDP leg");

    let sent_video = hashes(&contribution, "0:v:0");
    let sent_audio = hashes(&contribution, "0:a:0");
    for (what, path) in [("UDP", udp_path), ("file", file)] {
        let got = streams(&path);
        let kinds: Vec<(&str, &str)> = got.iter().map(|s| (s.0.as_str(), s.2.as_str())).collect();
        assert_eq!(kinds, [(codecs.0, ""), (codecs.1, "aze")], "{what}: {got:?} ({describe})");
        assert_eq!(got[0].1, streams(&contribution)[0].1, "{what}: the profile is the contribution's");
        // About 6 s of 25p from the first keyframe on (GOP 12 by default).
        let run_v = longest_run(&sent_video, &hashes(&path, "0:v:0"));
        assert!(run_v >= 100, "{what}: only {run_v} of {} pictures arrived untouched in a row", sent_video.len());
        let run_a = longest_run(&sent_audio, &hashes(&path, "0:a:0"));
        assert!(run_a >= 100, "{what}: only {run_a} audio frames arrived untouched in a row");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hevc_contribution_with_e_ac3_passes_untouched() {
    let video = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=25:log-level=error"];
    relays_untouched(&video, "eac3", "video_codec = \"hevc\"\naudio = [\"eac3:aze\"]\n", ("hevc", "eac3")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mpeg2_contribution_with_mpeg_audio_passes_untouched() {
    let video = ["-c:v", "mpeg2video", "-b:v", "6M", "-g", "12"];
    relays_untouched(&video, "mp2", "video_codec = \"mpeg2\"\naudio = [\"mp2:aze\"]\n", ("mpeg2video", "mp2")).await;
}

/// The slate in each codec, looped three times as the splicer plays it
/// (its pictures over and over), decodes without an error.
#[test]
fn the_slate_loops_cleanly_in_every_video_codec() {
    use simulcast::media::coded::{FeedFormat, VideoFormat};
    use simulcast::media::es::VideoCodec;
    use simulcast::media::slate::{SlateLook, encode};
    require("ffmpeg", "ffmpeg");
    gstreamer::init().expect("GStreamer");
    let look = SlateLook { settings: Default::default(), title: "Silk Way Star".into(), gop: 25, video_kbps: 800 };
    let dir = tempfile::tempdir().expect("tempdir");
    for (codec, profile, muxer) in [
        (VideoCodec::H264, Some("high"), "h264"),
        (VideoCodec::Hevc, None, "hevc"),
        (VideoCodec::Mpeg2, None, "mpegvideo"),
    ] {
        let format = FeedFormat {
            video: Some(VideoFormat {
                codec,
                profile: profile.map(str::to_owned),
                level: None,
                width: 320,
                height: 180,
                framerate: (25, 1),
                interlaced: false,
                top_field_first: true,
            }),
            audio: Vec::new(),
        };
        let slate = encode(&format, &look).unwrap_or_else(|e| panic!("{codec}: {e}"));
        let mut stream = Vec::new();
        for _ in 0..3 {
            for b in &slate.video {
                stream.extend_from_slice(&b.map_readable().expect("readable"));
            }
        }
        let path = dir.path().join(format!("slate.{muxer}"));
        std::fs::write(&path, &stream).expect("write");
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-f", muxer, "-i"])
            .arg(&path)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg");
        let errors = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && errors.trim().is_empty(), "{codec}: ffmpeg reports errors:\n{errors}");
    }
}
