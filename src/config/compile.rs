//! Raw configuration ([`super::raw`]) to domain types ([`super::types`]),
//! in one pass that collects every problem with the key it concerns, so
//! an operator fixes a file once. No clock, and no I/O but the secret
//! files (`passphrase_file`, `stream_key_file`, a webhook's
//! `secret_file`), read as what holds them is built; the slate's image
//! and a file source are checked apart ([`super::files`]).
//!
//! The same function compiles a file's channel, a stored channel and an
//! API request's, so all three accept and refuse exactly the same things.

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;

use super::raw::{self, Part, RawChannel, RawConfig, RawIngest, RawSource, join};
use super::types::*;
use super::uri::{parse_duration, parse_uri};
use super::{FieldError, MAX_NAME_CHARS, quote};
use crate::media::es::{AudioCodec, VideoCodec};

/// Collects problems as the raw values are compiled.
struct Problems {
    errors: Vec<FieldError>,
    /// Secret files that cannot be read are a problem of their leg, not
    /// an error (a configuration already accepted, read back).
    lenient_files: bool,
}

impl Problems {
    fn new(lenient_files: bool) -> Self {
        Self { errors: Vec::new(), lenient_files }
    }

    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError { key: key.into(), message: message.into() });
    }

    /// A table read on its own: its value, or its shape problem noted.
    fn part<T>(&mut self, part: Part<T>, at: &str) -> Option<T> {
        part.read(at).map_err(|e| self.errors.extend(e)).ok()
    }

    /// `value` within `range`; `None` (and a problem) outside it.
    fn int(&mut self, value: Option<i64>, key: &str, range: (i64, i64)) -> Option<i64> {
        let n = value?;
        if (range.0..=range.1).contains(&n) {
            Some(n)
        } else {
            self.err(key, format!("{n} is out of range {}..={}", range.0, range.1));
            None
        }
    }

    /// A positive duration; `default` when absent or wrong.
    fn duration(&mut self, value: Option<&str>, key: &str, default: Duration) -> Duration {
        match value.map(parse_duration) {
            None => default,
            Some(Ok(d)) if d > Duration::ZERO => d,
            Some(Ok(_)) => {
                self.err(key, "must be greater than zero");
                default
            }
            Some(Err(e)) => {
                self.err(key, e);
                default
            }
        }
    }

    fn timezone(&mut self, value: &str, key: &str) -> Option<Tz> {
        Tz::from_str(value)
            .map_err(|_| self.err(key, format!("{} is not an IANA time zone (for example Asia/Almaty)", quote(value))))
            .ok()
    }
}

/// Compiles a whole configuration.
pub fn config(raw: RawConfig) -> Result<Config, Vec<FieldError>> {
    let mut p = Problems::new(false);
    let event = match raw.event {
        Some(e) => p.part(e, "event").and_then(|e| event(&mut p, e)),
        None => {
            p.err("event", "missing");
            None
        }
    };
    let backup = raw.backup.map(|b| p.part(b, "backup").and_then(|b| source(&mut p, b, "backup")));
    let source = match raw.source {
        Some(s) => p.part(s, "source").and_then(|s| source(&mut p, s, "source")),
        None => Some(Source::Test(TestSource::default())),
    };
    let failover = raw
        .failover
        .and_then(|f| p.part(f, "failover"))
        .map_or_else(FailoverSettings::default, |f| failover(&mut p, f));
    if let (Some(primary), Some(Some(backup))) = (&source, &backup)
        && let Some(why) = same_input(primary, backup)
    {
        p.err("backup", why);
    }
    let relay = raw.relay.and_then(|r| p.part(r, "relay")).map_or_else(RelaySettings::default, |r| relay(&mut p, r));
    // Passthrough by default for a real contribution; the test source
    // keeps the transcoding path unless told otherwise.
    let default_mode = match &source {
        Some(Source::Test(_)) | None => ProgramMode::Transcode,
        Some(_) => ProgramMode::Passthrough,
    };
    let program = match raw.program.and_then(|r| p.part(r, "program")) {
        Some(r) => program(&mut p, r, default_mode),
        None => ProgramFormat { mode: default_mode, ..ProgramFormat::default() },
    };
    let slate = raw.slate.and_then(|s| p.part(s, "slate")).map_or_else(SlateSettings::default, |s| slate(&mut p, s));
    let alerts =
        raw.alerts.and_then(|a| p.part(a, "alerts")).map_or_else(AlertSettings::default, |a| alerts(&mut p, a));

    let mut channels = Vec::new();
    let mut seen = HashSet::new();
    for (i, item) in raw.channels.into_iter().enumerate() {
        let at = format!("channels[{i}]");
        let Some(c) = p.part(item, &at).and_then(|c| channel_into(&mut p, c, &at)) else { continue };
        if !seen.insert(c.id.clone()) {
            p.err(join(&at, "id"), format!("`{}` is used by an earlier channel", c.id));
        }
        channels.push(c);
    }
    udp_port_collisions(&mut p, &channels);
    for (i, c) in channels.iter().enumerate() {
        if let Some(why) = backup_clash(c) {
            p.err(format!("channels[{i}].ingest_backup"), why);
        }
        if let Some(why) = program.refuses(c) {
            p.err(format!("channels[{i}].ingest"), why);
        }
    }

    // A [backup] that did not compile left its problems in `p.errors`.
    match (event, source, p.errors.is_empty()) {
        (Some(event), Some(source), true) => {
            Ok(Config { event, source, backup: backup.flatten(), failover, program, slate, relay, alerts, channels })
        }
        _ => Err(p.errors),
    }
}

