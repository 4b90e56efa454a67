//! Trace headers: B3 (what Spring Cloud Sleuth sends) and W3C `traceparent` (Micrometer
//! Tracing). The proxy continues an incoming trace with a span of its own, or starts one,
//! and writes both formats so either kind of app downstream joins the same trace.

use http::{HeaderMap, HeaderValue};
use rand::Rng;

pub fn propagate(headers: &mut HeaderMap) {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let mut trace_id = None;
    let mut parent = None;
    let mut sampled = None;
    if let Some(traceparent) = text("traceparent") {
        let parts: Vec<&str> = traceparent.split('-').collect();
        if parts.len() == 4 && parts[1].len() == 32 && parts[2].len() == 16 {
            trace_id = Some(parts[1].to_ascii_lowercase());
            parent = Some(parts[2].to_ascii_lowercase());
            sampled = Some(parts[3].ends_with('1'));
        }
    }
    if trace_id.is_none() {
        if let Some(b3_trace) = text("x-b3-traceid").filter(|id| is_hex(id, &[16, 32])) {
            trace_id = Some(format!("{:0>32}", b3_trace.to_ascii_lowercase()));
            parent = text("x-b3-spanid").filter(|id| is_hex(id, &[16]));
            sampled = text("x-b3-sampled").map(|flag| flag == "1" || flag == "true");
        }
    }
    let trace_id = trace_id.unwrap_or_else(|| random_hex(16));
    let span_id = random_hex(8);
    let sampled = sampled.unwrap_or(true);
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(headers, "x-b3-traceid", &trace_id);
    set(headers, "x-b3-spanid", &span_id);
    match &parent {
        Some(parent) => set(headers, "x-b3-parentspanid", parent),
        None => {
            headers.remove("x-b3-parentspanid");
        }
    }
    set(headers, "x-b3-sampled", if sampled { "1" } else { "0" });
    headers.remove("b3");
    set(
        headers,
        "traceparent",
        &format!(
            "00-{trace_id}-{span_id}-{}",
            if sampled { "01" } else { "00" }
        ),
    );
}

fn is_hex(text: &str, lengths: &[usize]) -> bool {
    lengths.contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit())
}

fn random_hex(bytes: usize) -> String {
    // Span ids need to be unique, not unpredictable: a small fast generator per thread.
    thread_local! {
        static RANDOM: std::cell::RefCell<rand::rngs::SmallRng> =
            std::cell::RefCell::new(rand::SeedableRng::from_entropy());
    }
    RANDOM.with(|random| hex_from(&mut *random.borrow_mut(), bytes))
}

fn hex_from(random: &mut impl Rng, bytes: usize) -> String {
    match bytes {
        16 => format!("{:032x}", random.gen::<u128>()),
        _ => format!("{:016x}", random.gen::<u64>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers.get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn starts_a_trace_when_there_is_none() {
        let mut headers = HeaderMap::new();
        propagate(&mut headers);
        let trace = get(&headers, "x-b3-traceid").to_owned();
        assert_eq!(trace.len(), 32);
        assert!(get(&headers, "traceparent").starts_with(&format!("00-{trace}-")));
        assert!(headers.get("x-b3-parentspanid").is_none());
    }

    #[test]
    fn continues_a_b3_trace_with_a_new_span_and_writes_traceparent() {
        let mut headers = HeaderMap::new();
        headers.insert("x-b3-traceid", HeaderValue::from_static("463ac35c9f6413ad"));
        headers.insert("x-b3-spanid", HeaderValue::from_static("a2fb4a1d1a96d312"));
        headers.insert("x-b3-sampled", HeaderValue::from_static("1"));
        propagate(&mut headers);
        assert_eq!(
            get(&headers, "x-b3-traceid"),
            "0000000000000000463ac35c9f6413ad"
        );
        assert_eq!(get(&headers, "x-b3-parentspanid"), "a2fb4a1d1a96d312");
        assert_ne!(get(&headers, "x-b3-spanid"), "a2fb4a1d1a96d312");
        assert!(get(&headers, "traceparent").starts_with("00-0000000000000000463ac35c9f6413ad-"));
    }

    #[test]
    fn continues_a_w3c_trace() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        propagate(&mut headers);
        let traceparent = get(&headers, "traceparent");
        assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(
            traceparent.ends_with("-00"),
            "the sampling decision is kept"
        );
        assert_eq!(get(&headers, "x-b3-parentspanid"), "00f067aa0ba902b7");
    }
}
