//! The web dashboard at `/ui/`.
//!
//! The page is a small Preact application (`apiserver/ui/`), bundled by esbuild from the
//! npm registry's packages when this crate is built (`build.rs`) and embedded into the
//! binary: three files, served from memory, so a running cluster needs nothing more.
//!
//! The page talks only to the Kubernetes API of the same origin, as its user:
//! list-then-watch of nodes, pods, workloads, services, endpoints, events and leases;
//! `metrics.k8s.io` for usage; `pods/log` for logs; the `scale` subresource and DELETE for
//! the Deployment actions. It holds no privilege of its own, so a user sees and does what
//! RBAC lets them, and a refusal shows upstream's 403 message.
//!
//! Two things are the dashboard's own:
//! - The static files (`/ui/`, `/ui/app.js`, `/ui/app.css`) are served without
//!   credentials ([`is_public`]): a browser has no client certificate to show, so the
//!   page asks for a bearer token (or runs behind `kubectl proxy`, which adds the
//!   kubeconfig's credentials). They carry no data.
//! - `GET /ui/api/controlplane`: the store cluster as the member this API server reads
//!   from sees it, with each member's own raft state, asked over the peer connections
//!   (within 1 s each; one that does not answer shows why) when the store is local
//!   ([`crate::storage::ClusterStatus`]). A non-resource URL authorized by RBAC like any
//!   other (cluster-admin's `*` covers it; `system:monitoring` grants it). The page polls
//!   it every 2 s: members, leader, term and indexes are not objects that could be
//!   watched.
//!
//! Every response carries a strict Content-Security-Policy (the bundle has no inline
//! script or style and loads nothing from elsewhere) and refuses to be framed, since the
//! page can delete things.
//!
//! Left out: other members' own indexes (each member knows its own; the leader's view
//! of its followers' progress is not exposed by the store), editing objects other than
//! scaling and deleting Deployments, and exec.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

use crate::error::ApiError;
use crate::handlers::Api;
use crate::http::json_response;

/// Where the dashboard lives.
pub const PREFIX: &str = "/ui";
/// The control plane status the page polls.
pub const CONTROLPLANE_PATH: &str = "/ui/api/controlplane";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        path: "/ui/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/ui/index.html")),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/ui/app.js")),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/ui/app.css")),
    },
];

/// Whether this build carries the real dashboard (`false` when it was built without
/// npm and embeds a page that says so).
pub const BUNDLED: bool = option_env!("CAPSTAN_UI_PLACEHOLDER").is_none();

const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Whether `path` is one of the static files, served without credentials.
pub fn is_public(path: &str) -> bool {
    path == PREFIX || ASSETS.iter().any(|a| a.path == path)
}

/// The dashboard's routes, merged into the API's router.
pub fn routes() -> Router<Arc<Api>> {
    let mut router = Router::new()
        .route(PREFIX, get(|| async { Redirect::permanent("/ui/") }))
        .route(
            CONTROLPLANE_PATH,
            get(|State(api): State<Arc<Api>>| async move {
                let status = match api.storage.cluster_status().await {
                    Ok(status) => status,
                    Err(e) => return e.into_response(),
                };
                match serde_json::to_value(&status) {
                    Ok(v) => with_headers(json_response(StatusCode::OK, &v), "no-store"),
                    Err(e) => ApiError::Internal(format!("encoding the control plane status: {e}")).into_response(),
                }
            }),
        );
    for asset in &ASSETS {
        router = router.route(
            asset.path,
            get(move || async move {
                let mut r = (StatusCode::OK, Body::from(asset.body)).into_response();
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
                // Revalidated: a new binary may serve a new bundle at the same URL.
                with_headers(r, "no-cache")
            }),
        );
    }
    router
}

/// The headers every dashboard response carries.
fn with_headers(mut r: Response, cache: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_static_files_are_public() {
        for p in ["/ui", "/ui/", "/ui/app.js", "/ui/app.css"] {
            assert!(is_public(p), "{p}");
        }
        for p in [
            CONTROLPLANE_PATH,
            "/ui/other",
            "/ui/app.js/x",
            "/uix",
            "/",
            "/api/v1/pods",
        ] {
            assert!(!is_public(p), "{p}");
        }
    }

    #[test]
    fn the_page_loads_its_bundle_by_relative_urls() {
        let html = std::str::from_utf8(ASSETS[0].body).expect("utf-8 page");
        if BUNDLED {
            assert!(html.contains("app.js") && html.contains("app.css"), "{html}");
            assert!(!html.contains("=\"/"), "an absolute URL: {html}");
            assert!(!ASSETS[1].body.is_empty(), "an empty bundle");
        } else {
            assert!(html.contains("npm"), "{html}");
        }
    }
}
