//! Hand-built traces: one passing and one failing run per rule, dependency suppression, the
//! rendering of a failure, and the quotes against the fact sheet.

use scanemu::personality::NoteKind;

use super::*;
use crate::trace::{
    request_name, Actor, ControlReply, DeviceDetail, Direction, Kind, Recorder, TransferOutcome,
};
use crate::wia::{Hresult, ItMsg};

const BAND: i64 = 2048;

/// A transfer result written as the trace shows it.
fn result(name: &str) -> TransferOutcome {
    TransferOutcome::from_name(name).expect("a transfer result")
}
const MOTOR_STOP: u64 = 500;

/// A trace under construction, with a clock.
struct B {
    r: Recorder,
    now: u64,
}

impl B {
    fn new() -> B {
        B {
            r: Recorder::new(),
            now: 0,
        }
    }

    fn wait(&mut self, us: u64) -> &mut B {
        self.now += us;
        self
    }

    fn push(&mut self, actor: Actor, kind: Kind) -> &mut B {
        self.r.push(self.now, actor, kind);
        self
    }

    fn acquire(&mut self, n: u32) -> &mut B {
        self.push(
            Actor::App,
            Kind::Acquire {
                n,
                tymed: 128,
                buffer: 65536,
            },
        )
        .push(Actor::Service, Kind::DrvAcquireItemData { n })
    }

    /// A device note, written as the trace shows it (`"fault", 1, "cancel-button"`).
    fn device(&mut self, what: &str, value: u64, detail: &str) -> &mut B {
        let what = NoteKind::from_name(what).expect("a note kind");
        self.push(
            Actor::Device,
            Kind::Device {
                what,
                page: 0,
                value,
                detail: DeviceDetail::parse(what, detail),
            },
        )
    }

    /// A vendor control request, written as the trace shows it (`"GET_DEVICE_STATUS", 0x67,
    /// "ok", "0x2019 busy"`).
    fn control(&mut self, name: &str, request: u8, outcome: &str, reply: &str) -> &mut B {
        assert_eq!(request_name(0x41, request), name);
        let dir = if request == 0x67 || request == 0x05 {
            Direction::In
        } else {
            Direction::Out
        };
        self.push(
            Actor::Usb,
            Kind::Control {
                dir,
                request_type: 0x41,
                request,
                value: 0,
                length: 0,
                result: result(outcome),
                reply: ControlReply::parse(request, reply).expect("a reply"),
            },
        )
    }

    fn status(&mut self, reply: &str) -> &mut B {
        self.control("GET_DEVICE_STATUS", 0x67, "ok", reply)
    }

    fn start_scan(&mut self) -> &mut B {
        self.control("SET_PARAMS", 0x02, "ok", "")
            .control("START_SCAN", 0x04, "ok", "")
            .device("scan-started", 1, "")
            .cb(ItMsg::Status, 0, 0, 0, Hresult::S_OK)
            .wait(2000)
            .device("warmup-done", 0, "")
    }

    #[allow(clippy::too_many_arguments)] // every Callback field, for hand-built traces
    fn callback_full(
        &mut self,
        msg: ItMsg,
        percent: i32,
        offset: i64,
        length: i64,
        page: u32,
        crc: u32,
        expect: u32,
        result: Hresult,
        sticky: bool,
    ) -> &mut B {
        self.push(
            Actor::Service,
            Kind::Callback {
                msg,
                status: 1,
                percent,
                offset,
                length,
                carried: None,
                page,
                crc,
                expect_crc: expect,
                result,
                sticky,
            },
        )
    }

    fn cb(
        &mut self,
        msg: ItMsg,
        percent: i32,
        offset: i64,
        length: i64,
        result: Hresult,
    ) -> &mut B {
        let crc = if msg == ItMsg::Data {
            0x1000 + offset as u32
        } else {
            0
        };
        self.callback_full(msg, percent, offset, length, 0, crc, crc, result, false)
    }

    fn bulk(&mut self) -> &mut B {
        self.push(
            Actor::Usb,
            Kind::Bulk {
                ep: 0x81,
                requested: BAND as u32,
                actual: BAND as u32,
                crc: 7,
                result: result("ok"),
            },
        )
    }

    /// Band `k` of page 0 (of 4): ready, read, sent, handed to the callback with `result`.
    fn band(&mut self, k: i64, result: Hresult) -> &mut B {
        self.wait(800)
            .device("band-ready", k as u64, "")
            .bulk()
            .device("band-sent", k as u64, "")
            .cb(ItMsg::Data, ((k + 1) * 25) as i32, k * BAND, BAND, result)
    }