/// Compiles one channel (a file's, a stored one, or an API request's);
/// keys are reported under `at`. With `lenient_files`, a secret file that
/// cannot be read is kept as its leg's problem (see
/// [`Secret::from_file_or_problem`]).
pub fn channel(raw: RawChannel, at: &str, lenient_files: bool) -> Result<Channel, Vec<FieldError>> {
    let mut p = Problems::new(lenient_files);
    let c = channel_into(&mut p, raw, at);
    if let Some(c) = &c {
        udp_port_collisions(&mut p, std::slice::from_ref(c));
        if let Some(why) = backup_clash(c) {
            p.err(join(at, "ingest_backup"), why);
        }
    }
    match c {
        Some(c) if p.errors.is_empty() => Ok(c),
        _ => Err(p.errors),
    }
}

fn event(p: &mut Problems, raw: raw::RawEvent) -> Option<EventPlan> {
    if raw.title.trim().is_empty() {
        p.err("event.title", "must not be empty");
    }
    let timezone = match &raw.timezone {
        None => Some(Tz::UTC),
        Some(z) => p.timezone(z, "event.timezone"),
    };
    let duration = p.duration(raw.duration.as_deref(), "event.duration", Duration::from_secs(3 * 3600));
    Some(EventPlan { title: raw.title, timezone: timezone?, duration })
}

fn relay(p: &mut Problems, raw: raw::RawRelay) -> RelaySettings {
    let d = RelaySettings::default();
    let r = RelaySettings {
        leg_buffer: p.duration(raw.leg_buffer.as_deref(), "relay.leg_buffer", d.leg_buffer),
        reconnect_initial: p.duration(raw.reconnect_initial.as_deref(), "relay.reconnect_initial", d.reconnect_initial),
        reconnect_max: p.duration(raw.reconnect_max.as_deref(), "relay.reconnect_max", d.reconnect_max),
        stall_timeout: p.duration(raw.stall_timeout.as_deref(), "relay.stall_timeout", d.stall_timeout),
        connect_timeout: p.duration(raw.connect_timeout.as_deref(), "relay.connect_timeout", d.connect_timeout),
        stamp_legs: raw.stamp_legs.unwrap_or(d.stamp_legs),
        batch_wait: match raw.batch_wait.as_deref().map(parse_duration) {
            None => d.batch_wait,
            Some(Ok(v)) if v <= Duration::from_millis(50) => v,
            Some(Ok(_)) => {
                p.err("relay.batch_wait", "must be at most 50ms: it adds to every leg's latency");
                d.batch_wait
            }
            Some(Err(e)) => {
                p.err("relay.batch_wait", e);
                d.batch_wait
            }
        },
    };
    if r.reconnect_initial > r.reconnect_max {
        p.err("relay.reconnect_initial", "must not exceed relay.reconnect_max");
    }
    r
}

