//! The scenario catalog in `fixtures/scenarios` loads and validates, and broken scenario files
//! are reported at the right file:line:column.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use scanconform::scenario::{self, Action, LoadedScenario, Outcome, Trigger};
use scanemu::engine::ScanSource;
use scanemu::profile::Profile;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The rule IDs of docs/rule-plan.md: the first cell of each row of its table. A stand-in for
/// `rules::find` so this test does not depend on the rule checks.
fn plan_rule_ids() -> BTreeSet<String> {
    let plan = std::fs::read_to_string(workspace().join("docs/rule-plan.md")).unwrap();
    let ids: BTreeSet<String> = plan
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next())
        .map(str::trim)
        .filter(|c| {
            c.contains('-')
                && c.chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '-')
        })
        .map(String::from)
        .collect();
    assert!(ids.len() >= 19, "rule-plan.md table not found: {ids:?}");
    assert!(ids.contains("WIA-CB-STOP") && ids.contains("WIA-IDLE-CANCEL-HARMLESS"));
    ids
}

fn catalog() -> Vec<LoadedScenario> {
    let root = workspace().join("fixtures/scenarios");
    match scenario::discover(&root) {
        Ok(all) => all,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn every_scenario_parses_and_validates() {
    let ids = plan_rule_ids();
    let all = catalog();
    let mut errors = Vec::new();
    for s in &all {
        if let Err(e) = s.validate(|id| ids.contains(id)) {
            errors.push(e.to_string());
        }
    }
    assert!(
        errors.is_empty(),
        "invalid scenarios:\n{}",
        errors.join("\n")
    );
}

#[test]
fn catalog_is_large_grouped_sorted_and_unique() {
    let all = catalog();
    assert!(all.len() >= 44, "only {} scenarios", all.len());
    let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "ids must be unique and sorted");
    for id in &ids {
        let parts: Vec<&str> = id.split('/').collect();
        assert_eq!(parts.len(), 2, "{id}: ids are <group>/<name>");
        assert!(
            parts.iter().all(|p| !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')),
            "{id}: use lowercase kebab-case"
        );
    }
    let groups: BTreeSet<&str> = ids.iter().map(|id| id.split('/').next().unwrap()).collect();
    for g in [
        "adf",
        "callback",
        "cancel-io",
        "complete",
        "device",
        "faults",
        "idle",
        "profiles",
    ] {
        assert!(groups.contains(g), "group {g} is missing");
    }
    // Deterministic: a second walk gives the same list.
    let again: Vec<String> = catalog().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, again);
}

/// Each scenario's profile exists, its scan fits the profile, faults name bands that exist and
/// `data_callback` triggers of the first acquisition are reachable whatever a driver's band cut.
#[test]
fn scenarios_fit_their_profiles() {
    let profiles = workspace().join("fixtures/profiles");
    for s in catalog() {
        let sc = &s.scenario;
        let dir = s.path.parent().unwrap();
        let path = sc.profile_path(&profiles, dir);
        let profile = Profile::load(&path).unwrap_or_else(|e| panic!("{}: profile: {e}", s.id));
        let job = sc.scan.job();
        job.validate(&profile.optics)
            .unwrap_or_else(|e| panic!("{}: scan does not fit {}: {e}", s.id, sc.profile));
        let bands = job.bands_per_page(profile.timing.band_lines);
        for f in &sc.faults {
            if let Some((_, band)) = f.position() {
                assert!(
                    band < bands,
                    "{}: fault at band {band}, but a page has {bands} bands",
                    s.id
                );
            }
        }
        let sheets = match sc.scan.source {
            ScanSource::Flatbed => 1,
            ScanSource::Adf => {
                let loaded = profile.optics.adf.as_ref().unwrap().loaded_sheets;
                if sc.scan.pages == 0 {
                    loaded
                } else {
                    sc.scan.pages.min(loaded)
                }
            }
        };
        // Every driver makes at least ceil(page bytes / buffer) data callbacks per page.
        let min_callbacks = u64::from(sheets) * job.page_bytes().div_ceil(u64::from(sc.buffer));
        for step in &sc.acquisitions[0].steps {
            if let Trigger::DataCallback(n) = step.when {
                assert!(
                    u64::from(n) <= min_callbacks,
                    "{}: data_callback {n} may never come ({min_callbacks} guaranteed)",
                    s.id
                );
            }
        }
    }
}

#[test]
fn expectations_follow_the_cancel_conventions() {
    for s in catalog() {
        for a in &s.scenario.acquisitions {
            for step in &a.steps {
                // An application S_FALSE before the image is complete always ends Cancelled.
                if step.action == Action::Return(scanconform::wia::Hresult::S_FALSE) {
                    assert!(
                        matches!(a.expect, Outcome::Cancelled | Outcome::OneOf(_)),
                        "{}",
                        s.id
                    );
                }
                // An application error comes back unchanged.
                if let Action::Return(hr) = step.action {
                    if !hr.succeeded() {
                        assert_eq!(a.expect, Outcome::Hresult(hr), "{}", s.id);
                    }
                }
            }
        }
    }
}

/// A scratch folder under the target dir's temp space, unique to this test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "scanconform-scenario-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("group")).unwrap();
    dir
}

