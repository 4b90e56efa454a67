//! Load shapes wrk cannot make, for `bench/consul.sh` and others:
//! - `watchers ADDR PREFIX COUNT ROUNDS`: COUNT blocking KV reads held on PREFIX, then one
//!   write; prints when each watcher got its answer, relative to the write being sent.
//! - `visibility WRITE_EUREKA READ_CONSUL READ_EUREKA APP COUNT`: registration to
//!   visibility, one registration at a time (for `bench/etcd.sh`: written on one node, read
//!   on another); see the function.
//! - `service-watchers WATCH_CONSUL WRITE_EUREKA APP COUNT ROUNDS`: `watchers` for Consul
//!   health blocking queries, woken by a Eureka registration (possibly on another node).
//! - `kv-writes ADDR COUNT CONCURRENCY`: COUNT durable KV writes; prints writes per second.
//! - `rate ADDR PATH RATE SECONDS CONNECTIONS`: GETs at a fixed RATE per second, open loop;
//!   a request delayed by a slow earlier answer counts from when it was due (coordinated
//!   omission corrected, as wrk2 does). Prints p50/p99/p99.9/max.
//! - `renew ADDR PATHS_FILE INTERVAL SECONDS CONNECTIONS`: Eureka heartbeats, as the
//!   instances' own clients send them: a PUT to every path of the file (bench/register.py's
//!   ids file) once per INTERVAL seconds, spread evenly, open loop, for SECONDS. Prints as
//!   `rate` does; any answer but 200 (a 404: the server lost the instance) is an error.
//! - `idle ADDR PATH COUNT PID`: what idle keep-alive connections cost the server process
//!   PID, and what it keeps once they are gone: its RSS before, with COUNT connections that
//!   each sent one GET and then stay idle, and after all of them closed (polled until the
//!   kernel lists none left at ADDR's port, then a short settle). Prints kilobytes.
//!
//! Raw HTTP/1.1 over tokio sockets, so the client adds as little as possible to what it
//! measures. Only loopback addresses are expected.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Mutex};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One response: status, `X-Consul-Index`, and whether the server closes the connection
/// after it (Tomcat does after 100 requests on one connection).
struct Response {
    status: u16,
    index: u64,
    close: bool,
}

async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<Response, Error> {
    Ok(exchange_body(stream, request).await?.0)
}

/// `exchange`, with the response's body.
async fn exchange_body(
    stream: &mut TcpStream,
    request: &[u8],
) -> Result<(Response, Vec<u8>), Error> {
    stream.write_all(request).await?;
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err("connection closed".into());
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..end])?.to_ascii_lowercase();
            let status: u16 = head.split_whitespace().nth(1).ok_or("no status")?.parse()?;
            let header = |name: &str| {
                head.lines()
                    .find_map(|line| line.strip_prefix(name).map(|value| value.trim().to_owned()))
            };
            let length: usize = header("content-length:")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            let index = header("x-consul-index:")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            let close = header("connection:").is_some_and(|value| value == "close");
            while buffer.len() < end + 4 + length {
                let read = stream.read(&mut chunk).await?;
                if read == 0 {
                    return Err("connection closed in body".into());
                }
                buffer.extend_from_slice(&chunk[..read]);
            }
            buffer.truncate(end + 4 + length);
            let body = buffer.split_off(end + 4);
            return Ok((
                Response {
                    status,
                    index,
                    close,
                },
                body,
            ));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn put_request(path: &str, body: &str) -> Vec<u8> {
    format!(
        "PUT {path} HTTP/1.1\r\nHost: bench\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").into_bytes()
}

async fn watchers(
    address: String,
    prefix: String,
    count: usize,
    rounds: usize,
) -> Result<(), Error> {
    let mut writer = TcpStream::connect(&address).await?;
    writer.set_nodelay(true)?;
    exchange(
        &mut writer,
        &put_request(&format!("/v1/kv/{prefix}key"), "0"),
    )
    .await?;
    let start = exchange(
        &mut writer,
        &get_request(&format!("/v1/kv/{prefix}?recurse")),
    )
    .await?;
    hold_watchers(
        &address,
        &format!("/v1/kv/{prefix}?recurse"),
        start.index,
        count,
        rounds,
        &mut writer,
        |round| put_request(&format!("/v1/kv/{prefix}key"), &format!("{}", round + 1)),
    )
    .await
}

