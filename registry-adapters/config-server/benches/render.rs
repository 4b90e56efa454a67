//! How the alternative formats' cost grows with the size of a configuration: a list of
//! 4,000 and of 32,000 items, from two sources (the higher replacing the lower whole),
//! merged, placeholders resolved and written as `.properties` and `.json`. Linear rendering
//! takes about 8 times as long for the longer list; quadratic took about 64 times.
//!
//! Run with `cargo bench -p ferry-config-server --bench render`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ferry_config_server::render;
use ferry_config_server::{Environment, PropertySource};
use serde_json::{json, Value};

fn environment(items: usize) -> Environment {
    let list = |prefix: &str| -> Vec<(String, Value)> {
        (0..items)
            .map(|position| {
                (
                    format!("orders.list[{position}]"),
                    json!(format!("{prefix}-${{host:db}}-{position}")),
                )
            })
            .collect()
    };
    Environment {
        name: "orders".to_owned(),
        profiles: vec!["default".to_owned()],
        label: None,
        version: None,
        state: None,
        sources: vec![
            PropertySource {
                name: "high".to_owned(),
                source: list("h"),
            },
            PropertySource {
                name: "low".to_owned(),
                source: list("l"),
            },
        ],
    }
}

fn render_list(c: &mut Criterion) {
    let mut group = c.benchmark_group("render a list");
    group.sample_size(10);
    for items in [4_000, 32_000] {
        let environment = environment(items);
        group.bench_with_input(
            BenchmarkId::new("properties", items),
            &environment,
            |b, environment| {
                b.iter(|| {
                    let mut merged = render::merged(environment);
                    render::resolve_placeholders(&mut merged).unwrap();
                    render::to_properties(&merged)
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("json", items),
            &environment,
            |b, environment| {
                b.iter(|| {
                    let mut merged = render::merged(environment);
                    render::resolve_placeholders(&mut merged).unwrap();
                    serde_json::to_vec(&render::to_tree(&merged).unwrap()).unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, render_list);
criterion_main!(benches);