const GOOD: &str = r#"{
  "description": "S_FALSE at the first band.",
  "rules": ["WIA-RET-SFALSE", "WIA-OUTCOME"],
  "profile": "fast-flatbed",
  "scan": {"resolution_dpi": 100, "mode": "gray8", "width_px": 64, "height_px": 64},
  "acquisitions": [
    {"steps": [{"when": {"data_callback": 1}, "do": {"return": "S_FALSE"}}], "expect": "cancelled"}
  ]
}
"#;

/// Writes `text` as `group/case.json` under a scratch root, loads and validates it.
fn try_load(name: &str, text: &str) -> (PathBuf, Result<LoadedScenario, scenario::ScenarioError>) {
    let root = scratch(name);
    let path = root.join("group/case.json");
    std::fs::write(&path, text).unwrap();
    let ids = plan_rule_ids();
    let r =
        scenario::load(&path, &root).and_then(|s| s.validate(|id| ids.contains(id)).map(|()| s));
    (path, r)
}

fn error_of(name: &str, text: &str) -> (String, scenario::ScenarioError) {
    let (path, r) = try_load(name, text);
    let e = r.expect_err("the scenario should be rejected");
    (path.display().to_string(), e)
}

fn assert_at(name: &str, text: &str, line: usize, column: usize, needle: &str) {
    let (path, e) = error_of(name, text);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{path}:{line}:{column}: ")),
        "expected {path}:{line}:{column}:, got {shown}"
    );
    assert!(
        shown.contains(needle),
        "{shown:?} does not mention {needle:?}"
    );
    assert!(!shown.contains('\n'), "one line: {shown:?}");
    assert_eq!((e.line, e.column), (line, column));
}

#[test]
fn the_good_example_loads_with_its_id() {
    let (_, r) = try_load("good", GOOD);
    let s = r.unwrap();
    assert_eq!(s.id, "group/case");
    assert_eq!(s.scenario.buffer, 65536);
    assert_eq!(s.scenario.services.len(), 2);
    assert_eq!(s.scenario.budget_us, 120_000_000);
}

#[test]
fn bad_json_names_line_and_column() {
    // Missing comma after the description: serde_json stops at the next key's quote.
    let text = GOOD.replace("band.\",", "band.\"");
    assert_at("bad-json", &text, 3, 3, "expected `,` or `}`");
}

#[test]
fn unknown_field_names_line_and_column() {
    let text = GOOD.replace("  \"profile\"", "  \"colour\": true,\n  \"profile\"");
    // serde_json points at the unknown key's closing quote.
    assert_at("unknown-field", &text, 4, 10, "unknown field `colour`");
    // Also inside nested objects (scan settings, steps).
    let text = GOOD.replace("\"width_px\": 64", "\"widht_px\": 64");
    assert_at("unknown-nested", &text, 5, 61, "unknown field `widht_px`");
}

#[test]
fn unknown_rule_id_is_reported_at_its_own_place() {
    let text = GOOD.replace(
        "\"WIA-OUTCOME\"]",
        "\"WIA-OUTCOME\",\n            \"WIA-CB-NOPE\"]",
    );
    assert_at(
        "unknown-rule",
        &text,
        4,
        13,
        "unknown rule ID \"WIA-CB-NOPE\"",
    );
    // The same ID in the description does not confuse the locator.
    let text = GOOD
        .replace(
            "S_FALSE at the first band.",
            "Mentions \\\"WIA-CB-NOPE\\\" in prose.",
        )
        .replace("\"WIA-OUTCOME\"]", "\"WIA-OUTCOME\", \"WIA-CB-NOPE\"]");
    assert_at("unknown-rule-prose", &text, 3, 46, "unknown rule ID");
}

