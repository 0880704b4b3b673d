//! A StructureDefinition-driven validator over FHIR JSON. Its data (`generated/profiles.json`)
//! is derived by `tools/derive.py` from the base R4 snapshots, UK Core and the project's own
//! profiles (`definitions/`): each profile's snapshot is generated from its differential and its
//! base's snapshot (UK Core on base R4, e-RS on UK Core).
//!
//! Checks: unknown elements, cardinality (min and max), choice types, primitive formats,
//! reference targets, required bindings (errors) and extensible bindings (warnings) where the
//! value set can be enumerated, fixed and pattern values, value-discriminated slices (e.g. at
//! most one NHS number, with a value; the A&G request's category), the extension slices a
//! profile declares (how many), every known extension's definition wherever it is used (its
//! context, its value type, the parts of a closed complex extension), and the base invariants
//! that matter here, each named by its key.

use std::collections::HashMap;
use std::fmt;
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
    /// The resource types a Reference may point at (from the profile's targetProfile).
    #[serde(default)]
    targets: Vec<String>,
    /// An array in JSON (the base definition allows more than one).
    #[serde(default)]
    array: bool,
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
    url: String,
    min: u32,
    max: String,
}

/// A profile the validator checks against: a UK Core profile or one of the project's, with
/// its snapshot's element definitions, value-discriminated slices and extension slices.
#[derive(Debug, Deserialize)]
pub struct Profile {
    #[serde(skip)]
    pub url: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub version: Option<String>,
    /// The profile it derives from.
    pub base: Option<String>,
    elements: Vec<ElementDef>,
    slices: Vec<Slice>,
    extensions: Vec<ProfileExtension>,
}

/// The canonical base of the project's own profiles and extensions.
pub const PROJECT_CANONICAL: &str = "https://fhir.nhs.uk/StructureDefinition/";

impl Profile {
    /// One of the project's (e-RS) profiles, rather than UK Core's.
    pub fn is_project(&self) -> bool {
        self.url.starts_with(PROJECT_CANONICAL)
    }
}

#[derive(Debug, Deserialize)]
struct ExtensionDef {
    types: Vec<String>,
    min: u32,
    complex: bool,
    #[serde(default)]
    closed: bool,
    #[serde(default)]
    context: Vec<String>,
    #[serde(default)]
    parts: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Model {
    types: HashMap<String, Vec<ElementDef>>,
    profiles: HashMap<String, Profile>,
    /// The profile the server validates each type's writes against (a base R4 URL when the
    /// type has no profile).
    defaults: HashMap<String, String>,
    extensions: HashMap<String, ExtensionDef>,
    #[serde(rename = "valueSets")]
    value_sets: HashMap<String, Vec<(String, String)>>,
}

fn model() -> Option<&'static Model> {
    static MODEL: OnceLock<Option<Model>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let mut m: Model =
                serde_json::from_str(include_str!("../generated/profiles.json")).ok()?;
            for (url, p) in &mut m.profiles {
                p.url.clone_from(url);
            }
            Some(m)
        })
        .as_ref()
}

/// The StructureDefinitions derived with the validator's data (UK Core profiles of the hosted
/// types and the project's profiles, with snapshots; the project's extensions).
pub fn structure_definitions() -> &'static [Value] {
    static SDS: OnceLock<Vec<Value>> = OnceLock::new();
    SDS.get_or_init(|| {
        serde_json::from_str(include_str!("../generated/structure-definitions.json"))
            .unwrap_or_default()
    })
}

/// A loaded profile by canonical URL (a `|version` suffix is ignored).
pub fn profile(url: &str) -> Option<&'static Profile> {
    let url = url.split('|').next().unwrap_or(url);
    model()?.profiles.get(url)
}

/// The profile the server validates writes of a type against by default (its e-RS profile, or
/// its UK Core profile); None when the type has only its base R4 definition.
pub fn default_profile(resource_type: &str) -> Option<&'static Profile> {
    profile(model()?.defaults.get(resource_type)?)
}

/// Every loaded profile of a type, by URL.
pub fn profiles_for(resource_type: &str) -> Vec<&'static Profile> {
    let mut v: Vec<&Profile> = model()
        .map(|m| {
            m.profiles
                .values()
                .filter(|p| p.resource_type == resource_type)
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.url.cmp(&b.url));
    v
}

