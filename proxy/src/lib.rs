//! Ferry's data plane: per-service outbound listeners that balance, retry, time out and
//! eject endpoints, and the cutover policy that decides which services go through them.
//!
//! # Layout
//! - `mesh`: which services are in the mesh; opens listeners, publishes registry routes.
//! - `cutover`: the persisted modes and stable ports.
//! - `upstream`: the request path of one service (discovery, retries, timeouts, breaking).
//! - `balance` (P2C over peak EWMA, round robin), `breaker` (ejection), `retry` (budget),
//!   `trace` (B3 and W3C headers), `error` (the answers the proxy gives itself), `metrics`.
//! - `h1`: the outbound listeners' own HTTP/1.1 path (a head, a pooled endpoint connection,
//!   bytes relayed); everything else on those listeners is handed to hyper.
//!
//! The proxy sees the registry only through its model (`Registry::endpoints`, result
//! indexes, routes), never through a protocol view; it
//! depends on `ferry-core` and on `ferry-http` (the accept loop it shares with the APIs),
//! and on no view.
#![forbid(unsafe_code)]

pub mod balance;
pub mod breaker;
pub mod clock;
pub mod cutover;
pub mod error;
pub mod h1;
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
