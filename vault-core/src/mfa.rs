//! Operators' second factor: TOTP (RFC 6238, through `totp-rs`), enrolled per
//! named operator and asked for again before sensitive operations (step-up).
//!
//! An operator's enrolment is one record, `system/operator-mfa/<sha256 of its
//! name>`, so it outlives the rotations of the operator's credential. The TOTP
//! secret in it is a data key of the system KEK (`Purpose::OperatorMfa`): sealed
//! at rest like every other key, shown once at enrolment, never logged.
//!
//! A code is accepted once: the record keeps the last accepted time step, and
//! a code of that step or an earlier one is refused as reused. Codes of the
//! step before and after the current one are accepted (clock skew of up to 30
//! s); older or newer ones are refused. Five wrong codes in a row lock the
//! operator's second factor for 15 minutes. Every change to the record is a
//! conditional replace of the version read, so two replicas checking the same
//! code at once accept it once.
//!
//! A code accepted for a credential opens a step-up window for that
//! credential (`[operators] mfa_step_up_secs`, default 5 minutes; 0: every
//! sensitive call needs a code of its own).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use totp_rs::{Algorithm, TOTP};
use vault_crypto::keys::{EncryptionContext, Purpose};
use vault_crypto::TenantId;
use vault_keys::{KeyProvider, LocalKeyProvider};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::storage::{ObjectName, ObjectStore, StorageError};

/// Version of the enrolment record. FORMAT CONSTANT.
const RECORD_FORMAT: u32 = 1;
/// Seconds per TOTP step (RFC 6238's default; what authenticator apps use).
const STEP_SECS: u64 = 30;
/// Digits of a code.
const DIGITS: usize = 6;
/// Wrong codes in a row before the second factor locks.
pub const MAX_FAILURES: u32 = 5;
/// How long it stays locked.
pub const LOCKOUT: time::Duration = time::Duration::minutes(15);
/// The issuer shown by authenticator apps.
const ISSUER: &str = "billvault";
/// Conditional replaces tried before giving up on a contended record.
const ATTEMPTS: usize = 4;

/// When the second factor is asked for (`[operators] mfa`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MfaPolicy {
    /// Sensitive operations ask operators who enrolled for a code; operators
    /// who did not are not asked.
    #[default]
    Enrolled,
    /// Sensitive operations need a code: an operator who has not enrolled is
    /// refused them (403 `mfa_enrollment_required`).
    Sensitive,
    /// Every operator call needs a code (or an open step-up window), except
    /// enrolling itself.
    All,
}

/// An operator's enrolment as stored.
#[derive(Serialize, Deserialize)]
struct MfaRecord {
    format: u32,
    /// The system KEK the secret is wrapped under.
    kek_id: String,
    /// The wrapped TOTP secret (hex).
    sealed_secret: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Set once a first code proved the authenticator holds the secret.
    #[serde(default, with = "time::serde::rfc3339::option")]
    confirmed_at: Option<OffsetDateTime>,
    /// The last accepted time step: codes of it and before are refused.
    #[serde(default)]
    last_step: Option<u64>,
    /// Wrong codes in a row.
    #[serde(default)]
    failures: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    locked_until: Option<OffsetDateTime>,
    /// The credential whose step-up window is open, and until when.
    #[serde(default)]
    step_up: Option<StepUpWindow>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StepUpWindow {
    credential: String,
    #[serde(with = "time::serde::rfc3339")]
    until: OffsetDateTime,
}

/// Why a second factor was refused. Each has a stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaRefusal {
    /// The operation needs a code and none was sent.
    CodeRequired,
    /// The operation needs MFA and the operator has not enrolled.
    EnrollmentRequired,
    /// The code is wrong, malformed or outside the accepted clock skew.
    InvalidCode,
    /// The code (or a later one) was accepted before.
    ReusedCode,
    /// Too many wrong codes: locked until the time given.
    Locked(OffsetDateTime),
    /// Enrolling again while enrolled: an admin resets it first.
    AlreadyEnrolled,
    /// Confirming without a pending enrolment.
    NotEnrolling,
}

