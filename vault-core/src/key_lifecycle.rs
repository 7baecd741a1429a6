//! The key lifecycle of a tenant: KEK rotation, rewrap, index key rotation,
//! offboarding with crypto-shredding, and the retention and legal-hold rules that
//! decide whether a document may be deleted.
//!
//! Rotation gives the tenant a new KEK (a new local KEK version, or a new KMS key)
//! and a new branch key version wrapped by it; uploads use it at once. Rewrap then
//! re-wraps every key record (documents and audit segments) under the current
//! branch key, reading and writing only key records, never a body; it is
//! idempotent (records already current are skipped), so an interrupted rewrap is
//! resumed by running it again, and it runs online. When a rewrap leaves nothing
//! behind, `retire_old` raises `min_decryption_version` so older branch keys are
//! refused from then on.

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use time::OffsetDateTime;
use vault_crypto::envelope::KeyRecord;
use vault_crypto::{DocumentId, TenantId};
use vault_keys::{AwsKmsProvider, KeyHierarchy, LocalKeyProvider, TenantKeyKind};

use crate::audit::segment::Segment;
use crate::documents::DocumentFacts;
use crate::documents::Documents;
use crate::error::Error;
use crate::progress::Progress;
use crate::search::SearchService;
use crate::storage::ObjectStore;
use crate::storage::{list_all, ObjectName, StorageError};
use crate::tenants::{check_planned_documents, key_spec, NewTenant, TenantRegistry};
use crate::tenants::{TenantRecord, TenantStatus};

/// Default document retention: the HIPAA documentation rule's six years.
pub const DEFAULT_RETENTION_DAYS: u32 = 6 * 365;
/// Longest retention period a tenant may set: a century (records of minors and
/// some state rules run past the six HIPAA years, none past this).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// 400 `invalid_retention` unless `days` is 0 to [`MAX_RETENTION_DAYS`].
fn check_retention_days(days: u32) -> Result<u32, Error> {
    if days > MAX_RETENTION_DAYS {
        return Err(Error::invalid(
            "invalid_retention",
            format!("retention days must be 0 to {MAX_RETENTION_DAYS}"),
        ));
    }
    Ok(days)
}

/// Key records re-wrapped at once.
const REWRAP_CONCURRENCY: usize = 16;

pub use vault_api::{OffboardReport, RewrapReport};

/// A tenant's lifecycle over its keys, documents and index. Clones share them.
#[derive(Clone)]
pub struct KeyLifecycle {
    /// Where the key records and documents are.
    pub store: Arc<dyn ObjectStore>,
    /// Branch and index keys with their cache.
    pub keys: Arc<KeyHierarchy>,
    /// The local provider (local KEKs are rotated and destroyed here).
    pub local_keys: Arc<LocalKeyProvider>,
    /// The AWS KMS provider, when enabled.
    pub kms: Option<Arc<AwsKmsProvider>>,
    /// Tenant records.
    pub tenants: TenantRegistry,
    /// Documents (presence, for holds and rewrap).
    pub documents: Documents,
    /// Blind indexes (rotated, filled on creation, forgotten on offboarding).
    pub search: SearchService,
    /// Documents a new tenant's index is planned for unless it says.
    pub initial_expected_documents: u64,
}

/// One record's rewrap: `None` when it vanished, else bytes read and written
/// (0 written: it was already current).
type RecordOutcome = Result<Option<(u64, u64)>, Error>;

impl KeyLifecycle {
    /// The tenant's record, if it is not offboarded (its keys still exist).
    pub async fn active(&self, id: &TenantId) -> Result<TenantRecord, Error> {
        // Read from the store, not the cache: a change made from this record
        // must not undo one another replica made in the last seconds.
        let record = self.tenants.require_fresh(id).await?;
        if record.status == TenantStatus::Offboarded {
            return Err(offboarded(id));
        }
        Ok(record)
    }

    /// Rotates the tenant's KEK: a new version (local) or a new KMS key, and a new
    /// branch key version under it, used by every upload from now on.
    pub async fn rotate(&self, id: &TenantId) -> Result<TenantRecord, Error> {
        let mut record = self.active(id).await?;
        match record.key_provider.as_str() {
            "local" => {
                self.local_keys.rotate_tenant_key(id).await?;
            }
            "aws-kms" => {
                let kms = self.kms.as_ref().ok_or_else(|| {
                    Error::invalid("provider_unavailable", "aws-kms is not enabled")
                })?;
                let new_key = kms.create_key(id).await?;
                let old = std::mem::replace(&mut record.kek_id, new_key);
                record.retired_kek_ids.push(old);
            }
            other => {
                return Err(Error::internal(
                    "tenant record",
                    format!("unknown provider {other}"),
                ))
            }
        }
        record.branch_version += 1;
        // Create the new branch key before anyone can ask for it.
        self.keys
            .branch_key_for_upload(&crate::tenants::key_spec(&record))
            .await?;
        // Only the key fields change (the keys lease keeps other rotations out);
        // a concurrent disable or retention change is kept.
        let rotated = record.clone();
        let record = self
            .tenants
            .modify(id, |r| {
                r.kek_id.clone_from(&rotated.kek_id);
                r.retired_kek_ids.clone_from(&rotated.retired_kek_ids);
                r.branch_version = rotated.branch_version;
                Ok(true)
            })
            .await?;
        tracing::info!(tenant = %id, branch_version = record.branch_version, "tenant KEK rotated");
        Ok(record)
    }

