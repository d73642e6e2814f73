//! The console's page, style and scripts, embedded in the binary from `crates/ecsd/console`
//! (plain ES modules, no build step: nothing is fetched at run time, and it works offline),
//! served with a content security policy that lets the page load nothing but these.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $content_type:expr),* $(,)?) => {
        &[$(Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../../console/", $path)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = assets![
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "app.js" => JS,
    "api.js" => JS,
    "dom.js" => JS,
    "live.js" => JS,
    "charts.js" => JS,
    "views/signin.js" => JS,
    "views/clusters.js" => JS,
    "views/cluster.js" => JS,
    "views/service.js" => JS,
    "views/task.js" => JS,
    "views/instance.js" => JS,
    "views/taskdefs.js" => JS,
];

/// The page loads its own scripts and styles and talks to its own origin, nothing else, and is
/// never framed.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn serve(asset: &Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /console/`: the page.
pub async fn index() -> Response {
    serve(&ASSETS[0])
}

/// `GET /console/assets/{path}`.
pub async fn file(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => serve(asset),
        None => (StatusCode::NOT_FOUND, "no such console asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the console's folder is served, and nothing else.
    #[test]
    fn every_console_file_is_embedded() {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(path.strip_prefix(base).unwrap().to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut files = Vec::new();
        walk(&base, &base, &mut files);
        files.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        served.sort();
        assert_eq!(files, served);
    }

    #[tokio::test]
    async fn assets_are_served_with_their_type_and_a_strict_policy() {
        let response = file(Path("views/task.js".into())).await;
        assert_eq!(response.headers()[header::CONTENT_TYPE], JS);
        assert!(response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        let missing = file(Path("../Cargo.toml".into())).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }
}
