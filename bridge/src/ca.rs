//! `ferry ca init` and `ferry ca token`: the operator's side of the certificate authority.
//!
//! `init` makes the trust domain's root and issuer as files (the root key is meant to go
//! offline right after; signer nodes need only the issuer and the root's certificate) and
//! prints the root's fingerprint, which joining nodes pin. `token` stores a join token's
//! hash in etcd and prints the token: it never exists anywhere but on the operator's screen
//! and the joining node's command line.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use ferry_identity::{NodeName, Root, TrustDomain};

use crate::cli::{BundleAction, CaCommand};
use crate::store::StoreChoice;

pub fn run(command: &CaCommand) -> ExitCode {
    let outcome = match command {
        CaCommand::Init { trust_domain, dir } => init(trust_domain, dir),
        CaCommand::Token { node, ttl, store } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(token(node, *ttl, store))),
        CaCommand::Bundle { action, store } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(bundle(action, store.as_ref()))),
    };
    match outcome {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ferry ca: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The files `init` writes: certificates world-readable, keys 0600.
const FILES: [(&str, bool); 4] = [
    ("root.pem", false),
    ("root.key", true),
    ("issuer.pem", false),
    ("issuer.key", true),
];

fn init(trust_domain: &str, dir: &Path) -> anyhow::Result<String> {
    let td = TrustDomain::new(trust_domain)?;
    // Refuse before making anything: a half-overwritten CA would orphan every node.
    for (name, _) in FILES {
        let path = dir.join(name);
        if path.exists() {
            anyhow::bail!("{} exists; refusing to overwrite it", path.display());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root = Root::generate(&td)?;
    let issuer = root.issuer()?;
    let (root_pem, issuer_pem) = (root.to_pem(), issuer.to_pem());
    let contents = [
        &root_pem.cert,
        &root_pem.key,
        &issuer_pem.cert,
        &issuer_pem.key,
    ];
    for ((name, secret), text) in FILES.into_iter().zip(contents) {
        write_new(&dir.join(name), text, secret)?;
    }
    Ok(format!(
        "trust domain {td}: root and issuer written to {dir}\n\
         root SHA-256: {fingerprint}\n\
         Keep root.key offline; signer nodes need issuer.pem, issuer.key and root.pem \
         (--ca-issuer {dir}); joining nodes pin --ca-root-sha256 {fingerprint}",
        dir = dir.display(),
        fingerprint = root.fingerprint_sha256(),
    ))
}

/// Creates `path` (never replacing a file), 0600 when `secret`, and writes `text`.
pub fn write_new(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `ferry ca bundle list|add|remove`: the trust bundle in etcd, edited by compare-and-swap.
async fn bundle(action: &BundleAction, store: Option<&StoreChoice>) -> anyhow::Result<String> {
    let connection = connect(store, "the trust bundle lives").await?;
    let roots = match action {
        BundleAction::List => {
            let (pem, _) = ferry_etcd::ca::read_bundle(&connection)
                .await?
                .context("etcd holds no trust bundle yet: no signer has started")?;
            ferry_etcd::ca::bundle_roots(&pem)?
        }
        BundleAction::Add { root } => {
            let pem = std::fs::read_to_string(root)
                .with_context(|| format!("cannot read {}", root.display()))?;
            let der = ferry_identity::certs_from_pem(&pem)?;
            let [new] = der.as_slice() else {
                anyhow::bail!(
                    "{} must hold exactly one certificate, a root",
                    root.display()
                );
            };
            let domain = ferry_identity::trust_domain_of(new)?;
            let added = ferry_etcd::ca::bundle_roots(&pem)?;
            ferry_etcd::ca::edit_bundle(&connection, |mut roots| {
                for known in &roots {
                    let known_domain = ferry_identity::certs_from_pem(&known.pem)?
                        .first()
                        .map(ferry_identity::trust_domain_of)
                        .transpose()?;
                    if known_domain.as_ref().is_some_and(|known| *known != domain) {
                        return Err(ferry_etcd::ca::CaError::Bundle(format!(
                            "the root is for trust domain {domain}, the bundle's for {}",
                            known_domain.map(|d| d.to_string()).unwrap_or_default()
                        )));
                    }
                }
                for root in added {
                    if !roots.iter().any(|known| known.sha256 == root.sha256) {
                        roots.push(root);
                    }
                }
                Ok(roots)
            })
            .await?
        }
        BundleAction::Remove { sha256 } => {
            let gone = ferry_etcd::ca::normalize_fingerprint(sha256);
            ferry_etcd::ca::edit_bundle(&connection, |roots| {
                if !roots.iter().any(|root| root.sha256 == gone) {
                    return Err(ferry_etcd::ca::CaError::Bundle(format!(
                        "no root of the bundle has SHA-256 {gone}"
                    )));
                }
                Ok(roots
                    .into_iter()
                    .filter(|root| root.sha256 != gone)
                    .collect())
            })
            .await?
        }
    };
    Ok(roots
        .iter()
        .map(|root| format!("root SHA-256: {}", root.sha256))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The etcd where `what` lives.
async fn connect(
    store: Option<&StoreChoice>,
    what: &str,
) -> anyhow::Result<ferry_etcd::Connection> {
    let Some(StoreChoice::Etcd(endpoints)) = store else {
        anyhow::bail!("{what} in etcd: give --store etcd://HOST:PORT[,...]");
    };
    ferry_etcd::Connection::connect(endpoints, ferry_etcd::ConnectOptions::default())
        .await
        .with_context(|| format!("cannot use etcd at {}", endpoints.join(",")))
}

async fn token(
    node: &str,
    ttl: std::time::Duration,
    store: &StoreChoice,
) -> anyhow::Result<String> {
    let node = NodeName::new(node)?;
    let connection = connect(Some(store), "join tokens live").await?;
    let token = ferry_etcd::ca::new_token()?;
    ferry_etcd::ca::put_token(&connection, &node, &token, ttl)
        .await
        .context("cannot store the token's hash in etcd")?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_the_ca_once_with_private_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ferry-ca-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let printed = init("ferry.test", &dir).unwrap();
        let root = std::fs::read_to_string(dir.join("root.pem")).unwrap();
        let key = std::fs::read_to_string(dir.join("root.key")).unwrap();
        let root = Root::from_pem(&root, &key).unwrap();
        assert!(printed.contains(&root.fingerprint_sha256()));
        for (name, secret) in FILES {
            let mode = std::fs::metadata(dir.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077 == 0, secret, "{name}: {mode:o}");
        }
        let issuer = ferry_identity::Issuer::from_pem(
            &std::fs::read_to_string(dir.join("issuer.pem")).unwrap(),
            &std::fs::read_to_string(dir.join("issuer.key")).unwrap(),
        )
        .unwrap();
        assert_eq!(issuer.trust_domain().as_str(), "ferry.test");
        // A second init refuses and leaves the files as they were.
        assert!(init("ferry.test", &dir).is_err());
        assert_eq!(
            Root::from_pem(
                &std::fs::read_to_string(dir.join("root.pem")).unwrap(),
                &key
            )
            .unwrap()
            .fingerprint_sha256(),
            root.fingerprint_sha256()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        use crate::cli::duration;
        use std::time::Duration;
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "0", "500ms", "h", "10w", "-1s"] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
    }
}