    /// What a correct driver does on cancel: Cancel Request, busy, motor stops, OK.
    fn host_cancel(&mut self) -> &mut B {
        self.wait(10)
            .control("CANCEL", 0x64, "ok", "")
            .device("cancel-requested", MOTOR_STOP, "")
            .status("0x2019 busy")
            .wait(MOTOR_STOP)
            .device("motor-stopped", 1, "")
            .wait(5)
            .status("0x2001 ok")
    }

    fn ret(&mut self, n: u32, hr: Hresult) -> &mut B {
        self.ret_pending(n, hr, 0)
    }

    fn ret_pending(&mut self, n: u32, hr: Hresult, pending: u32) -> &mut B {
        self.wait(5)
            .push(Actor::Driver, Kind::AcquireReturn { n, hr, pending })
            .push(Actor::App, Kind::AcquireDone { n, hr, bytes: 0 })
    }

    fn app_cancel(&mut self, n: u32) -> &mut B {
        self.push(Actor::App, Kind::CancelPendingIo { n })
            .push(Actor::Service, Kind::NotifyCancelIo {})
    }

    /// A whole acquisition that completes: 4 bands, 100%.
    fn complete(&mut self, n: u32) -> &mut B {
        self.wait(100).acquire(n).start_scan();
        for k in 0..4 {
            self.band(k, Hresult::S_OK);
        }
        self.device("scan-complete", 1, "")
            .device("drained", 0, "")
            .ret(n, Hresult::S_OK)
    }

    /// An acquisition cancelled by S_FALSE at band 2 (index 1), handled correctly.
    fn cancelled(&mut self, n: u32) -> &mut B {
        self.wait(100)
            .acquire(n)
            .start_scan()
            .band(0, Hresult::S_OK)
            .band(1, Hresult::S_FALSE)
            .host_cancel()
            .ret(n, Hresult::S_FALSE)
    }

    fn trace(&self) -> Trace {
        self.r.finish()
    }
}

fn scenario(expects: &[serde_json::Value]) -> Scenario {
    let acquisitions: Vec<serde_json::Value> = expects
        .iter()
        .map(|e| serde_json::json!({ "expect": e }))
        .collect();
    serde_json::from_value(serde_json::json!({
        "description": "unit test",
        "rules": [],
        "profile": "fast-flatbed",
        "scan": { "resolution_dpi": 100, "mode": "gray8", "width_px": 128, "height_px": 64 },
        "acquisitions": acquisitions,
        "budget_us": 10_000_000u64,
    }))
    .expect("test scenario")
}

fn complete() -> serde_json::Value {
    serde_json::json!("complete")
}

fn cancelled() -> serde_json::Value {
    serde_json::json!("cancelled")
}

fn hresult(h: &str) -> serde_json::Value {
    serde_json::json!({ "hresult": h })
}

struct Run {
    trace: Trace,
    scenario: Scenario,
    service: ServiceModel,
    async_cancel: bool,
    host_lag: Option<super::lag::HostLag>,
}

impl Run {
    fn new(b: &B, expects: &[serde_json::Value]) -> Run {
        Run {
            trace: b.trace(),
            scenario: scenario(expects),
            service: ServiceModel::Xp,
            async_cancel: true,
            host_lag: None,
        }
    }

    fn vista(mut self) -> Run {
        self.service = ServiceModel::Vista;
        self
    }

    fn legacy(mut self) -> Run {
        self.async_cancel = false;
        self
    }

    fn facts(&self) -> RunFacts<'_> {
        RunFacts {
            trace: &self.trace,
            scenario: &self.scenario,
            service: self.service,
            async_cancel: self.async_cancel,
            motor_stop_us: MOTOR_STOP,
            host_lag: self.host_lag.as_ref(),
        }
    }

    fn report(&self) -> RuleReport {
        check_all(&self.facts())
    }

    /// The status of one rule in the full report.
    fn status(&self, id: &str) -> RuleStatus {
        self.report().get(id).cloned().expect("rule in report")
    }

    /// The event index and message of a failing rule.
    fn fail(&self, id: &str) -> (usize, String) {
        match self.status(id) {
            RuleStatus::Fail { event, message } => (event, message),
            other => panic!(
                "{id}: expected a failure, got {other:?}\n{}",
                self.trace.render_text()
            ),
        }
    }

    fn kind(&self, i: usize) -> &Kind {
        &self.trace.events[i].kind
    }
}

fn assert_pass(run: &Run, id: &str) {
    let st = run.status(id);
    assert_eq!(st, RuleStatus::Pass, "{id}\n{}", run.trace.render_text());
}

// ---- the catalogue ----

