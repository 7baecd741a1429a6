//! The HTTP router, built from the endpoint table (`endpoint.rs`), and its
//! middleware.

mod admin;
mod audit;
mod backups;
mod documents;
mod extract;
mod health;
mod jobs;
mod keys;
pub mod openapi;
mod operators;
mod search;
#[cfg(test)]
mod tests;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodRouter};
use axum::Router;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::trace::TraceLayer;

use crate::endpoint::Endpoint;
use crate::error::ApiError;
use crate::limits::Budget;
use crate::request_id::{checked_request_id, request_id_of, REQUEST_ID_HEADER};
use crate::state::SharedState;
use vault_core::metrics::RequestLabels;

/// Every answer is `Cache-Control: no-store` unless its handler said otherwise:
/// they hold tenant data or its metadata, which no cache may keep.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Gives the JSON error envelope to the error answers axum makes itself, which
/// have no body: 404 for a path no endpoint has, 405 for a method its endpoints
/// do not take (keeping its `Allow` header).
async fn envelope_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    if !is_error || response.headers().contains_key(CONTENT_TYPE) {
        return response;
    }
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (
            "not_found",
            "no endpoint has this path (see /v1/openapi.json)",
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take this method (see the Allow header)",
        ),
        _ => ("error", status.canonical_reason().unwrap_or("error")),
    };
    let allow = response.headers().get(ALLOW).cloned();
    let mut answer = ApiError::new(status, code, message).into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(ALLOW, allow);
    }
    answer
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

/// The handler of each endpoint: the router is built from the table, and an
/// endpoint without a handler does not compile.
fn handler(endpoint: Endpoint) -> MethodRouter<SharedState> {
    let method = endpoint.verb().filter();
    match endpoint {
        Endpoint::Healthz => on(method, health::healthz),
        Endpoint::Readyz => on(method, health::readyz),
        Endpoint::Metrics => on(method, health::metrics),
        Endpoint::OpenApi => on(method, openapi::serve),
        Endpoint::CreateTenant => on(method, admin::create_tenant),
        Endpoint::ListTenants => on(method, admin::list_tenants),
        Endpoint::GetTenant => on(method, admin::get_tenant),
        Endpoint::DisableTenant => on(method, admin::disable_tenant),
        Endpoint::EnableTenant => on(method, admin::enable_tenant),
        Endpoint::IssueApiKey => on(method, admin::issue_api_key),
        Endpoint::ListApiKeys => on(method, admin::list_api_keys),
        Endpoint::RevokeApiKey => on(method, admin::revoke_api_key),
        Endpoint::RotateOperator => on(method, admin::rotate_operator),
        Endpoint::ListOperators => on(method, operators::list_operators),
        Endpoint::AddOperator => on(method, operators::add_operator),
        Endpoint::DisableOperator => on(method, operators::disable_operator),
        Endpoint::EnableOperator => on(method, operators::enable_operator),
        Endpoint::RemoveOperator => on(method, operators::remove_operator),
        Endpoint::EnrollMfa => on(method, operators::enroll_mfa),
        Endpoint::ConfirmMfa => on(method, operators::confirm_mfa),
        Endpoint::ResetOperatorMfa => on(method, operators::reset_operator_mfa),
        Endpoint::ListBackups => on(method, backups::list),
        Endpoint::StartBackup => on(method, backups::start),
        Endpoint::PruneBackups => on(method, backups::prune),
        Endpoint::BackupPublicKey => on(method, backups::public_key),
        Endpoint::HoldBackup => on(method, backups::hold),
        Endpoint::ReleaseBackup => on(method, backups::release),
        Endpoint::RecordDrill => on(method, backups::record_drill),
        Endpoint::ListJobs => on(method, jobs::list),
        Endpoint::ShowJob => on(method, jobs::show),
        Endpoint::CancelJob => on(method, jobs::cancel),
        Endpoint::RotateKeys => on(method, keys::rotate),
        Endpoint::RewrapKeys => on(method, keys::rewrap),
        Endpoint::RotateIndexKey => on(method, keys::rotate_index),
        Endpoint::RebuildIndex => on(method, search::rebuild),
        Endpoint::OffboardTenant => on(method, keys::offboard),
        Endpoint::SetRetention => on(method, keys::set_retention),
        Endpoint::HoldDocument => on(method, keys::hold),
        Endpoint::ReleaseDocument => on(method, keys::release),
        Endpoint::UploadDocument => on(method, documents::upload),
        Endpoint::ListDocuments => on(method, documents::list),
        Endpoint::DownloadDocument => on(method, documents::download),
        Endpoint::DeleteDocument => on(method, documents::delete),
        Endpoint::DocumentMetadata => on(method, documents::metadata),
        Endpoint::Search => on(method, search::search),
        Endpoint::AuditEvents => on(method, audit::events),
        Endpoint::AuditCheckpoint => on(method, audit::checkpoint),
        Endpoint::AuditProof => on(method, audit::proof),
    }
}

/// Puts the endpoint a request matched in its extensions, for the middleware
/// inside (time budget, audit). A request that matched none (no route, or a
/// method its route does not take) has none.
async fn identify_endpoint(mut request: Request) -> Request {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|route| Endpoint::find(request.method(), route.as_str()));
    if let Some(endpoint) = endpoint {
        request.extensions_mut().insert(endpoint);
    }
    request
}

fn build(state: SharedState, audit: Audit) -> Router {
    let request_id = axum::http::HeaderName::from_static(REQUEST_ID_HEADER);
    let routes = Endpoint::ALL
        .iter()
        .fold(Router::new(), |routes, &endpoint| {
            routes.route(endpoint.path(), handler(endpoint))
        });
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
        .merge(api_docs())
        // Outside the audit middleware: a request over its budget is answered 408
        // without waiting further (for its audit event either).
        .layer(middleware::from_fn_with_state(state.clone(), limit_time))
        // Outside the time budget and the audit: both read the matched endpoint.
        .layer(middleware::map_request(identify_endpoint))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(middleware::map_response(no_store))
        .layer(middleware::map_response(envelope_bare_errors))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // Route templates and request ids only: paths hold no PHI, but query
            // strings (search) might, so they are never logged.
            let id = request_id_of(req);
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

/// Swagger UI at `/docs`, reading `/v1/openapi.json`: public, like the document
/// it shows; its files come from the vendored release inside the crate, and no
/// part of a request is written into the page.
fn api_docs() -> Router<SharedState> {
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::from("/v1/openapi.json"))
        .into()
}

/// Answers 408 `request_timeout` when the handler (for an upload: reading the
/// whole body) takes longer than its endpoint's budget (a request that matched no
/// endpoint has the JSON endpoints'). A download's body, streamed after the handler
/// returned, is bounded by `limits::guard_stream`.
async fn limit_time(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let budget = request
        .extensions()
        .get::<Endpoint>()
        .map_or(Budget::Request, |endpoint| endpoint.budget())
        .duration(&state.vault.config.limits);
    match tokio::time::timeout(budget, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request did not finish within {} seconds",
                budget.as_secs()
            ),
        )
        .into_response(),
    }
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
