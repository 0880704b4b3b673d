//! The OpenAPI 3 document, built with utoipa from the same registry, permission table and
//! search parameters as the routes. Committed as `openapi/openapi.json`; a test fails on drift.

use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, Content, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr,
    Required,
};

use super::caller::{BUSINESS_FUNCTION, COMM_RULE_ORG, ON_BEHALF_OF, ORGANISATION};
use crate::domain::BusinessFunction;
use crate::fhir::registry::{self, ParamKind, RESOURCES};
use crate::fhir::search::{DEFAULT_COUNT, MAX_COUNT};
use crate::security::permissions::{allowed, describe, Action};

const FHIR_JSON: &str = "application/fhir+json";
const FHIR_XML: &str = "application/fhir+xml";

fn string_schema(description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .into()
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn fhir_content(schema: &str) -> Vec<(&'static str, Content)> {
    vec![
        (FHIR_JSON, Content::new(Some(schema_ref(schema)))),
        (FHIR_XML, Content::new(Some(schema_ref(schema)))),
    ]
}

fn response(description: &str, schema: Option<&str>) -> Response {
    let mut r = ResponseBuilder::new().description(description);
    if let Some(s) = schema {
        for (ct, c) in fhir_content(s) {
            r = r.content(ct, c);
        }
    }
    r.build()
}

/// `r`, answering `application/pdf` too (a string: `what`).
fn with_pdf(mut r: Response, what: &str) -> Response {
    r.content.insert(
        "application/pdf".into(),
        RefOr::T(Content::new(Some(string_schema(what)))),
    );
    r
}

/// A read's parameters with the conditional-read headers.
fn conditional_read(mut params: Vec<Parameter>) -> Vec<Parameter> {
    params.push(header(
        "If-None-Match",
        false,
        "The ETag of the copy you hold (W/\"n\"): 304 with no body if it is this version",
    ));
    params.push(header(
        "If-Modified-Since",
        false,
        "The Last-Modified of the copy you hold: 304 with no body if it has not changed since",
    ));
    params.push(query(
        "_summary",
        "true, text, data or false: a summary of the resource (marked SUBSETTED)",
    ));
    params.push(query(
        "_elements",
        "Comma-separated top-level elements to return (marked SUBSETTED)",
    ));
    params
}

fn not_modified(description: &str) -> Response {
    ResponseBuilder::new().description(description).build()
}

const NOT_MODIFIED: &str =
    "Your copy is this version (conditional read): no body; ETag and Last-Modified";

fn header(name: &str, required: bool, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(string_schema(description)))
        .build()
}

fn query(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(string_schema(description)))
        .build()
}

fn path_param(name: &str, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(string_schema(description)))
        .build()
}

/// Headers every FHIR interaction takes (after the bearer token).
fn caller_headers() -> Vec<Parameter> {
    let functions = BusinessFunction::ALL
        .iter()
        .map(|b| b.code())
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        header(BUSINESS_FUNCTION, false, &format!("The e-RS business function the user acts in ({functions}). Required with a user token; never with an application token.")),
        header(ORGANISATION, false, "ODS code of the organisation the user acts for. Required with a user token; never with an application token."),
        header(ON_BEHALF_OF, false, "SDS user id of the SERVICE_PROVIDER_CLINICIAN a SERVICE_PROVIDER_CLINICIAN_ADMIN acts for; only with that role."),
        header("X-Correlation-ID", false, "Echoed on the response and recorded in the audit trail."),
        query("_format", "json, xml, application/fhir+json or application/fhir+xml (overrides Accept)."),
    ]
}

/// The errors every FHIR interaction can give (shared components).
const COMMON_ERRORS: [(&str, &str); 8] = [
    (
        "400",
        "Malformed request, or a missing or invalid header or parameter",
    ),
    (
        "401",
        "No, invalid or expired bearer token, or too-low assurance",
    ),
    (
        "403",
        "The role is not held at the organisation, or may not do this",
    ),
    ("406", "Accept names no format this server writes"),
    ("429", "Too many requests (see Retry-After)"),
    ("431", "Request headers too large"),
    ("500", "Internal error; nothing was changed"),
    ("503", "Database unavailable (see Retry-After)"),
];

/// Adds the common error responses (by reference) and the interaction's own, each an
/// OperationOutcome.
fn with_errors(mut op: OperationBuilder, codes: &[(&str, &str)]) -> OperationBuilder {
    for (code, _) in COMMON_ERRORS {
        op = op.response(
            code,
            RefOr::Ref(Ref::from_response_name(format!("Error{code}"))),
        );
    }
    for (code, text) in codes {
        op = op.response(*code, error_response(text));
    }
    op
}

fn error_response(text: &str) -> Response {
    ResponseBuilder::new()
        .description(text)
        .content(
            FHIR_JSON,
            Content::new(Some(schema_ref("OperationOutcome"))),
        )
        .build()
}

/// "a Patient", "an Organization".
fn a(t: &str) -> String {
    let article = if t.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {t}")
}

fn who_may(resource: &str, action: Action) -> String {
    format!("{}.", describe(resource, action))
}

fn operation(
    id: &str,
    tag: &str,
    summary: &str,
    description: String,
    params: Vec<Parameter>,
) -> OperationBuilder {
    OperationBuilder::new()
        .operation_id(Some(id))
        .tag(tag)
        .summary(Some(summary))
        .description(Some(description))
        .parameters(Some(caller_headers().into_iter().chain(params)))
        .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
}

/// An operation that only reads: GET with its inputs as query parameters, and POST with them
/// in a `Parameters` body (FHIR lets every operation be POSTed).
struct ReadOnly<'a> {
    id: &'a str,
    tag: &'a str,
    summary: &'a str,
    description: String,
    path: Vec<Parameter>,
    inputs: Vec<Parameter>,
    /// Whether a POST needs a body (an input is required).
    body_required: bool,
    ok: Response,
    errors: &'a [(&'a str, &'a str)],
}

fn read_only(op: ReadOnly<'_>) -> PathItem {
    let get = operation(
        op.id,
        op.tag,
        op.summary,
        op.description.clone(),
        op.path.iter().cloned().chain(op.inputs).collect(),
    )
    .response("200", op.ok.clone());
    let post = operation(
        &format!("{}Post", op.id),
        op.tag,
        &format!("{} — POST", op.summary),
        op.description,
        op.path,
    )
    .request_body(Some(parameters_body(op.body_required)))
    .response("200", op.ok);
    let mut item = PathItem::new(HttpMethod::Get, with_errors(get, op.errors).build());
    item.post = Some(
        with_errors(
            post,
            &[op.errors, &[("415", "Unsupported Content-Type")]].concat(),
        )
        .build(),
    );
    item
}

/// The body of a `POST …/_search`: the search parameters as a form.
fn form_body() -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .content(
            "application/x-www-form-urlencoded",
            Content::new(Some(RefOr::T(string_schema("The search parameters")))),
        )
        .build()
}

/// The body of an operation POSTed with its inputs: a `Parameters` resource.
fn parameters_body(required: bool) -> utoipa::openapi::request_body::RequestBody {
    let mut body = RequestBodyBuilder::new()
        .required(Some(if required {
            Required::True
        } else {
            Required::False
        }))
        .description(Some("A FHIR Parameters resource with the inputs of the GET form, each a parameter whose value[x] has the type the operation's OperationDefinition gives it (GET /FHIR/R4/OperationDefinition/{id}): valueCode (or valueString, valueCoding) for a code, valueString for a string, valueInteger, valueBoolean, valueInstant, valueIdentifier or valueReference".to_owned()));
    for (ct, c) in fhir_content("Resource") {
        body = body.content(ct, c);
    }
    body.build()
}

