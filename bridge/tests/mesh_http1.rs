//! The outbound listener's own HTTP/1.1 path, byte by byte, through the real `ferry`
//! binary: raw sockets on both sides, so what the caller sent and what the service got can
//! be compared exactly. Chunked bodies and trailers, bodies past the replay buffer,
//! pipelining, HEAD, hop-by-hop headers, keep-alive connections the service closes behind
//! the proxy's back, and the requests handed to hyper (HTTP/1.0, `Expect`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{mesh, start_ferry, start_ferry_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the service received it.
struct Received {
    head: String,
    body: Vec<u8>,
}

/// Reads one message (head and body) from `stream`, leaving what follows in `buffer`.
/// Bodies are returned as sent on the wire: chunked bodies keep their framing.
async fn read_message(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    bodiless: bool,
) -> Option<Received> {
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 65536];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
    buffer.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let body_end = |buffer: &[u8]| -> Option<usize> {
        if bodiless {
            Some(0)
        } else if lower.contains("transfer-encoding: chunked") {
            chunked_end(buffer)
        } else if let Some(at) = lower.find("content-length: ") {
            let length: usize = lower[at + 16..].split("\r\n").next()?.parse().ok()?;
            (buffer.len() >= length).then_some(length)
        } else {
            Some(0)
        }
    };
    loop {
        if let Some(end) = body_end(buffer) {
            let body = buffer.drain(..end).collect();
            return Some(Received { head, body });
        }
        let mut chunk = [0u8; 65536];
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Where a complete chunked body (trailers included) ends, if it is complete.
fn chunked_end(buffer: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + buffer[at..].windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&buffer[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailer lines until an empty one.
            loop {
                let end = at + buffer[at..].windows(2).position(|w| w == b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(at);
                }
            }
        }
        if buffer.len() < at + size + 2 {
            return None;
        }
        at += size + 2;
    }
}

/// A service on a raw socket: answers every request with what `answer` returns; closes the
/// connection after each answer when `close_after` is set, without saying so.
async fn service(answer: fn(&Received) -> Vec<u8>, close_after: bool) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                while let Some(request) = read_message(&mut stream, &mut buffer, false).await {
                    if stream.write_all(&answer(&request)).await.is_err() || close_after {
                        break;
                    }
                }
            });
        }
    });
    (port, connections)
}

/// Echoes the request: its head as the body of a chunked answer with a trailer, so the
/// caller sees exactly what the service received.
fn echo(request: &Received) -> Vec<u8> {
    let mut content = request.head.clone().into_bytes();
    content.extend_from_slice(b"--body--");
    content.extend_from_slice(&request.body);
    let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    answer.extend_from_slice(format!("{:x}\r\n", content.len()).as_bytes());
    answer.extend_from_slice(&content);
    answer.extend_from_slice(b"\r\n0\r\nX-Checksum: done\r\n\r\n");
    answer
}

fn sized(request: &Received) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        request.body.len()
    )
    .into_bytes();
    if !request.head.starts_with("HEAD") {
        answer.extend_from_slice(&request.body);
    }
    answer
}

async fn exchange(stream: &mut TcpStream, buffer: &mut Vec<u8>, request: &[u8]) -> Received {
    stream.write_all(request).await.unwrap();
    let bodiless = request.starts_with(b"HEAD");
    tokio::time::timeout(
        Duration::from_secs(5),
        read_message(stream, buffer, bodiless),
    )
    .await
    .expect("an answer within 5 s")
    .expect("an answer")
}

#[tokio::test]
async fn chunked_bodies_trailers_and_pipelined_requests_pass_byte_for_byte() {
    let ferry = start_ferry().await;
    let (service_port, _) = service(echo, false).await;
    let port = mesh(&ferry, "ECHO", service_port).await;
    let mut caller = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buffer = Vec::new();

    // Two requests in one write: a chunked POST with a trailer, then a GET.
    let chunked = b"POST /upload HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, X-Private\r\nX-Private: secret\r\n\r\n4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Sum: 9\r\n\r\n";
    let mut both = chunked.to_vec();
    both.extend_from_slice(b"GET /second HTTP/1.1\r\nHost: echo\r\nX-B3-TraceId: 463ac35c9f6413ad\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\n\r\n");
    caller.write_all(&both).await.unwrap();
    let first = read_message(&mut caller, &mut buffer, false).await.unwrap();
    let second = read_message(&mut caller, &mut buffer, false).await.unwrap();

    assert!(first.head.starts_with("HTTP/1.1 200 OK\r\n"));
    let echoed = String::from_utf8_lossy(&first.body);
    assert!(echoed.contains("POST /upload HTTP/1.1\r\n"));
    assert!(
        echoed.contains("--body--4;ext=1\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Sum: 9\r\n\r\n"),
        "the chunked body and its trailer arrive as sent: {echoed}"
    );
    let lower = echoed.to_ascii_lowercase();
    assert!(
        !lower.contains("x-private") && !lower.contains("keep-alive"),
        "hop-by-hop headers stay behind: {echoed}"
    );
    assert!(lower.contains("traceparent: 00-") && lower.contains("x-b3-spanid: "));
    assert!(
        first.body.ends_with(b"\r\n0\r\nX-Checksum: done\r\n\r\n"),
        "the response trailer reaches the caller"
    );

    let echoed = String::from_utf8_lossy(&second.body).to_ascii_lowercase();
    assert!(echoed.contains("--body--") && echoed.contains("get /second http/1.1\r\n"));
    assert!(echoed.contains("x-b3-traceid: 0000000000000000463ac35c9f6413ad\r\n"));
    assert!(echoed.contains("x-b3-parentspanid: a2fb4a1d1a96d312\r\n"));
}

