//! The auditor's API: events by time and actor, the latest signed checkpoint, and
//! Merkle proofs. Tenant API keys need the `auditor` role and see their tenant;
//! operators name the tenant (`?tenant=`).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vault_crypto::TenantId;

use super::extract::{rfc3339_param, QueryParams};
use crate::audit_note::NoteSlot;
use crate::auth::{Caller, CredentialKind, OperatorRole, Role};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use vault_core::audit::read::{EventFilter, ProofResponse};
use vault_core::audit::AuditEvent;
use vault_core::audit::SYSTEM_LOG;
use vault_core::tenants::{parse_tenant_id, tenant_not_found};

/// Largest page of events.
const MAX_LIMIT: usize = 1000;

/// Query of `GET /v1/audit/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events at or after this RFC 3339 time.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only events before this RFC 3339 time.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Only events of this actor (`apikey:<id>`, `operator:<id>`).
    #[param(min_length = 1)]
    pub actor: Option<String>,
    /// From a previous page's `next_cursor`.
    #[param(pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The tenant (operators; default `system`, the system log).
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub tenant: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventsResponse {
    /// Events in log order.
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Query naming a tenant (operators only).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    /// The tenant (operators; default `system`, the system log).
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub tenant: Option<String>,
}

/// The latest checkpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckpointResponse {
    /// The signed checkpoint (text); save it to hold the log to it later.
    pub checkpoint: Option<String>,
    /// Segments covered.
    pub tree_size: u64,
    /// Events covered.
    pub events: u64,
    /// The vault's checkpoint public key (Ed25519, hex).
    pub public_key: String,
}

/// Query of `GET /v1/audit/proof`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ProofQuery {
    /// The event to prove.
    pub seq: u64,
    /// Tree size to prove against (default: the latest checkpoint).
    #[param(minimum = 1)]
    pub tree_size: Option<u64>,
    /// Also prove the tree at `tree_size` extends the tree at this size.
    #[param(minimum = 1)]
    pub old_size: Option<u64>,
    /// The tenant (operators; default `system`, the system log).
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub tenant: Option<String>,
}

/// Whether the caller may read audit logs at all, checked before its query
/// string is parsed: an API key without the auditor role gets 403 whatever the
/// query holds (authorisation before parsing).
fn may_read_audit(caller: &Caller) -> ApiResult<()> {
    match caller.kind {
        CredentialKind::ApiKey => caller.require_role(Role::Auditor).map(|_| ()),
        CredentialKind::Operator => caller.require_operator_role(OperatorRole::Auditor),
    }
}

/// The tenant whose log the caller may read.
async fn audited_tenant(
    state: &SharedState,
    caller: &Caller,
    note: &NoteSlot,
    requested: Option<&str>,
) -> ApiResult<TenantId> {
    let tenant = match caller.kind {
        CredentialKind::Operator => {
            // Operators read the system log unless they name a tenant.
            let tenant = parse_tenant_id(requested.unwrap_or(SYSTEM_LOG))?;
            if tenant.as_str() != SYSTEM_LOG && state.vault.tenants.get(&tenant).await?.is_none() {
                return Err(tenant_not_found(&tenant).into());
            }
            tenant
        }
        CredentialKind::ApiKey => {
            let own = caller.require_role(Role::Auditor)?;
            // A key reads its own tenant's log; naming it is allowed, naming
            // another is not (and a malformed name is malformed either way).
            if let Some(raw) = requested {
                if parse_tenant_id(raw)? != *own {
                    return Err(ApiError::forbidden(
                        "an API key reads only its own tenant's audit log",
                    ));
                }
            }
            own.clone()
        }
    };
    // Reading a log is recorded in that log.
    note.update(|n| n.tenant = Some(tenant.clone()));
    Ok(tenant)
}

/// Reads a tenant's audit events.
#[utoipa::path(get, path = "/v1/audit/events", params(EventsQuery),
    responses((status = 200, body = EventsResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<SharedState>,
    caller: Caller,
    note: NoteSlot,
    query: Result<QueryParams<EventsQuery>, ApiError>,
) -> ApiResult<Json<EventsResponse>> {
    may_read_audit(&caller)?;
    let QueryParams(query) = query?;
    let tenant = audited_tenant(&state, &caller, &note, query.tenant.as_deref()).await?;
    let since = rfc3339_param(query.since.as_deref(), "since")?;
    let until = rfc3339_param(query.until.as_deref(), "until")?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    if query.actor.as_deref() == Some("") {
        return Err(ApiError::bad_request(
            "invalid_query",
            "actor must not be empty",
        ));
    }
    let after_seq = match &query.cursor {
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            ApiError::bad_request("invalid_cursor", "cursor is not one this server gave")
        })?),
        None => None,
    };
    let page = state
        .vault
        .audit
        .read_events(
            &tenant,
            EventFilter {
                since,
                until,
                actor: query.actor,
                after_seq,
            },
            limit,
        )
        .await?;
    Ok(Json(EventsResponse {
        next_cursor: page.next_cursor.map(|s| s.to_string()),
        events: page.events,
    }))
}

/// Writes a checkpoint if the log grew, and returns the latest.
#[utoipa::path(get, path = "/v1/audit/checkpoint", params(TenantQuery),
    responses((status = 200, body = CheckpointResponse), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn checkpoint(
    State(state): State<SharedState>,
    caller: Caller,
    note: NoteSlot,
    query: Result<QueryParams<TenantQuery>, ApiError>,
) -> ApiResult<Json<CheckpointResponse>> {
    may_read_audit(&caller)?;
    let QueryParams(query) = query?;
    let tenant = audited_tenant(&state, &caller, &note, query.tenant.as_deref()).await?;
    let latest = state.vault.audit.checkpoint_now(&tenant).await?;
    let tree_size = match &latest {
        Some(stored) => {
            stored
                .verify(&state.vault.audit.signer.public, &tenant)?
                .checkpoint
                .tree_size
        }
        None => 0,
    };
    Ok(Json(CheckpointResponse {
        tree_size,
        events: latest.as_ref().map_or(0, |c| c.events),
        checkpoint: latest.map(|c| c.signed),
        public_key: state.vault.audit.signer.public.to_hex(),
    }))
}

/// Proves an event's segment is in the log (and the log only grew).
#[utoipa::path(get, path = "/v1/audit/proof", params(ProofQuery),
    responses((status = 200, body = ProofResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn proof(
    State(state): State<SharedState>,
    caller: Caller,
    note: NoteSlot,
    query: Result<QueryParams<ProofQuery>, ApiError>,
) -> ApiResult<Json<ProofResponse>> {
    may_read_audit(&caller)?;
    let QueryParams(query) = query?;
    let tenant = audited_tenant(&state, &caller, &note, query.tenant.as_deref()).await?;
    let proof = state
        .vault
        .audit
        .prove(&tenant, query.seq, query.tree_size, query.old_size)
        .await?;
    Ok(Json(proof))
}
