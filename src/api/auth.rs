//! Identity and roles. Callers present `authorization: Bearer <token>`; the
//! daemon knows tokens only by their SHA-256, from the store and the config
//! file, and maps each to a name (the as-run actor) and a role.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

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

/// Known token hashes; shared by the interceptor and whoever adds tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: Arc<RwLock<HashMap<String, Caller>>>,
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

    /// A tonic interceptor: `UNAUTHENTICATED` without a known bearer token,
    /// otherwise the [`Caller`] goes into the request's extensions.
    pub fn interceptor(&self) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let me = self.clone();
        move |mut req: Request<()>| {
            let header = req
                .metadata()
                .get("authorization")
                .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
            let text = header.to_str().map_err(|_| Status::unauthenticated("authorization header is not text"))?;
            let token = text
                .strip_prefix("Bearer ")
                .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
            let caller = me.lookup(token.trim()).ok_or_else(|| Status::unauthenticated("unknown token"))?;
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
