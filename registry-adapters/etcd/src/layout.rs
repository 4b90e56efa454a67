//! Where Ferry keeps its data in etcd, and how a registration is wrapped there.
//!
//! Everything lives under one prefix, `/ferry/v1/`, so one watch feeds a node and another
//! tool's keys are never read. A registration is `inst/<APP>/<id>`: its value is an envelope
//! naming the node that keeps it (renews its lease, evicts it, runs its checks) around the
//! same versioned JSON record the embedded store writes (`ferry_core::store::record`), so
//! `etcdctl get` shows something a person can read. App and id are escaped (`/` and `%`),
//! so any id Consul or Eureka accepts makes exactly one key.

use ferry_core::model::Instance;
use ferry_core::store::record::{self, RecordError};
use serde_json::{json, Value};

pub const PREFIX: &str = "/ferry/v1/";

/// The envelope's version; a reader refuses others.
const ENVELOPE_VERSION: u64 = 1;

pub fn instances_prefix() -> String {
    format!("{PREFIX}inst/")
}

pub fn instance_key(app: &str, id: &str) -> String {
    format!("{PREFIX}inst/{}/{}", escape(app), escape(id))
}

/// Consul KV entries: `kv/<key>`, the key as the client gave it (`crate::kv`).
pub fn kv_prefix() -> String {
    format!("{PREFIX}kv/")
}

/// KV sessions: `sessions/<id>`, on the lease of the node that created them.
pub fn sessions_prefix() -> String {
    format!("{PREFIX}sessions/")
}

pub fn nodes_prefix() -> String {
    format!("{PREFIX}nodes/")
}

pub fn node_key(node: &str) -> String {
    format!("{PREFIX}nodes/{}", escape(node))
}

pub fn cutover_prefix() -> String {
    format!("{PREFIX}cutover/")
}

pub fn cutover_key(service: &str) -> String {
    format!("{PREFIX}cutover/{}", escape(service))
}

pub fn allow_prefix() -> String {
    format!("{PREFIX}allow/")
}

pub fn allow_key(service: &str) -> String {
    format!("{PREFIX}allow/{}", escape(service))
}

pub fn leader_key(job: &str) -> String {
    format!("{PREFIX}leader/{}", escape(job))
}

/// The certificate authority's keys (`crate::ca`): the trust bundle, join-token hashes,
/// CSRs, signed chains and refusals, each per node under its own prefix. Private keys
/// never come here: a node's stays on its disk, the issuer's on the signers'.
pub fn ca_bundle_key() -> String {
    format!("{PREFIX}ca/bundle")
}

pub fn ca_tokens_prefix() -> String {
    format!("{PREFIX}ca/tokens/")
}

pub fn ca_token_key(node: &str) -> String {
    format!("{}{}", ca_tokens_prefix(), escape(node))
}

pub fn ca_csr_prefix() -> String {
    format!("{PREFIX}ca/csr/")
}

pub fn ca_csr_key(node: &str) -> String {
    format!("{}{}", ca_csr_prefix(), escape(node))
}

pub fn ca_certs_prefix() -> String {
    format!("{PREFIX}ca/certs/")
}

pub fn ca_cert_key(node: &str) -> String {
    format!("{}{}", ca_certs_prefix(), escape(node))
}

pub fn ca_refused_prefix() -> String {
    format!("{PREFIX}ca/refused/")
}

pub fn ca_refused_key(node: &str) -> String {
    format!("{}{}", ca_refused_prefix(), escape(node))
}

pub(crate) fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('/', "%2F")
}

pub(crate) fn unescape(part: &str) -> String {
    part.replace("%2F", "/").replace("%25", "%")
}

/// The first key after every key that starts with `prefix`.
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// A registration as etcd holds it.
#[derive(Debug)]
pub struct Envelope {
    /// The node that keeps the instance.
    pub owner: String,
    pub instance: Instance,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("envelope version {0:?} is not known to this Ferry")]
    Version(Option<u64>),
    #[error("the envelope names no owner")]
    NoOwner,
    #[error(transparent)]
    Record(#[from] RecordError),
}

pub fn encode(owner: &str, instance: &Instance) -> Vec<u8> {
    let value = json!({
        "v": ENVELOPE_VERSION,
        "owner": owner,
        "record": record::to_value(instance),
    });
    serde_json::to_vec(&value).expect("a JSON value always serializes")
}

pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let value: Value = serde_json::from_slice(bytes)?;
    let version = value.get("v").and_then(Value::as_u64);
    if version != Some(ENVELOPE_VERSION) {
        return Err(EnvelopeError::Version(version));
    }
    let owner = value
        .get("owner")
        .and_then(Value::as_str)
        .filter(|owner| !owner.is_empty())
        .ok_or(EnvelopeError::NoOwner)?
        .to_owned();
    let instance = record::from_value(value.get("record").unwrap_or(&Value::Null))?;
    Ok(Envelope { owner, instance })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_reads_back_with_its_owner_and_record() {
        let instance = Instance::new("ORDERS", "orders-1", "10.0.0.7", "10.0.0.7", 8080);
        let envelope = decode(&encode("node-a", &instance)).unwrap();
        assert_eq!(envelope.owner, "node-a");
        assert_eq!(envelope.instance.id, "orders-1");
        assert_eq!(envelope.instance.host_name, "10.0.0.7");
    }

    #[test]
    fn garbage_and_foreign_values_are_refused() {
        assert!(decode(b"\xff\x00garbage").is_err());
        assert!(decode(br#"{"v":2,"owner":"a","record":{}}"#).is_err());
        assert!(decode(br#"{"v":1,"record":{}}"#).is_err());
        assert!(decode(br#"{"v":1,"owner":"a","record":{"v":1}}"#).is_err());
    }

    #[test]
    fn slashes_in_ids_make_one_key() {
        assert_eq!(instance_key("A/B", "x%/y"), "/ferry/v1/inst/A%2FB/x%25%2Fy");
    }
}
