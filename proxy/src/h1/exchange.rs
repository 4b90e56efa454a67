//! One caller connection on the HTTP/1.1 path: read a request head, forward the request to
//! an endpoint over a pooled connection, relay the answer, repeat. Everything for one
//! caller happens in one task, with no hand-off between tasks per request; that, and
//! buffers reused across requests, is what makes this path faster than the general one.
//!
//! The policy over the attempts is `attempt`'s, the one the general path runs too; this
//! module sends each attempt (`H1`, its `Transport`). A body is read ahead (and so
//! replayable) only when small and of known length; the deadline runs from the request's
//! head until a response head arrives. An idempotent request sent over a reused
//! keep-alive connection that turns out closed before any answer is resent once on a fresh
//! connection, outside the budget; any other request is sent over a reused connection only
//! after a check that the server has not closed it, and never resent.
//!
//! A streamed body is sent while watching the endpoint: if it answers before taking the
//! whole body (a refused upload), sending stops, the answer goes to the caller with
//! `Connection: close`, and the caller's connection closes after a short lingering drain.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use super::body::{self, Progress, RelayError};
use super::codec::{self, Framing, RequestHead, RequestVerdict, ResponseHead, ResponseVerdict};
use super::pool::{Connection, Pools, READ_BUFFER};
use crate::attempt::{Delivered, Outcome, Plan, Stop, Transport};
use crate::balance::EndpointState;
use crate::error::ProxyError;
use crate::upstream::Upstream;
use ferry_http::listen::ConnectionLimits;

/// Largest response head accepted from an endpoint; larger is a 502.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How serving a caller connection ended.
pub enum Served {
    Closed,
    /// The caller sent something the general path handles: the connection and the bytes
    /// read from it so far.
    HandOver(TcpStream, BytesMut),
}

/// One caller connection and the buffers it reuses from request to request while it is
/// busy; once it idles past `PARK_AFTER` it gives them back (`park`), so an idle
/// keep-alive connection holds little more than its socket.
struct Caller {
    stream: TcpStream,
    /// Bytes read from the caller and not yet forwarded.
    buffer: BytesMut,
    /// The request as it goes upstream: the rewritten head, then a read-ahead body.
    request: Vec<u8>,
    /// The response head as it goes back.
    response: Vec<u8>,
    /// How long a body may make no progress (and a read-ahead body take to arrive).
    body_timeout: Duration,
}

impl Caller {
    /// Gives the buffers back while no request is under way: the next one starts them
    /// afresh (the read buffer at `READ_BUFFER`, the heads grown to fit).
    fn park(&mut self) {
        debug_assert!(self.buffer.is_empty());
        self.buffer = BytesMut::new();
        self.request = Vec::new();
        self.response = Vec::new();
    }
}

/// How long a caller connection waits for its next request before it gives its buffers
/// back. A busy connection's next request comes well within it, so it keeps reusing them.
const PARK_AFTER: Duration = Duration::from_millis(10);

/// After an exchange: serve the next request or close.
#[derive(PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
    /// Close once the caller stops sending: it may still be sending a body the endpoint
    /// refused, and closing a socket with unread input resets the connection, which can
    /// destroy the answer before the caller reads it.
    Linger,
}

/// How long a lingering close keeps reading and discarding.
const LINGER: Duration = Duration::from_secs(2);

