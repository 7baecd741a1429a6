//! An object store in memory, with fault injection: the store of the core's unit
//! tests. It keeps the [`ObjectStore`] contract (create-only puts, atomic
//! replace, name-ordered listing) and can be told to fail the nth call of an
//! operation, fail every call under a prefix, delay calls, or tear the next write
//! (store only part of the body and report failure, as a store without atomic
//! writes would after a crash). The e2e suite keeps driving the real binary on
//! the file system and on S3 (moto).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{collect, ByteStream, ObjectInfo, ObjectName, ObjectStore, StorageError};

/// The operations faults can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `put_new`, `put_new_deferred`, `put_new_bytes`.
    Put,
    /// `replace`.
    Replace,
    /// `get`, `get_range`, `get_bytes`.
    Get,
    /// `head`.
    Head,
    /// `list`.
    List,
    /// `delete`, `delete_all_versions`.
    Delete,
}

/// A planned failure.
#[derive(Clone, Debug)]
enum Fault {
    /// The call that makes the op's count reach this fails (once).
    Nth(u64),
    /// Every call on a name under this prefix fails until cleared.
    Prefix(String),
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Bytes>,
    /// When each object was written.
    modified: BTreeMap<String, time::OffsetDateTime>,
    calls: HashMap<Op, u64>,
    faults: HashMap<Op, Vec<Fault>>,
    delays: HashMap<Op, Duration>,
    tear_next_write: bool,
    /// Objects listings leave out (as a listing made during writes may).
    unlisted: std::collections::BTreeSet<String>,
}

/// An object store in memory (see the module documentation).
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

fn injected(op: Op, name: &str) -> StorageError {
    StorageError::Backend(format!("injected fault: {op:?} {name}"))
}

impl MemoryStore {
    /// An empty store with no faults.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails the `n`th call of `op` from now (1 is the next call), once.
    pub fn fail_nth(&self, op: Op, n: u64) {
        let mut state = self.lock();
        let at = state.calls.get(&op).copied().unwrap_or(0) + n.max(1);
        state.faults.entry(op).or_default().push(Fault::Nth(at));
    }

    /// Fails every call of `op` on names starting with `prefix` until
    /// [`MemoryStore::clear_faults`].
    pub fn fail_prefix(&self, op: Op, prefix: &str) {
        self.lock()
            .faults
            .entry(op)
            .or_default()
            .push(Fault::Prefix(prefix.to_owned()));
    }

    /// Delays every call of `op` by `delay` (zero removes the delay).
    pub fn delay(&self, op: Op, delay: Duration) {
        self.lock().delays.insert(op, delay);
    }

    /// The next write (`put_new*` or `replace`) stores the first half of its
    /// body under its name and then fails.
    pub fn tear_next_write(&self) {
        self.lock().tear_next_write = true;
    }

    /// Removes every planned fault, delay and tear.
    pub fn clear_faults(&self) {
        let mut state = self.lock();
        state.faults.clear();
        state.delays.clear();
        state.tear_next_write = false;
        state.unlisted.clear();
    }

    /// Leaves `name` out of listings (still readable), as a filesystem listing
    /// made while names are added may leave out one made during the walk.
    pub fn leave_out_of_listings(&self, name: &str) {
        self.lock().unlisted.insert(name.to_owned());
    }

    /// Calls of `op` so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Names of every stored object, in order.
    pub fn names(&self) -> Vec<String> {
        self.lock().objects.keys().cloned().collect()
    }

    /// Makes every object under `prefix` look written `age` ago.
    pub fn age(&self, prefix: &str, age: Duration) {
        let at = time::OffsetDateTime::now_utc() - age;
        let mut state = self.lock();
        let names: Vec<String> = state
            .objects
            .keys()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect();
        for name in names {
            state.modified.insert(name, at);
        }
    }

