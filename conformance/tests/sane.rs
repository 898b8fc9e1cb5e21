//! The SANE adapter against Debian's real `test` backend (package libsane1): every SANE
//! scenario runs, the expected-failure list `fixtures/sane-expected/test.json` is honoured both
//! ways, the order-level outline of each run matches its snapshot under
//! `fixtures/snapshots/sane-test/`, runs repeat, and bad backends are one-line errors (exit 2).
//! SANE runs go through the common report path: JSON lines, JUnit, `--traces` read back by
//! `scanconform report` and `show` (with the SANE timeline), and `--pcap` is refused for a
//! backend without a device.
//!
//! Without the backend these tests print why and pass, except under `CI=true`, where a missing
//! backend fails them (`.ci/run` installs libsane1).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use scanconform::sane::expected::{compare, ExpectedFailures};
use scanconform::sane::runner::{SaneRun, Session};
use scanconform::sane::target;
use scanconform::sane::{self, scenario as sane_scenario};
use scanconform::{rules, scenario};

/// The SANE runs and the CLI children share one backend and fd table: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The test backend, or None (with the reason printed) when it is not installed outside CI.
fn test_backend() -> Option<target::Target> {
    match target::resolve("test") {
        Ok(t) => Some(t),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and the SANE test backend is missing: {e}"
            );
            eprintln!("skipping: {e}");
            None
        }
    }
}

fn session() -> Option<Session> {
    let target = test_backend()?;
    let config = sane::config_dir(&fixtures(), "test");
    assert!(config.is_some(), "fixtures/sane/test.conf is missing");
    Some(Session::prepare(target, config.as_deref()).expect("the test backend loads and opens"))
}

fn all_scenarios() -> Vec<sane_scenario::LoadedSaneScenario> {
    sane_scenario::discover(&fixtures().join("scenarios/sane")).expect("SANE scenarios load")
}

fn scanconform(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("scanconform runs")
}

#[test]
fn catalog_honours_the_expected_failures_and_matches_snapshots() {
    let _g = serial();
    let Some(session) = session() else { return };
    let list = ExpectedFailures::load(&sane::expected_path(&fixtures(), "test"), |id| {
        sane::rules::find(id).is_some()
    })
    .unwrap();
    let scenarios = all_scenarios();
    assert!(
        scenarios.len() >= 15,
        "only {} SANE scenarios",
        scenarios.len()
    );
    let runs: Vec<SaneRun> = scenarios.iter().map(|s| session.run(s)).collect();
    for r in &runs {
        assert!(r.skipped.is_none(), "{}: skipped: {:?}", r.id, r.skipped);
        let name = r.id.trim_start_matches("sane/");
        insta::with_settings!({
            snapshot_path => fixtures().join("snapshots/sane-test"),
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("{} against the SANE test backend (order and outcome, no times)", r.id),
        }, {
            insta::assert_yaml_snapshot!(name.to_string(), r.trace.outline());
        });
    }
    let cmp = compare(&runs, &list);
    assert!(cmp.violations.is_empty(), "\n{}", cmp.violations.join("\n"));
    assert_eq!(cmp.honoured.len(), list.failures.len());
    let blocked = cmp
        .honoured
        .iter()
        .find(|(s, rule, _)| s == "sane/cancel-blocked-read-signal" && rule == "SANE-CANCEL-STATUS")
        .expect("the blocked-read finding is reported");
    assert!(blocked.2.contains("IO_ERROR"), "{}", blocked.2);
}

#[test]
fn runs_repeat_with_the_same_verdicts_and_outlines() {
    let _g = serial();
    let Some(session) = session() else { return };
    for s in all_scenarios().iter().filter(|s| {
        s.id.contains("blocked") || s.id.contains("non-blocking") || s.id.contains("close")
    }) {
        let a = session.run(s);
        let b = session.run(s);
        // The verdict and its message, not the call it points at: how many GOOD reads come
        // before a blocked one depends on scheduling (the outline collapses them as well).
        let verdicts = |r: &SaneRun| -> Vec<(&'static str, String)> {
            r.results
                .iter()
                .map(|x| {
                    let status = match &x.status {
                        scanconform::verdict::RuleStatus::Fail { message, .. } => {
                            format!("fail: {message}")
                        }
                        other => format!("{other:?}"),
                    };
                    (x.id, status)
                })
                .collect()
        };
        assert_eq!(verdicts(&a), verdicts(&b), "{}: verdicts differ", s.id);
        assert_eq!(
            a.trace.outline(),
            b.trace.outline(),
            "{}: outlines differ",
            s.id
        );
        assert!(a.problems.is_empty(), "{}: {:?}", s.id, a.problems);
    }
}

