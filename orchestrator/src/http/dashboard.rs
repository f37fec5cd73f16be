//! The web dashboard: a page and its script and styles, embedded in the binary (nothing is
//! fetched from the internet). The page uses only the public REST API and `/api/v1/events`.
//!
//! A debug build serves them from the folder `BOTLINE_DASHBOARD_DIR` names, read afresh at each
//! request, when it is set: whoever works on the page reloads it instead of rebuilding.

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
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", "app.js", SCRIPT) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", "app.css", STYLES) }),
        )
        .route("/favicon.svg", get(|| async { asset("image/svg+xml", "icon.svg", ICON) }))
}

fn asset(content_type: &'static str, name: &str, embedded: &'static str) -> impl IntoResponse {
    // Assets change with the binary: revalidate rather than cache for long.
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], file(name, embedded))
}

/// The asset `name`: the embedded copy, or in a debug build with `BOTLINE_DASHBOARD_DIR` set, the
/// file in that folder as it is now.
fn file(name: &str, embedded: &'static str) -> std::borrow::Cow<'static, str> {
    #[cfg(debug_assertions)]
    if let Some(dir) = std::env::var_os("BOTLINE_DASHBOARD_DIR") {
        match std::fs::read_to_string(std::path::Path::new(&dir).join(name)) {
            Ok(text) => return text.into(),
            Err(err) => {
                tracing::warn!(%err, name, "BOTLINE_DASHBOARD_DIR: serving the embedded copy")
            }
        }
    }
    let _ = name;
    embedded.into()
}

/// Escapes text for an HTML attribute.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

async fn index(Anyone(state): Anyone) -> Html<String> {
    Html(
        file("index.html", INDEX)
            .replace("{{RABBITMQ_UI_URL}}", &attribute(&state.rabbitmq_ui_url)),
    )
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
