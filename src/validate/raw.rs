//! The raw JSON a request is read as (SPEC "Every Lipachat send": unknown fields are forwarded
//! unchanged): an object as its keys and raw values in the caller's order, arrays as their raw
//! elements, strings borrowed when they have no escapes. Nothing here allocates per field
//! unless a value must be decoded, and nothing is parsed twice.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A raw JSON object: each key with its raw JSON value, in the caller's order.
pub(crate) struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> RawObject<'a> {
    /// Parses an object, or `None` when the text is not a JSON object.
    pub(crate) fn parse(raw: &'a RawValue) -> Option<Self> {
        serde_json::from_str(raw.get()).ok()
    }

    /// The value of `name` (the first, if repeated); a JSON `null` counts as absent.
    pub(crate) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
            .filter(|value| value.get() != "null")
    }

    /// Every key, in the caller's order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(key, _)| key.as_ref())
    }

    /// Every key with its raw value, in the caller's order (a `null` one included).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.0.iter().map(|(key, value)| (key.as_ref(), *value))
    }
}

impl<'de> serde::Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key.0, value));
                }
                Ok(RawObject(fields))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A raw JSON array's elements, or `None` when the text is not an array.
pub(crate) fn parse_array(raw: &RawValue) -> Option<Vec<&RawValue>> {
    struct Elements<'a>(Vec<&'a RawValue>);
    impl<'de> serde::Deserialize<'de> for Elements<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ArrayVisitor;
            impl<'de> Visitor<'de> for ArrayVisitor {
                type Value = Elements<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON array")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                    let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
                    while let Some(item) = seq.next_element::<&'de RawValue>()? {
                        items.push(item);
                    }
                    Ok(Elements(items))
                }
            }
            deserializer.deserialize_seq(ArrayVisitor)
        }
    }
    serde_json::from_str::<Elements<'_>>(raw.get())
        .ok()
        .map(|e| e.0)
}

/// A raw JSON value as a string, or `None` when it is not one. Most strings have no escapes:
/// then the text between the quotes is the string (a `RawValue` is valid JSON, so it holds no
/// raw quote or control character), borrowed without a second parse; escaped ones go through
/// serde_json.
pub(crate) fn string_of(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<CowStr<'_>>(text).ok().map(|s| s.0)
}

/// A raw JSON value as a number, or `None` when it is not one. A JSON number opens with a
/// minus or a digit, and its grammar is a subset of what `f64` parses; one too large for an
/// `f64` comes back infinite, which every range check refuses.
pub(crate) fn number_of(raw: &RawValue) -> Option<f64> {
    let text = raw.get();
    text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        .then(|| text.parse::<f64>().ok())
        .flatten()
}

/// A string borrowed from the input when it has no escapes, owned otherwise.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_read_with_and_without_escapes() {
        let raw = |text: &str| serde_json::from_str::<Box<RawValue>>(text).unwrap();
        assert_eq!(string_of(&raw(r#""plain""#)).as_deref(), Some("plain"));
        assert!(matches!(
            string_of(&raw(r#""plain""#)),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(string_of(&raw(r#""a\"b\u0063""#)).as_deref(), Some("a\"bc"));
        assert_eq!(string_of(&raw(r#""""#)).as_deref(), Some(""));
        assert_eq!(string_of(&raw(r#""é\n""#)).as_deref(), Some("é\n"));
        for not_a_string in ["7", "null", "[\"a\"]", "{\"a\":\"b\"}", "true"] {
            assert_eq!(string_of(&raw(not_a_string)), None, "{not_a_string}");
        }
    }

    #[test]
    fn numbers_are_read_from_json_numbers_only() {
        let raw = |text: &str| serde_json::from_str::<Box<RawValue>>(text).unwrap();
        assert_eq!(number_of(&raw("35.929673")), Some(35.929673));
        assert_eq!(number_of(&raw("-78.948237")), Some(-78.948237));
        assert_eq!(number_of(&raw("0")), Some(0.0));
        assert_eq!(number_of(&raw("-1E+2")), Some(-100.0));
        assert_eq!(number_of(&raw("1e400")), Some(f64::INFINITY));
        for not_a_number in [r#""35.9""#, "null", "true", "[1]", r#"{"a":1}"#] {
            assert_eq!(number_of(&raw(not_a_number)), None, "{not_a_number}");
        }
    }

    #[test]
    fn arrays_and_objects_are_read_raw() {
        let raw: Box<RawValue> = serde_json::from_str(r#"[{"a":1}, "x", null]"#).unwrap();
        let items = parse_array(&raw).unwrap();
        assert_eq!(items.len(), 3);
        let object = RawObject::parse(items[0]).unwrap();
        assert_eq!(object.get("a").map(RawValue::get), Some("1"));
        assert!(parse_array(items[1]).is_none());
        assert!(RawObject::parse(items[1]).is_none());
    }
}
