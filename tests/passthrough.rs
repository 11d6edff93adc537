//! Passthrough: the contribution's own access units reach partners byte for
//! byte, every audio track with its language, through real receivers.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use common::{NginxRtmp, Run, SrtReceiver, UdpCapture, channel, peer_port, require, wait_for};

/// Per-packet hashes of stream `map` (e.g. `0:v:0`) as ffmpeg's framemd5
/// with `-c copy` gives them: the access units, untouched. The sixth
/// column is the packet's own hash; a line may end with the hash of side
/// data ffmpeg's parser attached (new extradata), which is not the packet.
fn hashes(path: &Path, map: &str) -> Vec<String> {
    hashes_with(path, map, &[])
}

/// [`hashes`], the packets first put through `extra` (a bitstream filter).
fn hashes_with(path: &Path, map: &str, extra: &[&str]) -> Vec<String> {
    packets_with(path, map, extra).into_iter().map(|p| p.2).collect()
}

/// (decoding time, presentation time, hash) of every packet of stream
/// `map`, in the file's order (ffmpeg's framemd5 with `-c copy`, the
/// stream's own 90 kHz times).
fn packets(path: &Path, map: &str) -> Vec<(i64, i64, String)> {
    packets_with(path, map, &[])
}

/// [`packets`], put through `extra` first.
fn packets_with(path: &Path, map: &str, extra: &[&str]) -> Vec<(i64, i64, String)> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-copyts", "-i"])
        .arg(path)
        .args(["-map", map, "-c", "copy"])
        .args(extra)
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg framemd5");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let c: Vec<&str> = l.split(',').map(str::trim).collect();
            Some((c.get(1)?.parse().ok()?, c.get(2)?.parse().ok()?, (*c.get(5)?).to_owned()))
        })
        .collect()
}

