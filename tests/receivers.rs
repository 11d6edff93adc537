//! Legs to real receivers nobody here wrote: srt-live-transmit (SRT), nginx
//! with libnginx-mod-rtmp (RTMP) and a plain UDP socket; every capture is
//! checked with ffprobe.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_rtmp_and_udp_partners_receive_decodable_h264_and_aac() {
    let mut srt = SrtReceiver::start(peer_port());
    let mut nginx = NginxRtmp::start();
    let udp = UdpCapture::start();
    let config = config_with(&[
        channel("kz-srt", &format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{}\" }}", srt.port)),
        channel(
            "kg-rtmp",
            &format!("{{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{}/live\", stream_key = \"kg\" }}", nginx.port),
        ),
        channel("mn-udp", &format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{}\" }}", udp.port)),
    ]);
    let run = Run::start(&config).await;
    wait_on_air(&run.relay, &["kz-srt", "kg-rtmp", "mn-udp"], Duration::from_secs(10)).await;
    let on_air = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let status = run.relay.shutdown().await;
    let sent = on_air.elapsed();
    srt.stop();
    nginx.stop();
    let (udp_path, _) = udp.finish();

    for leg in &status.legs {
        assert_eq!(leg.reconnects, 0, "{leg:?}");
        assert_eq!(leg.dropped_buffers, 0, "{leg:?}");
        assert!(leg.bytes_sent > 500_000, "{leg:?}");
    }
    assert_decodable(&srt.path, sent, "SRT partner");
    assert_decodable(&udp_path, sent, "UDP partner");
    let flv = nginx.recordings("kg");
    assert_eq!(flv.len(), 1, "one RTMP publish expected: {flv:?}");
    assert_decodable(&flv[0], sent, "RTMP partner");
}

/// The partner calls in (SRT listener leg), RIST to ffmpeg's librist
/// receiver, and a file leg; each capture decodable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_listener_rist_and_file_legs_deliver_decodable_streams() {
    require("ffmpeg", "ffmpeg");
    let dir = tempfile::tempdir().expect("tempdir");
    let listen_port = peer_port();
    // RIST's RTCP is the odd port after it, which `peer_port` keeps too.
    let rist_port = loop {
        let p = peer_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let rist_out = dir.path().join("rist.ts");
    let mut rist_rx = ChildGuard(
        std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-rist_profile", "simple"])
            // RIST drops data until its RTCP handshake; then probe briefly.
            .args(["-analyzeduration", "2000000", "-probesize", "2000000", "-i"])
            .arg(format!("rist://@127.0.0.1:{rist_port}"))
            .args(["-map", "0", "-c", "copy", "-f", "mpegts"])
            .arg(&rist_out)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn ffmpeg RIST receiver"),
    );
    let file_out = dir.path().join("leg.ts");
    let config = config_with(&[
        channel(
            "tj-srt-listener",
            &format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{listen_port}\", mode = \"listener\" }}"),
        ),
        channel("cn-rist", &format!("{{ type = \"rist\", uri = \"rist://127.0.0.1:{rist_port}\" }}")),
        channel("archive", &format!("{{ type = \"file\", path = \"{}\" }}", file_out.display())),
    ]);
    let run = Run::start(&config).await;
    // The partner's caller, as srt-live-transmit would run at their end.
    let srt_out = dir.path().join("srt-caller.ts");
    let caller_file = std::fs::File::create(&srt_out).expect("capture file");
    let caller = ChildGuard(
        std::process::Command::new("srt-live-transmit")
            .arg("-q")
            .arg(format!("srt://127.0.0.1:{listen_port}?mode=caller"))
            .arg("file://con")
            .stdout(caller_file)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("spawn srt-live-transmit caller"),
    );
    wait_on_air(&run.relay, &["tj-srt-listener", "cn-rist", "archive"], Duration::from_secs(10)).await;
    let on_air = Instant::now();
    // RIST drops what arrives before its RTCP handshake and ffmpeg writes
    // only once it has probed the stream: wait for the partner's first bytes.
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let rist_started = wait_for(Duration::from_secs(15), || size(&rist_out) > 0).await;
    assert!(rist_started, "the RIST partner wrote nothing in 15 s");
    let rist_writing = Instant::now();
    eprintln!("RIST partner writing {:?} after the leg went on air", on_air.elapsed());
    let rist_first = size(&rist_out);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(size(&rist_out) > rist_first, "the RIST partner stopped writing");
    let status = run.relay.shutdown().await;
    let sent = on_air.elapsed();
    let rist_sent = rist_writing.elapsed();
    rist_rx.interrupt();
    drop(caller);

    let srt = status.leg("tj-srt-listener").and_then(|l| l.srt).expect("SRT figures on an SRT leg");
    assert!(srt.packets_sent > 100, "{srt:?}");
    assert_decodable(&srt_out, sent, "SRT partner calling in");
    assert_decodable(&file_out, sent, "file leg");
    let p = ffprobe(&rist_out);
    assert!(p.codecs.iter().any(|c| c == "h264") && p.codecs.iter().any(|c| c == "aac"), "RIST partner: {p:?}");
    // Measured from the partner's first bytes: RIST drops what arrives
    // before its RTCP handshake, and ffmpeg writes only once it has probed
    // the stream, which takes longer on a loaded machine.
    eprintln!(
        "RIST partner: {:?}, {:.2} s of {:.2} s since it started writing",
        p.codecs,
        p.duration,
        rist_sent.as_secs_f64()
    );
    assert!(
        p.duration > rist_sent.as_secs_f64() * 0.8,
        "RIST partner got {:.1} s in the {:.1} s since it started writing",
        p.duration,
        rist_sent.as_secs_f64()
    );
}

