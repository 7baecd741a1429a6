//! The second factor at the edge: a sensitive operation (its endpoint's
//! `sensitive` flag, or every operator call under `[operators] mfa = "all"`)
//! asks the operator for a current TOTP code in `X-Vault-MFA`
//! (`vault_core::mfa` checks it). Refusals are answered 401 (no code, a wrong or
//! reused one) or 403 (not enrolled, locked) with their codes, and the request's
//! audit event records how the step-up went (`mfa=...` in its detail).

use axum::http::{HeaderMap, StatusCode};
use time::OffsetDateTime;

use super::{header_str, Caller};
use crate::audit_note::NoteSlot;
use crate::error::ApiError;
use crate::state::SharedState;
use vault_core::mfa::{MfaError, MfaRefusal, StepUp};

/// The header carrying the code.
pub const MFA_HEADER: &str = "x-vault-mfa";

/// Requires the step-up of a sensitive call from `caller` (an operator; API
/// keys never reach sensitive endpoints and pass).
pub async fn require_step_up(
    state: &SharedState,
    caller: &Caller,
    headers: &HeaderMap,
    note: Option<&NoteSlot>,
) -> Result<(), ApiError> {
    let Some(operator) = caller.operator_name.as_deref() else {
        return Ok(());
    };
    let code = header_str(headers, MFA_HEADER)?;
    let outcome = state
        .vault
        .mfa
        .step_up(
            operator,
            &caller.key_id,
            code,
            state.vault.config.operators.mfa,
            OffsetDateTime::now_utc(),
        )
        .await;
    let marker = match &outcome {
        Ok(StepUp::NotAsked) => "not-enrolled",
        Ok(StepUp::CodeAccepted) => "code",
        Ok(StepUp::WindowOpen) => "window",
        Err(MfaError::Refused(refusal)) => refusal.code(),
        Err(MfaError::Vault(_)) => "unchecked",
    };
    if let Some(note) = note {
        note.update(|n| n.mfa = Some(marker));
    }
    if let Err(MfaError::Refused(MfaRefusal::InvalidCode | MfaRefusal::Locked(_))) = &outcome {
        state.vault.metrics.mfa_failures.inc();
    }
    outcome.map(drop).map_err(refused)
}

/// The answer to a refused or failed MFA operation.
pub fn refused(error: MfaError) -> ApiError {
    match error {
        MfaError::Refused(refusal) => {
            let status = if refusal.is_unauthenticated() {
                StatusCode::UNAUTHORIZED
            } else if matches!(
                refusal,
                MfaRefusal::AlreadyEnrolled | MfaRefusal::NotEnrolling
            ) {
                StatusCode::CONFLICT
            } else {
                StatusCode::FORBIDDEN
            };
            let answer = ApiError::new(status, refusal.code(), refusal.message());
            match refusal {
                MfaRefusal::Locked(until) => answer.retry_after(
                    u64::try_from((until - OffsetDateTime::now_utc()).whole_seconds())
                        .unwrap_or(0)
                        .max(1),
                ),
                _ => answer,
            }
        }
        MfaError::Vault(e) => e.into(),
    }
}