/// The types whose request bodies the document describes element by element
/// (`fhir_schemas`): every hosted type, and Bundle.
fn typed_bodies() -> impl Iterator<Item = &'static str> {
    RESOURCES
        .iter()
        .map(|d| d.name)
        .chain(["Bundle"])
        .filter(|t| ers_fhir::validate::has_definition(t))
}

/// A hosted type's answer: its schema, or (a write's, which `Prefer: return=OperationOutcome`
/// turns into an OperationOutcome) one of the two.
fn resource_answer(t: &str, description: &str, write: bool) -> Response {
    let schema = if typed_bodies().any(|x| x == t) {
        let own = schema_ref(&super::fhir_schemas::component(t));
        if write {
            RefOr::T(Schema::OneOf(
                OneOfBuilder::new()
                    .item(own)
                    .item(schema_ref("OperationOutcome"))
                    .build(),
            ))
        } else {
            own
        }
    } else {
        schema_ref("Resource")
    };
    let mut r = ResponseBuilder::new().description(description);
    for ct in [FHIR_JSON, FHIR_XML] {
        r = r.content(ct, Content::new(Some(schema.clone())));
    }
    r.build()
}

/// A JSON Patch document: an array of operations.
fn json_patch_body() -> utoipa::openapi::request_body::RequestBody {
    let op = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "op",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["add", "remove", "replace", "move", "copy", "test"])),
        )
        .required("op")
        .property(
            "path",
            string_schema("A JSON Pointer into the resource, e.g. /gender"),
        )
        .required("path")
        .property(
            "value",
            ObjectBuilder::new().description(Some("For add, replace and test")),
        )
        .property("from", string_schema("For move and copy"));
    RequestBodyBuilder::new()
        .required(Some(Required::True))
        .description(Some("A JSON Patch document (RFC 6902)"))
        .content(
            "application/json-patch+json",
            Content::new(Some(RefOr::T(
                utoipa::openapi::schema::ArrayBuilder::new()
                    .items(op)
                    .into(),
            ))),
        )
        .build()
}

fn resource_body(t: &str) -> utoipa::openapi::request_body::RequestBody {
    let mut b = RequestBodyBuilder::new()
        .required(Some(Required::True))
        .description(Some(format!("A FHIR R4 {t} (JSON or XML, at most 5 MB)")));
    let schema = if typed_bodies().any(|x| x == t) {
        super::fhir_schemas::component(t)
    } else {
        "Resource".to_owned()
    };
    for (ct, c) in fhir_content(&schema) {
        b = b.content(ct, c);
    }
    b.build()
}