/// COUNT connections to ADDRESS, each holding the blocking query `QUERY` (with `index` and
/// `wait=60s` added) from index START, then one request `trigger(round)` on WRITER that
/// must wake them all; ROUNDS times, each from the index the last answer gave. Prints how
/// long after the trigger was sent the answers arrived.
async fn hold_watchers(
    address: &str,
    query: &str,
    start: u64,
    count: usize,
    rounds: usize,
    writer: &mut TcpStream,
    trigger: impl Fn(usize) -> Vec<u8>,
) -> Result<(), Error> {
    let separator = if query.contains('?') { '&' } else { '?' };
    let ready = Arc::new(Barrier::new(count + 1));
    let answered = Arc::new(Barrier::new(count + 1));
    let arrivals: Arc<Mutex<Vec<Instant>>> =
        Arc::new(Mutex::new(Vec::with_capacity(count * rounds)));
    let mut tasks = Vec::new();
    for _ in 0..count {
        let (address, query) = (address.to_owned(), query.to_owned());
        let (ready, answered, arrivals) = (ready.clone(), answered.clone(), arrivals.clone());
        let mut index = start;
        tasks.push(tokio::spawn(async move {
            let mut stream = connect(&address).await?;
            for _ in 0..rounds {
                let request = get_request(&format!("{query}{separator}index={index}&wait=60s"));
                stream.write_all(&request).await?;
                ready.wait().await;
                let response = exchange(&mut stream, b"").await?;
                arrivals.lock().await.push(Instant::now());
                if response.status != 200 || response.index <= index {
                    return Err::<(), Error>(
                        format!(
                            "unexpected answer {} at index {}",
                            response.status, response.index
                        )
                        .into(),
                    );
                }
                index = response.index;
                answered.wait().await;
            }
            Ok(())
        }));
    }
    let mut latencies = Vec::with_capacity(count * rounds);
    for round in 0..rounds {
        ready.wait().await;
        // Every request is written; give the server a moment to park them all.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sent = Instant::now();
        let response = exchange(writer, &trigger(round)).await?;
        if !(200..300).contains(&response.status) {
            return Err(format!(
                "the write that wakes the watchers answered {}",
                response.status
            )
            .into());
        }
        answered.wait().await;
        let mut arrived = arrivals.lock().await;
        latencies.extend(arrived.drain(..).map(|at| at.duration_since(sent)));
    }
    for task in tasks {
        task.await??;
    }
    println!(
        "watchers={count} rounds={rounds} samples={} {}",
        latencies.len(),
        millis_summary("", &mut latencies)
    );
    Ok(())
}

/// A Eureka registration of instance `id` of `app`, as bench/register.py sends one, with a
/// lease of an hour: nothing renews these instances while a run lasts.
fn register_request(app: &str, id: &str) -> Vec<u8> {
    let body = format!(
        r#"{{"instance":{{"instanceId":"{id}","hostName":"127.0.0.1","app":"{app}","ipAddr":"127.0.0.1","status":"UP","port":{{"$":8080,"@enabled":"true"}},"dataCenterInfo":{{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}},"leaseInfo":{{"renewalIntervalInSecs":30,"durationInSecs":3600}}}}}}"#
    );
    format!(
        "POST /eureka/apps/{app} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn connect(address: &str) -> Result<TcpStream, Error> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn register(stream: &mut TcpStream, app: &str, id: &str) -> Result<(), Error> {
    let response = exchange(stream, &register_request(app, id)).await?;
    if response.status != 204 {
        return Err(format!("registering {id} answered {}", response.status).into());
    }
    Ok(())
}

/// `p50_ms=... p99_ms=... max_ms=...` of `samples`, prefixed by `label` (`reg_` ...).
fn millis_summary(label: &str, samples: &mut [Duration]) -> String {
    samples.sort();
    if samples.is_empty() {
        return format!("{label}samples=0");
    }
    let at = |p: f64| {
        samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1]
            .as_secs_f64()
            * 1000.0
    };
    format!(
        "{label}p50_ms={:.2} {label}p99_ms={:.2} {label}max_ms={:.2}",
        at(0.50),
        at(0.99),
        samples.last().map_or(0.0, |max| max.as_secs_f64() * 1000.0)
    )
}

