//! Cluster mode with a real etcd (Debian's etcd-server) on
//! loopback and real `simulcastd serve --cluster` processes: membership,
//! the election, a leader killed with SIGKILL, a leader stopped with
//! SIGSTOP (it must not count itself leader when it wakes), and etcd lost
//! for 10 s. Each test runs its own etcd, so they run in parallel.
//!
//! etcd binds its own ports (it cannot take a socket handed over): they
//! are picked free just before it starts.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a panic is how a test fails

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::authed;
use common::{ChildGuard, Daemon, UdpCapture, peer_port, require, tcp_listener};
use simulcast::api::auth::{Role, hash_token, new_token};
use simulcast::proto::event_service_client::EventServiceClient;
use simulcast::proto::monitor_service_client::MonitorServiceClient;
use simulcast::proto::node_service_client::NodeServiceClient;
use simulcast::proto::{ListNodesRequest, ListNodesResponse, NodeHealth};
use simulcast::store::{Store, TokenRecord};

/// The lease every node here keeps.
const TTL: Duration = Duration::from_secs(2);

/// A real etcd, single member, on two free loopback ports.
struct Etcd {
    child: ChildGuard,
    url: String,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        require("etcd", "etcd-server");
        let (client, peer) = (peer_port(), peer_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start etcd");
        let mut etcd = Etcd { child: ChildGuard(child), url };
        etcd.wait_healthy(client);
        etcd
    }

    /// Waits (20 s at most) until etcd says it is healthy on `/health`.
    fn wait_healthy(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                panic!("etcd exited ({status}) before it was healthy on port {port}");
            }
            let healthy = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                body.contains("\"health\":\"true\"")
            });
            if healthy {
                return;
            }
            assert!(Instant::now() < deadline, "etcd was not healthy on port {port} within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child this test started and still holds.
        assert_eq!(unsafe { libc::kill(self.child.0.id() as i32, sig) }, 0);
    }
}

/// A `simulcastd serve --cluster` node with its own store and an admin token.
struct Node {
    name: String,
    daemon: Daemon,
    addr: String,
    token: String,
    log: PathBuf,
    /// Its /metrics port.
    metrics: std::net::SocketAddr,
    /// Its multiviewer page's port.
    web: std::net::SocketAddr,
    /// The certificate its gRPC port is checked against, when it speaks TLS.
    ca: Option<Vec<u8>>,
}

impl Node {
    fn start(dir: &Path, name: &str, etcd: &Etcd) -> Node {
        Node::start_with(dir, name, &etcd.url, &[])
    }

    /// With etcd at `etcd` (a URL) and `extra` arguments for `simulcastd serve`.
    fn start_with(dir: &Path, name: &str, etcd: &str, extra: &[&OsStr]) -> Node {
        let db = dir.join(format!("{name}.db"));
        let token = new_token().unwrap();
        let rec = TokenRecord {
            name: format!("admin-{name}"),
            role: Role::Admin.as_str().into(),
            sha256: hash_token(&token),
        };
        Store::open(&db).unwrap().insert_token(&rec, "2026-12-03T00:00:00Z").unwrap();
        let grpc = tcp_listener();
        // A node given a certificate speaks TLS, and is checked against it.
        let ca = extra
            .iter()
            .position(|a| *a == OsStr::new("--tls-cert"))
            .and_then(|i| extra.get(i + 1))
            .map(|cert| std::fs::read(cert).unwrap());
        let scheme = if ca.is_some() { "https" } else { "http" };
        let addr = format!("{scheme}://{}", grpc.local_addr().unwrap());
        let log = dir.join(format!("{name}.log"));
        let ttl = format!("{}s", TTL.as_secs());
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--db"),
            db.as_os_str(),
            OsStr::new("--cluster"),
            OsStr::new(etcd),
            OsStr::new("--node"),
            OsStr::new(name),
            OsStr::new("--lease-ttl"),
            OsStr::new(&ttl),
        ];
        args.extend_from_slice(extra);
        let metrics = tcp_listener();
        let metrics_addr = metrics.local_addr().unwrap();
        let web = tcp_listener();
        let web_addr = web.local_addr().unwrap();
        let log_file = Stdio::from(std::fs::File::create(&log).unwrap());
        let mut daemon = Daemon::serve_on(&[("grpc", &grpc), ("metrics", &metrics), ("web", &web)], &args, log_file);
        common::wait_answering(&mut daemon.0, grpc.local_addr().unwrap());
        // The daemon holds its own copies of the sockets.
        drop((grpc, metrics, web));
        Node { name: name.into(), daemon, addr, token, log, metrics: metrics_addr, web: web_addr, ca }
    }

    /// A connection to its gRPC port (TLS when it speaks it).
    async fn connect(&self) -> Result<tonic::transport::Channel, String> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(self.addr.clone()).unwrap();
        if let Some(pem) = &self.ca {
            let tls =
                tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
            endpoint = endpoint.tls_config(tls).unwrap();
        }
        endpoint.connect().await.map_err(|e| e.to_string())
    }

    /// Its /metrics page (empty if it does not answer).
    fn scrape(&self) -> String {
        http_get(self.metrics, "/metrics")
    }

    /// The status line and headers its page's `/` answers.
    fn page_head(&self) -> String {
        let text = http_get(self.web, "/");
        text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
    }

    /// The first board its page's status stream sends (JSON).
    fn board(&self) -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(self.web).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let ask =
            format!("GET /api/web/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n", self.token);
        s.write_all(ask.as_bytes()).unwrap();
        let (mut got, mut buf) = (String::new(), [0u8; 4096]);
        while !got.contains("\n\n") || !got.split("data: ").nth(1).is_some_and(|d| d.contains("\n\n")) {
            let n = s.read(&mut buf).expect("the status stream");
            assert!(n > 0, "the status stream ended: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let data = got.split("data: ").nth(1).unwrap().split("\n\n").next().unwrap();
        serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"))
    }

    /// The value of `metric` (with this node's label) on its /metrics.
    fn metric(&self, metric: &str) -> Option<f64> {
        let text = self.scrape();
        let want = format!("{metric}{{node=\"{}\"}} ", self.name);
        text.lines().find_map(|l| l.strip_prefix(&want)).and_then(|v| v.trim().parse().ok())
    }

    /// `ListNodes` on this node, within `within` (a stopped node does not answer).
    async fn list(&self, within: Duration) -> Result<ListNodesResponse, String> {
        let ask = async {
            let transport = self.connect().await?;
            let mut c = NodeServiceClient::new(transport);
            c.list_nodes(authed(ListNodesRequest {}, &self.token))
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        };
        tokio::time::timeout(within, ask).await.unwrap_or_else(|_| Err("no answer".into()))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child this test started and still holds.
        assert_eq!(unsafe { libc::kill(self.daemon.0.id() as i32, sig) }, 0);
    }

    async fn events(&self) -> Result<EventServiceClient<tonic::transport::Channel>, String> {
        self.connect().await.map(EventServiceClient::new)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What `GET path` over HTTP/1.0 to `addr` answers, head and body (empty
/// if nothing answers).
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut text = String::new();
    if let Ok(mut s) = std::net::TcpStream::connect(addr) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes());
        let _ = s.read_to_string(&mut text);
    }
    text
}

fn names(r: &ListNodesResponse) -> Vec<String> {
    r.nodes.iter().map(|n| n.name.clone()).collect()
}

fn leader(r: &ListNodesResponse) -> Option<String> {
    let leaders: Vec<&str> = r.nodes.iter().filter(|n| n.leader).map(|n| n.name.as_str()).collect();
    assert!(leaders.len() <= 1, "two leaders listed at once: {r:?}");
    leaders.first().map(|s| (*s).to_owned())
}

