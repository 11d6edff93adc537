//! Configuration: the TOML file an operator writes, read by serde into raw
//! types ([`raw`]) and compiled into typed domain values ([`Config`]).
//! Compiling reports every problem in one pass, each with its key and,
//! for a file, its line and column (`channels[3].ingest.uri (line 40,
//! column 32): ...`); the files the configuration names are checked
//! beside it (`config/files.rs`). A channel from a file, from the store
//! and from an API request is one [`raw::RawChannel`] compiled by one
//! function ([`compile_channel`]).

mod compile;
mod files;
pub mod raw;
pub mod spans;
mod types;
pub mod uri;

use std::fmt;
use std::path::Path;

pub use compile::port_clash;
pub use spans::{Located, Position};
pub use types::*;

/// The embedded default: the "Silk Way Star" grand final to 12 partner
/// channels, every ingest on loopback (what `simulcastd demo` runs).
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// One problem in a configuration, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted key, with indices: `channels[3].ingest.uri`.
    pub key: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The longest string value a configuration or a request may hold
/// (a URI, a path, a zone); names and titles are shorter.
pub const MAX_STRING_CHARS: usize = 2048;
/// The longest channel name or event title.
pub const MAX_NAME_CHARS: usize = 200;
/// The most channels one event may list.
pub const MAX_EVENT_CHANNELS: usize = 500;

/// `s` in backticks for an error message, cut to its first 64 characters:
/// an error never echoes a whole hostile input back.
pub fn quote(s: &str) -> String {
    const SHOWN: usize = 64;
    let n = s.chars().count();
    if n <= SHOWN {
        format!("`{}`", s.escape_debug())
    } else {
        let head: String = s.chars().take(SHOWN).collect();
        format!("`{}…` ({n} characters)", head.escape_debug())
    }
}

/// Where a file leg writes when the daemon confines file legs to `dir`: a
/// relative path is taken inside `dir`, an absolute one must already be
/// inside it; `..` is refused either way, and so is a symbolic link (it
/// could lead out). Without this an API caller could have the daemon
/// write over any file it can write (`/etc/passwd` as root).
pub fn confine_file_leg(path: &std::path::Path, dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let shown = || quote(&path.display().to_string());
    if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!("file leg path {} may not contain `..`", shown()));
    }
    let full = if path.is_absolute() { path.to_path_buf() } else { dir.join(path) };
    if !full.starts_with(dir) {
        return Err(format!(
            "file leg path {} is outside {}, the directory file legs write in (simulcastd serve --file-legs); \
             give a path relative to it",
            shown(),
            dir.display()
        ));
    }
    if std::fs::symlink_metadata(&full).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!("file leg path {} is a symbolic link", shown()));
    }
    Ok(full)
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. (The I/O error is part of the message,
    /// not a `source`: a caller printing the chain would print it twice.)
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("not valid TOML: {0}")]
    Syntax(String),
    /// The TOML is valid but its values are not: each problem with its
    /// key and where that is in the text.
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), list(.0))]
    Invalid(Vec<Located>),
}

fn list(errors: &[Located]) -> String {
    errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
}

/// Parses and compiles configuration text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax(e.to_string()))?;
    let raw = raw::RawConfig::from_table(doc).map_err(|e| ConfigError::Invalid(spans::locate(text, vec![e])))?;
    // The pure compile step, then the files it names, in one report.
    let files = files::check(&raw);
    match compile::config(raw) {
        Ok(config) if files.is_empty() => Ok(config),
        Ok(_) => Err(ConfigError::Invalid(spans::locate(text, files))),
        Err(mut errors) => {
            errors.extend(files);
            Err(ConfigError::Invalid(spans::locate(text, errors)))
        }
    }
}

/// Reads, parses and compiles a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.display().to_string(), error })?;
    parse(&text)
}

/// Compiles one channel given as a TOML table (the `[[channels]]` form).
pub fn parse_channel(text: &str) -> Result<Channel, Vec<FieldError>> {
    compile_channel(raw::RawChannel::from_toml(text, "")?, "")
}

