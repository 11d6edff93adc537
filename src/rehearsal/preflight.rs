//! Preflight: before a rehearsal sends anything, each leg's ingest is asked
//! whether it would accept: an SRT listener must answer an SRT induction
//! handshake, an RTMP server must accept `connect` and `publish` for the
//! stream, a UDP or RIST destination must have a route (and a multicast
//! interface must exist), a file leg's directory must be writable. No
//! programme byte goes out; each answer names the ingest.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use crate::config::{Host, Ingest, SrtMode};

/// How long one ingest may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// The longest a rehearsal's whole preflight may take: every leg is checked
/// at once, and a leg with no verdict by then fails preflight.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Checks one ingest (blocking; run it on a blocking thread). `Ok` says
/// what answered, `Err` why the ingest would not take the leg.
pub fn check(ingest: &Ingest) -> Result<String, String> {
    let target = ingest.target();
    match ingest {
        Ingest::Srt(s) => match s.mode {
            SrtMode::Listener => Ok(format!("{target}: the partner calls in; nothing to check before the run")),
            SrtMode::Caller => {
                let addr = resolve(&s.host, s.port).map_err(|e| format!("{target}: {e}"))?;
                srt_induction(addr)
                    .map(|v| format!("{target}: SRT listener answered the handshake (version {v})"))
                    .map_err(|e| format!("{target}: {e}"))
            }
        },
        Ingest::Rtmp(r) => {
            let key = match &r.stream_key {
                Some(k) => Some(k.usable().map_err(|why| format!("{target}: stream_key_file: {why}"))?),
                None => None,
            };
            let (host, port, app, stream) = split_rtmp(&r.url, key).map_err(|e| format!("{target}: {e}"))?;
            let addr = resolve(&Host::Name(host), port).map_err(|e| format!("{target}: {e}"))?;
            if r.url.starts_with("rtmps://") {
                // TLS is not spoken here; reaching the port is what is checked.
                TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{target}: cannot connect: {e}"))?;
                return Ok(format!("{target}: TCP port open (RTMPS publish not checked before the run)"));
            }
            rtmp_publish(addr, &r.url, &app, &stream)
                .map(|()| format!("{target}: RTMP server accepted connect and publish"))
                .map_err(|e| format!("{target}: {e}"))
        }
        Ingest::Udp(u) => {
            route(&u.host, u.port).map_err(|e| format!("{target}: {e}"))?;
            if let Some(iface) = &u.interface
                && !std::path::Path::new("/sys/class/net").join(iface).exists()
            {
                return Err(format!("{target}: interface `{iface}` does not exist"));
            }
            Ok(format!("{target}: route present"))
        }
        Ingest::Rist(r) => {
            route(&r.host, r.port).map_err(|e| format!("{target}: {e}"))?;
            Ok(format!("{target}: route present"))
        }
        Ingest::File(path) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let probe = dir.join(format!(".simulcast-preflight-{}", std::process::id()));
            std::fs::write(&probe, b"").map_err(|e| format!("{target}: cannot write in {}: {e}", dir.display()))?;
            let _ = std::fs::remove_file(&probe);
            Ok(format!("{target}: directory writable"))
        }
    }
}