fn search_params(t: &str) -> Vec<Parameter> {
    let def = RESOURCES.iter().find(|r| r.name == t);
    let mut out = vec![
        query("_id", "Logical ids, comma-separated"),
        query(
            "_lastUpdated",
            "Date with prefix (eq, ne, lt, gt, le, ge, sa, eb)",
        ),
    ];
    if let Some(def) = def {
        for p in def.all_params() {
            let hint = match p.kind {
                ParamKind::Token => "token: [system|]code; modifiers :not, :missing",
                ParamKind::String => "string: starts with, case- and accent-insensitive; modifiers :exact, :contains, :missing",
                ParamKind::Date => "date with prefix eq, ne, lt, gt, le, ge, sa, eb",
                ParamKind::Reference => "reference: Type/id or id; modifiers :Type, :identifier (the target's business identifier, [system|]value), :missing; chain with .param (up to three levels)",
                ParamKind::Uri => "uri: the canonical URL, with or without |version; modifier :missing",
                ParamKind::Position => "position",
                ParamKind::Availability => "availability",
            };
            out.push(query(p.name, &format!("{} ({hint})", p.doc)));
        }
    }
    for (_, name, by) in crate::fhir::registry::BY_TARGET
        .iter()
        .filter(|(of, _, _)| *of == t)
    {
        out.push(query(
            name,
            &format!(
                "Any participant (reference: Type/id, or :Type with an id or a chain), searched as {}",
                by.iter()
                    .map(|(target, p)| format!("{p} for a {target}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if t == "Slot" {
        out.push(header(
            COMM_RULE_ORG,
            false,
            "e-RS A015: the referral's commissioning rule organisation (ODS code, its Extension-eRS-CommissioningRuleOrganisation): only slots of services commissioned for it are found (as the criterion schedule.actor:HealthcareService.commissioned-for, which the Bundle's links carry). An ODS code that is not well formed is 400.",
        ));
    }
    if t == "Practitioner" {
        out.push(query(
            "_query",
            "onBehalfOf (e-RS A040), with no other search parameter: the clinicians the calling SERVICE_PROVIDER_CLINICIAN_ADMIN may act for at its organisation (active SERVICE_PROVIDER_CLINICIANs there), whose SDS user ids go into NHSD-eRS-On-Behalf-Of-User-ID (which this request may leave out). Any other named query is 400.",
        ));
    }
    out.extend([
        query(
            "_count",
            &format!("Page size, default {DEFAULT_COUNT}, at most {MAX_COUNT}"),
        ),
        query(
            "_offset",
            "Where the page starts (from the next/previous links)",
        ),
        query("_sort", "Comma-separated parameters, '-' for descending"),
        query("_include", "Type:param[:target], Type:* (every reference parameter of Type) or * (of the searched type); as _include:iterate also followed from what was included, up to 3 levels beyond the first; at most 1,000 resources included a page"),
        query("_revinclude", "Type:param[:target], Type:* or * (every parameter that may point to the searched type); as _revinclude:iterate also from what was included, up to 3 levels beyond the first"),
        query("_summary", "true, false, text, data or count"),
        query("_total", "accurate: count every match; none: no total; by default (and estimate) matches are counted up to 1,000 (ERS_SEARCH_TOTAL_UP_TO): past that the Bundle has no total and says so in an OperationOutcome entry"),
        query("_elements", "Comma-separated top-level elements"),
    ]);
    out
}

fn resource_paths(mut paths: PathsBuilder) -> PathsBuilder {
    for def in RESOURCES {
        let t = def.name;
        let base = format!("/FHIR/R4/{t}");
        let id = || path_param("id", &format!("Logical id of the {t}"));
        let mut type_item: Vec<(HttpMethod, Operation)> = Vec::new();
        if !allowed(t, Action::Search).is_empty() {
            let op = operation(
                &format!("search{t}"),
                t,
                &format!("Search {t}"),
                match t {
                    "PractitionerRole" => format!("{} Sent with a user's token and neither NHSD-eRS-Business-Function nor NHSD-End-User-Organisation-ODS (e-RS A030), it lists the calling user's own active roles, each with its organisation (search mode include): the values for those headers, and takes no search parameters.", who_may(t, Action::Search)),
                    _ => who_may(t, Action::Search),
                },
                search_params(t),
            )
            .response("200", response("A searchset Bundle", Some("Bundle")));
            type_item.push((HttpMethod::Get, with_errors(op, &[]).build()));
            let post = operation(
                &format!("search{t}Post"),
                t,
                &format!("Search {t} (form body)"),
                who_may(t, Action::Search),
                Vec::new(),
            )
            .request_body(Some(form_body()))
            .response("200", response("A searchset Bundle", Some("Bundle")));
            paths = paths.path(
                format!("{base}/_search"),
                PathItem::new(
                    HttpMethod::Post,
                    with_errors(post, &[("415", "Not a form body")]).build(),
                ),
            );
        }
        let op = operation(
            &format!("validate{t}"),
            t,
            &format!("Validate {} ($validate)", a(t)),
            format!("{} Every issue, errors and warnings; nothing is stored.", who_may(t, Action::Validate)),
            vec![query("profile", "The UK Core profile, or the base R4 StructureDefinition; default: everything a write enforces")],
        )
        .request_body(Some(resource_body(t)))
        .response("200", response("An OperationOutcome with every issue", Some("OperationOutcome")));
        paths = paths.path(
            format!("{base}/$validate"),
            PathItem::new(
                HttpMethod::Post,
                with_errors(op, &[("415", "Unsupported Content-Type")]).build(),
            ),
        );
        if !allowed(t, Action::Create).is_empty() {
            let op = operation(
                &format!("create{t}"),
                t,
                &format!("Create {}", a(t)),
                format!("{} The server assigns the id. With If-None-Exist, an existing match is returned with 200 instead.", who_may(t, Action::Create)),
                vec![header("If-None-Exist", false, "Search criteria (identifier=system|value): create only if nothing matches"), header("Prefer", false, "return=minimal | representation | OperationOutcome")],
            )
            .request_body(Some(resource_body(t)))
            .response("201", resource_answer(t, "Created (Location, ETag, Last-Modified)", true))
            .response("200", resource_answer(t, "If-None-Exist matched an existing resource", true));
            let errors = [
                ("409", "A business identifier is already taken"),
                ("412", "If-None-Exist matched several"),
                ("413", "Body over 5 MB"),
                ("415", "Unsupported Content-Type"),
                (
                    "422",
                    "Invalid resource: one issue per problem, with its location",
                ),
            ];
            type_item.push((HttpMethod::Post, with_errors(op, &errors).build()));
        }
        if registry::find(t).is_some_and(crate::fhir::capability::conditional_update) {
            let op = operation(
                &format!("conditionalUpdate{t}"),
                t,
                &format!("Change or create {} found by search criteria", a(t)),
                format!("{} Conditional update (it may create, so it needs permission to create as well as to update): the query string holds search criteria (e.g. identifier=system|value; strict: one not understood is 400). One match: it is changed (If-Match applies; the body's id, if any, must be its id). None: the body is created, with an id the server assigns (so the body names none). Several: 412.", who_may(t, Action::Update)),
                vec![header("If-Match", false, "W/\"n\": change the match only if n is its current version (412 otherwise)"), header("Prefer", false, "return=minimal | representation | OperationOutcome")],
            )
            .request_body(Some(resource_body(t)))
            .response("200", resource_answer(t, "The match, changed", true))
            .response("201", resource_answer(t, "Nothing matched: created (Location, ETag, Last-Modified)", true));
            let errors = [
                ("409", "A business identifier is already taken"),
                ("412", "Several match, or If-Match names another version"),
                ("413", "Body over 5 MB"),
                ("415", "Unsupported Content-Type"),
                (
                    "422",
                    "Invalid resource: one issue per problem, with its location",
                ),
            ];
            type_item.push((HttpMethod::Put, with_errors(op, &errors).build()));
        }
        if !type_item.is_empty() {
            let mut item = PathItem::new(type_item[0].0.clone(), type_item[0].1.clone());
            for (m, op) in type_item.into_iter().skip(1) {
                item.merge_operations(PathItem::new(m, op));
            }
            paths = paths.path(base.clone(), item);
        }
        let mut instance: Vec<(HttpMethod, Operation)> = Vec::new();
        if !allowed(t, Action::Read).is_empty() {
            let op = operation(
                &format!("read{t}"),
                t,
                &format!("Read {}", a(t)),
                who_may(t, Action::Read),
                conditional_read(vec![id()]),
            )
            .response(
                "200",
                resource_answer(t, "The current version (ETag, Last-Modified)", false),
            )
            .response("304", not_modified(NOT_MODIFIED));
            instance.push((
                HttpMethod::Get,
                with_errors(op, &[("404", "Not known"), ("410", "Deleted")]).build(),
            ));
            let vid = path_param("vid", "Version id (1, 2, ...)");
            let op = operation(
                &format!("vread{t}"),
                t,
                &format!("Read a version of {}", a(t)),
                who_may(t, Action::Read),
                conditional_read(vec![id(), vid]),
            )
            .response("200", resource_answer(t, "That version", false))
            .response("304", not_modified(NOT_MODIFIED));
            paths = paths.path(
                format!("{base}/{{id}}/_history/{{vid}}"),
                PathItem::new(
                    HttpMethod::Get,
                    with_errors(
                        op,
                        &[("404", "Not known"), ("410", "That version is a deletion")],
                    )
                    .build(),
                ),
            );
        }
        if !allowed(t, Action::Update).is_empty() {
            let op = operation(
                &format!("update{t}"),
                t,
                &format!("Update {}", a(t)),
                format!("{} The body's id must be the URL's.", who_may(t, Action::Update)),
                vec![id(), header("If-Match", false, "W/\"n\": the version being replaced (412 when stale; 428 when required and missing)"), header("Prefer", false, "return=minimal | representation | OperationOutcome")],
            )
            .request_body(Some(resource_body(t)))
            .response("200", resource_answer(t, "Updated (ETag, Last-Modified, Location)", true));
            let errors = [
                ("405", "Does not exist (the server assigns ids)"),
                ("409", "Concurrent update, or identifier taken"),
                ("412", "If-Match is stale"),
                ("413", "Body over 5 MB"),
                ("415", "Unsupported Content-Type"),
                ("422", "Invalid resource"),
                ("428", "If-Match required"),
            ];
            instance.push((HttpMethod::Put, with_errors(op, &errors).build()));
        }
        if def.plain_writes && !allowed(t, Action::Update).is_empty() {
            let op = operation(
                &format!("patch{t}"),
                t,
                &format!("Patch {}", a(t)),
                format!(
                    "{} A JSON Patch (RFC 6902) of the current version; the result is checked and stored as an update would be. Without If-Match it applies to the version current when it is written.",
                    who_may(t, Action::Update)
                ),
                vec![id(), header("If-Match", false, "W/\"n\": patch only that version (412 when stale; 428 when required and missing)"), header("Prefer", false, "return=minimal | representation | OperationOutcome")],
            )
            .request_body(Some(json_patch_body()))
            .response("200", resource_answer(t, "Patched (ETag, Last-Modified, Location)", true));
            let errors = [
                ("404", "Not known"),
                ("409", "Concurrent update, or identifier taken"),
                ("410", "Deleted"),
                ("412", "If-Match is stale"),
                ("413", "Body over 5 MB"),
                ("415", "Not application/json-patch+json"),
                ("422", "The patch does not apply (a test fails, a path is missing), or its result is invalid"),
                ("428", "If-Match required"),
            ];
            instance.push((HttpMethod::Patch, with_errors(op, &errors).build()));
        }
        if def.delete && !allowed(t, Action::Delete).is_empty() {
            let op = operation(
                &format!("delete{t}"),
                t,
                &format!("Delete {}", a(t)),
                format!(
                    "{} Refused while other resources refer to it; history is kept.",
                    who_may(t, Action::Delete)
                ),
                vec![
                    id(),
                    header(
                        "If-Match",
                        false,
                        "W/\"n\": delete only if n is the current version (412 otherwise)",
                    ),
                ],
            )
            .response(
                "204",
                ResponseBuilder::new()
                    .description("Deleted (or already deleted)")
                    .build(),
            );
            instance.push((
                HttpMethod::Delete,
                with_errors(
                    op,
                    &[
                        ("404", "Not known"),
                        ("409", "Still referred to"),
                        (
                            "412",
                            "If-Match names a version that is not the current one",
                        ),
                    ],
                )
                .build(),
            ));
        }
        if !instance.is_empty() {
            let mut item = PathItem::new(instance[0].0.clone(), instance[0].1.clone());
            for (m, op) in instance.into_iter().skip(1) {
                item.merge_operations(PathItem::new(m, op));
            }
            paths = paths.path(format!("{base}/{{id}}"), item);
        }
        if !allowed(t, Action::History).is_empty() {
            let page = || {
                vec![
                    query("_count", "Page size"),
                    query("_offset", "Page start"),
                    query("_since", "Only versions since this instant"),
                    query("_at", "Only versions up to this instant"),
                    query("_total", "accurate: count every version; none: no total; by default (and estimate) versions are counted up to 1,000 (ERS_SEARCH_TOTAL_UP_TO), past which the Bundle has no total"),
                ]
            };
            let op = operation(
                &format!("history{t}"),
                t,
                &format!("Every version of {}", a(t)),
                who_may(t, Action::History),
                std::iter::once(id()).chain(page()).collect(),
            )
            .response(
                "200",
                response("A history Bundle, newest first", Some("Bundle")),
            );
            paths = paths.path(
                format!("{base}/{{id}}/_history"),
                PathItem::new(
                    HttpMethod::Get,
                    with_errors(op, &[("404", "Not known")]).build(),
                ),
            );
            let op = operation(
                &format!("historyType{t}"),
                t,
                &format!("Every version of every {t}"),
                who_may(t, Action::History),
                page(),
            )
            .response(
                "200",
                response("A history Bundle, newest first", Some("Bundle")),
            );
            paths = paths.path(
                format!("{base}/_history"),
                PathItem::new(HttpMethod::Get, with_errors(op, &[]).build()),
            );
        }
    }
    paths
}

fn audit_paths(paths: PathsBuilder) -> PathsBuilder {
    let params = || {
        vec![
            query("date", "When recorded: eq, ge, gt, le, lt and a date"),
            query("agent", "SDS user id or application id"),
            query("entity", "Type/id of a resource it touched"),
            query("patient", "Patient/id"),
            query("patient:identifier", "https://fhir.nhs.uk/Id/nhs-number|n"),
            query("action", "C, R, U, D or E"),
            query("outcome", "0, 4 or 8"),
            query(
                "subtype",
                "read, search-type, create, update, patch, delete, access-denied, failed, export...",
            ),
        ]
    };
    let search = operation(
        "searchAuditEvent",
        "AuditEvent",
        "Search the audit trail",
        who_may("AuditEvent", Action::Search),
        params()
            .into_iter()
            .chain([query("_count", "Page size"), query("_offset", "Page start")])
            .collect(),
    )
    .response(
        "200",
        response(
            "A searchset Bundle of AuditEvent, newest first",
            Some("Bundle"),
        ),
    );
    let read = operation(
        "readAuditEvent",
        "AuditEvent",
        "Read one AuditEvent",
        who_may("AuditEvent", Action::Read),
        vec![path_param("id", "AuditEvent id")],
    )
    .response("200", response("The AuditEvent", Some("Resource")));
    let mut export = operation(
        "exportAuditEvent",
        "AuditEvent",
        "Export the audit trail",
        format!(
            "{} Every match of the search parameters as NDJSON.",
            who_may("AuditEvent", Action::Export)
        ),
        params(),
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("One AuditEvent per line")
            .content(
                "application/fhir+ndjson",
                Content::new(Some(RefOr::T(string_schema("NDJSON")))),
            )
            .build(),
    );
    export = with_errors(export, &[]);
    paths
        .path(
            "/FHIR/R4/AuditEvent",
            PathItem::new(
                HttpMethod::Get,
                with_errors(search, &[("405", "Append-only: no writes")]).build(),
            ),
        )
        .path(
            "/FHIR/R4/AuditEvent/{id}",
            PathItem::new(
                HttpMethod::Get,
                with_errors(
                    read,
                    &[("404", "Not known"), ("405", "Append-only: no writes")],
                )
                .build(),
            ),
        )
        .path(
            "/FHIR/R4/AuditEvent/$export",
            PathItem::new(HttpMethod::Get, export.build()),
        )
}

fn report_paths(mut paths: PathsBuilder) -> PathsBuilder {
    use crate::service::reports::Report;
    let filter_doc = |f: &str| {
        match f {
        "organization" => "ODS code: rows where it is the referring or providing organisation",
        "from" => "On or after this date (a referral's creation, a slot's start, the week of usage counted)",
        "to" => "On or before this date",
        "specialty" => "e-RS specialty code (eRS-Specialty)",
        "service" => "HealthcareService id",
        "priority" => "ROUTINE, URGENT or TWO_WEEK_WAIT",
        _ => "",
    }
    };
    let csv_or_json = || {
        ResponseBuilder::new()
            .description("The report, streamed: CSV (RFC 4180, CRLF, a header row) or JSON {report, generated, parameters, columns, rows: [{column: value}], count}")
            .content("text/csv", Content::new(Some(RefOr::T(string_schema("CSV")))))
            .content(
                "application/json",
                Content::new(Some(RefOr::T(ObjectBuilder::new().schema_type(Type::Object).into()))),
            )
            .build()
    };
    for r in Report::ALL {
        let mut params: Vec<Parameter> = r
            .filters()
            .iter()
            .map(|f| query(f, filter_doc(f)))
            .collect();
        params.push(query(
            "_format",
            "csv (default) or json; or send Accept: application/json",
        ));
        if r == Report::Usage {
            params.push(query("group", "specialty (default) or organisation"));
        }
        let op = operation(
            &format!("report-{}", r.code()),
            "Reports",
            r.title(),
            format!(
                "{} Columns: {}. Every run is audited.",
                who_may(r.res_type(), Action::Report),
                r.columns(ers_schema::reports::UsageKey::Specialty)
                    .join(", ")
            ),
            params,
        )
        .response("200", csv_or_json());
        paths = paths.path(
            format!("/reports/{}", r.code()),
            PathItem::new(
                HttpMethod::Get,
                with_errors(op, &[("404", "No such report")]).build(),
            ),
        );
    }
    let list = operation(
        "reports",
        "Reports",
        "The reports the caller may run, with their filters and columns",
        who_may("ServiceRequest", Action::Report),
        Vec::new(),
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("{reports: [{name, title, url, formats, filters, columns}]}")
            .content(
                "application/json",
                Content::new(Some(RefOr::T(
                    ObjectBuilder::new().schema_type(Type::Object).into(),
                ))),
            )
            .build(),
    );
    let dashboard = operation(
        "dashboard",
        "Reports",
        "The usage dashboard: weekly referrals by specialty, activity and slot utilisation, as one HTML page with inline SVG charts (no scripts; works offline)",
        format!(
            "{} Takes the usage report's filters; the last 12 weeks unless 'from' is given.",
            who_may("ServiceRequest", Action::Report)
        ),
        ["organization", "from", "to", "specialty", "service", "priority"]
            .iter()
            .map(|f| query(f, filter_doc(f)))
            .collect(),
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("HTML")
            .content("text/html", Content::new(Some(RefOr::T(string_schema("HTML")))))
            .build(),
    );
    paths
        .path(
            "/reports",
            PathItem::new(HttpMethod::Get, with_errors(list, &[]).build()),
        )
        .path(
            "/dashboard",
            PathItem::new(HttpMethod::Get, with_errors(dashboard, &[]).build()),
        )
}

fn bulk_paths(paths: PathsBuilder) -> PathsBuilder {
    let kick_params = || {
        vec![
            header("Prefer", true, "respond-async"),
            query(
                "_type",
                "Resource types, comma-separated (default: every type the caller may search)",
            ),
            query("_since", "Only resources changed after this instant"),
            query("_outputFormat", "application/fhir+ndjson (the only one)"),
        ]
    };
    let accepted = || {
        ResponseBuilder::new()
            .description("Accepted: poll the Content-Location header's URL")
            .header(
                "Content-Location",
                utoipa::openapi::HeaderBuilder::new()
                    .schema(Some(string_schema("The status URL")))
                    .build(),
            )
            .build()
    };
    // Each kick-off as a GET with query parameters, and as a POST with a Parameters body.
    let kick_off = |id: &str, summary: &str, description: String| {
        let get = operation(id, "Bulk Data", summary, description.clone(), kick_params())
            .response("202", accepted());
        let post = operation(
            &format!("{id}Post"),
            "Bulk Data",
            &format!("{summary} — POST"),
            description,
            vec![header("Prefer", true, "respond-async")],
        )
        .request_body(Some(parameters_body(false)))
        .response("202", accepted());
        let mut item = PathItem::new(HttpMethod::Get, with_errors(get, &[]).build());
        item.post = Some(with_errors(post, &[("415", "Unsupported Content-Type")]).build());
        item
    };
    let system = kick_off(
        "export",
        "FHIR Bulk Data export kick-off (system level)",
        "Exports every resource of the types the caller may search, with the same organisation scoping as a search, as of the kick-off. Runs in the background on any instance; survives restarts.".into(),
    );
    let patient = kick_off(
        "patientExport",
        "FHIR Bulk Data export kick-off (Patient level)",
        format!(
            "As the system-level export, for the Patient compartment's types: {}.",
            crate::service::exports::PATIENT_COMPARTMENT.join(", ")
        ),
    );
    let status = operation(
        "exportStatus",
        "Bulk Data",
        "Export status: 202 with X-Progress while it runs, 200 with the manifest when complete",
        "Only the user, role and organisation that kicked it off may poll it. Files expire ERS_EXPORT_TTL_SECS after completion (404 then).".into(),
        vec![path_param("job", "The export's id")],
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("The manifest: {transactionTime, request, requiresAccessToken, output: [{type, url, count}], error}")
            .content(
                "application/json",
                Content::new(Some(RefOr::T(ObjectBuilder::new().schema_type(Type::Object).into()))),
            )
            .build(),
    )
    .response("202", ResponseBuilder::new().description("In progress (X-Progress, Retry-After)").build());
    let cancel = operation(
        "exportCancel",
        "Bulk Data",
        "Cancel an export and delete its files",
        "Only its owner.".into(),
        vec![path_param("job", "The export's id")],
    )
    .response("202", response("Cancelled", Some("OperationOutcome")));
    let file = operation(
        "exportFile",
        "Bulk Data",
        "One NDJSON output file of a completed export",
        "Only its owner; every download is audited.".into(),
        vec![
            path_param("job", "The export's id"),
            path_param("part", "The file's number"),
        ],
    )
    .response(
        "200",
        ResponseBuilder::new()
            .description("One resource per line")
            .content(
                "application/fhir+ndjson",
                Content::new(Some(RefOr::T(string_schema("NDJSON")))),
            )
            .build(),
    );
    let mut status_item = PathItem::new(
        HttpMethod::Get,
        with_errors(status, &[("404", "Not known, not yours, or expired")]).build(),
    );
    status_item.delete = Some(with_errors(cancel, &[("404", "Not known or not yours")]).build());
    use crate::service::exports::{EVERYTHING, EVERYTHING_INPUTS, PATIENT_COMPARTMENT};
    let everything = read_only(ReadOnly {
        id: "everything",
        tag: "Patient",
        summary: "Everything about a patient that you may see ($everything)",
        description: format!(
            "FHIR R4 Patient-everything: the patient and the Patient compartment ({}) that your role and organisation may see, with what those refer to (includes), as one searchset Bundle in one read. At most _count of each type (1,000 by default); an outcome entry names a type that had more (Patient/$export gives all). {}",
            PATIENT_COMPARTMENT.join(", "),
            who_may("Patient", Action::Read)
        ),
        path: vec![path_param("id", "The patient's logical id")],
        inputs: EVERYTHING_INPUTS
            .iter()
            .map(|p| query(p.name, p.doc))
            .collect(),
        body_required: false,
        ok: response("A searchset Bundle", Some("Bundle")),
        errors: &[("404", "No such patient")],
    });
    paths
        .path("/FHIR/R4/$export", system)
        .path("/FHIR/R4/Patient/$export", patient)
        .path(format!("/FHIR/R4/Patient/{{id}}/{EVERYTHING}"), everything)
        .path("/FHIR/R4/$export-status/{job}", status_item)
        .path(
            "/FHIR/R4/$export-file/{job}/{part}",
            PathItem::new(
                HttpMethod::Get,
                with_errors(
                    file,
                    &[("404", "Not known, not yours, not complete, or expired")],
                )
                .build(),
            ),
        )
}

fn directory_paths(paths: PathsBuilder) -> PathsBuilder {
    use crate::fhir::service_search;
    let description = format!(
        "The Directory of Services search for one patient (e-RS A010): services of a specialty and priority near the patient's home postcode (or a given one), optionally only those with free slots, that treat the patient's age and gender, sorted by distance or by earliest free slot. Results are a searchset Bundle of HealthcareService (each with its distance in search.extension, and its indicative wait at the priority: Extension-eRS-IndicativeWaitTime, the earliest free slot a referral at that priority may book and the days to it, LIMITED_AVAILABILITY when a directly bookable service has none, NOT_APPLICABLE when it is not directly bookable) and their Locations; paging links are the equivalent plain HealthcareService search. {} With a patient, the caller must also be allowed to read patients.",
        who_may("HealthcareService", Action::Search)
    );
    let item = read_only(ReadOnly {
        id: "searchHealthcareServicesForPatient",
        tag: "HealthcareService",
        summary: "Services for a patient ($ers.searchHealthcareServicesForPatient)",
        description,
        path: Vec::new(),
        inputs: service_search::parameters()
            .iter()
            .map(|p| query(p.name, p.doc))
            .collect(),
        body_required: true,
        ok: response(
            "A searchset Bundle of HealthcareService and Location",
            Some("Bundle"),
        ),
        errors: &[("422", "The patient is not known here")],
    });
    paths.path(
        format!("/FHIR/R4/HealthcareService/{}", service_search::NAME),
        item,
    )
}

fn referral_paths(mut paths: PathsBuilder) -> PathsBuilder {
    use crate::domain::referral::{Endpoint, ReferralAction};
    for a in ReferralAction::ALL {
        let (res, what) = match a.endpoint() {
            Endpoint::Referral => ("ServiceRequest", "The referral's logical id (r.{uuid})"),
            Endpoint::CurrentAppointment => (
                "Appointment",
                "The current appointment's logical id (a.{uuid})",
            ),
            Endpoint::NewAppointment => continue,
        };
        let mut body = RequestBodyBuilder::new()
            .required(Some(Required::True))
            .description(Some(format!("A FHIR Parameters resource: {}", a.inputs())));
        for (ct, c) in fhir_content("Resource") {
            body = body.content(ct, c);
        }
        let op = operation(
            a.code(),
            res,
            &format!("{} ({})", a.code(), a.operation()),
            format!(
                "Changes the {} and its referral's state. May be done by {}, when the state and your organisation allow it (GET ServiceRequest/{{id}}/$ers.availableActions). Returns the new version.",
                if res == "Appointment" { "appointment" } else { "referral" },
                a.roles().iter().map(|b| b.code()).collect::<Vec<_>>().join(", ")
            ),
            vec![
                path_param("id", what),
                header("If-Match", true, "W/\"n\": the version you read"),
            ],
        )
        .request_body(Some(body.build()))
        .response("200", response("The new version", Some("Resource")));
        let errors = [
            ("409", "Another change came first (stale If-Match)"),
            (
                "422",
                "Not allowed in the referral's state (INVALID_REQUEST_STATE), or invalid input",
            ),
            ("428", "If-Match is missing"),
        ];
        paths = paths.path(
            format!("/FHIR/R4/{res}/{{id}}/{}", a.operation()),
            PathItem::new(HttpMethod::Post, with_errors(op, &errors).build()),
        );
    }
    let item = read_only(ReadOnly {
        id: "availableActions",
        tag: "ServiceRequest",
        summary: "What you may do to a referral now ($ers.availableActions)",
        description: "The actions your role and organisation may take on the referral in its current state (e-RS A029), with the version they apply to. The operations themselves use the same rule.".to_owned(),
        path: vec![path_param("id", "The referral's logical id")],
        inputs: Vec::new(),
        body_required: false,
        ok: response("A Parameters resource: referral, state, and an action part per available action", Some("Resource")),
        errors: &[("404", "No such referral")],
    });
    let worklist = read_only(ReadOnly {
        id: "worklist",
        tag: "ServiceRequest",
        summary: "A worklist ($ers.worklist)",
        description: format!(
            "The referrals on one of your organisation's worklists (e-RS A008), with their patients: referrer lists for referrers, provider lists (optionally by service and specialty) for providers. A searchset Bundle, paged. {}",
            who_may("ServiceRequest", Action::Search)
        ),
        path: Vec::new(),
        inputs: vec![
            query("listType", "The worklist (one of the e-RS worklist codes; required, once)"),
            query("service", "Provider lists: only these services (HealthcareService/{id} or id; repeat or comma-separate)"),
            query("specialty", "Provider lists: only these specialties (e-RS specialty codes)"),
            query("_count", "Page size"),
            query("_offset", "Where the page starts"),
            query("_total", "accurate to count the whole list"),
            query("_revinclude", "Appointment:based-on (the referrals' appointments) or Task:focus (what you may do to each, as e-RS A029's Tasks)"),
        ],
        body_required: true,
        ok: response("A searchset Bundle of ServiceRequest and Patient", Some("Bundle")),
        errors: &[("422", "A worklist of the other side's")],
    });
    let task_params = || -> Vec<Parameter> {
        crate::fhir::task::PARAMS
            .iter()
            .map(|(name, _, doc)| query(name, doc))
            .collect()
    };
    let task_description = format!(
        "The actions your role and organisation may take now on a referral or A&G request, as the Tasks of e-RS A029 (focus=ServiceRequest/{{id}}/_history/{{version}}&intent=proposal&status=ready): a Task per action, its code from https://fhir.nhs.uk/CodeSystem/eRS-AvailableActionsForUser and the operation's URL as its input; the same rule as $ers.availableActions. A referral you may not see, or a version that is not current, has none (an outcome entry says which). The Tasks are made for each search, never stored: not read by id, not to be cached. {}",
        who_may("Task", Action::Search)
    );
    let tasks = operation(
        "searchTask",
        "Task",
        "What you may do to a referral now, as Tasks (e-RS A029)",
        task_description.clone(),
        task_params(),
    )
    .response(
        "200",
        response("A searchset Bundle of Task", Some("Bundle")),
    );
    let tasks_post = operation(
        "searchTaskPost",
        "Task",
        "What you may do to a referral now, as Tasks (form body)",
        task_description,
        Vec::new(),
    )
    .request_body(Some(form_body()))
    .response(
        "200",
        response("A searchset Bundle of Task", Some("Bundle")),
    );
    paths
        .path("/FHIR/R4/ServiceRequest/{id}/$ers.availableActions", item)
        .path("/FHIR/R4/ServiceRequest/$ers.worklist", worklist)
        .path(
            "/FHIR/R4/Task",
            PathItem::new(
                HttpMethod::Get,
                with_errors(
                    tasks,
                    &[("400", "focus missing, given twice or not a ServiceRequest")],
                )
                .build(),
            ),
        )
        .path(
            "/FHIR/R4/Task/_search",
            PathItem::new(
                HttpMethod::Post,
                with_errors(
                    tasks_post,
                    &[
                        ("400", "focus missing, given twice or not a ServiceRequest"),
                        ("415", "Not a form body"),
                    ],
                )
                .build(),
            ),
        )
}

fn advice_paths(mut paths: PathsBuilder) -> PathsBuilder {
    use crate::domain::advice::AdviceAction;
    for a in AdviceAction::ALL {
        let mut body = RequestBodyBuilder::new()
            .required(Some(Required::True))
            .description(Some(format!("A FHIR Parameters resource: {}", a.inputs())));
        for (ct, c) in fhir_content("Resource") {
            body = body.content(ct, c);
        }
        let op = operation(
            a.code(),
            "ServiceRequest",
            &format!("{} ({})", a.code(), a.operation()),
            format!(
                "Advice and guidance: sends a message (a Communication based on the request) and moves the request's status. May be done by {}, in its turn (the provider while PROVIDER_RESPONSE_REQUIRED, the referrer otherwise). Returns the request's new version; a conversion returns the referral it created (201).",
                a.roles().iter().map(|b| b.code()).collect::<Vec<_>>().join(", ")
            ),
            vec![
                path_param("id", "The A&G request's logical id (a.{uuid})"),
                header("If-Match", true, "W/\"n\": the version you read"),
            ],
        )
        .request_body(Some(body.build()))
        .response("200", response("The request's new version", Some("Resource")));
        let op = if a == AdviceAction::Convert {
            op.response(
                "201",
                response("The referral created, with the same UBRN", Some("Resource")),
            )
        } else {
            op
        };
        let errors = [
            ("409", "Another change came first (stale If-Match)"),
            (
                "422",
                "Not the caller's turn (INVALID_REQUEST_STATE), not authorised to convert (CONVERSION_NOT_AUTHORISED), or invalid input",
            ),
            ("428", "If-Match is missing"),
        ];
        paths = paths.path(
            format!("/FHIR/R4/ServiceRequest/{{id}}/{}", a.operation()),
            PathItem::new(HttpMethod::Post, with_errors(op, &errors).build()),
        );
    }
    let ok = with_pdf(
        response(
            "The summary: a FHIR collection Bundle, or a PDF for Accept: application/pdf",
            Some("Bundle"),
        ),
        "The summary as a PDF",
    );
    let item = read_only(ReadOnly {
        id: "generateCRI",
        tag: "ServiceRequest",
        summary: "Advice summary or clinical referral information ($ers.generateCRI)",
        description: "On an advice and guidance request (e-RS A043), the whole conversation — request, messages oldest first, attachments, outcome. On a referral (e-RS A007), its clinical referral information — the referral, patient, referrer, shortlist, current appointment and where, attachments (not the files), each state change with who made it, and the advice conversation it came from (for those who may read messages). A PDF (NHS number and UBRN on every page) for Accept: application/pdf, else a FHIR collection Bundle. Users and applications of the organisations the request is with.".to_owned(),
        path: vec![path_param("id", "The request's logical id (a.{uuid} or r.{uuid})")],
        inputs: Vec::new(),
        body_required: false,
        ok,
        errors: &[
            ("404", "No such request"),
            ("410", "Its UBRN expired (UBRN_EXPIRED)"),
        ],
    });
    let paths = paths.path("/FHIR/R4/ServiceRequest/{id}/$ers.generateCRI", item);
    let ok = with_pdf(response("The letter, a PDF", None), "The letter as a PDF");
    let item = read_only(ReadOnly {
        id: "generatePatientLetter",
        tag: "ServiceRequest",
        summary: "The patient's letter ($ers.generatePatientLetter)",
        description: "The letter the referrer gives the patient about a referral (e-RS A019), a PDF: the patient's name, address and NHS number, their booking reference (UBRN), and their booked appointment (when, which service, where), or the shortlisted services to book with, or what happens next (deferred, in triage, cancelled). Referring roles of the referring organisation.".to_owned(),
        path: vec![path_param("id", "The referral's logical id (r.{uuid})")],
        inputs: Vec::new(),
        body_required: false,
        ok,
        errors: &[
            ("403", "Not a referring role"),
            ("404", "No such referral"),
            ("406", "The client does not accept application/pdf"),
            ("422", "An advice and guidance request (INVALID_REQUEST_TYPE)"),
        ],
    });
    paths.path(
        "/FHIR/R4/ServiceRequest/{id}/$ers.generatePatientLetter",
        item,
    )
}

fn subscription_paths(paths: PathsBuilder) -> PathsBuilder {
    let item = read_only(ReadOnly {
        id: "subscriptionEvents",
        tag: "Subscription",
        summary: "Missed events ($events)",
        description: "The events the subscription matches after eventsSinceNumber (up to eventsUntilNumber), as a query-event notification Bundle: what a subscriber that was away catches up with. The subscription's own organisation only.".to_owned(),
        path: vec![path_param("id", "The Subscription's logical id")],
        inputs: vec![
            query("eventsSinceNumber", "Events after this number (default 0)"),
            query("eventsUntilNumber", "Up to this number"),
        ],
        body_required: false,
        ok: response("A notification Bundle", Some("Bundle")),
        errors: &[("404", "No such subscription")],
    });
    let announcements = read_only(ReadOnly {
        id: "announcements",
        tag: "CommunicationRequest",
        summary: "Announcements for you ($ers.announcements)",
        description: "The system announcements addressed to your role and organisation (or everyone), current ones newest first; all=true adds past and future ones, unread=true keeps those you have not marked read.".to_owned(),
        path: Vec::new(),
        inputs: vec![
            query("all", "true: past and future announcements too"),
            query("unread", "true: only those not marked read"),
            query("_count", "Page size (1-100, default 20)"),
            query("_offset", "Where the page starts"),
        ],
        body_required: false,
        ok: response("A searchset Bundle of CommunicationRequest", Some("Bundle")),
        errors: &[],
    });
    paths.path("/FHIR/R4/Subscription/{id}/$events", item).path(
        "/FHIR/R4/CommunicationRequest/$ers.announcements",
        announcements,
    )
}

fn attachment_paths(paths: PathsBuilder) -> PathsBuilder {
    use crate::fhir::resources::document_reference::ALLOWED;
    let types = ALLOWED
        .iter()
        .map(|(t, _)| *t)
        .collect::<Vec<_>>()
        .join(", ");
    let mut body = RequestBodyBuilder::new()
        .required(Some(Required::True))
        .description(Some(format!(
            "The file's bytes as they are, at most 5 MB. Content-Type one of: {types}"
        )));
    for (t, _) in ALLOWED {
        body = body.content(*t, Content::new(Some(string_schema("the file"))));
    }
    // Or the FHIR Binary resource carrying the file (contentType, base64 data).
    body = body
        .content(FHIR_JSON, Content::new(Some(schema_ref("Resource"))))
        .content(FHIR_XML, Content::new(Some(schema_ref("Resource"))));
    let post = operation(
        "uploadBinary",
        "Binary",
        "Upload an attachment",
        format!(
            "Stores a referral letter or clinical document, sent as its bytes with its own Content-Type, or as a FHIR Binary resource (application/fhir+json or +xml: contentType and base64 data), checked: an accepted type, at most 5 MB (413 FILE_SIZE_ERROR), content that is what the Content-Type says and a file name (NHSD-eRS-File-Name, as e-RS A020 sends it, or Content-Disposition) that matches (422). Only your organisation may read it until a referral document points at it. {}",
            who_may("Binary", Action::Create)
        ),
        vec![
            header(
                "Content-Disposition",
                false,
                "attachment; filename=\"letter.pdf\"",
            ),
            header(
                "NHSD-eRS-File-Name",
                false,
                "The file name, as e-RS A020 sends it (taken before Content-Disposition's)",
            ),
        ],
    )
    .request_body(Some(body.build()))
    .response(
        "201",
        response("The Binary (metadata only); Location names it", Some("Resource")),
    );
    let get = operation(
        "downloadBinary",
        "Binary",
        "Download an attachment",
        format!(
            "Streams the file with its Content-Type, file name and a SHA-256 ETag; with Accept: application/fhir+json (or _format), the FHIR Binary with base64 data. 404 when your organisation may not see it. {}",
            who_may("Binary", Action::Read)
        ),
        vec![
            path_param("id", "The upload's id"),
            header(
                "If-None-Match",
                false,
                "The ETag of the file you hold: 304 with no body if it is this file",
            ),
        ],
    )
    .response("200", response("The file, or the FHIR Binary", None))
    .response("304", not_modified("Your copy is this file: no body; its ETag"));
    paths
        .path(
            "/FHIR/R4/Binary",
            PathItem::new(
                HttpMethod::Post,
                with_errors(
                    post,
                    &[
                        ("413", "More than 5 MB (FILE_SIZE_ERROR)"),
                        ("415", "A type e-RS does not accept"),
                        ("422", "Content or file name not matching the Content-Type; a threat found by the malware scanner (THREATS_FOUND), nothing stored"),
                        ("503", "The malware scanner is not working (SYSTEM_UNAVAILABLE): try again"),
                    ],
                )
                .build(),
            ),
        )
        .path(
            "/FHIR/R4/Binary/{id}",
            PathItem::new(
                HttpMethod::Get,
                with_errors(
                    get,
                    &[(
                        "404",
                        "No such upload, or one your organisation may not see",
                    )],
                )
                .build(),
            ),
        )
}

fn terminology_paths(mut paths: PathsBuilder) -> PathsBuilder {
    for t in crate::fhir::conformance::TYPES {
        let mut params = vec![
            query("url", "Canonical URL"),
            query("name", "Name (starts with)"),
            query("status", "active"),
        ];
        match t {
            "SearchParameter" => {
                params.push(query("code", "The parameter's name in a query"));
                params.push(query("base", "The resource type it searches"));
            }
            "OperationDefinition" => {
                params.push(query("code", "The operation's name without $"));
                params.push(query("resource", "The resource type it is invoked on"));
            }
            "StructureDefinition" => params.push(query("type", "Extension")),
            _ => {}
        }
        let search = operation(
            &format!("search{t}"),
            t,
            &format!("Search the server's {t} resources"),
            who_may(t, Action::Search),
            params,
        )
        .response(
            "200",
            response(&format!("A searchset Bundle of {t}"), Some("Bundle")),
        );
        let read = operation(
            &format!("read{t}"),
            t,
            &format!("Read one {t}"),
            who_may(t, Action::Read),
            vec![path_param("id", "its id, e.g. ers-priority")],
        )
        .response("200", response(&format!("The {t}"), Some("Resource")));
        paths = paths
            .path(
                format!("/FHIR/R4/{t}"),
                PathItem::new(
                    HttpMethod::Get,
                    with_errors(search, &[("405", "Read-only")]).build(),
                ),
            )
            .path(
                format!("/FHIR/R4/{t}/{{id}}"),
                PathItem::new(
                    HttpMethod::Get,
                    with_errors(read, &[("404", "Not known"), ("405", "Read-only")]).build(),
                ),
            );
    }
    paths
}

fn system_paths(paths: PathsBuilder) -> PathsBuilder {
    let plain = |id: &str, tag: &str, summary: &str, ok: Response| {
        OperationBuilder::new()
            .operation_id(Some(id))
            .tag(tag)
            .summary(Some(summary))
            .response("200", ok)
            .build()
    };
    let form = |description: &str| {
        RequestBodyBuilder::new()
            .required(Some(Required::True))
            .content(
                "application/x-www-form-urlencoded",
                Content::new(Some(RefOr::T(string_schema(description)))),
            )
            .build()
    };
    let token = ResponseBuilder::new()
        .description("{access_token, token_type: Bearer, expires_in}")
        .content(
            "application/json",
            Content::new(Some(RefOr::T(
                ObjectBuilder::new().schema_type(Type::Object).into(),
            ))),
        )
        .build();
    let json = |d: &str| {
        ResponseBuilder::new()
            .description(d)
            .content(
                "application/json",
                Content::new(Some(RefOr::T(
                    ObjectBuilder::new().schema_type(Type::Object).into(),
                ))),
            )
            .build()
    };
    paths
        .path(
            "/FHIR/R4",
            PathItem::new(
                HttpMethod::Post,
                with_errors(
                    operation(
                        "transactionOrBatch",
                        "System",
                        "A transaction (all or nothing) or batch Bundle of creates, updates, patches, deletes, reads and searches",
                        "Entries: POST Type (request.ifNoneExist honoured), PUT Type/id or Type?criteria (request.ifMatch honoured), PATCH Type/id (a Binary of application/json-patch+json), DELETE Type/id, GET Type/id (request.ifNoneMatch honoured), GET Type/id/_history/n, GET Type?criteria, HEAD for a read's answer without the resource; at most 1000. A transaction runs deletes first, then creates and updates in the Bundle's order (an entry created with a urn:uuid: fullUrl before those referring to it), then reads, and changes each resource once; answers keep the Bundle's order. Each entry is authorised, validated and audited as if sent alone.".into(),
                        Vec::new(),
                    )
                    .request_body(Some(resource_body("Bundle")))
                    .response("200", response("A transaction-response or batch-response Bundle", Some("Bundle"))),
                    &[("404", "A transaction reads or changes a resource that does not exist"), ("409", "An entry conflicts"), ("412", "An entry's If-Match is stale"), ("413", "Body over 5 MB"), ("415", "Unsupported Content-Type"), ("422", "An entry is invalid (named as Bundle.entry[i])")],
                )
                .build(),
            ),
        )
        .path("/FHIR/R4/metadata", PathItem::new(HttpMethod::Get, plain("metadata", "System", "The CapabilityStatement (no token needed); with ?mode=terminology the TerminologyCapabilities (the code systems this server defines); another mode is 400", response("CapabilityStatement, or TerminologyCapabilities", Some("Resource")))))
        .path("/FHIR/R4/$versions", PathItem::new(HttpMethod::Get, plain("versions", "System", "The FHIR versions served, as the fhirVersion MIME-type parameter names them, and the default: a Parameters with version and default, 4.0 both (no token needed). An Accept for another FHIR version is 406, a body of another 415", response("Parameters", Some("Resource")))))
        .path("/FHIR/R4/openapi.json", PathItem::new(HttpMethod::Get, plain("openapi", "System", "This document (no token needed)", json("OpenAPI 3 document"))))
        .path("/_ping", PathItem::new(HttpMethod::Get, plain("ping", "System", "Liveness", json("{status: pass}"))))
        .path("/_status", PathItem::new(HttpMethod::Get, OperationBuilder::new().operation_id(Some("status")).tag("System").summary(Some("Readiness: checks the database")).description(Some("200 {status: pass} when the database takes writes; {status: warn} while the search index is brought to a new definition, with checks.searchIndex.reindexing naming the types not done yet (the instance serves meanwhile); 503 {status: fail} when the database is away")).response("200", json("{status: pass} or {status: warn}")).response("503", json("{status: fail}")).build()))
        .path(
            "/oauth2/token",
            PathItem::new(
                HttpMethod::Post,
                OperationBuilder::new()
                    .operation_id(Some("clientCredentials"))
                    .tag("OAuth2")
                    .summary(Some("Application-restricted access: client assertion for an access token"))
                    .description(Some("grant_type=client_credentials, client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer, client_assertion=<JWT signed with the registered key: iss = sub = client id, aud = <root>/oauth2/token, exp at most 5 minutes ahead>. The token acts as PROVIDER_AUTHORISED_APPLICATION at the application's organisation."))
                    .request_body(Some(form("grant_type, client_assertion_type, client_assertion")))
                    .response("200", token.clone())
                    .response("400", response("Bad request", Some("OperationOutcome")))
                    .response("401", response("Assertion refused", Some("OperationOutcome")))
                    .build(),
            ),
        )
        .path("/oauth2/jwks", PathItem::new(HttpMethod::Get, plain("appJwks", "OAuth2", "Public keys of application access tokens", json("JWKS"))))
        .path(
            "/oauth2/sandbox/token",
            PathItem::new(
                HttpMethod::Post,
                OperationBuilder::new()
                    .operation_id(Some("sandboxToken"))
                    .tag("OAuth2")
                    .summary(Some("Sandbox mode only: a token for a seeded sandbox user"))
                    .request_body(Some(form("user_id=<SDS user id>")))
                    .response("200", token)
                    .response("400", response("Not a sandbox user", Some("OperationOutcome")))
                    .response("404", response("Sandbox issuer off", Some("OperationOutcome")))
                    .build(),
            ),
        )
        .path("/oauth2/sandbox/jwks", PathItem::new(HttpMethod::Get, plain("sandboxJwks", "OAuth2", "Public keys of sandbox tokens", json("JWKS"))))
}

fn fhir_schema(resource_type: Option<&str>, description: &str) -> Schema {
    let mut rt = ObjectBuilder::new().schema_type(Type::String);
    if let Some(t) = resource_type {
        rt = rt.enum_values(Some([t]));
    }
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property("resourceType", rt)
        .required("resourceType")
        .into()
}

/// Every FHIR write (POST, PUT, PATCH, DELETE; not a search by POST) takes an
/// `Idempotency-Key` (`http::idempotency`), with its two refusals.
fn with_idempotency_keys(mut paths: utoipa::openapi::Paths) -> utoipa::openapi::Paths {
    use crate::http::idempotency::HEADER;
    for (path, item) in paths.paths.iter_mut() {
        if !path.starts_with("/FHIR/R4") || path.ends_with("/_search") {
            continue;
        }
        for op in [
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            op.parameters.get_or_insert_with(Vec::new).push(RefOr::T(header(
                HEADER,
                false,
                "A key of your choosing (1-255 visible ASCII characters, e.g. a UUID) naming this request: sent again with the same key (after a timeout or a lost connection), the write is not done twice, and the first answer comes back with Idempotent-Replayed: true. Keys are your own (user or application, organisation, role) and are kept for ERS_IDEMPOTENCY_KEY_HOURS (24 by default); a request that wrote nothing leaves its key free.",
            )));
            let answers = &mut op.responses.responses;
            answers
                .entry("409".into())
                .or_insert_with(|| RefOr::T(error_response("The Idempotency-Key's write is still being done, or its answer was lost (IDEMPOTENCY_KEY_IN_USE)")));
            answers.entry("422".into()).or_insert_with(|| {
                RefOr::T(error_response(
                    "The Idempotency-Key was used for another request",
                ))
            });
        }
    }
    paths
}

/// The whole document.
pub fn document() -> OpenApi {
    let paths = bulk_paths(report_paths(system_paths(terminology_paths(
        attachment_paths(audit_paths(subscription_paths(advice_paths(
            referral_paths(directory_paths(resource_paths(PathsBuilder::new()))),
        )))),
    ))))
    .build();
    let paths = with_idempotency_keys(paths);
    let components = ComponentsBuilder::new()
        .schema("Resource", fhir_schema(None, "A FHIR R4 resource; its profile is in the CapabilityStatement"))
        .schema("Bundle", fhir_schema(Some("Bundle"), "A FHIR R4 Bundle (searchset or history)"))
        .schema("OperationOutcome", fhir_schema(Some("OperationOutcome"), "Every error: issue[].code, an e-RS error code in issue[].details and diagnostics naming what was wrong"))
        .security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)))
        .responses_from_iter(COMMON_ERRORS.iter().map(|(code, text)| (format!("Error{code}"), error_response(text))))
        .schemas_from_iter(super::fhir_schemas::schemas(typed_bodies()))
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("e-Referral Service FHIR R4 server")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("A FHIR R4 server that does what the NHS e-Referral Service does. Every FHIR request except metadata and $versions needs a bearer token; user tokens also name the business function and organisation in headers. Errors are FHIR OperationOutcomes."))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// The document as committed (pretty JSON with a final newline).
pub fn document_json() -> String {
    let mut s = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
