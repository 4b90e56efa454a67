//! The embedded default store: the registry's in-memory model is the whole of the state,
//! so a write has nothing further to record and cannot fail, and a start restores nothing.

use super::{Change, Store, StoreError, Written};
use crate::model::Instance;

#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn write(&self, _change: &Change<'_>) -> Result<Written, StoreError> {
        Ok(Written::Local)
    }

    fn load(&self) -> Result<Vec<Instance>, StoreError> {
        Ok(Vec::new())
    }
}
