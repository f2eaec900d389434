//! Data-driven tests of the pattern compiler: a document in, its diagnostics out
//! (`check(doc, expect![[...]])`; `UPDATE_EXPECT=1 cargo test -p nexus-core` rewrites the
//! expectations).
//!
//! One test binary with a module per area, so it links once. Other crates assert on the exact
//! paths and messages, so these expectations pin them: a change here is a change of the API.
//!
//! # Coverage: every diagnostic the compiler can produce, and the case that shows it
//!
//! plan/events.rs (event steps and triggers) — events::event_steps_and_their_mistakes,
//! wait_for_mistakes, triggers: one `call`/`emit`/`wait_for` per step, event type names, options an
//! event step has not, `wait_for` needs durable, timeout limits, `any` vs `event`, `event` only in
//! trigger filters/inputs and wait matches, event fields (±hint), a trigger's input against the
//! input schema; events::event_data_is_typed_by_a_registered_schema: `event.data.*` of a type
//! with a registered schema (`PatternLookup::event_schema`) in a trigger or a wait branch's match
//! — no such property (±hint), a property of a scalar type; `dyn` without a schema and for
//! `steps.<wait>.data.*`.
//!
//! plan/schedule.rs (`schedule:`) — schedule::schedule_mistakes: `schedule.cron` empty, not a
//! cron expression (a bad field, a 7th field), never matches; `schedule.timezone` not an IANA
//! name; `schedule.overlap` not a policy; `schedule.catchup_window` negative or over 31d;
//! `schedule` when the input schema requires properties (a scheduled input is `{}`).
//! Compiles: schedule::schedules_that_compile.
//!
//! document.rs (`DocumentError`)
//! - `the document is N bytes; the limit is …` — document::too_large
//! - `the document is not valid YAML or JSON: …` — document::not_yaml
//! - `a pattern document must be an object …` — document::not_an_object
//! - `<path>: <shape error>` — document::field_of_the_wrong_shape_names_its_path, unknown_field
//! - (the `transcode_to` failure cannot happen: the message was built from `Pattern`'s own
//!   descriptor)
//!
//! expr.rs (`ExprError`, reported where the expression sits)
//! - `invalid CEL expression …: at …` — expressions::expressions_that_do_not_compile,
//!   output::output_mapping, steps::compensations
//! - `… must be exactly one ${{ expression }} …` (when/for_each) — expressions_that_do_not_compile
//! - `unterminated ${{ …`, `empty expression ${{ }}` — expressions_that_do_not_compile
//! - `expression is N bytes; the limit is 4096` — expressions::expression_too_large
//!
//! input.rs (the input JSON Schema)
//! - `unknown type …`, `a JSON Schema must be an object`, `is required but not declared`,
//!   `must be a string` — input_schema::schema_lint
//! - `must be an object` (properties), `must be a list of property names` —
//!   input_schema::schema_lint_wrong_containers
//! - `` `input` has no property … `` (with and without "did you mean"), `is String in the input
//!   schema, it has no …` — input_schema::input_paths, sub_patterns::with_fits_the_callee_input
//!
//! plan (structure, calls, references, graph, output)
//! - name/version missing — header::empty_document; version over 64 characters — header::version_too_long; name/version/visibility/durability/timeout
//!   invalid — header::invalid_header_fields, negative_timeout; `at least one step` —
//!   empty_document; `N steps; the limit is 256` — header::too_many_steps (and nothing else is
//!   checked past it: past_the_step_limit_nothing_else_is_checked); `N ${{ }} expressions; … at
//!   most 2000` — expressions_per_document_are_limited; description bytes, owner length, tag
//!   count and length — description_owner_and_tags_are_bounded; `and N more problem(s) not
//!   listed` (past 100 diagnostics; each message at most 1 KiB) —
//!   diagnostics_are_capped_and_each_is_bounded
//! - `every step needs an id`, `is not a valid id`, `duplicate id` — steps::ids
//! - `every step needs a call`, `unknown action` (±hint), `client-streaming`, `not a
//!   server-streaming method`, `no registered pattern` — steps::calls
//! - step `timeout`, `at most 100 attempts`, `must be at least 1`, `unknown gRPC code` —
//!   steps::timeout_and_retry
//! - `at most 1000` (concurrency), `a streaming step cannot also fan out` —
//!   steps::fan_out_options; warning `has no effect without for_each` —
//!   steps::concurrency_without_for_each_is_a_warning
//! - compensation `is a streaming method`, `unknown action` (±hint), its `with` compiled and
//!   type-checked — steps::compensations; reading its own step is allowed —
//!   steps::compensation_reads_its_own_step
//! - `unknown variable`, `item`/`index` `only defined in the with of a for_each step`, `read a
//!   step's output as steps.<id>` — expressions::variables_and_scopes
//! - `there is no step` (±hint), `reads its own output` — expressions::step_references,
//!   graph::depends_on, output::output_mapping
//! - `… which has a when and may be skipped; guard it …` — expressions::skipped_steps_must_be_guarded
//! - `a step cannot depend on itself` — graph::depends_on
//! - `dependency cycle: …` — graph::cycle_through_expressions,
//!   cycles_through_depends_on_are_reported_once_each, every_problem_in_one_round_trip
//! - `pattern N@V: …` (undeclared input), `pattern N@V requires input …` —
//!   sub_patterns::with_fits_the_callee_input
//! - (`the input of pattern N must be an object` cannot happen from a document: `with` is a
//!   protobuf `Struct`, so it is always an object)
//!
//! typecheck.rs (`with` against the input message; `steps.X.a.b` paths)
//! - `is a M which has no field` (±hint), `is a string; it has no field`, `is a list of …; it has
//!   no field` — expressions::step_references; `has no …; the called pattern outputs` (±hint) —
//!   sub_patterns::reads_the_callee_output
//! - `unknown field … in M` (±hint) — typecheck::literal_scalars, literal_containers,
//!   objects_in_expression_templates
//! - literals: `expects <kind>, got <json>`, `is not a valid int32/uint32`, `is not an integer` —
//!   typecheck::literal_scalars; enum name / enum number, RFC 3339 timestamp, duration, wrapper,
//!   `expects a M object, got …` — literal_enums_and_well_known_types; `field … expects a map,
//!   got …`, `field … expects a list, got …`, map values, nested messages, list items —
//!   literal_containers
//! - expressions: `field … expects …, got … (from …)` incl. map, list, `items:` and enum kinds —
//!   typecheck::expressions_of_the_wrong_type; `(text with ${{ }} is a string)` —
//!   interpolation_is_a_string
//! - objects: `field … expects a list`, `field … expects <kind>, got an object`, map values, nested
//!   messages — typecheck::objects_in_expression_templates, (a Struct takes any object: struct_field_takes_an_object_with_expressions)
//! - lists: `field … is not a list`, `list item … (from …)`, `list item …` (interpolated), `list
//!   item <kind>, got an object`, `nested lists are not a protobuf type` —
//!   typecheck::lists_in_expression_templates
//! - (`check_message_template`'s expression/interpolation/list arms and
//!   `check_literal_message`'s non-object arm cannot happen from a document: a `with` and an
//!   object inside it are always object or literal-object templates, and a non-object literal for
//!   a message field is reported by the literal kind check)
//!
//! Order within a step (the passes' order, kept from the single-function compiler):
//! steps::every_pass_on_one_step_keeps_its_order.
//!
//! Documents that compile: examples::user_creation, subscribe_live_stream (the shipped
//! patterns against the demo protos), every_feature, steps::compensation_reads_its_own_step,
//! typecheck::literals_that_fit, expressions_that_fit.

mod document;
mod events;
mod examples;
mod expressions;
mod graph;
mod header;
mod input_schema;
mod output;
mod schedule;
mod steps;
mod sub_patterns;
mod support;
mod typecheck;
