//! The web dashboard: a page and its script and styles, embedded in the binary (nothing is
//! fetched from the internet). The page uses only the public REST API and `/api/v1/events`.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse};
use axum::routing::get;

use super::auth::{Anyone, Guarded};

const INDEX: &str = include_str!("../../assets/dashboard/index.html");
const SCRIPT: &str = include_str!("../../assets/dashboard/app.js");
const STYLES: &str = include_str!("../../assets/dashboard/app.css");
const ICON: &str = include_str!("../../assets/dashboard/icon.svg");

/// The dashboard's routes.
pub fn router() -> Router<Guarded> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", STYLES) }))
        .route("/favicon.svg", get(|| async { asset("image/svg+xml", ICON) }))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    // Assets change with the binary: revalidate rather than cache for long.
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body)
}

/// Escapes text for an HTML attribute.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

async fn index(Anyone(state): Anyone) -> Html<String> {
    Html(INDEX.replace("{{RABBITMQ_UI_URL}}", &attribute(&state.rabbitmq_ui_url)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn attributes_are_escaped() {
        assert_eq!(
            super::attribute(r#"http://x/?a=1&b="2"<"#),
            "http://x/?a=1&amp;b=&quot;2&quot;&lt;"
        );
    }
}
