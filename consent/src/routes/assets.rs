//! The pages' own static files, compiled into the binary: one stylesheet for every page and the
//! consent page's progressive enhancement. Nothing is fetched from elsewhere, at build or at run
//! time. Each answer carries a strong ETag (the SHA-256 of the file), so browsers revalidate
//! cheaply and see a new version as soon as one is deployed.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: String,
}

impl Asset {
    fn new(name: &'static str, content_type: &'static str, body: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        Self {
            name,
            content_type,
            body,
            etag,
        }
    }
}

static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        Asset::new(
            "app.css",
            "text/css; charset=utf-8",
            include_str!("../../assets/app.css"),
        ),
        Asset::new(
            "consent.js",
            "text/javascript; charset=utf-8",
            include_str!("../../assets/consent.js"),
        ),
    ]
});

/// `/assets/app.css` and `/assets/consent.js`; any other name is a 404 (problem details, from
/// the error normaliser).
#[get("/assets/{name}")]
pub async fn asset(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    let Some(a) = ASSETS.iter().find(|a| a.name == name.as_str()) else {
        return HttpResponse::NotFound().finish();
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag));
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, a.etag.as_str()))
        .insert_header((
            header::CACHE_CONTROL,
            "public, max-age=300, must-revalidate",
        ));
    if fresh {
        return res.finish();
    }
    res.content_type(a.content_type).body(a.body)
}