    /// Re-wraps every key record of the tenant under its current branch key.
    pub async fn rewrap(
        &self,
        id: &TenantId,
        retire_old: bool,
        progress: &dyn Progress,
    ) -> Result<RewrapReport, Error> {
        let record = self.active(id).await?;
        let started = Instant::now();
        let spec = crate::tenants::key_spec(&record);
        let (current_ref, current_key) = self.keys.branch_key_for_upload(&spec).await?;
        let mut names: Vec<ObjectName> =
            list_all(self.store.as_ref(), &ObjectName::docs_prefix(id), None)
                .await?
                .into_iter()
                .map(|o| o.name)
                .filter(|n| n.as_str().ends_with("/key"))
                .collect();
        let documents = names.len();
        names.extend(
            list_all(
                self.store.as_ref(),
                &ObjectName::audit_segments_prefix(id),
                None,
            )
            .await?
            .into_iter()
            .map(|o| o.name),
        );
        progress.start("rewrap", names.len() as u64, 0);
        let outcomes: Vec<(bool, RecordOutcome)> =
            futures::stream::iter(names.into_iter().enumerate())
                .map(|(i, name)| {
                    let spec = &spec;
                    let current_ref = &current_ref;
                    let current_key = &current_key;
                    async move {
                        let result = async {
                            let Some(bytes) = self.store.get_bytes(&name).await? else {
                                return Ok(None); // deleted meanwhile
                            };
                            // Document key records are key records; audit segments are
                            // a clear header and a key record.
                            let mut segment = if i < documents {
                                None
                            } else {
                                Some(
                                    Segment::parse(&bytes)
                                        .map_err(|e| Error::internal("audit segment", e))?,
                                )
                            };
                            let parsed = match &segment {
                                Some(s) => s.record.clone(),
                                None => KeyRecord::parse(&bytes)?,
                            };
                            if parsed.key_ref == *current_ref {
                                return Ok(Some((bytes.len() as u64, 0)));
                            }
                            let old_key = self.keys.branch_key(spec, &parsed.key_ref).await?;
                            let rewrapped =
                                parsed.rewrap(&old_key, current_key, current_ref.clone())?;
                            let encoded = match segment.as_mut() {
                                Some(s) => {
                                    s.record = rewrapped;
                                    s.encode()
                                }
                                None => rewrapped.encode(),
                            };
                            let written = encoded.len() as u64;
                            self.store.replace(&name, Bytes::from(encoded)).await?;
                            crate::failpoints::crash_point(crate::failpoints::REWRAP_AFTER_RECORD);
                            // A document deleted while we re-wrapped must stay deleted (no
                            // version of its key record left either). Only a tombstone
                            // says so: a key record without facts may be an upload in
                            // flight, whose facts come next; removing its key would lose it.
                            if i < documents {
                                if let Some(doc) = name.key_document() {
                                    if self.documents.presence(id, &doc).await?
                                        == crate::documents::Presence::Deleted
                                    {
                                        self.store.delete_all_versions(&name).await?;
                                    }
                                }
                            }
                            Ok::<_, Error>(Some((bytes.len() as u64, written)))
                        }
                        .await;
                        progress.advance(0);
                        (i < documents, result)
                    }
                })
                .buffer_unordered(REWRAP_CONCURRENCY)
                .collect()
                .await;
        let mut report = RewrapReport {
            branch_version: current_ref.version,
            min_decryption_version: record.min_decryption_version,
            ..RewrapReport::default()
        };
        for (is_document, outcome) in outcomes {
            match outcome {
                Ok(None) => {}
                Ok(Some((read, 0))) => {
                    report.already_current += 1;
                    report.bytes_read += read;
                }
                Ok(Some((read, written))) => {
                    if is_document {
                        report.documents_rewrapped += 1;
                    } else {
                        report.audit_segments_rewrapped += 1;
                    }
                    report.bytes_read += read;
                    report.bytes_written += written;
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(tenant = %id, code = e.code(), error = %e.for_log(), "a key record could not be re-wrapped");
                }
            }
        }
        if retire_old && report.failed == 0 && record.min_decryption_version < record.branch_version
        {
            let updated = self
                .tenants
                .modify(id, |r| {
                    r.min_decryption_version = r.branch_version.min(current_ref.version);
                    Ok(true)
                })
                .await?;
            self.keys.evict_tenant(id).await;
            report.min_decryption_version = updated.min_decryption_version;
        }
        report.seconds = started.elapsed().as_secs_f64();
        let records = report.documents_rewrapped + report.audit_segments_rewrapped;
        report.records_per_second = records as f64 / report.seconds.max(1e-9);
        tracing::info!(tenant = %id, rewrapped = records, failed = report.failed, "rewrap finished");
        Ok(report)
    }

