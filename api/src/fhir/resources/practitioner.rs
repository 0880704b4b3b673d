//! UK Core Practitioner rules.

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
        true,
        |v| SdsUserId::parse(v).map(|s| s.as_str().to_owned()),
        &mut checked,
        &mut issues,
    );
    code_in(
        r,
        "Practitioner",
        "gender",
        &["male", "female", "other", "unknown"],
        &mut issues,
    );
    date_element(r, "Practitioner", "birthDate", &mut issues);
    telecoms(r, "Practitioner", &mut issues);
    finish(checked, issues)
}
