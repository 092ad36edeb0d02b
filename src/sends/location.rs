//! `POST /location` (Lipachat's "Sending Location" page; SPEC "Every Lipachat send"): a pin
//! on a map, inside the 24-hour window.
//!
//! The page has a table and no example. Its table gives `latitude` and `longtitude` (its own
//! spelling) as numbers in decimal degrees, with `name` and `address` strings. Both
//! coordinates are required (a location without one is no location); they are JSON numbers
//! in [-90, 90] and [-180, 180], and a string such as `"35.9"` is refused, since the page says
//! `number`. `name` and `address` are optional strings of any length (the page sets none).
//!
//! The page's spelling is what the gateway reads, but callers will write `longitude`: it is
//! accepted in its place and forwarded as `longtitude`, so the two spellings make the same
//! body (and the same fingerprint). Both at once is refused rather than one picked silently.
//!
//! The page's stored text shows no URL (its siblings all show theirs): the gateway path
//! `/api/v1/whatsapp/location` follows the siblings' pattern and is an assumption.

use utoipa::ToSchema;

use super::common::SendCommon;
use crate::validate::{Check, Forward};

pub(crate) const LATITUDE_RANGE: (f64, f64) = (-90.0, 90.0);
pub(crate) const LONGITUDE_RANGE: (f64, f64) = (-180.0, 180.0);

/// The type's own fields, in the order they are forwarded (`longitude` never is: it goes as
/// `longtitude`).
pub(crate) const FIELDS: &[&str] = &["latitude", "longtitude", "longitude", "name", "address"];

/// The location rules.
pub(crate) fn check(check: &mut Check<'_>) {
    if let Some(latitude) = check.required_number("latitude", check.get("latitude"))
        && !within(latitude, LATITUDE_RANGE)
    {
        check.error("latitude", between(LATITUDE_RANGE));
    }
    match (check.get("longtitude"), check.get("longitude")) {
        (None, None) => check.error("longtitude", "is required (or give it as longitude)"),
        (Some(_), Some(_)) => check.error(
            "longitude",
            "must not be given with longtitude (the same field, spelled as the page spells it)",
        ),
        (Some(raw), None) => longitude(check, "longtitude", raw),
        (None, Some(raw)) => {
            longitude(check, "longitude", raw);
            check.forward("longtitude", Forward::Raw(raw));
            check.forward("longitude", Forward::Omit);
        }
    }
    check.optional_string_type("name", check.get("name"));
    check.optional_string_type("address", check.get("address"));
}

fn longitude(check: &mut Check<'_>, field: &'static str, raw: &serde_json::value::RawValue) {
    if let Some(value) = check.number(field, raw)
        && !within(value, LONGITUDE_RANGE)
    {
        check.error(field, between(LONGITUDE_RANGE));
    }
}

/// The refusal of a coordinate out of `range`.
fn between((min, max): (f64, f64)) -> String {
    format!("must be between {min} and {max}")
}

fn within(value: f64, (min, max): (f64, f64)) -> bool {
    (min..=max).contains(&value)
}

// The OpenAPI schema only: the request is read raw, never into this type. `openapi::document`
// adds that exactly one of `longtitude` and `longitude` is given.
/// `POST /location` (Lipachat's "Sending Location"): a location pin. The longitude goes as
/// `longtitude` (the page's spelling) or `longitude`, exactly one of them.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code, reason = "an OpenAPI schema only: requests are read raw")]
pub(crate) struct LocationRequest {
    #[serde(flatten)]
    common: SendCommon,
    /// Latitude in decimal degrees, -90 to 90.
    #[schema(minimum = -90.0, maximum = 90.0, example = 35.929673)]
    latitude: f64,
    /// Longitude in decimal degrees, -180 to 180, as the page spells it. Give this or
    /// `longitude`, not both.
    #[schema(minimum = -180.0, maximum = 180.0, example = -78.948237)]
    longtitude: Option<f64>,
    /// The same as `longtitude`, spelled the usual way; forwarded as `longtitude`.
    #[schema(minimum = -180.0, maximum = 180.0)]
    longitude: Option<f64>,
    /// The place's name.
    #[schema(example = "Lipachat office")]
    name: Option<String>,
    /// The place's address.
    address: Option<String>,
}

#[cfg(test)]
mod tests {
    use crate::sends::SendKind;
    use crate::sends::test_support::Edit::{Remove, Set};
    use crate::sends::test_support::{Example, assert_errors, fields, forwarded, run};
    use serde_json::{Value, json};

