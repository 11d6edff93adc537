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
