//! ferry-etcd: Ferry's etcd store, and everything Ferry does with etcd when it runs on many
//! hosts: the connection to the cluster (`connection`), where Ferry's data lives under
//! `/ferry/v1/` (`layout`), the thread every etcd call runs on (`worker`), and the registry
//! store every node shares (`registrations`), and the Consul KV store's (`kv`).

pub mod connection;
pub mod kv;
pub mod layout;
mod leases;
pub mod registrations;
mod worker;

pub use connection::{ConnectOptions, Connection, EndpointState, EtcdError};
pub use kv::EtcdKv;
pub use registrations::{EtcdStore, EtcdStoreOptions, NodeInfo, StoreHealth};
