//! Progress of long work (backups, restores, rewraps, index rebuilds), reported
//! as objects and bytes: the CLI draws bars from it, jobs keep it in their status.

/// Progress of long work, reported as objects and bytes (the CLI draws bars).
pub trait Progress: Send + Sync {
    /// The work's size is known.
    fn start(&self, phase: &str, objects: u64, bytes: u64);
    /// One object (of `bytes`) is done.
    fn advance(&self, bytes: u64);
    /// The phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _phase: &str, _objects: u64, _bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
}
