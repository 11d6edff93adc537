//! Compiled domain types: a value of these types has passed
//! [`super::compile`]. Nothing here depends on proto types; a channel
//! keeps the raw form it was compiled from ([`Channel::spec`]), which is
//! what the store writes and responses show.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveTime;
use chrono_tz::Tz;

/// Default bound of each leg's input buffer, in media time.
pub const DEFAULT_LEG_BUFFER: Duration = Duration::from_millis(500);
/// Default first reconnect delay of a leg.
pub const DEFAULT_RECONNECT_INITIAL: Duration = Duration::from_millis(250);
/// Default cap of a leg's reconnect delay: a partner whose ingest comes back
/// is flowing again within this (plus connection set-up), and a dead ingest
/// gets one attempt a second, no more.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(1);
/// Default time without a byte delivered after which a leg that was on air
/// is torn down and rebuilt (a watchdog outside GStreamer, since some sink
/// hangs in 1.22 never post an error).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Default time a leg may spend connecting before it is rebuilt.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest time the fan-out holds a chunk to batch it with the
/// next ones: the most it adds to latency.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(2);
/// Default SRT latency.
pub const DEFAULT_SRT_LATENCY: Duration = Duration::from_millis(120);

/// A channel's identifier: a slug `[a-z0-9-]{1,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(String);

impl ChannelId {
    /// Validates `s` as a channel id.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("{} is not a channel id: use 1 to 63 of a-z, 0-9 and -", super::quote(s)))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A write-only value (SRT passphrase, RTMP stream key). Its `Debug` and
/// `Display` never show the value; only [`Secret::expose`] does, and only the
/// code that hands it to a GStreamer element calls that.
///
/// A secret may come from a file (`passphrase_file`, `stream_key_file`):
/// then only the file's name is stored and written back, never the value,
/// and the file is read again each time the configuration is.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// The file it was read from, as the configuration names it.
    file: Option<String>,
    /// Why that file could not be read, when it was read leniently.
    unreadable: Option<String>,
}

/// The largest secret file read.
const SECRET_FILE_MAX: u64 = 4096;

impl Secret {
    /// Wraps a secret value; from now on log lines never show it (see
    /// [`crate::observe::redact`]).
    pub fn new(s: impl Into<String>) -> Self {
        let s = s.into();
        crate::observe::redact::remember(&s);
        Self { value: s, file: None, unreadable: None }
    }

    /// The secret held in the file `spec` names: an absolute path, or a
    /// name in `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`). One
    /// trailing line break is not part of it. A file every user may read
    /// is refused.
    pub fn from_file(spec: &str) -> Result<Self, String> {
        let path = secret_path(spec)?;
        let shown = path.display();
        let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o004 != 0 {
                return Err(format!("{shown} is readable by every user on this machine: chmod o-r it"));
            }
        }
        if !meta.is_file() || meta.len() > SECRET_FILE_MAX {
            return Err(format!("{shown} is not a file of at most {SECRET_FILE_MAX} bytes"));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let value = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
        let mut s = Self::new(value);
        s.file = Some(spec.to_owned());
        Ok(s)
    }

    /// [`Secret::from_file`] for a configuration already accepted (the
    /// store's): a file that cannot be read now is kept as a problem of
    /// its own leg, which fails naming it, rather than of every channel.
    pub fn from_file_or_problem(spec: &str) -> Self {
        Self::from_file(spec).unwrap_or_else(|why| Self {
            value: String::new(),
            file: Some(spec.to_owned()),
            unreadable: Some(why),
        })
    }

    /// The value itself, for the element property that needs it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The file it comes from, as the configuration names it.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The value, or why its file could not be read.
    pub fn usable(&self) -> Result<&str, String> {
        match &self.unreadable {
            Some(why) => Err(why.clone()),
            None => Ok(&self.value),
        }
    }
}

