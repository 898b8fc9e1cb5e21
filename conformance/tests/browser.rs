//! The HTML report in a real browser: Debian's headless Chromium opens the report of the whole
//! catalog for the reference driver and `mutant-no-status-poll`, the summary table has one row per
//! run, `#expand-first-failure` opens the first failed run and draws its timeline with the
//! violation marker on the event its verdict names, a SANE run (when the SANE test backend is
//! installed) opens with its own timeline and its finding marked, and a screenshot is kept under
//! `target/report-artifacts/`. Skipped (with a printed reason) only when Chromium is absent and
//! CI is not set; under `CI=true` a missing Chromium fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scanconform::report::html as html_report;

const CHROMIUM: &str = "chromium";

fn chromium_present() -> bool {
    Command::new(CHROMIUM)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Runs Chromium headless on `url` with `extra` flags; kills it after `limit`. Returns stdout.
fn chromium(profile: &Path, url: &str, extra: &[&str], limit: Duration) -> String {
    let _ = std::fs::remove_dir_all(profile);
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {limit:?} on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

fn scanconform(args: &[&str]) -> i32 {
    Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let key = format!("id=\"{id}\">");
    dom.find(&key)
        .map(|i| &dom[i + key.len()..])
        .and_then(|rest| rest.split('<').next())
        .unwrap_or("")
}

#[test]
fn report_opens_in_headless_chromium() {
    if !chromium_present() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but `{CHROMIUM}` cannot run: .ci/run should install Debian's chromium");
        }
        println!(
            "skipped: `{CHROMIUM}` is not installed (apt-get install chromium) and CI is not set"
        );
        return;
    }
    let work = target_dir().join("report-artifacts");
    std::fs::create_dir_all(&work).unwrap();
    let traces = work.join("traces");
    let _ = std::fs::remove_dir_all(&traces);
    let t = traces.to_str().unwrap();
    assert_eq!(
        scanconform(&["run", "--driver", "reference", "--traces", t]),
        0
    );
    assert_eq!(
        scanconform(&["run", "--driver", "mutant-no-status-poll", "--traces", t]),
        1
    );
    // A SANE run goes into the same report, when the SANE test backend is installed.
    let sane = match scanconform::sane::target::resolve("test") {
        Ok(_) => {
            assert_eq!(
                scanconform(&[
                    "run",
                    "--driver",
                    "sane:test",
                    "--filter",
                    "sane/cancel-blocked-read-signal",
                    "--traces",
                    t
                ]),
                0
            );
            true
        }
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but the SANE test backend is missing: {e}")
        }
        Err(e) => {
            println!("no SANE run in the report: {e}");
            false
        }
    };
    let html = work.join("report.html");
    assert_eq!(
        scanconform(&["report", "--traces", t, "--out", html.to_str().unwrap()]),
        0
    );
    let size = std::fs::metadata(&html).unwrap().len();
    let runs = html_report::load_dir(&traces).unwrap();
    let mut failures: Vec<_> = runs
        .iter()
        .filter(|r| r.verdict.verdict == scanconform::report::Verdict::Fail)
        .collect();
    failures.sort_by(|a, b| {
        (&a.verdict.driver, &a.verdict.scenario, &a.verdict.service).cmp(&(
            &b.verdict.driver,
            &b.verdict.scenario,
            &b.verdict.service,
        ))
    });
    let first = &failures.first().expect("the mutant fails").verdict;
    let url = format!("file://{}", html.canonicalize().unwrap().display());
    let profile = work.join("chromium-profile");

    // Plain load: how long the page takes to be ready (performance.now() written into the DOM).
    let started = Instant::now();
    let dom = chromium(&profile, &url, &["--dump-dom"], Duration::from_secs(90));
    let wall = started.elapsed();
    let ready_ms: f64 = text_of(&dom, "load-ms")
        .parse()
        .expect("the page's script ran");
    println!(
        "report: {} runs, {size} bytes; chromium: page ready after {ready_ms} ms, load event {} ms, command wall time {wall:?}",
        runs.len(),
        text_of(&dom, "load-event-ms")
    );
    assert_eq!(dom.matches("<tr class=\"run-row ").count(), runs.len());
    assert!(ready_ms < 5000.0, "page took {ready_ms} ms to be ready");

    // Expanding the first failure draws its timeline with the marker on the verdict's event.
    let dom = chromium(
        &profile,
        &format!("{url}#expand-first-failure"),
        &["--virtual-time-budget=10000", "--dump-dom"],
        Duration::from_secs(90),
    );
    assert_eq!(
        dom.matches("data-rendered=\"1\"").count(),
        1,
        "one timeline drawn"
    );
    let marker = format!(
        "<g class=\"violation\" data-rule=\"{}\" data-event=\"{}\"",
        first.failed[0].id, first.failed[0].event
    );
    assert!(dom.contains(&marker), "missing {marker}");
    assert!(first.failed.iter().any(|f| f.id == "USB-STATUS-POLLED"));

    // The SANE run opens with its own timeline: the expected failure marked on its call.
    if sane {
        let page = std::fs::read_to_string(&html).unwrap();
        let at = page
            .find("<b>sane/cancel-blocked-read-signal</b>")
            .expect("the SANE run is in the report");
        let id = page[..at]
            .rfind("id=\"run-")
            .map(|i| &page[i + 4..])
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string();
        let dom = chromium(
            &profile,
            &format!("{url}#{id}"),
            &["--virtual-time-budget=10000", "--dump-dom"],
            Duration::from_secs(90),
        );
        assert_eq!(dom.matches("data-rendered=\"1\"").count(), 1, "{id} drawn");
        assert!(
            dom.contains("<g class=\"violation\" data-rule=\"SANE-CANCEL-STATUS\""),
            "the SANE timeline marks its expected failure"
        );
        assert!(dom.contains("tl-legend-sane"));
    }

    let shot = work.join("report.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &profile,
        &format!("{url}#show-first-failure"),
        &[
            "--virtual-time-budget=10000",
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,1000",
        ],
        Duration::from_secs(90),
    );
    let png = std::fs::metadata(&shot).expect("screenshot written").len();
    assert!(png > 10_000, "screenshot is {png} bytes");
    let _ = std::fs::remove_dir_all(&profile);
}
