//! Ferry's core: one model of applications, instances, leases and changes, the registry
//! that holds them, the KV store, and the single change index both stamp every change with.
//! The protocol views (`ferry-eureka`, `ferry-consul`, `ferry-config-server`) and the proxy
//! are built on this crate and never on each other.
//!
//! # Layout
//! - `model`: the vocabulary (instances, status, ports, leases, checks); plain data, no
//!   serde, no protocol spellings.
//! - `registry`: the one registry, its status rules, lease eviction and change log.
//! - `change_index`: the single index every change bumps and every view reads.
//! - `store`: where changes are recorded (`MemoryStore` by default; `DurableStore` keeps
//!   agent registrations in a file for `Registry::restore`; `store/etcd` is where the
//!   distributed store lands, sharing the record encoding in `store/record`).
//! - `kv`: the durable key/value store with sessions and locks.
//! - `health`: the checks Ferry runs itself (HTTP, TCP, TTL expiry, reaping).
//! - `clock`: wall-clock time, replaceable in tests.
//!
//! No HTTP framework and no protocol view is a dependency of this crate.
#![forbid(unsafe_code)]

pub mod change_index;
pub mod clock;
pub mod health;
pub mod kv;
pub mod model;
pub mod registry;
pub mod store;

pub use clock::Clock;
pub use model::{Instance, Status};
pub use registry::{Registry, RegistrySettings};
