//! Engine records and catalog entries into their `nexus.v1` messages (the API boundary: proto types
//! stop here).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use nexus_core::{Action, ServiceEntry, pb, value};
use nexus_engine::{
    Event, ExecError, ExecutionEvent, ExecutionRecord, ExecutionStatus, StepRecord, StepResponse, StepStatus, code_name,
};

pub fn status(s: ExecutionStatus) -> pb::ExecutionStatus {
    match s {
        ExecutionStatus::Pending => pb::ExecutionStatus::Pending,
        ExecutionStatus::Running => pb::ExecutionStatus::Running,
        ExecutionStatus::Succeeded => pb::ExecutionStatus::Succeeded,
        ExecutionStatus::Failed => pb::ExecutionStatus::Failed,
        ExecutionStatus::Cancelled => pb::ExecutionStatus::Cancelled,
        ExecutionStatus::Compensated => pb::ExecutionStatus::Compensated,
    }
}

pub fn status_from_pb(s: i32) -> Option<ExecutionStatus> {
    Some(match pb::ExecutionStatus::try_from(s).ok()? {
        pb::ExecutionStatus::Unspecified => return None,
        pb::ExecutionStatus::Pending => ExecutionStatus::Pending,
        pb::ExecutionStatus::Running => ExecutionStatus::Running,
        pb::ExecutionStatus::Succeeded => ExecutionStatus::Succeeded,
        pb::ExecutionStatus::Failed => ExecutionStatus::Failed,
        pb::ExecutionStatus::Cancelled => ExecutionStatus::Cancelled,
        pb::ExecutionStatus::Compensated => ExecutionStatus::Compensated,
    })
}

fn step_status(s: StepStatus) -> pb::StepStatus {
    match s {
        StepStatus::Pending => pb::StepStatus::Pending,
        StepStatus::Running => pb::StepStatus::Running,
        StepStatus::Succeeded => pb::StepStatus::Succeeded,
        StepStatus::Failed => pb::StepStatus::Failed,
        StepStatus::Skipped => pb::StepStatus::Skipped,
        StepStatus::Cancelled => pb::StepStatus::Cancelled,
    }
}

pub fn error(e: &ExecError) -> pb::ExecutionError {
    pb::ExecutionError {
        code: code_name(e.code).to_string(),
        message: e.message.clone(),
        step_id: e.step_id.as_deref().unwrap_or_default().to_string(),
    }
}

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    t.into()
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

pub fn response(r: &ExecutionRecord) -> pb::ExecutePatternResponse {
    pb::ExecutePatternResponse {
        execution_id: String::from(&*r.id),
        status: status(r.status) as i32,
        output: r.output.as_ref().map(record_struct),
        error: r.error.as_ref().map(error),
    }
}

fn record_struct(v: &nexus_engine::RecordValue) -> prost_types::Struct {
    value::cel_to_struct(&v.cel())
}

fn message_struct(m: &prost_reflect::DynamicMessage) -> Option<prost_types::Struct> {
    value::serde_to_struct(&value::message_to_serde(m))
}

/// A recorded message, decoded to be shown (the executor decoded it once already: a record only
/// holds messages that decode).
fn payload_struct(p: &nexus_engine::Payload) -> Option<prost_types::Struct> {
    p.decode().ok().as_ref().and_then(message_struct)
}

fn payload_value(p: &nexus_engine::Payload) -> prost_types::Value {
    p.decode()
        .map(|m| value::serde_to_struct_value(&value::message_to_serde(&m)))
        .unwrap_or(prost_types::Value { kind: Some(prost_types::value::Kind::NullValue(0)) })
}

fn list_struct(key: &str, values: Vec<prost_types::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: [(
            key.to_string(),
            prost_types::Value { kind: Some(prost_types::value::Kind::ListValue(prost_types::ListValue { values })) },
        )]
        .into_iter()
        .collect(),
    }
}

fn response_value(r: &StepResponse) -> prost_types::Value {
    let as_value =
        |s: Option<prost_types::Struct>| prost_types::Value { kind: s.map(prost_types::value::Kind::StructValue) };
    as_value(response_struct(r))
}

/// A step's response as a `Struct`: the message; `{messages: [...]}` for a collected stream;
/// `{last: ..., count: n}` for a forwarded one; `{items: [...]}` for a for_each step.
fn response_struct(r: &StepResponse) -> Option<prost_types::Struct> {
    match r {
        StepResponse::Message(m) => payload_struct(m),
        StepResponse::Stream(ms) => Some(list_struct("messages", ms.iter().map(payload_value).collect())),
        StepResponse::Forwarded { last, count } => {
            let mut fields = std::collections::BTreeMap::new();
            fields.insert(
                "count".to_string(),
                prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(*count as f64)) },
            );
            if let Some(m) = last {
                fields.insert("last".to_string(), payload_value(m));
            }
            Some(prost_types::Struct { fields })
        }
        StepResponse::Items(items) => Some(list_struct("items", items.iter().map(response_value).collect())),
        StepResponse::Event(event) => Some(record_struct(event)),
        StepResponse::TimedOut(_) | StepResponse::Cancelled(_) => None,
        StepResponse::Pattern { execution_id, output } => {
            let mut s = record_struct(output);
            s.fields.insert(
                "_execution_id".to_string(),
                prost_types::Value { kind: Some(prost_types::value::Kind::StringValue(execution_id.to_string())) },
            );
            Some(s)
        }
    }
}

