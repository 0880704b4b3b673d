//! A StructureDefinition-driven validator over FHIR JSON. Its data (`generated/profiles.json`)
//! is derived from the base R4 snapshots and UK Core by `tools/derive.py`.
//!
//! Checks: unknown elements, cardinality (min and max), choice types, primitive formats, required
//! bindings (errors) and extensible / preferred bindings (warnings) where the value set can be
//! enumerated, fixed values, UK Core value-discriminated slices (e.g. at most one NHS number,
//! with a value), declared extensions (cardinality and value type), and the base invariants
//! that matter here, each named by its key.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding: FHIR issue type code, FHIRPath location, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    pub expression: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct Binding {
    strength: String,
    #[serde(rename = "valueSet")]
    value_set: String,
}

#[derive(Debug, Deserialize)]
struct ElementDef {
    path: String,
    min: u32,
    max: String,
    #[serde(default)]
    types: Vec<String>,
    #[serde(rename = "ref")]
    content_ref: Option<String>,
    binding: Option<Binding>,
    #[serde(flatten)]
    rest: HashMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct Discriminator {
    path: String,
    value: Value,
}

#[derive(Debug, Deserialize)]
struct SliceChild {
    path: String,
    min: u32,
}

#[derive(Debug, Deserialize)]
struct Slice {
    path: String,
    name: String,
    min: u32,
    max: String,
    discriminator: Discriminator,
    children: Vec<SliceChild>,
}

#[derive(Debug, Deserialize)]
struct ProfileExtension {
    path: String,
    name: String,
    url: Option<String>,
    max: String,
}

#[derive(Debug, Deserialize)]
pub struct Profile {
    pub url: String,
    pub version: Option<String>,
    slices: Vec<Slice>,
    extensions: Vec<ProfileExtension>,
}

#[derive(Debug, Deserialize)]
struct ExtensionDef {
    types: Vec<String>,
    min: u32,
    complex: bool,
}

#[derive(Debug, Deserialize)]
struct Model {
    types: HashMap<String, Vec<ElementDef>>,
    profiles: HashMap<String, Profile>,
    extensions: HashMap<String, ExtensionDef>,
    #[serde(rename = "valueSets")]
    value_sets: HashMap<String, Vec<(String, String)>>,
}

fn model() -> Option<&'static Model> {
    static MODEL: OnceLock<Option<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| serde_json::from_str(include_str!("../generated/profiles.json")).ok())
        .as_ref()
}

/// The UK Core profile of a resource type, when the validator knows one.
pub fn profile_of(resource_type: &str) -> Option<&'static Profile> {
    model()?.profiles.get(resource_type)
}