    /// The page shows no example: this one is built from its table's own values (`e.g
    /// 35.929673`, `e.g -78.948237`), with a name and an address of our own.
    fn example() -> Example {
        Example::page(
            SendKind::Location,
            "0c6a4a9e-5d1b-4a57-9b0e-3f0f1d9b7c21",
            json!({
                "latitude": 35.929673,
                "longtitude": -78.948237,
                "name": "Lipachat office",
                "address": "Durham, North Carolina"
            }),
        )
    }

    #[test]
    fn the_example_is_forwarded_in_order() {
        example().assert_forwarded_as(
            r#"{"messageId":"0c6a4a9e-5d1b-4a57-9b0e-3f0f1d9b7c21","latitude":35.929673,"longtitude":-78.948237,"name":"Lipachat office","address":"Durham, North Carolina","from":"254110090747","to":"254712345678"}"#,
        );
    }

    #[test]
    fn longitude_is_forwarded_as_the_pages_longtitude() {
        let mut body = example().body();
        let value = body.as_object_mut().unwrap().remove("longtitude").unwrap();
        body["longitude"] = value;
        let sent = forwarded(SendKind::Location, &body);
        assert_eq!(sent, example().body());
        let a = run(SendKind::Location, &body).unwrap();
        let b = run(SendKind::Location, &example().body()).unwrap();
        assert_eq!(a.body, b.body);
        assert_eq!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn both_spellings_at_once_are_refused() {
        let twice =
            "must not be given with longtitude (the same field, spelled as the page spells it)";
        example().assert_steps(&[
            (Set("longitude", json!(-78.948237)), &[("longitude", twice)]),
            (Set("longitude", Value::Null), &[]),
        ]);
    }

    #[test]
    fn both_coordinates_are_required() {
        let no_longitude = ("longtitude", "is required (or give it as longitude)");
        example().assert_steps(&[
            (Remove("latitude"), &[("latitude", "is required")]),
            (
                Remove("longtitude"),
                &[("latitude", "is required"), no_longitude],
            ),
        ]);
    }

    #[test]
    fn coordinates_are_json_numbers() {
        let latitude = ("latitude", "must be a number");
        example().assert_steps(&[
            (Set("latitude", json!("35.929673")), &[latitude]),
            (
                Set("longtitude", json!([-78.9])),
                &[latitude, ("longtitude", "must be a number")],
            ),
        ]);
        let no_longitude = ("longtitude", "is required (or give it as longitude)");
        example().assert_steps(&[
            (Remove("longtitude"), &[no_longitude]),
            (
                Set("longitude", json!(true)),
                &[("longitude", "must be a number")],
            ),
        ]);
    }

    #[test]
    fn latitude_is_within_90_degrees() {
        let mut body = example().body();
        for ok in [
            json!(90),
            json!(-90),
            json!(0),
            json!(-0.5),
            json!(89.999999),
        ] {
            body["latitude"] = ok;
            assert!(run(SendKind::Location, &body).is_ok());
        }
        for bad in [json!(90.000001), json!(-91), json!(1e300)] {
            body["latitude"] = bad;
            let out_of_range = [("latitude", "must be between -90 and 90")];
            assert_errors(SendKind::Location, &body, &out_of_range);
        }
        let text = example().body().to_string().replace("35.929673", "1e400");
        assert!(
            crate::validate::validate(SendKind::Location.rules(), text.as_bytes(), None).is_err()
        );
    }

    #[test]
    fn longitude_is_within_180_degrees_under_either_name() {
        for name in ["longtitude", "longitude"] {
            example().assert_steps(&[
                (
                    Remove("longtitude"),
                    &[("longtitude", "is required (or give it as longitude)")],
                ),
                (Set(name, json!(180)), &[]),
                (
                    Set(name, json!(-180.5)),
                    &[(name, "must be between -180 and 180")],
                ),
            ]);
        }
    }

    #[test]
    fn name_and_address_are_optional_strings() {
        let address = json!({"street": "Main"});
        example().assert_optional_strings(&[("name", json!(1)), ("address", address)]);
    }

    #[test]
    fn unknown_fields_are_kept() {
        let mut body = example().body();
        body["accuracy"] = json!(12.5);
        assert_eq!(forwarded(SendKind::Location, &body), body);
    }

    #[test]
    fn every_error_is_reported_together() {
        let body = json!({"messageId": "m", "latitude": 91, "longtitude": 1, "longitude": 2,
            "name": 3, "to": "x"});
        assert_eq!(
            fields(SendKind::Location, &body),
            ["latitude", "longitude", "name", "to", "from"]
        );
    }
}
