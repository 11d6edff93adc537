//! Raw TOML to validated [`Config`], in one pass that collects every problem
//! with the key it concerns, so an operator fixes a file once. No clock, and
//! no I/O but the secret files (`passphrase_file`, `stream_key_file`, a
//! webhook's `secret_file`), read as what holds them is built; the slate's
//! image and a file source are checked apart ([`super::files`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;
use toml::{Table, Value};

use super::FieldError;
use super::types::*;
use super::uri::{parse_duration, parse_uri};

/// Collects problems while walking the table.
struct Walk {
    errors: Vec<FieldError>,
    /// Secret files that cannot be read are a problem of their leg, not
    /// an error (a configuration already accepted, read back).
    lenient_files: bool,
}

impl Walk {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError { key: key.into(), message: message.into() });
    }

    /// Reports keys of `t` that are not in `known`.
    fn unknown(&mut self, t: &Table, at: &str, known: &[&str]) {
        for k in t.keys() {
            if !known.contains(&k.as_str()) {
                self.err(join(at, k), format!("unknown key; expected one of: {}", known.join(", ")));
            }
        }
    }

    fn table<'a>(&mut self, t: &'a Table, at: &str, key: &str, required: bool) -> Option<&'a Table> {
        match t.get(key) {
            Some(Value::Table(v)) => Some(v),
            Some(other) => {
                self.err(join(at, key), format!("expected a table, found {}", other.type_str()));
                None
            }
            None if required => {
                self.err(join(at, key), "missing");
                None
            }
            None => None,
        }
    }

    fn string(&mut self, t: &Table, at: &str, key: &str, required: bool) -> Option<String> {
        match t.get(key) {
            Some(Value::String(s)) if s.chars().count() > super::MAX_STRING_CHARS => {
                let n = s.chars().count();
                self.err(join(at, key), format!("{n} characters long; at most {}", super::MAX_STRING_CHARS));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.err(join(at, key), format!("expected a string, found {}", other.type_str()));
                None
            }
            None if required => {
                self.err(join(at, key), "missing");
                None
            }
            None => None,
        }
    }

    fn int(&mut self, t: &Table, at: &str, key: &str, range: (i64, i64)) -> Option<i64> {
        match t.get(key) {
            Some(Value::Integer(n)) if (range.0..=range.1).contains(n) => Some(*n),
            Some(Value::Integer(n)) => {
                self.err(join(at, key), format!("{n} is out of range {}..={}", range.0, range.1));
                None
            }
            Some(other) => {
                self.err(join(at, key), format!("expected an integer, found {}", other.type_str()));
                None
            }
            None => None,
        }
    }

    fn boolean(&mut self, t: &Table, at: &str, key: &str) -> Option<bool> {
        match t.get(key) {
            Some(Value::Boolean(b)) => Some(*b),
            Some(other) => {
                self.err(join(at, key), format!("expected true or false, found {}", other.type_str()));
                None
            }
            None => None,
        }
    }

    /// A positive duration; `default` when absent.
    fn duration(&mut self, t: &Table, at: &str, key: &str, default: Duration) -> Duration {
        match self.string(t, at, key, false) {
            None => default,
            Some(s) => match parse_duration(&s) {
                Ok(d) if d > Duration::ZERO => d,
                Ok(_) => {
                    self.err(join(at, key), "must be greater than zero");
                    default
                }
                Err(e) => {
                    self.err(join(at, key), e);
                    default
                }
            },
        }
    }

    fn timezone(&mut self, t: &Table, at: &str, key: &str, required: bool) -> Option<Tz> {
        let s = self.string(t, at, key, required)?;
        match Tz::from_str(&s) {
            Ok(tz) => Some(tz),
            Err(_) => {
                self.err(
                    join(at, key),
                    format!("{} is not an IANA time zone (for example Asia/Almaty)", super::quote(&s)),
                );
                None
            }
        }
    }

    /// A table's `type` tag, checked against `kinds`.
    fn kind<'k>(&mut self, t: &Table, at: &str, kinds: &[&'k str]) -> Option<&'k str> {
        let s = self.string(t, at, "type", true)?;
        match kinds.iter().find(|k| **k == s) {
            Some(k) => Some(k),
            None => {
                self.err(join(at, "type"), format!("`{s}` is not one of: {}", kinds.join(", ")));
                None
            }
        }
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") }
}

