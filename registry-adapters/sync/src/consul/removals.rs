//! When an imported copy the legacy Consul no longer lists is removed from Ferry: at once
//! normally, but only after the grace period while contact was just regained (a restarted
//! agent is empty until its services register again) and after one reconcile would remove
//! more than half the copies (and more than two): a burst that looks like a source losing
//! its state, not like services leaving, holds every removal for the grace period. A copy
//! that comes back meanwhile is kept.
//! Pure decisions over keys and instants, so the rules are tested without a Consul.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

/// An instance's key in the registry: upper-case app and id.
pub type Key = (String, String);

/// The removals held back, and until when all of them are.
#[derive(Debug, Default)]
pub struct Removals {
    /// Copies gone from the source, and when they were first seen gone.
    missing_since: HashMap<Key, Instant>,
    /// Until then no removal happens: contact was (re)gained at `until - grace`.
    hold_until: Option<Instant>,
}

impl Removals {
    /// Contact with the source was regained (or made for the first time) at `now`: nothing
    /// it no longer lists is removed before `now + grace`.
    pub fn contact_regained(&mut self, now: Instant, grace: Duration) {
        self.hold_until = Some(now + grace);
    }

    /// Which of the `held` copies to remove now, given what the source `listed`; copies of
    /// a `protected` app (one of whose entries could not be read this time) are kept
    /// whatever it listed.
    pub fn decide(
        &mut self,
        held: &[Key],
        listed: &HashSet<Key>,
        protected: &HashSet<String>,
        now: Instant,
        grace: Duration,
    ) -> Vec<Key> {
        let gone: Vec<&Key> = held
            .iter()
            .filter(|key| !listed.contains(*key) && !protected.contains(&key.0))
            .collect();
        let gone_set: HashSet<&Key> = gone.iter().copied().collect();
        self.missing_since.retain(|key, _| gone_set.contains(key));
        for key in &gone {
            self.missing_since.entry((*key).clone()).or_insert(now);
        }
        let burst = gone.len() > 2 && gone.len() * 2 > held.len();
        let mut holding = self.hold_until.is_some_and(|until| now < until);
        if burst && !holding {
            // A source that lost most of its state is refilled by its apps over the next
            // moments: hold every removal for the grace, as after regained contact.
            self.hold_until = Some(now + grace);
            holding = true;
        }
        gone.into_iter()
            .filter(|key| {
                let waited = self
                    .missing_since
                    .get(*key)
                    .is_some_and(|since| now.duration_since(*since) >= grace);
                waited || !holding
            })
            .cloned()
            .collect()
    }

    /// The copy was removed (or taken over): no longer pending.
    pub fn removed(&mut self, key: &Key) {
        self.missing_since.remove(key);
    }

    /// Copies gone from the source and still held.
    pub fn pending(&self) -> usize {
        self.missing_since.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> Key {
        ("ORDERS".to_owned(), id.to_owned())
    }

    fn keys(ids: &[&str]) -> Vec<Key> {
        ids.iter().map(|id| key(id)).collect()
    }

    fn listed(ids: &[&str]) -> HashSet<Key> {
        keys(ids).into_iter().collect()
    }

    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn a_copy_gone_in_steady_state_goes_at_once() {
        let mut removals = Removals::default();
        let now = Instant::now();
        let held = keys(&["a", "b", "c"]);
        let removed = removals.decide(&held, &listed(&["a", "b"]), &HashSet::new(), now, GRACE);
        assert_eq!(removed, keys(&["c"]));
    }

    #[test]
    fn removals_wait_for_the_grace_after_contact_is_regained() {
        let mut removals = Removals::default();
        let start = Instant::now();
        removals.contact_regained(start, GRACE);
        let held = keys(&["a", "b", "c"]);
        let some = listed(&["a", "b"]);
        assert!(removals
            .decide(&held, &some, &HashSet::new(), start, GRACE)
            .is_empty());
        assert_eq!(removals.pending(), 1);
        let later = start + GRACE / 2;
        assert!(removals
            .decide(&held, &some, &HashSet::new(), later, GRACE)
            .is_empty());
        let after = start + GRACE;
        assert_eq!(
            removals.decide(&held, &some, &HashSet::new(), after, GRACE),
            keys(&["c"])
        );
    }

    #[test]
    fn a_burst_is_held_for_the_grace_and_a_copy_that_returns_is_kept() {
        let mut removals = Removals::default();
        let start = Instant::now();
        let held = keys(&["a", "b", "c", "d"]);
        let few = listed(&["a"]);
        assert!(removals
            .decide(&held, &few, &HashSet::new(), start, GRACE)
            .is_empty());
        assert_eq!(removals.pending(), 3);
        // "b" registers again before the grace ends: it is no longer pending.
        let back = listed(&["a", "b"]);
        let later = start + GRACE / 2;
        assert!(removals
            .decide(&held, &back, &HashSet::new(), later, GRACE)
            .is_empty());
        assert_eq!(removals.pending(), 2);
        let after = start + GRACE;
        assert_eq!(
            removals.decide(&held, &back, &HashSet::new(), after, GRACE),
            keys(&["c", "d"])
        );
    }

    #[test]
    fn two_copies_leaving_a_small_service_is_no_burst() {
        let mut removals = Removals::default();
        let now = Instant::now();
        let held = keys(&["a", "b"]);
        assert_eq!(
            removals.decide(&held, &listed(&[]), &HashSet::new(), now, GRACE),
            keys(&["a", "b"])
        );
    }

    #[test]
    fn a_protected_app_keeps_its_copies() {
        let mut removals = Removals::default();
        let now = Instant::now();
        let held = keys(&["a", "b"]);
        let protected: HashSet<String> = ["ORDERS".to_owned()].into_iter().collect();
        assert!(removals
            .decide(&held, &listed(&["a"]), &protected, now, GRACE)
            .is_empty());
        assert_eq!(removals.pending(), 0);
    }
}