#[test]
fn a_backends_reset_of_sigterm_is_refused_and_sigterm_stays_ours() {
    let _g = serial();
    // Installed before a backend is loaded: while one is, changes to SIGTERM are refused.
    let got = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, got.clone()).unwrap();
    let Some(session) = session() else { return };
    assert!(
        sane::ffi::guard::interposed(),
        "this test program exports its sigaction (conformance/build.rs)"
    );
    let before = sane::ffi::guard::refused_so_far();
    let s = all_scenarios()
        .into_iter()
        .find(|s| s.id == "sane/full-scan-then-cancel")
        .expect("the scenario exists");
    let run = session.run(&s);
    assert!(run.problems.is_empty(), "{:?}", run.problems);
    // The test backend's reader sets SIGTERM to its default action at the start of each of
    // the scenario's two scans; both calls reached the guard instead of libc.
    assert!(
        sane::ffi::guard::refused_so_far() >= before + 2,
        "refused {} -> {}",
        before,
        sane::ffi::guard::refused_so_far()
    );
    // And SIGTERM still reaches this program's handler instead of ending the process.
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    assert!(got.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn expected_failures_are_checked_both_ways() {
    let _g = serial();
    let Some(session) = session() else { return };
    let s: Vec<_> = all_scenarios()
        .into_iter()
        .filter(|s| s.id == "sane/close-while-scanning" || s.id == "sane/full-scan-then-cancel")
        .collect();
    let runs: Vec<SaneRun> = s.iter().map(|s| session.run(s)).collect();
    // Nothing listed: the close finding is an unlisted failure.
    let cmp = compare(&runs, &ExpectedFailures::default());
    assert_eq!(cmp.violations.len(), 1, "{:?}", cmp.violations);
    assert!(cmp.violations[0].contains("not in the expected-failure list"));
    // A listed failure that passes, and one whose observed text changed.
    let list: ExpectedFailures = serde_json::from_str(
        r#"{"backend":"test","failures":[
            {"scenario":"sane/full-scan-then-cancel","rule":"SANE-LEN-ZERO-ON-ERROR","observed":"x","finding":"f"},
            {"scenario":"sane/close-while-scanning","rule":"SANE-CLOSE-CANCELS","observed":"something else","finding":"f"}]}"#,
    )
    .unwrap();
    let cmp = compare(&runs, &list);
    assert_eq!(cmp.violations.len(), 2, "{:?}", cmp.violations);
    assert!(cmp.violations.iter().any(|v| v.contains("but passed")));
    assert!(cmp
        .violations
        .iter()
        .any(|v| v.contains("observed behaviour changed")));
}