/// Validates a parsed TOML document.
pub fn validate(doc: &Table) -> Result<Config, Vec<FieldError>> {
    let mut w = Walk { errors: Vec::new(), lenient_files: false };
    w.unknown(doc, "", &["event", "source", "backup", "failover", "program", "slate", "relay", "alerts", "channels"]);

    let event = w.table(doc, "", "event", true).map(|t| event(&mut w, t));
    let backup = w.table(doc, "", "backup", false).map(|t| source(&mut w, t, "backup"));
    let source = match w.table(doc, "", "source", false) {
        Some(t) => source(&mut w, t, "source"),
        None => Some(Source::Test(TestSource::default())),
    };
    let failover = match w.table(doc, "", "failover", false) {
        Some(t) => failover(&mut w, t),
        None => FailoverSettings::default(),
    };
    if let (Some(primary), Some(Some(backup))) = (&source, &backup)
        && let Some(why) = same_input(primary, backup)
    {
        w.err("backup", why);
    }
    let relay = match w.table(doc, "", "relay", false) {
        Some(t) => relay(&mut w, t),
        None => RelaySettings::default(),
    };
    // Passthrough by default for a real contribution; the test source
    // keeps the transcoding path unless told otherwise.
    let default_mode = match &source {
        Some(Source::Test(_)) | None => ProgramMode::Transcode,
        Some(_) => ProgramMode::Passthrough,
    };
    let program = match w.table(doc, "", "program", false) {
        Some(t) => program(&mut w, t, default_mode),
        None => ProgramFormat { mode: default_mode, ..ProgramFormat::default() },
    };
    let slate = match w.table(doc, "", "slate", false) {
        Some(t) => slate(&mut w, t),
        None => SlateSettings::default(),
    };
    let alerts = match w.table(doc, "", "alerts", false) {
        Some(t) => alerts(&mut w, t),
        None => AlertSettings::default(),
    };

    let mut channels = Vec::new();
    match doc.get("channels") {
        None => {}
        Some(Value::Array(items)) => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let at = format!("channels[{i}]");
                let Value::Table(t) = item else {
                    w.err(&at, format!("expected a table, found {}", item.type_str()));
                    continue;
                };
                if let Some(c) = channel(&mut w, t, &at) {
                    if !seen.insert(c.id.clone()) {
                        w.err(join(&at, "id"), format!("`{}` is used by an earlier channel", c.id));
                    }
                    channels.push(c);
                }
            }
        }
        Some(other) => w.err("channels", format!("expected an array of tables, found {}", other.type_str())),
    }

    udp_port_collisions(&mut w, &channels);
    for (i, c) in channels.iter().enumerate() {
        if let Some(why) = program.refuses(c) {
            w.err(format!("channels[{i}].ingest"), why);
        }
    }

    // A [backup] that did not validate left its errors in `w.errors`.
    match (event, source, w.errors.is_empty()) {
        (Some(Some(event)), Some(source), true) => {
            Ok(Config { event, source, backup: backup.flatten(), failover, program, slate, relay, alerts, channels })
        }
        _ => Err(w.errors),
    }
}

/// Validates one channel table (a `[[channels]]` entry, a stored channel, or
/// an API request converted to the same form); keys are reported under `at`.
pub fn validate_channel(t: &Table, at: &str) -> Result<Channel, Vec<FieldError>> {
    validate_channel_with(t, at, false)
}

/// [`validate_channel`]; with `lenient_files`, a secret file that cannot
/// be read is kept as its leg's problem (see [`Secret::from_file_or_problem`]).
pub fn validate_channel_with(t: &Table, at: &str, lenient_files: bool) -> Result<Channel, Vec<FieldError>> {
    let mut w = Walk { errors: Vec::new(), lenient_files };
    let c = channel(&mut w, t, at);
    if let Some(c) = &c {
        udp_port_collisions(&mut w, std::slice::from_ref(c));
    }
    match c {
        Some(c) if w.errors.is_empty() => Ok(c),
        _ => Err(w.errors),
    }
}

