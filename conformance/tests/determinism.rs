//! Determinism: every scenario's trace is the same, byte for byte, on every run.
//!
//! Each scenario runs three times per service with the reference driver, in a fresh simulation
//! each time; the traces' JSON lines must hash the same. (External drivers are checked in their
//! own tests.)

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use scanconform::scenario;
use scanconform::{drivers, run};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn trace_hash(s: &scenario::LoadedScenario, service: scenario::ServiceModel) -> (u64, usize) {
    let d = drivers::instantiate("reference").unwrap();
    let r = run::run(s, service, "reference", d, &fixtures().join("profiles")).unwrap();
    let text = r.trace.to_json_lines();
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    (h.finish(), r.trace.events.len())
}

#[test]
fn every_scenario_gives_the_same_trace_on_every_run() {
    let catalog = scenario::discover(&fixtures().join("scenarios")).unwrap();
    let mut runs = 0;
    for s in &catalog {
        for &service in &s.scenario.services {
            let first = trace_hash(s, service);
            assert!(first.1 > 0, "{}: empty trace", s.id);
            for _ in 0..2 {
                assert_eq!(
                    trace_hash(s, service),
                    first,
                    "{} [{}]: trace changed between runs",
                    s.id,
                    service.name()
                );
            }
            runs += 1;
        }
    }
    assert!(runs >= 80, "only {runs} scenario runs");
}

/// The real-time subset leaves out, with the reason, a scenario whose band fault the driver
/// outruns by design (it never fires in virtual time) and one too long for the wall clock,
/// and keeps the rest.
#[test]
fn the_real_time_subset_says_why_it_leaves_a_scenario_out() {
    let root = fixtures().join("scenarios");
    let catalog = scenario::discover(&root).unwrap();
    let mut reasons = std::collections::BTreeMap::new();
    for s in &catalog {
        let service = s.scenario.services[0];
        let d = drivers::instantiate("reference").unwrap();
        let why =
            run::realtime_skip_reason(s, service, "reference", d, &fixtures().join("profiles"))
                .unwrap();
        reasons.insert(s.id.clone(), why);
    }
    let why = |id: &str| reasons[id].clone().unwrap_or_default();
    assert!(
        why("faults/stall-during-cancel").contains("stall fault at page")
            && why("faults/stall-during-cancel").contains("never fires in virtual time"),
        "{:?}",
        why("faults/stall-during-cancel")
    );
    assert!(
        reasons
            .values()
            .flatten()
            .any(|w| w.contains("over the real-time limit")),
        "{reasons:#?}"
    );
    let kept = reasons.values().filter(|w| w.is_none()).count();
    assert!(kept > reasons.len() / 2, "{kept} of {} kept", reasons.len());
}
