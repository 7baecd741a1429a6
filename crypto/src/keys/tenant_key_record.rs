//! Tenant key records, v1: a tenant's branch key or index root key, wrapped by its KEK.
//!
//! ```text
//! "BVTK" | u16 version (1) | u8 kind | tenant (u8 len + bytes) | u32 key version
//! provider (u8 len + bytes) | KEK id (u16 len + bytes) | wrapped key (u32 len + bytes)
//! ```

use crate::envelope::FORMAT_V1;
use crate::wire::{put_short_str, put_str16, Reader};
use crate::{CryptoError, TenantId};

/// Magic of tenant key records. FORMAT CONSTANT.
pub const TENANT_KEY_MAGIC: [u8; 4] = *b"BVTK";
const WHAT: &str = "tenant key record";

/// Which tenant key a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TenantKeyKind {
    /// Wraps document DEKs.
    Branch,
    /// Root of the blind-index field keys.
    IndexRoot,
}

impl TenantKeyKind {
    fn code(self) -> u8 {
        // FORMAT CONSTANT: stored in records.
        match self {
            TenantKeyKind::Branch => 1,
            TenantKeyKind::IndexRoot => 2,
        }
    }

    /// Name used in storage paths.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantKeyKind::Branch => "branch",
            TenantKeyKind::IndexRoot => "index-root",
        }
    }

    /// The purpose its wrapping is bound to.
    pub fn purpose(self) -> super::Purpose {
        match self {
            TenantKeyKind::Branch => super::Purpose::BranchKey,
            TenantKeyKind::IndexRoot => super::Purpose::IndexRoot,
        }
    }
}

/// A wrapped tenant key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantKeyRecord {
    /// Which key.
    pub kind: TenantKeyKind,
    /// Tenant.
    pub tenant: TenantId,
    /// Key version.
    pub version: u32,
    /// Provider that wrapped it.
    pub provider: String,
    /// KEK that wrapped it.
    pub kek_id: String,
    /// Provider-specific wrapped bytes (not secret).
    pub wrapped: Vec<u8>,
}

impl TenantKeyRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.wrapped.len() + self.kek_id.len());
        out.extend_from_slice(&TENANT_KEY_MAGIC);
        out.extend_from_slice(&FORMAT_V1.to_be_bytes());
        out.push(self.kind.code());
        put_short_str(&mut out, self.tenant.as_str());
        out.extend_from_slice(&self.version.to_be_bytes());
        put_short_str(&mut out, &self.provider);
        put_str16(&mut out, &self.kek_id);
        out.extend_from_slice(&(self.wrapped.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.wrapped);
        out
    }

    /// Parses a record.
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let mut reader = Reader::new(bytes, WHAT);
        reader.expect_magic_and_version(TENANT_KEY_MAGIC, FORMAT_V1)?;
        let kind = match reader.u8()? {
            1 => TenantKeyKind::Branch,
            2 => TenantKeyKind::IndexRoot,
            other => {
                return Err(CryptoError::malformed(
                    WHAT,
                    format!("unknown key kind {other}"),
                ))
            }
        };
        let tenant = TenantId::new(reader.short_str()?)
            .map_err(|_| CryptoError::malformed(WHAT, "invalid tenant id"))?;
        let version = reader.u32()?;
        let provider = reader.short_str()?.to_owned();
        let kek_id = reader.str16()?.to_owned();
        let len = reader.u32()? as usize;
        if len > 64 * 1024 {
            return Err(CryptoError::malformed(WHAT, "wrapped key too long"));
        }
        let wrapped = reader.take(len)?.to_vec();
        reader.expect_end()?;
        Ok(TenantKeyRecord {
            kind,
            tenant,
            version,
            provider,
            kek_id,
            wrapped,
        })
    }
}
