//! simulcastctl: the operator's client. `check` validates a configuration
//! and parses every pipeline template, before anything goes on air.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use simulcast::config::{self, AirPolicy, ConfigError};
use simulcast::media::{self, template};
use simulcast::table::Table;

#[derive(Parser)]
#[command(name = "simulcastctl", version, about = "simulcast operator client")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate a configuration (every problem, each with its key) and parse
    /// every pipeline template (a missing GStreamer element is named).
    /// Exit code 0 when all is well, 1 otherwise.
    Check {
        /// Configuration file; default: the embedded grand final.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Check { config, json } => check(config, json),
    }
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
        Ok(()) => template::check_all().into_iter().map(|(n, r)| (n, r.map_err(|e| e.to_string()))).collect(),
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
                        "target": ch.ingest.target(), "enabled": ch.enabled,
                    })
                })
                .collect()
        });
        let out = serde_json::json!({
            "ok": ok,
            "config": source,
            "config_problems": config_problems,
            "templates": templates.iter().map(|(n, r)| serde_json::json!({
                "name": n, "ok": r.is_ok(), "error": r.as_ref().err(),
            })).collect::<Vec<_>>(),
            "channels": channels,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        match &loaded {
            Ok(c) => {
                println!("Configuration {source}: valid, event \"{}\", source {}", c.event.title, c.source.describe());
                let mut t = Table::new(&["CHANNEL", "COUNTRY", "TIMEZONE", "PROTO", "TARGET", "AIR", "ENABLED"]);
                for ch in &c.channels {
                    let air = match ch.air_policy {
                        AirPolicy::Live => "live".to_owned(),
                        AirPolicy::LocalTime(t) => format!("local {}", t.format("%H:%M")),
                    };
                    t.row(vec![
                        ch.id.to_string(),
                        ch.country.clone(),
                        ch.timezone.name().to_owned(),
                        ch.ingest.protocol().to_owned(),
                        ch.ingest.target(),
                        air,
                        if ch.enabled { "yes" } else { "no" }.to_owned(),
                    ]);
                }
                print!("{}", t.render());
            }
            Err(_) => {
                println!("Configuration {source}: {} problem(s)", config_problems.len());
                for p in &config_problems {
                    println!("  {p}");
                }
            }
        }
        println!("Pipeline templates:");
        for (name, r) in &templates {
            match r {
                Ok(()) => println!("  ok     {name}"),
                Err(e) => println!("  ERROR  {e}"),
            }
        }
    }
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
