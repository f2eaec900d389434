//! API errors and the one place that maps them to gRPC status codes.

use nexus_core::{Diagnostic, pb};
use prost::Message;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", describe_diagnostics(.0))]
    InvalidPattern(Vec<Diagnostic>),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the pattern store is unavailable: {0}")]
    Store(nexus_store::Error),
    #[error("{0}")]
    Engine(nexus_engine::EngineError),
    /// An execution that did not succeed: its failing step's code, its message, the whole
    /// response in the details and its id in the metadata.
    #[error("{}", .error.message)]
    Execution { error: nexus_engine::ExecError, response: Box<pb::ExecutePatternResponse> },
}

impl From<nexus_store::Error> for ApiError {
    fn from(e: nexus_store::Error) -> Self {
        Self::Store(e)
    }
}

impl From<nexus_engine::EngineError> for ApiError {
    fn from(e: nexus_engine::EngineError) -> Self {
        Self::Engine(e)
    }
}

/// Metadata (header or trailer) naming the execution an ExecutePattern call ran.
pub const EXECUTION_ID_HEADER: &str = "nexus-execution-id";

/// Errors listed in a status message; every diagnostic is in the status details. Metadata is
/// limited (8 KiB by default in grpcio and grpc-go), so the message stays short.
const MESSAGE_DIAGNOSTICS: usize = 10;

fn describe_diagnostics(diags: &[Diagnostic]) -> String {
    let errors: Vec<String> = diags.iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
    let mut message = format!(
        "the pattern has {} problem(s):\n{}",
        errors.len(),
        errors.iter().take(MESSAGE_DIAGNOSTICS).cloned().collect::<Vec<_>>().join("\n")
    );
    if errors.len() > MESSAGE_DIAGNOSTICS {
        message.push_str(&format!("\n… and {} more, listed in the details", errors.len() - MESSAGE_DIAGNOSTICS));
    }
    message
}

/// `google.rpc.Status`, the conventional payload of the `grpc-status-details-bin` trailer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// A status whose details carry `detail` (packed in `google.rpc.Status`), so clients get the
/// structured form (every diagnostic, the failed execution) and not only the message.
pub fn status_with_detail(code: Code, message: String, type_name: &str, detail: &impl Message) -> Status {
    let rpc = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: format!("{TYPE_URL_PREFIX}{type_name}"),
            value: detail.encode_to_vec(),
        }],
    };
    Status::with_details(code, message, rpc.encode_to_vec().into())
}

/// Longest status message, in bytes. A status travels in HTTP/2 headers, and clients refuse
/// large ones (grpcio and grpc-go: 8 KiB of metadata by default), so whatever a request echoes
/// back (a name, a version, a query) is cut to fit.
pub const MAX_STATUS_MESSAGE: usize = 2048;

/// Most bytes of diagnostics in a status's details (metadata too, base64-encoded); the rest are
/// counted in a last diagnostic, and ValidatePattern, which answers in the body, lists them all.
const MAX_DETAIL_DIAGNOSTIC_BYTES: usize = 4096;

/// `message`, cut at a character boundary to at most [`MAX_STATUS_MESSAGE`] bytes, saying so.
pub fn bounded_message(mut message: String) -> String {
    if message.len() > MAX_STATUS_MESSAGE {
        let total = message.len();
        let mut end = MAX_STATUS_MESSAGE - 64;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(&format!("… ({} more bytes cut)", total - end));
    }
    message
}

/// The diagnostics a status's details carry: as many as fit the budget, then one that counts
/// the rest.
fn detail_diagnostics(diags: &[Diagnostic]) -> Vec<pb::Diagnostic> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for (i, d) in diags.iter().enumerate() {
        let d = pb::Diagnostic::from(d);
        bytes += d.encoded_len() + 2;
        if bytes > MAX_DETAIL_DIAGNOSTIC_BYTES {
            out.push(pb::Diagnostic {
                path: String::new(),
                message: format!(
                    "… and {} more, not listed here to keep the status small (ValidatePattern lists every one)",
                    diags.len() - i
                ),
                severity: pb::Severity::Error as i32,
            });
            break;
        }
        out.push(d);
    }
    out
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let message = bounded_message(e.to_string());
        match e {
            ApiError::InvalidPattern(diags) => {
                let detail = pb::ValidatePatternResponse { valid: false, diagnostics: detail_diagnostics(&diags) };
                status_with_detail(Code::InvalidArgument, message, "nexus.v1.ValidatePatternResponse", &detail)
            }
            ApiError::InvalidArgument(_) => Status::invalid_argument(message),
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::AlreadyExists(_) => Status::already_exists(message),
            ApiError::FailedPrecondition(_) => Status::failed_precondition(message),
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::ResourceExhausted(_) => Status::resource_exhausted(message),
            ApiError::Unavailable(_) => Status::unavailable(message),
            ApiError::Store(_) => {
                tracing::error!("{message}");
                Status::unavailable(message)
            }
            ApiError::Engine(e) => match e {
                nexus_engine::EngineError::InvalidInput(_) => Status::invalid_argument(message),
                nexus_engine::EngineError::IdempotencyKeyTaken { .. } => Status::already_exists(message),
                nexus_engine::EngineError::Journal(_) => {
                    tracing::error!("{message}");
                    Status::unavailable(message)
                }
            },
            ApiError::Execution { error, response } => {
                let id = tonic::metadata::MetadataValue::try_from(response.execution_id.as_str()).ok();
                let mut status =
                    status_with_detail(error.code, message, "nexus.v1.ExecutePatternResponse", response.as_ref());
                if let Some(mut id) = id {
                    id.set_sensitive(true);
                    status.metadata_mut().insert(EXECUTION_ID_HEADER, id);
                }
                status
            }
        }
    }
}
