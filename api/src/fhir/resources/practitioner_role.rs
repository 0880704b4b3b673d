//! e-RS PractitionerRole rules: its SDS role profile id is one role's (roles are otherwise checked
//! where they are used, by the caller seam).

use serde_json::Value;

use super::*;

/// The SDS role profile id: one role's, unique.
pub const ROLE_SYSTEM: &str = "https://fhir.nhs.uk/Id/sds-role-profile-id";

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let (mut checked, mut issues) = (Checked::default(), Vec::new());
    unique_identifier(
        r,
        "PractitionerRole",
        ROLE_SYSTEM,
        |v| Ok(v.to_owned()),
        &mut checked,
        &mut issues,
    );
    finish(checked, issues)
}
