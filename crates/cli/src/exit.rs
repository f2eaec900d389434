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

/// The status for a failed command.
pub fn status_of(e: &anyhow::Error) -> u8 {
    // `downcast_ref` sees through `context` layers to the error and the contexts themselves.
    if e.downcast_ref::<Unreachable>().is_some() {
        return UNREACHABLE;
    }
    if e.downcast_ref::<Invalid>().is_some() {
        return INVALID;
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
    }
}
