//! A connection with bytes already read from it put back in front, so hyper can take over
//! a connection someone else has started reading: the proxy's HTTP/1.1 path handing over,
//! or `listen` resuming a parked connection. Asked to (`watched`), it also notes whether
//! everything written to it has been flushed, which hyper does not tell.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
    /// Set by every write, cleared by a completed flush, when watched.
    unflushed: Option<Arc<AtomicBool>>,
}

impl Rewind {
    pub fn new(prefix: Bytes, inner: TcpStream) -> Rewind {
        Rewind {
            prefix,
            inner,
            unflushed: None,
        }
    }

    /// `new`, noting in `unflushed` whether something written has not been flushed yet.
    pub fn watched(prefix: Bytes, inner: TcpStream, unflushed: Arc<AtomicBool>) -> Rewind {
        Rewind {
            prefix,
            inner,
            unflushed: Some(unflushed),
        }
    }

    fn wrote(&self) {
        if let Some(unflushed) = &self.unflushed {
            unflushed.store(true, Ordering::Relaxed);
        }
    }

    /// The connection, and what of the bytes put back has not been read yet.
    pub fn into_inner(self) -> (Bytes, TcpStream) {
        (self.prefix, self.inner)
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let length = self.prefix.len().min(buffer.remaining());
            buffer.put_slice(&self.prefix[..length]);
            self.prefix.advance(length);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(context, buffer)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.wrote();
        Pin::new(&mut self.inner).poll_write(context, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.wrote();
        Pin::new(&mut self.inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(context);
        if let (Poll::Ready(Ok(())), Some(unflushed)) = (&flushed, &self.unflushed) {
            unflushed.store(false, Ordering::Relaxed);
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}
