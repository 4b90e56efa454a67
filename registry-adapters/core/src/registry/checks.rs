//! The health checks of agent registrations: check results and TTL heartbeats,
//! maintenance mode, adding and removing checks, TTL expiry and the reaper for
//! `DeregisterCriticalServiceAfter`, and the check reads the health runner needs.
//!
//! Every change to a check re-publishes its instance with the status recomputed from its
//! checks, so a check result is a change like any other in every view.

use std::time::Duration;

use super::agent::{agent_status, AgentError, CheckUpdate};
use super::events::Removal;
use super::listings::Entry;
use super::{Registry, RegistryError, State};
use crate::model::{Action, Check, Health, Instance, Millis, Probe, Registration, Status};

/// Outputs longer than this are cut, as Consul does.
const MAX_OUTPUT: usize = 4096;

impl Registry {
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
        let (_, check) = owned_check(&state, check_id)?;
        if let Probe::Ttl { ttl } = check.probe {
            state.agents.restart_ttl(check_id, ttl, now);
        } else if ttl_only {
            return Err(AgentError::NotTtl(check_id.to_owned()));
        }
        let mut output = update.output;
        truncate(&mut output, MAX_OUTPUT);
        // Looked up again: the check is borrowed from the state the timer restart changed.
        let (entry, check) = owned_check(&state, check_id)?;
        if check.status == update.status && check.output == output {
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
        let entry = agent_entry(&state, id)?;
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
            changed.checks.push(maintenance_check(check_id, reason));
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
        let entry = agent_entry(&state, service_id)?;
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
        let (app, id) = state.agents.owner(check_id)?;
        let entry = state
            .listings
            .lookup(&app, &id)
            .ok_or_else(|| AgentError::UnknownCheck(check_id.to_owned()))?;
        let mut changed = entry.current();
        changed.checks.retain(|check| check.id != check_id);
        self.republish(&mut state, changed, now)?;
        Ok(())
    }

    /// Turns TTL checks whose timer ran out critical; returns how many changed.
    pub fn expire_ttls(&self) -> Result<usize, AgentError> {
        let now = self.now();
        let expired = self.state.read().agents.expired_ttls(now);
        let mut changed = 0;
        for check_id in expired {
            let mut state = self.state.write();
            let Some((app, id)) = state.agents.expire_ttl(&check_id, now) else {
                continue;
            };
            let Some(entry) = state.listings.lookup(&app, &id) else {
                continue;
            };
            if !self.owned_here(&entry.instance) {
                continue;
            }
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
                .listings
                .entries()
                .filter(|entry| entry.instance.registration == Registration::Agent)
                .filter(|entry| self.owned_here(&entry.instance))
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
            if state.listings.lookup(&app, &id).is_some() {
                tracing::info!(%app, %id, "deregistering an instance critical for too long");
                state.leases.forget(&id);
                let removal = Removal::Evicted(
                    "a check critical for longer than its deregister-critical-after".to_owned(),
                );
                self.remove(&mut state, &app, &id, now, removal)?;
                reaped += 1;
            }
        }
        Ok(reaped)
    }

    /// One check by id, through the check-owner index (no scan of the registry).
    pub fn check(&self, check_id: &str) -> Option<Check> {
        let state = self.state.read();
        let (_, check) = owned_check(&state, check_id).ok()?;
        Some(check.clone())
    }

    /// The checks Ferry has to probe itself (HTTP and TCP), with their instance.
    pub fn probed_checks(&self) -> Vec<(String, Check)> {
        let state = self.state.read();
        state
            .listings
            .entries()
            // Another node runs its own instances' probes (a shared store).
            .filter(|entry| self.owned_here(&entry.instance))
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
            let status = agent_status(&state.leases, &instance);
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

/// The critical check of its own that holds an instance in maintenance.
pub(super) fn maintenance_check(check_id: String, reason: Option<String>) -> Check {
    Check {
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
    }
}

/// An instance registered through the agent, by id.
fn agent_entry<'a>(state: &'a State, id: &str) -> Result<&'a Entry, AgentError> {
    let app = state.agents.app(id)?;
    let entry = state.listings.lookup(&app, id);
    entry.ok_or_else(|| AgentError::UnknownService(id.to_owned()))
}

/// The instance a check belongs to, and the check.
fn owned_check<'a>(state: &'a State, check_id: &str) -> Result<(&'a Entry, &'a Check), AgentError> {
    let unknown = || AgentError::UnknownCheck(check_id.to_owned());
    let (app, id) = state.agents.owner(check_id)?;
    let entry = state.listings.lookup(&app, &id).ok_or_else(unknown)?;
    let check = entry
        .instance
        .checks
        .iter()
        .find(|check| check.id == check_id)
        .ok_or_else(unknown)?;
    Ok((entry, check))
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
