//! The data directory: created on start and locked for the life of the process, so two
//! Ferry processes never write the same durable state.

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::Context;

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DataDir {
    _lock: File,
}

pub fn open(path: &Path) -> anyhow::Result<DataDir> {
    std::fs::create_dir_all(path)
        .with_context(|| format!("cannot create the data directory {}", path.display()))?;
    let lock_path = path.join("ferry.lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "the data directory {} is in use by another ferry process",
            path.display()
        )
    })?;
    Ok(DataDir { _lock: lock })
}
