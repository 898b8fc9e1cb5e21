//! The HTML report in a real browser: Debian's headless Chromium opens the report of the whole
//! catalog for the reference driver and `mutant-no-status-poll`, the summary table has one row per
//! run, `#expand-first-failure` opens the first failed run and draws its timeline with the
//! violation marker on the event its verdict names, a SANE run (when the SANE test backend is
//! installed) opens with its own timeline and its finding marked, and a screenshot is kept under
//! `target/report-artifacts/`; the header says runs, failures, drivers and when, not page-load
//! timings.
//!
//! Pictures that fit: over the DevTools protocol, at 1280x800 with `#expand-first-failure`, the
//! first failure's timeline is measured in the page (DOM geometry): every lane name, the
//! violation flag, the violation sentence and the whole quote lie inside the screen and inside
//! what the timeline's scroller shows, nothing is truncated, and no two labels overlap (nor a
//! label the flag or a lane name); the screenshot is kept as
//! `target/report-artifacts/first-failure-1280x800.png`. Skipped (with a printed reason) only
//! when Chromium is absent and CI is not set; under `CI=true` a missing Chromium fails.

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

    // Plain load: the page's script ran; the header says what a user needs (runs, failures,
    // drivers, when, which build), not page-load timings.
    let dom = chromium(&profile, &url, &["--dump-dom"], Duration::from_secs(90));
    println!("report: {} runs, {size} bytes", runs.len());
    assert!(dom.contains("data-ready=\"1\""), "the page's script ran");
    let failed = runs
        .iter()
        .filter(|r| r.verdict.verdict == scanconform::report::Verdict::Fail)
        .count();
    assert!(
        dom.contains(&format!("{} runs: ", runs.len()))
            && dom.contains(&format!("{failed} failed"))
            && dom.contains("drivers: ")
            && dom.contains("mutant-no-status-poll"),
        "header"
    );
    assert!(!text_of(&dom, "when").is_empty(), "the header says when");
    assert!(!dom.contains("load-ms") && !dom.contains("page ready"));
    assert_eq!(dom.matches("<tr class=\"run-row ").count(), runs.len());

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

/// Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands
/// on its fd 3, answers on its fd 4, each a JSON message ended by NUL).
struct DevTools {
    child: std::process::Child,
    to: std::process::ChildStdin,
    from: std::sync::mpsc::Receiver<serde_json::Value>,
    next: u64,
    session: Option<String>,
}

impl DevTools {
    fn start(profile: &Path) -> DevTools {
        let _ = std::fs::remove_dir_all(profile);
        // The shell gives Chromium our pipes as fds 3 and 4.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec {CHROMIUM} --headless --no-sandbox --disable-gpu --no-first-run \
                 --disable-background-networking --disable-component-update --disable-sync \
                 --disable-dev-shm-usage --hide-scrollbars=false --user-data-dir='{}' \
                 --remote-debugging-pipe 3<&0 4>&1 0</dev/null 1>/dev/null 2>/dev/null",
                profile.display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let to = child.stdin.take().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, from) = std::sync::mpsc::channel();
        std::thread::spawn(move || loop {
            let mut msg = Vec::new();
            match std::io::BufRead::read_until(&mut out, 0, &mut msg) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    msg.pop();
                    if let Ok(v) = serde_json::from_slice(&msg) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        DevTools {
            child,
            to,
            from,
            next: 0,
            session: None,
        }
    }

    /// Sends `method` and waits (bounded) for its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::Write as _;
        self.next += 1;
        let mut msg = serde_json::json!({"id": self.next, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = serde_json::Value::from(s.as_str());
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer from chromium to {method}"));
            if v["id"] == self.next {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page; its value.
    fn eval(&mut self, js: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }
}

impl Drop for DevTools {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page measures of the opened run's timeline: boxes in viewport pixels.
const MEASURE: &str = r#"(() => {
  const d = document.querySelector('details.run[open]');
  const w = d.querySelector('.tl-wrap');
  const svg = w.querySelector('svg.timeline');
  const r = w.getBoundingClientRect();
  const box = e => { const b = e.getBoundingClientRect();
    return {x: b.left, y: b.top, r: b.right, b: b.bottom, text: e.textContent}; };
  const all = sel => Array.from(svg.querySelectorAll(sel)).map(box);
  return JSON.stringify({
    viewport: {x: 0, y: 0, r: innerWidth, b: innerHeight},
    visible: {x: r.left + w.clientLeft, y: r.top + w.clientTop,
              r: r.left + w.clientLeft + w.clientWidth, b: r.top + w.clientTop + w.clientHeight},
    svg: box(svg),
    lanes: all('.tl-pinned .tl-lane'),
    pins: all('.tl-pinned .tl-pin'),
    flags: all('.violation .vflag'),
    heads: all('.tl-pinned .vflag'),
    quotes: all('.tl-pinned .vquote'),
    labels: all('.tl-label'),
  });
})()"#;

#[derive(Debug, serde::Deserialize)]
struct Box2 {
    x: f64,
    y: f64,
    r: f64,
    b: f64,
    #[serde(default)]
    text: String,
}

impl Box2 {
    fn inside(&self, o: &Box2) -> bool {
        self.x >= o.x - 0.5 && self.r <= o.r + 0.5 && self.y >= o.y - 0.5 && self.b <= o.b + 0.5
    }

    fn overlaps(&self, o: &Box2) -> bool {
        self.x < o.r - 0.5 && o.x < self.r - 0.5 && self.y < o.b - 0.5 && o.y < self.b - 0.5
    }
}

#[derive(Debug, serde::Deserialize)]
struct Measured {
    viewport: Box2,
    visible: Box2,
    svg: Box2,
    lanes: Vec<Box2>,
    pins: Vec<Box2>,
    flags: Vec<Box2>,
    heads: Vec<Box2>,
    quotes: Vec<Box2>,
    labels: Vec<Box2>,
}

#[test]
fn the_first_failure_fits_a_1280x800_screen() {
    if !chromium_present() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but `{CHROMIUM}` cannot run: .ci/run should install Debian's chromium");
        }
        println!("skipped: `{CHROMIUM}` is not installed and CI is not set");
        return;
    }
    let work = target_dir().join("report-artifacts");
    std::fs::create_dir_all(&work).unwrap();
    let traces = work.join("fit-traces");
    let _ = std::fs::remove_dir_all(&traces);
    let html = work.join("fit-report.html");
    assert_eq!(
        scanconform(&[
            "run",
            "--driver",
            "mutant-no-status-poll",
            "--traces",
            traces.to_str().unwrap(),
            "--report",
            html.to_str().unwrap(),
        ]),
        1
    );
    // The first failure of the report: failures first, then by driver, scenario, service.
    let mut failures: Vec<_> = html_report::load_dir(&traces)
        .unwrap()
        .into_iter()
        .filter(|r| r.verdict.verdict == scanconform::report::Verdict::Fail)
        .map(|r| r.verdict)
        .collect();
    failures.sort_by(|a, b| {
        (&a.driver, &a.scenario, &a.service).cmp(&(&b.driver, &b.scenario, &b.service))
    });
    let first = &failures[0];
    let url = format!(
        "file://{}#expand-first-failure",
        html.canonicalize().unwrap().display()
    );

    let mut cdp = DevTools::start(&work.join("fit-chromium-profile"));
    let target = cdp.call(
        "Target.createTarget",
        serde_json::json!({"url": "about:blank"}),
    );
    let attached = cdp.call(
        "Target.attachToTarget",
        serde_json::json!({"targetId": target["targetId"], "flatten": true}),
    );
    cdp.session = attached["sessionId"].as_str().map(str::to_string);
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
    );
    cdp.call("Page.navigate", serde_json::json!({"url": url}));
    let started = Instant::now();
    while cdp.eval("document.querySelector('.tl-wrap[data-rendered]') ? 1 : 0") != 1 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first failure's timeline was never drawn"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let m: Measured = serde_json::from_str(cdp.eval(MEASURE).as_str().unwrap()).unwrap();

