//! Every route in one table. The resource types behind `{type}` come from the registry, which
//! the CapabilityStatement is generated from too.

use actix_web::dev::{HttpServiceFactory, Service, ServiceResponse};
use actix_web::http::header::{HeaderValue, ALLOW};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, FromRequest, Handler, HttpResponse, Resource, Responder};
use futures_util::FutureExt;

use super::{audit, handlers as h, oauth, system, terminology, ApiError};
use crate::fhir::registry;
use crate::security::permissions::{self, Action};

/// One endpoint with its methods listed once: each routed to its handler, and every 405 the
/// endpoint answers carrying `Allow` with the methods served there (RFC 9110 §15.5.6 requires
/// it). A method a handler refuses (405) for the resource at hand — an operation that changes
/// state asked for with GET, an update of a type nobody may change — is left out of that
/// answer's `Allow`, so a client is never told to retry with a method that is refused.
struct Endpoint {
    resource: Resource,
    /// The methods served, with the action they take on the URL's `{type}` when they write it
    /// (listed only for types someone may do that to).
    methods: Vec<(Method, Option<Action>)>,
    /// For an endpoint of operations (`{op}` in its path): GET for one that only reads (invoked
    /// with GET, HEAD or POST), POST for one that changes state (POST only).
    by_operation: Option<fn(&str) -> Method>,
}

impl Endpoint {
    fn at(path: &str) -> Self {
        Self {
            resource: web::resource(path),
            methods: Vec::new(),
            by_operation: None,
        }
    }

    fn route<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.resource = self.resource.route(web::method(method).to(handler));
        self
    }

    /// `method`, served by `handler`; GET brings HEAD with it: the same answer, whose body
    /// actix leaves unsent (RFC 9110 §9.3.2: a server that serves GET serves HEAD).
    fn on<F, Args>(mut self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.methods.push((method.clone(), None));
        if method == Method::GET {
            self.methods.push((Method::HEAD, None));
            self = self.route(Method::HEAD, handler.clone());
        }
        self.route(method, handler)
    }

    /// A GET that starts work (a bulk export's kick-off), served by `handler`: no HEAD, which
    /// would start it too while promising to be safe.
    fn starts<F, Args>(mut self, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.methods.push((Method::GET, None));
        self.route(Method::GET, handler)
    }

    /// `method`, served by `handler`, which takes `action` on the URL's `{type}`.
    fn writes<F, Args>(mut self, method: Method, action: Action, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.methods.push((method.clone(), Some(action)));
        self.route(method, handler)
    }

    /// `method`, answered by `handler` with why it is refused here (not in `Allow`).
    fn refused<F, Args>(self, method: Method, handler: F) -> Self
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.route(method, handler)
    }

    /// Each operation (`{op}`) takes only the method `method_of` gives it.
    fn by_operation(mut self, method_of: fn(&str) -> Method) -> Self {
        self.by_operation = Some(method_of);
        self
    }

    fn app_data<U: 'static>(mut self, data: U) -> Self {
        self.resource = self.resource.app_data(data);
        self
    }

    /// Every other method: `handler` says what is allowed (405).
    fn otherwise<F, Args>(self, handler: F) -> impl HttpServiceFactory
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let methods: std::rc::Rc<[(Method, Option<Action>)]> = self.methods.into();
        let by_operation = self.by_operation;
        self.resource
            .default_service(web::to(handler))
            .wrap_fn(move |req, service| {
                let methods = methods.clone();
                service
                    .call(req)
                    .map(move |res| res.map(|res| with_allow(res, &methods, by_operation)))
            })
    }
}

