//! Entry points of the fuzz targets (`fhir-profiles/fuzz`) and of the corpus replay test: each
//! takes arbitrary bytes and must never panic, however they parse.

use serde_json::Value;

use crate::validate::{profiles_for, validate};

/// FHIR JSON: parsed strictly, and for `$validate`; what parses is validated against its base
/// definition and every profile of its type, and written back as XML.
pub fn json(data: &[u8]) {
    if let Ok(v) = crate::parse_json(data) {
        validate_all(&v);
        let _ = crate::to_xml(&v);
    }
    if let Ok((v, _)) = crate::parse_json_for_validation(data) {
        validate_all(&v);
    }
}

/// FHIR XML: parsed (DOCTYPE refused), then validated.
pub fn xml(data: &[u8]) {
    if let Ok(v) = crate::parse_xml(data) {
        validate_all(&v);
    }
}

/// Any JSON at all, straight into the validator (no R4 parse first).
pub fn validator(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        validate_all(&v);
    }
}

fn validate_all(v: &Value) {
    let t = v
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let _ = validate(v, None);
    for p in profiles_for(t) {
        let _ = validate(v, Some(p));
    }
}

#[cfg(test)]
mod tests {
    /// Every input in the checked-in corpus (seeds, and what fuzzing found and kept) goes
    /// through its target again: a finding stays fixed.
    #[test]
    fn the_corpus_replays_without_a_panic() {
        let root = std::path::PathBuf::from(
            // The package's folder where this test runs (a build may be reused from another
            // checkout of the same tree: the compile-time path is the fallback).
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("fuzz/corpus");
        let mut n = 0;
        for (dir, target) in [
            ("json", super::json as fn(&[u8])),
            ("xml", super::xml),
            ("validator", super::validator),
        ] {
            let entries = std::fs::read_dir(root.join(dir)).expect("corpus folder");
            for e in entries.flatten() {
                let data = std::fs::read(e.path()).expect("corpus file");
                target(&data);
                n += 1;
            }
        }
        assert!(n >= 10, "{n} corpus inputs");
    }
}
