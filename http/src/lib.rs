//! How every Ferry listener serves HTTP, shared by the protocol views and the proxy so that
//! each applies the same limits the same way.
//!
//! # Layout
//! - `listen`: the accept loop (connection cap, idle and header timeouts, 431 for oversized
//!   heads, HTTP/1.1 and h2c with upgrades) and graceful drain at shutdown.
//! - `rewind`: a connection with bytes already read from it put back in front.
//! - `request_body`: a request body read within its size limit and deadline, gzip undone
//!   under the same limit; each view maps `BodyError` to its protocol's status codes.
//! - `test_client` (feature `test-util`): one in-process request to a router, for tests.
//!
//! This crate knows no protocol and no registry: it is plumbing under the views and the
//! proxy, never a route to each other.
#![forbid(unsafe_code)]

pub mod listen;
pub mod request_body;
pub mod rewind;
#[cfg(feature = "test-util")]
pub mod test_client;
