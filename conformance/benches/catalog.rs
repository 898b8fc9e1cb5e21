//! The whole scenario catalog against the reference driver, in virtual time.
//!
//! `catalog/reference` runs every scenario under each of its service models, each in a fresh
//! simulation, exactly as `scanconform run --driver reference --service both` does minus the
//! printing. Before measuring it prints one line, `catalog: runs=N virtual_us=V`, where `V` is
//! the sum over runs of the last trace event's time: the scan time the catalog replays.
//! `scripts/bench` divides that by the measured wall time.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use scanconform::scenario::{self, LoadedScenario};
use scanconform::{drivers, rules, run};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Runs the catalog once; returns (runs, virtual microseconds, runs that failed a rule).
fn run_catalog(catalog: &[LoadedScenario], profiles: &Path) -> (u64, u64, u64) {
    let (mut runs, mut virtual_us, mut failed) = (0, 0, 0);
    for s in catalog {
        for &service in &s.scenario.services {
            let driver = drivers::instantiate("reference").expect("reference driver");
            let r = run::run(s, service, "reference", driver, profiles).expect("scenario runs");
            virtual_us += r.trace.events.last().map_or(0, |e| e.at_us);
            failed += u64::from(!r.passed());
            runs += 1;
        }
    }
    (runs, virtual_us, failed)
}

fn catalog(c: &mut Criterion) {
    let catalog = scenario::discover_valid(&fixtures().join("scenarios"), |id| {
        rules::find(id).is_some()
    })
    .expect("the catalog loads");
    let profiles = fixtures().join("profiles");
    let (runs, virtual_us, failed) = run_catalog(&catalog, &profiles);
    assert_eq!(failed, 0, "the reference driver fails {failed} runs");
    println!("catalog: runs={runs} virtual_us={virtual_us}");
    let mut group = c.benchmark_group("catalog");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("reference", |b| {
        b.iter(|| black_box(run_catalog(&catalog, &profiles)));
    });
    group.finish();
}

criterion_group!(benches, catalog);
criterion_main!(benches);
