//! The certificate authority's side in etcd (issue 15): how a node gets and renews its
//! certificate through the store every node already shares, with no CA endpoint to run.
//!
//! Keys, under `/ferry/v1/ca/` (see `layout`):
//! - `bundle`: PEM of the trusted roots (two while a root is rotated). A joining node trusts
//!   it only if one root has the fingerprint it was told (`--ca-root-sha256`), as kubeadm
//!   pins its CA: whoever can write etcd cannot slip in a root of their own.
//! - `tokens/<node>`: the SHA-256 (hex) of a join token, never the token, on a lease with
//!   the token's TTL so it vanishes when it expires. The signer deletes it in the same txn
//!   that puts the certificate, so a token is used once.
//! - `csr/<node>`: a request, JSON `{"v":1,"csr":PEM,"token":TOKEN|null}`; no token means a
//!   renewal, granted only for the key of the node's current, still valid certificate (the
//!   CSR's signature proves the node holds that key, as Linkerd's proxy renews with its own).
//!   Deleted once handled.
//! - `certs/<node>`: the signed chain PEM (leaf, issuer).
//! - `refused/<node>`: JSON `{"v":1,"csr_revision":R,"reason":REASON}` when a request is
//!   refused; `csr_revision` is the mod revision of the request refused, so a node waiting
//!   for its answer never takes an older refusal for its own. `certs/<node>` is then left
//!   as it was. Reasons: `bad-request`, `bad-csr`, `no-token` (unknown, expired or used),
//!   `wrong-token`, `no-certificate`, `certificate-expired`, `key-mismatch`, `sign-failed`.
//!
//! One [`Signer`] at a time signs: the nodes holding the issuer campaign for the leader job
//! `ca-signer` (`leader`), and only the leader watches `csr/`. Each decision is a txn that
//! compares the mod revisions it read (the CSR, the token or the current certificate), so a
//! request answered twice by two signers in a leadership handover commits once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, KeyValue, PutOptions, Txn, TxnOp, WatchOptions};
use ferry_identity::{
    certs_from_pem, csr_public_key_info, fingerprint_sha256, CertificateDer, IdentityError, Issuer,
    NodeCert, NodeName,
};
use parking_lot::Mutex;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use crate::connection::{Connection, EtcdError};
use crate::layout;
use crate::leader::Leader;
use crate::prefix_watch::{self, Update};
use crate::registrations::EtcdStore;

/// The leader job the signers campaign for.
pub const SIGNER_JOB: &str = "ca-signer";

/// The value format of `csr/` and `refused/`; a reader refuses others.
const VERSION: u64 = 1;

/// What can go wrong on either side of the authority.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("etcd holds no trust bundle yet ({key}): no signer has started")]
    NoBundle { key: String },
    #[error("no root of the trust bundle has the pinned SHA-256 {pinned}; the bundle's roots: {found:?}")]
    PinMismatch { pinned: String, found: Vec<String> },
    #[error("the signer refused the certificate request: {reason}")]
    Refused { reason: String },
    #[error("no answer to the certificate request within {0:?}")]
    NoAnswer(Duration),
    #[error("the system random generator failed")]
    Random,
    #[error("{0}")]
    Bundle(String),
    #[error("the trust bundle changed while it was being edited; nothing was written, try again")]
    BundleChanged,
}

// === tokens ===

/// A new join token: 32 random bytes, lowercase hex. Only its hash goes to etcd.
pub fn new_token() -> Result<String, CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    Ok(hex::encode(bytes))
}

