//! Synthesis over the demo services' protos: the goals the README and the demo show.

use std::{collections::HashMap, path::Path};

use nexus_ai::{Goal, GoalField, Index, Options, generate};
use nexus_core::{Catalog, NoPatterns, catalog::DescriptorSource};

fn demo_catalog() -> Catalog {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/demo");
    let files = [
        "user/v1/user.proto",
        "asset/v1/asset.proto",
        "notification/v1/notification.proto",
        "broadcast/v1/broadcast.proto",
    ];
    let fds = protox::compile(files, [&root]).unwrap_or_else(|e| panic!("demo protos: {e}"));
    let mut builder = Catalog::builder();
    builder
        .add_backend("demo", "http://127.0.0.1:1", DescriptorSource::Protos, fds, &[])
        .unwrap_or_else(|e| panic!("{e}"));
    builder.build()
}

fn calls_of(goal: &Goal) -> Vec<Vec<String>> {
    let catalog = demo_catalog();
    let index = Index::new(&catalog);
    let together = HashMap::new();
    let options = Options { limit: 5, allowed: None, together: &together };
    let generated = generate(goal, &index, &catalog, &NoPatterns, &options).unwrap_or_else(|e| panic!("{e}"));
    generated.candidates.iter().map(|c| c.pattern.steps.iter().map(|s| s.call.clone()).collect()).collect()
}

fn field(name: &str, ty: &str) -> GoalField {
    GoalField { name: name.into(), ty: ty.into() }
}

#[test]
fn user_creation_from_its_typed_goal() {
    let goal = Goal {
        inputs: vec![field("email", "string"), field("name", "string")],
        outputs: vec![field("user_id", ""), field("email_id", "")],
        ..Goal::default()
    };
    let candidates = calls_of(&goal);
    let first = candidates.first().unwrap_or_else(|| panic!("no candidate"));
    assert_eq!(first, &["demo.user.v1.UserService/CreateUser", "demo.notification.v1.NotificationService/SendEmail"]);
}

#[test]
fn user_creation_from_words() {
    let goal = Goal { text: "create a user and send them a welcome email".into(), ..Goal::default() };
    let candidates = calls_of(&goal);
    let first = candidates.first().unwrap_or_else(|| panic!("no candidate"));
    assert_eq!(first, &["demo.user.v1.UserService/CreateUser", "demo.notification.v1.NotificationService/SendEmail"]);
}
