//! Object names: a closed vocabulary of paths built from tenant ids, opaque document
//! ids and fixed words, so no caller-supplied text (and so no PHI) reaches storage.
//!
//! ```text
//! system/operators/<key id>                  operator credential records
//! system/operator-bootstrap                  claim of the first one (create-only)
//! system/operator-names/<sha256 of name>     claim of an operator's name (create-only)
//! system/operator-mfa/<sha256 of name>       an operator's TOTP enrolment (sealed secret)
//! system/tenants/<tenant>                    tenant records
//! system/api-keys/<key id>                   API key records
//! tenants/<tenant>/keys/<kind>/<version>     wrapped branch / index root keys
//! tenants/<tenant>/kek/<version>             local KEK versions (under the seal key)
//! tenants/<tenant>/docs/<doc id>/body        envelope body
//! tenants/<tenant>/docs/<doc id>/key         key record (wrapped DEK + metadata)
//! tenants/<tenant>/docs/<doc id>/meta        public facts (kind, time, sizes)
//! tenants/<tenant>/idempotency/<sha256 hex>  idempotency records
//! tenants/<tenant>/holds/<doc id>            legal holds on documents
//! tenants/<tenant>/tombstones/<doc id>       deletion records of documents
//! tenants/<tenant>/audit/segments/<index>    sealed batches of audit events
//! tenants/<tenant>/audit/checkpoints/<size>  signed tree heads of the audit log
//! system/audit-signing/key                   wrapped Ed25519 seed (checkpoints)
//! system/audit-signing/public                its public key, hex
//! custody/root-check                         proves a root key file is the vault's
//! custody/seals/<tenant>                     tenant seal keys (under the root key)
//! system/leases/<tenant>/<scope>/<run>-<n>   which replica does a tenant's key work
//! ```
//!
//! `custody/` is the key custody: backups never copy it (see
//! [`ObjectName::CUSTODY_PREFIX`]); on the fs backend it is a store of its own
//! beside the root key file.
//!
//! A backup repository (its own store) uses the same type:
//!
//! ```text
//! config                                     repository record (vault key, lock)
//! snapshots/<snapshot id>                    signed manifests
//! data/<2 hex>/<sha256 hex>                  content-addressed ciphertext objects
//! holds/<snapshot id>                        legal holds on snapshots
//! ```

use std::fmt;

use vault_crypto::{DocumentId, TenantId};
use vault_keys::TenantKeyKind;

/// A validated object name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName(String);

impl ObjectName {
    fn new(name: String) -> Self {
        debug_assert!(Self::is_valid(&name), "{name}");
        ObjectName(name)
    }

    /// Whether a name read back from a listing is one the vault could have written.
    pub fn is_valid(name: &str) -> bool {
        !name.is_empty()
            && !name.starts_with('/')
            && !name.contains("..")
            && !name.contains("//")
            // "./x" would be the file "x" on a filesystem: one object, two names.
            && !name.split('/').any(|part| part == ".")
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_/.".contains(&b))
    }

