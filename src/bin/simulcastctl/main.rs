//! simulcastctl: the operator's client. `check` validates a configuration
//! offline; `channels`, `events`, `airtimes`, `source`, `asrun`, `watch`,
//! `rehearse`, `rehearsals` and `alerts` talk to simulcastd's control
//! plane; `token create` makes an access token.

// Doc comments here are clap's --help texts, written for a terminal:
// `[source]` names a config table, not a rustdoc link.
#![allow(rustdoc::broken_intra_doc_links)]

/// `println!` for everything simulcastctl prints: a reader that has gone
/// (`simulcastctl events list | head -1`) ends the process quietly with
/// success instead of a "failed printing to stdout" panic; another write
/// error is reported on stderr and ends it with failure.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!`, with [`say!`]'s handling of a closed stdout.
macro_rules! say_raw {
    ($($arg:tt)*) => {
        $crate::emit(&format!($($arg)*))
    };
}

mod alerts;
mod events;
mod nodes;
mod rehearse;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use simulcast::api::auth::{Role, hash_token, new_token};
use simulcast::api::convert::channel_to_proto_with_secrets;
use simulcast::config::{self, AirPolicy, ConfigError};
use simulcast::media;
use simulcast::proto;
use simulcast::proto::channel_service_client::ChannelServiceClient;
use simulcast::store::{Store, TokenRecord};
use simulcast::table::Table;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel as Transport;