/// The test source's keys that moved to `[program]`.
const MOVED_TO_PROGRAM: [&str; 6] = ["width", "height", "framerate", "video_kbps", "audio_kbps", "gop"];

fn source(p: &mut Problems, raw: RawSource, at: &str) -> Option<Source> {
    match raw {
        RawSource::Test(t) => {
            for key in t.other.keys() {
                if MOVED_TO_PROGRAM.contains(&key.as_str()) {
                    p.err(
                        join(at, key),
                        "the picture and bitrates moved to the [program] section (they apply to every source)",
                    );
                } else {
                    p.err(join(at, key), "unknown field; expected `type` or `tone_hz`");
                }
            }
            let d = TestSource::default();
            let tone_hz = p.int(t.tone_hz, &join(at, "tone_hz"), (20, 20_000)).map_or(d.tone_hz, |v| v as u32);
            Some(Source::Test(TestSource { tone_hz }))
        }
        RawSource::Srt(s) => srt_endpoint(p, s, at, SrtMode::Listener).map(Source::Srt),
        RawSource::Udp(u) => {
            if u.ttl.is_some() {
                p.err(join(at, "ttl"), "a TTL is a sender's: it applies to a channel's UDP ingest, not to a source");
            }
            udp_endpoint(p, u, at).map(Source::Udp)
        }
        // Whether it can be read is the file check's (`super::files`).
        RawSource::File(f) => file_path(p, &f.path, at).map(Source::File),
    }
}

fn failover(p: &mut Problems, raw: raw::RawFailover) -> FailoverSettings {
    let d = FailoverSettings::default();
    let f = FailoverSettings {
        detect_after: p.duration(raw.detect_after.as_deref(), "failover.detect_after", d.detect_after),
        return_after: p.duration(raw.return_after.as_deref(), "failover.return_after", d.return_after),
    };
    if f.detect_after < Duration::from_millis(100) {
        p.err(
            "failover.detect_after",
            "must be at least 100ms: a live feed's pictures arrive up to a frame or two late",
        );
    }
    f
}

/// The shortest webhook secret: an HMAC key an attacker cannot guess.
const MIN_WEBHOOK_SECRET_CHARS: usize = 16;

fn alerts(p: &mut Problems, raw: raw::RawAlerts) -> AlertSettings {
    let d = AlertSettings::default();
    let mut a = AlertSettings {
        webhooks: Vec::new(),
        page_within: p.duration(raw.page_within.as_deref(), "alerts.page_within", d.page_within),
        not_on_air_before: p.duration(
            raw.not_on_air_before.as_deref(),
            "alerts.not_on_air_before",
            d.not_on_air_before,
        ),
    };
    for (i, item) in raw.webhooks.into_iter().enumerate() {
        let at = format!("alerts.webhooks[{i}]");
        let Some(hook) = p.part(item, &at).and_then(|h| webhook(p, h, &at)) else { continue };
        if a.webhooks.iter().any(|o| o.name == hook.name) {
            p.err(join(&at, "name"), format!("`{}` is used by an earlier webhook", hook.name));
        }
        a.webhooks.push(hook);
    }
    a
}

fn webhook(p: &mut Problems, raw: raw::RawWebhook, at: &str) -> Option<Webhook> {
    let n = &raw.name;
    let named = !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !named {
        p.err(join(at, "name"), "1 to 64 characters among a-z, A-Z, 0-9, `-`, `_` and `.`");
    }
    let url = match raw.url.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some_and(|h| !h.is_empty()) => {
            Some(uri)
        }
        Ok(_) => {
            p.err(join(at, "url"), format!("{} is not an http:// or https:// URL with a host", quote(&raw.url)));
            None
        }
        Err(e) => {
            p.err(join(at, "url"), format!("{} is not a URL: {e}", quote(&raw.url)));
            None
        }
    };
    let rule = format!("must be at least {MIN_WEBHOOK_SECRET_CHARS} characters (the HMAC-SHA256 key of the signature)");
    let given = raw.secret.is_some() || raw.secret_file.is_some();
    let ok = |s: &str| s.chars().count() >= MIN_WEBHOOK_SECRET_CHARS;
    let secret = secret(p, (raw.secret, raw.secret_file), at, "secret", ok, &rule);
    if !given {
        p.err(join(at, "secret"), "missing: every alert is signed (give secret or secret_file)");
    }
    Some(Webhook { name: named.then_some(raw.name)?, url: url?, secret: secret? })
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

