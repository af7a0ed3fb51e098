//! `/dashboard`: the rollout dashboard, static files embedded in the binary and served by
//! gatehouse itself (no CDN, nothing fetched at run time).
//!
//! The page is public; what it shows comes from the admin API, called by the browser with the
//! operator's admin token (kept in `sessionStorage`, sent as `Authorization: Bearer`; no
//! cookies, so no cross-site request can act with it). Every response of these routes, the
//! 404 of an unknown file included, carries [`DASHBOARD_CSP`] (`'self'` only, no inline script
//! or style, no `eval`), `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`;
//! files are revalidated on every load (`Cache-Control: no-cache` with an `ETag`, answered 304
//! when unchanged). The page uses relative URLs only (`dashboard.js`, `../v1/...`), so it also
//! works under a reverse proxy's path prefix. It is no API operation: it stays out of the
//! OpenAPI document, like `/docs`.
//!
//! Chart.js is vendored from npm under `dashboard/vendor/` (its `README.md` names the exact
//! version, the tarball's integrity and the file's sha256, which a test below checks).

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use tower::ServiceBuilder;
use tower_http::set_header::SetResponseHeaderLayer;

/// The dashboard's policy: its own scripts, styles and images and the API of the same origin;
/// nothing inline, no `eval`, no plugin, no form posted anywhere, no framing. (Chart.js sizes
/// its canvas through the CSSOM, which `style-src` does not govern.)
pub const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file, served at `/dashboard/{path}`.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the page is made of.
static ASSETS: &[Asset] = &[
    Asset {
        path: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("dashboard/index.html"),
    },
    Asset {
        path: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/dashboard.css"),
    },
    Asset {
        path: "dashboard.js",
        content_type: JS,
        body: include_bytes!("dashboard/dashboard.js"),
    },
    Asset {
        path: "api.js",
        content_type: JS,
        body: include_bytes!("dashboard/api.js"),
    },
    Asset {
        path: "dom.js",
        content_type: JS,
        body: include_bytes!("dashboard/dom.js"),
    },
    Asset {
        path: "panels.js",
        content_type: JS,
        body: include_bytes!("dashboard/panels.js"),
    },
    Asset {
        path: "decisions.js",
        content_type: JS,
        body: include_bytes!("dashboard/decisions.js"),
    },
    Asset {
        path: "actions.js",
        content_type: JS,
        body: include_bytes!("dashboard/actions.js"),
    },
    Asset {
        path: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("dashboard/icon.svg"),
    },
    Asset {
        path: "vendor/chart.umd.min.js",
        content_type: JS,
        body: include_bytes!("dashboard/vendor/chart.umd.min.js"),
    },
    Asset {
        path: "vendor/LICENSE.md",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("dashboard/vendor/LICENSE.md"),
    },
];

