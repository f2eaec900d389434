//! Exit statuses: what went wrong, for scripts, in one byte.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the execution ran and failed (or cancelled, compensated), or any other error |
//! | 2 | invalid input or usage: a bad flag, file, document or pattern input; an unknown pattern or version (the server's INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, OUT_OF_RANGE) |
//! | 3 | Nexus unreachable: cannot connect, UNAVAILABLE, or no answer within `--timeout` |
//! | 4 | not authorized: UNAUTHENTICATED or PERMISSION_DENIED |
//! | 5 | refused for load: RESOURCE_EXHAUSTED (too many in flight, a cost budget), retry later |

use std::process::ExitCode;

use tonic::Code;

pub const FAILED: u8 = 1;
pub const INVALID: u8 = 2;
pub const UNREACHABLE: u8 = 3;
pub const UNAUTHORIZED: u8 = 4;
pub const EXHAUSTED: u8 = 5;

/// A gRPC error from Nexus, as the CLI prints it.
#[derive(Debug)]
pub struct Rpc {
    pub code: Code,
    /// The error is an execution's outcome (it has an execution id), not a refused request.
    pub execution_failed: bool,
    pub text: String,
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Rpc {}

/// Nexus could not be reached at all.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// Input the CLI refused before calling anything (a file, JSON, a flag's value).
#[derive(Debug)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// An execution that ran and did not succeed, already printed as the command's output (its
/// timeline, or with `--json` its execution object, whose `status` and `error` say why): with
/// `--json` nothing more is printed, so standard output holds one object.
#[derive(Debug)]
pub struct ExecutionFailed {
    pub text: String,
}

impl std::fmt::Display for ExecutionFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for ExecutionFailed {}

/// The error of a failed command as `--json` prints it, on standard output (one object, so a
/// script reads the same stream whatever happened):
/// `{"error": {"code": "NOT_FOUND", "message": "...", "exit_status": 2}}`. `code` is a gRPC
/// status name: the server's, or for what the CLI refused itself `INVALID_ARGUMENT` (a file, a
/// flag), `UNAVAILABLE` (Nexus unreachable) or `UNKNOWN`. `None` when the failure was already
/// printed as an execution object ([`ExecutionFailed`]).
pub fn error_json(e: &anyhow::Error) -> Option<serde_json::Value> {
    if e.downcast_ref::<ExecutionFailed>().is_some() {
        return None;
    }
    let code = if let Some(rpc) = e.downcast_ref::<Rpc>() {
        rpc.code
    } else if e.downcast_ref::<Unreachable>().is_some() {
        Code::Unavailable
    } else if e.downcast_ref::<Invalid>().is_some() {
        Code::InvalidArgument
    } else {
        Code::Unknown
    };
    Some(serde_json::json!({
        "error": {
            "code": nexus_server::code_name(code),
            "message": format!("{e:#}"),
            "exit_status": status_of(e),
        }
    }))
}

/// The status for a failed command.
pub fn status_of(e: &anyhow::Error) -> u8 {
    // `downcast_ref` sees through `context` layers to the error and the contexts themselves.
    if e.downcast_ref::<Unreachable>().is_some() {
        return UNREACHABLE;
    }
    if e.downcast_ref::<Invalid>().is_some() {
        return INVALID;
    }
    if e.downcast_ref::<ExecutionFailed>().is_some() {
        return FAILED;
    }
    let Some(rpc) = e.downcast_ref::<Rpc>() else { return FAILED };
    if rpc.execution_failed {
        return FAILED;
    }
    match rpc.code {
        Code::Unauthenticated | Code::PermissionDenied => UNAUTHORIZED,
        Code::Unavailable | Code::DeadlineExceeded => UNREACHABLE,
        Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition | Code::OutOfRange => {
            INVALID
        }
        Code::ResourceExhausted => EXHAUSTED,
        _ => FAILED,
    }
}

pub fn code(status: u8) -> ExitCode {
    ExitCode::from(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(code: Code, execution_failed: bool) -> anyhow::Error {
        anyhow::Error::new(Rpc { code, execution_failed, text: String::new() })
    }

    #[test]
    fn each_kind_of_failure_has_its_status() {
        assert_eq!(status_of(&rpc(Code::Unauthenticated, false)), UNAUTHORIZED);
        assert_eq!(status_of(&rpc(Code::PermissionDenied, false)), UNAUTHORIZED);
        assert_eq!(status_of(&rpc(Code::NotFound, false)), INVALID);
        assert_eq!(status_of(&rpc(Code::InvalidArgument, false)), INVALID);
        assert_eq!(status_of(&rpc(Code::Unavailable, false)), UNREACHABLE);
        assert_eq!(status_of(&rpc(Code::ResourceExhausted, false)), EXHAUSTED);
        // A backend's UNAVAILABLE that failed the execution is the execution's failure.
        assert_eq!(status_of(&rpc(Code::Unavailable, true)), FAILED);
        assert_eq!(status_of(&rpc(Code::InvalidArgument, true)), FAILED);
        let wrapped = anyhow::Error::new(std::io::Error::other("refused")).context(Unreachable("x".into()));
        assert_eq!(status_of(&wrapped), UNREACHABLE);
        assert_eq!(status_of(&anyhow::anyhow!("something else")), FAILED);
        assert_eq!(status_of(&anyhow::Error::new(Invalid("bad".into())).context("reading x")), INVALID);
        let failed = anyhow::Error::new(ExecutionFailed { text: String::new() });
        assert_eq!(status_of(&failed), FAILED);
    }

    #[test]
    fn json_errors_have_one_shape() {
        let e = anyhow::Error::new(Rpc { code: Code::NotFound, execution_failed: false, text: "no such".into() });
        let json = error_json(&e).unwrap_or_default();
        assert_eq!(json, serde_json::json!({"error": {"code": "NOT_FOUND", "message": "no such", "exit_status": 2}}));
        let e = anyhow::Error::new(Invalid("not JSON".into())).context("reading input.json");
        let json = error_json(&e).unwrap_or_default();
        assert_eq!(json["error"]["code"], "INVALID_ARGUMENT");
        assert_eq!(json["error"]["message"], "reading input.json: not JSON");
        assert_eq!(json["error"]["exit_status"], 2);
        let e = anyhow::Error::new(std::io::Error::other("refused")).context(Unreachable("cannot reach".into()));
        assert_eq!(error_json(&e).unwrap_or_default()["error"]["code"], "UNAVAILABLE");
        assert_eq!(error_json(&anyhow::anyhow!("other")).unwrap_or_default()["error"]["code"], "UNKNOWN");
        let shown = anyhow::Error::new(ExecutionFailed { text: String::new() });
        assert_eq!(error_json(&shown), None, "an execution's failure is its execution object");
    }
}
