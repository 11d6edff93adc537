//! Legs to real receivers nobody here wrote: srt-live-transmit (SRT), nginx
//! with libnginx-mod-rtmp (RTMP) and a plain UDP socket; every capture is
//! checked with ffprobe.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_rtmp_and_udp_partners_receive_decodable_h264_and_aac() {
    let mut srt = SrtReceiver::start(free_udp_port());
    let mut nginx = NginxRtmp::start(free_tcp_port());
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