fn program(p: &mut Problems, raw: raw::RawProgram, default_mode: ProgramMode) -> ProgramFormat {
    let d = ProgramFormat::default();
    let mode = match raw.mode.as_deref() {
        None => default_mode,
        Some("passthrough") => ProgramMode::Passthrough,
        Some("transcode") => ProgramMode::Transcode,
        Some(other) => {
            p.err("program.mode", format!("{} is not a program mode; expected passthrough or transcode", quote(other)));
            default_mode
        }
    };
    let video_codec = match raw.video_codec.as_deref() {
        None => d.video_codec,
        Some(s) => VideoCodec::parse(s).unwrap_or_else(|| {
            let known: Vec<&str> = VideoCodec::ALL.iter().map(|c| c.as_str()).collect();
            p.err(
                "program.video_codec",
                format!("{} is not a video codec passthrough carries; expected one of: {}", quote(s), known.join(", ")),
            );
            d.video_codec
        }),
    };
    if mode == ProgramMode::Transcode && video_codec != VideoCodec::H264 {
        p.err("program.video_codec", "transcode mode encodes H.264 only; video_codec applies to passthrough");
    }
    let audio = match raw.audio {
        None => d.audio.clone(),
        Some(items) if (1..=16).contains(&items.len()) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let at = format!("program.audio[{i}]");
                let track = p.part(item, &at)?;
                PlannedTrack::parse(&track).map_err(|e| p.err(at, e)).ok()
            })
            .collect(),
        Some(_) => {
            p.err("program.audio", "list 1 to 16 tracks, e.g. [\"aac:kaz\", \"aac:rus\", \"ac3:eng\"]");
            d.audio.clone()
        }
    };
    if mode == ProgramMode::Transcode {
        // Each planned track is decoded from the contribution's AAC and
        // encoded again as AAC under its language.
        for (i, track) in audio.iter().enumerate().filter(|(_, t)| t.codec != AudioCodec::Aac) {
            p.err(
                format!("program.audio[{i}]"),
                format!(
                    "transcode mode decodes and encodes AAC tracks only, not {}; relay it with mode = \"passthrough\"",
                    track.codec.as_str()
                ),
            );
        }
    }
    let scte35 = raw.scte35.unwrap_or(d.scte35);
    if mode == ProgramMode::Transcode && scte35 {
        p.err(
            "program.scte35",
            "transcode mode does not carry the contribution's SCTE-35 cues; scte35 applies to passthrough",
        );
    }
    if mode == ProgramMode::Transcode && raw.keyframe_bridge.is_some() {
        p.err(
            "program.keyframe_bridge",
            "transcode mode lands T0 on its own picture anyway; keyframe_bridge applies to passthrough",
        );
    }
    let keyframe_bridge = raw.keyframe_bridge.unwrap_or(d.keyframe_bridge);
    let mut get = |v: Option<i64>, key: &str, range, default: u32| {
        p.int(v, &join("program", key), range).map_or(default, |v| v as u32)
    };
    let f = ProgramFormat {
        mode,
        video_codec,
        audio,
        scte35,
        keyframe_bridge,
        width: get(raw.width, "width", (64, 3840), d.width),
        height: get(raw.height, "height", (64, 2160), d.height),
        framerate: get(raw.framerate, "framerate", (1, 60), d.framerate),
        video_kbps: get(raw.video_kbps, "video_kbps", (100, 50_000), d.video_kbps),
        audio_kbps: get(raw.audio_kbps, "audio_kbps", (32, 320), d.audio_kbps),
        gop: get(raw.gop, "gop", (1, 600), d.gop),
    };
    if !f.width.is_multiple_of(2) || !f.height.is_multiple_of(2) {
        p.err("program.width", "width and height must be even for H.264 4:2:0");
    }
    f
}