#[test]
fn semantic_errors_point_at_the_value() {
    // `return` needs a callback trigger.
    let text = GOOD.replace("{\"data_callback\": 1}", "{\"at_us\": 5000}");
    assert_at(
        "return-at-time",
        &text,
        7,
        48,
        "\"return\" needs a callback trigger",
    );
    // Trigger counts start at 1.
    let text = GOOD.replace("{\"data_callback\": 1}", "{\"data_callback\": 0}");
    assert_at("zero-trigger", &text, 7, 43, "counts from 1");
    let text = GOOD.replace("{\"data_callback\": 1}", "{\"status_callback\": 0}");
    assert_at(
        "zero-status-trigger",
        &text,
        7,
        45,
        "status_callback counts from 1",
    );
    // Percent range.
    let text = GOOD.replace("{\"data_callback\": 1}", "{\"percent\": 101}");
    assert_at("percent", &text, 7, 37, "outside 0..=100");
    // No acquisitions.
    let text = GOOD.replace(
        "[\n    {\"steps\": [{\"when\": {\"data_callback\": 1}, \"do\": {\"return\": \"S_FALSE\"}}], \"expect\": \"cancelled\"}\n  ]",
        "[]",
    );
    assert_at("no-acquisitions", &text, 6, 19, "no acquisitions");
    // Duplicate and empty services.
    let text = GOOD.replace(
        "  \"profile\"",
        "  \"services\": [\"xp\", \"xp\"],\n  \"profile\"",
    );
    assert_at("dup-service", &text, 4, 22, "listed twice");
    let text = GOOD.replace("  \"profile\"", "  \"services\": [],\n  \"profile\"");
    assert_at("no-service", &text, 4, 15, "services is empty");
    // Unknown service name is a schema error.
    let text = GOOD.replace(
        "  \"profile\"",
        "  \"services\": [\"win7\"],\n  \"profile\"",
    );
    let (_, e) = error_of("bad-service", &text);
    assert_eq!(e.line, 4, "{e}");
    assert!(e.to_string().contains("unknown variant `win7`"), "{e}");
    // Unknown fault kind and HRESULT name.
    let text = GOOD.replace(
        "  \"acquisitions\"",
        "  \"faults\": [{\"kind\": \"melt\", \"band\": 1}],\n  \"acquisitions\"",
    );
    let (_, e) = error_of("bad-fault", &text);
    assert_eq!(e.line, 6, "{e}");
    let text = GOOD.replace("\"return\": \"S_FALSE\"", "\"return\": \"S_MAYBE\"");
    let (_, e) = error_of("bad-hresult", &text);
    assert!(e.to_string().contains("unknown HRESULT \"S_MAYBE\""), "{e}");
    // Idle cancel past the end.
    let text = GOOD.replace("\n}\n", ",\n  \"idle_cancels\": [{\"before\": 2}]\n}\n");
    assert_at("idle-past-end", &text, 9, 31, "past the end");
    // one_of needs two outcomes.
    let text = GOOD.replace(
        "\"expect\": \"cancelled\"",
        "\"expect\": {\"one_of\": [\"cancelled\"]}",
    );
    assert_at("one-of-single", &text, 7, 99, "at least two");
}

#[test]
fn discover_rejects_an_empty_folder_and_loads_a_single_file() {
    let root = scratch("empty");
    let e = scenario::discover(&root).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:1:1: no scenario files", root.display())),
        "{e}"
    );

    let root = scratch("single");
    let path = root.join("group/one.json");
    std::fs::write(&path, GOOD).unwrap();
    std::fs::write(root.join("group/notes.txt"), "not a scenario").unwrap();
    let all = scenario::discover(&root).unwrap();
    assert_eq!(
        all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["group/one"]
    );
    let one = scenario::discover(&path).unwrap();
    assert_eq!(one[0].id, "one");

    let e = scenario::discover(&root.join("nope")).unwrap_err();
    assert!(e.to_string().contains("cannot read scenarios"), "{e}");
}
