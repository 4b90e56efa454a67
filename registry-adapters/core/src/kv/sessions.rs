//! Sessions: named holders of KV locks with an optional TTL. When a session ends (destroyed
//! or expired) its locks are released or its keys deleted, per its behaviour, and the keys
//! cannot be acquired again until its lock-delay has passed. Sessions are kept in the KV
//! store's file, so a restart of Ferry ends none of them and releases none of their locks;
//! their TTLs start again from the restart, as Consul's do after a leader change.

use std::collections::HashMap;
use std::time::Duration;

use crate::model::Millis;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    Release,
    Delete,
}

impl Behavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// What a client asks for when it creates a session.
#[derive(Clone, Debug)]
pub struct SessionRequest {
    pub name: String,
    pub ttl: Option<Duration>,
    pub behavior: Behavior,
    pub lock_delay: Duration,
    pub node_checks: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub lock_delay: Duration,
    pub behavior: Behavior,
    pub ttl: Option<Duration>,
    pub node_checks: Vec<String>,
    pub create_index: u64,
    pub modify_index: u64,
    /// When the session ends unless renewed.
    pub expires_at: Option<Millis>,
}

#[derive(Debug, Default)]
pub struct Sessions {
    by_id: HashMap<String, Session>,
}

impl Sessions {
    /// A new session for `request`, not yet kept: the caller persists it first.
    pub fn open(request: SessionRequest, node: &str, index: u64, now: Millis) -> Session {
        Session {
            id: uuid::Uuid::new_v4().to_string(),
            name: request.name,
            node: node.to_owned(),
            lock_delay: request.lock_delay,
            behavior: request.behavior,
            ttl: request.ttl,
            node_checks: request.node_checks,
            create_index: index,
            modify_index: index,
            expires_at: request.ttl.map(|ttl| now + expiry_millis(ttl)),
        }
    }

    pub fn insert(&mut self, session: Session) {
        self.by_id.insert(session.id.clone(), session);
    }

    /// Sessions read back at start, their TTLs running from `now`.
    pub fn restore(sessions: impl IntoIterator<Item = Session>, now: Millis) -> Sessions {
        Sessions {
            by_id: sessions
                .into_iter()
                .map(|mut session| {
                    session.expires_at = session.ttl.map(|ttl| now + expiry_millis(ttl));
                    (session.id.clone(), session)
                })
                .collect(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Session> {
        self.by_id.get(id)
    }

    pub fn all(&self) -> Vec<Session> {
        let mut all: Vec<Session> = self.by_id.values().cloned().collect();
        all.sort_by_key(|session| session.create_index);
        all
    }

    pub fn renew(&mut self, id: &str, now: Millis) -> Option<Session> {
        let session = self.by_id.get_mut(id)?;
        session.expires_at = session.ttl.map(|ttl| now + expiry_millis(ttl));
        Some(session.clone())
    }

    /// Keeps a session a shared store brought (created, or renewed on another node): its
    /// TTL runs from `now` here, unless this copy already holds the same or a newer one.
    pub fn arrived(&mut self, mut session: Session, now: Millis) {
        if self
            .by_id
            .get(&session.id)
            .is_some_and(|held| held.modify_index >= session.modify_index)
        {
            return;
        }
        session.expires_at = session.ttl.map(|ttl| now + expiry_millis(ttl));
        self.by_id.insert(session.id.clone(), session);
    }

    pub fn ids(&self) -> Vec<String> {
        self.by_id.keys().cloned().collect()
    }

    pub fn remove(&mut self, id: &str) -> Option<Session> {
        self.by_id.remove(id)
    }

    pub fn expired(&self, now: Millis) -> Vec<String> {
        self.by_id
            .values()
            .filter(|session| session.expires_at.is_some_and(|at| at < now))
            .map(|session| session.id.clone())
            .collect()
    }
}

/// Consul lets a session live twice its TTL before invalidating it, to absorb clock skew
/// and late renewals.
fn expiry_millis(ttl: Duration) -> Millis {
    (ttl.as_millis() as Millis).saturating_mul(2)
}