#[tokio::test]
async fn bodies_past_the_replay_buffer_stream_through_and_head_has_no_body() {
    let ferry = start_ferry().await;
    let (service_port, connections) = service(sized, false).await;
    let port = mesh(&ferry, "SIZED", service_port).await;
    let mut caller = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buffer = Vec::new();

    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut request = format!(
        "PUT /blob HTTP/1.1\r\nHost: sized\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let answer = exchange(&mut caller, &mut buffer, &request).await;
    assert!(answer.head.starts_with("HTTP/1.1 200"));
    assert_eq!(answer.body, body, "a 1 MB body comes back intact");

    let head = exchange(
        &mut caller,
        &mut buffer,
        b"HEAD /blob HTTP/1.1\r\nHost: sized\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(head.head.contains("Content-Length: 0"));
    let after = exchange(
        &mut caller,
        &mut buffer,
        b"POST /small HTTP/1.1\r\nHost: sized\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(
        after.body, b"hello",
        "the connection is still in step after HEAD"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one pooled connection to the service carried all three"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_the_service_closed_is_replaced_without_an_error() {
    let ferry = start_ferry().await;
    let (service_port, connections) = service(sized, true).await;
    let port = mesh(&ferry, "CLOSER", service_port).await;
    let mut caller = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buffer = Vec::new();
    // A POST must find out before sending that the connection is closed; a GET may be
    // resent after finding out.
    for round in 0..10 {
        let request: &[u8] = if round % 2 == 0 {
            b"POST /x HTTP/1.1\r\nHost: closer\r\nContent-Length: 2\r\n\r\nok"
        } else {
            b"GET /x HTTP/1.1\r\nHost: closer\r\n\r\n"
        };
        let answer = exchange(&mut caller, &mut buffer, request).await;
        assert!(
            answer.head.starts_with("HTTP/1.1 200"),
            "round {round}: {}",
            answer.head
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connections.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn http_1_0_and_expect_continue_are_served_by_the_general_path() {
    let ferry = start_ferry().await;
    let (service_port, _) = service(sized, false).await;
    let port = mesh(&ferry, "GENERAL", service_port).await;

    let mut caller = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    caller
        .write_all(b"POST /old HTTP/1.0\r\nHost: general\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), caller.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("abc"));

    let mut caller = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buffer = Vec::new();
    caller
        .write_all(b"PUT /wait HTTP/1.1\r\nHost: general\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await
        .unwrap();
    let interim = read_message(&mut caller, &mut buffer, true).await.unwrap();
    assert!(interim.head.starts_with("HTTP/1.1 100"), "{}", interim.head);
    let answer = exchange(&mut caller, &mut buffer, b"data").await;
    assert_eq!(answer.body, b"data");
}

#[tokio::test]
async fn a_body_that_stops_arriving_ends_the_exchange_after_the_idle_timeout() {
    let ferry = start_ferry_with(&["--idle-timeout", "1"]).await;
    let (service_port, _) = service(
        |_| b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..".to_vec(),
        false,
    )
    .await;
    let port = mesh(&ferry, "STALLS", service_port).await;
    let mut caller = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    caller
        .write_all(b"GET / HTTP/1.1\r\nHost: stalls\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    // The bound only fails a proxy that never closes; the 1 s is checked below.
    tokio::time::timeout(Duration::from_secs(30), caller.read_to_end(&mut received))
        .await
        .expect("the proxy closes the caller's connection")
        .unwrap();
    assert!(
        received.ends_with(b"only ten.."),
        "what did arrive was passed on"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_service_that_refuses_an_upload_early_is_answered_with_its_refusal() {
    let ferry = start_ferry().await;
    // Reads the head only, answers 413 at once, stops reading, and keeps the connection
    // open until the test has the answer: a proxy that waited for the service to finish
    // (or to close) before passing the refusal on would never answer.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_port = listener.local_addr().unwrap().port();
    let release = Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let held = held.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let refusal =
                    b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\r\ntoo big\r\n";
                let _ = stream.write_all(refusal).await;
                let _ = tokio::time::timeout(Duration::from_secs(120), held.notified()).await;
            });
        }
    });
    let port = mesh(&ferry, "UPLOADS", service_port).await;
    let caller = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut reader, mut writer) = caller.into_split();
    let size = 64 * 1024 * 1024;
    tokio::spawn(async move {
        let head = format!("PUT /big HTTP/1.1\r\nHost: uploads\r\nContent-Length: {size}\r\n\r\n");
        let _ = writer.write_all(head.as_bytes()).await;
        let chunk = vec![b'u'; 1024 * 1024];
        for _ in 0..64 {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    // Generous: on a loaded machine the answer may take seconds, and a proxy that holds
    // it back never delivers it while the service keeps its connection open.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buffer = [0u8; 4096];
        while !answer.ends_with(b"too big\r\n") {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await;
    release.notify_waiters();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "the refusal was held back while the service kept its connection: {answer}"
    );
    assert!(
        answer.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "the caller gets the service's refusal, not a proxy error: {answer}"
    );
    assert!(answer.to_ascii_lowercase().contains("connection: close"));
    assert!(answer.ends_with("too big\r\n"));
}
