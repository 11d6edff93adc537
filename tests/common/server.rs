//! A real control plane on loopback (tonic server, coordinator, SQLite store
//! on disk) with one token per role, started and stopped inside a test.

use std::path::{Path, PathBuf};

use simulcast::api::auth::{Caller, Role, Tokens, hash_token, new_token};
use simulcast::api::{HttpPorts, Served};
use simulcast::coordinator::{Coordinator, Options};
use simulcast::store::{Store, TokenRecord};
use tonic::Request;
use tonic::transport::Channel as Transport;

/// A running server.
pub struct ApiServer {
    pub addr: String,
    /// `http://127.0.0.1:PORT` of `/metrics` and `/healthz`.
    pub http_addr: String,
    pub db: PathBuf,
    pub tokens: Vec<(Role, String)>,
    pub coordinator: Coordinator,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// The embedded default's source and settings, relay checks skipped.
pub fn default_options() -> Options {
    Options::from_config(&simulcast::config::default_config())
}

impl ApiServer {
    /// A server over the store at `db` with the default options.
    pub async fn start(db: &Path) -> ApiServer {
        Self::start_with(db, default_options()).await
    }

    /// A server over the store at `db`; tokens for each role are made on
    /// first start and kept (their text beside the store, for the test).
    pub async fn start_with(db: &Path, options: Options) -> ApiServer {
        let store = Store::open(db).expect("store");
        let mut tokens = Vec::new();
        let known = Tokens::default();
        let saved = db.with_extension("tokens");
        if store.tokens().expect("tokens").is_empty() {
            for role in [Role::Observer, Role::Operator, Role::Admin] {
                let t = new_token().expect("token");
                let rec =
                    TokenRecord { name: format!("{role}-tester"), role: role.as_str().into(), sha256: hash_token(&t) };
                store.insert_token(&rec, "2026-11-26T00:00:00Z").expect("insert token");
                tokens.push((role, t));
            }
            let v: Vec<(String, String)> = tokens.iter().map(|(r, t)| (r.as_str().to_owned(), t.clone())).collect();
            std::fs::write(&saved, serde_json::to_string(&v).unwrap()).unwrap();
        } else {
            let v: Vec<(String, String)> = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
            tokens = v.into_iter().map(|(r, t)| (Role::parse(&r).unwrap(), t)).collect();
        }
        for rec in store.tokens().expect("tokens") {
            known.insert(&rec.sha256, Caller { name: rec.name.clone(), role: Role::parse(&rec.role).unwrap() });
        }
        let (coordinator, coord_task) = Coordinator::start(store, options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let http_addr = format!("http://{}", http.local_addr().unwrap());
        let http = Some(http);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let c = coordinator.clone();
        let task = tokio::spawn(async move {
            let served = Served { coordinator: c.clone(), tokens: known, tls: None, cluster: None };
            simulcast::api::serve(listener, served, HttpPorts { metrics: http, web: None }, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
            c.shutdown().await;
            let _ = coord_task.await;
        });
        ApiServer { addr, http_addr, db: db.to_owned(), tokens, coordinator, stop: Some(stop), task }
    }

    /// Stops it (relay included) and returns the store's path.
    pub async fn stop(mut self) -> PathBuf {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
        self.db.clone()
    }

    pub fn token(&self, role: Role) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).expect("token").1
    }

