//! Which status an instance publishes when the client's report, a server-side override and
//! the previous record disagree (Eureka spec §5.2, first matching rule wins).

use crate::model::Status;

/// `reported`: the status in the registration or the stored one on renewal;
/// `override_status`: a server-side override, if one is stored;
/// `previous`: the stored record's status (`None` for a new id);
/// `replication`: the write came from a peer server.
pub fn effective_status(
    reported: Status,
    override_status: Option<Status>,
    previous: Option<Status>,
    replication: bool,
) -> Status {
    if !matches!(reported, Status::Up | Status::OutOfService) {
        return reported;
    }
    if let Some(overridden) = override_status {
        return overridden;
    }
    if !replication {
        if let Some(previous @ (Status::Up | Status::OutOfService)) = previous {
            return previous;
        }
    }
    reported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_starting_and_unknown_reports_always_win() {
        for reported in [Status::Down, Status::Starting, Status::Unknown] {
            assert_eq!(
                effective_status(
                    reported,
                    Some(Status::OutOfService),
                    Some(Status::Up),
                    false
                ),
                reported
            );
        }
    }

    #[test]
    fn an_override_beats_an_up_report() {
        assert_eq!(
            effective_status(Status::Up, Some(Status::OutOfService), None, false),
            Status::OutOfService
        );
    }

    #[test]
    fn a_previous_up_or_out_of_service_sticks_unless_replicated() {
        assert_eq!(
            effective_status(Status::Up, None, Some(Status::OutOfService), false),
            Status::OutOfService
        );
        assert_eq!(
            effective_status(Status::Up, None, Some(Status::OutOfService), true),
            Status::Up
        );
        assert_eq!(
            effective_status(Status::Up, None, Some(Status::Down), false),
            Status::Up
        );
    }
}