/// [`parse_channel`] for a channel already accepted and stored: a secret
/// file that cannot be read now fails that channel's leg, naming the file,
/// not the reading of every channel.
pub fn parse_stored_channel(text: &str) -> Result<Channel, Vec<FieldError>> {
    compile::channel(raw::RawChannel::from_toml(text, "")?, "", true)
}

/// Compiles one raw channel, reporting keys under `at` (`channel` for an
/// API request): the one function a file's, a stored and a requested
/// channel all go through.
pub fn compile_channel(raw: raw::RawChannel, at: &str) -> Result<Channel, Vec<FieldError>> {
    compile::channel(raw, at, false)
}

/// A channel as the store keeps it: its raw form as TOML text, secrets
/// included (a secret file by its name only), never for display.
pub fn channel_to_toml(ch: &Channel) -> Result<String, toml::ser::Error> {
    ch.spec.to_toml()
}

/// The embedded default configuration.
#[allow(clippy::expect_used, reason = "the embedded text is checked by a unit test; failing is a build defect")]
pub fn default_config() -> Config {
    // The embedded text is checked by a unit test; failing here is a build defect.
    parse(DEFAULT_CONFIG).expect("embedded default configuration is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_slate_image_is_reported_in_the_same_pass_as_the_rest() {
        let text = "[event]\ntitle = \"t\"\n[slate]\nimage = \"/nonexistent/card.png\"\n\
                    [[channels]]\nid = \"kz\"\nname = \"KZ\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almati\"\n\
                    ingest = { type = \"udp\", uri = \"udp://127.0.0.1:5000\" }\n";
        let ConfigError::Invalid(errs) = parse(text).unwrap_err() else { panic!("expected Invalid") };
        let found: Vec<(&str, usize)> = errs.iter().map(|e| (e.key.as_str(), e.at.map_or(0, |p| p.line))).collect();
        assert_eq!(found, [("channels[0].timezone", 9), ("slate.image", 4)], "{errs:?}");
        assert!(errs[1].message.starts_with("cannot read `/nonexistent/card.png`"), "{errs:?}");
    }

    #[test]
    fn embedded_default_is_the_grand_final_to_twelve_countries() {
        let c = parse(DEFAULT_CONFIG).unwrap();
        assert!(c.event.title.contains("Silk Way Star"));
        let zones: Vec<&str> = c.channels.iter().map(|c| c.timezone.name()).collect();
        for z in [
            "Asia/Baku",
            "Asia/Yerevan",
            "Asia/Tbilisi",
            "Asia/Kolkata",
            "Asia/Almaty",
            "Asia/Shanghai",
            "Asia/Bishkek",
            "Asia/Ulaanbaatar",
            "Asia/Dushanbe",
            "Asia/Ashgabat",
            "Asia/Tashkent",
            "Asia/Seoul",
        ] {
            assert!(zones.contains(&z), "{z} missing");
        }
        let countries: std::collections::HashSet<_> = c.channels.iter().map(|c| c.country.as_str()).collect();
        assert_eq!(countries.len(), 12);
        for ch in &c.channels {
            let target = ch.ingest.target();
            assert!(target.contains("127.0.0.1"), "{} not on loopback: {target}", ch.id);
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            [event]
            title = "T"
            [[channels]]
            id = "Bad Id"
            name = "x"
            country = "KZ"
            timezone = "Asia/Almaty"
            ingest = { type = "udp", uri = "udp://127.0.0.1:5000" }
            [[channels]]
            id = "ok"
            name = "y"
            country = "KZ"
            timezone = "Mars/Olympus"
            ingest = { type = "srt", uri = "srt://127.0.0.1" }
        "#;
        let ConfigError::Invalid(errs) = parse(text).unwrap_err() else { panic!("expected Invalid") };
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["channels[0].id", "channels[1].timezone", "channels[1].ingest.uri"], "{errs:?}");
        assert!(errs[1].message.contains("Mars/Olympus"));
        assert!(errs[2].message.contains("no port"));
    }

    #[test]
    fn a_backup_ingest_makes_a_second_leg_and_is_refused_where_it_is_no_second_path() {
        let ch = |backup: &str| {
            format!(
                "id = \"kz\"\nname = \"Khabar\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
                 ingest = {{ type = \"srt\", uri = \"srt://127.0.0.1:7001\", passphrase = \"main-secret-1234\" }}\n\
                 ingest_backup = {backup}\n"
            )
        };
        let c = parse_channel(&ch(
            "{ type = \"srt\", uri = \"srt://127.0.0.1:7002\", passphrase = \"backup-secret-123\" }",
        ))
        .unwrap();
        let legs = legs_of([&c]);
        let ids: Vec<&str> = legs.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["kz", "kz+backup"]);
        assert_eq!(legs[1].ingest.target(), "srt://127.0.0.1:7002 (caller)");
        assert_eq!(legs[1].name, "Khabar (backup)");
        assert_eq!(main_of("kz+backup"), "kz");
        // Stored and read back (its secrets too), and through the API.
        assert_eq!(parse_stored_channel(&channel_to_toml(&c).unwrap()).unwrap(), c);
        let wire = crate::api::convert::channel_to_proto_with_secrets(&c);
        // (the wire has no "absent": its raw form names the defaults)
        let back = crate::api::convert::channel_from_proto(&wire).unwrap();
        assert_eq!(Channel { spec: c.spec.clone(), ..back }, c);
        let shown = format!("{:?}", crate::api::convert::channel_to_proto(&c));
        assert!(!shown.contains("backup-secret-123") && shown.contains("has_passphrase: true"), "{shown}");
        // An update that names no secret keeps the backup's.
        let mut changed = parse_channel(&ch("{ type = \"srt\", uri = \"srt://127.0.0.1:7002\" }")).unwrap();
        changed.keep_secrets(&c);
        assert_eq!(changed, c);
        // No second path: the main ingest again, its port, or a file.
        let refused = |backup: &str| parse_channel(&ch(backup)).unwrap_err()[0].to_string();
        let again = refused("{ type = \"srt\", uri = \"srt://127.0.0.1:7001\" }");
        assert!(again.contains("ingest_backup") && again.contains("main ingest again"), "{again}");
        let port = refused("{ type = \"udp\", uri = \"udp://127.0.0.1:7001\" }");
        assert!(
            port.contains("ingest_backup") && port.contains("127.0.0.1:7001 is the main ingest's port too"),
            "{port}"
        );
        let file = refused("{ type = \"file\", path = \"backup.ts\" }");
        assert!(file.contains("a file is not a partner's backup ingest"), "{file}");
    }

    #[test]
    fn every_default_channel_survives_a_round_trip_through_its_table() {
        for ch in default_config().channels {
            let text = channel_to_toml(&ch).unwrap();
            assert_eq!(parse_channel(&text).as_ref(), Ok(&ch), "{text}");
        }
    }

    #[test]
    fn a_channel_stored_in_the_earlier_hand_written_form_still_loads() {
        // What the store held before the raw form was serde's: every key
        // written out, defaults included, tables as sections.
        let stored = "audio = [\"rus\"]\ncountry = \"KZ\"\nenabled = false\nid = \"kz-khabar\"\nname = \"Khabar\"\n\
                      timezone = \"Asia/Almaty\"\n\n[air_policy]\nat = \"21:00\"\ntype = \"local_time\"\n\n\
                      [ingest]\nlatency = \"120ms\"\nmode = \"caller\"\npassphrase = \"0123456789ab\"\n\
                      type = \"srt\"\nuri = \"srt://127.0.0.1:9000\"\n";
        let ch = parse_stored_channel(stored).unwrap();
        assert_eq!((ch.id.as_str(), ch.enabled, ch.audio.as_slice()), ("kz-khabar", false, &["rus".to_owned()][..]));
        assert_eq!(ch.air_policy, AirPolicy::LocalTime(chrono::NaiveTime::from_hms_opt(21, 0, 0).unwrap()));
        let Ingest::Srt(s) = &ch.ingest else { panic!("srt") };
        assert_eq!(s.passphrase.as_ref().map(Secret::expose), Some("0123456789ab"));
        // Written again in the raw form, it reads back the same.
        assert_eq!(parse_stored_channel(&channel_to_toml(&ch).unwrap()).as_ref(), Ok(&ch));
    }

    #[test]
    fn colliding_udp_ports_are_refused_naming_the_other_channel() {
        let text = r#"
            [event]
            title = "T"
            [[channels]]
            id = "rist-leg"
            name = "x"
            country = "UZ"
            timezone = "Asia/Tashkent"
            ingest = { type = "rist", uri = "rist://127.0.0.1:5000" }
            [[channels]]
            id = "srt-leg"
            name = "y"
            country = "KR"
            timezone = "Asia/Seoul"
            ingest = { type = "srt", uri = "srt://127.0.0.1:5001" }
        "#;
        let ConfigError::Invalid(errs) = parse(text).unwrap_err() else { panic!("expected Invalid") };
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].key, "channels[1].ingest.uri");
        assert!(errs[0].message.contains("rist-leg"), "{}", errs[0].message);
    }

    /// An event with one channel whose ingest is `ingest`.
    fn one_channel(ingest: &str) -> String {
        format!(
            "[event]\ntitle = \"T\"\n[[channels]]\nid = \"a\"\nname = \"x\"\ncountry = \"AZ\"\n\
             timezone = \"Asia/Baku\"\ningest = {ingest}\n"
        )
    }

    #[test]
    fn stamping_legs_is_off_unless_asked_and_must_be_a_boolean() {
        let base = one_channel(r#"{ type = "udp", uri = "udp://127.0.0.1:5000" }"#);
        assert!(!parse(&base).unwrap().relay.stamp_legs);
        assert!(parse(&format!("{base}[relay]\nstamp_legs = true\n")).unwrap().relay.stamp_legs);
        let ConfigError::Invalid(errs) = parse(&format!("{base}[relay]\nstamp_legs = \"yes\"\n")).unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(errs[0].key, "relay.stamp_legs", "{errs:?}");
    }

    #[test]
    fn wrong_passphrase_is_refused_without_echoing_it() {
        let text = one_channel(r#"{ type = "srt", uri = "srt://127.0.0.1:9000", passphrase = "short-pw" }"#);
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("channels[0].ingest.passphrase"), "{err}");
        assert!(!err.contains("short-pw"), "secret echoed: {err}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let text = one_channel(r#"{ type = "rtmp", url = "rtmp://127.0.0.1/live", stream_key = "sk-very-secret" }"#);
        let c = parse(&text).unwrap();
        let dump = format!("{c:?} {}", c.channels[0].ingest.target());
        assert!(!dump.contains("sk-very-secret"), "{dump}");
    }

    #[test]
    fn a_backup_and_the_failover_times_are_read_and_checked() {
        let base = "[event]\ntitle = \"T\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:5000\"\n";
        let c = parse(base).unwrap();
        assert_eq!((c.backup, c.failover), (None, FailoverSettings::default()));
        assert_eq!(c.failover.detect_after, std::time::Duration::from_millis(500));
        assert_eq!(c.failover.return_after, std::time::Duration::from_secs(5));

        let text = format!(
            "{base}[backup]\ntype = \"srt\"\nuri = \"srt://127.0.0.1:5002\"\n\
             [failover]\ndetect_after = \"300ms\"\nreturn_after = \"10s\"\n"
        );
        let c = parse(&text).unwrap();
        assert!(matches!(&c.backup, Some(Source::Srt(s)) if s.port == 5002), "{:?}", c.backup);
        assert_eq!(c.failover.detect_after, std::time::Duration::from_millis(300));
        assert_eq!(c.failover.return_after, std::time::Duration::from_secs(10));

        // SRT runs over UDP: a backup listening on the primary's port is refused.
        let text = format!(
            "{base}[backup]\ntype = \"srt\"\nuri = \"srt://127.0.0.1:5000\"\n[failover]\ndetect_after = \"20ms\"\n"
        );
        let ConfigError::Invalid(errs) = parse(&text).unwrap_err() else { panic!("expected Invalid") };
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["failover.detect_after", "backup"], "{errs:?}");
        assert!(errs[1].message.contains("same input"), "{errs:?}");

        let text = format!("{base}[backup]\ntype = \"ftp\"\n");
        let ConfigError::Invalid(errs) = parse(&text).unwrap_err() else { panic!("expected Invalid") };
        assert_eq!(errs[0].key, "backup.type", "{errs:?}");
    }

    #[test]
    fn a_legs_audio_languages_are_read_stored_and_checked_against_the_programme() {
        let base = "[event]\ntitle = \"T\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:5000\"\n\
                    [program]\naudio = [\"aac:kaz\", \"aac:rus\", \"ac3:eng\"]\n";
        let leg = |id: &str, ingest: &str, audio: &str| {
            format!(
                "[[channels]]\nid = \"{id}\"\nname = \"N\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
                 ingest = {ingest}\naudio = {audio}\n"
            )
        };
        let udp = "{ type = \"udp\", uri = \"udp://127.0.0.1:6000\" }";
        let c = parse(&format!("{base}{}", leg("ru", udp, "[\"RUS\", \"eng\"]"))).unwrap();
        assert_eq!(c.channels[0].audio, ["rus", "eng"]);
        // Kept through the store's form of a channel.
        let back = parse_channel(&channel_to_toml(&c.channels[0]).unwrap()).unwrap();
        assert_eq!(back.audio, ["rus", "eng"]);

        // A language the programme lacks, named with those it has.
        let ConfigError::Invalid(errs) = parse(&format!("{base}{}", leg("tj", udp, "[\"tgk\"]"))).unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(errs[0].key, "channels[0].ingest", "{errs:?}");
        assert!(errs[0].message.contains("tgk") && errs[0].message.contains("kaz, rus, eng"), "{errs:?}");
        // Not codes; twice.
        let ConfigError::Invalid(errs) =
            parse(&format!("{base}{}", leg("x", udp, "[\"russian\", \"kaz\", \"KAZ\"]"))).unwrap_err()
        else {
            panic!("expected Invalid")
        };
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["channels[0].audio[0]", "channels[0].audio[2]"], "{errs:?}");
        // Not a string: that channel's shape is wrong, named by its path.
        let ConfigError::Invalid(errs) = parse(&format!("{base}{}", leg("x", udp, "[\"kaz\", 7]"))).unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(errs[0].key, "channels[0].audio[1]", "{errs:?}");
        assert!(errs[0].message.contains("expected a string"), "{errs:?}");
        // An RTMP leg takes exactly one track, and only an AAC one.
        let rtmp = "{ type = \"rtmp\", url = \"rtmp://127.0.0.1/live\" }";
        assert_eq!(parse(&format!("{base}{}", leg("r", rtmp, "[\"rus\"]"))).unwrap().channels[0].audio, ["rus"]);
        for (asked, says) in [("[\"rus\", \"kaz\"]", "exactly one audio track"), ("[\"eng\"]", "as ac3")] {
            let ConfigError::Invalid(errs) = parse(&format!("{base}{}", leg("r", rtmp, asked))).unwrap_err() else {
                panic!("expected Invalid")
            };
            assert!(errs[0].message.contains("RTMP") && errs[0].message.contains(says), "{errs:?}");
        }
        // Transcode mode chooses among its planned tracks the same way.
        let transcode = "[event]\ntitle = \"T\"\n[program]\nmode = \"transcode\"\naudio = [\"aac:kaz\", \"aac:rus\"]\n";
        let c = parse(&format!("{transcode}{}", leg("t", rtmp, "[\"rus\"]"))).unwrap();
        assert_eq!(c.channels[0].audio, ["rus"]);
        let ConfigError::Invalid(errs) = parse(&format!("{transcode}{}", leg("t", udp, "[\"eng\"]"))).unwrap_err()
        else {
            panic!("expected Invalid")
        };
        assert!(errs[0].message.contains("eng") && errs[0].message.contains("kaz, rus"), "{errs:?}");
    }

    #[test]
    fn alert_webhooks_are_read_and_every_mistake_is_named() {
        let base = "[event]\ntitle = \"T\"\n";
        assert_eq!(parse(base).unwrap().alerts, AlertSettings::default());
        let text = format!(
            "{base}[alerts]\npage_within = \"1h\"\n\
             [[alerts.webhooks]]\nname = \"oncall\"\nurl = \"https://hooks.example.net/a?b=1\"\nsecret = \"0123456789abcdef\"\n"
        );
        let a = parse(&text).unwrap().alerts;
        assert_eq!(a.page_within, std::time::Duration::from_secs(3600));
        assert_eq!(a.not_on_air_before, DEFAULT_NOT_ON_AIR_BEFORE);
        assert_eq!(
            (a.webhooks[0].name.as_str(), a.webhooks[0].url.to_string()),
            ("oncall", "https://hooks.example.net/a?b=1".into())
        );
        assert_eq!(a.webhooks[0].secret.expose(), "0123456789abcdef");

        let text = format!(
            "{base}[alerts]\nnot_on_air_before = \"soon\"\n\
             [[alerts.webhooks]]\nname = \"a b\"\nurl = \"ftp://x/\"\nsecret = \"short\"\n\
             [[alerts.webhooks]]\nname = \"ok\"\nurl = \"http://127.0.0.1:9/\"\n"
        );
        let ConfigError::Invalid(errs) = parse(&text).unwrap_err() else { panic!("expected Invalid") };
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "alerts.not_on_air_before",
                "alerts.webhooks[0].name",
                "alerts.webhooks[0].url",
                "alerts.webhooks[0].secret",
                "alerts.webhooks[1].secret"
            ],
            "{errs:?}"
        );
        assert!(!errs.iter().any(|e| e.message.contains("short")), "a secret is never echoed: {errs:?}");
        assert!(errs[4].message.contains("every alert is signed"), "{errs:?}");
    }

    #[test]
    fn a_table_of_the_wrong_shape_is_refused_alone_and_the_rest_still_checked() {
        // An unknown key refuses [alerts] (serde's deny_unknown_fields,
        // naming the keys it knows), a wrong type refuses one channel; the
        // other channel's zone and the slate are still checked, each at
        // its line and column.
        let text = "[event]\ntitle = \"T\"\n[alerts]\nsirens = true\n[slate]\nimage = \"card.jpg\"\n\
                    [[channels]]\nid = \"a\"\nname = \"A\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
                    ingest = { type = \"udp\", uri = \"udp://127.0.0.1:5000\", ttl = \"high\" }\n\
                    [[channels]]\nid = \"b\"\nname = \"B\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almati\"\n\
                    ingest = { type = \"udp\", uri = \"udp://127.0.0.1:5002\" }\n\
                    [[channels]]\nid = \"c\"\nname = \"C\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\n\
                    ingest = { type = \"ftp\", uri = \"ftp://127.0.0.1\" }\n";
        let ConfigError::Invalid(errs) = parse(text).unwrap_err() else { panic!("expected Invalid") };
        let found: Vec<(&str, usize)> = errs.iter().map(|e| (e.key.as_str(), e.at.map_or(0, |p| p.line))).collect();
        assert_eq!(
            found,
            [
                ("slate.image", 6),
                ("alerts.sirens", 4),
                ("channels[0].ingest", 12),
                ("channels[1].timezone", 17),
                ("channels[2].ingest.type", 24)
            ],
            "{errs:?}"
        );
        assert!(errs[1].message.contains("unknown field `sirens`") && errs[1].message.contains("`page_within`"));
        assert!(errs[2].message.contains("invalid type: string \"high\""), "{errs:?}");
        assert!(errs[4].message.contains("unknown variant `ftp`"), "{errs:?}");
        // A section that is not known at all refuses the document.
        let ConfigError::Invalid(errs) = parse("[event]\ntitle = \"T\"\n[chanels]\n").unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!((errs[0].key.as_str(), errs[0].at.map(|p| p.line)), ("chanels", Some(3)), "{errs:?}");
    }

    #[test]
    fn an_rtmp_leg_is_refused_for_a_passthrough_programme_not_in_h264() {
        let rtmp = r#"{ type = "rtmp", url = "rtmp://127.0.0.1/live" }"#;
        let src = "[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:5000\"\n";
        // H.264 (the default) goes to RTMP; so does anything in transcode.
        assert!(parse(&format!("{}{src}", one_channel(rtmp))).is_ok());
        let hevc = format!("{}{src}[program]\nvideo_codec = \"hevc\"\n", one_channel(rtmp));
        let ConfigError::Invalid(errs) = parse(&hevc).unwrap_err() else { panic!("expected Invalid") };
        assert_eq!(errs[0].key, "channels[0].ingest", "{errs:?}");
        assert!(errs[0].message.contains("`a`") && errs[0].message.contains("HEVC"), "{errs:?}");
        let udp = one_channel(r#"{ type = "udp", uri = "udp://127.0.0.1:5002" }"#);
        assert!(parse(&format!("{udp}{src}[program]\nvideo_codec = \"mpeg2\"\n")).is_ok());
    }

    #[test]
    fn planned_audio_tracks_are_read_and_checked() {
        let base = "[event]\ntitle = \"T\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:5000\"\n[program]\n";
        let c = parse(&format!("{base}audio = [\"aac:kaz\", \"ac3:eng\", \"mp2\"]\n")).unwrap();
        let got: Vec<(&str, Option<&str>)> =
            c.program.audio.iter().map(|t| (t.codec.as_str(), t.language.as_deref())).collect();
        assert_eq!(got, [("aac", Some("kaz")), ("ac3", Some("eng")), ("mp2", None)]);
        let ConfigError::Invalid(errs) =
            parse(&format!("{base}audio = [\"aac:kazakh\", \"dts:eng\", 3]\n")).unwrap_err()
        else {
            panic!("expected Invalid")
        };
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["program.audio[0]", "program.audio[1]", "program.audio[2]"], "{errs:?}");
        assert!(errs[0].message.contains("ISO 639-2") && errs[1].message.contains("`dts`"), "{errs:?}");
        // Transcode (the test source's mode) decodes and encodes AAC only.
        let t = "[event]\ntitle = \"T\"\n[program]\naudio = [\"aac:kaz\", \"ac3:eng\"]\n";
        let ConfigError::Invalid(errs) = parse(t).unwrap_err() else { panic!("expected Invalid") };
        assert_eq!(errs[0].key, "program.audio[1]", "{errs:?}");
        assert!(errs[0].message.contains("AAC tracks only") && errs[0].message.contains("passthrough"), "{errs:?}");
        assert_eq!(
            parse("[event]\ntitle = \"T\"\n[program]\naudio = [\"aac:kaz\", \"aac\"]\n").unwrap().program.audio.len(),
            2
        );
    }

    #[test]
    fn secrets_come_from_private_files_and_only_their_names_are_written_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p.display().to_string()
        };
        let srt = |key: &str| {
            one_channel(&format!(r#"{{ type = "srt", uri = "srt://127.0.0.1:9000", passphrase_file = "{key}" }}"#))
        };
        let errors = |text: &str| match parse(text) {
            Err(ConfigError::Invalid(errs)) => errs,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let good = file("kz", "correct-horse-battery\n", 0o600);
        let c = parse(&srt(&good)).unwrap();
        let Ingest::Srt(s) = &c.channels[0].ingest else { panic!("srt") };
        let p = s.passphrase.as_ref().unwrap();
        assert_eq!(p.expose(), "correct-horse-battery", "one trailing line break is not part of it");
        // Written back (the store) by its file's name, read again from it.
        let written = channel_to_toml(&c.channels[0]).unwrap();
        assert!(written.contains(&format!("passphrase_file = \"{good}\"")), "{written}");
        assert!(!written.contains("correct-horse-battery"), "{written}");
        assert_eq!(parse_channel(&written).as_ref(), Ok(&c.channels[0]));
        // Every user may read it: refused, and no value is echoed anywhere.
        let open = file("open", "correct-horse-battery", 0o644);
        let errs = errors(&srt(&open));
        assert_eq!(errs[0].key, "channels[0].ingest.passphrase_file", "{errs:?}");
        assert!(errs[0].message.contains("chmod o-r"), "{errs:?}");
        let short = file("short", "tiny", 0o400);
        let errs = errors(&srt(&short));
        assert!(errs[0].message.contains("must be 10 to 79 characters"), "{errs:?}");
        assert!(!format!("{errs:?}").contains("tiny") && !format!("{errs:?}").contains("correct-horse"));
        // Both ways at once, a missing file, an RTMP key from a file.
        let both = one_channel(&format!(
            r#"{{ type = "srt", uri = "srt://127.0.0.1:9000", passphrase = "0123456789", passphrase_file = "{good}" }}"#
        ));
        assert!(errors(&both)[0].message.contains("not both"));
        let missing = dir.path().join("gone").display().to_string();
        let errs = errors(&srt(&missing));
        assert!(errs[0].message.contains("cannot read") && errs[0].message.contains(&missing), "{errs:?}");
        let key = file("key", "live_kr_9f8e", 0o600);
        let rtmp =
            one_channel(&format!(r#"{{ type = "rtmp", url = "rtmp://127.0.0.1/live", stream_key_file = "{key}" }}"#));
        let Ingest::Rtmp(r) = &parse(&rtmp).unwrap().channels[0].ingest else { panic!("rtmp") };
        assert_eq!(r.stream_key.as_ref().map(|k| k.expose()), Some("live_kr_9f8e"));
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
            assert!(errors(&srt("kz-srt"))[0].message.contains("$CREDENTIALS_DIRECTORY"));
        }
        // A stored channel whose file went away still loads: its own leg
        // fails naming the file, the other channels are untouched.
        std::fs::remove_file(&good).unwrap();
        let stored = parse_stored_channel(&written).expect("loads");
        let Ingest::Srt(s) = &stored.ingest else { panic!("srt") };
        let why = s.passphrase.as_ref().unwrap().usable().unwrap_err();
        assert!(why.contains(&good), "{why}");
        assert!(parse_channel(&written).is_err(), "read as new configuration, it is an error");
    }

    #[test]
    fn planned_scte35_is_for_passthrough_only() {
        let udp = "[event]\ntitle = \"T\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:5000\"\n[program]\n";
        assert!(parse(&format!("{udp}scte35 = true\n")).unwrap().program.scte35);
        assert!(!parse(udp).unwrap().program.scte35, "off unless planned");
        let ConfigError::Invalid(errs) = parse(&format!("{udp}scte35 = \"yes\"\n")).unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(errs[0].key, "program.scte35", "{errs:?}");
        let ConfigError::Invalid(errs) = parse("[event]\ntitle = \"T\"\n[program]\nscte35 = true\n").unwrap_err()
        else {
            panic!("expected Invalid")
        };
        assert_eq!(errs[0].key, "program.scte35", "transcode (the test source) carries no cues: {errs:?}");
    }

    #[test]
    fn the_keyframe_bridge_is_on_by_default_and_for_passthrough_only() {
        let udp = "[event]\ntitle = \"T\"\n[source]\ntype = \"udp\"\nuri = \"udp://127.0.0.1:5000\"\n[program]\n";
        assert!(parse(udp).unwrap().program.keyframe_bridge, "on unless turned off");
        assert!(!parse(&format!("{udp}keyframe_bridge = false\n")).unwrap().program.keyframe_bridge);
        let text = "[event]\ntitle = \"T\"\n[program]\nkeyframe_bridge = false\n";
        let ConfigError::Invalid(errs) = parse(text).unwrap_err() else { panic!("expected Invalid") };
        assert_eq!(errs[0].key, "program.keyframe_bridge", "transcode has no keyframes to wait for: {errs:?}");
        assert!(errs[0].message.contains("applies to passthrough"), "{errs:?}");
    }
}
