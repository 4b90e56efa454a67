//! The accept loop every Ferry listener shares, the APIs' and the proxy's alike: an
//! idle/header timeout, a header size limit (431 beyond it), a connection cap, HTTP/1.1
//! and h2c with upgrades, and graceful shutdown that lets in-flight requests finish.
//!
//! `accept_and_drain` is the loop itself, whatever serves a connection; `serve` runs it
//! with hyper on every connection (the APIs), the proxy runs it with its own HTTP/1.1 path
//! first and hyper after a hand-over. Both end a hyper connection through `until_shutdown`,
//! so shutdown means the same on every listener.
//!
//! An idle keep-alive connection costs only its socket and its task: hyper's HTTP/1.1
//! connection keeps a read buffer and a header buffer (8 KB each at least) for as long as
//! it lives, so `serve` parks a connection that has waited `PARK_AFTER` for its next
//! request (hyper's connection ends, the socket stays open) and starts a new one when bytes
//! arrive. HTTP/2 connections stay with hyper throughout.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::rewind::Rewind;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A service hyper can serve a connection with, as every listener's is: its bounds spelled
/// once for `serve` and for the proxy's hand-over to hyper.
pub trait Service:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> Service for S
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Body = B;
}

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Time to receive a request's headers; hyper's timer also runs while a keep-alive
    /// connection is idle, so this closes idle connections too.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Request heads larger than this are answered 431.
    pub max_header_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

/// The next connection, once the connection cap allows one; None at shutdown. The permit
/// is the connection's place under the cap, held until it closes.
pub async fn accept(
    api: &'static str,
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.ok()?,
            _ = shutdown.changed() => return None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer, permit));
            }
            Err(error) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(api, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// hyper's HTTP/1.1 and HTTP/2 server with the limits applied.
pub fn builder(limits: ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(max_buf_size(limits));
    builder.http2().timer(TokioTimer::new());
    builder
}

/// hyper's HTTP/1.1 server alone, with the limits `builder` applies.
fn http1_builder(limits: ConnectionLimits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(max_buf_size(limits));
    builder
}

fn max_buf_size(limits: ConnectionLimits) -> usize {
    limits.max_header_bytes.max(8192)
}

/// Accepts connections until `shutdown` turns true, then drains: the loop every listener
/// runs, the APIs' (`serve`) and the proxy's outbound listeners alike. Each connection is
/// served by the future `connection` makes for it, in its own task, holding its place
/// under the connection cap until it ends; the receiver it is given tells it of shutdown.
/// After shutdown the listener closes at once and open connections get up to the drain
/// timeout to finish.
pub async fn accept_and_drain<F, C>(
    api: &'static str,
    listener: TcpListener,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    mut connection: F,
) where
    F: FnMut(TcpStream, SocketAddr, watch::Receiver<bool>) -> C,
    C: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    while let Some((stream, peer, permit)) = accept(api, &listener, &permits, &mut shutdown).await {
        let served = connection(stream, peer, shutdown.clone());
        tokio::spawn(async move {
            served.await;
            drop(permit);
        });
    }
    drop(listener);
    // Every permit back means every connection task has ended.
    let everyone = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = permits.acquire_many(everyone) => tracing::debug!(api, "all connections closed"),
        _ = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(api, "shutdown timed out with connections still open");
        }
    }
}

/// Runs one hyper connection to its end; once `shutdown` changes, it finishes the requests
/// in flight and closes.
pub async fn until_shutdown<C>(
    api: &'static str,
    peer: SocketAddr,
    connection: C,
    mut shutdown: watch::Receiver<bool>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = outcome {
        tracing::debug!(api, %peer, %error, "connection ended with an error");
    }
}