fn step(s: &StepRecord, with_payloads: bool) -> pb::StepRun {
    let response = if with_payloads { s.response.as_ref().and_then(response_struct) } else { None };
    pb::StepRun {
        step_id: s.step_id.to_string(),
        call: s.call.to_string(),
        status: step_status(s.status) as i32,
        started_at: s.started_at.map(timestamp),
        duration: Some(duration(s.duration)),
        request: if with_payloads { s.request.as_ref().and_then(payload_struct) } else { None },
        response,
        error: s.error.as_ref().map(error),
        compensation: s.compensation.as_ref().map(|c| pb::CompensationRun {
            call: c.call.to_string(),
            status: step_status(c.status) as i32,
            started_at: Some(timestamp(c.started_at)),
            duration: Some(duration(c.duration)),
            error: c.error.as_ref().map(error),
        }),
        items: s.items,
        attempts: s
            .attempts
            .iter()
            .map(|a| pb::StepAttempt {
                attempt: a.number,
                started_at: Some(timestamp(a.started_at)),
                duration: Some(duration(a.duration)),
                code: code_name(a.code).to_string(),
                message: a.message.clone(),
            })
            .collect(),
    }
}

/// The full execution; `with_payloads` false leaves out inputs, outputs, requests and responses.
pub fn execution(r: &ExecutionRecord, with_payloads: bool) -> pb::Execution {
    pb::Execution {
        id: r.id.to_string(),
        pattern_name: r.pattern_name.to_string(),
        pattern_version: r.pattern_version.to_string(),
        status: status(r.status) as i32,
        input: if with_payloads { Some(record_struct(&r.input)) } else { None },
        output: if with_payloads { r.output.as_ref().map(record_struct) } else { None },
        error: r.error.as_ref().map(error),
        started_at: Some(timestamp(r.started_at)),
        duration: Some(duration(r.duration)),
        steps: r.steps.iter().map(|s| step(s, with_payloads)).collect(),
        idempotency_key: r.idempotency_key.clone().unwrap_or_default(),
        tenant: r.tenant.to_string(),
    }
}

pub fn action(a: &Action) -> pb::Action {
    let (service, method) = a.name.split_once('/').unwrap_or((&a.name, ""));
    pb::Action {
        name: a.name.to_string(),
        service: service.to_string(),
        method: method.to_string(),
        input_type: a.method.input().full_name().to_string(),
        output_type: a.method.output().full_name().to_string(),
        client_streaming: a.is_client_streaming(),
        server_streaming: a.is_server_streaming(),
        input_schema: value::serde_to_struct(&a.input_schema()),
        output_schema: value::serde_to_struct(&a.output_schema()),
        description: a.description(),
    }
}

pub fn service(s: &ServiceEntry) -> pb::Service {
    pb::Service {
        name: s.name.clone(),
        endpoint: s.endpoint.clone(),
        backend: s.backend.to_string(),
        source: s.source.as_str().to_string(),
        actions: s.actions.iter().map(action).collect(),
    }
}

fn step_event(step: &str, attempt: u32, d: Option<std::time::Duration>, e: Option<&ExecError>) -> pb::StepEvent {
    pb::StepEvent { step_id: step.to_string(), attempt, duration: d.map(duration), error: e.map(error) }
}

/// An engine event as the API's `ExecutionEvent`.
pub fn event(e: &ExecutionEvent) -> pb::ExecutionEvent {
    use pb::execution_event::Event as E;
    let event = match &e.event {
        Event::Started { pattern_name, pattern_version } => E::Started(pb::ExecutionStarted {
            pattern_name: pattern_name.to_string(),
            pattern_version: pattern_version.to_string(),
        }),
        Event::StepStarted { step, attempt } => E::StepStarted(step_event(step, *attempt, None, None)),
        Event::StepSucceeded { step, duration } => E::StepSucceeded(step_event(step, 0, Some(*duration), None)),
        Event::StepFailed { step, error, duration } => E::StepFailed(step_event(step, 0, Some(*duration), Some(error))),
        Event::StepRetrying { step, attempt, error } => E::StepRetrying(step_event(step, *attempt, None, Some(error))),
        Event::StepSkipped { step } => E::StepSkipped(step_event(step, 0, None, None)),
        Event::StepCompensated { step, error, duration } => {
            E::StepCompensated(step_event(step, 0, Some(*duration), error.as_ref()))
        }
        Event::Message { step, index, message } => {
            E::Message(pb::StreamMessage { step_id: step.to_string(), index: *index, message: message_struct(message) })
        }
        Event::Finished(record) => E::Finished(response(record)),
    };
    pb::ExecutionEvent { execution_id: e.execution_id.to_string(), time: Some(timestamp(e.time)), event: Some(event) }
}

