//! UK Core Organization rules.

use serde_json::Value;

use super::*;
use crate::domain::OdsCode;

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let mut checked = Checked::default();
    let mut issues = Vec::new();
    unique_identifier(
        r,
        "Organization",
        OdsCode::ORGANIZATION_SYSTEM,
        true,
        |v| OdsCode::parse(v).map(|c| c.as_str().to_owned()),
        &mut checked,
        &mut issues,
    );
    unique_identifier(
        r,
        "Organization",
        OdsCode::SITE_SYSTEM,
        true,
        |v| OdsCode::parse(v).map(|c| c.as_str().to_owned()),
        &mut checked,
        &mut issues,
    );
    if r.get("identifier").is_none() && r.get("name").is_none() {
        issues.push(Issue::required_at(
            "Organization",
            "must have at least an identifier or a name (org-1)",
        ));
    }
    telecoms(r, "Organization", &mut issues);
    finish(checked, issues)
}
