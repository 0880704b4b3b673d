//! e-RS Practitioner rules: SDS user ids are 12 digits and unique.

use serde_json::Value;

use super::*;
use crate::domain::SdsUserId;

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut checked = Checked::default();
    let mut issues = Vec::new();
    unique_identifier(
        r,
        "Practitioner",
        SdsUserId::SYSTEM,
        |v| SdsUserId::parse(v).map(|s| s.as_str().to_owned()),
        &mut checked,
        &mut issues,
    );
    finish(checked, issues)
}
