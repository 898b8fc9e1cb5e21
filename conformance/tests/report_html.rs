//! The timeline SVG and the HTML report: well-formed XML, byte-identical on re-render, the
//! violation marker on the event the rule names, and the verdict files read back.

use std::path::{Path, PathBuf};

use scanconform::report::html::{self as html_report};
use scanconform::report::timeline::{self, SvgOptions};
use scanconform::report::{RunRecord, RunTrace};
use scanconform::run::{self, RunResult};
use scanconform::scenario::{self, ServiceModel};
use scanconform::{drivers, report};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn run_one(driver: &str, id: &str, service: ServiceModel) -> RunResult {
    let catalog = scenario::discover(&fixtures().join("scenarios")).unwrap();
    let s = catalog
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("scenario {id} not in the catalog"));
    let d = drivers::instantiate(driver).unwrap();
    run::run(s, service, driver, d, &fixtures().join("profiles")).unwrap()
}

fn failing_run() -> RunResult {
    let r = run_one(
        "mutant-no-status-poll",
        "callback/s-false-mid-scan",
        ServiceModel::Xp,
    );
    assert!(!r.passed(), "the mutant should fail this scenario");
    r
}

/// The x of the violation marker and of the event element it names, from a parsed SVG.
fn marker_and_event_x(svg: &str) -> Vec<(String, usize, f64, f64)> {
    let doc = roxmltree::Document::parse(svg).expect("SVG is well-formed XML");
    let mut out = Vec::new();
    for v in doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("violation"))
    {
        let rule = v.attribute("data-rule").unwrap().to_string();
        let event: usize = v.attribute("data-event").unwrap().parse().unwrap();
        let mx: f64 = v.attribute("data-x").unwrap().parse().unwrap();
        let ev = doc
            .descendants()
            .find(|n| n.attribute("data-i") == Some(event.to_string().as_str()))
            .expect("the marked event is drawn");
        let shape = ev.first_element_child().unwrap();
        let ex: f64 = match shape.tag_name().name() {
            "circle" => shape.attribute("cx").unwrap().parse().unwrap(),
            "rect" => {
                shape.attribute("x").unwrap().parse::<f64>().unwrap()
                    + shape.attribute("width").unwrap().parse::<f64>().unwrap() / 2.0
            }
            _ => {
                let d = shape.attribute("d").unwrap();
                d[1..].split(' ').next().unwrap().parse().unwrap()
            }
        };
        let title = ev
            .children()
            .find(|n| n.tag_name().name() == "title")
            .and_then(|t| t.text())
            .unwrap();
        assert!(title.starts_with(&format!("#{event} ")), "{title}");
        out.push((rule, event, mx, ex));
    }
    out
}

#[test]
fn svg_is_well_formed_deterministic_and_marks_the_violating_event() {
    let r = failing_run();
    let v = RunRecord::wia(&r).verdict;
    let opts = SvgOptions::standalone(v.title());
    let a = timeline::render_svg(&r.trace, &v.marks(), &opts);
    let b = timeline::render_svg(&r.trace, &v.marks(), &opts);
    assert_eq!(a, b, "rendering twice gives the same bytes");
    let doc = roxmltree::Document::parse(&a).expect("SVG is well-formed XML");
    let drawn = doc
        .descendants()
        .filter(|n| n.attribute("data-i").is_some())
        .count();
    assert_eq!(drawn, r.trace.events.len(), "one element per event");
    for lane in ["app", "service", "driver", "usb", "device"] {
        assert!(
            doc.descendants()
                .any(|n| n.attribute("class") == Some("tl-lane") && n.text() == Some(lane)),
            "lane {lane} is labelled"
        );
    }
    assert!(
        doc.descendants()
            .any(|n| n.attribute("class") == Some("tl-tick")
                && n.text().is_some_and(|t| t.ends_with(" ms"))),
        "the time axis has ms labels"
    );
    let marks = marker_and_event_x(&a);
    let failed: Vec<(String, usize)> = v.failed.iter().map(|f| (f.id.clone(), f.event)).collect();
    assert_eq!(marks.len(), failed.len());
    for (rule, event, mx, ex) in marks {
        assert!(
            failed.contains(&(rule.clone(), event)),
            "{rule} at #{event}"
        );
        assert!((mx - ex).abs() <= 1.0, "marker x {mx} is on event x {ex}");
    }
    assert_eq!(v.failed[0].id, "USB-STATUS-POLLED");
    assert!(a.contains(&v.failed[0].quote.replace('\'', "&#39;")[..40]));
}