fn event(w: &mut Walk, t: &Table) -> Option<EventPlan> {
    w.unknown(t, "event", &["title", "timezone", "duration"]);
    let title = w.string(t, "event", "title", true);
    if matches!(&title, Some(s) if s.trim().is_empty()) {
        w.err("event.title", "must not be empty");
    }
    let timezone = match t.get("timezone") {
        None => Some(Tz::UTC),
        Some(_) => w.timezone(t, "event", "timezone", false),
    };
    let duration = w.duration(t, "event", "duration", Duration::from_secs(3 * 3600));
    Some(EventPlan { title: title?, timezone: timezone?, duration })
}

fn relay(w: &mut Walk, t: &Table) -> RelaySettings {
    const AT: &str = "relay";
    w.unknown(
        t,
        AT,
        &[
            "leg_buffer",
            "reconnect_initial",
            "reconnect_max",
            "stall_timeout",
            "connect_timeout",
            "batch_wait",
            "stamp_legs",
        ],
    );
    let d = RelaySettings::default();
    let r = RelaySettings {
        leg_buffer: w.duration(t, AT, "leg_buffer", d.leg_buffer),
        reconnect_initial: w.duration(t, AT, "reconnect_initial", d.reconnect_initial),
        reconnect_max: w.duration(t, AT, "reconnect_max", d.reconnect_max),
        stall_timeout: w.duration(t, AT, "stall_timeout", d.stall_timeout),
        connect_timeout: w.duration(t, AT, "connect_timeout", d.connect_timeout),
        stamp_legs: w.boolean(t, AT, "stamp_legs").unwrap_or(d.stamp_legs),
        batch_wait: match w.string(t, AT, "batch_wait", false) {
            None => d.batch_wait,
            Some(s) => match parse_duration(&s) {
                Ok(v) if v <= Duration::from_millis(50) => v,
                Ok(_) => {
                    w.err("relay.batch_wait", "must be at most 50ms: it adds to every leg's latency");
                    d.batch_wait
                }
                Err(e) => {
                    w.err("relay.batch_wait", e);
                    d.batch_wait
                }
            },
        },
    };
    if r.reconnect_initial > r.reconnect_max {
        w.err("relay.reconnect_initial", "must not exceed relay.reconnect_max");
    }
    r
}

fn source(w: &mut Walk, t: &Table, at: &str) -> Option<Source> {
    match w.kind(t, at, &["test", "srt", "udp", "file"])? {
        "test" => {
            if let Some(k) =
                ["width", "height", "framerate", "video_kbps", "audio_kbps", "gop"].iter().find(|k| t.contains_key(**k))
            {
                w.err(
                    join(at, k),
                    "the picture and bitrates moved to the [program] section (they apply to every source)",
                );
            }
            w.unknown(t, at, &["type", "tone_hz", "width", "height", "framerate", "video_kbps", "audio_kbps", "gop"]);
            let d = TestSource::default();
            let tone_hz = w.int(t, at, "tone_hz", (20, 20_000)).map_or(d.tone_hz, |v| v as u32);
            Some(Source::Test(TestSource { tone_hz }))
        }
        "srt" => {
            w.unknown(t, at, &["type", "uri", "mode", "latency", "passphrase", "passphrase_file", "stream_id"]);
            srt_endpoint(w, t, at, SrtMode::Listener).map(Source::Srt)
        }
        "udp" => {
            w.unknown(t, at, &["type", "uri", "interface"]);
            udp_endpoint(w, t, at).map(Source::Udp)
        }
        "file" => {
            w.unknown(t, at, &["type", "path"]);
            // Whether it can be read is the file check's (`super::files`).
            file_path(w, t, at).map(Source::File)
        }
        _ => unreachable!("kind() only returns listed kinds"),
    }
}

