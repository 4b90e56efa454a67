//! The `apps__hashcode` that clients compare against their own copy after applying a delta,
//! and the header fields every `applications` document carries.

use ferry_core::model::StatusCounts;
use ferry_core::registry::RegisteredInstance;

use super::spelling::status_name;

/// `NAME_count_` per status with a count, in byte order of the names: `DOWN_1_UP_5_`;
/// an empty scope gives the empty string.
pub fn apps_hashcode(counts: &StatusCounts) -> String {
    let mut named: Vec<(&str, usize)> = counts
        .nonzero()
        .map(|(status, count)| (status_name(status), count))
        .collect();
    named.sort_unstable();
    let mut hashcode = String::new();
    for (name, count) in named {
        hashcode.push_str(name);
        hashcode.push('_');
        hashcode.push_str(itoa::Buffer::new().format(count));
        hashcode.push('_');
    }
    hashcode
}

/// An `applications` document ready to encode in either format.
#[derive(Debug)]
pub struct Document<'a> {
    pub versions_delta: &'a str,
    pub hashcode: String,
    pub apps: &'a [(String, Vec<RegisteredInstance>)],
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::model::Status;

    #[test]
    fn lists_nonzero_counts_in_name_order() {
        let mut counts = StatusCounts::default();
        for status in [
            Status::Up,
            Status::Up,
            Status::OutOfService,
            Status::Down,
            Status::Up,
        ] {
            counts.add(status);
        }
        assert_eq!(apps_hashcode(&counts), "DOWN_1_OUT_OF_SERVICE_1_UP_3_");
        assert_eq!(apps_hashcode(&StatusCounts::default()), "");
    }
}
