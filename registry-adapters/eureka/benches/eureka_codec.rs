//! Encoding cost of the Eureka documents: what one cache miss of a full fetch costs with
//! 10,000 instances, in each format, and what decoding one registration costs.
//! Run with `cargo bench -p ferry-eureka --bench eureka_codec`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferry_core::{Instance, Registry};
use ferry_eureka::decode::{self, Origin};
use ferry_eureka::hashcode::{apps_hashcode, Document};
use ferry_eureka::{json, xml};

fn registry_with(count: usize) -> Arc<Registry> {
    let registry = Arc::new(Registry::default());
    for n in 0..count {
        let app = format!("SERVICE-{:04}", n % 500);
        let ip = format!("10.0.{}.{}", n / 256, n % 256);
        let mut instance = Instance::new(&app, &format!("{ip}:{app}:8080"), &ip, &ip, 8080);
        instance
            .metadata
            .insert("management.port".into(), "8080".into());
        instance.links.health_check = Some(format!("http://{ip}:8080/actuator/health"));
        instance.virtual_address = Some(app.to_lowercase());
        registry.register(instance, false).expect("memory store");
    }
    registry
}

fn full_registry(c: &mut Criterion) {
    let registry = registry_with(10_000);
    let listing = registry.list_all();
    let document = Document {
        versions_delta: "1",
        hashcode: apps_hashcode(&listing.counts),
        apps: &listing.apps,
    };
    let mut group = c.benchmark_group("full registry, 10k instances");
    group.sample_size(20);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("list_all", |b| b.iter(|| black_box(registry.list_all())));
    group.bench_function("encode json", |b| {
        b.iter(|| black_box(json::applications(&document)))
    });
    group.bench_function("encode xml", |b| {
        b.iter(|| black_box(xml::applications(&document)))
    });
    group.finish();
}

fn registration(c: &mut Criterion) {
    let body = br#"{"instance":{"instanceId":"10.0.0.1:orders:8080","hostName":"10.0.0.1","app":"ORDERS",
        "ipAddr":"10.0.0.1","status":"UP","overriddenStatus":"UNKNOWN","port":{"$":8080,"@enabled":"true"},
        "securePort":{"$":443,"@enabled":"false"},"countryId":1,
        "dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},
        "leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":90},"metadata":{"management.port":"8080"},
        "vipAddress":"orders","secureVipAddress":"orders","lastDirtyTimestamp":"1700000000000"}}"#;
    c.bench_function("decode a JSON registration", |b| {
        b.iter(|| {
            let tree: serde_json::Value = serde_json::from_slice(black_box(body)).expect("valid");
            black_box(decode::instance_document(&tree, Origin::Registration, 0).expect("valid"))
        })
    });
}

criterion_group!(benches, full_registry, registration);
criterion_main!(benches);
