//! A `.properties` file: parsing and every rendered view never panic, stay within
//! `limits`, and the `.yml` view reads back as the same properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(documents) = ferry_config_server::properties::parse(bytes) {
        ferry_fuzz::config_pipeline(documents);
    }
});
