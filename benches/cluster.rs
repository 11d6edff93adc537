//! Cluster failover: a real etcd and `NODES` `simulcastd serve --cluster`
//! nodes on loopback, an event on air with `LEGS` UDP legs (default 12) to
//! partner sockets this bench holds. `KILLS` times (default 10) the leader,
//! which carries every leg, is killed with SIGKILL; measured each time:
//!
//! - election: from the kill to a survivor's `ListNodes` naming another
//!   leader (polled every 20 ms);
//! - partner silence: the longest gap in datagrams at the first partner
//!   around the kill, i.e. from the dead node's last packet to the next
//!   node's first (the partner's own clock, 1 ms resolution or better);
//!
//! then the killed node is started again (as a follower) before the next
//! kill. At the end, CPU (user + system, over 10 s) and RSS of each node:
//! the leader carrying the legs, and the followers.
//!
//! With `PLACEMENT=spread` the nodes run `--placement spread` (each leg on
//! one node) and each kill is of the follower carrying most legs: measured
//! is the longest silence at any partner whose leg was on it, until the
//! leg goes out from another node (no election: the leader lives).
//!
//! `cargo bench --bench cluster` (`LEGS`, `KILLS`, `TTL` in seconds, default
//! 2, `PLACEMENT` `leader` or `spread`, `NODES`, default 3). Needs etcd
//! (Debian's etcd-server; `scripts/deps.sh` installs it).
//!
//! `SOURCE=udp` gives each node a contribution of its own, as a venue's
//! encoder feeding every site: each node listens on its own UDP port, and
//! one gst-launch-1.0 (x264 640x360p25 at 1.5 Mbit/s with AAC, MPEG-TS)
//! sends to all of them; the relays then pass it through rather than
//! encode a test source each. The default is each node's test source.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a bench fails

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simulcast::api::auth::{hash_token, new_token};
use simulcast::proto::event_service_client::EventServiceClient;
use simulcast::proto::monitor_service_client::MonitorServiceClient;
use simulcast::proto::node_service_client::NodeServiceClient;
use simulcast::proto::{self, schedule_event_request::OnAir};
use simulcast::store::{Store, TokenRecord};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// CPU seconds (user + system) a process has used, and its RSS in KiB.
fn cpu_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (ticks(11) + ticks(12)) / hz;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    (cpu, rss)
}

struct Node {
    name: String,
    db: std::path::PathBuf,
    port: u16,
    child: Child,
    /// Its `--config` (its own `[source]`).
    config: std::path::PathBuf,
}

fn start_node(dir: &Path, name: &str, etcd: &str, ttl: usize, config: &Path, port: u16, spread: bool) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_simulcastd"))
        .arg("serve")
        .arg("--db")
        .arg(dir.join(format!("{name}.db")))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--metrics-listen", "off"])
        .arg("--config")
        .arg(config)
        .args(["--cluster", etcd, "--node", name, "--lease-ttl", &format!("{ttl}s")])
        .args(["--placement", if spread { "spread" } else { "leader" }])
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start simulcastd")
}

async fn list(port: u16, token: &str) -> Option<proto::ListNodesResponse> {
    let ask = async {
        let t =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).ok()?.connect().await.ok()?;
        NodeServiceClient::new(t)
            .list_nodes(authed(proto::ListNodesRequest {}, token))
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(1), ask).await.ok().flatten()
}

fn leader_of(r: &proto::ListNodesResponse) -> Option<String> {
    r.nodes.iter().find(|n| n.leader).map(|n| n.name.clone())
}

/// etcd, `count` nodes, `legs` UDP partners (every datagram's arrival
/// timed), and an event on air through the leader.
struct Bench {
    dir: tempfile::TempDir,
    etcd: Child,
    etcd_url: String,
    nodes: Vec<Node>,
    /// The venue's encoder, with `SOURCE=udp`.
    venue: Option<Child>,
    token: String,
    /// Each leg's partner's arrivals, in leg order.
    arrivals: Vec<Arc<Mutex<Vec<Instant>>>>,
    event_id: String,
    ttl: usize,
    spread: bool,
}

