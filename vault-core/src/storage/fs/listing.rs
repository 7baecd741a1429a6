//! The filesystem store's listing: its directory tree walked in object-name
//! order, one directory's names in memory per level.
//!
//! Why it works: within one directory, sorting the children by their name with
//! a `/` after each directory's name gives the order of every object name below
//! them. A directory `d` holds only names starting with `d/`, and a sibling's
//! name differs from `d/` within its first `len(d/)` bytes (a sibling is never
//! `d` itself, and no name holds a `/`), so comparing `d/` with the sibling
//! compares every name below `d` with it the same way. A depth-first walk over
//! children sorted so is therefore a walk in global name order, which can start
//! after any name (it skips whole directories before it) and stop anywhere.
//!
//! Memory is one level's names per directory on the current path: for a vault,
//! a tenant's `docs/` directory (some 50 bytes per document) is the largest.

use std::path::{Path, PathBuf};

use super::super::{ObjectInfo, ObjectName, StorageError};
use super::{backend, TMP_DIR};

/// A walk of the objects whose names start with a prefix, after a name, in name
/// order. Ends after its first error.
pub(super) struct SortedWalk {
    root: PathBuf,
    prefix: String,
    start_after: Option<String>,
    /// The directories on the current path, outermost first; `None` before the
    /// first step.
    levels: Option<Vec<Level>>,
    ended: bool,
}

/// One directory being walked.
struct Level {
    /// Its name relative to the root, ending in `/` (empty for the root).
    dir: String,
    /// Its children still to visit, in reverse order (so `pop` gives the next);
    /// directories' names end in `/`.
    children: Vec<Box<str>>,
}

impl SortedWalk {
    pub(super) fn new(root: &Path, prefix: &str, start_after: Option<&str>) -> SortedWalk {
        SortedWalk {
            root: root.to_owned(),
            prefix: prefix.to_owned(),
            start_after: start_after.map(str::to_owned),
            levels: None,
            ended: false,
        }
    }

    /// The directory `dir` (relative, ending in `/` or empty) as a level: the
    /// children that are, or can hold, names matching the prefix after
    /// `start_after`.
    fn read_level(&self, dir: String) -> Result<Level, StorageError> {
        let entries = match std::fs::read_dir(self.root.join(&dir)) {
            Ok(entries) => entries,
            // A prefix naming a directory that is missing, or is a file, holds nothing.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(Level {
                    dir,
                    children: Vec::new(),
                })
            }
            Err(e) => return Err(backend(e)),
        };
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry.map_err(backend)?;
            let file_name = entry.file_name();
            let Some(child) = file_name.to_str() else {
                continue; // not an object's: object names are UTF-8
            };
            let name = format!("{dir}{child}");
            if name.starts_with(TMP_DIR) {
                continue;
            }
            let file_type = entry.file_type().map_err(backend)?;
            if file_type.is_dir() {
                let below = format!("{name}/");
                if self.may_hold_matches(&below) {
                    children.push(format!("{child}/").into_boxed_str());
                }
            } else if file_type.is_file() // not a FIFO, device or link: see `open_object`
                && name.starts_with(&self.prefix)
                && self
                    .start_after
                    .as_deref()
                    .is_none_or(|after| name.as_str() > after)
            {
                children.push(child.into());
            }
        }
        children.sort_unstable_by(|a, b| b.cmp(a));
        Ok(Level { dir, children })
    }

    /// Whether names starting with `below` (a directory's name and `/`) can
    /// match: they share the prefix, and they are not all at or before the
    /// start (they are, when `below` sorts before it and does not lead it).
    fn may_hold_matches(&self, below: &str) -> bool {
        let shares_prefix = below.starts_with(&self.prefix) || self.prefix.starts_with(below);
        let all_before_start = self
            .start_after
            .as_deref()
            .is_some_and(|after| below < after && !after.starts_with(below));
        shares_prefix && !all_before_start
    }

    fn step(&mut self) -> Result<Option<ObjectInfo>, StorageError> {
        if self.levels.is_none() {
            let base = self.prefix.rfind('/').map_or("", |i| &self.prefix[..=i]);
            // No object name starts with an invalid one ("/", "../", "./"), and
            // joining such a prefix to the root could leave it.
            let first = if base.is_empty() || ObjectName::is_valid(base.trim_end_matches('/')) {
                self.read_level(base.to_owned())?
            } else {
                Level {
                    dir: String::new(),
                    children: Vec::new(),
                }
            };
            self.levels = Some(vec![first]);
        }
        loop {
            let Some(levels) = self.levels.as_mut() else {
                return Ok(None);
            };
            let Some(level) = levels.last_mut() else {
                return Ok(None);
            };
            let Some(child) = level.children.pop() else {
                levels.pop();
                continue;
            };
            let name = format!("{}{child}", level.dir);
            if name.ends_with('/') {
                let below = self.read_level(name)?;
                if let Some(levels) = self.levels.as_mut() {
                    levels.push(below);
                }
                continue;
            }
            let Some(object) = ObjectName::parse(&name) else {
                continue;
            };
            match std::fs::symlink_metadata(self.root.join(&name)) {
                Ok(meta) => {
                    return Ok(Some(ObjectInfo {
                        name: object,
                        size: meta.len(),
                        modified: meta.modified().ok().map(time::OffsetDateTime::from),
                    }))
                }
                // Deleted since its directory was read: no longer listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(backend(e)),
            }
        }
    }
}

