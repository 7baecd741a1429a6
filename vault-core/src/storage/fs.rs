//! The filesystem object store (embedded default).
//!
//! A put streams into `<root>/.tmp/<random>` (mode 0600), fsyncs it, then hard-links
//! it to its final name, which fails atomically if the name exists (create-only),
//! fsyncs the directory and removes the temporary name. So an object is visible
//! under its name only when complete and durable; a crash leaves at most a
//! temporary file, which the next start removes.
//!
//! A deferred put (`put_new_deferred`) skips the fsyncs; [`ObjectStore::sync`]
//! then makes it durable with one `syncfs` of the store's filesystem, shared by
//! every caller waiting at once (group commit): concurrent uploads pay one sync
//! for their bodies and key records together instead of several fsyncs each.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{ByteStream, ObjectInfo, ObjectName, ObjectStore, StorageError};

mod listing;

use listing::SortedWalk;

const TMP_DIR: &str = ".tmp";
/// Opens an object's file for reading. Only a regular file is an object: a
/// FIFO, device or symbolic link put in the store by hand is refused without
/// blocking (opening a FIFO to read waits for a writer) or being followed.
async fn open_object(path: &Path) -> std::io::Result<tokio::fs::File> {
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .await
        .map_err(|e| {
            // O_NOFOLLOW on a symbolic link fails with ELOOP.
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")
            } else {
                e
            }
        })?;
    if !file.metadata().await?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Objects per page of a streamed listing, and pages its walk may run ahead.
const WALK_PAGE: usize = 1000;
const WALK_PAGES_AHEAD: usize = 2;
/// Age after which a temporary file is a crash's leftover, not a write in progress.
const TMP_LEFTOVER_AGE: std::time::Duration = std::time::Duration::from_secs(600);
const READ_CHUNK: usize = 64 * 1024;
/// Bodies up to this size are written from memory in one blocking call.
const SMALL_OBJECT: usize = 256 * 1024;
/// Chunks a larger body's stream may run ahead of its writing thread (about
/// 1 MiB of 64 KiB segments: a slow disk holds the stream back).
const WRITE_QUEUE: usize = 16;

/// A temporary file of a streamed write. Dropping it removes the file, so a
/// request dropped at any point (after its stream ended, while the file is
/// linked) leaves nothing in `.tmp/` until the next start; after a link or a
/// rename the removal finds nothing. Its writing thread, which may still be
/// finishing, looks at `abandoned` after its last write and removes the file
/// itself: whichever comes second removes it.
struct TmpFile {
    path: PathBuf,
    abandoned: Arc<std::sync::atomic::AtomicBool>,
}

impl TmpFile {
    fn new(path: PathBuf) -> Self {
        TmpFile {
            path,
            abandoned: Arc::default(),
        }
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        self.abandoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // One unlink of a name in `.tmp/`: short enough for an async thread.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the stream hands its writing thread.
enum Piece {
    Chunk(Bytes),
    /// The stream ended whole: make the file durable (if asked) and keep it.
    End,
}

/// Objects as files under a root directory.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    tmp: PathBuf,
    group: GroupSync,
}

fn backend(e: std::io::Error) -> StorageError {
    // ENOSPC, EDQUOT: nothing a retry fixes until someone frees space.
    if matches!(e.raw_os_error(), Some(28 | 122)) {
        return StorageError::Full(e.to_string());
    }
    StorageError::Backend(e.to_string())
}

fn not_found_or(name: &ObjectName, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound(name.to_string())
    } else {
        backend(e)
    }
}

async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(|e| StorageError::Backend(e.to_string()))?
        .map_err(backend)
}

/// Creates `dir` and its missing ancestors below `root` one at a time; with
/// `durable`, fsyncing each new directory's parent after it is made (also when another writer made it
/// first: this writer's object must not depend on that writer's fsync). Returns
/// the parents it fsynced, outermost first.
fn create_dirs(root: &Path, dir: &Path, durable: bool) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = dir;
    while at != root && !at.is_dir() {
        missing.push(at.to_owned());
        match at.parent() {
            Some(parent) => at = parent,
            None => break,
        }
    }
    let mut synced = Vec::new();
    for new in missing.iter().rev() {
        match std::fs::create_dir(new) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && new.is_dir() => {}
            Err(e) => return Err(e),
        }
        match new.parent() {
            Some(parent) if durable => {
                std::fs::File::open(parent)?.sync_all()?;
                synced.push(parent.to_owned());
            }
            _ => {}
        }
    }
    Ok(synced)
}