impl Bench {
    async fn start(legs: usize, ttl: usize, spread: bool, count: usize, udp: bool) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let etcd = Command::new("etcd")
            .args(["--name", "b", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("b={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (apt-get install etcd-server)");
        let healthy = || {
            std::net::TcpStream::connect(("127.0.0.1", client)).is_ok_and(|mut s| {
                let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                body.contains("\"health\":\"true\"")
            })
        };
        while !healthy() {
            std::thread::sleep(Duration::from_millis(100));
        }

        // The partners: one socket per leg, each datagram's arrival kept.
        let partners: Vec<std::net::UdpSocket> =
            (0..legs).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let mut channels = String::new();
        for (i, p) in partners.iter().enumerate() {
            channels += &format!(
                "[[channels]]\nid = \"leg-{i}\"\nname = \"Leg {i}\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
                 ingest = {{ type = \"udp\", uri = \"udp://{}\" }}\n",
                p.local_addr().unwrap()
            );
        }
        let names: Vec<String> = (1..=count).map(|i| format!("n{i}")).collect();
        let source_ports: Vec<u16> = names.iter().map(|_| free_udp_port()).collect();
        let config_of = |i: usize| {
            let source = if udp {
                format!("type = \"udp\"\nuri = \"udp://127.0.0.1:{}\"", source_ports[i])
            } else {
                "type = \"test\"".to_owned()
            };
            let text = format!(
                "[event]\ntitle = \"Silk Way Star: grand final\"\n[source]\n{source}\n\
                 [program]\nwidth = 480\nheight = 270\nframerate = 25\nvideo_kbps = 1000\ngop = 25\n{channels}"
            );
            let path = dir.path().join(format!("{}.toml", names[i]));
            std::fs::write(&path, text).unwrap();
            path
        };
        let venue = udp.then(|| {
            let clients = source_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
            Command::new("gst-launch-1.0")
                .args(["-q", "videotestsrc", "is-live=true", "pattern=ball", "!"])
                .args(["video/x-raw,format=I420,width=640,height=360,framerate=25/1", "!"])
                .args(["x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=50", "bitrate=1500", "!"])
                .args(["h264parse", "!", "mpegtsmux", "name=m", "alignment=7", "!", "multiudpsink", "sync=false"])
                .arg(format!("clients={clients}"))
                .args([
                    "audiotestsrc",
                    "is-live=true",
                    "!",
                    "audioconvert",
                    "!",
                    "avenc_aac",
                    "!",
                    "aacparse",
                    "!",
                    "m.",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("gst-launch-1.0 (apt-get install gstreamer1.0-tools)")
        });
        let mut arrivals = Vec::new();
        for p in partners {
            let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
            arrivals.push(Arc::clone(&seen));
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                p.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                loop {
                    if p.recv(&mut buf).is_ok() {
                        seen.lock().unwrap().push(Instant::now());
                    }
                }
            });
        }

        let token = new_token().unwrap();
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let db = dir.path().join(format!("{name}.db"));
            let rec = TokenRecord { name: "bench".into(), role: "admin".into(), sha256: hash_token(&token) };
            Store::open(&db).unwrap().insert_token(&rec, "2026-12-03T00:00:00Z").unwrap();
            let port = free_port();
            let config = config_of(i);
            let child = start_node(dir.path(), name, &etcd_url, ttl, &config, port, spread);
            nodes.push(Node { name: name.clone(), db, port, child, config });
        }
        let mut b = Bench { dir, etcd, etcd_url, nodes, venue, token, arrivals, event_id: String::new(), ttl, spread };
        // Wait for a leader listed by all of them.
        let leader = loop {
            let mut l = Vec::new();
            for n in &b.nodes {
                l.push(list(n.port, &b.token).await.filter(|r| r.nodes.len() == count).and_then(|r| leader_of(&r)));
            }
            if l.iter().all(|x| x.is_some() && *x == l[0]) {
                break l[0].clone().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let port = b.nodes.iter().find(|n| n.name == leader).unwrap().port;
        let t = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut events = EventServiceClient::new(t);
        let t0 = chrono::Utc::now() + chrono::Duration::hours(1);
        let req = proto::ScheduleEventRequest {
            title: "Bench".into(),
            on_air: Some(OnAir::OnAirUtc(prost_types::Timestamp { seconds: t0.timestamp(), nanos: 0 })),
            duration: Some(prost_types::Duration { seconds: 7200, nanos: 0 }),
            preroll: None,
            postroll: None,
            channel_ids: vec![],
        };
        let ev = events.schedule_event(authed(req, &b.token)).await.unwrap().into_inner();
        let id = proto::EventRef { event_id: ev.id.clone() };
        events.arm(authed(id.clone(), &b.token)).await.unwrap();
        events.take(authed(id, &b.token)).await.unwrap();
        b.event_id = ev.id;
        let start = Instant::now();
        while !(0..legs).all(|i| b.flowing(i, start)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        b
    }

    /// Whether leg `i`'s partner got 50 datagrams since `since`.
    fn flowing(&self, i: usize, since: Instant) -> bool {
        self.arrivals[i].lock().unwrap().iter().filter(|t| **t > since).count() > 50
    }

    /// Leg `i`'s partner's longest silence from a second before `at`.
    fn silence(&self, i: usize, at: Instant) -> Duration {
        let times: Vec<Instant> =
            self.arrivals[i].lock().unwrap().iter().copied().filter(|t| *t > at - Duration::from_secs(1)).collect();
        times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    /// The leader, as the first node that answers says.
    async fn leader(&self) -> String {
        loop {
            for n in &self.nodes {
                if let Some(l) = list(n.port, &self.token).await.and_then(|r| leader_of(&r)) {
                    return l;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills node `i` with SIGKILL (returns when).
    fn kill(&mut self, i: usize) -> Instant {
        let killed = Instant::now();
        self.nodes[i].child.kill().unwrap();
        self.nodes[i].child.wait().unwrap();
        killed
    }

    /// Starts node `i` again, as a follower, and waits until it is listed.
    async fn restart(&mut self, i: usize) {
        let n = &self.nodes[i];
        let (name, db_dir, p) = (n.name.clone(), n.db.parent().unwrap().to_owned(), n.port);
        self.nodes[i].child = start_node(&db_dir, &name, &self.etcd_url, self.ttl, &n.config, p, self.spread);
        let count = self.nodes.len();
        while list(p, &self.token).await.is_none_or(|r| r.nodes.len() != count) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    /// Each leg's node, as the status says (`leg-N` -> node).
    async fn placement(&self) -> Vec<String> {
        let t = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", self.nodes[0].port))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let req = proto::EventRef { event_id: self.event_id.clone() };
        let mut s = MonitorServiceClient::new(t).watch_status(authed(req, &self.token)).await.unwrap().into_inner();
        loop {
            let u = s.message().await.unwrap().unwrap();
            let on_air = proto::LegState::OnAir as i32;
            if u.legs.iter().all(|l| !l.node.is_empty() && l.state == on_air) {
                let mut by_leg = vec![String::new(); self.arrivals.len()];
                for l in u.legs {
                    let i: usize = l.channel_id.trim_start_matches("leg-").parse().unwrap();
                    by_leg[i] = l.node;
                }
                return by_leg;
            }
        }
    }

    /// CPU (over 10 s) and RSS of each node, with what it carries.
    async fn report_load(&self) {
        let leader = self.leader().await;
        let placed = if self.spread { Some(self.placement().await) } else { None };
        let before: Vec<(f64, u64)> = self.nodes.iter().map(|n| cpu_rss(n.child.id())).collect();
        tokio::time::sleep(Duration::from_secs(10)).await;
        for (n, b) in self.nodes.iter().zip(before) {
            let (cpu, rss) = cpu_rss(n.child.id());
            let legs = match &placed {
                Some(p) => p.iter().filter(|c| **c == n.name).count(),
                None if n.name == leader => self.arrivals.len(),
                None => 0,
            };
            let role = if n.name == leader { "leader" } else { "follower" };
            println!(
                "  {} ({role}, {legs} legs): CPU {:.1} % of one core, RSS {} MiB",
                n.name,
                (cpu - b.0) * 10.0,
                rss / 1024
            );
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
        if let Some(v) = &mut self.venue {
            let _ = v.kill();
            let _ = v.wait();
        }
        let _ = &self.dir;
    }
}

#[tokio::main]
async fn main() {
    let legs = env_num("LEGS", 12);
    let kills = env_num("KILLS", 10);
    let ttl = env_num("TTL", 2);
    let spread = std::env::var("PLACEMENT").is_ok_and(|p| p == "spread");
    let count = env_num("NODES", 3);
    let udp = std::env::var("SOURCE").is_ok_and(|s| s == "udp");
    let mut b = Bench::start(legs, ttl, spread, count, udp).await;
    if spread {
        // The load as placed at arming (a node started again after a
        // kill carries nothing until another node dies).
        println!("load at arming:");
        b.report_load().await;
        spread_kills(&mut b, kills).await;
    } else {
        leader_kills(&mut b, kills).await;
    }
    println!("load after the kills:");
    b.report_load().await;
}

/// Kills the leader `kills` times: election time and partner silence.
async fn leader_kills(b: &mut Bench, kills: usize) {
    println!("cluster failover: {} UDP legs on the leader, lease TTL {} s, {kills} kills", b.arrivals.len(), b.ttl);
    let (mut elections, mut silences) = (Vec::new(), Vec::new());
    for k in 0..kills {
        let leader = b.leader().await;
        let i = b.nodes.iter().position(|n| n.name == leader).unwrap();
        let killed = b.kill(i);
        let survivor = b.nodes.iter().find(|n| n.name != leader).unwrap().port;
        let elected = loop {
            if let Some(l) = list(survivor, &b.token).await.and_then(|r| leader_of(&r))
                && l != leader
            {
                break killed.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Data again, then the longest silence around the kill.
        while !b.flowing(0, killed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let silence = b.silence(0, killed);
        println!(
            "  kill {k}: {leader} killed; elected after {:.0} ms; partner silent {:.0} ms",
            elected.as_secs_f64() * 1e3,
            silence.as_secs_f64() * 1e3
        );
        elections.push(elected.as_secs_f64() * 1e3);
        silences.push(silence.as_secs_f64() * 1e3);
        b.restart(i).await;
    }
    println!(
        "election: p50 {:.0} ms, p99 {:.0} ms; partner silence: p50 {:.0} ms, p99 {:.0} ms (n = {kills})",
        pct(&mut elections.clone(), 0.5),
        pct(&mut elections, 0.99),
        pct(&mut silences.clone(), 0.5),
        pct(&mut silences, 0.99)
    );
}

/// Kills the follower carrying most legs `kills` times: the longest
/// silence at a partner of one of its legs until another node sends.
async fn spread_kills(b: &mut Bench, kills: usize) {
    println!(
        "cluster leg moves: {} UDP legs spread over {} nodes, lease TTL {} s, {kills} kills of a carrier",
        b.arrivals.len(),
        b.nodes.len(),
        b.ttl
    );
    let mut silences = Vec::new();
    for k in 0..kills {
        let leader = b.leader().await;
        let placed = b.placement().await;
        let victim = b
            .nodes
            .iter()
            .filter(|n| n.name != leader)
            .max_by_key(|n| placed.iter().filter(|p| **p == n.name).count())
            .unwrap()
            .name
            .clone();
        let moved: Vec<usize> = (0..placed.len()).filter(|i| placed[*i] == victim).collect();
        let i = b.nodes.iter().position(|n| n.name == victim).unwrap();
        let killed = b.kill(i);
        while !moved.iter().all(|l| b.flowing(*l, killed)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let worst = moved.iter().map(|l| b.silence(*l, killed)).max().unwrap_or_default();
        println!(
            "  kill {k}: {victim} killed with {} legs; its partners silent {:.0} ms at most",
            moved.len(),
            worst.as_secs_f64() * 1e3
        );
        silences.push(worst.as_secs_f64() * 1e3);
        b.restart(i).await;
    }
    println!(
        "moved legs' partner silence: p50 {:.0} ms, p99 {:.0} ms (n = {kills})",
        pct(&mut silences.clone(), 0.5),
        pct(&mut silences, 0.99)
    );
}