fn resolve(host: &Host, port: u16) -> Result<SocketAddr, String> {
    (host.bare().as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// A UDP "connect" sends nothing but asks the kernel for a route.
fn route(host: &Host, port: u16) -> Result<(), String> {
    let addr = resolve(host, port)?;
    let local: SocketAddr = if addr.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.map_err(|_| "")?;
    let s = UdpSocket::bind(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    s.connect(addr).map_err(|e| format!("no route to {addr}: {e}"))
}

/// Sends an SRT induction handshake (SRT spec, section 4.3.1) and waits for
/// the listener's induction answer; returns the version it announced.
/// The exchange stops there: no connection is made, nothing is sent.
pub fn srt_induction(addr: SocketAddr) -> Result<u32, String> {
    let local = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(local).map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    s.connect(addr).map_err(|e| format!("no route to {addr}: {e}"))?;
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&0x8000_0000u32.to_be_bytes()); // control, type 0 = handshake
    p.extend_from_slice(&0u32.to_be_bytes()); // type-specific
    p.extend_from_slice(&0u32.to_be_bytes()); // timestamp
    p.extend_from_slice(&0u32.to_be_bytes()); // destination socket: none yet
    p.extend_from_slice(&4u32.to_be_bytes()); // version 4 in the induction request
    p.extend_from_slice(&0u16.to_be_bytes()); // encryption field
    p.extend_from_slice(&2u16.to_be_bytes()); // extension field: UDT_DGRAM
    p.extend_from_slice(&(fastrand::u32(..) & 0x7fff_ffff).to_be_bytes()); // initial sequence
    p.extend_from_slice(&1500u32.to_be_bytes()); // MTU
    p.extend_from_slice(&8192u32.to_be_bytes()); // flow window
    p.extend_from_slice(&1u32.to_be_bytes()); // handshake type: INDUCTION
    p.extend_from_slice(&(fastrand::u32(..) & 0x7fff_ffff).max(1).to_be_bytes()); // our socket id
    p.extend_from_slice(&0u32.to_be_bytes()); // SYN cookie
    let mut ip = [0u8; 16];
    match addr.ip() {
        std::net::IpAddr::V4(v4) => ip[..4].copy_from_slice(&v4.octets()),
        std::net::IpAddr::V6(v6) => ip.copy_from_slice(&v6.octets()),
    }
    p.extend_from_slice(&ip);
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 1500];
    let mut last_err = String::from("no answer");
    while Instant::now() < deadline {
        s.send(&p).map_err(|e| format!("cannot send the handshake: {e}"))?;
        s.set_read_timeout(Some(Duration::from_millis(300))).map_err(|e| e.to_string())?;
        match s.recv(&mut buf) {
            Ok(n) if n >= 64 && buf[0] & 0x80 != 0 && u16::from_be_bytes([buf[0] & 0x7f, buf[1]]) == 0 => {
                let version = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]);
                let kind = u32::from_be_bytes([buf[36], buf[37], buf[38], buf[39]]);
                if kind == 1 {
                    return Ok(version);
                }
                // A rejection code (1000 and up) in the handshake type.
                return Err(format!("the SRT listener refused the handshake (code {kind})"));
            }
            Ok(n) => last_err = format!("answered {n} bytes that are not an SRT handshake"),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused) => {
                return Err("nothing listens there (ICMP port unreachable)".into());
            }
            Err(_) => {}
        }
    }
    Err(format!("no SRT handshake answer within {} s ({last_err})", TIMEOUT.as_secs()))
}

/// `rtmp://host[:port]/app.../stream` (with the key as the stream when
/// given, as rtmp2sink uses it): host, port, app, stream.
fn split_rtmp(url: &str, key: Option<&str>) -> Result<(String, u16, String, String), String> {
    let rest = url.strip_prefix("rtmp://").or_else(|| url.strip_prefix("rtmps://")).ok_or("not an rtmp:// URL")?;
    let default_port = if url.starts_with("rtmps://") { 443 } else { 1935 };
    let (authority, path) = rest.split_once('/').ok_or("no application in the URL")?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h.trim_matches(['[', ']']).to_owned(), p.parse().map_err(|_| format!("bad port `{p}`"))?)
        }
        _ => (authority.to_owned(), default_port),
    };
    let full = match key {
        Some(k) => format!("{}/{k}", path.trim_end_matches('/')),
        None => path.to_owned(),
    };
    let (app, stream) = full.rsplit_once('/').ok_or("no stream name (give a stream key)")?;
    Ok((host, port, app.to_owned(), stream.to_owned()))
}

// ------------------------------------------------------------ RTMP publish

