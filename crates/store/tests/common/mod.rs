//! Test helpers: temporary directories without the tempfile crate.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A directory under the system temp dir, removed (with its content) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        Self::new_in(&std::env::temp_dir(), name)
    }

    /// Like [`TempDir::new`], under `base` instead of the system temp dir.
    pub fn new_in(base: &Path, name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = base.join(format!(
            "weft-store-test-{name}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A fresh, not yet existing file path inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        self.path.join(format!(
            "{name}-{}",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