fn failover(w: &mut Walk, t: &Table) -> FailoverSettings {
    const AT: &str = "failover";
    w.unknown(t, AT, &["detect_after", "return_after"]);
    let d = FailoverSettings::default();
    let f = FailoverSettings {
        detect_after: w.duration(t, AT, "detect_after", d.detect_after),
        return_after: w.duration(t, AT, "return_after", d.return_after),
    };
    if f.detect_after < Duration::from_millis(100) {
        w.err(
            "failover.detect_after",
            "must be at least 100ms: a live feed's pictures arrive up to a frame or two late",
        );
    }
    f
}

/// The shortest webhook secret: an HMAC key an attacker cannot guess.
const MIN_WEBHOOK_SECRET_CHARS: usize = 16;

fn alerts(w: &mut Walk, t: &Table) -> AlertSettings {
    const AT: &str = "alerts";
    w.unknown(t, AT, &["page_within", "not_on_air_before", "webhooks"]);
    let d = AlertSettings::default();
    let mut a = AlertSettings {
        webhooks: Vec::new(),
        page_within: w.duration(t, AT, "page_within", d.page_within),
        not_on_air_before: w.duration(t, AT, "not_on_air_before", d.not_on_air_before),
    };
    match t.get("webhooks") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("alerts.webhooks[{i}]");
                let Value::Table(h) = item else {
                    w.err(&at, format!("expected a table, found {}", item.type_str()));
                    continue;
                };
                if let Some(hook) = webhook(w, h, &at) {
                    if a.webhooks.iter().any(|o| o.name == hook.name) {
                        w.err(join(&at, "name"), format!("`{}` is used by an earlier webhook", hook.name));
                    }
                    a.webhooks.push(hook);
                }
            }
        }
        Some(other) => w.err("alerts.webhooks", format!("expected an array of tables, found {}", other.type_str())),
    }
    a
}

fn webhook(w: &mut Walk, t: &Table, at: &str) -> Option<Webhook> {
    w.unknown(t, at, &["name", "url", "secret", "secret_file"]);
    let name = w.string(t, at, "name", true).and_then(|n| {
        let ok = !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            w.err(join(at, "name"), "1 to 64 characters among a-z, A-Z, 0-9, `-`, `_` and `.`");
        }
        ok.then_some(n)
    });
    let url = w.string(t, at, "url", true).and_then(|u| match u.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|h| !h.is_empty()) => {
            Some(uri)
        }
        Ok(_) => {
            w.err(join(at, "url"), format!("{} is not an http:// or https:// URL with a host", super::quote(&u)));
            None
        }
        Err(e) => {
            w.err(join(at, "url"), format!("{} is not a URL: {e}", super::quote(&u)));
            None
        }
    });
    let rule = format!("must be at least {MIN_WEBHOOK_SECRET_CHARS} characters (the HMAC-SHA256 key of the signature)");
    let secret = secret(w, t, at, "secret", |s| s.chars().count() >= MIN_WEBHOOK_SECRET_CHARS, &rule);
    if secret.is_none() && !t.contains_key("secret") && !t.contains_key("secret_file") {
        w.err(join(at, "secret"), "missing: every alert is signed (give secret or secret_file)");
    }
    Some(Webhook { name: name?, url: url?, secret: secret? })
}

/// Why the backup would listen where the primary does, if it would.
fn same_input(primary: &Source, backup: &Source) -> Option<String> {
    // The UDP port a source listens on (SRT runs over UDP too).
    let listens = |s: &Source| match s {
        Source::Udp(u) => Some(u.port),
        Source::Srt(s) if s.mode == SrtMode::Listener => Some(s.port),
        _ => None,
    };
    let clash = match (primary, backup) {
        (Source::File(a), Source::File(b)) => a == b,
        (a, b) => listens(a).is_some() && listens(a) == listens(b),
    };
    clash.then(|| "the backup is the same input as [source]: a backup must arrive another way".to_owned())
}

