//! Words in names and comments, and how well a value's name fits a field's.
//!
//! Synthesis fills an input field from a value (a pattern input or an earlier step's output) when
//! their types agree and their names say they are the same thing. Names are compared as words
//! (`displayName`, `display_name` → `display`, `name`), lightly stemmed, with the field's proto
//! comment as a second source of words: a role name (`owner_id`, "The user who owns the asset")
//! takes an entity's id when its comment names that entity.

use std::collections::BTreeSet;

/// Words that say nothing about what a value is.
const STOP: &[&str] = &[
    "a", "an", "the", "of", "to", "for", "and", "or", "in", "on", "by", "with", "from", "is", "are", "be", "it", "its",
    "this", "that", "as", "at", "when", "if", "their", "them", "they", "his", "her", "who", "which", "what", "then",
    "into", "each", "every", "one", "new", "given", "me", "my", "our", "we", "us", "so", "can", "will", "should", "v1",
];

/// Splits an identifier or a sentence into lower-case, stemmed words (stop words dropped —
/// unless that leaves nothing: a field named `to` or `from` is still called something).
pub fn words(text: &str) -> Vec<String> {
    let out = split_words(text, false);
    if out.is_empty() { split_words(text, true) } else { out }
}

/// Whether `word` (lower case) says nothing about what a value is.
pub fn is_stop(word: &str) -> bool {
    STOP.contains(&word)
}

fn split_words(text: &str, keep_stop: bool) -> Vec<String> {
    let push_word = |out: &mut Vec<String>, word: String| {
        if keep_stop || !STOP.contains(&word.as_str()) {
            out.push(stem(&word));
        }
    };
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            // camelCase boundary.
            if c.is_ascii_uppercase() && prev_lower && !current.is_empty() {
                push_word(&mut out, std::mem::take(&mut current));
            }
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            current.push(c.to_ascii_lowercase());
        } else {
            prev_lower = false;
            if !current.is_empty() {
                push_word(&mut out, std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        push_word(&mut out, current);
    }
    out
}

/// A crude stemmer, consistent rather than correct: plurals and verb endings go, then a final
/// `e`, so `orders`/`order`, `created`/`create`/`creating` and `charges`/`charged` each end as one
/// word. Only ever compared with other stems.
pub fn stem(word: &str) -> String {
    let mut w = word;
    if w.len() > 4 && w.ends_with("ies") {
        return format!("{}y", &w[..w.len() - 3]);
    }
    if w.len() > 4 && w.ends_with("sses") {
        w = &w[..w.len() - 2];
    } else if w.len() > 5 && w.ends_with("ing") {
        w = &w[..w.len() - 3];
    } else if w.len() > 4 && (w.ends_with("ed") || w.ends_with("es")) {
        w = &w[..w.len() - 2];
    } else if w.len() > 2 && w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        w = &w[..w.len() - 1];
    }
    let w = if w.len() > 3 && w.ends_with('e') { &w[..w.len() - 1] } else { w };
    w.to_string()
}

/// Verbs people use for the same operation, mapped to the word APIs use most.
/// (Both sides are stems; applied to the goal's words and the methods' names alike.)
pub fn canonical_verb(stem: &str) -> Option<&'static str> {
    Some(match stem {
        "plac" | "mak" | "register" | "open" | "submit" | "book" => "creat",
        "put" | "insert" | "append" => "add",
        "stor" | "import" | "ingest" => "upload",
        "fetch" | "retriev" | "look" | "lookup" | "read" | "load" | "find" | "show" => "get",
        "remov" | "eras" => "delet",
        "modify" | "chang" | "edit" => "updat",
        "notify" | "mail" => "send",
        "pay" | "bill" => "charg",
        "enumerat" | "brows" => "list",
        _ => return None,
    })
}

/// A word with its verb canonicalized.
pub fn canon(word: &str) -> &str {
    canonical_verb(word).unwrap_or(word)
}

/// Verbs that only say "do it" before the word that says what (`StartTranscode`,
/// `GenerateCaptions`): the second word alone names the method too.
pub fn is_generic_verb(word: &str) -> bool {
    matches!(word, "creat" | "start" | "run" | "generat" | "request" | "begin" | "trigger" | "perform" | "issu")
}