#[test]
fn html_is_well_formed_deterministic_and_embeds_every_timeline() {
    let runs: Vec<RunRecord> = [
        run_one("reference", "callback/s-false-mid-scan", ServiceModel::Xp),
        failing_run(),
        run_one(
            "reference",
            "cancel-io/mid-band-transfer",
            ServiceModel::Vista,
        ),
    ]
    .iter()
    .map(RunRecord::wia)
    .collect();
    let html = html_report::render_html(&runs);
    assert_eq!(html, html_report::render_html(&runs), "deterministic");
    assert!(!html.contains("http://") || !html.contains("src=\"http"));
    assert!(!html.contains("<script src") && !html.contains("<link"));
    let doc = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("the page is well-formed XML");
    let rows: Vec<_> = doc
        .descendants()
        .filter(|n| {
            n.tag_name().name() == "tr"
                && n.attribute("class")
                    .is_some_and(|c| c.starts_with("run-row"))
        })
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0].attribute("data-verdict"),
        Some("fail"),
        "failures first"
    );
    let details: Vec<_> = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "details" && n.has_attribute("data-verdict"))
        .collect();
    assert_eq!(details.len(), 3);
    assert!(
        details.iter().all(|d| !d.has_attribute("open")),
        "collapsed"
    );
    let first = details[0]
        .descendants()
        .find(|n| n.attribute("class") == Some("tl-wrap"))
        .unwrap();
    let svg = html_report::embedded_svg(first.attribute("data-svgz").unwrap()).unwrap();
    let marks = marker_and_event_x(&svg);
    assert_eq!(marks[0].0, "USB-STATUS-POLLED");
    for d in &details {
        let wrap = d
            .descendants()
            .find(|n| n.attribute("class") == Some("tl-wrap"))
            .unwrap();
        let svg = html_report::embedded_svg(wrap.attribute("data-svgz").unwrap()).unwrap();
        roxmltree::Document::parse(&svg).expect("embedded SVG is well-formed");
    }
}

#[test]
fn verdict_files_are_written_beside_traces_and_read_back() {
    let dir = std::env::temp_dir().join(format!("scanconform-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let r = failing_run();
    report::write_trace(&dir, &RunRecord::wia(&r)).unwrap();
    let ok = run_one("reference", "callback/s-false-mid-scan", ServiceModel::Xp);
    report::write_trace(&dir, &RunRecord::wia(&ok)).unwrap();
    let runs = html_report::load_dir(&dir).unwrap();
    assert_eq!(runs.len(), 2);
    let back = runs
        .iter()
        .find(|x| x.verdict.driver == "mutant-no-status-poll")
        .unwrap();
    assert_eq!(back.verdict, RunRecord::wia(&r).verdict);
    assert_eq!(back.trace, RunTrace::Wia(r.trace.clone()));
    // A verdict pointing past the trace is bad input, named by file.
    let vpath = html_report::verdict_path(
        &dir.join("mutant-no-status-poll/xp/callback/s-false-mid-scan.jsonl"),
    );
    let mut bad = RunRecord::wia(&r).verdict;
    bad.failed[0].event = 10_000;
    std::fs::write(&vpath, serde_json::to_string(&bad).unwrap()).unwrap();
    let err = html_report::load_dir(&dir).unwrap_err().to_string();
    assert!(
        err.contains("verdict.json") && err.contains("10000"),
        "{err}"
    );
    std::fs::write(&vpath, "{ not json").unwrap();
    let err = html_report::load_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("s-false-mid-scan.verdict.json:1:"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_header_says_runs_failures_drivers_when_and_which_build_not_load_timings() {
    let runs: Vec<RunRecord> = [
        run_one("reference", "callback/s-false-mid-scan", ServiceModel::Xp),
        failing_run(),
    ]
    .iter()
    .map(RunRecord::wia)
    .collect();
    let mut meta = html_report::ReportMeta::default();
    meta.when = Some("2026-12-04 17:45 UTC".into());
    meta.commit = Some("v0.1-12-gabc1234".into());
    meta.note = Some("interrupted by SIGINT: 3 scenario runs not run".into());
    let html = html_report::render_report(&runs, &meta);
    let header = html
        .lines()
        .find(|l| l.starts_with("<p class=\"totals\">"))
        .expect("a header line");
    for want in [
        "2 runs: ",
        "1 failed",
        "1 passed",
        "drivers: mutant-no-status-poll, reference",
        "run <span id=\"when\">2026-12-04 17:45 UTC</span>",
        "scanlab <span id=\"commit\">v0.1-12-gabc1234</span>",
    ] {
        assert!(header.contains(want), "{want:?} missing from {header}");
    }
    assert!(html.contains("<p class=\"note\">interrupted by SIGINT: 3 scenario runs not run</p>"));
    for gone in ["load-ms", "load-event-ms", "performance.now", "page ready"] {
        assert!(!html.contains(gone), "{gone}");
    }
    // Without them, when and which build are left out, and the page is the same every time.
    let plain = html_report::render_html(&runs);
    assert!(!plain.contains("id=\"when\"") && !plain.contains("id=\"commit\""));
    assert_eq!(plain, html_report::render_html(&runs));
}