impl MfaRefusal {
    /// Machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            MfaRefusal::CodeRequired => "mfa_required",
            MfaRefusal::EnrollmentRequired => "mfa_enrollment_required",
            MfaRefusal::InvalidCode => "mfa_code_invalid",
            MfaRefusal::ReusedCode => "mfa_code_reused",
            MfaRefusal::Locked(_) => "mfa_locked",
            MfaRefusal::AlreadyEnrolled => "mfa_already_enrolled",
            MfaRefusal::NotEnrolling => "mfa_not_enrolling",
        }
    }

    /// Explanation (never the code sent).
    pub fn message(self) -> String {
        match self {
            MfaRefusal::CodeRequired => {
                "this operation needs a current code of your authenticator: send X-Vault-MFA".into()
            }
            MfaRefusal::EnrollmentRequired => {
                "this operation needs MFA: enroll first (vault-cli operator mfa enroll)".into()
            }
            MfaRefusal::InvalidCode => "the MFA code is not valid now".into(),
            MfaRefusal::ReusedCode => {
                "that MFA code was used already: wait for the next one".into()
            }
            MfaRefusal::Locked(until) => format!(
                "too many wrong MFA codes: locked until {}",
                until
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ),
            MfaRefusal::AlreadyEnrolled => {
                "MFA is enrolled already: an admin resets it before a new enrolment".into()
            }
            MfaRefusal::NotEnrolling => {
                "no enrolment is waiting for confirmation: enroll first".into()
            }
        }
    }

    /// Whether the request lacked authentication (401) rather than being
    /// refused to this operator (403).
    pub fn is_unauthenticated(self) -> bool {
        matches!(
            self,
            MfaRefusal::CodeRequired | MfaRefusal::InvalidCode | MfaRefusal::ReusedCode
        )
    }
}

/// A failure of an MFA operation.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    /// The second factor was refused.
    #[error("{}", .0.message())]
    Refused(MfaRefusal),
    /// The vault failed (storage, keys).
    #[error(transparent)]
    Vault(#[from] Error),
}

impl From<StorageError> for MfaError {
    fn from(e: StorageError) -> Self {
        MfaError::Vault(e.into())
    }
}

/// A new enrolment: shown once.
pub struct Enrollment {
    /// `otpauth://totp/...` for authenticator apps (holds the secret).
    pub otpauth_uri: Zeroizing<String>,
    /// The secret in base32, for typing in by hand.
    pub secret_base32: Zeroizing<String>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrollment(..)")
    }
}

/// What a successful check did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepUp {
    /// The operator has not enrolled and the policy does not ask for it.
    NotAsked,
    /// A code was checked and accepted.
    CodeAccepted,
    /// No code sent; the credential's step-up window is open.
    WindowOpen,
}

/// An operator's state as others may see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MfaStatus {
    /// A confirmed enrolment exists.
    pub enrolled: bool,
    /// Locked until then.
    pub locked_until: Option<OffsetDateTime>,
}

/// Operators' second factor over the store and the system KEK.
#[derive(Clone)]
pub struct OperatorMfa {
    store: Arc<dyn ObjectStore>,
    local_keys: Arc<LocalKeyProvider>,
    step_up_window: time::Duration,
}

