//! Leg isolation, after Vector's topology crash tests: several legs to real
//! receivers, break one, and the others must not miss a packet; the broken
//! one must come back by itself when its receiver does.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

fn srt(port: u16) -> String {
    format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{port}\" }}")
}
fn udp(port: u16) -> String {
    format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{port}\" }}")
}
fn rtmp(port: u16, key: &str) -> String {
    format!("{{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{port}/live\", stream_key = \"{key}\" }}")
}

fn assert_continuous(data: &[u8], what: &str) {
    let r = check_ts(data);
    assert!(r.packets > 1000, "{what}: only {} packets", r.packets);
    assert_eq!(r.not_sync, 0, "{what}: {r:?}");
    assert_eq!(r.cc_errors, 0, "{what}: continuity errors, a gap: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_partner_vanishing_leaves_srt_and_udp_gapless_and_its_leg_returns() {
    let mut srt_rx = SrtReceiver::start(peer_port());
    let udp_rx = UdpCapture::start();
    let mut nginx = NginxRtmp::start();
    let rtmp_port = nginx.port;
    let config = config_with(&[
        channel("a-srt", &srt(srt_rx.port)),
        channel("b-udp", &udp(udp_rx.port)),
        channel("c-rtmp", &rtmp(rtmp_port, "sk-c-secret-7f3a")),
    ]);
    let run = Run::start(&config).await;
    wait_on_air(&run.relay, &["a-srt", "b-udp", "c-rtmp"], Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    nginx.stop();
    let lost = wait_for(Duration::from_secs(10), || {
        run.status().leg("c-rtmp").is_some_and(|l| l.state.to_string() != "ON_AIR")
    })
    .await;
    assert!(lost, "the RTMP leg did not notice its ingest vanished: {:#?}", run.status());
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dir = nginx.dir.clone();
    let before = nginx.recorded_bytes("sk-c-secret-7f3a");
    // The partner comes back on its own port (bound again: it was gone).
    let nginx = NginxRtmp::start_in(rtmp_port, dir);
    let back = Instant::now();
    let flowing = wait_for(Duration::from_secs(3), || nginx.recorded_bytes("sk-c-secret-7f3a") > before + 2_000).await;
    assert!(flowing, "RTMP leg not flowing again 3 s after its ingest returned: {:#?}", run.status());
    eprintln!("RTMP leg flowing again {:?} after nginx returned", back.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let status = run.relay.shutdown().await;
    srt_rx.stop();
    let (_, grams) = udp_rx.finish();
    for id in ["a-srt", "b-udp"] {
        let leg = status.leg(id).expect("leg");
        assert_eq!((leg.reconnects, leg.dropped_buffers), (0, 0), "{leg:?}");
    }
    let rtmp_leg = status.leg("c-rtmp").expect("leg");
    assert!(rtmp_leg.reconnects >= 1, "{rtmp_leg:?}");
    // The stream key is write-only: not in the error the broken leg reports.
    let dump = format!("{status:?}");
    assert!(!dump.contains("sk-c-secret-7f3a"), "stream key leaked into status: {rtmp_leg:?}");
    assert_continuous(&std::fs::read(&srt_rx.path).expect("srt capture"), "SRT partner");
    assert_continuous(&grams.concat(), "UDP partner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_partner_vanishing_leaves_udp_legs_gapless_and_its_leg_returns() {
    let srt_port = peer_port();
    let mut srt_rx = SrtReceiver::start(srt_port);
    let (u1, u2) = (UdpCapture::start(), UdpCapture::start());
    let config = config_with(&[
        channel("a-srt", &srt(srt_port)),
        channel("b-udp", &udp(u1.port)),
        channel("c-udp", &udp(u2.port)),
    ]);
    let run = Run::start(&config).await;
    wait_on_air(&run.relay, &["a-srt", "b-udp", "c-udp"], Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    srt_rx.stop();
    let lost = wait_for(Duration::from_secs(10), || {
        run.status().leg("a-srt").is_some_and(|l| l.state.to_string() != "ON_AIR")
    })
    .await;
    assert!(lost, "the SRT leg did not notice its ingest vanished: {:#?}", run.status());
    tokio::time::sleep(Duration::from_secs(3)).await;

    let second = srt_rx.path.with_file_name("after-return.ts");
    let mut srt_back = SrtReceiver::start_to(srt_port, second);
    let back = Instant::now();
    let flowing = wait_for(Duration::from_secs(3), || srt_back.bytes() > 2_000).await;
    assert!(flowing, "SRT leg not flowing again 3 s after its ingest returned: {:#?}", run.status());
    eprintln!("SRT leg flowing again {:?} after srt-live-transmit returned", back.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let status = run.relay.shutdown().await;
    srt_back.stop();
    for (id, cap) in [("b-udp", u1), ("c-udp", u2)] {
        let leg = status.leg(id).expect("leg").clone();
        assert_eq!((leg.reconnects, leg.dropped_buffers), (0, 0), "{leg:?}");
        let (_, grams) = cap.finish();
        assert_continuous(&grams.concat(), id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_that_never_answer_do_not_delay_the_others() {
    // Accepts TCP (the kernel completes the handshake) but never speaks RTMP.
    let silent_tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_tcp_port = silent_tcp.local_addr().expect("addr").port();
    // Takes SRT handshake packets and never answers them.
    let silent_udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_udp_port = silent_udp.local_addr().expect("addr").port();
    let mut srt_rx = SrtReceiver::start(peer_port());
    let udp_rx = UdpCapture::start();
    let config = config_with(&[
        channel("dead-rtmp", &rtmp(silent_tcp_port, "x")),
        channel("dead-srt", &srt(silent_udp_port)),
        channel("good-srt", &srt(srt_rx.port)),
        channel("good-udp", &udp(udp_rx.port)),
    ]);
    let run = Run::start(&config).await;
    wait_on_air(&run.relay, &["good-srt", "good-udp"], Duration::from_secs(10)).await;
    // At the moment the good legs are on air, the dead ones are still trying:
    // nobody waited for them.
    let s = run.status();
    for id in ["dead-rtmp", "dead-srt"] {
        let leg = s.leg(id).expect("leg");
        assert!(matches!(leg.state.to_string().as_str(), "CONNECTING" | "RECONNECTING"), "{leg:?}");
    }
    // ON_AIR means the ingest answered; the receivers' own counters may lag
    // that by a read or two.
    let got = wait_for(Duration::from_secs(3), || srt_rx.bytes() > 0 && udp_rx.bytes() > 0).await;
    assert!(got, "good receivers got nothing 3 s after their legs were on air");

    tokio::time::sleep(Duration::from_secs(7)).await;
    let status = run.relay.shutdown().await;
    srt_rx.stop();
    let (_, grams) = udp_rx.finish();
    for id in ["good-srt", "good-udp"] {
        let leg = status.leg(id).expect("leg");
        assert_eq!((leg.reconnects, leg.dropped_buffers), (0, 0), "{leg:?}");
    }
    assert_continuous(&grams.concat(), "good UDP partner");
    // Bytes are what went out on the wire: none to an SRT ingest that never
    // answered (it got handshakes only), all of it to the one that did.
    let dead = status.leg("dead-srt").expect("leg");
    assert_eq!(dead.bytes_sent, 0, "bytes reported for an SRT ingest that never answered: {dead:?}");
    let good = status.leg("good-srt").expect("leg").bytes_sent;
    let received = srt_rx.bytes();
    assert!(good > 100_000 && good.abs_diff(received) * 20 <= received, "reported {good}, received {received}");
    for (id, port) in [("dead-rtmp", silent_tcp_port), ("dead-srt", silent_udp_port)] {
        let leg = status.leg(id).expect("leg");
        let err = leg.last_error.as_deref().unwrap_or("");
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{id}: error does not name its ingest: {leg:?}");
    }
    drop((silent_tcp, silent_udp));
}
