//! The HTML report: one self-contained page for every run of a `run` (or a `--traces` folder).
//!
//! The page has a summary table (failures first) and, per run, a collapsed `<details>` with the
//! failed rules (message, quoted sentence, trace excerpt) and the run's [`timeline`] SVG. The SVG
//! is stored gzipped and base64-encoded in the `data-svgz` attribute of its `.tl-wrap` and put
//! into the page (the browser's `DecompressionStream`) when the run is opened: a report of
//! thousands of runs stays a few MB and quick to open ([`embedded_svg`] decodes it back). Small inline JS filters by verdict, rule, driver and
//! text, and honours fragments: `#run-N` and `#expand-first-failure` open (and scroll to) a run,
//! `#show-first-failure` shows only the first failed run, opened. No network, no external
//! files; the markup is well-formed XML (XHTML-compatible) and a pure function of its inputs.
//!
//! A run's verdict travels beside its trace as `<scenario>.verdict.json` ([`RunVerdict`]), so the
//! report can be built later from a `--traces` folder alone ([`load_dir`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::timeline::{self, escape, Mark, SvgOptions};
use crate::rules::{self, RuleStatus};
use crate::runner::RunResult;
use crate::trace::{render_event, Trace};

/// A rule that failed in a run, as the verdict file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRule {
    /// Rule ID.
    pub id: String,
    /// Index into the trace's events of the first violation.
    pub event: usize,
    /// What was wrong.
    pub message: String,
    /// The rule in one sentence.
    pub statement: String,
    /// The sentence the rule enforces, verbatim.
    pub quote: String,
    /// Where the quote comes from.
    pub source: String,
}

/// A rule listed as a consequence of another failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotJudged {
    /// Rule ID.
    pub id: String,
    /// The failed rule it depends on.
    pub because: String,
}

/// The measurements of a run, as the verdict file records them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictMetrics {
    /// First cancel point to device stopped, in microseconds.
    pub cancel_to_idle_us: Option<u64>,
    /// Bands read from the device after a cancel point.
    pub bands_wasted: Option<u32>,
    /// IT_MSG_DATA bytes delivered after a callback returned S_FALSE or an error.
    pub bytes_after_sfalse: u64,
    /// IT_MSG_DATA callbacks.
    pub data_callbacks: u32,
    /// IT_MSG_DATA bytes.
    pub data_bytes: u64,
    /// Rules that had something to judge.
    pub rules_checked: u32,
}

/// One run's verdict: the `<scenario>.verdict.json` file written beside its trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunVerdict {
    /// The driver.
    pub driver: String,
    /// `<group>/<name>`.
    pub scenario: String,
    /// xp or vista.
    pub service: String,
    /// "pass", "fail", or "unknown" (a trace without a verdict file).
    pub verdict: String,
    /// Whether the driver claimed asynchronous cancel.
    #[serde(default)]
    pub async_cancel: bool,
    /// Failed rules, in catalogue order.
    #[serde(default)]
    pub failed: Vec<FailedRule>,
    /// Rules not judged because a rule they depend on failed.
    #[serde(default)]
    pub not_judged: Vec<NotJudged>,
    /// Measurements.
    #[serde(default)]
    pub metrics: VerdictMetrics,
}

impl RunVerdict {
    /// The verdict of a finished run.
    pub fn from_run(r: &RunResult) -> RunVerdict {
        let mut failed = Vec::new();
        let mut not_judged = Vec::new();
        for res in &r.report.results {
            match &res.status {
                RuleStatus::Fail { event, message } => {
                    let rule = rules::find(res.id);
                    failed.push(FailedRule {
                        id: res.id.to_string(),
                        event: *event,
                        message: message.clone(),
                        statement: rule.map(|x| x.statement).unwrap_or("").to_string(),
                        quote: rule.map(|x| x.quote).unwrap_or("").to_string(),
                        source: rule.map(|x| x.source).unwrap_or("").to_string(),
                    });
                }
                RuleStatus::NotJudged { because } => not_judged.push(NotJudged {
                    id: res.id.to_string(),
                    because: because.to_string(),
                }),
                _ => {}
            }
        }
        let m = &r.report.metrics;
        RunVerdict {
            driver: r.driver.clone(),
            scenario: r.scenario.clone(),
            service: r.service.name().to_string(),
            verdict: if r.passed() { "pass" } else { "fail" }.to_string(),
            async_cancel: r.async_cancel,
            failed,
            not_judged,
            metrics: VerdictMetrics {
                cancel_to_idle_us: m.cancel_to_idle_us,
                bands_wasted: m.bands_wasted,
                bytes_after_sfalse: m.bytes_after_sfalse,
                data_callbacks: m.data_callbacks,
                data_bytes: m.data_bytes,
                rules_checked: m.rules_checked,
            },
        }
    }