/// The methods of `methods` served for a request with `refused` as its method, `res_type` in
/// its URL (if any) and, for an operation, the method it takes, as an `Allow` value.
fn allowed(
    methods: &[(Method, Option<Action>)],
    res_type: Option<&str>,
    op_method: Option<Method>,
    refused: &Method,
) -> String {
    methods
        .iter()
        .filter(|(m, _)| {
            op_method.as_ref().is_none_or(|o| {
                o == m || (*o == Method::GET && (*m == Method::HEAD || *m == Method::POST))
            })
        })
        .filter(|(m, action)| {
            let served_for_type = match (action, res_type) {
                (Some(action), Some(t)) => {
                    registry::find(t).is_none_or(|d| *action != Action::Delete || d.delete)
                        && !permissions::allowed(t, *action).is_empty()
                }
                _ => true,
            };
            // A GET its handler refused refuses HEAD too, and the reverse (a method the
            // endpoint does not serve at all refuses nothing else).
            let by_handler = methods.iter().any(|(served, _)| served == refused);
            let pair = matches!(
                (m, refused),
                (&Method::GET, &Method::HEAD) | (&Method::HEAD, &Method::GET)
            );
            served_for_type && m != refused && !(by_handler && pair)
        })
        .map(|(m, _)| m.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A 405 answer gets the endpoint's `Allow` (worked out for that answer only).
fn with_allow<B>(
    mut res: ServiceResponse<B>,
    methods: &[(Method, Option<Action>)],
    by_operation: Option<fn(&str) -> Method>,
) -> ServiceResponse<B> {
    if res.status() != StatusCode::METHOD_NOT_ALLOWED {
        return res;
    }
    let req = res.request();
    let info = req.match_info();
    let op_method = by_operation.zip(info.get("op")).map(|(f, op)| f(op));
    let allow = allowed(methods, info.get("type"), op_method, req.method());
    if let Ok(v) = HeaderValue::from_str(&allow) {
        res.headers_mut().insert(ALLOW, v);
    }
    res
}

async fn not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::Service(
        crate::service::ServiceError::MethodNotAllowed(
            "This HTTP method is not allowed on this URL".into(),
        ),
    ))
}

async fn no_route(req: actix_web::HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "No such endpoint: {} {} (the FHIR base is /FHIR/R4)",
        req.method(),
        req.path()
    )))
}

