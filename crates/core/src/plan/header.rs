//! Pass 1, the document's own fields: name, version, visibility, durability, timeout, the step
//! count limit, and the input JSON Schema.

use crate::{diagnostic::Diagnostics, input::InputSchema, pb, value};

use super::model::{MAX_STEPS, to_duration};

/// Longest version string: room for any real semver with pre-release and build metadata, while
/// every listing, table and key that shows versions stays bounded.
pub const MAX_VERSION_LEN: usize = 64;
/// Longest description, in bytes: a paragraph or two; listings return it for every pattern.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Most tags a pattern may carry, and the longest tag.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_LEN: usize = 64;
/// Longest pattern name, in bytes.
pub const MAX_PATTERN_NAME: usize = 128;
/// Longest `owner` field (a label; the registry records the real owner).
pub const MAX_OWNER_LEN: usize = 128;
/// Most `${{ }}` expressions in one document: each is compiled and type-checked at registration.
pub const MAX_EXPRESSIONS: usize = 2000;

/// Whether the document is too big to check further: more steps or expressions than the limits.
/// Checking goes no further then — tens of thousands of steps would take seconds and bury the
/// one problem that matters under as many diagnostics.
pub(super) fn too_big(doc: &pb::Pattern, diags: &mut Diagnostics) -> bool {
    let mut stop = false;
    if doc.steps.len() > MAX_STEPS {
        diags.error("steps", format!("{} steps; the limit is {MAX_STEPS}", doc.steps.len()));
        stop = true;
    }
    // Every string of the document appears as is in its protobuf encoding.
    let encoded = prost::Message::encode_to_vec(doc);
    let expressions = encoded.windows(3).filter(|w| *w == b"${{").count();
    if expressions > MAX_EXPRESSIONS {
        diags.error(
            "",
            format!("{expressions} `${{{{ }}}}` expressions; a document may have at most {MAX_EXPRESSIONS}"),
        );
        stop = true;
    }
    stop
}

pub(super) fn check(doc: &pb::Pattern, diags: &mut Diagnostics) {
    if doc.name.is_empty() {
        diags.error("name", "a pattern needs a name");
    } else if !is_pattern_name(&doc.name) {
        diags.error("name", format!("`{}` is not a valid name: start with a lowercase letter, then lowercase letters, digits, `_`, `-` or `.` (at most 128)", doc.name));
    }
    if doc.version.is_empty() {
        diags.error("version", "a pattern needs a semantic version such as 1.0.0");
    } else if doc.version.len() > MAX_VERSION_LEN {
        let start: String = doc.version.chars().take(24).collect();
        diags.error(
            "version",
            format!("`{start}…` is {} characters long; a version is at most {MAX_VERSION_LEN}", doc.version.len()),
        );
    } else if let Err(e) = semver::Version::parse(&doc.version) {
        diags.error("version", format!("`{}` is not a semantic version (MAJOR.MINOR.PATCH): {e}", doc.version));
    }
    if !matches!(doc.visibility.as_str(), "" | "private" | "tenant" | "public") {
        diags.error("visibility", format!("`{}` is not one of private, tenant, public", doc.visibility));
    }
    if !matches!(doc.durability.as_str(), "" | "ephemeral" | "durable") {
        diags.error("durability", format!("`{}` is not one of ephemeral, durable", doc.durability));
    }
    if let Some(t) = &doc.timeout
        && to_duration(t).is_none_or(|d| d.is_zero())
    {
        diags.error("timeout", "must be a positive duration such as \"30s\"");
    }
    if doc.steps.is_empty() {
        diags.error("steps", "a pattern needs at least one step");
    }
    if doc.description.len() > MAX_DESCRIPTION_BYTES {
        diags.error(
            "description",
            format!("{} bytes; a description is at most {MAX_DESCRIPTION_BYTES}", doc.description.len()),
        );
    }
    if doc.owner.chars().count() > MAX_OWNER_LEN {
        diags.error("owner", format!("{} characters; at most {MAX_OWNER_LEN}", doc.owner.chars().count()));
    }
    if doc.tags.len() > MAX_TAGS {
        diags.error("tags", format!("{} tags; at most {MAX_TAGS}", doc.tags.len()));
    }
    for (i, tag) in doc.tags.iter().enumerate().take(MAX_TAGS) {
        let n = tag.chars().count();
        if n == 0 || n > MAX_TAG_LEN {
            diags.error(format!("tags[{i}]"), format!("a tag has 1 to {MAX_TAG_LEN} characters; this one has {n}"));
        } else if tag.chars().any(char::is_control) {
            diags.error(format!("tags[{i}]"), "a tag may not contain control characters");
        }
    }
}

/// The declared input schema, with the problems of the schema itself reported.
pub(super) fn input_schema(doc: &pb::Pattern, diags: &mut Diagnostics) -> InputSchema {
    let input = InputSchema::new(doc.input.as_ref().map(value::struct_to_serde).unwrap_or(serde_json::Value::Null));
    // No `input` at all means "any input": there is no schema to lint.
    if !input.as_json().is_null() {
        for (path, msg) in input.lint() {
            diags.error(path, msg);
        }
    }
    input
}

fn is_pattern_name(s: &str) -> bool {
    s.len() <= MAX_PATTERN_NAME
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}
