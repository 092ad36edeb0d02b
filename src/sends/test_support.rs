//! What the send types' unit tests share: run a type's validation on a JSON value, and assert
//! the rules that recur across types (a required field of one JSON type, optional strings, a
//! text under either of two names, a bounded text). Each rule is a list of steps from a valid
//! [`Example`]: an [`Edit`] and the exact errors, field and message, that the body then gets.

use serde_json::{Value, json};

use super::SendKind;
use crate::validate::{Invalid, SendRequest, validate};

/// A valid media send, with phone numbers written the way callers write them.
pub(crate) fn media_example() -> Value {
    json!({
        "messageId": "m-1",
        "mediaType": "image",
        "mediaUrl": "https://cdn.example.com/a.png",
        "caption": "hi",
        "from": "+254 110 090747",
        "to": "(254) 712-345-678"
    })
}

/// Runs `kind`'s validation on `value`, as the router would on its text.
pub(crate) fn run(kind: SendKind, value: &Value) -> Result<SendRequest, Invalid> {
    validate(kind.rules(), value.to_string().as_bytes(), None)
}

/// The forwarded body, parsed back.
pub(crate) fn forwarded(kind: SendKind, value: &Value) -> Value {
    let request = run(kind, value).unwrap();
    serde_json::from_slice(&request.body).unwrap()
}

/// Asserts the exact body forwarded for `body`, given as raw bytes so that the spacing kept
/// inside nested values shows they are copied, not written again.
pub(crate) fn assert_forwarded_as(kind: SendKind, body: &[u8], expected: &str) {
    let request = validate(kind.rules(), body, None).unwrap();
    assert_eq!(std::str::from_utf8(&request.body).unwrap(), expected);
}

/// Each error as (field, message), in the order the answer lists them.
pub(crate) fn errors(kind: SendKind, value: &Value) -> Vec<(String, String)> {
    match run(kind, value) {
        Err(Invalid::Fields(errors)) => errors
            .into_iter()
            .map(|e| (e.field.into_owned(), e.message.into_owned()))
            .collect(),
        other => panic!("expected field errors, got {other:?}"),
    }
}

/// Asserts the errors of `body`, each as (field, message), in the answer's order.
pub(crate) fn assert_errors(kind: SendKind, body: &Value, expected: &[(&str, &str)]) {
    assert_eq!(errors(kind, body), owned(expected));
}

fn owned(errors: &[(&str, &str)]) -> Vec<(String, String)> {
    errors
        .iter()
        .map(|(field, message)| ((*field).to_owned(), (*message).to_owned()))
        .collect()
}

/// The fields named in the errors.
pub(crate) fn fields(kind: SendKind, value: &Value) -> Vec<String> {
    errors(kind, value).into_iter().map(|(f, _)| f).collect()
}

/// One change to a body, at a field written as its errors name it (`template.name`,
/// `phones[0].waId`).
pub(crate) enum Edit {
    /// The field is removed.
    Remove(&'static str),
    /// The field is set (added or replaced).
    Set(&'static str, Value),
}

impl Edit {
    fn apply(&self, body: &mut Value) {
        match self {
            Self::Remove(field) => {
                let (parent, key) = parent_and_key(body, field);
                let object = parent.as_object_mut().unwrap();
                assert!(object.remove(key).is_some(), "{field} was not there");
            }
            Self::Set(field, value) => match parent_and_key(body, field) {
                (Value::Array(items), index) => {
                    items[index.parse::<usize>().unwrap()] = value.clone()
                }
                (parent, key) => parent[key] = value.clone(),
            },
        }
    }
}

/// The value holding `field` (`phones[0]` for `phones[0].waId`), and its last key or index.
fn parent_and_key<'v>(body: &'v mut Value, field: &'static str) -> (&'v mut Value, &'static str) {
    let (parent, key) = match field.strip_suffix(']') {
        Some(indexed) => indexed.rsplit_once('[').unwrap(),
        None => field.rsplit_once('.').unwrap_or(("", field)),
    };
    let mut pointer = String::new();
    for part in parent.split(['.', '[']).filter(|part| !part.is_empty()) {
        pointer.push('/');
        pointer.push_str(part.trim_end_matches(']'));
    }
    (body.pointer_mut(&pointer).unwrap(), key)
}

/// A send type with a valid body of it: the starting point of its rules' tests.
pub(crate) struct Example {
    kind: SendKind,
    body: Value,
}

impl Example {
    /// `body`, a valid send of `kind`.
    pub(crate) fn new(kind: SendKind, body: Value) -> Self {
        Self { kind, body }
    }