fn program(w: &mut Walk, t: &Table, default_mode: ProgramMode) -> ProgramFormat {
    const AT: &str = "program";
    w.unknown(
        t,
        AT,
        &["mode", "video_codec", "audio", "scte35", "width", "height", "framerate", "video_kbps", "audio_kbps", "gop"],
    );
    let d = ProgramFormat::default();
    let get = |w: &mut Walk, key, range, default: u32| w.int(t, AT, key, range).map_or(default, |v| v as u32);
    let mode = match w.string(t, AT, "mode", false).as_deref() {
        None => default_mode,
        Some("passthrough") => ProgramMode::Passthrough,
        Some("transcode") => ProgramMode::Transcode,
        Some(other) => {
            w.err("program.mode", format!("`{other}` is not a program mode; expected passthrough or transcode"));
            default_mode
        }
    };
    let video_codec = match w.string(t, AT, "video_codec", false) {
        None => d.video_codec,
        Some(s) => crate::media::es::VideoCodec::parse(&s).unwrap_or_else(|| {
            let known: Vec<&str> = crate::media::es::VideoCodec::ALL.iter().map(|c| c.as_str()).collect();
            w.err(
                "program.video_codec",
                format!("`{s}` is not a video codec passthrough carries; expected one of: {}", known.join(", ")),
            );
            d.video_codec
        }),
    };
    if mode == ProgramMode::Transcode && video_codec != crate::media::es::VideoCodec::H264 {
        w.err("program.video_codec", "transcode mode encodes H.264 only; video_codec applies to passthrough");
    }
    let audio = match t.get("audio") {
        None => d.audio.clone(),
        Some(Value::Array(items)) if (1..=16).contains(&items.len()) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let r = match v {
                    Value::String(s) => PlannedTrack::parse(s),
                    other => Err(format!("expected a string like \"aac:kaz\", found {}", other.type_str())),
                };
                r.map_err(|e| w.err(format!("program.audio[{i}]"), e)).ok()
            })
            .collect(),
        Some(Value::Array(_)) => {
            w.err("program.audio", "list 1 to 16 tracks, e.g. [\"aac:kaz\", \"aac:rus\", \"ac3:eng\"]");
            d.audio.clone()
        }
        Some(other) => {
            w.err("program.audio", format!("expected an array of strings, found {}", other.type_str()));
            d.audio.clone()
        }
    };
    if mode == ProgramMode::Transcode {
        // Each planned track is decoded from the contribution's AAC and
        // encoded again as AAC under its language.
        for (i, track) in audio.iter().enumerate().filter(|(_, t)| t.codec != crate::media::es::AudioCodec::Aac) {
            w.err(
                format!("program.audio[{i}]"),
                format!(
                    "transcode mode decodes and encodes AAC tracks only, not {}; relay it with mode = \"passthrough\"",
                    track.codec.as_str()
                ),
            );
        }
    }
    let scte35 = w.boolean(t, AT, "scte35").unwrap_or(d.scte35);
    if mode == ProgramMode::Transcode && scte35 {
        w.err(
            "program.scte35",
            "transcode mode does not carry the contribution's SCTE-35 cues; scte35 applies to passthrough",
        );
    }
    let p = ProgramFormat {
        mode,
        video_codec,
        audio,
        scte35,
        width: get(w, "width", (64, 3840), d.width),
        height: get(w, "height", (64, 2160), d.height),
        framerate: get(w, "framerate", (1, 60), d.framerate),
        video_kbps: get(w, "video_kbps", (100, 50_000), d.video_kbps),
        audio_kbps: get(w, "audio_kbps", (32, 320), d.audio_kbps),
        gop: get(w, "gop", (1, 600), d.gop),
    };
    if !p.width.is_multiple_of(2) || !p.height.is_multiple_of(2) {
        w.err("program.width", "width and height must be even for H.264 4:2:0");
    }
    p
}

fn slate(w: &mut Walk, t: &Table) -> SlateSettings {
    const AT: &str = "slate";
    w.unknown(t, AT, &["image", "text", "tone_hz"]);
    // Whether it can be read is the file check's (`super::files`).
    let image = w.string(t, AT, "image", false).and_then(|s| {
        if s.to_ascii_lowercase().ends_with(".png") {
            Some(PathBuf::from(s))
        } else {
            w.err("slate.image", format!("`{s}` is not a PNG file"));
            None
        }
    });
    let text = w.string(t, AT, "text", false);
    let tone_hz = w.int(t, AT, "tone_hz", (0, 20_000)).and_then(|v| (v > 0).then_some(v as u32));
    SlateSettings { image, text, tone_hz }
}

