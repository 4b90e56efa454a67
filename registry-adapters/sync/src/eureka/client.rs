//! HTTP to the legacy cluster with failover, as the Java client's `defaultZone` list: the
//! service URLs are tried in the order given, starting from the one that answered last; a
//! connection error, a timeout or a 5xx moves on to the next, and whichever answers is kept
//! for the following requests. Only when every URL failed is the cluster unreachable.
//!
//! Import and export share one client, so both talk to the same server and a failover seen
//! by one is followed by the other. Every request is JSON both ways and bounded by the
//! settings' timeout (connecting and reading alike). Each answer, and each time every URL
//! failed, is written to the source's status.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};

use ferry_core::clock::Clock;

use super::error::EurekaSyncError;
use crate::SourceStatus;

/// What a server answered (any status below 500).
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// The service URL that answered, as written in the status.
    pub server: String,
}

/// One request: a path under the service URL, its query, and a JSON body if any.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub method: Method,
    /// Path segments under the service URL, percent-encoded here (`["apps", "ORDERS", id]`);
    /// an empty last segment leaves a trailing slash (`apps/`, as the Java client sends).
    pub path: &'a [&'a str],
    pub query: &'a [(&'a str, &'a str)],
    pub body: Option<Vec<u8>>,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, path: &'a [&'a str]) -> Request<'a> {
        Request {
            method,
            path,
            query: &[],
            body: None,
        }
    }

    pub fn query(mut self, query: &'a [(&'a str, &'a str)]) -> Request<'a> {
        self.query = query;
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Request<'a> {
        self.body = Some(body);
        self
    }
}

#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// The usable service URLs in failover order, each ending in `/`.
    servers: Vec<Url>,
    /// The position of the server that answered last: where the next request starts.
    /// Atomic, as heartbeats go out several at a time.
    current: AtomicUsize,
    /// Set when every server failed; the importer takes it to open a grace period at the
    /// next successful fetch (a cluster that comes back may have restarted empty).
    lost_contact: AtomicBool,
    status: Arc<SourceStatus>,
    clock: Clock,
}

impl Client {
    /// A client of `urls` (a missing trailing slash is added; a URL that does not parse,
    /// or is not http(s), is logged and left out).
    pub fn new(
        urls: &[String],
        timeout: Duration,
        status: Arc<SourceStatus>,
        clock: Clock,
    ) -> Client {
        let servers = urls.iter().filter_map(|url| service_url(url)).collect();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "eureka sync: default HTTP client settings used");
                reqwest::Client::new()
            });
        Client {
            http,
            servers,
            current: AtomicUsize::new(0),
            lost_contact: AtomicBool::new(false),
            status,
            clock,
        }
    }

    pub fn status(&self) -> &SourceStatus {
        &self.status
    }

    pub fn now(&self) -> ferry_core::model::Millis {
        self.clock.now()
    }

    /// Whether every server failed since the last call (and clears it).
    pub fn take_lost_contact(&self) -> bool {
        self.lost_contact.swap(false, Ordering::Relaxed)
    }

    /// Sends `request` to the current server, failing over in order; the first answer
    /// below 500 is returned and its server kept as current.
    pub async fn send(&self, request: Request<'_>) -> Result<Answer, EurekaSyncError> {
        let count = self.servers.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::from("no usable service URL");
        for step in 0..count {
            let position = (start + step) % count;
            let server = self.servers[position].clone();
            let url = endpoint(&server, request.path, request.query);
            match self.attempt(&request, url).await {
                Ok((status, body)) if !status.is_server_error() => {
                    if self.current.swap(position, Ordering::Relaxed) != position {
                        tracing::info!(server = %server, "eureka sync: failed over");
                    }
                    self.status.succeeded(server.as_str(), self.clock.now());
                    return Ok(Answer {
                        status,
                        body,
                        server: server.to_string(),
                    });
                }
                Ok((status, _)) => last = format!("{server} answered {status}"),
                Err(error) => last = format!("{server}: {error}"),
            }
            tracing::debug!(%last, "eureka sync: server failed, trying the next");
        }
        self.lost_contact.store(true, Ordering::Relaxed);
        let error = EurekaSyncError::Unreachable { last };
        self.status
            .failed(&error.to_string(), true, self.clock.now());
        Err(error)
    }

    async fn attempt(
        &self,
        request: &Request<'_>,
        url: Url,
    ) -> Result<(StatusCode, Vec<u8>), reqwest::Error> {
        let mut builder = self
            .http
            .request(request.method.clone(), url)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
        }
        let response = builder.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok((status, body.to_vec()))
    }
}

/// A service URL with its trailing slash, if it is a usable http(s) URL.
fn service_url(url: &str) -> Option<Url> {
    let trimmed = url.trim();
    let with_slash = if trimmed.ends_with('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/")
    };
    match Url::parse(&with_slash) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(parsed),
        Ok(_) => {
            tracing::warn!(url, "eureka sync: not an http(s) service URL; left out");
            None
        }
        Err(error) => {
            tracing::warn!(url, %error, "eureka sync: bad service URL; left out");
            None
        }
    }
}

/// `server` (ending in `/`) with `path` appended segment by segment and `query` added.
fn endpoint(server: &Url, path: &[&str], query: &[(&str, &str)]) -> Url {
    let mut url = server.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(path);
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls_get_their_trailing_slash() {
        let url = service_url("http://legacy:8761/eureka").map(|url| url.to_string());
        assert_eq!(url.as_deref(), Some("http://legacy:8761/eureka/"));
        let url = service_url("http://legacy:8761/eureka/").map(|url| url.to_string());
        assert_eq!(url.as_deref(), Some("http://legacy:8761/eureka/"));
        assert!(service_url("ftp://legacy/eureka").is_none());
        assert!(service_url("not a url").is_none());
    }

    #[test]
    fn paths_are_segments_under_the_service_url() {
        let server = service_url("http://legacy:8761/eureka").unwrap();
        assert_eq!(
            endpoint(&server, &["apps", ""], &[]).as_str(),
            "http://legacy:8761/eureka/apps/"
        );
        assert_eq!(
            endpoint(
                &server,
                &["apps", "ORDERS", "10.0.0.1:orders:8080"],
                &[("status", "UP"), ("lastDirtyTimestamp", "17")]
            )
            .as_str(),
            "http://legacy:8761/eureka/apps/ORDERS/10.0.0.1:orders:8080?status=UP&lastDirtyTimestamp=17"
        );
        assert_eq!(
            endpoint(&server, &["apps", "ORDERS", "a/b c"], &[]).as_str(),
            "http://legacy:8761/eureka/apps/ORDERS/a%2Fb%20c"
        );
    }
}
