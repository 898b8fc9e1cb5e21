//! JUnit XML for a run of any driver kind: one testsuite `scanconform.<driver>`, one testcase
//! per scenario run (named `<scenario> [<service>]`, or `<scenario>` for a run without a
//! service model). A failing run is a failure whose message lists the failed rules (and the
//! run's problems) and whose description is the full explanation ([`super::details`]); a
//! skipped scenario is skipped with its reason; a run whose failures are all expected passes,
//! with the findings in its system-out. A run a signal kept from starting is skipped, its
//! message saying so ([`junit_with_not_run`]).

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::{details, RunRecord, Verdict};

/// The JUnit XML of `records`, all runs of `driver`.
pub fn junit(driver: &str, records: &[RunRecord]) -> String {
    junit_with_not_run(driver, records, &[])
}

/// The JUnit XML of `records`, then each run of `not_run` (scenario, service, why) skipped with
/// its message (`not run: interrupted by SIGINT`).
pub fn junit_with_not_run(
    driver: &str,
    records: &[RunRecord],
    not_run: &[(String, Option<String>, String)],
) -> String {
    let mut report = Report::new("scanconform");
    let mut suite = TestSuite::new(format!("scanconform.{driver}"));
    for r in records {
        let v = &r.verdict;
        let status = match v.verdict {
            Verdict::Fail => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let failed: Vec<&str> = v.unexpected().map(|f| f.id.as_str()).collect();
                let mut message = format!("failed rules: {}", failed.join(", "));
                if !v.problems.is_empty() {
                    message.push_str("; problems: ");
                    message.push_str(&v.problems.join("; "));
                }
                s.set_message(message);
                let mut description = details(r);
                for p in &v.problems {
                    description.push_str(&format!("problem: {p}\n"));
                }
                s.set_description(description);
                s
            }
            Verdict::Skip => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(v.skipped.clone().unwrap_or_default());
                s
            }
            Verdict::Pass | Verdict::ExpectedFail | Verdict::Unknown => TestCaseStatus::success(),
        };
        let (name, class) = case_names(driver, &v.scenario, v.service.as_deref());
        let mut case = TestCase::new(name, status);
        case.set_classname(class);
        let findings: Vec<String> = v
            .failed
            .iter()
            .filter_map(|f| {
                f.expected
                    .as_ref()
                    .map(|x| format!("expected failure {}: {} ({x})", f.id, f.message))
            })
            .collect();
        if !findings.is_empty() {
            case.set_system_out(findings.join("\n"));
        }
        suite.add_test_case(case);
    }
    for (scenario, service, why) in not_run {
        let mut status = TestCaseStatus::skipped();
        status.set_message(why.clone());
        let (name, class) = case_names(driver, scenario, service.as_deref());
        let mut case = TestCase::new(name, status);
        case.set_classname(class);
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);
    report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- junit serialization failed: {e} -->"))
}

/// A testcase's name and class name: `<scenario> [<service>]` in `<driver>.<service>`, or
/// `<scenario>` in `<driver>` for a run without a service model.
fn case_names(driver: &str, scenario: &str, service: Option<&str>) -> (String, String) {
    match service {
        Some(svc) => (format!("{scenario} [{svc}]"), format!("{driver}.{svc}")),
        None => (scenario.to_string(), driver.to_string()),
    }
}
