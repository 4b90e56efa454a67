//! Ferry's registry: one model of applications, instances, leases and changes, and the
//! protocol views that present it to legacy clients.
//!
//! # Layout
//! - `model`: the vocabulary (instances, status, ports, leases); plain data, no serde.
//! - `registry`: the one registry, its status rules, lease eviction and change log.
//! - `change_index`: the single index every change bumps and every view reads.
//! - `store`: where changes go (`MemoryStore` by default; etcd slots in here).
//! - `kv`: the durable key/value store with sessions and locks.
//! - `health`: the checks Ferry runs itself (HTTP, TCP, TTL expiry, reaping).
//! - `config_server`: the Spring Cloud Config Server view (folder, git, KV).
//! - `consul`: the Consul agent view (agent, catalog, health, KV, sessions).
//! - `eureka`: the Eureka REST view (JSON and XML), a thin adapter over `registry`.
//! - `clock`: wall-clock time, replaceable in tests.
#![forbid(unsafe_code)]

pub mod change_index;
pub mod clock;
pub mod config_server;
pub mod consul;
pub mod eureka;
pub mod health;
pub mod http_body;
pub mod kv;
pub mod model;
pub mod registry;
pub mod store;

pub use clock::Clock;
pub use model::{Instance, Status};
pub use registry::{Registry, RegistrySettings};