impl Iterator for SortedWalk {
    type Item = Result<ObjectInfo, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        let step = self.step().transpose();
        if !matches!(step, Some(Ok(_))) {
            self.ended = true;
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names_of(root: &Path, prefix: &str, start_after: Option<&str>) -> Vec<String> {
        SortedWalk::new(root, prefix, start_after)
            .map(|info| info.unwrap().name.as_str().to_owned())
            .collect()
    }

    /// The names a full walk must give: every file, sorted as strings.
    fn expected(files: &[String], prefix: &str, start_after: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = files
            .iter()
            .filter(|n| n.starts_with(prefix) && start_after.is_none_or(|a| n.as_str() > a))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn write_tree(root: &Path, files: &[String]) {
        for name in files {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, name.as_bytes()).unwrap();
        }
    }

    #[test]
    fn siblings_that_sort_around_the_slash_come_in_name_order() {
        let root = tempfile::tempdir().unwrap();
        // "a.b" < "a/x" < "a0" < "ab/c" as strings, though a directory walk in
        // plain name order would put "a/x" after "a.b" and "a0" differently.
        let files: Vec<String> = ["a0", "a/x", "a.b", "ab/c", "a/y/z", "a-", "b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        write_tree(root.path(), &files);
        assert_eq!(
            names_of(root.path(), "", None),
            ["a-", "a.b", "a/x", "a/y/z", "a0", "ab/c", "b"]
        );
        assert_eq!(names_of(root.path(), "a/", None), ["a/x", "a/y/z"]);
        assert_eq!(
            names_of(root.path(), "a", Some("a/x")),
            ["a/y/z", "a0", "ab/c"]
        );
        assert_eq!(
            names_of(root.path(), "", Some("a/")),
            ["a/x", "a/y/z", "a0", "ab/c", "b"]
        );
        assert_eq!(names_of(root.path(), "", Some("ab/c")), ["b"]);
        assert_eq!(names_of(root.path(), "c", None), Vec::<String>::new());
        // Prefixes no object name has never leave the root.
        for outside in ["/", "/etc/", "../", "a/../", "./a/"] {
            assert_eq!(names_of(root.path(), outside, None), Vec::<String>::new());
        }
    }

    #[test]
    fn the_temporary_directory_is_not_listed() {
        let root = tempfile::tempdir().unwrap();
        write_tree(
            root.path(),
            &[format!("{TMP_DIR}/partial"), "system/x".to_owned()],
        );
        assert_eq!(names_of(root.path(), "", None), ["system/x"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A walk, started anywhere and with any prefix, gives exactly the
        /// sorted names a listing of everything would, filtered.
        #[test]
        fn a_walk_gives_every_matching_name_in_order(
            tree in proptest::collection::vec("[ab.0-]{1,2}(/[ab.0-]{1,2}){0,2}", 1..24),
            prefix in "[ab.0/-]{0,4}",
            start_after in proptest::option::of("[ab.0/-]{0,5}"),
        ) {
            // Keep a tree a filesystem can hold: no name is also a directory.
            let mut files: Vec<String> = Vec::new();
            for name in tree {
                let clashes = files.iter().any(|f| {
                    f.starts_with(&format!("{name}/")) || name.starts_with(&format!("{f}/")) || *f == name
                });
                if !clashes && ObjectName::is_valid(&name) && !name.split('/').any(|part| part == ".") {
                    files.push(name);
                }
            }
            let root = tempfile::tempdir().unwrap();
            write_tree(root.path(), &files);
            prop_assert_eq!(
                names_of(root.path(), &prefix, start_after.as_deref()),
                expected(&files, &prefix, start_after.as_deref())
            );
        }
    }
}