    /// Counts the call and applies its delay and faults.
    async fn enter(&self, op: Op, name: &str) -> Result<(), StorageError> {
        let (delay, failed) = {
            let mut state = self.lock();
            let count = {
                let calls = state.calls.entry(op).or_insert(0);
                *calls += 1;
                *calls
            };
            let delay = state.delays.get(&op).copied();
            let faults = state.faults.entry(op).or_default();
            let mut failed = false;
            faults.retain(|fault| match fault {
                Fault::Nth(at) if *at == count => {
                    failed = true;
                    false
                }
                Fault::Prefix(prefix) if name.starts_with(prefix.as_str()) => {
                    failed = true;
                    true
                }
                _ => true,
            });
            (delay, failed)
        };
        if let Some(delay) = delay.filter(|d| !d.is_zero()) {
            tokio::time::sleep(delay).await;
        }
        if failed {
            return Err(injected(op, name));
        }
        Ok(())
    }

    /// Stores `bytes` (or half of them when a tear is planned, then fails).
    fn write(
        &self,
        name: &ObjectName,
        bytes: Bytes,
        create_only: bool,
    ) -> Result<(), StorageError> {
        let mut state = self.lock();
        if create_only && state.objects.contains_key(name.as_str()) {
            return Err(StorageError::AlreadyExists(name.as_str().to_owned()));
        }
        if std::mem::take(&mut state.tear_next_write) {
            let torn = bytes.slice(..bytes.len() / 2);
            state.objects.insert(name.as_str().to_owned(), torn);
            state
                .modified
                .insert(name.as_str().to_owned(), time::OffsetDateTime::now_utc());
            return Err(StorageError::Backend(format!(
                "injected torn write: {}",
                name.as_str()
            )));
        }
        state.objects.insert(name.as_str().to_owned(), bytes);
        state
            .modified
            .insert(name.as_str().to_owned(), time::OffsetDateTime::now_utc());
        Ok(())
    }

    fn read(&self, name: &ObjectName) -> Option<Bytes> {
        self.lock().objects.get(name.as_str()).cloned()
    }
}