    /// Parses a name from a listing.
    pub fn parse(name: &str) -> Option<Self> {
        Self::is_valid(name).then(|| ObjectName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Prefix of the operator credential records.
    pub const OPERATORS_PREFIX: &'static str = "system/operators/";

    /// Prefix of the claims of operators' names.
    pub const OPERATOR_NAMES_PREFIX: &'static str = "system/operator-names/";

    /// Prefix of operators' MFA enrolments.
    pub const OPERATOR_MFA_PREFIX: &'static str = "system/operator-mfa/";

    /// Prefix of the API key records.
    pub const API_KEYS_PREFIX: &'static str = "system/api-keys/";

    /// Prefix of the tenant records.
    pub const TENANTS_PREFIX: &'static str = "system/tenants/";

    /// Prefix of the audit signing key's objects.
    pub const AUDIT_SIGNING_PREFIX: &'static str = "system/audit-signing/";

    /// Prefix of the key custody (root check, tenant seal keys): never in a
    /// backup, so destroying a seal key shreds the tenant's KEKs in every copy.
    pub const CUSTODY_PREFIX: &'static str = "custody/";

    /// The root check of the local keystore.
    pub fn custody_root_check() -> Self {
        Self::new("custody/root-check".to_owned())
    }

    /// A tenant's seal key.
    pub fn custody_seal(tenant: &TenantId) -> Self {
        Self::new(format!("custody/seals/{tenant}"))
    }

    /// Prefix of a tenant's local KEK versions.
    pub fn tenant_keks_prefix(tenant: &TenantId) -> String {
        format!("tenants/{tenant}/kek/")
    }

    /// One local KEK version (zero-padded so names sort by version).
    pub fn tenant_kek(tenant: &TenantId, version: u32) -> Self {
        Self::new(format!("tenants/{tenant}/kek/{version:010}"))
    }

    /// Prefix of everything a tenant owns.
    pub fn tenant_prefix(tenant: &str) -> String {
        format!("tenants/{tenant}/")
    }

    /// Prefix of a tenant's key records of one kind.
    pub fn tenant_keys_prefix(tenant: &TenantId, kind: TenantKeyKind) -> String {
        format!("tenants/{tenant}/keys/{}/", kind.as_str())
    }

    /// Operator credential record.
    pub fn operator(key_id: &str) -> Self {
        Self::new(format!("system/operators/{key_id}"))
    }

    /// The claim of a named operator's name, by its hash (names are chosen by
    /// people; object names carry none of their text).
    pub fn operator_name(name: &str) -> Self {
        Self::new(format!(
            "{}{}",
            Self::OPERATOR_NAMES_PREFIX,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(name.as_bytes()))
        ))
    }

    /// A named operator's MFA enrolment (its sealed TOTP secret), by the hash
    /// of the operator's name: it outlives credential rotations.
    pub fn operator_mfa(name: &str) -> Self {
        Self::new(format!(
            "{}{}",
            Self::OPERATOR_MFA_PREFIX,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(name.as_bytes()))
        ))
    }

    /// The claim of a new vault's first operator credential (its record).
    pub fn operator_bootstrap() -> Self {
        Self::new("system/operator-bootstrap".to_owned())
    }

    /// Tenant record.
    pub fn tenant(tenant: &TenantId) -> Self {
        Self::new(format!("system/tenants/{tenant}"))
    }

    /// API key record.
    pub fn api_key(key_id: &str) -> Self {
        Self::new(format!("system/api-keys/{key_id}"))
    }

    /// Wrapped tenant key.
    pub fn tenant_key(tenant: &TenantId, kind: TenantKeyKind, version: u32) -> Self {
        Self::new(format!(
            "tenants/{tenant}/keys/{}/{version:010}",
            kind.as_str()
        ))
    }

    /// Prefix of a tenant's documents.
    pub fn docs_prefix(tenant: &TenantId) -> String {
        format!("tenants/{tenant}/docs/")
    }

    /// Envelope body of a document.
    pub fn doc_body(tenant: &TenantId, doc: &DocumentId) -> Self {
        Self::new(format!("tenants/{tenant}/docs/{doc}/body"))
    }

    /// Key record of a document.
    pub fn doc_key(tenant: &TenantId, doc: &DocumentId) -> Self {
        Self::new(format!("tenants/{tenant}/docs/{doc}/key"))
    }

    /// Public facts of a document (kind, upload time, sizes): no PHI.
    pub fn doc_meta(tenant: &TenantId, doc: &DocumentId) -> Self {
        Self::new(format!("tenants/{tenant}/docs/{doc}/meta"))
    }

    /// The document whose facts object this is (`tenants/<t>/docs/<doc>/meta`).
    pub fn meta_document(&self) -> Option<DocumentId> {
        self.document_of("/meta")
    }

    /// The document whose key record this is (`tenants/<t>/docs/<doc>/key`).
    pub fn key_document(&self) -> Option<DocumentId> {
        self.document_of("/key")
    }

    /// The document of `tenants/<t>/docs/<doc><suffix>`.
    fn document_of(&self, suffix: &str) -> Option<DocumentId> {
        self.0
            .strip_suffix(suffix)?
            .rsplit_once("/docs/")?
            .1
            .parse()
            .ok()
    }

