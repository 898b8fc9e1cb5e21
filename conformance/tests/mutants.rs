//! Every mutant fails the whole catalog on exactly the rule `fixtures/mutants.json` lists for
//! it, and on no other rule; every listed mutant exists and every built-in mutant is listed.
//! (`scripts/mutation-score` prints the same as a score, with the rules each mutant failed.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use scanconform::scenario::{self, LoadedScenario, ServiceModel};
use scanconform::{drivers, rules, run};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The rules `mutant` failed over the whole catalog, each with the runs that failed it.
fn failed_rules(mutant: &str, catalog: &[LoadedScenario]) -> BTreeMap<&'static str, Vec<String>> {
    let mut failed: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for s in catalog {
        for service in [ServiceModel::Xp, ServiceModel::Vista] {
            if !s.scenario.services.contains(&service) {
                continue;
            }
            let d = drivers::instantiate(mutant).unwrap();
            let r = run::run(s, service, mutant, d, &fixtures().join("profiles")).unwrap();
            for f in r.report.failed() {
                failed
                    .entry(f.id)
                    .or_default()
                    .push(format!("{} [{}]", s.id, service.name()));
            }
        }
    }
    failed
}

#[test]
fn each_mutant_fails_exactly_its_listed_rule() {
    let expected = drivers::load_expected_failures(&fixtures().join("mutants.json")).unwrap();
    let catalog = scenario::discover(&fixtures().join("scenarios")).unwrap();
    let mutants: BTreeSet<&str> = drivers::BUILTIN
        .iter()
        .map(|d| d.name)
        .filter(|n| n.starts_with("mutant-"))
        .collect();
    let listed: BTreeSet<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(
        mutants, listed,
        "built-in mutants and fixtures/mutants.json disagree"
    );
    for (mutant, rule) in &expected {
        assert!(rules::find(rule).is_some(), "{mutant}: unknown rule {rule}");
    }
    // Runs are independent; the mutants are shared out over the machine's threads.
    let all: Vec<(&String, &String)> = expected.iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = all.len().div_ceil(threads).max(1);
    let report: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = all
            .chunks(chunk)
            .map(|part| {
                let catalog = &catalog;
                scope.spawn(move || {
                    part.iter()
                        .filter_map(|(mutant, rule)| {
                            let failed = failed_rules(mutant, catalog);
                            let got: BTreeSet<&str> = failed.keys().copied().collect();
                            (got != BTreeSet::from([rule.as_str()])).then(|| {
                                format!(
                                    "{mutant}: expected to fail exactly {rule}, failed {failed:?}"
                                )
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a mutant's runs panicked"))
            .collect()
    });
    assert!(report.is_empty(), "\n{}", report.join("\n"));
}
