//! A small watch of one prefix, for tables every node follows (the cutover table): a full
//! read, then the changes after it, for as long as the consumer wants them.
//!
//! It survives what a long-lived watch meets: a failed stream moves to another endpoint
//! (`Connection::repin`) and resumes after the last revision it passed on; a watch that fell
//! behind a compaction reads the whole prefix again and hands it over as a `Reload`, so the
//! consumer diffs rather than misses a change. The registrations' watch (`registrations`)
//! does more (progress requests, staleness, the registry's feed) and keeps its own loop.

use std::time::Duration;

use etcd_client::{Event, GetOptions, KeyValue, WatchOptions};

use crate::connection::{Connection, EtcdError};
use crate::layout::prefix_end;

/// What the consumer is handed.
pub(crate) enum Update {
    /// Every key under the prefix at `revision`: the first read, and again after a
    /// compaction.
    Reload {
        kvs: Vec<KeyValue>,
        revision: i64,
    },
    Events(Vec<Event>),
}

/// How many keys one read asks for: a whole prefix in one answer could pass etcd-client's
/// 4 MiB decode limit.
const PAGE: i64 = 1000;

/// Reads every key under `prefix` at one revision (`at`, or the current one when 0), in
/// pages; returns them with that revision.
pub(crate) async fn read_all(
    connection: &Connection,
    prefix: &str,
    at: u64,
) -> Result<(Vec<KeyValue>, u64), EtcdError> {
    let end = prefix_end(prefix);
    let mut revision = at as i64;
    let mut from = prefix.as_bytes().to_vec();
    let mut all = Vec::new();
    loop {
        let (key, end, at) = (from.clone(), end.clone(), revision);
        let mut page = connection
            .run(true, |mut client| {
                let (key, end) = (key.clone(), end.clone());
                async move {
                    let mut options = GetOptions::new().with_range(end).with_limit(PAGE);
                    if at > 0 {
                        options = options.with_revision(at);
                    }
                    client.get(key, Some(options)).await
                }
            })
            .await?;
        if revision == 0 {
            revision = page.header().map_or(0, |header| header.revision());
        }
        let more = page.more();
        let kvs = page.take_kvs();
        let next = match kvs.last() {
            Some(last) if more => {
                let mut next = last.key().to_vec();
                next.push(0);
                Some(next)
            }
            _ => None,
        };
        all.extend(kvs);
        match next {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok((all, revision.max(0) as u64))
}

/// Passes `Update`s to `deliver` from the revision after `from` until `deliver` returns
/// false (its consumer is gone).
pub(crate) async fn watch_prefix(
    connection: Connection,
    prefix: String,
    mut from: i64,
    mut deliver: impl FnMut(Update) -> bool,
) {
    loop {
        match watch_once(&connection, &prefix, from, &mut deliver).await {
            End::Consumer => return,
            End::Compacted => match read_all(&connection, &prefix, 0).await {
                Ok((kvs, revision)) => {
                    let revision = revision as i64;
                    if !deliver(Update::Reload { kvs, revision }) {
                        return;
                    }
                    from = revision;
                }
                Err(error) => {
                    tracing::warn!(%prefix, %error, "cannot read the prefix again after a compaction");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            End::Failed {
                endpoint,
                reason,
                last,
            } => {
                tracing::warn!(%prefix, %endpoint, %reason, "an etcd watch failed; moving it");
                connection.repin(&endpoint);
                from = last;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

enum End {
    Consumer,
    Compacted,
    Failed {
        endpoint: String,
        reason: String,
        last: i64,
    },
}

/// One stream: the changes after `from` until it fails.
async fn watch_once(
    connection: &Connection,
    prefix: &str,
    mut from: i64,
    deliver: &mut impl FnMut(Update) -> bool,
) -> End {
    let (endpoint, mut client) = connection.pinned();
    let failed = |reason: String, last: i64| End::Failed {
        endpoint: endpoint.clone(),
        reason,
        last,
    };
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(from + 1)
        .with_progress_notify();
    let (_watcher, mut stream) = match tokio::time::timeout(
        Duration::from_secs(2),
        client.watch(prefix.to_owned(), Some(options)),
    )
    .await
    {
        Ok(Ok(watch)) => watch.split(),
        Ok(Err(error)) => return failed(error.to_string(), from),
        Err(_) => return failed("no answer".into(), from),
    };
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return failed("the stream ended".into(), from),
            Err(error) => return failed(error.to_string(), from),
        };
        if response.canceled() {
            if response.compact_revision() > 0 {
                tracing::warn!(%prefix, compacted = response.compact_revision(), from, "a watch fell behind a compaction; reading everything again");
                return End::Compacted;
            }
            return failed(format!("cancelled: {}", response.cancel_reason()), from);
        }
        let events = response.events();
        if events.is_empty() {
            continue;
        }
        if let Some(last) = events
            .iter()
            .filter_map(|event| event.kv())
            .map(KeyValue::mod_revision)
            .max()
        {
            from = from.max(last);
        }
        if !deliver(Update::Events(events.to_vec())) {
            return End::Consumer;
        }
    }
}
