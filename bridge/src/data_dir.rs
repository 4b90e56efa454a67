//! The data directory: created on start and locked for the life of the process, so two
//! Ferry processes never write the same durable state.

use std::fs::{File, OpenOptions};
use std::path::Path;

use anyhow::Context;

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DataDir {
    _lock: File,
    node_id: String,
}

impl DataDir {
    /// This node's stable id (a UUID made on first start and kept in `node-id`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
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
    let id_path = path.join("node-id");
    let node_id = match std::fs::read_to_string(&id_path) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_owned(),
        _ => {
            let id = new_node_id();
            std::fs::write(&id_path, &id)
                .with_context(|| format!("cannot write {}", id_path.display()))?;
            id
        }
    };
    Ok(DataDir {
        _lock: lock,
        node_id,
    })
}

/// A random UUID (version 4) from the kernel's generator.
fn new_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|_| {
            format!(
                "{:032x}",
                std::process::id() as u128
                    ^ std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0)
            )
        })
}
