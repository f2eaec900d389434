//! Suggestion documents over the demo services' protos: each kind is a document that compiles,
//! with the change it makes.

use std::{collections::HashMap, path::Path};

use nexus_ai::{
    mine::{self, StepTrace, Trace},
    suggest::{self, Documents, Kind},
};
use nexus_core::{Catalog, NoPatterns, catalog::DescriptorSource, compile, document, pb};

fn demo_catalog() -> Catalog {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/demo");
    let files = ["user/v1/user.proto", "asset/v1/asset.proto", "notification/v1/notification.proto"];
    let fds = protox::compile(files, [&root]).unwrap_or_else(|e| panic!("demo protos: {e}"));
    let mut builder = Catalog::builder();
    builder
        .add_backend("demo", "http://127.0.0.1:1", DescriptorSource::Protos, fds, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    builder.build()
}

struct Docs(Vec<pb::Pattern>);

impl Documents for Docs {
    fn get(&self, name: &str, version: &str) -> Option<pb::Pattern> {
        self.0.iter().find(|d| d.name == name && d.version == version).cloned()
    }

    fn latest(&self) -> Vec<pb::Pattern> {
        self.0.clone()
    }
}

const NOTIFY: &str = r#"
name: notify
version: 1.2.0
input: {type: object, required: [email, user_id], properties: {email: {type: string}, user_id: {type: string}}}
steps:
  - id: lookup
    call: demo.user.v1.UserService/GetUser
    with: {user_id: "${{ input.user_id }}"}
  - id: user
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: "x"}
  - id: mail
    call: demo.notification.v1.NotificationService/SendEmail
    depends_on: [user]
    with: {to: "${{ input.email }}", subject: "hi", body: "hello"}
output: {id: "${{ steps.user.user.id }}", message: "${{ steps.mail.message_id }}"}
"#;

const ONBOARD: &str = r#"
name: onboard
version: 1.0.0
input: {type: object, required: [email], properties: {email: {type: string}}}
steps:
  - id: make
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: "x"}
  - id: greet
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: "Welcome ${{ steps.make.user.id }}", body: "hello"}
  - id: avatar
    call: demo.asset.v1.AssetService/UploadAsset
    with: {owner_id: "${{ steps.make.user.id }}", source_url: "https://x/y.png"}
output: {id: "${{ steps.make.user.id }}"}
"#;

const INVITE: &str = r#"
name: invite
version: 1.0.0
input: {type: object, required: [email], properties: {email: {type: string}}}
steps:
  - id: push
    call: demo.notification.v1.NotificationService/SendPush
    with: {user_id: "u", title: "t", body: "b"}
  - id: make
    call: demo.user.v1.UserService/CreateUser
    with: {email: "${{ input.email }}", display_name: "x"}
  - id: greet
    call: demo.notification.v1.NotificationService/SendEmail
    with: {to: "${{ input.email }}", subject: "Hi ${{ steps.make.user.id }}", body: "hello"}
output: {id: "${{ steps.make.user.id }}"}
"#;

fn trace(id: usize, doc: &pb::Pattern, failing: Option<&str>) -> Trace {
    Trace {
        id: format!("e{id}"),
        tenant: "t".into(),
        pattern: doc.name.clone(),
        version: doc.version.clone(),
        started_ms: id as u64 * 1000,
        ended_ms: id as u64 * 1000 + 10,
        succeeded: failing.is_none(),
        input: Vec::new(),
        output: Vec::new(),
        steps: doc
            .steps
            .iter()
            .map(|s| {
                let failed = failing == Some(s.id.as_str());
                StepTrace {
                    step_id: s.id.clone(),
                    call: s.call.clone(),
                    succeeded: !failed,
                    attempts: 1,
                    first_code: if failed { "UNAVAILABLE".into() } else { "OK".into() },
                    duration_ms: 4.0,
                }
            })
            .collect(),
    }
}

#[test]
fn every_kind_of_suggestion_is_a_document_that_compiles() {
    let catalog = demo_catalog();
    let docs: Vec<pb::Pattern> =
        [NOTIFY, ONBOARD, INVITE].iter().map(|t| document::parse(t).unwrap_or_else(|e| panic!("{e}"))).collect();
    let mut traces = Vec::new();
    for i in 0..40 {
        // `user` of notify fails on a transient code in 4 runs of 40, with no retry policy.
        let failing = (i % 10 == 0).then_some("user");
        traces.push(trace(traces.len(), &docs[0], failing));
        traces.push(trace(traces.len(), &docs[1], None));
        traces.push(trace(traces.len(), &docs[2], None));
    }
    // onboard's and invite's runs are identical shapes but a third pattern is needed for a
    // shared sequence: notify runs CreateUser → SendEmail too (after its GetUser).
    let mined = mine::mine(&traces, &mine::MiningOptions::default());
    let proposals = suggest::proposals(&mined, &Docs(docs.clone()));
    let mut kinds: HashMap<Kind, usize> = HashMap::new();
    for p in &proposals {
        *kinds.entry(p.kind).or_default() += 1;
        if let Err(diags) = compile(&p.pattern, &catalog, &NoPatterns) {
            panic!("{} does not compile: {diags:?}\n{}", p.title, document::to_yaml(&p.pattern));
        }
        assert!(!p.rationale.is_empty() && !p.gain.summary.is_empty(), "{p:?}");
    }
    let find =
        |kind: Kind| proposals.iter().find(|p| p.kind == kind).unwrap_or_else(|| panic!("no {kind:?} in {kinds:?}"));

    let retry = find(Kind::RetryPolicy);
    assert_eq!(retry.pattern.name, "notify");
    assert_eq!(retry.pattern.version, "1.2.1");
    let step = retry.pattern.steps.iter().find(|s| s.id == "user").unwrap_or_else(|| panic!("no step user"));
    assert_eq!(step.retry.as_ref().map(|r| r.max_attempts), Some(3));
    assert!((retry.gain.failures_avoided_per_1000 - 100.0).abs() < 1e-9, "{:?}", retry.gain);
    assert_eq!(retry.evidence.len(), 4);

    let parallel = find(Kind::Parallelize);
    let mail = parallel.pattern.steps.iter().find(|s| s.id == "mail").unwrap_or_else(|| panic!("no step mail"));
    assert!(mail.depends_on.is_empty());
    assert!((parallel.gain.latency_saved_ms - 4.0).abs() < 1e-9, "{:?}", parallel.gain);

    let unread = find(Kind::UnreadOutput);
    assert!(unread.pattern.steps.iter().all(|s| s.id != "lookup"), "GetUser's result is read by nothing");
    assert_eq!(unread.gain.calls_saved_per_run, 1.0);

    let shared = find(Kind::SharedSubpattern);
    let calls: Vec<&str> = shared.pattern.steps.iter().map(|s| s.call.as_str()).collect();
    assert_eq!(calls, ["demo.user.v1.UserService/CreateUser", "demo.notification.v1.NotificationService/SendEmail"]);
    assert_eq!(shared.based_on.len(), 3, "{:?}", shared.based_on);
}