/// `visibility WRITE_EUREKA READ_CONSUL READ_EUREKA APP COUNT`: COUNT registrations of APP,
/// one at a time, through the Eureka API at WRITE_EUREKA; each timed from its POST being
/// sent until a Consul health blocking query on READ_CONSUL (sent before the POST) answers
/// with the instance in it, and until the Eureka API at READ_EUREKA answers 200 for
/// `/eureka/apps/APP/ID` (polled once the blocking query answered). Also the POST's own
/// round trip (the registration acknowledged).
async fn visibility(
    write_eureka: String,
    read_consul: String,
    read_eureka: String,
    app: String,
    count: usize,
) -> Result<(), Error> {
    let service = app.to_ascii_lowercase();
    let (mut writer, mut consul, mut eureka) = (
        connect(&write_eureka).await?,
        connect(&read_consul).await?,
        connect(&read_eureka).await?,
    );
    let (mut acknowledged, mut in_consul, mut in_eureka) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..count {
        let id = format!("{service}-{n}");
        let mut index = exchange(
            &mut consul,
            &get_request(&format!("/v1/health/service/{service}")),
        )
        .await?
        .index;
        let blocking = |index: u64| {
            get_request(&format!(
                "/v1/health/service/{service}?index={index}&wait=60s"
            ))
        };
        consul.write_all(&blocking(index)).await?;
        let sent = Instant::now();
        register(&mut writer, &app, &id).await?;
        acknowledged.push(sent.elapsed());
        loop {
            let (response, body) = exchange_body(&mut consul, b"").await?;
            if response.status != 200 {
                return Err(format!("health blocking query answered {}", response.status).into());
            }
            if find(&body, format!("\"{id}\"").as_bytes()).is_some() {
                in_consul.push(sent.elapsed());
                break;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                return Err(format!("{id} not listed by {read_consul} after 30 s").into());
            }
            index = response.index;
            consul.write_all(&blocking(index)).await?;
        }
        let path = format!("/eureka/apps/{app}/{id}");
        loop {
            if exchange(&mut eureka, &get_request(&path)).await?.status == 200 {
                in_eureka.push(sent.elapsed());
                break;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                return Err(format!("{path} not found on {read_eureka} after 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    println!(
        "registrations={count} {} {} {}",
        millis_summary("ack_", &mut acknowledged),
        millis_summary("consul_", &mut in_consul),
        millis_summary("eureka_", &mut in_eureka),
    );
    Ok(())
}

/// `service-watchers WATCH_CONSUL WRITE_EUREKA APP COUNT ROUNDS`: COUNT blocking health
/// queries for APP's service held on WATCH_CONSUL, then one registration of a new instance
/// of APP through the Eureka API at WRITE_EUREKA; prints when each watcher got its answer,
/// relative to the registration being sent (as `watchers` does for KV).
async fn service_watchers(
    watch_consul: String,
    write_eureka: String,
    app: String,
    count: usize,
    rounds: usize,
) -> Result<(), Error> {
    let service = app.to_ascii_lowercase();
    let mut writer = connect(&write_eureka).await?;
    register(&mut writer, &app, &format!("{service}-first")).await?;
    // The watchers start from an index at which the watched node lists that first instance.
    let mut reader = connect(&watch_consul).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let start = loop {
        let (response, body) = exchange_body(
            &mut reader,
            &get_request(&format!("/v1/health/service/{service}")),
        )
        .await?;
        if find(&body, format!("\"{service}-first\"").as_bytes()).is_some() {
            break response.index;
        }
        if Instant::now() > deadline {
            return Err(format!("{watch_consul} never listed {service}-first").into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    hold_watchers(
        &watch_consul,
        &format!("/v1/health/service/{service}"),
        start,
        count,
        rounds,
        &mut writer,
        |round| register_request(&app, &format!("{service}-{round}")),
    )
    .await
}

async fn kv_writes(address: String, count: usize, concurrency: usize) -> Result<(), Error> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let address = address.clone();
        let share = count / concurrency + usize::from(worker < count % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&address).await?;
            stream.set_nodelay(true)?;
            for n in 0..share {
                let response = exchange(
                    &mut stream,
                    &put_request(&format!("/v1/kv/bench/writes/{worker}/{n}"), "value"),
                )
                .await?;
                if response.status != 200 {
                    return Err::<(), Error>(format!("write answered {}", response.status).into());
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "writes={count} concurrency={concurrency} seconds={elapsed:.2} writes_per_second={:.0}",
        count as f64 / elapsed
    );
    Ok(())
}

/// `requests` at `rate` per second in all, taken in turn, for `seconds`.
async fn fixed_rate(
    address: String,
    requests: Vec<Vec<u8>>,
    rate: f64,
    seconds: usize,
    connections: usize,
) -> Result<(), Error> {
    let total = (rate * seconds as f64).round() as usize;
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let requests = Arc::new(requests);
    let begin = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let (address, requests) = (address.clone(), requests.clone());
        let share = total / connections + usize::from(connection < total % connections);
        let offset = interval.mul_f64(connection as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(&address).await?;
            stream.set_nodelay(true)?;
            let mut latencies = Vec::with_capacity(share);
            let mut errors = 0usize;
            let mut previous_done = begin;
            for n in 0..share {
                let due = begin + offset + interval.mul_f64(n as f64);
                tokio::time::sleep_until(due).await;
                // A request held back by a slow earlier answer counts from when it was due
                // (coordinated omission); one merely woken late by the client's own 1 ms
                // timer counts from when it was sent.
                let start = if previous_done > due {
                    due
                } else {
                    tokio::time::Instant::now()
                };
                let request = &requests[(connection + n * connections) % requests.len()];
                let outcome = exchange(&mut stream, request).await;
                previous_done = tokio::time::Instant::now();
                match outcome {
                    Ok(response) => {
                        if response.status == 200 {
                            latencies.push(previous_done - start);
                        } else {
                            errors += 1;
                        }
                        if response.close {
                            stream = TcpStream::connect(&address).await?;
                            stream.set_nodelay(true)?;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        stream = TcpStream::connect(&address).await?;
                        stream.set_nodelay(true)?;
                    }
                }
            }
            Ok::<_, Error>((latencies, errors))
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for task in tasks {
        let (mut part, failed) = task.await??;
        latencies.append(&mut part);
        errors += failed;
    }
    latencies.sort();
    if latencies.is_empty() {
        return Err("no request succeeded".into());
    }
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    println!(
        "rate={rate:.0} seconds={seconds} ok={} errors={errors} p50_us={:.0} p99_us={:.0} p999_us={:.0} max_us={:.0}",
        latencies.len(),
        micros(percentile(0.50)),
        micros(percentile(0.99)),
        micros(percentile(0.999)),
        micros(*latencies.last().expect("not empty")),
    );
    Ok(())
}

/// `VmRSS` and `RssAnon` of a process, in KB.
fn rss_kb(pid: u32) -> Result<(u64, u64), Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| -> Result<u64, Error> {
        let line = status
            .lines()
            .find(|line| line.starts_with(key))
            .ok_or("no such field in /proc/PID/status")?;
        Ok(line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?)
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?))
}

/// How many server-side sockets of the listener on `port` are open (in any state but
/// LISTEN), as the kernel lists them in /proc/net/tcp.
fn server_sockets(port: u16) -> Result<usize, Error> {
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    let local = format!(":{port:04X}");
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut columns = line.split_whitespace();
            Some((columns.nth(1)?.to_owned(), columns.nth(1)?.to_owned()))
        })
        .filter(|(address, state)| address.ends_with(&local) && state != "0A")
        .count())
}

async fn idle(address: String, path: String, count: usize, pid: u32) -> Result<(), Error> {
    let port: u16 = address.rsplit(':').next().ok_or("no port")?.parse()?;
    let (baseline, baseline_anon) = rss_kb(pid)?;
    // A storm, not a stampede: 32 connections at a time open and make their request.
    let request = Arc::new(get_request(&path));
    let open = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let mut tasks = Vec::new();
    for worker in 0..32.min(count) {
        let (address, request, open) = (address.clone(), request.clone(), open.clone());
        let share = count / 32 + usize::from(worker < count % 32);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let mut stream = TcpStream::connect(&address).await?;
                stream.set_nodelay(true)?;
                let response = exchange(&mut stream, &request).await?;
                if response.status != 200 {
                    return Err::<(), Error>(format!("answered {}", response.status).into());
                }
                open.lock().await.push(stream);
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let listed = server_sockets(port)?;
    if listed < count {
        return Err(format!("{count} connections open but the kernel lists {listed}").into());
    }
    // The last answers are written before the server's task parks: let it settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (opened, opened_anon) = rss_kb(pid)?;
    let closing = Instant::now();
    open.lock().await.clear();
    while server_sockets(port)? > 0 {
        if closing.elapsed() > Duration::from_secs(30) {
            return Err("the server kept connections open 30 s after the clients closed".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_ms = closing.elapsed().as_millis();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (closed, closed_anon) = rss_kb(pid)?;
    let per_connection = (opened as f64 - baseline as f64) / count as f64;
    println!(
        "connections={count} baseline_kb={baseline} baseline_anon_kb={baseline_anon} open_kb={opened} open_anon_kb={opened_anon} closed_kb={closed} closed_anon_kb={closed_anon} per_connection_kb={per_connection:.1} retained_kb={} gone_ms={gone_ms}",
        closed as i64 - baseline as i64,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |at: usize| -> Result<usize, Error> {
        Ok(args.get(at).ok_or("missing argument")?.parse()?)
    };
    match args.first().map(String::as_str) {
        Some("watchers") => watchers(args[1].clone(), args[2].clone(), number(3)?, number(4)?).await,
        Some("visibility") => visibility(args[1].clone(), args[2].clone(), args[3].clone(), args[4].clone(), number(5)?).await,
        Some("service-watchers") => service_watchers(args[1].clone(), args[2].clone(), args[3].clone(), number(4)?, number(5)?).await,
        Some("kv-writes") => kv_writes(args[1].clone(), number(2)?, number(3)?).await,
        Some("rate") => fixed_rate(args[1].clone(), vec![get_request(&args[2])], number(3)? as f64, number(4)?, number(5)?).await,
        Some("renew") => {
            let paths: Vec<Vec<u8>> = std::fs::read_to_string(&args[2])?
                .lines()
                .filter(|line| !line.is_empty())
                .map(|path| put_request(path, ""))
                .collect();
            if paths.is_empty() {
                return Err("renew: the paths file is empty".into());
            }
            let rate = paths.len() as f64 / number(3)? as f64;
            fixed_rate(args[1].clone(), paths, rate, number(4)?, number(5)?).await
        }
        Some("idle") => idle(args[1].clone(), args[2].clone(), number(3)?, u32::try_from(number(4)?)?).await,
        _ => Err("usage: ferry-bench-loadgen watchers ADDR PREFIX COUNT ROUNDS | visibility WRITE_EUREKA READ_CONSUL READ_EUREKA APP COUNT | service-watchers WATCH_CONSUL WRITE_EUREKA APP COUNT ROUNDS | kv-writes ADDR COUNT CONCURRENCY | rate ADDR PATH RATE SECONDS CONNECTIONS | renew ADDR PATHS_FILE INTERVAL SECONDS CONNECTIONS | idle ADDR PATH COUNT PID".into()),
    }
}