    /// A legal hold on a document (its presence is the hold).
    pub fn doc_hold(tenant: &TenantId, doc: &DocumentId) -> Self {
        Self::new(format!("tenants/{tenant}/holds/{doc}"))
    }

    /// The tombstone of a deleted document: written before any of its objects is
    /// removed, and never removed itself.
    pub fn tombstone(tenant: &TenantId, doc: &DocumentId) -> Self {
        Self::new(format!("tenants/{tenant}/tombstones/{doc}"))
    }

    /// Prefix of a tenant's tombstones.
    pub fn tombstones_prefix(tenant: &TenantId) -> String {
        format!("tenants/{tenant}/tombstones/")
    }

    /// Tenant and document of a tombstone name (`tenants/<t>/tombstones/<doc>`).
    pub fn tombstone_of(name: &str) -> Option<(&str, DocumentId)> {
        let (tenant, rest) = name.strip_prefix("tenants/")?.split_once('/')?;
        let doc = rest.strip_prefix("tombstones/")?;
        Some((tenant, doc.parse().ok()?))
    }

    /// Tenant and document an object belongs to: `tenants/<t>/docs/<doc>/...`
    /// (body, key record, facts) and `tenants/<t>/holds/<doc>`; not its tombstone.
    pub fn document_object_of(name: &str) -> Option<(&str, DocumentId)> {
        let rest = name.strip_prefix("tenants/")?;
        let (tenant, rest) = rest.split_once('/')?;
        let doc = match rest.split_once('/')? {
            ("docs", rest) => rest.split_once('/')?.0,
            ("holds", doc) => doc,
            _ => return None,
        };
        Some((tenant, doc.parse().ok()?))
    }

    /// Prefix of a tenant's audit segments.
    pub fn audit_segments_prefix(tenant: &TenantId) -> String {
        format!("tenants/{tenant}/audit/segments/")
    }

    /// One audit segment (zero-padded so names sort in log order).
    pub fn audit_segment(tenant: &TenantId, index: u64) -> Self {
        Self::new(format!("tenants/{tenant}/audit/segments/{index:020}"))
    }

    /// The segment index of an audit segment name.
    pub fn audit_segment_index(&self) -> Option<u64> {
        let (_, index) = self.0.rsplit_once("/audit/segments/")?;
        (index.len() == 20).then(|| index.parse().ok()).flatten()
    }

    /// Prefix of every index snapshot: a cache of derived data, never in a
    /// backup ([`crate::index_snapshot`]).
    pub const INDEX_SNAPSHOTS_PREFIX: &'static str = "caches/index/";

    /// Prefix of a tenant's index snapshots (all index key versions).
    pub fn index_snapshots_prefix(tenant: &TenantId) -> String {
        format!("{}{tenant}/", Self::INDEX_SNAPSHOTS_PREFIX)
    }

    /// Prefix of a tenant's index snapshots under one index key version.
    pub fn index_snapshots_of_version(tenant: &TenantId, version: u32) -> String {
        format!("{}{tenant}/v{version:010}/", Self::INDEX_SNAPSHOTS_PREFIX)
    }

    /// An index snapshot; `name` sorts by time (`<unix ms, 20 digits>-<random>`).
    pub fn index_snapshot(tenant: &TenantId, version: u32, name: &str) -> Self {
        Self::new(format!(
            "{}{name}",
            Self::index_snapshots_of_version(tenant, version)
        ))
    }

    /// Prefix of a tenant's audit checkpoints.
    pub fn audit_checkpoints_prefix(tenant: &TenantId) -> String {
        format!("tenants/{tenant}/audit/checkpoints/")
    }

    /// The checkpoint of the audit log at `tree_size` segments.
    pub fn audit_checkpoint(tenant: &TenantId, tree_size: u64) -> Self {
        Self::new(format!(
            "tenants/{tenant}/audit/checkpoints/{tree_size:020}"
        ))
    }

