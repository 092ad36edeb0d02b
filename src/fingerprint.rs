//! The fingerprint of a normalised send (SPEC "Deduplication"): a leaf module, shared by
//! validation, which takes it, and the dedup stores, which compare it.

/// A 128-bit hash of the send type and the normalised body (xxh3: fast, and DoS resistance
/// is not needed because a caller can only collide with its own `messageId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Fingerprint(u128);

impl Fingerprint {
    /// Fingerprint of a send: its type's name, then the exact bytes that will be forwarded,
    /// so one `messageId` reused for another send type never matches.
    pub(crate) fn of(send_type: &str, body: &[u8]) -> Self {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(send_type.as_bytes());
        hasher.update(&[0]);
        hasher.update(body);
        Self(hasher.digest128())
    }

    /// The 16 bytes, for a shared store.
    pub(crate) fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Back from [`Fingerprint::to_bytes`].
    pub(crate) fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(u128::from_be_bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_type_is_part_of_the_fingerprint() {
        assert_ne!(
            Fingerprint::of("media", b"{}"),
            Fingerprint::of("text", b"{}")
        );
        assert_eq!(
            Fingerprint::of("media", b"{}"),
            Fingerprint::of("media", b"{}")
        );
    }

    #[test]
    fn bytes_round_trip() {
        let fp = Fingerprint::of("media", b"x");
        assert_eq!(Fingerprint::from_bytes(fp.to_bytes()), fp);
    }
}
