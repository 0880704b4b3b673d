//! e-RS Organization rules: ODS organisation and site codes are well-formed and unique.

use serde_json::Value;

use super::*;
use crate::domain::OdsCode;

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut checked = Checked::default();
    let mut issues = Vec::new();
    for system in [OdsCode::ORGANIZATION_SYSTEM, OdsCode::SITE_SYSTEM] {
        unique_identifier(
            r,
            "Organization",
            system,
            |v| OdsCode::parse(v).map(|c| c.as_str().to_owned()),
            &mut checked,
            &mut issues,
        );
    }
    finish(checked, issues)
}
