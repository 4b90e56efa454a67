//! An XML registration body: `xml::parse` and decoding never panic, a refused body leaves
//! the registry unchanged, an accepted one is stored and reads back through both views.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    ferry_fuzz::eureka_registration(body, ferry_eureka::Format::Xml);
});