#[test]
fn catalogue_matches_the_plan() {
    let ids: Vec<&str> = catalog().iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        [
            "WIA-CB-STOP",
            "WIA-RET-SFALSE",
            "WIA-ERR-PROPAGATE",
            "WIA-OUTCOME",
            "WIA-CANCEL-IO-ASAP",
            "WIA-XP-GAP",
            "WIA-VISTA-STICKY",
            "WIA-IDLE-AFTER-CANCEL",
            "WIA-CANCEL-RETURN",
            "WIA-NEXT-TRANSFER",
            "WIA-DATA-CONTIGUOUS",
            "WIA-DATA-EXACT",
            "WIA-DATA-LENGTH",
            "WIA-DATA-BUFFER",
            "WIA-DATA-COMPLETE",
            "WIA-PERCENT",
            "WIA-CADENCE",
            "USB-CANCEL-SENT",
            "USB-STATUS-POLLED",
            "USB-HALTS-CLEARED",
            "USB-NO-PENDING",
            "USB-NO-STALE",
            "WIA-FAULT-NO-HANG",
            "WIA-IDLE-CANCEL-HARMLESS",
        ]
    );
    for r in catalog() {
        for dep in r.depends_on {
            assert!(find(dep).is_some(), "{}: unknown dependency {dep}", r.id);
            assert_ne!(*dep, r.id);
        }
        assert!(!r.quote.contains("**"), "{}: markdown in quote", r.id);
        assert!(
            r.source.contains("reference §"),
            "{}: source names no section",
            r.id
        );
    }
    assert_eq!(
        find("WIA-OUTCOME").unwrap().depends_on,
        [
            "WIA-RET-SFALSE",
            "WIA-ERR-PROPAGATE",
            "WIA-FAULT-NO-HANG",
            "USB-CANCEL-SENT",
            "USB-STATUS-POLLED",
            "USB-HALTS-CLEARED",
            "USB-NO-STALE",
            "WIA-IDLE-AFTER-CANCEL",
            "WIA-CADENCE",
        ]
    );
    assert!(find("NOPE").is_none());
}

