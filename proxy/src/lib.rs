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
pub mod mesh;
pub mod metrics;
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
