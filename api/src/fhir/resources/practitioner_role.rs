//! e-RS PractitionerRole rules: none beyond the profile yet (roles are checked where they are
//! used, by the caller seam).

pub use super::no_rules as check;