/// SHA-256 of a token, lowercase hex: what `tokens/<node>` holds. A leak of etcd's data
/// then gives no usable token.
pub fn token_hash(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// Stores `token`'s hash for `node` on a lease of `ttl` (whole seconds, at least one), so
/// the token stops working when it expires even if no signer ever sees it. A new token for
/// the same node replaces the old one.
pub async fn put_token(
    connection: &Connection,
    node: &NodeName,
    token: &str,
    ttl: Duration,
) -> Result<(), CaError> {
    let seconds = ttl.as_secs().max(1) as i64;
    let lease = connection
        .run(true, |mut client| async move {
            client.lease_grant(seconds, None).await
        })
        .await?
        .id();
    let (key, hash) = (layout::ca_token_key(node.as_str()), token_hash(token));
    connection
        .run(true, |mut client| {
            let (key, hash) = (key.clone(), hash.clone());
            async move {
                client
                    .put(key, hash, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await?;
    Ok(())
}

// === the trust bundle ===

/// `ca/bundle` as etcd holds it, with its mod revision, if any.
pub async fn read_bundle(connection: &Connection) -> Result<Option<(String, i64)>, CaError> {
    Ok(get_one(connection, layout::ca_bundle_key())
        .await?
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision(),
            )
        }))
}

/// Puts `roots_pem` as the bundle unless etcd has one; returns the bundle etcd holds then.
pub async fn put_bundle_if_absent(
    connection: &Connection,
    roots_pem: &str,
) -> Result<String, CaError> {
    let key = layout::ca_bundle_key();
    let pem = roots_pem.to_owned();
    let answer = connection
        .run(true, |mut client| {
            let (key, pem) = (key.clone(), pem.clone());
            async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), pem, None)])
                    .or_else([TxnOp::get(key, None)]);
                client.txn(txn).await
            }
        })
        .await?;
    if answer.succeeded() {
        return Ok(roots_pem.to_owned());
    }
    Ok(first_get(answer)
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
        .unwrap_or_else(|| roots_pem.to_owned()))
}

/// One root of a bundle: its PEM block as written, and its SHA-256 fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleRoot {
    pub pem: String,
    pub sha256: String,
}

/// A bundle's roots in order, each PEM block kept as written.
pub fn bundle_roots(bundle_pem: &str) -> Result<Vec<BundleRoot>, CaError> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut roots = Vec::new();
    let mut rest = bundle_pem;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let end = rest[start..]
            .find(END)
            .map(|end| start + end + END.len())
            .ok_or_else(|| CaError::Bundle("a certificate in the bundle has no END line".into()))?;
        let pem = format!("{}\n", &rest[start..end]);
        let der = ferry_identity::certs_from_pem(&pem)?
            .into_iter()
            .next()
            .ok_or_else(|| CaError::Bundle("an empty certificate in the bundle".into()))?;
        roots.push(BundleRoot {
            sha256: ferry_identity::fingerprint_sha256(&der),
            pem,
        });
        rest = &rest[end..];
    }
    Ok(roots)
}

/// Changes the bundle with `edit` (given its roots, returning the new ones) as one
/// compare-and-swap on its revision: an edit made meanwhile by someone else is never lost.
/// A bundle is never left empty. Returns the roots written.
pub async fn edit_bundle(
    connection: &Connection,
    edit: impl FnOnce(Vec<BundleRoot>) -> Result<Vec<BundleRoot>, CaError>,
) -> Result<Vec<BundleRoot>, CaError> {
    let key = layout::ca_bundle_key();
    let (pem, revision) = read_bundle(connection)
        .await?
        .ok_or_else(|| CaError::NoBundle { key: key.clone() })?;
    let roots = edit(bundle_roots(&pem)?)?;
    if roots.is_empty() {
        return Err(CaError::Bundle(
            "the trust bundle cannot be left without a root".into(),
        ));
    }
    let written: String = roots.iter().map(|root| root.pem.as_str()).collect();
    let answer = connection
        .run(true, |mut client| {
            let (key, written) = (key.clone(), written.clone());
            async move {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.clone(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([TxnOp::put(key, written, None)]);
                client.txn(txn).await
            }
        })
        .await?;
    if !answer.succeeded() {
        return Err(CaError::BundleChanged);
    }
    Ok(roots)
}

/// The bundle's roots, if one of them has the SHA-256 fingerprint `pinned` (hex, any case,
/// `:` separators allowed); otherwise the bundle is not trusted at all.
pub fn pinned_roots(
    bundle_pem: &str,
    pinned: &str,
) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let pinned = normalize_fingerprint(pinned);
    let roots = certs_from_pem(bundle_pem)?;
    let found: Vec<String> = roots.iter().map(fingerprint_sha256).collect();
    if found.contains(&pinned) {
        Ok(roots)
    } else {
        Err(CaError::PinMismatch { pinned, found })
    }
}

