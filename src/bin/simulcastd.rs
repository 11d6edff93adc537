//! simulcastd: the coordinator daemon. `demo` relays the embedded grand
//! final to local stand-in ingests with a live table; `run` relays a config.

// Doc comments here are clap's --help texts, written for a terminal:
// `[source]` names a config table, not a rustdoc link.
#![allow(rustdoc::broken_intra_doc_links)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use simulcast::config::{self, Config};
use simulcast::media::leg::LegState;
use simulcast::media::program::{Content, Cue};
use simulcast::relay::{Relay, RelayPlan, RelayStatus};
use simulcast::standin::StandIns;
use simulcast::table::{self, Table};

#[derive(Parser)]
#[command(name = "simulcastd", version, about = "simulcast daemon: relay one live feed to every partner ingest")]
struct Cli {
    /// Log as JSON lines instead of text (stderr).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once, at start")]
enum Cmd {
    /// Relay the embedded "Silk Way Star" grand final (or --config) to local
    /// stand-in ingests, with a live per-leg table. Ctrl-C stops it and prints
    /// a summary.
    Demo {
        /// Configuration file; default: the embedded grand final.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Stop by itself after this long (e.g. 30s); default: until Ctrl-C.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
        /// Print one JSON status object per second instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Serve the gRPC control plane (channels, events and master control,
    /// status streams and the as-run log, health, reflection) with the
    /// embedded store, and run the scheduled events. Needs at least one
    /// access token (`simulcastctl token create --db FILE ...`), in its
    /// store or, with --cluster, shared by another node.
    Serve {
        /// The store (SQLite file; created if missing).
        #[arg(long, default_value = "simulcast.db")]
        db: PathBuf,
        /// Address to listen on. A non-loopback address needs --tls-cert and
        /// --tls-key, or --allow-insecure-remote. A socket systemd hands
        /// over named `grpc` (simulcastd.socket) stands for it; `metrics` and
        /// `web` for the two ports below.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: std::net::SocketAddr,
        /// Configuration: its channels are imported when the store has none,
        /// and its [source] and [relay] are used for every event. Default:
        /// the embedded grand final's (the built-in test source).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// TLS certificate chain (PEM) for the gRPC port.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// TLS private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Listen on a non-loopback address without TLS (tokens then cross
        /// the network in clear), and serve metrics off loopback (they
        /// have no TLS).
        #[arg(long)]
        allow_insecure_remote: bool,
        /// Where events with delayed (`local_time`) legs record the program;
        /// default: beside the store (`simulcast.recordings` for `simulcast.db`).
        #[arg(long)]
        recordings: Option<PathBuf>,
        /// The only directory file legs may write in: a channel's file path
        /// is relative to it (an absolute one must be inside it); default:
        /// beside the store (`simulcast.files` for `simulcast.db`).
        #[arg(long)]
        file_legs: Option<PathBuf>,
        /// How long a recording is kept, so the longest delay a leg may have.
        #[arg(long, default_value = "6h", value_parser = parse_duration)]
        retention: Duration,
        /// Address of the HTTP port serving `/metrics` (Prometheus),
        /// `/healthz` and the multiviewer page (`/`, sign in with an
        /// access token; not here when the gRPC port has TLS: see
        /// --web-listen); `off` for none. Off loopback only with
        /// --allow-insecure-remote.
        #[arg(long, default_value = "127.0.0.1:9464", value_parser = parse_listen)]
        metrics_listen: Listen,
        /// Address of a port for the multiviewer page alone. With
        /// --tls-cert and --tls-key it speaks HTTPS (HTTP/2 and HTTP/1.1)
        /// with that certificate: the way to serve the page when the gRPC
        /// port has TLS. Off loopback only with TLS or
        /// --allow-insecure-remote.
        #[arg(long, default_value = "off", value_parser = parse_listen)]
        web_listen: Listen,
        /// Cluster mode: join the cluster coordinated by the etcd
        /// at these client URLs (comma-separated, e.g.
        /// http://127.0.0.1:2379). The node keeps a lease, campaigns for
        /// leadership and is listed by `simulcastctl nodes`; any node
        /// answers every RPC. The leader runs master control, the shared
        /// state lives in etcd, and while etcd is away from every node the
        /// leader keeps its legs on the others' word. The legs run on the
        /// leader, or spread over the nodes (--placement). Default:
        /// single-node mode, no etcd (docs/cluster.md).
        #[arg(long, value_delimiter = ',', requires = "node")]
        cluster: Vec<String>,
        /// This node's name in the cluster (letters, digits, `-`, `_`, `.`).
        #[arg(long, requires = "cluster")]
        node: Option<String>,
        /// How long the node's etcd lease lives without renewal (whole
        /// seconds): a node silent this long loses its place and, if it
        /// led, another node leads.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        lease_ttl: Duration,
        /// The gRPC address other nodes and operators reach this node on,
        /// as listed by `simulcastctl nodes`; default: the --listen address.
        #[arg(long)]
        advertise: Option<String>,
        /// With --cluster and --tls-cert (the nodes then speak TLS to each
        /// other: give every node the same choice): the PEM certificate(s)
        /// the other nodes' certificates are checked against, their CA.
        /// Each node's certificate must name the host it advertises.
        /// Default: this node's own --tls-cert (every node with one
        /// certificate).
        #[arg(long, requires_all = ["cluster", "tls_cert"])]
        cluster_ca_cert: Option<PathBuf>,
        /// With --cluster, where the legs run: `leader` (it carries every
        /// leg) or `spread` (each live leg on one node, the least loaded,
        /// moved when that node's lease runs out; every node then needs
        /// the contribution at its own --config [source]). Delayed and
        /// file legs stay on the leader. Give every node the same choice.
        #[arg(long, default_value = "leader", requires = "cluster", value_parser = ["leader", "spread"])]
        placement: String,
    },
    /// Relay the configuration's source to its channels until Ctrl-C or SIGTERM.
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Log a status line per leg this often.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        status_every: Duration,
    },
    /// Write the man pages and shell completions to DIR (for packaging).
    #[command(hide = true)]
    Generate {
        /// Where: DIR/man1 and DIR/completions.
        dir: PathBuf,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    config::uri::parse_duration(s)
}

/// An address to listen on, or none.
#[derive(Debug, Clone, Copy)]
struct Listen(Option<std::net::SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen(None));
    }
    s.parse().map(|a| Listen(Some(a))).map_err(|e| format!("`{s}` is not an address (IP:PORT) or `off`: {e}"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    simulcast::media::limit_malloc_arenas();
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Cmd::Demo { .. }) { "warn,gst=error" } else { "info" };
    simulcast::observe::logs::init(cli.log_json, default_level);
    if simulcast::media::init().is_ok() {
        simulcast::observe::logs::route_gstreamer();
    }
    let result = match cli.command {
        Cmd::Generate { dir } => {
            simulcast::packaging::write_man_and_completions(<Cli as clap::CommandFactory>::command(), &dir)
                .with_context(|| format!("writing to {}", dir.display()))
        }
        Cmd::Demo { config, duration, json } => demo(config, duration, json).await,
        Cmd::Run { config, status_every } => run(config, status_every).await,
        Cmd::Serve {
            db,
            listen,
            config,
            tls_cert,
            tls_key,
            allow_insecure_remote,
            recordings,
            file_legs,
            retention,
            metrics_listen,
            web_listen,
            cluster,
            node,
            lease_ttl,
            advertise,
            cluster_ca_cert,
            placement,
        } => {
            let tls = tls_cert.zip(tls_key);
            let recordings = recordings.unwrap_or_else(|| db.with_extension("recordings"));
            let file_legs = file_legs.unwrap_or_else(|| db.with_extension("files"));
            let net = Net { listen, metrics: metrics_listen.0, web: web_listen.0, tls, allow_insecure_remote };
            let cluster = node.map(|node| JoinAs {
                endpoints: cluster,
                node,
                lease_ttl,
                advertise,
                ca: cluster_ca_cert,
                spread: placement == "spread",
            });
            serve(db, net, config, (recordings, retention, file_legs), cluster).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simulcastd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load(path: Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => config::load(&p)?,
        None => config::default_config(),
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The demo's T0, this many seconds after it starts.
const DEMO_T0_IN_S: i64 = 10;

async fn demo(path: Option<PathBuf>, duration: Option<Duration>, json: bool) -> anyhow::Result<()> {
    let config = load(path)?;
    let standins = StandIns::start(&config).context("starting the stand-in ingests")?;
    for note in &standins.notes {
        eprintln!("note: {note}");
    }
    // Let the stand-ins bind before the legs call them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The legs connect on the slate; the programme goes on at T0, 10 s on,
    // switched on the media clock.
    let t0 = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + DEMO_T0_IN_S, 0).unwrap_or_default();
    let until = t0 + chrono::Duration::from_std(config.event.duration).unwrap_or(chrono::Duration::MAX);
    let cue = Cue { program_from: Some(t0), program_until: Some(until), force_slate: false };
    let relay = Relay::start_with(&RelayPlan::from_config(&config), cue, None).await.context("starting the relay")?;
    let tty = std::io::stdout().is_terminal() && !json;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = &mut deadline => break,
            _ = tick.tick() => {
                n += 1;
                let status = relay.status();
                let mut out = std::io::stdout().lock();
                if json {
                    let _ = writeln!(out, "{}", serde_json::to_string(&status)?);
                } else if tty || n % 5 == 1 {
                    if tty {
                        let _ = write!(out, "\x1b[H\x1b[2J");
                    }
                    let _ = write!(out, "{}", board(&config, &status, &standins, t0));
                    if tty {
                        let _ = writeln!(out, "Ctrl-C stops every leg cleanly and prints a summary.");
                    }
                }
                let _ = out.flush();
            }
        }
    }
    let status = relay.shutdown().await;
    standins.stop();
    if !json {
        println!("\nSummary after {:.0} s:\n{}", status.uptime_s, summary(&config, &status));
    }
    Ok(())
}

/// The live table: one row per leg.
fn board(config: &Config, s: &RelayStatus, standins: &StandIns, t0: chrono::DateTime<chrono::Utc>) -> String {
    let now = chrono::Utc::now();
    let mut t = Table::new(&[
        "CHANNEL",
        "CC",
        "PROTO",
        "STATE",
        "BITRATE",
        "SENT",
        "RECEIVED",
        "RECONN",
        "DROPS",
        "LOCAL TIME",
        "LAST ERROR",
    ]);
    for (ch, leg) in config.enabled_channels().zip(&s.legs) {
        let local = now.with_timezone(&ch.timezone).format("%a %H:%M:%S %Z").to_string();
        t.row(vec![
            leg.channel_id.clone(),
            ch.country.clone(),
            leg.protocol.to_owned(),
            match (leg.state, leg.carries) {
                (LegState::OnAir, Content::Slate) => "SLATE".to_owned(),
                (state, _) => state.to_string(),
            },
            table::bitrate(leg.bitrate_bps),
            table::bytes(leg.bytes_sent),
            standins.received(&leg.channel_id).map_or("-".into(), table::bytes),
            leg.reconnects.to_string(),
            leg.dropped_buffers.to_string(),
            local,
            leg.last_error.clone().unwrap_or_default(),
        ]);
    }
    let to_t0 = (t0 - now).num_seconds();
    let air = if to_t0 > 0 {
        format!("T0 {} UTC in {to_t0} s (slate)", t0.format("%H:%M:%S"))
    } else {
        format!("on air since {} UTC", t0.format("%H:%M:%S"))
    };
    format!(
        "simulcast demo: {}  |  UTC {}  |  {air}  |  on air {}: source {} ({:?}, {} in)\n{}{}",
        config.event.title,
        now.format("%H:%M:%S"),
        s.source_in_use.as_str(),
        s.source.describe,
        s.source.state,
        table::bytes(s.source.bytes_in),
        s.source.last_error.as_deref().map(|e| format!("source: {e}\n")).unwrap_or_default(),
        t.render()
    )
}

fn summary(config: &Config, s: &RelayStatus) -> String {
    let mut t = Table::new(&["CHANNEL", "PROTO", "FINAL", "SENT", "AVG BITRATE", "RECONN", "DROPS", "LAST ERROR"]);
    for (_, leg) in config.enabled_channels().zip(&s.legs) {
        let avg = (leg.bytes_sent as f64 * 8.0 / s.uptime_s.max(1.0)) as u64;
        t.row(vec![
            leg.channel_id.clone(),
            leg.protocol.to_owned(),
            leg.state.to_string(),
            table::bytes(leg.bytes_sent),
            table::bitrate(avg),
            leg.reconnects.to_string(),
            leg.dropped_buffers.to_string(),
            leg.last_error.clone().unwrap_or_default(),
        ]);
    }
    t.render()
}

async fn run(path: PathBuf, every: Duration) -> anyhow::Result<()> {
    let config = config::load(&path)?;
    let relay = Relay::start(&RelayPlan::from_config(&config)).await.context("starting the relay")?;
    let mut tick = tokio::time::interval(every);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                let s = relay.status();
                tracing::info!(state = ?s.source.state, bytes_in = s.source.bytes_in, error = ?s.source.last_error, "Source.");
                for l in &s.legs {
                    tracing::info!(leg = %l.channel_id, state = %l.state, bytes = l.bytes_sent, bps = l.bitrate_bps,
                        reconnects = l.reconnects, dropped = l.dropped_buffers, error = ?l.last_error, "Leg.");
                }
            }
        }
    }
    relay.shutdown().await;
    Ok(())
}