/// Each asset's `ETag` (a quoted prefix of its sha256), in [`ASSETS`] order, computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let tag = format!("\"{}\"", &hex(&Sha256::digest(asset.body))[..32]);
            HeaderValue::from_str(&tag).expect("hex digits in quotes are a header value")
        })
        .collect()
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /dashboard` (a redirect to `dashboard/`, relative, so a path prefix is kept),
/// `/dashboard/` (the page) and its files under `/dashboard/...`.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let header = |name, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    let headers = ServiceBuilder::new()
        .layer(header(header::CONTENT_SECURITY_POLICY, DASHBOARD_CSP))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
        .layer(header(header::CACHE_CONTROL, "no-cache"));
    Router::new()
        .route("/dashboard", get(|| async { Redirect::temporary("dashboard/") }))
        .route("/dashboard/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/dashboard/{*asset}",
            get(|Path(asset): Path<String>, headers: HeaderMap| async move { serve(&asset, &headers) }),
        )
        .layer(headers)
}

/// The file at `path`, 304 when the client's copy is current, or the problem+json 404.
fn serve(path: &str, request: &HeaderMap) -> Response {
    let Some(index) = ASSETS.iter().position(|a| a.path == path) else {
        return crate::http::ApiError::NotFound("no such file of the dashboard".into())
            .into_response();
    };
    let (asset, etag) = (&ASSETS[index], &ETAGS[index]);
    if is_current(request, etag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag.clone())]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, etag.clone()),
        ],
        asset.body,
    )
        .into_response()
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak tags compare as strong ones, as
/// RFC 9110 §13.1.2 has it for this header.
fn is_current(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let etag = etag.as_bytes();
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    /// The sha256 of the vendored `chart.umd.min.js` (Chart.js 4.6.1 from npm), as recorded in
    /// `dashboard/vendor/README.md`.
    const CHART_JS_SHA256: &str =
        "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2";

    fn asset(path: &str) -> &'static Asset {
        ASSETS.iter().find(|a| a.path == path).expect("an asset")
    }

    fn text(path: &str) -> &'static str {
        std::str::from_utf8(asset(path).body).expect("UTF-8")
    }

    #[test]
    fn the_vendored_chart_js_is_the_one_recorded() {
        let body = asset("vendor/chart.umd.min.js").body;
        assert_eq!(hex(&Sha256::digest(body)), CHART_JS_SHA256);
        let readme = include_str!("dashboard/vendor/README.md");
        assert!(
            readme.contains(CHART_JS_SHA256),
            "vendor/README.md records the same sha256"
        );
        assert!(readme.contains("4.6.1") && body.starts_with(b"/*!\n * Chart.js v4.6.1\n"));
        assert!(text("vendor/LICENSE.md").starts_with("The MIT License (MIT)"));
    }

    /// The page's own code keeps to what the policy allows, and never builds markup from data
    /// (caller-chosen user names reach these tables: an XSS would be an admin-token theft).
    #[test]
    fn no_inline_code_no_markup_from_strings() {
        let html = text("index.html");
        let lower = html.to_ascii_lowercase();
        for bad in [" style=", "javascript:", "<style"] {
            assert!(!lower.contains(bad), "index.html holds {bad:?}");
        }
        let attributes = regex::Regex::new(r"(?i)\son[a-z]+\s*=").expect("a pattern");
        assert!(
            !attributes.is_match(html),
            "an inline event handler in index.html"
        );
        let scripts = regex::Regex::new(r"(?i)<script(?P<attrs>[^>]*)>").expect("a pattern");
        for script in scripts.captures_iter(html) {
            assert!(
                script["attrs"].contains("src="),
                "an inline script: {}",
                &script[0]
            );
        }
        for js in ASSETS
            .iter()
            .filter(|a| a.content_type == JS && !a.path.starts_with("vendor/"))
        {
            let code = std::str::from_utf8(js.body).expect("UTF-8");
            for bad in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "setAttribute('style'",
                "localStorage",
                "document.cookie",
            ] {
                assert!(!code.contains(bad), "{} uses {bad}", js.path);
            }
        }
    }

    /// Every file the page names (`src`, `href`, module imports) is embedded.
    #[test]
    fn every_file_the_page_names_is_served() {
        let names =
            regex::Regex::new(r#"(?:src|href)="([^"]+)"|from '\./([^']+)'"#).expect("a pattern");
        let mut named = 0;
        for source in ASSETS.iter().filter(|a| {
            a.path == "index.html" || (a.content_type == JS && !a.path.starts_with("vendor/"))
        }) {
            let code = std::str::from_utf8(source.body).expect("UTF-8");
            for found in names.captures_iter(code) {
                let path = found.get(1).or(found.get(2)).expect("a group").as_str();
                if path.starts_with('#') || path.starts_with("../") || path.starts_with("https://")
                {
                    continue;
                }
                named += 1;
                assert!(
                    ASSETS.iter().any(|a| a.path == path),
                    "{} names {path}, not embedded",
                    source.path
                );
            }
        }
        assert!(
            named >= 6,
            "the page and its modules name their files: {named}"
        );
    }

    async fn get(path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        routes::<()>()
            .oneshot(request.body(Body::empty()).expect("a request"))
            .await
            .expect("infallible")
    }

    #[tokio::test]
    async fn files_have_their_type_headers_and_etags() {
        let redirect = get("/dashboard", &[]).await;
        assert_eq!(redirect.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(redirect.headers()[header::LOCATION], "dashboard/");
        for (path, content_type) in [
            ("/dashboard/", "text/html; charset=utf-8"),
            ("/dashboard/dashboard.css", "text/css; charset=utf-8"),
            ("/dashboard/vendor/chart.umd.min.js", JS),
            ("/dashboard/icon.svg", "image/svg+xml"),
        ] {
            let response = get(path, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let h = response.headers();
            assert_eq!(h[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], DASHBOARD_CSP);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            let etag = h[header::ETAG].to_str().expect("ASCII").to_owned();
            let again = get(path, &[("if-none-match", &format!("\"x\", W/{etag}"))]).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert_eq!(
                again.headers()[header::CONTENT_SECURITY_POLICY],
                DASHBOARD_CSP
            );
            let other = get(path, &[("if-none-match", "\"0000\"")]).await;
            assert_eq!(other.status(), StatusCode::OK, "{path}");
        }
        let missing = get("/dashboard/vendor/chart.umd.min.js.map", &[]).await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            missing.headers()[header::CONTENT_TYPE],
            crate::http::PROBLEM_JSON
        );
        assert_eq!(
            missing.headers()[header::CONTENT_SECURITY_POLICY],
            DASHBOARD_CSP
        );
    }
}