/// The ports handed to peers that bind their own: never one a socket bound
/// to port 0 could get (below the ephemeral range), never the same one
/// twice in a process, and even (the odd one after it is RIST's RTCP),
/// also from parallel threads.
#[test]
fn peer_ports_are_outside_the_ephemeral_range_and_never_handed_out_twice() {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let threads: Vec<_> =
        (0..4).map(|_| std::thread::spawn(|| (0..250).map(|_| peer_port()).collect::<Vec<_>>())).collect();
    let ports: Vec<u16> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let mut taken = std::collections::HashSet::new();
    for p in &ports {
        assert!(*p < low, "port {p} is in the ephemeral range (from {low})");
        assert!(p % 2 == 0, "port {p} is odd");
        assert!(taken.insert(*p), "port {p} handed out twice");
    }
}

/// The grand final's twelve partners as SRT callers, connecting at the
/// same instant, each to its own srt-live-transmit (which takes one caller
/// and exits when it leaves: a false break would lose its partner for good).
/// Every leg is on air from its first connection, and each partner got
/// what its leg says it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_srt_callers_connect_at_once_and_each_partner_gets_what_its_leg_sent() {
    let mut receivers: Vec<SrtReceiver> = (0..12).map(|_| SrtReceiver::start(peer_port())).collect();
    let ids: Vec<String> = (1..=12).map(|i| format!("srt-{i}")).collect();
    let channels: Vec<String> = ids
        .iter()
        .zip(&receivers)
        .map(|(id, rx)| channel(id, &format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{}\" }}", rx.port)))
        .collect();
    let run = Run::start(&config_with(&channels)).await;
    let names: Vec<&str> = ids.iter().map(String::as_str).collect();
    wait_on_air(&run.relay, &names, Duration::from_secs(10)).await;
    // Long enough that what a receiver still holds at the end (its 120 ms
    // SRT latency) is well inside the 5 % allowed below.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let status = run.relay.shutdown().await;
    for rx in &mut receivers {
        rx.stop();
    }
    for (id, rx) in ids.iter().zip(&receivers) {
        let leg = status.leg(id).expect("leg");
        assert_eq!((leg.reconnects, leg.dropped_buffers, leg.last_error.as_deref()), (0, 0, None), "{leg:?}");
        // libsrt's own figures, read from its statistics structure: each
        // packet carries 188 to 1316 bytes (the figures are from the last
        // look, up to a tick before the final byte count: 100 packets'
        // slack), and loopback's RTT is a fraction of a millisecond.
        let srt = leg.srt.expect("SRT figures");
        assert!(srt.packets_sent > 100, "{leg:?}");
        let slack = 100 * 1316;
        assert!(
            (srt.packets_sent * 1316 + slack >= leg.bytes_sent) && (srt.packets_sent * 188 <= leg.bytes_sent + slack),
            "{id}: {} packets for {} bytes",
            srt.packets_sent,
            leg.bytes_sent
        );
        assert!(srt.rtt_ms > 0.0 && srt.rtt_ms < 50.0, "{id}: RTT {} ms", srt.rtt_ms);
        let received = rx.bytes();
        assert!(
            leg.bytes_sent > 100_000 && leg.bytes_sent.abs_diff(received) * 20 <= received,
            "{id}: reported {}, received {received}",
            leg.bytes_sent
        );
    }
}

/// A partner whose listener wants another passphrase refuses the leg at
/// the handshake: the leg says so in its error, naming its ingest, and
/// nothing counts as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_srt_partner_refusing_the_passphrase_is_named_in_the_legs_error() {
    let mut rx = SrtReceiver::start_with_passphrase(peer_port(), "the-partners-own-secret");
    let ingest = format!(
        "{{ type = \"srt\", uri = \"srt://127.0.0.1:{}\", passphrase = \"not-the-partners-secret\" }}",
        rx.port
    );
    let run = Run::start(&config_with(&[channel("kz-srt", &ingest)])).await;
    let error = || run.status().leg("kz-srt").and_then(|l| l.last_error.clone());
    let named = wait_for(Duration::from_secs(8), || error().is_some()).await;
    let said = error();
    let status = run.relay.shutdown().await;
    rx.stop();
    let leg = status.leg("kz-srt").expect("leg");
    assert!(named, "no error on a refused leg: {leg:?}");
    let said = said.unwrap_or_default();
    assert!(said.contains(&format!("127.0.0.1:{}", rx.port)), "the error does not name the ingest: {said}");
    assert!(said.contains("passphrase"), "the error does not say the passphrase was refused: {said}");
    assert_eq!(leg.bytes_sent, 0, "{leg:?}");
}

