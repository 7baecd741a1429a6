//! Operator endpoints under `/v1/admin/operators`: named operators, their
//! roles and credentials (`vault_core::operators`). Admins only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::extract::{JsonBody, Operator};
use crate::audit_note::NoteSlot;
use crate::audit_trail::record_intent;
use crate::auth::{mfa_refused, CredentialRecord, OperatorRole};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use vault_api::json::optional_whole_number;
use vault_core::credentials::OperatorProfile;
use vault_core::operators::{self, Change};

/// Body of `POST /v1/admin/operators`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddOperator {
    /// The operator's name: 1-63 of `a-z 0-9 . _ -`, starting with a letter;
    /// unique; `bootstrap` is taken.
    #[schema(pattern = "^[a-z][a-z0-9._-]{0,62}$")]
    pub name: String,
    /// Any non-empty subset of `admin`, `key-officer`, `backup-operator`, `auditor`.
    #[schema(min_items = 1)]
    pub roles: Vec<OperatorRole>,
    /// Days until the credential expires (1 to 3650); none means no expiry.
    #[serde(default, deserialize_with = "optional_whole_number")]
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u32>,
}

/// A new operator: the secret is shown only here.
#[derive(Serialize, ToSchema)]
pub struct AddedOperator {
    /// Public id of the operator's credential.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Bearer token. Shown once; hand it to the operator over a safe channel.
    pub secret: String,
    /// Its roles.
    pub roles: Vec<OperatorRole>,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
}

/// An operator as listed: never its secret or its hash.
#[derive(Serialize, ToSchema)]
pub struct ListedOperator {
    /// Public id of its credential (audit events name it: `operator:<id>`).
    pub id: String,
    /// Its name (`bootstrap` for the vault's first operator).
    pub name: String,
    /// Its roles.
    pub roles: Vec<OperatorRole>,
    /// Issue time.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// When it was disabled (refused until enabled).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disabled_at: Option<OffsetDateTime>,
    /// When it was removed (or its credential rotated away).
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<OffsetDateTime>,
    /// The credential a rotation replaced this one with.
    pub rotated_to: Option<String>,
    /// Whether the operator has enrolled a second factor (TOTP).
    pub mfa_enrolled: bool,
}

impl ListedOperator {
    async fn of(state: &SharedState, record: CredentialRecord) -> ApiResult<ListedOperator> {
        let profile = record
            .operator_profile()
            .unwrap_or_else(OperatorProfile::bootstrap);
        let mfa = state.vault.mfa.status(&profile.name).await?;
        Ok(ListedOperator {
            id: record.id,
            name: profile.name,
            roles: profile.roles,
            created_at: record.created_at,
            expires_at: record.expires_at,
            disabled_at: record.disabled_at,
            revoked_at: record.revoked_at,
            rotated_to: record.rotated_to,
            mfa_enrolled: mfa.enrolled,
        })
    }
}

/// Lists the operators (removed ones and rotated-away credentials included),
/// oldest first.
#[utoipa::path(get, path = "/v1/admin/operators",
    responses((status = 200, body = [ListedOperator])),
    security(("bearer" = [])))]
pub async fn list_operators(
    State(state): State<SharedState>,
    _operator: Operator,
) -> ApiResult<Json<Vec<ListedOperator>>> {
    let mut records = operators::all(state.vault.store.as_ref()).await?;
    records.sort_by_key(|r| r.created_at);
    let mut listed = Vec::with_capacity(records.len());
    for record in records {
        listed.push(ListedOperator::of(&state, record).await?);
    }
    Ok(Json(listed))
}