/// The page's URL as other nodes' operators reach it: the page's own
/// address, or, bound to every interface, the advertised host with the
/// page's port; `https` when the node has a certificate (the page then
/// speaks HTTPS).
fn page_url(web: std::net::SocketAddr, advertised: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if !web.ip().is_unspecified() {
        return format!("{scheme}://{web}/");
    }
    let host = match advertised.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().to_string(),
        Err(_) => advertised.rsplit_once(':').map_or(advertised, |(h, _)| h).to_owned(),
    };
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
    format!("{scheme}://{host}:{}/", web.port())
}

/// How `serve` joins a cluster (--cluster, --node, --lease-ttl, --advertise,
/// --cluster-ca-cert).
struct JoinAs {
    endpoints: Vec<String>,
    node: String,
    lease_ttl: Duration,
    advertise: Option<String>,
    ca: Option<PathBuf>,
    /// --placement spread.
    spread: bool,
}

/// Where `serve` listens.
struct Net {
    listen: std::net::SocketAddr,
    metrics: Option<std::net::SocketAddr>,
    web: Option<std::net::SocketAddr>,
    tls: Option<(PathBuf, PathBuf)>,
    allow_insecure_remote: bool,
}

async fn serve(
    db: PathBuf,
    net: Net,
    import: Option<PathBuf>,
    (recordings, retention, file_legs): (PathBuf, Duration, PathBuf),
    join: Option<JoinAs>,
) -> anyhow::Result<()> {
    use simulcast::api::auth::{Caller, Role, Tokens};
    let Net { listen, metrics, web, tls, allow_insecure_remote } = net;
    // Sockets systemd handed over stand for the flags' addresses (and are
    // checked against the same rules); the others are bound below.
    let [mut handed_grpc, mut handed_metrics, mut handed_web] = handed_sockets()?;
    let addr_of = |l: &Option<std::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let listen = addr_of(&handed_grpc).unwrap_or(listen);
    let metrics = addr_of(&handed_metrics).or(metrics);
    let web = addr_of(&handed_web).or(web);
    if !listen.ip().is_loopback() && tls.is_none() && !allow_insecure_remote {
        anyhow::bail!(
            "refusing to listen on {listen} without TLS: give --tls-cert and --tls-key, \
             or --allow-insecure-remote to send tokens in clear"
        );
    }
    // The metrics port has no TLS: off loopback only when asked for.
    if let Some(addr) = metrics
        && !addr.ip().is_loopback()
        && !allow_insecure_remote
    {
        anyhow::bail!(
            "refusing to serve metrics on {addr}, off loopback and without TLS: \
             give --allow-insecure-remote to expose them, or a 127.0.0.1 address"
        );
    }
    // The page carries tokens: off loopback only over TLS, or when asked.
    if let Some(addr) = web
        && !addr.ip().is_loopback()
        && tls.is_none()
        && !allow_insecure_remote
    {
        anyhow::bail!(
            "refusing to serve the page on {addr}, off loopback and without TLS: give --tls-cert and --tls-key \
             (the page then speaks HTTPS), --allow-insecure-remote, or a 127.0.0.1 address"
        );
    }
    let tls = match tls {
        Some((cert, key)) => Some(simulcast::api::TlsFiles {
            cert_pem: std::fs::read(&cert).with_context(|| format!("reading --tls-cert {}", cert.display()))?,
            key_pem: std::fs::read(&key).with_context(|| format!("reading --tls-key {}", key.display()))?,
        }),
        None => None,
    };
    let config = load(import.clone())?;
    if let Some(t) = &tls {
        simulcast::api::check_tls(t).context("--tls-cert and --tls-key do not make a TLS configuration")?;
        if web.is_some() {
            simulcast::web::tls::server_config(t).context("--tls-cert and --tls-key for the page (--web-listen)")?;
        }
    }
    // Options refused before anything is bound or touched.
    let spread = join.as_ref().is_some_and(|j| j.spread);
    let cluster_options = match join {
        Some(j) => {
            let address = j.advertise.unwrap_or_else(|| listen.to_string());
            let page = web.map(|w| page_url(w, &address, tls.is_some()));
            // The nodes speak TLS to each other when they have a certificate:
            // another node's is checked against --cluster-ca-cert, else
            // against this node's own.
            let peer_ca = match (&tls, j.ca) {
                (None, _) => None,
                (Some(_), Some(ca)) => {
                    Some(std::fs::read(&ca).with_context(|| format!("reading --cluster-ca-cert {}", ca.display()))?)
                }
                (Some(own), None) => Some(own.cert_pem.clone()),
            };
            Some(simulcast::cluster::Options {
                endpoints: j.endpoints,
                node: j.node,
                address,
                lease_ttl: j.lease_ttl,
                page,
                peer_ca,
            })
        }
        None => None,
    };
    if let Some(o) = &cluster_options {
        let problems = o.problems();
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("; "));
        }
    }
    // One daemon per store, and nothing in it touched before this one
    // holds it and every port is bound: a start that fails changes nothing.
    let _lock = simulcast::store::StoreLock::take(&db)?;
    let listener = match handed_grpc.take() {
        Some(l) => tokio::net::TcpListener::from_std(l).context("the gRPC socket systemd handed over")?,
        None => tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?,
    };
    let http =
        bind_optional(handed_metrics.take(), metrics, "the metrics port", "--metrics-listen; `off` for none").await?;
    let web = bind_optional(handed_web.take(), web, "the page's port", "--web-listen").await?;
    let store = simulcast::store::Store::open(&db).with_context(|| format!("opening the store {}", db.display()))?;
    let tokens = Tokens::default();
    for t in store.tokens()? {
        match Role::parse(&t.role) {
            Some(role) => tokens.insert(&t.sha256, Caller { name: t.name.clone(), role }),
            None => tracing::warn!(token = %t.name, role = %t.role, "Token with an unknown role ignored."),
        }
    }
    if tokens.is_empty() && cluster_options.is_some() {
        tracing::warn!("No access token in this node's store: it accepts the tokens the cluster shares (etcd).");
    } else if tokens.is_empty() {
        anyhow::bail!(
            "no access token in {}: create one with `simulcastctl token create --role admin --name NAME --db {}`",
            db.display(),
            db.display()
        );
    }
    if let Some(path) = &import
        && store.channels()?.is_empty()
    {
        for ch in &config.channels {
            store.insert_channel(ch)?;
        }
        tracing::info!(channels = config.channels.len(), from = %path.display(), "Channels imported.");
    }
    let mut options = simulcast::coordinator::Options::from_config(&config);
    options.media_problem = media_problem();
    options.recordings = recordings;
    options.file_legs =
        std::path::absolute(&file_legs).with_context(|| format!("--file-legs {}", file_legs.display()))?;
    options.retention = retention;
    if let Some(p) = &options.media_problem {
        tracing::error!(problem = %p, "The relay cannot run; health reports NOT_SERVING.");
    }
    // Cluster mode: the store shares its shared tables through etcd while
    // this node leads, and master control runs only then.
    let cluster = match cluster_options {
        Some(o) => {
            let endpoints = o.endpoints.join(",");
            store.share_through(&o.endpoints).context("--cluster: the shared store")?;
            let c = simulcast::cluster::Cluster::join(o).await?;
            tracing::info!(node = c.node(), etcd = %endpoints, "Cluster mode: joining through etcd.");
            options.leading = Some(c.leading());
            options.node = Some(c.node().to_owned());
            if spread {
                options.placement = Some(simulcast::cluster::carry::Placement::start(&c));
            }
            Some(c)
        }
        None => None,
    };
    // --placement spread: this node carries what the leader places on it
    // while it follows, from its own contribution input.
    let carriage = match (&cluster, &options.placement) {
        (Some(c), Some(p)) if options.media_problem.is_none() => {
            Some(simulcast::cluster::carry::Carriage::start(c, p.clone(), options.relay_plan("", Vec::new())))
        }
        _ => None,
    };
    // Tokens made on other nodes' files are shared through etcd: read
    // again every second, so every node knows every one.
    let token_reload = match &cluster {
        Some(c) => {
            let (tokens, c) = (tokens.clone(), c.clone());
            Some(tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    // The nodes' own credential (they ask each other while
                    // etcd is away): read-only, and answered only by
                    // NodeService.Failsafe beyond what an observer sees.
                    if let Some(credential) = c.credential() {
                        let caller = Caller { name: "cluster".into(), role: Role::Observer };
                        tokens.insert(&simulcast::api::auth::hash_token(&credential), caller);
                    }
                    for t in c.tokens().await.unwrap_or_default() {
                        if let Some(role) = Role::parse(&t.role) {
                            tokens.insert(&t.sha256, Caller { name: t.name.clone(), role });
                        }
                    }
                }
            }))
        }
        _ => None,
    };
    let (coordinator, task) = simulcast::coordinator::Coordinator::start(store, options);
    if let Some(c) = &cluster {
        c.follow(coordinator.subscribe());
    }
    if let Some(h) = &http {
        tracing::info!(addr = %h.local_addr()?, "Metrics and health on http://{}/metrics and /healthz.", h.local_addr()?);
    }
    if let Some(w) = &web {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %w.local_addr()?, "The multiviewer page on {scheme}://{}/.", w.local_addr()?);
    }
    tracing::info!(addr = %listener.local_addr()?, db = %db.display(), tls = tls.is_some(), "Control plane listening.");
    let ports = simulcast::api::HttpPorts { metrics: http, web };
    let what = simulcast::api::Served { coordinator: coordinator.clone(), tokens, tls, cluster: cluster.clone() };
    let served = simulcast::api::serve(listener, what, ports, shutdown_signal()).await;
    // Every pipeline goes to Null; events keep their state for the next start
    // (in cluster mode, for the next leader: this node still leads while
    // it writes its last entries).
    coordinator.shutdown().await;
    let _ = task.await;
    if let Some(c) = carriage {
        c.stop().await;
    }
    // Then leadership and membership are given up, so another node leads
    // at once instead of after the lease's TTL.
    if let Some(c) = &cluster {
        c.leave().await;
    }
    if let Some(t) = token_reload {
        t.abort();
    }
    served.map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!("Control plane stopped.");
    Ok(())
}

