//! Registrations made through a node agent (the Consul view): registering and
//! deregistering, the agent-id and check-id lookups, and the TTL timers of their checks.
//!
//! Such an instance holds no Eureka lease: it stays until deregistered or until one of its
//! checks has been critical for longer than the check allows. Its published status follows
//! its checks (a server-side override still wins), so a failing check shows as DOWN in
//! every view and appears in the Eureka delta as MODIFIED. The checks themselves are
//! changed in `checks.rs`.
//!
//! A store that keeps agent registrations (`store::DurableStore`) hands them back at start,
//! and `Registry::restore` registers them again, as a Consul agent reloads the services and
//! checks registered through its API.

use std::collections::HashMap;
use std::time::Duration;

use super::events::Removal;
use super::leases::{service_up_since, Leases};
use super::{RegisteredInstance, Registry, RegistryError};
use crate::model::{Action, Health, Instance, Millis, Probe, Registration, Status};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "Unknown service ID {0:?}. Ensure that the service ID is passed, not the service name."
    )]
    UnknownService(String),
    #[error("Unknown check ID {0:?}. Ensure that the check ID is passed, not the check name.")]
    UnknownCheck(String),
    #[error("CheckID {0:?} does not have associated TTL")]
    NotTtl(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A new status and output for a check.
#[derive(Clone, Debug)]
pub struct CheckUpdate {
    pub status: Health,
    pub output: String,
}

/// The lookups agent calls go through, kept in step with the records by the write core.
#[derive(Debug, Default)]
pub(super) struct Agents {
    /// Agent-registered instance id -> its app: agent ids are unique per node.
    agent_ids: HashMap<String, String>,
    /// Check id -> (app, instance id): check ids are unique per node.
    check_owners: HashMap<String, (String, String)>,
    /// TTL check id -> when it turns critical unless renewed.
    ttl_deadlines: HashMap<String, Millis>,
}

impl Agents {
    /// The app of an agent-registered instance id.
    pub(super) fn app(&self, id: &str) -> Result<String, AgentError> {
        self.agent_ids
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::UnknownService(id.to_owned()))
    }

    /// The (app, instance id) a check belongs to.
    pub(super) fn owner(&self, check_id: &str) -> Result<(String, String), AgentError> {
        self.check_owners
            .get(check_id)
            .cloned()
            .ok_or_else(|| AgentError::UnknownCheck(check_id.to_owned()))
    }

    /// Follows a record that replaces `previous`: checks the new record no longer has stop
    /// existing; kept ones keep their TTL timers.
    pub(super) fn track(&mut self, previous: Option<&Instance>, instance: &Instance) {
        if let Some(stored) = previous {
            for check in &stored.checks {
                if !instance.checks.iter().any(|kept| kept.id == check.id) {
                    self.check_owners.remove(&check.id);
                    self.ttl_deadlines.remove(&check.id);
                }
            }
        }
        if instance.registration == Registration::Agent {
            self.agent_ids
                .insert(instance.id.clone(), instance.app.clone());
        }
        for check in &instance.checks {
            self.check_owners.insert(
                check.id.clone(),
                (instance.app.clone(), instance.id.clone()),
            );
        }
    }

    /// Follows a record that went.
    pub(super) fn forget(&mut self, instance: &Instance) {
        if instance.registration == Registration::Agent {
            self.agent_ids.remove(&instance.id);
        }
        for check in &instance.checks {
            self.check_owners.remove(&check.id);
            self.ttl_deadlines.remove(&check.id);
        }
    }

    /// (Re)starts a TTL check's timer.
    pub(super) fn restart_ttl(&mut self, check_id: &str, ttl: Duration, now: Millis) {
        self.ttl_deadlines
            .insert(check_id.to_owned(), now + ttl.as_millis() as Millis);
    }

    /// TTL checks whose timer ran out before `now`.
    pub(super) fn expired_ttls(&self, now: Millis) -> Vec<String> {
        self.ttl_deadlines
            .iter()
            .filter(|(_, deadline)| **deadline < now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Stops the timer of a TTL check that ran out before `now` and names its owner;
    /// `None` when it was renewed meanwhile or belongs to no instance any more.
    pub(super) fn expire_ttl(&mut self, check_id: &str, now: Millis) -> Option<(String, String)> {
        if self
            .ttl_deadlines
            .get(check_id)
            .is_none_or(|deadline| *deadline >= now)
        {
            return None;
        }
        self.ttl_deadlines.remove(check_id);
        self.check_owners.get(check_id).cloned()
    }
}

impl Registry {
    /// Registers (or re-registers) an agent instance. Checks already known by id keep
    /// their current status; without `replace_existing_checks`, checks the new
    /// registration leaves out are kept too.
    pub fn register_agent(
        &self,
        mut instance: Instance,
        replace_existing_checks: bool,
    ) -> Result<(), AgentError> {
        let now = self.now();
        let mut state = self.state.write();
        if let Some(old_app) = state.agents.agent_ids.get(&instance.id).cloned() {
            if old_app != instance.app {
                let removal =
                    Removal::Deregistered(format!("registered again as {}", instance.app));
                self.remove(&mut state, &old_app, &instance.id, now, removal)?;
            }
        }
        let previous = state
            .listings
            .lookup(&instance.app, &instance.id)
            .map(|entry| entry.instance.clone());
        if let Some(stored) = &previous {
            for check in &mut instance.checks {
                if let Some(known) = stored.checks.iter().find(|known| known.id == check.id) {
                    check.status = known.status;
                    check.output = known.output.clone();
                    check.critical_since = known.critical_since;
                }
            }
            if !replace_existing_checks {
                for known in &stored.checks {
                    if !instance.checks.iter().any(|check| check.id == known.id) {
                        instance.checks.push(known.clone());
                    }
                }
            }
        }
        for check in &mut instance.checks {
            if check.status == Health::Critical && check.critical_since.is_none() {
                check.critical_since = Some(now);
            }
        }
        instance.registration = Registration::Agent;
        instance.overridden_status = state
            .leases
            .overridden(&instance.id)
            .unwrap_or(Status::Unknown);
        instance.status = agent_status(&state.leases, &instance);
        instance.lease.registration = now;
        instance.lease.last_renewal = now;
        instance.lease.service_up = service_up_since(previous.as_deref(), instance.status, now);
        instance.last_dirty = now;
        instance.last_updated = now;
        instance.action = Action::Added;
        let ttl_checks: Vec<(String, Duration, Health)> = instance
            .checks
            .iter()
            .filter_map(|check| match check.probe {
                Probe::Ttl { ttl } => Some((check.id.clone(), ttl, check.status)),
                _ => None,
            })
            .collect();
        self.put(&mut state, instance, now)?;
        for (id, ttl, status) in ttl_checks {
            // A TTL check starts its timer once it is not critical; a critical one needs none.
            if status != Health::Critical && !state.agents.ttl_deadlines.contains_key(&id) {
                state.agents.restart_ttl(&id, ttl, now);
            }
        }
        Ok(())
    }

    /// Registers again, through `register_agent`, every agent instance the store kept, and
    /// imports again every imported copy it kept (call it once at start, before any listener
    /// serves); returns how many came back.
    ///
    /// A restored instance is what the agent last answered for: its checks keep their last
    /// status, output and `critical_since` (so `DeregisterCriticalServiceAfter` keeps
    /// counting from before the restart), and its status follows them again (a server-side
    /// override set through Eureka was in memory only and is gone). A TTL check that is not
    /// critical gets a full TTL from now, as a Consul agent gives its restored TTL checks;
    /// HTTP and TCP checks are probed again by the health runner at once. Each instance
    /// takes a new change index, so no view's index goes backwards and every watcher wakes,
    /// and is written back with it as any registration is (one synced commit each).
    pub fn restore(&self) -> Result<usize, AgentError> {
        let mut restored = 0;
        for instance in self.store.load().map_err(RegistryError::from)? {
            if instance.registration == Registration::Imported {
                // A copy of a legacy registry's instance: back as it was, until the sync's
                // first read confirms or (after its grace period) removes it.
                let owner = instance
                    .metadata
                    .get(crate::model::OWNER_METADATA_KEY)
                    .cloned()
                    .unwrap_or_default();
                self.import(&owner, instance)?;
                restored += 1;
                continue;
            }
            if instance.registration != Registration::Agent {
                tracing::warn!(app = %instance.app, id = %instance.id,
                    "a stored registration not made through the agent is not restored");
                continue;
            }
            self.register_agent(instance, true)?;
            restored += 1;
        }
        Ok(restored)
    }

    pub fn deregister_agent(&self, id: &str) -> Result<(), AgentError> {
        let now = self.now();
        let mut state = self.state.write();
        let app = state.agents.app(id)?;
        state.leases.forget(id);
        let removal = Removal::Deregistered("deregistered".to_owned());
        self.remove(&mut state, &app, id, now, removal)?;
        Ok(())
    }

    /// Instances registered through the agent, in app and id order.
    /// The agent registrations this node keeps: with a shared store, a Consul agent lists
    /// the services registered through it, not every node's.
    pub fn agent_instances(&self) -> Vec<RegisteredInstance> {
        let state = self.state.read();
        state
            .listings
            .entries()
            .filter(|entry| entry.instance.registration == Registration::Agent)
            .filter(|entry| self.owned_here(&entry.instance))
            .map(|entry| entry.registered(&state.routes))
            .collect()
    }

    pub fn agent_instance(&self, id: &str) -> Option<RegisteredInstance> {
        let state = self.state.read();
        let app = state.agents.agent_ids.get(id)?;
        let entry = state.listings.lookup(app, id)?;
        Some(entry.registered(&state.routes))
    }
}

/// An override set through Eureka wins; otherwise the checks decide.
pub(super) fn agent_status(leases: &Leases, instance: &Instance) -> Status {
    leases
        .overridden(&instance.id)
        .unwrap_or_else(|| instance.status_from_checks())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Check;
    use crate::registry::checks::maintenance_check;

    fn ttl_check(id: &str) -> Check {
        Check {
            id: id.to_owned(),
            status: Health::Passing,
            probe: Probe::Ttl {
                ttl: Duration::from_secs(10),
            },
            ..maintenance_check(String::new(), None)
        }
    }

    #[test]
    fn a_check_left_out_of_a_new_record_loses_its_owner_and_timer() {
        let mut agents = Agents::default();
        let mut first = Instance::new("web", "web-1", "10.0.0.1", "10.0.0.1", 80);
        first.registration = Registration::Agent;
        first.checks = vec![ttl_check("a"), ttl_check("b")];
        agents.track(None, &first);
        agents.restart_ttl("a", Duration::from_secs(10), 0);
        agents.restart_ttl("b", Duration::from_secs(10), 0);
        let mut second = first.clone();
        second.checks.retain(|check| check.id == "b");
        agents.track(Some(&first), &second);
        assert!(agents.owner("a").is_err());
        assert_eq!(agents.expired_ttls(10_001), vec!["b".to_owned()]);
        assert_eq!(agents.expire_ttl("b", 10_000), None, "not yet run out");
        assert_eq!(
            agents.expire_ttl("b", 10_001),
            Some(("WEB".to_owned(), "web-1".to_owned()))
        );
        assert!(agents.expired_ttls(20_000).is_empty(), "the timer stopped");
        agents.forget(&second);
        assert!(agents.app("web-1").is_err());
        assert!(agents.owner("b").is_err());
    }
}