fn slate(p: &mut Problems, raw: raw::RawSlate) -> SlateSettings {
    // Whether it can be read is the file check's (`super::files`).
    let image = raw.image.and_then(|s| {
        if s.to_ascii_lowercase().ends_with(".png") {
            Some(PathBuf::from(s))
        } else {
            p.err("slate.image", format!("{} is not a PNG file", quote(&s)));
            None
        }
    });
    let tone_hz = p.int(raw.tone_hz, "slate.tone_hz", (0, 20_000)).and_then(|v| (v > 0).then_some(v as u32));
    SlateSettings { image, text: raw.text, tone_hz }
}

fn channel_into(p: &mut Problems, raw: RawChannel, at: &str) -> Option<Channel> {
    let id = ChannelId::parse(&raw.id).map_err(|e| p.err(join(at, "id"), e)).ok();
    let name = &raw.name;
    if name.trim().is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        p.err(join(at, "name"), format!("1 to {MAX_NAME_CHARS} characters, no control characters"));
    }
    let country = if raw.country.len() == 2 && raw.country.bytes().all(|b| b.is_ascii_alphabetic()) {
        Some(raw.country.to_ascii_uppercase())
    } else {
        p.err(
            join(at, "country"),
            format!("{} is not an ISO 3166-1 alpha-2 code (two letters, e.g. KZ)", quote(&raw.country)),
        );
        None
    };
    let timezone = p.timezone(&raw.timezone, &join(at, "timezone"));
    let air_policy = match &raw.air_policy {
        None | Some(raw::RawAirPolicy::Live) => Some(AirPolicy::Live),
        Some(raw::RawAirPolicy::LocalTime { at: time }) => {
            match NaiveTime::parse_from_str(time, "%H:%M").or_else(|_| NaiveTime::parse_from_str(time, "%H:%M:%S")) {
                Ok(t) => Some(AirPolicy::LocalTime(t)),
                Err(_) => {
                    p.err(
                        join(at, "air_policy.at"),
                        format!("{} is not a time of day as HH:MM (or HH:MM:SS)", quote(time)),
                    );
                    None
                }
            }
        }
    };
    let main = ingest(p, raw.ingest.clone(), &join(at, "ingest"));
    let backup = match raw.ingest_backup.clone() {
        Some(b) => match ingest(p, b, &join(at, "ingest_backup")) {
            Some(b) if main.as_ref().is_some_and(|m| m.target() == b.target() && m.protocol() == b.protocol()) => {
                p.err(join(at, "ingest_backup"), "is the main ingest again: a backup path needs another ingest");
                None
            }
            Some(Ingest::File(_)) => {
                p.err(join(at, "ingest_backup"), "a file is not a partner's backup ingest (srt, rtmp, udp or rist)");
                None
            }
            Some(b) => Some(Some(b)),
            None => None,
        },
        None => Some(None),
    };
    let audio = languages(p, &raw.audio, &join(at, "audio"));
    let (id, country, timezone, air_policy, ingest, ingest_backup) =
        (id?, country?, timezone?, air_policy?, main?, backup?);
    // Kept as written but for what compiling normalizes (the country's
    // case, the languages'), so that it compiles again to this channel.
    let spec = RawChannel { country: country.clone(), audio: audio.clone(), ..raw };
    Some(Channel {
        id,
        name: spec.name.clone(),
        country,
        timezone,
        ingest,
        ingest_backup,
        air_policy,
        enabled: spec.enabled.unwrap_or(true),
        audio,
        spec,
    })
}