    let shot = work.join("first-failure-1280x800.png");
    let png = cdp.call(
        "Page.captureScreenshot",
        serde_json::json!({"format": "png"}),
    );
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        png["data"].as_str().unwrap(),
    )
    .unwrap();
    std::fs::write(&shot, &png).unwrap();
    println!("screenshot: {}", shot.display());
    assert!(png.len() > 10_000, "screenshot is {} bytes", png.len());
    drop(cdp);

    // On screen and inside what the timeline's scroller shows: every lane name, the violation
    // flag, what was wrong and the whole quote.
    let area = |b: &Box2, what: &str| {
        assert!(
            b.inside(&m.visible) && b.inside(&m.viewport) && b.inside(&m.svg),
            "{what} {:?} is cut off (visible {:?}, viewport {:?}, picture {:?})",
            b.text,
            m.visible,
            m.viewport,
            m.svg
        );
    };
    assert_eq!(
        m.lanes.iter().map(|b| b.text.as_str()).collect::<Vec<_>>(),
        ["app", "service", "driver", "usb", "device"]
    );
    for b in &m.lanes {
        area(b, "lane name");
    }
    assert_eq!(m.flags.len(), first.failed.len());
    for b in m.flags.iter().chain(&m.heads).chain(&m.quotes) {
        area(b, "violation text");
        assert!(!b.text.contains('…'), "{:?} is truncated", b.text);
    }
    let joined = |v: &[Box2]| {
        v.iter()
            .map(|b| b.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let f = &first.failed[0];
    assert!(
        joined(&m.heads).contains(&f.message),
        "the violation sentence: {:?}",
        joined(&m.heads)
    );
    assert!(
        joined(&m.quotes).contains(&format!("“{}”", f.quote)),
        "the whole quote: {:?}",
        joined(&m.quotes)
    );

    // No two labels overlap, nor a label the violation flag; the labels in view stay clear of
    // the lane names.
    let pinned_right = m.pins.iter().map(|p| p.r).fold(0.0, f64::max);
    for (i, a) in m.labels.iter().enumerate() {
        for b in &m.labels[i + 1..] {
            assert!(
                !a.overlaps(b),
                "labels {:?} and {:?} overlap",
                a.text,
                b.text
            );
        }
        for fl in &m.flags {
            assert!(!a.overlaps(fl), "label {:?} overlaps the flag", a.text);
        }
        if a.x >= pinned_right && a.inside(&m.visible) {
            for l in &m.lanes {
                assert!(
                    !a.overlaps(l),
                    "label {:?} overlaps lane {:?}",
                    a.text,
                    l.text
                );
            }
        }
    }
    assert!(
        m.labels.iter().filter(|l| l.inside(&m.visible)).count() >= 5,
        "labels in view: {:?}",
        m.labels.iter().map(|l| &l.text).collect::<Vec<_>>()
    );
}