fn amf_str(out: &mut Vec<u8>, s: &str) {
    out.push(0x02);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn amf_num(out: &mut Vec<u8>, n: f64) {
    out.push(0x00);
    out.extend_from_slice(&n.to_be_bytes());
}

fn amf_obj(out: &mut Vec<u8>, fields: &[(&str, &str)]) {
    out.push(0x03);
    for (k, v) in fields {
        out.extend_from_slice(&(k.len() as u16).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        amf_str(out, v);
    }
    out.extend_from_slice(&[0, 0, 9]);
}

/// One AMF0 command message, cut into 128-byte chunks.
fn chunks(csid: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![csid & 0x3f, 0, 0, 0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(20);
    out.extend_from_slice(&stream.to_le_bytes());
    for (i, part) in payload.chunks(128).enumerate() {
        if i > 0 {
            out.push(0xc0 | (csid & 0x3f));
        }
        out.extend_from_slice(part);
    }
    out
}

/// Reads RTMP messages (any chunking the server uses).
struct Reader<'a> {
    s: &'a mut TcpStream,
    chunk: usize,
    /// Per chunk stream: (length, type, stream id, payload so far).
    open: std::collections::HashMap<u32, (usize, u8, u32, Vec<u8>)>,
}

impl Reader<'_> {
    fn byte(&mut self) -> std::io::Result<u8> {
        let mut b = [0u8; 1];
        self.s.read_exact(&mut b)?;
        Ok(b[0])
    }

    fn bytes(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b)?;
        Ok(b)
    }

    /// The next complete message: (type, payload).
    fn message(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        loop {
            let b = self.byte()?;
            let fmt = b >> 6;
            let csid = match b & 0x3f {
                0 => 64 + u32::from(self.byte()?),
                1 => {
                    let x = self.bytes(2)?;
                    64 + u32::from(x[0]) + 256 * u32::from(x[1])
                }
                n => u32::from(n),
            };
            let prev = self.open.get(&csid).map(|(l, t, s, _)| (*l, *t, *s)).unwrap_or((0, 0, 0));
            let (len, kind, stream, ts) = match fmt {
                0 => {
                    let h = self.bytes(11)?;
                    let len = u32::from_be_bytes([0, h[3], h[4], h[5]]) as usize;
                    (len, h[6], u32::from_le_bytes([h[7], h[8], h[9], h[10]]), [h[0], h[1], h[2]])
                }
                1 => {
                    let h = self.bytes(7)?;
                    (u32::from_be_bytes([0, h[3], h[4], h[5]]) as usize, h[6], prev.2, [h[0], h[1], h[2]])
                }
                2 => {
                    let h = self.bytes(3)?;
                    (prev.0, prev.1, prev.2, [h[0], h[1], h[2]])
                }
                _ => (prev.0, prev.1, prev.2, [0, 0, 0]),
            };
            if fmt < 3 && ts == [0xff, 0xff, 0xff] {
                self.bytes(4)?; // extended timestamp
            }
            let chunk = self.chunk;
            let entry = self.open.entry(csid).or_insert((len, kind, stream, Vec::new()));
            if fmt < 3 || entry.3.is_empty() {
                // A new header starts a new message on this chunk stream.
                entry.3.clear();
                (entry.0, entry.1, entry.2) = (len, kind, stream);
            }
            let want = entry.0.saturating_sub(entry.3.len()).min(chunk);
            let mut part = vec![0u8; want];
            self.s.read_exact(&mut part)?;
            let entry = self.open.entry(csid).or_insert((len, kind, stream, Vec::new()));
            entry.3.extend_from_slice(&part);
            if entry.3.len() >= entry.0 {
                let payload = std::mem::take(&mut entry.3);
                let kind = entry.1;
                if kind == 1 && payload.len() >= 4 {
                    self.chunk = (u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff)
                        .clamp(1, 1 << 24) as usize;
                    continue;
                }
                return Ok((kind, payload));
            }
        }
    }

    /// The next AMF0 command: its name and payload.
    fn command(&mut self) -> Result<(String, Vec<u8>), String> {
        loop {
            let (kind, payload) = self.message().map_err(|e| format!("the RTMP server closed or stalled: {e}"))?;
            if kind == 20 && payload.first() == Some(&2) && payload.len() >= 3 {
                let n = u16::from_be_bytes([payload[1], payload[2]]) as usize;
                let name = String::from_utf8_lossy(payload.get(3..3 + n).unwrap_or_default()).into_owned();
                return Ok((name, payload));
            }
        }
    }
}

/// The string value of `key` in an AMF0 payload (first occurrence).
fn amf_field(payload: &[u8], key: &str) -> Option<String> {
    let mut pat = (key.len() as u16).to_be_bytes().to_vec();
    pat.extend_from_slice(key.as_bytes());
    pat.push(2);
    let at = payload.windows(pat.len()).position(|w| w == pat)? + pat.len();
    let n = u16::from_be_bytes([*payload.get(at)?, *payload.get(at + 1)?]) as usize;
    Some(String::from_utf8_lossy(payload.get(at + 2..at + 2 + n)?).into_owned())
}

/// The last AMF0 number in a `_result` (createStream's stream id).
fn last_number(payload: &[u8]) -> Option<f64> {
    let at = payload.len().checked_sub(9)?;
    (payload[at] == 0).then(|| f64::from_be_bytes(payload[at + 1..].try_into().unwrap_or_default()))
}