/// Every profile URL the validator can check against.
pub fn known_profiles() -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<(&str, &str)> = model()
        .map(|m| {
            m.profiles
                .iter()
                .map(|(t, p)| (t.as_str(), p.url.as_str()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

struct Ctx<'a> {
    m: &'a Model,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    fn error(&mut self, code: &'static str, at: &str, message: String) {
        self.out.push(Finding {
            severity: Severity::Error,
            code,
            expression: at.to_owned(),
            message,
        });
    }
    fn warning(&mut self, code: &'static str, at: &str, message: String) {
        self.out.push(Finding {
            severity: Severity::Warning,
            code,
            expression: at.to_owned(),
            message,
        });
    }
}

fn is_primitive(t: &str) -> bool {
    t.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        || t.starts_with("http://hl7.org/fhirpath/")
}

fn capitalise(t: &str) -> String {
    let mut c = t.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// Lexical rules of the R4 primitive types.
fn primitive_ok(t: &str, v: &Value) -> Result<(), String> {
    let s = || {
        v.as_str()
            .ok_or_else(|| format!("must be a JSON string for FHIR type {t}"))
    };
    match t {
        "boolean" => v
            .as_bool()
            .map(|_| ())
            .ok_or_else(|| "must be true or false".into()),
        "integer" | "positiveInt" | "unsignedInt" => {
            let n = v
                .as_i64()
                .ok_or_else(|| format!("must be a whole number ({t})"))?;
            match t {
                "positiveInt" if n < 1 => Err("must be 1 or more (positiveInt)".into()),
                "unsignedInt" if n < 0 => Err("must be 0 or more (unsignedInt)".into()),
                _ if n < i64::from(i32::MIN) || n > i64::from(i32::MAX) => {
                    Err("is out of the 32-bit range".into())
                }
                _ => Ok(()),
            }
        }
        "decimal" => v
            .as_f64()
            .map(|_| ())
            .ok_or_else(|| "must be a JSON number (decimal)".into()),
        "string" | "markdown" => {
            let s = s()?;
            if s.trim().is_empty() {
                Err("must not be empty or only whitespace".into())
            } else {
                Ok(())
            }
        }
        "code" => {
            let s = s()?;
            if s.is_empty() || s.trim() != s || s.contains("  ") || s.contains(['\n', '\t']) {
                Err(format!(
                    "'{s}' is not a valid code (no leading, trailing or repeated whitespace)"
                ))
            } else {
                Ok(())
            }
        }
        "id" => {
            let s = s()?;
            if (1..=64).contains(&s.len())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                Ok(())
            } else {
                Err(format!("'{s}' is not a valid id (1-64 of A-Z a-z 0-9 - .)"))
            }
        }
        "uri" | "url" | "canonical" | "oid" | "uuid" => {
            let s = s()?;
            if s.is_empty() || s.contains(char::is_whitespace) {
                Err(format!("'{s}' is not a valid {t} (no whitespace)"))
            } else if t == "oid" && !s.starts_with("urn:oid:") {
                Err(format!("'{s}' is not an oid (urn:oid:...)"))
            } else if t == "uuid" && !s.starts_with("urn:uuid:") {
                Err(format!("'{s}' is not a uuid (urn:uuid:...)"))
            } else {
                Ok(())
            }
        }
        "date" => date_ok(s()?, false, false),
        "dateTime" => date_ok(s()?, true, false),
        "instant" => date_ok(s()?, true, true),
        "time" => {
            let s = s()?;
            let ok = s.len() >= 8 && chrono_like_time(s);
            if ok {
                Ok(())
            } else {
                Err(format!("'{s}' is not a valid time (hh:mm:ss)"))
            }
        }
        "base64Binary" => {
            let s = s()?;
            if s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | ' '))
            {
                Ok(())
            } else {
                Err("is not base64".into())
            }
        }
        _ => Ok(()),
    }
}

fn chrono_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    let two = |i: usize, max: u8| {
        b.get(i..i + 2)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<u8>().ok())
            .is_some_and(|n| n <= max)
    };
    two(0, 23)
        && b[2] == b':'
        && two(3, 59)
        && b[5] == b':'
        && two(6, 60)
        && (s.len() == 8
            || (b[8] == b'.' && s[9..].chars().all(|c| c.is_ascii_digit()) && s.len() > 9))
}

/// FHIR date / dateTime / instant lexical forms (with real calendar dates).
fn date_ok(s: &str, time_allowed: bool, time_required: bool) -> Result<(), String> {
    let bad = || {
        let want = match (time_allowed, time_required) {
            (_, true) => "an instant (YYYY-MM-DDThh:mm:ss[.fff]Z or with an offset)",
            (true, false) => {
                "a dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss with a zone)"
            }
            _ => "a date (YYYY, YYYY-MM or YYYY-MM-DD)",
        };
        format!("'{s}' is not {want}")
    };
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    if time_required && (time.is_none() || date.len() != 10) {
        return Err(bad());
    }
    let parts: Vec<&str> = date.split('-').collect();
    let num = |p: &str, len: usize| p.len() == len && p.chars().all(|c| c.is_ascii_digit());
    let valid_date = match parts.as_slice() {
        [y] => num(y, 4),
        [y, m] => num(y, 4) && num(m, 2) && (1..=12).contains(&m.parse::<u32>().unwrap_or(0)),
        [y, m, d] => {
            num(y, 4) && num(m, 2) && num(d, 2) && {
                let (y, m, d) = (
                    y.parse::<i32>().unwrap_or(0),
                    m.parse::<u32>().unwrap_or(0),
                    d.parse::<u32>().unwrap_or(0),
                );
                let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
                let days = match m {
                    1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
                    4 | 6 | 9 | 11 => 30,
                    2 if leap => 29,
                    2 => 28,
                    _ => 0,
                };
                (1..=days).contains(&d)
            }
        }
        _ => false,
    };
    if !valid_date {
        return Err(bad());
    }
    match time {
        None => Ok(()),
        Some(_) if !time_allowed || date.len() != 10 => Err(bad()),
        Some(t) => {
            let (clock, zone) = if let Some(c) = t.strip_suffix('Z') {
                (c, "Z")
            } else if t.len() > 6 && matches!(t.as_bytes()[t.len() - 6], b'+' | b'-') {
                t.split_at(t.len() - 6)
            } else {
                return Err(bad());
            };
            let zone_ok =
                zone == "Z" || (zone.len() == 6 && chrono_like_time(&format!("{}:00", &zone[1..])));
            if chrono_like_time(clock) && zone_ok {
                Ok(())
            } else {
                Err(bad())
            }
        }
    }
}

