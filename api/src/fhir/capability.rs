//! The CapabilityStatement, generated from the same registry the routes and search use.

use serde_json::{json, Value};

use super::registry::{self, ParamKind, RESOURCES};
use crate::security::permissions::{allowed, describe, Action};

/// An interaction entry, listed only when some business function may use it, with who may.
fn interaction(resource: &str, code: &str, action: Action) -> Option<Value> {
    let who = allowed(resource, action);
    (!who.is_empty()).then(|| json!({"code": code, "documentation": describe(resource, action)}))
}

/// Whether `PUT Type?criteria` is offered for a type: one clients write directly, which someone
/// may both update and create (a conditional update may do either).
pub fn conditional_update(def: &registry::ResourceDef) -> bool {
    def.plain_writes
        && !allowed(def.name, Action::Update).is_empty()
        && !allowed(def.name, Action::Create).is_empty()
}

pub fn capability_statement(base_url: &str, software_version: &str, published: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|r| {
            let mut wanted = vec![
                ("read", Action::Read),
                ("vread", Action::Read),
                ("update", Action::Update),
                ("create", Action::Create),
                ("search-type", Action::Search),
                ("history-instance", Action::History),
                ("history-type", Action::History),
            ];
            if r.plain_writes {
                wanted.push(("patch", Action::Update));
            }
            if r.delete {
                wanted.push(("delete", Action::Delete));
            }
            let interactions: Vec<Value> = wanted.into_iter().filter_map(|(code, action)| interaction(r.name, code, action)).collect();
            let mut params = vec![
                json!({"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id", "documentation": "Logical id"}),
                json!({"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated", "documentation": "When the resource version last changed"}),
            ];
            params.extend(r.all_params().map(|p| {
                let mut sp = json!({"name": p.name, "type": p.kind.fhir_name(), "documentation": p.doc});
                if let Some(definition) = registry::common_definition(p.name) {
                    sp["definition"] = json!(definition);
                }
                sp
            }));
            params.extend(registry::BY_TARGET.iter().filter(|(t, _, _)| *t == r.name).map(|(_, name, by)| json!({"name": name, "type": "reference", "documentation": format!("Any participant, searched as {}", by.iter().map(|(t, p)| format!("{p} for a {t}")).collect::<Vec<_>>().join(", "))})));
            let mut includes: Vec<String> = r
                .params
                .iter()
                .filter(|p| p.kind == ParamKind::Reference)
                .map(|p| format!("{}:{}", r.name, p.name))
                .collect();
            let mut revincludes: Vec<String> = registry::referrers_of(r.name).iter().map(|(src, p)| format!("{src}:{}", p.name)).collect();
            let mut res = json!({
                "type": r.name,
                "profile": ers_fhir::validate::default_profile(r.name).map_or_else(|| ers_fhir::validate::base_url(r.name), |p| p.url.clone()),
                "supportedProfile": ers_fhir::validate::profiles_for(r.name).iter().map(|p| p.url.clone()).collect::<Vec<_>>(),
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": false,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": conditional_update(r),
                "conditionalDelete": "not-supported",
                "searchParam": params,
                "operation": [{"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate", "documentation": "POST the resource (or Parameters with 'resource'); ?profile= any profile of the type (its e-RS and UK Core profiles, listed in supportedProfile) or the base R4 definition; without it, the profile the server enforces on writes. Returns every issue; stores nothing."}],
            });
            if res["supportedProfile"].as_array().is_some_and(Vec::is_empty) {
                if let Some(o) = res.as_object_mut() {
                    o.shift_remove("supportedProfile");
                }
            }
            if r.name == "Patient" {
                if let Some(ops) = res["operation"].as_array_mut() {
                    ops.push(json!({
                        "name": "export",
                        "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
                        "documentation": format!("FHIR Bulk Data for the Patient compartment ({}): as the system-level $export.", crate::service::exports::PATIENT_COMPARTMENT.join(", ")),
                    }));
                    ops.push(json!({
                        "name": "everything",
                        "definition": super::conformance::operation_url(crate::service::exports::EVERYTHING),
                        "documentation": format!("GET Patient/{{id}}/$everything[?_since=&_type=&_count=]: the patient and the Patient compartment ({}) that you may see, with what those refer to, as one searchset (at most _count of each type, 1,000 by default; Patient/$export gives all).", crate::service::exports::PATIENT_COMPARTMENT.join(", ")),
                    }));
                }
            }
            {
                use crate::domain::referral::{Endpoint, ReferralAction};
                let at = match r.name {
                    "ServiceRequest" => Some(Endpoint::Referral),
                    "Appointment" => Some(Endpoint::CurrentAppointment),
                    _ => None,
                };
                if let (Some(at), Some(ops)) = (at, res["operation"].as_array_mut()) {
                    for a in ReferralAction::ALL.into_iter().filter(|a| a.endpoint() == at) {
                        ops.push(json!({
                            "name": a.operation().trim_start_matches('$'),
                            "definition": super::conformance::operation_url(a.operation()),
                            "documentation": format!(
                                "POST {}/{{id}}/{} with If-Match and a Parameters body ({}). May be done by {}, when the referral's state and your organisation allow it (see ServiceRequest $ers.availableActions).",
                                r.name,
                                a.operation(),
                                a.inputs(),
                                a.roles().iter().map(|b| b.code()).collect::<Vec<_>>().join(", ")
                            ),
                        }));
                    }
                }
            }
            if r.name == "Appointment" {
                res["documentation"] = json!("Appointments (e-RS booking). POST books a free slot of a shortlisted service (status booked + slot), records an indirectly booked appointment (booked + start/end + the service), or defers to the provider (proposed + an eRS-ReviewReason); basedOn names the referral. Changes: PUT with status=cancelled (cancel) or a new slot (change), or the operations below; never DELETE.");
            }
            if r.name == "ServiceRequest" {
                if let Some(ops) = res["operation"].as_array_mut() {
                    use crate::domain::advice::AdviceAction;
                    for a in AdviceAction::ALL {
                        ops.push(json!({
                            "name": a.operation().trim_start_matches('$'),
                            "definition": super::conformance::operation_url(a.operation()),
                            "documentation": format!(
                                "Advice and guidance: POST ServiceRequest/{{a.id}}/{} with If-Match and a Parameters body ({}). May be done by {}, in its turn.",
                                a.operation(),
                                a.inputs(),
                                a.roles().iter().map(|b| b.code()).collect::<Vec<_>>().join(", ")
                            ),
                        }));
                    }
                    ops.push(json!({
                        "name": "ers.generateCRI",
                        "definition": super::conformance::operation_url("$ers.generateCRI"),
                        "documentation": "GET ServiceRequest/{id}/$ers.generateCRI: an A&G request's advice summary (e-RS A043) or a referral's clinical referral information (A007), as a PDF (Accept: application/pdf) or a FHIR Bundle.",
                    }));
                    ops.push(json!({
                        "name": "ers.generatePatientLetter",
                        "definition": super::conformance::operation_url("$ers.generatePatientLetter"),
                        "documentation": "GET ServiceRequest/{r.id}/$ers.generatePatientLetter: the referral's letter for its patient (e-RS A019), a PDF: their UBRN and appointment, or how to book one. Referring roles only.",
                    }));
                    ops.push(json!({
                        "name": "ers.availableActions",
                        "definition": super::conformance::operation_url("$ers.availableActions"),
                        "documentation": "GET ServiceRequest/{id}/$ers.availableActions: the actions you may take on the referral now (e-RS A029), each with its operation URL, for the current version.",
                    }));
                }
                res["documentation"] = json!("Referrals and advice and guidance requests (e-RS). Create with POST (the server assigns the UBRN, the id r.{uuid} and state NOT_BOOKED; for an A&G request — category eRS-ServiceRequestCategory|request, one advice service, the conversion authorisation, the first message as its one note — the id a.{uuid} and status PROVIDER_RESPONSE_REQUIRED); every later change is one of the operations below, never a PUT or DELETE.");
            }
            if r.name == "CommunicationRequest" {
                if let Some(ops) = res["operation"].as_array_mut() {
                    for (op, doc) in [
                        ("$ers.announcements", "GET CommunicationRequest/$ers.announcements[?all=true][&unread=true]: the caller's announcements"),
                        ("$ers.markRead", "POST CommunicationRequest/{id}/$ers.markRead: marks one read for the caller"),
                    ] {
                        ops.push(json!({
                            "name": op.trim_start_matches('$'),
                            "definition": super::conformance::operation_url(op),
                            "documentation": doc,
                        }));
                    }
                }
                res["documentation"] = json!("System announcements (planned maintenance, releases, service changes): category communication-category|notification, payload [title, body], priority the severity, occurrencePeriod the window shown, recipient the audience organisations (none: all) and Extension-eRS-AnnouncementAudienceRole the audience business functions (none: all). Published and revised by service definers; everyone reads those for their organisation and role. GET CommunicationRequest/$ers.announcements: the caller's current ones, newest first (all=true: expired too; unread=true: not yet read), each read one flagged in entry.search with Extension-eRS-AnnouncementRead; POST CommunicationRequest/{id}/$ers.markRead.");
            }
            if r.name == "Subscription" {
                res["documentation"] = json!("R4 rest-hook subscriptions of a system (or user) to changes of referrals, appointments, documents and A&G messages it may see: criteria is a search of one of those types (e.g. ServiceRequest?performer=HealthcareService/11000). The server sends a handshake (status requested → active), then backport notification Bundles (history; SubscriptionStatus Parameters first, with each event's number and focus; the resource too when channel.payload is application/fhir+json), in order, at least once; retries with back-off, status error with the reason while the endpoint fails; heartbeats with the backport-heartbeat-period extension. Channel headers are kept but read back redacted. HTTPS endpoints only in production mode.");
                if let Some(ops) = res["operation"].as_array_mut() {
                    ops.push(json!({
                        "name": "events",
                        "definition": super::conformance::operation_url("$events"),
                        "documentation": "GET Subscription/{id}/$events?eventsSinceNumber=N[&eventsUntilNumber=M]: the matching events after N, for a subscriber that was away (a query-event notification Bundle).",
                    }));
                }
            }
            if r.name == "Communication" {
                res["documentation"] = json!("The messages of advice and guidance conversations, written by the A&G operations on ServiceRequest; read them with based-on=ServiceRequest/{a.id} and _sort=-sent (newest first). Clinical and administrative users of the organisations in the conversation only.");
            }
            if r.name == "HealthcareService" {
                if let Some(ops) = res["operation"].as_array_mut() {
                    ops.push(json!({
                        "name": super::service_search::NAME.trim_start_matches('$'),
                        "definition": super::conformance::operation_url(super::service_search::NAME),
                        "documentation": format!(
                            "GET or POST (Parameters): services for one patient, as a HealthcareService searchset. Parameters: {}",
                            super::service_search::parameters()
                                .iter()
                                .map(|p| format!("{} ({})", p.name, p.doc))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    }));
                }
            }
            // A referral's available actions, as Tasks (`fhir::search::action_tasks`); not in `*`.
            if r.name == "ServiceRequest" {
                revincludes.push("Task:focus".into());
            }
            // `*`: every one of them (`fhir::search::parse_include`).
            for list in [&mut includes, &mut revincludes] {
                if !list.is_empty() {
                    list.push("*".into());
                }
            }
            if !includes.is_empty() {
                res["searchInclude"] = json!(includes);
            }
            if !revincludes.is_empty() {
                res["searchRevInclude"] = json!(revincludes);
            }
            res
        })
        .collect();
    let mut resources = resources;
    resources.push(json!({
        "type": "Binary",
        "documentation": "Attachments (referral letters, clinical documents): POST the file's bytes with its Content-Type (pdf, txt, rtf, xml, au, mp3, png, gif, jpeg, tiff, mpeg, doc, docx, dcm) and a file name in Content-Disposition; at most 5 MB; the content must be what the type says. GET streams it back, or gives the FHIR Binary with Accept: application/fhir+json. Readable by the uploading organisation, and by those who may see a referral document pointing at it.",
        "interaction": [interaction("Binary", "create", Action::Create), interaction("Binary", "read", Action::Read)],
    }));
    resources.push(json!({
        "type": "Task",
        "documentation": "What you may do now to a referral or an A&G request (e-RS A029): GET Task?focus=ServiceRequest/{id}/_history/{version}&intent=proposal&status=ready gives a Task per action (code from https://fhir.nhs.uk/CodeSystem/eRS-AvailableActionsForUser, the operation's URL as its input), by the same rule as $ers.availableActions. Made for each search and never stored: not read by id, and not to be cached.",
        "interaction": [interaction("Task", "search-type", Action::Search)],
        "searchParam": super::task::PARAMS
            .iter()
            .map(|(name, kind, doc)| json!({"name": name, "type": kind, "documentation": doc}))
            .collect::<Vec<_>>(),
    }));
    for t in super::conformance::TYPES {
        let doc = match t {
            "CodeSystem" => "The e-RS reference data (specialties, clinic types, priorities, appointment types, request flows, cancellation reasons, business functions, error codes), each concept with its properties. Read-only.",
            "ValueSet" => "All the codes of each e-RS CodeSystem, expanded. Read-only.",
            "SearchParameter" => "Every search parameter of every hosted type, from the same registry the searches run on. Read-only.",
            "OperationDefinition" => "Every operation: the referral and appointment actions, available actions, worklists, the patient-centred service search. Read-only.",
            _ => "The profiles: the e-RS profiles (each deriving from its UK Core profile) and the UK Core profiles of the hosted types, each with its snapshot, and the e-RS extensions. Read-only.",
        };
        let mut params = vec![
            json!({"name": "url", "type": "uri", "documentation": "Canonical URL, e.g. https://fhir.nhs.uk/CodeSystem/eRS-Priority"}),
            json!({"name": "name", "type": "string", "documentation": "Name (starts with)"}),
            json!({"name": "status", "type": "token", "documentation": "active"}),
        ];
        match t {
            "SearchParameter" => {
                params.push(json!({"name": "code", "type": "token", "documentation": "The parameter's name in a query"}));
                params.push(json!({"name": "base", "type": "token", "documentation": "The resource type it searches"}));
            }
            "OperationDefinition" => {
                params.push(json!({"name": "code", "type": "token", "documentation": "The operation's name without $"}));
                params.push(json!({"name": "resource", "type": "token", "documentation": "The resource type it is invoked on"}));
            }
            "StructureDefinition" => {
                params.push(json!({"name": "type", "type": "token", "documentation": "Extension"}));
            }
            _ => {}
        }
        resources.push(json!({
            "type": t,
            "documentation": doc,
            "interaction": [interaction(t, "read", Action::Read), interaction(t, "search-type", Action::Search)],
            "searchParam": params,
        }));
    }
    resources.push(json!({
        "type": "AuditEvent",
        "profile": "https://fhir.hl7.org.uk/StructureDefinition/UKCore-AuditEvent",
        "documentation": "The audit trail: every read, search, write and refused request. Append-only.",
        "interaction": [interaction("AuditEvent", "read", Action::Read), interaction("AuditEvent", "search-type", Action::Search)],
        "searchParam": [
            {"name": "date", "type": "date", "documentation": "When it was recorded (eq, ge, gt, le, lt)"},
            {"name": "agent", "type": "token", "documentation": "SDS user id or application id of who acted"},
            {"name": "entity", "type": "reference", "documentation": "A resource it touched (Type/id)"},
            {"name": "patient", "type": "reference", "documentation": "A patient it touched: Patient/id, or patient:identifier=https://fhir.nhs.uk/Id/nhs-number|n"},
            {"name": "action", "type": "token", "documentation": "C, R, U, D or E"},
            {"name": "outcome", "type": "token", "documentation": "0 success, 4 refused or invalid, 8 failed"},
            {"name": "subtype", "type": "token", "documentation": "read, vread, search-type, create, update, patch, delete, history-*, access-denied, failed, export"},
        ],
        "operation": [{"name": "export", "definition": format!("{}/OperationDefinition/audit-export", super::conformance::CANONICAL), "documentation": format!("GET AuditEvent/$export with the search parameters: every match as application/fhir+ndjson. {}", describe("AuditEvent", Action::Export))}],
    }));
    let cs = json!({
        "resourceType": "CapabilityStatement",
        "id": "ers-fhir-server",
        "url": format!("{base_url}/metadata"),
        "name": "ErsFhirServer",
        "title": "e-Referral Service FHIR R4 server",
        "description": "A FHIR R4 server that does what the NHS e-Referral Service does: referrals, booking, advice and guidance and the Directory of Services, with the e-RS vocabulary.",
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/fhir+xml", "json", "xml"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": false,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth", "display": "OAuth"}]}],
                "description": "Bearer JWT on every request except metadata and $versions: a CIS2-style user token (IAL3, AAL2 or more) with the NHSD-eRS-Business-Function and NHSD-End-User-Organisation-ODS headers naming a role the user holds, or an application access token from POST /oauth2/token (signed client assertion) acting as PROVIDER_AUTHORISED_APPLICATION. Who may do what is listed on each interaction.",
            },
            "documentation": "Every request under the base except metadata and $versions must name the caller's e-RS business function (NHSD-eRS-Business-Function) and organisation (NHSD-End-User-Organisation-ODS).",
            "resource": resources,
            "interaction": [
                {"code": "transaction", "documentation": "POST a transaction Bundle of creates (POST Type, with request.ifNoneExist if wanted), updates (PUT Type/id), conditional updates (PUT Type?criteria), JSON Patches (PATCH Type/id, the patch in a Binary), deletes (DELETE Type/id), reads (GET or HEAD Type/id, GET Type/id/_history/n) and searches (GET Type?criteria) to the base: all or nothing: deletes first, then creates and updates in the Bundle's order (an entry created with a urn:uuid: fullUrl before those referring to it), then reads; at most 1000 entries"},
                {"code": "batch", "documentation": "POST a batch Bundle of the same entries: each answered on its own, in order"},
            ],
            "operation": [{
                "name": "versions",
                "definition": "http://hl7.org/fhir/OperationDefinition/CapabilityStatement-versions",
                "documentation": "GET [base]/$versions (no token needed): the FHIR versions served, as the fhirVersion MIME-type parameter names them, and the default: 4.0 both. A request whose Accept asks for another (application/fhir+json; fhirVersion=3.0) is 406, a body of another 415.",
            }, {
                "name": "export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
                "documentation": "FHIR Bulk Data: GET [base]/$export (or [base]/Patient/$export for the Patient compartment) with Prefer: respond-async, _type, _since (or POST with them in a Parameters body); 202 with Content-Location; poll it (202 with X-Progress, then 200 with the manifest); NDJSON files; DELETE cancels. Each type the caller may search, scoped as a search.",
            }],
        }],
    });
    about_this_server(cs, base_url, software_version, published)
}

