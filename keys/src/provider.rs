//! The key provider trait: where tenant KEKs live.

use async_trait::async_trait;
use vault_crypto::keys::EncryptionContext;
use vault_crypto::{CryptoError, Key256, TenantId};

/// A place that holds tenant KEKs and wraps / unwraps data keys under them.
#[async_trait]
pub trait KeyProvider: Send + Sync + 'static {
    /// Provider id stored in key records: `local` or `aws-kms`. FORMAT CONSTANT.
    fn id(&self) -> &'static str;

    /// Makes sure the tenant has a KEK and returns its id. With `requested`, uses
    /// (and checks) that existing key instead of creating one.
    async fn ensure_tenant_key(
        &self,
        tenant: &TenantId,
        requested: Option<&str>,
    ) -> Result<String, CryptoError>;

    /// Generates a fresh 256-bit data key and returns it with its wrapped form.
    async fn generate_data_key(
        &self,
        kek_id: &str,
        context: &EncryptionContext,
    ) -> Result<(Key256, Vec<u8>), CryptoError>;

    /// Unwraps a data key; fails if the key, the context or the blob do not match.
    async fn decrypt_data_key(
        &self,
        kek_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Key256, CryptoError>;

    /// How many calls this provider has made to its key service (for metrics and
    /// for proving the cache works).
    fn call_count(&self) -> u64;
}
