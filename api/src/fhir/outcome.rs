//! OperationOutcome issues and their FHIR JSON form.

use serde_json::{json, Value};

/// FHIR IssueSeverity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn code(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// The e-RS error codes (`https://fhir.nhs.uk/CodeSystem/ers-error-codes`) integrators match on.
pub const ERS_ERROR_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/ers-error-codes";

/// The UK Core profile every OperationOutcome the server returns claims.
pub const PROFILE: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-OperationOutcome";

/// One issue: FHIR IssueType code, optional e-RS error code, diagnostics naming what was
/// wrong, and the FHIRPath location when there is one.
#[derive(Debug, Clone)]
pub struct Issue {
    pub severity: Severity,
    pub code: &'static str,
    pub ers_code: Option<&'static str>,
    pub diagnostics: String,
    pub expression: Option<String>,
}

impl Issue {
    pub fn error(
        code: &'static str,
        ers_code: &'static str,
        diagnostics: impl Into<String>,
    ) -> Self {
        debug_assert!(
            super::terminology::concept(ERS_ERROR_SYSTEM, ers_code).is_some(),
            "{ers_code} is not in {ERS_ERROR_SYSTEM}: add it to fhir-profiles/codesystems/ers-error-codes.json"
        );
        Issue {
            severity: Severity::Error,
            code,
            ers_code: Some(ers_code),
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// An invalid value at a FHIRPath location.
    pub fn invalid_at(expression: impl Into<String>, diagnostics: impl Into<String>) -> Self {
        let expression = expression.into();
        Issue {
            severity: Severity::Error,
            code: "value",
            ers_code: Some("INVALID_VALUE"),
            diagnostics: format!("'{}' {}", expression, diagnostics.into()),
            expression: Some(expression),
        }
    }

    /// A value that is required and missing at a location.
    pub fn required_at(expression: impl Into<String>, diagnostics: impl Into<String>) -> Self {
        let expression = expression.into();
        Issue {
            severity: Severity::Error,
            code: "required",
            ers_code: Some("MISSING_VALUE"),
            diagnostics: format!("'{}' {}", expression, diagnostics.into()),
            expression: Some(expression),
        }
    }

    pub fn information(diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Information,
            code: "informational",
            ers_code: None,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// A warning: something the answer did not do as asked, said beside it.
    pub fn warning(diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Warning,
            ..Issue::information(diagnostics)
        }
    }

    pub fn with_expression(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }
}

/// The OperationOutcome resource for a list of issues.
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = issues
        .iter()
        .map(|i| {
            let mut v = json!({
                "severity": i.severity.code(),
                "code": i.code,
                "diagnostics": i.diagnostics,
            });
            if let Some(c) = i.ers_code {
                v["details"] = json!({"coding": [{"system": ERS_ERROR_SYSTEM, "code": c}]});
            }
            if let Some(e) = &i.expression {
                v["expression"] = json!([e]);
            }
            v
        })
        .collect();
    json!({"resourceType": "OperationOutcome", "meta": {"profile": [PROFILE]}, "issue": issues})
}

/// A validator finding as an issue.
pub fn from_finding(f: ers_fhir::validate::Finding) -> Issue {
    use ers_fhir::validate::Severity as V;
    let ers_code = match f.code {
        "required" => "MISSING_VALUE",
        "code-invalid" => "INVALID_CODE",
        "structure" => "INVALID_FHIR_STRUCTURE",
        _ => "INVALID_VALUE",
    };
    Issue {
        severity: if f.severity == V::Error {
            Severity::Error
        } else {
            Severity::Warning
        },
        code: f.code,
        ers_code: Some(ers_code),
        diagnostics: if f.expression.is_empty() {
            f.message
        } else {
            format!("'{}' {}", f.expression, f.message)
        },
        expression: (!f.expression.is_empty()).then_some(f.expression),
    }
}
