//! API documentation pages that work with no internet: Swagger UI at
//! `/docs` (assets from `utoipa-swagger-ui`'s `vendored` feature) and ReDoc
//! at `/redoc`, a page of our own loading `redoc.standalone.js` vendored from
//! the npm package `redoc` (see `assets/README.md`). Neither page loads fonts
//! or scripts from anywhere but this server.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

/// The vendored ReDoc bundle.
static REDOC_JS: &[u8] = include_bytes!("../../assets/redoc.standalone.js");

/// The ReDoc page: system fonts, the local bundle, the local document.
const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>aiopslab API — ReDoc</title>
    <style>body { margin: 0; padding: 0; }</style>
  </head>
  <body>
    <redoc spec-url="/openapi.json"
      theme='{"typography": {"fontFamily": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "headings": {"fontFamily": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"}, "code": {"fontFamily": "ui-monospace, Menlo, Consolas, monospace"}}}'></redoc>
    <script src="/redoc/redoc.standalone.js"></script>
  </body>
</html>
"#;

/// The ReDoc page.
#[utoipa::path(
    get, path = "/redoc", tag = "docs",
    responses((status = 200, description = "The ReDoc page", body = String, content_type = "text/html"))
)]
pub async fn redoc_page() -> Html<&'static str> {
    Html(REDOC_PAGE)
}

/// The vendored ReDoc script.
#[utoipa::path(
    get, path = "/redoc/redoc.standalone.js", tag = "docs",
    responses((status = 200, description = "ReDoc's standalone bundle", body = String, content_type = "application/javascript"))
)]
pub async fn redoc_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS,
    )
        .into_response()
}
