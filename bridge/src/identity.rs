//! This node's certificate for mutual TLS between nodes (issue 15): got at start, renewed
//! before it expires, swapped in [`LiveIdentity`] for the inbound listener and the outbound
//! connector to read per connection.
//!
//! With `--ca-issuer DIR` the node signs its own certificate with the issuer and publishes
//! it in etcd, and campaigns to sign the others' (`ferry_etcd::ca::Signer`). With
//! `--join-token T --ca-root-sha256 FP` it trades the token for a certificate through etcd.
//! Either way it first trusts the bundle in etcd only if a root has the pinned fingerprint
//! (DIR's root.pem's for a signer). The key is made here and kept in
//! `<data-dir>/identity/node.key` (0600), the chain in `node.pem`, so a restart reuses a
//! still valid certificate and renews it with the key, without a token.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ferry_etcd::ca::{self, Signer, SignerCounts, SignerSettings};
use ferry_etcd::EtcdStore;
use ferry_identity::{
    certs_from_pem, fingerprint_sha256, random_jitter, trust_domain_of, verify_node_cert,
    CertificateDer, Credentials, Issuer, LiveIdentity, NodeCert, NodeKey, NodeName, TrustDomain,
};
use time::OffsetDateTime;
use tokio::sync::watch;

/// What the identity flags ask for.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ca_issuer: Option<PathBuf>,
    pub join_token: Option<String>,
    pub ca_root_sha256: Option<String>,
    pub cert_lifetime: Duration,
    /// How long to wait for the bundle and for the signer's answer.
    pub wait: Duration,
    pub data_dir: PathBuf,
}

impl Settings {
    pub fn from_cli(cli: &crate::cli::Cli) -> Settings {
        Settings {
            ca_issuer: cli.ca_issuer.clone(),
            join_token: cli.join_token.clone().filter(|token| !token.is_empty()),
            ca_root_sha256: cli.ca_root_sha256.clone(),
            cert_lifetime: cli.cert_lifetime,
            wait: Duration::from_secs(cli.store_wait),
            data_dir: cli.data_dir.clone(),
        }
    }
}

/// Figures for `/metrics`, updated by the renewal loop; the signer's are its own.
#[derive(Debug, Default)]
pub struct Figures {
    /// Unix seconds of the current certificate's `not_after`.
    pub not_after: AtomicI64,
    pub renewals_ok: AtomicU64,
    pub renewals_error: AtomicU64,
    /// Set on a node started with `--ca-issuer`.
    pub signer: Option<Arc<SignerCounts>>,
}

/// A started identity: the live credentials, and the signer candidacy kept alive with it.
pub struct Identity {
    pub live: Arc<LiveIdentity>,
    pub figures: Arc<Figures>,
    signer: Option<Signer>,
}

impl Identity {
    /// The signer's campaign, for `/api/leaders` and for resigning on shutdown.
    pub fn signer_leader(&self) -> Option<Arc<ferry_etcd::Leader>> {
        self.signer.as_ref().map(|signer| signer.leader().clone())
    }
}

/// The CA files a signer node reads from `--ca-issuer DIR`.
struct IssuerFiles {
    issuer: Issuer,
    root_pem: String,
    /// A second copy for signing this node's own certificate (an `Issuer` is not `Clone`:
    /// its key is deliberately not copyable in memory, so it is read twice).
    own: Issuer,
}

fn read_issuer(dir: &Path) -> anyhow::Result<IssuerFiles> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let (cert, key, root_pem) = (read("issuer.pem")?, read("issuer.key")?, read("root.pem")?);
    let issuer = Issuer::from_pem(&cert, &key).context("the issuer in --ca-issuer")?;
    let own = Issuer::from_pem(&cert, &key)?;
    anyhow::ensure!(
        certs_from_pem(&root_pem)?.len() == 1,
        "{} must hold exactly the root certificate",
        dir.join("root.pem").display()
    );
    Ok(IssuerFiles {
        issuer,
        root_pem,
        own,
    })
}