/// Where a secret file named `spec` is.
fn secret_path(spec: &str) -> Result<std::path::PathBuf, String> {
    let p = std::path::Path::new(spec);
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if !spec.is_empty() && !spec.contains("..") => Ok(std::path::Path::new(&dir).join(p)),
        Some(_) => Err(format!("`{spec}` is not a credential name")),
        None => Err(format!(
            "`{spec}` is relative: it names a credential in $CREDENTIALS_DIRECTORY (systemd LoadCredential=), \
             which is not set; give an absolute path"
        )),
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Host part of an ingest or source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A literal IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name (checked for valid characters only).
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

impl Host {
    /// The host as GStreamer's network elements want it (no brackets).
    pub fn bare(&self) -> String {
        match self {
            Host::Ip(a) => a.to_string(),
            Host::Name(n) => n.clone(),
        }
    }

    /// Whether the host is a multicast address.
    pub fn is_multicast(&self) -> bool {
        matches!(self, Host::Ip(a) if a.is_multicast())
    }
}

/// SRT connection mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtMode {
    /// We connect to the peer.
    Caller,
    /// We wait for the peer to connect.
    Listener,
}

impl SrtMode {
    /// The name GStreamer's srt elements use.
    pub fn as_str(self) -> &'static str {
        match self {
            SrtMode::Caller => "caller",
            SrtMode::Listener => "listener",
        }
    }
}

/// SRT endpoint settings, shared by SRT legs and SRT sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtEndpoint {
    /// Peer (caller) or local bind address (listener).
    pub host: Host,
    /// UDP port.
    pub port: u16,
    /// Caller or listener.
    pub mode: SrtMode,
    /// SRT latency.
    pub latency: Duration,
    /// Encryption passphrase (10 to 79 characters), write-only.
    pub passphrase: Option<Secret>,
    /// SRT stream id, for the peer's access control.
    pub stream_id: Option<String>,
}

impl SrtEndpoint {
    /// `srt://host:port`, without options or secrets: safe to log.
    pub fn uri(&self) -> String {
        format!("srt://{}:{}", self.host, self.port)
    }

    /// The `uri` property for GStreamer's srt elements. A listener's host
    /// goes in `localaddress` instead ([`SrtEndpoint::local_address`]):
    /// srtsrc/srtsink 1.22 in listener mode with a host in the URI refuse
    /// every caller ("Connection does not exist"), checked by hand.
    pub fn element_uri(&self) -> String {
        match self.mode {
            SrtMode::Caller => self.uri(),
            SrtMode::Listener => format!("srt://:{}", self.port),
        }
    }

    /// The `localaddress` property, for listeners.
    pub fn local_address(&self) -> Option<String> {
        (self.mode == SrtMode::Listener).then(|| self.host.bare())
    }
}

/// RTMP or RTMPS ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpIngest {
    /// `rtmp://host[:port]/app` (or `rtmps://`), without the stream key.
    pub url: String,
    /// Stream key, write-only; appended to the URL only inside the element.
    pub stream_key: Option<Secret>,
}

/// UDP MPEG-TS ingest, unicast or multicast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpEndpoint {
    /// Destination (leg) or bind/group address (source).
    pub host: Host,
    /// UDP port.
    pub port: u16,
    /// Multicast TTL (legs only; default 1: the local network).
    pub ttl: u8,
    /// Multicast interface name, if any.
    pub interface: Option<String>,
}

impl UdpEndpoint {
    /// `udp://host:port`.
    pub fn uri(&self) -> String {
        format!("udp://{}:{}", self.host, self.port)
    }
}

/// RIST (simple profile) ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RistIngest {
    /// Receiver address.
    pub host: Host,
    /// RTP port (even; RTCP is port + 1).
    pub port: u16,
}

/// A partner channel's ingest: where its leg sends the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingest {
    /// SRT caller or listener.
    Srt(SrtEndpoint),
    /// RTMP or RTMPS push (MPEG-TS remuxed to FLV).
    Rtmp(RtmpIngest),
    /// UDP MPEG-TS.
    Udp(UdpEndpoint),
    /// RIST simple profile.
    Rist(RistIngest),
    /// A file on local disk (MPEG-TS).
    File(PathBuf),
}

impl Ingest {
    /// Short protocol name for tables and logs.
    pub fn protocol(&self) -> &'static str {
        match self {
            Ingest::Srt(_) => "srt",
            Ingest::Rtmp(r) if r.url.starts_with("rtmps://") => "rtmps",
            Ingest::Rtmp(_) => "rtmp",
            Ingest::Udp(_) => "udp",
            Ingest::Rist(_) => "rist",
            Ingest::File(_) => "file",
        }
    }

    /// Where the leg goes, without any secret: safe to log and display.
    pub fn target(&self) -> String {
        match self {
            Ingest::Srt(s) => format!("{} ({})", s.uri(), s.mode.as_str()),
            Ingest::Rtmp(r) => r.url.clone(),
            Ingest::Udp(u) => u.uri(),
            Ingest::Rist(r) => format!("rist://{}:{}", r.host, r.port),
            Ingest::File(p) => p.display().to_string(),
        }
    }
}