/// A fingerprint as `fingerprint_sha256` writes it: lowercase hex, no separators.
pub fn normalize_fingerprint(text: &str) -> String {
    text.trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Waits up to `wait` for a bundle to appear (the first signer puts it when elected).
pub async fn wait_for_bundle(
    connection: &Connection,
    wait: Duration,
) -> Result<(String, i64), CaError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match read_bundle(connection).await {
            Ok(Some(bundle)) => return Ok(bundle),
            Ok(None) | Err(CaError::Etcd(_)) if tokio::time::Instant::now() < deadline => {}
            Ok(None) => {
                return Err(CaError::NoBundle {
                    key: layout::ca_bundle_key(),
                })
            }
            Err(error) => return Err(error),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every new value of `ca/bundle` after `revision`, for nodes that follow a rotation. The
/// watch survives failovers and compactions (`prefix_watch`); it ends when the receiver goes.
pub fn watch_bundle(connection: &Connection, revision: i64) -> mpsc::UnboundedReceiver<String> {
    let (send, receive) = mpsc::unbounded_channel();
    let key = layout::ca_bundle_key();
    tokio::spawn(prefix_watch::watch_prefix(
        connection.clone(),
        key.clone(),
        revision,
        move |update| {
            let values: Vec<String> = match update {
                Update::Reload { kvs, .. } => kvs
                    .iter()
                    .filter(|kv| kv.key() == key.as_bytes())
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                    .collect(),
                Update::Events(events) => events
                    .iter()
                    .filter(|event| event.event_type() == EventType::Put)
                    .filter_map(|event| event.kv())
                    .filter(|kv| kv.key() == key.as_bytes())
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                    .collect(),
            };
            values.into_iter().all(|value| send.send(value).is_ok()) && !send.is_closed()
        },
    ));
    receive
}

// === the node's side ===

/// Asks for a certificate: writes `csr/<node>` (with `token` to join, without to renew) and
/// waits up to `wait` for the signer's answer to this very request, a chain for the CSR's
/// key in `certs/<node>` or a refusal in `refused/<node>`. The chain is returned as read;
/// checking it against the bundle and the node's key is the caller's (`verify_node_cert`).
pub async fn request_certificate(
    connection: &Connection,
    node: &NodeName,
    csr_pem: &str,
    token: Option<&str>,
    wait: Duration,
) -> Result<NodeCert, CaError> {
    let wanted_key = csr_public_key_info(csr_pem)?;
    let csr_key = layout::ca_csr_key(node.as_str());
    let value = serde_json::to_vec(&json!({"v": VERSION, "csr": csr_pem, "token": token}))
        .expect("a JSON value always serializes");
    let put = connection
        .run(true, |mut client| {
            let (key, value) = (csr_key.clone(), value.clone());
            async move { client.put(key, value, None).await }
        })
        .await?;
    let revision = put.header().map_or(0, |header| header.revision());
    let answer = tokio::time::timeout(
        wait,
        wait_for_answer(connection, node, revision, &wanted_key),
    )
    .await;
    match answer {
        Ok(answer) => answer,
        Err(_) => {
            // Withdrawn, so that a signer elected later does not spend the token on a node
            // that gave up; if a signer answered meanwhile, the compare fails and nothing goes.
            let _ = connection
                .run(true, |mut client| {
                    let key = csr_key.clone();
                    async move {
                        let txn = Txn::new()
                            .when([Compare::mod_revision(
                                key.clone(),
                                CompareOp::Equal,
                                revision,
                            )])
                            .and_then([TxnOp::delete(key, None)]);
                        client.txn(txn).await
                    }
                })
                .await;
            Err(CaError::NoAnswer(wait))
        }
    }
}

/// Watches `certs/<node>` and `refused/<node>` from just after the request's revision (so
/// an answer given before the watches opened is replayed, not missed) until one answers it.
async fn wait_for_answer(
    connection: &Connection,
    node: &NodeName,
    revision: i64,
    wanted_key: &[u8],
) -> Result<NodeCert, CaError> {
    let cert_key = layout::ca_cert_key(node.as_str());
    let refused_key = layout::ca_refused_key(node.as_str());
    loop {
        let (endpoint, mut client) = connection.pinned();
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let opened = tokio::time::timeout(Duration::from_secs(2), async {
            let certs = client
                .watch(cert_key.clone(), Some(options.clone()))
                .await?;
            let refusals = client.watch(refused_key.clone(), Some(options)).await?;
            Ok::<_, etcd_client::Error>((certs.split(), refusals.split()))
        })
        .await;
        let Ok(Ok(((_cert_watcher, mut certs), (_refused_watcher, mut refusals)))) = opened else {
            connection.repin(&endpoint);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            let message = tokio::select! {
                message = certs.message() => message,
                message = refusals.message() => message,
            };
            let response = match message {
                Ok(Some(response)) if !response.canceled() => response,
                _ => {
                    connection.repin(&endpoint);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            };
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                if event.event_type() != EventType::Put {
                    continue;
                }
                if kv.key() == refused_key.as_bytes() {
                    if let Some((refused, reason)) = decode_refusal(kv.value()) {
                        if refused == revision {
                            return Err(CaError::Refused { reason });
                        }
                    }
                } else if let Ok(cert) = NodeCert::from_pem(&String::from_utf8_lossy(kv.value())) {
                    // Only a chain for this request's key answers it.
                    if cert.public_key_info().ok().as_deref() == Some(wanted_key) {
                        return Ok(cert);
                    }
                }
            }
        }
    }
}

/// The chain `certs/<node>` holds now, if any.
pub async fn read_certificate(
    connection: &Connection,
    node: &NodeName,
) -> Result<Option<NodeCert>, CaError> {
    match get_one(connection, layout::ca_cert_key(node.as_str())).await? {
        Some(kv) => Ok(Some(NodeCert::from_pem(&String::from_utf8_lossy(
            kv.value(),
        ))?)),
        None => Ok(None),
    }
}

/// Publishes a chain a signer node signed for itself with its own issuer, so that any
/// elected signer can renew it later like any other node's.
pub async fn put_certificate(
    connection: &Connection,
    node: &NodeName,
    cert: &NodeCert,
) -> Result<(), CaError> {
    let (key, pem) = (layout::ca_cert_key(node.as_str()), cert.chain_pem.clone());
    connection
        .run(true, |mut client| {
            let (key, pem) = (key.clone(), pem.clone());
            async move { client.put(key, pem, None).await }
        })
        .await?;
    Ok(())
}

fn decode_refusal(bytes: &[u8]) -> Option<(i64, String)> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    if value.get("v").and_then(Value::as_u64) != Some(VERSION) {
        return None;
    }
    Some((
        value.get("csr_revision")?.as_i64()?,
        value.get("reason")?.as_str()?.to_owned(),
    ))
}

// === the signer ===

/// What a signer signs with.
pub struct SignerSettings {
    pub issuer: Issuer,
    /// The PEM of the root that made the issuer: the bundle's first value.
    pub root_pem: String,
    /// The lifetime of the certificates signed (24 h by default).
    pub lifetime: time::Duration,
}

impl std::fmt::Debug for SignerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerSettings")
            .field("issuer", &self.issuer)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// A signer's decisions, for metrics (`ferry_ca_signed_total`, `ferry_ca_refused_total`).
#[derive(Debug, Default)]
pub struct SignerCounts {
    signed: AtomicU64,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl SignerCounts {
    pub fn signed(&self) -> u64 {
        self.signed.load(Ordering::Relaxed)
    }

    /// Refusals by reason.
    pub fn refused(&self) -> BTreeMap<&'static str, u64> {
        self.refused.lock().clone()
    }
}

/// This node's candidacy to sign, and the signing while it leads. Dropping it stops signing
/// at once and abandons the campaign (another candidate takes over when the lease runs
/// out); `leader().resign(..)` hands over at once.
pub struct Signer {
    leader: Arc<Leader>,
    counts: Arc<SignerCounts>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("leader", &self.leader)
            .field("counts", &self.counts)
            .finish()
    }
}