/// A finished execution compacted to its summary for the journal: status, input, output, error
/// and every step's status, timings, attempts and compensation — without step requests and
/// responses. Stored as base64 protobuf: no reflection on the hot path of every durable execution.
pub fn execution_summary_for_journal(r: &ExecutionRecord) -> String {
    use base64::Engine as _;
    use prost::Message;
    let mut summary = execution(r, false);
    summary.input = Some(record_struct(&r.input));
    summary.output = r.output.as_ref().map(record_struct);
    base64::engine::general_purpose::STANDARD.encode(summary.encode_to_vec())
}

/// A journaled execution summary back into its message.
pub fn execution_from_journal(text: &str) -> Option<pb::Execution> {
    use base64::Engine as _;
    use prost::Message;
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?;
    pb::Execution::decode(bytes.as_slice()).ok()
}

/// A durable execution still unfinished in the journal (running on another replica, or waiting
/// to be taken over): RUNNING, with the steps journaled as completed so far.
pub fn running_from_journal(u: &nexus_store::UnfinishedExecution) -> pb::Execution {
    let input = serde_json::from_str::<serde_json::Value>(&u.start.input).ok().map(|v| value::serde_to_struct(&v));
    pb::Execution {
        id: u.start.id.clone(),
        pattern_name: u.start.pattern_name.clone(),
        pattern_version: u.start.pattern_version.clone(),
        status: pb::ExecutionStatus::Running as i32,
        input: input.flatten(),
        started_at: Some(timestamp(u.start.started_at)),
        steps: u
            .steps
            .iter()
            .map(|(step_id, _)| pb::StepRun {
                step_id: step_id.clone(),
                status: pb::StepStatus::Succeeded as i32,
                ..Default::default()
            })
            .collect(),
        idempotency_key: u.start.idempotency_key.clone().unwrap_or_default(),
        tenant: u.start.tenant.clone(),
        ..Default::default()
    }
}

/// A journaled execution as ListExecutions shows it: the summary of a finished one (without
/// payloads), or what is known of one still running.
pub fn listed_from_journal(j: &nexus_store::JournaledExecution) -> pb::Execution {
    if let Some(mut e) = j.record.as_deref().and_then(execution_from_journal) {
        e.input = None;
        e.output = None;
        e.tenant = j.tenant.clone();
        return e;
    }
    let status = ExecutionStatus::parse(&j.status).map(status).unwrap_or_default();
    pb::Execution {
        id: j.id.clone(),
        pattern_name: j.pattern_name.clone(),
        pattern_version: j.pattern_version.clone(),
        status: status as i32,
        started_at: Some(timestamp(j.started_at)),
        idempotency_key: j.idempotency_key.clone().unwrap_or_default(),
        tenant: j.tenant.clone(),
        ..Default::default()
    }
}

/// A journaled execution's outcome as an engine record (what an idempotency key answers with):
/// id, tenant, status, output and error; steps are left out (GetExecution shows them).
pub fn record_from_journal(e: pb::Execution) -> nexus_engine::ExecutionRecord {
    let code = |name: &str| {
        (0..=16).map(tonic::Code::from_i32).find(|c| code_name(*c) == name).unwrap_or(tonic::Code::Unknown)
    };
    nexus_engine::ExecutionRecord {
        id: Arc::from(e.id),
        tenant: Arc::from(e.tenant),
        pattern_name: Arc::from(e.pattern_name),
        pattern_version: Arc::from(e.pattern_version),
        status: status_from_pb(e.status).unwrap_or(ExecutionStatus::Failed),
        input: e.input.as_ref().map_or(cel::Value::Null, value::struct_to_cel).into(),
        output: e.output.as_ref().map(|o| value::struct_to_cel(o).into()),
        error: e.error.map(|x| ExecError {
            code: code(&x.code),
            message: x.message,
            step_id: (!x.step_id.is_empty()).then(|| Arc::from(x.step_id)),
        }),
        started_at: e.started_at.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or(SystemTime::UNIX_EPOCH),
        duration: e.duration.and_then(|d| Duration::try_from(d).ok()).unwrap_or_default(),
        steps: Vec::new(),
        idempotency_key: (!e.idempotency_key.is_empty()).then_some(e.idempotency_key),
        trace: None,
    }
}
