//! The leases a node keeps its instances on: a few per node, never one per instance.
//!
//! A put on a lease costs etcd time linear in the keys already on that lease (etcd#15993:
//! attaching 4,000 keys to one lease took 6.9 s here, and with 10,000 a 30 s lease expired
//! mid-way), so, as Kubernetes caps a lease at 1,000 objects, a node puts at most
//! `KEYS_PER_LEASE` keys on each lease and takes another when all are full. The first
//! lease also carries the node's own key. This is the bookkeeping only; granting and
//! keeping leases alive is `registrations`'.

use std::collections::HashMap;

pub const KEYS_PER_LEASE: usize = 1000;

#[derive(Debug, Default)]
pub struct LeasePool {
    /// Each lease with how many keys are on it, oldest first.
    leases: Vec<(i64, usize)>,
    of_key: HashMap<String, i64>,
}

impl LeasePool {
    pub fn new(first: i64) -> LeasePool {
        LeasePool {
            leases: vec![(first, 0)],
            of_key: HashMap::new(),
        }
    }

    /// The lease the node's own key is on.
    pub fn first(&self) -> i64 {
        self.leases.first().map_or(0, |(id, _)| *id)
    }

    pub fn ids(&self) -> Vec<i64> {
        self.leases.iter().map(|(id, _)| *id).collect()
    }

    /// The lease `key` is on, placing it on one with room if it is new here; `None` when
    /// every lease is full (grant one and `add` it).
    pub fn place(&mut self, key: &str) -> Option<i64> {
        if let Some(id) = self.of_key.get(key) {
            return Some(*id);
        }
        let (id, keys) = self
            .leases
            .iter_mut()
            .find(|(_, keys)| *keys < KEYS_PER_LEASE)?;
        *keys += 1;
        self.of_key.insert(key.to_owned(), *id);
        Some(*id)
    }

    pub fn add(&mut self, id: i64) {
        self.leases.push((id, 0));
    }

    /// `key` is no longer on this node's leases (deleted, or kept by another node now).
    pub fn release(&mut self, key: &str) {
        if let Some(id) = self.of_key.remove(key) {
            if let Some((_, keys)) = self.leases.iter_mut().find(|(lease, _)| *lease == id) {
                *keys = keys.saturating_sub(1);
            }
        }
    }

    /// `old` expired and `new` takes its place; the keys that were on it, to write back.
    pub fn replace(&mut self, old: i64, new: i64) -> Vec<String> {
        for (id, _) in &mut self.leases {
            if *id == old {
                *id = new;
            }
        }
        let mut moved = Vec::new();
        for (key, id) in &mut self.of_key {
            if *id == old {
                *id = new;
                moved.push(key.clone());
            }
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_takes_at_most_its_share_of_keys_and_a_key_stays_where_it_was_placed() {
        let mut pool = LeasePool::new(1);
        for n in 0..KEYS_PER_LEASE {
            assert_eq!(pool.place(&format!("k{n}")), Some(1));
        }
        assert_eq!(
            pool.place("k0"),
            Some(1),
            "a key already placed stays on its lease"
        );
        assert_eq!(pool.place("one-more"), None, "full: a new lease is needed");
        pool.add(2);
        assert_eq!(pool.place("one-more"), Some(2));
        pool.release("k5");
        assert_eq!(
            pool.place("after-release"),
            Some(1),
            "a freed place is used again"
        );
    }

    #[test]
    fn replacing_an_expired_lease_moves_its_keys_and_the_node_key() {
        let mut pool = LeasePool::new(1);
        pool.place("a");
        pool.place("b");
        let mut moved = pool.replace(1, 7);
        moved.sort();
        assert_eq!(moved, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(pool.first(), 7);
        assert_eq!(pool.place("a"), Some(7));
    }
}
