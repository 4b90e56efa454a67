//! Idle keep-alive connections to one endpoint. Each endpoint has its own pool, so a
//! connection is only ever reused for the address it was opened to, and an endpoint that
//! leaves the registry takes its connections with it. The pools belong to this path, not
//! to the balancer: `Pools` holds those of one list of endpoints by their slot, and moves
//! along with the list when the registry changes.
//!
//! Last in, first out: the most recently used connection is the least likely to have been
//! closed by the server's own idle timeout. Connections idle longer than `IDLE_TIMEOUT` are
//! closed rather than reused; it is shorter than the keep-alive timeouts of the servers
//! Spring Boot apps run on (Tomcat's 20 s default among them is the shortest).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::net::TcpStream;

use crate::balance::EndpointState;

const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_IDLE: usize = 256;
/// Starting size of a connection's read buffer; it grows for larger heads.
pub const READ_BUFFER: usize = 8 * 1024;

/// A connection to an endpoint and the bytes read from it but not yet relayed.
#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
    pub buffer: BytesMut,
    /// It served a request before, so the server may have closed it meanwhile.
    pub reused: bool,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Connection {
        Connection {
            stream,
            buffer: BytesMut::with_capacity(READ_BUFFER),
            reused: false,
        }
    }
}

impl Connection {
    /// Whether the server has not closed the connection (nor sent anything unasked) while
    /// it was idle; one non-blocking read.
    pub fn looks_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(
            self.stream.try_read(&mut probe),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
        )
    }
}

#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<(Connection, Instant)>>,
}

impl Pool {
    /// The most recently returned connection still fresh enough to reuse. The clock is the
    /// caller's: the request path reads it once per request.
    pub fn take(&self, now: Instant) -> Option<Connection> {
        let mut idle = self.idle.lock();
        // Oldest first: once one is fresh, all after it are.
        let stale = idle
            .iter()
            .position(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT)
            .unwrap_or(idle.len());
        if stale > 0 {
            idle.drain(..stale);
        }
        idle.pop().map(|(mut connection, _)| {
            connection.reused = true;
            connection
        })
    }

    /// Keeps a connection whose last exchange ended cleanly.
    pub fn put(&self, connection: Connection, now: Instant) {
        debug_assert!(connection.buffer.is_empty());
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push((connection, now));
        }
    }
}

/// The pools of one list of endpoints, by `EndpointState::slot`.
#[derive(Debug, Default)]
pub struct Pools {
    by_slot: Vec<Option<Arc<Pool>>>,
}

impl Pools {
    /// The pools of `endpoints`, which replace `previous_endpoints`: an endpoint listed in
    /// both keeps its pool (and its idle connections); the pools of those gone are dropped
    /// with the last request still using the previous list.
    pub fn follow(
        previous: &Pools,
        previous_endpoints: &[Arc<EndpointState>],
        endpoints: &[Arc<EndpointState>],
    ) -> Pools {
        let slots = endpoints.iter().map(|endpoint| endpoint.slot + 1).max();
        let mut by_slot = vec![None; slots.unwrap_or(0)];
        for endpoint in endpoints {
            let kept = previous_endpoints
                .iter()
                .any(|known| Arc::ptr_eq(known, endpoint))
                .then(|| previous.of(endpoint).cloned())
                .flatten();
            by_slot[endpoint.slot] = Some(kept.unwrap_or_default());
        }
        Pools { by_slot }
    }

    /// The pool of `endpoint`, one of the endpoints these pools were made for.
    pub fn of(&self, endpoint: &EndpointState) -> Option<&Arc<Pool>> {
        self.by_slot.get(endpoint.slot)?.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, slot: usize) -> Arc<EndpointState> {
        let mut endpoint = EndpointState::new(id.into(), format!("{id}:80"));
        endpoint.slot = slot;
        Arc::new(endpoint)
    }

    #[test]
    fn an_endpoint_keeps_its_pool_across_refreshes_and_a_newcomer_gets_its_own() {
        let (a, b) = (endpoint("a", 0), endpoint("b", 1));
        let first = vec![a.clone(), b.clone()];
        let pools = Pools::follow(&Pools::default(), &[], &first);
        let (pool_a, pool_b) = (pools.of(&a).unwrap(), pools.of(&b).unwrap());
        assert!(!Arc::ptr_eq(pool_a, pool_b));

        // `b` leaves; `c` arrives in a slot `b` held, as a later refresh may give it.
        let c = endpoint("c", 1);
        let second = vec![a.clone(), c.clone()];
        let next = Pools::follow(&pools, &first, &second);
        assert!(Arc::ptr_eq(next.of(&a).unwrap(), pool_a));
        assert!(!Arc::ptr_eq(next.of(&c).unwrap(), pool_b));
        assert!(Pools::default().of(&a).is_none());
    }
}
