//! Identifier newtypes: parse, don't validate.

use std::fmt;

/// Why an identifier was refused; the message names the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidIdentifier(pub String);

/// A 10-digit NHS number that passes the Modulus 11 check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NhsNumber(String);

impl NhsNumber {
    pub const SYSTEM: &'static str = "https://fhir.nhs.uk/Id/nhs-number";

    /// Accepts `9434765919` and the spaced form `943 476 5919`.
    pub fn parse(raw: &str) -> Result<Self, InvalidIdentifier> {
        let digits: String = raw.chars().filter(|c| *c != ' ').collect();
        if digits.len() != 10 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(InvalidIdentifier(format!(
                "'{raw}' is not an NHS number: it must be 10 digits"
            )));
        }
        let d: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
        let Some(check) = Self::check_digit(&d[..9]) else {
            return Err(InvalidIdentifier(format!(
                "'{raw}' is not a valid NHS number: no check digit exists for it (Modulus 11)"
            )));
        };
        if check != d[9] {
            return Err(InvalidIdentifier(format!(
                "'{raw}' is not a valid NHS number: the check digit should be {check} (Modulus 11)"
            )));
        }
        Ok(Self(digits))
    }

    /// The `n`-th number of the reserved test range 999 000 0000–999 999 9999 that passes the
    /// check (for synthetic data).
    pub fn test_number(n: u32) -> Self {
        Self::test_numbers()
            .nth(n as usize)
            .unwrap_or_else(|| Self("9990000000".into()))
    }

    /// Every valid NHS number of the reserved test range 999 000 0000–999 999 9999, in order.
    pub fn test_numbers() -> impl Iterator<Item = Self> {
        (999_000_000u64..1_000_000_000).filter_map(|candidate| {
            let s = format!("{candidate:09}");
            let d: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
            Self::check_digit(&d).map(|check| Self(format!("{s}{check}")))
        })
    }

    /// The Modulus 11 check digit of the first nine digits (weights 10..2), or None when the
    /// remainder gives 10 (no valid number starts with these nine digits).
    fn check_digit(first9: &[u32]) -> Option<u32> {
        let sum: u32 = first9.iter().zip((2..=10).rev()).map(|(x, w)| x * w).sum();
        match 11 - (sum % 11) {
            11 => Some(0),
            10 => None,
            c => Some(c),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ODS organisation or site code: 3 to 10 upper-case letters and digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OdsCode(String);

impl OdsCode {
    pub const ORGANIZATION_SYSTEM: &'static str = "https://fhir.nhs.uk/Id/ods-organization-code";
    pub const SITE_SYSTEM: &'static str = "https://fhir.nhs.uk/Id/ods-site-code";

    pub fn parse(raw: &str) -> Result<Self, InvalidIdentifier> {
        let ok = (3..=10).contains(&raw.len())
            && raw
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidIdentifier(format!(
                "'{raw}' is not an ODS code: it must be 3 to 10 upper-case letters or digits"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OdsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An SDS user id: 12 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SdsUserId(String);

impl SdsUserId {
    pub const SYSTEM: &'static str = "https://fhir.nhs.uk/Id/sds-user-id";

    pub fn parse(raw: &str) -> Result<Self, InvalidIdentifier> {
        if raw.len() == 12 && raw.chars().all(|c| c.is_ascii_digit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidIdentifier(format!(
                "'{raw}' is not an SDS user id: it must be 12 digits"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A UK postcode in its normal form (upper case, one space before the inward code).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Postcode(String);

impl Postcode {
    /// Outward code (2–4 chars: A9, A99, AA9, AA99, A9A, AA9A), then inward code 9AA.
    pub fn parse(raw: &str) -> Result<Self, InvalidIdentifier> {
        let compact: String = raw
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bad = || {
            InvalidIdentifier(format!(
                "'{raw}' is not a UK postcode (expected the form 'LS1 4HR')"
            ))
        };
        if !(5..=7).contains(&compact.len()) || !compact.is_ascii() {
            return Err(bad());
        }
        let (outward, inward) = compact.split_at(compact.len() - 3);
        let inward_ok = {
            let b = inward.as_bytes();
            b[0].is_ascii_digit() && b[1].is_ascii_alphabetic() && b[2].is_ascii_alphabetic()
        };
        let outward_ok = Self::is_outward_code(outward);
        if inward_ok && outward_ok {
            Ok(Self(format!("{outward} {inward}")))
        } else {
            Err(bad())
        }
    }

    /// Whether `code` (upper case) has the shape of an outward code: A9, A99, AA9, AA99, A9A or
    /// AA9A.
    pub fn is_outward_code(code: &str) -> bool {
        let shape: String = code
            .chars()
            .map(|c| {
                if c.is_ascii_digit() {
                    '9'
                } else if c.is_ascii_uppercase() {
                    'A'
                } else {
                    '?'
                }
            })
            .collect();
        matches!(
            shape.as_str(),
            "A9" | "A99" | "AA9" | "AA99" | "A9A" | "AA9A"
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The outward code (`LS1` of `LS1 4HR`).
    pub fn outward(&self) -> &str {
        self.0.split(' ').next().unwrap_or(&self.0)
    }
}

/// Where a distance search starts: a full postcode, or only its outward code (a district).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostcodeArea {
    Full(Postcode),
    Outward(String),
}

impl PostcodeArea {
    pub fn parse(raw: &str) -> Result<Self, InvalidIdentifier> {
        Postcode::parse(raw).map(Self::Full).or_else(|_| {
            let compact: String = raw
                .chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| c.to_ascii_uppercase())
                .collect();
            if Postcode::is_outward_code(&compact) {
                Ok(Self::Outward(compact))
            } else {
                Err(InvalidIdentifier(format!(
                    "'{raw}' is not a UK postcode or outward code (expected the form 'LS1 4HR' or 'LS1')"
                )))
            }
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Full(p) => p.as_str(),
            Self::Outward(o) => o,
        }
    }

    pub fn outward(&self) -> &str {
        match self {
            Self::Full(p) => p.outward(),
            Self::Outward(o) => o,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_number_modulus_11() {
        for ok in [
            "9912003888",
            "9462979626",
            "9999998887",
            "9000000009",
            "943 476 5919",
        ] {
            assert!(NhsNumber::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "9912003889",
            "123",
            "99120038881",
            "abcdefghij",
            "9912003890",
        ] {
            assert!(NhsNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_numbers_are_in_range_and_valid() {
        for n in [0, 1, 50, 500] {
            let t = NhsNumber::test_number(n);
            assert!(t.as_str().starts_with("999"), "{t}");
            assert!(NhsNumber::parse(t.as_str()).is_ok(), "{t}");
        }
        assert_ne!(NhsNumber::test_number(1), NhsNumber::test_number(2));
    }

    #[test]
    fn postcodes() {
        assert_eq!(
            Postcode::parse("ls14hr").map(|p| p.0),
            Ok("LS1 4HR".to_owned())
        );
        assert_eq!(
            Postcode::parse("SW1A 1AA").map(|p| p.0),
            Ok("SW1A 1AA".to_owned())
        );
        assert!(Postcode::parse("12345").is_err());
        assert!(Postcode::parse("LS1 HHR").is_err());
    }

    #[test]
    fn ods_and_sds() {
        assert!(OdsCode::parse("R69").is_ok());
        assert!(OdsCode::parse("r69").is_err());
        assert!(SdsUserId::parse("021600556514").is_ok());
        assert!(SdsUserId::parse("0216005565").is_err());
    }
}
