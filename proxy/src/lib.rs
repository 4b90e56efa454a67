//! Ferry's data plane. The outbound and inbound listeners, balancing, retries, timeouts and
//! circuit breaking arrive with the mesh issue; until then the crate only fixes its place
//! in the workspace: it depends on the registry model, never on a protocol view.
#![forbid(unsafe_code)]

pub use ferry_registry_adapters::model;