/// A list of ISO 639-2 codes (three letters, kept lower case, each once).
fn languages(p: &mut Problems, items: &[String], at: &str) -> Vec<String> {
    if items.len() > 16 {
        p.err(at, format!("{} languages; at most 16", items.len()));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for (i, s) in items.iter().enumerate() {
        let key = format!("{at}[{i}]");
        if s.len() != 3 || !s.bytes().all(|b| b.is_ascii_alphabetic()) {
            p.err(key, format!("{} is not an ISO 639-2 code (three letters, e.g. kaz)", quote(s)));
            continue;
        }
        let l = s.to_ascii_lowercase();
        if out.contains(&l) {
            p.err(key, format!("`{l}` is listed twice"));
        } else {
            out.push(l);
        }
    }
    out
}

fn ingest(p: &mut Problems, raw: RawIngest, at: &str) -> Option<Ingest> {
    match raw {
        RawIngest::Srt(s) => srt_endpoint(p, s, at, SrtMode::Caller).map(Ingest::Srt),
        RawIngest::Rtmp(r) => rtmp(p, r, at).map(Ingest::Rtmp),
        RawIngest::Udp(u) => {
            let ttl = p.int(u.ttl, &join(at, "ttl"), (1, 255)).map_or(1, |v| v as u8);
            udp_endpoint(p, u, at).map(|e| Ingest::Udp(UdpEndpoint { ttl, ..e }))
        }
        RawIngest::Rist(r) => {
            let (host, port) = host_port(p, &r.uri, &join(at, "uri"), &["rist"])?;
            if port % 2 != 0 {
                p.err(join(at, "uri"), format!("RIST port {port} must be even (RTCP uses port + 1)"));
                return None;
            }
            Some(Ingest::Rist(RistIngest { host, port }))
        }
        RawIngest::File(f) => file_path(p, &f.path, at).map(Ingest::File),
    }
}

/// `uri` of the given schemes, with a required port and nothing else.
fn host_port(p: &mut Problems, uri: &str, key: &str, schemes: &[&str]) -> Option<(Host, u16)> {
    match parse_uri(uri, schemes) {
        Err(e) => p.err(key, e),
        Ok((_, u)) if u.port.is_none() => p.err(key, format!("{} has no port", quote(uri))),
        Ok((_, u)) if u.has_query || !u.path.is_empty() => {
            p.err(key, format!("{}: options go in their own keys, not in the URI", quote(uri)))
        }
        Ok((_, u)) => return Some((u.host, u.port.unwrap_or_default())),
    }
    None
}

/// A secret given inline as `key`, or in a file as `key_file` (`given`
/// holds both as written); `ok` is the rule its value must follow, `rule`
/// says it. A value is never echoed, not even a wrong one.
fn secret(
    p: &mut Problems,
    given: (Option<raw::SecretText>, Option<String>),
    at: &str,
    key: &str,
    ok: impl Fn(&str) -> bool,
    rule: &str,
) -> Option<Secret> {
    let file_key = format!("{key}_file");
    match given {
        (Some(_), Some(_)) => {
            p.err(join(at, &file_key), format!("give {key} or {file_key}, not both"));
            None
        }
        (Some(v), None) if ok(&v.0) => Some(Secret::new(v.0)),
        (Some(_), None) => {
            p.err(join(at, key), rule);
            None
        }
        (None, Some(spec)) if p.lenient_files => Some(Secret::from_file_or_problem(&spec)),
        (None, Some(spec)) => match Secret::from_file(&spec) {
            Ok(s) if ok(s.expose()) => Some(s),
            Ok(_) => {
                p.err(join(at, &file_key), format!("what {} holds {rule}", quote(&spec)));
                None
            }
            Err(why) => {
                p.err(join(at, &file_key), why);
                None
            }
        },
        (None, None) => None,
    }
}

fn srt_endpoint(p: &mut Problems, raw: raw::RawSrt, at: &str, default_mode: SrtMode) -> Option<SrtEndpoint> {
    let hp = host_port(p, &raw.uri, &join(at, "uri"), &["srt"]);
    let mode = match raw.mode.as_deref() {
        None => Some(default_mode),
        Some("caller") => Some(SrtMode::Caller),
        Some("listener") => Some(SrtMode::Listener),
        Some(other) => {
            p.err(join(at, "mode"), format!("{} is not caller or listener", quote(other)));
            None
        }
    };
    let latency = p.duration(raw.latency.as_deref(), &join(at, "latency"), DEFAULT_SRT_LATENCY);
    let length = |s: &str| (10..=79).contains(&s.chars().count());
    let passphrase =
        secret(p, (raw.passphrase, raw.passphrase_file), at, "passphrase", length, "must be 10 to 79 characters long");
    let stream_id = raw.stream_id.and_then(|s| {
        if s.len() <= 512 && !s.chars().any(char::is_control) {
            Some(s)
        } else {
            p.err(join(at, "stream_id"), "must be at most 512 printable characters");
            None
        }
    });
    let (host, port) = hp?;
    Some(SrtEndpoint { host, port, mode: mode?, latency, passphrase, stream_id })
}

fn udp_endpoint(p: &mut Problems, raw: raw::RawUdp, at: &str) -> Option<UdpEndpoint> {
    let hp = host_port(p, &raw.uri, &join(at, "uri"), &["udp"]);
    let interface = raw.interface.and_then(|i| {
        if !i.is_empty() && i.len() <= 15 && i.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) {
            Some(i)
        } else {
            p.err(join(at, "interface"), format!("{} is not a network interface name", quote(&i)));
            None
        }
    });
    let (host, port) = hp?;
    Some(UdpEndpoint { host, port, ttl: 1, interface })
}

