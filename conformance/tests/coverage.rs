//! `docs/coverage.md`, the obligation coverage table, stays in step with the rule catalogues
//! and the scenarios: every WIA and SANE rule appears in it, every rule ID it names exists,
//! every scenario it names exists and lists the rule it is named under, every row either names
//! rules or says why its sentence is not covered, and every quoted sentence is in the reference
//! file its row cites (checked when `../shared/reference` is present).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use scanconform::{rules, sane};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One row of a table: its reference, its sentence (without the outer quotes), and either the
/// rules with their scenarios or the reason it is not covered.
#[derive(Debug)]
struct Row {
    line: usize,
    reference: String,
    sentence: String,
    covered: Result<Vec<(String, Vec<String>)>, String>,
}

/// A table row's cells, split on `|` but not on `\|`.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                out.last_mut().unwrap().push('|');
                chars.next();
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.iter().map(|c| c.trim().to_string()).collect()
}

fn backquoted(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn is_rule_id(s: &str) -> bool {
    ["WIA-", "USB-", "SANE-"].iter().any(|p| s.starts_with(p))
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(root().join("docs/coverage.md")).expect("docs/coverage.md");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let c = cells(line);
        if !line.starts_with('|') || c.len() != 3 || c[0] == "ref" || c[0].starts_with("---") {
            continue;
        }
        let sentence = c[1]
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or_else(|| panic!("coverage.md:{}: the sentence is not quoted", i + 1))
            .to_string();
        let covered = match c[2].strip_prefix("not covered:") {
            Some(reason) => Err(reason.trim().to_string()),
            None => {
                let mut groups: Vec<(String, Vec<String>)> = Vec::new();
                for token in backquoted(&c[2]) {
                    if is_rule_id(&token) {
                        groups.push((token, Vec::new()));
                    } else if token.contains('/') {
                        let (_, scenarios) = groups.last_mut().unwrap_or_else(|| {
                            panic!("coverage.md:{}: scenario {token} before any rule", i + 1)
                        });
                        scenarios.push(token);
                    }
                }
                Ok(groups)
            }
        };
        out.push(Row {
            line: i + 1,
            reference: c[0].clone(),
            sentence,
            covered,
        });
    }
    out
}

/// Every scenario file under fixtures/scenarios: id -> the rules it lists.
fn scenario_rules() -> BTreeMap<String, BTreeSet<String>> {
    let dir = root().join("fixtures/scenarios");
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "json") {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
                let id = p
                    .strip_prefix(&dir)
                    .unwrap()
                    .with_extension("")
                    .to_string_lossy()
                    .replace('\\', "/");
                let listed = v["rules"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|r| r.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(id, listed);
            }
        }
    }
    out
}

#[test]
fn coverage_table_names_every_rule_and_only_real_rules_and_scenarios() {
    let rows = rows();
    assert!(
        rows.len() > 50,
        "only {} rows in docs/coverage.md",
        rows.len()
    );
    let known: BTreeSet<&str> = rules::catalog()
        .iter()
        .map(|r| r.id)
        .chain(sane::rules::catalog().iter().map(|r| r.id))
        .collect();
    let scenarios = scenario_rules();
    let mut named = BTreeSet::new();
    let mut problems = Vec::new();
    for row in &rows {
        match &row.covered {
            Err(reason) if reason.is_empty() => problems.push(format!(
                "coverage.md:{}: {} is not covered and says no reason",
                row.line, row.reference
            )),
            Err(_) => {}
            Ok(groups) if groups.is_empty() => problems.push(format!(
                "coverage.md:{}: {} names no rule and no reason",
                row.line, row.reference
            )),
            Ok(groups) => {
                for (rule, listed) in groups {
                    if !known.contains(rule.as_str()) {
                        problems.push(format!("coverage.md:{}: unknown rule {rule}", row.line));
                    }
                    named.insert(rule.clone());
                    if listed.is_empty() {
                        problems.push(format!(
                            "coverage.md:{}: {rule} is named without a scenario",
                            row.line
                        ));
                    }
                    for s in listed {
                        match scenarios.get(s) {
                            None => {
                                problems.push(format!("coverage.md:{}: no scenario {s}", row.line))
                            }
                            Some(r) if !r.contains(rule) => problems.push(format!(
                                "coverage.md:{}: scenario {s} does not list {rule} in its rules",
                                row.line
                            )),
                            Some(_) => {}
                        }
                    }
                }
            }
        }
    }
    for id in &known {
        if !named.contains(*id) {
            problems.push(format!("rule {id} does not appear in docs/coverage.md"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn coverage_sentences_are_verbatim_in_their_reference() {
    let dir = root().join("../shared/reference");
    let norm = |s: &str| {
        s.replace("**", "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut sheets = BTreeMap::new();
    for (key, file) in [
        ("cs", "cancel-semantics.md"),
        ("scb", "sane-cancel-bugs.md"),
        ("ws", "wia2-stream.md"),
    ] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            eprintln!("skipped: {} not present", dir.join(file).display());
            return;
        };
        sheets.insert(key, norm(&text));
    }
    let mut problems = Vec::new();
    for row in rows() {
        let key = row.reference.split_whitespace().next().unwrap_or("");
        let Some(sheet) = sheets.get(key) else {
            problems.push(format!(
                "coverage.md:{}: reference {:?} names no sheet (cs, scb, ws)",
                row.line, row.reference
            ));
            continue;
        };
        if !sheet.contains(&norm(&row.sentence)) {
            problems.push(format!(
                "coverage.md:{}: {} is not verbatim in its sheet: {}",
                row.line, row.reference, row.sentence
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
