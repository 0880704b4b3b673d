//! UK Core PractitionerRole rules.

use serde_json::Value;

use super::*;

pub fn check(r: &Value) -> Result<Checked, Vec<Issue>> {
    let checked = Checked::default();
    let mut issues = Vec::new();
    if let Some(p) = r.get("period") {
        period(p, "PractitionerRole.period", &mut issues);
    }
    telecoms(r, "PractitionerRole", &mut issues);
    finish(checked, issues)
}