impl Signer {
    /// Campaigns for `ca-signer` on `store` (lease TTL `ttl`) and signs while elected.
    pub fn start(store: &Arc<EtcdStore>, settings: SignerSettings, ttl: Duration) -> Signer {
        let leader = Arc::new(Leader::campaign(store, SIGNER_JOB, ttl));
        let counts = Arc::new(SignerCounts::default());
        let (stop, stopped) = watch::channel(false);
        let task = SignerTask {
            connection: store.connection().clone(),
            settings: Arc::new(settings),
            counts: counts.clone(),
            leading: leader.subscribe(),
            stopped,
        };
        store.worker().spawn(task.run());
        Signer {
            leader,
            counts,
            stop,
        }
    }

    pub fn leader(&self) -> &Arc<Leader> {
        &self.leader
    }

    pub fn counts(&self) -> &Arc<SignerCounts> {
        &self.counts
    }

    pub fn is_signing(&self) -> bool {
        self.leader.is_leader()
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

struct SignerTask {
    connection: Connection,
    settings: Arc<SignerSettings>,
    counts: Arc<SignerCounts>,
    leading: watch::Receiver<bool>,
    stopped: watch::Receiver<bool>,
}

/// Why one request is not signed: its reason is what `refused/<node>` and the metric say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    BadRequest,
    BadCsr,
    NoToken,
    WrongToken,
    NoCertificate,
    CertificateExpired,
    KeyMismatch,
    SignFailed,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad-request",
            Refusal::BadCsr => "bad-csr",
            Refusal::NoToken => "no-token",
            Refusal::WrongToken => "wrong-token",
            Refusal::NoCertificate => "no-certificate",
            Refusal::CertificateExpired => "certificate-expired",
            Refusal::KeyMismatch => "key-mismatch",
            Refusal::SignFailed => "sign-failed",
        }
    }
}

