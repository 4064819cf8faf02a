//! The web page: plain HTML, CSS and JavaScript compiled into the binary,
//! so the dashboard is one file with nothing to build or install beside it.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::api::AppState;

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const STYLE_CSS: &str = include_str!("static/style.css");

/// Scripts and styles only from the dashboard itself, nothing inline, no
/// frames: event text from scripts in a guest can never run as code.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
}

/// One embedded file; revalidated on every load so an upgraded dashboard
/// is never paired with an old script.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(INDEX_HTML.contains(r#"<script src="/app.js"></script>"#));
        assert!(INDEX_HTML.contains(r#"href="/style.css""#));
        assert!(!INDEX_HTML.contains("<script>"), "no inline script: the CSP forbids it");
        assert!(!APP_JS.contains("innerHTML"), "event text is set as text, never as HTML");
    }
}