async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header(("Location", "/docs/"))
        .finish()
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Interactive API docs, served from the binary (Swagger UI vendored at build time), and the
    // OpenAPI document they show.
    cfg.service(
        utoipa_swagger_ui::SwaggerUi::new("/docs/{_:.*}")
            .url("/FHIR/R4/openapi.json", super::openapi::document()),
    )
    .route("/docs", web::get().to(docs_redirect));
    // Liveness (the process answers) and readiness (it can reach its database) for a load
    // balancer; `/_ping` and `/_status` are the same checks under their older names.
    for path in ["/_ping", "/_live"] {
        cfg.service(
            Endpoint::at(path)
                .on(Method::GET, system::ping)
                .otherwise(not_allowed),
        );
    }
    for path in ["/_status", "/_ready"] {
        cfg.service(
            Endpoint::at(path)
                .on(Method::GET, system::status)
                .otherwise(not_allowed),
        );
    }
    cfg.service(
        Endpoint::at("/oauth2/token")
            .on(Method::POST, oauth::client_credentials)
            .otherwise(not_allowed),
    )
    .service(
        Endpoint::at("/oauth2/jwks")
            .on(Method::GET, oauth::app_jwks)
            .otherwise(not_allowed),
    )
    .service(
        Endpoint::at("/oauth2/sandbox/token")
            .on(Method::POST, oauth::sandbox_token)
            .otherwise(not_allowed),
    )
    .service(
        Endpoint::at("/oauth2/sandbox/jwks")
            .on(Method::GET, oauth::sandbox_jwks)
            .otherwise(not_allowed),
    )
        // Reports and extracts for operational users (not FHIR: CSV or JSON, streamed).
        .service(
            Endpoint::at("/reports")
                .on(Method::GET, super::reports::list)
                .otherwise(not_allowed),
        )
        .service(
            Endpoint::at("/dashboard")
                .on(Method::GET, super::dashboard::show)
                .otherwise(not_allowed),
        )
        .service(
            Endpoint::at("/reports/{name}")
                .on(Method::GET, super::reports::run)
                .otherwise(not_allowed),
        )
        .service(
            web::scope("/FHIR/R4")
                .service(
                    Endpoint::at("/metadata")
                        .on(Method::GET, system::metadata)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("")
                        .on(Method::POST, super::bundles::post)
                        .otherwise(not_allowed),
                )
                // FHIR Bulk Data: asynchronous export, its status, its files.
                .service(
                    Endpoint::at("/$export")
                        .starts(super::bulk::system)
                        .on(Method::POST, super::bulk::system)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/Patient/$export")
                        .starts(super::bulk::patient)
                        .on(Method::POST, super::bulk::patient)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/$export-status/{job}")
                        .on(Method::GET, super::bulk::status)
                        .on(Method::DELETE, super::bulk::cancel)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/$export-file/{job}/{part}")
                        .on(Method::GET, super::bulk::file)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/$versions")
                        .on(Method::GET, system::versions)
                        .otherwise(not_allowed),
                )
                // Operations on a type: each one's route, then any other name (404 naming
                // those there are), before `{type}/{id}` could take it for an id.
                .service(
                    Endpoint::at("/AuditEvent/$export")
                        .starts(audit::export)
                        .otherwise(audit::append_only),
                )
                .service(
                    Endpoint::at("/HealthcareService/$ers.searchHealthcareServicesForPatient")
                        .on(Method::GET, super::directory::search_for_patient)
                        .on(Method::POST, super::directory::search_for_patient)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type}/$validate")
                        .on(Method::POST, h::validate)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/ServiceRequest/$ers.worklist")
                        .on(Method::GET, super::referrals::worklist)
                        .on(Method::POST, super::referrals::worklist)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/CommunicationRequest/$ers.announcements")
                        .on(Method::GET, super::announcements::list)
                        .on(Method::POST, super::announcements::list)
                        .otherwise(not_allowed),
                )
                .service(Endpoint::at("/{op:\\$[^/]*}").otherwise(h::no_operation))
                .service(Endpoint::at("/{type}/{op:\\$[^/]*}").otherwise(h::no_operation))
                .service(
                    Endpoint::at(
                        "/{type:CodeSystem|ValueSet|SearchParameter|OperationDefinition|StructureDefinition}",
                    )
                    .on(Method::GET, terminology::search)
                    .otherwise(terminology::read_only),
                )
                .service(
                    Endpoint::at(
                        "/{type:CodeSystem|ValueSet|SearchParameter|OperationDefinition|StructureDefinition}/{id}",
                    )
                    .on(Method::GET, terminology::read)
                    .otherwise(terminology::read_only),
                )
                .service(
                    Endpoint::at("/AuditEvent/{id}")
                        .on(Method::GET, audit::read)
                        .otherwise(audit::append_only),
                )
                .service(
                    Endpoint::at("/AuditEvent")
                        .on(Method::GET, audit::search)
                        .otherwise(audit::append_only),
                )
                // The actions a user may take now, as e-RS A029's Tasks: made for each search,
                // never stored.
                .service(
                    Endpoint::at("/Task")
                        .on(Method::GET, super::tasks::search_get)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/Task/_search")
                        .on(Method::POST, super::tasks::search_post)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/Task/{id}")
                        .on(Method::GET, super::tasks::not_kept)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type}/_search")
                        .on(Method::POST, h::search_post)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type}/_history")
                        .on(Method::GET, h::history_type)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type}/{id}/_history/{vid}")
                        .on(Method::GET, h::vread)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type}/{id}/_history")
                        .on(Method::GET, h::history_instance)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/Patient/{id}/$everything")
                        .on(Method::GET, super::everything::run)
                        .on(Method::POST, super::everything::run)
                        .otherwise(not_allowed),
                )
                // Referrals: created by their own use case, changed only by operations.
                .service(
                    Endpoint::at("/ServiceRequest/{id}/{op:\\$[A-Za-z.]+}")
                        .on(Method::GET, super::referrals::operation)
                        .on(Method::POST, super::referrals::operation)
                        .by_operation(super::referrals::operation_method)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type:ServiceRequest}/{id}")
                        .on(Method::GET, h::read)
                        .refused(Method::PUT, super::referrals::no_plain_writes)
                        .refused(Method::DELETE, super::referrals::no_plain_writes)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type:ServiceRequest}")
                        .on(Method::GET, h::search_get)
                        .on(Method::POST, super::referrals::create)
                        .otherwise(not_allowed),
                )
                // Attachments: the bytes as they are, up to 5 MB (a larger file is 413), or a
                // FHIR Binary carrying them in base64 (a third more, and the resource's text).
                .service(
                    Endpoint::at("/Binary")
                        .app_data(web::PayloadConfig::new(
                            crate::fhir::resources::document_reference::MAX_BYTES / 3 * 4
                                + 64 * 1024,
                        ))
                        .on(Method::POST, super::attachments::upload)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/Binary/{id}")
                        .on(Method::GET, super::attachments::download)
                        .otherwise(not_allowed),
                )
                // Appointments: booked, changed and cancelled by the booking use cases.
                .service(
                    Endpoint::at("/Appointment/{id}/{op:\\$[A-Za-z.]+}")
                        .on(Method::POST, super::appointments::operation)
                        .otherwise(not_allowed),
                )
                // Announcements: published by operational users for an audience.
                .service(
                    Endpoint::at("/CommunicationRequest/{id}/$ers.markRead")
                        .on(Method::POST, super::announcements::mark_read)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type:CommunicationRequest}/{id}")
                        .on(Method::GET, h::read)
                        .on(Method::PUT, super::announcements::revise)
                        .on(Method::DELETE, h::delete)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type:CommunicationRequest}")
                        .on(Method::GET, h::search_get)
                        .on(Method::POST, super::announcements::publish)
                        .otherwise(not_allowed),
                )
                // Subscriptions: their own use case (headers kept apart); delivery in the
                // background.
                .service(
                    Endpoint::at("/Subscription/{id}/$events")
                        .on(Method::GET, super::subscriptions::events)
                        .on(Method::POST, super::subscriptions::events)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type:Subscription}/{id}")
                        .on(Method::GET, h::read)
                        .on(Method::PUT, super::subscriptions::update)
                        .on(Method::DELETE, super::subscriptions::delete)
                        .otherwise(super::subscriptions::not_allowed),
                )
                .service(
                    Endpoint::at("/{type:Subscription}")
                        .on(Method::GET, h::search_get)
                        .on(Method::POST, super::subscriptions::create)
                        .otherwise(super::subscriptions::not_allowed),
                )
                // Advice messages: written by the A&G operations, never directly.
                .service(
                    Endpoint::at("/{type:Communication}/{id}")
                        .on(Method::GET, h::read)
                        .otherwise(super::advice::no_message_writes),
                )
                .service(
                    Endpoint::at("/{type:Communication}")
                        .on(Method::GET, h::search_get)
                        .otherwise(super::advice::no_message_writes),
                )
                .service(
                    Endpoint::at("/{type:DocumentReference}/{id}")
                        .on(Method::GET, h::read)
                        .otherwise(super::attachments::no_document_writes),
                )
                .service(
                    Endpoint::at("/{type:DocumentReference}")
                        .on(Method::GET, h::search_get)
                        .otherwise(super::attachments::no_document_writes),
                )
                .service(
                    Endpoint::at("/{type:Appointment}/{id}")
                        .on(Method::GET, h::read)
                        .on(Method::PUT, super::appointments::update)
                        .refused(Method::DELETE, super::appointments::no_delete)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type:Appointment}")
                        .on(Method::GET, h::search_get)
                        .on(Method::POST, super::appointments::create)
                        .otherwise(not_allowed),
                )
                // Who a user is in e-RS (A030, A040), beside the types' searches.
                .service(
                    Endpoint::at("/{type:PractitionerRole}")
                        .on(Method::GET, super::roles::practitioner_roles)
                        .writes(Method::POST, Action::Create, h::create)
                        .writes(Method::PUT, Action::Update, h::conditional_update)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type:Practitioner}")
                        .on(Method::GET, super::roles::practitioners)
                        .writes(Method::POST, Action::Create, h::create)
                        .writes(Method::PUT, Action::Update, h::conditional_update)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type}/{id}")
                        .on(Method::GET, h::read)
                        .writes(Method::PUT, Action::Update, h::update)
                        .writes(Method::PATCH, Action::Update, h::patch)
                        .writes(Method::DELETE, Action::Delete, h::delete)
                        .otherwise(not_allowed),
                )
                .service(
                    Endpoint::at("/{type}")
                        .on(Method::GET, h::search_get)
                        .writes(Method::POST, Action::Create, h::create)
                        .writes(Method::PUT, Action::Update, h::conditional_update)
                        .otherwise(not_allowed),
                )
                // Operations on a resource of a type that has none of that name.
                .service(Endpoint::at("/{type}/{id}/{op:\\$[^/]*}").otherwise(h::no_operation)),
        )
        .default_service(web::to(no_route));
}