/// The command line.
#[derive(Parser)]
#[command(name = "simulcastctl", version, about = "simulcast operator client")]
pub struct Cli {
    /// simulcastd's control plane.
    #[arg(long, global = true, env = "SIMULCAST_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// Access token (`sct_...`).
    #[arg(long, global = true, env = "SIMULCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that signed simulcastd's TLS certificate, for an
    /// https:// address.
    #[arg(long, global = true, env = "SIMULCAST_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a configuration (every problem, each with its key), parse
    /// every pipeline template and check that every element the pipelines
    /// built in code need is installed (a missing one is named).
    /// Exit code 0 when all is well, 1 otherwise. Needs no daemon.
    Check {
        /// Configuration file; default: the embedded grand final.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Partner channels (list, get, create, update, delete).
    #[command(subcommand)]
    Channels(ChannelsCmd),
    /// Events: schedule, list, get, cancel, and master control (arm, take,
    /// hold, extend, end, abort).
    #[command(subcommand)]
    Events(events::EventsCmd),
    /// Each leg's air time in its own zone: local date and time, weekday,
    /// UTC offset, zone abbreviation and delay.
    Airtimes {
        /// Event id.
        event: String,
    },
    /// The program's source.
    #[command(subcommand)]
    Source(events::SourceCmd),
    /// An event's as-run log, oldest first (`-` for channel changes): UTC,
    /// leg, the leg's local time and zone, kind, actor, detail, and the
    /// picture partners got at that instant where one was kept (each
    /// leg's first programme picture, every source switch).
    Asrun {
        /// Event id, or `-`.
        event: String,
        /// table, csv (RFC 4180, a header row, for spreadsheets) or json
        /// (`--json` is the same as `--format json`).
        #[arg(long, default_value = "table")]
        format: String,
        /// Save the entries' pictures (320x180 JPEG) in DIR, as
        /// EVENT-ID-KIND[-LEG].jpg: proof for partners.
        #[arg(long, value_name = "DIR")]
        pictures: Option<PathBuf>,
    },
    /// Live status board: the event's state and countdown to T0, then per
    /// leg its channel, local time, state, bitrate, reconnects, drops and
    /// last error. Default: the running event, else the next one.
    Watch {
        /// Event id.
        event: Option<String>,
        /// Print one update and exit.
        #[arg(long)]
        once: bool,
    },
    /// Rehearse an event now on a compressed timeline (preflight every
    /// ingest, slate, programme, slate) and print each leg's verdict; exit
    /// code 0 when every leg passed, 3 when any failed, 1 on other errors.
    /// With --every-day-at/--tz/--until, the daemon runs it daily instead.
    Rehearse(rehearse::RehearseArgs),
    /// Rehearsal reports and recurring rehearsals.
    #[command(subcommand)]
    Rehearsals(rehearse::RehearsalsCmd),
    /// Alerts pushed to simulcastd's webhooks: list them with their
    /// delivery state, or send a test alert.
    #[command(subcommand)]
    Alerts(alerts::AlertsCmd),
    /// Cluster mode: every node, its role (leader or follower), health
    /// (UP, or LAPSING when it missed lease renewals), address, legs,
    /// source, lease, and whether it may lead (on the failsafe list the
    /// leader keeps), read from etcd by the node asked.
    Nodes,
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Write the man pages and shell completions to DIR (for packaging).
    #[command(hide = true)]
    Generate {
        /// Where: DIR/man1 and DIR/completions.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ChannelsCmd {
    /// Every channel (secrets are never shown).
    List,
    /// One channel.
    Get {
        /// Channel id.
        id: String,
    },
    /// Add a channel from a TOML file holding one `[[channels]]` entry's keys.
    Create {
        /// The file.
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Replace a channel from such a file; a secret left out keeps the stored one.
    Update {
        /// The file.
        #[arg(long, short)]
        file: PathBuf,
    },
    /// Delete a channel.
    Delete {
        /// Channel id.
        id: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Make a token and print it once. With --db it is added to simulcastd's
    /// store (restart simulcastd to use it); without, the line to add is printed.
    /// Only its SHA-256 is ever stored.
    Create {
        /// observer, operator or admin.
        #[arg(long)]
        role: String,
        /// Who it is for; recorded as the actor of every change made with it.
        #[arg(long)]
        name: String,
        /// simulcastd's store.
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Check { ref config } => return check(config.clone(), cli.json),
        Cmd::Generate { ref dir } => {
            simulcast::packaging::write_man_and_completions(<Cli as clap::CommandFactory>::command(), dir)
                .map_err(|e| format!("writing to {}: {e}", dir.display()))
        }
        Cmd::Token(TokenCmd::Create { ref role, ref name, ref db }) => {
            token_create(role, name, db.as_deref(), cli.json)
        }
        Cmd::Channels(ref c) => channels(&cli, c).await,
        Cmd::Events(ref c) => events::run(&cli, c).await,
        Cmd::Airtimes { ref event } => events::airtimes(&cli, event).await,
        Cmd::Source(ref c) => events::source(&cli, c).await,
        Cmd::Asrun { ref event, ref format, ref pictures } => {
            events::asrun(&cli, event, format, pictures.as_deref()).await
        }
        Cmd::Watch { ref event, once } => watch::run(&cli, event.as_deref(), once).await,
        Cmd::Rehearse(ref a) => return exit(rehearse::rehearse(&cli, a).await),
        Cmd::Rehearsals(ref c) => return exit(rehearse::rehearsals(&cli, c).await),
        Cmd::Alerts(ref c) => alerts::run(&cli, c).await,
        Cmd::Nodes => nodes::run(&cli).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simulcastctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout now; see [`say!`].
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        closed_stdout(&e);
    }
}

/// Ends the process after a failed write to stdout: quietly when its
/// reader has gone, else saying why.
pub fn closed_stdout(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("simulcastctl: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// The exit code of a command that has its own codes.
fn exit(r: Result<u8, String>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("simulcastctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A status as one line: its code and the server's message.
pub fn status_line(s: &tonic::Status) -> String {
    let code = simulcast::observe::metrics::code_name(s.code());
    format!("{code}: {}", s.message())
}

/// An authenticated connection to simulcastd.
pub type Conn = InterceptedService<Transport, Auth>;

/// Puts the access token on every request.
#[derive(Clone)]
pub struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Connects to `--addr` (TLS for https://, checked against `--ca-cert`).
pub async fn connect(cli: &Cli) -> Result<Conn, String> {
    let mut endpoint = Transport::from_shared(cli.addr.clone())
        .map_err(|e| format!("bad --addr `{}`: {e}", cli.addr))?
        .tcp_nodelay(true);
    if cli.addr.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        match &cli.ca_cert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            None => return Err("an https:// address needs --ca-cert (or SIMULCAST_CA_CERT)".into()),
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {}", root_cause(&e)))?;
    }
    let transport =
        endpoint.connect().await.map_err(|e| format!("cannot reach simulcastd at {}: {}", cli.addr, root_cause(&e)))?;
    let auth = match &cli.token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| "the token holds characters a header cannot carry".to_string())?,
        ),
        None => None,
    };
    Ok(InterceptedService::new(transport, Auth(auth)))
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn channel_file(path: &PathBuf) -> Result<proto::Channel, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let ch = config::parse_channel(&text).map_err(|errs| {
        format!("{}: {}", path.display(), errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    })?;
    Ok(channel_to_proto_with_secrets(&ch))
}

async fn channels(cli: &Cli, cmd: &ChannelsCmd) -> Result<(), String> {
    let mut c = ChannelServiceClient::new(connect(cli).await?);
    let st = |s: tonic::Status| status_line(&s);
    let shown: Vec<proto::Channel> = match cmd {
        ChannelsCmd::List => c.list_channels(proto::ListChannelsRequest {}).await.map_err(st)?.into_inner().channels,
        ChannelsCmd::Get { id } => {
            vec![c.get_channel(proto::GetChannelRequest { id: id.clone() }).await.map_err(st)?.into_inner()]
        }
        ChannelsCmd::Create { file } => {
            let channel = Some(channel_file(file)?);
            vec![c.create_channel(proto::CreateChannelRequest { channel }).await.map_err(st)?.into_inner()]
        }
        ChannelsCmd::Update { file } => {
            let channel = Some(channel_file(file)?);
            vec![c.update_channel(proto::UpdateChannelRequest { channel }).await.map_err(st)?.into_inner()]
        }
        ChannelsCmd::Delete { id } => {
            c.delete_channel(proto::DeleteChannelRequest { id: id.clone() }).await.map_err(st)?;
            if cli.json {
                say!("{}", serde_json::json!({ "deleted": id }));
            } else {
                say!("Deleted channel {id}.");
            }
            return Ok(());
        }
    };
    print_channels(&shown, cli.json);
    Ok(())
}

fn ingest_summary(ch: &proto::Channel) -> (String, String, bool) {
    summary_of(ch.ingest.as_ref())
}

/// A channel's backup ingest as `PROTO TARGET`, or `-`.
fn backup_summary(ch: &proto::Channel) -> String {
    match ch.ingest_backup.as_ref() {
        Some(b) => {
            let (protocol, target, _) = summary_of(Some(b));
            format!("{protocol} {target}")
        }
        None => "-".into(),
    }
}

fn summary_of(ingest: Option<&proto::Ingest>) -> (String, String, bool) {
    use proto::ingest::Kind;
    match ingest.and_then(|i| i.kind.as_ref()) {
        Some(Kind::Srt(s)) => ("srt".into(), s.uri.clone(), s.has_passphrase),
        Some(Kind::Rtmp(r)) => ("rtmp".into(), r.url.clone(), r.has_stream_key),
        Some(Kind::Udp(u)) => ("udp".into(), u.uri.clone(), false),
        Some(Kind::Rist(r)) => ("rist".into(), r.uri.clone(), false),
        Some(Kind::File(f)) => ("file".into(), f.path.clone(), false),
        None => ("-".into(), String::new(), false),
    }
}

fn air(ch: &proto::Channel) -> String {
    match ch.air_policy.as_ref().and_then(|a| a.policy.as_ref()) {
        Some(proto::air_policy::Policy::LocalTime(t)) => format!("local {t}"),
        _ => "live".into(),
    }
}

fn print_channels(list: &[proto::Channel], json: bool) {
    if json {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|c| {
                let (protocol, target, secret) = ingest_summary(c);
                serde_json::json!({
                    "id": c.id, "name": c.name, "country": c.country, "timezone": c.timezone,
                    "protocol": protocol, "target": target, "has_secret": secret,
                    "backup": c.ingest_backup.as_ref().map(|_| backup_summary(c)),
                    "air_policy": air(c), "enabled": c.enabled.unwrap_or(true), "audio": c.audio,
                })
            })
            .collect();
        say!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    let mut t =
        Table::new(&["ID", "NAME", "CC", "TIMEZONE", "PROTO", "TARGET", "SECRET", "BACKUP", "AIR", "AUDIO", "ENABLED"]);
    for c in list {
        let (protocol, target, secret) = ingest_summary(c);
        t.row(vec![
            c.id.clone(),
            c.name.clone(),
            c.country.clone(),
            c.timezone.clone(),
            protocol,
            target,
            if secret { "set" } else { "-" }.into(),
            backup_summary(c),
            air(c),
            if c.audio.is_empty() { "all".into() } else { c.audio.join(",") },
            if c.enabled.unwrap_or(true) { "yes" } else { "no" }.into(),
        ]);
    }
    say_raw!("{}", t.render());
}

fn token_create(role: &str, name: &str, db: Option<&std::path::Path>, json: bool) -> Result<(), String> {
    let role = Role::parse(role).ok_or_else(|| format!("--role `{role}`: use observer, operator or admin"))?;
    if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("--name: 1 to 64 characters, no spaces".into());
    }
    let token = new_token().map_err(|e| format!("no randomness from the OS: {e}"))?;
    let record = TokenRecord { name: name.into(), role: role.as_str().into(), sha256: hash_token(&token) };
    if let Some(db) = db {
        let store = Store::open(db).map_err(|e| e.to_string())?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if !store.insert_token(&record, &now).map_err(|e| e.to_string())? {
            return Err(format!("a token named `{name}` exists already in {}", db.display()));
        }
    }
    if json {
        say!("{}", serde_json::json!({ "name": name, "role": role.as_str(), "token": token, "sha256": record.sha256 }));
    } else {
        say!("Token for `{name}` ({role}), shown only this once:\n\n  {token}\n");
        match db {
            Some(db) => say!("Added to {} (as its SHA-256 only); restart simulcastd to use it.", db.display()),
            None => say!("Not stored anywhere: add it with --db, its SHA-256 is {}", record.sha256),
        }
    }
    Ok(())
}

/// The [program] format in one line.
fn planned(p: &config::ProgramFormat) -> String {
    media::coded::FeedFormat::planned(p, p.video_codec, None).describe()
}

/// Where alerts go, in one line.
fn alerts_line(a: &config::AlertSettings) -> String {
    let m = |d: std::time::Duration| format!("{} min", d.as_secs() / 60);
    let rule = format!(
        "a page within {} of a partner's air time or during it, a ticket before; legs not on air {} before air time alert",
        m(a.page_within),
        m(a.not_on_air_before)
    );
    if a.webhooks.is_empty() {
        return format!("Alerts: no webhook (alerts are kept and listed only); {rule}");
    }
    let hooks: Vec<String> = a.webhooks.iter().map(|h| format!("{} {}", h.name, h.url)).collect();
    format!("Alerts: to {} (signed HMAC-SHA256); {rule}", hooks.join(", "))
}

fn check(path: Option<PathBuf>, json: bool) -> ExitCode {
    let loaded = match &path {
        Some(p) => config::load(p),
        None => config::parse(config::DEFAULT_CONFIG),
    };
    let config_problems: Vec<String> = match &loaded {
        Ok(_) => vec![],
        Err(ConfigError::Invalid(errs)) => errs.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
    };
    let templates: Vec<(&str, Result<(), String>)> = match media::init() {
        Ok(()) => media::check_all().into_iter().map(|(n, r)| (n, r.map_err(|e| e.to_string()))).collect(),
        Err(e) => vec![("gstreamer", Err(e.to_string()))],
    };
    let ok = config_problems.is_empty() && templates.iter().all(|(_, r)| r.is_ok());
    let source = path.as_ref().map_or("embedded default".to_owned(), |p| p.display().to_string());

    if json {
        let channels: Vec<serde_json::Value> = loaded.as_ref().map_or(vec![], |c| {
            c.channels
                .iter()
                .map(|ch| {
                    serde_json::json!({
                        "id": ch.id.as_str(), "name": ch.name, "country": ch.country,
                        "timezone": ch.timezone.name(), "protocol": ch.ingest.protocol(),
                        "target": ch.ingest.target(), "enabled": ch.enabled, "audio": ch.audio,
                        "backup": ch.ingest_backup.as_ref().map(|b| format!("{} {}", b.protocol(), b.target())),
                    })
                })
                .collect()
        });
        let backup = loaded.as_ref().ok().and_then(|c| c.backup.as_ref().map(|b| b.describe()));
        let program =
            loaded.as_ref().ok().map(|c| serde_json::json!({ "mode": c.program.mode, "planned": planned(&c.program) }));
        let out = serde_json::json!({
            "ok": ok,
            "config": source,
            "program": program,
            "backup": backup,
            "stamp_legs": loaded.as_ref().is_ok_and(|c| c.relay.stamp_legs),
            "alerts": loaded.as_ref().ok().map(|c| serde_json::json!({
                "webhooks": c.alerts.webhooks.iter().map(|h| serde_json::json!({
                    "name": h.name, "url": h.url.to_string(), "secret_file": h.secret.file(),
                })).collect::<Vec<_>>(),
                "page_within_s": c.alerts.page_within.as_secs(),
                "not_on_air_before_s": c.alerts.not_on_air_before.as_secs(),
            })),
            "config_problems": config_problems,
            // The same, by key and place in the file, for scripts.
            "problems": match &loaded {
                Err(ConfigError::Invalid(errs)) => errs.iter().map(|e| serde_json::json!({
                    "key": e.key, "message": e.message,
                    "line": e.at.map(|p| p.line), "column": e.at.map(|p| p.column),
                })).collect::<Vec<_>>(),
                _ => vec![],
            },
            "templates": templates.iter().map(|(n, r)| serde_json::json!({
                "name": n, "ok": r.is_ok(), "error": r.as_ref().err(),
            })).collect::<Vec<_>>(),
            "channels": channels,
        });
        say!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        match &loaded {
            Ok(c) => {
                say!("Configuration {source}: valid, event \"{}\", source {}", c.event.title, c.source.describe());
                match c.program.mode {
                    config::ProgramMode::Passthrough => say!(
                        "Programme: passthrough, the contribution's own video and audio to every leg, untouched; \
                         planned as {} (the slate's format until the contribution arrives)",
                        planned(&c.program)
                    ),
                    config::ProgramMode::Transcode => {
                        say!("Programme: transcode, decoded and encoded once as {}", planned(&c.program))
                    }
                }
                if let Some(b) = &c.backup {
                    say!(
                        "Backup {}: on air after the primary is lost for {} ms, back to the primary after {:.1} s healthy",
                        b.describe(),
                        c.failover.detect_after.as_millis(),
                        c.failover.return_after.as_secs_f64()
                    );
                }
                say!("{}", alerts_line(&c.alerts));
                if c.relay.stamp_legs {
                    say!("Legs stamped: each names its own channel in its stream (MPEG-TS service name, RTMP title)");
                }
                let mut t = Table::new(&[
                    "CHANNEL", "COUNTRY", "TIMEZONE", "PROTO", "TARGET", "BACKUP", "AIR", "AUDIO", "ENABLED",
                ]);
                for ch in &c.channels {
                    let air = match ch.air_policy {
                        AirPolicy::Live => "live".to_owned(),
                        AirPolicy::LocalTime(t) => format!("local {}", config::format_time_of_day(t)),
                    };
                    t.row(vec![
                        ch.id.to_string(),
                        ch.country.clone(),
                        ch.timezone.name().to_owned(),
                        ch.ingest.protocol().to_owned(),
                        ch.ingest.target(),
                        ch.ingest_backup.as_ref().map_or("-".into(), |b| format!("{} {}", b.protocol(), b.target())),
                        air,
                        if ch.audio.is_empty() { "all".to_owned() } else { ch.audio.join(",") },
                        if ch.enabled { "yes" } else { "no" }.to_owned(),
                    ]);
                }
                say_raw!("{}", t.render());
            }
            Err(_) => {
                say!("Configuration {source}: {} problem(s)", config_problems.len());
                for p in &config_problems {
                    say!("  {p}");
                }
            }
        }
        say!("Pipeline parts (templates and skeletons):");
        for (name, r) in &templates {
            match r {
                Ok(()) => say!("  ok     {name}"),
                Err(e) => say!("  ERROR  {e}"),
            }
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