/// An element of a base R4 definition, for describing the type (the OpenAPI document).
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    /// `Type.element.child`; a choice ends in `[x]`.
    pub path: &'a str,
    /// An array in JSON.
    pub array: bool,
    /// Its types (several for a choice; none for a backbone element, whose children follow).
    pub types: &'a [String],
    /// The element whose definition it shares (`#Type.path`), if any.
    pub content_ref: Option<&'a str>,
}

/// The base R4 definition of a type (a resource or a data type), element by element in order;
/// None when the validator does not have it.
pub fn elements(type_name: &str) -> Option<Vec<Element<'static>>> {
    let defs = model()?.types.get(type_name)?;
    Some(
        defs.iter()
            .map(|e| Element {
                path: &e.path,
                array: e.array,
                types: &e.types,
                content_ref: e.content_ref.as_deref(),
            })
            .collect(),
    )
}

/// Whether the validator has the base R4 definition of a type.
pub fn has_definition(resource_type: &str) -> bool {
    model().is_some_and(|m| m.types.contains_key(resource_type))
}

/// The base R4 definition's URL of a type.
pub fn base_url(resource_type: &str) -> String {
    format!("http://hl7.org/fhir/StructureDefinition/{resource_type}")
}

struct Ctx<'a> {
    m: &'a Model,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    fn error(&mut self, code: &'static str, at: impl fmt::Display, message: String) {
        self.out.push(Finding {
            severity: Severity::Error,
            code,
            expression: at.to_string(),
            message,
        });
    }
    fn warning(&mut self, code: &'static str, at: impl fmt::Display, message: String) {
        self.out.push(Finding {
            severity: Severity::Warning,
            code,
            expression: at.to_string(),
            message,
        });
    }
}

