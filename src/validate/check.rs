//! The check engine every send type's rules are written with (SPEC "Every Lipachat send": each
//! type's required fields checked as its page documents them): required strings, numbers in a
//! range, arrays and nested objects read raw, every error recorded with its field's path, and
//! the normalised values to forward in place of the caller's text.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::raw::{RawObject, number_of, parse_array, string_of};
use super::{FieldError, FieldPath, longer_than};

/// A field a send type's check wants forwarded in normalised form.
pub(crate) enum Forward<'a> {
    /// Written as a JSON string.
    Str(Cow<'a, str>),
    /// Written as this raw JSON.
    Raw(&'a RawValue),
    /// Not written: the check forwards its value under another of the type's names (the
    /// location's `longitude`, sent as the page's `longtitude`).
    Omit,
}

/// Where a send type's check records its errors and normalised fields.
pub(crate) struct Check<'a> {
    /// The caller's object (common fields included).
    pub object: &'a RawObject<'a>,
    pub(super) errors: Vec<FieldError>,
    pub(super) forward: Vec<(&'static str, Forward<'a>)>,
}

impl<'a> Check<'a> {
    /// The value of a top-level field; `null` counts as absent.
    pub(crate) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.object.get(name)
    }

    /// Records an error.
    pub(crate) fn error(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) {
        self.errors.push(FieldError::new(field, message));
    }

    /// Forwards `field`, one of the type's `fields`, with this normalised value instead of
    /// the caller's text.
    pub(crate) fn forward(&mut self, field: &'static str, value: Forward<'a>) {
        self.forward.push((field, value));
    }

    /// A required string: "is required" when absent, "must be a string" when not one.
    /// A required top-level string of at most `max_chars` characters.
    pub(crate) fn required_text(&mut self, field: &'static str, max_chars: usize) {
        if let Some(text) = self.required_string(field, self.get(field))
            && longer_than(&text, max_chars)
        {
            self.error(field, format!("must be at most {max_chars} characters"));
        }
    }

    pub(crate) fn required_string(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<Cow<'a, str>> {
        match value {
            None => {
                self.error(field, "is required");
                None
            }
            Some(raw) => self.string(field, raw),
        }
    }

    /// An optional string: `None` when absent; "must be a string" when not one.
    pub(crate) fn optional_string(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<Cow<'a, str>> {
        value.and_then(|raw| self.string(field.into(), raw))
    }

    /// The value as a string, or "must be a string".
    pub(crate) fn string(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        raw: &'a RawValue,
    ) -> Option<Cow<'a, str>> {
        match string_of(raw) {
            Some(text) => Some(text),
            None => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    /// The value as an object, or "must be an object".
    pub(crate) fn object_of(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        raw: &'a RawValue,
    ) -> Option<RawObject<'a>> {
        let object = RawObject::parse(raw);
        if object.is_none() {
            self.error(field, "must be an object");
        }
        object
    }

    /// Each element of an array as an object, with its path (`buttons[1]`), handed to `rule`:
    /// an element that is not an object is "must be an object" and skipped.
    pub(crate) fn each_object(
        &mut self,
        field: FieldPath<'_>,
        items: Vec<&'a RawValue>,
        mut rule: impl FnMut(&mut Self, FieldPath<'_>, RawObject<'a>),
    ) {
        for (index, raw) in items.into_iter().enumerate() {
            let at = field.index(index);
            if let Some(object) = self.object_of(at, raw) {
                rule(self, at, object);
            }
        }
    }

    /// The value as an array, or "must be an array".
    pub(crate) fn array_of(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        raw: &'a RawValue,
    ) -> Option<Vec<&'a RawValue>> {
        let items = parse_array(raw);
        if items.is_none() {
            self.error(field, "must be an array");
        }
        items
    }

    /// A required object: "is required" when absent, "must be an object" when not one.
    pub(crate) fn required_object(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<RawObject<'a>> {
        match value {
            None => {
                self.error(field, "is required");
                None
            }
            Some(raw) => self.object_of(field, raw),
        }
    }

    /// An optional object: `None` when absent; "must be an object" when not one.
    pub(crate) fn optional_object(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<RawObject<'a>> {
        value.and_then(|raw| self.object_of(field, raw))
    }

    /// A required array: "is required" when absent, "must be an array" when not one.
    pub(crate) fn required_array(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<Vec<&'a RawValue>> {
        match value {
            None => {
                self.error(field, "is required");
                None
            }
            Some(raw) => self.array_of(field, raw),
        }
    }

    /// An optional array: `None` when absent; "must be an array" when not one.
    pub(crate) fn optional_array(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&'a RawValue>,
    ) -> Option<Vec<&'a RawValue>> {
        value.and_then(|raw| self.array_of(field, raw))
    }

    /// A required number: "is required" when absent, "must be a number" when not one.
    pub(crate) fn required_number(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&RawValue>,
    ) -> Option<f64> {
        match value {
            None => {
                self.error(field, "is required");
                None
            }
            Some(raw) => self.number(field, raw),
        }
    }

    /// The value as a number, or "must be a number".
    pub(crate) fn number(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        raw: &RawValue,
    ) -> Option<f64> {
        let number = number_of(raw);
        if number.is_none() {
            self.error(field, "must be a number");
        }
        number
    }

    /// A required string whose text no rule reads: checked without decoding it. True when
    /// it is one.
    pub(crate) fn required_string_type(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&RawValue>,
    ) -> bool {
        match value {
            None => {
                self.error(field, "is required");
                false
            }
            Some(raw) => self.string_type(field, raw),
        }
    }

    /// An optional string whose text no rule reads. True when present and a string.
    pub(crate) fn optional_string_type(
        &mut self,
        field: impl Into<Cow<'static, str>>,
        value: Option<&RawValue>,
    ) -> bool {
        value.is_some_and(|raw| self.string_type(field, raw))
    }

    /// An optional string that must be one of `allowed`, exactly as spelled there. Returns the
    /// matching entry.
    pub(crate) fn optional_choice(
        &mut self,
        field: impl Into<Cow<'static, str>> + Copy,
        value: Option<&'a RawValue>,
        allowed: &'static [&'static str],
    ) -> Option<&'static str> {
        let text = self.optional_string(field, value)?;
        let found = allowed.iter().copied().find(|a| *a == text);
        if found.is_none() {
            self.error(field, format!("must be one of {}", allowed.join(", ")));
        }
        found
    }

    /// A required string the Lipachat page names two ways: at least one of the two must be
    /// given, and each given one must be a string. The first is the one an error names.
    pub(crate) fn required_string_either(
        &mut self,
        first: (FieldPath<'_>, Option<&RawValue>),
        second: (FieldPath<'_>, Option<&RawValue>),
    ) {
        let ((first, first_value), (second, second_value)) = (first, second);
        if first_value.is_none() && second_value.is_none() {
            self.error(first, format!("is required (or give it as {second})"));
            return;
        }
        self.optional_string_type(first, first_value);
        self.optional_string_type(second, second_value);
    }

    fn string_type(&mut self, field: impl Into<Cow<'static, str>>, raw: &RawValue) -> bool {
        // A RawValue is valid JSON, so one that opens with a quote is a string.
        let is_string = raw.get().starts_with('"');
        if !is_string {
            self.error(field, "must be a string");
        }
        is_string
    }
}
