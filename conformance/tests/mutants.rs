//! Every mutant fails the whole catalog on exactly the rule `fixtures/mutants.json` lists for
//! it, and on no other rule; every listed mutant exists and every built-in mutant is listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use scanconform::scenario::{self, ServiceModel};
use scanconform::{drivers, rules, run};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
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
    let mut report = Vec::new();
    for (mutant, rule) in &expected {
        assert!(rules::find(rule).is_some(), "{mutant}: unknown rule {rule}");
        let mut failed: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for s in &catalog {
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
        let rules_failed: BTreeSet<&str> = failed.keys().copied().collect();
        let want: BTreeSet<&str> = [rule.as_str()].into_iter().collect();
        if rules_failed != want {
            report.push(format!(
                "{mutant}: expected to fail exactly {rule}, failed {:?}",
                failed
            ));
        }
    }
    assert!(report.is_empty(), "\n{}", report.join("\n"));
}