/// Where a value is in the resource being validated (`Appointment.participant[1].actor`),
/// written out only when a finding names it: a valid resource costs no location strings.
#[derive(Clone, Copy)]
enum At<'a> {
    Root(&'a str),
    /// `parent.name`
    Child(&'a At<'a>, &'a str),
    /// `parent[i]`
    Item(&'a At<'a>, usize),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Root(r) => f.write_str(r),
            At::Child(parent, name) => write!(f, "{parent}.{name}"),
            At::Item(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Whether a type is one of FHIR's primitives (a JSON value rather than an object).
pub fn is_primitive(t: &str) -> bool {
    t.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        || t.starts_with("http://hl7.org/fhirpath/")
}

/// A type's name as it ends a choice element's JSON name (`value[x]` of a `string`: `valueString`).
pub fn capitalise(t: &str) -> String {
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
            } else if s.len() > 1024 * 1024 {
                Err(format!(
                    "is {} bytes long; a FHIR string may be at most 1 MB",
                    s.len()
                ))
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
    // Length first: `b[2]` of a two-byte clock (a dateTime such as 2020-01-01T1Z) would panic
    // (found by cargo-fuzz, kept in fuzz/corpus/validator).
    b.len() >= 8
        && two(0, 23)
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
) -> Option<(&'m ElementDef, Option<&'m str>)> {
    // The element's name in its parent (`parent.name`), if it is a child of `parent`.
    let name_in = |path: &'m str| path.strip_prefix(parent)?.strip_prefix('.');
    if let Some(d) = defs.iter().find(|d| name_in(&d.path) == Some(key)) {
        return Some((d, None));
    }
    defs.iter().find_map(|d| {
        let name = name_in(d.path.strip_suffix("[x]")?)?;
        let suffix = key.strip_prefix(name)?;
        d.types
            .iter()
            .find(|t| is_capitalised(t, suffix))
            .map(|t| (d, Some(t.as_str())))
    })
}

/// Whether `suffix` is `capitalise(t)`, without making it.
fn is_capitalised(t: &str, suffix: &str) -> bool {
    let (mut a, mut b) = (t.chars(), suffix.chars());
    match (a.next(), b.next()) {
        (Some(x), Some(y)) => x.to_ascii_uppercase() == y && a.as_str() == b.as_str(),
        _ => t.is_empty() && suffix.is_empty(),
    }
}

fn binding_check(ctx: &mut Ctx<'_>, b: &Binding, t: &str, v: &Value, at: &At<'_>) {
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
    at: &At<'_>,
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
    } else if expanded(defs, &d.path) {
        // The profile constrains elements inside this data type: its snapshot holds them.
        validate_object(ctx, defs, &d.path, v, at);
    } else if let Some(type_defs) = ctx.m.types.get(t) {
        validate_object(ctx, type_defs, t, v, at);
    }
    if t == "Reference" {
        reference_type_agrees(ctx, d, v, at);
    }
    if t == "Reference" && !d.targets.is_empty() {
        if let Some(r) = v.get("reference").and_then(Value::as_str) {
            if let Some(rt) = reference_type(r) {
                if !d.targets.iter().any(|x| x == rt) {
                    ctx.error(
                        "value",
                        At::Child(at, "reference"),
                        format!(
                            "({r}) must refer to {}",
                            with_article(&d.targets.join(" or "))
                        ),
                    );
                }
            }
        }
    }
    if let Some(pattern) = d
        .rest
        .iter()
        .find(|(k, _)| k.starts_with("pattern"))
        .map(|(_, v)| v)
    {
        if !matches_pattern(v, pattern) {
            ctx.error("value", at, format!("must match the pattern {pattern}"));
        }
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

/// Whether a profile's snapshot has elements inside the element at `path`.
fn expanded(defs: &[ElementDef], path: &str) -> bool {
    defs.iter().any(|d| {
        d.path
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The resource type a reference names: `Type/id`, an absolute URL ending so, with or without
/// `/_history/n`. None for contained (`#`) and `urn:` references.
/// R4's rule for `Reference.type`: with a literal reference, both name the same type; without
/// one, it is a type the element may refer to. A logical model's URL is not checked.
fn reference_type_agrees(ctx: &mut Ctx<'_>, d: &ElementDef, v: &Value, at: &At<'_>) {
    let Some(given) = v.get("type").and_then(Value::as_str) else {
        return;
    };
    let named = given
        .strip_prefix("http://hl7.org/fhir/StructureDefinition/")
        .unwrap_or(given);
    if named.contains(':') || named.contains('/') {
        return;
    }
    match v.get("reference").and_then(Value::as_str) {
        Some(r) => {
            if let Some(rt) = reference_type(r) {
                if rt != named {
                    ctx.error(
                        "value",
                        At::Child(at, "type"),
                        format!("({given}) is not the type of what the reference names ({r})"),
                    );
                }
            }
        }
        None => {
            if !d.targets.is_empty() && !d.targets.iter().any(|x| x == named) {
                ctx.error(
                    "value",
                    At::Child(at, "type"),
                    format!(
                        "({given}) must be {}",
                        with_article(&d.targets.join(" or "))
                    ),
                );
            }
        }
    }
}

fn reference_type(r: &str) -> Option<&str> {
    if r.starts_with('#') || r.starts_with("urn:") {
        return None;
    }
    let path = r.split("/_history/").next().unwrap_or(r);
    let mut segments = path.rsplit('/');
    let _id = segments.next()?;
    segments
        .next()
        .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
}

/// A FHIR pattern: every element the pattern has, the value has too (arrays: each pattern item
/// matched by some value item).
fn matches_pattern(v: &Value, pattern: &Value) -> bool {
    match (v, pattern) {
        (Value::Object(o), Value::Object(p)) => p
            .iter()
            .all(|(k, pv)| o.get(k).is_some_and(|ov| matches_pattern(ov, pv))),
        (Value::Array(items), Value::Array(p)) => p
            .iter()
            .all(|pv| items.iter().any(|ov| matches_pattern(ov, pv))),
        (Value::Array(items), pv) => items.iter().any(|ov| matches_pattern(ov, pv)),
        (a, b) => a == b,
    }
}

fn validate_object(ctx: &mut Ctx<'_>, defs: &[ElementDef], parent: &str, v: &Value, at: &At<'_>) {
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
                At::Child(at, key),
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
                if !d.array {
                    ctx.error(
                        "structure",
                        At::Child(at, key),
                        "must be a single value, not an array (max 1)".into(),
                    );
                    continue;
                }
                if let Ok(max) = d.max.parse::<usize>() {
                    if a.len() > max {
                        ctx.error(
                            "structure",
                            At::Child(at, key),
                            format!("has {} values; at most {max} are allowed", a.len()),
                        );
                    }
                }
                a.iter().collect()
            }
            other => {
                if d.array {
                    ctx.error("structure", At::Child(at, key), "must be an array".into());
                    continue;
                }
                vec![other]
            }
        };
        if d.max == "0" {
            ctx.error(
                "structure",
                At::Child(at, key),
                "is not allowed here (max 0)".into(),
            );
            continue;
        }
        let many = matches!(value, Value::Array(_));
        let here = At::Child(at, key);
        let t = match (choice, d.types.as_slice()) {
            (Some(t), _) => t,
            (None, [only]) => only.as_str(),
            (None, _) => "BackboneElement",
        };
        for (i, item) in items.into_iter().enumerate() {
            if many {
                validate_value(ctx, d_path_defs, d, t, item, &At::Item(&here, i));
            } else {
                validate_value(ctx, d_path_defs, d, t, item, &here);
            }
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
                At::Child(at, name),
                format!("is required ({parent}.{name} min {})", d.min),
            );
        }
    }
}

/// The values at a definitional path (`Patient.address.extension`) of a resource, arrays
/// flattened, each with its FHIRPath location.
fn values_at<'v>(v: &'v Value, root: &str, path: &str) -> Vec<(String, &'v Value)> {
    let Some(rest) = path.strip_prefix(root) else {
        return Vec::new();
    };
    let mut out = vec![(root.to_owned(), v)];
    for part in rest.split('.').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for (at, x) in out {
            match x.get(part) {
                Some(Value::Array(items)) => next.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (format!("{at}.{part}[{i}]"), item)),
                ),
                Some(one) => next.push((format!("{at}.{part}"), one)),
                None => {}
            }
        }
        out = next;
    }
    out
}

