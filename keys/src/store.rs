//! Where tenant key records are kept: implemented by the server over its object
//! store (this crate does no storage I/O itself). Records are create-only.

use async_trait::async_trait;
use vault_crypto::keys::TenantKeyKind;
use vault_crypto::{CryptoError, TenantId};

/// Persistence of tenant key records, implemented by the server over its object
/// store (the crypto crate does no storage I/O itself). Records are create-only.
#[async_trait]
pub trait TenantKeyStore: Send + Sync + 'static {
    /// Loads a record, if it exists.
    async fn load(
        &self,
        tenant: &TenantId,
        kind: TenantKeyKind,
        version: u32,
    ) -> Result<Option<Vec<u8>>, CryptoError>;

    /// Stores a record unless one exists already; returns false when it did.
    async fn create(
        &self,
        tenant: &TenantId,
        kind: TenantKeyKind,
        version: u32,
        record: Vec<u8>,
    ) -> Result<bool, CryptoError>;
}
