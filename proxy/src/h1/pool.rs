//! Idle keep-alive connections to one endpoint. Each endpoint keeps its own, so a
//! connection is only ever reused for the address it was opened to, and an endpoint that
//! leaves the registry takes its connections with it.
//!
//! Last in, first out: the most recently used connection is the least likely to have been
//! closed by the server's own idle timeout. Connections idle longer than `IDLE_TIMEOUT` are
//! closed rather than reused; it is shorter than the keep-alive timeouts of the servers
//! Spring Boot apps run on (Tomcat's 20 s default among them is the shortest).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::net::TcpStream;

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