/// Whether some value at `path` inside `v` (arrays searched) equals `want`; with `want` None,
/// whether there is any value there.
fn reaches(v: &Value, path: &str, want: Option<&Value>) -> bool {
    if let Value::Array(items) = v {
        return items.iter().any(|x| reaches(x, path, want));
    }
    match path.split_once('.') {
        None => match (v.get(path), want) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(Value::Array(a)), Some(w)) => a.contains(w),
            (Some(x), Some(w)) => x == w,
        },
        Some((head, tail)) => v.get(head).is_some_and(|x| reaches(x, tail, want)),
    }
}

/// The containers of a sliced element and its name in them: `Patient.identifier` is the
/// `identifier` array of each value at `Patient`.
fn sliced<'v>(v: &'v Value, root: &str, path: &str) -> Vec<(String, Vec<&'v Value>)> {
    let Some((parent, field)) = path.rsplit_once('.') else {
        return Vec::new();
    };
    values_at(v, root, parent)
        .into_iter()
        .map(|(at, container)| {
            let items = match container.get(field) {
                Some(Value::Array(a)) => a.iter().collect(),
                Some(one) => vec![one],
                None => Vec::new(),
            };
            (format!("{at}.{field}"), items)
        })
        .collect()
}

/// The profile's slices (value discriminators) and extension slices (how many of each).
fn profile_rules(ctx: &mut Ctx<'_>, p: &Profile, v: &Value, root: &str) {
    for s in &p.slices {
        for (at, items) in sliced(v, root, &s.path) {
            let matching: Vec<(usize, &Value)> = items
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, i)| reaches(i, &s.discriminator.path, Some(&s.discriminator.value)))
                .collect();
            if let Ok(max) = s.max.parse::<usize>() {
                if matching.len() > max {
                    ctx.error(
                        "structure",
                        &at,
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
                    &at,
                    format!(
                        "needs at least {} '{}' entries ({} = {}, {})",
                        s.min, s.name, s.discriminator.path, s.discriminator.value, p.url
                    ),
                );
            }
            for (i, item) in matching {
                for c in s.children.iter().filter(|c| c.min > 0) {
                    if !reaches(item, &c.path, None) {
                        ctx.error(
                            "required",
                            format!("{at}[{i}].{}", c.path),
                            format!("is required in a '{}' entry ({})", s.name, p.url),
                        );
                    }
                }
            }
        }
    }
    for e in &p.extensions {
        for (at, items) in sliced(v, root, &e.path) {
            let n = items
                .iter()
                .filter(|x| x.get("url").and_then(Value::as_str) == Some(e.url.as_str()))
                .count();
            if let Ok(max) = e.max.parse::<usize>() {
                if n > max {
                    ctx.error(
                        "structure",
                        &at,
                        format!("has {n} '{}' extensions; at most {max}", e.name),
                    );
                }
            }
            if (n as u32) < e.min {
                ctx.error(
                    "required",
                    &at,
                    format!(
                        "needs the '{}' extension ({}), required by {}",
                        e.name, e.url, p.url
                    ),
                );
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
                        format!("Patient.contact[{i}]"),
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
                format!("{t}.telecom[{i}]"),
                "cpt-2: a contact point with a value needs a system".into(),
            );
        }
    }
}