/// When a channel airs the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AirPolicy {
    /// At the same instant as everyone else.
    Live,
    /// From a delayed copy, starting at this wall-clock time in the channel's zone.
    LocalTime(NaiveTime),
}

/// A local air time as written: `HH:MM`, or `HH:MM:SS` when it has seconds.
pub fn format_time_of_day(t: NaiveTime) -> String {
    use chrono::Timelike;
    if t.second() == 0 { t.format("%H:%M").to_string() } else { t.format("%H:%M:%S").to_string() }
}

/// A partner channel, compiled from its raw form ([`Channel::spec`]). To
/// change one, change its spec and compile it again
/// ([`super::compile_channel`]): the other fields are derived from it, and
/// the store keeps the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    /// Unique id.
    pub id: ChannelId,
    /// Display name.
    pub name: String,
    /// ISO 3166-1 alpha-2 country code, upper case.
    pub country: String,
    /// IANA time zone.
    pub timezone: Tz,
    /// Where the leg sends.
    pub ingest: Ingest,
    /// The partner's backup ingest, if any: a second leg
    /// ([`Channel::backup_leg`]) carries the programme there too.
    pub ingest_backup: Option<Ingest>,
    /// Live or delayed to a local time.
    pub air_policy: AirPolicy,
    /// Disabled channels get no leg.
    pub enabled: bool,
    /// The programme's audio tracks this leg carries, by ISO 639-2
    /// language (lower case); empty: all of them.
    pub audio: Vec<String>,
    /// The channel as written (normalized where compiling normalizes):
    /// what the store keeps and a response shows, without a second,
    /// reverse conversion that could drift from this one.
    pub spec: super::raw::RawChannel,
}

impl Channel {
    /// An update that names no secret (a client never sees one) keeps
    /// `old`'s, compiled and as written: an SRT passphrase, an RTMP key.
    pub fn keep_secrets(&mut self, old: &Channel) {
        keep_secrets(&old.ingest, &mut self.ingest, &old.spec.ingest, &mut self.spec.ingest);
        if let (Some(o), Some(n), Some(os), Some(ns)) =
            (&old.ingest_backup, &mut self.ingest_backup, &old.spec.ingest_backup, &mut self.spec.ingest_backup)
        {
            keep_secrets(o, n, os, ns);
        }
    }

    /// The leg that carries the programme to this channel's backup ingest,
    /// if it has one: the channel under the leg id `ID+backup` (no channel
    /// id has a `+`, see [`main_of`]) and the name `NAME (backup)`. Its
    /// spec stays the channel's (it compiles to the channel, not the leg).
    pub fn backup_leg(&self) -> Option<Channel> {
        let ingest = self.ingest_backup.clone()?;
        Some(Channel {
            id: ChannelId(format!("{}{BACKUP_LEG}", self.id)),
            name: format!("{} (backup)", self.name),
            ingest,
            ingest_backup: None,
            ..self.clone()
        })
    }
}

/// What a backup leg's id adds to its channel's.
pub const BACKUP_LEG: &str = "+backup";

/// The channel a leg id belongs to (a backup leg's: its channel's id).
pub fn main_of(leg_id: &str) -> &str {
    leg_id.strip_suffix(BACKUP_LEG).unwrap_or(leg_id)
}

/// The legs of `channels`: each channel's, then its backup's if it has one.
pub fn legs_of<'a>(channels: impl IntoIterator<Item = &'a Channel>) -> Vec<Channel> {
    channels.into_iter().flat_map(|c| std::iter::once(c.clone()).chain(c.backup_leg())).collect()
}

/// A secret of `old` that `new` (the same kind of ingest) does not name is kept.
fn keep_secrets(
    old: &Ingest,
    new: &mut Ingest,
    old_spec: &super::raw::RawIngest,
    new_spec: &mut super::raw::RawIngest,
) {
    use super::raw::RawIngest;
    match (old, new, old_spec, new_spec) {
        (Ingest::Srt(o), Ingest::Srt(n), RawIngest::Srt(os), RawIngest::Srt(ns)) if n.passphrase.is_none() => {
            n.passphrase = o.passphrase.clone();
            ns.passphrase = os.passphrase.clone();
            ns.passphrase_file = os.passphrase_file.clone();
        }
        (Ingest::Rtmp(o), Ingest::Rtmp(n), RawIngest::Rtmp(os), RawIngest::Rtmp(ns)) if n.stream_key.is_none() => {
            n.stream_key = o.stream_key.clone();
            ns.stream_key = os.stream_key.clone();
            ns.stream_key_file = os.stream_key_file.clone();
        }
        _ => {}
    }
}

