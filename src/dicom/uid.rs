//! Deterministic DICOM UIDs (PS3.5 B.2): `2.25.` followed by a 128-bit number in decimal.
//!
//! The number is the first 128 bits of a SHA-256 over *framed* inputs — each part is preceded by its length as
//! a little-endian `u64`, so `["ab", "c"]` and `["a", "bc"]` hash differently — with the version and variant
//! bits set as for an RFC 9562 version-8 (custom) UUID, so the value is a well-formed UUID as B.2 asks. The
//! decimal has no leading zero and at most 39 digits: a UID is at most 44 characters (the limit is 64).
//!
//! What is hashed is the *request* (model digest, the sources' SOP Instance UIDs, target date, steps, seed,
//! code version), never the output bytes: a rerun of the same request yields the same UIDs, so a PACS that
//! already holds the series sees the same instances again instead of a duplicate series. Every derived UID also
//! hashes a domain label (`"study"`, `"series"`, `"sop"`, …) and its parent UID: study → series → SOP instance.

use sha2::{Digest, Sha256};

/// The root of UUID-derived UIDs (PS3.5 B.2).
pub const UUID_ROOT: &str = "2.25.";

/// A SHA-256 fed with length-prefixed parts.
#[derive(Clone, Default)]
pub struct FramedHasher(Sha256);

impl FramedHasher {
    /// A hasher whose first part is `domain` (what the UID is for).
    pub fn new(domain: &str) -> Self {
        let mut h = FramedHasher(Sha256::new());
        h.part(domain.as_bytes());
        h
    }

    /// Add one part: its length (u64, little endian), then its bytes.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Add one text part.
    pub fn text(&mut self, s: &str) -> &mut Self {
        self.part(s.as_bytes())
    }

    /// Add a list as one count part followed by one part per element (so lists cannot run into each other).
    pub fn list<S: AsRef<str>>(&mut self, items: &[S]) -> &mut Self {
        self.part(&(items.len() as u64).to_le_bytes());
        for s in items {
            self.text(s.as_ref());
        }
        self
    }

    /// The UID: `2.25.` + the 128-bit value (UUID v8 bits set) in decimal.
    pub fn uid(&self) -> String {
        let digest = self.0.clone().finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[6] = (b[6] & 0x0F) | 0x80; // version 8 (custom)
        b[8] = (b[8] & 0x3F) | 0x80; // RFC 9562 variant
        format!("{UUID_ROOT}{}", u128::from_be_bytes(b))
    }
}

/// The UID of `domain` over `parts` (each framed).
pub fn uid_of(domain: &str, parts: &[&str]) -> String {
    let mut h = FramedHasher::new(domain);
    for p in parts {
        h.text(p);
    }
    h.uid()
}

/// A series UID below a study UID; `kind` separates the series of one study (e.g. `"sc"`, `"mr"`).
pub fn series_uid(study_uid: &str, kind: &str) -> String {
    uid_of("series", &[study_uid, kind])
}

/// The SOP Instance UID of instance `index` (0-based) of a series.
pub fn sop_instance_uid(series_uid: &str, index: usize) -> String {
    uid_of("sop", &[series_uid, &index.to_string()])
}

/// Is `s` a valid UID: 1–64 characters, dot-separated non-empty numeric components without leading zeros?
pub fn is_valid_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_separates_parts_and_lists() {
        assert_ne!(uid_of("x", &["ab", "c"]), uid_of("x", &["a", "bc"]));
        assert_ne!(uid_of("x", &["abc"]), uid_of("x", &["ab", "c"]));
        assert_ne!(uid_of("x", &["", "a"]), uid_of("x", &["a", ""]));
        assert_ne!(uid_of("study", &["a"]), uid_of("series", &["a"]), "the domain is hashed");
        let mut a = FramedHasher::new("x");
        a.list(&["a", "b"]).list(&["c"]);
        let mut b = FramedHasher::new("x");
        b.list(&["a"]).list(&["b", "c"]);
        assert_ne!(a.uid(), b.uid());
    }

    #[test]
    fn format_is_a_b2_uuid_uid() {
        for i in 0..500 {
            let u = uid_of("t", &[&i.to_string()]);
            assert!(u.starts_with("2.25."), "{u}");
            assert!(is_valid_uid(&u), "{u}");
            let digits = &u[5..];
            assert!(digits.len() <= 39 && !digits.starts_with('0'), "{u}");
            let v: u128 = digits.parse().expect("decimal u128");
            assert_eq!((v >> 76) & 0xF, 8, "version nibble");
            assert_eq!((v >> 62) & 0x3, 2, "variant bits");
        }
    }

    #[test]
    fn deterministic_and_derived() {
        let study = uid_of("study", &["model", "20200101"]);
        assert_eq!(study, uid_of("study", &["model", "20200101"]));
        let s1 = series_uid(&study, "sc");
        let s2 = series_uid(&study, "mr");
        assert_ne!(s1, s2);
        assert_eq!(sop_instance_uid(&s1, 3), sop_instance_uid(&s1, 3));
        assert_ne!(sop_instance_uid(&s1, 3), sop_instance_uid(&s1, 4));
        assert_ne!(sop_instance_uid(&s1, 0), sop_instance_uid(&s2, 0));
        // Pinned against an independent computation (Python hashlib: SHA-256 over u64-LE-length-framed parts,
        // UUID v8 bits), so that a change to the derivation — which would re-key every stored series — is noticed.
        assert_eq!(uid_of("t", &["a"]), "2.25.12438765364743056476597022840695238995");
    }

    #[test]
    fn validity_check() {
        assert!(is_valid_uid("1.2.840.10008.1.2.1"));
        assert!(is_valid_uid("2.25.0"));
        assert!(!is_valid_uid("1.02.3"));
        assert!(!is_valid_uid("1..2"));
        assert!(!is_valid_uid("1.2a"));
        assert!(!is_valid_uid(&"1".repeat(65)));
    }
}