/// Serves `service` with hyper on every connection `listener` accepts, until `shutdown`
/// turns true; then drains. HTTP/1.1 connections are parked while idle (`serve_http1`).
pub async fn serve<S: Service + Unpin>(
    api: &'static str,
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
) {
    let builders = Arc::new((builder(limits), http1_builder(limits)));
    accept_and_drain(api, listener, limits, shutdown, |stream, peer, shutdown| {
        serve_connection(
            api,
            builders.clone(),
            stream,
            peer,
            service.clone(),
            limits,
            shutdown,
        )
    })
    .await;
}

/// The HTTP/2 connection preface; an HTTP/1.1 request never starts with it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long an HTTP/1.1 connection waits for its next request before it is parked. A busy
/// connection's next request comes well within it, so it keeps its hyper connection.
pub const PARK_AFTER: Duration = Duration::from_millis(10);

/// One connection of `serve`: HTTP/2 (the preface first) goes to hyper for good; HTTP/1.1
/// to `serve_http1`.
async fn serve_connection<S: Service + Unpin>(
    api: &'static str,
    builders: Arc<(auto::Builder<TokioExecutor>, http1::Builder)>,
    mut stream: TcpStream,
    peer: SocketAddr,
    service: S,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
) {
    // Read until the bytes tell the preface from a request (at most the preface's length).
    let mut first = BytesMut::with_capacity(H2_PREFACE.len());
    let version = tokio::time::timeout(limits.idle_timeout, async {
        loop {
            let prefix = &H2_PREFACE[..first.len()];
            if first[..] != *prefix {
                return Some(false);
            }
            if first.len() == H2_PREFACE.len() {
                return Some(true);
            }
            match stream.read_buf(&mut first).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    });
    match version.await {
        Ok(Some(true)) => {
            let io = TokioIo::new(Rewind::new(first.freeze(), stream));
            let connection = builders.0.serve_connection_with_upgrades(io, service);
            // Boxed, as hyper's HTTP/1.1 connection below: inline, they would make every
            // connection's task as large, parked or not.
            Box::pin(until_shutdown(api, peer, connection, shutdown)).await;
        }
        Ok(Some(false)) => {
            let http1 = &builders.1;
            serve_http1(
                api,
                http1,
                stream,
                first.freeze(),
                peer,
                service,
                limits,
                shutdown,
            )
            .await;
        }
        Ok(None) | Err(_) => {}
    }
}

/// An HTTP/1.1 connection: served by hyper while busy; parked once it has waited
/// `PARK_AFTER` for a request with nothing in flight and everything written: hyper's
/// connection ends without closing the socket, the bytes it read of a next request are
/// kept, and a new hyper connection starts when the caller sends. Parked, the connection
/// is closed when idle for the idle timeout or at shutdown.
#[allow(clippy::too_many_arguments)]
async fn serve_http1<S: Service + Unpin>(
    api: &'static str,
    builder: &http1::Builder,
    mut stream: TcpStream,
    mut read: Bytes,
    peer: SocketAddr,
    service: S,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::default());
    loop {
        if read.is_empty() {
            tokio::select! {
                biased;
                ready = stream.readable() => if ready.is_err() { return },
                () = tokio::time::sleep(limits.idle_timeout) => return,
                () = stopping(&mut shutdown) => return,
            }
        }
        let io = Rewind::watched(
            std::mem::take(&mut read),
            stream,
            activity.unflushed.clone(),
        );
        let tracked = Tracked {
            inner: service.clone(),
            activity: activity.clone(),
        };
        let mut connection = Box::new(builder.serve_connection(TokioIo::new(io), tracked));
        // Armed when hyper has handed out an answer (and at the start): fires once the
        // connection has then waited `PARK_AFTER` for its next request.
        let park = tokio::time::sleep(PARK_AFTER);
        tokio::pin!(park);
        let mut armed = true;
        let mut parking = false;
        let outcome = loop {
            tokio::select! {
                biased;
                outcome = std::future::poll_fn(|context| connection.poll_without_shutdown(context)) => break outcome,
                () = stopping(&mut shutdown), if !parking => {
                    // As `until_shutdown`: the request in flight finishes, then it closes.
                    Pin::new(&mut *connection).graceful_shutdown();
                    let outcome = std::future::poll_fn(|context| connection.poll_without_shutdown(context)).await;
                    if let Err(error) = outcome {
                        tracing::debug!(api, %peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = activity.answer_out.notified(), if !parking => {
                    park.as_mut().reset(tokio::time::Instant::now() + PARK_AFTER);
                    armed = true;
                }
                () = &mut park, if armed && !parking => {
                    armed = false;
                    if activity.in_flight() {
                        // The answer's end arms the timer again.
                    } else if activity.unflushed.load(Ordering::Relaxed) {
                        park.as_mut().reset(tokio::time::Instant::now() + PARK_AFTER);
                        armed = true;
                    } else {
                        // hyper is between requests: it ends at once, keeping the socket.
                        parking = true;
                        Pin::new(&mut *connection).graceful_shutdown();
                    }
                }
            }
        };
        if let Err(error) = outcome {
            tracing::debug!(api, %peer, %error, "connection ended with an error");
            return;
        }
        let parts = connection.into_parts();
        let (unread, inner) = parts.io.into_inner().into_inner();
        if !parking || !activity.is_idle() {
            // hyper ended the connection itself (the caller closed, or asked to).
            let mut inner = inner;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut inner).await;
            return;
        }
        stream = inner;
        read = if parts.read_buf.is_empty() {
            unread
        } else {
            let mut joined = BytesMut::from(&parts.read_buf[..]);
            joined.extend_from_slice(&unread);
            joined.freeze()
        };
    }
}

/// Resolves once shutdown is asked for; never if no one can ask any more.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What `serve_http1` parks by: requests started, answers wholly handed to hyper (and a
/// signal for each), and whether hyper has written out all it was given.
#[derive(Debug, Default)]
struct Activity {
    requests: AtomicU64,
    answered: AtomicU64,
    answer_out: tokio::sync::Notify,
    /// hyper keeps what it could not write yet in its own buffer: that must go out before
    /// the connection is parked. The connection (`Rewind::watched`) keeps this up to date.
    unflushed: Arc<AtomicBool>,
}

impl Activity {
    fn in_flight(&self) -> bool {
        self.requests.load(Ordering::Relaxed) != self.answered.load(Ordering::Relaxed)
    }

    fn is_idle(&self) -> bool {
        !self.in_flight() && !self.unflushed.load(Ordering::Relaxed)
    }
}

/// The service, counting requests in and answers out into `Activity`.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: Service> hyper::service::Service<Request<Incoming>> for Tracked<S> {
    type Response = Response<Answer<S::Body>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.activity.requests.fetch_add(1, Ordering::Relaxed);
        let answered = Answered(self.activity.clone());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Answer {
                body: Box::pin(body),
                _answered: answered,
            }))
        })
    }
}