#[test]
fn quotes_are_verbatim_in_the_fact_sheet() {
    // cancel-semantics.md is the fact sheet; wia2-stream.md adds the HLK requirement's text.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference");
    let mut text = String::new();
    for name in ["cancel-semantics.md", "wia2-stream.md"] {
        let path = dir.join(name);
        let Ok(t) = std::fs::read_to_string(&path) else {
            eprintln!("skipped: {} not present", path.display());
            return;
        };
        text.push_str(&t);
    }
    let norm = |s: &str| {
        s.replace("**", "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let sheet = norm(&text);
    for r in catalog() {
        assert!(
            sheet.contains(&norm(r.quote)),
            "{}: quote not in the fact sheet: {}",
            r.id,
            r.quote
        );
    }
}

#[test]
fn explain_names_quote_source_checks_and_dependencies() {
    let e = explain("WIA-IDLE-AFTER-CANCEL").unwrap();
    assert!(e.starts_with("WIA-IDLE-AFTER-CANCEL: after a cancel point the device is idle"));
    assert!(e.contains(
        "\"The WIA minidriver must stop all acquisition activity and return to an idle state.\""
    ));
    assert!(e.contains("Canceling a Data Transfer"));
    assert!(e.contains("checks: From the acquisition's first cancel point"));
    assert!(e.contains("depends on: USB-CANCEL-SENT, USB-STATUS-POLLED"));
    let gap = explain("WIA-XP-GAP").unwrap();
    assert!(gap.contains("report only: it never fails"));
    assert!(gap.contains("depends on: -"));
    assert!(explain("WIA-NOPE").is_none());
}

// ---- correct runs pass everything ----

#[test]
fn correct_cancel_then_complete_passes_every_rule() {
    let mut b = B::new();
    b.cancelled(1).complete(2);
    for run in [
        Run::new(&b, &[cancelled(), complete()]),
        Run::new(&b, &[cancelled(), complete()]).legacy(),
    ] {
        let report = run.report();
        assert!(report.failed().is_empty(), "{:?}", report.failed());
        for id in [
            "WIA-CB-STOP",
            "WIA-RET-SFALSE",
            "WIA-OUTCOME",
            "WIA-IDLE-AFTER-CANCEL",
            "WIA-CANCEL-RETURN",
            "WIA-NEXT-TRANSFER",
            "WIA-DATA-CONTIGUOUS",
            "WIA-DATA-EXACT",
            "WIA-DATA-LENGTH",
            "WIA-DATA-BUFFER",
            "WIA-DATA-COMPLETE",
            "WIA-PERCENT",
            "WIA-CADENCE",
            "USB-CANCEL-SENT",
            "USB-STATUS-POLLED",
            "USB-NO-PENDING",
            "USB-NO-STALE",
            "WIA-IDLE-AFTER-CANCEL",
            "WIA-FAULT-NO-HANG",
        ] {
            assert_eq!(report.get(id), Some(&RuleStatus::Pass), "{id}");
        }
        for id in [
            "WIA-ERR-PROPAGATE",
            "WIA-CANCEL-IO-ASAP",
            "WIA-XP-GAP",
            "WIA-VISTA-STICKY",
            "USB-HALTS-CLEARED",
            "WIA-IDLE-CANCEL-HARMLESS",
        ] {
            assert_eq!(report.get(id), Some(&RuleStatus::NotApplicable), "{id}");
        }
        let m = &report.metrics;
        assert_eq!(m.data_callbacks, 6);
        assert_eq!(m.data_bytes, 6 * BAND as u64);
        assert_eq!(m.bytes_after_sfalse, 0);
        assert_eq!(m.cancel_to_idle_us, Some(10 + MOTOR_STOP));
        assert_eq!(m.bands_wasted, Some(0));
        assert_eq!(m.rules_checked, 18);
        assert_eq!(report.passed().len(), 18);
    }
}

// ---- one pass and one fail per rule, by family (as `checks/` is split) ----

mod callbacks;
mod cancel;
mod data;
mod faults;
mod usb;

// ---- suppression and rendering ----

#[test]
fn dependencies_suppress_only_same_or_later_acquisitions() {
    // USB-CANCEL-SENT fails on acquisition 2; an IDLE-AFTER-CANCEL violation on acquisition 1
    // is still counted.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_FALSE)
        .wait(2_000_000)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    b.wait(100)
        .acquire(2)
        .start_scan()
        .band(0, Hresult::S_FALSE)
        .ret(2, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled(), cancelled()]);
    let report = run.report();
    let failed: Vec<&str> = report.failed().iter().map(|r| r.id).collect();
    assert_eq!(failed, ["WIA-IDLE-AFTER-CANCEL", "USB-CANCEL-SENT"]);
    match run.status("WIA-IDLE-AFTER-CANCEL") {
        RuleStatus::Fail { message, .. } => {
            assert!(message.starts_with("acquisition 1:"), "{message}");
            assert!(
                !message.contains("more violations"),
                "acquisition 2's is a consequence: {message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn render_failure_shows_rule_quote_and_context() {
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_FALSE)
        .band(2, Hresult::S_FALSE)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]);
    let (event, msg) = run.fail("WIA-CB-STOP");
    let text = render_failure(find("WIA-CB-STOP").unwrap(), &run.trace, event, &msg);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "FAIL WIA-CB-STOP: no IT_MSG_DATA callback after a callback returned S_FALSE or an error (same acquisition)");
    assert_eq!(lines[1], "  \"If the method returns S_FALSE, the data transfer has been canceled. The WIA minidriver must stop all acquisition activity and return to an idle state.\"");
    assert!(lines[2].contains("Canceling a Data Transfer") && lines[2].contains("§1.2"));
    assert_eq!(lines[3], format!("  {msg}"));
    assert_eq!(lines[4], format!("  trace around event #{event}:"));
    let context = &lines[5..];
    assert_eq!(context.len(), 9, "5 before, the event, 3 after:\n{text}");
    let marked: Vec<&&str> = context.iter().filter(|l| l.starts_with("  >>")).collect();
    assert_eq!(marked.len(), 1);
    assert!(
        marked[0].contains(&format!("#{event}"))
            && marked[0].contains("callback")
            && marked[0].contains("offset=4096"),
        "{}",
        marked[0]
    );
    assert!(context[5].starts_with("  >>"));
    assert!(context[0].contains(&format!("#{}", event - 5)));
    assert!(context[0].contains(&crate::trace::render_event(&run.trace.events[event - 5])));

    // At the very end of a trace there is nothing after.
    let last = run.trace.events.len() - 1;
    let tail = render_failure(find("USB-NO-PENDING").unwrap(), &run.trace, last, "m");
    assert_eq!(
        tail.lines()
            .filter(|l| l.starts_with("     #") || l.starts_with("  >>"))
            .count(),
        6
    );
    assert!(tail.lines().last().unwrap().starts_with("  >>"));
}

#[test]
fn report_serializes() {
    let mut b = B::new();
    b.cancelled(1);
    let report = Run::new(&b, &[cancelled()]).report();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["metrics"]["data_callbacks"], 2);
    assert_eq!(json["results"][0]["id"], "WIA-CB-STOP");
    assert_eq!(json["results"][0]["status"]["status"], "pass");
}