/// The words of a value's name, with its context: the path's words (`user.id` → user, id), the
/// entity the value belongs to (the message type holding it: `Customer` → customer), and — for
/// a step's output — the action's words (`SendEmail` → send, email).
#[derive(Debug, Clone, Default)]
pub struct ValueWords {
    /// The leaf field's words (`message_id` → message, id).
    pub leaf: Vec<String>,
    /// The whole path's words (`user.id` → user, id).
    pub path: Vec<String>,
    /// The entity: the words of the message type holding the leaf (`User`), empty at top level
    /// of an input.
    pub entity: Vec<String>,
    /// The action's words, for a step output.
    pub action: Vec<String>,
    /// The leaf field's comment words.
    pub comment: BTreeSet<String>,
    /// The leaf is `<entity>_id` for an entity of the catalog (`channel_id`), not a role.
    pub names_entity: bool,
}

/// The words of a field to fill: its name and its comment.
#[derive(Debug, Clone, Default)]
pub struct FieldWords {
    pub name: Vec<String>,
    pub comment: BTreeSet<String>,
    /// The name is `<entity>_id` for an entity of the catalog (`template_id` when there is a
    /// `Template`): not a role that could hold another entity's id.
    pub names_entity: bool,
}

impl FieldWords {
    pub fn new(name: &str, comment: Option<&str>) -> Self {
        Self {
            name: words(name),
            comment: comment.map(|c| words(c).into_iter().collect()).unwrap_or_default(),
            names_entity: false,
        }
    }
}

/// How well a value fits a field by name, 0.0–1.0 (types are checked elsewhere).
///
/// - 1.0: the same words (`email` ← `input.email`, `user_id` ← `steps.u.user_id`);
/// - 0.95: the field names the entity's id (`user_id` ← `steps.u.user.id`, `order_id` ← the `id`
///   of an `Order`);
/// - 0.75: a role (`owner_id`, `recipient_id`) whose comment names the entity ("The user who owns
///   the asset");
/// - 0.6–0.8: the value's words are part of the field's (`display_name` ← `name`);
/// - less: shared words, or the value's leaf named in the field's comment.
pub fn fit(field: &FieldWords, value: &ValueWords) -> f64 {
    let f = &field.name;
    if f.is_empty() || value.leaf.is_empty() {
        return 0.0;
    }
    if *f == value.path || *f == value.leaf {
        return 1.0;
    }
    let f_last = f.last().map(String::as_str);
    let v_last = value.leaf.last().map(String::as_str);
    // `user_id` ← `user.id` / the `id` of a `User`.
    // (Compared without building `entity + leaf`: fit runs for every offer of every candidate.)
    if f.len() == value.entity.len() + value.leaf.len() && f.iter().eq(value.entity.iter().chain(&value.leaf)) {
        return 0.95;
    }
    if value.path.len() > value.leaf.len() && ends_with(f, &value.path) {
        // The field may qualify the value (`translated_track_id` ← `track.id`): only when the
        // qualifier is what the value's action or entity is about (TranslateCaptions' track)
        // is it the same thing; else it is some other track.
        let qualifier = &f[..f.len() - value.path.len()];
        let about = |w: &String| value.entity.contains(w) || value.action.contains(w);
        return if qualifier.iter().all(about) { 0.95 } else { 0.45 };
    }
    if f_last == v_last && f.len() > 1 {
        let head = &f[..f.len() - 1];
        let in_context = |w: &String| value.path.contains(w) || value.entity.contains(w) || value.action.contains(w);
        // `order_id` ← `order.id` deeper in a path, or `payment_id` ← CreatePayment's `id` —
        // but not ← `video.channel_id`: the leaf's own words must be the field's.
        let leaf_head = &value.leaf[..value.leaf.len() - 1];
        if head.iter().all(in_context) && leaf_head.iter().all(|w| head.contains(w)) {
            return if value.action.iter().any(|w| head.contains(w)) && value.entity.is_empty() { 0.8 } else { 0.9 };
        }
        // The id of what the action itself made, named after the action (`email_id` ←
        // SendEmail's top-level `message_id`): only when the leaf does not name another entity
        // of the catalog (a `channel_id` is a channel's, whatever the action).
        if value.entity.is_empty()
            && value.path.len() == value.leaf.len()
            && !value.names_entity
            && head.iter().all(|w| value.action.contains(w))
        {
            return 0.8;
        }
        // A role named by the comment: `owner_id` "The user who owns …" ← `user.id` (the
        // entity of a bare `id` is its message; of `customer_id`, the customer).
        let entity = if value.leaf.len() > 1 {
            &value.leaf[..value.leaf.len() - 1]
        } else if value.entity.is_empty() {
            &value.path[..value.path.len().saturating_sub(1)]
        } else {
            &value.entity[..]
        };
        if !field.names_entity && !entity.is_empty() && entity.iter().all(|w| field.comment.contains(w)) {
            return 0.75;
        }
        // The other way round: a role value whose comment names the entity the field names
        // (`user_id` ← `asset.owner_id`, "The user who owns the asset").
        if field.names_entity
            && !value.names_entity
            && value.leaf.len() > 1
            && head.iter().all(|w| value.comment.contains(w))
        {
            return 0.75;
        }
        // Only the last word `id` in common: a different thing. (Other shared heads — a
        // `display_name` ← a `name` — are partial fits, below.)
        if v_last == Some("id") {
            return 0.1;
        }
    }
    // `display_name` ← `name`; `source_url` ← `url` — the value names the field's head (its
    // last word: a `display_name` is a name), not only a qualifier (`track_id` is no `track`).
    if value.leaf.iter().all(|w| f.contains(w)) && f_last == v_last {
        return 0.55 + 0.25 * value.leaf.len() as f64 / f.len() as f64;
    }
    // `to` "Recipient address." ← `email`: the comment says what the field holds.
    if !value.leaf.is_empty() && value.leaf.iter().all(|w| field.comment.contains(w) || synonym_in(w, &field.comment)) {
        return 0.6;
    }
    let shared = f.iter().filter(|w| value.path.contains(w)).count();
    0.4 * shared as f64 / f.len().max(value.path.len()) as f64
}

