//! Master control from the page: `POST /api/web/action` with a small JSON
//! body, for operators and admins. It goes through the coordinator exactly
//! as the RPC does (the same call, the same checks, the token's name as the
//! actor in the as-run log), and its refusals are the RPC's, in words.
//! Observers get 403 whatever they send. The token travels in a header, not
//! a cookie, so no other site can make a browser send an action.

use axum::http::StatusCode;
use tonic::{Code, Status};

use crate::api::auth::{Caller, Role};
use crate::coordinator::Coordinator;
use crate::media::failover::SourceChoice;
use crate::schedule::{Action, EventId};

/// The longest action body taken.
pub const MAX_BODY: usize = 4096;

/// What the page asks for.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The event.
    pub event_id: String,
    /// `arm`, `take`, `hold`, `extend`, `end`, `abort` or `source`.
    pub action: String,
    /// For `extend`: by how many seconds.
    #[serde(default)]
    pub by_s: Option<i64>,
    /// For `source`: `AUTO`, `PRIMARY`, `BACKUP` or `SLATE`.
    #[serde(default)]
    pub source: Option<String>,
}

/// An action the page may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageAction {
    /// One of the event's transitions, `Extend` with its length.
    Act(Action, Option<chrono::Duration>),
    /// A source switch.
    Source(SourceChoice),
}

/// Reads `body`: the event and the action, or why not.
pub fn parse(body: &[u8]) -> Result<(EventId, PageAction), Status> {
    if body.len() > MAX_BODY {
        return Err(Status::invalid_argument(format!("an action is at most {MAX_BODY} bytes")));
    }
    let r: Request =
        serde_json::from_slice(body).map_err(|e| Status::invalid_argument(format!("not an action: {e}")))?;
    let id = crate::api::events::event_id(&r.event_id)?;
    let action = match r.action.as_str() {
        "arm" => PageAction::Act(Action::Arm, None),
        "take" => PageAction::Act(Action::Take, None),
        "hold" => PageAction::Act(Action::Hold, None),
        "end" => PageAction::Act(Action::End, None),
        "abort" => PageAction::Act(Action::Abort, None),
        "extend" => {
            let s = r
                .by_s
                .filter(|s| (1..=86_400).contains(s))
                .ok_or_else(|| Status::invalid_argument("extend: by_s, 1 to 86400 seconds"))?;
            PageAction::Act(Action::Extend, Some(chrono::Duration::seconds(s)))
        }
        "source" => PageAction::Source(match r.source.as_deref() {
            Some("AUTO") => SourceChoice::Auto,
            Some("PRIMARY") => SourceChoice::Primary,
            Some("BACKUP") => SourceChoice::Backup,
            Some("SLATE") => SourceChoice::Slate,
            _ => return Err(Status::invalid_argument("source: one of AUTO, PRIMARY, BACKUP, SLATE")),
        }),
        other => {
            return Err(Status::invalid_argument(format!(
                "`{}` is not an action; expected arm, take, hold, extend, end, abort or source",
                other.escape_debug()
            )));
        }
    };
    Ok((id, action))
}

/// Does `action` for `caller`: the event's state after it.
pub async fn run(
    coordinator: &Coordinator,
    caller: &Caller,
    id: EventId,
    action: PageAction,
) -> Result<crate::schedule::Event, Status> {
    if caller.role < Role::Operator {
        return Err(Status::permission_denied(format!(
            "`{}` has role {}; master control needs operator",
            caller.name, caller.role
        )));
    }
    let event = match action {
        PageAction::Act(a, by) => coordinator.act(id, a, by, &caller.name).await?,
        PageAction::Source(choice) => coordinator.switch_source(id, choice, &caller.name).await?,
    };
    Ok(event)
}

/// The HTTP status for a gRPC one.
pub fn http_status(s: &Status) -> StatusCode {
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_is_read_or_refused_naming_the_mistake() {
        let (id, a) = parse(br#"{"event_id":"ev-0123456789ab","action":"extend","by_s":300}"#).unwrap();
        assert_eq!(id.0, "ev-0123456789ab");
        assert_eq!(a, PageAction::Act(Action::Extend, Some(chrono::Duration::seconds(300))));
        let (_, a) = parse(br#"{"event_id":"ev-0123456789ab","action":"source","source":"BACKUP"}"#).unwrap();
        assert_eq!(a, PageAction::Source(SourceChoice::Backup));
        for (body, says) in [
            (&br#"{"event_id":"ev-0123456789ab","action":"launch"}"#[..], "`launch` is not an action"),
            (br#"{"event_id":"ev-0123456789ab","action":"extend"}"#, "by_s"),
            (br#"{"event_id":"ev-0123456789ab","action":"source","source":"moon"}"#, "AUTO"),
            (br#"{"event_id":"ev-0123456789ab","action":"take","as":"admin"}"#, "unknown field"),
            (br#"{"event_id":"nope","action":"take"}"#, "event_id"),
            (b"take", "not an action"),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument);
            assert!(e.message().contains(says), "{}: {}", String::from_utf8_lossy(body), e.message());
        }
        assert!(parse(&vec![b' '; MAX_BODY + 1]).unwrap_err().message().contains("at most"));
    }
}
