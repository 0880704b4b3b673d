//! Pure domain rules: no actix, diesel or fhirbolt here.

pub mod advice;
pub mod calendar;
pub mod caller;
pub mod directory;
pub mod identifiers;
pub mod referral;

pub use caller::{BusinessFunction, Caller};
pub use identifiers::{NhsNumber, OdsCode, Postcode, PostcodeArea, SdsUserId};

/// The SHA-256 of some bytes, as lower-case hex (an attachment's checksum and ETag, an
/// idempotent request's fingerprint).
pub fn sha256_hex(bytes: &[u8]) -> String {
    openssl::sha::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
