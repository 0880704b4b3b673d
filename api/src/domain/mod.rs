//! Pure domain rules: no actix, diesel or fhirbolt here.

pub mod advice;
pub mod caller;
pub mod identifiers;
pub mod referral;

pub use caller::{BusinessFunction, Caller};
pub use identifiers::{NhsNumber, OdsCode, Postcode, PostcodeArea, SdsUserId};
