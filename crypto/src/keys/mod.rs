//! Key formats and contexts: which tenant key a record holds, its wrapped form
//! (tenant key records), and the encryption context every KEK operation is bound
//! to. The providers that hold KEKs and the cached hierarchy live in `vault-keys`.

mod context;
mod tenant_key_record;

pub use context::{EncryptionContext, Purpose};
pub use tenant_key_record::{TenantKeyKind, TenantKeyRecord, TENANT_KEY_MAGIC};
