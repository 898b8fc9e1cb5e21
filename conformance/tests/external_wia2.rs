//! The WIA 2.0 contract of the external driver protocol (`conformance/DRIVER-PROTOCOL.md`, "The
//! WIA 2.0 contract").
//!
//! - The Python port of `reference-wia2` (`conformance/examples/reference_wia2_driver.py`)
//!   gives traces byte-identical to the in-process driver's on every WIA 2.0 scenario (service
//!   restarts and identical devices included: a process per driver instance), and passes
//!   every rule.
//! - A malformed or out-of-turn WIA 2.0 message, a driver of the wrong contract, or one that
//!   stops answering in the middle of a stream exchange ends in a failed verdict with one
//!   `driver-fault` line saying what happened, never a hang.
//! - A WIA 2.0 driver under a WIA 1.0 run is refused at its `hello`, with what to run instead.
//!
//! Drivers run as `python3 -S` here: the same programs, without site-packages start-up time.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use scanconform::driver::wia2::MiniDriver2;
use scanconform::drivers::external::{ExternalConfig, ExternalDriver};
use scanconform::drivers::wia2 as drivers2;
use scanconform::rules::wia2 as rules2;
use scanconform::run::wia2::{run2, Run2Result};
use scanconform::scenario::wia2::{self as scenario2, LoadedScenario2};
use scanconform::trace::Kind;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn fixtures() -> PathBuf {
    root().join("../fixtures")
}

fn catalog() -> Vec<LoadedScenario2> {
    let list = scenario2::discover(&fixtures().join("scenarios")).unwrap();
    for s in &list {
        s.validate(rules2::known).unwrap();
    }
    list
}

fn port_command() -> String {
    format!(
        "python3 -S '{}'",
        root()
            .join("examples/reference_wia2_driver.py")
            .display()
            .to_string()
            .replace('\'', "'\\''")
    )
}

/// A factory of external WIA 2.0 drivers running `command`.
fn external(command: &str, config: ExternalConfig) -> drivers2::Factory2 {
    let template = ExternalDriver::new_wia2(command, config).unwrap();
    Rc::new(move || Rc::new(template.another()) as Rc<dyn MiniDriver2>)
}

fn run(s: &LoadedScenario2, name: &str, factory: drivers2::Factory2) -> Run2Result {
    run2(s, name, factory, &fixtures().join("profiles")).unwrap()
}