fn rtmp(p: &mut Problems, raw: raw::RawRtmp, at: &str) -> Option<RtmpIngest> {
    let key = join(at, "url");
    let url = match parse_uri(&raw.url, &["rtmp", "rtmps"]) {
        Err(e) => {
            p.err(&key, e);
            None
        }
        Ok((_, u)) if u.path.is_empty() || u.has_query => {
            p.err(&key, format!("{} needs an application path (rtmp://host/app) and no query", quote(&raw.url)));
            None
        }
        Ok(_) => Some(raw.url.trim_end_matches('/').to_owned()),
    };
    let ok = |k: &str| !k.is_empty() && k.len() <= 256 && !k.chars().any(|c| c.is_whitespace() || c.is_control());
    let given = (raw.stream_key, raw.stream_key_file);
    let stream_key = secret(p, given, at, "stream_key", ok, "must be 1 to 256 characters without spaces");
    Some(RtmpIngest { url: url?, stream_key })
}

fn file_path(p: &mut Problems, path: &str, at: &str) -> Option<PathBuf> {
    if path.is_empty() || path.contains('\0') {
        p.err(join(at, "path"), "must be a non-empty path");
        return None;
    }
    Some(PathBuf::from(path))
}

/// Two legs that would bind or send to the same UDP port on one host (SRT,
/// UDP, and RIST's port and port + 1) are a typing error, not a plan.
fn udp_port_collisions(p: &mut Problems, channels: &[Channel]) {
    for (i, c) in channels.iter().enumerate() {
        if let Some(why) = port_clash(c, &channels[..i]) {
            p.err(format!("channels[{i}].ingest.uri"), why);
        }
    }
}

/// The UDP ports a leg sends to, by host (RIST uses its port and the next).
fn udp_ports(c: &Channel) -> Vec<(String, u16)> {
    let of = |i: &Ingest| match i {
        Ingest::Srt(s) => vec![(s.host.bare(), s.port)],
        Ingest::Udp(u) => vec![(u.host.bare(), u.port)],
        Ingest::Rist(r) => vec![(r.host.bare(), r.port), (r.host.bare(), r.port.saturating_add(1))],
        _ => vec![],
    };
    let mut ports = of(&c.ingest);
    ports.extend(c.ingest_backup.iter().flat_map(of));
    ports
}

/// Why `c`'s backup ingest cannot sit beside its main one: the same UDP
/// host and port.
fn backup_clash(c: &Channel) -> Option<String> {
    let backup = c.ingest_backup.as_ref()?;
    let main = Channel { ingest_backup: None, ..c.clone() };
    let other = Channel { ingest: backup.clone(), ingest_backup: None, ..c.clone() };
    let (mine, theirs) = (udp_ports(&main), udp_ports(&other));
    mine.iter().find(|p| theirs.contains(p)).map(|(host, port)| format!("{host}:{port} is the main ingest's port too"))
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