/// A config relaying a UDP contribution on `port` to `channels`, with
/// `program` (lines of `[program]`).
fn udp_contribution(port: u16, program: &str, channels: &[String]) -> simulcast::config::Config {
    simulcast::config::parse(&format!(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{port}\"\n[program]\n{program}{}",
        channels.concat()
    ))
    .expect("config")
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

/// (pictures decoded as interlaced, top field first; pictures decoded) of
/// the first video stream, as ffmpeg's decoder sees each frame.
fn top_field_first_frames(path: &Path) -> (usize, usize) {
    let frames = field_orders(path);
    (frames.iter().filter(|f| f.1).count(), frames.len())
}

/// Each picture of the first video stream as ffmpeg's decoder sees it: its
/// PTS (the stream's own, 90 kHz) and whether it is interlaced, top field
/// first.
fn field_orders(path: &Path) -> Vec<(i64, bool)> {
    let out = Command::new("ffprobe")
        .args(["-hide_banner", "-loglevel", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["frame=pts,interlaced_frame,top_field_first", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(|l| l.trim_end_matches(','))
        .filter_map(|l| l.split_once(','))
        .filter_map(|(pts, order)| Some((pts.parse().ok()?, order == "1,1")))
        .collect()
}

/// Writes a venue's contribution to `path`: H.264 (`video`: its size and
/// rate, `x264` its extra options) with AAC `kaz`, AAC `rus` and AC-3 `eng`,
/// `seconds` long, GOP 25.
fn three_languages(path: &Path, video: &str, seconds: u32, x264: &[&str]) {
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", &format!("testsrc2=size={video}")])
        .args(["-f", "lavfi", "-i", "sine=f=440:r=48000", "-f", "lavfi", "-i", "sine=f=660:r=48000"])
        .args(["-f", "lavfi", "-i", "sine=f=880:r=48000", "-t", &seconds.to_string()])
        .args(["-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:a"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"])
        .args(x264)
        .args(["-c:a:0", "aac", "-c:a:1", "aac", "-c:a:2", "ac3"])
        .args(["-metadata:s:a:0", "language=kaz", "-metadata:s:a:1", "language=rus"])
        .args(["-metadata:s:a:2", "language=eng", "-f", "mpegts"])
        .arg(path)
        .status()
        .expect("ffmpeg");
    assert!(made.success(), "the contribution could not be made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_unit_and_audio_track_reaches_partners_untouched() {
    require("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    // The venue's encoder: H.264 High 1080p50, AAC kaz, AAC rus, AC-3 eng.
    let contribution = dir.path().join("contribution.ts");
    three_languages(&contribution, "1920x1080:rate=50", 6, &["-profile:v", "high", "-b:v", "8M"]);

    let source_port = peer_port();
    let srt = SrtReceiver::start(peer_port());
    let udp = UdpCapture::start();
    let file = dir.path().join("leg.ts");
    let channels = [
        // 8 Mb/s to srt-live-transmit on a machine running other tests:
        // half a second of SRT latency (partners over the internet use
        // more), so that a receiver preempted for longer than the default
        // 120 ms still gets every packet (seen once: 152 of 300 pictures
        // in a row).
        channel(
            "kz-srt",
            &format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{}\", latency = \"500ms\" }}", srt.port),
        ),
        channel("ru-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port)),
        channel("archive", &format!("{{ type = \"file\", path = \"{}\" }}", file.display())),
    ];
    let config = udp_contribution(
        source_port,
        "width = 1920\nheight = 1080\nframerate = 50\ngop = 25\naudio = [\"aac:kaz\", \"aac:rus\", \"ac3:eng\"]\n",
        &channels,
    );
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
    // Each leg's longest unbroken run, all three measured before any is
    // judged: a break on every leg is the relay's (the feed lost and the
    // slate back, say), a break on one leg alone is that leg's or its
    // receiver's. What the relay saw goes with them.
    let mut runs = Vec::new();
    for (what, path) in [("SRT", srt_path), ("UDP", udp_path), ("file", file)] {
        let got = streams(&path);
        assert_eq!(got.len(), 4, "{what}: {got:?}");
        assert_eq!(got[0].0, "h264", "{what}: {got:?}");
        assert_eq!(got[0].1, streams(&contribution)[0].1, "{what}: the profile is the contribution's");
        let audio: Vec<(&str, &str)> = got[1..].iter().map(|s| (s.0.as_str(), s.2.as_str())).collect();
        assert_eq!(audio, [("aac", "kaz"), ("aac", "rus"), ("ac3", "eng")], "{what}");
        // About 6 s of 50p: the programme runs unbroken from a keyframe on.
        let run_v = longest_run(&sent_video, &hashes(&path, "0:v:0"));
        let run_a: Vec<usize> = (0..3)
            .map(|a| {
                let map = format!("0:a:{a}");
                longest_run(&hashes(&contribution, &map), &hashes(&path, &map))
            })
            .collect();
        runs.push((what, run_v, run_a));
    }
    let seen = || {
        let legs: Vec<String> = status
            .legs
            .iter()
            .map(|l| {
                format!("{}: dropped {}, reconnects {}, srt {:?}", l.channel_id, l.dropped_buffers, l.reconnects, l.srt)
            })
            .collect();
        format!(
            "runs (leg, pictures, audio frames) {runs:?}; last switch {:?}; {}",
            status.last_switch,
            legs.join("; ")
        )
    };
    for (what, run_v, run_a) in &runs {
        assert!(
            *run_v >= 200,
            "{what}: only {run_v} of {} pictures arrived untouched in a row; {}",
            sent_video.len(),
            seen()
        );
        for (a, run) in run_a.iter().enumerate() {
            assert!(*run >= 150, "{what}: audio track {a}: only {run} frames untouched in a row; {}", seen());
        }
    }
}

/// Each partner its own language: a leg listing `audio` gets only those of
/// the programme's tracks, byte for byte, with a PMT of its own; a leg that
/// lists none gets them all; the multiplex is clean either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_leg_gets_the_audio_languages_it_lists_untouched() {
    require("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    let contribution = dir.path().join("contribution.ts");
    three_languages(&contribution, "320x180:rate=25", 5, &["-b:v", "600k"]);

    let source_port = peer_port();
    let (ru, all, tj) = (UdpCapture::start(), UdpCapture::start(), UdpCapture::start());
    let file = dir.path().join("en-kz.ts");
    let mut srt = SrtReceiver::start(peer_port());
    let udp = |port: u16| format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{port}\" }}");
    let channels = [
        channel("kz-srt", &format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{}\" }}", srt.port))
            + "audio = [\"kaz\", \"rus\"]\n",
        channel("ru-udp", &udp(ru.port)) + "audio = [\"rus\"]\n",
        channel("all-udp", &udp(all.port)),
        channel("en-kz-file", &format!("{{ type = \"file\", path = \"{}\" }}", file.display()))
            + "audio = [\"eng\", \"KAZ\"]\n",
        // Planned, but the venue does not send it.
        channel("tj-udp", &udp(tj.port)) + "audio = [\"tgk\"]\n",
    ];
    let config = udp_contribution(
        source_port,
        "width = 320\nheight = 180\nframerate = 25\ngop = 25\naudio = [\"aac:kaz\", \"aac:rus\", \"ac3:eng\", \"aac:tgk\"]\n",
        &channels,
    );
    assert_eq!(config.channels[3].audio, ["eng", "kaz"]);
    let run = Run::start(&config).await;
    send_live(&contribution, source_port).await;
    // The status says what each leg carries, and what the programme lacks.
    let status = run.relay.status();
    let leg = |id: &str| status.leg(id).expect(id).clone();
    assert_eq!((leg("ru-udp").audio, leg("ru-udp").audio_missing), (vec!["rus".to_owned()], vec![]));
    assert!(leg("all-udp").audio.is_empty());
    assert_eq!(leg("tj-udp").audio_missing, ["tgk"], "{:?}", leg("tj-udp"));
    run.relay.shutdown().await;
    srt.stop();
    // Without its language, that leg got every track rather than silence.
    let (tj_path, _) = tj.finish();
    let tj_audio: Vec<String> = streams(&tj_path).into_iter().skip(1).map(|s| s.2).collect();
    for l in ["kaz", "rus", "eng"] {
        assert!(tj_audio.iter().any(|x| x == l), "{l} missing from {tj_audio:?}");
    }
    let (ru_path, ru_datagrams) = ru.finish();
    let (all_path, _) = all.finish();
    common::check_ts(&ru_datagrams.concat()).assert_clean("the leg with one language");
    common::check_ts(&std::fs::read(&srt.path).expect("SRT capture")).assert_clean("the SRT leg with two");

    let languages = |path: &Path| -> Vec<(String, String)> {
        streams(path).into_iter().skip(1).map(|(codec, _, lang)| (codec, lang)).collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(c, l)| (c.to_string(), l.to_string())).collect()
    };
    assert_eq!(languages(&ru_path), pairs(&[("aac", "rus")]));
    assert_eq!(languages(&srt.path), pairs(&[("aac", "kaz"), ("aac", "rus")]));
    assert_eq!(languages(&file), pairs(&[("aac", "kaz"), ("ac3", "eng")]));
    // A leg asking for nothing gets every track (the slate's planned `tgk`
    // too, before the contribution came).
    let every = languages(&all_path);
    for track in pairs(&[("aac", "kaz"), ("aac", "rus"), ("ac3", "eng")]) {
        assert!(every.contains(&track), "{track:?} missing from {every:?}");
    }
    // What a leg keeps is the contribution's, frame for frame.
    for (what, path, got, sent) in [
        ("ru", &ru_path, "0:a:0", "0:a:1"),
        ("kz-srt", &srt.path, "0:a:0", "0:a:0"),
        ("kz-srt", &srt.path, "0:a:1", "0:a:1"),
        ("en-kz", &file, "0:a:0", "0:a:0"),
        ("en-kz", &file, "0:a:1", "0:a:2"),
    ] {
        let run_a = longest_run(&hashes(&contribution, sent), &hashes(path, got));
        assert!(run_a >= 100, "{what} {got}: only {run_a} frames of {sent} untouched in a row");
    }
    let sent_video = hashes(&contribution, "0:v:0");
    let run_v = longest_run(&sent_video, &hashes(&ru_path, "0:v:0"));
    assert!(run_v >= 75, "only {run_v} of {} pictures untouched in a row", sent_video.len());
}

/// A contribution in `video` (an ffmpeg encoder and its options) with one
/// audio track in `audio`, relayed to a UDP leg and a file leg: the
/// pictures and the sound arrive untouched, in their own codecs, with
/// their field order. Returns the programme's format as the status says it.
async fn relays_untouched(video: &[&str], audio: &str, declared: &str, codecs: (&str, &str)) -> String {
    relays_untouched_with(video, audio, declared, codecs, false).await
}

/// [`relays_untouched`]; with `interlaced`, the contribution's pictures
/// must also arrive as interlaced, top field first.
async fn relays_untouched_with(
    video: &[&str],
    audio: &str,
    declared: &str,
    codecs: (&str, &str),
    interlaced: bool,
) -> String {
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

    let source_port = peer_port();
    let udp = UdpCapture::start();
    let file = dir.path().join("leg.ts");
    let channels = [
        channel("az-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port)),
        channel("archive", &format!("{{ type = \"file\", path = \"{}\" }}", file.display())),
    ];
    let config =
        udp_contribution(source_port, &format!("width = 1280\nheight = 720\nframerate = 25\n{declared}"), &channels);
    let run = Run::start(&config).await;
    send_live(&contribution, source_port).await;
    let describe = run.relay.status().program.describe;
    run.relay.shutdown().await;
    let (udp_path, datagrams) = udp.finish();
    // The slate before and after is in the contribution's codecs: one PMT.
    common::check_ts(&datagrams.concat()).assert_clean("UDP leg");

    let sent_video = hashes(&contribution, "0:v:0");
    let sent_audio = hashes(&contribution, "0:a:0");
    let (tff, pictures) = top_field_first_frames(&contribution);
    assert_eq!(tff, if interlaced { pictures } else { 0 }, "the contribution is made as asked");
    for (what, path) in [("UDP", udp_path), ("file", file)] {
        if interlaced {
            // The slate before and after is progressive (the plan's): the
            // contribution's pictures, from its first keyframe, are fields.
            let (got, _) = top_field_first_frames(&path);
            assert!(got + 25 >= tff, "{what}: {got} of {tff} pictures arrived interlaced, top field first");
        }
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
    describe
}

/// T0 mid-GOP on a contribution with B-pictures (decoded ahead of being
/// shown) and a keyframe every 2 s: the programme starts on T0's own
/// picture, re-encoded by the keyframe bridge up to the contribution's
/// next keyframe, and from there the contribution's own access units run
/// unbroken. The partner's stream stays clean and decodes without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t0_mid_gop_lands_on_its_own_picture_and_the_contribution_resumes_at_its_keyframe() {
    t0_mid_gop(&[], SMALL, false).await;
}

/// The same with open GOPs: the keyframe the bridge ends at is a recovery
/// point whose leading B-pictures, shown before it, are bridged too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t0_mid_gop_bridges_an_open_gops_leading_pictures_too() {
    t0_mid_gop(&["-x264-params", "open-gop=1"], SMALL, false).await;
}

/// The same with an interlaced contribution (576i50, top field first,
/// MBAFF): the bridged pictures are interlaced in the same field order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t0_mid_gop_bridges_an_interlaced_contribution_in_its_field_order() {
    let video = ["-vf", "scale=720:576", "-flags", "+ilme+ildct", "-top", "1", "-b:v", "3M"];
    t0_mid_gop(&video, "width = 720\nheight = 576\nframerate = 25\ngop = 25\n", true).await;
}

/// The `[program]` of the 320x180@25 T0 tests.
const SMALL: &str = "width = 320\nheight = 180\nframerate = 25\ngop = 25\n";

/// A 320x180@25 contribution (testsrc2, a 440 Hz AAC tone), `seconds`
/// long, its video encoded with `video` (ffmpeg's options), as MPEG-TS.
fn test_contribution(path: &Path, seconds: u32, video: &[&str]) {
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=f=440:r=48000", "-t", &seconds.to_string()])
        .args(video)
        .args(["-c:a", "aac", "-f", "mpegts"])
        .arg(path)
        .status()
        .expect("ffmpeg");
    assert!(made.success());
}

/// What one UDP leg got of `contribution`, played live from 2 s after the
/// relay (`program`: lines of `[program]`) starts, with T0 7 s after it:
/// about 5 s into the contribution, so the switch lands mid-stream. The
/// capture passes the TS check and decodes without an error. Returns the
/// timed datagrams, the capture's file and T0.
async fn t0_mid_stream(contribution: &Path, program: &str) -> (Vec<(Instant, Vec<u8>)>, PathBuf, DateTime<Utc>) {
    let source_port = peer_port();
    let udp = UdpCapture::start();
    let legs = [channel("kz-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port))];
    let config = udp_contribution(source_port, program, &legs);
    let t0 = Utc::now() + chrono::Duration::milliseconds(7000);
    let cue = simulcast::media::program::Cue { program_from: Some(t0), program_until: None, force_slate: false };
    let plan = simulcast::relay::RelayPlan::from_config(&config);
    let relay = simulcast::relay::Relay::start_with(&plan, cue, None).await.expect("relay starts");
    send_live(contribution, source_port).await;
    relay.shutdown().await;
    let timed = udp.timed();
    let (path, datagrams) = udp.finish();
    let data = datagrams.concat();
    common::check_ts(&data).assert_clean("UDP leg");
    common::decodes_cleanly(&data, "UDP leg");
    (timed, path, t0)
}

/// T0 a second from the keyframes of an H.264 contribution with
/// B-pictures (x264 `-bf 3`, a keyframe every 2 s, `more` ffmpeg options),
/// relayed with `program` (`[program]` lines); with `interlaced`, every
/// picture shown from T0's on must be interlaced, top field first.
async fn t0_mid_gop(more: &[&str], program: &str, interlaced: bool) {
    require("ffmpeg", "ffmpeg");
    simulcast::media::init().expect("GStreamer");
    let dir = tempfile::tempdir().expect("tempdir");
    let contribution = dir.path().join("contribution.ts");
    let video =
        ["-c:v", "libx264", "-preset", "superfast", "-bf", "3", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0"];
    test_contribution(&contribution, 12, &[&video[..], more].concat());
    let b_frames = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=has_b_frames", "-of", "csv=p=0"])
        .arg(&contribution)
        .output()
        .expect("ffprobe");
    assert_ne!(String::from_utf8_lossy(&b_frames.stdout).trim(), "0", "the contribution has no B-pictures");

    let utc = simulcast::media::recording::UtcClock::new(&simulcast::media::clock());
    // T0 a second from the contribution's keyframes at 4 s and 6 s.
    let (timed, path, t0) = t0_mid_stream(&contribution, program).await;
    let pics = common::pictures(&timed);
    let i = pics.iter().position(|p| p.luma > 80.0).expect("programme pictures");
    let first = pics[i];
    assert!(first.keyframe, "the first programme picture is not a keyframe");
    let after = ticks_after_t0(&utc, t0, first.pts);
    assert!(after < 3600 + 180, "the first programme picture is {} ms after T0, not T0's picture", after / 90);
    // The bridge runs to the contribution's next keyframe, well after T0:
    // its first own picture, by its bytes, a keyframe of the contribution.
    let (sent, got) = (packets(&contribution, "0:v:0"), packets(&path, "0:v:0"));
    let k = got.iter().position(|g| sent.iter().any(|s| s.2 == g.2)).expect("the contribution's own pictures");
    assert!(
        keyframe_hashes(&contribution, "0:v:0").contains(&got[k].2),
        "the bridge ended on a picture that is not a keyframe"
    );
    // Every picture slot from T0's to the keyframe's is filled, by the
    // stream's own timestamps (what a decoder shows of them is its own
    // policy: see the open-GOP test), with programme, never slate.
    let (from, to) = (first.pts as i64, got[k].1);
    let mut slots: Vec<i64> = got.iter().map(|p| p.1).filter(|&pts| (from..=to).contains(&pts)).collect();
    slots.sort_unstable();
    let bridged = slots.len() - 1;
    assert!((5..=50).contains(&bridged), "{bridged} pictures from T0 to the next keyframe");
    let steps: Vec<i64> = slots.windows(2).map(|w| w[1] - w[0]).collect();
    // A live feed's timestamps are steered onto its frame grid by a few
    // microseconds at a time.
    assert!(steps.iter().all(|&d| d.abs_diff(3600) <= 5), "picture steps over the bridge {steps:?} (90 kHz)");
    let slate = pics.iter().filter(|p| (from..to).contains(&(p.pts as i64)) && p.luma <= 80.0).count();
    assert_eq!(slate, 0, "slate pictures inside the bridge");
    if interlaced {
        let (tff, all) = top_field_first_frames(&contribution);
        assert_eq!(tff, all, "the contribution is made as asked");
        let shown: Vec<bool> = field_orders(&path).into_iter().filter(|f| f.0 >= from).map(|f| f.1).collect();
        let progressive = shown.iter().filter(|tff| !**tff).count();
        assert!(
            shown.len() >= 100 && progressive == 0,
            "{progressive} of {} pictures from T0 on not interlaced TFF",
            shown.len()
        );
    }
    // Nothing after it in decoding order is shown before it: the bridge
    // covered its leading pictures, if any.
    let leading = got[k + 1..].iter().take_while(|p| p.1 < got[k].1).count();
    assert_eq!(leading, 0, "pictures shown before the keyframe the bridge ended at came after it");
    // From that keyframe on, the contribution's own access units.
    let own = longest_run(&hashes(&contribution, "0:v:0"), &hashes(&path, "0:v:0"));
    assert!(own >= 100, "only {own} of the contribution's pictures in a row after the bridge");
    eprintln!(
        "T0's picture {} ms after T0; {} pictures bridged; then {own} of the contribution's own",
        after / 90,
        bridged
    );
}

/// How far (90 kHz) a partner's picture with timestamp `pts` is shown
/// after T0 (`utc` the relay's clock).
fn ticks_after_t0(utc: &simulcast::media::recording::UtcClock, t0: DateTime<Utc>, pts: u64) -> u64 {
    let delay = simulcast::media::passthrough::DELAY.as_nanos() as u64;
    let t0_pts = simulcast::media::mux::ticks_90k(utc.clock_of(t0.timestamp_nanos_opt().unwrap() as u64) + delay);
    pts.wrapping_sub(t0_pts) & ((1u64 << 33) - 1)
}

/// T0's own picture is a keyframe decoded 80 ms before it is shown (as
/// B-pictures put a keyframe's decoding time ahead of T0): the switch
/// lands on it, the slate leaving its decoding time free, and not on a
/// later keyframe. Every picture of this contribution is a keyframe (its
/// decoding times moved 80 ms ahead with ffmpeg's `setts`), so T0's own
/// picture is one wherever T0 falls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t0_lands_on_its_own_keyframe_when_that_is_decoded_before_t0() {
    require("ffmpeg", "ffmpeg");
    simulcast::media::init().expect("GStreamer");
    let dir = tempfile::tempdir().expect("tempdir");
    let contribution = dir.path().join("contribution.ts");
    let video = ["-c:v", "libx264", "-preset", "superfast", "-g", "1", "-bsf:v", "setts=dts=DTS-7200"];
    test_contribution(&contribution, 12, &video);
    let sent = packets(&contribution, "0:v:0");
    assert_eq!(keyframe_hashes(&contribution, "0:v:0").len(), sent.len(), "the contribution is intra only");
    assert!(sent.iter().all(|p| p.1 - p.0 == 7200), "the contribution is decoded 80 ms ahead");

    let utc = simulcast::media::recording::UtcClock::new(&simulcast::media::clock());
    let (timed, path, t0) = t0_mid_stream(&contribution, SMALL).await;
    let pics = common::pictures(&timed);
    let first = pics.iter().find(|p| p.luma > 80.0).expect("programme pictures");
    let after = ticks_after_t0(&utc, t0, first.pts);
    assert!(after < 3600 + 180, "the first programme picture is {} ms after T0, not T0's picture", after / 90);
    let own = longest_run(&hashes(&contribution, "0:v:0"), &hashes(&path, "0:v:0"));
    assert!(own >= 100, "only {own} of the contribution's pictures in a row after T0");
    eprintln!("T0's picture {} ms after T0; then {own} of the contribution's own", after / 90);
}

/// The hashes of the keyframes of stream `map` (ffprobe's flags, zipped
/// with [`packets`]: both list the packets in the file's order).
fn keyframe_hashes(path: &Path, map: &str) -> Vec<String> {
    let stream = map.trim_start_matches("0:");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream, "-show_entries", "packet=flags", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let flags = String::from_utf8_lossy(&out.stdout);
    let flags: Vec<&str> = flags.lines().filter(|l| !l.trim().is_empty()).collect();
    let all = packets(path, map);
    assert_eq!(flags.len(), all.len(), "ffprobe and ffmpeg list the packets alike");
    all.into_iter().zip(flags).filter(|(_, f)| f.starts_with('K')).map(|(p, _)| p.2).collect()
}

/// A switch onto an open GOP: the contribution's keyframes (HEVC CRA
/// pictures, x265's default; H.264 recovery points with `open-gop`) are
/// followed in decoding order by pictures shown before them, which refer
/// to pictures before the keyframe. Landing on such a keyframe mid-stream,
/// partners never got those: the leading pictures are left out, and the
/// first picture after the switch is the keyframe, shown first.
async fn a_switch_onto_an_open_gop(video: &[&str], program: &str) {
    simulcast::media::init().expect("GStreamer");
    let dir = tempfile::tempdir().expect("tempdir");
    let contribution = dir.path().join("contribution.ts");
    test_contribution(&contribution, 10, video);
    let sent = packets(&contribution, "0:v:0");
    let keys = keyframe_hashes(&contribution, "0:v:0");
    // The premise: keyframes after the first with leading pictures.
    let open = sent.windows(2).filter(|w| keys.contains(&w[0].2) && w[1].1 < w[0].1).count();
    assert!(open >= 2, "the contribution has {open} keyframes with leading pictures");

    // The switch lands on a keyframe mid-stream, not the first.
    let (_, path, _) = t0_mid_stream(&contribution, program).await;
    let got = packets(&path, "0:v:0");
    let sent_hashes: Vec<&String> = sent.iter().map(|p| &p.2).collect();
    let i = got.iter().position(|p| sent_hashes.contains(&&p.2)).expect("the contribution's pictures");
    let landed = &got[i];
    assert!(keys.contains(&landed.2), "the switch landed on a picture that is not a keyframe");
    assert_ne!(Some(&landed.2), keys.first(), "the switch landed on the contribution's first keyframe, not mid-stream");
    let leading: Vec<i64> = got[i + 1..].iter().map(|p| p.1).take_while(|&pts| pts < landed.1).collect();
    assert!(leading.is_empty(), "{} leading pictures went out after the keyframe the switch landed on", leading.len());
    assert!(got[i + 1..].iter().all(|p| p.1 > landed.1), "a picture after the switch is shown before its keyframe");
    // From there on, the contribution's own pictures but its leading ones.
    let own = longest_run(&sent.iter().map(|p| p.2.clone()).collect::<Vec<_>>(), &hashes(&path, "0:v:0"));
    assert!(own >= 20, "only {own} of the contribution's pictures in a row after the switch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hevc_switch_onto_a_cra_leaves_out_its_rasl_pictures() {
    let video = [
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-x265-params",
        "keyint=50:min-keyint=50:scenecut=0:log-level=error",
    ];
    a_switch_onto_an_open_gop(&video, "video_codec = \"hevc\"\nwidth = 320\nheight = 180\nframerate = 25\ngop = 25\n")
        .await;
}

/// H.264 with open GOPs, where the keyframe bridge is off: T0 lands on a
/// recovery point (an I picture, not IDR), whose B-pictures come after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h264_switch_onto_a_recovery_point_leaves_out_its_leading_pictures() {
    let video = [
        "-c:v",
        "libx264",
        "-preset",
        "superfast",
        "-bf",
        "3",
        "-x264-params",
        "open-gop=1:keyint=50:min-keyint=50:scenecut=0",
    ];
    let program = "width = 320\nheight = 180\nframerate = 25\ngop = 25\nkeyframe_bridge = false\n";
    a_switch_onto_an_open_gop(&video, program).await;
}

/// Field-coded H.264 (576i50, the PAL broadcast format: the same fields as
/// 1080i50 at a fifth of the pixels, so that it costs the 2-core machine
/// little beside the 1080p50 test running at the same time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interlaced_576i50_contribution_keeps_its_fields() {
    let video = ["-vf", "scale=720:576", "-c:v", "libx264", "-preset", "ultrafast", "-flags", "+ilme+ildct"];
    let video = [&video[..], &["-top", "1", "-g", "25", "-b:v", "4M"]].concat();
    let describe = relays_untouched_with(&video, "aac", "audio = [\"aac:aze\"]\n", ("h264", "aac"), true).await;
    assert!(describe.contains("720x576 50i (top field first)"), "{describe}");
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
            scte35: false,
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

/// A slate encoded for one relay is kept for the next (a re-arm, the live
/// event after its rehearsal): the same card and format give back the
/// very buffers encoded before, without a second encode, while another
/// title, a replaced slate image or another picture size is encoded anew,
/// and so is the multiviewer's still of a replaced image.
#[test]
fn a_slate_encoded_once_is_kept_for_the_next_relay_until_its_look_changes() {
    use simulcast::config::SlateSettings;
    use simulcast::media::coded::{AudioFormat, FeedFormat, VideoFormat};
    use simulcast::media::es::{AudioCodec, VideoCodec};
    use simulcast::media::slate::{SlateLook, encode, still};
    gstreamer::init().expect("GStreamer");
    let dir = tempfile::tempdir().expect("tempdir");
    let png = dir.path().join("slate.png");
    let draw = |colour: &str, size: &str| {
        let out = Command::new("gst-launch-1.0")
            .args(["-q", "videotestsrc", "num-buffers=1", &format!("pattern={colour}"), "!"])
            .arg(format!(
                "video/x-raw,width={},height={}",
                size.split('x').next().unwrap(),
                size.split('x').nth(1).unwrap()
            ))
            .args(["!", "pngenc", "!", "filesink"])
            .arg(format!("location={}", png.display()))
            .output()
            .expect("gst-launch-1.0");
        assert!(out.status.success(), "drawing the PNG: {}", String::from_utf8_lossy(&out.stderr));
    };
    draw("red", "64x36");
    // A title no other test uses: what is kept is the whole process's.
    let title = format!("kept slate {}", std::process::id());
    let card = SlateLook { settings: SlateSettings::default(), title: title.clone(), gop: 10, video_kbps: 400 };
    let image = SlateLook {
        settings: SlateSettings { image: Some(png.clone()), ..SlateSettings::default() },
        title: title.clone(),
        gop: 10,
        video_kbps: 400,
    };
    let format = |width| FeedFormat {
        video: Some(VideoFormat {
            codec: VideoCodec::H264,
            profile: Some("high".into()),
            level: None,
            width,
            height: 180,
            framerate: (25, 1),
            interlaced: false,
            top_field_first: true,
        }),
        audio: vec![AudioFormat {
            codec: AudioCodec::Aac,
            language: Some("kaz".into()),
            rate: 48000,
            channels: 2,
            samples: 0,
            layer: 0,
            pid: 0,
        }],
        scte35: false,
    };
    let same = |a: &[gstreamer::Buffer], b: &[gstreamer::Buffer]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.as_ptr() == y.as_ptr())
    };

    let first = encode(&format(320), &card).expect("slate");
    let again = encode(&format(320), &card).expect("slate");
    assert!(same(&first.video, &again.video), "the same card and format were encoded a second time");
    assert!(same(&first.audio[0].frames, &again.audio[0].frames), "the same track's loop was encoded a second time");
    let retitled = SlateLook { title: format!("{title}, retitled"), ..card.clone() };
    assert!(
        !same(&first.video, &encode(&format(320), &retitled).expect("slate").video),
        "a new title kept the old card"
    );
    assert!(!same(&first.video, &encode(&format(352), &card).expect("slate").video), "a new size kept the old card");

    let pictures = encode(&format(320), &image).expect("image slate");
    let (red, _) = still(&image, (160, 90)).expect("still");
    assert!(
        same(&pictures.video, &encode(&format(320), &image).expect("image slate").video),
        "the image was encoded again"
    );
    // The operator replaces the PNG (another size, so the file's size
    // differs even where its modification time does not).
    draw("blue", "96x54");
    assert!(
        !same(&pictures.video, &encode(&format(320), &image).expect("image slate").video),
        "a replaced slate image kept the old pictures"
    );
    let (blue, _) = still(&image, (160, 90)).expect("still");
    assert_ne!(red, blue, "a replaced slate image kept the old still");
}

/// PID the test contribution carries its SCTE-35 cues on (the relay's is
/// its own).
const CUE_PID: u16 = 0x0300;

/// A splice_insert, out of network for 30 s, at contribution PTS `splice`,
/// as an ad server writes it (event 42, `pts_adjustment` 0).
fn splice_insert(splice: u64) -> Vec<u8> {
    let mut cmd = vec![0x00, 0x00, 0x00, 0x2a, 0x7f, 0xef, 0xfe | (splice >> 32) as u8];
    cmd.extend_from_slice(&(splice as u32).to_be_bytes());
    let d: u64 = 30 * 90_000;
    cmd.push(0xfe | (d >> 32) as u8);
    cmd.extend_from_slice(&(d as u32).to_be_bytes());
    cmd.extend_from_slice(&[0x00, 0x01, 0x01, 0x01]);
    let mut s =
        vec![0xfc, 0, 0, 0x00, 0x00, 0, 0, 0, 0, 0x00, 0xff, 0xf0 | (cmd.len() >> 8) as u8, cmd.len() as u8, 0x05];
    s.extend_from_slice(&cmd);
    s.extend_from_slice(&[0x00, 0x00]);
    let len = s.len() + 4 - 3;
    (s[1], s[2]) = (0x30 | (len >> 8) as u8, len as u8);
    let crc = simulcast::media::ts::crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// `ts` (as ffmpeg writes it: PMT on 0x1000, video on 0x100) with a
/// SCTE-35 PID in its PMT (registration `CUEI`) and `cue` sent twice, 2 s
/// and 1.5 s before the picture it names.
fn with_cue(ts: &[u8], splice: u64, cue: &[u8]) -> Vec<u8> {
    use simulcast::media::ts::{PACKET, crc32_mpeg2, pes_start, pid};
    let mut out = Vec::with_capacity(ts.len() + 2 * PACKET);
    let mut cc = 0u8;
    let mut announce = vec![splice - 180_000, splice - 135_000];
    for p in ts.chunks_exact(PACKET) {
        let mut p = p.to_vec();
        if pid(&p) == 0x1000 && p[1] & 0x40 != 0 {
            let at = 5 + usize::from(p[4]);
            let len = usize::from(u16::from_be_bytes([p[at + 1], p[at + 2]]) & 0x0fff);
            let sec = p[at..at + 3 + len].to_vec();
            let info = usize::from(u16::from_be_bytes([sec[10], sec[11]]) & 0x0fff);
            let mut program_info = sec[12..12 + info].to_vec();
            program_info.extend_from_slice(b"\x05\x04CUEI");
            let mut new = sec[..10].to_vec();
            new.extend_from_slice(&[0xf0 | (program_info.len() >> 8) as u8, program_info.len() as u8]);
            new.extend_from_slice(&program_info);
            new.extend_from_slice(&sec[12 + info..sec.len() - 4]);
            new.extend_from_slice(&[0x86, 0xe0 | (CUE_PID >> 8) as u8, CUE_PID as u8, 0xf0, 0x00]);
            let n = new.len() + 4 - 3;
            (new[1], new[2]) = (0xb0 | (n >> 8) as u8, n as u8);
            let crc = crc32_mpeg2(&new);
            new.extend_from_slice(&crc.to_be_bytes());
            p.truncate(at);
            p.extend_from_slice(&new);
            p.resize(PACKET, 0xff);
        }
        let video_pts = (pid(&p) == 0x100).then(|| pes_start(&p).and_then(|s| s.pts)).flatten();
        out.extend_from_slice(&p);
        if let Some(t) = video_pts
            && announce.first().is_some_and(|&a| t >= a)
        {
            announce.remove(0);
            let mut q = vec![0x47, 0x40 | (CUE_PID >> 8) as u8, CUE_PID as u8, 0x10 | cc, 0x00];
            q.extend_from_slice(cue);
            q.resize(PACKET, 0xff);
            out.extend_from_slice(&q);
            cc = (cc + 1) % 16;
        }
    }
    assert!(announce.is_empty(), "the contribution is too short for its cue");
    out
}

/// (pts, MD5 of the access unit) of every video packet, as ffprobe reads them.
fn video_packets(path: &Path) -> Vec<(u64, String)> {
    let out = Command::new("ffprobe")
        .args(["-hide_banner", "-loglevel", "error", "-select_streams", "v:0", "-show_data_hash", "MD5"])
        .args(["-show_entries", "packet=pts,data_hash", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe's JSON");
    let packets = v["packets"].as_array().cloned().unwrap_or_default();
    let got: Vec<(u64, String)> =
        packets.iter().filter_map(|p| Some((p["pts"].as_u64()?, p["data_hash"].as_str()?.to_owned()))).collect();
    assert!(!got.is_empty() && got.iter().all(|p| p.1.starts_with("MD5:")), "ffprobe gave no hashes: {got:?}");
    got
}

/// The SCTE-35 sections ffprobe finds in `path`, as bytes.
fn scte35_sections(path: &Path) -> Vec<Vec<u8>> {
    let out = Command::new("ffprobe")
        .args(["-hide_banner", "-loglevel", "error", "-select_streams", "d", "-show_packets", "-show_data"])
        .arg(path)
        .output()
        .expect("ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sections = Vec::new();
    for packet in text.split("[PACKET]").skip(1) {
        let mut bytes = Vec::new();
        for line in packet.lines().filter(|l| l.len() > 10 && l.as_bytes()[8] == b':') {
            let hex: String = line[10..].split("  ").next().unwrap_or("").split_whitespace().collect();
            bytes.extend((0..hex.len() / 2).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()));
        }
        sections.push(bytes);
    }
    sections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contributions_scte35_cue_reaches_partners_naming_the_same_picture() {
    require("ffmpeg", "ffmpeg");
    require("gst-launch-1.0", "gstreamer1.0-tools");
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.ts");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i", "sine=f=440:r=48000"])
        .args(["-t", "9", "-c:v", "libx264", "-preset", "superfast", "-bf", "2", "-g", "25", "-b:v", "2M"])
        .args(["-c:a", "aac"])
        .args(["-f", "mpegts"])
        .arg(&plain)
        .status()
        .expect("ffmpeg");
    assert!(made.success(), "the contribution could not be made");
    // The break starts on the keyframe 6 s in.
    let sent = video_packets(&plain);
    let first = sent.iter().map(|p| p.0).min().expect("pictures");
    let splice = first + 6 * 90_000;
    let (_, picture) = sent.iter().find(|p| p.0 == splice).expect("a picture at 6 s").clone();
    let cue = splice_insert(splice);
    let contribution = dir.path().join("contribution.ts");
    std::fs::write(&contribution, with_cue(&std::fs::read(&plain).expect("read"), splice, &cue)).expect("write");
    assert_eq!(scte35_sections(&contribution), [cue.clone(), cue.clone()], "ffprobe reads the cues sent");

    let source_port = peer_port();
    let udp = UdpCapture::start();
    let file = dir.path().join("leg.ts");
    let channels = [
        channel("kr-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port)),
        channel("archive", &format!("{{ type = \"file\", path = \"{}\" }}", file.display())),
    ];
    let config = udp_contribution(source_port, "width = 640\nheight = 360\nframerate = 25\nscte35 = true\n", &channels);
    let run = Run::start(&config).await;
    // Played in real time by GStreamer's own TS parser, every PID as it is.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let played = Command::new("gst-launch-1.0")
        .args(["-q", "filesrc"])
        .arg(format!("location={}", contribution.display()))
        .args(["!", "tsparse", "set-timestamps=true", "alignment=7", "!", "udpsink", "host=127.0.0.1"])
        .arg(format!("port={source_port}"))
        .arg("sync=true")
        .stdin(Stdio::null())
        .status()
        .expect("gst-launch-1.0");
    assert!(played.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let describe = run.relay.status().program.describe;
    run.relay.shutdown().await;
    assert!(describe.contains("SCTE-35"), "{describe}");
    let (udp_path, datagrams) = udp.finish();
    common::check_ts(&datagrams.concat()).assert_clean("UDP leg");

    for (what, path) in [("UDP", udp_path), ("file", file)] {
        let kinds: Vec<String> = streams(&path).into_iter().map(|s| s.0).collect();
        assert!(kinds.iter().any(|k| k == "scte_35"), "{what}: the PMT lists SCTE-35: {kinds:?}");
        let got = scte35_sections(&path);
        assert_eq!(got.len(), 2, "{what}: both cues arrive, once each: {got:?}");
        // Where the partner's stream shows the picture the cue named.
        let shown = video_packets(&path).into_iter().find(|p| p.1 == picture).map(|p| p.0);
        let shown = shown.unwrap_or_else(|| panic!("{what}: the picture at the splice point never arrived"));
        for s in got {
            assert_eq!(s.len(), cue.len(), "{what}");
            assert_eq!(simulcast::media::ts::crc32_mpeg2(&s), 0, "{what}: a good CRC");
            let n = s.len();
            assert_eq!((&s[..4], &s[9..n - 4]), (&cue[..4], &cue[9..n - 4]), "{what}: only pts_adjustment moves");
            let adjustment = (u64::from(s[4] & 1) << 32) | u64::from(u32::from_be_bytes([s[5], s[6], s[7], s[8]]));
            let lands = (splice + adjustment) & ((1 << 33) - 1);
            let off = lands.abs_diff(shown & ((1 << 33) - 1));
            eprintln!("{what}: the cue lands {off} ticks from the picture it named");
            assert!(off <= 90, "{what}: the cue lands {off} ticks from the picture it named (at {shown}, cue {lands})");
        }
    }
}

/// An RTMP leg carries one audio track: the one its channel lists, else the
/// programme's first. nginx-rtmp records what each leg published; its AAC
/// frames are the contribution's own (ADTS headers aside, which FLV does
/// not carry: the contribution's side is put through `aac_adtstoasc`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_leg_carries_the_one_audio_track_it_lists_untouched() {
    require("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    let contribution = dir.path().join("contribution.ts");
    three_languages(&contribution, "320x180:rate=25", 8, &[]);
    let source_port = peer_port();
    let mut nginx = NginxRtmp::start();
    let rtmp = |key: &str| {
        format!("{{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{}/live\", stream_key = \"{key}\" }}", nginx.port)
    };
    let channels = [channel("ru-rtmp", &rtmp("ru")) + "audio = [\"rus\"]\n", channel("first-rtmp", &rtmp("first"))];
    let config = udp_contribution(
        source_port,
        "width = 320\nheight = 180\nframerate = 25\ngop = 25\naudio = [\"aac:kaz\", \"aac:rus\", \"ac3:eng\"]\n",
        &channels,
    );
    let run = Run::start(&config).await;
    send_live(&contribution, source_port).await;
    let status = run.relay.shutdown().await;
    nginx.stop();
    assert_eq!(status.leg("ru-rtmp").expect("ru").audio, ["rus"]);

    let adts = ["-bsf:a", "aac_adtstoasc"];
    let sent = |map: &str| hashes_with(&contribution, map, &adts);
    let (kaz, rus) = (sent("0:a:0"), sent("0:a:1"));
    for (key, wanted, other, name) in [("ru", &rus, &kaz, "rus"), ("first", &kaz, &rus, "kaz")] {
        let recordings = nginx.recordings(key);
        assert!(!recordings.is_empty(), "nginx recorded nothing for {key}");
        let got: Vec<String> = recordings.iter().flat_map(|r| hashes(r, "0:a")).collect();
        let run_wanted = longest_run(wanted, &got);
        let run_other = longest_run(other, &got);
        assert!(
            run_wanted >= 100 && run_other == 0,
            "{key}: {run_wanted} frames of {name} untouched in a row, {run_other} of the other track ({} frames got)",
            got.len()
        );
    }
}

/// A break scheduled for one partner reaches only that partner: a
/// splice_insert out (with the break's duration) and in, each announced at
/// least 4 s ahead on a SCTE-35 PID its PMT lists with `CUEI`, naming the
/// picture it gets at the break's instant. The other partner's stream has
/// no cue and no cue PID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_break_reaches_only_its_partner_naming_the_picture_at_its_instant() {
    use common::cues;
    require("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    let contribution = dir.path().join("contribution.ts");
    let made = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-f", "lavfi", "-i", "sine=f=440:r=48000"])
        .args(["-t", "13", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "25", "-c:a", "aac"])
        .args(["-f", "mpegts"])
        .arg(&contribution)
        .status()
        .expect("ffmpeg");
    assert!(made.success(), "the contribution could not be made");
    let source_port = peer_port();
    let (kr, kz) = (UdpCapture::start(), UdpCapture::start());
    let udp = |port: u16| format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{port}\" }}");
    let channels = [channel("kr-udp", &udp(kr.port)), channel("kz-udp", &udp(kz.port))];
    let config = udp_contribution(source_port, "width = 320\nheight = 180\nframerate = 25\n", &channels);
    let mut run = Run::start(&config).await;
    // 7 s from now, for 3 s, on the Korean leg only.
    let start = std::time::Instant::now() + Duration::from_secs(7);
    let start_utc = std::time::SystemTime::now() + Duration::from_secs(7);
    let start_utc_ns = start_utc.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let b = simulcast::media::breaks::Break { splice_event_id: 4242, start_utc_ns, duration: Duration::from_secs(3) };
    run.relay.set_breaks("kr-udp", vec![b]);
    send_live(&contribution, source_port).await;
    let status = run.relay.shutdown().await;
    let (kr_timed, kz_timed) = (kr.timed(), kz.timed());
    let (_, kr_grams) = kr.finish();
    let (_, kz_grams) = kz.finish();
    common::check_ts(&kr_grams.concat()).assert_clean("the leg with the break");
    common::check_ts(&kz_grams.concat()).assert_clean("the other leg");

    let (pids, cuei) = cues::cue_pids(&kr_grams.concat());
    assert!(pids.len() == 1 && cuei, "the leg's PMT lists one SCTE-35 PID and CUEI: {pids:?} {cuei}");
    let got = cues::splice_inserts(&kr_timed, pids[0]);
    let outs: Vec<_> = got.iter().filter(|(_, c)| c.out_of_network).collect();
    let ins: Vec<_> = got.iter().filter(|(_, c)| !c.out_of_network).collect();
    assert!(!outs.is_empty() && !ins.is_empty(), "an out and an in cue: {got:?}");
    assert_eq!(status.leg("kr-udp").expect("kr").cues_sent, got.len() as u64, "every cue sent arrived");
    for (_, c) in &got {
        assert_eq!((c.event_id, c.cancel), (4242, false));
    }
    for (_, c) in &outs {
        assert_eq!(c.duration, Some((true, 3 * 90_000)), "the break's length, returning by itself");
        assert_eq!(c.pts, outs[0].1.pts, "every copy names the same picture");
    }
    let (out_pts, in_pts) = (outs[0].1.pts.expect("a splice time"), ins[0].1.pts.expect("a splice time"));
    assert_eq!(in_pts.wrapping_sub(out_pts) & ((1 << 33) - 1), 3 * 90_000, "back in 3 s after");
    // Announced at least 4 s ahead (every copy).
    for (at, _) in &outs {
        let ahead = start.saturating_duration_since(*at);
        assert!(ahead >= Duration::from_millis(3_900), "an out cue only {ahead:?} ahead");
    }
    for (at, _) in &ins {
        let ahead = (start + Duration::from_secs(3)).saturating_duration_since(*at);
        assert!(ahead >= Duration::from_millis(3_900), "an in cue only {ahead:?} ahead");
    }
    // The picture the partner got at the break's instant is the one named.
    let shown = cues::pictures_sent(&kr_timed, 0x100);
    // The picture that arrived nearest the instant (one comes every frame).
    let off = |t: &std::time::Instant| t.saturating_duration_since(start).max(start.saturating_duration_since(*t));
    let (_, at_start) = shown.iter().min_by_key(|(at, _)| off(at)).expect("pictures at the break's instant");
    let off = at_start.abs_diff(out_pts);
    eprintln!("the out cue names a picture {off} ticks from the one that arrived at its instant");
    assert!(off <= 3_600, "{off} ticks (more than one frame) from the picture at the break's instant");

    let (pids, cuei) = cues::cue_pids(&kz_grams.concat());
    assert!(pids.is_empty() && !cuei, "the other leg lists no cue PID: {pids:?}");
    let any: usize = (0x20..0x1fff).map(|pid| cues::splice_inserts(&kz_timed, pid).len()).sum();
    assert_eq!(any, 0, "the other leg carries no cue");
    assert_eq!(status.leg("kz-udp").expect("kz").cues_sent, 0);
}

/// An RTMP leg gets its breaks as AMF `onCuePoint` messages at the
/// instants, read by ffprobe listening as the RTMP server (its FLV reader
/// keeps each message's fields as the stream's tags, the last one's
/// winning). The cue it carries is the `splice_insert` an MPEG-TS leg
/// gets, timed at the message's own FLV time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtmp_leg_gets_its_break_as_on_cue_point_messages_at_the_instants() {
    use common::cues;
    require("ffprobe", "ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    let contribution = dir.path().join("contribution.ts");
    three_languages(&contribution, "320x180:rate=25", 10, &[]);
    let rtmp_port = peer_port();
    let probe = Command::new("ffprobe")
        .args(["-hide_banner", "-loglevel", "error", "-listen", "1", "-i"])
        .arg(format!("rtmp://127.0.0.1:{rtmp_port}/live/partner"))
        .args(["-show_entries", "format_tags:packet=codec_type,pts_time", "-of", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffprobe");
    // Listening, seen in the kernel's table: a connection to look would
    // be the one ffprobe takes.
    let listening = common::wait_for(Duration::from_secs(10), || {
        let wanted = format!("0100007F:{rtmp_port:04X}");
        std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
            t.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == wanted && f[3] == "0A"
            })
        })
    })
    .await;
    assert!(listening, "ffprobe never listened");
    let source_port = peer_port();
    let rtmp = format!("{{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{rtmp_port}/live\", stream_key = \"partner\" }}");
    let config = udp_contribution(
        source_port,
        "width = 320\nheight = 180\nframerate = 25\ngop = 25\naudio = [\"aac:kaz\", \"aac:rus\", \"ac3:eng\"]\n",
        &[channel("in-rtmp", &rtmp)],
    );
    let mut run = Run::start(&config).await;
    // 6 s from now, for 2 s.
    let start = std::time::Instant::now() + Duration::from_secs(6);
    let start_utc = std::time::SystemTime::now() + Duration::from_secs(6);
    let start_utc_ns = start_utc.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let b = simulcast::media::breaks::Break { splice_event_id: 31, start_utc_ns, duration: Duration::from_secs(2) };
    run.relay.set_breaks("in-rtmp", vec![b]);
    // Sent from a thread of its own: ffmpeg is waited for without holding
    // a runtime worker (the checks below run on time).
    let sender = std::thread::spawn(move || {
        let sent = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
            .arg(&contribution)
            .args(["-map", "0", "-c", "copy", "-f", "mpegts"])
            .arg(format!("udp://127.0.0.1:{source_port}?pkt_size=1316"))
            .stdin(Stdio::null())
            .status()
            .expect("ffmpeg sends");
        assert!(sent.success());
    });
    // The sender's side: no cue before the instant, one at it, one at the end.
    let cues_sent = |relay: &simulcast::relay::Relay| relay.status().leg("in-rtmp").map_or(0, |l| l.cues_sent);
    tokio::time::sleep_until((start - Duration::from_millis(300)).into()).await;
    assert_eq!(cues_sent(&run.relay), 0, "a cue went out before the break");
    tokio::time::sleep_until((start + Duration::from_millis(500)).into()).await;
    assert_eq!(cues_sent(&run.relay), 1, "the break's start");
    tokio::time::sleep_until((start + Duration::from_millis(2_500)).into()).await;
    assert_eq!(cues_sent(&run.relay), 2, "the break's end");
    assert!(common::wait_for(Duration::from_secs(15), || sender.is_finished()).await, "ffmpeg never finished");
    sender.join().expect("sent");
    let status = run.relay.shutdown().await;
    let out = probe.wait_with_output().expect("ffprobe ends with the stream");
    let leg = status.leg("in-rtmp").expect("leg");
    assert_eq!((leg.cues_sent, leg.cues_missed), (2, 0));

    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ffprobe's JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let tags = &v["format"]["tags"];
    assert_eq!((tags["name"].as_str(), tags["type"].as_str()), (Some("scte35"), Some("scte35")), "{v}");
    // The last message is the end's. (The start's `duration` is not among
    // the tags: ffmpeg takes that key as the stream's own length.)
    assert_eq!(tags["id"].as_str(), Some("31"));
    let time: f64 = tags["time"].as_str().and_then(|t| t.parse().ok()).expect("a time");
    let section = cues::base64_decode(tags["cue"].as_str().expect("a cue")).expect("base64");
    let cue = cues::read(&section).expect("a splice_insert with a good CRC");
    assert_eq!((cue.event_id, cue.out_of_network, cue.duration), (31, false, None), "{cue:?}");
    let pts = cue.pts.expect("a splice time") as f64 / 90_000.0;
    assert!((pts - time.round()).abs() <= 1.0, "the cue's splice time {pts} s against its message's time {time} s");
    // Its FLV time is that of the pictures going out at the break's end.
    let packets = v["packets"].as_array().cloned().unwrap_or_default();
    let video: Vec<f64> = packets
        .iter()
        .filter(|p| p["codec_type"] == "video")
        .filter_map(|p| p["pts_time"].as_str().and_then(|t| t.parse().ok()))
        .collect();
    assert!(video.len() > 200, "the partner got {} pictures", video.len());
    let last = video.iter().copied().fold(f64::MIN, f64::max);
    // The end, 8 s after the break was set, is inside the stream (the
    // contribution plays 10 s from then), not at its edge.
    assert!(time > 1.0 && time < last - 1.0, "the end's message at {time} s of a stream of {last} s");
}

/// The tones heard on audio stream `map` (e.g. `0:a:1`) of `path`: one
/// frequency (Hz) per quarter second that holds one steady, audible tone
/// (a quarter second mixing the slate and the programme is left out).
fn tones(path: &Path, map: &str) -> Vec<f64> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-map", map, "-ac", "1", "-ar", "48000", "-f", "s16le", "-"])
        .output()
        .expect("ffmpeg decodes");
    let samples: Vec<f64> = out.stdout.chunks_exact(2).map(|b| f64::from(i16::from_le_bytes([b[0], b[1]]))).collect();
    // Zero crossings over an eighth of a second, if it is not near silence.
    let eighth = |s: &[f64]| -> Option<f64> {
        let rms = (s.iter().map(|x| x * x).sum::<f64>() / s.len() as f64).sqrt();
        let crossings = s.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        (rms > 300.0).then(|| crossings as f64 / 2.0 * 8.0)
    };
    samples
        .chunks_exact(12_000)
        .filter_map(|q| {
            let (a, b) = (eighth(&q[..6000])?, eighth(&q[6000..])?);
            ((a - b).abs() <= 0.03 * a).then_some((a + b) / 2.0)
        })
        .collect()
}

/// Writes a venue's contribution to `path`: 320x180 H.264 with three AAC
/// tracks, each a tone of its own, tagged `tracks` (language, Hz).
fn aac_tracks(path: &Path, seconds: u32, tracks: &[(&str, u32)]) {
    let mut ffmpeg = Command::new("ffmpeg");
    ffmpeg.args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"]);
    for (_, hz) in tracks {
        ffmpeg.args(["-f", "lavfi", "-i", &format!("sine=f={hz}:r=48000")]);
    }
    ffmpeg.args(["-t", &seconds.to_string(), "-map", "0:v"]);
    for (i, (language, _)) in tracks.iter().enumerate() {
        ffmpeg.args(["-map", &format!("{}:a", i + 1), &format!("-metadata:s:a:{i}"), &format!("language={language}")]);
    }
    ffmpeg.args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-b:v", "600k", "-c:a", "aac", "-f", "mpegts"]);
    assert!(ffmpeg.arg(path).status().expect("ffmpeg").success(), "the contribution could not be made");
}

/// Transcode mode decodes each of the contribution's tracks and encodes it
/// once under its planned language, so per-leg audio works as in
/// passthrough: the SRT partner gets its two languages, the UDP partner
/// all three, the RTMP partner its one, each track with its own tone (the
/// venue's commentary it came from) and its exact ISO 639-2 code (`hye`,
/// which mpegtsmux itself would write as `arm`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcode_mode_carries_every_planned_track_under_its_language_to_each_leg() {
    require("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    let contribution = dir.path().join("contribution.ts");
    // The venue sends them in another order than planned.
    aac_tracks(&contribution, 8, &[("rus", 660), ("hye", 880), ("kaz", 440)]);
    let source_port = peer_port();
    let mut srt = SrtReceiver::start(peer_port());
    let all = UdpCapture::start();
    let mut nginx = NginxRtmp::start();
    let channels = [
        channel("kz-srt", &format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{}\" }}", srt.port))
            + "audio = [\"kaz\", \"rus\"]\n",
        channel("all-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", all.port)),
        channel(
            "ru-rtmp",
            &format!("{{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{}/live\", stream_key = \"ru\" }}", nginx.port),
        ) + "audio = [\"rus\"]\n",
    ];
    let config = udp_contribution(
        source_port,
        "mode = \"transcode\"\nwidth = 320\nheight = 180\nframerate = 25\ngop = 25\n\
         audio = [\"aac:kaz\", \"aac:rus\", \"aac:hye\"]\n",
        &channels,
    );
    let run = Run::start(&config).await;
    send_live(&contribution, source_port).await;
    let during = run.status().source;
    let status = run.relay.shutdown().await;
    srt.stop();
    nginx.stop();
    assert_eq!(status.leg("kz-srt").expect("kz").audio, ["kaz", "rus"]);
    assert!(during.last_error.is_none(), "every track has its lane: {during:?}");

    let (all_path, datagrams) = all.finish();
    common::check_ts(&datagrams.concat()).assert_clean("the UDP leg");
    common::check_ts(&std::fs::read(&srt.path).expect("SRT capture")).assert_clean("the SRT leg");
    let languages = |path: &Path| -> Vec<(String, String)> {
        streams(path).into_iter().skip(1).map(|(codec, _, lang)| (codec, lang)).collect()
    };
    let aac = |l: &[&str]| -> Vec<(String, String)> { l.iter().map(|l| ("aac".into(), l.to_string())).collect() };
    assert_eq!(languages(&srt.path), aac(&["kaz", "rus"]));
    assert_eq!(languages(&all_path), aac(&["kaz", "rus", "hye"]));

    let hz = [("kaz", 440.0), ("rus", 660.0), ("hye", 880.0)];
    let heard = |path: &Path, map: &str, wanted: &str| {
        let got = tones(path, map);
        let near = |f: f64| got.iter().filter(|g| (*g - f).abs() <= 0.05 * f).count();
        for (language, f) in hz {
            let n = near(f);
            if language == wanted {
                assert!(n >= 12, "{}: {map} has {wanted}'s tone in only {n} quarter seconds: {got:?}", path.display());
            } else {
                assert_eq!(n, 0, "{}: {map} ({wanted}) carries {language}'s tone: {got:?}", path.display());
            }
        }
    };
    for (i, l) in ["kaz", "rus"].iter().enumerate() {
        heard(&srt.path, &format!("0:a:{i}"), l);
    }
    for (i, l) in ["kaz", "rus", "hye"].iter().enumerate() {
        heard(&all_path, &format!("0:a:{i}"), l);
    }
    let recordings = nginx.recordings("ru");
    assert!(!recordings.is_empty(), "nginx recorded nothing for the RTMP leg");
    let flv = recordings.iter().max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).expect("one");
    assert_eq!(streams(flv).iter().filter(|s| s.0 == "aac").count(), 1, "one AAC track over RTMP");
    heard(flv, "0:a:0", "rus");
}

/// A contribution whose tracks differ from `[program] audio` in transcode
/// mode: a track in a language not planned is left out rather than put
/// under another's, a planned one it lacks carries silence, and the
/// status says both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_transcode_mode_the_status_names_tracks_the_contribution_adds_or_lacks() {
    require("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    let contribution = dir.path().join("contribution.ts");
    aac_tracks(&contribution, 6, &[("rus", 660), ("tgk", 880)]);
    let source_port = peer_port();
    let all = UdpCapture::start();
    let channels = [channel("all-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", all.port))];
    let config = udp_contribution(
        source_port,
        "mode = \"transcode\"\nwidth = 320\nheight = 180\nframerate = 25\ngop = 25\naudio = [\"aac:kaz\", \"aac:rus\"]\n",
        &channels,
    );
    let run = Run::start(&config).await;
    let sending = tokio::spawn(async move { send_live(&contribution, source_port).await });
    let said =
        wait_for(Duration::from_secs(8), || run.status().source.last_error.is_some_and(|e| e.contains("kaz"))).await;
    let source = run.status().source;
    sending.await.expect("sent");
    run.relay.shutdown().await;
    assert!(said, "the status never named the missing track: {source:?}");
    let error = source.last_error.unwrap_or_default();
    assert!(error.contains("AAC tgk has no place in [program] audio"), "{error}");
    assert!(error.contains("[program] audio plans kaz but the contribution carries no such AAC track"), "{error}");
    let (path, _) = all.finish();
    assert!(tones(&path, "0:a:0").is_empty(), "the kaz lane is silent: {:?}", tones(&path, "0:a:0"));
    assert!(tones(&path, "0:a:1").iter().filter(|f| (*f - 660.0).abs() < 33.0).count() >= 8, "rus is heard");
}
