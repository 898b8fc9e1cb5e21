//! One test per WIA 2.0 scenario file (`fixtures/scenarios/wia2/`): the reference WIA 2.0
//! driver passes every rule, and the run's trace matches its snapshot in
//! `fixtures/snapshots/reference-wia2/wia2/<group>/<name>.snap`.
//!
//! With `CI=true` a missing or changed snapshot fails and nothing is written. Review changes
//! with `cargo insta review`.

use std::path::{Path, PathBuf};

use scanconform::drivers::wia2 as drivers2;
use scanconform::rules::wia2 as rules2;
use scanconform::rules::RuleStatus;
use scanconform::run::wia2::run2;
use scanconform::scenario::wia2 as scenario2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn run_scenario(path: &Path) -> datatest_stable::Result<()> {
    let root = fixtures().join("scenarios");
    let loaded = scenario2::load(path, &root)?;
    loaded.validate(rules2::known)?;
    let (dir, name) = loaded
        .id
        .rsplit_once('/')
        .ok_or_else(|| format!("scenario id {:?} has no group", loaded.id))?;
    let driver = "reference-wia2";
    let factory = drivers2::factory(driver).ok_or("no reference-wia2 driver")?;
    let r = run2(&loaded, driver, factory, &fixtures().join("profiles"))?;
    let lines: Vec<String> = r.trace.render_text().lines().map(str::to_owned).collect();
    insta::with_settings!({
        snapshot_path => fixtures().join("snapshots").join(driver).join(dir),
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => format!("{} driver {driver}", loaded.id),
    }, {
        insta::assert_yaml_snapshot!(name, lines);
    });
    if !r.passed() {
        return Err(r.failure_details().into());
    }
    // Every rule the scenario is for had something to judge in it.
    let idle: Vec<&String> = loaded
        .scenario
        .rules
        .iter()
        .filter(|id| r.report.get(id) == Some(&RuleStatus::NotApplicable))
        .collect();
    if !idle.is_empty() {
        return Err(format!(
            "{}: listed rules not applicable in the run: {idle:?}",
            loaded.id
        )
        .into());
    }
    Ok(())
}

datatest_stable::harness! {
    { test = run_scenario, root = "../fixtures/scenarios", pattern = r"^wia2/.*\.json$" },
}
