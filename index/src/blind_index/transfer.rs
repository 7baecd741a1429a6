//! Moving a blind index between data directories as one stream of bytes: its
//! files (name, length) and their contents one after another. The index
//! snapshot seals that stream into the store and a new replica imports it.
//!
//! Both directions hold one buffer at a time, never the index: the export hands
//! out open files (the segment files of a committed index never change, and an
//! open file survives Tantivy's garbage collection removing its name), and the
//! import copies the stream into files of a staging directory.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{IndexError, DESCRIPTOR_FILE, MANAGED_FILE};

/// Most files an import takes (a Tantivy index has a few per segment).
pub const MAX_FILES: usize = 10_000;
/// Largest descriptor an import takes (it is read into memory).
const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;

/// A committed index, ready to be read as one stream: see
/// [`BlindIndex::export`](super::BlindIndex::export).
pub struct IndexExport {
    files: Vec<(String, u64)>,
    parts: VecDeque<Box<dyn Read + Send>>,
}

impl IndexExport {
    pub(super) fn new() -> Self {
        IndexExport {
            files: Vec::new(),
            parts: VecDeque::new(),
        }
    }

    /// Adds a file held in memory.
    pub(super) fn push_bytes(&mut self, name: &str, bytes: Vec<u8>) {
        self.files.push((name.to_owned(), bytes.len() as u64));
        self.parts.push_back(Box::new(std::io::Cursor::new(bytes)));
    }

    /// Adds an open file, as long as it is now.
    pub(super) fn push_file(&mut self, name: &str, file: File) -> std::io::Result<()> {
        let len = file.metadata()?.len();
        self.files.push((name.to_owned(), len));
        self.parts.push_back(Box::new(file.take(len)));
        Ok(())
    }

    /// The files, in stream order: name and length.
    pub fn files(&self) -> &[(String, u64)] {
        &self.files
    }

    /// The bytes of every file, one after another.
    pub fn into_reader(self) -> impl Read + Send {
        ConcatReader { parts: self.parts }
    }

    /// Every file in memory (tests, small indexes).
    pub fn read_all(self) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let files = self.files.clone();
        let mut reader = self.into_reader();
        files
            .into_iter()
            .map(|(name, len)| {
                let mut bytes = Vec::new();
                (&mut reader).take(len).read_to_end(&mut bytes)?;
                Ok((name, bytes))
            })
            .collect()
    }
}

struct ConcatReader {
    parts: VecDeque<Box<dyn Read + Send>>,
}

impl Read for ConcatReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(part) = self.parts.front_mut() {
            let n = part.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.parts.pop_front();
        }
        Ok(0)
    }
}

fn invalid(what: &str) -> IndexError {
    IndexError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        what.to_owned(),
    ))
}

/// A plain file name of an index: nothing that leaves the directory or
/// replaces the import's own bookkeeping.
fn is_plain(file: &str) -> bool {
    !file.is_empty()
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !file.starts_with('.')
}

/// Makes `dir` the index that `files` and `body` describe (as an export gave
/// them). The files are written to a directory beside it, the body must end
/// exactly after the last one (a reader that authenticates as it goes is
/// checked to the end), and only then is the directory renamed into place:
/// a copy cut short (a crash, a full disk, a body that fails) leaves `dir` as
/// it was, never half an index. Tantivy is told the segment files are its
/// own, so it removes them once merged away.
pub fn import(dir: &Path, files: &[(String, u64)], body: &mut dyn Read) -> Result<(), IndexError> {
    if files.len() > MAX_FILES {
        return Err(invalid("an index of too many files"));
    }
    if files.iter().any(|(name, _)| !is_plain(name)) {
        return Err(invalid("an index file name that is not a plain file name"));
    }
    match files.iter().find(|(name, _)| name == DESCRIPTOR_FILE) {
        None => return Err(invalid("an index without its descriptor")),
        Some((_, len)) if *len > MAX_DESCRIPTOR_BYTES => {
            return Err(invalid("an index descriptor too large"))
        }
        Some(_) => {}
    }
    let parent = dir
        .parent()
        .ok_or_else(|| invalid("an index directory has a parent"))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid("an index directory has a name"))?;
    let staging = parent.join(format!(
        ".{name}.importing-{}",
        hex::encode(vault_crypto::random_bytes::<4>())
    ));
    let result = (|| {
        std::fs::create_dir_all(&staging)?;
        let mut managed = Vec::new();
        let mut descriptor = Vec::new();
        for (file, len) in files {
            let mut part = (&mut *body).take(*len);
            let copied = if file == DESCRIPTOR_FILE {
                part.read_to_end(&mut descriptor)? as u64
            } else {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(staging.join(file))?;
                let copied = std::io::copy(&mut part, &mut out)?;
                out.flush()?;
                out.sync_all()?;
                managed.push(file.as_str());
                copied
            };
            if copied != *len {
                return Err(invalid("the index body ends before its files do"));
            }
        }
        if body.read(&mut [0u8; 1])? != 0 {
            return Err(invalid("the index body is longer than its files"));
        }
        let listing =
            serde_json::to_vec(&managed).map_err(|e| IndexError::Io(std::io::Error::other(e)))?;
        vault_keys::private_file::write_atomically(&staging.join(MANAGED_FILE), &listing)?;
        vault_keys::private_file::write_atomically(&staging.join(DESCRIPTOR_FILE), &descriptor)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::rename(&staging, dir)?;
        File::open(parent)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}