/// An SRT caller leg holds its chunks and hands them to libsrt together,
/// every 40 ms of programme at 120 ms latency (libsrt's send thread then
/// wakes once per hold, not once per fan-out batch), each chunk with its
/// arrival time as its SRT source time: the partner's srt-live-transmit
/// still plays them out at the pace they came in, not in 40 ms bursts.
#[test]
fn an_srt_leg_hands_libsrt_its_chunks_in_holds_and_the_partner_gets_them_at_their_pace() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use gstreamer as gst;
    use gstreamer::prelude::*;
    use simulcast::config::{Host, SrtEndpoint, SrtMode};
    use simulcast::media::fanout::DirectSend;
    use simulcast::media::srt::DirectSrt;

    simulcast::media::init().expect("GStreamer");
    let capture = UdpCapture::start();
    let port = peer_port();
    let mut rx = SrtReceiver::start_to_udp(port, capture.port);
    let endpoint = SrtEndpoint {
        host: Host::Ip([127, 0, 0, 1].into()),
        port,
        mode: SrtMode::Caller,
        latency: Duration::from_millis(120),
        passphrase: None,
        stream_id: None,
    };
    let hand_overs = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&hand_overs);
    let leg = DirectSrt::connect(&endpoint, ([127, 0, 0, 1], port).into(), move |_| {
        h.fetch_add(1, Ordering::Relaxed);
    })
    .expect("libsrt 1.5 (libsrt1.5-gnutls)")
    .expect("an SRT socket");
    let deadline = Instant::now() + Duration::from_secs(5);
    while leg.state() != simulcast::media::srt::State::Connected {
        assert!(Instant::now() < deadline, "srt-live-transmit on {port} never answered: {:?}", leg.state());
        std::thread::sleep(Duration::from_millis(5));
    }

    // A chunk (7 TS packets, numbered) every 2 ms for 1.5 s, stamped with
    // its arrival on the shared clock as the fan-out does.
    const CHUNKS: u32 = 750;
    let clock = simulcast::media::clock();
    for n in 0..CHUNKS {
        let mut chunk = vec![0xffu8; 1316];
        for packet in chunk.chunks_mut(188) {
            packet[..4].copy_from_slice(&[0x47, 0x1f, 0xff, 0x10]);
            packet[4..8].copy_from_slice(&n.to_be_bytes());
        }
        let mut buffer = gst::Buffer::from_mut_slice(chunk);
        buffer.get_mut().unwrap().set_pts(clock.time());
        let mut list = gst::BufferList::new();
        list.get_mut().unwrap().add(buffer);
        assert_eq!(leg.send(&list), 0, "libsrt refused chunk {n}");
        std::thread::sleep(Duration::from_millis(2));
    }
    // What a hold keeps at the end (a hold's worth) never goes out.
    let held = simulcast::media::srt::hold_for(endpoint.latency).as_millis() as u32 / 2 + 1;
    let expected = CHUNKS - held;
    let deadline = Instant::now() + Duration::from_secs(3);
    while capture.timed().len() < expected as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    rx.stop();
    let got = capture.timed();

    // Everything, in order.
    let numbers: Vec<u32> = got.iter().map(|(_, d)| u32::from_be_bytes(d[4..8].try_into().unwrap())).collect();
    assert!(numbers.len() >= expected as usize, "the partner got {} chunks of {CHUNKS}", numbers.len());
    assert!(numbers.iter().enumerate().all(|(i, &n)| n == i as u32), "out of order or missing: {numbers:?}");
    // Handed over in holds: about one per 10 chunks, not one per chunk.
    let hand_overs = hand_overs.load(Ordering::Relaxed);
    assert!(hand_overs <= u64::from(CHUNKS) / 4, "{hand_overs} hand-overs for {CHUNKS} chunks");
    // Played out at their pace: the partner's datagrams come about 2 ms
    // apart, not in bursts of back-to-back ones.
    let mut gaps: Vec<f64> = got.windows(2).map(|w| (w[1].0 - w[0].0).as_secs_f64() * 1e3).collect();
    gaps.sort_by(f64::total_cmp);
    let median = gaps[gaps.len() / 2];
    let close = gaps.iter().filter(|&&g| g < 0.5).count();
    assert!(
        median >= 1.0 && close * 4 < gaps.len(),
        "the partner got chunks in bursts: median gap {median:.2} ms, {close} of {} under 0.5 ms",
        gaps.len()
    );
}
