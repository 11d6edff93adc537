//! systemd's service notification protocol (`sd_notify(3)`), spoken
//! directly: a datagram of `KEY=VALUE` lines to the Unix socket systemd
//! names in `$NOTIFY_SOCKET`. With `Type=notify` the unit is started when
//! the daemon says `READY=1`, which it does once health is SERVING (what
//! `/healthz` reports); with `WatchdogSec=` it pings `WATCHDOG=1` at half
//! that interval, only while SERVING, so systemd restarts a daemon that
//! stays unhealthy or hangs. Without `$NOTIFY_SOCKET` nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where systemd listens for this service's notifications.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for, if any (`@name` is in the
    /// abstract namespace), with the watchdog interval `$WATCHDOG_USEC`
    /// sets for this process (`$WATCHDOG_PID`, when set, must be ours).
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_str()?;
        let to = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            }
            None => SocketAddr::from_pathname(path).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        let ours = std::env::var("WATCHDOG_PID").map_or(true, |p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(Duration::from_micros);
        Some(Self { socket, to, watchdog })
    }

    /// How often to ping the watchdog: half the interval systemd set.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Sends `state` (`READY=1\nSTATUS=...`); a failure is logged, never fatal.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.to) {
            tracing::warn!(error = %e, "Cannot notify systemd.");
        }
    }
}

/// Follows `serving` (the health `/healthz` reports) for systemd until
/// `serving`'s sender is gone: `READY=1` the first time it is SERVING, a
/// `STATUS=` line on each change, `WATCHDOG=1` while SERVING.
pub async fn follow(n: Notifier, mut serving: tokio::sync::watch::Receiver<bool>) {
    let mut ready = false;
    let mut last = None;
    let mut tick = n.watchdog_every().map(tokio::time::interval);
    loop {
        let now = *serving.borrow_and_update();
        if last != Some(now) {
            let status =
                if now { "STATUS=Serving: relaying and answering" } else { "STATUS=NOT_SERVING (see the log)" };
            if now && !ready {
                ready = true;
                n.notify(&format!("READY=1\n{status}\nMAINPID={}", std::process::id()));
            } else {
                n.notify(status);
            }
            last = Some(now);
        }
        let ping = async {
            match tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = serving.changed() => if r.is_err() { break },
            () = ping => if now { n.notify("WATCHDOG=1") },
        }
    }
}

/// The first descriptor systemd hands over (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Taken once: a second call finds nothing.
static LISTEN_FDS_TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The sockets systemd handed over (socket activation, `sd_listen_fds(3)`),
/// each with its `FileDescriptorName=` (`unknown` when the unit gives
/// none). They are this process's only if `$LISTEN_PID` is its pid (a child
/// never takes its parent's), and are taken once; each is made
/// close-on-exec, so no pipeline or peer started later inherits it.
pub fn listen_fds() -> Vec<(String, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let ours = std::env::var("LISTEN_PID").is_ok_and(|p| p.trim() == std::process::id().to_string());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.trim().parse::<i32>().ok()).unwrap_or(0);
    if !ours || count <= 0 || LISTEN_FDS_TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Vec::new();
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let names: Vec<&str> = names.split(':').collect();
    (0..count.min(64))
        .filter_map(|i| {
            let fd = LISTEN_FDS_START + i;
            let name = names.get(i as usize).filter(|n| !n.is_empty()).map_or("unknown", |n| n).to_owned();
            // SAFETY: fcntl on a descriptor number; it touches no memory,
            // and fails harmlessly (EBADF) on a number that is not open.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            // SAFETY: as above.
            if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
                tracing::warn!(fd, name, "systemd said it handed over this descriptor, but it is not open; ignored.");
                return None;
            }
            // SAFETY: systemd handed `fd` (open, checked above) to this
            // process, whose pid is $LISTEN_PID, and nothing else in it
            // owns it: the flag above lets it be taken only once.
            Some((name, unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
        })
        .collect()
}

/// Whether `fd` is a socket listening for connections (`SO_ACCEPTCONN`):
/// what a socket handed over for a TCP port must be.
pub fn is_listening(fd: &impl std::os::fd::AsFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `on`, a c_int
    // that lives across the call; `fd` is borrowed open.
    let r = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut on).cast(),
            &raw mut len,
        )
    };
    r == 0 && on != 0
}
