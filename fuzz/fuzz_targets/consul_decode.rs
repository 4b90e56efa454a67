//! One body through every Consul request decoder (service registration, check, session),
//! the decoder of a legacy Consul's health row (the Consul sync's import) and as a Go
//! duration: none panics, and what they accept holds: a registration has a name, an ID and
//! a usable address; a health row a name, an ID, an address and a port in 1..=65535; a session TTL is 0 or within [10s, 24h]; a duration
//! Ferry formats parses back to itself (to the millisecond Consul prints).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

use ferry_consul::{decode, duration};

const NODE_ADDRESS: &str = "10.0.0.1";

fuzz_target!(|body: &[u8]| {
    if let Ok(value) = decode::parse_body(body) {
        if let Ok(instance) = decode::service_registration(&value, NODE_ADDRESS) {
            assert!(!instance.app.trim().is_empty(), "a service without a name");
            assert!(!instance.id.is_empty(), "a service without an ID");
            assert!(!instance.ip_addr.is_empty(), "a service without an address");
            assert!(!matches!(
                instance.ip_addr.trim(),
                "0.0.0.0" | "::" | "[::]"
            ));
        }
        if let Ok(instance) = decode::health_entry(&value) {
            assert!(!instance.app.trim().is_empty(), "a row without a name");
            assert!(!instance.id.is_empty(), "a row without an ID");
            assert!(!instance.ip_addr.is_empty(), "a row without an address");
            assert!((1..=65535).contains(&instance.port.number));
        }
        if let Some(object) = value.as_object() {
            let _ = decode::check(object, "check", "check");
        }
    }
    if let Ok(request) = decode::session_request(body) {
        if let Some(ttl) = request.ttl {
            assert!((Duration::from_secs(10)..=Duration::from_secs(86400)).contains(&ttl));
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        if let Some(parsed) = duration::parse(text) {
            let printed = duration::format(parsed);
            let again = duration::parse(&printed).unwrap_or_else(|| {
                panic!("{parsed:?} prints as {printed:?}, which does not parse")
            });
            let error = again.abs_diff(parsed).as_secs_f64();
            assert!(
                error <= 1e-3 + parsed.as_secs_f64() * 1e-9,
                "{parsed:?} prints as {printed:?}, which reads back as {again:?}"
            );
        }
    }
});
