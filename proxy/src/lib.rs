//! Ferry's data plane: per-service outbound listeners that balance, retry, time out and
//! eject endpoints, and the cutover policy that decides which services go through them.
//!
//! # Layout
//! - `mesh`: which services are in the mesh; opens listeners, publishes registry routes.
//! - `cutover`: the persisted modes and stable ports.
//! - `upstream`: one service: its endpoints (with the HTTP/1.1 path's pools alongside),
//!   balancer, budget, clients, metric handles; and the general (hyper) path's request.
//! - `attempt`: the one attempt loop both paths drive (endpoint choice, retries, deadline,
//!   breaking, metrics); each path only says how to send one attempt (`Transport`).
//! - `balance` (P2C over peak EWMA, round robin), `breaker` (ejection), `retry` (budget),
//!   `clock` (the time those two read, moved by hand in tests), `hop_by_hop` (what neither
//!   path forwards), `trace` (B3 and W3C headers), `error` (the answers the proxy gives
//!   itself), `metrics`.
//! - `inbound`: sidecar mode's inbound listener: mutual TLS from nodes only, and only to
//!   instances this node keeps at an address of this host.
//! - `peer`: sidecar mode's outbound hop: pooled HTTP/2 over mutual TLS to the inbound
//!   listener of the node that keeps an instance.
//! - `h1`: the outbound listeners' own HTTP/1.1 path (a head, a pooled endpoint connection,
//!   bytes relayed) and their accept loop; everything else on those listeners is handed to
//!   hyper.
//!
//! The proxy sees the registry only through its model (`Registry::endpoints`, result
//! indexes, routes), never through a protocol view; it
//! depends on `ferry-core` and on `ferry-http` (the accept loop it shares with the APIs),
//! and on no view.
#![forbid(unsafe_code)]

mod attempt;
pub mod balance;
pub mod breaker;
pub mod clock;
pub mod cutover;
pub mod error;
pub mod h1;
pub mod hop_by_hop;
pub mod inbound;
pub mod mesh;
pub mod metrics;
pub mod peer;
pub mod retry;
pub mod trace;
pub mod upstream;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Bodies the proxy sends upstream: buffered for replay, or streamed once.
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;
/// Bodies the proxy answers with: the upstream's, or its own error text.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;