/// Waits until every node in `nodes` lists exactly `expect` (by name), all
/// UP and on the failsafe list, and names one and the same leader, which alone counts itself
/// leader; returns that leader.
async fn settled(nodes: &[&Node], expect: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let mut answers = Vec::new();
        for n in nodes {
            answers.push(n.list(Duration::from_secs(2)).await);
        }
        let agreed = answers.iter().all(|a| {
            a.as_ref().is_ok_and(|r| {
                names(r) == expect
                    && r.nodes.iter().all(|n| n.health == NodeHealth::Up as i32 && n.may_lead)
                    && leader(r).is_some()
                    && r.answered_by_leads == (leader(r).as_deref() == Some(r.answered_by.as_str()))
            })
        });
        let leaders: Vec<Option<String>> = answers.iter().map(|a| a.as_ref().ok().and_then(leader)).collect();
        if agreed && leaders.windows(2).all(|w| w[0] == w[1]) {
            return leaders[0].clone().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not settle on {expect:?} with one leader in {within:?}: {answers:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_a_killed_leader_is_replaced_within_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| Node::start(dir.path(), n, &etcd)).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let first = settled(&all, &["n1", "n2", "n3"], Duration::from_secs(15)).await;
    // The table each node lists names every node's address and lease.
    let r = nodes[0].list(Duration::from_secs(2)).await.unwrap();
    for (n, node) in r.nodes.iter().zip(&nodes) {
        assert_eq!(format!("http://{}", n.address), node.addr, "{r:?}");
        assert_eq!(n.lease_ttl_s, TTL.as_secs() as i64, "{r:?}");
        assert!(n.joined_at.is_some(), "{r:?}");
    }
    // A follower's page sends the operator to the leader's; the leader's is the page.
    let leader_node = nodes.iter().find(|n| n.name == first).unwrap();
    assert!(leader_node.page_head().starts_with("HTTP/1.0 200"), "{}", leader_node.page_head());
    for n in nodes.iter().filter(|n| n.name != first) {
        let head = n.page_head();
        assert!(head.starts_with("HTTP/1.0 307"), "{}: {head}", n.name);
        assert!(
            head.to_ascii_lowercase().contains(&format!("location: http://{}/", leader_node.web)),
            "{}: {head}",
            n.name
        );
    }
    // A board opened on a follower says where master control runs.
    let follower = nodes.iter().find(|n| n.name != first).unwrap();
    let c = &follower.board()["cluster"];
    assert_eq!(c["leads"], false, "{c}");
    assert_eq!(c["leader"], first.as_str(), "{c}");
    assert_eq!(c["leader_page"], format!("http://{}/", leader_node.web).as_str(), "{c}");
    assert_eq!(leader_node.board()["cluster"]["leads"], true);

    let at = nodes.iter().position(|n| n.name == first).unwrap();
    let mut dead = nodes.remove(at);
    dead.daemon.0.kill().unwrap();
    let killed = Instant::now();
    dead.daemon.0.wait().unwrap();
    let survivors: Vec<&Node> = nodes.iter().collect();
    let expect: Vec<&str> = survivors.iter().map(|n| n.name.as_str()).collect();
    let next = settled(&survivors, &expect, TTL + Duration::from_secs(5)).await;
    let took = killed.elapsed();
    eprintln!(
        "leader {first} killed; {next} leads, listed by both survivors, after {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    assert_ne!(next, first);
    assert!(took <= TTL + Duration::from_secs(1), "a new leader took {took:?}, more than the lease's TTL + 1 s");
    assert!(nodes.iter().find(|n| n.name == next).unwrap().log_text().contains("This node leads."));
}

/// Nodes that speak TLS check each other: a follower that does not trust
/// the leader's certificate refuses to forward to it, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_does_not_trust_the_leaders_certificate_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let pair = |name: &str| {
        let (cert, key) = (dir.path().join(format!("{name}.pem")), dir.path().join(format!("{name}-key.pem")));
        common::self_signed(&cert, &key, name);
        (cert, key)
    };
    let ((cert1, key1), (cert2, key2)) = (pair("n1"), pair("n2"));
    let tls = |cert: &PathBuf, key: &PathBuf| -> Vec<std::ffi::OsString> {
        vec!["--tls-cert".into(), cert.into(), "--tls-key".into(), key.into()]
    };
    let args1 = tls(&cert1, &key1);
    let n1 = Node::start_with(dir.path(), "n1", &etcd.url, &args1.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    assert_eq!(settled(&[&n1], &["n1"], Duration::from_secs(15)).await, "n1");
    // n2 checks the other nodes against its own certificate alone.
    let mut args2 = tls(&cert2, &key2);
    args2.extend(["--cluster-ca-cert".into(), cert2.clone().into()]);
    let n2 = Node::start_with(dir.path(), "n2", &etcd.url, &args2.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    assert_eq!(settled(&[&n1, &n2], &["n1", "n2"], Duration::from_secs(15)).await, "n1");

    let req = final_at(chrono::Utc::now() + chrono::Duration::hours(1), 600);
    let mut c = n2.events().await.unwrap();
    let e = c.schedule_event(authed(req.clone(), &n2.token)).await.expect_err("forwarded to an untrusted leader");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("the leader n1") && e.message().contains("certificate"), "{e:?}");
    eprintln!("forwarding to an untrusted leader: {}", e.message());
    // The leader itself answers it (with its own word on the request:
    // these nodes have no channel).
    let mut c = n1.events().await.unwrap();
    let e = c.schedule_event(authed(req, &n1.token)).await.expect_err("no channel to schedule on");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_stops_counting_itself_leader_and_comes_back_a_follower() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| Node::start(dir.path(), n, &etcd)).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let first = settled(&all, &["n1", "n2", "n3"], Duration::from_secs(15)).await;
    let stopped = nodes.iter().find(|n| n.name == first).unwrap();
    let others: Vec<&Node> = nodes.iter().filter(|n| n.name != first).collect();

    stopped.signal(libc::SIGSTOP);
    let since = Instant::now();
    // While it sleeps: the others list it LAPSING, then not at all, and one
    // of them leads. At every sample at most one node counts itself leader.
    let mut health = Vec::new();
    while since.elapsed() < Duration::from_secs(6) {
        let Ok(r) = others[0].list(Duration::from_secs(1)).await else { continue };
        match r.nodes.iter().find(|n| n.name == first) {
            Some(n) => health.push(n.health),
            None => break,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(health.contains(&(NodeHealth::Lapsing as i32)), "never listed LAPSING before it left: {health:?}");
    assert!(since.elapsed() < Duration::from_secs(6), "still listed 6 s after it stopped: {health:?}");
    let expect: Vec<&str> = others.iter().map(|n| n.name.as_str()).collect();
    let next = settled(&others, &expect, Duration::from_secs(8)).await;
    assert_ne!(next, first);
    while since.elapsed() < Duration::from_secs(10) {
        let mut leading = Vec::new();
        for n in &others {
            if n.list(Duration::from_secs(1)).await.is_ok_and(|r| r.answered_by_leads) {
                leading.push(n.name.clone());
            }
        }
        assert_eq!(leading, vec![next.clone()], "exactly the new leader counts itself leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // It wakes. The first thing it answers: it does not lead (its lease
    // may have lapsed, and did), whatever its campaign said before.
    stopped.signal(libc::SIGCONT);
    let woke = stopped.list(Duration::from_secs(3)).await.expect("the woken node answers");
    assert!(!woke.answered_by_leads, "a node woken after its lease ran out still counts itself leader: {woke:?}");
    let all_back: Vec<&Node> = nodes.iter().collect();
    let after = settled(&all_back, &["n1", "n2", "n3"], Duration::from_secs(10)).await;
    assert_eq!(after, next, "the woken node took leadership back instead of following");
    let log = stopped.log_text();
    assert!(log.contains("This node no longer leads"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lost_for_10_s_mid_event_the_leg_flows_on_changes_are_refused_naming_etcd_and_a_take_works_after() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Senders::start();
    // The nodes speak TLS, to operators and to each other (one certificate
    // for both, checked against itself): the failsafe's questions and the
    // follower's forwarded requests below go over it.
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    common::self_signed(&cert, &key, "simulcast-node");
    let tls = [OsStr::new("--tls-cert"), cert.as_os_str(), OsStr::new("--tls-key"), key.as_os_str()];
    let (etcd, nodes, first) = on_one_udp_leg_with(dir.path(), &["n1", "n2"], partner.port, &tls).await;
    assert!(nodes.iter().all(|n| n.addr.starts_with("https://")));
    let all: Vec<&Node> = nodes.iter().collect();
    // The shipped alert rules (deploy/) query only families a node exports.
    let page = nodes[0].scrape();
    for name in common::monitored_metrics().into_iter().filter(|n| n.starts_with("simulcast_cluster_")) {
        assert!(page.contains(&format!("# TYPE {name} ")), "deploy/ queries {name}, which a node does not export");
    }
    for n in &nodes {
        assert_eq!(n.metric("simulcast_cluster_etcd_up"), Some(1.0), "{}", n.name);
        assert_eq!(n.metric("simulcast_cluster_leader"), Some(f64::from(u8::from(n.name == first))), "{}", n.name);
        assert_eq!(n.metric("simulcast_cluster_failsafe"), Some(0.0), "{}", n.name);
        assert!(n.metric("simulcast_cluster_lease_remaining_seconds").is_some_and(|s| s > 0.0), "{}", n.name);
    }
    let token = nodes[0].token.clone();
    // Armed: the partner gets the slate until a Take.
    let req = final_at(chrono::Utc::now() + chrono::Duration::hours(1), 3600);
    let mut c = nodes[0].events().await.unwrap();
    let event = c.schedule_event(authed(req, &token)).await.expect("schedule").into_inner().id;
    let id = simulcast::proto::EventRef { event_id: event.clone() };
    c.arm(authed(id.clone(), &token)).await.expect("arm");
    assert!(common::wait_for(Duration::from_secs(20), || partner.seen().len() > 200).await, "no data from the leader");
    let leader = nodes.iter().find(|n| n.name == first).unwrap();
    let follower = nodes.iter().find(|n| n.name != first).unwrap();
    let schedule = |title: &str| simulcast::proto::ScheduleEventRequest {
        title: title.into(),
        ..final_at(chrono::Utc::now() + chrono::Duration::hours(2), 600)
    };

    etcd.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let mut answers = 0;
    while stopped.elapsed() < Duration::from_secs(10) {
        for n in &nodes {
            let e = n.list(Duration::from_secs(4)).await.expect_err("a node without etcd listed nodes");
            assert!(e.starts_with("Unavailable") && e.contains(&format!("etcd ({})", etcd.url)), "{e}");
            // A change is refused naming etcd, by the leader (asked, or
            // forwarded to) or by a follower that lost sight of it.
            let mut c = n.events().await.unwrap();
            let asked =
                tokio::time::timeout(Duration::from_secs(6), c.schedule_event(authed(schedule("During"), &token)));
            let e = asked.await.expect("a change during etcd's loss was not answered within 6 s").unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
            assert!(e.message().contains("etcd"), "{e:?}");
            // Reads are answered: master control still runs, on the leader.
            let list = c.list_events(authed(simulcast::proto::ListEventsRequest {}, &token)).await;
            assert_eq!(list.expect("ListEvents while etcd is away").into_inner().events.len(), 1, "{}", n.name);
            answers += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(answers >= 4, "only {answers} answers in 10 s");
    // What the SimulcastEtcdUnreachable and SimulcastClusterNoLeader
    // alerts read: etcd is down for both; the leader leads on its peer's
    // word (so no "no leader" page while the legs flow).
    for n in &nodes {
        assert_eq!(n.metric("simulcast_cluster_etcd_up"), Some(0.0), "{}", n.name);
    }
    assert_eq!(leader.metric("simulcast_cluster_leader"), Some(1.0), "{}", leader.log_text());
    assert_eq!(leader.metric("simulcast_cluster_failsafe"), Some(1.0), "{}", leader.log_text());
    assert_eq!(follower.metric("simulcast_cluster_leader"), Some(0.0));
    // The follower is on the leader's word too (it would send its legs,
    // were any placed on it): its lease counts on with the leader's.
    let left = follower.metric("simulcast_cluster_lease_remaining_seconds").unwrap_or_default();
    assert!(left > 0.0 && left <= TTL.as_secs_f64(), "{left} {}", follower.log_text());
    assert_eq!(follower.metric("simulcast_cluster_failsafe"), Some(1.0), "{}", follower.log_text());
    assert!(leader.log_text().contains("keeps leading and sending on its peers' word"), "{}", leader.log_text());
    assert!(follower.log_text().contains("vouched for the leader"), "{}", follower.log_text());

    etcd.signal(libc::SIGCONT);
    let back = Instant::now();
    let next = settled(&all, &["n1", "n2"], Duration::from_secs(15)).await;
    eprintln!(
        "etcd back: both nodes listed with one leader ({next}) after {:.0} ms",
        back.elapsed().as_secs_f64() * 1e3
    );
    // A Take works, through the follower.
    let mut c = follower.events().await.unwrap();
    let taken = c.take(authed(id, &token)).await.expect("take after etcd came back").into_inner();
    assert_eq!(taken.state, simulcast::proto::EventState::OnAir as i32, "{taken:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The leg flowed throughout, from one sender: no gap, no second node.
    let (gap, senders) = partner.since(stopped - Duration::from_secs(1));
    eprintln!(
        "etcd stopped 10 s: the partner's longest silence {:.0} ms, from {} sender(s)",
        gap.as_secs_f64() * 1e3,
        senders.len()
    );
    let last = partner.seen().last().map(|(t, _)| *t);
    assert!(last.is_some_and(|t| t > back + Duration::from_secs(2)), "the leg stopped after etcd came back");
    assert!(gap < Duration::from_millis(500), "the partner was silent {gap:?} while etcd was away or after");
    assert_eq!(senders.len(), 1, "several senders: {senders:?}: {}", leader.log_text());
    assert_eq!(next, first, "the leader changed: {}", leader.log_text());
}

/// ScheduleEvent for "Final" at `t0`, `duration_s` long, every channel.
fn final_at(t0: chrono::DateTime<chrono::Utc>, duration_s: i64) -> simulcast::proto::ScheduleEventRequest {
    simulcast::proto::ScheduleEventRequest {
        title: "Final".into(),
        on_air: Some(simulcast::proto::schedule_event_request::OnAir::OnAirUtc(prost_types::Timestamp {
            seconds: t0.timestamp(),
            nanos: 0,
        })),
        duration: Some(prost_types::Duration { seconds: duration_s, nanos: 0 }),
        preroll: None,
        postroll: None,
        channel_ids: vec![],
    }
}

/// The longest silence in `capture` after `from`, and when data came after it.
fn longest_gap(capture: &UdpCapture, from: Instant) -> (Duration, Option<Instant>) {
    let times: Vec<Instant> = capture.timed().into_iter().map(|(t, _)| t).filter(|t| *t >= from).collect();
    let mut worst = (Duration::ZERO, None);
    for w in times.windows(2) {
        if w[1] - w[0] > worst.0 {
            worst = (w[1] - w[0], Some(w[1]));
        }
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_and_a_killed_leaders_live_event_resumes_on_the_next_leader() {
    let dir = tempfile::tempdir().unwrap();
    let partner = UdpCapture::start();
    let (_etcd, mut nodes, first) = on_one_udp_leg(dir.path(), &["n1", "n2", "n3"], partner.port).await;
    let followers: Vec<usize> = (0..3).filter(|i| nodes[*i].name != first).collect();
    // n1's token, made on n1's file only, works on every node (tokens are shared).
    let token = nodes[0].token.clone();

    // Scheduled through one follower, armed and taken through the other:
    // each forwards to the leader, which alone writes.
    let req = final_at(chrono::Utc::now() + chrono::Duration::minutes(10), 3600);
    let mut via = nodes[followers[0]].events().await.unwrap();
    let event = via.schedule_event(authed(req, &token)).await.expect("schedule through a follower").into_inner();
    let mut other = nodes[followers[1]].events().await.unwrap();
    let id = simulcast::proto::EventRef { event_id: event.id.clone() };
    other.arm(authed(id.clone(), &token)).await.expect("arm through a follower");
    other.take(authed(id.clone(), &token)).await.expect("take through a follower");
    for n in &nodes {
        let mut c = n.events().await.unwrap();
        let list = c.list_events(authed(simulcast::proto::ListEventsRequest {}, &token)).await;
        let list = list.expect("list").into_inner().events;
        assert_eq!(list.len(), 1, "{}: {list:?}", n.name);
        assert_eq!(list[0].id, event.id, "{}", n.name);
    }
    // Written once: only the leader's file holds the event.
    for n in &nodes {
        let held = Store::open(&dir.path().join(format!("{}.db", n.name))).unwrap().events().unwrap().0.len();
        assert_eq!(held, usize::from(n.name == first), "{} holds {held} event(s)", n.name);
    }
    assert!(
        common::wait_for(Duration::from_secs(20), || partner.bytes() > 100_000).await,
        "the partner got {} bytes from the leader",
        partner.bytes()
    );

    // The node table says who carries the leg and how its source is.
    let carried = |r: &ListNodesResponse| -> Vec<(String, u32, String)> {
        r.nodes.iter().map(|n| (n.name.clone(), n.legs, n.source.clone())).collect()
    };
    let mut table = Vec::new();
    for _ in 0..40 {
        table = carried(&nodes[followers[0]].list(Duration::from_secs(2)).await.unwrap());
        if table.iter().any(|(n, legs, _)| *n == first && *legs == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, legs, source) in &table {
        let leads = *name == first;
        assert_eq!(*legs, u32::from(leads), "{table:?}");
        assert_eq!(source != "-", leads, "{table:?}");
    }
    // The leader's metrics label the leg with the node carrying it.
    let page = nodes.iter().find(|n| n.name == first).unwrap().scrape();
    let info = page.lines().find(|l| l.starts_with("simulcast_leg_info{")).unwrap_or_else(|| panic!("{page}"));
    assert!(info.contains("channel=\"kr-kbs\"") && info.contains(&format!("node=\"{first}\"")), "{info}");
    let at = nodes.iter().position(|n| n.name == first).unwrap();
    let mut dead = nodes.remove(at);
    let killed = Instant::now();
    dead.daemon.0.kill().unwrap();
    dead.daemon.0.wait().unwrap();
    let before = partner.bytes();
    assert!(
        common::wait_for(Duration::from_secs(20), || partner.bytes() > before + 100_000).await,
        "the partner got no data after the leader was killed"
    );
    let (gap, resumed) = longest_gap(&partner, killed - Duration::from_millis(200));
    eprintln!(
        "leader {first} killed: the partner's longest silence {:.0} ms (lease TTL {} s)",
        gap.as_secs_f64() * 1e3,
        TTL.as_secs()
    );
    assert!(resumed.is_some() && gap >= Duration::from_millis(500), "no gap at all: did two nodes send? {gap:?}");
    assert!(gap <= TTL + Duration::from_secs(4), "the partner was silent {gap:?} after the leader died");

    // The next leader names itself in the as-run log.
    let survivors: Vec<&Node> = nodes.iter().collect();
    let expect: Vec<&str> = survivors.iter().map(|n| n.name.as_str()).collect();
    let next = settled(&survivors, &expect, Duration::from_secs(10)).await;
    let via = nodes.iter().find(|n| n.name != next).unwrap();
    let entries = asrun_of(via, &event.id, &token).await;
    let details: Vec<String> = entries.iter().map(|e| format!("{} {}", e.kind, e.detail)).collect();
    assert!(
        details.iter().any(|d| d.contains(&format!("node {next} took over as leader while the event was ON_AIR"))),
        "{details:#?}"
    );
    assert!(details.iter().any(|d| d.contains(&format!("leg(s) rebuilt on node {next}"))), "{details:#?}");
    assert!(details.iter().any(|d| d.starts_with("on-air")), "the log before the kill was kept: {details:#?}");
    // The status, watched through the follower, names the node carrying the leg.
    let t = via.connect().await.unwrap();
    let req = simulcast::proto::EventRef { event_id: event.id.clone() };
    let mut updates = MonitorServiceClient::new(t).watch_status(authed(req, &token)).await.expect("watch").into_inner();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = tokio::time::timeout(Duration::from_secs(5), updates.message()).await.unwrap().unwrap().unwrap();
        if u.legs.first().is_some_and(|l| l.node == next) {
            break;
        }
        assert!(Instant::now() < deadline, "no update names {next} as the leg's node: {:?}", u.legs);
    }
}

/// A partner's UDP ingest that notes who sent each datagram, and when.
struct Senders {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(Instant, std::net::SocketAddr)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Senders {
    fn start() -> Senders {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let port = socket.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    s.lock().unwrap().push((Instant::now(), from));
                }
            }
        });
        Senders { port, seen, stop }
    }

    fn seen(&self) -> Vec<(Instant, std::net::SocketAddr)> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (`within`) until a sender other than `old` sends; then
    /// `old`'s last datagram and the other's first.
    async fn handed_over(&self, old: std::net::SocketAddr, within: Duration) -> Option<(Instant, Instant)> {
        if !common::wait_for(within, || self.seen().iter().any(|(_, from)| *from != old)).await {
            return None;
        }
        let seen = self.seen();
        let took = seen.iter().find(|(_, from)| *from != old)?.0;
        let last_old = seen.iter().filter(|(_, from)| *from == old).map(|(t, _)| *t).max()?;
        Some((last_old, took))
    }

    /// Since `from`: the longest silence between two datagrams, and every sender.
    fn since(&self, from: Instant) -> (Duration, std::collections::BTreeSet<std::net::SocketAddr>) {
        let seen: Vec<_> = self.seen().into_iter().filter(|(t, _)| *t >= from).collect();
        let gap = seen.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap_or_default();
        (gap, seen.iter().map(|(_, f)| *f).collect())
    }
}

/// After `node` (`who`, sending to `partner` from `old`) was stopped at
/// `since`: waits until another node sends, continues it 10 s after the
/// stop, and checks for 4 s that nothing came from it once another node
/// sent, and that one sender alone sent since. Returns when it was woken.
async fn stopped_10_s_one_sender_at_a_time(
    partner: &Senders,
    node: &Node,
    old: std::net::SocketAddr,
    since: Instant,
    who: &str,
) -> Instant {
    assert!(
        common::wait_for(Duration::from_secs(10), || partner.seen().iter().any(|(_, from)| *from != old)).await,
        "no other node took the leg while {who} was stopped"
    );
    let took = partner.seen().iter().find(|(_, from)| *from != old).unwrap().0;
    eprintln!("{who} stopped: another node sent {:.0} ms later", (took - since).as_secs_f64() * 1e3);
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(since.elapsed())).await;
    node.signal(libc::SIGCONT);
    let woke = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = partner.seen();
    let late: Vec<_> = seen.iter().filter(|(t, from)| *t > took && *from == old).collect();
    assert!(
        late.is_empty(),
        "the woken {who} sent {} datagram(s) beside the next node, the first {:.0} ms after waking",
        late.len(),
        (late[0].0.saturating_duration_since(woke)).as_secs_f64() * 1e3
    );
    let senders_after: std::collections::BTreeSet<_> =
        seen.iter().filter(|(t, _)| *t > took).map(|(_, f)| *f).collect();
    assert_eq!(senders_after.len(), 1, "several senders after {who} was stopped: {senders_after:?}");
    woke
}

/// etcd and the nodes `names`, whose one channel is a UDP leg to the
/// partner on `port`, settled; with the leader's name.
async fn on_one_udp_leg(dir: &Path, names: &[&str], port: u16) -> (Etcd, Vec<Node>, String) {
    on_one_udp_leg_with(dir, names, port, &[]).await
}

/// [`on_one_udp_leg`], each node also given `more` arguments.
async fn on_one_udp_leg_with(dir: &Path, names: &[&str], port: u16, more: &[&OsStr]) -> (Etcd, Vec<Node>, String) {
    let etcd = Etcd::start(dir);
    let config = one_udp_leg(dir, port);
    let mut extra = vec![OsStr::new("--config"), config.as_os_str()];
    extra.extend_from_slice(more);
    let nodes: Vec<Node> = names.iter().map(|n| Node::start_with(dir, n, &etcd.url, &extra)).collect();
    let first = settled(&nodes.iter().collect::<Vec<_>>(), names, Duration::from_secs(15)).await;
    (etcd, nodes, first)
}

/// The as-run log of `event`, read through `node`.
async fn asrun_of(node: &Node, event: &str, token: &str) -> Vec<simulcast::proto::AsRunEntry> {
    let t = node.connect().await.unwrap();
    let req = simulcast::proto::GetAsRunLogRequest { event_id: event.to_owned(), ..Default::default() };
    MonitorServiceClient::new(t).get_as_run_log(authed(req, token)).await.expect("as-run").into_inner().entries
}

/// An as-run entry's UTC instant.
fn at_utc(e: &simulcast::proto::AsRunEntry) -> chrono::DateTime<chrono::Utc> {
    let t = e.utc.as_ref().unwrap();
    chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

impl Drop for Senders {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A config whose one channel is a UDP leg to `port` (a small test source).
fn one_udp_leg(dir: &Path, port: u16) -> PathBuf {
    let config = dir.join("final.toml");
    std::fs::write(
        &config,
        format!(
            "[event]\ntitle = \"Silk Way Star: grand final\"\n\
             [source]\ntype = \"test\"\n[program]\nwidth = 320\nheight = 180\nframerate = 25\nvideo_kbps = 400\ngop = 25\n\
             [[channels]]\nid = \"kr-kbs\"\nname = \"KBS\"\ncountry = \"KR\"\ntimezone = \"Asia/Seoul\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:{port}\" }}\n"
        ),
    )
    .unwrap();
    config
}

/// Schedules an event an hour ahead through `node`, arms it and takes it.
async fn on_air_through(node: &Node, token: &str) -> String {
    let req = final_at(chrono::Utc::now() + chrono::Duration::hours(1), 3600);
    let mut c = node.events().await.unwrap();
    let event = c.schedule_event(authed(req, token)).await.expect("schedule").into_inner();
    let id = simulcast::proto::EventRef { event_id: event.id.clone() };
    c.arm(authed(id.clone(), token)).await.expect("arm");
    c.take(authed(id, token)).await.expect("take");
    event.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_mid_programme_never_sends_beside_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Senders::start();
    let (_etcd, nodes, first) = on_one_udp_leg(dir.path(), &["n1", "n2", "n3"], partner.port).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let token = nodes[0].token.clone();
    on_air_through(&nodes[0], &token).await;
    assert!(common::wait_for(Duration::from_secs(20), || partner.seen().len() > 200).await, "no data from the leader");
    let old = partner.seen().last().unwrap().1;

    let stopped = nodes.iter().find(|n| n.name == first).unwrap();
    stopped.signal(libc::SIGSTOP);
    let since = Instant::now();
    // The next leader resumes the event and sends from its own socket.
    stopped_10_s_one_sender_at_a_time(&partner, stopped, old, since, &format!("leader {first}")).await;
    // It comes back as a follower.
    let next = settled(&all, &["n1", "n2", "n3"], Duration::from_secs(10)).await;
    assert_ne!(next, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_2_s_before_t0_still_puts_the_event_on_air() {
    let dir = tempfile::tempdir().unwrap();
    let partner = UdpCapture::start();
    let (_etcd, mut nodes, first) = on_one_udp_leg(dir.path(), &["n1", "n2", "n3"], partner.port).await;
    let token = nodes[0].token.clone();
    // T0 on a whole second, 8 s ahead: armed at once (the preroll is 1 min).
    let t0 = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 8, 0).unwrap();
    let req = final_at(t0, 600);
    let follower = nodes.iter().find(|n| n.name != first).unwrap();
    let event = follower.events().await.unwrap().schedule_event(authed(req, &token)).await.unwrap().into_inner();
    assert!(common::wait_for(Duration::from_secs(6), || partner.bytes() > 10_000).await, "no slate before T0");

    let kill_at = t0 - chrono::Duration::seconds(2);
    tokio::time::sleep((kill_at - chrono::Utc::now()).to_std().expect("T0 came too soon")).await;
    let at = nodes.iter().position(|n| n.name == first).unwrap();
    let mut dead = nodes.remove(at);
    dead.daemon.0.kill().unwrap();
    dead.daemon.0.wait().unwrap();
    tokio::time::sleep((t0 + chrono::Duration::seconds(8) - chrono::Utc::now()).to_std().unwrap_or_default()).await;

    let entries = asrun_of(&nodes[0], &event.id, &token).await;
    let kinds: Vec<String> = entries.iter().map(|e| format!("{} {} {}", at_utc(e), e.kind, e.detail)).collect();
    let on_air = entries.iter().find(|e| e.kind == "on-air").unwrap_or_else(|| panic!("never on air: {kinds:#?}"));
    let first_picture = entries
        .iter()
        .find(|e| e.kind == "leg-program")
        .unwrap_or_else(|| panic!("no programme picture reached the partner: {kinds:#?}"));
    let late = (at_utc(first_picture) - t0).num_milliseconds();
    eprintln!(
        "leader {first} killed 2 s before T0: on air at T0{:+} ms, first programme picture at T0{late:+} ms",
        (at_utc(on_air) - t0).num_milliseconds()
    );
    // A T0 switch as in single-node mode (within a GOP and the latency of
    // T0), plus one election: the lease's TTL.
    assert!(late >= -100, "programme before T0: {kinds:#?}");
    assert!(late <= (TTL + Duration::from_secs(2)).as_millis() as i64, "programme {late} ms after T0: {kinds:#?}");
    assert!(kinds.iter().any(|k| k.contains("took over as leader while the event was ARMED")), "{kinds:#?}");
}

#[test]
fn a_shared_write_lands_in_etcd_and_sqlite_or_in_neither_and_a_deposed_leader_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = rt.block_on(etcd_client::Client::connect([etcd.url.as_str()], None)).unwrap();
    // The election key a leader would hold (the fence), written by hand.
    let fence = b"/simulcast/election/leader/test-a".to_vec();
    rt.block_on(client.put(fence.clone(), "a", None)).unwrap();
    let channel = |id: &str| {
        simulcast::config::parse_channel(&format!(
            "id = \"{id}\"\nname = \"{id}\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
             ingest = {{ type = \"udp\", uri = \"udp://127.0.0.1:4{}\" }}\n",
            id.len()
        ))
        .unwrap()
    };
    let ids = |s: &Store| s.channels().unwrap().into_iter().map(|c| c.id.to_string()).collect::<Vec<_>>();

    let a = Store::open(&dir.path().join("a.db")).unwrap();
    a.insert_channel(&channel("before")).unwrap();
    a.share_through(std::slice::from_ref(&etcd.url)).unwrap();
    // The first leader seeds etcd from its file.
    assert!(a.take_over(fence.clone()).unwrap().contains("seeded"));
    a.shared(|| a.insert_channel(&channel("kz")).map(drop)).unwrap();
    let held = rt.block_on(client.get("/simulcast/state/channels/kz", None)).unwrap();
    assert_eq!(held.kvs().len(), 1, "the write did not reach etcd");

    // Deposed: its election key is gone. The write fails naming why, and
    // SQLite rolled it back.
    rt.block_on(client.delete(fence.clone(), None)).unwrap();
    let e = a.shared(|| a.insert_channel(&channel("late")).map(drop)).unwrap_err();
    assert!(e.to_string().contains("no longer holds the election"), "{e}");
    assert_eq!(ids(&a), ["before", "kz"], "a refused write stayed in SQLite");

    // etcd away: refused too, and rolled back here. But etcd got the
    // request and may apply it once it runs again: the outcome is unknown.
    rt.block_on(client.put(fence.clone(), "a", None)).unwrap();
    etcd.signal(libc::SIGSTOP);
    let e = a.shared(|| a.insert_channel(&channel("away")).map(drop)).unwrap_err();
    assert_eq!(ids(&a), ["before", "kz"]);
    etcd.signal(libc::SIGCONT);
    assert!(e.to_string().contains(&format!("etcd ({})", etcd.url)), "{e}");
    // So the next write reads etcd again first (and fails, asking to try
    // again); the store then holds what etcd holds, "away" or not.
    let e = a.shared(|| a.insert_channel(&channel("after")).map(drop)).unwrap_err();
    assert!(e.to_string().contains("read again from etcd"), "{e}");
    let in_etcd = !rt.block_on(client.get("/simulcast/state/channels/away", None)).unwrap().kvs().is_empty();
    let expect: Vec<&str> = if in_etcd { vec!["before", "kz", "away"] } else { vec!["before", "kz"] };
    assert_eq!(ids(&a), expect, "the store does not follow etcd after an unanswered write");
    a.shared(|| a.insert_channel(&channel("after")).map(drop)).unwrap();

    // Another node taking over gets exactly what was applied.
    let b = Store::open(&dir.path().join("b.db")).unwrap();
    b.insert_channel(&channel("stale")).unwrap();
    b.share_through(std::slice::from_ref(&etcd.url)).unwrap();
    let fence_b = b"/simulcast/election/leader/test-b".to_vec();
    rt.block_on(client.put(fence_b.clone(), "b", None)).unwrap();
    assert!(b.take_over(fence_b).unwrap().contains("imported"));
    assert_eq!(ids(&b), ids(&a));
    assert_eq!(ids(&b).last().map(String::as_str), Some("after"));
}

#[test]
fn bad_cluster_options_are_refused_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let out = Command::new(env!("CARGO_BIN_EXE_simulcastd"))
        .args(["serve", "--db"])
        .arg(&db)
        .args(["--cluster", "127.0.0.1:2379", "--node", "a b", "--lease-ttl", "1500ms", "--metrics-listen", "off"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("`127.0.0.1:2379` is not an etcd URL"), "{err}");
    assert!(err.contains("--node `a b`"), "{err}");
    assert!(err.contains("whole seconds"), "{err}");
    assert!(!db.exists(), "a refused start created the store");
    // --node without --cluster, and the reverse, are refused by the parser.
    let out = Command::new(env!("CARGO_BIN_EXE_simulcastd")).args(["serve", "--node", "n1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cluster"));
    // --cluster-ca-cert checks the other nodes' TLS: without --tls-cert
    // the nodes speak in clear, and it is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_simulcastd"))
        .args(["serve", "--cluster", "http://127.0.0.1:2379", "--node", "n1", "--cluster-ca-cert", "ca.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_single_node_daemon_says_it_has_no_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::server::ApiServer::start(&dir.path().join("s.db")).await;
    let mut c = NodeServiceClient::new(server.transport().await);
    let e = c.list_nodes(authed(ListNodesRequest {}, server.token(Role::Observer))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("single-node mode"), "{e:?}");
    server.stop().await;
}

/// A TCP relay to etcd that can be cut like a partition: once cut, bytes
/// either way are read and dropped (nothing is closed, nothing answers).
struct Partition {
    url: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Partition {
    fn to(etcd: &Etcd) -> Partition {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let target = etcd.url.trim_start_matches("http://").to_owned();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = cut.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let c = c.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                break;
                            }
                            if !c.load(std::sync::atomic::Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        Partition { url, cut }
    }

    fn cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_alone_stops_its_leg_before_the_next_leader_sends() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let partner = Senders::start();
    let config = one_udp_leg(dir.path(), partner.port);
    let extra = [OsStr::new("--config"), config.as_os_str()];
    // n1 reaches etcd through a link the test can cut; it leads first.
    let link = Partition::to(&etcd);
    let n1 = Node::start_with(dir.path(), "n1", &link.url, &extra);
    assert_eq!(settled(&[&n1], &["n1"], Duration::from_secs(15)).await, "n1");
    let others: Vec<Node> = ["n2", "n3"].iter().map(|n| Node::start_with(dir.path(), n, &etcd.url, &extra)).collect();
    let all = [&n1, &others[0], &others[1]];
    assert_eq!(settled(&all, &["n1", "n2", "n3"], Duration::from_secs(15)).await, "n1");
    let token = n1.token.clone();
    on_air_through(&others[0], &token).await;
    assert!(common::wait_for(Duration::from_secs(20), || partner.seen().len() > 200).await, "no data from n1");
    let old = partner.seen().last().unwrap().1;

    // The partition: n1 alone loses etcd; n2 and n3 still reach it, so
    // they do not vouch, and n1 must stop before either may send.
    link.cut(true);
    let since = Instant::now();
    let (last_old, took) = partner
        .handed_over(old, Duration::from_secs(15))
        .await
        .expect("no other node took the leg from the cut-off leader");
    eprintln!(
        "leader cut off from etcd: it sent last {:.0} ms after the cut, the next leader first {:.0} ms after it",
        (last_old - since).as_secs_f64() * 1e3,
        (took - since).as_secs_f64() * 1e3
    );
    assert!(last_old < took, "the cut-off leader sent {:?} after the next one began", last_old - took);
    let log = n1.log_text();
    assert!(log.contains("not every peer vouches"), "{log}");
    assert!(log.contains("reaches etcd"), "{log}");
    assert!(!log.contains("on its peers' word (failsafe)"), "{log}");
    // Healed: n1 comes back as a follower and sends nothing.
    link.cut(false);
    let healed = Instant::now();
    let next = settled(&all, &["n1", "n2", "n3"], Duration::from_secs(20)).await;
    assert_ne!(next, "n1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let late = partner.seen().iter().filter(|(t, from)| *t > took && *from == old).count();
    assert_eq!(late, 0, "n1 sent {late} datagram(s) beside the next leader (healed {healed:?} ago)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_t0_inside_an_etcd_outage_still_switches_at_t0_and_the_event_is_on_air_once_etcd_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let partner = Senders::start();
    let (etcd, nodes, first) = on_one_udp_leg(dir.path(), &["n1", "n2"], partner.port).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = nodes.iter().find(|n| n.name == first).unwrap();
    let token = nodes[0].token.clone();
    // T0 on a whole second, 8 s ahead: armed at once (the preroll is 1 min).
    let t0 = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 8, 0).unwrap();
    let mut c = nodes[0].events().await.unwrap();
    let event = c.schedule_event(authed(final_at(t0, 600), &token)).await.expect("schedule").into_inner();
    assert!(common::wait_for(Duration::from_secs(6), || partner.seen().len() > 50).await, "no slate before T0");

    // etcd goes 2 s before T0 and comes back 6 s after it.
    tokio::time::sleep((t0 - chrono::Duration::seconds(2) - chrono::Utc::now()).to_std().expect("T0 came too soon"))
        .await;
    etcd.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    tokio::time::sleep((t0 + chrono::Duration::seconds(6) - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    etcd.signal(libc::SIGCONT);
    settled(&all, &["n1", "n2"], Duration::from_secs(15)).await;

    // The programme went out at T0, while etcd was away (the media side
    // logs each switch with its UTC instant).
    let log = leader.log_text();
    let switched: Vec<&str> =
        log.lines().filter(|l| l.contains("Program switched.") && l.contains("PROGRAM")).collect();
    let first_switch = switched.first().unwrap_or_else(|| panic!("no switch to the programme: {log}"));
    let utc = first_switch.split("utc=").nth(1).unwrap_or_default().trim();
    let at = chrono::NaiveTime::parse_from_str(utc.trim_end_matches('Z'), "%H:%M:%S%.3f").unwrap();
    let late = (at - t0.time()).num_milliseconds();
    eprintln!("T0 inside an etcd outage: the programme went out at T0{late:+} ms");
    assert!((-100..=1500).contains(&late), "the programme went out at T0{late:+} ms: {first_switch}");
    // The leg never stopped, and one node sent it.
    let (gap, senders) = partner.since(stopped);
    assert!(gap < Duration::from_millis(500), "the partner was silent {gap:?}");
    assert_eq!(senders.len(), 1, "several senders: {senders:?}");
    // Once etcd is back, the event is ON_AIR, and the as-run log says so.
    let id = simulcast::proto::EventRef { event_id: event.id.clone() };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = nodes[0].events().await.unwrap().get_event(authed(id.clone(), &token)).await;
        if got.as_ref().is_ok_and(|e| e.get_ref().state == simulcast::proto::EventState::OnAir as i32) {
            break;
        }
        assert!(Instant::now() < deadline, "not ON_AIR 10 s after etcd came back: {got:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The leader writes what it kept within a second or two of etcd's return.
    let deadline = Instant::now() + Duration::from_secs(10);
    let kinds: Vec<String> = loop {
        let entries = asrun_of(&nodes[0], &event.id, &token).await;
        if entries.iter().any(|e| e.kind == "leg-program") || Instant::now() > deadline {
            break entries
                .iter()
                .map(|e| format!("T0{:+} ms {} {}", (at_utc(e) - t0).num_milliseconds(), e.kind, e.detail))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Either the write made at T0 reached etcd after all (sent before the
    // store knew etcd was away, it waited in etcd's socket and landed on
    // SIGCONT: the store read it back), or it was refused and the clock
    // wrote it once etcd was back, saying when it was due.
    let due = format!("T0 reached (due {}, written ", t0.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let on_air: Vec<&String> = kinds.iter().filter(|k| k.contains(" on-air ")).collect();
    assert_eq!(on_air.len(), 1, "{kinds:#?}");
    let in_time = |k: &str| k.trim_start_matches("T0").split(" ms").next().and_then(|v| v.parse::<i64>().ok());
    let at_t0 = in_time(on_air[0]).is_some_and(|ms| (0..=1500).contains(&ms));
    assert!(at_t0 || on_air[0].contains(&due), "{kinds:#?}");
    // What the leg did meanwhile was kept and written once etcd was back:
    // its first programme picture, at its own instant, once.
    let pictures: Vec<&String> = kinds.iter().filter(|k| k.contains(" leg-program ")).collect();
    assert_eq!(pictures.len(), 1, "{kinds:#?}");
    assert!(in_time(pictures[0]).is_some_and(|ms| (0..=1500).contains(&ms)), "{kinds:#?}");
}

/// A config of one leg per ingest (each given as the TOML inline table),
/// `leg-a`, `leg-b`, ..., for `--placement spread`.
fn legs_to(dir: &Path, ingests: &[String]) -> PathBuf {
    legs_from(&dir.join("legs.toml"), "type = \"test\"", ingests)
}

/// [`legs_to`] with the `[source]` table's keys `source`, written to `config`.
fn legs_from(config: &Path, source: &str, ingests: &[String]) -> PathBuf {
    let config = config.to_owned();
    let mut text = format!(
        "[event]\ntitle = \"Silk Way Star: grand final\"\n[source]\n{source}\n\
         [program]\nwidth = 320\nheight = 180\nframerate = 25\nvideo_kbps = 400\ngop = 25\n"
    );
    for (i, ingest) in ingests.iter().enumerate() {
        text += &format!(
            "[[channels]]\nid = \"leg-{}\"\nname = \"Partner {i}\"\ncountry = \"KR\"\ntimezone = \"Asia/Seoul\"\ningest = {ingest}\n",
            (b'a' + i as u8) as char
        );
    }
    std::fs::write(&config, text).unwrap();
    config
}

/// Asserts that what `capture` got since `from` is MPEG-TS without a
/// continuity error, and enough of it (`what` names it).
fn continuous_since(capture: &UdpCapture, from: Instant, what: &str) {
    let data: Vec<u8> = capture.timed().into_iter().filter(|(t, _)| *t >= from).flat_map(|(_, d)| d).collect();
    let r = common::check_ts(&data);
    assert!(r.packets > 500, "{what}: only {} packets", r.packets);
    assert_eq!((r.not_sync, r.cc_errors), (0, 0), "{what}: {r:?}");
}

/// `simulcastd serve` arguments for a node carrying spread legs from
/// `config` (its channels and its own `[source]`).
fn spread_args(config: &Path) -> [&OsStr; 4] {
    [OsStr::new("--config"), config.as_os_str(), OsStr::new("--placement"), OsStr::new("spread")]
}

/// A UDP ingest to `port` on loopback, as a TOML inline table.
fn udp_ingest(port: u16) -> String {
    format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{port}\" }}")
}

/// A cluster with legs spread, on air.
struct Spread {
    etcd: Etcd,
    nodes: Vec<Node>,
    /// The leader.
    first: String,
    /// An admin token (the first node's).
    token: String,
    event: String,
    /// The node carrying each leg (leg id -> node).
    placed: std::collections::BTreeMap<String, String>,
}

/// etcd and the nodes `names` with `--placement spread`, one leg per
/// ingest ([`legs_to`]), settled; an event scheduled, armed and taken
/// through the first node, and all `legs` legs on air.
async fn spread_on_air(dir: &Path, names: &[&str], ingests: &[String], legs: usize) -> Spread {
    let config = legs_to(dir, ingests);
    let etcd = Etcd::start(dir);
    let extra = spread_args(&config);
    let nodes: Vec<Node> = names.iter().map(|n| Node::start_with(dir, n, &etcd.url, &extra)).collect();
    let first = settled(&nodes.iter().collect::<Vec<_>>(), names, Duration::from_secs(15)).await;
    let token = nodes[0].token.clone();
    let event = on_air_through(&nodes[0], &token).await;
    let placed = carriers(&nodes[0], &event, &token, legs, Duration::from_secs(30)).await;
    Spread { etcd, nodes, first, token, event, placed }
}

/// n1 started first and settled as the leader, then `others` joining it
/// (name, etcd URL, arguments each); an event taken on air through n1,
/// and the node carrying each of its `legs` legs. The nodes come back in
/// order, n1 first.
async fn n1_leads_then(
    dir: &Path,
    etcd: &str,
    n1_args: &[&OsStr],
    others: &[(&str, &str, &[&OsStr])],
    legs: usize,
) -> (Vec<Node>, String, std::collections::BTreeMap<String, String>) {
    let n1 = Node::start_with(dir, "n1", etcd, n1_args);
    assert_eq!(settled(&[&n1], &["n1"], Duration::from_secs(15)).await, "n1");
    let mut nodes = vec![n1];
    nodes.extend(others.iter().map(|(name, url, args)| Node::start_with(dir, name, url, args)));
    let names: Vec<&str> = std::iter::once("n1").chain(others.iter().map(|o| o.0)).collect();
    assert_eq!(settled(&nodes.iter().collect::<Vec<_>>(), &names, Duration::from_secs(15)).await, "n1");
    let token = nodes[0].token.clone();
    let event = on_air_through(&nodes[0], &token).await;
    let placed = carriers(&nodes[0], &event, &token, legs, Duration::from_secs(30)).await;
    (nodes, token, placed)
}

/// The node carrying each leg, as `WatchStatus` through `node` says once
/// all `legs` legs of `event` name one and send (SLATE before the
/// programme, ON_AIR).
async fn carriers(
    node: &Node,
    event: &str,
    token: &str,
    legs: usize,
    within: Duration,
) -> std::collections::BTreeMap<String, String> {
    let t = node.connect().await.unwrap();
    let req = simulcast::proto::EventRef { event_id: event.to_owned() };
    let mut updates = MonitorServiceClient::new(t).watch_status(authed(req, token)).await.expect("watch").into_inner();
    let deadline = Instant::now() + within;
    loop {
        let u = tokio::time::timeout(Duration::from_secs(5), updates.message()).await.unwrap().unwrap().unwrap();
        let sending = [simulcast::proto::LegState::OnAir as i32, simulcast::proto::LegState::Slate as i32];
        if u.legs.len() == legs && u.legs.iter().all(|l| !l.node.is_empty() && sending.contains(&l.state)) {
            return u.legs.iter().map(|l| (l.channel_id.clone(), l.node.clone())).collect();
        }
        let seen: Vec<(String, String, i32, String)> =
            u.legs.iter().map(|l| (l.channel_id.clone(), l.node.clone(), l.state, l.last_error.clone())).collect();
        assert!(Instant::now() < deadline, "not every leg sending from its node within {within:?}: {seen:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_legs_spread_over_three_nodes_and_a_killed_nodes_legs_start_on_another_within_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let udp: Vec<UdpCapture> = (0..5).map(|_| UdpCapture::start()).collect();
    // leg-e: SRT to srt-live-transmit, which hands what it gets to udp[4].
    let srt_port = common::peer_port();
    let _srt = common::SrtReceiver::start_to_udp(srt_port, udp[4].port);
    let nginx = common::NginxRtmp::start();
    let mut ingests: Vec<String> = udp[..4].iter().map(|u| udp_ingest(u.port)).collect();
    ingests.push(format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{srt_port}\" }}"));
    ingests
        .push(format!("{{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{}/live\", stream_key = \"leg-f\" }}", nginx.port));
    // The UDP capture of each leg but the RTMP one.
    let capture = |leg: &str| &udp[usize::from(leg.as_bytes()[4] - b'a')];
    // Two legs on each node, each partner fed by the node carrying its leg.
    let Spread { etcd: _etcd, mut nodes, first, token, event, placed } =
        spread_on_air(dir.path(), &["n1", "n2", "n3"], &ingests, 6).await;
    for n in &nodes {
        let legs = placed.values().filter(|c| **c == n.name).count();
        assert_eq!(legs, 2, "{} carries {legs} legs: {placed:?}", n.name);
    }
    for (leg, _) in placed.iter().filter(|(l, _)| *l != "leg-f") {
        let u = capture(leg);
        assert!(common::wait_for(Duration::from_secs(10), || u.bytes() > 50_000).await, "{leg}: {} bytes", u.bytes());
    }
    assert!(
        common::wait_for(Duration::from_secs(10), || nginx.recorded_bytes("leg-f") > 20_000).await,
        "the RTMP partner got {} bytes",
        nginx.recorded_bytes("leg-f")
    );
    let mut table = Vec::new();
    for _ in 0..40 {
        let r = nodes[0].list(Duration::from_secs(2)).await.unwrap();
        table = r.nodes.iter().map(|n| (n.name.clone(), n.legs, n.source.clone())).collect::<Vec<_>>();
        if table.iter().all(|(_, legs, source)| *legs == 2 && source != "-") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(table.iter().all(|(_, legs, source)| *legs == 2 && source != "-"), "ListNodes: {table:?}");

    // Kill -9 the follower carrying the SRT leg (leg-e) mid-programme.
    let victim = placed["leg-e"].clone();
    assert_ne!(victim, first, "the SRT leg went to the leader: {placed:?}");
    let moved: Vec<String> = placed.iter().filter(|(_, n)| **n == victim).map(|(l, _)| l.clone()).collect();
    let stayed: Vec<String> =
        placed.iter().filter(|(l, n)| **n != victim && *l != "leg-f").map(|(l, _)| l.clone()).collect();
    let at = nodes.iter().position(|n| n.name == victim).unwrap();
    let mut dead = nodes.remove(at);
    let killed = Instant::now();
    let killed_utc = chrono::Utc::now();
    dead.daemon.0.kill().unwrap();
    dead.daemon.0.wait().unwrap();
    let rtmp_before = nginx.recorded_bytes("leg-f");
    for leg in &moved {
        let u = capture(leg);
        let back = common::wait_for(Duration::from_secs(15), || {
            u.timed().iter().any(|(t, _)| *t > killed + Duration::from_millis(300))
        })
        .await;
        assert!(back, "{leg}: no data after node {victim} was killed");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for leg in &moved {
        let (gap, resumed) = longest_gap(capture(leg), killed - Duration::from_millis(200));
        eprintln!(
            "{leg} on killed node {victim}: partner silent {:.0} ms (lease TTL {} s)",
            gap.as_secs_f64() * 1e3,
            TTL.as_secs()
        );
        assert!(resumed.is_some(), "{leg}: no data again");
        // A UDP partner takes the new sender at once: within the TTL and
        // 1 s. srt-live-transmit, as a listener, takes a new caller only
        // once the dead one's connection has timed out (its peer idle
        // timeout, 5 s by default): its partner waits that long whoever
        // sends next.
        let bound = if leg == "leg-e" { TTL + Duration::from_secs(6) } else { TTL + Duration::from_secs(1) };
        assert!(gap <= bound, "{leg}: the partner was silent {gap:?} (TTL {TTL:?}, bound {bound:?})");
    }
    // The other legs did not notice: every TS packet from a second before
    // the kill until now, without a continuity error.
    for leg in &stayed {
        continuous_since(capture(leg), killed - Duration::from_secs(1), &format!("{leg} (on {})", placed[leg]));
    }
    assert!(nginx.recorded_bytes("leg-f") > rtmp_before, "the RTMP leg (on {}) stopped", placed["leg-f"]);

    // The as-run log says which node took each leg, and the status agrees.
    let now_on = carriers(&nodes[0], &event, &token, 6, Duration::from_secs(10)).await;
    let entries = asrun_of(&nodes[0], &event, &token).await;
    let details: Vec<String> = entries.iter().map(|e| format!("{} {} {}", e.kind, e.channel_id, e.detail)).collect();
    assert!(details.iter().any(|d| d.starts_with("legs-placed ")), "{details:#?}");
    // Placing is not trouble: no leg error before the kill (a leg waiting
    // for its node to say it carries it is connecting).
    let early: Vec<&String> = entries
        .iter()
        .zip(&details)
        .filter(|(e, _)| e.kind == "leg-error" && at_utc(e) < killed_utc)
        .map(|(_, d)| d)
        .collect();
    assert!(early.is_empty(), "{early:#?}");
    for leg in &moved {
        let to = &now_on[leg];
        assert_ne!(*to, victim, "{now_on:?}");
        let said = format!("leg-moved {leg} moved to node {to}: node {victim}'s lease ran out");
        assert!(details.iter().any(|d| d.starts_with(&said)), "{said}: {details:#?}");
    }
    for leg in &stayed {
        assert_eq!(now_on[leg], placed[leg], "{leg} moved though its node lives");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_stopped_for_10_s_never_sends_beside_the_node_that_took_its_leg() {
    let dir = tempfile::tempdir().unwrap();
    let partners: Vec<Senders> = (0..3).map(|_| Senders::start()).collect();
    let ingests: Vec<String> = partners.iter().map(|p| udp_ingest(p.port)).collect();
    let Spread { etcd: _etcd, nodes, first, token: _, event: _, placed } =
        spread_on_air(dir.path(), &["n1", "n2", "n3"], &ingests, 3).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let (leg, victim) = placed.iter().find(|(_, n)| **n != first).map(|(l, n)| (l.clone(), n.clone())).unwrap();
    let partner = &partners[usize::from(leg.as_bytes()[4] - b'a')];
    assert!(common::wait_for(Duration::from_secs(20), || partner.seen().len() > 200).await, "{leg}: no data");
    let old = partner.seen().last().unwrap().1;

    let stopped = nodes.iter().find(|n| n.name == victim).unwrap();
    stopped.signal(libc::SIGSTOP);
    let since = Instant::now();
    // Its leg moves once etcd lets its lease go, and goes out from another
    // node; woken, it joins again with a new lease, and its old legs stay
    // silent in the new lease too.
    let woke =
        stopped_10_s_one_sender_at_a_time(partner, stopped, old, since, &format!("carrier {victim} of {leg}")).await;
    let seen = partner.seen();
    assert!(seen.last().unwrap().0 > woke + Duration::from_secs(3), "{leg} stopped after {victim} woke");
    // It is back as a follower carrying nothing; the leader did not change.
    assert_eq!(settled(&all, &["n1", "n2", "n3"], Duration::from_secs(10)).await, first);
    let mut table = Vec::new();
    for _ in 0..40 {
        let r = nodes[0].list(Duration::from_secs(2)).await.unwrap();
        table = r.nodes.iter().map(|n| (n.name.clone(), n.legs)).collect::<Vec<_>>();
        if table.iter().any(|(n, legs)| *n == victim && *legs == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(table.iter().any(|(n, legs)| *n == victim && *legs == 0), "ListNodes: {table:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_legs_spread_a_killed_leaders_leg_moves_and_a_follower_carrying_one_never_stops() {
    let dir = tempfile::tempdir().unwrap();
    let partners: Vec<UdpCapture> = (0..3).map(|_| UdpCapture::start()).collect();
    let ingests: Vec<String> = partners.iter().map(|p| udp_ingest(p.port)).collect();
    let Spread { etcd: _etcd, mut nodes, first, token, event, placed } =
        spread_on_air(dir.path(), &["n1", "n2", "n3"], &ingests, 3).await;
    let partner = |leg: &str| &partners[usize::from(leg.as_bytes()[4] - b'a')];
    for leg in placed.keys() {
        assert!(common::wait_for(Duration::from_secs(10), || partner(leg).bytes() > 50_000).await, "{leg}: no data");
    }

    let at = nodes.iter().position(|n| n.name == first).unwrap();
    let mut dead = nodes.remove(at);
    let killed = Instant::now();
    dead.daemon.0.kill().unwrap();
    dead.daemon.0.wait().unwrap();
    let survivors: Vec<&Node> = nodes.iter().collect();
    let names: Vec<&str> = survivors.iter().map(|n| n.name.as_str()).collect();
    let next = settled(&survivors, &names, Duration::from_secs(15)).await;
    let now_on = carriers(&nodes[0], &event, &token, 3, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = killed - Duration::from_millis(200);
    for (leg, node) in &placed {
        let (gap, _) = longest_gap(partner(leg), from);
        eprintln!(
            "leader {first} killed: {leg} (on {node}, now on {}): partner silent {:.0} ms",
            now_on[leg],
            gap.as_secs_f64() * 1e3
        );
    }
    // The dead leader's leg: on a survivor, within the TTL, an election
    // and the start of a leg.
    let (orphan, _) = placed.iter().find(|(_, n)| **n == first).unwrap();
    assert_ne!(now_on[orphan], first);
    let (gap, resumed) = longest_gap(partner(orphan), from);
    assert!(resumed.is_some() && gap <= TTL + Duration::from_secs(4), "{orphan}: silent {gap:?}");
    // The follower that kept following carried its leg through the leader
    // change: not a continuity error in it.
    let (kept, node) = placed.iter().find(|(_, n)| **n != first && **n != next).unwrap();
    assert_eq!(now_on[kept], *node, "{kept} moved though its node lives: {now_on:?}");
    continuous_since(partner(kept), killed - Duration::from_secs(1), &format!("{kept} on {node}"));
    let entries = asrun_of(&nodes[0], &event, &token).await;
    let details: Vec<String> = entries.iter().map(|e| format!("{} {}", e.kind, e.detail)).collect();
    assert!(details.iter().any(|d| d.starts_with("legs-placed ") && d.contains(&format!("{next}: "))), "{details:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_legs_spread_and_a_udp_contribution_the_next_leader_takes_its_own_port_over_and_both_legs_carry_the_programme()
 {
    let dir = tempfile::tempdir().unwrap();
    let partners: Vec<UdpCapture> = (0..2).map(|_| UdpCapture::start()).collect();
    let ingests: Vec<String> = partners.iter().map(|p| udp_ingest(p.port)).collect();
    // Each node listens for the venue on its own UDP port; the venue's
    // encoder sends to both (as to a main and a backup site).
    let ports = [peer_port(), peer_port()];
    let etcd = Etcd::start(dir.path());
    let start = |name: &str, port: u16| {
        let source = format!("type = \"udp\"\nuri = \"udp://127.0.0.1:{port}\"");
        let config = legs_from(&dir.path().join(format!("legs-{name}.toml")), &source, &ingests);
        let extra = spread_args(&config);
        Node::start_with(dir.path(), name, &etcd.url, &extra)
    };
    let n1 = start("n1", ports[0]);
    assert_eq!(settled(&[&n1], &["n1"], Duration::from_secs(15)).await, "n1");
    let n2 = start("n2", ports[1]);
    assert_eq!(settled(&[&n1, &n2], &["n1", "n2"], Duration::from_secs(15)).await, "n1");
    let _venue = ChildGuard(common::venue_encoder(&ports));
    let token = n1.token.clone();
    let event = on_air_through(&n1, &token).await;
    let placed = carriers(&n1, &event, &token, 2, Duration::from_secs(30)).await;
    let own = placed.iter().find(|(_, n)| *n == "n2").map(|(l, _)| l.clone()).expect("a leg on n2");
    let moved = placed.iter().find(|(_, n)| *n == "n1").map(|(l, _)| l.clone()).expect("a leg on n1");
    let partner = |leg: &str| &partners[usize::from(leg.as_bytes()[4] - b'a')];
    programme_on_every_leg(&n1, &event, &token, Duration::from_secs(20)).await;

    // n1, the leader, dies: n2 leads, and stops its carrier's relay for
    // master control's, on the same contribution port.
    let mut n1 = n1;
    let killed = Instant::now();
    n1.daemon.0.kill().unwrap();
    n1.daemon.0.wait().unwrap();
    assert_eq!(settled(&[&n2], &["n2"], Duration::from_secs(15)).await, "n2");
    let on = programme_on_every_leg(&n2, &event, &token, TTL + Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let from = killed - Duration::from_millis(200);
    let (own_gap, _) = longest_gap(partner(&own), from);
    let (moved_gap, resumed) = longest_gap(partner(&moved), from);
    eprintln!(
        "leader killed, UDP contribution: the next leader's own leg silent {:.0} ms, the dead leader's leg {:.0} ms; programme on both {:.0} ms after the kill",
        own_gap.as_secs_f64() * 1e3,
        moved_gap.as_secs_f64() * 1e3,
        (on - killed).as_secs_f64() * 1e3
    );
    assert!(own_gap < Duration::from_secs(1), "{own} on n2 was silent {own_gap:?} when n2 took master control over");
    assert!(resumed.is_some() && moved_gap <= TTL + Duration::from_secs(4), "{moved}: silent {moved_gap:?}");
    continuous_since(partner(&own), on, &format!("{own} on n2"));
    continuous_since(partner(&moved), on, &format!("{moved} moved to n2"));
}

/// Waits until every leg of `event`, as `node` reports it, carries the
/// contribution's programme (ON_AIR, not the slate) from the primary
/// source; returns when.
async fn programme_on_every_leg(node: &Node, event: &str, token: &str, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(t) = node.connect().await {
            let req = simulcast::proto::EventRef { event_id: event.to_owned() };
            if let Ok(r) = MonitorServiceClient::new(t).watch_status(authed(req, token)).await {
                let mut updates = r.into_inner();
                while let Ok(Ok(Some(u))) = tokio::time::timeout(left, updates.message()).await {
                    let on_air = simulcast::proto::LegState::OnAir as i32;
                    let primary = simulcast::proto::SourceSelection::Primary as i32;
                    if !u.legs.is_empty() && u.legs.iter().all(|l| l.state == on_air) && u.source_in_use == primary {
                        return Instant::now();
                    }
                    let seen: Vec<(String, i32, String)> =
                        u.legs.iter().map(|l| (l.channel_id.clone(), l.state, l.last_error.clone())).collect();
                    assert!(
                        Instant::now() < deadline,
                        "not every leg on the programme within {within:?}: {seen:?} {u:?}"
                    );
                }
            }
        }
        assert!(Instant::now() < deadline, "{} gave no status within {within:?}", node.name);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channels_main_path_node_killed_its_backup_ingest_flows_on_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    // leg-a (another partner), then leg-b with a main and a backup ingest.
    let (other, main, backup) = (UdpCapture::start(), UdpCapture::start(), UdpCapture::start());
    let ingests =
        [udp_ingest(other.port), format!("{}\ningest_backup = {}", udp_ingest(main.port), udp_ingest(backup.port))];
    // Three legs: leg-a, leg-b and leg-b+backup, each on its own node.
    let Spread { etcd: _etcd, mut nodes, first, token, event, placed } =
        spread_on_air(dir.path(), &["n1", "n2", "n3"], &ingests, 3).await;
    let on: std::collections::BTreeSet<&String> = placed.values().collect();
    assert_eq!(on.len(), 3, "main and backup on two nodes, one leg each: {placed:?}");
    let victim = placed["leg-b"].clone();
    assert_ne!(victim, first, "{placed:?}");
    for (what, u) in [("main", &main), ("backup", &backup)] {
        assert!(common::wait_for(Duration::from_secs(10), || u.bytes() > 50_000).await, "{what}: {} bytes", u.bytes());
    }

    let at = nodes.iter().position(|n| n.name == victim).unwrap();
    let mut dead = nodes.remove(at);
    let killed = Instant::now();
    dead.daemon.0.kill().unwrap();
    dead.daemon.0.wait().unwrap();
    let back = common::wait_for(Duration::from_secs(15), || {
        main.timed().iter().any(|(t, _)| *t > killed + Duration::from_millis(300))
    })
    .await;
    assert!(back, "the main ingest got nothing after {victim} was killed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (gap, _) = longest_gap(&main, killed - Duration::from_millis(200));
    let (backup_gap, _) = longest_gap(&backup, killed - Duration::from_secs(1));
    eprintln!(
        "main path's node {victim} killed: main ingest silent {:.0} ms, backup ingest's longest gap {:.0} ms",
        gap.as_secs_f64() * 1e3,
        backup_gap.as_secs_f64() * 1e3
    );
    assert!(gap <= TTL + Duration::from_secs(1), "the main ingest was silent {gap:?}");
    // The backup path: every TS packet from a second before the kill, no
    // continuity error, no silence beyond the source's own spacing.
    continuous_since(&backup, killed - Duration::from_secs(1), "the backup ingest");
    assert!(backup_gap < Duration::from_millis(300), "the backup ingest was silent {backup_gap:?}");
    let now_on = carriers(&nodes[0], &event, &token, 3, Duration::from_secs(10)).await;
    assert_eq!(now_on["leg-b+backup"], placed["leg-b+backup"], "{now_on:?}");
    assert_ne!(now_on["leg-b"], now_on["leg-b+backup"], "main and backup on one node: {now_on:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_carries_no_placed_legs_is_given_none() {
    let dir = tempfile::tempdir().unwrap();
    let partners: Vec<UdpCapture> = (0..3).map(|_| UdpCapture::start()).collect();
    let ingests: Vec<String> = partners.iter().map(|p| udp_ingest(p.port)).collect();
    let config = legs_to(dir.path(), &ingests);
    let etcd = Etcd::start(dir.path());
    let spread = spread_args(&config);
    // n1 leads (alone at first); n3 was started without --placement spread
    // (a configuration mistake): it runs no carrier.
    let others: [(&str, &str, &[&OsStr]); 2] = [("n2", &etcd.url, &spread), ("n3", &etcd.url, &spread[..2])];
    let (_nodes, _token, placed) = n1_leads_then(dir.path(), &etcd.url, &spread, &others, 3).await;
    assert!(placed.values().all(|n| n != "n3"), "a leg went to n3, which carries none: {placed:?}");
    assert!(placed.values().any(|n| n == "n2"), "{placed:?}");
    for p in &partners {
        assert!(common::wait_for(Duration::from_secs(10), || p.bytes() > 50_000).await, "{} bytes", p.bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_legs_spread_etcd_lost_for_10_s_every_leg_flows_on_from_one_sender() {
    let dir = tempfile::tempdir().unwrap();
    let partners: Vec<Senders> = (0..2).map(|_| Senders::start()).collect();
    let ingests: Vec<String> = partners.iter().map(|p| udp_ingest(p.port)).collect();
    let Spread { etcd, nodes, first, token: _, event: _, placed } =
        spread_on_air(dir.path(), &["n1", "n2"], &ingests, 2).await;
    let all: Vec<&Node> = nodes.iter().collect();
    let partner = |leg: &str| &partners[usize::from(leg.as_bytes()[4] - b'a')];
    let (leaders, followers) = {
        let l = placed.iter().find(|(_, n)| **n == first).map(|(l, _)| l.clone()).unwrap();
        let f = placed.iter().find(|(_, n)| **n != first).map(|(l, _)| l.clone()).unwrap();
        (l, f)
    };
    for p in &partners {
        assert!(common::wait_for(Duration::from_secs(10), || p.seen().len() > 200).await, "no data");
    }

    etcd.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    etcd.signal(libc::SIGCONT);
    let back = Instant::now();
    assert_eq!(settled(&all, &["n1", "n2"], Duration::from_secs(15)).await, first);
    let f = partner(&followers);
    let resumed = common::wait_for(Duration::from_secs(15), || f.seen().iter().any(|(t, _)| *t > back)).await;
    assert!(resumed, "{followers} (on the follower) did not flow after etcd was back");
    tokio::time::sleep((back + TTL + Duration::from_secs(2)).saturating_duration_since(Instant::now())).await;

    // The leader's leg: on its peers' word.
    let (gap, senders) = partner(&leaders).since(stopped - Duration::from_secs(1));
    assert!(gap < Duration::from_millis(500), "{leaders} on the leader was silent {gap:?}");
    assert_eq!(senders.len(), 1, "{leaders}: several senders {senders:?}");
    // The follower's: on the leader's word, as long as the leader's, so
    // through the whole outage. Once etcd is back its lease there has
    // expired: it joins again, and its legs start again under the new one.
    let seen: Vec<_> = f.seen().into_iter().filter(|(t, _)| *t >= stopped - Duration::from_secs(1)).collect();
    let gaps = |from: Instant, to: Instant| {
        let times: Vec<Instant> = seen.iter().map(|(t, _)| *t).filter(|t| *t >= from && *t <= to).collect();
        let edges = std::iter::once(from).chain(times.iter().copied()).chain(std::iter::once(to)).collect::<Vec<_>>();
        edges.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    };
    let during = gaps(stopped - Duration::from_secs(1), back);
    let after = gaps(back, back + TTL + Duration::from_secs(2));
    eprintln!(
        "etcd stopped 10 s, legs spread: {followers} (follower) longest silence {:.0} ms while etcd was away, {:.0} ms after it was back",
        during.as_secs_f64() * 1e3,
        after.as_secs_f64() * 1e3
    );
    assert!(
        during < Duration::from_millis(500),
        "{followers} on the follower was silent {during:?} while etcd was away"
    );
    // Its lease expired in etcd meanwhile: it joins again and its leg is
    // placed again under the new lease, within TTL + 1 s.
    assert!(
        after < TTL + Duration::from_secs(1),
        "{followers} on the follower was silent {after:?} after etcd was back"
    );
    let order: Vec<std::net::SocketAddr> = seen.iter().map(|(_, from)| *from).collect();
    let mut runs = order.clone();
    runs.dedup();
    let distinct: std::collections::BTreeSet<_> = runs.iter().collect();
    assert_eq!(runs.len(), distinct.len(), "two senders took turns on {followers}: {runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_legs_spread_a_follower_cut_off_from_etcd_alone_gets_no_word_and_stops_before_its_leg_moves() {
    let dir = tempfile::tempdir().unwrap();
    let partners: Vec<Senders> = (0..2).map(|_| Senders::start()).collect();
    let ingests: Vec<String> = partners.iter().map(|p| udp_ingest(p.port)).collect();
    let config = legs_to(dir.path(), &ingests);
    let etcd = Etcd::start(dir.path());
    let extra = spread_args(&config);
    // n1 leads; n2 reaches etcd through a link the test can cut.
    let link = Partition::to(&etcd);
    let (nodes, _token, placed) = n1_leads_then(dir.path(), &etcd.url, &extra, &[("n2", &link.url, &extra)], 2).await;
    let n2 = &nodes[1];
    let leg = placed.iter().find(|(_, n)| *n == "n2").map(|(l, _)| l.clone()).expect("a leg on n2");
    let partner = &partners[usize::from(leg.as_bytes()[4] - b'a')];
    assert!(common::wait_for(Duration::from_secs(10), || partner.seen().len() > 200).await, "no data from n2");
    let old = partner.seen().last().unwrap().1;

    // Only n2 loses etcd: the leader reaches it, so it has no word to give,
    // and n2 must stop before the leader moves its leg.
    link.cut(true);
    let since = Instant::now();
    let (last_old, took) = partner
        .handed_over(old, Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("nobody took {leg} from the cut-off follower"));
    eprintln!(
        "follower cut off from etcd: it sent {leg} last {:.0} ms after the cut, the leader's node first {:.0} ms after it",
        (last_old - since).as_secs_f64() * 1e3,
        (took - since).as_secs_f64() * 1e3
    );
    assert!(last_old < took, "the cut-off follower sent {:?} after the leg moved", last_old - took);
    assert!(last_old < since + TTL + Duration::from_millis(500), "it sent past its lease: {:?}", last_old - since);
    // Its session ends with the leader's refusal (said as the lease ends).
    let refused = || n2.log_text().contains("does not send on its peers' word now");
    assert!(common::wait_for(Duration::from_secs(5), refused).await, "{}", n2.log_text());
    let log = n2.log_text();
    assert!(!log.contains("on the leader's word (failsafe)"), "{log}");
    link.cut(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_legs_spread_every_node_switches_its_legs_at_the_same_t0() {
    let dir = tempfile::tempdir().unwrap();
    let partners: Vec<UdpCapture> = (0..3).map(|_| UdpCapture::start()).collect();
    let ingests: Vec<String> = partners.iter().map(|p| udp_ingest(p.port)).collect();
    let config = legs_to(dir.path(), &ingests);
    let etcd = Etcd::start(dir.path());
    let extra = spread_args(&config);
    let nodes: Vec<Node> =
        ["n1", "n2", "n3"].iter().map(|n| Node::start_with(dir.path(), n, &etcd.url, &extra)).collect();
    settled(&nodes.iter().collect::<Vec<_>>(), &["n1", "n2", "n3"], Duration::from_secs(15)).await;
    let token = nodes[0].token.clone();
    // T0 on a whole second, 10 s ahead: armed at once (the preroll is 1 min),
    // on slate on every node until then.
    let t0 = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 10, 0).unwrap();
    let mut c = nodes[0].events().await.unwrap();
    let event = c.schedule_event(authed(final_at(t0, 600), &token)).await.unwrap().into_inner().id;
    let placed = carriers(&nodes[0], &event, &token, 3, Duration::from_secs(9)).await;
    let on: std::collections::BTreeSet<&String> = placed.values().collect();
    assert_eq!(on.len(), 3, "one leg on each node before T0: {placed:?}");
    tokio::time::sleep((t0 + chrono::Duration::seconds(5) - chrono::Utc::now()).to_std().unwrap_or_default()).await;

    // Each leg's first programme picture, as the as-run log has it (the
    // instant it left its node, as that node's relay says).
    let entries = asrun_of(&nodes[0], &event, &token).await;
    let firsts: Vec<(String, i64)> = entries
        .iter()
        .filter(|e| e.kind == "leg-program")
        .map(|e| (e.channel_id.clone(), (at_utc(e) - t0).num_milliseconds()))
        .collect();
    let errors: Vec<i64> = firsts.iter().map(|(_, ms)| *ms).collect();
    eprintln!("legs spread over 3 nodes: first programme picture at T0 {firsts:?} ms (by leg: node {placed:?})");
    assert_eq!(firsts.len(), 3, "{entries:#?}");
    assert!(errors.iter().all(|ms| (-40..=1000).contains(ms)), "a leg switched off T0: {firsts:?}");
    let spread = errors.iter().max().unwrap() - errors.iter().min().unwrap();
    assert!(spread <= 500, "the nodes switched {spread} ms apart: {firsts:?}");
}
