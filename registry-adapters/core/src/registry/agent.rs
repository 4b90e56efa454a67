//! Registrations made through a node agent (the Consul view) and their health checks.
//!
//! Such an instance holds no Eureka lease: it stays until deregistered or until one of its
//! checks has been critical for longer than the check allows. Its published status follows
//! its checks (a server-side override still wins), so a failing check shows as DOWN in
//! every view and appears in the Eureka delta as MODIFIED.

use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::model::{Check, Health, Probe};

/// Outputs longer than this are cut, as Consul does.
const MAX_OUTPUT: usize = 4096;

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
        if let Some(old_app) = state.agent_ids.get(&instance.id).cloned() {
            if old_app != instance.app {
                self.remove(&mut state, &old_app, &instance.id, now)?;
            }
        }
        let previous =
            lookup(&state, &instance.app, &instance.id).map(|entry| entry.instance.clone());
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
            .overrides
            .get(&instance.id)
            .copied()
            .unwrap_or(Status::Unknown);
        instance.status = agent_status(&state, &instance);
        instance.lease.registration = now;
        instance.lease.last_renewal = now;
        instance.lease.service_up = previous
            .as_ref()
            .map(|stored| stored.lease.service_up)
            .filter(|&up| up > 0)
            .unwrap_or(if instance.status == Status::Up {
                now
            } else {
                0
            });
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
            if status != Health::Critical && !state.ttl_deadlines.contains_key(&id) {
                state
                    .ttl_deadlines
                    .insert(id, now + ttl.as_millis() as Millis);
            }
        }
        Ok(())
    }

    pub fn deregister_agent(&self, id: &str) -> Result<(), AgentError> {
        let now = self.now();
        let mut state = self.state.write();
        let app = agent_app(&state, id)?;
        state.overrides.remove(id);
        self.remove(&mut state, &app, id, now)?;
        Ok(())
    }

    /// Sets a check's status and output: a TTL heartbeat when `ttl_only` (and then it also
    /// restarts the TTL timer), a probe result otherwise. Writes only when something changed.
    pub fn update_check(
        &self,
        check_id: &str,
        update: CheckUpdate,
        ttl_only: bool,
    ) -> Result<(), AgentError> {
        let now = self.now();
        let mut state = self.state.write();
        let (app, id) = check_owner(&state, check_id)?;
        let entry = lookup(&state, &app, &id)
            .ok_or_else(|| AgentError::UnknownCheck(check_id.to_owned()))?;
        let check = entry
            .instance
            .checks
            .iter()
            .find(|check| check.id == check_id)
            .ok_or_else(|| AgentError::UnknownCheck(check_id.to_owned()))?;
        if let Probe::Ttl { ttl } = check.probe {
            state
                .ttl_deadlines
                .insert(check_id.to_owned(), now + ttl.as_millis() as Millis);
        } else if ttl_only {
            return Err(AgentError::NotTtl(check_id.to_owned()));
        }
        let mut output = update.output;
        truncate(&mut output, MAX_OUTPUT);
        let entry = lookup(&state, &app, &id)
            .ok_or_else(|| AgentError::UnknownCheck(check_id.to_owned()))?;
        let check = entry
            .instance
            .checks
            .iter()
            .find(|check| check.id == check_id);
        if check.is_some_and(|check| check.status == update.status && check.output == output) {
            // Not a change: only the TTL timer moved.
            return Ok(());
        }
        let mut changed = entry.current();
        if let Some(check) = changed.checks.iter_mut().find(|check| check.id == check_id) {
            set_health(check, update.status, output, now);
        }
        self.republish(&mut state, changed, now)?;
        Ok(())
    }

    /// Puts an agent instance into maintenance (a critical check of its own) or out of it.
    pub fn set_maintenance(
        &self,
        id: &str,
        enable: bool,
        reason: Option<String>,
    ) -> Result<(), AgentError> {
        let now = self.now();
        let mut state = self.state.write();
        let app = agent_app(&state, id)?;
        let entry =
            lookup(&state, &app, id).ok_or_else(|| AgentError::UnknownService(id.to_owned()))?;
        let check_id = format!("_service_maintenance:{id}");
        let present = entry
            .instance
            .checks
            .iter()
            .any(|check| check.id == check_id);
        if present == enable {
            return Ok(());
        }
        let mut changed = entry.current();
        if enable {
            changed.checks.push(Check {
                id: check_id,
                name: "Service Maintenance Mode".to_owned(),
                status: Health::Critical,
                notes: reason.unwrap_or_else(|| {
                    "Maintenance mode is enabled for this service, but no reason was provided. \
                     This is a default message."
                        .to_owned()
                }),
                output: String::new(),
                probe: Probe::Maintenance,
                deregister_critical_after: None,
                successes_before_passing: 1,
                failures_before_critical: 1,
                create_index: 0,
                modify_index: 0,
                critical_since: None,
            });
        } else {
            changed.checks.retain(|check| check.id != check_id);
        }
        self.republish(&mut state, changed, now)?;
        Ok(())
    }

    /// Adds (or replaces) one check of an agent instance.
    pub fn add_agent_check(&self, service_id: &str, mut check: Check) -> Result<(), AgentError> {
        let now = self.now();
        let mut state = self.state.write();
        let app = agent_app(&state, service_id)?;
        let entry = lookup(&state, &app, service_id)
            .ok_or_else(|| AgentError::UnknownService(service_id.to_owned()))?;
        let mut changed = entry.current();
        if check.status == Health::Critical {
            check.critical_since = Some(now);
        }
        changed.checks.retain(|known| known.id != check.id);
        changed.checks.push(check);
        self.republish(&mut state, changed, now)?;
        Ok(())
    }

    pub fn remove_agent_check(&self, check_id: &str) -> Result<(), AgentError> {
        let now = self.now();
        let mut state = self.state.write();
        let (app, id) = check_owner(&state, check_id)?;
        let entry = lookup(&state, &app, &id)
            .ok_or_else(|| AgentError::UnknownCheck(check_id.to_owned()))?;
        let mut changed = entry.current();
        changed.checks.retain(|check| check.id != check_id);
        self.republish(&mut state, changed, now)?;
        Ok(())
    }

    /// Turns TTL checks whose timer ran out critical; returns how many changed.
    pub fn expire_ttls(&self) -> Result<usize, AgentError> {
        let now = self.now();
        let expired: Vec<String> = {
            let state = self.state.read();
            state
                .ttl_deadlines
                .iter()
                .filter(|(_, deadline)| **deadline < now)
                .map(|(id, _)| id.clone())
                .collect()
        };
        let mut changed = 0;
        for check_id in expired {
            let mut state = self.state.write();
            if state
                .ttl_deadlines
                .get(&check_id)
                .is_none_or(|deadline| *deadline >= now)
            {
                continue;
            }
            state.ttl_deadlines.remove(&check_id);
            let Some((app, id)) = state.check_owners.get(&check_id).cloned() else {
                continue;
            };
            let Some(entry) = lookup(&state, &app, &id) else {
                continue;
            };
            let mut instance = entry.current();
            let Some(check) = instance
                .checks
                .iter_mut()
                .find(|check| check.id == check_id)
            else {
                continue;
            };
            if check.status == Health::Critical && check.output == "TTL expired" {
                continue;
            }
            set_health(check, Health::Critical, "TTL expired".to_owned(), now);
            self.republish(&mut state, instance, now)?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Deregisters agent instances with a check critical for longer than its
    /// `deregister_critical_after` (never less than `minimum`); returns how many went.
    pub fn reap_critical(&self, minimum: Duration) -> Result<usize, AgentError> {
        let now = self.now();
        let doomed: Vec<(String, String)> = {
            let state = self.state.read();
            state
                .apps
                .values()
                .flat_map(|instances| instances.values())
                .filter(|entry| entry.instance.registration == Registration::Agent)
                .filter(|entry| {
                    entry.instance.checks.iter().any(|check| {
                        match (check.deregister_critical_after, check.critical_since) {
                            (Some(after), Some(since)) => {
                                now - since >= after.max(minimum).as_millis() as Millis
                            }
                            _ => false,
                        }
                    })
                })
                .map(|entry| (entry.instance.app.clone(), entry.instance.id.clone()))
                .collect()
        };
        let mut reaped = 0;
        for (app, id) in doomed {
            let mut state = self.state.write();
            if lookup(&state, &app, &id).is_some() {
                tracing::info!(%app, %id, "deregistering an instance critical for too long");
                state.overrides.remove(&id);
                self.remove(&mut state, &app, &id, now)?;
                reaped += 1;
            }
        }
        Ok(reaped)
    }

    /// Instances registered through the agent, in app and id order.
    pub fn agent_instances(&self) -> Vec<RegisteredInstance> {
        let state = self.state.read();
        state
            .apps
            .values()
            .flat_map(|instances| instances.values())
            .filter(|entry| entry.instance.registration == Registration::Agent)
            .map(|entry| entry.registered(&state.routes))
            .collect()
    }

    pub fn agent_instance(&self, id: &str) -> Option<RegisteredInstance> {
        let state = self.state.read();
        let app = state.agent_ids.get(id)?;
        lookup(&state, app, id).map(|entry| entry.registered(&state.routes))
    }

    /// Every app with the union of its instances' tags, at the catalog's result index.
    pub fn catalog(&self) -> (u64, Vec<(String, BTreeSet<String>)>) {
        let state = self.state.read();
        let apps = state
            .apps
            .iter()
            .filter(|(_, instances)| !instances.is_empty())
            .map(|(app, instances)| {
                let tags = instances
                    .values()
                    .flat_map(|entry| entry.instance.tags.iter().cloned())
                    .collect();
                (app.clone(), tags)
            })
            .collect();
        (state.catalog_index.max(1), apps)
    }

    /// The result index of one app's reads; for an app never seen, the catalog's.
    pub fn app_result_index(&self, app: &str) -> u64 {
        let state = self.state.read();
        app_result_index(&state, app)
    }

    /// One app's instances (possibly none) with the result index of that read.
    pub fn app_with_index(&self, app: &str) -> (u64, Vec<RegisteredInstance>) {
        let state = self.state.read();
        let index = app_result_index(&state, app);
        let instances = state
            .apps
            .get(app)
            .map(|instances| {
                instances
                    .values()
                    .map(|entry| entry.registered(&state.routes))
                    .collect()
            })
            .unwrap_or_default();
        (index, instances)
    }

    /// Every instance with the index of the last change to any instance or check.
    pub fn all_with_index(&self) -> (u64, Vec<RegisteredInstance>) {
        let state = self.state.read();
        let instances = state
            .apps
            .values()
            .flat_map(|instances| instances.values())
            .map(|entry| entry.registered(&state.routes))
            .collect();
        (state.health_index.max(1), instances)
    }

    pub fn health_result_index(&self) -> u64 {
        self.state.read().health_index.max(1)
    }

    /// One check by id, through the check-owner index (no scan of the registry).
    pub fn check(&self, check_id: &str) -> Option<Check> {
        let state = self.state.read();
        let (app, id) = check_owner(&state, check_id).ok()?;
        lookup(&state, &app, &id)?
            .instance
            .checks
            .iter()
            .find(|check| check.id == check_id)
            .cloned()
    }

    /// The checks Ferry has to probe itself (HTTP and TCP), with their instance.
    pub fn probed_checks(&self) -> Vec<(String, Check)> {
        let state = self.state.read();
        state
            .apps
            .values()
            .flat_map(|instances| instances.values())
            .flat_map(|entry| {
                entry
                    .instance
                    .checks
                    .iter()
                    .filter(|check| matches!(check.probe, Probe::Http { .. } | Probe::Tcp { .. }))
                    .map(|check| (entry.instance.id.clone(), check.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Re-publishes an agent instance whose checks changed, with its status recomputed.
    fn republish(
        &self,
        state: &mut State,
        mut instance: Instance,
        now: Millis,
    ) -> Result<(), RegistryError> {
        if instance.registration == Registration::Agent {
            let status = agent_status(state, &instance);
            if status == Status::Up && instance.lease.service_up == 0 {
                instance.lease.service_up = now;
            }
            instance.status = status;
        }
        instance.action = Action::Modified;
        instance.last_updated = now;
        self.put(state, instance, now)
    }
}

/// The (app, instance id) a check belongs to.
fn check_owner(state: &State, check_id: &str) -> Result<(String, String), AgentError> {
    state
        .check_owners
        .get(check_id)
        .cloned()
        .ok_or_else(|| AgentError::UnknownCheck(check_id.to_owned()))
}

/// The app of an agent-registered instance id.
fn agent_app(state: &State, id: &str) -> Result<String, AgentError> {
    state
        .agent_ids
        .get(id)
        .cloned()
        .ok_or_else(|| AgentError::UnknownService(id.to_owned()))
}

/// An override set through Eureka wins; otherwise the checks decide.
fn agent_status(state: &State, instance: &Instance) -> Status {
    state
        .overrides
        .get(&instance.id)
        .copied()
        .unwrap_or_else(|| instance.status_from_checks())
}

fn set_health(check: &mut Check, status: Health, output: String, now: Millis) {
    if status == Health::Critical {
        check.critical_since.get_or_insert(now);
    } else {
        check.critical_since = None;
    }
    check.status = status;
    check.output = output;
}

fn truncate(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}