pub async fn serve(
    stream: TcpStream,
    upstream: &Upstream,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) -> Served {
    let mut caller = Caller {
        stream,
        buffer: BytesMut::with_capacity(READ_BUFFER),
        request: Vec::with_capacity(1024),
        response: Vec::with_capacity(1024),
        body_timeout: limits.idle_timeout,
    };
    // Apart from `caller`, which each attempt borrows whole.
    let mut tried = Vec::with_capacity(4);
    // The timers and the shutdown signal live as long as the connection: moving a timer's
    // deadline later is nearly free, registering a new one per request is not.
    let idle = tokio::time::sleep(limits.idle_timeout);
    let park = tokio::time::sleep(PARK_AFTER);
    let deadline = tokio::time::sleep(limits.idle_timeout);
    let stop = async move {
        if shutdown.wait_for(|stop| *stop).await.is_err() {
            // No one can ask for shutdown any more.
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(idle, park, deadline, stop);
    loop {
        let now = tokio::time::Instant::now();
        idle.as_mut().reset(now + limits.idle_timeout);
        park.as_mut().reset(now + PARK_AFTER);
        let mut parked = false;
        let head = loop {
            match codec::parse_request(&caller.buffer, limits.max_header_bytes, &mut caller.request)
            {
                // Sidecar mode's hop to another node is HTTP/2: the general path's.
                RequestVerdict::Forward(_) if upstream.routes_through_peers() => {
                    return Served::HandOver(caller.stream, caller.buffer);
                }
                RequestVerdict::Forward(head) => break head,
                RequestVerdict::HandOver => {
                    return Served::HandOver(caller.stream, caller.buffer);
                }
                RequestVerdict::Reject(rejection) => {
                    let answer = own_answer(
                        rejection.status,
                        rejection.reason,
                        rejection.text,
                        false,
                        true,
                    );
                    let _ = caller.stream.write_all(&answer).await;
                    return Served::Closed;
                }
                RequestVerdict::Partial => {}
            }
            if caller.buffer.is_empty() {
                // Between requests: wait for the next one, without buffers once it is late.
                tokio::select! {
                    biased;
                    ready = caller.stream.readable() => {
                        if ready.is_err() {
                            return Served::Closed;
                        }
                    }
                    () = &mut idle => return Served::Closed,
                    () = &mut stop => return Served::Closed,
                    () = &mut park, if !parked => {
                        caller.park();
                        parked = true;
                        continue;
                    }
                }
            }
            caller.buffer.reserve(READ_BUFFER);
            let read = tokio::select! {
                biased;
                read = caller.stream.read_buf(&mut caller.buffer) => read,
                () = &mut idle => return Served::Closed,
                () = &mut stop, if caller.buffer.is_empty() => return Served::Closed,
            };
            match read {
                Ok(0) | Err(_) => return Served::Closed,
                Ok(_) => {}
            }
        };
        caller.buffer.advance(head.length);
        // A panic is a bug: the caller gets a 500 and the connection closes. The exchange's
        // state (the attempts, the relays) is boxed for the request's time only: inline,
        // the connection's task would carry it, pages touched once, while idle.
        let exchanged = Box::pin(exchange(
            upstream,
            &mut caller,
            &mut tried,
            head,
            deadline.as_mut(),
        ));
        let next = std::panic::AssertUnwindSafe(exchanged).catch_unwind().await;
        match next {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) => return Served::Closed,
            Ok(Next::Linger) => {
                let _ = caller.stream.shutdown().await;
                // On the heap: an array here would sit in every connection's task.
                let mut discard = vec![0u8; 16 * 1024];
                let drain = async {
                    while matches!(caller.stream.read(&mut discard).await, Ok(read) if read > 0) {}
                };
                let _ = tokio::time::timeout(LINGER, drain).await;
                return Served::Closed;
            }
            Err(_) => {
                tracing::error!("the proxy's request handler panicked");
                let answer = own_answer(500, "internal", "internal proxy error\n", false, true);
                let _ = caller.stream.write_all(&answer).await;
                return Served::Closed;
            }
        }
    }
}

/// An endpoint's answer head, and the connection it came on.
struct Answered {
    connection: Connection,
    head: ResponseHead,
    /// It came before the whole request body was sent: neither connection can carry
    /// another request.
    early: bool,
}

/// Why an attempt failed.
enum Failure {
    Connect(std::io::Error),
    /// The endpoint failed: an I/O error or a malformed answer. `before_answer` when not one
    /// byte of the answer had arrived.
    Endpoint {
        reason: String,
        before_answer: bool,
    },
    /// The caller went away or sent a malformed body; nothing more can be said to it.
    Caller,
}

/// One request on a caller connection, from its parsed head to the end of its answer.
async fn exchange(
    upstream: &Upstream,
    caller: &mut Caller,
    tried: &mut Vec<Arc<EndpointState>>,
    head: RequestHead,
    mut deadline: Pin<&mut Sleep>,
) -> Next {
    let started = Instant::now();
    upstream.requests.inc();
    let replay_limit = upstream.settings.replay_limit;
    let streamed = match head.framing {
        Framing::Length(length) if length > replay_limit => Some(head.framing),
        Framing::Chunked | Framing::UntilClose => Some(head.framing),
        Framing::Empty => None,
        Framing::Length(length) => {
            let length = length as usize;
            let filled = tokio::time::timeout(
                caller.body_timeout,
                body::fill(&mut caller.stream, &mut caller.buffer, length),
            )
            .await;
            if !matches!(filled, Ok(Ok(()))) {
                return Next::Close;
            }
            caller.request.extend_from_slice(&caller.buffer[..length]);
            caller.buffer.advance(length);
            None
        }
    };
    let endpoints = upstream.current_endpoints();
    if endpoints.is_empty() {
        let error = ProxyError::NoEndpoints {
            service: upstream.service().to_owned(),
        };
        return answer_error(upstream, caller, &head, streamed.is_some(), error).await;
    }
    deadline
        .as_mut()
        .reset(tokio::time::Instant::from_std(started) + upstream.settings.request_timeout);
    let plan = Plan {
        started,
        first_attempt: started,
        replayable: streamed.is_none(),
        idempotent: head.idempotent,
    };
    let mut transport = H1 {
        caller: &mut *caller,
        head: &head,
        streamed,
        pools: &endpoints.pools,
        connect_timeout: upstream.settings.connect_timeout,
    };
    let delivered = upstream
        .attempts(plan, &endpoints, tried, deadline, &mut transport)
        .await;
    let Delivered {
        answer,
        endpoint,
        at: answered,
    } = match delivered {
        Ok(delivered) => delivered,
        Err(Stop::CallerGone) => return Next::Close,
        Err(Stop::Error(error)) => {
            // After a timeout the request may be half sent: this caller connection is done.
            let unread_body = streamed.is_some() || matches!(error, ProxyError::Timeout { .. });
            return answer_error(upstream, caller, &head, unread_body, error).await;
        }
    };
    let Answered {
        mut connection,
        head: answer,
        early,
    } = answer;
    let relayed = body::relay(
        &mut caller.response,
        &mut connection.stream,
        &mut connection.buffer,
        &mut caller.stream,
        Progress::new(answer.framing),
        caller.body_timeout,
    )
    .await;
    if let Err(error) = relayed {
        tracing::debug!(service = %upstream.service(), %error, "relaying a response failed");
        return Next::Close;
    }
    if answer.reusable && connection.buffer.is_empty() && !early {
        if let Some(pool) = endpoints.pools.of(&endpoint) {
            pool.put(connection, answered);
        }
    }
    if early {
        Next::Linger
    } else if head.close || answer.framing == Framing::UntilClose {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// One attempt on this path: the caller's request over a pooled or new connection.
struct H1<'a> {
    caller: &'a mut Caller,
    head: &'a RequestHead,
    /// The body still to come from the caller, when it is not read ahead.
    streamed: Option<Framing>,
    pools: &'a Pools,
    connect_timeout: Duration,
}

impl Transport for H1<'_> {
    type Answer = Answered;

    async fn send(
        &mut self,
        endpoint: &Arc<EndpointState>,
        at: Instant,
        fresh: bool,
    ) -> Outcome<Answered> {
        let pooled = match self.pools.of(endpoint) {
            Some(pool) if !fresh => pool.take(at),
            _ => None,
        };
        match self.attempt(endpoint, pooled).await {
            Ok(answered) => {
                let status = answered.head.status;
                Outcome::Answered(answered, status)
            }
            Err((Failure::Caller, _)) => Outcome::Stop(Stop::CallerGone),
            Err((failure, reused)) => {
                let stale = matches!(
                    failure,
                    Failure::Endpoint {
                        before_answer: true,
                        ..
                    }
                ) && reused
                    && self.streamed.is_none()
                    && self.head.idempotent;
                if stale {
                    return Outcome::Resend;
                }
                let sent = !matches!(failure, Failure::Connect(_));
                let reason = match failure {
                    Failure::Connect(error) => error.to_string(),
                    Failure::Endpoint { reason, .. } => reason,
                    Failure::Caller => unreachable!("handled above"),
                };
                Outcome::Failed { sent, reason }
            }
        }
    }
}

impl H1<'_> {
    /// Sends the request over `pooled` or a new connection and reads the answer's head,
    /// passing informational answers on. The error says whether the connection was reused.
    async fn attempt(
        &mut self,
        endpoint: &EndpointState,
        pooled: Option<Connection>,
    ) -> Result<Answered, (Failure, bool)> {
        let (caller, head, streamed) = (&mut *self.caller, self.head, self.streamed);
        let mut early = false;
        let mut connection = match pooled {
            // A request that must not be sent twice goes only over a connection that has
            // not been closed while idle; others are resent if it turns out it was.
            Some(connection) if head.idempotent || connection.looks_open() => connection,
            _ => connect(endpoint, self.connect_timeout)
                .await
                .map_err(|error| (error, false))?,
        };
        let reused = connection.reused;
        let endpoint_failed = |error: std::io::Error, before_answer: bool| {
            (
                Failure::Endpoint {
                    reason: error.to_string(),
                    before_answer,
                },
                reused,
            )
        };
        match streamed {
            None => connection
                .stream
                .write_all(&caller.request)
                .await
                .map_err(|error| endpoint_failed(error, true))?,
            Some(framing) => {
                let mut request_head = std::mem::take(&mut caller.request);
                let (from_endpoint, mut to_endpoint) = connection.stream.split();
                let sent = tokio::select! {
                    biased;
                    sent = body::relay(
                        &mut request_head,
                        &mut caller.stream,
                        &mut caller.buffer,
                        &mut to_endpoint,
                        Progress::new(framing),
                        caller.body_timeout,
                    ) => Some(sent),
                    // The endpoint answers (or closes) before taking the whole body, as a
                    // service refusing an upload does: stop sending and read the answer.
                    _ = from_endpoint.readable() => None,
                };
                caller.request = request_head;
                match sent {
                    Some(Ok(())) => {}
                    Some(Err(RelayError::Write(error))) => {
                        return Err(endpoint_failed(error, true))
                    }
                    Some(Err(_)) => return Err((Failure::Caller, reused)),
                    None => early = true,
                }
            }
        }
        loop {
            match codec::parse_response(
                &connection.buffer,
                MAX_RESPONSE_HEAD,
                head.head_method,
                head.close || early,
                &mut caller.response,
            ) {
                ResponseVerdict::Final(answer) => {
                    connection.buffer.advance(answer.length);
                    return Ok(Answered {
                        connection,
                        head: answer,
                        early,
                    });
                }
                ResponseVerdict::Interim(length) => {
                    caller
                        .stream
                        .write_all(&connection.buffer[..length])
                        .await
                        .map_err(|_| (Failure::Caller, reused))?;
                    connection.buffer.advance(length);
                    continue;
                }
                ResponseVerdict::Invalid => {
                    return Err((
                        Failure::Endpoint {
                            reason: "malformed response".into(),
                            before_answer: false,
                        },
                        reused,
                    ))
                }
                ResponseVerdict::Partial => {}
            }
            let before_answer = connection.buffer.is_empty();
            connection.buffer.reserve(READ_BUFFER);
            match connection.stream.read_buf(&mut connection.buffer).await {
                Ok(0) => {
                    let closed = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the connection closed before a complete answer",
                    );
                    return Err(endpoint_failed(closed, before_answer));
                }
                Ok(_) => {}
                Err(error) => return Err(endpoint_failed(error, before_answer)),
            }
        }
    }
}

