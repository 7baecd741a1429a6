//! Object storage behind one trait: create-only puts, streamed and ranged gets,
//! head, list by prefix, delete. Backends: [`fs::FsStore`] (embedded default),
//! [`s3::S3Store`] and, for unit tests with injected faults, [`memory::MemoryStore`].
//! Object names carry tenant ids and opaque document ids only.

pub mod circuit_breaker;
pub mod fs;
pub mod keys;
pub mod lease;
pub mod memory;
pub mod names;
pub mod retry;
pub mod s3;
pub mod sink;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use sha2::Digest;

pub use names::ObjectName;

/// Where an offline command finds a store: `s3://bucket/prefix` (endpoint and
/// credentials from the standard AWS environment), a vault data directory (its
/// `objects/` folder), or an objects directory itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory.
    Fs(std::path::PathBuf),
    /// A bucket and key prefix.
    S3 {
        /// Bucket.
        bucket: String,
        /// Prefix inside it.
        prefix: String,
    },
}

impl StoreLocation {
    /// Parses `--store`.
    pub fn parse(raw: &str) -> Result<StoreLocation, StorageError> {
        match raw.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(StorageError::Backend(
                        "an S3 store is s3://bucket/prefix".into(),
                    ));
                }
                Ok(StoreLocation::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                })
            }
            None => {
                let dir = std::path::PathBuf::from(raw);
                let objects = dir.join("objects");
                Ok(StoreLocation::Fs(
                    if objects.is_dir() && !dir.join("system").is_dir() {
                        objects
                    } else {
                        dir
                    },
                ))
            }
        }
    }

    /// Opens the store without changing it.
    pub async fn open(&self) -> Result<std::sync::Arc<dyn ObjectStore>, StorageError> {
        Ok(match self {
            StoreLocation::Fs(root) => std::sync::Arc::new(fs::FsStore::open_existing(root)?),
            StoreLocation::S3 { bucket, prefix } => std::sync::Arc::new(
                s3::S3Store::new(bucket, prefix, None, None, 16 * 1024 * 1024).await,
            ),
        })
    }
}

/// Objects listed per store call by the default [`ObjectStore::list_pages`].
const LIST_PAGE: usize = 1000;

/// Every object under `prefix` after `start_after`, in name order (for listings
/// known to be small: it holds them all).
pub async fn list_all(
    store: &dyn ObjectStore,
    prefix: &str,
    start_after: Option<&str>,
) -> Result<Vec<ObjectInfo>, StorageError> {
    use futures::TryStreamExt;
    let mut all = Vec::new();
    let mut pages = store.list_pages(prefix, start_after);
    while let Some(page) = pages.try_next().await? {
        all.extend(page);
    }
    Ok(all)
}

/// A stream of object bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

/// What storage reports about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its name.
    pub name: ObjectName,
    /// Size in bytes.
    pub size: u64,
    /// When it was written, where the backend says.
    pub modified: Option<time::OffsetDateTime>,
}

/// Storage failures. Messages name objects (which carry no PHI), never contents.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A create-only write found the object already there.
    #[error("object {0} already exists")]
    AlreadyExists(String),
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(String),
    /// The body stream being stored failed (client went away, too large, ...).
    #[error("upload aborted: {0}")]
    SourceFailed(String),
    /// The body exceeded the allowed size.
    #[error("body exceeds the limit of {0} bytes")]
    TooLarge(u64),
    /// The backend failed (unreachable, timed out, refused): a retry may succeed.
    #[error("storage backend: {0}")]
    Backend(String),
    /// The backend is out of space (a full disk or quota).
    #[error("storage full: {0}")]
    Full(String),
    /// A conditional replace found the object changed since it was read.
    #[error("object {0} changed since it was read")]
    Changed(String),
}

