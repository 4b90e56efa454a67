//! What idle keep-alive connections cost the real `ferry` binary, and that what a storm of
//! them took is given back when they close: a few hundred connections that each make one
//! request and stay idle, on a hyper listener (the admin API, served as the Consul one is)
//! and on an outbound listener (the proxy's HTTP/1.1 path), twice over. Counts, not
//! timings: resident memory from /proc, conditions polled with generous deadlines, so a
//! loaded machine only makes it slower.
//!
//! glibc's malloc keeps freed memory for reuse rather than returning it to the OS, so
//! "given back" is checked as: a second storm like the first leaves ferry no larger than
//! the first did (beyond a margin), which fails if connections leak or the cost of idle
//! connections stays with the process.

mod common;

use std::time::{Duration, Instant};

use common::{mesh, start_ferry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CONNECTIONS: usize = 400;
/// Resident memory an idle connection may add, in KB: an unparked hyper connection costs
/// about 20 KB.
const PER_CONNECTION_KB: u64 = 12;
/// How much larger ferry may be after the second storm than after the first, in KB.
const SECOND_STORM_KB: u64 = 1024;

fn resident_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Polls `condition` every 100 ms until it holds or `limit` passes; whether it held.
async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// A service answering `ok` to every request, keeping connections open.
async fn ok_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Opens the connections to `port`, each making one GET of `path`, checks what they cost
/// while idle, closes them and waits until ferry has closed them too; returns ferry's
/// resident memory then.
async fn storm(pid: u32, port: u16, path: &str) -> u64 {
    let files = open_files(pid);
    let baseline = resident_kb(pid);
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    let mut open = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = [0u8; 4096];
        let read = stream.read(&mut answer).await.unwrap();
        assert!(answer[..read].starts_with(b"HTTP/1.1 200"), "{path}");
        open.push(stream);
    }
    assert!(
        eventually(Duration::from_secs(30), || open_files(pid)
            >= files + CONNECTIONS)
        .await
    );
    // Idle long enough to be parked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let growth = resident_kb(pid).saturating_sub(baseline);
    assert!(
        growth <= PER_CONNECTION_KB * CONNECTIONS as u64,
        "{path}: {CONNECTIONS} idle connections added {growth} KB ({} KB each)",
        growth / CONNECTIONS as u64
    );
    drop(open);
    assert!(eventually(Duration::from_secs(30), || open_files(pid) <= files + 1).await);
    resident_kb(pid)
}

#[tokio::test]
async fn idle_connections_cost_little_and_their_memory_comes_back() {
    let ferry = start_ferry().await;
    let outbound = mesh(&ferry, "IDLE", ok_service().await).await;
    // One request each first, so what a first request sets up is in the baselines.
    for (port, path) in [(ferry.admin, "/ready"), (outbound, "/")] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        stream.read_to_end(&mut Vec::new()).await.unwrap();
    }
    for (port, path) in [(ferry.admin, "/ready"), (outbound, "/")] {
        let first = storm(ferry.pid(), port, path).await;
        let second = storm(ferry.pid(), port, path).await;
        assert!(
            second <= first + SECOND_STORM_KB,
            "{path}: {first} KB after a first storm, {second} KB after a second"
        );
    }
}
