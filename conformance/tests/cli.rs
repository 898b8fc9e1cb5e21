//! The `scanconform` command line as users and CI run it: traces, JUnit, exit codes, `explain`
//! over both catalogues, the driver forms in help, list and errors, options refused for a driver
//! kind they cannot apply to, input errors before any output, a closed stdout ending quietly,
//! and trace folders that stay inside `--traces`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scanconform"));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("scanconform runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scanconform-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn traces_are_byte_identical_across_runs() {
    let (a, b) = (temp_dir("a"), temp_dir("b"));
    for d in [&a, &b] {
        let o = run(&[
            "run",
            "--filter",
            "cancel-io/*",
            "--traces",
            d.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let mut files = Vec::new();
    collect(&a, &mut files);
    assert!(files.len() >= 10, "only {} trace files", files.len());
    for f in files {
        let rel = f.strip_prefix(&a).unwrap();
        let (x, y) = (
            std::fs::read(&f).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
        );
        assert!(!x.is_empty(), "{} is empty", rel.display());
        assert_eq!(x, y, "{} differs between runs", rel.display());
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn junit_has_one_testcase_per_scenario_run() {
    let d = temp_dir("junit");
    let xml = d.join("out.xml");
    let o = run(&[
        "run",
        "--driver",
        "mutant-no-status-poll",
        "--filter",
        "callback/*",
        "--junit",
        xml.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let runs = String::from_utf8_lossy(&o.stdout).lines().count();
    let report = quick_junit::Report::deserialize_from_str(&std::fs::read_to_string(&xml).unwrap())
        .expect("JUnit XML parses");
    let cases: Vec<_> = report
        .test_suites
        .iter()
        .flat_map(|s| s.test_cases.iter())
        .collect();
    assert_eq!(cases.len(), runs);
    assert!(runs >= 10);
    let failures = cases
        .iter()
        .filter(|c| !matches!(c.status, quick_junit::TestCaseStatus::Success { .. }))
        .count();
    assert!(failures > 0, "the mutant fails some callback scenario");
}

#[test]
fn malformed_scenarios_exit_2_with_file_line_column() {
    let d = temp_dir("bad");
    let cases = [
        (
            "bad-json.json",
            "{\n  \"description\": \"x\",\n  \"rules\": [\n}\n",
            ":4:1:",
        ),
        (
            "unknown-field.json",
            "{\n  \"description\": \"x\",\n  \"colour\": 3\n}\n",
            ":3:",
        ),
    ];
    for (name, body, place) in cases {
        let group = d.join(name.trim_end_matches(".json")).join("g");
        std::fs::create_dir_all(&group).unwrap();
        let f = group.join(name);
        std::fs::write(&f, body).unwrap();
        let o = run(&["run", "--scenarios", group.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        assert!(err.contains(name) && err.contains(place), "{name}: {err}");
    }
    // An unknown rule ID is reported at its own line and column.
    let group = d.join("rule").join("g");
    std::fs::create_dir_all(&group).unwrap();
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/scenarios/callback/s-false-first-band.json"),
    )
    .unwrap();
    let bad = good.replacen("\"rules\": [", "\"rules\": [\"NO-SUCH-RULE\", ", 1);
    std::fs::write(group.join("r.json"), &bad).unwrap();
    let o = run(&["run", "--scenarios", group.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let line = bad
        .lines()
        .position(|l| l.contains("NO-SUCH-RULE"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("r.json:{line}:")), "{err}");
    assert!(err.contains("NO-SUCH-RULE"), "{err}");
}

#[test]
fn bad_driver_and_flags_exit_2() {
    let o = run(&["run", "--driver", "no-such-driver"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unknown driver"));
    let o = run(&["run", "--service", "win95"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["explain", "NO-SUCH-RULE"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn explain_quotes_the_source_of_every_rule() {
    for rule in scanconform::rules::catalog() {
        let o = run(&["explain", rule.id]);
        assert!(o.status.success(), "{}", rule.id);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(rule.id), "{out}");
        assert!(out.contains(rule.quote), "{}: quote missing", rule.id);
        assert!(out.contains(rule.source), "{}: source missing", rule.id);
    }
}

#[test]
fn explain_knows_both_catalogues_and_lists_them() {
    for rule in scanconform::sane::rules::catalog() {
        let o = run(&["explain", rule.id]);
        assert!(o.status.success(), "{}", rule.id);
        assert!(String::from_utf8_lossy(&o.stdout).contains(rule.quote));
    }
    for args in [&["explain"][..], &["explain", "--list"][..]] {
        let o = run(args);
        assert!(o.status.success(), "{args:?}");
        let out = String::from_utf8_lossy(&o.stdout);
        let ids = scanconform::rules::catalog()
            .iter()
            .map(|r| r.id)
            .chain(scanconform::sane::rules::catalog().iter().map(|r| r.id));
        for id in ids {
            assert!(
                out.lines().any(|l| l.split_whitespace().next() == Some(id)),
                "{args:?}: {id} not listed"
            );
        }
    }
    let o = run(&["explain", "NO-SUCH-RULE"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("SANE-CANCEL-STATUS") && err.contains("WIA-RET-SFALSE"),
        "{err}"
    );
}

#[test]
fn drivers_lists_the_rule_each_mutant_breaks() {
    let o = run(&["drivers", "--format", "json"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let mut expected = std::collections::BTreeMap::<String, String>::new();
    for list in ["mutants.json", "mutants-wia2.json"] {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures")
            .join(list);
        let map: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        expected.extend(map);
    }
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = v["name"].as_str().unwrap();
        let breaks = v["breaks"].as_str();
        assert_eq!(breaks, expected.get(name).map(String::as_str), "{name}");
    }
    let kinds: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["kind"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "builtin").count(),
        scanconform::drivers::BUILTIN.len()
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "builtin-wia2").count(),
        scanconform::drivers::wia2::BUILTIN2.len()
    );
    assert!(kinds.iter().any(|k| k == "exec") && kinds.iter().any(|k| k == "sane"));
}

#[test]
fn exec_and_sane_drivers_are_named_in_help_list_and_errors() {
    let o = run(&["run", "--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("exec:'CMD ARGS'") && help.contains("sane:BACKEND"),
        "{help}"
    );
    let o = run(&["drivers"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines().any(|l| l.starts_with("exec:'CMD ARGS'")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("sane:BACKEND[:DEVICE]")),
        "{out}"
    );
    let o = run(&["run", "--driver", "no-such-driver"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown driver")
            && err.contains("exec:'CMD ARGS'")
            && err.contains("sane:BACKEND"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
}

/// Runs `args`, expecting exit 2, one line on stderr containing every needle, nothing on
/// stdout (the error comes before any table header).
fn refused(args: &[&str], needles: &[&str]) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} missing in {err}");
    }
    assert!(
        o.stdout.is_empty(),
        "{args:?}: printed {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn options_that_cannot_apply_are_refused_with_one_line() {
    // SANE kinds have no service model, transport, virtual time or recording; refused before
    // the backend is even looked up.
    refused(
        &["run", "--driver", "sane:test", "--transport", "usbip"],
        &["--transport usbip", "sane:test"],
    );
    refused(
        &["run", "--driver", "sane:test", "--service", "vista"],
        &["--service", "service model"],
    );
    refused(
        &["run", "--driver", "sane:test", "--realtime"],
        &["--realtime"],
    );
    refused(
        &[
            "run",
            "--driver",
            "sane:test",
            "--replay",
            "fixtures/recordings",
        ],
        &["--replay"],
    );
    // A SANE backend has no USB session to record.
    refused(
        &[
            "record",
            "--driver",
            "sane:test",
            "--scenario",
            "fixtures/scenarios/callback/s-false-first-band.json",
            "--out",
            "target/never-written",
        ],
        &["sane:test", "cannot be recorded"],
    );
    // A replay over USB/IP of a folder that holds no recording: one line, before any server
    // starts.
    refused(
        &[
            "run",
            "--replay",
            "fixtures/recordings",
            "--transport",
            "usbip",
        ],
        &["replay", "fixtures/recordings/recording.json"],
    );
}

#[test]
fn input_errors_come_before_any_output() {
    let d = temp_dir("early");
    // A --junit or --report file in a folder that does not exist.
    let junit = d.join("no-such-folder").join("out.xml");
    refused(
        &[
            "run",
            "--filter",
            "callback/*",
            "--junit",
            junit.to_str().unwrap(),
        ],
        &["--junit", "no-such-folder"],
    );
    let report = d.join("nope").join("r.html");
    refused(
        &["run", "--report", report.to_str().unwrap()],
        &["--report", "nope"],
    );
    // A folder given as --junit.
    refused(
        &["run", "--junit", d.to_str().unwrap()],
        &["--junit", "is a folder"],
    );
    // A file given as the --pcap or --traces folder; a --pcap folder that cannot be made.
    let file = d.join("a-file");
    std::fs::write(&file, "x").unwrap();
    refused(
        &["run", "--pcap", file.to_str().unwrap()],
        &["--pcap", "is a file, not a folder"],
    );
    refused(
        &["run", "--traces", file.to_str().unwrap()],
        &["--traces", "is a file, not a folder"],
    );
    refused(
        &["run", "--pcap", file.join("caps").to_str().unwrap()],
        &["--pcap", "a-file/caps"],
    );
    let traces = d.join("traces");
    refused(
        &[
            "run",
            "--filter",
            "no-such/*",
            "--traces",
            traces.to_str().unwrap(),
        ],
        &["--filter", "matches no scenario"],
    );
    assert!(!traces.exists(), "bad input left a --traces folder behind");
    // A scenario whose profile does not exist: found before the first row, not after.
    let group = d.join("scn").join("g");
    std::fs::create_dir_all(&group).unwrap();
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/scenarios/callback/s-false-first-band.json"),
    )
    .unwrap();
    std::fs::write(group.join("a.json"), &good).unwrap();
    let v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let profile = v["profile"].as_str().unwrap();
    std::fs::write(
        group.join("b.json"),
        good.replacen(&format!("\"{profile}\""), "\"no-such-profile\"", 1),
    )
    .unwrap();
    refused(
        &["run", "--scenarios", d.join("scn").to_str().unwrap()],
        &["b.json", "no-such-profile"],
    );
    // Nothing was left behind by the checks.
    assert!(!junit.exists() && !d.join("no-such-folder").exists());
}

#[test]
fn a_reader_that_goes_away_ends_output_quietly() {
    let d = temp_dir("pipe");
    let xml = d.join("out.xml");
    let trace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/recordings/complete-gray8-inproc/trace.jsonl");
    let cases: Vec<Vec<String>> = vec![
        vec!["list".into()],
        vec!["drivers".into()],
        vec!["explain".into()],
        vec!["explain".into(), "WIA-RET-SFALSE".into()],
        vec!["show".into(), trace.display().to_string()],
        vec![
            "run".into(),
            "--filter".into(),
            "callback/*".into(),
            "--junit".into(),
            xml.display().to_string(),
        ],
    ];
    for args in cases {
        // A pipe whose reader is gone before the first write, as `| head` leaves it.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = bin().args(&args).stdout(writer).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
    }
    // The run went on quietly and wrote its JUnit.
    let report = quick_junit::Report::deserialize_from_str(&std::fs::read_to_string(&xml).unwrap())
        .expect("JUnit XML parses");
    assert!(report.tests > 10);
}

#[test]
fn exec_driver_traces_stay_inside_the_traces_folder() {
    let d = temp_dir("exec-traces");
    let traces = d.join("t");
    // `..` in the command line: the folder is named from the sanitised driver name.
    let driver = "exec:python3 conformance/../conformance/examples/reference_driver.py";
    let o = run(&[
        "run",
        "--driver",
        driver,
        "--filter",
        "callback/s-false-first-band",
        "--service",
        "xp",
        "--traces",
        traces.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let top: Vec<_> = std::fs::read_dir(&traces)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(top.len(), 1, "{top:?}");
    assert!(
        top[0].starts_with("exec-python3-conformance-..-conformance-examples"),
        "{top:?}"
    );
    assert_eq!(top[0], scanconform::report::driver_folder(driver));
    let mut files = Vec::new();
    collect(&traces, &mut files);
    assert!(files
        .iter()
        .any(|f| f.ends_with("xp/callback/s-false-first-band.jsonl")));
    // Nothing was written beside the traces folder.
    let beside: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
    assert_eq!(beside.len(), 1);
    // The report reads it back with the driver's real name.
    let html = d.join("r.html");
    let o = run(&[
        "report",
        "--traces",
        traces.to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("exec:python3 conformance/../conformance/examples/reference_driver.py"));
}

#[test]
fn legacy_xp_passes_and_reports_wasted_bands() {
    let o = run(&["run", "--driver", "legacy-xp", "--filter", "cancel-io/*"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let wasted: u32 = out
        .lines()
        .find_map(|l| l.split("runs, ").nth(1)?.split(' ').next()?.parse().ok())
        .expect("summary line with bands wasted");
    assert!(wasted > 0, "{out}");
}

#[test]
fn a_profile_path_is_relative_to_the_scenario_folder() {
    // conformance/SCENARIOS.md: a profile that is a path is relative to the scenario's folder,
    // whatever the current directory (here the repository root, not the scenario's folder).
    let d = temp_dir("profile-path");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scenario =
        std::fs::read_to_string(repo.join("fixtures/scenarios/callback/s-false-mid-scan.json"))
            .unwrap();
    let profile = repo.join("fixtures/profiles/fast-flatbed.json");
    for dir in ["one", "many", "profs"] {
        std::fs::create_dir_all(d.join(dir)).unwrap();
    }
    std::fs::copy(&profile, d.join("one/myprof.json")).unwrap();
    std::fs::copy(&profile, d.join("profs/other.json")).unwrap();
    let with = |profile: &str| scenario.replace("\"fast-flatbed\"", &format!("{profile:?}"));
    std::fs::write(d.join("one/beside.json"), with("myprof.json")).unwrap();
    std::fs::write(d.join("many/a.json"), with("../profs/other.json")).unwrap();
    std::fs::write(d.join("many/b.json"), with("fast-flatbed")).unwrap();
    for (scenarios, runs) in [("one/beside.json", 2), ("many", 4)] {
        let o = run(&["run", "--scenarios", d.join(scenarios).to_str().unwrap()]);
        assert!(o.status.success(), "{scenarios}: {}", text(&o));
        let summary = format!("{runs} passed, 0 failed");
        assert!(text(&o).contains(&summary), "{scenarios}: {}", text(&o));
    }

    // A missing one is named by the path that was looked for, not `<name>.json.json`.
    std::fs::write(d.join("one/beside.json"), with("nothere.json")).unwrap();
    let o = run(&[
        "run",
        "--scenarios",
        d.join("one/beside.json").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("one/nothere.json"), "{err}");
    assert!(!err.contains(".json.json"), "{err}");
    assert!(o.stdout.is_empty(), "output before the error: {err}");
}

#[test]
fn show_marks_the_violation_in_text_mode() {
    let d = temp_dir("show");
    let traces = d.join("traces");
    let o = run(&[
        "run",
        "--driver",
        "mutant-no-status-poll",
        "--service",
        "xp",
        "--filter",
        "callback/s-false-mid-scan",
        "--traces",
        traces.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let trace = traces.join("mutant-no-status-poll/xp/callback/s-false-mid-scan.jsonl");
    let verdict: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(trace.with_file_name("s-false-mid-scan.verdict.json")).unwrap(),
    )
    .unwrap();
    let event = verdict["failed"][0]["event"].as_u64().unwrap() as usize;
    let rule = verdict["failed"][0]["id"].as_str().unwrap();
    let o = run(&["show", trace.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let marked: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with(">> "))
        .collect();
    // One line per event, the violating one marked, the rule and what was wrong under it.
    assert_eq!(marked, [event], "{out}");
    assert!(
        lines[event + 1].starts_with(&format!("   ^ {rule}: ")),
        "{}",
        lines[event + 1]
    );
    assert!(lines.last().unwrap().contains(rule), "{out}");
    // Without the verdict beside it, the plain text: nothing marked.
    std::fs::remove_file(trace.with_file_name("s-false-mid-scan.verdict.json")).unwrap();
    let o = run(&["show", trace.to_str().unwrap()]);
    let plain = String::from_utf8_lossy(&o.stdout);
    assert!(!plain.contains(">> ") && !plain.contains(" ^ "), "{plain}");
    assert_eq!(plain.lines().count(), lines.len() - 2);
}
