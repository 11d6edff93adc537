//! Small, strict parsers for the address forms the config accepts
//! (`srt://host:port`, `udp://[::1]:5000`, `rtmp://host/app`) and durations
//! (`500ms`, `2s`, `1h30m`). Strict on purpose: an operator's typo is refused
//! with a reason rather than guessed at.

use std::net::IpAddr;
use std::time::Duration;

use super::types::Host;

/// A parsed `scheme://host[:port][/path][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUri {
    /// The host.
    pub host: Host,
    /// The port, if given.
    pub port: Option<u16>,
    /// Path without the leading `/` (empty if none).
    pub path: String,
    /// Whether a `?query` was present.
    pub has_query: bool,
}

/// Parses `text` as a URI with one of `schemes`; returns the scheme found.
pub fn parse_uri<'a>(text: &str, schemes: &[&'a str]) -> Result<(&'a str, ParsedUri), String> {
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("{} is not a URI: expected {}://host:port", super::quote(text), schemes[0]))?;
    let scheme = schemes
        .iter()
        .find(|s| s.eq_ignore_ascii_case(scheme))
        .ok_or_else(|| format!("scheme {} is not accepted here: use {}", super::quote(scheme), schemes.join(" or ")))?;
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("credentials in the URI are refused: use the passphrase or stream_key field".into());
    }
    let (host_text, port_text) = if let Some(stripped) = authority.strip_prefix('[') {
        let (h, after) = stripped.split_once(']').ok_or("unclosed `[` in the IPv6 address")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected `:port` after `]`")?),
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host = parse_host(host_text)?;
    let port = match port_text {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    Ok((scheme, ParsedUri { host, port, path: path.trim_start_matches('/').to_owned(), has_query: query.is_some() }))
}

fn parse_host(text: &str) -> Result<Host, String> {
    if text.is_empty() {
        return Err("the host is missing".into());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if text.len() <= 253 && text.split('.').all(valid_label) && !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        Ok(Host::Name(text.to_ascii_lowercase()))
    } else {
        Err(format!("{} is neither an IP address nor a host name", super::quote(text)))
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("port {} is not a number from 1 to 65535", super::quote(text))),
    }
}

/// Parses a duration such as `500ms`, `2s`, `90s`, `1h30m`, `3h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("{} is not a duration: use forms like 500ms, 2s, 1h30m", super::quote(text)));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" => return Err(format!("`{text}` lacks a unit: use ms, s, m or h")),
            u => return Err(format!("`{text}`: unknown unit `{u}`: use ms, s, m or h")),
        };
        total += part;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_paths() {
        let (s, u) = parse_uri("srt://127.0.0.1:9000", &["srt"]).unwrap();
        assert_eq!(s, "srt");
        assert_eq!(u.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(u.port, Some(9000));
        let (_, u) = parse_uri("udp://[::1]:5000", &["udp"]).unwrap();
        assert_eq!(u.host, Host::Ip("::1".parse().unwrap()));
        let (s, u) = parse_uri("RTMPS://Ingest.Example.org/live", &["rtmp", "rtmps"]).unwrap();
        assert_eq!((s, u.port, u.path.as_str()), ("rtmps", None, "live"));
        assert_eq!(u.host, Host::Name("ingest.example.org".into()));
    }

    #[test]
    fn refuses_bad_uris_with_reasons() {
        assert!(parse_uri("127.0.0.1:9000", &["srt"]).unwrap_err().contains("not a URI"));
        assert!(parse_uri("http://h:1", &["srt"]).unwrap_err().contains("scheme `http`"));
        assert!(parse_uri("srt://h:99999", &["srt"]).unwrap_err().contains("65535"));
        assert!(parse_uri("srt://:9000", &["srt"]).unwrap_err().contains("host is missing"));
        assert!(parse_uri("srt://bad_host!:9000", &["srt"]).unwrap_err().contains("neither"));
        assert!(parse_uri("rtmp://user:pw@h/app", &["rtmp"]).unwrap_err().contains("credentials"));
        assert!(parse_uri("srt://999.1.1.1:9000", &["srt"]).is_err());
    }

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert!(parse_duration("5").unwrap_err().contains("unit"));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("2d").unwrap_err().contains("unknown unit"));
    }
}