#[test]
fn python_port_traces_equal_the_in_process_reference_wia2_on_every_scenario() {
    let command = port_command();
    let mut problems = Vec::new();
    let list = catalog();
    assert!(list.len() >= 40);
    for s in &list {
        let builtin = run(
            s,
            "reference-wia2",
            drivers2::factory("reference-wia2").unwrap(),
        );
        let port = run(
            s,
            "reference-wia2",
            external(&command, ExternalConfig::default()),
        );
        if !port.passed() {
            problems.push(port.failure_details());
        }
        if let Some(e) = port
            .trace
            .events
            .iter()
            .find(|e| matches!(e.kind, Kind::Log { .. } | Kind::DriverFault { .. }))
        {
            problems.push(format!("{}: {e:?}", s.id));
        }
        let (a, b) = (builtin.trace.to_json_lines(), port.trace.to_json_lines());
        if a != b {
            let at = a
                .lines()
                .zip(b.lines())
                .position(|(x, y)| x != y)
                .unwrap_or(a.lines().count().min(b.lines().count()));
            problems.push(format!(
                "{}: traces differ at event {at}:\n  in-process {}\n  python     {}",
                s.id,
                a.lines().nth(at).unwrap_or("(end)"),
                b.lines().nth(at).unwrap_or("(end)")
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// A Python driver that answers `hello` with `hello`, then, when `acquire_item_data` comes,
/// writes `lines` one per turn (a line `READ` reads the runner's next message instead), and
/// then waits for the end of its stdin.
fn scripted(dir: &Path, name: &str, hello: &str, lines: &[&str]) -> String {
    let script = dir.join(format!("{name}.py"));
    let body = format!(
        "import sys\n\
         def out(l):\n    sys.stdout.write(l + '\\n'); sys.stdout.flush()\n\
         sys.stdin.readline()\n\
         out({hello:?})\n\
         while True:\n    m = sys.stdin.readline()\n    if not m: sys.exit(0)\n    if 'acquire_item_data' in m: break\n\
         for l in {lines:?}:\n    if l == 'READ':\n        sys.stdin.readline()\n    else:\n        out(l)\n\
         sys.stdin.read()\n"
    );
    std::fs::write(&script, body).unwrap();
    format!("python3 -S '{}'", script.display())
}

const HELLO2: &str =
    r#"{"type":"hello","protocol":1,"contract":"wia2","name":"t","version":"1","capabilities":{}}"#;
const GNS: &str =
    r#"{"type":"get_next_stream","item_name":"Flatbed","full_item_name":"0000\\Root\\Flatbed"}"#;

/// The `driver-fault` texts of a run of `command` on a simple download, which must fail and
/// end well within the wall-clock guard's reach.
fn faults(command: &str, config: ExternalConfig) -> Vec<String> {
    let s = catalog()
        .into_iter()
        .find(|s| s.id == "wia2/complete/flatbed-gray8")
        .expect("wia2/complete/flatbed-gray8");
    let began = std::time::Instant::now();
    let r = run(&s, "hostile", external(command, config));
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "{command}: took {:?}",
        began.elapsed()
    );
    assert!(!r.passed(), "{command}: passed");
    assert!(
        r.report.failed().iter().any(|f| f.id == "WIA2-NO-HANG"),
        "{command}: {}",
        r.failure_details()
    );
    r.trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::DriverFault { what } => Some(what.clone()),
            _ => None,
        })
        .collect()
}

fn assert_one_fault(command: &str, config: ExternalConfig, needle: &str) {
    let f = faults(command, config);
    assert_eq!(f.len(), 1, "{command}: {f:?}");
    assert!(
        f[0].contains(needle) && !f[0].contains('\n'),
        "{command}: {needle:?} not in {:?}",
        f[0]
    );
}

#[test]
fn malformed_and_out_of_turn_wia2_messages_are_one_line_driver_faults() {
    let dir = std::env::temp_dir().join(format!("scanconform-ext-wia2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = ExternalConfig::default;
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "callback",
            HELLO2,
            &[r#"{"type":"callback","reason":2,"status":4,"percent":1,"offset":0,"length":0}"#],
            "protocol: callback needs the wia contract; the driver chose wia2 in its hello",
        ),
        (
            "unknown-stream",
            HELLO2,
            &[r#"{"type":"stream","stream":7,"op":"stat"}"#],
            "protocol: stream 7 of a stream stat: no next_stream gave that stream",
        ),
        (
            "release-unknown",
            HELLO2,
            &[r#"{"type":"release","stream":3}"#],
            "no next_stream gave that stream",
        ),
        (
            "bad-origin",
            HELLO2,
            &[
                GNS,
                "READ",
                r#"{"type":"stream","stream":1,"op":"seek","offset":0,"origin":7}"#,
            ],
            "stream seek origin 7 is no STREAM_SEEK_*",
        ),
        (
            "unknown-op",
            HELLO2,
            &[r#"{"type":"stream","stream":1,"op":"commit"}"#],
            "protocol: not a valid message after acquire_item_data",
        ),
        (
            "not-base64",
            HELLO2,
            &[
                GNS,
                "READ",
                r#"{"type":"stream","stream":1,"op":"write","data":"***"}"#,
            ],
            "stream write data is not base64",
        ),
        (
            "status-too-wide",
            HELLO2,
            &[r#"{"type":"send_message","msg":1,"percent":0,"bytes":0,"status":1099511627776}"#],
            "send_message status 1099511627776 is not a 32-bit HRESULT",
        ),
        (
            "missing-field",
            HELLO2,
            &[r#"{"type":"send_message","msg":1,"percent":0}"#],
            "missing field",
        ),
        (
            "notify-done-out-of-turn",
            HELLO2,
            &[r#"{"type":"notify_done"}"#],
            "protocol: notify_done out of turn",
        ),
        (
            "wia-driver",
            r#"{"type":"hello","protocol":1,"name":"t","version":"1","capabilities":{"async_cancel":true}}"#,
            &[],
            "the driver chose contract wia in its hello; this run needs a wia2 driver",
        ),
        (
            "unknown-contract",
            r#"{"type":"hello","protocol":1,"contract":"twain","name":"t","version":"1","capabilities":{}}"#,
            &[],
            "the driver chose contract \"twain\", the runner offers wia and wia2",
        ),
        (
            "exits-in-get-next-stream",
            HELLO2,
            &[GNS, "READ", "EXIT"],
            "the driver",
        ),
    ];
    for (name, hello, lines, needle) in cases {
        let mut command = scripted(&dir, name, hello, lines);
        if lines.contains(&"EXIT") {
            // Exits instead of writing: the script's `out('EXIT')` line is replaced.
            let script = dir.join(format!("{name}.py"));
            let body = std::fs::read_to_string(&script).unwrap().replace(
                "    else:\n        out(l)",
                "    elif l == 'EXIT':\n        sys.exit(3)\n    else:\n        out(l)",
            );
            std::fs::write(&script, body).unwrap();
            command = format!("python3 -S '{}'", script.display());
        }
        assert_one_fault(&command, config(), needle);
    }
    // Silent while the runner waits for its answer to next_stream: the wall-clock guard.
    let command = scripted(&dir, "silent", HELLO2, &[GNS]);
    assert_one_fault(
        &command,
        ExternalConfig::default().with_reply_timeout(Duration::from_millis(1500)),
        "hang: the driver did not answer next_stream within 1500 ms",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wia2_driver_is_refused_by_a_wia_run() {
    use scanconform::run as wia_run;
    use scanconform::scenario::{self, ServiceModel};
    let dir = fixtures().join("scenarios");
    let s = scenario::load(&dir.join("callback/s-false-first-band.json"), &dir).unwrap();
    let driver = Rc::new(ExternalDriver::new(&port_command(), ExternalConfig::default()).unwrap());
    let r = wia_run::run(
        &s,
        ServiceModel::Xp,
        "port",
        driver,
        &fixtures().join("profiles"),
    )
    .unwrap();
    assert!(!r.passed());
    let faults: Vec<&str> = r
        .trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::DriverFault { what } => Some(what.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        faults,
        ["protocol: the driver chose contract wia2 in its hello; this run needs a wia driver (a wia2 driver runs the WIA 2.0 scenarios: --scenarios fixtures/scenarios/wia2)"]
    );
}