fn channel(w: &mut Walk, t: &Table, at: &str) -> Option<Channel> {
    w.unknown(t, at, &["id", "name", "country", "timezone", "enabled", "air_policy", "ingest", "audio"]);
    let id = w.string(t, at, "id", true).and_then(|s| match ChannelId::parse(&s) {
        Ok(id) => Some(id),
        Err(e) => {
            w.err(join(at, "id"), e);
            None
        }
    });
    let name = w.string(t, at, "name", true);
    if matches!(&name, Some(s) if s.trim().is_empty() || s.chars().count() > super::MAX_NAME_CHARS || s.chars().any(char::is_control))
    {
        w.err(join(at, "name"), format!("1 to {} characters, no control characters", super::MAX_NAME_CHARS));
    }
    let country = w.string(t, at, "country", true).and_then(|s| {
        if s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            Some(s.to_ascii_uppercase())
        } else {
            w.err(
                join(at, "country"),
                format!("{} is not an ISO 3166-1 alpha-2 code (two letters, e.g. KZ)", super::quote(&s)),
            );
            None
        }
    });
    let timezone = w.timezone(t, at, "timezone", true);
    let enabled = w.boolean(t, at, "enabled").unwrap_or(true);
    let air_at = join(at, "air_policy");
    let air_policy = match w.table(t, at, "air_policy", false) {
        None => Some(AirPolicy::Live),
        Some(p) => air_policy(w, p, &air_at),
    };
    let ingest_at = join(at, "ingest");
    let ingest = w.table(t, at, "ingest", true).and_then(|i| ingest(w, i, &ingest_at));
    let audio = languages(w, t, at, "audio");
    Some(Channel {
        id: id?,
        name: name?,
        country: country?,
        timezone: timezone?,
        ingest: ingest?,
        air_policy: air_policy?,
        enabled,
        audio,
    })
}

/// A list of ISO 639-2 codes (three letters, kept lower case, each once).
fn languages(w: &mut Walk, t: &Table, at: &str, key: &str) -> Vec<String> {
    let Some(v) = t.get(key) else { return Vec::new() };
    let Value::Array(items) = v else {
        w.err(join(at, key), format!("expected an array of ISO 639-2 codes, found {}", v.type_str()));
        return Vec::new();
    };
    if items.len() > 16 {
        w.err(join(at, key), format!("{} languages; at most 16", items.len()));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) => {
                let l = s.to_ascii_lowercase();
                if out.contains(&l) {
                    w.err(format!("{}[{i}]", join(at, key)), format!("`{l}` is listed twice"));
                } else {
                    out.push(l);
                }
            }
            Value::String(s) => w.err(
                format!("{}[{i}]", join(at, key)),
                format!("{} is not an ISO 639-2 code (three letters, e.g. kaz)", super::quote(s)),
            ),
            other => w.err(format!("{}[{i}]", join(at, key)), format!("expected a string, found {}", other.type_str())),
        }
    }
    out
}

fn air_policy(w: &mut Walk, t: &Table, at: &str) -> Option<AirPolicy> {
    match w.kind(t, at, &["live", "local_time"])? {
        "live" => {
            w.unknown(t, at, &["type"]);
            Some(AirPolicy::Live)
        }
        _ => {
            w.unknown(t, at, &["type", "at"]);
            let s = w.string(t, at, "at", true)?;
            match NaiveTime::parse_from_str(&s, "%H:%M").or_else(|_| NaiveTime::parse_from_str(&s, "%H:%M:%S")) {
                Ok(time) => Some(AirPolicy::LocalTime(time)),
                Err(_) => {
                    w.err(join(at, "at"), format!("{} is not a time of day as HH:MM (or HH:MM:SS)", super::quote(&s)));
                    None
                }
            }
        }
    }
}