/// The built-in test source's sound (its picture is the program's size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSource {
    /// Tone frequency in Hz.
    pub tone_hz: u32,
}

impl Default for TestSource {
    fn default() -> Self {
        Self { tone_hz: 1000 }
    }
}

/// How the program is made from the contribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgramMode {
    /// The contribution's own elementary streams, untouched, remultiplexed
    /// once; switches land on its keyframes. The default for `srt`, `udp`
    /// and `file` sources.
    Passthrough,
    /// Decoded, switched as pictures, encoded once (H.264 + AAC in the
    /// `[program]` format). The default for the `test` source.
    #[default]
    Transcode,
}

impl ProgramMode {
    /// The config and status name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramMode::Passthrough => "passthrough",
            ProgramMode::Transcode => "transcode",
        }
    }
}

/// The program's format: what every leg carries, slate and program alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramFormat {
    /// Passthrough or transcode.
    pub mode: ProgramMode,
    /// In passthrough, the contribution's video codec as expected before
    /// it arrives (the slate's until then; RTMP legs need H.264).
    pub video_codec: crate::media::es::VideoCodec,
    /// In passthrough, the contribution's audio tracks as expected before
    /// it arrives (codec and language each), so the pre-show slate already
    /// lists them and partners see no PMT change when it arrives.
    pub audio: Vec<PlannedTrack>,
    /// In passthrough, whether the contribution carries SCTE-35 cues, so
    /// the pre-show slate's PMT already lists their PID.
    pub scte35: bool,
    /// In passthrough, whether T0 lands on its own picture, the pictures
    /// up to the contribution's next keyframe re-encoded (H.264,
    /// progressive), rather than on that keyframe.
    pub keyframe_bridge: bool,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second.
    pub framerate: u32,
    /// H.264 bitrate in kbit/s.
    pub video_kbps: u32,
    /// AAC bitrate in kbit/s (48 kHz stereo).
    pub audio_kbps: u32,
    /// Keyframe interval in frames.
    pub gop: u32,
}

impl ProgramFormat {
    /// Why `channel` cannot carry this programme, if it cannot: an RTMP leg
    /// carries H.264 and AAC in FLV, so a passthrough programme in another
    /// video codec is refused, never silently transcoded.
    pub fn refuses(&self, channel: &Channel) -> Option<String> {
        // Its backup leg carries the same programme: refused alike.
        if let Some(why) = channel.backup_leg().and_then(|b| self.refuses(&b)) {
            return Some(why);
        }
        let rtmp = matches!(channel.ingest, Ingest::Rtmp(_));
        if rtmp && self.mode == ProgramMode::Passthrough && self.video_codec != crate::media::es::VideoCodec::H264 {
            return Some(rtmp_refusal(channel.id.as_str(), self.video_codec));
        }
        self.audio_refusal(channel)
    }

    /// Why `channel`'s audio languages cannot be given it, if so: a
    /// language the programme lacks (naming those it has), or an RTMP leg
    /// asking for more than one track, or for one that is not AAC (FLV
    /// carries one AAC track). Both modes carry `[program] audio`'s tracks.
    pub fn audio_refusal(&self, channel: &Channel) -> Option<String> {
        if channel.audio.is_empty() {
            return None;
        }
        let id = channel.id.as_str();
        let asked = channel.audio.join(", ");
        if matches!(channel.ingest, Ingest::Rtmp(_)) {
            if channel.audio.len() > 1 {
                return Some(format!(
                    "channel `{id}` asks for audio {asked}: an RTMP leg carries exactly one audio track; list one \
                     (MPEG-TS legs, SRT, UDP, RIST and file, carry several)"
                ));
            }
            let track = self.audio.iter().find(|t| t.language.as_deref() == channel.audio.first().map(String::as_str));
            if let Some(t) = track.filter(|t| t.codec != crate::media::es::AudioCodec::Aac) {
                return Some(format!(
                    "channel `{id}` asks for audio {asked}, which the programme carries as {}: an RTMP leg carries \
                     AAC only",
                    t.codec.as_str()
                ));
            }
        }
        let has: Vec<&str> = self.audio.iter().filter_map(|t| t.language.as_deref()).collect();
        let lacking: Vec<&str> = channel.audio.iter().map(String::as_str).filter(|l| !has.contains(l)).collect();
        (!lacking.is_empty()).then(|| {
            let has = if has.is_empty() { "no tagged track".to_owned() } else { has.join(", ") };
            format!(
                "channel `{id}` asks for audio {}, which the programme lacks: it has {has} ([program] audio)",
                lacking.join(", ")
            )
        })
    }
}