fn once(bytes: Bytes) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(bytes) }))
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put_new(&self, name: &ObjectName, body: ByteStream) -> Result<u64, StorageError> {
        self.enter(Op::Put, name.as_str()).await?;
        // The whole body first: nothing is visible unless all of it arrived.
        let bytes = collect(body, usize::MAX).await?;
        let size = bytes.len() as u64;
        self.write(name, bytes, true)?;
        Ok(size)
    }

    async fn replace(&self, name: &ObjectName, bytes: Bytes) -> Result<(), StorageError> {
        self.enter(Op::Replace, name.as_str()).await?;
        self.write(name, bytes, false)
    }

    async fn get(&self, name: &ObjectName) -> Result<ByteStream, StorageError> {
        self.enter(Op::Get, name.as_str()).await?;
        self.read(name)
            .map(once)
            .ok_or_else(|| StorageError::NotFound(name.as_str().to_owned()))
    }

    async fn get_range(
        &self,
        name: &ObjectName,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        self.enter(Op::Get, name.as_str()).await?;
        let bytes = self
            .read(name)
            .ok_or_else(|| StorageError::NotFound(name.as_str().to_owned()))?;
        let len = bytes.len() as u64;
        if range.start > range.end || range.end > len {
            return Err(StorageError::Backend(format!(
                "range {range:?} outside object of {len} bytes"
            )));
        }
        // Both ends are at most the object's length, which is a usize.
        let (start, end) = (range.start as usize, range.end as usize);
        Ok(once(bytes.slice(start..end)))
    }

    async fn get_bytes(&self, name: &ObjectName) -> Result<Option<Bytes>, StorageError> {
        self.enter(Op::Get, name.as_str()).await?;
        Ok(self.read(name))
    }

    async fn head(&self, name: &ObjectName) -> Result<Option<ObjectInfo>, StorageError> {
        self.enter(Op::Head, name.as_str()).await?;
        let modified = self.lock().modified.get(name.as_str()).copied();
        Ok(self.read(name).map(|bytes| ObjectInfo {
            name: name.clone(),
            size: bytes.len() as u64,
            modified,
        }))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>, StorageError> {
        self.enter(Op::List, prefix).await?;
        let state = self.lock();
        Ok(state
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .filter(|(name, _)| !state.unlisted.contains(name.as_str()))
            .filter(|(name, _)| start_after.is_none_or(|after| name.as_str() > after))
            .take(limit)
            .filter_map(|(name, bytes)| {
                Some(ObjectInfo {
                    name: ObjectName::parse(name)?,
                    size: bytes.len() as u64,
                    modified: state.modified.get(name).copied(),
                })
            })
            .collect())
    }

    async fn delete(&self, name: &ObjectName) -> Result<(), StorageError> {
        self.enter(Op::Delete, name.as_str()).await?;
        self.lock().objects.remove(name.as_str());
        Ok(())
    }

    async fn check(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::list_all;
    use vault_crypto::TenantId;

    fn name(i: u64) -> ObjectName {
        ObjectName::audit_segment(&TenantId::new("acme").unwrap(), i)
    }

    #[tokio::test]
    async fn keeps_the_store_contract() {
        let store = MemoryStore::new();
        store
            .put_new_bytes(&name(1), Bytes::from_static(b"one"))
            .await
            .unwrap();
        assert!(matches!(
            store
                .put_new_bytes(&name(1), Bytes::from_static(b"two"))
                .await,
            Err(StorageError::AlreadyExists(_))
        ));
        store
            .replace(&name(1), Bytes::from_static(b"uno"))
            .await
            .unwrap();
        assert_eq!(store.get_bytes(&name(1)).await.unwrap().unwrap(), "uno");
        let range = collect(store.get_range(&name(1), 1..3).await.unwrap(), 10)
            .await
            .unwrap();
        assert_eq!(range, "no");
        assert!(store.get_range(&name(1), 2..9).await.is_err());
        assert!(matches!(
            store.get(&name(2)).await.err(),
            Some(StorageError::NotFound(_))
        ));
        for i in 2..7 {
            store
                .put_new_bytes(&name(i), Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        let prefix = ObjectName::audit_segments_prefix(&TenantId::new("acme").unwrap());
        let page = store
            .list(&prefix, Some(name(2).as_str()), 2)
            .await
            .unwrap();
        let listed: Vec<_> = page.iter().map(|i| i.name.clone()).collect();
        assert_eq!(listed, vec![name(3), name(4)]);
        assert_eq!(list_all(&store, &prefix, None).await.unwrap().len(), 6);
        store.delete(&name(6)).await.unwrap();
        store.delete(&name(6)).await.unwrap();
        assert!(store.head(&name(6)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failing_body_stores_nothing() {
        let store = MemoryStore::new();
        let body: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"part")),
            Err(StorageError::SourceFailed("client went away".into())),
        ]));
        assert!(store.put_new(&name(1), body).await.is_err());
        assert!(store.names().is_empty());
    }

    #[tokio::test]
    async fn faults_fire_where_planned() {
        let store = MemoryStore::new();
        store.fail_nth(Op::Put, 2);
        store
            .put_new_bytes(&name(1), Bytes::from_static(b"a"))
            .await
            .unwrap();
        assert!(store
            .put_new_bytes(&name(2), Bytes::from_static(b"b"))
            .await
            .is_err());
        store
            .put_new_bytes(&name(2), Bytes::from_static(b"b"))
            .await
            .unwrap();
        assert_eq!(store.calls(Op::Put), 3);

        store.fail_prefix(Op::Get, name(2).as_str());
        assert!(store.get_bytes(&name(2)).await.is_err());
        assert!(store.get_bytes(&name(2)).await.is_err());
        assert!(store.get_bytes(&name(1)).await.unwrap().is_some());
        store.clear_faults();
        assert!(store.get_bytes(&name(2)).await.unwrap().is_some());

        store.tear_next_write();
        assert!(store
            .replace(&name(1), Bytes::from_static(b"abcd"))
            .await
            .is_err());
        assert_eq!(store.get_bytes(&name(1)).await.unwrap().unwrap(), "ab");
        store
            .replace(&name(1), Bytes::from_static(b"abcd"))
            .await
            .unwrap();
        assert_eq!(store.get_bytes(&name(1)).await.unwrap().unwrap(), "abcd");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_hold_the_call() {
        let store = MemoryStore::new();
        store.delay(Op::Head, Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        assert!(store.head(&name(1)).await.unwrap().is_none());
        assert!(started.elapsed() >= Duration::from_secs(30));
    }
}