impl OperatorMfa {
    /// The service; `step_up_secs` is the window a code opens (0: none).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        local_keys: Arc<LocalKeyProvider>,
        step_up_secs: u64,
    ) -> Self {
        OperatorMfa {
            store,
            local_keys,
            step_up_window: time::Duration::seconds(i64::try_from(step_up_secs).unwrap_or(0)),
        }
    }

    fn context() -> Result<EncryptionContext, Error> {
        Ok(EncryptionContext {
            tenant: TenantId::new(crate::audit::SYSTEM_LOG)
                .map_err(|e| Error::internal("system tenant", e))?,
            purpose: Purpose::OperatorMfa,
        })
    }

    async fn load(&self, operator: &str) -> Result<Option<(MfaRecord, String)>, Error> {
        let Some((bytes, version)) = self
            .store
            .get_versioned(&ObjectName::operator_mfa(operator))
            .await?
        else {
            return Ok(None);
        };
        let record: MfaRecord =
            serde_json::from_slice(&bytes).map_err(|e| Error::internal("MFA record", e))?;
        if record.format != RECORD_FORMAT {
            return Err(Error::internal(
                "MFA record",
                format!("unknown format {}", record.format),
            ));
        }
        Ok(Some((record, version)))
    }

    /// Writes `record` if the stored one is still `version` (`None`: absent).
    /// `false` when another writer got there first.
    async fn save(
        &self,
        operator: &str,
        record: &MfaRecord,
        version: Option<&str>,
    ) -> Result<bool, Error> {
        let name = ObjectName::operator_mfa(operator);
        let json =
            Bytes::from(serde_json::to_vec(record).map_err(|e| Error::internal("MFA record", e))?);
        let written = match version {
            Some(version) => self.store.replace_if(&name, json, version).await,
            None => self.store.put_new_bytes(&name, json).await,
        };
        match written {
            Ok(()) => Ok(true),
            Err(StorageError::Changed(_) | StorageError::AlreadyExists(_)) => Ok(false),
            Err(StorageError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn totp(&self, operator: &str, record: &MfaRecord) -> Result<TOTP, Error> {
        let sealed =
            hex::decode(&record.sealed_secret).map_err(|e| Error::internal("MFA record", e))?;
        let secret = self
            .local_keys
            .decrypt_data_key(&record.kek_id, &sealed, &Self::context()?)
            .await
            .map_err(|e| Error::internal("MFA secret", e))?;
        totp_of(secret.expose(), operator)
    }

    /// Starts (or restarts, while unconfirmed) `operator`'s enrolment: a new
    /// secret, shown once. Refused while a confirmed enrolment exists.
    pub async fn enroll(
        &self,
        operator: &str,
        now: OffsetDateTime,
    ) -> Result<Enrollment, MfaError> {
        for _ in 0..ATTEMPTS {
            let existing = self.load(operator).await?;
            if existing
                .as_ref()
                .is_some_and(|(r, _)| r.confirmed_at.is_some())
            {
                return Err(MfaError::Refused(MfaRefusal::AlreadyEnrolled));
            }
            let context = Self::context()?;
            let kek_id = self
                .local_keys
                .ensure_tenant_key(&context.tenant, None)
                .await
                .map_err(|e| Error::internal("system KEK", e))?;
            let (secret, sealed) = self
                .local_keys
                .generate_data_key(&kek_id, &context)
                .await
                .map_err(|e| Error::internal("MFA secret", e))?;
            let record = MfaRecord {
                format: RECORD_FORMAT,
                kek_id,
                sealed_secret: hex::encode(sealed),
                created_at: now,
                confirmed_at: None,
                last_step: None,
                failures: 0,
                locked_until: None,
                step_up: None,
            };
            if self
                .save(
                    operator,
                    &record,
                    existing.as_ref().map(|(_, v)| v.as_str()),
                )
                .await?
            {
                let totp = totp_of(secret.expose(), operator)?;
                return Ok(Enrollment {
                    otpauth_uri: Zeroizing::new(totp.get_url()),
                    secret_base32: Zeroizing::new(totp.get_secret_base32()),
                });
            }
        }
        Err(contended())
    }

    /// Confirms a pending enrolment with a first code from the authenticator.
    pub async fn confirm(
        &self,
        operator: &str,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<(), MfaError> {
        self.check(operator, None, Some(code), now, true)
            .await
            .map(drop)
    }

    /// The step-up check of a sensitive call by `credential` of `operator`
    /// under `policy`: a code sent is always checked; without one, an open
    /// window of that credential passes, and an operator who has not enrolled
    /// passes only under [`MfaPolicy::Enrolled`].
    pub async fn step_up(
        &self,
        operator: &str,
        credential: &str,
        code: Option<&str>,
        policy: MfaPolicy,
        now: OffsetDateTime,
    ) -> Result<StepUp, MfaError> {
        // One read of the record: `check` finds whether it is enrolled.
        match self
            .check(operator, Some(credential), code, now, false)
            .await
        {
            Err(MfaError::Refused(MfaRefusal::EnrollmentRequired))
                if policy == MfaPolicy::Enrolled =>
            {
                Ok(StepUp::NotAsked)
            }
            checked => checked,
        }
    }

    /// Checks `code` against `operator`'s enrolment (a pending one when
    /// `confirming`), counting failures and locking; opens `credential`'s
    /// window on success.
    async fn check(
        &self,
        operator: &str,
        credential: Option<&str>,
        code: Option<&str>,
        now: OffsetDateTime,
        confirming: bool,
    ) -> Result<StepUp, MfaError> {
        for _ in 0..ATTEMPTS {
            let Some((mut record, version)) = self.load(operator).await? else {
                return Err(MfaError::Refused(if confirming {
                    MfaRefusal::NotEnrolling
                } else {
                    MfaRefusal::EnrollmentRequired
                }));
            };
            match (confirming, record.confirmed_at.is_some()) {
                (true, true) => return Err(MfaError::Refused(MfaRefusal::AlreadyEnrolled)),
                (false, false) => return Err(MfaError::Refused(MfaRefusal::EnrollmentRequired)),
                _ => {}
            }
            if let Some(until) = record.locked_until.filter(|until| *until > now) {
                return Err(MfaError::Refused(MfaRefusal::Locked(until)));
            }
            let Some(code) = code else {
                let open = record
                    .step_up
                    .as_ref()
                    .is_some_and(|w| credential == Some(w.credential.as_str()) && w.until > now);
                return if open {
                    Ok(StepUp::WindowOpen)
                } else {
                    Err(MfaError::Refused(MfaRefusal::CodeRequired))
                };
            };
            let totp = self.totp(operator, &record).await?;
            let refusal = match matching_step(&totp, code, now) {
                Some(step) if record.last_step.is_some_and(|last| step <= last) => {
                    Some(MfaRefusal::ReusedCode)
                }
                Some(step) => {
                    record.last_step = Some(step);
                    record.failures = 0;
                    record.locked_until = None;
                    if confirming {
                        record.confirmed_at = Some(now);
                    }
                    if let Some(credential) =
                        credential.filter(|_| self.step_up_window > time::Duration::ZERO)
                    {
                        record.step_up = Some(StepUpWindow {
                            credential: credential.to_owned(),
                            until: now + self.step_up_window,
                        });
                    }
                    None
                }
                None => Some(MfaRefusal::InvalidCode),
            };
            let refusal = refusal.map(|refusal| {
                record.failures += 1;
                if record.failures >= MAX_FAILURES {
                    let until = now + LOCKOUT;
                    record.failures = 0;
                    record.locked_until = Some(until);
                    record.step_up = None;
                    MfaRefusal::Locked(until)
                } else {
                    refusal
                }
            });
            if self.save(operator, &record, Some(&version)).await? {
                return match refusal {
                    Some(refusal) => Err(MfaError::Refused(refusal)),
                    None => Ok(StepUp::CodeAccepted),
                };
            }
            // Another replica changed the record meanwhile: check again
            // against what it wrote (a code it accepted is now reused).
        }
        Err(contended())
    }

    /// `operator`'s enrolment state.
    pub async fn status(&self, operator: &str) -> Result<MfaStatus, Error> {
        Ok(match self.load(operator).await? {
            Some((record, _)) => MfaStatus {
                enrolled: record.confirmed_at.is_some(),
                locked_until: record.locked_until,
            },
            None => MfaStatus {
                enrolled: false,
                locked_until: None,
            },
        })
    }

    /// Removes `operator`'s enrolment (a lost authenticator; a removed
    /// operator). `false` when there was none.
    pub async fn reset(&self, operator: &str) -> Result<bool, Error> {
        let name = ObjectName::operator_mfa(operator);
        let existed = self.store.get_bytes(&name).await?.is_some();
        self.store.delete(&name).await?;
        Ok(existed)
    }
}

fn contended() -> MfaError {
    MfaError::Vault(Error::unavailable(
        "mfa_contended",
        "the MFA record changed under too many concurrent checks; try again",
    ))
}

/// The TOTP of a secret, as authenticator apps compute it (SHA-1, 6 digits,
/// 30 s steps, one step of skew either way).
fn totp_of(secret: &[u8], operator: &str) -> Result<TOTP, Error> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECS,
        secret.to_vec(),
        Some(ISSUER.to_owned()),
        operator.to_owned(),
    )
    .map_err(|e| Error::internal("TOTP", e))
}

/// Whether `code` has the shape of a code: six ASCII digits.
pub fn is_well_formed_code(code: &str) -> bool {
    code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// The time step whose code `code` is, among the one before `now`'s, `now`'s
/// and the one after; compared in constant time.
fn matching_step(totp: &TOTP, code: &str, now: OffsetDateTime) -> Option<u64> {
    if !is_well_formed_code(code) {
        return None;
    }
    let current = u64::try_from(now.unix_timestamp()).ok()? / STEP_SECS;
    let mut matched = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = Zeroizing::new(totp.generate(step * STEP_SECS));
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            matched = Some(step);
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238, Appendix B: the SHA-1 rows (8 digits, seed "1234...90").
    #[test]
    fn totp_rs_matches_the_rfc_6238_vectors() {
        let seeds: [(Algorithm, &[u8]); 3] = [
            (Algorithm::SHA1, b"12345678901234567890"),
            (Algorithm::SHA256, b"12345678901234567890123456789012"),
            (
                Algorithm::SHA512,
                b"1234567890123456789012345678901234567890123456789012345678901234",
            ),
        ];
        let rows: [(u64, [&str; 3]); 6] = [
            (59, ["94287082", "46119246", "90693936"]),
            (1111111109, ["07081804", "68084774", "25091201"]),
            (1111111111, ["14050471", "67062674", "99943326"]),
            (1234567890, ["89005924", "91819424", "93441116"]),
            (2000000000, ["69279037", "90698825", "38618901"]),
            (20000000000, ["65353130", "77737706", "47863826"]),
        ];
        for (column, (algorithm, seed)) in seeds.into_iter().enumerate() {
            let totp = TOTP::new(algorithm, 8, 1, 30, seed.to_vec(), None, "rfc".into()).unwrap();
            for (time, codes) in rows {
                assert_eq!(
                    totp.generate(time),
                    codes[column],
                    "{algorithm:?} at {time}"
                );
            }
        }
    }

    #[test]
    fn only_the_neighbouring_steps_match() {
        let totp = totp_of(&[7u8; 32], "alice").unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_015).unwrap();
        let step = 1_800_000_015 / STEP_SECS;
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let at = (step as i64 + offset) as u64 * STEP_SECS;
            let code = totp.generate(at);
            let matched = matching_step(&totp, &code, now);
            if accepted {
                assert_eq!(matched, Some(at / STEP_SECS));
            } else {
                // A far code may collide with a near one by chance (1 in 10^6).
                assert!(matched.is_none() || totp.generate(matched.unwrap() * STEP_SECS) == code);
            }
        }
        for bad in ["", "12345", "1234567", "12345a", "１２３４５６"] {
            assert_eq!(matching_step(&totp, bad, now), None);
        }
    }
}
