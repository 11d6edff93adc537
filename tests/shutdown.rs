//! A relay's shutdown leaves nothing running (issue 16): with 12 legs on
//! air and a delayed leg's recording under way, `Relay::shutdown` returns
//! within 5 s with every thread of its own (fan-out, splicer, recorder)
//! joined. One test in its own binary: the threads it counts are its own.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::{channel, wait_on_air};
use simulcast::media::program::Cue;
use simulcast::media::recording::RecordingPlan;
use simulcast::relay::{DelayPlan, Relay, RelayPlan};

/// The names of this process's threads now.
fn threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

const OURS: [&str; 4] = ["fanout", "splicer", "recorder", "delayed-feed"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_joins_every_relay_thread_within_5_s() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Twelve partners' ports, bound for the whole test and never read.
    let ports: Vec<std::net::UdpSocket> =
        (0..12).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    let mut text = String::from(
        "[event]\ntitle = \"t\"\n[source]\ntype = \"test\"\n\
         [program]\nmode = \"passthrough\"\nwidth = 320\nheight = 180\nframerate = 25\ngop = 25\n",
    );
    let mut ids = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let id = format!("leg-{i:02}");
        let uri = format!("{{ type = \"udp\", uri = \"udp://{}\" }}", p.local_addr().unwrap());
        text += &channel(&id, &uri);
        ids.push(id);
    }
    // A thirteenth partner airs an hour late, from the recording.
    let late = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    text += &channel("late", &format!("{{ type = \"udp\", uri = \"udp://{}\" }}", late.local_addr().unwrap()));
    let config = simulcast::config::parse(&text).expect("config");
    let delay = DelayPlan {
        recording: RecordingPlan {
            dir: dir.path().join("rec"),
            retention: Duration::from_secs(7200),
            max_bytes: 1 << 30,
        },
        t0_utc: chrono::Utc::now(),
        delays: vec![("late".into(), Duration::from_secs(3600))],
    };
    let always = Cue { program_from: Some(chrono::DateTime::UNIX_EPOCH), program_until: None, force_slate: false };
    let relay = Relay::start_with(&RelayPlan::from_config(&config), always, Some(delay)).await.expect("relay");
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    wait_on_air(&relay, &ids, Duration::from_secs(15)).await;
    let running = threads();
    for name in ["fanout", "splicer", "recorder"] {
        assert!(running.iter().any(|t| t == name), "no {name} thread while on air: {running:?}");
    }

    let asked = Instant::now();
    let status = relay.shutdown().await;
    let took = asked.elapsed();
    let left: Vec<String> = threads().into_iter().filter(|t| OURS.contains(&t.as_str())).collect();
    eprintln!("shutdown took {took:?}; threads left: {:?}", threads());
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert!(left.is_empty(), "relay threads still running after shutdown: {left:?}");
    assert!(
        status.legs.iter().filter(|l| l.channel_id != "late").all(|l| l.state.to_string() == "STOPPED"),
        "{status:#?}"
    );
    drop((ports, late));
}
