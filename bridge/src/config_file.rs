//! `--config FILE`: the same settings as the command line, in TOML, plus per-service proxy
//! settings. The file fills in what the command line and the environment leave unset:
//! its settings are turned into arguments placed before the real ones (clap lets a later
//! occurrence win), and a setting whose environment variable is set is left out, so the
//! order of precedence is command line, environment, file, defaults.
//!
//! ```toml
//! eureka-listen = "0.0.0.0:8761"
//! outbound-ports = "15001-15100"
//!
//! [services.orders]
//! mode = "mesh"            # pinned: put in the mesh at every start
//! request-timeout = 2.5    # seconds
//! connect-timeout = 0.5
//! balancer = "round-robin"
//! max-attempts = 2
//! legacy-via-proxy = true  # a synced legacy registry shows it at the proxy while in the mesh
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::CommandFactory;
use ferry_proxy::balance::Strategy;
use ferry_proxy::cutover::Mode;
use ferry_proxy::mesh::ServiceOverrides;
use serde::Deserialize;

use crate::cli::{Balancer, Cli};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ServiceSection {
    mode: Option<String>,
    request_timeout: Option<f64>,
    connect_timeout: Option<f64>,
    balancer: Option<String>,
    max_attempts: Option<u32>,
    legacy_via_proxy: Option<bool>,
}

/// The command line with the file's settings merged in, and the per-service sections.
pub struct Loaded {
    pub arguments: Vec<OsString>,
    pub services: BTreeMap<String, ServiceOverrides>,
}

/// Reads the file named by `--config` (or `FERRY_CONFIG`) in `arguments`, if any.
pub fn load(arguments: Vec<OsString>) -> anyhow::Result<Loaded> {
    let path = config_path(&arguments);
    let Some(path) = path else {
        return Ok(Loaded {
            arguments,
            services: BTreeMap::new(),
        });
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let services = match table.remove("services") {
        None => BTreeMap::new(),
        Some(toml::Value::Table(services)) => services
            .into_iter()
            .map(|(name, section)| {
                let section: ServiceSection = section
                    .try_into()
                    .with_context(|| format!("[services.{name}] in {}", path.display()))?;
                Ok((name.to_ascii_uppercase(), overrides(&name, section)?))
            })
            .collect::<anyhow::Result<_>>()?,
        Some(_) => bail!(
            "`services` in {} must be a table of services",
            path.display()
        ),
    };
    let command = Cli::command();
    let mut from_file: Vec<OsString> = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let argument = command
            .get_arguments()
            .find(|argument| argument.get_long() == Some(flag.as_str()))
            .with_context(|| format!("`{key}` in {} is not a ferry setting", path.display()))?;
        if argument
            .get_env()
            .is_some_and(|variable| std::env::var_os(variable).is_some())
        {
            continue;
        }
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            other => bail!(
                "`{key}` in {} must be a string, number or boolean, not {other}",
                path.display()
            ),
        };
        from_file.push(format!("--{flag}").into());
        from_file.push(text.into());
    }
    let mut merged = Vec::with_capacity(arguments.len() + from_file.len());
    let mut real = arguments.into_iter();
    merged.extend(real.next());
    merged.extend(from_file);
    merged.extend(real);
    Ok(Loaded {
        arguments: merged,
        services,
    })
}

fn config_path(arguments: &[OsString]) -> Option<std::path::PathBuf> {
    let mut iter = arguments.iter().skip(1);
    while let Some(argument) = iter.next() {
        let text = argument.to_string_lossy();
        if text == "--config" {
            return iter.next().map(|path| Path::new(path).to_path_buf());
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(Path::new(path).to_path_buf());
        }
        if text == "ctl" {
            return None;
        }
    }
    std::env::var_os("FERRY_CONFIG").map(Into::into)
}

fn overrides(name: &str, section: ServiceSection) -> anyhow::Result<ServiceOverrides> {
    let seconds = |value: Option<f64>, what: &str| -> anyhow::Result<Option<Duration>> {
        value
            .map(|seconds| {
                Duration::try_from_secs_f64(seconds).with_context(|| {
                    format!("[services.{name}] {what} must be a non-negative number of seconds")
                })
            })
            .transpose()
    };
    Ok(ServiceOverrides {
        pinned: section
            .mode
            .map(|mode| {
                Mode::parse(&mode)
                    .with_context(|| format!("[services.{name}] mode must be mesh or legacy"))
            })
            .transpose()?,
        request_timeout: seconds(section.request_timeout, "request-timeout")?,
        connect_timeout: seconds(section.connect_timeout, "connect-timeout")?,
        strategy: section
            .balancer
            .map(|balancer| match Balancer::parse(&balancer) {
                Some(known) => Ok(Strategy::from(known)),
                None => bail!(
                    "[services.{name}] balancer `{balancer}` is neither peak-ewma nor round-robin"
                ),
            })
            .transpose()?,
        max_attempts: section.max_attempts.map(|attempts| attempts.max(1)),
        legacy_via_proxy: section.legacy_via_proxy,
    })
}
