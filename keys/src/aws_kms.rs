//! The `aws-kms` key provider: tenant KEKs are AWS KMS keys (ARN or alias). Every
//! call carries the encryption context `{tenant, purpose}`, which KMS binds to the
//! ciphertext and checks on decrypt.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_kms::Client;
use zeroize::Zeroize;

use vault_crypto::keys::EncryptionContext;
use vault_crypto::{CryptoError, Key256, TenantId};

use crate::KeyProvider;

/// Alias prefix of tenant keys created by the vault.
pub const TENANT_ALIAS_PREFIX: &str = "alias/vault/";

/// AWS KMS as a key provider.
#[derive(Debug)]
pub struct AwsKmsProvider {
    client: Client,
    calls: AtomicU64,
}

fn provider_err<E: std::error::Error + 'static>(e: E) -> CryptoError {
    CryptoError::Provider {
        provider: "aws-kms",
        message: DisplayErrorContext(e).to_string(),
    }
}

impl AwsKmsProvider {
    /// Uses an existing client.
    pub fn new(client: Client) -> Self {
        AwsKmsProvider {
            client,
            calls: AtomicU64::new(0),
        }
    }

    /// Builds a client from the standard AWS environment (`AWS_ENDPOINT_URL`,
    /// `AWS_REGION`, credentials chain).
    pub async fn from_env() -> Self {
        let config = aws_config::load_from_env().await;
        Self::new(Client::new(&config))
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Creates a new KMS key for `tenant` (tagged, no alias) and returns its id: the
    /// tenant's next KEK on rotation.
    pub async fn create_key(&self, tenant: &TenantId) -> Result<String, CryptoError> {
        self.count();
        let created = self
            .client
            .create_key()
            .description(format!("billing records vault: KEK of tenant {tenant}"))
            .tags(tenant_tag(tenant)?)
            .send()
            .await
            .map_err(provider_err)?;
        created
            .key_metadata()
            .map(|m| m.key_id().to_owned())
            .ok_or_else(|| CryptoError::Provider {
                provider: "aws-kms",
                message: "CreateKey returned no key".into(),
            })
    }

    /// Schedules the tenant's KMS key for deletion (crypto-shredding). Refused
    /// (`KeyInUse`) unless the key is tagged as this tenant's: the vault never
    /// deletes a key it did not give to this tenant.
    pub async fn schedule_key_deletion(
        &self,
        tenant: &TenantId,
        kek_id: &str,
        pending_days: i32,
    ) -> Result<(), CryptoError> {
        self.count();
        let key_id = self.resolve_key_id(kek_id).await?;
        if self.tenant_tag(&key_id).await?.as_deref() != Some(tenant.as_str()) {
            return Err(CryptoError::KeyInUse);
        }
        self.count();
        self.client
            .schedule_key_deletion()
            .key_id(key_id)
            .pending_window_in_days(pending_days)
            .send()
            .await
            .map_err(provider_err)?;
        Ok(())
    }

    /// The tenant a key is tagged for (`vault-tenant`), if any.
    async fn tenant_tag(&self, key_id: &str) -> Result<Option<String>, CryptoError> {
        let mut marker = None;
        loop {
            self.count();
            let page = self
                .client
                .list_resource_tags()
                .key_id(key_id)
                .set_marker(marker)
                .send()
                .await
                .map_err(provider_err)?;
            if let Some(tag) = page.tags().iter().find(|t| t.tag_key() == TENANT_TAG) {
                return Ok(Some(tag.tag_value().to_owned()));
            }
            match page.next_marker() {
                Some(next) if page.truncated() => marker = Some(next.to_owned()),
                _ => return Ok(None),
            }
        }
    }

    /// Claims a caller-supplied key for `tenant`: refused when it is tagged for
    /// another tenant, else tagged for this one, so no second tenant can claim it
    /// (offboarding one tenant would otherwise shred the other's documents).
    async fn claim_key(&self, tenant: &TenantId, key_id: &str) -> Result<(), CryptoError> {
        match self.tenant_tag(key_id).await? {
            Some(owner) if owner == tenant.as_str() => Ok(()),
            Some(_) => Err(CryptoError::KeyInUse),
            None => {
                self.count();
                self.client
                    .tag_resource()
                    .key_id(key_id)
                    .tags(tenant_tag(tenant)?)
                    .send()
                    .await
                    .map_err(provider_err)?;
                Ok(())
            }
        }
    }

    async fn resolve_key_id(&self, kek_id: &str) -> Result<String, CryptoError> {
        let described = self
            .client
            .describe_key()
            .key_id(kek_id)
            .send()
            .await
            .map_err(provider_err)?;
        described
            .key_metadata()
            .map(|m| m.key_id().to_owned())
            .ok_or_else(|| CryptoError::Provider {
                provider: "aws-kms",
                message: format!("key {kek_id} not found"),
            })
    }
}

/// The tag naming the tenant a KMS key belongs to.
const TENANT_TAG: &str = "vault-tenant";

fn tenant_tag(tenant: &TenantId) -> Result<aws_sdk_kms::types::Tag, CryptoError> {
    aws_sdk_kms::types::Tag::builder()
        .tag_key(TENANT_TAG)
        .tag_value(tenant.as_str())
        .build()
        .map_err(provider_err)
}

/// The plaintext data key of a KMS answer, its buffer zeroized; `None` when it is
/// not 32 bytes (each caller names that failure its own way).
fn plaintext_key(plaintext: Option<Blob>) -> Result<Option<Key256>, CryptoError> {
    let mut plaintext = plaintext
        .map(Blob::into_inner)
        .ok_or_else(|| CryptoError::Provider {
            provider: "aws-kms",
            message: "no plaintext key".into(),
        })?;
    let key = Key256::from_slice(&plaintext);
    plaintext.zeroize();
    Ok(key)
}

fn context_pairs(context: &EncryptionContext) -> [(String, String); 2] {
    [
        ("tenant".to_owned(), context.tenant.to_string()),
        ("purpose".to_owned(), context.purpose.as_str().to_owned()),
    ]
}

#[async_trait]
impl KeyProvider for AwsKmsProvider {
    fn id(&self) -> &'static str {
        "aws-kms"
    }

