//! Every WIA 2.0 mutant fails the WIA 2.0 catalog on exactly the rule
//! `fixtures/mutants-wia2.json` lists for it, and on no other rule; every listed mutant exists
//! and every built-in WIA 2.0 mutant is listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use scanconform::drivers::{self, wia2 as drivers2};
use scanconform::rules::wia2 as rules2;
use scanconform::run::wia2::run2;
use scanconform::scenario::wia2 as scenario2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[test]
fn each_wia2_mutant_fails_exactly_its_listed_rule() {
    let expected = drivers::load_expected_failures(&fixtures().join("mutants-wia2.json")).unwrap();
    let catalog = scenario2::discover(&fixtures().join("scenarios")).unwrap();
    let mutants: BTreeSet<&str> = drivers2::BUILTIN2
        .iter()
        .map(|d| d.name)
        .filter(|n| n.starts_with("mutant2-"))
        .collect();
    let listed: BTreeSet<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(
        mutants, listed,
        "built-in WIA 2.0 mutants and fixtures/mutants-wia2.json disagree"
    );
    let mut report = Vec::new();
    for (mutant, rule) in &expected {
        assert!(rules2::known(rule), "{mutant}: unknown rule {rule}");
        let mut failed: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for s in &catalog {
            let factory = drivers2::factory(mutant).unwrap();
            let r = run2(s, mutant, factory, &fixtures().join("profiles")).unwrap();
            for f in r.report.failed() {
                failed.entry(f.id).or_default().push(s.id.clone());
            }
        }
        let rules_failed: BTreeSet<&str> = failed.keys().copied().collect();
        let want: BTreeSet<&str> = [rule.as_str()].into_iter().collect();
        if rules_failed != want {
            report.push(format!(
                "{mutant}: expected to fail exactly {rule}, failed {failed:?}"
            ));
        }
    }
    assert!(report.is_empty(), "\n{}", report.join("\n"));
}

/// `conformance/WIA2.md`'s catalogue table lists every WIA 2.0 rule once, with the mutant
/// `fixtures/mutants-wia2.json` says breaks it.
#[test]
fn wia2_md_lists_every_rule_with_its_mutant() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("WIA2.md")).unwrap();
    let expected = drivers::load_expected_failures(&fixtures().join("mutants-wia2.json")).unwrap();
    let rows: BTreeMap<&str, &str> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .strip_prefix("| WIA2-")?
                .split('|')
                .map(str::trim)
                .collect();
            let id = l[2..].split(' ').next()?;
            Some((id, cells.get(2).copied().unwrap_or("")))
        })
        .collect();
    let ids: BTreeSet<&str> = rules2::catalog().iter().map(|r| r.id).collect();
    assert_eq!(
        rows.keys().copied().collect::<BTreeSet<_>>(),
        ids,
        "WIA2.md's table and the catalogue disagree"
    );
    for (mutant, rule) in &expected {
        let cell = rows.get(rule.as_str()).copied().unwrap_or("");
        assert_eq!(
            cell,
            format!("`{mutant}`"),
            "WIA2.md: {rule} should name {mutant}"
        );
    }
}
