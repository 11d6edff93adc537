//! Shared fixtures for the integration tests: free ports, real receivers
//! nobody here wrote (srt-live-transmit, nginx with libnginx-mod-rtmp, a
//! plain UDP socket), ffprobe, and an MPEG-TS continuity check.
//!
//! A missing peer is a hard failure with the package to install, never a
//! silent skip: `scripts/test.sh` installs them.

#![allow(dead_code)]

pub mod server;

use std::collections::HashMap;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use simulcast::config::{self, Config};
use simulcast::relay::{Relay, RelayPlan, RelayStatus};

/// A running `simulcastd serve`, killed when dropped (passed or not).
pub struct Daemon(pub Child);

impl Daemon {
    /// `simulcastd serve ARGS...` on `grpc`, a socket the test bound and
    /// keeps (handed over as systemd does, see [`Daemon::serve_on`]);
    /// returns once it answers there. Its metrics port is any free one
    /// unless ARGS give `--metrics-listen`.
    pub fn serve(grpc: &TcpListener, args: &[&std::ffi::OsStr], stderr: Stdio) -> Daemon {
        let mut daemon = Daemon::serve_on(&[("grpc", grpc)], args, stderr);
        wait_answering(&mut daemon.0, grpc.local_addr().expect("gRPC socket"));
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (20 s at most) until `daemon` has taken connections off `addr`:
/// a connection it has not accepted waits in the backlog, and a read on it
/// times out; once accepted, the daemon answers (HTTP/2 settings, or a TLS
/// alert). Fails at once if the daemon has exited.
pub fn wait_answering(daemon: &mut Child, addr: std::net::SocketAddr) {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = daemon.try_wait().expect("simulcastd status") {
            panic!("simulcastd exited ({status}) before answering on {addr}");
        }
        let answered = std::net::TcpStream::connect(addr).is_ok_and(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
            s.read(&mut [0u8; 64]).is_ok()
        });
        if answered {
            return;
        }
        assert!(Instant::now() < deadline, "simulcastd did not answer on {addr} within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP socket listening on a free loopback port, to hand to the process
/// that serves it (bound once: the port is never released and bound again).
pub fn tcp_listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind TCP")
}

impl Daemon {
    /// `simulcastd serve ARGS...` on listening sockets bound by the test and
    /// handed over as systemd does (socket activation: descriptors from 3,
    /// `$LISTEN_FDS`, `$LISTEN_FDNAMES`, and `$LISTEN_PID` set to the
    /// daemon's pid by the `sh` that execs it). The test keeps its sockets:
    /// no port is released and bound again, and a client that connects
    /// between two daemons waits in the backlog instead of being refused.
    /// Returns at once (the sockets already listen).
    pub fn serve_on(sockets: &[(&str, &dyn std::os::fd::AsRawFd)], args: &[&std::ffi::OsStr], stderr: Stdio) -> Daemon {
        let mut cmd = simulcastd_on(sockets);
        cmd.arg("serve").args(args);
        if !sockets.iter().any(|(n, _)| *n == "metrics") && !args.iter().any(|a| *a == "--metrics-listen") {
            cmd.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        Daemon(cmd.stdout(Stdio::null()).stderr(stderr).spawn().expect("start simulcastd"))
    }
}

/// A command that runs `simulcastd` (add its arguments) with `sockets`
/// handed over as systemd does: descriptors from 3, `$LISTEN_FDS`,
/// `$LISTEN_FDNAMES`, and `$LISTEN_PID` set to the daemon's own pid by the
/// `sh` that execs it.
pub fn simulcastd_on(sockets: &[(&str, &dyn std::os::fd::AsRawFd)]) -> Command {
    let fds: Vec<i32> = sockets.iter().map(|(_, l)| l.as_raw_fd()).collect();
    let names: Vec<&str> = sockets.iter().map(|(n, _)| *n).collect();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_simulcastd"))
        .env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"));
    hand_over(&mut cmd, fds);
    cmd
}

/// Has `cmd`'s process start with `fds` (open in this one) as its
/// descriptors 3, 4, ...: sockets the test bound, handed over.
pub fn hand_over(cmd: &mut Command, fds: Vec<i32>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec the closure only calls fcntl and dup2
    // (async-signal-safe) on descriptors the parent holds open; the Vec it
    // iterates was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Moved out of the way first, so no dup2 below overwrites a
            // descriptor still to be placed.
            let mut high = [-1i32; 8];
            for (slot, &fd) in high.iter_mut().zip(fds.iter()) {
                *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
            }
            for (i, &fd) in high.iter().take(fds.len()).enumerate() {
                if fd < 0 || libc::dup2(fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A loopback port for a peer that binds its own: srt-live-transmit,
/// etcd, chromedriver, and the relay's own SRT or UDP contribution
/// input. None of them can take a socket the test bound (our own sockets
/// are bound once and handed over: [`Daemon::serve_on`], [`UdpCapture`]),
/// so the port is one that nothing else takes meanwhile:
/// - below the kernel's ephemeral range (`ip_local_port_range`), where no
///   `bind` to port 0 and no outgoing connection is ever given a port, so
///   the parallel tests' own sockets cannot land on it;
/// - each port at most once per test process (a counter from a start that
///   differs per process), so two tests never get the same one; the port
///   is even and the odd one after it is never handed out either (RIST and
///   RTP take the pair);
/// - free for UDP and TCP when handed out (a peer left over from an
///   earlier run, or a service, is skipped).
///
/// A peer that still finds it taken exits, and the test that waits for it
/// to listen says so, naming the port (`wait_listening_udp`).
pub fn peer_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let pairs = ephemeral_low.saturating_sub(FIRST).max(1_000) / 2;
    let start = std::process::id().wrapping_mul(7_919) % pairs;
    for _ in 0..pairs {
        let port = (FIRST + 2 * ((start + NEXT.fetch_add(1, Ordering::Relaxed)) % pairs)) as u16;
        let udp = UdpSocket::bind(("127.0.0.1", port));
        let tcp = TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {ephemeral_low}");
}

/// A file under the repository's `deploy/`.
pub fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

/// Every `simulcast_...` metric name the shipped alert rules and dashboard
/// query.
pub fn monitored_metrics() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for f in ["prometheus/simulcast.rules.yml", "grafana/simulcast.json"] {
        let text = std::fs::read_to_string(deploy(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let mut rest = text.as_str();
        while let Some(at) = rest.find("simulcast_") {
            let name: String =
                rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

/// Fails the test with the package to install when `tool` is missing.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{tool} is not installed: apt-get install {package} (scripts/test.sh does this)");
}

/// A config with a small test source (cheap to encode on a 2-core machine
/// while several tests run at once) and the given `[[channels]]` tables.
pub fn config_with(channels: &[String]) -> Config {
    let mut text = String::from(
        "[event]\ntitle = \"Silk Way Star test\"\n\
         [source]\ntype = \"test\"\n[program]\nwidth = 480\nheight = 270\nframerate = 25\nvideo_kbps = 1000\ngop = 25\n",
    );
    for c in channels {
        text += c;
    }
    config::parse(&text).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"))
}

/// One `[[channels]]` table.
pub fn channel(id: &str, ingest: &str) -> String {
    format!(
        "[[channels]]\nid = \"{id}\"\nname = \"{id}\"\ncountry = \"KZ\"\ntimezone = \"Asia/Almaty\"\ningest = {ingest}\n"
    )
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// Waits until every named leg is on air; panics with the status if not.
pub async fn wait_on_air(relay: &Relay, ids: &[&str], timeout: Duration) {
    let ok = wait_for(timeout, || {
        let s = relay.status();
        ids.iter().all(|id| s.leg(id).is_some_and(|l| l.state.to_string() == "ON_AIR"))
    })
    .await;
    assert!(ok, "legs {ids:?} not on air within {timeout:?}: {:#?}", relay.status());
}

/// A child process killed when dropped, so a failing test leaves none behind.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Sends SIGINT (ffmpeg finishes its file on it) and waits.
    pub fn interrupt(&mut self) {
        let _ = Command::new("kill").arg("-INT").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM (a receiver going away the way an operator stops it).
pub fn terminate(child: &Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
}

fn temp_dir(tag: &str) -> PathBuf {
    tempfile::Builder::new().prefix(&format!("simulcast-{tag}-")).tempdir().expect("tempdir").keep()
}

/// Waits (5 s at most) until `child` holds a UDP socket bound to `port`
/// (one of its descriptors is a socket whose inode /proc/net/udp lists on
/// that port), so that nothing is sent to it before it listens. A peer
/// that cannot take a socket from the test binds the port itself after
/// the test freed it; one that exits meanwhile (the port taken in
/// between) fails the test here, naming the port, rather than as an
/// empty capture later.
fn wait_listening_udp(child: &mut Child, port: u16, what: &str) {
    let end = Instant::now() + Duration::from_secs(5);
    let local = format!(":{port:04X} ");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before it listened on UDP port {port} ({status}): was the port taken meanwhile?");
        }
        let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
            .collect();
        let bound = ["/proc/net/udp", "/proc/net/udp6"].iter().any(|t| {
            std::fs::read_to_string(t).unwrap_or_default().lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 9 && format!("{} ", f[1]).ends_with(&local) && inodes.contains(f[9])
            })
        });
        if bound {
            return;
        }
        assert!(Instant::now() < end, "{what} did not listen on UDP port {port} within 5 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A venue's encoder nobody here wrote: gst-launch-1.0 sending a live
/// H.264 (320x180p25, a keyframe a second) + AAC MPEG-TS to UDP `ports` on
/// loopback, the same datagrams to each (a contribution to every site).
pub fn venue_encoder(ports: &[u16]) -> Child {
    require("gst-launch-1.0", "gstreamer1.0-tools");
    let clients = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "is-live=true",
            "pattern=ball",
            "!",
            "video/x-raw,width=320,height=180,framerate=25/1",
        ])
        .args(["!", "x264enc", "tune=zerolatency", "speed-preset=ultrafast", "key-int-max=25", "bitrate=600"])
        .args(["!", "h264parse", "!", "mpegtsmux", "name=m", "alignment=7", "!", "multiudpsink", "sync=false"])
        .arg(format!("clients={clients}"))
        .args(["audiotestsrc", "is-live=true", "!", "audioconvert", "!", "avenc_aac", "!", "aacparse", "!", "m."])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gst-launch-1.0 (the venue's encoder)")
}

/// `srt-live-transmit` listening on a port, writing what it receives to a file.
pub struct SrtReceiver {
    pub port: u16,
    pub path: PathBuf,
    child: Option<Child>,
}

impl SrtReceiver {
    pub fn start(port: u16) -> Self {
        let path = temp_dir("srt").join("capture.ts");
        Self::start_to(port, path)
    }

    /// Starts (again) on `port`, appending to `path`.
    pub fn start_to(port: u16, path: PathBuf) -> Self {
        Self::start_full(port, path, None)
    }

    /// Starts on `port`, relaying what it receives to UDP `udp_port` on
    /// loopback (so a [`UdpCapture`] can time every datagram).
    pub fn start_to_udp(port: u16, udp_port: u16) -> Self {
        require("srt-live-transmit", "srt-tools");
        let mut child = Command::new("srt-live-transmit")
            .arg("-q")
            .arg(format!("srt://127.0.0.1:{port}?mode=listener"))
            .arg(format!("udp://127.0.0.1:{udp_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn srt-live-transmit");
        wait_listening_udp(&mut child, port, "srt-live-transmit");
        Self { port, path: PathBuf::new(), child: Some(child) }
    }

    /// Starts on `port`, accepting only callers with `passphrase`.
    pub fn start_with_passphrase(port: u16, passphrase: &str) -> Self {
        Self::start_full(port, temp_dir("srt").join("capture.ts"), Some(passphrase))
    }

    fn start_full(port: u16, path: PathBuf, passphrase: Option<&str>) -> Self {
        require("srt-live-transmit", "srt-tools");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("capture file");
        let secret = passphrase.map(|p| format!("&passphrase={p}")).unwrap_or_default();
        let mut child = Command::new("srt-live-transmit")
            .arg("-q")
            .arg(format!("srt://127.0.0.1:{port}?mode=listener{secret}"))
            .arg("file://con")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn srt-live-transmit");
        wait_listening_udp(&mut child, port, "srt-live-transmit");
        Self { port, path, child: Some(child) }
    }

    pub fn bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Stops it (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&c);
            let _ = c.wait();
        }
    }
}

impl Drop for SrtReceiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether an RTMP server answers C0+C1 on `port` with its S0.
fn answers_rtmp(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut c0c1 = vec![0u8; 1537];
    c0c1[0] = 3;
    let mut s0 = [0u8; 1];
    s.write_all(&c0c1).is_ok() && s.read_exact(&mut s0).is_ok() && s0[0] == 3
}

/// nginx with libnginx-mod-rtmp on a port, recording every stream as FLV.
/// Its listening socket is bound here and handed over the way nginx takes
/// sockets on a binary upgrade (`$NGINX`, descriptor 3), so the port is
/// never free between the test choosing it and nginx listening on it.
/// (nginx 1.22 with the RTMP module takes it only with a master process:
/// without one it dies on SIGSEGV at start.)
pub struct NginxRtmp {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

pub const RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

impl NginxRtmp {
    /// Starts on a port of its own.
    pub fn start() -> Self {
        Self::start_in(0, temp_dir("nginx"))
    }

    /// Starts (again) on `port` (0: any) with its files in `dir`.
    pub fn start_in(port: u16, dir: PathBuf) -> Self {
        require("nginx", "nginx");
        assert!(Path::new(RTMP_MODULE).exists(), "{RTMP_MODULE} missing: apt-get install libnginx-mod-rtmp");
        std::fs::create_dir_all(dir.join("rec")).expect("rec dir");
        std::fs::create_dir_all(dir.join("logs")).expect("logs dir");
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the RTMP partner's port");
        let port = listener.local_addr().expect("addr").port();
        // The worker records as the user the test runs as (`user` is
        // ignored, with a warning, unless that is root).
        let conf = format!(
            "load_module {RTMP_MODULE};\ndaemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n\
             error_log {d}/logs/error.log info;\npid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; meta copy; record all; \
             record_path {d}/rec; record_unique on; }} }} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
        let mut cmd = Command::new("nginx");
        cmd.arg("-c").arg(dir.join("nginx.conf")).arg("-p").arg(&dir).env("NGINX", "3;");
        hand_over(&mut cmd, vec![std::os::fd::AsRawFd::as_raw_fd(&listener)]);
        let stderr = std::fs::File::create(dir.join("logs/stderr")).expect("nginx stderr");
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).spawn().expect("spawn nginx");
        // nginx holds it now: when nginx goes, the port refuses.
        drop(listener);
        let mut me = Self { port, dir, child: Some(child) };
        // Listening already; wait until nginx itself answers (the kernel
        // accepts into the socket's backlog before it does), so a leg's
        // first publish does not race its start.
        let end = Instant::now() + Duration::from_secs(5);
        while !answers_rtmp(port) {
            let exited = me.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > end {
                let log = |f: &str| std::fs::read_to_string(me.dir.join("logs").join(f)).unwrap_or_default();
                panic!("nginx does not answer on {port} ({exited:?}): {}{}", log("stderr"), log("error.log"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        me
    }

    /// Every recording of stream `key`, oldest first (one per publish).
    pub fn recordings(&self, key: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.join("rec"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.retain(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(key) && n.ends_with(".flv")));
        v.sort();
        v
    }

    pub fn recorded_bytes(&self, key: &str) -> u64 {
        self.recordings(key).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&c);
            let _ = c.wait();
        }
    }
}

impl Drop for NginxRtmp {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker before it exits (SIGKILL
        // would leave the worker holding the port).
        self.stop();
    }
}

/// Datagrams with their arrival times.
type Timed = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A plain UDP socket receiving datagrams on a background thread, each
/// kept with its arrival time.
pub struct UdpCapture {
    pub port: u16,
    data: Timed,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpCapture {
    pub fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind capture");
        let port = socket.local_addr().expect("addr").port();
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let data = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (Arc::clone(&data), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    d.lock().unwrap().push((Instant::now(), buf[..n].to_vec()));
                }
            }
        });
        Self { port, data, stop, thread: Some(thread) }
    }

    pub fn bytes(&self) -> u64 {
        self.data.lock().unwrap().iter().map(|(_, d)| d.len() as u64).sum()
    }

    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.data.lock().unwrap().iter().map(|(_, d)| d.clone()).collect()
    }

    /// Every datagram with its arrival time.
    pub fn timed(&self) -> Vec<(Instant, Vec<u8>)> {
        self.data.lock().unwrap().clone()
    }

    /// Stops and writes everything received to a file.
    pub fn finish(mut self) -> (PathBuf, Vec<Vec<u8>>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let grams = self.datagrams();
        let path = temp_dir("udp").join("capture.ts");
        std::fs::write(&path, grams.concat()).expect("write capture");
        (path, grams)
    }
}

/// What ffprobe says of a capture.
#[derive(Debug)]
pub struct Probe {
    pub codecs: Vec<String>,
    pub duration: f64,
}

pub fn ffprobe(path: &Path) -> Probe {
    require("ffprobe", "ffmpeg");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name:format=duration", "-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ffprobe on {}: {e}: {}", path.display(), String::from_utf8_lossy(&out.stderr)));
    let codecs = v["streams"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["codec_name"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let duration = v["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    Probe { codecs, duration }
}

/// The (service name, provider) of every programme ffprobe finds named in
/// an MPEG-TS capture's DVB SDT; empty when it carries none.
pub fn ts_services(path: &Path) -> Vec<(String, String)> {
    require("ffprobe", "ffmpeg");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "program_tags=service_name,service_provider", "-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ffprobe on {}: {e}: {}", path.display(), String::from_utf8_lossy(&out.stderr)));
    v["programs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let tag = |k: &str| p["tags"][k].as_str().map(String::from);
                    Some((tag("service_name")?, tag("service_provider").unwrap_or_default()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `title` ffprobe reads from a live stream's metadata as a player of
/// `url` sees it (an RTMP server's live application); `None` if it could not
/// play within 5 s or the stream has no title.
pub fn played_title(url: &str) -> Option<String> {
    require("ffprobe", "ffmpeg");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-rw_timeout", "5000000", "-show_entries", "format_tags=title", "-of", "json", url])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["format"]["tags"]["title"].as_str().map(String::from)
}

/// Asserts H.264 and AAC are present and the duration is within 10 % of `sent`.
pub fn assert_decodable(path: &Path, sent: Duration, what: &str) {
    let p = ffprobe(path);
    assert!(p.codecs.iter().any(|c| c == "h264"), "{what}: no H.264 in {}: {p:?}", path.display());
    assert!(p.codecs.iter().any(|c| c == "aac"), "{what}: no AAC in {}: {p:?}", path.display());
    let sent = sent.as_secs_f64();
    eprintln!("{what}: {:?}, {:.2} s captured of {sent:.2} s sent", p.codecs, p.duration);
    assert!(
        (p.duration - sent).abs() <= 0.10 * sent,
        "{what}: captured {:.2} s but {sent:.2} s was sent ({})",
        p.duration,
        path.display()
    );
}

/// An MPEG-TS check written here, independent of the code under test:
/// - continuity: per PID, the continuity counter of every packet carrying
///   payload follows its predecessor (one repeat allowed; a packet flagged
///   discontinuous starts afresh);
/// - PCR: per PID, never goes backwards;
/// - DTS (the PTS where a PES has no DTS): per elementary stream, never
///   goes backwards;
/// - PAT and PMT: the same tables throughout (one distinct section each).
#[derive(Debug, Default)]
pub struct TsReport {
    pub packets: usize,
    pub not_sync: usize,
    pub cc_errors: usize,
    pub pids: usize,
    pub pcrs: usize,
    pub pcr_backwards: usize,
    pub dts_backwards: usize,
    /// Distinct PAT sections seen.
    pub pats: usize,
    /// Distinct PMT sections seen.
    pub pmts: usize,
}

impl TsReport {
    /// Everything a partner's decoder and multiplexer would want.
    pub fn assert_clean(&self, what: &str) {
        assert!(self.packets > 200, "{what}: too little captured: {self:?}");
        assert_eq!(self.not_sync, 0, "{what}: packets without sync byte: {self:?}");
        assert_eq!(self.cc_errors, 0, "{what}: continuity counter errors: {self:?}");
        assert!(self.pcrs > 10, "{what}: no PCR: {self:?}");
        assert_eq!(self.pcr_backwards, 0, "{what}: PCR went backwards: {self:?}");
        assert_eq!(self.dts_backwards, 0, "{what}: DTS went backwards: {self:?}");
        assert_eq!((self.pats, self.pmts), (1, 1), "{what}: PAT/PMT changed: {self:?}");
    }
}

/// The section a PSI packet starts (after the pointer field), if it does.
fn psi_section(p: &[u8]) -> Option<&[u8]> {
    if p[1] & 0x40 == 0 {
        return None;
    }
    let mut at = 4;
    if p[3] & 0x20 != 0 {
        at += 1 + usize::from(p[4]);
    }
    let at = at + 1 + usize::from(*p.get(at)?);
    let len = (usize::from(*p.get(at + 1)? & 0x0f) << 8) | usize::from(*p.get(at + 2)?);
    p.get(at..at + 3 + len)
}

pub fn check_ts(data: &[u8]) -> TsReport {
    let mut r = TsReport::default();
    let mut last: HashMap<u16, u8> = HashMap::new();
    let mut pcr: HashMap<u16, u64> = HashMap::new();
    let mut pts: HashMap<u16, u64> = HashMap::new();
    let mut pats = std::collections::HashSet::new();
    let mut pmts = std::collections::HashSet::new();
    let mut pmt_pids = std::collections::HashSet::new();
    for p in data.chunks_exact(188) {
        r.packets += 1;
        if p[0] != 0x47 {
            r.not_sync += 1;
            continue;
        }
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        if pid == 0x1fff {
            continue;
        }
        let afc = (p[3] >> 4) & 0x3;
        let cc = p[3] & 0xf;
        let has_af = afc & 0x2 != 0 && p[4] > 0;
        let discontinuity = has_af && p[5] & 0x80 != 0;
        if has_af && p[5] & 0x10 != 0 && p[4] >= 7 {
            let b = &p[6..12];
            let base = (u64::from(b[0]) << 25)
                | (u64::from(b[1]) << 17)
                | (u64::from(b[2]) << 9)
                | (u64::from(b[3]) << 1)
                | (u64::from(b[4]) >> 7);
            let ext = (u64::from(b[4] & 1) << 8) | u64::from(b[5]);
            let v = base * 300 + ext;
            r.pcrs += 1;
            if pcr.insert(pid, v).is_some_and(|prev| v < prev) {
                r.pcr_backwards += 1;
            }
        }
        if pid == 0 {
            if let Some(sec) = psi_section(p) {
                // Program map PIDs: 4-byte entries after the 8-byte header, CRC last.
                for e in sec.get(8..sec.len().saturating_sub(4)).unwrap_or_default().chunks_exact(4) {
                    let number = (u16::from(e[0]) << 8) | u16::from(e[1]);
                    if number != 0 {
                        pmt_pids.insert((u16::from(e[2] & 0x1f) << 8) | u16::from(e[3]));
                    }
                }
                pats.insert(sec.to_vec());
            }
        } else if pmt_pids.contains(&pid) {
            if let Some(sec) = psi_section(p) {
                pmts.insert(sec.to_vec());
            }
        } else if let Some(pes) = simulcast::media::ts::pes_start(p)
            && let Some(v) = pes.dts
            && pts.insert(pid, v).is_some_and(|prev| v < prev)
        {
            r.dts_backwards += 1;
        }
        if afc & 0x1 == 0 {
            continue; // no payload: the counter does not advance
        }
        if let Some(prev) = last.get(&pid)
            && !discontinuity
            && cc != (prev + 1) & 0xf
            && cc != *prev
        {
            r.cc_errors += 1;
        }
        last.insert(pid, cc);
    }
    r.pids = last.len();
    r.pats = pats.len();
    r.pmts = pmts.len();
    r
}

/// ffmpeg decodes the whole capture without a single error, but for the
/// last picture, which the relay's shutdown may cut short.
pub fn decodes_cleanly(data: &[u8], what: &str) {
    let last_start = data
        .chunks_exact(188)
        .rposition(|p| simulcast::media::ts::pes_start(p).is_some_and(|s| s.is_video()))
        .expect("pictures in the capture");
    let data = &data[..last_start * 188];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.ts");
    std::fs::write(&path, data).unwrap();
    // Pictures keep their own timestamps, in 90 kHz: a switch may leave a
    // gap of a picture or two in the video's timestamps (decoders hold the
    // last picture), and ffmpeg's default constant-rate output in 1/25 s
    // would then round two pictures to one instant and report its own
    // muxing, not a decoding error. Sound keeps ffmpeg's checks.
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&path)
        .args(["-fps_mode", "passthrough", "-enc_time_base:v", "1:90000", "-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && errors.trim().is_empty(), "{what}: ffmpeg reports errors:\n{errors}");
}

/// A relay plus the time each leg first went on air, for duration checks.
pub struct Run {
    pub relay: Relay,
    pub started: Instant,
}

impl Run {
    pub async fn start(config: &Config) -> Self {
        let relay = Relay::start(&RelayPlan::from_config(config)).await.expect("relay starts");
        Self { relay, started: Instant::now() }
    }

    pub fn status(&self) -> RelayStatus {
        self.relay.status()
    }
}

pub mod browser;
pub mod cues;
pub mod feeds;
mod pictures;
#[allow(unused_imports)]
pub use pictures::{Picture, pictures};

/// A throwaway self-signed certificate for 127.0.0.1 (not a CA: rustls
/// refuses a CA certificate used as the server's own).
pub fn self_signed(cert: &Path, key: &Path, name: &str) {
    require("openssl", "openssl");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", &format!("/CN={name}"), "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
