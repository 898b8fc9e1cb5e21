//! The HTML report: one self-contained page for every run of a `run` (or a `--traces` folder),
//! WIA and SANE runs alike.
//!
//! The page has a summary table (failures first) and, per run, a collapsed `<details>` with the
//! failed rules (message, quoted sentence, trace excerpt; an expected failure with its listed
//! finding), the run's problems and its [`timeline`] SVG (the WIA or the SANE picture, with its
//! legend). The SVG is stored gzipped and base64-encoded (the `base64` crate) in the
//! `data-svgz` attribute of its `.tl-wrap` and put into the page (the browser's
//! `DecompressionStream`) when the run is opened: a report of thousands of runs stays a few MB
//! and quick to open ([`embedded_svg`] decodes it back). Small inline JS filters by verdict,
//! rule, driver and text, and honours fragments: `#run-N` and `#expand-first-failure` open a
//! run and scroll its timeline into view (whole, where the window is tall enough),
//! `#show-first-failure` shows only the first failed run, opened. A timeline scrolled sideways
//! keeps its lane names and footer (what was wrong, the quote) in view. No network, no
//! external files; the markup is well-formed XML (XHTML-compatible) and a pure function of
//! its inputs.
//!
//! A run's verdict travels beside its trace as `<scenario>.verdict.json` ([`RunVerdict`]), so the
//! report can be built later from a `--traces` folder alone ([`load_dir`]); the verdict says
//! which trace model the trace follows.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::report::record::{RunRecord, RunTrace, RunTraceError, RunVerdict, TraceKind, Verdict};
use crate::report::timeline::{self, escape, SvgOptions};
use crate::scenario::wia2::is_wia2_id;
use crate::verdict::Metrics;

/// A report input that cannot be used; `Display` is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or folder cannot be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A trace line cannot be read back.
    #[error("{}:{source}", .path.display())]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// Which line and why.
        source: RunTraceError,
    },
    /// A verdict file is not a verdict.
    #[error("{}:{}:{}: {source}", .path.display(), .source.line(), .source.column())]
    Verdict {
        /// The verdict file.
        path: PathBuf,
        /// Why, with the place.
        source: serde_json::Error,
    },
    /// A verdict names an event the trace does not have.
    #[error("{}: rule {rule} points at event #{event} but the trace has {len} events", .path.display())]
    EventOutOfRange {
        /// The verdict file.
        path: PathBuf,
        /// The rule.
        rule: String,
        /// The event it names.
        event: usize,
        /// The trace's events (SANE: calls).
        len: usize,
    },
    /// A `--traces` folder without traces.
    #[error("{}: no trace files (*.jsonl) found", .path.display())]
    NoTraces {
        /// The folder.
        path: PathBuf,
    },
}

/// The verdict file beside a trace: `x.jsonl` → `x.verdict.json`.
pub fn verdict_path(trace_path: &Path) -> PathBuf {
    let name = trace_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    trace_path.with_file_name(format!("{stem}.verdict.json"))
}