/// What `metadata?mode=terminology` answers: the code systems this server defines, each in
/// its one version (served at `CodeSystem/{id}`, with a ValueSet of all its codes, expanded, at
/// `ValueSet/{id}`). The server has no terminology operations.
pub fn terminology_capabilities(base_url: &str, software_version: &str, published: &str) -> Value {
    let code_systems: Vec<Value> = super::terminology::code_systems()
        .iter()
        .filter_map(|cs| {
            let uri = cs.get("url")?.as_str()?;
            let mut entry = json!({"uri": uri});
            if let Some(v) = cs.get("version").and_then(Value::as_str) {
                entry["version"] = json!([{"code": v, "isDefault": true}]);
            }
            Some(entry)
        })
        .collect();
    let tc = json!({
        "resourceType": "TerminologyCapabilities",
        "id": "ers-fhir-server-terminology",
        "url": format!("{base_url}/metadata?mode=terminology"),
        "name": "ErsFhirServerTerminology",
        "title": "e-Referral Service FHIR R4 server: terminology",
        "description": "The e-RS code systems this server defines and enforces (priorities, specialties, clinic types, cancellation and non-attendance reasons, states, business functions, error codes...), each read at CodeSystem/{id} with its ValueSet of every code, expanded, at ValueSet/{id}. No terminology operations ($lookup, $validate-code, $expand, $translate).",
        "codeSystem": code_systems,
    });
    about_this_server(tc, base_url, software_version, published)
}

/// What the CapabilityStatement and the TerminologyCapabilities both say of this server: its
/// version, status, date, publisher, software and implementation.
fn about_this_server(
    mut doc: Value,
    base_url: &str,
    software_version: &str,
    published: &str,
) -> Value {
    if let Some(o) = doc.as_object_mut() {
        for (k, v) in [
            ("version", json!(software_version)),
            ("status", json!("active")),
            ("experimental", json!(false)),
            ("date", json!(published)),
            ("publisher", json!("ers-fhir project")),
            ("kind", json!("instance")),
            (
                "software",
                json!({"name": "ers-server", "version": software_version}),
            ),
            (
                "implementation",
                json!({"description": "ers-server", "url": base_url}),
            ),
        ] {
            o.insert(k.to_owned(), v);
        }
    }
    doc
}