/// One `syncfs` for every caller of [`ObjectStore::sync`] waiting at once.
///
/// A caller takes a ticket after its writes are done, then waits for the one
/// sync running at a time. The sync that covers it is one *started* after its
/// ticket: each sync reads the last ticket issued before it begins and, once it
/// succeeds, marks every ticket up to that one done. A failed sync marks
/// nothing; each waiting caller then tries its own.
#[derive(Debug, Default)]
struct GroupSync {
    issued: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicU64,
    running: tokio::sync::Mutex<()>,
    /// `syncfs` calls made.
    performed: std::sync::atomic::AtomicU64,
}

impl GroupSync {
    async fn sync(&self, root: &Path) -> Result<(), StorageError> {
        use std::sync::atomic::Ordering::SeqCst;
        let ticket = self.issued.fetch_add(1, SeqCst) + 1;
        let _running = self.running.lock().await;
        if self.done.load(SeqCst) >= ticket {
            return Ok(());
        }
        let covered = self.issued.load(SeqCst);
        crate::failpoints::crash_point(crate::failpoints::STORE_BEFORE_GROUP_SYNC);
        let root = root.to_owned();
        tokio::task::spawn_blocking(move || {
            let dir = std::fs::File::open(&root)?;
            rustix::fs::syncfs(&dir).map_err(std::io::Error::from)
        })
        .await
        .map_err(|e| StorageError::Backend(e.to_string()))?
        .map_err(backend)?;
        self.performed.fetch_add(1, SeqCst);
        self.done.fetch_max(covered, SeqCst);
        Ok(())
    }
}

impl FsStore {
    /// Opens (creating) a store rooted at `root` that this process alone writes,
    /// removing temporary files left by a crash.
    pub async fn open(root: &Path) -> Result<Self, StorageError> {
        Self::open_with(root, std::time::Duration::ZERO).await
    }

    /// Opens (creating) a store rooted at `root` that other processes write too
    /// (the key custody of replicas on one machine): only temporary files older
    /// than [`TMP_LEFTOVER_AGE`] are a crash's leftovers; a younger one may be
    /// another process's write in progress.
    pub async fn open_shared(root: &Path) -> Result<Self, StorageError> {
        Self::open_with(root, TMP_LEFTOVER_AGE).await
    }

    async fn open_with(
        root: &Path,
        leftover_age: std::time::Duration,
    ) -> Result<Self, StorageError> {
        let tmp = root.join(TMP_DIR);
        tokio::fs::create_dir_all(&tmp).await.map_err(backend)?;
        let mut leftovers = tokio::fs::read_dir(&tmp).await.map_err(backend)?;
        while let Some(entry) = leftovers.next_entry().await.map_err(backend)? {
            let old = entry
                .metadata()
                .await
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| at.elapsed().ok())
                .is_none_or(|age| age >= leftover_age);
            if !old {
                continue;
            }
            match tokio::fs::remove_file(entry.path()).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(FsStore {
            root: root.to_owned(),
            tmp,
            group: GroupSync::default(),
        })
    }