fn ingest(w: &mut Walk, t: &Table, at: &str) -> Option<Ingest> {
    match w.kind(t, at, &["srt", "rtmp", "udp", "rist", "file"])? {
        "srt" => {
            w.unknown(t, at, &["type", "uri", "mode", "latency", "passphrase", "passphrase_file", "stream_id"]);
            srt_endpoint(w, t, at, SrtMode::Caller).map(Ingest::Srt)
        }
        "rtmp" => {
            w.unknown(t, at, &["type", "url", "stream_key", "stream_key_file"]);
            rtmp(w, t, at).map(Ingest::Rtmp)
        }
        "udp" => {
            w.unknown(t, at, &["type", "uri", "ttl", "interface"]);
            let mut u = udp_endpoint(w, t, at)?;
            u.ttl = w.int(t, at, "ttl", (1, 255)).map_or(1, |v| v as u8);
            Some(Ingest::Udp(u))
        }
        "rist" => {
            w.unknown(t, at, &["type", "uri"]);
            let (host, port) = host_port(w, t, at, "uri", &["rist"])?;
            if port % 2 != 0 {
                w.err(join(at, "uri"), format!("RIST port {port} must be even (RTCP uses port + 1)"));
                return None;
            }
            Some(Ingest::Rist(RistIngest { host, port }))
        }
        "file" => {
            w.unknown(t, at, &["type", "path"]);
            file_path(w, t, at).map(Ingest::File)
        }
        _ => unreachable!("kind() only returns listed kinds"),
    }
}

/// `uri` of the given schemes, with a required port and nothing else.
fn host_port(w: &mut Walk, t: &Table, at: &str, key: &str, schemes: &[&str]) -> Option<(Host, u16)> {
    let s = w.string(t, at, key, true)?;
    let key = join(at, key);
    match parse_uri(&s, schemes) {
        Err(e) => w.err(key, e),
        Ok((_, u)) if u.port.is_none() => w.err(key, format!("{} has no port", super::quote(&s))),
        Ok((_, u)) if u.has_query || !u.path.is_empty() => {
            w.err(key, format!("{}: options go in their own keys, not in the URI", super::quote(&s)))
        }
        Ok((_, u)) => return Some((u.host, u.port.unwrap_or_default())),
    }
    None
}

/// A secret given inline as `key`, or in a file as `key_file`; `ok` is the
/// rule its value must follow, `rule` says it. A value is never echoed,
/// not even a wrong one.
fn secret(w: &mut Walk, t: &Table, at: &str, key: &str, ok: impl Fn(&str) -> bool, rule: &str) -> Option<Secret> {
    let file_key = format!("{key}_file");
    let inline = w.string(t, at, key, false);
    let file = w.string(t, at, &file_key, false);
    match (inline, file) {
        (Some(_), Some(_)) => {
            w.err(join(at, &file_key), format!("give {key} or {file_key}, not both"));
            None
        }
        (Some(v), None) if ok(&v) => Some(Secret::new(v)),
        (Some(_), None) => {
            w.err(join(at, key), rule);
            None
        }
        (None, Some(spec)) if w.lenient_files => Some(Secret::from_file_or_problem(&spec)),
        (None, Some(spec)) => match Secret::from_file(&spec) {
            Ok(s) if ok(s.expose()) => Some(s),
            Ok(_) => {
                w.err(join(at, &file_key), format!("what {} holds {rule}", super::quote(&spec)));
                None
            }
            Err(why) => {
                w.err(join(at, &file_key), why);
                None
            }
        },
        (None, None) => None,
    }
}

