//! The OpenAPI document, generated from the handlers' annotations. `openapi/openapi.json` is this
//! output; a test fails when the committed file drifts from the code.

use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Consent service",
        description = "Granular, time-boxed third-party consent for banks: OAuth2 authorization \
                       server issuing Biscuit capability tokens scoped to accounts, transaction \
                       windows and merchants. JSON APIs report errors as RFC 9457 problem details.",
        license(name = "Apache-2.0"),
    ),
    paths(
        crate::routes::health::healthz,
        crate::routes::health::readyz,
        crate::routes::health::metrics,
        crate::routes::oauth::server_metadata,
        crate::routes::oauth::biscuit_keys,
        crate::routes::oauth::par_endpoint,
        crate::routes::oauth::authorize_endpoint,
        crate::routes::oauth::token_endpoint,
        crate::routes::oauth::revoke_endpoint,
        crate::routes::oauth::introspect_endpoint,
    ),
    components(schemas(
        platform::problem::Problem,
        platform::problem::FieldError,
        crate::oauth::rar::AccountAccessDetail,
    )),
    tags(
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "oauth", description = "OAuth 2.0 authorization server: PAR (RFC 9126), RAR \
            (RFC 9396) of type account_access, PKCE S256, rotating refresh tokens, revocation \
            (RFC 7009), introspection (RFC 7662). Errors use RFC 6749 codes."),
    ),
)]
pub struct ApiDoc;

/// Security schemes referenced by the handlers' `security(...)`.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "client_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("OAuth client id and secret"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "biscuit",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("Biscuit")
                    .description(Some(
                        "A Biscuit access token from /oauth2/token, possibly attenuated. A token \
                         bound to a DPoP key (`token_type: DPoP`) goes as `Authorization: DPoP \
                         <token>` with a `DPoP` proof header (RFC 9449) instead; refusals then \
                         answer with a `WWW-Authenticate: DPoP` challenge.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The merged document: the authorization server's and the developer portal's paths.
pub fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(developer_portal::ApiDoc::openapi());
    doc.merge(crate::routes::dashboard::ApiDoc::openapi());
    doc.merge(crate::routes::grants_api::ApiDoc::openapi());
    utoipa::Modify::modify(&SecuritySchemes, &mut doc);
    doc
}

pub fn spec_json() -> String {
    spec().to_pretty_json().unwrap_or_default()
}

/// Swagger UI at `/docs/`, assets vendored into the binary (nothing is downloaded at build or run
/// time); it also serves the spec at `/openapi.json`.
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", spec())
}
