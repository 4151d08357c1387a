//! The OpenAPI document, generated from the handlers' annotations. `openapi/openapi.json` is this
//! output; a test fails when the committed file drifts from the code.

use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub mod values;
pub mod webhooks;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Consent service",
        description = "Granular, time-boxed third-party consent for banks: OAuth2 authorization \
                       server issuing Biscuit capability tokens scoped to accounts, transaction \
                       windows and merchants. JSON APIs report errors as RFC 9457 problem details.",
        license(name = "Apache-2.0"),
    ),
    servers(
        (url = "/", description = "The server that serves this document"),
        (url = "http://127.0.0.1:8080", description = "Local demo (`cargo run -- serve --demo`)"),
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
        crate::routes::customer_login::backchannel_logout,
    ),
    components(schemas(
        platform::problem::Problem,
        platform::problem::FieldError,
        crate::oauth::rar::AccountAccessDetail,
        crate::routes::oauth::OAuthErrorBody,
        crate::routes::customer_login::BackchannelLogoutForm,
    )),
    tags(
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "oauth", description = "OAuth 2.0 authorization server: PAR (RFC 9126), RAR \
            (RFC 9396) of type account_access, PKCE S256, rotating refresh tokens, revocation \
            (RFC 7009), introspection (RFC 7662). Errors use RFC 6749 codes."),
        (name = "customer-login", description = "Customer login through the bank's own OpenID \
            Connect provider: its back-channel logout."),
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
            "mutual_tls",
            SecurityScheme::MutualTls {
                description: Some(
                    "RFC 8705 client certificate (`tls_client_auth` or \
                     `self_signed_tls_client_auth`), when the server terminates TLS or sits \
                     behind a trusted proxy; the form names the client with `client_id`"
                        .into(),
                ),
                extensions: None,
            },
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

/// What every response of a status says alike, applied to the whole merged document so that no
/// annotation can forget it:
/// - a [`Problem`](platform::problem::Problem) body is `application/problem+json` (what
///   `ApiError` sends); RFC 6749 OAuth errors stay `application/json`;
/// - a JSON request body may be refused with 413 or 415;
/// - 401 answers carry `WWW-Authenticate`, 429 and 503 `Retry-After` (when to try again), 303
///   `Location`.
struct ResponseConventions;

impl utoipa::Modify for ResponseConventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Header, RefOr, Type, schema::ObjectBuilder};
        let string = || Header::new(ObjectBuilder::new().schema_type(Type::String));
        let header = |description: &str| {
            let mut h = string();
            h.description = Some(description.to_owned());
            h
        };
        let problem = |description: &str| -> RefOr<utoipa::openapi::Response> {
            utoipa::openapi::ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build()
                .into()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                // A JSON body of another type, or over the size limit, is refused before the
                // handler runs (`http::extractor_config`), whatever the operation.
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                if json_body {
                    for (status, description) in [
                        ("413", "Body too large"),
                        ("415", "Body of an unsupported content type"),
                    ] {
                        op.responses
                            .responses
                            .entry(status.to_owned())
                            .or_insert_with(|| problem(description));
                    }
                }
                for (status, response) in op.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if let Some(json) = response.content.get("application/json")
                        && matches!(&json.schema, Some(RefOr::Ref(r))
                            if r.ref_location == "#/components/schemas/Problem")
                    {
                        let json = response.content.shift_remove("application/json");
                        response
                            .content
                            .insert(platform::problem::PROBLEM_JSON.to_owned(), json.unwrap());
                    }
                    let (name, description) = match status.as_str() {
                        "401" => (
                            "WWW-Authenticate",
                            "The authentication scheme expected (RFC 9110 section 11.6.1)",
                        ),
                        "429" | "503" => ("Retry-After", "Seconds to wait before trying again"),
                        "303" => ("Location", "Where to go next"),
                        _ => continue,
                    };
                    response
                        .headers
                        .entry(name.to_owned())
                        .or_insert_with(|| header(description));
                }
            }
        }
    }
}

