//! Identity and roles. Callers present `authorization: Bearer <token>`; the
//! daemon knows tokens only by their SHA-256, from the store and the config
//! file, and maps each to a name (the as-run actor) and a role.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read and watch.
    Observer,
    /// Master control: arm, take, hold, extend, end, abort, switch source, rehearsals.
    Operator,
    /// Channels and everything else.
    Admin,
}

impl Role {
    /// Parses `observer`, `operator` or `admin`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "observer" => Some(Role::Observer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Observer => "observer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The authenticated caller, put in each request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name: the actor in the as-run log.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// Hex SHA-256 of a token's text.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (`sct_` and 64 hex digits, from the OS's CSPRNG).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("sct_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// Failed logins a peer may make in a row before it is refused for a while.
pub const FREE_FAILURES: u32 = 10;
/// The longest a peer is refused.
pub const MAX_BLOCK: Duration = Duration::from_secs(60);

/// Why a login failed, for the log and `simulcast_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No `authorization` header.
    Missing,
    /// A header that is not `Bearer <token>`.
    Malformed,
    /// A token the daemon does not know.
    UnknownToken,
    /// Refused unheard: the peer failed too often.
    Blocked,
}

impl Failure {
    /// Every reason, in a fixed order.
    pub const ALL: [Failure; 4] = [Failure::Missing, Failure::Malformed, Failure::UnknownToken, Failure::Blocked];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Malformed => "malformed",
            Failure::UnknownToken => "unknown_token",
            Failure::Blocked => "blocked",
        }
    }
}

/// One peer's failed logins in a row.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    until: Option<Instant>,
    last: Instant,
}

/// Failed logins: each one counted and logged with the peer's address
/// (never the token); a peer that fails [`FREE_FAILURES`] times in a row
/// is then refused unheard, whatever it sends, for 1 s, then 2, 4, ... up
/// to [`MAX_BLOCK`] after each further failure, so guessing tokens goes at
/// a crawl. A good token resets its peer.
#[derive(Debug, Default)]
pub struct LoginGuard {
    peers: Mutex<HashMap<IpAddr, Strikes>>,
    counts: [AtomicU64; 4],
}