#[test]
fn cli_runs_the_test_backend_and_prints_the_findings() {
    let _g = serial();
    if test_backend().is_none() {
        return;
    }
    let o = scanconform(&["run", "--driver", "sane:test"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("findings (expected failures"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("sane/cancel-blocked-read-signal")
                && l.contains("SANE-CANCEL-STATUS")
                && l.contains("IO_ERROR")),
        "{out}"
    );
    let ran = out.lines().filter(|l| l.starts_with("sane/")).count();
    assert!(ran >= 15, "{ran} scenario lines\n{out}");
}

#[test]
fn bad_backends_are_one_line_errors_with_status_2() {
    let _g = serial();
    let libz = [
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let mut cases = vec![
        (
            "missing backend",
            "sane:no-such-backend".to_string(),
            "not found",
        ),
        (
            "missing file",
            "sane:/nonexistent/libsane-x.so.1".to_string(),
            "does not exist",
        ),
    ];
    if let Some(z) = libz {
        cases.push((
            "not a backend",
            format!("sane:{z}"),
            "is not a SANE backend",
        ));
    }
    if test_backend().is_some() {
        cases.push(("device", "sane:test:nope".to_string(), "does not open"));
    }
    for (what, driver, needle) in cases {
        let o = scanconform(&["run", "--driver", &driver]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
        assert!(err.contains(needle), "{what}: {err}");
    }
}

#[test]
fn sane_rules_explain_and_wia_catalog_is_unchanged() {
    for r in sane::rules::catalog() {
        let text = sane::rules::explain(r.id).expect("the SANE catalogue explains its rules");
        assert!(text.contains(r.quote), "{text}");
        assert!(
            rules::explain(r.id).is_none(),
            "the WIA catalogue knows no SANE rule"
        );
    }
    assert!(
        rules::find("SANE-CANCEL-STATUS").is_none(),
        "WIA catalogue untouched"
    );
    assert!(rules::catalog().iter().all(|r| !r.id.starts_with("SANE-")));
    let o = scanconform(&["explain", "SANE-CANCEL-STATUS"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("SANE_STATUS_CANCELLED"));
}

#[test]
fn wia_discovery_skips_the_sane_folder_and_sane_files_are_valid() {
    let wia = scenario::discover(&fixtures().join("scenarios")).unwrap();
    assert!(wia.iter().all(|s| !s.id.starts_with("sane/")));
    let sane = all_scenarios();
    for s in &sane {
        assert!(!s.scenario.rules.is_empty(), "{}: lists no rule", s.id);
    }
    // Unknown fields are errors with a place.
    let dir = std::env::temp_dir().join(format!("sane-scn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        "{\n  \"kind\": \"sane\",\n  \"description\": \"x\",\n  \"rules\": [],\n  \"steps\": [{\"do\": \"start\", \"oops\": 1}]\n}\n",
    )
    .unwrap();
    let e = sane_scenario::load(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.json:5:"), "{e}");
    // An unknown rule ID is found by validation (through the catalogue's closure), at its place.
    let unknown = dir.join("unknown-rule.json");
    std::fs::write(
        &unknown,
        "{\n  \"kind\": \"sane\",\n  \"description\": \"x\",\n  \"rules\": [\"SANE-CANCEL-STATUS\",\n            \"SANE-NO-SUCH\"],\n  \"steps\": [{\"do\": \"start\"}]\n}\n",
    )
    .unwrap();
    let s = sane_scenario::load(&unknown).expect("syntax is fine");
    let e = s
        .validate(|id| sane::rules::find(id).is_some())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown-rule.json:5:13:"), "{e}");
    assert!(e.contains("SANE-NO-SUCH"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sane_runs_go_through_the_common_report_path() {
    let _g = serial();
    if test_backend().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sane-pipeline-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (traces, xml, html) = (dir.join("t"), dir.join("j.xml"), dir.join("r.html"));
    let o = scanconform(&[
        "run",
        "--driver",
        "sane:test",
        "--format",
        "json",
        "--traces",
        traces.to_str().unwrap(),
        "--junit",
        xml.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // One JSON object per run, the WIA shape plus what SANE adds.
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 15);
    for l in &lines {
        assert_eq!(l["driver"], "sane:test");
        assert!(l.get("service").is_none(), "{l}");
        assert!(l["rules"]
            .as_array()
            .is_some_and(|r| r.len() == sane::rules::catalog().len()));
    }
    let xfail = lines
        .iter()
        .find(|l| l["scenario"] == "sane/cancel-blocked-read-signal")
        .unwrap();
    assert_eq!(xfail["verdict"], "expected-fail");
    assert_eq!(xfail["expected"][0]["rule"], "SANE-CANCEL-STATUS");
    // JUnit: one testcase per run, the expected failures passing with their finding.
    let report = quick_junit::Report::deserialize_from_str(&std::fs::read_to_string(&xml).unwrap())
        .expect("JUnit XML parses");
    let cases: Vec<_> = report
        .test_suites
        .iter()
        .flat_map(|s| &s.test_cases)
        .collect();
    assert_eq!(cases.len(), lines.len());
    assert!(cases
        .iter()
        .all(|c| matches!(c.status, quick_junit::TestCaseStatus::Success { .. })));
    // `report --traces` reads what `run --traces` wrote, and builds the same page.
    let again = dir.join("again.html");
    let o = scanconform(&[
        "report",
        "--traces",
        traces.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let page = std::fs::read_to_string(&again).unwrap();
    assert_eq!(page, std::fs::read_to_string(&html).unwrap());
    let doc = roxmltree::Document::parse_with_options(
        &page,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("the page is well-formed XML");
    let run = doc
        .descendants()
        .find(|n| {
            n.tag_name().name() == "details"
                && n.descendants().any(|b| {
                    b.tag_name().name() == "b"
                        && b.text() == Some("sane/cancel-blocked-read-signal")
                })
        })
        .expect("the run is in the report");
    assert_eq!(run.attribute("data-verdict"), Some("expected-fail"));
    let wrap = run
        .descendants()
        .find(|n| n.attribute("class") == Some("tl-wrap"))
        .unwrap();
    let svg =
        scanconform::report::html::embedded_svg(wrap.attribute("data-svgz").unwrap()).unwrap();
    let svg = roxmltree::Document::parse(&svg).expect("the SANE timeline is well-formed");
    let marker = svg
        .descendants()
        .find(|n| n.attribute("class") == Some("violation"))
        .expect("the expected failure is marked");
    assert_eq!(marker.attribute("data-rule"), Some("SANE-CANCEL-STATUS"));
    let event = marker.attribute("data-event").unwrap();
    assert!(
        svg.descendants()
            .any(|n| n.attribute("data-i") == Some(event)),
        "the marked call #{event} is drawn"
    );
    for lane in ["app", "reader", "canceller"] {
        assert!(
            svg.descendants()
                .any(|n| n.attribute("class") == Some("tl-lane") && n.text() == Some(lane)),
            "lane {lane}"
        );
    }
    // `show` prints a SANE trace and draws it.
    let picture = dir.join("s.svg");
    let o = scanconform(&[
        "show",
        traces
            .join("sane-test/cancel-blocked-read-signal.jsonl")
            .to_str()
            .unwrap(),
        "--svg",
        picture.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("cancel-from-signal") && text.contains("IO_ERROR"),
        "{text}"
    );
    roxmltree::Document::parse(&std::fs::read_to_string(&picture).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pcap_is_refused_for_a_backend_without_a_device() {
    let _g = serial();
    if test_backend().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sane-nopcap-{}", std::process::id()));
    let o = scanconform(&[
        "run",
        "--driver",
        "sane:test",
        "--pcap",
        dir.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--pcap") && err.contains("sane:test"), "{err}");
    assert!(o.stdout.is_empty());
}