    /// The wrapped seed of the audit signing key.
    pub fn audit_signing_key() -> Self {
        Self::new("system/audit-signing/key".to_owned())
    }

    /// The audit signing public key (hex).
    pub fn audit_public_key() -> Self {
        Self::new("system/audit-signing/public".to_owned())
    }

    /// A backup repository's record.
    pub fn backup_config() -> Self {
        Self::new("config".to_owned())
    }

    /// Prefix of a backup repository's manifests.
    pub const BACKUP_SNAPSHOTS_PREFIX: &'static str = "snapshots/";

    /// Prefix of a backup repository's data objects.
    pub const BACKUP_DATA_PREFIX: &'static str = "data/";

    /// Prefix of a backup repository's packs (format v2).
    pub const BACKUP_PACKS_PREFIX: &'static str = "packs/";

    /// Prefix of a backup repository's manifest chunks (format v2).
    pub const BACKUP_CHUNKS_PREFIX: &'static str = "chunks/";

    /// Prefix of a backup repository's relocation records (format v2).
    pub const BACKUP_RELOCATIONS_PREFIX: &'static str = "relocations/";

    /// Prefix of a backup repository's legal holds.
    pub const BACKUP_HOLDS_PREFIX: &'static str = "holds/";

    /// A snapshot's manifest (`id` checked by the caller: lowercase hex, digits, `-`).
    pub fn backup_snapshot(id: &str) -> Self {
        Self::new(format!("snapshots/{id}"))
    }

    /// Prefix of a backup repository's locks.
    pub const BACKUP_LOCKS_PREFIX: &'static str = "locks/";

    /// Prefix of the leases on a tenant's shared work of one scope (`keys`,
    /// `index-key`): which replica rotates or rewraps its keys. Never in a backup.
    pub fn tenant_lease_prefix(tenant: &TenantId, scope: &str) -> String {
        format!("system/leases/{tenant}/{scope}/")
    }

    /// Prefix of the leases on the vault's own shared work of one scope
    /// (`leftovers`).
    pub fn vault_lease_prefix(scope: &str) -> String {
        format!("system/leases/_vault/{scope}/")
    }

    /// The leftovers collector's record of its last finished pass: its time in
    /// the store says when, so replicas started one after another do not each
    /// list every document again ([`crate::leftovers`]).
    pub fn leftovers_last_pass() -> Self {
        Self::new(format!("{}last-pass", Self::LEFTOVERS_PREFIX))
    }

    /// Prefix of the leftovers collector's records (left out of backups: a
    /// restored one would only delay the restored vault's first pass).
    pub const LEFTOVERS_PREFIX: &'static str = "system/leftovers/";

    /// Prefix of every lease of the vault (left out of backups).
    pub const LEASES_PREFIX: &'static str = "system/leases/";

    /// Prefix of the jobs every replica publishes for the others
    /// ([`crate::jobs::JobBoard`]): about the running replicas, never in a
    /// backup.
    pub const JOBS_PREFIX: &'static str = "system/jobs/";

    /// A published job record (`id`: `job_` and 32 hex digits, checked by the
    /// caller).
    pub fn job(id: &str) -> Self {
        Self::new(format!("{}{id}", Self::JOBS_PREFIX))
    }

    /// An operator's request to cancel a job that runs on another replica.
    pub fn job_cancel(id: &str) -> Self {
        Self::new(format!("{}{id}.cancel", Self::JOBS_PREFIX))
    }

    /// A lease object under `prefix` (one of the lease prefixes above; `id`:
    /// lowercase hex and `-`, made by the lease).
    pub fn lease(prefix: &str, id: &str) -> Self {
        Self::new(format!("{prefix}{id}"))
    }

    /// A lock on a backup repository (`id`: lowercase hex and `-`, made by the lock).
    pub fn backup_lock(id: &str) -> Self {
        Self::new(format!("locks/{id}"))
    }

    /// A legal hold on a snapshot.
    pub fn backup_hold(id: &str) -> Self {
        Self::new(format!("holds/{id}"))
    }

