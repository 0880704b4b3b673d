//! Every route in one table. The resource types behind `{type}` come from the registry, which
//! the CapabilityStatement is generated from too.

use actix_web::{web, HttpResponse};

use super::{audit, handlers as h, oauth, system, terminology, ApiError};

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
    cfg.route("/_ping", web::get().to(system::ping))
        .route("/_live", web::get().to(system::ping))
        .route("/_status", web::get().to(system::status))
        .route("/_ready", web::get().to(system::status))
        .route("/oauth2/token", web::post().to(oauth::client_credentials))
        .route("/oauth2/jwks", web::get().to(oauth::app_jwks))
        .route(
            "/oauth2/sandbox/token",
            web::post().to(oauth::sandbox_token),
        )
        .route("/oauth2/sandbox/jwks", web::get().to(oauth::sandbox_jwks))
        // Reports and extracts for operational users (not FHIR: CSV or JSON, streamed).
        .service(
            web::resource("/reports")
                .route(web::get().to(super::reports::list))
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/dashboard")
                .route(web::get().to(super::dashboard::show))
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::resource("/reports/{name}")
                .route(web::get().to(super::reports::run))
                .default_service(web::to(not_allowed)),
        )
        .service(
            web::scope("/FHIR/R4")
                .service(
                    web::resource("/metadata")
                        .route(web::get().to(system::metadata))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("")
                        .route(web::post().to(super::bundles::post))
                        .default_service(web::to(not_allowed)),
                )
                // FHIR Bulk Data: asynchronous export, its status, its files.
                .service(
                    web::resource("/$export")
                        .route(web::get().to(super::bulk::system))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/Patient/$export")
                        .route(web::get().to(super::bulk::patient))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/$export-status/{job}")
                        .route(web::get().to(super::bulk::status))
                        .route(web::delete().to(super::bulk::cancel))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/$export-file/{job}/{part}")
                        .route(web::get().to(super::bulk::file))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource(
                        "/{type:CodeSystem|ValueSet|SearchParameter|OperationDefinition|StructureDefinition}",
                    )
                    .route(web::get().to(terminology::search))
                    .default_service(web::to(terminology::read_only)),
                )
                .service(
                    web::resource(
                        "/{type:CodeSystem|ValueSet|SearchParameter|OperationDefinition|StructureDefinition}/{id}",
                    )
                    .route(web::get().to(terminology::read))
                    .default_service(web::to(terminology::read_only)),
                )
                .service(
                    web::resource("/AuditEvent/$export")
                        .route(web::get().to(audit::export))
                        .default_service(web::to(audit::append_only)),
                )
                .service(
                    web::resource("/AuditEvent/{id}")
                        .route(web::get().to(audit::read))
                        .default_service(web::to(audit::append_only)),
                )
                .service(
                    web::resource("/AuditEvent")
                        .route(web::get().to(audit::search))
                        .default_service(web::to(audit::append_only)),
                )
                .service(
                    web::resource("/HealthcareService/$ers.searchHealthcareServicesForPatient")
                        .route(web::get().to(super::directory::search_for_patient))
                        .route(web::post().to(super::directory::search_for_patient))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/$validate")
                        .route(web::post().to(h::validate))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/_search")
                        .route(web::post().to(h::search_post))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/_history")
                        .route(web::get().to(h::history_type))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/_history/{vid}")
                        .route(web::get().to(h::vread))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}/_history")
                        .route(web::get().to(h::history_instance))
                        .default_service(web::to(not_allowed)),
                )
                // Referrals: created by their own use case, changed only by operations.
                .service(
                    web::resource("/ServiceRequest/$ers.worklist")
                        .route(web::get().to(super::referrals::worklist))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/ServiceRequest/{id}/{op:\\$[A-Za-z.]+}")
                        .route(web::get().to(super::referrals::operation))
                        .route(web::post().to(super::referrals::operation))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type:ServiceRequest}/{id}")
                        .route(web::get().to(h::read))
                        .route(web::put().to(super::referrals::no_plain_writes))
                        .route(web::delete().to(super::referrals::no_plain_writes))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type:ServiceRequest}")
                        .route(web::get().to(h::search_get))
                        .route(web::post().to(super::referrals::create))
                        .default_service(web::to(not_allowed)),
                )
                // Attachments: the bytes as they are, up to 5 MB (a larger body is 413).
                .service(
                    web::resource("/Binary")
                        .app_data(web::PayloadConfig::new(
                            crate::fhir::resources::document_reference::MAX_BYTES + 1,
                        ))
                        .route(web::post().to(super::attachments::upload))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/Binary/{id}")
                        .route(web::get().to(super::attachments::download))
                        .default_service(web::to(not_allowed)),
                )
                // Appointments: booked, changed and cancelled by the booking use cases.
                .service(
                    web::resource("/Appointment/{id}/{op:\\$[A-Za-z.]+}")
                        .route(web::post().to(super::appointments::operation))
                        .default_service(web::to(not_allowed)),
                )
                // Announcements: published by operational users for an audience.
                .service(
                    web::resource("/CommunicationRequest/$ers.announcements")
                        .route(web::get().to(super::announcements::list))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/CommunicationRequest/{id}/$ers.markRead")
                        .route(web::post().to(super::announcements::mark_read))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type:CommunicationRequest}/{id}")
                        .route(web::get().to(h::read))
                        .route(web::put().to(super::announcements::revise))
                        .route(web::delete().to(h::delete))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type:CommunicationRequest}")
                        .route(web::get().to(h::search_get))
                        .route(web::post().to(super::announcements::publish))
                        .default_service(web::to(not_allowed)),
                )
                // Subscriptions: their own use case (headers kept apart); delivery in the
                // background.
                .service(
                    web::resource("/Subscription/{id}/$events")
                        .route(web::get().to(super::subscriptions::events))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type:Subscription}/{id}")
                        .route(web::get().to(h::read))
                        .route(web::put().to(super::subscriptions::update))
                        .route(web::delete().to(super::subscriptions::delete))
                        .default_service(web::to(super::subscriptions::not_allowed)),
                )
                .service(
                    web::resource("/{type:Subscription}")
                        .route(web::get().to(h::search_get))
                        .route(web::post().to(super::subscriptions::create))
                        .default_service(web::to(super::subscriptions::not_allowed)),
                )
                // Advice messages: written by the A&G operations, never directly.
                .service(
                    web::resource("/{type:Communication}/{id}")
                        .route(web::get().to(h::read))
                        .default_service(web::to(super::advice::no_message_writes)),
                )
                .service(
                    web::resource("/{type:Communication}")
                        .route(web::get().to(h::search_get))
                        .default_service(web::to(super::advice::no_message_writes)),
                )
                .service(
                    web::resource("/{type:DocumentReference}/{id}")
                        .route(web::get().to(h::read))
                        .default_service(web::to(super::attachments::no_document_writes)),
                )
                .service(
                    web::resource("/{type:DocumentReference}")
                        .route(web::get().to(h::search_get))
                        .default_service(web::to(super::attachments::no_document_writes)),
                )
                .service(
                    web::resource("/{type:Appointment}/{id}")
                        .route(web::get().to(h::read))
                        .route(web::put().to(super::appointments::update))
                        .route(web::delete().to(super::appointments::no_delete))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type:Appointment}")
                        .route(web::get().to(h::search_get))
                        .route(web::post().to(super::appointments::create))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}/{id}")
                        .route(web::get().to(h::read))
                        .route(web::put().to(h::update))
                        .route(web::delete().to(h::delete))
                        .default_service(web::to(not_allowed)),
                )
                .service(
                    web::resource("/{type}")
                        .route(web::get().to(h::search_get))
                        .route(web::post().to(h::create))
                        .default_service(web::to(not_allowed)),
                ),
        )
        .default_service(web::to(no_route));
}