    /// A Lipachat page's example of `kind`: its own `fields` and `messageId`, with the sandbox
    /// numbers in place of its `to` and `from` placeholders.
    pub(crate) fn page(kind: SendKind, message_id: &str, fields: Value) -> Self {
        let mut body = fields;
        body["messageId"] = json!(message_id);
        body["to"] = json!("254712345678");
        body["from"] = json!("254110090747");
        Self::new(kind, body)
    }

    /// The body, to change or send.
    pub(crate) fn body(&self) -> Value {
        self.body.clone()
    }

    /// Asserts the exact body forwarded for this one.
    pub(crate) fn assert_forwarded_as(&self, expected: &str) {
        assert_forwarded_as(self.kind, self.body.to_string().as_bytes(), expected);
    }

    /// Applies each step's edit to the body in turn, each on top of those before it, and after
    /// each asserts the errors the body then gets, as (field, message) in the answer's order;
    /// a step expecting none asserts that the body is accepted.
    pub(crate) fn assert_steps(&self, steps: &[(Edit, &[(&str, &str)])]) {
        let mut body = self.body.clone();
        for (step, (edit, expected)) in steps.iter().enumerate() {
            edit.apply(&mut body);
            if expected.is_empty() {
                assert!(run(self.kind, &body).is_ok(), "step {step}: {body}");
            } else {
                let got = errors(self.kind, &body);
                assert_eq!(got, owned(expected), "step {step}: {body}");
            }
        }
    }

    /// A required field of one JSON type: absent is "is required", `wrong` (a value of
    /// another type) is `must_be`.
    pub(crate) fn assert_required(&self, field: &'static str, wrong: Value, must_be: &str) {
        self.assert_steps(&[
            (Edit::Remove(field), &[(field, "is required")]),
            (Edit::Set(field, wrong), &[(field, must_be)]),
        ]);
    }

    /// Optional strings: the body is accepted without any of them, and with each set to its
    /// value of another JSON type, each is "must be a string", in the order given.
    pub(crate) fn assert_optional_strings(&self, wrong: &[(&'static str, Value)]) {
        let mut body = self.body.clone();
        for (field, _) in wrong {
            Edit::Remove(field).apply(&mut body);
        }
        assert!(run(self.kind, &body).is_ok(), "without {wrong:?}");
        for (field, value) in wrong {
            Edit::Set(field, value.clone()).apply(&mut body);
        }
        let expected: Vec<(&str, &str)> = wrong
            .iter()
            .map(|(field, _)| (*field, "must be a string"))
            .collect();
        assert_errors(self.kind, &body, &expected);
    }

    /// A text required under either of two names, given in the body as `name`: without it
    /// the error is `(name, missing)`, and given as `alias` instead it is accepted and
    /// forwarded as sent.
    pub(crate) fn assert_required_either(
        &self,
        name: &'static str,
        alias: &'static str,
        missing: &str,
    ) {
        let mut body = self.body.clone();
        let (parent, key) = parent_and_key(&mut body, name);
        let text = parent.as_object_mut().unwrap().remove(key).unwrap();
        assert_errors(self.kind, &body, &[(name, missing)]);
        Edit::Set(alias, text).apply(&mut body);
        assert_eq!(
            forwarded(self.kind, &body),
            body,
            "{alias} in place of {name}"
        );
    }

    /// A required text of at most `max` characters: absent or null is "is required", another
    /// JSON type "must be a string", `max` characters (more bytes) pass, one more is refused,
    /// and empty is the gateway's to judge.
    pub(crate) fn assert_required_text(&self, field: &'static str, max: usize) {
        let too_long = format!("must be at most {max} characters");
        self.assert_steps(&[
            (Edit::Remove(field), &[(field, "is required")]),
            (Edit::Set(field, Value::Null), &[(field, "is required")]),
            (
                Edit::Set(field, json!([field])),
                &[(field, "must be a string")],
            ),
            (Edit::Set(field, json!("é".repeat(max))), &[]),
            (
                Edit::Set(field, json!("a".repeat(max + 1))),
                &[(field, &too_long)],
            ),
            (Edit::Set(field, json!("")), &[]),
        ]);
    }
}