    /// Opens an existing store without changing anything in it (offline
    /// verification and restores read evidence; they must not alter it).
    pub fn open_existing(root: &Path) -> Result<Self, StorageError> {
        if !root.is_dir() {
            return Err(StorageError::Backend(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        Ok(FsStore {
            root: root.to_owned(),
            tmp: root.join(TMP_DIR),
            group: GroupSync::default(),
        })
    }

    fn path(&self, name: &ObjectName) -> PathBuf {
        self.root.join(name.as_str())
    }

    fn tmp_path(&self) -> PathBuf {
        self.tmp.join(hex::encode(rand::random::<[u8; 12]>()))
    }

    async fn write_tmp(&self, body: ByteStream) -> Result<(TmpFile, u64), StorageError> {
        self.write_tmp_with(body, true).await
    }

    /// Writes a temporary file; with `durable`, fsyncs it.
    async fn write_tmp_with(
        &self,
        mut body: ByteStream,
        durable: bool,
    ) -> Result<(TmpFile, u64), StorageError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = TmpFile::new(self.tmp_path());
        let abandoned = Arc::clone(&tmp.abandoned);
        let (chunks, mut received) = tokio::sync::mpsc::channel::<Piece>(WRITE_QUEUE);
        // The writes and the fsync run on one blocking thread while the stream
        // (a document body's encryption) is produced on the async side: the two
        // overlap, and no chunk is copied on the way. The file is removed there
        // unless the stream ended whole (an error, or the request dropped).
        let path = tmp.path.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let written = (|| {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                let mut size = 0u64;
                loop {
                    match received.blocking_recv() {
                        Some(Piece::Chunk(chunk)) => {
                            file.write_all(&chunk)?;
                            size += chunk.len() as u64;
                        }
                        Some(Piece::End) => break,
                        None => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::Interrupted,
                                "the stream stopped before its end",
                            ))
                        }
                    }
                }
                if durable {
                    file.sync_all()?;
                }
                // The request was dropped after its stream ended: nobody will
                // link or remove this file.
                if abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "the write was abandoned",
                    ));
                }
                Ok(size)
            })();
            if written.is_err() {
                let _ = std::fs::remove_file(&path);
            }
            written
        });
        let fed = async {
            while let Some(chunk) = body.next().await {
                if chunks.send(Piece::Chunk(chunk?)).await.is_err() {
                    // The writer failed: its error says why.
                    return Ok(());
                }
            }
            let _ = chunks.send(Piece::End).await;
            Ok::<(), StorageError>(())
        }
        .await;
        drop(chunks);
        let written = writer
            .await
            .map_err(|e| StorageError::Backend(e.to_string()))?;
        fed?;
        Ok((tmp, written.map_err(backend)?))
    }

    /// Creates the directories of `path` that are missing, each made durable in
    /// its parent (a new `docs/<id>/` entry is fsynced in `docs/`), so a power
    /// loss cannot take away the directory of an acknowledged object. (A directory
    /// seen here while another writer has made but not yet fsynced it is taken as
    /// it is: a window of one `create_dir`-to-`fsync` for concurrent writers into a
    /// new directory, which document ids, being random, make rare.)
    /// With `durable` false (a deferred put) the new directories are left to
    /// the next [`ObjectStore::sync`].
    async fn ensure_parent(&self, path: &Path, durable: bool) -> Result<PathBuf, StorageError> {
        let parent = path.parent().unwrap_or(&self.root).to_owned();
        if tokio::fs::metadata(&parent).await.is_ok_and(|m| m.is_dir()) {
            return Ok(parent);
        }
        let (root, dir) = (self.root.clone(), parent.clone());
        tokio::task::spawn_blocking(move || create_dirs(&root, &dir, durable))
            .await
            .map_err(|e| StorageError::Backend(e.to_string()))?
            .map_err(backend)?;
        Ok(parent)
    }
}

