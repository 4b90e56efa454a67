//! Deleted keys, and how they are forgotten without any prefix's result index going back.
//!
//! A delete leaves a tombstone (key -> index of the delete) so that a blocking read of a
//! prefix wakes on it and the prefix's index rises. Kept for ever, tombstones grow without
//! bound under churn (lock keys, config keys written and removed). As Consul does, they are
//! reaped once older than a TTL (15 minutes by default), in batches tracked at a 30-second
//! granularity.
//!
//! Consul lets a prefix's index fall back when its newest tombstone is reaped; Spring Cloud
//! Consul's ConfigWatch treats any index change as a change and refreshes the app. Here a
//! reaped tombstone's index is kept as a watermark on its key's directory (the key up to
//! its last `/`): a prefix's index is at least the watermark of every directory under it,
//! and of the directory it ends in. Directory prefixes (`config/orders/`) keep exactly the
//! index they had; a prefix that ends inside a name may rise once, never fall. The cost is
//! one entry per directory that ever lost a key, not one per key.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use crate::model::Millis;

/// Deletes within this span share one reaping batch.
const GRANULARITY: Millis = 30_000;

#[derive(Debug, Default)]
pub struct Tombstones {
    /// Deleted key -> index of its deletion.
    deleted: BTreeMap<String, u64>,
    /// Directory (a key up to and with its last `/`, or "") -> the highest index of a
    /// tombstone reaped from it.
    watermarks: BTreeMap<String, u64>,
    /// (time, highest index deleted up to then), oldest first: which tombstones are old
    /// enough to reap.
    batches: VecDeque<(Millis, u64)>,
}

impl Tombstones {
    /// What was read back at start. Loaded tombstones count as deleted `now`: their age
    /// was not kept.
    pub fn restore(
        deleted: impl IntoIterator<Item = (String, u64)>,
        watermarks: impl IntoIterator<Item = (String, u64)>,
        now: Millis,
    ) -> Tombstones {
        let mut tombstones = Tombstones {
            deleted: deleted.into_iter().collect(),
            watermarks: watermarks.into_iter().collect(),
            batches: VecDeque::new(),
        };
        if let Some(newest) = tombstones.deleted.values().max().copied() {
            tombstones.batches.push_back((now, newest));
        }
        tombstones
    }

    pub fn bury(&mut self, key: String, index: u64, now: Millis) {
        self.deleted.insert(key, index);
        match self.batches.back_mut() {
            Some((started, newest)) if now - *started < GRANULARITY => *newest = index,
            _ => self.batches.push_back((now, index)),
        }
    }

    /// A key written again is no longer deleted.
    pub fn revive(&mut self, key: &str) {
        self.deleted.remove(key);
    }

    /// The index of the key's delete, while its tombstone is kept.
    pub fn buried_at(&self, key: &str) -> Option<u64> {
        self.deleted.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.deleted.len()
    }

    /// The highest index a delete under `prefix` left, reaped or not.
    pub fn newest_under(&self, prefix: &str) -> Option<u64> {
        let buried = under(&self.deleted, prefix).map(|(_, index)| *index).max();
        let reaped_below = under(&self.watermarks, prefix)
            .map(|(_, index)| *index)
            .max();
        let reaped_in_own = self.watermarks.get(directory(prefix)).copied();
        buried.max(reaped_below).max(reaped_in_own)
    }

    /// The reaping due at `now`: the tombstones whose batch is older than `ttl`, and the
    /// watermarks they raise. Nothing changes until `apply`, so the caller can persist the
    /// reaping first.
    pub fn due(&self, now: Millis, ttl: Millis) -> Option<Reaping> {
        let horizon = self
            .batches
            .iter()
            .take_while(|(started, _)| now - *started >= ttl)
            .map(|(_, newest)| *newest)
            .max()?;
        let mut keys = Vec::new();
        let mut raised: BTreeMap<String, u64> = BTreeMap::new();
        for (key, &index) in self.deleted.iter().filter(|(_, index)| **index <= horizon) {
            keys.push(key.clone());
            let slot = raised.entry(directory(key).to_owned()).or_insert(0);
            *slot = (*slot).max(index);
        }
        raised.retain(|directory, index| {
            self.watermarks
                .get(directory)
                .is_none_or(|mark| *index > *mark)
        });
        Some(Reaping {
            horizon,
            keys,
            watermarks: raised.into_iter().collect(),
        })
    }

    /// Forgets what `due` chose and takes the batches it covered.
    pub fn apply(&mut self, reaping: &Reaping, now: Millis, ttl: Millis) {
        for key in &reaping.keys {
            self.deleted.remove(key);
        }
        for (directory, index) in &reaping.watermarks {
            self.watermarks.insert(directory.clone(), *index);
        }
        while self
            .batches
            .front()
            .is_some_and(|(started, newest)| now - *started >= ttl && *newest <= reaping.horizon)
        {
            self.batches.pop_front();
        }
    }
}

/// One reaping: every tombstone up to `horizon`, and the directory watermarks it raises.
#[derive(Debug, PartialEq, Eq)]
pub struct Reaping {
    pub horizon: u64,
    pub keys: Vec<String>,
    pub watermarks: Vec<(String, u64)>,
}

/// A key up to and with its last `/`; "" for a key with none.
fn directory(key: &str) -> &str {
    key.rfind('/').map_or("", |at| &key[..=at])
}

pub fn under<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(key, _)| key.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Millis = 15 * 60_000;

    #[test]
    fn reaped_tombstones_keep_directory_indexes_and_never_lower_any() {
        let mut tombstones = Tombstones::default();
        tombstones.bury("config/orders/a".into(), 10, 0);
        tombstones.bury("config/orders/deep/b".into(), 12, 1_000);
        tombstones.bury("locks/x".into(), 20, 40_000);
        let prefixes = [
            "",
            "config/",
            "config/orders/",
            "config/orders/d",
            "config/orders/deep/",
            "config/or",
            "locks/x",
            "locks/",
        ];
        let before: Vec<Option<u64>> = prefixes
            .iter()
            .map(|p| tombstones.newest_under(p))
            .collect();

        assert_eq!(
            tombstones.due(TTL - 1, TTL),
            None,
            "nothing is old enough yet"
        );
        let reaping = tombstones.due(TTL + 1_000, TTL).unwrap();
        assert_eq!(
            reaping,
            Reaping {
                horizon: 12,
                keys: vec![
                    "config/orders/a".to_owned(),
                    "config/orders/deep/b".to_owned()
                ],
                watermarks: vec![
                    ("config/orders/".to_owned(), 10),
                    ("config/orders/deep/".to_owned(), 12)
                ],
            }
        );
        tombstones.apply(&reaping, TTL + 1_000, TTL);
        assert_eq!(tombstones.len(), 1);

        for (prefix, before) in prefixes.iter().zip(&before) {
            let after = tombstones.newest_under(prefix);
            assert!(after >= *before, "{prefix}: {before:?} -> {after:?}");
            if prefix.ends_with('/') || prefix.is_empty() {
                assert_eq!(
                    after, *before,
                    "a directory keeps its index exactly: {prefix}"
                );
            }
        }
        let reaping = tombstones.due(40_000 + TTL, TTL).unwrap();
        tombstones.apply(&reaping, 40_000 + TTL, TTL);
        assert_eq!(tombstones.len(), 0);
        assert_eq!(tombstones.newest_under("locks/"), Some(20));
        assert_eq!(
            tombstones.due(100 * TTL, TTL),
            None,
            "every batch was taken"
        );
    }
}
