//! The HTTP router.

mod admin;
mod audit;
mod backups;
mod documents;
mod extract;
mod health;
mod keys;
pub mod openapi;
mod search;

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::metrics::RequestLabels;
use crate::state::SharedState;

/// Header carrying the request id (set when absent, echoed in the response).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

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
        .route("/v1/admin/backups", get(backups::list).post(backups::start))
        .route("/v1/admin/backups/prune", post(backups::prune))
        .route("/v1/admin/backups/public-key", get(backups::public_key))
        .route(
            "/v1/admin/backups/{id}/hold",
            post(backups::hold).delete(backups::release),
        )
        .route("/v1/admin/drills", post(backups::record_drill))
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
            crate::audit::middleware::record,
        ))
    } else {
        routes
    };
    routes
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
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
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(3600),
        ))
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
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
