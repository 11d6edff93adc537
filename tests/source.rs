//! The contribution feed: garbage on its port is refused and reported, and
//! the legs stay up.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use simulcast::media::failover::Feed;
use simulcast::media::source::SourceState;
use std::sync::atomic::Ordering::Relaxed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_contribution_port_is_refused_reported_and_the_legs_stay_up() {
    let source_port = peer_port();
    let encoder = ChildGuard(venue_encoder(&[source_port]));
    let mut srt_rx = SrtReceiver::start(peer_port());
    let udp_rx = UdpCapture::start();
    let mut config = config_with(&[
        channel("a-srt", &format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{}\" }}", srt_rx.port)),
        channel("b-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp_rx.port)),
    ]);
    config.source = simulcast::config::parse(&format!(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{source_port}\"\n"
    ))
    .expect("source config")
    .source;
    let run = Run::start(&config).await;
    wait_on_air(&run.relay, &["a-srt", "b-udp"], Duration::from_secs(15)).await;
    assert_eq!(run.status().source.state, SourceState::Receiving, "{:#?}", run.status().source);

    // An HTTP request, random bytes and a misaligned TS fragment, for 2 s.
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = ("127.0.0.1", source_port);
    let mut reported = None;
    for i in 0..80 {
        let junk: Vec<u8> = match i % 3 {
            0 => b"GET / HTTP/1.1\r\nHost: contribution\r\n\r\n".to_vec(),
            1 => (0..1316).map(|_| fastrand::u8(..0x47)).collect(),
            _ => [&[0x47u8][..], &[0u8; 100][..]].concat(),
        };
        sender.send_to(&junk, target).expect("send garbage");
        tokio::time::sleep(Duration::from_millis(25)).await;
        let s = run.status().source;
        if s.state == SourceState::Error && reported.is_none() {
            reported = s.last_error.clone();
        }
    }
    let message = reported.expect("the source never reported the garbage");
    assert!(message.contains("not MPEG-TS"), "{message}");
    assert!(message.contains(&format!("udp://127.0.0.1:{source_port}")), "message does not name the feed: {message}");

    // Garbage over: the feed recovers, and no leg ever reconnected.
    let recovered = wait_for(Duration::from_secs(5), || run.status().source.state == SourceState::Receiving).await;
    assert!(recovered, "source did not recover: {:#?}", run.status().source);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = run.relay.shutdown().await;
    drop(encoder);
    srt_rx.stop();
    let (_, grams) = udp_rx.finish();

    assert!(status.source.garbage_bytes > 30_000, "{:?}", status.source);
    for leg in &status.legs {
        assert_eq!(leg.reconnects, 0, "{leg:?}");
        assert!(leg.bytes_sent > 100_000, "{leg:?}");
    }
    // Nothing that was not MPEG-TS reached a partner.
    assert!(grams.iter().all(|g| g.len() % 188 == 0), "a datagram that is not whole TS packets was relayed");
    let report = check_ts(&grams.concat());
    assert_eq!(report.not_sync, 0, "{report:?}");
    assert!(report.packets > 1000, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_contribution_in_listener_mode_is_relayed() {
    require("gst-launch-1.0", "gstreamer1.0-tools");
    let source_port = peer_port();
    let udp_rx = UdpCapture::start();
    let config = srt_listener_to_udp(source_port, udp_rx.port);
    let run = Run::start(&config).await;
    // The contribution encoder calls in, with the passphrase.
    let encoder = ChildGuard(
        Command::new("gst-launch-1.0")
            .args(["-q", "videotestsrc", "is-live=true", "!", "video/x-raw,width=320,height=180,framerate=25/1"])
            .args(["!", "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=25", "bitrate=600"])
            .args(["!", "h264parse", "!", "mpegtsmux", "name=m", "alignment=7", "!", "srtsink"])
            .arg(format!("uri=srt://127.0.0.1:{source_port}"))
            .args(["passphrase=contribution-secret", "sync=false"])
            .args(["audiotestsrc", "is-live=true", "!", "audioconvert", "!", "avenc_aac", "!", "aacparse", "!", "m."])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn encoder"),
    );
    wait_on_air(&run.relay, &["b-udp"], Duration::from_secs(15)).await;
    let received = wait_for(Duration::from_secs(5), || udp_rx.bytes() > 200_000).await;
    let status = run.relay.shutdown().await;
    drop(encoder);
    let (path, _) = udp_rx.finish();
    assert!(received, "too little relayed from the SRT contribution: {status:#?}");
    let p = ffprobe(&path);
    assert!(p.codecs.contains(&"h264".to_string()) && p.codecs.contains(&"aac".to_string()), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_contribution_is_paced_in_real_time_and_looped() {
    require("gst-launch-1.0", "gstreamer1.0-tools");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("three-seconds.ts");
    let made = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=75", "!", "video/x-raw,width=320,height=180,framerate=25/1"])
        .args(["!", "x264enc", "speed-preset=ultrafast", "key-int-max=25", "bitrate=600", "!", "h264parse"])
        .args(["!", "mpegtsmux", "name=m", "!", "filesink"])
        .arg(format!("location={}", file.display()))
        .args(["audiotestsrc", "num-buffers=140", "!", "audioconvert", "!", "avenc_aac", "!", "aacparse", "!", "m."])
        .status()
        .expect("make a TS file");
    assert!(made.success());
    let file_bytes = std::fs::metadata(&file).expect("file").len();

    let udp_rx = UdpCapture::start();
    let mut config =
        config_with(&[channel("b-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp_rx.port))]);
    config.source = simulcast::config::parse(&format!(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"file\"\npath = \"{}\"\n",
        file.display()
    ))
    .expect("source config")
    .source;
    let run = Run::start(&config).await;
    wait_on_air(&run.relay, &["b-udp"], Duration::from_secs(10)).await;
    // The file is read at its own pace: after 1 s, well under the whole
    // 3 s file has come in. (The legs carry the program encoded at its own
    // bitrate, so the pace shows on the feed's side.)
    assert!(wait_for(Duration::from_secs(5), || run.status().source.bytes_in > 0).await, "the file is not read");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_one_second = run.status().source.bytes_in;
    assert!(after_one_second < file_bytes * 2 / 3, "not paced: {after_one_second} of {file_bytes} bytes after 1 s");
    // Looped: after 7 s, more than the file has come in, pictures still
    // decode from it, and the partner still gets the program.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let frames_before = run.status().source.frames;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let source = run.status().source;
    let status = run.relay.shutdown().await;
    let (path, grams) = udp_rx.finish();
    assert!(
        source.bytes_in > file_bytes * 3 / 2,
        "not looped: {} bytes read from a {file_bytes}-byte file",
        source.bytes_in
    );
    assert!(source.frames > frames_before, "no pictures decoded after the loop: {source:?}");
    assert_eq!(status.source.restarts, 0, "{:?}", status.source);
    let total: u64 = grams.iter().map(|g| g.len() as u64).sum();
    assert!(total > 100_000, "the partner got {total} bytes");
    let p = ffprobe(&path);
    assert!(p.codecs.contains(&"h264".to_string()) && p.codecs.contains(&"aac".to_string()), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_caller_with_the_wrong_passphrase_is_named_in_the_status() {
    require("ffmpeg", "ffmpeg");
    let source_port = peer_port();
    let udp_rx = UdpCapture::start();
    let config = srt_listener_to_udp(source_port, udp_rx.port);
    let run = Run::start(&config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The venue's encoder (ffmpeg) calls with another passphrase.
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x90:rate=10", "-t", "2"])
        .args(["-c:v", "libx264", "-f", "mpegts"])
        .arg(format!("srt://127.0.0.1:{source_port}?mode=caller&passphrase=not-the-secret-1&pbkeylen=16"))
        .output()
        .expect("ffmpeg");
    assert!(!out.status.success(), "the listener let a wrong passphrase in");
    let said = |run: &Run| run.status().source.last_error.unwrap_or_default();
    let named = wait_for(Duration::from_secs(5), || said(&run).contains("refused: wrong passphrase")).await;
    let status = run.status().source;
    run.relay.shutdown().await;
    assert!(named, "{status:?}");
    assert_eq!(status.state.as_str(), "WAITING");
}

/// ffmpeg sending `seconds` of MPEG-TS in video codec `vcodec` to `port`, in real time.
fn ffmpeg_to(port: u16, vcodec: &str, seconds: u32) -> Child {
    require("ffmpeg", "ffmpeg");
    Command::new("ffmpeg")
        .args(["-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"])
        .args(["-t", &seconds.to_string(), "-c:v", vcodec, "-g", "25", "-b:v", "600k", "-c:a", "aac"])
        .args(["-f", "mpegts"])
        .arg(format!("udp://127.0.0.1:{port}?pkt_size=1316"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg")
}

/// In transcode mode an HEVC contribution is named in the status, and the
/// H.264 that follows it is decoded again: the feed never wedges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contribution_in_another_codec_is_named_and_the_feed_recovers_when_h264_comes() {
    let source_port = peer_port();
    let udp_rx = UdpCapture::start();
    let mut config =
        config_with(&[channel("b-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp_rx.port))]);
    config.source = simulcast::config::parse(&format!(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{source_port}\"\n\
         [program]\nmode = \"transcode\"\n"
    ))
    .expect("source config")
    .source;
    config.program.mode = simulcast::config::ProgramMode::Transcode;
    let run = Run::start(&config).await;
    let mut hevc = ChildGuard(ffmpeg_to(source_port, "libx265", 4));
    let named = wait_for(Duration::from_secs(4), || {
        run.status().source.last_error.unwrap_or_default().contains("HEVC video: this programme expects H.264")
    })
    .await;
    let during = run.status().source;
    let _ = hevc.0.wait();
    // Not one picture of it was programme: the slate stayed on throughout
    // (no spurious SLATE -> PRIMARY while the pipeline restarts).
    let switches = run.relay.take_source_switches();
    assert!(switches.iter().all(|s| s.to != Feed::Primary), "the HEVC feed went on air: {switches:?}");
    let frames_before = run.status().source.frames;
    let _h264 = ChildGuard(ffmpeg_to(source_port, "libx264", 30));
    let back = wait_for(Duration::from_secs(10), || {
        let s = run.status().source;
        s.state == SourceState::Receiving && s.frames > frames_before + 25
    })
    .await;
    let after = run.status().source;
    run.relay.shutdown().await;
    assert!(named, "the HEVC contribution was not named: {during:?}");
    assert!(back, "H.264 after HEVC was never decoded: {after:?}");
}

/// One UDP leg to `udp_port`; the contribution an SRT listener on
/// `source_port` with the passphrase `contribution-secret`.
fn srt_listener_to_udp(source_port: u16, udp_port: u16) -> simulcast::config::Config {
    let mut config =
        config_with(&[channel("b-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{udp_port}\" }}"))]);
    config.source = simulcast::config::parse(&format!(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"srt\"\nuri = \"srt://127.0.0.1:{source_port}\"\nmode = \"listener\"\n\
         passphrase = \"contribution-secret\"\n"
    ))
    .expect("source config")
    .source;
    config
}

/// A transcoding feed's pictures reach the program shortly before they
/// are due, not as soon as they decode. ffmpeg stamps its MPEG-TS 0.7 s
/// ahead of its PCR (its default mux delay), as venues' encoders do; that
/// wait is now spent compressed before the decoder, where decoded pictures
/// used to wait in the program's queue (12 MB at 960x540, 93 MB at 1080p50).
/// Each picture is still counted as it arrives, so the failover's health
/// does not lag behind the feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoding_feeds_pictures_wait_compressed_and_are_counted_as_they_come() {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use simulcast::media::source::{Contribution, DECODED_AHEAD, FeedOut, RawSink, SourceCounters};
    use std::sync::{Arc, Mutex};

    simulcast::media::init().expect("GStreamer");
    let port = peer_port();
    let config = simulcast::config::parse(&format!(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:{port}\"\n\
         [program]\nmode = \"transcode\"\n"
    ))
    .expect("config");
    let format = config.program.clone();

    // The program's side: an appsrc, as the program pipeline has one per
    // feed, read by an appsink noting how long before its time each
    // picture came (its due clock time less the clock's now).
    let clock = simulcast::media::clock();
    let leads: Arc<Mutex<Vec<i64>>> = Arc::default();
    let program = gst::Pipeline::new();
    program.use_clock(Some(&clock));
    let appsrc = gstreamer_app::AppSrc::builder().is_live(true).format(gst::Format::Time).build();
    let sink = {
        let (leads, clock) = (Arc::clone(&leads), clock.clone());
        gstreamer_app::AppSink::builder()
            .sync(false)
            .callbacks(
                gstreamer_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        let now = clock.time().nseconds() as i64;
                        if let (Some(pts), Some(base)) = (sample.buffer().and_then(|b| b.pts()), sink.base_time()) {
                            leads.lock().unwrap().push((pts + base).nseconds() as i64 - now);
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            )
            .build()
    };
    program.add_many([appsrc.upcast_ref::<gst::Element>(), sink.upcast_ref()]).unwrap();
    appsrc.link(&sink).unwrap();
    program.set_state(gst::State::Playing).unwrap();
    let raw = RawSink::new();
    raw.attach(appsrc.clone(), vec![]);

    let counters = Arc::new(SourceCounters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let feed = Contribution::start(
        &config.source,
        &format,
        "t",
        FeedOut::Raw(Arc::clone(&raw)),
        Arc::clone(&counters),
        Duration::from_millis(500),
        None,
        stop_rx,
    )
    .expect("the feed starts");
    let _venue = common::feeds::ffmpeg_feed(port, "white", true);

    // Pictures counted as they come run ahead of those decoded by the
    // lead: 0.6 s at 25 pictures a second is 15.
    let mut widest = 0u64;
    let ahead = wait_for(Duration::from_secs(8), || {
        let (got, decoded) = (counters.frames.load(Relaxed), counters.decoded.load(Relaxed));
        widest = widest.max(got.saturating_sub(decoded));
        decoded > 50 && widest >= 8
    })
    .await;
    let leads: Vec<i64> = leads.lock().unwrap().clone();
    stop_tx.send(true).unwrap();
    drop(feed);
    raw.detach();
    program.set_state(gst::State::Null).unwrap();

    assert!(leads.len() > 50, "only {} pictures reached the program", leads.len());
    // The first second's pictures settle the decoder; the rest are judged.
    let mut judged: Vec<i64> = leads[25..].to_vec();
    judged.sort_unstable();
    let (median, earliest) = (judged[judged.len() / 2], judged[judged.len() - 1]);
    let ms = |ns: i64| ns as f64 / 1e6;
    println!(
        "pictures reached the program {:.0} ms before they were due (median), {:.0} ms at the earliest; {widest} pictures counted before they decoded",
        ms(median),
        ms(earliest)
    );
    let ahead_ns = DECODED_AHEAD.as_nanos() as i64;
    assert!(
        earliest < ahead_ns + 150_000_000,
        "a picture reached the program {:.0} ms before its time: it waited decoded, not compressed",
        ms(earliest)
    );
    assert!(median > -20_000_000, "pictures reached the program {:.0} ms late (median)", -ms(median));
    assert!(ahead, "arrivals were not counted before the decoder: at most {widest} pictures ahead of the decoded ones");
}
