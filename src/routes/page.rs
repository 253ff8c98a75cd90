//! The page for people (SPEC §11), on the admin listener: one HTML file,
//! one script and one style sheet, compiled into the binary from
//! `assets/page/` (no CDN, no build step). They hold no data: the script
//! reads and changes everything through `/v1` with the token the person
//! typed, so the files themselves are served without one.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};

struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: LazyLock<String>,
}

macro_rules! asset {
    ($file:literal, $type:literal) => {
        Asset {
            body: include_str!(concat!("../../assets/page/", $file)),
            content_type: $type,
            etag: LazyLock::new(|| etag_of(include_str!(concat!("../../assets/page/", $file)))),
        }
    };
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static SCRIPT: Asset = asset!("page.js", "text/javascript; charset=utf-8");
static STYLE: Asset = asset!("page.css", "text/css; charset=utf-8");

/// The page's own files only: no inline script or style, nothing from
/// elsewhere, not framed by another site.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn etag_of(body: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", super::read().to(index))
        .route("/assets/page.js", super::read().to(script))
        .route("/assets/page.css", super::read().to(style));
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, &INDEX)
}

async fn script(req: HttpRequest) -> HttpResponse {
    serve(&req, &SCRIPT)
}

async fn style(req: HttpRequest) -> HttpResponse {
    serve(&req, &STYLE)
}

/// The asset, or 304 when the browser holds this version (it asks again
/// every time, so a new binary's page is seen at once).
fn serve(req: &HttpRequest, asset: &Asset) -> HttpResponse {
    let etag = asset.etag.as_str();
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, etag))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ));
    if fresh {
        response.finish()
    } else {
        response.content_type(asset.content_type).body(asset.body)
    }
}