/// An object store.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores a new object from a stream; fails with `AlreadyExists` when the name is
    /// taken. Nothing is visible under `name` unless the whole body was stored
    /// durably. Returns the stored size.
    async fn put_new(&self, name: &ObjectName, body: ByteStream) -> Result<u64, StorageError>;

    /// Like [`ObjectStore::put_new`], but the object may stay in the operating
    /// system's cache until [`ObjectStore::sync`]: for bulk copies (a backup's data
    /// objects), which make everything durable with one `sync` before they write
    /// the record that refers to it. A crash before `sync` may leave such an
    /// object torn, so whoever finds it unreferenced must check it first.
    async fn put_new_deferred(
        &self,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        self.put_new(name, body).await
    }

    /// Makes every deferred write durable (a no-op where writes always are).
    async fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Extends an existing object's Object Lock retention to what a write made now
    /// would get, so that a backup reusing an object keeps it locked as long as the
    /// objects it writes. A no-op on stores without Object Lock; S3 only ever
    /// lengthens a retention this way.
    async fn extend_lock(&self, _name: &ObjectName) -> Result<(), StorageError> {
        Ok(())
    }

    /// Stores a small new object (create-only).
    async fn put_new_bytes(&self, name: &ObjectName, bytes: Bytes) -> Result<(), StorageError> {
        let size = bytes.len();
        let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
        let stored = self.put_new(name, stream).await?;
        debug_assert_eq!(stored, size as u64);
        Ok(())
    }

    /// Replaces a small object atomically (readers see old or new, never a mix).
    async fn replace(&self, name: &ObjectName, bytes: Bytes) -> Result<(), StorageError>;

    /// Streams a whole object.
    async fn get(&self, name: &ObjectName) -> Result<ByteStream, StorageError>;

    /// Streams a byte range of an object.
    async fn get_range(
        &self,
        name: &ObjectName,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError>;

    /// Reads a small object whole; `None` when it does not exist.
    async fn get_bytes(&self, name: &ObjectName) -> Result<Option<Bytes>, StorageError>;

    /// Size of an object; `None` when it does not exist.
    async fn head(&self, name: &ObjectName) -> Result<Option<ObjectInfo>, StorageError>;

    /// Objects whose names start with `prefix`, in name order, after `start_after`.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>, StorageError>;

    /// Every object whose name starts with `prefix`, after `start_after`, in
    /// name order, as a stream of non-empty pages: a listing of any length in
    /// the memory of a page. By default, [`ObjectStore::list`] a page at a time.
    fn list_pages(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> BoxStream<'_, Result<Vec<ObjectInfo>, StorageError>> {
        let prefix = prefix.to_owned();
        let start = (start_after.map(str::to_owned), false);
        Box::pin(futures::stream::try_unfold(start, move |(after, done)| {
            let prefix = prefix.clone();
            async move {
                if done {
                    return Ok(None);
                }
                let page = self.list(&prefix, after.as_deref(), LIST_PAGE).await?;
                let Some(last) = page.last() else {
                    return Ok(None);
                };
                let next = (Some(last.name.as_str().to_owned()), page.len() < LIST_PAGE);
                Ok(Some((page, next)))
            }
        }))
    }

    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, name: &ObjectName) -> Result<(), StorageError>;

    /// Deletes an object and, where the store keeps earlier versions (an S3
    /// bucket with versioning), every version and delete marker of it, so no copy
    /// of it remains in the store. Deleting a missing object succeeds.
    async fn delete_all_versions(&self, name: &ObjectName) -> Result<(), StorageError> {
        self.delete(name).await
    }

    /// Answers whether the backend is reachable and writable (readiness).
    async fn check(&self) -> Result<(), StorageError>;

    /// The object's bytes and a version that changes whenever it is replaced;
    /// `None` when it does not exist. (Here: the bytes' SHA-256. S3 gives its ETag.)
    async fn get_versioned(
        &self,
        name: &ObjectName,
    ) -> Result<Option<(Bytes, String)>, StorageError> {
        Ok(self.get_bytes(name).await?.map(|bytes| {
            let version = hex::encode(sha2::Sha256::digest(&bytes));
            (bytes, version)
        }))
    }

    /// Replaces the object only if its version is still `expected` (from
    /// [`ObjectStore::get_versioned`]); [`StorageError::Changed`] otherwise. This
    /// default compares and replaces under one lock of this process: right for
    /// stores only this process writes (a filesystem store belongs to one server,
    /// `data_dir_lock.rs`); a store shared between processes must override it
    /// with a conditional write of its own (S3: `If-Match`).
    async fn replace_if(
        &self,
        name: &ObjectName,
        bytes: Bytes,
        expected: &str,
    ) -> Result<(), StorageError> {
        static LOCAL_REPLACE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _held = LOCAL_REPLACE.lock().await;
        match self.get_versioned(name).await? {
            Some((_, version)) if version == expected => self.replace(name, bytes).await,
            Some(_) => Err(StorageError::Changed(name.to_string())),
            None => Err(StorageError::NotFound(name.to_string())),
        }
    }

    /// How long a write may still land after the process that sent it died: none
    /// for stores the process writes itself (a file is renamed into place or
    /// not), the time limit of one request attempt for a remote store, which may
    /// carry out a request whose sender is gone.
    fn write_settle_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Reads an object whole if it holds at most `limit` bytes; `None` when it does
/// not exist. For objects whose bytes are not trusted: a planted huge file is
/// refused at `limit`, not read into memory.
pub async fn get_bytes_at_most(
    store: &dyn ObjectStore,
    name: &ObjectName,
    limit: usize,
) -> Result<Option<Bytes>, StorageError> {
    match store.get(name).await {
        Ok(stream) => collect(stream, limit).await.map(Some),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a whole stream into memory (for small objects only).
pub async fn collect(mut stream: ByteStream, limit: usize) -> Result<Bytes, StorageError> {
    use futures::StreamExt;
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(StorageError::TooLarge(limit as u64));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_crypto::TenantId;

    #[tokio::test]
    async fn list_all_crosses_pages_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = fs::FsStore::open(dir.path()).await.unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let count = LIST_PAGE as u64 + 5;
        for i in 0..count {
            store
                .put_new_bytes(
                    &ObjectName::audit_segment(&tenant, i),
                    Bytes::from_static(b"x"),
                )
                .await
                .unwrap();
        }
        let prefix = ObjectName::audit_segments_prefix(&tenant);
        let all = list_all(&store, &prefix, None).await.unwrap();
        let indexes: Vec<u64> = all
            .iter()
            .filter_map(|i| i.name.audit_segment_index())
            .collect();
        assert_eq!(indexes, (0..count).collect::<Vec<_>>());
        let after = ObjectName::audit_segment(&tenant, 999);
        let rest = list_all(&store, &prefix, Some(after.as_str()))
            .await
            .unwrap();
        assert_eq!(rest.len(), 5);
    }
}
