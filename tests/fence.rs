//! The send fence of cluster mode, in a process of its own (the fence is
//! process-wide): a leg sends nothing once its node's lease may have lapsed,
//! and sends again under a new lease. A UDP leg sent directly by the
//! fan-out, to a real socket.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use simulcast::media::fanout::{DirectUdp, LegInput};
use simulcast::media::fence;

fn batch() -> gst::BufferList {
    let mut list = gst::BufferList::new();
    // One 7-packet chunk of null packets.
    let mut chunk = vec![0u8; 7 * 188];
    for p in chunk.chunks_mut(188) {
        p[..4].copy_from_slice(&[0x47, 0x1f, 0xff, 0x10]);
    }
    list.get_mut().unwrap().add(gst::Buffer::from_mut_slice(chunk));
    list
}

fn received(rx: &std::net::UdpSocket) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 2048];
    while rx.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn a_leg_sends_only_while_the_fence_is_open() {
    gst::init().unwrap();
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let leg = LegInput::new(Duration::from_secs(1));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    leg.attach_direct(Arc::new(DirectUdp::new(socket, rx.local_addr().unwrap(), |_| {}).unwrap()));

    // Single-node mode: never set, always open.
    leg.offer(&batch(), 1);
    assert_eq!(received(&rx), 1, "an unset fence stopped a leg");

    fence::open_until(Instant::now() + Duration::from_secs(60));
    leg.offer(&batch(), 2);
    assert_eq!(received(&rx), 1, "a leg under a live lease sent nothing");

    // The lease ran out (the process was stopped past it): nothing goes.
    fence::open_until(Instant::now() + Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(40));
    leg.offer(&batch(), 3);
    assert_eq!(received(&rx), 0, "a leg sent after its node's lease ran out");

    fence::close();
    leg.offer(&batch(), 4);
    assert_eq!(received(&rx), 0, "a leg sent with the fence closed");

    // A new lease: a leg started under the lost one never sends again (a
    // carrier's placement went with that lease; another node may carry
    // the leg now), one started under the new lease sends.
    fence::open_until(Instant::now() + Duration::from_secs(60));
    leg.offer(&batch(), 5);
    assert_eq!(received(&rx), 0, "a leg of the lost lease sent under the new one");
    let new = LegInput::new(Duration::from_secs(1));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    new.attach_direct(Arc::new(DirectUdp::new(socket, rx.local_addr().unwrap(), |_| {}).unwrap()));
    new.offer(&batch(), 6);
    assert_eq!(received(&rx), 1, "a leg of the new lease sent nothing");
    // A relay started for a placement read under the lost lease gives its
    // legs that lease's generation: they stay silent.
    let stale = LegInput::new(Duration::from_secs(1));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    stale.attach_direct(Arc::new(DirectUdp::new(socket, rx.local_addr().unwrap(), |_| {}).unwrap()));
    stale.fence_in(fence::generation() - 1);
    stale.offer(&batch(), 7);
    assert_eq!(received(&rx), 0, "a leg given a lost lease's generation sent");
}