/// What a decision on one request came to.
enum Outcome {
    Done,
    /// The txn's compare failed: something it read changed. Read again and decide again.
    Changed,
}

impl SignerTask {
    async fn run(mut self) {
        loop {
            // Until elected, or asked to stop.
            loop {
                if *self.stopped.borrow() {
                    return;
                }
                if *self.leading.borrow_and_update() {
                    break;
                }
                tokio::select! {
                    changed = self.leading.changed() => if changed.is_err() { return },
                    _ = self.stopped.changed() => {}
                }
            }
            tracing::info!("this node signs certificates (ca-signer)");
            if let Err(error) = self.sign_while_leading().await {
                tracing::warn!(%error, "the signer failed; starting over");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    fn still_leading(&self) -> bool {
        *self.leading.borrow() && !*self.stopped.borrow()
    }

    /// Puts the bundle if absent, answers every pending request, then each new one as it
    /// comes, until leadership is lost or the watch fails.
    async fn sign_while_leading(&mut self) -> Result<(), CaError> {
        let bundle = put_bundle_if_absent(&self.connection, &self.settings.root_pem).await?;
        if bundle != self.settings.root_pem {
            let own = certs_from_pem(&self.settings.root_pem)?;
            let theirs = certs_from_pem(&bundle)?;
            if !own.iter().all(|root| theirs.contains(root)) {
                // Rotation is not automated yet: etcd's bundle wins, and nodes will not
                // trust what this signer signs until an operator sorts the roots out.
                tracing::error!(
                    bundle = ?theirs.iter().map(fingerprint_sha256).collect::<Vec<_>>(),
                    "etcd's trust bundle does not hold this signer's root; keeping etcd's"
                );
            }
        }
        let prefix = layout::ca_csr_prefix();
        let (pending, revision) = prefix_watch::read_all(&self.connection, &prefix, 0).await?;
        for kv in &pending {
            if !self.still_leading() {
                return Ok(());
            }
            self.handle(kv).await?;
        }
        let (endpoint, mut client) = self.connection.pinned();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision as i64 + 1);
        let (_watcher, mut stream) = match tokio::time::timeout(
            Duration::from_secs(2),
            client.watch(prefix.clone(), Some(options)),
        )
        .await
        {
            Ok(Ok(watch)) => watch.split(),
            _ => {
                self.connection.repin(&endpoint);
                return Err(CaError::Etcd(EtcdError::Unavailable {
                    endpoint,
                    reason: "cannot watch the certificate requests".into(),
                }));
            }
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = self.leading.changed() => {
                    if self.still_leading() { continue } else { return Ok(()) }
                }
                _ = self.stopped.changed() => return Ok(()),
            };
            let response = match message {
                Ok(Some(response)) if !response.canceled() => response,
                // Failed, ended or compacted: the next round reads every request again,
                // after a pause so that a member failing every stream is not hammered.
                _ => {
                    self.connection.repin(&endpoint);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return Ok(());
                }
            };
            for event in response.events() {
                if event.event_type() != EventType::Put || !self.still_leading() {
                    continue;
                }
                if let Some(kv) = event.kv() {
                    self.handle(kv).await?;
                }
            }
        }
    }

    /// Answers one request; a decision whose txn lost a race is taken again on fresh reads.
    async fn handle(&self, request: &KeyValue) -> Result<(), CaError> {
        let mut request = request.clone();
        for _ in 0..3 {
            match self.decide(&request).await? {
                Outcome::Done => return Ok(()),
                Outcome::Changed => {
                    match get_one(&self.connection, request.key().to_vec()).await? {
                        // Same request still pending: decide again on what is there now.
                        Some(kv) if kv.mod_revision() == request.mod_revision() => request = kv,
                        // Handled by another signer, or replaced: the watch brings the new one.
                        _ => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }

    async fn decide(&self, request: &KeyValue) -> Result<Outcome, CaError> {
        let csr_key = String::from_utf8_lossy(request.key()).into_owned();
        let revision = request.mod_revision();
        let prefix = layout::ca_csr_prefix();
        let escaped = csr_key.strip_prefix(&prefix).unwrap_or_default();
        let Ok(node) = NodeName::new(&layout::unescape(escaped)) else {
            // No node to answer: the request is dropped, and counted.
            tracing::warn!(key = %csr_key, "a certificate request for an invalid node name");
            return self
                .refuse(&csr_key, None, revision, Refusal::BadRequest)
                .await;
        };
        let Some((csr, token)) = decode_request(request.value()) else {
            return self
                .refuse(&csr_key, Some(&node), revision, Refusal::BadRequest)
                .await;
        };
        let Ok(csr_public_key) = csr_public_key_info(&csr) else {
            return self
                .refuse(&csr_key, Some(&node), revision, Refusal::BadCsr)
                .await;
        };
        // What the txn must find unchanged besides the request: the token, or the
        // certificate being renewed.
        let guard_key = match &token {
            Some(_) => layout::ca_token_key(node.as_str()),
            None => layout::ca_cert_key(node.as_str()),
        };
        let guard = get_one(&self.connection, guard_key.clone()).await?;
        let refusal = match (&token, &guard) {
            (Some(_), None) => Some(Refusal::NoToken),
            (Some(token), Some(stored)) if stored.value() != token_hash(token).as_bytes() => {
                Some(Refusal::WrongToken)
            }
            (None, None) => Some(Refusal::NoCertificate),
            (None, Some(current)) => {
                match NodeCert::from_pem(&String::from_utf8_lossy(current.value())) {
                    Err(_) => Some(Refusal::NoCertificate),
                    Ok(cert) if cert.not_after <= OffsetDateTime::now_utc() => {
                        Some(Refusal::CertificateExpired)
                    }
                    Ok(cert) if cert.public_key_info().ok() != Some(csr_public_key) => {
                        Some(Refusal::KeyMismatch)
                    }
                    Ok(_) => None,
                }
            }
            (Some(_), Some(_)) => None,
        };
        if let Some(refusal) = refusal {
            return self.refuse(&csr_key, Some(&node), revision, refusal).await;
        }
        let settings = &self.settings;
        let signed = settings.issuer.sign_node(
            &csr,
            &node,
            settings.issuer.trust_domain(),
            OffsetDateTime::now_utc(),
            settings.lifetime,
        );
        let cert = match signed {
            Ok(cert) => cert,
            Err(error) => {
                tracing::warn!(%node, %error, "cannot sign a certificate request");
                return self
                    .refuse(&csr_key, Some(&node), revision, Refusal::SignFailed)
                    .await;
            }
        };
        let guard_revision = guard.as_ref().map_or(0, KeyValue::mod_revision);
        let cert_key = layout::ca_cert_key(node.as_str());
        let refused_key = layout::ca_refused_key(node.as_str());
        let joining = token.is_some();
        let chain = cert.chain_pem.clone();
        let answer = self
            .connection
            .run(true, |mut client| {
                let (csr_key, guard_key) = (csr_key.clone(), guard_key.clone());
                let (cert_key, refused_key, chain) =
                    (cert_key.clone(), refused_key.clone(), chain.clone());
                async move {
                    let mut then = vec![
                        TxnOp::put(cert_key, chain, None),
                        TxnOp::delete(csr_key.clone(), None),
                        TxnOp::delete(refused_key, None),
                    ];
                    if joining {
                        // Single use: the token goes in the txn that spends it.
                        then.push(TxnOp::delete(guard_key.clone(), None));
                    }
                    let txn = Txn::new()
                        .when([
                            Compare::mod_revision(csr_key, CompareOp::Equal, revision),
                            Compare::mod_revision(guard_key, CompareOp::Equal, guard_revision),
                        ])
                        .and_then(then);
                    client.txn(txn).await
                }
            })
            .await?;
        if !answer.succeeded() {
            return Ok(Outcome::Changed);
        }
        self.counts.signed.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            %node,
            renewal = !joining,
            not_after = %cert.not_after,
            "certificate signed"
        );
        Ok(Outcome::Done)
    }

    /// Records a refusal where the node reads it, deletes the request, counts it.
    async fn refuse(
        &self,
        csr_key: &str,
        node: Option<&NodeName>,
        revision: i64,
        refusal: Refusal,
    ) -> Result<Outcome, CaError> {
        let refused = node.map(|node| {
            let value = json!({"v": VERSION, "csr_revision": revision, "reason": refusal.reason()});
            (
                layout::ca_refused_key(node.as_str()),
                serde_json::to_vec(&value).expect("a JSON value always serializes"),
            )
        });
        let csr_key = csr_key.to_owned();
        let answer = self
            .connection
            .run(true, |mut client| {
                let (csr_key, refused) = (csr_key.clone(), refused.clone());
                async move {
                    let mut then = vec![TxnOp::delete(csr_key.clone(), None)];
                    if let Some((key, value)) = refused {
                        then.push(TxnOp::put(key, value, None));
                    }
                    let txn = Txn::new()
                        .when([Compare::mod_revision(csr_key, CompareOp::Equal, revision)])
                        .and_then(then);
                    client.txn(txn).await
                }
            })
            .await?;
        if !answer.succeeded() {
            return Ok(Outcome::Changed);
        }
        *self
            .counts
            .refused
            .lock()
            .entry(refusal.reason())
            .or_default() += 1;
        tracing::warn!(
            node = node.map(NodeName::as_str).unwrap_or("?"),
            reason = refusal.reason(),
            "certificate request refused"
        );
        Ok(Outcome::Done)
    }
}

/// A request's CSR and token (`None`: a renewal).
fn decode_request(bytes: &[u8]) -> Option<(String, Option<String>)> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    if value.get("v").and_then(Value::as_u64) != Some(VERSION) {
        return None;
    }
    let csr = value.get("csr")?.as_str()?.to_owned();
    let token = match value.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(token.clone()),
        Some(_) => return None,
    };
    Some((csr, token))
}

/// One key as etcd holds it now, if it exists.
async fn get_one(
    connection: &Connection,
    key: impl Into<Vec<u8>>,
) -> Result<Option<KeyValue>, EtcdError> {
    let key = key.into();
    let mut answer = connection
        .run(true, |mut client| {
            let key = key.clone();
            async move { client.get(key, None).await }
        })
        .await?;
    Ok(answer.take_kvs().into_iter().next())
}

fn first_get(answer: etcd_client::TxnResponse) -> Option<KeyValue> {
    answer.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(get) => get.kvs().first().cloned(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_only_their_hash_is_kept() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), a);
        assert_eq!(token_hash(&a).len(), 64);
    }

    #[test]
    fn fingerprints_compare_whatever_their_spelling() {
        assert_eq!(normalize_fingerprint(" AB:cd:EF "), "abcdef");
        assert_eq!(normalize_fingerprint("sha256:abCD"), "abcd");
    }

    #[test]
    fn requests_and_refusals_decode_or_are_refused() {
        assert_eq!(
            decode_request(br#"{"v":1,"csr":"X","token":"t"}"#),
            Some(("X".into(), Some("t".into())))
        );
        assert_eq!(
            decode_request(br#"{"v":1,"csr":"X","token":null}"#),
            Some(("X".into(), None))
        );
        assert_eq!(decode_request(br#"{"v":2,"csr":"X"}"#), None);
        assert_eq!(decode_request(br#"{"v":1,"csr":"X","token":3}"#), None);
        assert_eq!(decode_request(b"garbage"), None);
        assert_eq!(
            decode_refusal(br#"{"v":1,"csr_revision":7,"reason":"no-token"}"#),
            Some((7, "no-token".into()))
        );
    }
}