    pub async fn transport(&self) -> Transport {
        Transport::from_shared(self.addr.clone()).unwrap().connect().await.expect("connect")
    }
}

/// `msg` with `authorization: Bearer token`.
pub fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// Channel `id` with `ingest` (inline TOML), as a request carries it.
pub fn proto_channel(id: &str, ingest: &str) -> simulcast::proto::Channel {
    let toml =
        format!("id = \"{id}\"\nname = \"{id}\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\ningest = {ingest}\n");
    simulcast::api::convert::channel_to_proto_with_secrets(&simulcast::config::parse_channel(&toml).expect("channel"))
}

/// Creates a channel, as admin, from its TOML (a `[[channels]]` entry's keys).
pub async fn create_channel(server: &ApiServer, toml: &str) {
    let ch = simulcast::config::parse_channel(toml).expect("channel");
    let req = simulcast::proto::CreateChannelRequest {
        channel: Some(simulcast::api::convert::channel_to_proto_with_secrets(&ch)),
    };
    simulcast::proto::channel_service_client::ChannelServiceClient::new(server.transport().await)
        .create_channel(authed(req, server.token(Role::Admin)))
        .await
        .expect("create channel");
}

/// The first update of a watch stream on event `id` that satisfies `cond`.
pub async fn watch_until(
    m: &mut simulcast::proto::monitor_service_client::MonitorServiceClient<Transport>,
    id: &str,
    token: &str,
    timeout: std::time::Duration,
    cond: impl Fn(&simulcast::proto::StatusUpdate) -> bool,
) -> simulcast::proto::StatusUpdate {
    let req = simulcast::proto::EventRef { event_id: id.to_owned() };
    let mut s = m.watch_status(authed(req, token)).await.expect("watch").into_inner();
    let mut last = None;
    let deadline = tokio::time::Instant::now() + timeout;
    while let Ok(Ok(Some(u))) = tokio::time::timeout_at(deadline, s.message()).await {
        if cond(&u) {
            return u;
        }
        last = Some(u);
    }
    panic!("no matching status update in {timeout:?}; last: {last:#?}");
}

/// The as-run log of event `id`, oldest first, read through MonitorService.
pub async fn asrun(server: &ApiServer, id: &str, token: &str) -> Vec<simulcast::proto::AsRunEntry> {
    let req = simulcast::proto::GetAsRunLogRequest { event_id: id.to_owned(), ..Default::default() };
    simulcast::proto::monitor_service_client::MonitorServiceClient::new(server.transport().await)
        .get_as_run_log(authed(req, token))
        .await
        .expect("as-run log")
        .into_inner()
        .entries
}

/// The as-run log of event `id` once its relay has closed `legs` legs (their
/// `legs-closed` totals are written when the pipelines are down, a moment
/// after the event completes); 10 s at most.
pub async fn asrun_when_closed(
    server: &ApiServer,
    id: &str,
    token: &str,
    legs: usize,
) -> Vec<simulcast::proto::AsRunEntry> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = asrun(server, id, token).await;
        if log.iter().filter(|e| e.kind == "legs-closed").count() >= legs {
            return log;
        }
        assert!(std::time::Instant::now() < deadline, "{legs} legs' totals not logged within 10 s: {log:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `GET base+path` over plain HTTP/1.1 (the metrics port): status and body.
pub async fn http_get(base: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect to the metrics port");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status code");
    // axum answers small bodies with Content-Length, not chunked.
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    (status, body.to_owned())
}

/// The value of the sample `name{labels}` in a Prometheus text page, where
/// `labels` is the exact label text (`channel="kz"`), or "" for none.
pub fn sample(page: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
    page.lines()
        .find_map(|l| l.strip_prefix(&key).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// The three partners of the metrics and rehearsal tests, created as admin:
/// `kz-jibek-joly` by SRT with `passphrase` to `srt_port`, `kg-ktrk` by RTMP
/// with `stream_key` to nginx on `rtmp_port`, `mn-mnb` by UDP to `udp_port`.
pub async fn create_three_partners(server: &ApiServer, srt: (u16, Option<&str>), rtmp: (u16, &str), udp_port: u16) {
    create_three_partners_named(server, srt, rtmp, udp_port, ["kz-jibek-joly", "kg-ktrk", "mn-mnb"]).await
}

/// The same three partners with these display names (SRT, RTMP, UDP).
pub async fn create_three_partners_named(
    server: &ApiServer,
    (srt_port, passphrase): (u16, Option<&str>),
    (rtmp_port, stream_key): (u16, &str),
    udp_port: u16,
    names: [&str; 3],
) {
    let pp = passphrase.map(|p| format!(", passphrase = \"{p}\"")).unwrap_or_default();
    let partners = [
        ("kz-jibek-joly", "Asia/Almaty", format!("{{ type = \"srt\", uri = \"srt://127.0.0.1:{srt_port}\"{pp} }}")),
        (
            "kg-ktrk",
            "Asia/Bishkek",
            format!(
                "{{ type = \"rtmp\", url = \"rtmp://127.0.0.1:{rtmp_port}/live\", stream_key = \"{stream_key}\" }}"
            ),
        ),
        ("mn-mnb", "Asia/Ulaanbaatar", format!("{{ type = \"udp\", uri = \"udp://127.0.0.1:{udp_port}\" }}")),
    ];
    for ((id, zone, ingest), name) in partners.into_iter().zip(names) {
        // Debug quoting is a valid TOML basic string here (quotes escaped).
        let toml =
            format!("id = \"{id}\"\nname = {name:?}\ncountry = \"KZ\"\ntimezone = \"{zone}\"\ningest = {ingest}\n");
        create_channel(server, &toml).await;
    }
}

/// Asserts that a byte count the daemon reports is within 5 % of what a
/// receiver captured (and that enough went through for that to mean much).
pub fn within_5_percent(what: &str, reported: u64, received: u64) {
    let off = (reported as f64 - received as f64).abs() / (reported.max(1) as f64);
    eprintln!("{what}: reported {reported} bytes, receiver {received} bytes ({:.2} % apart)", off * 100.0);
    assert!(reported > 300_000, "{what}: only {reported} bytes reported");
    assert!(off <= 0.05, "{what}: the daemon says {reported} bytes, the receiver got {received}");
}