fn srt_endpoint(w: &mut Walk, t: &Table, at: &str, default_mode: SrtMode) -> Option<SrtEndpoint> {
    let hp = host_port(w, t, at, "uri", &["srt"]);
    let mode = match w.string(t, at, "mode", false).as_deref() {
        None => Some(default_mode),
        Some("caller") => Some(SrtMode::Caller),
        Some("listener") => Some(SrtMode::Listener),
        Some(other) => {
            w.err(join(at, "mode"), format!("`{other}` is not caller or listener"));
            None
        }
    };
    let latency = w.duration(t, at, "latency", DEFAULT_SRT_LATENCY);
    let passphrase =
        secret(w, t, at, "passphrase", |p| (10..=79).contains(&p.chars().count()), "must be 10 to 79 characters long");
    let stream_id = w.string(t, at, "stream_id", false).and_then(|s| {
        if s.len() <= 512 && !s.chars().any(char::is_control) {
            Some(s)
        } else {
            w.err(join(at, "stream_id"), "must be at most 512 printable characters");
            None
        }
    });
    let (host, port) = hp?;
    Some(SrtEndpoint { host, port, mode: mode?, latency, passphrase, stream_id })
}

fn udp_endpoint(w: &mut Walk, t: &Table, at: &str) -> Option<UdpEndpoint> {
    let hp = host_port(w, t, at, "uri", &["udp"]);
    let interface = w.string(t, at, "interface", false).and_then(|i| {
        if !i.is_empty() && i.len() <= 15 && i.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) {
            Some(i)
        } else {
            w.err(join(at, "interface"), format!("{} is not a network interface name", super::quote(&i)));
            None
        }
    });
    let (host, port) = hp?;
    Some(UdpEndpoint { host, port, ttl: 1, interface })
}

fn rtmp(w: &mut Walk, t: &Table, at: &str) -> Option<RtmpIngest> {
    let url = w.string(t, at, "url", true);
    let key_at = join(at, "url");
    let url = url.and_then(|s| match parse_uri(&s, &["rtmp", "rtmps"]) {
        Err(e) => {
            w.err(&key_at, e);
            None
        }
        Ok((_, u)) if u.path.is_empty() || u.has_query => {
            w.err(&key_at, format!("{} needs an application path (rtmp://host/app) and no query", super::quote(&s)));
            None
        }
        Ok(_) => Some(s.trim_end_matches('/').to_owned()),
    });
    let stream_key = secret(
        w,
        t,
        at,
        "stream_key",
        |k| !k.is_empty() && k.len() <= 256 && !k.chars().any(|c| c.is_whitespace() || c.is_control()),
        "must be 1 to 256 characters without spaces",
    );
    Some(RtmpIngest { url: url?, stream_key })
}

fn file_path(w: &mut Walk, t: &Table, at: &str) -> Option<PathBuf> {
    let p = w.string(t, at, "path", true)?;
    if p.is_empty() || p.contains('\0') {
        w.err(join(at, "path"), "must be a non-empty path");
        return None;
    }
    Some(PathBuf::from(p))
}

/// Two legs that would bind or send to the same UDP port on one host (SRT,
/// UDP, and RIST's port and port + 1) are a typing error, not a plan.
fn udp_port_collisions(w: &mut Walk, channels: &[Channel]) {
    for (i, c) in channels.iter().enumerate() {
        if let Some(why) = port_clash(c, &channels[..i]) {
            w.err(format!("channels[{i}].ingest.uri"), why);
        }
    }
}

/// The UDP ports a leg sends to, by host (RIST uses its port and the next).
fn udp_ports(c: &Channel) -> Vec<(String, u16)> {
    match &c.ingest {
        Ingest::Srt(s) => vec![(s.host.bare(), s.port)],
        Ingest::Udp(u) => vec![(u.host.bare(), u.port)],
        Ingest::Rist(r) => vec![(r.host.bare(), r.port), (r.host.bare(), r.port.saturating_add(1))],
        _ => vec![],
    }
}

/// Why channel `c` cannot sit beside `others`: a UDP host and port one of
/// them already sends to. The same check a config file gets across its
/// channels, for a channel created or changed through the API.
pub fn port_clash(c: &Channel, others: &[Channel]) -> Option<String> {
    let mine = udp_ports(c);
    others.iter().filter(|o| o.id != c.id).find_map(|o| {
        let theirs = udp_ports(o);
        mine.iter().find(|p| theirs.contains(p)).map(|(host, port)| {
            format!("{host}:{port} is already used by channel `{}` (RIST uses its port and the next one)", o.id)
        })
    })
}
