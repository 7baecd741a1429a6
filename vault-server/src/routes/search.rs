//! Search: `GET /v1/search` for tenants, and the operator's index rebuild.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::extract::{OperatorOnTenant, QueryParams};
use super::jobs::Answer;
use crate::audit_note::NoteSlot;
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use vault_core::documents::DocumentKind;
use vault_core::jobs::{JobRecord, JobResult};
use vault_core::search::{self, ReconcileReport};

/// Largest page of hits.
const MAX_LIMIT: usize = 1000;

/// Query string of a search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The query: `field:value`, quoted values, `AND`, `OR`, `NOT`, parentheses,
    /// `service_month:[2024-01 TO 2024-03]`.
    #[param(min_length = 1)]
    pub q: String,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^-?[0-9]{1,18}\\.[0-9a-f]{32}$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// One search hit.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    /// Document id.
    pub id: String,
    /// Declared kind.
    pub kind: DocumentKind,
    /// Upload time (RFC 3339).
    pub uploaded_at: String,
}

/// A page of search results.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    /// Documents matching the query exactly, in all pages.
    pub total: u64,
    /// This page, newest first.
    pub hits: Vec<SearchHit>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// False when the replica that answered may lack some documents in its
    /// index (its last reconciliation left some out, or it is failing to
    /// follow other replicas' changes): every hit is still an exact match, but
    /// some matches may be missing. Retry later, or rebuild the index
    /// (`POST /v1/admin/tenants/{tenant}/index/rebuild`).
    pub complete: bool,
}

/// Searches the caller's tenant. Results are exact; the query is never logged.
#[utoipa::path(get, path = "/v1/search", params(SearchQuery),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn search(
    State(state): State<SharedState>,
    caller: Caller,
    note: NoteSlot,
    // Parsed after the role check (authorisation before parsing).
    params: Result<QueryParams<SearchQuery>, ApiError>,
) -> ApiResult<Json<SearchResponse>> {
    let tenant_id = caller.require_role(Role::Reader)?;
    let QueryParams(params) = params?;
    let tenant = state.vault.tenants.require_active(tenant_id).await?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let query = vault_index::query::Query::parse(&params.q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    note.update(|n| {
        n.fields = search::queried_fields(&query)
            .into_iter()
            .map(str::to_owned)
            .collect();
    });
    let page = state
        .vault
        .search
        .search(&tenant, &query, params.cursor.as_deref(), limit)
        .await?;
    tracing::info!(tenant = %tenant.id, fields = ?search::queried_fields(&query), total = page.total, "search");
    let hits = page
        .hits
        .into_iter()
        .map(|hit| SearchHit {
            kind: DocumentKind::parse(&hit.kind).unwrap_or(DocumentKind::Other),
            uploaded_at: OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(hit.uploaded_at_micros) * 1000,
            )
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default(),
            id: hit.id,
        })
        .collect();
    Ok(Json(SearchResponse {
        total: page.total,
        hits,
        next_cursor: page.next_cursor,
        complete: page.complete,
    }))
}

/// Empties a tenant's blind index and fills it again from the stored documents.
///
/// Runs as a job: the answer is its report once it finished, or at once `202`
/// with the job (`Prefer: respond-async`), followed at `GET /v1/admin/jobs/{id}`;
/// a client that goes away does not stop it.
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/index/rebuild",
    responses((status = 200, body = ReconcileReport), (status = 202, body = JobRecord, description = "with `Prefer: respond-async`: the job, to follow at `Location`"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rebuild(
    State(state): State<SharedState>,
    OperatorOnTenant(id): OperatorOnTenant,
    note: NoteSlot,
    headers: HeaderMap,
) -> ApiResult<Response> {
    crate::audit_trail::record_intent(&state, &note).await?;
    let started = state
        .vault
        .maintenance
        .rebuild_index(&id, &note.actor())
        .await?;
    let answer = super::jobs::answer(started, &headers, |result| match result {
        JobResult::Reconcile(report) => Some(report),
        _ => None,
    })
    .await?;
    if let Answer::Finished(report) = &answer {
        tracing::info!(tenant = %id, added = report.added, "index rebuilt on request");
    }
    Ok(answer.into_response())
}