    async fn ensure_tenant_key(
        &self,
        tenant: &TenantId,
        requested: Option<&str>,
    ) -> Result<String, CryptoError> {
        if let Some(requested) = requested {
            self.count();
            let key_id = self.resolve_key_id(requested).await?;
            self.claim_key(tenant, &key_id).await?;
            return Ok(requested.to_owned());
        }
        let alias = format!("{TENANT_ALIAS_PREFIX}{tenant}");
        self.count();
        if self
            .client
            .describe_key()
            .key_id(&alias)
            .send()
            .await
            .is_ok()
        {
            return Ok(alias);
        }
        let key_id = self.create_key(tenant).await?;
        self.count();
        self.client
            .create_alias()
            .alias_name(&alias)
            .target_key_id(key_id)
            .send()
            .await
            .map_err(provider_err)?;
        Ok(alias)
    }

    async fn generate_data_key(
        &self,
        kek_id: &str,
        context: &EncryptionContext,
    ) -> Result<(Key256, Vec<u8>), CryptoError> {
        self.count();
        let mut request = self
            .client
            .generate_data_key()
            .key_id(kek_id)
            .key_spec(DataKeySpec::Aes256);
        for (k, v) in context_pairs(context) {
            request = request.encryption_context(k, v);
        }
        let output = request.send().await.map_err(provider_err)?;
        let wrapped = output
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| CryptoError::Provider {
                provider: "aws-kms",
                message: "no ciphertext blob".into(),
            })?;
        let key = plaintext_key(output.plaintext)?;
        let key = key.ok_or_else(|| CryptoError::Provider {
            provider: "aws-kms",
            message: "data key is not 32 bytes".into(),
        })?;
        Ok((key, wrapped))
    }

    async fn decrypt_data_key(
        &self,
        kek_id: &str,
        wrapped: &[u8],
        context: &EncryptionContext,
    ) -> Result<Key256, CryptoError> {
        self.count();
        let mut request = self
            .client
            .decrypt()
            .key_id(kek_id)
            .ciphertext_blob(Blob::new(wrapped));
        for (k, v) in context_pairs(context) {
            request = request.encryption_context(k, v);
        }
        let output = request.send().await.map_err(|e| {
            let refused = e.as_service_error().is_some_and(|s| {
                s.is_invalid_ciphertext_exception() || s.is_incorrect_key_exception()
            });
            if refused {
                CryptoError::UnwrapFailed("data key (KMS refused the ciphertext or its context)")
            } else {
                provider_err(e)
            }
        })?;
        let key = plaintext_key(output.plaintext)?;
        key.ok_or(CryptoError::UnwrapFailed("data key"))
    }

    fn call_count(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}
