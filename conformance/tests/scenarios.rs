//! One test per scenario file: the correct drivers pass every rule on every service the
//! scenario names, and each run's trace matches its snapshot in `fixtures/snapshots/`.
//!
//! Snapshots are named from the scenario path (`<driver>/<group>/<name>.<service>.snap`);
//! with `CI=true` a missing or changed snapshot fails and nothing is written. Review changes
//! with `cargo insta review`.

use std::path::{Path, PathBuf};

use scanconform::run;
use scanconform::scenario;
use scanconform::{drivers, report, rules};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn run_scenario(path: &Path) -> datatest_stable::Result<()> {
    let root = fixtures().join("scenarios");
    let loaded = scenario::load(path, &root)?;
    loaded.validate(|id| rules::find(id).is_some())?;
    let (group, name) = loaded
        .id
        .rsplit_once('/')
        .ok_or_else(|| format!("scenario id {:?} has no group", loaded.id))?;
    let mut problems = Vec::new();
    for driver in ["reference", "legacy-xp"] {
        for &service in &loaded.scenario.services {
            let d = drivers::instantiate(driver)?;
            let r = run::run(&loaded, service, driver, d, &fixtures().join("profiles"))?;
            if !r.passed() {
                problems.push(report::failure_details(&r));
            }
            let lines: Vec<String> = r.trace.render_text().lines().map(str::to_owned).collect();
            let snapshot_dir = fixtures().join("snapshots").join(driver).join(group);
            insta::with_settings!({
                snapshot_path => snapshot_dir,
                prepend_module_to_snapshot => false,
                omit_expression => true,
                description => format!("{} [{}] driver {driver}", loaded.id, service.name()),
            }, {
                insta::assert_yaml_snapshot!(format!("{name}.{}", service.name()), lines);
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

datatest_stable::harness! {
    { test = run_scenario, root = "../fixtures/scenarios", pattern = r"^(?!sane/|wia2/).*\.json$" },
}