impl LoginGuard {
    /// How many logins failed for `why` since the daemon started.
    pub fn count(&self, why: Failure) -> u64 {
        self.counts[why as usize].load(Ordering::Relaxed)
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Strikes>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err` while `peer` is blocked.
    fn admit(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), Status> {
        let Some(ip) = peer else { return Ok(()) };
        let until = self.peers().get(&ip).and_then(|s| s.until).filter(|u| *u > now);
        match until {
            None => Ok(()),
            Some(u) => {
                self.counts[Failure::Blocked as usize].fetch_add(1, Ordering::Relaxed);
                let secs = u.saturating_duration_since(now).as_secs_f64().ceil().max(1.0);
                Err(Status::resource_exhausted(format!(
                    "too many failed logins from {ip}: refused for {secs:.0} s more"
                )))
            }
        }
    }

    /// Records a failure of `peer`; blocks it past the free ones.
    fn failed(&self, peer: Option<IpAddr>, why: Failure, now: Instant) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
        let peer_text = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        let Some(ip) = peer else {
            tracing::warn!(peer = %peer_text, reason = why.as_str(), "Login failed.");
            return;
        };
        let mut peers = self.peers();
        // Forget peers quiet for long, so the table stays small.
        if peers.len() > 10_000 {
            peers.retain(|_, s| now.saturating_duration_since(s.last) < MAX_BLOCK * 10);
        }
        let s = peers.entry(ip).or_insert(Strikes { failures: 0, until: None, last: now });
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        if s.failures <= FREE_FAILURES {
            tracing::warn!(peer = %ip, reason = why.as_str(), failures = s.failures, "Login failed.");
        } else {
            let block = Duration::from_secs(1u64 << (s.failures - FREE_FAILURES - 1).min(6)).min(MAX_BLOCK);
            s.until = Some(now + block);
            tracing::warn!(
                peer = %ip,
                reason = why.as_str(),
                failures = s.failures,
                refused_for_s = block.as_secs(),
                "Login failed again: the peer is refused for a while."
            );
        }
    }

    fn succeeded(&self, peer: Option<IpAddr>) {
        if let Some(ip) = peer {
            let mut peers = self.peers();
            if peers.contains_key(&ip) {
                peers.remove(&ip);
            }
        }
    }
}

/// Known token hashes; shared by the interceptor and whoever adds tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<RwLock<HashMap<String, Caller>>>,
    guard: Arc<LoginGuard>,
}

impl Tokens {
    /// Adds (or replaces) a token by its hash.
    pub fn insert(&self, sha256: &str, caller: Caller) {
        self.by_hash.write().unwrap_or_else(|e| e.into_inner()).insert(sha256.to_ascii_lowercase(), caller);
    }

    /// How many tokens are known.
    pub fn len(&self) -> usize {
        self.by_hash.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no token is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, token: &str) -> Option<Caller> {
        self.by_hash.read().unwrap_or_else(|e| e.into_inner()).get(&hash_token(token)).cloned()
    }

    /// The failed logins seen by this set's interceptors.
    pub fn guard(&self) -> Arc<LoginGuard> {
        Arc::clone(&self.guard)
    }

    /// The caller an `authorization` header value names (`Bearer <token>`),
    /// from `peer`: the one check behind the gRPC interceptor and the web
    /// page. A failure is counted and logged (never the token); a peer
    /// that keeps failing is refused unheard (see [`LoginGuard`]).
    pub fn authenticate(&self, header: Option<&[u8]>, peer: Option<IpAddr>) -> Result<Caller, Status> {
        let now = Instant::now();
        self.guard.admit(peer, now)?;
        let fail = |why: Failure, message: &str| {
            self.guard.failed(peer, why, now);
            Status::unauthenticated(message)
        };
        let header = header.ok_or_else(|| fail(Failure::Missing, "missing `authorization: Bearer <token>`"))?;
        let text =
            std::str::from_utf8(header).map_err(|_| fail(Failure::Malformed, "authorization header is not text"))?;
        let token = text
            .strip_prefix("Bearer ")
            .ok_or_else(|| fail(Failure::Malformed, "authorization must be `Bearer <token>`"))?;
        let caller = self.lookup(token.trim()).ok_or_else(|| fail(Failure::UnknownToken, "unknown token"))?;
        self.guard.succeeded(peer);
        Ok(caller)
    }

    /// A tonic interceptor: `UNAUTHENTICATED` without a known bearer token,
    /// otherwise the [`Caller`] goes into the request's extensions. A peer
    /// that keeps failing gets `RESOURCE_EXHAUSTED` unheard (see
    /// [`LoginGuard`]).
    pub fn interceptor(&self) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let me = self.clone();
        move |mut req: Request<()>| {
            let peer = req.remote_addr().map(|a| a.ip());
            let header = req.metadata().get("authorization").map(|v| v.as_bytes());
            let caller = me.authenticate(header, peer)?;
            req.extensions_mut().insert(caller);
            Ok(req)
        }
    }
}

/// The caller of `req`, if it holds at least `role`.
pub fn require<T>(req: &Request<T>, role: Role) -> Result<Caller, Status> {
    let caller =
        req.extensions().get::<Caller>().cloned().ok_or_else(|| Status::unauthenticated("no authenticated caller"))?;
    if caller.role >= role {
        Ok(caller)
    } else {
        Err(Status::permission_denied(format!("`{}` has role {}; this needs {role}", caller.name, caller.role)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_known_by_hash_and_roles_nest() {
        let tokens = Tokens::default();
        let t = new_token().unwrap();
        assert!(t.starts_with("sct_") && t.len() == 68);
        tokens.insert(&hash_token(&t), Caller { name: "night-shift".into(), role: Role::Operator });
        let check = tokens.interceptor();
        let mut req = Request::new(());
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        let req = check(req).unwrap();
        assert!(require(&req, Role::Observer).is_ok());
        assert!(require(&req, Role::Operator).is_ok());
        assert_eq!(require(&req, Role::Admin).unwrap_err().code(), tonic::Code::PermissionDenied);

        let mut bad = Request::new(());
        bad.metadata_mut().insert("authorization", "Bearer sct_nope".parse().unwrap());
        assert_eq!(check(bad).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(check(Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