    /// Rotates the blind-index key: a new index root key version (wrapped by the
    /// current KEK) and an index under it, backfilled while uploads write to both
    /// and searches use the old one; then the new one becomes current.
    ///
    /// With `planned_documents` the new index's tokens are sized for that many
    /// documents (a re-plan); without, the tenant's plan stays.
    pub async fn rotate_index(
        &self,
        id: &TenantId,
        planned_documents: Option<u64>,
        progress: &dyn Progress,
    ) -> Result<crate::search::ReconcileReport, Error> {
        let current = self.active(id).await?;
        let mut next = current.clone();
        next.index_version += 1;
        if planned_documents.is_some() {
            next.planned_documents = planned_documents;
        }
        let persisted = next.clone();
        self.search
            .rotate_index(
                &current,
                &next,
                async {
                    // Only the index version and plan change here.
                    self.tenants
                        .modify(id, |r| {
                            r.index_version = persisted.index_version;
                            r.planned_documents = persisted.planned_documents;
                            Ok(true)
                        })
                        .await
                        .map(drop)
                },
                progress,
            )
            .await
    }

    /// Offboards a tenant: refuses its credentials and destroys its keys, so none of
    /// its documents can be decrypted again, from the live store or (once a KMS key's
    /// deletion window has passed, or for local KEKs in backups taken afterwards) from
    /// a backup.
    pub async fn offboard(
        &self,
        id: &TenantId,
        kms_pending_days: i32,
    ) -> Result<OffboardReport, Error> {
        let record = self
            .tenants
            .modify(id, |r| {
                r.status = TenantStatus::Offboarded;
                Ok(true)
            })
            .await?;
        let mut report = OffboardReport::default();
        for key in list_all(self.store.as_ref(), ObjectName::API_KEYS_PREFIX, None).await? {
            let Some(bytes) = self.store.get_bytes(&key.name).await? else {
                continue;
            };
            let Ok(mut credential) =
                serde_json::from_slice::<crate::credentials::CredentialRecord>(&bytes)
            else {
                continue;
            };
            // A record that does not parse is skipped: it authenticates nothing.
            if credential.tenant.as_ref() == Some(id)
                && crate::credentials::revoke(
                    self.store.as_ref(),
                    &mut credential,
                    OffsetDateTime::now_utc(),
                )
                .await?
            {
                report.api_keys_revoked += 1;
            }
        }
        for kind in [TenantKeyKind::Branch, TenantKeyKind::IndexRoot] {
            let prefix = ObjectName::tenant_keys_prefix(id, kind);
            for object in list_all(self.store.as_ref(), &prefix, None).await? {
                self.store.delete(&object.name).await?;
                report.tenant_key_records_destroyed += 1;
            }
        }
        self.keys.evict_tenant(id).await;
        self.search.forget_tenant(id);
        // Sealed under the destroyed keys already; removed as well, as caches
        // of a tenant that is gone.
        if let Err(e) = self.search.delete_snapshots(id).await {
            tracing::warn!(tenant = %id, code = e.code(), error = %e.for_log(), "index snapshots of an offboarded tenant not removed");
        }
        match record.key_provider.as_str() {
            "local" => report.local_kek_destroyed = self.local_keys.destroy_tenant_key(id).await?,
            _ => {
                let kms = self.kms.as_ref().ok_or_else(|| {
                    Error::invalid("provider_unavailable", "aws-kms is not enabled")
                })?;
                let mut keys = record.retired_kek_ids.clone();
                keys.push(record.kek_id.clone());
                for key in keys {
                    match kms.schedule_key_deletion(id, &key, kms_pending_days).await {
                        Ok(()) => report.kms_keys_scheduled_for_deletion.push(key),
                        Err(e) => {
                            tracing::error!(tenant = %id, error = %e, "KMS key deletion could not be scheduled")
                        }
                    }
                }
            }
        }
        tracing::info!(tenant = %id, "tenant offboarded: keys destroyed");
        Ok(report)
    }

