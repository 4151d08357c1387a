//! The landing page at `/`.

use actix_web::http::header;
use actix_web::{HttpResponse, get};
use maud::{Markup, html};
use platform::web::page;

#[get("/")]
pub async fn index() -> Markup {
    page(
        "Consent service",
        html! {
            h1 { "Consent service" }
            p { "Granular, time-boxed permissions for third-party apps: choose the accounts, the \
                 data, the transaction window, the merchants and how long, and revoke any app at \
                 any time." }
            ul.links {
                li { a href="/account/apps" { "Your connected apps" } " - for bank customers" }
                li { a href="/developers" { "Developer portal" } " - register apps, KYC, clients" }
                li { a href="/docs/" { "API documentation" } " (OpenAPI: " a href="/openapi.json" { "/openapi.json" } ")" }
                li { a href="/.well-known/oauth-authorization-server" { "OAuth metadata" } }
                li { "SDKs: Python and TypeScript, generated from " a href="/openapi.json" { "the spec" } " (" code { "sdks/generate.sh" } " in the source)" }
            }
            p.muted { "Health: " a href="/healthz" { "/healthz" } " · " a href="/readyz" { "/readyz" } " · " a href="/metrics" { "/metrics" } }
        },
    )
}

/// The documentation lives at `/docs/` (Swagger UI's relative assets need the slash).
#[get("/docs")]
pub async fn docs() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/docs/"))
        .finish()
}