/// The socket systemd handed over for it, or a listener on `addr` if one
/// is asked for; a failure names `what` and the option (`how`) that gave
/// the address.
async fn bind_optional(
    handed: Option<std::net::TcpListener>,
    addr: Option<std::net::SocketAddr>,
    what: &str,
    how: &str,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    if let Some(l) = handed {
        return Ok(Some(tokio::net::TcpListener::from_std(l).with_context(|| format!("{what} systemd handed over"))?));
    }
    let Some(addr) = addr else { return Ok(None) };
    let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {what} {addr} ({how})"))?;
    Ok(Some(l))
}

/// The listening sockets systemd handed over (socket activation), by their
/// `FileDescriptorName=`: `grpc` (or a single unnamed one), `metrics` and
/// `web`, in that order. Each replaces the address of its flag; a socket
/// that is not a listening TCP socket, or a name given twice, is refused.
fn handed_sockets() -> anyhow::Result<[Option<std::net::TcpListener>; 3]> {
    use simulcast::observe::systemd;
    let mut out: [Option<std::net::TcpListener>; 3] = Default::default();
    let fds = systemd::listen_fds();
    let alone = fds.len() == 1;
    for (name, fd) in fds {
        let slot = match name.as_str() {
            "grpc" => 0,
            "unknown" if alone => 0,
            "metrics" => 1,
            "web" => 2,
            other => {
                tracing::warn!(
                    name = other,
                    "systemd handed over a socket simulcastd has no use for (FileDescriptorName= grpc, metrics or web); closed."
                );
                continue;
            }
        };
        if !systemd::is_listening(&fd) {
            anyhow::bail!("the socket systemd handed over as {name} is not a listening stream socket (ListenStream=)");
        }
        let l = std::net::TcpListener::from(fd);
        // A Unix socket has no IP address: refused here.
        let addr = l.local_addr().with_context(|| format!("the socket systemd handed over as {name} is not TCP"))?;
        l.set_nonblocking(true).with_context(|| format!("the socket systemd handed over as {name}"))?;
        if out[slot].replace(l).is_some() {
            anyhow::bail!("systemd handed over two sockets named {name}");
        }
        tracing::info!(name, %addr, "Listening on a socket systemd handed over; its flag's address is not used.");
    }
    Ok(out)
}

/// Why the relay could not run here at all, if so.
fn media_problem() -> Option<String> {
    if let Err(e) = simulcast::media::init() {
        return Some(e.to_string());
    }
    let broken: Vec<String> = simulcast::media::check_all()
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
        .collect();
    if broken.is_empty() { None } else { Some(broken.join("; ")) }
}