fn ends_with(haystack: &[String], needle: &[String]) -> bool {
    haystack.len() >= needle.len() && haystack[haystack.len() - needle.len()..] == *needle
}

/// A few words that name the same kind of value in field comments.
fn synonym_in(word: &str, comment: &BTreeSet<String>) -> bool {
    let alternatives: &[&str] = match word {
        "email" => &["address", "mail", "recipient"],
        "name" => &["title", "label"],
        "url" => &["link", "uri", "location"],
        "amount" => &["total", "price", "sum"],
        _ => &[],
    };
    alternatives.iter().any(|a| comment.contains(*a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(path: &str, entity: &str) -> ValueWords {
        let path_words = words(path);
        let leaf = words(path.rsplit('.').next().unwrap_or(path));
        ValueWords { leaf, path: path_words, entity: words(entity), ..Default::default() }
    }

    #[test]
    fn words_split_case_and_stem() {
        assert_eq!(words("displayName"), words("display name"));
        assert_eq!(words("displayName").len(), 2);
        assert_eq!(words("CreateOrders"), words("creating order"));
        assert_eq!(words("the user_ids of the charged card"), ["user", "id", "charg", "card"]);
        assert_eq!(words("categories addresses"), ["category", "address"]);
        assert_eq!(words("deleted"), words("delete"));
    }

    #[test]
    fn fits_rank_the_right_source_first() {
        let user_id = FieldWords::new("user_id", None);
        assert!(fit(&user_id, &value("user.id", "User")) >= 0.95);
        assert!(fit(&user_id, &value("broadcast.id", "Broadcast")) < 0.2);
        let owner = FieldWords::new("owner_id", Some("The user who owns the asset."));
        assert_eq!(fit(&owner, &value("user.id", "User")), 0.75);
        let display = FieldWords::new("display_name", None);
        assert!(fit(&display, &value("name", "")) > 0.6);
        let to = FieldWords::new("to", Some("Recipient address."));
        assert_eq!(fit(&to, &value("email", "")), 0.6);
        assert_eq!(fit(&FieldWords::new("email", None), &value("email", "")), 1.0);
    }

    #[test]
    fn a_value_must_name_the_fields_head() {
        // A `track_id` is no `track`; a `display_name` is a name.
        let translated = FieldWords::new("translated_track_id", None);
        assert!(fit(&translated, &value("track", "")) < 0.5);
        // An extra qualifier only fits when the value's action is about it.
        let mut by_translate = value("track.id", "CaptionTrack");
        assert!(fit(&translated, &by_translate) < 0.5);
        by_translate.action = words("TranslateCaptions");
        assert_eq!(fit(&translated, &by_translate), 0.95);
        // Another entity's id inside a path is not the field's.
        assert!(fit(&FieldWords::new("video_id", None), &value("video.channel_id", "Video")) < 0.5);
    }

    #[test]
    fn a_role_value_fills_the_entity_its_comment_names() {
        let mut owner = value("asset.owner_id", "Asset");
        owner.comment = words("The user who owns the asset.").into_iter().collect();
        let mut user_id = FieldWords::new("user_id", None);
        user_id.names_entity = true;
        assert_eq!(fit(&user_id, &owner), 0.75);
        // Not when the value names an entity of its own.
        owner.names_entity = true;
        assert!(fit(&user_id, &owner) < 0.5);
    }
}
