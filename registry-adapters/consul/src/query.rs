//! Query-string rules shared by every Consul endpoint (spec §1, §2): presence flags,
//! Consul's boolean `passing`, blocking `index` and `wait`.

use std::time::Duration;

use super::duration;
use super::error::ConsulError;

/// The query pairs of one request, in order, percent-decoded.
#[derive(Clone, Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A presence flag: its value is ignored (`recurse=false` still recurses).
    pub fn flag(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A Consul boolean: absent false, empty true, else true/false/1/0/t/f.
    pub fn boolean(&self, name: &str) -> Result<bool, ConsulError> {
        match self.get(name) {
            None => Ok(false),
            Some(value) => parse_bool(value)
                .ok_or_else(|| ConsulError::BadRequest(format!("Invalid value for ?{name}"))),
        }
    }

    pub fn number(&self, name: &str) -> Result<Option<u64>, ConsulError> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => value.trim().parse().map(Some).map_err(|_| {
                ConsulError::BadRequest(format!("Invalid value for ?{name}: {value:?}"))
            }),
        }
    }

    /// `index` and `wait` of a blocking read.
    pub fn blocking(&self) -> Result<Blocking, ConsulError> {
        let index = match self.get("index") {
            None | Some("") => 0,
            Some(value) => value
                .trim()
                .parse()
                .map_err(|_| ConsulError::BadRequest("Invalid index".into()))?,
        };
        let wait = match self.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(value) => duration::parse(value)
                .ok_or_else(|| ConsulError::BadRequest("Invalid wait time".into()))?
                .min(MAX_WAIT),
        };
        Ok(Blocking { index, wait })
    }
}

pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "t" => Some(true),
        "false" | "0" | "f" => Some(false),
        _ => None,
    }
}

pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug)]
pub struct Blocking {
    pub index: u64,
    pub wait: Duration,
}