    /// A content-addressed object of a backup repository.
    pub fn backup_data(sha256_hex: &str) -> Self {
        let fan_out = sha256_hex.get(..2).unwrap_or("00");
        Self::new(format!("data/{fan_out}/{sha256_hex}"))
    }

    /// A pack of a backup repository, named by its hash.
    pub fn backup_pack(sha256_hex: &str) -> Self {
        let fan_out = sha256_hex.get(..2).unwrap_or("00");
        Self::new(format!("packs/{fan_out}/{sha256_hex}"))
    }

    /// A manifest chunk of a backup repository, named by its hash.
    pub fn backup_chunk(sha256_hex: &str) -> Self {
        let fan_out = sha256_hex.get(..2).unwrap_or("00");
        Self::new(format!("chunks/{fan_out}/{sha256_hex}"))
    }

    /// Where a repacked pack's blobs went, named by the old pack's hash.
    pub fn backup_relocation(pack_sha256_hex: &str) -> Self {
        let fan_out = pack_sha256_hex.get(..2).unwrap_or("00");
        Self::new(format!("relocations/{fan_out}/{pack_sha256_hex}"))
    }

    /// The last path component (a snapshot id, a hash).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// Idempotency record (the key is hashed: callers may put anything in it).
    pub fn idempotency(tenant: &TenantId, key_hash_hex: &str) -> Self {
        Self::new(format!("tenants/{tenant}/idempotency/{key_hash_hex}"))
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectName({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_reject_traversal() {
        let t = TenantId::new("acme").unwrap();
        let d = DocumentId::random();
        for name in [
            ObjectName::doc_body(&t, &d),
            ObjectName::tenant_key(&t, TenantKeyKind::Branch, 3),
            ObjectName::tenant(&t),
        ] {
            assert!(ObjectName::is_valid(name.as_str()), "{name}");
        }
        for bad in [
            "",
            "/system/x",
            "a//b",
            "../x",
            "a/../b",
            "./x",
            "a/./b",
            "a/.",
            "A/b",
            "a b",
        ] {
            assert!(!ObjectName::is_valid(bad), "{bad}");
        }
        assert!(ObjectName::is_valid("a/.b"));
        assert_eq!(ObjectName::doc_meta(&t, &d).meta_document(), Some(d));
        assert_eq!(ObjectName::doc_body(&t, &d).meta_document(), None);
        assert_eq!(ObjectName::doc_key(&t, &d).key_document(), Some(d));
        assert_eq!(ObjectName::doc_meta(&t, &d).key_document(), None);
        assert_eq!(
            ObjectName::audit_segment(&t, 42).audit_segment_index(),
            Some(42)
        );
        assert!(ObjectName::audit_segment(&t, 42)
            .as_str()
            .starts_with(&ObjectName::audit_segments_prefix(&t)));
        let tombstone = ObjectName::tombstone(&t, &d);
        assert!(tombstone
            .as_str()
            .starts_with(&ObjectName::tombstones_prefix(&t)));
        assert_eq!(
            ObjectName::tombstone_of(tombstone.as_str()),
            Some(("acme", d))
        );
        assert_eq!(ObjectName::document_object_of(tombstone.as_str()), None);
        for name in [
            ObjectName::doc_body(&t, &d),
            ObjectName::doc_key(&t, &d),
            ObjectName::doc_meta(&t, &d),
            ObjectName::doc_hold(&t, &d),
        ] {
            assert_eq!(
                ObjectName::document_object_of(name.as_str()),
                Some(("acme", d)),
                "{name}"
            );
            assert_eq!(ObjectName::tombstone_of(name.as_str()), None, "{name}");
        }
        for other in [
            ObjectName::tenant(&t),
            ObjectName::audit_segment(&t, 1),
            ObjectName::tenant_key(&t, TenantKeyKind::Branch, 1),
        ] {
            assert_eq!(ObjectName::document_object_of(other.as_str()), None);
            assert_eq!(ObjectName::tombstone_of(other.as_str()), None);
        }
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "Tenants/x", "a b"] {
            assert!(ObjectName::parse(bad).is_none(), "{bad}");
        }
    }
}