    /// Why a document cannot be deleted yet, if it cannot.
    pub async fn check_deletable(
        &self,
        tenant: &TenantRecord,
        id: &DocumentId,
    ) -> Result<(), Error> {
        if self
            .store
            .head(&ObjectName::doc_hold(&tenant.id, id))
            .await?
            .is_some()
        {
            return Err(Error::conflict(
                "legal_hold",
                "the document is under legal hold; an operator must release it first",
            ));
        }
        if tenant.retention_days > 0 {
            let facts = self
                .store
                .get_bytes(&ObjectName::doc_meta(&tenant.id, id))
                .await?
                .ok_or_else(Error::document_not_found)?;
            let facts: DocumentFacts =
                serde_json::from_slice(&facts).map_err(|e| Error::internal("document facts", e))?;
            // Saturating: a record written before the bound existed may hold
            // any u32, and a panic here would refuse every delete.
            let until = facts
                .uploaded_at
                .saturating_add(time::Duration::days(i64::from(tenant.retention_days)));
            if until > OffsetDateTime::now_utc() {
                let until = until
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                return Err(Error::conflict(
                    "retention_period",
                    format!(
                        "the document is retained until {until} ({} days after upload)",
                        tenant.retention_days
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Puts (`on`) or releases a legal hold on a document.
    pub async fn set_hold(
        &self,
        tenant: &TenantRecord,
        id: &DocumentId,
        on: bool,
    ) -> Result<(), Error> {
        if self.documents.presence(&tenant.id, id).await? != crate::documents::Presence::Visible {
            return Err(Error::document_not_found());
        }
        let name = ObjectName::doc_hold(&tenant.id, id);
        if on {
            let record = serde_json::json!({"format": 1, "held_at": OffsetDateTime::now_utc().unix_timestamp()});
            match self
                .store
                .put_new_bytes(&name, Bytes::from(record.to_string()))
                .await
            {
                Ok(()) | Err(StorageError::AlreadyExists(_)) => Ok(()),
                Err(e) => Err(e.into()),
            }
        } else {
            self.store.delete(&name).await.map_err(Into::into)
        }
    }

    /// Sets a tenant's retention period.
    pub async fn set_retention(&self, id: &TenantId, days: u32) -> Result<TenantRecord, Error> {
        let days = check_retention_days(days)?;
        self.active(id).await?;
        self.tenants
            .modify(id, |r| {
                if r.status == TenantStatus::Offboarded {
                    return Err(offboarded(id));
                }
                r.retention_days = days;
                Ok(true)
            })
            .await
    }

    /// Creates a tenant: its KEK (with the provider), its first branch key, its record
    /// and its blind index with its root key, so the first upload and search cost no
    /// key-service call and a KEK that cannot wrap is found at once.
    pub async fn create_tenant(&self, new: NewTenant) -> Result<TenantRecord, Error> {
        let id = new.id;
        if id.as_str() == crate::audit::SYSTEM_LOG {
            return Err(Error::invalid(
                "invalid_tenant_id",
                "the tenant id system is reserved for the vault's own audit log",
            ));
        }
        if self.tenants.get(&id).await?.is_some() {
            return Err(Error::conflict(
                "tenant_exists",
                format!("tenant {id} already exists"),
            ));
        }
        let provider = match new.key_provider.as_str() {
            "local" if new.kms_key_id.is_none() => self.keys.provider("local")?,
            "local" => {
                return Err(Error::invalid(
                    "invalid_key_provider",
                    "kms_key_id is only for key_provider aws-kms",
                ))
            }
            "aws-kms" => self.keys.provider("aws-kms").map_err(|_| {
                Error::invalid(
                    "key_provider_disabled",
                    "the aws-kms provider is not enabled on this server ([keys] aws_kms = true)",
                )
            })?,
            other => {
                return Err(Error::invalid(
                    "invalid_key_provider",
                    format!("unknown key provider {other:?}: use local or aws-kms"),
                ))
            }
        };
        let retention_days =
            check_retention_days(new.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS))?;
        let planned_documents = check_planned_documents(
            new.expected_documents
                .unwrap_or(self.initial_expected_documents),
        )?;
        let kek_id = provider
            .ensure_tenant_key(&id, new.kms_key_id.as_deref())
            .await?;
        let record = TenantRecord {
            format: 1,
            id,
            key_provider: provider.id().to_owned(),
            kek_id,
            branch_version: 1,
            min_decryption_version: 1,
            index_version: 1,
            status: TenantStatus::Active,
            retired_kek_ids: Vec::new(),
            retention_days,
            planned_documents: Some(planned_documents),
            created_at: OffsetDateTime::now_utc(),
        };
        self.keys.branch_key_for_upload(&key_spec(&record)).await?;
        self.tenants.create(record.clone()).await?;
        self.search.tenant_index(&record).await?;
        Ok(record)
    }
}

/// The answer to a change of an offboarded tenant.
fn offboarded(id: &TenantId) -> Error {
    Error::conflict(
        "tenant_offboarded",
        format!("tenant {id} is offboarded: its keys are destroyed"),
    )
}
