//! Relaying a body from one connection to the other as it arrives, in the framing it came
//! in: the bytes already read go out together with the head in one write, the rest is
//! copied until the framing says the message is complete. Bytes past the end of the message
//! (a pipelined next request) stay in the buffer.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::chunked::ChunkedScanner;
use super::codec::Framing;
use super::pool::READ_BUFFER;

/// How much of a body is still to come.
#[derive(Debug)]
pub enum Progress {
    Length(u64),
    Chunked(ChunkedScanner),
    UntilClose,
    Done,
}

impl Progress {
    pub fn new(framing: Framing) -> Progress {
        match framing {
            Framing::Empty | Framing::Length(0) => Progress::Done,
            Framing::Length(length) => Progress::Length(length),
            Framing::Chunked => Progress::Chunked(ChunkedScanner::default()),
            Framing::UntilClose => Progress::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Progress::Done)
    }

    /// How many bytes at the start of `data` belong to the body.
    fn take(&mut self, data: &[u8]) -> Result<usize, RelayError> {
        let taken = match self {
            Progress::Length(remaining) => {
                let taken = (*remaining).min(data.len() as u64);
                *remaining -= taken;
                if *remaining == 0 {
                    *self = Progress::Done;
                }
                taken as usize
            }
            Progress::Chunked(scanner) => {
                let taken = scanner.scan(data).map_err(|_| RelayError::Malformed)?;
                if scanner.is_done() {
                    *self = Progress::Done;
                }
                taken
            }
            Progress::UntilClose => data.len(),
            Progress::Done => 0,
        };
        Ok(taken)
    }
}

/// Which side a relay failed on decides what can still be said to whom.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading the body failed: {0}")]
    Read(std::io::Error),
    #[error("the body ended early")]
    Truncated,
    #[error("the chunked body is malformed")]
    Malformed,
    #[error("writing the body failed: {0}")]
    Write(std::io::Error),
    #[error("no progress for {0:?}")]
    Stalled(Duration),
}

/// Writes `head` followed by the body: first what `buffer` already holds, then what `from`
/// sends, until the body is complete. A side that makes no progress for `idle` (a stalled
/// sender, a reader that stopped reading) ends the relay.
pub async fn relay(
    head: &mut Vec<u8>,
    from: &mut (impl AsyncRead + Unpin),
    buffer: &mut BytesMut,
    to: &mut (impl AsyncWrite + Unpin),
    mut progress: Progress,
    idle: Duration,
) -> Result<(), RelayError> {
    let stalled = |_| RelayError::Stalled(idle);
    let taken = progress.take(buffer)?;
    head.extend_from_slice(&buffer[..taken]);
    buffer.advance(taken);
    to.write_all(head).await.map_err(RelayError::Write)?;
    while !progress.is_done() {
        buffer.reserve(READ_BUFFER);
        let read = timeout(idle, from.read_buf(buffer))
            .await
            .map_err(stalled)?
            .map_err(RelayError::Read)?;
        if read == 0 {
            return match progress {
                Progress::UntilClose => Ok(()),
                _ => Err(RelayError::Truncated),
            };
        }
        let taken = progress.take(buffer)?;
        timeout(idle, to.write_all(&buffer[..taken]))
            .await
            .map_err(stalled)?
            .map_err(RelayError::Write)?;
        buffer.advance(taken);
    }
    Ok(())
}

/// Reads until `buffer` holds at least `length` bytes.
pub async fn fill(
    from: &mut TcpStream,
    buffer: &mut BytesMut,
    length: usize,
) -> Result<(), RelayError> {
    while buffer.len() < length {
        buffer.reserve(length - buffer.len());
        if from.read_buf(buffer).await.map_err(RelayError::Read)? == 0 {
            return Err(RelayError::Truncated);
        }
    }
    Ok(())
}
