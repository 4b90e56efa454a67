//! Eureka's words for the model's values: instance statuses, action types and data-centre
//! kinds (with the Java classes clients bind them to), and the names of the optional
//! instance fields both encoders write. The model keeps none of these spellings; the
//! decoder parses with these tables and the encoders write them.

use ferry_core::model::{Action, DataCenter, Instance, Status};

/// A status as Eureka spells it (`InstanceInfo.InstanceStatus`).
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Down => "DOWN",
        Status::OutOfService => "OUT_OF_SERVICE",
        Status::Starting => "STARTING",
        Status::Unknown => "UNKNOWN",
        Status::Up => "UP",
    }
}

/// Parses a status name case-insensitively; `None` for anything that is not one.
pub fn parse_status(text: &str) -> Option<Status> {
    Status::ALL
        .into_iter()
        .find(|status| status_name(*status).eq_ignore_ascii_case(text.trim()))
}

/// An action as Eureka spells it (`actionType`).
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Added => "ADDED",
        Action::Modified => "MODIFIED",
        Action::Deleted => "DELETED",
    }
}

/// Parses an action name case-insensitively; `None` for anything that is not one.
pub fn parse_action(text: &str) -> Option<Action> {
    [Action::Added, Action::Modified, Action::Deleted]
        .into_iter()
        .find(|action| action_name(*action).eq_ignore_ascii_case(text.trim()))
}

/// Eureka's data-centre kinds (`DataCenterInfo.Name`). The model keeps the name as the
/// registrant gave it, and `MyOwn` (the owner's own data centre) as no name at all, which
/// is also what every registration made through another view has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataCenterKind {
    MyOwn,
    Netflix,
    Amazon,
}

impl DataCenterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DataCenterKind::MyOwn => "MyOwn",
            DataCenterKind::Netflix => "Netflix",
            DataCenterKind::Amazon => "Amazon",
        }
    }

    /// Data-centre names are matched exactly, as Netflix's enum does.
    pub fn parse(text: &str) -> Option<DataCenterKind> {
        match text.trim() {
            "MyOwn" => Some(DataCenterKind::MyOwn),
            "Netflix" => Some(DataCenterKind::Netflix),
            "Amazon" => Some(DataCenterKind::Amazon),
            _ => None,
        }
    }

    /// The kind of a data centre in the model. A name Eureka has no kind for (never one
    /// this view decoded) is shown as `MyOwn`, since clients refuse unknown names.
    pub fn of(center: &DataCenter) -> DataCenterKind {
        center
            .name
            .as_deref()
            .and_then(DataCenterKind::parse)
            .unwrap_or(DataCenterKind::MyOwn)
    }

    /// The data centre's name as the model keeps it: none for `MyOwn`.
    pub fn model_name(self) -> Option<String> {
        match self {
            DataCenterKind::MyOwn => None,
            named => Some(named.as_str().to_owned()),
        }
    }

    /// The Java class of `dataCenterInfo` (`@class` in JSON, `class` in XML).
    pub fn class(self) -> &'static str {
        match self {
            DataCenterKind::Amazon => "com.netflix.appinfo.AmazonInfo",
            DataCenterKind::MyOwn | DataCenterKind::Netflix => {
                "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"
            }
        }
    }

    /// Only Amazon's data-centre info carries metadata (instance id, zone...).
    pub fn has_metadata(self) -> bool {
        self == DataCenterKind::Amazon
    }
}

/// The optional text fields of an instance by their name (the same in JSON and XML), in
/// the order both documents list them, between `metadata` and
/// `isCoordinatingDiscoveryServer`; an absent one is left out of the document.
pub(crate) fn optional_fields(instance: &Instance) -> [(&'static str, &Option<String>); 7] {
    [
        ("appGroupName", &instance.app_group),
        ("homePageUrl", &instance.links.home_page),
        ("statusPageUrl", &instance.links.status_page),
        ("healthCheckUrl", &instance.links.health_check),
        ("secureHealthCheckUrl", &instance.links.secure_health_check),
        ("vipAddress", &instance.virtual_address),
        ("secureVipAddress", &instance.secure_virtual_address),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_what_they_name() {
        for status in Status::ALL {
            assert_eq!(parse_status(status_name(status)), Some(status));
            assert_eq!(
                parse_status(&status_name(status).to_ascii_lowercase()),
                Some(status)
            );
        }
        for action in [Action::Added, Action::Modified, Action::Deleted] {
            assert_eq!(parse_action(action_name(action)), Some(action));
        }
        assert_eq!(parse_status("SIDEWAYS"), None);
        for kind in [
            DataCenterKind::MyOwn,
            DataCenterKind::Netflix,
            DataCenterKind::Amazon,
        ] {
            let center = DataCenter {
                name: kind.model_name(),
                metadata: Default::default(),
            };
            assert_eq!(DataCenterKind::of(&center), kind);
        }
        assert_eq!(
            DataCenterKind::of(&DataCenter::default()),
            DataCenterKind::MyOwn
        );
    }
}