/// Adds a named operator with its roles and issues its credential.
#[utoipa::path(post, path = "/v1/admin/operators", request_body = AddOperator,
    responses((status = 201, body = AddedOperator), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_operator(
    State(state): State<SharedState>,
    _operator: Operator,
    note: NoteSlot,
    JsonBody(body): JsonBody<AddOperator>,
) -> ApiResult<(StatusCode, Json<AddedOperator>)> {
    let name = operators::parse_name(&body.name)?;
    note.update(|n| n.detail = Some(format!("operator_name={name}")));
    record_intent(&state, &note).await?;
    let issued = operators::add(
        &state.vault.store,
        &state.vault.holder,
        &name,
        body.roles,
        body.expires_in_days,
        OffsetDateTime::now_utc(),
    )
    .await?;
    let profile = issued
        .record
        .operator_profile()
        .unwrap_or_else(OperatorProfile::bootstrap);
    tracing::info!(operator = %issued.record.id, name = %profile.name, "operator added");
    note.update(|n| {
        n.detail = Some(format!(
            "operator={} operator_name={name}",
            issued.record.id
        ))
    });
    Ok((
        StatusCode::CREATED,
        Json(AddedOperator {
            id: issued.record.id.clone(),
            name: profile.name,
            secret: issued.token.to_string(),
            roles: profile.roles,
            expires_at: issued.record.expires_at,
        }),
    ))
}

async fn change_operator(
    state: &SharedState,
    note: &NoteSlot,
    id: &str,
    change: Change,
) -> ApiResult<Json<ListedOperator>> {
    // Checked before anything records it: a raw path value never reaches the log.
    check_id(id)?;
    note.update(|n| n.detail = Some(format!("operator={id}")));
    record_intent(state, note).await?;
    let record = operators::change(
        &state.vault.store,
        &state.vault.holder,
        id,
        change,
        OffsetDateTime::now_utc(),
    )
    .await?;
    tracing::info!(operator = %id, change = ?change, "operator changed");
    Ok(Json(ListedOperator::of(state, record).await?))
}

/// Disables an operator: its credential is refused until enabled. The last
/// usable admin cannot be disabled.
#[utoipa::path(post, path = "/v1/admin/operators/{id}/disable",
    responses((status = 200, body = ListedOperator), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn disable_operator(
    State(state): State<SharedState>,
    _operator: Operator,
    note: NoteSlot,
    Path(id): Path<String>,
) -> ApiResult<Json<ListedOperator>> {
    change_operator(&state, &note, &id, Change::Disable).await
}

/// Enables a disabled operator again (not a removed one).
#[utoipa::path(post, path = "/v1/admin/operators/{id}/enable",
    responses((status = 200, body = ListedOperator), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn enable_operator(
    State(state): State<SharedState>,
    _operator: Operator,
    note: NoteSlot,
    Path(id): Path<String>,
) -> ApiResult<Json<ListedOperator>> {
    change_operator(&state, &note, &id, Change::Enable).await
}

/// Removes an operator for good: its credential is revoked and its name free
/// again. The last usable admin cannot be removed.
#[utoipa::path(delete, path = "/v1/admin/operators/{id}",
    responses((status = 200, body = ListedOperator), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_operator(
    State(state): State<SharedState>,
    _operator: Operator,
    note: NoteSlot,
    Path(id): Path<String>,
) -> ApiResult<Json<ListedOperator>> {
    change_operator(&state, &note, &id, Change::Remove).await
}

/// A new MFA enrolment: shown once.
#[derive(Serialize, ToSchema)]
pub struct MfaEnrollment {
    /// `otpauth://totp/...`: for an authenticator app (as a QR code). Holds the
    /// secret: shown only here.
    pub otpauth_uri: String,
    /// The secret in base32, for typing into an authenticator by hand.
    pub secret: String,
}

/// Starts the caller's MFA enrolment: a new TOTP secret (sealed at rest),
/// shown once. It counts only once confirmed with a first code; enrolling
/// again before that replaces it. Refused (409 `mfa_already_enrolled`) once
/// confirmed: an admin resets a lost authenticator first.
#[utoipa::path(post, path = "/v1/admin/operator/mfa",
    responses((status = 201, body = MfaEnrollment), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn enroll_mfa(
    State(state): State<SharedState>,
    Operator(caller): Operator,
    note: NoteSlot,
) -> ApiResult<(StatusCode, Json<MfaEnrollment>)> {
    let name = operator_name(&caller)?;
    record_intent(&state, &note).await?;
    let enrollment = state
        .vault
        .mfa
        .enroll(&name, OffsetDateTime::now_utc())
        .await
        .map_err(mfa_refused)?;
    tracing::info!(operator = %caller.key_id, "MFA enrolment started");
    Ok((
        StatusCode::CREATED,
        Json(MfaEnrollment {
            otpauth_uri: enrollment.otpauth_uri.to_string(),
            secret: enrollment.secret_base32.to_string(),
        }),
    ))
}

/// Body of `POST /v1/admin/operator/mfa/confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmMfa {
    /// A current code of the authenticator: six digits.
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: String,
}

/// The caller's MFA state.
#[derive(Serialize, ToSchema)]
pub struct MfaState {
    /// Whether a confirmed enrolment exists.
    pub enrolled: bool,
}

/// Confirms the caller's pending enrolment with a first code: from then on
/// sensitive operations ask it for a code (`X-Vault-MFA`).
#[utoipa::path(post, path = "/v1/admin/operator/mfa/confirm", request_body = ConfirmMfa,
    responses((status = 200, body = MfaState), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn confirm_mfa(
    State(state): State<SharedState>,
    Operator(caller): Operator,
    note: NoteSlot,
    JsonBody(body): JsonBody<ConfirmMfa>,
) -> ApiResult<Json<MfaState>> {
    let name = operator_name(&caller)?;
    if !vault_core::mfa::is_well_formed_code(&body.code) {
        return Err(ApiError::bad_request(
            "invalid_mfa_code",
            "an MFA code is six digits",
        ));
    }
    record_intent(&state, &note).await?;
    state
        .vault
        .mfa
        .confirm(&name, &body.code, OffsetDateTime::now_utc())
        .await
        .map_err(mfa_refused)?;
    tracing::info!(operator = %caller.key_id, "MFA enrolled");
    Ok(Json(MfaState { enrolled: true }))
}

/// Removes an operator's MFA enrolment (a lost authenticator): it enrolls
/// again. Sensitive: needs the acting admin's own code.
#[utoipa::path(delete, path = "/v1/admin/operators/{id}/mfa",
    responses((status = 200, body = ListedOperator), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reset_operator_mfa(
    State(state): State<SharedState>,
    _operator: Operator,
    note: NoteSlot,
    Path(id): Path<String>,
) -> ApiResult<Json<ListedOperator>> {
    check_id(&id)?;
    note.update(|n| n.detail = Some(format!("operator={id}")));
    let record = operators::find(state.vault.store.as_ref(), &id).await?;
    let name = record
        .operator_profile()
        .unwrap_or_else(OperatorProfile::bootstrap)
        .name;
    record_intent(&state, &note).await?;
    state.vault.mfa.reset(&name).await?;
    tracing::info!(operator = %id, "MFA enrolment reset");
    Ok(Json(ListedOperator::of(&state, record).await?))
}

fn operator_name(caller: &crate::auth::Caller) -> ApiResult<String> {
    caller
        .operator_name
        .clone()
        .ok_or_else(|| ApiError::forbidden("this endpoint needs an operator credential"))
}

fn check_id(id: &str) -> ApiResult<()> {
    if CredentialRecord::is_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_operator_id",
            "an operator id is 16 lowercase hexadecimal digits",
        ))
    }
}