/// Starts this node's identity when the flags ask for one (`None` otherwise): reads and
/// pins the bundle, takes or makes the key, gets a certificate, then renews it and follows
/// the bundle in the background until `stopping`.
pub async fn start(
    settings: Settings,
    store: Option<&Arc<EtcdStore>>,
    node_name: &str,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<Option<Identity>> {
    if settings.ca_issuer.is_none() && settings.join_token.is_none() {
        if settings.ca_root_sha256.is_some() {
            tracing::warn!(
                "--ca-root-sha256 without --join-token or --ca-issuer: no certificate is requested"
            );
        }
        return Ok(None);
    }
    let store = store.context(
        "--ca-issuer and --join-token need the etcd store (--store etcd://HOST:PORT[,...])",
    )?;
    let node = NodeName::new(node_name)
        .context("certificates need a --node-name that is a lowercase DNS label")?;
    let connection = store.connection();
    let lifetime =
        time::Duration::try_from(settings.cert_lifetime).context("--cert-lifetime is too long")?;

    let files = match &settings.ca_issuer {
        Some(dir) => Some(read_issuer(dir)?),
        None => None,
    };
    let pin = match (&settings.ca_root_sha256, &files) {
        (Some(pin), _) => pin.clone(),
        (None, Some(files)) => fingerprint_sha256(&certs_from_pem(&files.root_pem)?[0]),
        (None, None) => anyhow::bail!("--join-token needs --ca-root-sha256 (from `ferry ca init`)"),
    };
    // A signer puts its root as the bundle if etcd has none, without waiting to be elected,
    // so that it can start alone.
    let (bundle_pem, bundle_revision) = match &files {
        Some(files) => {
            ca::put_bundle_if_absent(connection, &files.root_pem).await?;
            ca::wait_for_bundle(connection, settings.wait).await?
        }
        None => ca::wait_for_bundle(connection, settings.wait)
            .await
            .context("no trust bundle in etcd: start a node with --ca-issuer first")?,
    };
    let roots = ca::pinned_roots(&bundle_pem, &pin).context("the trust bundle in etcd")?;
    let td = trust_domain_of(&roots[0])?;

    let (own, signer) = match files {
        Some(files) => {
            let signer = Signer::start(
                store,
                SignerSettings {
                    issuer: files.issuer,
                    root_pem: files.root_pem,
                    lifetime,
                },
                ferry_etcd::leader::DEFAULT_TTL,
            );
            (Some(files.own), Some(signer))
        }
        None => (None, None),
    };
    let figures = Arc::new(Figures {
        signer: signer.as_ref().map(|signer| signer.counts().clone()),
        ..Figures::default()
    });

    let dir = settings.data_dir.join("identity");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = load_or_make_key(&dir.join("node.key"))?;
    let node_pem = dir.join("node.pem");
    let kept = std::fs::read_to_string(&node_pem)
        .ok()
        .and_then(|pem| NodeCert::from_pem(&pem).ok())
        .filter(|cert| verify_node_cert(&key, cert, &node, &td, &roots, SystemTime::now()).is_ok());
    let cert = match kept {
        Some(cert) => {
            tracing::info!(%node, not_after = %cert.not_after, "the certificate kept on disk is still valid");
            cert
        }
        None => {
            let cert = match &own {
                Some(issuer) => sign_own(connection, issuer, &key, &node, &td, lifetime).await?,
                None => {
                    let token = settings.join_token.as_deref().context(
                        "no valid certificate on disk: a --join-token is needed to get one",
                    )?;
                    let csr = key.csr(&node)?;
                    ca::request_certificate(connection, &node, &csr, Some(token), settings.wait)
                        .await
                        .context("cannot join the trust domain")?
                }
            };
            verify_node_cert(&key, &cert, &node, &td, &roots, SystemTime::now())
                .context("the certificate received does not check out")?;
            save_chain(&node_pem, &cert)?;
            tracing::info!(%node, trust_domain = %td, not_after = %cert.not_after, "certificate obtained");
            cert
        }
    };
    figures
        .not_after
        .store(cert.not_after.unix_timestamp(), Ordering::Relaxed);
    let live = Arc::new(LiveIdentity::new(Credentials::new(
        node.clone(),
        td.clone(),
        &key,
        &cert,
        &roots,
    )?));

    let state = Arc::new(State {
        node,
        td,
        key,
        own,
        connection: connection.clone(),
        node_pem,
        lifetime,
        wait: settings.wait,
        live: live.clone(),
        figures: figures.clone(),
        current: Mutex::new((cert, roots)),
    });
    tokio::spawn(renew_forever(state.clone(), stopping.clone()));
    tokio::spawn(follow_bundle(state, bundle_revision, stopping));
    Ok(Some(Identity {
        live,
        figures,
        signer,
    }))
}

/// What the renewal loop and the bundle follower share.
struct State {
    node: NodeName,
    td: TrustDomain,
    key: NodeKey,
    /// The issuer, on a signer node: it renews its own certificate itself.
    own: Option<Issuer>,
    connection: ferry_etcd::Connection,
    node_pem: PathBuf,
    lifetime: time::Duration,
    wait: Duration,
    live: Arc<LiveIdentity>,
    figures: Arc<Figures>,
    /// The certificate and the roots the live credentials were built from; a std mutex,
    /// held only to copy or swap, never across an await.
    current: Mutex<(NodeCert, Vec<CertificateDer<'static>>)>,
}

impl State {
    fn current(&self) -> (NodeCert, Vec<CertificateDer<'static>>) {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Builds credentials from `cert` and `roots` and makes them current everywhere.
    fn install(&self, cert: NodeCert, roots: Vec<CertificateDer<'static>>) -> anyhow::Result<()> {
        let credentials =
            Credentials::new(self.node.clone(), self.td.clone(), &self.key, &cert, &roots)?;
        self.live.replace(credentials)?;
        self.figures
            .not_after
            .store(cert.not_after.unix_timestamp(), Ordering::Relaxed);
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = (cert, roots);
        Ok(())
    }

    async fn renew_once(&self) -> anyhow::Result<NodeCert> {
        let (_, roots) = self.current();
        let cert = match &self.own {
            Some(issuer) => {
                sign_own(
                    &self.connection,
                    issuer,
                    &self.key,
                    &self.node,
                    &self.td,
                    self.lifetime,
                )
                .await?
            }
            None => {
                let csr = self.key.csr(&self.node)?;
                ca::request_certificate(&self.connection, &self.node, &csr, None, self.wait).await?
            }
        };
        verify_node_cert(
            &self.key,
            &cert,
            &self.node,
            &self.td,
            &roots,
            SystemTime::now(),
        )?;
        save_chain(&self.node_pem, &cert)?;
        self.install(cert.clone(), roots)?;
        Ok(cert)
    }
}

/// At a random 50-70% of each certificate's life, a renewal with the same key; on failure,
/// retries with backoff (1 s doubling to a minute) while the certificate still serves.
async fn renew_forever(state: Arc<State>, mut stopping: watch::Receiver<bool>) {
    loop {
        let (cert, _) = state.current();
        let at = cert.renew_at(random_jitter().unwrap_or(0.5));
        let wait = Duration::try_from(at - OffsetDateTime::now_utc()).unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            match state.renew_once().await {
                Ok(renewed) => {
                    state.figures.renewals_ok.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(node = %state.node, not_after = %renewed.not_after, "certificate renewed");
                    break;
                }
                Err(error) => {
                    state.figures.renewals_error.fetch_add(1, Ordering::Relaxed);
                    let expired = OffsetDateTime::now_utc() >= cert.not_after;
                    tracing::warn!(node = %state.node, error = %format!("{error:#}"), expired, retry_in = ?backoff, "cannot renew the certificate");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }
}

/// Takes each new trust bundle from etcd, if the node's own certificate verifies against
/// it (a bundle that would cut this node off is refused, loudly: rotation adds the new root
/// before anything is signed by it).
async fn follow_bundle(state: Arc<State>, revision: i64, mut stopping: watch::Receiver<bool>) {
    let mut bundles = ca::watch_bundle(&state.connection, revision);
    loop {
        let pem = tokio::select! {
            pem = bundles.recv() => match pem { Some(pem) => pem, None => return },
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        let (cert, old_roots) = state.current();
        let taken = certs_from_pem(&pem)
            .map_err(anyhow::Error::from)
            .and_then(|roots| {
                if roots == old_roots {
                    return Ok(false);
                }
                verify_node_cert(
                    &state.key,
                    &cert,
                    &state.node,
                    &state.td,
                    &roots,
                    SystemTime::now(),
                )?;
                state.install(cert.clone(), roots)?;
                Ok(true)
            });
        match taken {
            Ok(true) => tracing::info!("trust bundle changed in etcd; taken"),
            Ok(false) => {}
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "refusing the new trust bundle in etcd")
            }
        }
    }
}

/// A signer node's own certificate, signed here and published in `ca/certs/<node>` so any
/// elected signer can renew it like another node's.
async fn sign_own(
    connection: &ferry_etcd::Connection,
    issuer: &Issuer,
    key: &NodeKey,
    node: &NodeName,
    td: &TrustDomain,
    lifetime: time::Duration,
) -> anyhow::Result<NodeCert> {
    let cert = issuer.sign_node(
        &key.csr(node)?,
        node,
        td,
        OffsetDateTime::now_utc(),
        lifetime,
    )?;
    ca::put_certificate(connection, node, &cert).await?;
    Ok(cert)
}

/// The node's key from `path`, or a new one written there (0600) first.
fn load_or_make_key(path: &Path) -> anyhow::Result<NodeKey> {
    match std::fs::read_to_string(path) {
        Ok(pem) => {
            NodeKey::from_pem(&pem).with_context(|| format!("the key in {}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = NodeKey::generate()?;
            crate::ca::write_new(path, &key.to_pem(), true)?;
            Ok(key)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces `node.pem` whole (write aside, then rename), so a crash never leaves half a chain.
fn save_chain(path: &Path, cert: &NodeCert) -> anyhow::Result<()> {
    let aside = path.with_extension("pem.new");
    let _ = std::fs::remove_file(&aside);
    crate::ca::write_new(&aside, &cert.chain_pem, false)?;
    std::fs::rename(&aside, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// `GET /api/identity`: who this node is to its peers, for operators and the dashboard.
pub fn json(live: Option<&LiveIdentity>) -> serde_json::Value {
    let Some(live) = live else {
        return serde_json::json!({ "enabled": false });
    };
    let current = live.current();
    let rfc3339 = |at: OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    serde_json::json!({
        "enabled": true,
        "node": current.node.as_str(),
        "trust_domain": current.trust_domain.as_str(),
        "spiffe_id": current.node.spiffe_id(&current.trust_domain),
        "not_before": rfc3339(current.not_before),
        "not_after": rfc3339(current.not_after),
        "roots_sha256": current.roots,
    })
}
