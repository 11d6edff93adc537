//! The configuration as written: serde types with the file's own keys and
//! nothing checked but their shape. A `[[channels]]` table, a stored
//! channel and an API request are all a [`RawChannel`]; `config::compile`
//! turns raw values into the domain types of `types.rs`, collecting every
//! problem with its key.
//!
//! Each table is read on its own ([`Part`]): a shape error (an unknown
//! key, a value of the wrong type, a required key missing) refuses that
//! table only, with its path, and every other table, channel and webhook
//! is still read and checked in the same pass.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::{FieldError, MAX_STRING_CHARS};

/// A secret as written (an SRT passphrase, an RTMP stream key, a webhook
/// key): serialized as it is, for the store, but never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One table of a document, read on its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Part<T> {
    /// It has the expected shape.
    Read(T),
    /// It does not: every string too long, or else the first problem
    /// serde met, with its path inside the table (`ingest.uri`, empty for
    /// the table itself).
    Refused(Vec<FieldError>),
}

impl<T: DeserializeOwned> Part<T> {
    /// Reads `value` as a `T`. A string longer than [`MAX_STRING_CHARS`]
    /// anywhere in it is refused first, naming its key: an error never
    /// quotes a hostile input whole.
    pub fn from_value(value: toml::Value) -> Self {
        let mut long = Vec::new();
        too_long(&value, String::new(), &mut long);
        if !long.is_empty() {
            return Part::Refused(long);
        }
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Part::Read(t),
            Err(e) => Part::Refused(vec![refusal(&e)]),
        }
    }
}

impl<T> Part<T> {
    /// The value, or its problems with their keys under `at`.
    pub fn read(self, at: &str) -> Result<T, Vec<FieldError>> {
        match self {
            Part::Read(t) => Ok(t),
            Part::Refused(errors) => {
                Err(errors.into_iter().map(|e| FieldError { key: join(at, &e.key), message: e.message }).collect())
            }
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Part<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        toml::Value::deserialize(d).map(Part::from_value)
    }
}

/// `at.key`, or either alone when the other is empty.
pub(super) fn join(at: &str, key: &str) -> String {
    match (at.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => at.to_owned(),
        _ if key.starts_with('[') => format!("{at}{key}"),
        _ => format!("{at}.{key}"),
    }
}

/// A serde error as a problem, keyed by its path.
fn refusal(e: &serde_path_to_error::Error<toml::de::Error>) -> FieldError {
    let path = e.path().to_string();
    let key = if path == "." || path == "?" { String::new() } else { path };
    FieldError { key, message: message(e.inner()) }
}

/// serde's message, on one line and without the TOML crate's preamble.
fn message(e: &toml::de::Error) -> String {
    let text = e.message().trim().replace('\n', " ");
    text.trim_start_matches("TOML parse error: ").to_owned()
}

/// Every string in `v` longer than [`MAX_STRING_CHARS`], by key.
fn too_long(v: &toml::Value, at: String, found: &mut Vec<FieldError>) {
    match v {
        toml::Value::String(s) => {
            let n = s.chars().count();
            if n > MAX_STRING_CHARS {
                found.push(FieldError { key: at, message: format!("{n} characters long; at most {MAX_STRING_CHARS}") });
            }
        }
        toml::Value::Array(items) => {
            items.iter().enumerate().for_each(|(i, v)| too_long(v, format!("{at}[{i}]"), found))
        }
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| too_long(v, join(&at, k), found)),
        _ => {}
    }
}

/// A whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[event]`, required.
    pub event: Option<Part<RawEvent>>,
    /// `[source]`; the test source when absent.
    pub source: Option<Part<RawSource>>,
    /// `[backup]`.
    pub backup: Option<Part<RawSource>>,
    /// `[failover]`.
    pub failover: Option<Part<RawFailover>>,
    /// `[program]`.
    pub program: Option<Part<RawProgram>>,
    /// `[slate]`.
    pub slate: Option<Part<RawSlate>>,
    /// `[relay]`.
    pub relay: Option<Part<RawRelay>>,
    /// `[alerts]`.
    pub alerts: Option<Part<RawAlerts>>,
    /// `[[channels]]`, each read on its own.
    #[serde(default)]
    pub channels: Vec<Part<RawChannel>>,
}

impl RawConfig {
    /// Reads a parsed document's shape. Only the top level can refuse it
    /// whole (an unknown section, `channels` not an array of tables);
    /// each section, channel and webhook is read on its own.
    pub fn from_table(doc: toml::Table) -> Result<Self, FieldError> {
        serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| refusal(&e))
    }
}

/// `[event]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvent {
    /// Title.
    pub title: String,
    /// IANA zone; UTC when absent.
    pub timezone: Option<String>,
    /// `3h`.
    pub duration: Option<String>,
}

/// `[source]` and `[backup]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawSource {
    /// Built-in bars and tone.
    Test(RawTestSource),
    /// An SRT listener (or caller).
    Srt(RawSrt),
    /// UDP MPEG-TS.
    Udp(RawUdp),
    /// A looped MPEG-TS file.
    File(RawFile),
}

/// `type = "test"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RawTestSource {
    /// Tone in Hz.
    pub tone_hz: Option<i64>,
    /// Any other key: refused by the compile step, which says where the
    /// picture and bitrate keys moved (`[program]`).
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, toml::Value>,
}

