//! The HTTP client of the legacy Consul: every request carries the ACL token, reads are
//! answered with their `X-Consul-Index`, and a blocking read waits at most its `wait` (plus
//! the jitter of up to `wait / 16` Consul adds) before it counts as failed.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// Why an exchange with the legacy Consul failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsulSyncError {
    /// The address given is not a usable URL.
    #[error("invalid legacy Consul address {address:?}")]
    BadAddress { address: String },
    /// No answer: connection refused, reset, timed out.
    #[error("legacy Consul unreachable ({request}): {source}")]
    Unreachable {
        request: String,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not a success (an ACL refusal, no leader...).
    #[error("legacy Consul answered {status} to {request}: {body}")]
    Refused {
        request: String,
        status: StatusCode,
        body: String,
    },
    /// An answer Ferry cannot read.
    #[error("malformed answer to {request}: {reason}")]
    Malformed { request: String, reason: String },
}

impl ConsulSyncError {
    /// Whether the source itself could not be used (as opposed to one bad document): its
    /// copies are kept and counted stale.
    pub fn unreachable(&self) -> bool {
        !matches!(self, ConsulSyncError::Malformed { .. })
    }
}

/// A read's answer: its result index (0 when the header was missing) and its body (`None`
/// for a 404, which a KV read answers for an empty prefix).
#[derive(Debug)]
pub struct Answer {
    pub index: u64,
    pub body: Option<Value>,
}

/// How to reach the legacy Consul.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    /// Bound on each non-blocking request.
    timeout: Duration,
}

impl Client {
    pub fn new(
        address: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Client, ConsulSyncError> {
        let trimmed = address.trim().trim_end_matches('/');
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("http://{trimmed}")
        };
        let base = Url::parse(&with_scheme)
            .ok()
            .filter(|url| url.host().is_some() && !url.cannot_be_a_base())
            .ok_or_else(|| ConsulSyncError::BadAddress {
                address: address.to_owned(),
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .map_err(|_| ConsulSyncError::BadAddress {
                address: address.to_owned(),
            })?;
        Ok(Client {
            http,
            base,
            token,
            timeout,
        })
    }

    /// The address status reports show.
    pub fn endpoint(&self) -> &str {
        self.base.as_str()
    }

    /// `segments` appended to the base path, each percent-encoded (service ids may hold
    /// `/` or `:`), with `query` pairs.
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            for segment in segments {
                path.push(segment);
            }
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                if value.is_empty() {
                    pairs.append_key_only(name);
                } else {
                    pairs.append_pair(name, value);
                }
            }
        }
        url
    }

    /// A read; with `blocking = Some((index, wait))` a blocking query.
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        blocking: Option<(u64, Duration)>,
    ) -> Result<Answer, ConsulSyncError> {
        let mut query = query.to_vec();
        let mut timeout = self.timeout;
        if let Some((index, wait)) = blocking {
            query.push(("index", index.to_string()));
            query.push(("wait", format!("{}ms", wait.as_millis().max(1))));
            timeout += wait + wait / 16;
        }
        let url = self.url(segments, &query);
        let request = format!("GET {}", url.path());
        let response = self.send(Method::GET, url, None, timeout, &request).await?;
        let index = response
            .headers()
            .get("x-consul-index")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(Answer { index, body: None });
        }
        let response = success(response, &request).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|source| ConsulSyncError::Unreachable {
                request: request.clone(),
                source,
            })?;
        let body = serde_json::from_slice(&bytes).map_err(|error| ConsulSyncError::Malformed {
            request,
            reason: error.to_string(),
        })?;
        Ok(Answer {
            index,
            body: Some(body),
        })
    }

    /// A write (`PUT`), with a JSON body or none.
    pub async fn put(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<(), ConsulSyncError> {
        let url = self.url(segments, query);
        let request = format!("PUT {}", url.path());
        let response = self
            .send(Method::PUT, url, body, self.timeout, &request)
            .await?;
        success(response, &request).await?;
        Ok(())
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        timeout: Duration,
        request: &str,
    ) -> Result<reqwest::Response, ConsulSyncError> {
        let mut builder = self.http.request(method, url).timeout(timeout);
        if let Some(token) = &self.token {
            builder = builder.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        builder
            .send()
            .await
            .map_err(|source| ConsulSyncError::Unreachable {
                request: request.to_owned(),
                source,
            })
    }
}

async fn success(
    response: reqwest::Response,
    request: &str,
) -> Result<reqwest::Response, ConsulSyncError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(ConsulSyncError::Refused {
        request: request.to_owned(),
        status,
        body: body.chars().take(200).collect(),
    })
}