/// One audio track of the programme as planned: `aac:kaz`, `ac3:eng`,
/// `mp2` in `[program] audio`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTrack {
    /// Its codec.
    pub codec: crate::media::es::AudioCodec,
    /// ISO 639-2 language, three lowercase letters.
    pub language: Option<String>,
}

impl PlannedTrack {
    /// Reads `codec` or `codec:language`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (codec, language) = match s.split_once(':') {
            Some((c, l)) => (c, Some(l)),
            None => (s, None),
        };
        let codec = crate::media::es::AudioCodec::parse(codec).ok_or_else(|| {
            let known: Vec<&str> = crate::media::es::AudioCodec::ALL.iter().map(|c| c.as_str()).collect();
            format!(
                "`{}` is not an audio codec passthrough carries; expected one of: {}",
                codec.escape_debug(),
                known.join(", ")
            )
        })?;
        if let Some(l) = language
            && (l.len() != 3 || !l.bytes().all(|b| b.is_ascii_lowercase()))
        {
            return Err(format!("`{}` is not an ISO 639-2 language (three lowercase letters)", l.escape_debug()));
        }
        Ok(Self { codec, language: language.map(str::to_owned) })
    }
}

/// Why RTMP leg `id` cannot carry a programme whose video is `codec`.
pub fn rtmp_refusal(id: &str, codec: crate::media::es::VideoCodec) -> String {
    format!(
        "channel `{id}` is an RTMP leg: FLV carries H.264 and AAC, and the passthrough programme's video is {}; \
         give the channel an SRT, UDP or RIST ingest, or leave it out of the event",
        codec.label()
    )
}

impl Default for ProgramFormat {
    fn default() -> Self {
        Self {
            mode: ProgramMode::Transcode,
            video_codec: crate::media::es::VideoCodec::H264,
            audio: vec![PlannedTrack { codec: crate::media::es::AudioCodec::Aac, language: None }],
            scte35: false,
            keyframe_bridge: true,
            width: 1280,
            height: 720,
            framerate: 25,
            video_kbps: 4000,
            audio_kbps: 128,
            gop: 25,
        }
    }
}

impl ProgramFormat {
    /// One frame's duration.
    pub fn frame(&self) -> Duration {
        Duration::from_nanos(1_000_000_000 / u64::from(self.framerate.max(1)))
    }

    /// One GOP's duration.
    pub fn gop_duration(&self) -> Duration {
        self.frame() * self.gop
    }
}

/// What partners see and hear when the program is not on: before T0,
/// during a hold, after the end, and when every source is gone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlateSettings {
    /// A PNG still; `None`: a generated card with the event title.
    pub image: Option<PathBuf>,
    /// A line under the title on the generated card.
    pub text: Option<String>,
    /// A tone in Hz; `None`: silence.
    pub tone_hz: Option<u32>,
}

/// Automatic failover between the primary, the backup and the slate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverSettings {
    /// A source that delivers no picture (or delivers data that is not
    /// MPEG-TS) for this long is lost.
    pub detect_after: Duration,
    /// The primary, back after a loss, goes on air again once it has been
    /// healthy this long (the backup stays on meanwhile).
    pub return_after: Duration,
}

impl Default for FailoverSettings {
    fn default() -> Self {
        Self { detect_after: Duration::from_millis(500), return_after: Duration::from_secs(5) }
    }
}

/// Where alerts go and how urgent they are (`[alerts]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// The webhooks every alert is POSTed to (none: alerts are only kept
    /// in the store and listed).
    pub webhooks: Vec<Webhook>,
    /// Trouble this close to a partner's air time, or while it is on air,
    /// is a `page`; earlier it is a `ticket`.
    pub page_within: Duration,
    /// A leg that is not on air (carrying the slate or the programme)
    /// this long before its air time raises `leg-not-on-air`.
    pub not_on_air_before: Duration,
}