/// An SRT endpoint: a source or an ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSrt {
    /// `srt://host:port`.
    pub uri: String,
    /// `caller` or `listener`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `120ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Inline passphrase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<SecretText>,
    /// A file holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<String>,
    /// SRT stream id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
}

/// A UDP endpoint: a source or an ingest (only an ingest has a TTL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUdp {
    /// `udp://host:port`.
    pub uri: String,
    /// Multicast TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// Network interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// A file path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// The path.
    pub path: String,
}

/// `[failover]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    /// `500ms`.
    pub detect_after: Option<String>,
    /// `5s`.
    pub return_after: Option<String>,
}

/// `[program]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProgram {
    /// `passthrough` or `transcode`.
    pub mode: Option<String>,
    /// `h264`, `hevc`, ...
    pub video_codec: Option<String>,
    /// `["aac:kaz", "ac3:eng"]`, each read on its own.
    pub audio: Option<Vec<Part<String>>>,
    /// Carry the contribution's SCTE-35.
    pub scte35: Option<bool>,
    /// Bridge T0 to the contribution's next keyframe.
    pub keyframe_bridge: Option<bool>,
    /// Picture width.
    pub width: Option<i64>,
    /// Picture height.
    pub height: Option<i64>,
    /// Frames per second.
    pub framerate: Option<i64>,
    /// Video bitrate.
    pub video_kbps: Option<i64>,
    /// Audio bitrate.
    pub audio_kbps: Option<i64>,
    /// Frames per GOP.
    pub gop: Option<i64>,
}

/// `[slate]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlate {
    /// A PNG file.
    pub image: Option<String>,
    /// A line under the title.
    pub text: Option<String>,
    /// A tone; 0: silence.
    pub tone_hz: Option<i64>,
}

/// `[relay]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelay {
    /// Each leg's input buffer.
    pub leg_buffer: Option<String>,
    /// First reconnect delay.
    pub reconnect_initial: Option<String>,
    /// Reconnect delay cap.
    pub reconnect_max: Option<String>,
    /// No bytes for this long: rebuild.
    pub stall_timeout: Option<String>,
    /// Connecting for this long: rebuild.
    pub connect_timeout: Option<String>,
    /// Longest a chunk waits to be batched.
    pub batch_wait: Option<String>,
    /// Legs name their channel in-band.
    pub stamp_legs: Option<bool>,
}

/// `[alerts]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Trouble this close to air is a page.
    pub page_within: Option<String>,
    /// Not on air this long before air time: alert.
    pub not_on_air_before: Option<String>,
    /// `[[alerts.webhooks]]`, each read on its own.
    #[serde(default)]
    pub webhooks: Vec<Part<RawWebhook>>,
}

/// `[[alerts.webhooks]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Its name.
    pub name: String,
    /// `https://...`.
    pub url: String,
    /// Inline HMAC key.
    pub secret: Option<SecretText>,
    /// A file holding it.
    pub secret_file: Option<String>,
}

/// A partner channel as written: a `[[channels]]` table, a stored
/// channel, an API request. Serialized (secrets included, a file's name
/// rather than its contents) it is what the store keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChannel {
    /// Unique id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// IANA zone.
    pub timezone: String,
    /// Enabled unless false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The programme's audio languages this leg carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audio: Vec<String>,
    /// Live, or delayed to a local time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub air_policy: Option<RawAirPolicy>,
    /// Where the leg sends.
    pub ingest: RawIngest,
    /// The partner's backup ingest: a second leg carries the same
    /// programme there (in cluster mode, from another node than the main).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_backup: Option<RawIngest>,
}

/// A channel's `air_policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawAirPolicy {
    /// With everyone else.
    Live,
    /// From a delayed copy at this wall-clock time.
    LocalTime {
        /// `HH:MM` or `HH:MM:SS`.
        at: String,
    },
}

/// A channel's `ingest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawIngest {
    /// SRT, caller by default.
    Srt(RawSrt),
    /// RTMP push.
    Rtmp(RawRtmp),
    /// UDP MPEG-TS.
    Udp(RawUdp),
    /// RIST simple profile.
    Rist(RawRist),
    /// A file (tests, recordings).
    File(RawFile),
}

/// An RTMP ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRtmp {
    /// `rtmp://host/app`.
    pub url: String,
    /// Inline stream key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_key: Option<SecretText>,
    /// A file holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_key_file: Option<String>,
}

/// A RIST ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRist {
    /// `rist://host:port`, an even port.
    pub uri: String,
}

impl RawChannel {
    /// Reads a channel from TOML text, its shape checked (keys under `at`).
    pub fn from_toml(text: &str, at: &str) -> Result<Self, Vec<FieldError>> {
        let value: toml::Value = match text.parse::<toml::Table>() {
            Ok(t) => toml::Value::Table(t),
            Err(e) => {
                let message = format!("not valid TOML: {}", message(&e));
                return Err(vec![FieldError { key: at.to_owned(), message }]);
            }
        };
        Part::from_value(value).read(at)
    }

    /// Reads a channel built in memory (from an API request) exactly as
    /// a file's would be: the same length and shape checks.
    pub fn checked(self, at: &str) -> Result<Self, Vec<FieldError>> {
        match toml::Value::try_from(&self) {
            Ok(v) => Part::from_value(v).read(at),
            Err(e) => Err(vec![FieldError { key: at.to_owned(), message: e.to_string() }]),
        }
    }

    /// The TOML text the store keeps. An error only for a value TOML
    /// cannot hold; the store refuses the write rather than keep nothing.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}
