//! Sidecar mode's wiring: with an identity from the trust domain and a shared store, this
//! node opens its inbound listener for other nodes, publishes where it is in its node key,
//! and sends calls for instances other nodes keep through theirs (`ferry_proxy::peer`).
//! The proxy knows neither etcd nor the join flow: it gets a directory of peers and a live
//! identity.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_core::Registry;
use ferry_etcd::EtcdStore;
use ferry_http::listen::ConnectionLimits;
use ferry_identity::LiveIdentity;
use ferry_proxy::inbound::{AllowRules, Inbound, InboundMetrics, LocalAddresses};
use ferry_proxy::peer::{PeerDirectory, PeerMetrics, Sidecar};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The peers' inbound addresses as their node keys in etcd say.
#[derive(Debug)]
pub struct EtcdPeers(pub Arc<EtcdStore>);

impl PeerDirectory for EtcdPeers {
    fn inbound_of(&self, node: &str) -> Option<String> {
        self.0.inbound_of(node)
    }
}

/// The outbound hop's shared client.
pub fn sidecar(
    identity: Arc<LiveIdentity>,
    store: Arc<EtcdStore>,
    connect_timeout: Duration,
    metrics: Arc<PeerMetrics>,
) -> Arc<Sidecar> {
    Arc::new(Sidecar::new(
        identity,
        Arc::new(EtcdPeers(store)),
        connect_timeout,
        metrics,
    ))
}

/// The address other nodes dial: `--inbound-advertise`, else the listen address unless it
/// is a wildcard, else this node's advertised host with the listen port.
pub fn advertised(listen: SocketAddr, advertise: Option<&str>, host: &str) -> String {
    match advertise {
        Some(address) => address.to_owned(),
        None if !listen.ip().is_unspecified() => listen.to_string(),
        None if host.contains(':') => format!("[{host}]:{}", listen.port()),
        None => format!("{host}:{}", listen.port()),
    }
}

/// Binds the inbound listener and serves it until `stopping`.
#[allow(clippy::too_many_arguments)]
pub async fn open_inbound(
    listen: SocketAddr,
    advertised: &str,
    registry: Arc<Registry>,
    identity: Arc<LiveIdentity>,
    allow: Arc<dyn AllowRules>,
    connect_timeout: Duration,
    metrics: Arc<InboundMetrics>,
    limits: ConnectionLimits,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot open the inbound listener on {listen}"))?;
    // An app of this host may register with the host's own address rather than loopback:
    // the one other nodes reach this one at (a name, in compose, resolves to the
    // container's address, which the app beside it registers with).
    let mut own: Vec<IpAddr> = vec![listen.ip()];
    match tokio::net::lookup_host(advertised).await {
        Ok(addresses) => own.extend(addresses.map(|address| address.ip())),
        Err(error) => tracing::warn!(
            advertised,
            %error,
            "cannot resolve the inbound listener's advertised address; only loopback \
             instances are forwarded to"
        ),
    }
    let inbound = Arc::new(Inbound::new(
        registry,
        identity.clone(),
        LocalAddresses::new(own.into_iter().filter(|ip| !ip.is_unspecified())),
        Some(allow),
        connect_timeout,
        metrics,
    ));
    tracing::info!(
        %listen,
        advertised,
        node = %identity.current().node,
        "inbound listener open: mutual TLS from nodes of the trust domain only"
    );
    tokio::spawn(ferry_proxy::inbound::serve(
        listener, inbound, limits, stopping,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_inbound_address_is_the_given_one_or_the_listen_or_the_host() {
        let any: SocketAddr = "0.0.0.0:15006".parse().unwrap();
        let own: SocketAddr = "198.18.0.1:15006".parse().unwrap();
        assert_eq!(advertised(any, Some("h1:15006"), "x"), "h1:15006");
        assert_eq!(advertised(own, None, "x"), "198.18.0.1:15006");
        assert_eq!(advertised(any, None, "10.0.0.7"), "10.0.0.7:15006");
        assert_eq!(advertised(any, None, "fd00::7"), "[fd00::7]:15006");
    }
}
