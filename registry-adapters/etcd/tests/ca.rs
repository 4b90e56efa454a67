//! The certificate authority through a real 3-member etcd cluster on loopback: joining with
//! a token (once; a wrong or expired one is refused), pinning the bundle's root, renewing
//! with the current key (another key is refused), and a second signer taking over.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{serial, Cluster};
use ferry_etcd::ca::{self, CaError, Signer, SignerSettings};
use ferry_etcd::{Connection, EtcdStore, EtcdStoreOptions};
use ferry_identity::{
    peer_node, verify_node_cert, Credentials, NodeCert, NodeKey, NodeName, Root, TrustDomain,
};

const WAIT: Duration = Duration::from_secs(10);

async fn node(cluster: &Cluster, name: &str) -> Arc<EtcdStore> {
    EtcdStore::start(EtcdStoreOptions::new(cluster.endpoints(), name.to_owned()))
        .await
        .expect("start an etcd store")
}

fn signer(store: &Arc<EtcdStore>, root: &Root, lifetime: time::Duration) -> Signer {
    let settings = SignerSettings {
        issuer: root.issuer().expect("make an issuer"),
        root_pem: root.cert_pem().to_owned(),
        lifetime,
    };
    Signer::start(store, settings, Duration::from_secs(2))
}

async fn until_signing(signers: &[&Signer]) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(index) = signers.iter().position(|signer| signer.is_signing()) {
            return index;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no signer elected within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node's join as the bridge does it: pinned bundle, own key, CSR, checked chain.
async fn join(
    connection: &Connection,
    name: &str,
    token: Option<&str>,
    pin: &str,
    key: &NodeKey,
) -> Result<NodeCert, CaError> {
    let name = NodeName::new(name).unwrap();
    let (bundle, _) = ca::wait_for_bundle(connection, WAIT).await?;
    let roots = ca::pinned_roots(&bundle, pin)?;
    let td = ferry_identity::trust_domain_of(&roots[0])?;
    let csr = key.csr(&name)?;
    let cert = ca::request_certificate(connection, &name, &csr, token, WAIT).await?;
    verify_node_cert(key, &cert, &name, &td, &roots, SystemTime::now())?;
    Credentials::new(name, td, key, &cert, &roots)?;
    Ok(cert)
}

/// The signer counts a decision once etcd confirmed its txn, which may be just after the
/// node saw the answer: counts are read with a little patience.
async fn signed_soon(signer: &Signer, expected: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while signer.counts().signed() != expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signer.counts().signed()
}

fn refused(outcome: Result<NodeCert, CaError>) -> String {
    match outcome {
        Err(CaError::Refused { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_joins_once_and_wrong_expired_or_unpinned_ones_do_not() {
    let _turn = serial().await;
    let cluster = Cluster::start("ca-join").await;
    let td = TrustDomain::new("ferry.test").unwrap();
    let root = Root::generate(&td).unwrap();
    let pin = root.fingerprint_sha256();
    let (a, b) = (
        node(&cluster, "node-a").await,
        node(&cluster, "node-b").await,
    );
    let signing = signer(&a, &root, time::Duration::hours(24));
    until_signing(&[&signing]).await;
    let connection = b.connection();

    // A valid token: a certificate whose peer identity is the node.
    let token = ca::new_token().unwrap();
    let node_b = NodeName::new("node-b").unwrap();
    ca::put_token(connection, &node_b, &token, Duration::from_secs(3600))
        .await
        .unwrap();
    let key = NodeKey::generate().unwrap();
    let cert = join(connection, "node-b", Some(&token), &pin, &key)
        .await
        .expect("a valid token joins");
    assert_eq!(peer_node(&cert.chain_der().unwrap(), &td).unwrap(), node_b);
    let stored = ca::read_certificate(connection, &node_b).await.unwrap();
    assert_eq!(stored.map(|c| c.chain_pem), Some(cert.chain_pem.clone()));
    // The token's hash went with the txn that used it, and only the hash was ever there.
    assert!(cluster
        .etcdctl(&["get", "--prefix", "/ferry/v1/ca/tokens/"])
        .is_empty());

    // Used once: the same token again is refused.
    let again = NodeKey::generate().unwrap();
    let reason = refused(join(connection, "node-b", Some(&token), &pin, &again).await);
    assert_eq!(reason, "no-token");

    // A wrong token is refused and leaves the right one usable.
    let node_c = NodeName::new("node-c").unwrap();
    let right = ca::new_token().unwrap();
    ca::put_token(connection, &node_c, &right, Duration::from_secs(3600))
        .await
        .unwrap();
    let wrong = ca::new_token().unwrap();
    let key_c = NodeKey::generate().unwrap();
    let reason = refused(join(connection, "node-c", Some(&wrong), &pin, &key_c).await);
    assert_eq!(reason, "wrong-token");
    join(connection, "node-c", Some(&right), &pin, &key_c)
        .await
        .expect("the right token still joins after a wrong one");

    // A token whose TTL ran out is gone with its lease.
    let node_d = NodeName::new("node-d").unwrap();
    let short = ca::new_token().unwrap();
    ca::put_token(connection, &node_d, &short, Duration::from_secs(1))
        .await
        .unwrap();
    // etcd rounds a lease's TTL up to its minimum (about 2 s with default timings).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let key_d = NodeKey::generate().unwrap();
    let reason = refused(join(connection, "node-d", Some(&short), &pin, &key_d).await);
    assert_eq!(reason, "no-token");

    // A pin that matches no root of the bundle: the node refuses the bundle and asks nothing.
    let other = Root::generate(&td).unwrap().fingerprint_sha256();
    match join(connection, "node-e", None, &other, &key_d).await {
        Err(CaError::PinMismatch { found, .. }) => assert_eq!(found, std::slice::from_ref(&pin)),
        other => panic!("expected a pin mismatch, got {other:?}"),
    }

    assert_eq!(signed_soon(&signing, 2).await, 2);
    // Refusals are counted after their txn too: the last one may still be on its way.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while signing.counts().refused().get("no-token") != Some(&2)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refusals = signing.counts().refused();
    assert_eq!(refusals.get("no-token"), Some(&2), "{refusals:?}");
    assert_eq!(refusals.get("wrong-token"), Some(&1), "{refusals:?}");
    // Handled requests are deleted.
    assert!(cluster
        .etcdctl(&["get", "--prefix", "/ferry/v1/ca/csr/"])
        .is_empty());

    // A bundle rotated in etcd (a second root added) reaches the nodes that follow it.
    let (bundle, revision) = ca::read_bundle(connection).await.unwrap().unwrap();
    let mut bundles = ca::watch_bundle(connection, revision);
    let next = Root::generate(&td).unwrap();
    let rotated = format!("{bundle}{}", next.cert_pem());
    // `--`: a PEM value starts with dashes, which etcdctl would take for a flag.
    cluster.etcdctl(&["put", "--", "/ferry/v1/ca/bundle", &rotated]);
    let seen = tokio::time::timeout(WAIT, bundles.recv())
        .await
        .expect("the new bundle within 10 s")
        .expect("the watch is alive");
    assert_eq!(seen, rotated);
    assert_eq!(ca::pinned_roots(&seen, &pin).unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_takes_the_current_key_only_while_its_certificate_is_valid() {
    let _turn = serial().await;
    let cluster = Cluster::start("ca-renew").await;
    let td = TrustDomain::new("ferry.test").unwrap();
    let root = Root::generate(&td).unwrap();
    let pin = root.fingerprint_sha256();
    let store = node(&cluster, "node-a").await;
    let signing = signer(&store, &root, time::Duration::seconds(6));
    until_signing(&[&signing]).await;
    let connection = store.connection();
    let name = NodeName::new("node-r").unwrap();

    // No certificate yet: nothing to renew.
    let key = NodeKey::generate().unwrap();
    let reason = refused(join(connection, "node-r", None, &pin, &key).await);
    assert_eq!(reason, "no-certificate");

    let token = ca::new_token().unwrap();
    ca::put_token(connection, &name, &token, Duration::from_secs(3600))
        .await
        .unwrap();
    let first = join(connection, "node-r", Some(&token), &pin, &key)
        .await
        .unwrap();

    // Certificates carry whole seconds: wait past one so the renewal is visibly later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let renewed = join(connection, "node-r", None, &pin, &key)
        .await
        .expect("a renewal with the current key");
    assert!(renewed.not_after > first.not_after);
    assert_ne!(renewed.chain_pem, first.chain_pem);

    // Another key is not the node's: refused, and the current certificate stays.
    let thief = NodeKey::generate().unwrap();
    let reason = refused(join(connection, "node-r", None, &pin, &thief).await);
    assert_eq!(reason, "key-mismatch");
    let stored = ca::read_certificate(connection, &name).await.unwrap();
    assert_eq!(stored.map(|c| c.chain_pem), Some(renewed.chain_pem.clone()));

    // Once the certificate expired, even the right key needs a new token.
    let left = renewed.not_after - time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_secs(1)).await;
    let reason = refused(join(connection, "node-r", None, &pin, &key).await);
    assert_eq!(reason, "certificate-expired");
    assert_eq!(signed_soon(&signing, 2).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_signers_signs_and_the_other_takes_over_when_it_is_gone() {
    let _turn = serial().await;
    let cluster = Cluster::start("ca-signers").await;
    let td = TrustDomain::new("ferry.test").unwrap();
    let root = Root::generate(&td).unwrap();
    let pin = root.fingerprint_sha256();
    let (a, b, joiner) = (
        node(&cluster, "node-a").await,
        node(&cluster, "node-b").await,
        node(&cluster, "node-j").await,
    );
    let lifetime = time::Duration::hours(1);
    let mut signers = [
        Some(signer(&a, &root, lifetime)),
        Some(signer(&b, &root, lifetime)),
    ];
    let first = {
        let both: Vec<&Signer> = signers.iter().flatten().collect();
        until_signing(&both).await
    };
    let second = 1 - first;
    assert!(!signers[second].as_ref().unwrap().is_signing());

    let connection = joiner.connection();
    for name in ["node-x", "node-y"] {
        let token = ca::new_token().unwrap();
        ca::put_token(
            connection,
            &NodeName::new(name).unwrap(),
            &token,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
        let key = NodeKey::generate().unwrap();
        join(connection, name, Some(&token), &pin, &key)
            .await
            .unwrap_or_else(|error| panic!("{name} joins: {error}"));
        if name == "node-x" {
            assert_eq!(signed_soon(signers[first].as_ref().unwrap(), 1).await, 1);
            assert_eq!(signers[second].as_ref().unwrap().counts().signed(), 0);
            // The signer dies without resigning: its lease runs out and the other is
            // elected, then answers the request written meanwhile.
            signers[first] = None;
        }
    }
    let survivor = signers[second].as_ref().unwrap();
    assert!(survivor.is_signing());
    assert_eq!(signed_soon(survivor, 1).await, 1);
}