/// Reads a trace and, if present, the verdict file beside it (whose `trace` field says which
/// model the trace follows; without one the first event tells). Errors name the file.
pub fn load_trace(path: &Path) -> Result<(RunTrace, Option<RunVerdict>), ReportError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| ReportError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let text = read(path)?;
    let vpath = verdict_path(path);
    let verdict = if vpath.is_file() {
        let v: RunVerdict =
            serde_json::from_str(&read(&vpath)?).map_err(|source| ReportError::Verdict {
                path: vpath.clone(),
                source,
            })?;
        Some(v)
    } else {
        None
    };
    let kind = verdict
        .as_ref()
        .map_or_else(|| RunTrace::guess_kind(&text), |v| v.trace);
    let trace = RunTrace::from_json_lines(kind, &text).map_err(|source| ReportError::Trace {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(v) = &verdict {
        if let Some(bad) = v.failed.iter().find(|f| f.event >= trace.len()) {
            return Err(ReportError::EventOutOfRange {
                path: vpath,
                rule: bad.id.clone(),
                event: bad.event,
                len: trace.len(),
            });
        }
    }
    Ok((trace, verdict))
}

fn collect_traces(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReportError> {
    let fail = |source| ReportError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        let path = entry.map_err(fail)?.path();
        if path.is_dir() {
            collect_traces(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "jsonl") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every run under a `--traces` folder (`<driver>/<service>/<group>/<name>.jsonl`, WIA 2.0 runs
/// `<driver>/wia2/<group>/<name>.jsonl`, SANE runs `<driver>/<name>.jsonl`, and the verdict
/// files beside them), in path order. A trace without
/// a verdict file gets verdict "unknown", its driver, service and scenario taken from its path.
pub fn load_dir(dir: &Path) -> Result<Vec<RunRecord>, ReportError> {
    let mut paths = Vec::new();
    collect_traces(dir, &mut paths)?;
    paths.sort();
    if paths.is_empty() {
        return Err(ReportError::NoTraces {
            path: dir.to_path_buf(),
        });
    }
    let mut runs = Vec::with_capacity(paths.len());
    for path in paths {
        let (trace, verdict) = load_trace(&path)?;
        let verdict = match verdict {
            Some(v) => v,
            None => unknown_verdict(dir, &path, trace.kind()),
        };
        runs.push(RunRecord {
            verdict,
            trace,
            results: Vec::new(),
        });
    }
    Ok(runs)
}

/// The verdict of a trace found without one: what its path says.
fn unknown_verdict(dir: &Path, path: &Path, kind: TraceKind) -> RunVerdict {
    let rel = path.strip_prefix(dir).unwrap_or(path);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .collect();
    let (service, from) = match kind {
        // WIA 2.0 runs have no service folder: `<driver>/wia2/<group>/<name>.jsonl`.
        TraceKind::Wia if parts.get(1).is_some_and(|p| p == "wia2") => (None, 1),
        TraceKind::Wia => (parts.get(1).cloned(), 2),
        TraceKind::Sane => (None, 1),
    };
    let scenario = parts
        .get(from..)
        .map(|p| p.join("/"))
        .unwrap_or_else(|| rel.display().to_string());
    let scenario = scenario.strip_suffix(".jsonl").unwrap_or(&scenario);
    RunVerdict {
        driver: parts.first().cloned().unwrap_or_default(),
        scenario: match kind {
            TraceKind::Wia => scenario.to_string(),
            TraceKind::Sane => format!("sane/{scenario}"),
        },
        service,
        verdict: Verdict::Unknown,
        trace: kind,
        async_cancel: false,
        failed: Vec::new(),
        not_judged: Vec::new(),
        metrics: Metrics::default(),
        problems: Vec::new(),
        skipped: None,
        cancel_latency: Vec::new(),
    }
}

const PAGE_CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:16px 20px;color:#1d2230;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px}
.totals{margin:2px 0 10px;color:#333}.note{margin:0 0 10px;color:#a35f00;font-weight:600}.totals b.fail{color:#c0152f}.totals b.pass{color:#1e7d3a}
.filters{display:flex;gap:14px;align-items:center;flex-wrap:wrap;padding:8px 10px;background:#f3f5f8;border:1px solid #dde2ea;border-radius:6px;margin-bottom:10px;position:sticky;top:0;z-index:2}
.filters label{font-size:13px}#f-count{color:#555;font-size:13px}
table#summary{border-collapse:collapse;font-size:13px;width:100%}
#summary th{background:#e8ecf2;text-align:left;padding:4px 8px;position:sticky;top:44px}
#summary td{padding:3px 8px;border-bottom:1px solid #eceff4}
#summary td.num{text-align:right;font-variant-numeric:tabular-nums}
#summary tr.fail td:nth-child(2){color:#c0152f;font-weight:700}
#summary tr.pass td:nth-child(2){color:#1e7d3a}
.badge{display:inline-block;min-width:38px;text-align:center;border-radius:4px;padding:1px 6px;font-size:12px;font-weight:700;color:#fff}
.badge.fail{background:#c0152f}.badge.pass{background:#2e9d4a}.badge.unknown{background:#888}
.badge.expected-fail{background:#d07b00}.badge.skip{background:#6c7a89}
#summary tr.expected-fail td:nth-child(2){color:#a35f00}
.failure.expected{border-left-color:#d07b00;background:#fff8ef}.finding{color:#7a4a00}
details.run{border:1px solid #dde2ea;border-radius:6px;margin:6px 0}
details.run>summary{cursor:pointer;padding:6px 10px;font-size:13px}
details.run[open]>summary{background:#f3f5f8;border-bottom:1px solid #dde2ea}
details.run .body{padding:8px 10px}
.rules{color:#c0152f;font-weight:600}
.failure{border-left:4px solid #e0004d;background:#fff5f8;padding:6px 10px;margin:6px 0}
.failure h4{margin:0 0 4px;font-size:14px}.failure p{margin:2px 0;font-size:13px}
.failure blockquote{margin:4px 0 4px 8px;font-style:italic;color:#7a0029}
.failure cite{display:block;font-style:normal;color:#555;font-size:12px}
.failure pre,.excerpt{font-size:11px;background:#fff;border:1px solid #eee;padding:4px;overflow-x:auto}
.metrics{font-size:12px;color:#444}
.tl-wrap{overflow-x:auto;border:1px solid #e3e7ee;margin:6px 0}
svg.legend{display:block}
";

const PAGE_JS: &str = "\
(function(){
var rows=Array.prototype.slice.call(document.querySelectorAll('tr.run-row'));
function render(d,show){var w=d.querySelector('.tl-wrap[data-pending]');if(!w)return;w.removeAttribute('data-pending');
var b=atob(w.getAttribute('data-svgz')),u=new Uint8Array(b.length);for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);
new Response(new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip'))).text().then(function(t){w.innerHTML=t;var v=w.querySelector('.violation');if(v)w.scrollLeft=Math.max(0,parseFloat(v.getAttribute('data-x'))-w.clientWidth+360);
var g=w.querySelector('.tl-pinned');function pin(){if(g)g.setAttribute('transform','translate('+w.scrollLeft+' 0)');}w.addEventListener('scroll',pin);pin();if(show)w.scrollIntoView({block:w.offsetHeight<window.innerHeight?'end':'start'});w.setAttribute('data-rendered','1');},function(e){w.textContent='timeline could not be decoded: '+e;});}
document.querySelectorAll('details.run').forEach(function(d){d.addEventListener('toggle',function(){if(d.open)render(d);});});
function openRun(d,scroll){if(!d)return;d.hidden=false;d.open=true;if(scroll)d.scrollIntoView();render(d,scroll);}
function applyHash(){var h=decodeURIComponent(location.hash.slice(1)),first=document.querySelector('details.run[data-verdict=\"fail\"]');
if(h==='expand-first-failure'){openRun(first,true);}
else if(h==='show-first-failure'&&first){rows.forEach(function(row){var d=document.getElementById('run-'+row.getAttribute('data-run'));row.hidden=d!==first;if(d)d.hidden=d!==first;});fc.textContent='showing the first failure only';openRun(first,false);}
else if(h.indexOf('run-')===0){openRun(document.getElementById(h),true);}}
var fv=document.getElementById('f-verdict'),fr=document.getElementById('f-rule'),fd=document.getElementById('f-driver'),ft=document.getElementById('f-text'),fc=document.getElementById('f-count');
function apply(){var v=fv.value,r=fr.value,dr=fd.value,tx=ft.value.toLowerCase(),n=0;
rows.forEach(function(row){var ok=(!v||row.getAttribute('data-verdict')===v)&&(!r||row.getAttribute('data-rules').indexOf(' '+r+' ')>=0)&&(!dr||row.getAttribute('data-driver')===dr)&&(!tx||row.getAttribute('data-text').indexOf(tx)>=0);
row.hidden=!ok;var d=document.getElementById('run-'+row.getAttribute('data-run'));if(d)d.hidden=!ok;if(ok)n++;});
fc.textContent=n+' of '+rows.length+' runs shown';}
[fv,fr,fd].forEach(function(e){e.addEventListener('change',apply);});ft.addEventListener('input',apply);
apply();window.addEventListener('hashchange',applyHash);applyHash();
window.addEventListener('load',function(){document.body.setAttribute('data-ready','1');});
})();
";

fn verdict_rank(v: Verdict) -> u8 {
    match v {
        Verdict::Fail => 0,
        Verdict::Unknown => 1,
        _ => 2,
    }
}

/// What the report's header says about the runs besides their counts and drivers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportMeta {
    /// When the runs were made, as shown (`2026-12-04 17:45 UTC`); default none, left out.
    pub when: Option<String>,
    /// Which scanlab build made them (`git describe` of its checkout); default none, left out.
    pub commit: Option<String>,
    /// A line about the runs as a whole (`interrupted by SIGINT: 149 scenario runs not run`);
    /// default none.
    pub note: Option<String>,
}

/// The report page for these runs, with nothing in the header but counts and drivers
/// ([`render_report`] with the default [`ReportMeta`]).
pub fn render_html(runs: &[RunRecord]) -> String {
    render_report(runs, &ReportMeta::default())
}

/// The report page for these runs: a header (runs, failures, drivers, and what `meta` holds),
/// then failures first, then by driver, scenario and service.
pub fn render_report(runs: &[RunRecord], meta: &ReportMeta) -> String {
    let mut order: Vec<&RunRecord> = runs.iter().collect();
    order.sort_by(|a, b| {
        let (a, b) = (&a.verdict, &b.verdict);
        (verdict_rank(a.verdict), &a.driver, &a.scenario, &a.service).cmp(&(
            verdict_rank(b.verdict),
            &b.driver,
            &b.scenario,
            &b.service,
        ))
    });
    let count = |v: Verdict| order.iter().filter(|r| r.verdict.verdict == v).count();
    let (failed, passed, unknown) = (
        count(Verdict::Fail),
        count(Verdict::Pass),
        count(Verdict::Unknown),
    );
    let (expected, skipped) = (count(Verdict::ExpectedFail), count(Verdict::Skip));
    let any_sane = order.iter().any(|r| r.trace.kind() == TraceKind::Sane);
    let mut drivers: Vec<&str> = order.iter().map(|r| r.verdict.driver.as_str()).collect();
    drivers.sort();
    drivers.dedup();
    let mut failed_rules: Vec<&str> = order
        .iter()
        .flat_map(|r| r.verdict.failed.iter().map(|f| f.id.as_str()))
        .collect();
    failed_rules.sort();
    failed_rules.dedup();

    let mut out =
        String::with_capacity(runs.iter().map(|r| r.trace.len() * 260).sum::<usize>() + 65536);
    out.push_str("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>scanconform report</title>\n<style>/*<![CDATA[*/\n");
    out.push_str(PAGE_CSS);
    out.push_str(timeline::TIMELINE_CSS);
    out.push_str("/*]]>*/</style>\n</head>\n<body>\n<h1>scanconform report</h1>\n");
    let mut about = vec![format!("drivers: {}", escape(&drivers.join(", ")))];
    if let Some(when) = &meta.when {
        about.push(format!("run <span id=\"when\">{}</span>", escape(when)));
    }
    if let Some(commit) = &meta.commit {
        about.push(format!(
            "scanlab <span id=\"commit\">{}</span>",
            escape(commit)
        ));
    }
    let _ = writeln!(
        out,
        "<p class=\"totals\">{} runs: <b class=\"fail\">{failed} failed</b>, <b class=\"pass\">{passed} passed</b>{}{}{} · {}</p>",
        order.len(),
        if expected > 0 { format!(", {expected} failed as expected") } else { String::new() },
        if skipped > 0 { format!(", {skipped} skipped") } else { String::new() },
        if unknown > 0 { format!(", {unknown} without verdict") } else { String::new() },
        about.join(" · ")
    );
    if let Some(note) = &meta.note {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(note));
    }
    out.push_str("<div class=\"filters\"><label>verdict <select id=\"f-verdict\"><option value=\"\">all</option><option value=\"fail\">fail</option><option value=\"pass\">pass</option>");
    if expected > 0 {
        out.push_str("<option value=\"expected-fail\">expected-fail</option>");
    }
    if skipped > 0 {
        out.push_str("<option value=\"skip\">skip</option>");
    }
    out.push_str("<option value=\"unknown\">unknown</option></select></label>");
    out.push_str("<label>failed rule <select id=\"f-rule\"><option value=\"\">any</option>");
    for r in &failed_rules {
        let _ = write!(out, "<option value=\"{0}\">{0}</option>", escape(r));
    }
    out.push_str(
        "</select></label><label>driver <select id=\"f-driver\"><option value=\"\">all</option>",
    );
    for d in &drivers {
        let _ = write!(out, "<option value=\"{0}\">{0}</option>", escape(d));
    }
    out.push_str("</select></label><label>text <input id=\"f-text\" type=\"search\" placeholder=\"scenario, service, driver\"/></label><span id=\"f-count\"></span></div>\n");

    out.push_str("<table id=\"summary\"><thead><tr><th>#</th><th>verdict</th><th>driver</th><th>service</th><th>scenario</th><th>cancel→idle</th><th>bands wasted</th><th>failed rules</th></tr></thead>\n<tbody>\n");
    for (k, r) in order.iter().enumerate() {
        let v = &r.verdict;
        let ids: Vec<&str> = v.failed.iter().map(|f| f.id.as_str()).collect();
        let _ = writeln!(
            out,
            "<tr class=\"run-row {vd}\" data-run=\"{k}\" data-verdict=\"{vd}\" data-rules=\" {rules} \" data-driver=\"{drv}\" data-text=\"{text}\"><td><a href=\"#run-{k}\">{k}</a></td><td>{vd}</td><td>{drv}</td><td>{svc}</td><td>{scn}</td><td class=\"num\">{idle}</td><td class=\"num\">{wasted}</td><td>{rules}</td></tr>",
            vd = v.verdict.word(),
            rules = escape(&ids.join(" ")),
            drv = escape(&v.driver),
            text = escape(&format!("{} {} {}", v.driver, v.service_text(), v.scenario).to_lowercase()),
            svc = escape(v.service_text()),
            scn = escape(&v.scenario),
            idle = v.idle_text(),
            wasted = v.wasted_text(),
        );
    }
    out.push_str("</tbody></table>\n");
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"0\" height=\"0\" style=\"position:absolute\"><defs>{}{}</defs></svg>",
        timeline::legend_group(),
        if any_sane { timeline::sane_legend_group() } else { String::new() }
    );
    out.push_str("<h2>Runs (click to open the timeline)</h2>\n<section id=\"runs\">\n");
    for (k, r) in order.iter().enumerate() {
        let v = &r.verdict;
        let ids: Vec<&str> = v.failed.iter().map(|f| f.id.as_str()).collect();
        let _ = write!(
            out,
            "<details class=\"run {vd}\" id=\"run-{k}\" data-verdict=\"{vd}\"><summary><span class=\"badge {vd}\">{vd}</span> {drv} · {svc} · <b>{scn}</b>{rules}</summary>\n<div class=\"body\">",
            vd = v.verdict.word(),
            drv = escape(&v.driver),
            svc = escape(v.service_text()),
            scn = escape(&v.scenario),
            rules = if ids.is_empty() {
                String::new()
            } else {
                format!(" — <span class=\"rules\">{}</span>", escape(&ids.join(", ")))
            },
        );
        out.push_str(&metrics_line(r));
        for p in &v.problems {
            let _ = write!(
                out,
                "<div class=\"failure problem\"><h4>PROBLEM</h4><p>{}</p></div>",
                escape(p)
            );
        }
        for f in &v.failed {
            let at = r.trace.at_us(f.event).unwrap_or(0);
            let excerpt: String = r
                .trace
                .excerpt(f.event)
                .iter()
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = write!(
                out,
                "<div class=\"failure{xc}\" data-rule=\"{id}\" data-event=\"{ev}\"><h4>{word} {id}: {st}</h4><p>{msg}</p>{finding}<p>first violation: {noun} #{ev} at {at} us</p><blockquote>“{q}”<cite>— {src}</cite></blockquote><pre>{ex}</pre></div>",
                xc = if f.expected.is_some() { " expected" } else { "" },
                word = if f.expected.is_some() { "XFAIL" } else { "FAIL" },
                id = escape(&f.id),
                st = escape(&f.statement),
                msg = escape(&f.message),
                finding = f
                    .expected
                    .as_ref()
                    .map(|x| format!("<p class=\"finding\">expected failure: {}</p>", escape(x)))
                    .unwrap_or_default(),
                noun = match r.trace.kind() {
                    TraceKind::Wia => "event",
                    TraceKind::Sane => "call",
                },
                ev = f.event,
                q = escape(&f.quote),
                src = escape(&f.source),
                ex = escape(&excerpt),
            );
        }
        let svg = r.trace.render_svg(&v.marks(), &SvgOptions::embedded());
        let _ = writeln!(
            out,
            "<div class=\"tl-wrap\" data-pending=\"1\" data-svgz=\"{}\"></div><svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline legend\" width=\"1260\" height=\"70\"><use href=\"#{}\"/></svg></div></details>",
            base64::engine::general_purpose::STANDARD.encode(gzip(svg.as_bytes())),
            match r.trace.kind() {
                TraceKind::Wia => "tl-legend",
                TraceKind::Sane => "tl-legend-sane",
            }
        );
    }
    out.push_str("</section>\n<script>//<![CDATA[\n");
    out.push_str(PAGE_JS);
    out.push_str("//]]></script>\n</body>\n</html>\n");
    out
}

/// The measurements line of a run's details.
fn metrics_line(r: &RunRecord) -> String {
    let v = &r.verdict;
    let m = &v.metrics;
    let not_judged = if v.not_judged.is_empty() {
        String::new()
    } else {
        format!(
            " · not judged: {}",
            escape(
                &v.not_judged
                    .iter()
                    .map(|n| format!("{} (because {})", n.id, n.because))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        )
    };
    match r.trace.kind() {
        TraceKind::Wia if is_wia2_id(&v.scenario) => format!(
            "<p class=\"metrics\">{} events · cancel→idle {} · bands read after a cancel {} · {} bytes written to streams · {} rules checked{not_judged}</p>",
            r.trace.len(),
            v.idle_text(),
            v.wasted_text(),
            m.data_bytes,
            m.rules_checked,
        ),
        TraceKind::Wia => format!(
            "<p class=\"metrics\">{} events · cancel→idle {} · bands wasted {} · {} data callbacks, {} bytes · {} bytes after S_FALSE · {} rules checked · async cancel {}{not_judged}</p>",
            r.trace.len(),
            v.idle_text(),
            v.wasted_text(),
            m.data_callbacks,
            m.data_bytes,
            m.bytes_after_sfalse,
            m.rules_checked,
            if v.async_cancel { "yes" } else { "no" },
        ),
        TraceKind::Sane => {
            let latency: Vec<String> = v
                .cancel_latency
                .iter()
                .map(|l| format!("call #{}: {}", l.cancel_seq, l.summary()))
                .collect();
            format!(
                "<p class=\"metrics\">{} · cancel→device stopped {} · blocks sent after sane_cancel {} · {} rules checked{}{}</p>",
                r.trace.size_text(),
                v.idle_text(),
                v.wasted_text(),
                m.rules_checked,
                if latency.is_empty() {
                    String::new()
                } else {
                    format!(" · cancel latency: {}", escape(&latency.join("; ")))
                },
                v.skipped
                    .as_ref()
                    .map(|s| format!(" · skipped: {}", escape(s)))
                    .unwrap_or_default(),
            )
        }
    }
}

/// Gzip with a fixed header (no name, mtime 0): the same bytes every time.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Decodes a `data-svgz` attribute of the report back to the SVG text (for tests and tools).
pub fn embedded_svg(data_svgz: &str) -> Option<String> {
    use std::io::Read as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data_svgz)
        .ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes.as_slice())
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_svg_round_trips() {
        let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\"/>";
        assert_eq!(
            embedded_svg(&base64::engine::general_purpose::STANDARD.encode(gzip(svg.as_bytes())))
                .as_deref(),
            Some(svg)
        );
    }

    #[test]
    fn verdict_path_sits_beside_the_trace() {
        assert_eq!(
            verdict_path(Path::new("t/ref/xp/callback/a.jsonl")),
            PathBuf::from("t/ref/xp/callback/a.verdict.json")
        );
    }
}
