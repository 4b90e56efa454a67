//! ferry-etcd: Ferry's etcd store, and everything Ferry does with etcd when it runs on many
//! hosts: the connection to the cluster (`connection`), where Ferry's data lives under
//! `/ferry/v1/` (`layout`), the thread every etcd call runs on (`worker`), and the registry
//! store every node shares (`registrations`), the Consul KV store's (`kv`), the cutover
//! table every node follows (`cutover`, through the prefix watcher `prefix_watch`) and
//! leader-only work (`leader`), the certificate authority's requests, answers and
//! elected signer (`ca`), and sidecar mode's allow rules (`allow`).

pub mod allow;
pub mod ca;
pub mod connection;
pub mod cutover;
pub mod kv;
pub mod layout;
pub mod leader;
mod leases;
mod prefix_watch;
pub mod registrations;
mod worker;

pub use allow::AllowRule;
pub use connection::{ConnectOptions, Connection, EndpointState, EtcdError};
pub use cutover::{CutoverEntry, CutoverEvent, CutoverMode, SharedCutover};
pub use kv::EtcdKv;
pub use leader::{Holder, Leader};
pub use registrations::{EtcdStore, EtcdStoreOptions, NodeInfo, StoreHealth};
