//! The HTTP router.

mod admin;
mod audit;
mod backups;
mod documents;
mod extract;
mod health;
mod jobs;
mod keys;
pub mod openapi;
mod search;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::trace::TraceLayer;

use crate::state::SharedState;
use vault_core::metrics::RequestLabels;

/// Header carrying the request id (set when absent or unacceptable, echoed in the
/// response).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client request id accepted.
const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's request id may be kept: 1 to 64 of `A-Z a-z 0-9 . _ -`.
/// Anything else is replaced before it is logged, audited or echoed.
pub fn is_acceptable_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Keeps one acceptable `X-Request-Id`, else sets a new random one.
async fn checked_request_id(mut request: Request) -> Request {
    let mut ids = request.headers().get_all(REQUEST_ID_HEADER).iter();
    let keep = match (ids.next(), ids.next()) {
        (Some(id), None) => id.to_str().is_ok_and(is_acceptable_request_id),
        _ => false,
    };
    if !keep {
        if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            request.headers_mut().insert(REQUEST_ID_HEADER, id);
        }
    }
    request
}

/// Every answer is `Cache-Control: no-store` unless its handler said otherwise:
/// they hold tenant data or its metadata, which no cache may keep.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Builds the router with its middleware.
pub fn router(state: SharedState) -> Router {
    build(state, Audit::Record)
}

/// The same router without the audit middleware, to measure what auditing costs
/// (`benches/audit.rs`). Only compiled with the `unaudited-bench` feature, which
/// the server binary never enables.
#[cfg(feature = "unaudited-bench")]
pub fn router_without_audit_for_benchmarks(state: SharedState) -> Router {
    build(state, Audit::Skip)
}

#[derive(PartialEq, Eq)]
enum Audit {
    Record,
    #[cfg_attr(not(feature = "unaudited-bench"), allow(dead_code))]
    Skip,
}

fn build(state: SharedState, audit: Audit) -> Router {
    let request_id = axum::http::HeaderName::from_static(REQUEST_ID_HEADER);
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/openapi.json", get(openapi::serve))
        .route(
            "/v1/admin/tenants",
            post(admin::create_tenant).get(admin::list_tenants),
        )
        .route("/v1/admin/tenants/{tenant}", get(admin::get_tenant))
        .route(
            "/v1/admin/tenants/{tenant}/disable",
            post(admin::disable_tenant),
        )
        .route(
            "/v1/admin/tenants/{tenant}/api-keys",
            post(admin::issue_api_key).get(admin::list_api_keys),
        )
        .route("/v1/admin/api-keys/{id}", delete(admin::revoke_api_key))
        .route("/v1/admin/operator/rotate", post(admin::rotate_operator))
        .route("/v1/admin/backups", get(backups::list).post(backups::start))
        .route("/v1/admin/backups/prune", post(backups::prune))
        .route("/v1/admin/backups/public-key", get(backups::public_key))
        .route(
            "/v1/admin/backups/{id}/hold",
            post(backups::hold).delete(backups::release),
        )
        .route("/v1/admin/drills", post(backups::record_drill))
        .route("/v1/admin/jobs", get(jobs::list))
        .route("/v1/admin/jobs/{id}", get(jobs::show))
        .route("/v1/admin/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/admin/tenants/{tenant}/keys/rotate", post(keys::rotate))
        .route("/v1/admin/tenants/{tenant}/keys/rewrap", post(keys::rewrap))
        .route(
            "/v1/admin/tenants/{tenant}/index/rotate",
            post(keys::rotate_index),
        )
        .route("/v1/admin/tenants/{tenant}/offboard", post(keys::offboard))
        .route(
            "/v1/admin/tenants/{tenant}/retention",
            axum::routing::put(keys::set_retention),
        )
        .route(
            "/v1/admin/tenants/{tenant}/documents/{id}/hold",
            post(keys::hold).delete(keys::release),
        )
        .route(
            "/v1/documents",
            post(documents::upload).get(documents::list),
        )
        .route(
            "/v1/documents/{id}",
            get(documents::download).delete(documents::delete),
        )
        .route("/v1/documents/{id}/metadata", get(documents::metadata))
        .route("/v1/search", get(search::search))
        .route("/v1/audit/events", get(audit::events))
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/audit/proof", get(audit::proof))
        .route(
            "/v1/admin/tenants/{tenant}/index/rebuild",
            post(search::rebuild),
        );
    let routes = if audit == Audit::Record {
        // Innermost: the audit event is durable before the answer leaves.
        routes.layer(middleware::from_fn_with_state(
            state.clone(),
            crate::audit_trail::record,
        ))
    } else {
        routes
    };
    routes
        // Outside the audit middleware: a request over its budget is answered 408
        // without waiting further (for its audit event either).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::limits::limit_time,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(middleware::map_response(no_store))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // Route templates and request ids only: paths hold no PHI, but query
            // strings (search) might, so they are never logged.
            let id = req
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |m| m.as_str());
            tracing::info_span!("request", method = %req.method(), route, request_id = id)
        }))
        .layer(PropagateRequestIdLayer::new(request_id))
        // Outermost: nothing sees a client's request id before it is checked.
        .layer(middleware::map_request(checked_request_id))
        .with_state(state)
}

async fn record_metrics(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = RequestLabels {
        route,
        status: response.status().as_u16(),
    };
    state.vault.metrics.requests.get_or_create(&labels).inc();
    state
        .vault
        .metrics
        .latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_short_and_plain() {
        for good in [
            "abc",
            "req-42",
            "a.b_c-D",
            &"x".repeat(64),
            "550e8400-e29b-41d4-a716-446655440000",
        ] {
            assert!(is_acceptable_request_id(good), "{good}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a b",
            "a/b",
            "<script>",
            "id\u{e9}",
            "a\"b",
            "a;b",
        ] {
            assert!(!is_acceptable_request_id(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_unacceptable_or_repeated_request_id_is_replaced() {
        let with = |ids: &[&str]| {
            let mut request = Request::new(axum::body::Body::empty());
            for id in ids {
                request
                    .headers_mut()
                    .append(REQUEST_ID_HEADER, HeaderValue::from_str(id).unwrap());
            }
            request
        };
        let kept = checked_request_id(with(&["client-1"])).await;
        assert_eq!(kept.headers()[REQUEST_ID_HEADER], "client-1");
        for ids in [
            &["x".repeat(100)][..],
            &["a b".to_owned()],
            &["a".to_owned(), "b".to_owned()],
            &[],
        ] {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let replaced = checked_request_id(with(&ids)).await;
            let values: Vec<_> = replaced
                .headers()
                .get_all(REQUEST_ID_HEADER)
                .iter()
                .collect();
            assert_eq!(values.len(), 1);
            let id = values[0].to_str().unwrap();
            assert!(is_acceptable_request_id(id) && !ids.contains(&id), "{id}");
        }
    }
}