/// Counts an answer as out when dropped: with its body, or with the request's future.
struct Answered(Arc<Activity>);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::Relaxed);
        self.0.answer_out.notify_one();
    }
}

/// A response body that counts its answer out once hyper has dropped it.
struct Answer<B> {
    body: Pin<Box<B>>,
    _answered: Answered,
}

impl<B: http_body::Body> http_body::Body for Answer<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.body.as_mut().poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;

    fn limits(drain_timeout: Duration) -> ConnectionLimits {
        ConnectionLimits {
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
            max_header_bytes: 8192,
            drain_timeout,
        }
    }

    /// Runs `accept_and_drain` with connections that end `linger` after shutdown, opens
    /// two, signals shutdown; returns how many had ended when it returned, and how long
    /// the drain took.
    async fn drain(linger: Duration, drain_timeout: Duration) -> (usize, Duration) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let opened = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let counters = (opened.clone(), ended.clone());
        let connection = move |_stream, _peer, mut shutdown: watch::Receiver<bool>| {
            let (opened, ended) = counters.clone();
            opened.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = shutdown.changed().await;
                tokio::time::sleep(linger).await;
                ended.fetch_add(1, Ordering::SeqCst);
            }
        };
        let serving = tokio::spawn(accept_and_drain(
            "test",
            listener,
            limits(drain_timeout),
            shutdown,
            connection,
        ));
        let _callers = [
            TcpStream::connect(address).await.unwrap(),
            TcpStream::connect(address).await.unwrap(),
        ];
        while opened.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let signalled = Instant::now();
        stop.send(true).unwrap();
        serving.await.unwrap();
        (ended.load(Ordering::SeqCst), signalled.elapsed())
    }

    /// `serve` with a service answering each request with its path, or with `size` bytes
    /// for `/large/SIZE`.
    async fn serve_paths() -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
            let path = request.uri().path().to_owned();
            let body = match path.strip_prefix("/large/") {
                Some(size) => Bytes::from(vec![b'x'; size.parse().unwrap()]),
                None => Bytes::from(path),
            };
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(body)))
        });
        let serving = tokio::spawn(serve(
            "test",
            listener,
            service,
            limits(Duration::from_secs(5)),
            shutdown,
        ));
        (address, stop, serving)
    }

    /// Reads one answer with a Content-Length body, leaving what follows in `buffer`;
    /// returns the head and the body.
    async fn answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> (String, Vec<u8>) {
        loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buffer[..end].to_vec()).unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                while buffer.len() < end + 4 + length {
                    let mut chunk = vec![0u8; 65536];
                    let read = stream.read(&mut chunk).await.unwrap();
                    assert!(read > 0, "closed mid-answer");
                    buffer.extend_from_slice(&chunk[..read]);
                }
                let body = buffer[end + 4..end + 4 + length].to_vec();
                buffer.drain(..end + 4 + length);
                return (head, body);
            }
            let mut chunk = vec![0u8; 65536];
            let read = stream.read(&mut chunk).await.unwrap();
            assert!(read > 0, "closed before an answer");
            buffer.extend_from_slice(&chunk[..read]);
        }
    }

    #[tokio::test]
    async fn an_idle_http1_connection_is_parked_and_keeps_serving() {
        use tokio::io::AsyncWriteExt;
        let (address, stop, serving) = serve_paths().await;
        let mut caller = TcpStream::connect(address).await.unwrap();
        let mut buffer = Vec::new();
        let idle = PARK_AFTER * 4;
        caller
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(answer(&mut caller, &mut buffer).await.1, b"/a");
        tokio::time::sleep(idle).await;
        // Parked; the next request arrives in two parts with a park between them.
        caller.write_all(b"GET /b HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(idle).await;
        caller.write_all(b"st: x\r\n\r\n").await.unwrap();
        assert_eq!(answer(&mut caller, &mut buffer).await.1, b"/b");
        // An answer larger than the socket buffers, read only after a park's worth of
        // time: it is written out whole before the connection parks.
        caller
            .write_all(
                b"GET /large/8000000 HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
            )
            .await
            .unwrap();
        tokio::time::sleep(idle).await;
        let (head, body) = answer(&mut caller, &mut buffer).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body.len(), 8_000_000);
        assert_eq!(answer(&mut caller, &mut buffer).await.1, b"/c");
        tokio::time::sleep(idle).await;
        // Shutdown closes a parked connection at once.
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("a parked connection does not hold up shutdown")
            .unwrap();
        let mut rest = Vec::new();
        caller.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty() && buffer.is_empty());
    }

    #[tokio::test]
    async fn shutdown_waits_for_open_connections_to_finish() {
        let (ended, took) = drain(Duration::from_millis(50), Duration::from_secs(10)).await;
        assert_eq!(
            ended, 2,
            "both connections finished before the loop returned"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn shutdown_gives_up_on_connections_after_the_drain_timeout() {
        let (ended, took) = drain(Duration::from_secs(60), Duration::from_millis(100)).await;
        assert_eq!(ended, 0);
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
    }
}