async fn connect(endpoint: &EndpointState, timeout: Duration) -> Result<Connection, Failure> {
    let connecting = TcpStream::connect(endpoint.authority.as_str());
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| {
            Failure::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))
        })?
        .map_err(Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(Connection::new(stream))
}

/// Answers with the proxy's own error. `unread_body` when the request's body was not
/// (or not wholly) read: then the connection cannot carry another request.
async fn answer_error(
    upstream: &Upstream,
    caller: &mut Caller,
    head: &RequestHead,
    unread_body: bool,
    error: ProxyError,
) -> Next {
    tracing::debug!(service = %upstream.service(), %error, "proxy error");
    upstream.errors.inc();
    let close = unread_body || head.close;
    let (status, reason) = error.status_and_reason();
    let text = format!("{error}\n");
    let answer = own_answer(status.as_u16(), reason, &text, head.head_method, close);
    match caller.stream.write_all(&answer).await {
        Ok(()) if !close => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// An answer the proxy gives itself, with the reason in `x-ferry-error`.
fn own_answer(status: u16, reason: &str, text: &str, head_request: bool, close: bool) -> Vec<u8> {
    let phrase = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("");
    let mut answer = format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain\r\nx-ferry-error: {reason}\r\ncontent-length: {}\r\n",
        text.len()
    );
    if close {
        answer.push_str("connection: close\r\n");
    }
    answer.push_str("\r\n");
    if !head_request {
        answer.push_str(text);
    }
    answer.into_bytes()
}