/// Default of [`AlertSettings::page_within`].
pub const DEFAULT_PAGE_WITHIN: Duration = Duration::from_secs(30 * 60);
/// Default of [`AlertSettings::not_on_air_before`].
pub const DEFAULT_NOT_ON_AIR_BEFORE: Duration = Duration::from_secs(5 * 60);

impl Default for AlertSettings {
    fn default() -> Self {
        Self { webhooks: Vec::new(), page_within: DEFAULT_PAGE_WITHIN, not_on_air_before: DEFAULT_NOT_ON_AIR_BEFORE }
    }
}

/// One webhook alerts are POSTed to, signed with its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its name in `simulcastctl alerts list` (`oncall`).
    pub name: String,
    /// `http://` or `https://` URL.
    pub url: http::Uri,
    /// The HMAC-SHA256 key of the signature header.
    pub secret: Secret,
}

/// The contribution feed: where the program comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Built-in colour bars, title, UTC clock and 1 kHz tone.
    Test(TestSource),
    /// SRT listener or caller carrying MPEG-TS.
    Srt(SrtEndpoint),
    /// UDP MPEG-TS, unicast or multicast.
    Udp(UdpEndpoint),
    /// An MPEG-TS file, looped and paced in real time.
    File(PathBuf),
}

impl Source {
    /// Where the feed comes from, safe to log.
    pub fn describe(&self) -> String {
        match self {
            Source::Test(t) => format!("test bars, {} Hz tone", t.tone_hz),
            Source::Srt(s) => format!("{} ({})", s.uri(), s.mode.as_str()),
            Source::Udp(u) => u.uri(),
            Source::File(p) => format!("file {}", p.display()),
        }
    }
}

/// Relay tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// Bound of each leg's input buffer, in media time.
    pub leg_buffer: Duration,
    /// First reconnect delay.
    pub reconnect_initial: Duration,
    /// Reconnect delay cap.
    pub reconnect_max: Duration,
    /// No bytes delivered for this long on an on-air leg: rebuild it.
    pub stall_timeout: Duration,
    /// Connecting for this long without a byte delivered: rebuild.
    pub connect_timeout: Duration,
    /// Longest the fan-out holds a chunk to batch it with the next ones.
    pub batch_wait: Duration,
    /// Each leg names its own channel in-band (MPEG-TS SDT service name,
    /// FLV `onMetaData` title); see `media::stamp`.
    pub stamp_legs: bool,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            leg_buffer: DEFAULT_LEG_BUFFER,
            reconnect_initial: DEFAULT_RECONNECT_INITIAL,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            batch_wait: DEFAULT_BATCH_WAIT,
            stamp_legs: false,
        }
    }
}

/// The event being relayed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPlan {
    /// Title, burnt into the test source.
    pub title: String,
    /// Reference zone for display (the organiser's zone).
    pub timezone: Tz,
    /// Planned programme length.
    pub duration: Duration,
}

/// A whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The event.
    pub event: EventPlan,
    /// The contribution feed.
    pub source: Source,
    /// The backup contribution, if any: on air while the primary is lost.
    pub backup: Option<Source>,
    /// When the program leaves a lost source and comes back to the primary.
    pub failover: FailoverSettings,
    /// What every leg carries.
    pub program: ProgramFormat,
    /// The slate.
    pub slate: SlateSettings,
    /// Relay tuning.
    pub relay: RelaySettings,
    /// Where alerts go.
    pub alerts: AlertSettings,
    /// Partner channels, in file order.
    pub channels: Vec<Channel>,
}

impl Config {
    /// The channels that get a leg.
    pub fn enabled_channels(&self) -> impl Iterator<Item = &Channel> {
        self.channels.iter().filter(|c| c.enabled)
    }
}

impl Ingest {
    /// The leg template this ingest uses (`legs/<kind>`).
    pub fn template(&self) -> &'static str {
        match self {
            Ingest::Srt(_) => "legs/srt",
            Ingest::Rtmp(_) => "legs/rtmp",
            Ingest::Udp(_) => "legs/udp",
            Ingest::Rist(_) => "legs/rist",
            Ingest::File(_) => "legs/file",
        }
    }
}