    /// The violations to mark on the timeline, earliest first.
    pub fn marks(&self) -> Vec<Mark> {
        let mut marks: Vec<Mark> = self
            .failed
            .iter()
            .map(|f| Mark {
                rule: f.id.clone(),
                event: f.event,
                message: f.message.clone(),
                quote: f.quote.clone(),
            })
            .collect();
        marks.sort_by_key(|m| m.event);
        marks
    }

    /// `-` or the cancel-to-idle latency in ms with one decimal.
    pub fn idle_text(&self) -> String {
        self.metrics
            .cancel_to_idle_us
            .map(|us| format!("{}.{} ms", us / 1000, (us % 1000) / 100))
            .unwrap_or_else(|| "-".into())
    }
}

/// One run in a report: its verdict and its trace.
#[derive(Clone, Debug)]
pub struct ReportRun {
    /// The verdict.
    pub verdict: RunVerdict,
    /// The trace.
    pub trace: Trace,
}

impl ReportRun {
    /// A report entry for a finished run.
    pub fn from_run(r: &RunResult) -> ReportRun {
        ReportRun {
            verdict: RunVerdict::from_run(r),
            trace: r.trace.clone(),
        }
    }
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

/// Reads a trace and, if present, the verdict file beside it. Errors name the file.
pub fn load_trace(path: &Path) -> Result<(Trace, Option<RunVerdict>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let trace = Trace::from_json_lines(&text).map_err(|e| format!("{}:{e}", path.display()))?;
    let vpath = verdict_path(path);
    let verdict = if vpath.is_file() {
        let vtext =
            std::fs::read_to_string(&vpath).map_err(|e| format!("{}: {e}", vpath.display()))?;
        let v: RunVerdict = serde_json::from_str(&vtext)
            .map_err(|e| format!("{}:{}:{}: {e}", vpath.display(), e.line(), e.column()))?;
        if let Some(bad) = v.failed.iter().find(|f| f.event >= trace.events.len()) {
            return Err(format!(
                "{}: rule {} points at event #{} but the trace has {} events",
                vpath.display(),
                bad.id,
                bad.event,
                trace.events.len()
            ));
        }
        Some(v)
    } else {
        None
    };
    Ok((trace, verdict))
}

fn collect_traces(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect_traces(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "jsonl") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every run under a `--traces` folder (`<driver>/<service>/<group>/<name>.jsonl` and the
/// verdict files beside them), in path order. A trace without a verdict file gets verdict
/// "unknown", its driver, service and scenario taken from its path.
pub fn load_dir(dir: &Path) -> Result<Vec<ReportRun>, String> {
    let mut paths = Vec::new();
    collect_traces(dir, &mut paths)?;
    paths.sort();
    if paths.is_empty() {
        return Err(format!("{}: no trace files (*.jsonl) found", dir.display()));
    }
    let mut runs = Vec::with_capacity(paths.len());
    for path in paths {
        let (trace, verdict) = load_trace(&path)?;
        let verdict = match verdict {
            Some(v) => v,
            None => {
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().to_string())
                    .collect();
                let scenario = parts
                    .get(2..)
                    .map(|p| p.join("/"))
                    .unwrap_or_else(|| rel.display().to_string());
                RunVerdict {
                    driver: parts.first().cloned().unwrap_or_default(),
                    service: parts.get(1).cloned().unwrap_or_default(),
                    scenario: scenario
                        .strip_suffix(".jsonl")
                        .unwrap_or(&scenario)
                        .to_string(),
                    verdict: "unknown".into(),
                    async_cancel: false,
                    failed: Vec::new(),
                    not_judged: Vec::new(),
                    metrics: VerdictMetrics::default(),
                }
            }
        };
        runs.push(ReportRun { verdict, trace });
    }
    Ok(runs)
}

/// The title drawn above a run's timeline.
pub fn run_title(v: &RunVerdict) -> String {
    format!(
        "{} [{}] {} — {}",
        v.scenario,
        v.service,
        v.driver,
        v.verdict.to_uppercase()
    )
}

const PAGE_CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:16px 20px;color:#1d2230;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:18px 0 6px}
.totals{margin:2px 0 10px;color:#333}.totals b.fail{color:#c0152f}.totals b.pass{color:#1e7d3a}
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
function render(d){var w=d.querySelector('.tl-wrap[data-pending]');if(!w)return;w.removeAttribute('data-pending');
var b=atob(w.getAttribute('data-svgz')),u=new Uint8Array(b.length);for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);
new Response(new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip'))).text().then(function(t){w.innerHTML=t;var v=w.querySelector('.violation');if(v)w.scrollLeft=Math.max(0,parseFloat(v.getAttribute('data-x'))-w.clientWidth+360);w.setAttribute('data-rendered','1');},function(e){w.textContent='timeline could not be decoded: '+e;});}
document.querySelectorAll('details.run').forEach(function(d){d.addEventListener('toggle',function(){if(d.open)render(d);});});
function openRun(d,scroll){if(!d)return;d.hidden=false;d.open=true;render(d);if(scroll)d.scrollIntoView();}
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
document.getElementById('load-ms').textContent=performance.now().toFixed(1);
window.addEventListener('load',function(){document.getElementById('load-event-ms').textContent=performance.now().toFixed(1);document.body.setAttribute('data-ready','1');});
})();
";

fn excerpt(trace: &Trace, event: usize) -> String {
    let mut s = String::new();
    if trace.events.is_empty() {
        return s;
    }
    let at = event.min(trace.events.len() - 1);
    let from = at.saturating_sub(5);
    let to = (at + 3).min(trace.events.len() - 1);
    for i in from..=to {
        let mark = if i == event { ">>" } else { "  " };
        let _ = writeln!(s, "{mark} #{i:<4} {}", render_event(&trace.events[i]));
    }
    s
}

fn verdict_rank(v: &str) -> u8 {
    match v {
        "fail" => 0,
        "unknown" => 1,
        _ => 2,
    }
}

/// The report page for these runs: failures first, then by driver, scenario and service.
pub fn render_html(runs: &[ReportRun]) -> String {
    let mut order: Vec<&ReportRun> = runs.iter().collect();
    order.sort_by(|a, b| {
        let (a, b) = (&a.verdict, &b.verdict);
        (verdict_rank(&a.verdict), &a.driver, &a.scenario, &a.service).cmp(&(
            verdict_rank(&b.verdict),
            &b.driver,
            &b.scenario,
            &b.service,
        ))
    });
    let failed = order.iter().filter(|r| r.verdict.verdict == "fail").count();
    let passed = order.iter().filter(|r| r.verdict.verdict == "pass").count();
    let unknown = order.len() - failed - passed;
    let mut drivers: Vec<&str> = order.iter().map(|r| r.verdict.driver.as_str()).collect();
    drivers.sort();
    drivers.dedup();
    let mut failed_rules: Vec<&str> = order
        .iter()
        .flat_map(|r| r.verdict.failed.iter().map(|f| f.id.as_str()))
        .collect();
    failed_rules.sort();
    failed_rules.dedup();

    let mut out = String::with_capacity(
        runs.iter()
            .map(|r| r.trace.events.len() * 260)
            .sum::<usize>()
            + 65536,
    );
    out.push_str("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>scanconform report</title>\n<style>/*<![CDATA[*/\n");
    out.push_str(PAGE_CSS);
    out.push_str(timeline::TIMELINE_CSS);
    out.push_str("/*]]>*/</style>\n</head>\n<body>\n<h1>scanconform report</h1>\n");
    let _ = writeln!(
        out,
        "<p class=\"totals\">{} runs: <b class=\"fail\">{failed} failed</b>, <b class=\"pass\">{passed} passed</b>{} · drivers: {} · page ready after <span id=\"load-ms\">-</span> ms (load event <span id=\"load-event-ms\">-</span> ms)</p>",
        order.len(),
        if unknown > 0 { format!(", {unknown} without verdict") } else { String::new() },
        escape(&drivers.join(", "))
    );
    out.push_str("<div class=\"filters\"><label>verdict <select id=\"f-verdict\"><option value=\"\">all</option><option value=\"fail\">fail</option><option value=\"pass\">pass</option><option value=\"unknown\">unknown</option></select></label>");
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
            vd = escape(&v.verdict),
            rules = escape(&ids.join(" ")),
            drv = escape(&v.driver),
            text = escape(&format!("{} {} {}", v.driver, v.service, v.scenario).to_lowercase()),
            svc = escape(&v.service),
            scn = escape(&v.scenario),
            idle = v.idle_text(),
            wasted = v
                .metrics
                .bands_wasted
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
        );
    }
    out.push_str("</tbody></table>\n");
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"0\" height=\"0\" style=\"position:absolute\"><defs>{}</defs></svg>",
        timeline::legend_group()
    );
    out.push_str("<h2>Runs (click to open the timeline)</h2>\n<section id=\"runs\">\n");
    for (k, r) in order.iter().enumerate() {
        let v = &r.verdict;
        let ids: Vec<&str> = v.failed.iter().map(|f| f.id.as_str()).collect();
        let _ = write!(
            out,
            "<details class=\"run {vd}\" id=\"run-{k}\" data-verdict=\"{vd}\"><summary><span class=\"badge {vd}\">{vd}</span> {drv} · {svc} · <b>{scn}</b>{rules}</summary>\n<div class=\"body\">",
            vd = escape(&v.verdict),
            drv = escape(&v.driver),
            svc = escape(&v.service),
            scn = escape(&v.scenario),
            rules = if ids.is_empty() {
                String::new()
            } else {
                format!(" — <span class=\"rules\">{}</span>", escape(&ids.join(", ")))
            },
        );
        let m = &v.metrics;
        let _ = write!(
            out,
            "<p class=\"metrics\">{} events · cancel→idle {} · bands wasted {} · {} data callbacks, {} bytes · {} bytes after S_FALSE · {} rules checked · async cancel {}{}</p>",
            r.trace.events.len(),
            v.idle_text(),
            m.bands_wasted.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
            m.data_callbacks,
            m.data_bytes,
            m.bytes_after_sfalse,
            m.rules_checked,
            if v.async_cancel { "yes" } else { "no" },
            if v.not_judged.is_empty() {
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
            }
        );
        for f in &v.failed {
            let at = r.trace.events.get(f.event).map(|e| e.at_us).unwrap_or(0);
            let _ = write!(
                out,
                "<div class=\"failure\" data-rule=\"{id}\" data-event=\"{ev}\"><h4>FAIL {id}: {st}</h4><p>{msg}</p><p>first violation: event #{ev} at {at} us</p><blockquote>“{q}”<cite>— {src}</cite></blockquote><pre>{ex}</pre></div>",
                id = escape(&f.id),
                st = escape(&f.statement),
                msg = escape(&f.message),
                ev = f.event,
                q = escape(&f.quote),
                src = escape(&f.source),
                ex = escape(&excerpt(&r.trace, f.event)),
            );
        }
        let svg = timeline::render_svg(&r.trace, &v.marks(), &SvgOptions::embedded());
        let _ = writeln!(
            out,
            "<div class=\"tl-wrap\" data-pending=\"1\" data-svgz=\"{}\"></div><svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline legend\" width=\"1260\" height=\"70\"><use href=\"#tl-legend\"/></svg></div></details>",
            base64(&gzip(svg.as_bytes()))
        );
    }
    out.push_str("</section>\n<script>//<![CDATA[\n");
    out.push_str(PAGE_JS);
    out.push_str("//]]></script>\n</body>\n</html>\n");
    out
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

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Decodes a `data-svgz` attribute of the report back to the SVG text (for tests and tools).
pub fn embedded_svg(data_svgz: &str) -> Option<String> {
    use std::io::Read as _;
    let bytes = unbase64(data_svgz)?;
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
    fn base64_round_trips_every_tail_length() {
        for n in 0..8u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(97)).collect();
            assert_eq!(unbase64(&base64(&bytes)), Some(bytes));
        }
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
    }

    #[test]
    fn embedded_svg_round_trips() {
        let svg = "<svg xmlns=\"http://www.w3.org/2000/svg\"/>";
        assert_eq!(
            embedded_svg(&base64(&gzip(svg.as_bytes()))).as_deref(),
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