/// Every extension and modifierExtension, at any depth: ext-1 (nested extensions or a value,
/// never both and never neither) and, for an extension whose definition is known (UK Core's and
/// the project's), its context (where it may be used), its value type and, for a closed
/// complex extension, the names of its parts.
fn extensions(ctx: &mut Ctx<'_>, root_defs: &[ElementDef], root: &str, v: &Value, at: &At<'_>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                let path = At::Child(at, k);
                if k == "extension" || k == "modifierExtension" {
                    for (i, e) in child.as_array().into_iter().flatten().enumerate() {
                        one_extension(ctx, root_defs, root, e, at, &At::Item(&path, i));
                    }
                }
                extensions(ctx, root_defs, root, child, &path);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                extensions(ctx, root_defs, root, item, &At::Item(at, i));
            }
        }
        _ => {}
    }
}

fn one_extension(
    ctx: &mut Ctx<'_>,
    root_defs: &[ElementDef],
    root: &str,
    e: &Value,
    host: &At<'_>,
    at: &At<'_>,
) {
    let url = e.get("url").and_then(Value::as_str).unwrap_or("(no url)");
    let nested = e.get("extension").is_some();
    let value_key = e
        .as_object()
        .and_then(|m| m.keys().find(|key| key.starts_with("value")).cloned());
    if nested == value_key.is_some() {
        ctx.error(
            "invariant",
            at,
            format!(
                "ext-1: extension {url} must have either nested extensions or a value[x], not {}",
                if nested { "both" } else { "neither" }
            ),
        );
    }
    let m = ctx.m;
    let Some(def) = m.extensions.get(url) else {
        return;
    };
    let host_path = strip_indices(&host.to_string());
    if !def.context.is_empty() {
        let host_type = element_type(m, root_defs, root, &host_path);
        let fits = def.context.iter().any(|c| {
            *c == host_path
                || host_type.as_deref() == Some(c.as_str())
                || matches!(c.as_str(), "Element" | "Resource" | "DomainResource")
                || (c.as_str() == "Extension" && host_path.ends_with("extension"))
        });
        if !fits {
            ctx.error(
                "structure",
                at,
                format!(
                    "extension {url} is not allowed on {host_path}: its definition allows it on {}",
                    def.context.join(", ")
                ),
            );
        }
    }
    match value_key {
        Some(k) if def.complex => ctx.error(
            "structure",
            At::Child(at, &k),
            format!(
                "extension {url} has parts ({}), not a value",
                def.parts.join(", ")
            ),
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
                At::Child(at, &k),
                format!(
                    "extension {url} takes {}",
                    def.types
                        .iter()
                        .map(|t| format!("value{}", capitalise(t)))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )
        }
        None if def.min > 0 && !def.complex => ctx.error(
            "required",
            At::Child(at, "value[x]"),
            format!("extension {url} needs a value"),
        ),
        _ => {}
    }
    if def.closed {
        for (j, part) in e
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = part.get("url").and_then(Value::as_str).unwrap_or_default();
            if !def.parts.iter().any(|p| p == name) {
                ctx.error(
                    "structure",
                    At::Child(&At::Item(&At::Child(at, "extension"), j), "url"),
                    format!(
                        "'{name}' is not a part of extension {url}: its parts are {}",
                        def.parts.join(", ")
                    ),
                );
            }
        }
    }
}

