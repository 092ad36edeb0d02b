//! Phone numbers (SPEC "POST /media", `to`/`from` rule): a leaf module, shared by validation,
//! configuration (`LIPACHAT_DEFAULT_FROM`), rate limits and logs.
//!
//! A number is kept as its digits only; everything that prints one goes through
//! [`mask_phone`], so even `Debug` never shows a whole number.

use std::fmt;

/// Fewest digits a number may have, country code included.
pub(crate) const MIN_PHONE_DIGITS: usize = 8;
/// Most digits a number may have (E.164).
pub(crate) const MAX_PHONE_DIGITS: usize = 15;

/// A phone number with country code, digits only (8–15 of them).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PhoneNumber(Box<str>);

impl PhoneNumber {
    /// Strips `+`, spaces, dashes and parentheses; what remains must be 8–15 ASCII digits.
    pub(crate) fn parse(text: &str) -> Result<Self, &'static str> {
        let mut digits = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '0'..='9' => digits.push(c),
                '+' | ' ' | '-' | '(' | ')' => {}
                _ => {
                    return Err("must be a phone number: digits, with optional + ( ) - and spaces");
                }
            }
        }
        if !(MIN_PHONE_DIGITS..=MAX_PHONE_DIGITS).contains(&digits.len()) {
            return Err("must have 8 to 15 digits, country code included");
        }
        Ok(Self(digits.into_boxed_str()))
    }

    /// The digits, as sent upstream.
    pub(crate) fn digits(&self) -> &str {
        &self.0
    }

    /// The number as it may appear in a log line.
    pub(crate) fn masked(&self) -> String {
        mask_phone(&self.0)
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Phone numbers are personal data: even Debug shows them masked.
        write!(f, "PhoneNumber({})", mask_phone(&self.0))
    }
}

/// `254712345678` → `2547******78`: the country and operator prefix and the last two digits.
pub(crate) fn mask_phone(digits: &str) -> String {
    let count = digits.chars().count();
    if count <= 6 {
        return "*".repeat(count);
    }
    digits
        .chars()
        .enumerate()
        .map(|(i, c)| if i < 4 || i >= count - 2 { c } else { '*' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_is_stripped() {
        let number = PhoneNumber::parse("+254 (712) 345-678").unwrap();
        assert_eq!(number.digits(), "254712345678");
    }

    #[test]
    fn numbers_need_8_to_15_digits() {
        for bad in ["1234567", "1234567890123456", "2547abc12345", ""] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
        assert!(PhoneNumber::parse("12345678").is_ok());
        assert!(PhoneNumber::parse("123456789012345").is_ok());
    }

    #[test]
    fn phone_numbers_are_masked_in_the_middle() {
        assert_eq!(mask_phone("254712345678"), "2547******78");
        assert_eq!(mask_phone("25471234"), "2547**34");
        assert_eq!(mask_phone("12345"), "*****");
    }

    #[test]
    fn debug_masks_the_number() {
        let number = PhoneNumber::parse("254712345678").unwrap();
        assert_eq!(format!("{number:?}"), "PhoneNumber(2547******78)");
    }
}