impl FsStore {
    /// A create-only put; `durable` fsyncs the file and its directory before it
    /// returns, otherwise [`ObjectStore::sync`] does.
    ///
    /// A body that ends within [`SMALL_OBJECT`] bytes is gathered first and
    /// written in one call on the blocking pool: a small document's objects
    /// then cost one thread hand-off each instead of one per file operation.
    async fn put_new_with(
        &self,
        name: &ObjectName,
        mut body: ByteStream,
        durable: bool,
    ) -> Result<u64, StorageError> {
        let mut gathered: Vec<Bytes> = Vec::new();
        let mut gathered_len = 0;
        while gathered_len <= SMALL_OBJECT {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    gathered_len += chunk.len();
                    gathered.push(chunk);
                }
                None => return self.put_small(name, gathered, durable).await,
            }
        }
        let body: ByteStream =
            Box::pin(futures::stream::iter(gathered.into_iter().map(Ok)).chain(body));
        let path = self.path(name);
        let (tmp, size) = self.write_tmp_with(body, durable).await?;
        let linked = async {
            let parent = self.ensure_parent(&path, durable).await?;
            match tokio::fs::hard_link(&tmp.path, &path).await {
                Ok(()) if durable => sync_dir(&parent).await,
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(StorageError::AlreadyExists(name.to_string()))
                }
                Err(e) => Err(backend(e)),
            }
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp.path).await;
        linked.map(|()| size)
    }

    /// [`FsStore::put_new_with`] for a body held in memory: the same steps
    /// (temporary file, fsync, directories, create-only link, fsync of the
    /// directory, temporary name removed) in one blocking call.
    async fn put_small(
        &self,
        name: &ObjectName,
        chunks: Vec<Bytes>,
        durable: bool,
    ) -> Result<u64, StorageError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let (path, tmp, root) = (self.path(name), self.tmp_path(), self.root.clone());
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(backend)?;
            let stored = (|| {
                let mut size = 0u64;
                for chunk in &chunks {
                    file.write_all(chunk).map_err(backend)?;
                    size += chunk.len() as u64;
                }
                if durable {
                    file.sync_all().map_err(backend)?;
                }
                let parent = path.parent().unwrap_or(&root);
                if !parent.is_dir() {
                    create_dirs(&root, parent, durable).map_err(backend)?;
                }
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) if durable => {
                        std::fs::File::open(parent)
                            .and_then(|dir| dir.sync_all())
                            .map_err(backend)?;
                    }
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(StorageError::AlreadyExists(name));
                    }
                    Err(e) => return Err(backend(e)),
                }
                Ok(size)
            })();
            let _ = std::fs::remove_file(&tmp);
            stored
        })
        .await
        .map_err(|e| StorageError::Backend(e.to_string()))?
    }
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn put_new(&self, name: &ObjectName, body: ByteStream) -> Result<u64, StorageError> {
        self.put_new_with(name, body, true).await
    }

    async fn put_new_deferred(
        &self,
        name: &ObjectName,
        body: ByteStream,
    ) -> Result<u64, StorageError> {
        self.put_new_with(name, body, false).await
    }

    async fn sync(&self) -> Result<(), StorageError> {
        self.group.sync(&self.root).await
    }

    async fn replace(&self, name: &ObjectName, bytes: Bytes) -> Result<(), StorageError> {
        let path = self.path(name);
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
        let (tmp, _) = self.write_tmp(body).await?;
        let parent = self.ensure_parent(&path, true).await?;
        if let Err(e) = tokio::fs::rename(&tmp.path, &path).await {
            let _ = tokio::fs::remove_file(&tmp.path).await;
            return Err(backend(e));
        }
        sync_dir(&parent).await
    }

    async fn get(&self, name: &ObjectName) -> Result<ByteStream, StorageError> {
        let file = open_object(&self.path(name))
            .await
            .map_err(|e| not_found_or(name, e))?;
        Ok(Box::pin(
            ReaderStream::with_capacity(file, READ_CHUNK).map(|r| r.map_err(backend)),
        ))
    }

    async fn get_range(
        &self,
        name: &ObjectName,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        let mut file = open_object(&self.path(name))
            .await
            .map_err(|e| not_found_or(name, e))?;
        file.seek(SeekFrom::Start(range.start))
            .await
            .map_err(backend)?;
        let limited = file.take(range.end.saturating_sub(range.start));
        Ok(Box::pin(
            ReaderStream::with_capacity(limited, READ_CHUNK).map(|r| r.map_err(backend)),
        ))
    }

    async fn get_bytes(&self, name: &ObjectName) -> Result<Option<Bytes>, StorageError> {
        let mut file = match open_object(&self.path(name)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await.map_err(backend)?;
        Ok(Some(Bytes::from(bytes)))
    }

    async fn head(&self, name: &ObjectName) -> Result<Option<ObjectInfo>, StorageError> {
        match tokio::fs::symlink_metadata(self.path(name)).await {
            // Only regular files are objects (see `open_object`).
            Ok(meta) if !meta.is_file() => Ok(None),
            Ok(meta) => Ok(Some(ObjectInfo {
                name: name.clone(),
                size: meta.len(),
                modified: meta.modified().ok().map(time::OffsetDateTime::from),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectInfo>, StorageError> {
        let walk = SortedWalk::new(&self.root, prefix, start_after);
        tokio::task::spawn_blocking(move || walk.take(limit).collect())
            .await
            .map_err(|e| StorageError::Backend(e.to_string()))?
    }

    /// One walk of the tree for the whole listing, on a blocking thread that
    /// hands pages over as they are taken (a page per call would read the
    /// directories on the path again for each page).
    fn list_pages(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> BoxStream<'_, Result<Vec<ObjectInfo>, StorageError>> {
        let walk = SortedWalk::new(&self.root, prefix, start_after);
        let (pages, taken) = tokio::sync::mpsc::channel(WALK_PAGES_AHEAD);
        tokio::task::spawn_blocking(move || {
            let mut page = Vec::with_capacity(WALK_PAGE);
            for item in walk {
                match item {
                    Ok(info) => {
                        page.push(info);
                        if page.len() == WALK_PAGE {
                            let full = std::mem::replace(&mut page, Vec::with_capacity(WALK_PAGE));
                            if pages.blocking_send(Ok(full)).is_err() {
                                return; // nobody is listening any more
                            }
                        }
                    }
                    Err(e) => {
                        let _ = pages.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if !page.is_empty() {
                let _ = pages.blocking_send(Ok(page));
            }
        });
        Box::pin(futures::stream::unfold(taken, |mut taken| async move {
            taken.recv().await.map(|page| (page, taken))
        }))
    }

    async fn delete(&self, name: &ObjectName) -> Result<(), StorageError> {
        let path = self.path(name);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)).await,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    async fn check(&self) -> Result<(), StorageError> {
        let probe = self.tmp_path();
        tokio::fs::write(&probe, b"ready").await.map_err(backend)?;
        tokio::fs::remove_file(&probe).await.map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_crypto::{DocumentId, TenantId};

    fn stream_of(parts: Vec<&'static [u8]>) -> ByteStream {
        Box::pin(futures::stream::iter(
            parts.into_iter().map(|p| Ok(Bytes::from_static(p))),
        ))
    }

    /// Only regular files are objects: a FIFO (whose open would wait for a
    /// writer forever) and a link to a device are neither listed nor read.
    #[tokio::test]
    async fn a_fifo_or_a_link_in_the_store_is_not_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let packs = dir.path().join("packs/ab");
        std::fs::create_dir_all(&packs).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            packs.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/zero", packs.join("link")).unwrap();
        store
            .put_new_bytes(
                &ObjectName::parse("packs/ab/file").unwrap(),
                Bytes::from_static(b"x"),
            )
            .await
            .unwrap();
        let listed: Vec<String> = crate::storage::list_all(&store, "", None)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name.as_str().to_owned())
            .collect();
        assert_eq!(listed, ["packs/ab/file"]);
        for odd in ["packs/ab/fifo", "packs/ab/link"] {
            let name = ObjectName::parse(odd).unwrap();
            let within = std::time::Duration::from_secs(5);
            let got = tokio::time::timeout(within, store.get_bytes(&name)).await;
            assert!(matches!(got, Ok(Err(_))), "{odd}: {got:?}");
            let got = tokio::time::timeout(within, store.get(&name)).await;
            assert!(matches!(got, Ok(Err(_))), "{odd}");
            assert_eq!(store.head(&name).await.unwrap(), None, "{odd}");
        }
    }

    #[test]
    fn new_directories_are_fsynced_in_their_parents_outermost_first() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let dir = root.join("tenants").join("acme").join("docs").join("0123");
        let synced = create_dirs(root, &dir, true).unwrap();
        assert!(dir.is_dir());
        assert_eq!(
            synced,
            vec![
                root.to_owned(),
                root.join("tenants"),
                root.join("tenants/acme"),
                root.join("tenants/acme/docs"),
            ]
        );
        // A sibling only needs its own entry made durable.
        let sibling = root.join("tenants/acme/docs/4567");
        assert_eq!(
            create_dirs(root, &sibling, true).unwrap(),
            vec![root.join("tenants/acme/docs")]
        );
        assert!(create_dirs(root, &sibling, true).unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_deferred_puts_share_their_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FsStore::open(dir.path()).await.unwrap());
        let tenant = vault_crypto::TenantId::new("acme").unwrap();
        let writers = (0..32).map(|_| {
            let store = std::sync::Arc::clone(&store);
            let name = ObjectName::doc_body(&tenant, &vault_crypto::DocumentId::random());
            tokio::spawn(async move {
                store
                    .put_new_deferred(&name, stream_of(vec![b"sealed"]))
                    .await
                    .unwrap();
                store.sync().await.unwrap();
                name
            })
        });
        for name in futures::future::join_all(writers).await {
            let name = name.unwrap();
            assert_eq!(
                store.get_bytes(&name).await.unwrap().unwrap().as_ref(),
                b"sealed"
            );
        }
        let performed = store
            .group
            .performed
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            (1..32).contains(&performed),
            "{performed} syncs for 32 writers"
        );
        // A sync asked for later is a new one: nothing is taken as done for it.
        store.sync().await.unwrap();
        assert_eq!(
            store
                .group
                .performed
                .load(std::sync::atomic::Ordering::SeqCst),
            performed + 1
        );
    }

    #[tokio::test]
    async fn a_put_leaves_its_directory_in_place_for_the_next_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let id = DocumentId::random();
        let name = ObjectName::doc_body(&tenant, &id);
        store
            .put_new(&name, stream_of(vec![b"body"]))
            .await
            .unwrap();
        // Its directory exists, so a second object there creates (and syncs) nothing.
        let parent = store.path(&name).parent().unwrap().to_owned();
        assert!(create_dirs(dir.path(), &parent, true).unwrap().is_empty());
    }

    #[tokio::test]
    async fn create_only_round_trip_range_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let t = TenantId::new("acme").unwrap();
        let d = DocumentId::random();
        let name = ObjectName::doc_body(&t, &d);
        assert_eq!(
            store
                .put_new(&name, stream_of(vec![b"hello ", b"world"]))
                .await
                .unwrap(),
            11
        );
        assert!(matches!(
            store.put_new(&name, stream_of(vec![b"other"])).await,
            Err(StorageError::AlreadyExists(_))
        ));
        assert_eq!(
            &store.get_bytes(&name).await.unwrap().unwrap()[..],
            b"hello world"
        );
        let range = super::super::collect(store.get_range(&name, 6..11).await.unwrap(), 100)
            .await
            .unwrap();
        assert_eq!(&range[..], b"world");
        let listed = store
            .list(&ObjectName::docs_prefix(&t), None, 10)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, 11);
        store.delete(&name).await.unwrap();
        assert!(store.head(&name).await.unwrap().is_none());
        store.delete(&name).await.unwrap();
        // Nothing left behind in the temporary directory.
        assert_eq!(
            std::fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn a_failed_stream_leaves_nothing_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let name = ObjectName::doc_body(&TenantId::new("acme").unwrap(), &DocumentId::random());
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"partial")),
            Err(StorageError::SourceFailed("client went away".into())),
        ]));
        assert!(store.put_new(&name, failing).await.is_err());
        assert!(store.head(&name).await.unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(),
            0
        );
    }

    /// A put dropped at any point (mid-stream, after its last chunk while the
    /// file is synced, while it is linked) leaves nothing in `.tmp/` once its
    /// writing thread is done, and its object is either whole or absent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_dropped_at_any_point_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let body = Bytes::from(vec![7u8; 4 << 20]);
        for wait_us in [0u64, 50, 200, 1_000, 3_000, 10_000, 30_000, 100_000] {
            let name = ObjectName::doc_body(&tenant, &DocumentId::random());
            let chunks: Vec<Result<Bytes, StorageError>> = body
                .chunks(64 * 1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let stream: ByteStream = Box::pin(futures::stream::iter(chunks));
            let put = store.put_new(&name, stream);
            let _ = tokio::time::timeout(std::time::Duration::from_micros(wait_us), put).await;
            // The writing thread finishes on its own.
            let mut left = usize::MAX;
            for _ in 0..100 {
                left = std::fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count();
                if left == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert_eq!(
                left, 0,
                "dropped after {wait_us} µs: a temporary file stayed"
            );
            if let Some(info) = store.head(&name).await.unwrap() {
                assert_eq!(info.size, body.len() as u64, "dropped after {wait_us} µs");
            }
        }
    }
}