/// Handshake, `connect`, `createStream` and `publish`, then hangs up: the
/// server said whether it would take the stream; no media was sent.
fn rtmp_publish(addr: SocketAddr, url: &str, app: &str, stream: &str) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("cannot connect: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| format!("RTMP handshake failed: {e}");
    let mut c1 = vec![0u8; 1536];
    for b in c1.iter_mut().skip(8) {
        *b = fastrand::u8(..);
    }
    s.write_all(&[3]).map_err(io)?;
    s.write_all(&c1).map_err(io)?;
    let mut s0s1 = vec![0u8; 1537];
    s.read_exact(&mut s0s1).map_err(io)?;
    if s0s1[0] != 3 {
        return Err(format!("not an RTMP server (version byte {})", s0s1[0]));
    }
    let mut s2 = vec![0u8; 1536];
    s.read_exact(&mut s2).map_err(io)?;
    s.write_all(&s0s1[1..]).map_err(io)?;

    let scheme = if url.starts_with("rtmps://") { "rtmps" } else { "rtmp" };
    let authority = url.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default();
    let tc_url = format!("{scheme}://{authority}/{app}");
    let mut p = Vec::new();
    amf_str(&mut p, "connect");
    amf_num(&mut p, 1.0);
    amf_obj(
        &mut p,
        &[("app", app), ("type", "nonprivate"), ("flashVer", "FMLE/3.0 (simulcast preflight)"), ("tcUrl", &tc_url)],
    );
    let send = |s: &mut TcpStream, b: Vec<u8>| s.write_all(&b).map_err(|e| format!("RTMP write failed: {e}"));
    send(&mut s, chunks(3, 0, &p))?;
    let mut r = Reader { s: &mut s, chunk: 128, open: Default::default() };
    let (name, payload) = r.command()?;
    if name != "_result" {
        let why = amf_field(&payload, "description").or_else(|| amf_field(&payload, "code")).unwrap_or(name);
        return Err(format!("the RTMP server refused connect to app `{app}`: {why}"));
    }
    let mut p = Vec::new();
    amf_str(&mut p, "createStream");
    amf_num(&mut p, 2.0);
    p.push(5);
    let stream_id = {
        let s = &mut *r.s;
        send(s, chunks(3, 0, &p))?;
        loop {
            let (name, payload) = r.command()?;
            match name.as_str() {
                "_result" => break last_number(&payload).unwrap_or(1.0) as u32,
                "_error" => return Err("the RTMP server refused createStream".into()),
                _ => {}
            }
        }
    };
    let mut p = Vec::new();
    amf_str(&mut p, "publish");
    amf_num(&mut p, 3.0);
    p.push(5);
    amf_str(&mut p, stream);
    amf_str(&mut p, "live");
    send(r.s, chunks(8, stream_id, &p))?;
    loop {
        let (name, payload) = r.command()?;
        if name == "onStatus" || name == "_error" {
            let code = amf_field(&payload, "code").unwrap_or_default();
            if code == "NetStream.Publish.Start" {
                let mut p = Vec::new();
                amf_str(&mut p, "deleteStream");
                amf_num(&mut p, 4.0);
                p.push(5);
                amf_num(&mut p, f64::from(stream_id));
                let _ = r.s.write_all(&chunks(3, 0, &p));
                return Ok(());
            }
            let why = amf_field(&payload, "description").unwrap_or_default();
            // The stream name is the key: never in the message.
            return Err(format!("the RTMP server refused publish: {code} {}", why.replace(stream, "***"))
                .trim_end()
                .to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_urls_split_like_rtmp2sink_locations() {
        let s = |u: &str, k: Option<&str>| split_rtmp(u, k).unwrap();
        assert_eq!(
            s("rtmp://127.0.0.1:1935/live", Some("key")),
            ("127.0.0.1".into(), 1935, "live".into(), "key".into())
        );
        assert_eq!(
            s("rtmp://ingest.example/app/sub", Some("k")),
            ("ingest.example".into(), 1935, "app/sub".into(), "k".into())
        );
        assert_eq!(s("rtmp://h/live/stream", None), ("h".into(), 1935, "live".into(), "stream".into()));
        assert!(split_rtmp("rtmp://h", None).is_err());
    }

    #[test]
    fn amf_fields_are_found_and_commands_chunked() {
        let mut p = Vec::new();
        amf_str(&mut p, "onStatus");
        amf_num(&mut p, 0.0);
        p.push(5);
        amf_obj(&mut p, &[("level", "status"), ("code", "NetStream.Publish.Start")]);
        assert_eq!(amf_field(&p, "code").as_deref(), Some("NetStream.Publish.Start"));
        let long = vec![7u8; 300];
        let c = chunks(3, 1, &long);
        // 12-byte header, 128 + 1 + 128 + 1 + 44 bytes of payload and continuations.
        assert_eq!(c.len(), 12 + 300 + 2);
        assert_eq!(c[12 + 128], 0xc3);
    }

    #[test]
    fn a_udp_port_nobody_listens_on_fails_the_srt_handshake_by_name() {
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = srt_induction(format!("127.0.0.1:{port}").parse().unwrap()).unwrap_err();
        assert!(err.contains("nothing listens") || err.contains("no SRT handshake"), "{err}");
    }
}
