//! The page's files, compiled into the binary: plain HTML, CSS and ES modules from `cli/web/`
//! (no build step, nothing fetched from elsewhere).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Name, media type, contents.
const FILES: [(&str, &str, &str); 4] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "player.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/player.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
];

/// The file called `name`, or 404.
pub(super) fn page(name: &str) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, media_type, body)) => {
            ([(header::CONTENT_TYPE, *media_type)], *body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such page").into_response(),
    }
}