/// Finds the element definition a JSON key names under `parent` (choice types included).
fn child<'m>(
    defs: &'m [ElementDef],
    parent: &str,
    key: &str,
) -> Option<(&'m ElementDef, Option<String>)> {
    let exact = format!("{parent}.{key}");
    if let Some(d) = defs.iter().find(|d| d.path == exact) {
        return Some((d, None));
    }
    defs.iter().find_map(|d| {
        let stem = d.path.strip_suffix("[x]")?;
        let name = stem.strip_prefix(parent)?.strip_prefix('.')?;
        let suffix = key.strip_prefix(name)?;
        d.types
            .iter()
            .find(|t| capitalise(t) == suffix)
            .map(|t| (d, Some(t.clone())))
    })
}

fn binding_check(ctx: &mut Ctx<'_>, b: &Binding, t: &str, v: &Value, at: &str) {
    let Some(codes) = ctx.m.value_sets.get(&b.value_set) else {
        return;
    };
    let contains = |system: Option<&str>, code: &str| {
        codes
            .iter()
            .any(|(s, c)| c == code && system.is_none_or(|sys| sys == s))
    };
    let (ok, shown) = match t {
        "code" => match v.as_str() {
            Some(c) => (contains(None, c), c.to_owned()),
            None => return,
        },
        "Coding" => {
            let (Some(system), Some(code)) = (
                v.get("system").and_then(Value::as_str),
                v.get("code").and_then(Value::as_str),
            ) else {
                return;
            };
            (contains(Some(system), code), format!("{system}|{code}"))
        }
        "CodeableConcept" => {
            let codings: Vec<(&str, &str)> = v
                .get("coding")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| {
                            Some((c.get("system")?.as_str()?, c.get("code")?.as_str()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if codings.is_empty() {
                // Text only: allowed for extensible and weaker bindings.
                if b.strength == "required" {
                    ctx.error(
                        "code-invalid",
                        at,
                        format!("needs a coding from {} (required binding)", b.value_set),
                    );
                }
                return;
            }
            (
                codings.iter().any(|(s, c)| contains(Some(s), c)),
                codings
                    .iter()
                    .map(|(s, c)| format!("{s}|{c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        }
        "Quantity" | "string" | "uri" => return,
        _ => return,
    };
    if ok {
        return;
    }
    let message = format!("({shown}) is not in the value set {}", b.value_set);
    match b.strength.as_str() {
        "required" => ctx.error("code-invalid", at, format!("{message} (required binding)")),
        "extensible" => ctx.warning(
            "code-invalid",
            at,
            format!("{message} (extensible binding: use it when a code fits)"),
        ),
        _ => {}
    }
}

fn validate_value(
    ctx: &mut Ctx<'_>,
    defs: &[ElementDef],
    d: &ElementDef,
    t: &str,
    v: &Value,
    at: &str,
) {
    if is_primitive(t) {
        if !t.starts_with("http://") {
            if let Err(e) = primitive_ok(t, v) {
                ctx.error("value", at, e);
                return;
            }
        }
    } else if t == "BackboneElement" || t == "Element" {
        validate_object(ctx, defs, &d.path, v, at);
    } else if t == "Resource" {
        // Contained resources are validated as resources of their own type by their own rules.
    } else if let Some(type_defs) = ctx.m.types.get(t) {
        validate_object(ctx, type_defs, t, v, at);
    }
    if let Some(fixed) = d
        .rest
        .iter()
        .find(|(k, _)| k.starts_with("fixed"))
        .map(|(_, v)| v)
    {
        if v != fixed {
            ctx.error("value", at, format!("must be exactly {fixed}"));
        }
    }
    if let Some(b) = &d.binding {
        binding_check(ctx, b, t, v, at);
    }
}

fn validate_object(ctx: &mut Ctx<'_>, defs: &[ElementDef], parent: &str, v: &Value, at: &str) {
    let Some(obj) = v.as_object() else {
        ctx.error("structure", at, "must be a JSON object".into());
        return;
    };
    for (key, value) in obj {
        if key == "resourceType" || key.starts_with('_') {
            continue;
        }
        let Some((d, choice)) = child(defs, parent, key) else {
            ctx.error(
                "structure",
                &format!("{at}.{key}"),
                format!("'{key}' is not an element of {parent}"),
            );
            continue;
        };
        let (d_path_defs, d) = match &d.content_ref {
            // A content reference (e.g. Questionnaire.item.item) reuses another element's children.
            Some(r) => match defs.iter().find(|x| &x.path == r) {
                Some(target) => (defs, target),
                None => (defs, d),
            },
            None => (defs, d),
        };
        let items: Vec<&Value> = match value {
            Value::Array(a) => {
                if d.max == "1" {
                    ctx.error(
                        "structure",
                        &format!("{at}.{key}"),
                        "must be a single value, not an array (max 1)".into(),
                    );
                    continue;
                }
                if let Ok(max) = d.max.parse::<usize>() {
                    if a.len() > max {
                        ctx.error(
                            "structure",
                            &format!("{at}.{key}"),
                            format!("has {} values; at most {max} are allowed", a.len()),
                        );
                    }
                }
                a.iter().collect()
            }
            other => {
                if d.max != "1" && d.max != "0" {
                    ctx.error(
                        "structure",
                        &format!("{at}.{key}"),
                        "must be an array".into(),
                    );
                    continue;
                }
                vec![other]
            }
        };
        if d.max == "0" {
            ctx.error(
                "structure",
                &format!("{at}.{key}"),
                "is not allowed here (max 0)".into(),
            );
            continue;
        }
        let many = matches!(value, Value::Array(_));
        for (i, item) in items.into_iter().enumerate() {
            let loc = if many {
                format!("{at}.{key}[{i}]")
            } else {
                format!("{at}.{key}")
            };
            let t = match (&choice, d.types.as_slice()) {
                (Some(t), _) => t.clone(),
                (None, [only]) => only.clone(),
                (None, _) => "BackboneElement".to_owned(),
            };
            validate_value(ctx, d_path_defs, d, &t, item, &loc);
        }
    }
    for d in defs.iter().filter(|d| d.min > 0) {
        let Some(name) = d
            .path
            .strip_prefix(parent)
            .and_then(|r| r.strip_prefix('.'))
        else {
            continue;
        };
        if name.contains('.') {
            continue;
        }
        let present = match name.strip_suffix("[x]") {
            Some(stem) => obj
                .keys()
                .any(|k| k.starts_with(stem) && k.len() > stem.len()),
            None => obj.contains_key(name) || obj.contains_key(&format!("_{name}")),
        };
        if !present {
            ctx.error(
                "required",
                &format!("{at}.{name}"),
                format!("is required ({parent}.{name} min {})", d.min),
            );
        }
    }
}

fn profile_rules(ctx: &mut Ctx<'_>, p: &Profile, v: &Value, root: &str) {
    for s in &p.slices {
        let Some(field) = s.path.strip_prefix(root).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let items = v
            .get(field)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let matching: Vec<(usize, &Value)> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| i.get(&s.discriminator.path) == Some(&s.discriminator.value))
            .collect();
        if let Ok(max) = s.max.parse::<usize>() {
            if matching.len() > max {
                ctx.error(
                    "structure",
                    &format!("{root}.{field}"),
                    format!(
                        "has {} '{}' entries ({} = {}); at most {max} allowed by {}",
                        matching.len(),
                        s.name,
                        s.discriminator.path,
                        s.discriminator.value,
                        p.url
                    ),
                );
            }
        }
        if (matching.len() as u32) < s.min {
            ctx.error(
                "required",
                &format!("{root}.{field}"),
                format!("needs at least {} '{}' entries", s.min, s.name),
            );
        }
        for (i, item) in matching {
            for c in s.children.iter().filter(|c| c.min > 0) {
                if item.get(&c.path).is_none() {
                    ctx.error(
                        "required",
                        &format!("{root}.{field}[{i}].{}", c.path),
                        format!("is required in a '{}' {field} ({})", s.name, p.url),
                    );
                }
            }
        }
    }
    // Declared extensions: how many, and the value type their definitions allow.
    for e in &p.extensions {
        let Some(url) = &e.url else { continue };
        let Some(field) = e.path.strip_prefix(root).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        if field != "extension" {
            continue;
        }
        let items: Vec<(usize, &Value)> = v
            .get("extension")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .enumerate()
                    .filter(|(_, x)| x.get("url").and_then(Value::as_str) == Some(url.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(max) = e.max.parse::<usize>() {
            if items.len() > max {
                ctx.error(
                    "structure",
                    &format!("{root}.extension"),
                    format!("has {} '{}' extensions; at most {max}", items.len(), e.name),
                );
            }
        }
        let Some(def) = ctx.m.extensions.get(url) else {
            continue;
        };
        for (i, x) in items {
            let at = format!("{root}.extension[{i}]");
            let value_key = x
                .as_object()
                .and_then(|o| o.keys().find(|k| k.starts_with("value")).cloned());
            match value_key {
                None if def.min > 0 && !def.complex => ctx.error(
                    "required",
                    &format!("{at}.value[x]"),
                    format!("the '{}' extension needs a value", e.name),
                ),
                Some(k)
                    if !def.types.is_empty()
                        && !def
                            .types
                            .iter()
                            .any(|t| format!("value{}", capitalise(t)) == k) =>
                {
                    ctx.error(
                        "structure",
                        &format!("{at}.{k}"),
                        format!(
                            "the '{}' extension takes {}",
                            e.name,
                            def.types
                                .iter()
                                .map(|t| format!("value{}", capitalise(t)))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                    )
                }
                _ => {}
            }
        }
    }
}

/// Base R4 invariants that matter for the hosted resources, each named by its key.
fn invariants(ctx: &mut Ctx<'_>, t: &str, v: &Value) {
    let period = |ctx: &mut Ctx<'_>, p: &Value, at: &str| {
        if let (Some(s), Some(e)) = (
            p.get("start").and_then(Value::as_str),
            p.get("end").and_then(Value::as_str),
        ) {
            if s.len() >= 10 && e.len() >= 10 && s[..10] > e[..10] {
                ctx.error(
                    "invariant",
                    at,
                    "per-1: the start must not be after the end".into(),
                );
            }
        }
    };
    match t {
        "Patient" => {
            for (i, c) in v
                .get("contact")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if ["name", "telecom", "address", "organization"]
                    .iter()
                    .all(|k| c.get(k).is_none())
                {
                    ctx.error(
                        "invariant",
                        &format!("Patient.contact[{i}]"),
                        "pat-1: a contact needs a name, telecom, address or organization".into(),
                    );
                }
            }
        }
        "Organization" if v.get("identifier").is_none() && v.get("name").is_none() => {
            ctx.error(
                "invariant",
                "Organization",
                "org-1: an organization needs an identifier or a name".into(),
            );
        }
        "PractitionerRole" => {
            if let Some(p) = v.get("period") {
                period(ctx, p, "PractitionerRole.period");
            }
        }
        "Appointment" => {
            let status = v.get("status").and_then(Value::as_str).unwrap_or_default();
            let (start, end) = (v.get("start").is_some(), v.get("end").is_some());
            if start != end {
                ctx.error(
                    "invariant",
                    "Appointment",
                    "app-2: either start and end are both given, or neither".into(),
                );
            }
            if !start && !["proposed", "cancelled", "waitlist"].contains(&status) {
                ctx.error(
                    "invariant",
                    "Appointment.start",
                    format!("app-3: a {status} appointment needs start and end (only proposed, cancelled or waitlist ones may leave them out)"),
                );
            }
            if v.get("cancelationReason").is_some() && !["cancelled", "noshow"].contains(&status) {
                ctx.error(
                    "invariant",
                    "Appointment.cancelationReason",
                    "app-4: a cancellation reason belongs only to a cancelled or no-show appointment".into(),
                );
            }
        }
        _ => {}
    }
    extensions(ctx, v, t);
    for (i, tc) in v
        .get("telecom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if tc.get("value").is_some() && tc.get("system").is_none() {
            ctx.error(
                "invariant",
                &format!("{t}.telecom[{i}]"),
                "cpt-2: a contact point with a value needs a system".into(),
            );
        }
    }
}

/// ext-1 on every extension and modifierExtension, at any depth: an extension has nested
/// extensions or a value, never both and never neither.
fn extensions(ctx: &mut Ctx<'_>, v: &Value, at: &str) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                let path = format!("{at}.{k}");
                if k == "extension" || k == "modifierExtension" {
                    for (i, e) in child.as_array().into_iter().flatten().enumerate() {
                        let nested = e.get("extension").is_some();
                        let valued = e
                            .as_object()
                            .is_some_and(|m| m.keys().any(|key| key.starts_with("value")));
                        if nested == valued {
                            ctx.error(
                                "invariant",
                                &format!("{path}[{i}]"),
                                format!(
                                    "ext-1: extension {} must have either nested extensions or a value[x], not {}",
                                    e.get("url").and_then(Value::as_str).unwrap_or("(no url)"),
                                    if nested { "both" } else { "neither" }
                                ),
                            );
                        }
                    }
                }
                extensions(ctx, child, &path);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                extensions(ctx, item, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

/// Validates a resource against the base R4 definition of its type and, when `profile` is
/// true, its UK Core profile. An unknown type gives one `not-supported` finding.
pub fn validate(resource: &Value, profile: bool) -> Vec<Finding> {
    let Some(m) = model() else {
        return vec![Finding {
            severity: Severity::Error,
            code: "exception",
            expression: String::new(),
            message: "the validator's definitions are unreadable".into(),
        }];
    };
    let Some(t) = resource.get("resourceType").and_then(Value::as_str) else {
        return vec![Finding {
            severity: Severity::Error,
            code: "required",
            expression: "resourceType".into(),
            message: "is required".into(),
        }];
    };
    let Some(defs) = m.types.get(t) else {
        return vec![Finding {
            severity: Severity::Error,
            code: "not-supported",
            expression: t.into(),
            message: format!("{t} has no definition in this validator"),
        }];
    };
    let mut ctx = Ctx { m, out: Vec::new() };
    validate_object(&mut ctx, defs, t, resource, t);
    if profile {
        if let Some(p) = m.profiles.get(t) {
            profile_rules(&mut ctx, p, resource, t);
        }
    }
    invariants(&mut ctx, t, resource);
    ctx.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(v: Value) -> Vec<String> {
        validate(&v, true)
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| format!("{}: {}", f.expression, f.message))
            .collect()
    }

    #[test]
    fn a_good_patient_is_clean() {
        let p = json!({"resourceType": "Patient", "id": "p1", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9912003888"}], "name": [{"family": "Smith", "given": ["Ann"]}], "gender": "female", "birthDate": "1970-03-04", "telecom": [{"system": "phone", "value": "0113"}], "meta": {"lastUpdated": "2026-01-01T00:00:00Z"}});
        assert_eq!(validate(&p, true), vec![]);
    }

    #[test]
    fn finds_each_problem_with_its_location() {
        let p = json!({
            "resourceType": "Patient",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number"}, {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9912003888"}],
            "gender": "bloke",
            "birthDate": "1970-02-30",
            "deceasedDateTime": "2020-01-01T10:00",
            "maritalStatus": {"coding": [{"system": "http://example.org", "code": "x"}]},
            "contact": [{"gender": "male"}],
            "telecom": [{"value": "0113"}],
            "meta": {"lastUpdated": "2026-01-01"},
        });
        let e = errors(p);
        for expected in [
            "Patient.identifier[0].value: is required",
            "Patient.identifier: has 2 'nhsNumber'",
            "Patient.gender: (bloke) is not in the value set",
            "Patient.birthDate: '1970-02-30' is not a date",
            "Patient.deceasedDateTime: '2020-01-01T10:00' is not a dateTime",
            "Patient.meta.lastUpdated: '2026-01-01' is not an instant",
            "Patient.contact[0]: pat-1",
            "Patient.telecom[0]: cpt-2",
        ] {
            assert!(
                e.iter().any(|x| x.starts_with(expected)),
                "missing {expected} in {e:#?}"
            );
        }
        // Identifier.type has an extensible binding: a code outside it is a warning.
        let w: Vec<Finding> = validate(&json!({"resourceType": "Patient", "identifier": [{"type": {"coding": [{"system": "http://example.org", "code": "x"}]}, "value": "1"}]}), true)
            .into_iter()
            .filter(|f| f.severity == Severity::Warning)
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn extensions_declared_by_the_profile_are_checked() {
        let p = json!({"resourceType": "Patient", "extension": [
            {"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory", "valueString": "x"},
        ]});
        let e = errors(p);
        assert!(
            e.iter().any(|x| x.contains("valueCodeableConcept")),
            "{e:#?}"
        );
    }

    #[test]
    fn organization_ods_slice() {
        let o = json!({"resourceType": "Organization", "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code"}]});
        let e = errors(o);
        assert!(
            e.iter()
                .any(|x| x.starts_with("Organization.identifier[0].value")),
            "{e:#?}"
        );
    }

    #[test]
    fn unknown_types_are_not_supported() {
        assert_eq!(
            validate(&json!({"resourceType": "Spaceship"}), true)[0].code,
            "not-supported"
        );
    }
}