/// The merged document: the authorization server's and the developer portal's paths.
pub fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(developer_portal::ApiDoc::openapi());
    doc.merge(crate::routes::dashboard::ApiDoc::openapi());
    doc.merge(crate::routes::grants_api::ApiDoc::openapi());
    doc.merge(crate::routes::ssf::ApiDoc::openapi());
    doc.merge(crate::routes::staff::ApiDoc::openapi());
    utoipa::Modify::modify(&SecuritySchemes, &mut doc);
    utoipa::Modify::modify(&ResponseConventions, &mut doc);
    utoipa::Modify::modify(&Webhooks, &mut doc);
    doc
}

/// OpenAPI 3.1's `webhooks` (utoipa 5 has no field for it: it goes in through the root's
/// flattened map, which serializes as a sibling of `paths`) and the schemas of their `data`.
struct Webhooks;

impl utoipa::Modify for Webhooks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.extend(webhooks::data_schemas());
        openapi
            .extensions
            .get_or_insert_with(Default::default)
            .insert("webhooks".into(), webhooks::webhooks());
        openapi.tags.get_or_insert_with(Vec::new).push(
            utoipa::openapi::tag::TagBuilder::new()
                .name("webhooks")
                .description(Some(
                    "Events POSTed to a client's webhook URL (set on the client), signed per \
                     Standard Webhooks; deliveries and retries are listed in the portal",
                ))
                .build(),
        );
    }
}

pub fn spec_json() -> String {
    spec().to_pretty_json().unwrap_or_default()
}

/// The served document (`/openapi.json`): `openapi/openapi.json` as committed, which
/// `operations::committed_openapi_matches_the_code` keeps equal to [`spec_json`]. Nothing is
/// built at run time: building the document took megabytes of small allocations in every worker,
/// which the allocator kept after they were freed.
pub const DOCUMENT: &str = include_str!("../../../openapi/openapi.json");

/// `GET /openapi.json`: [`DOCUMENT`].
pub fn document() -> actix_web::Resource {
    actix_web::web::resource("/openapi.json").route(actix_web::web::get().to(|| async {
        actix_web::HttpResponse::Ok()
            .content_type(actix_web::http::header::ContentType::json())
            .body(DOCUMENT)
    }))
}

/// Swagger UI at `/docs/`, assets vendored into the binary (nothing is downloaded at build or run
/// time), reading the spec from `/openapi.json` ([`document`]).
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").config(utoipa_swagger_ui::Config::new(["/openapi.json"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Rust types documented under one name make utoipa keep one of them silently (the
    /// portal's session token once answered as the OAuth token response): every name the
    /// merged documents share must describe the same schema.
    #[test]
    fn no_two_types_share_a_schema_name() {
        let docs = [
            ApiDoc::openapi(),
            developer_portal::ApiDoc::openapi(),
            crate::routes::dashboard::ApiDoc::openapi(),
            crate::routes::grants_api::ApiDoc::openapi(),
            crate::routes::ssf::ApiDoc::openapi(),
            crate::routes::staff::ApiDoc::openapi(),
        ];
        let mut seen = std::collections::BTreeMap::new();
        for doc in &docs {
            for (name, schema) in &doc.components.as_ref().unwrap().schemas {
                let json = serde_json::to_value(schema).unwrap();
                if let Some(other) = seen.insert(name.clone(), json.clone()) {
                    assert_eq!(other, json, "two schemas named {name}");
                }
            }
        }
        let spec = spec();
        let mut operation_ids = std::collections::BTreeSet::new();
        for item in spec.paths.paths.values() {
            for op in [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
            {
                let id = op.operation_id.clone().unwrap();
                assert!(
                    operation_ids.insert(id.clone()),
                    "operationId {id} used twice"
                );
            }
        }
    }
}