/// `Patient.address[0].extension[1]` → `Patient.address.extension`.
fn strip_indices(at: &str) -> String {
    let mut out = String::with_capacity(at.len());
    let mut depth = 0;
    for c in at.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The data type of the element at a definitional path (`Patient.address` → Address), through
/// the profile's elements and then the data types' own.
fn element_type(m: &Model, root_defs: &[ElementDef], root: &str, path: &str) -> Option<String> {
    let rest = path.strip_prefix(root)?;
    let mut defs = root_defs;
    let mut parent = root.to_owned();
    let mut current = root.to_owned();
    for part in rest.split('.').filter(|p| !p.is_empty()) {
        let (d, choice) = child(defs, &parent, part)?;
        let t = match (choice, d.types.as_slice()) {
            (Some(t), _) => t.to_owned(),
            (None, [only]) => only.clone(),
            (None, _) => "BackboneElement".to_owned(),
        };
        if t == "BackboneElement" || t == "Element" || expanded(defs, &d.path) {
            parent.clone_from(&d.path);
        } else {
            defs = m.types.get(&t)?;
            parent.clone_from(&t);
        }
        current = t;
    }
    Some(current)
}

/// Validates a resource against the base R4 definition of its type and, with a profile, that
/// profile's snapshot (cardinality, types, bindings, fixed and pattern values, slices,
/// extensions). An unknown type gives one `not-supported` finding.
pub fn validate(resource: &Value, profile: Option<&Profile>) -> Vec<Finding> {
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
    let Some(base) = m.types.get(t) else {
        return vec![Finding {
            severity: Severity::Error,
            code: "not-supported",
            expression: t.into(),
            message: format!("{t} has no definition in this validator"),
        }];
    };
    if let Some(p) = profile.filter(|p| p.resource_type != t) {
        return vec![Finding {
            severity: Severity::Error,
            code: "not-supported",
            expression: t.into(),
            message: format!("profile {} is for {}, not {t}", p.url, p.resource_type),
        }];
    }
    let defs = profile.map_or(base.as_slice(), |p| p.elements.as_slice());
    let mut ctx = Ctx { m, out: Vec::new() };
    validate_object(&mut ctx, defs, t, resource, &At::Root(t));
    if let Some(p) = profile {
        profile_rules(&mut ctx, p, resource, t);
    }
    invariants(&mut ctx, t, resource);
    extensions(&mut ctx, defs, t, resource, &At::Root(t));
    ctx.out
}

/// A type name with its indefinite article ("an Organization", "a Patient").
fn with_article(name: &str) -> String {
    let article = match name.chars().next() {
        Some('A' | 'E' | 'I' | 'O' | 'U') => "an",
        _ => "a",
    };
    format!("{article} {name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(v: Value) -> Vec<String> {
        validate(
            &v,
            default_profile(v["resourceType"].as_str().unwrap_or_default()),
        )
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{}: {}", f.expression, f.message))
        .collect()
    }

    #[test]
    fn a_good_patient_is_clean() {
        let p = json!({"resourceType": "Patient", "id": "p1", "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9912003888"}], "name": [{"family": "Smith", "given": ["Ann"]}], "gender": "female", "birthDate": "1970-03-04", "telecom": [{"system": "phone", "value": "0113"}], "meta": {"lastUpdated": "2026-01-01T00:00:00Z"}});
        assert_eq!(validate(&p, default_profile("Patient")), vec![]);
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
        let w: Vec<Finding> = validate(&json!({"resourceType": "Patient", "identifier": [{"type": {"coding": [{"system": "http://example.org", "code": "x"}]}, "value": "1"}]}), default_profile("Patient"))
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

    fn referral() -> Value {
        json!({
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "extension": [{"url": "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority", "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}}],
            "subject": {"reference": "Patient/p1"},
            "requester": {"reference": "PractitionerRole/r1"},
            "performer": [{"reference": "HealthcareService/s1"}],
        })
    }

    fn against(v: &Value, url: &str) -> Vec<String> {
        validate(v, Some(profile(url).expect("loaded")))
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| format!("{}: {}", f.expression, f.message))
            .collect()
    }

    const REFERRAL: &str = "https://fhir.nhs.uk/StructureDefinition/eRS-ServiceRequest-Referral";
    const ADVICE: &str =
        "https://fhir.nhs.uk/StructureDefinition/eRS-ServiceRequest-AdviceAndGuidance";
    const UK_SR: &str = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-ServiceRequest";

    #[test]
    fn the_project_profiles_derive_from_uk_core() {
        for p in profiles_for("ServiceRequest")
            .into_iter()
            .filter(|p| p.is_project())
        {
            assert_eq!(p.base.as_deref(), Some(UK_SR), "{}", p.url);
        }
        assert_eq!(
            default_profile("ServiceRequest").map(|p| p.url.as_str()),
            Some(REFERRAL)
        );
        assert!(default_profile("Subscription").is_none());
        assert_eq!(against(&referral(), REFERRAL), Vec::<String>::new());
    }

    #[test]
    fn type_names_take_their_article() {
        assert_eq!(with_article("Organization"), "an Organization");
        assert_eq!(with_article("Patient"), "a Patient");
    }

    #[test]
    fn the_referral_profile_adds_its_rules_to_uk_core() {
        let mut r = referral();
        if let Some(o) = r.as_object_mut() {
            o.shift_remove("extension");
        }
        r["subject"] = json!({"reference": "Practitioner/x"});
        r["performer"] = json!((0..21)
            .map(|i| json!({"reference": format!("HealthcareService/s{i}")}))
            .collect::<Vec<_>>());
        r["identifier"] = json!([{"system": "https://fhir.nhs.uk/Id/UBRN"}]);
        let e = against(&r, REFERRAL);
        for expected in [
            "ServiceRequest.subject.reference: (Practitioner/x) must refer to a Patient",
            "ServiceRequest.performer: has 21 values; at most 20",
            "ServiceRequest.extension: needs the 'ersPriority' extension",
            "ServiceRequest.identifier[0].value: is required in a 'ubrn' entry",
        ] {
            assert!(
                e.iter().any(|x| x.starts_with(expected)),
                "missing {expected} in {e:#?}"
            );
        }
        // `Reference.type` names the type the reference does, or one the element allows.
        let mut typed = referral();
        typed["subject"] = json!({"reference": "Patient/p", "type": "Practitioner"});
        typed["requester"] =
            json!({"identifier": {"system": "s", "value": "v"}, "type": "Patient"});
        let e = against(&typed, REFERRAL);
        for expected in [
            "ServiceRequest.subject.type: (Practitioner) is not the type of what the reference names (Patient/p)",
            "ServiceRequest.requester.type: (Patient) must be a PractitionerRole",
        ] {
            assert!(e.iter().any(|x| x.starts_with(expected)), "missing {expected} in {e:#?}");
        }
        typed["subject"]["type"] = json!("http://hl7.org/fhir/StructureDefinition/Patient");
        typed["requester"] =
            json!({"identifier": {"system": "s", "value": "v"}, "type": "PractitionerRole"});
        let e = against(&typed, REFERRAL);
        assert!(!e.iter().any(|x| x.contains(".type:")), "{e:#?}");
        // Plain UK Core has none of these rules; the subject's types are R4's own.
        assert_eq!(
            against(&r, UK_SR),
            vec!["ServiceRequest.subject.reference: (Practitioner/x) must refer to a Device or Group or Location or Patient"]
        );
    }

    #[test]
    fn the_advice_profile_checks_its_slice_and_pattern() {
        let mut r = referral();
        r["code"] = json!({"coding": [{"system": "http://snomed.info/sct", "code": "3457005"}]});
        let e = against(&r, ADVICE);
        for expected in [
            "ServiceRequest.code: must match the pattern",
            "ServiceRequest.category: needs at least 1 'ersCategory' entries",
            "ServiceRequest.extension: needs the 'conversionAuthorisation' extension",
        ] {
            assert!(
                e.iter().any(|x| x.starts_with(expected)),
                "missing {expected} in {e:#?}"
            );
        }
        r["code"] = json!({"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ServiceRequestCategory", "code": "advice-and-guidance"}], "text": "A&G"});
        r["category"] = json!([{"coding": [{"system": "https://fhir.nhs.uk/CodeSystem/eRS-ServiceRequestCategory", "code": "request"}]}]);
        if let Some(a) = r["extension"].as_array_mut() {
            a.push(json!({"url": "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-ProviderConversionAuthorisation", "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-ProviderConversionAuthorisation", "code": "AUTHORISED_TO_CONVERT"}}));
        }
        assert_eq!(against(&r, ADVICE), Vec::<String>::new());
    }

    #[test]
    fn a_profile_reaches_inside_data_types() {
        let d = json!({"resourceType": "DocumentReference", "status": "current", "content": [{"attachment": {"title": "letter"}}]});
        let e = against(
            &d,
            "https://fhir.nhs.uk/StructureDefinition/eRS-DocumentReference",
        );
        for expected in [
            "DocumentReference.content[0].attachment.url: is required",
            "DocumentReference.content[0].attachment.contentType: is required",
        ] {
            assert!(
                e.iter().any(|x| x.starts_with(expected)),
                "missing {expected} in {e:#?}"
            );
        }
        // UK Core leaves both optional.
        assert!(against(
            &d,
            "https://fhir.hl7.org.uk/StructureDefinition/UKCore-DocumentReference"
        )
        .is_empty());
    }

    #[test]
    fn extensions_are_checked_against_their_definitions_anywhere() {
        let mut r = referral();
        if let Some(a) = r["extension"].as_array_mut() {
            // UK Core's ethnic category is defined for Patient only.
            a.push(json!({"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory", "valueCodeableConcept": {"text": "x"}}));
            // A closed complex extension with a part it does not define, and a value.
            a.push(json!({"url": "https://fhir.nhs.uk/StructureDefinition/Extension-eRS-AdditionalRequirements", "extension": [{"url": "pets", "valueString": "a dog"}]}));
        }
        // The e-RS priority on a nested element: its context is ServiceRequest.
        r["performer"][0]["extension"] = json!([{"url": "https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority", "valueString": "ROUTINE"}]);
        let e = errors_of(validate(&r, None));
        for expected in [
            "ServiceRequest.extension[1]: extension https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory is not allowed on ServiceRequest: its definition allows it on Patient",
            "ServiceRequest.extension[2].extension[0].url: 'pets' is not a part of",
            "ServiceRequest.performer[0].extension[0]: extension https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority is not allowed on ServiceRequest.performer",
            "ServiceRequest.performer[0].extension[0].valueString: extension https://fhir.nhs.uk/StructureDefinition/Extension-ServiceRequest-Priority takes valueCoding",
        ] {
            assert!(
                e.iter().any(|x| x.starts_with(expected)),
                "missing {expected} in {e:#?}"
            );
        }
        // A data-type context: UK Core's address key belongs on an Address.
        let p = json!({"resourceType": "Patient", "address": [{"extension": [{"url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-AddressKey", "extension": [{"url": "type", "valueCoding": {"system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-AddressKeyType", "code": "PAF"}}, {"url": "value", "valueString": "1"}]}], "line": ["1 Road"]}]});
        assert!(
            errors_of(validate(&p, None)).is_empty(),
            "{:#?}",
            errors_of(validate(&p, None))
        );
    }

    fn errors_of(found: Vec<Finding>) -> Vec<String> {
        found
            .into_iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| format!("{}: {}", f.expression, f.message))
            .collect()
    }

    #[test]
    fn short_clocks_are_invalid_not_a_panic() {
        for bad in [
            "2020-01-01T1Z",
            "2020-01-01T12Z",
            "2020-01-01T12:3+01:00",
            "2020-01-01T+01:00",
        ] {
            let e = errors(json!({"resourceType": "Patient", "deceasedDateTime": bad}));
            assert!(
                e.iter().any(|x| x.starts_with("Patient.deceasedDateTime")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn unknown_types_are_not_supported() {
        assert_eq!(
            validate(&json!({"resourceType": "Spaceship"}), None)[0].code,
            "not-supported"
        );
    }
}
