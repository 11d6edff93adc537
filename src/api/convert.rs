//! Proto <-> domain conversion. A request is turned into the same table a
//! configuration file holds and validated by the same code, so the API and
//! the file accept and refuse exactly the same things (keys under `channel.`).
//! Responses never carry a secret: only `has_passphrase` / `has_stream_key`.

use toml::{Table, Value};

use crate::config::{self, AirPolicy, Channel, FieldError, Ingest, SrtMode};
use crate::proto;

fn put(t: &mut Table, key: &str, v: impl Into<Value>) {
    t.insert(key.into(), v.into());
}

fn put_nonempty(t: &mut Table, key: &str, v: &str) {
    if !v.is_empty() {
        put(t, key, v);
    }
}

fn duration_text(d: &prost_types::Duration) -> String {
    format!("{}ms", i128::from(d.seconds) * 1000 + i128::from(d.nanos) / 1_000_000)
}

/// A request's channel, validated.
pub fn channel_from_proto(p: &proto::Channel) -> Result<Channel, Vec<FieldError>> {
    let mut t = Table::new();
    put(&mut t, "id", p.id.as_str());
    put(&mut t, "name", p.name.as_str());
    put(&mut t, "country", p.country.as_str());
    put(&mut t, "timezone", p.timezone.as_str());
    put(&mut t, "enabled", p.enabled.unwrap_or(true));
    if let Some(policy) = p.air_policy.as_ref().and_then(|a| a.policy.as_ref()) {
        let mut a = Table::new();
        match policy {
            proto::air_policy::Policy::Live(_) => put(&mut a, "type", "live"),
            proto::air_policy::Policy::LocalTime(at) => {
                put(&mut a, "type", "local_time");
                put(&mut a, "at", at.as_str());
            }
        }
        t.insert("air_policy".into(), Value::Table(a));
    }
    if let Some(kind) = p.ingest.as_ref().and_then(|i| i.kind.as_ref()) {
        let mut i = Table::new();
        use proto::ingest::Kind;
        match kind {
            Kind::Srt(s) => {
                put(&mut i, "type", "srt");
                put(&mut i, "uri", s.uri.as_str());
                match proto::SrtMode::try_from(s.mode) {
                    Ok(proto::SrtMode::Listener) => put(&mut i, "mode", "listener"),
                    _ => put(&mut i, "mode", "caller"),
                }
                if let Some(l) = &s.latency {
                    put(&mut i, "latency", duration_text(l));
                }
                put_nonempty(&mut i, "passphrase", &s.passphrase);
                put_nonempty(&mut i, "stream_id", &s.stream_id);
            }
            Kind::Rtmp(r) => {
                put(&mut i, "type", "rtmp");
                put(&mut i, "url", r.url.as_str());
                put_nonempty(&mut i, "stream_key", &r.stream_key);
            }
            Kind::Udp(u) => {
                put(&mut i, "type", "udp");
                put(&mut i, "uri", u.uri.as_str());
                if u.ttl != 0 {
                    put(&mut i, "ttl", i64::from(u.ttl));
                }
                put_nonempty(&mut i, "interface", &u.interface);
            }
            Kind::Rist(r) => {
                put(&mut i, "type", "rist");
                put(&mut i, "uri", r.uri.as_str());
            }
            Kind::File(f) => {
                put(&mut i, "type", "file");
                put(&mut i, "path", f.path.as_str());
            }
        }
        t.insert("ingest".into(), Value::Table(i));
    }
    config::validate_channel_table(&t, "channel")
}

fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// A channel for a request (the CLI creating one): secrets included.
pub fn channel_to_proto_with_secrets(ch: &Channel) -> proto::Channel {
    to_proto(ch, true)
}

/// A channel for a response: secrets never included.
pub fn channel_to_proto(ch: &Channel) -> proto::Channel {
    to_proto(ch, false)
}

fn to_proto(ch: &Channel, secrets: bool) -> proto::Channel {
    use proto::ingest::Kind;
    let kind = match &ch.ingest {
        Ingest::Srt(s) => Kind::Srt(proto::SrtIngest {
            uri: s.uri(),
            mode: match s.mode {
                SrtMode::Caller => proto::SrtMode::Caller as i32,
                SrtMode::Listener => proto::SrtMode::Listener as i32,
            },
            latency: Some(duration(s.latency)),
            passphrase: if secrets {
                s.passphrase.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default()
            } else {
                String::new()
            },
            stream_id: s.stream_id.clone().unwrap_or_default(),
            has_passphrase: s.passphrase.is_some(),
        }),
        Ingest::Rtmp(r) => Kind::Rtmp(proto::RtmpIngest {
            url: r.url.clone(),
            stream_key: if secrets {
                r.stream_key.as_ref().map(|k| k.expose().to_owned()).unwrap_or_default()
            } else {
                String::new()
            },
            has_stream_key: r.stream_key.is_some(),
        }),
        Ingest::Udp(u) => Kind::Udp(proto::UdpIngest {
            uri: u.uri(),
            ttl: u32::from(u.ttl),
            interface: u.interface.clone().unwrap_or_default(),
        }),
        Ingest::Rist(r) => Kind::Rist(proto::RistIngest { uri: format!("rist://{}:{}", r.host, r.port) }),
        Ingest::File(p) => Kind::File(proto::FileIngest { path: p.display().to_string() }),
    };
    let policy = match ch.air_policy {
        AirPolicy::Live => proto::air_policy::Policy::Live(proto::air_policy::Live {}),
        AirPolicy::LocalTime(t) => proto::air_policy::Policy::LocalTime(t.format("%H:%M").to_string()),
    };
    proto::Channel {
        id: ch.id.to_string(),
        name: ch.name.clone(),
        country: ch.country.clone(),
        timezone: ch.timezone.name().to_owned(),
        ingest: Some(proto::Ingest { kind: Some(kind) }),
        air_policy: Some(proto::AirPolicy { policy: Some(policy) }),
        enabled: Some(ch.enabled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_channel_round_trips_and_responses_hold_no_secret() {
        for ch in config::default_config().channels {
            let back = channel_from_proto(&channel_to_proto_with_secrets(&ch)).unwrap();
            assert_eq!(back, ch);
            let shown = format!("{:?}", channel_to_proto(&ch));
            for secret in ["demo-passphrase-kz", "am-1tv-demo", "kg-ktrk-demo"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn errors_name_the_request_field() {
        let mut p = channel_to_proto(&config::default_config().channels[0]);
        p.timezone = "Asia/Nowhere".into();
        let errs = channel_from_proto(&p).unwrap_err();
        assert_eq!(errs[0].key, "channel.timezone");
        assert!(errs[0].message.contains("Asia/Nowhere"));
    }
}
