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

// ---- one pass and one fail per rule ----

#[test]
fn cb_stop() {
    let mut b = B::new();
    b.cancelled(1);
    assert_pass(&Run::new(&b, &[cancelled()]), "WIA-CB-STOP");

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
    assert!(matches!(run.kind(event), Kind::Callback { offset, .. } if *offset == 2 * BAND));
    assert!(
        msg.contains("offset 4096") && msg.contains("returned S_FALSE"),
        "{msg}"
    );
    assert_eq!(run.report().metrics.bytes_after_sfalse, BAND as u64);
}

#[test]
fn ret_sfalse() {
    let mut b = B::new();
    b.cancelled(1);
    assert_pass(&Run::new(&b, &[cancelled()]), "WIA-RET-SFALSE");

    for hr in [Hresult::S_OK, Hresult::E_FAIL] {
        let mut b = B::new();
        b.acquire(1)
            .start_scan()
            .band(0, Hresult::S_OK)
            .band(1, Hresult::S_FALSE)
            .host_cancel()
            .ret(1, hr);
        let run = Run::new(&b, &[cancelled()]);
        let (event, msg) = run.fail("WIA-RET-SFALSE");
        assert!(matches!(run.kind(event), Kind::AcquireReturn { .. }));
        assert!(
            msg.contains(&format!("returned {hr}, not S_FALSE")),
            "{msg}"
        );
        // The wrong outcome is a consequence, not counted twice.
        assert_eq!(
            run.status("WIA-OUTCOME"),
            RuleStatus::NotJudged {
                because: "WIA-RET-SFALSE"
            }
        );
    }

    // The device's Cancel button is a cancel too.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(800)
        .device("fault", 1, "cancel-button")
        .device("halted", 0, "0x81,0x02")
        .status("0x201f cancelled halted=0x81,0x02")
        .push(
            Actor::Usb,
            Kind::ClearHalt {
                ep: 0x81,
                result: result("ok"),
            },
        )
        .push(
            Actor::Usb,
            Kind::ClearHalt {
                ep: 0x02,
                result: result("ok"),
            },
        )
        .device("idle", 0, "both halts cleared")
        .ret(1, Hresult::E_FAIL);
    let run = Run::new(&b, &[cancelled()]);
    assert!(run.fail("WIA-RET-SFALSE").1.contains("Cancel button"));
    assert_pass(&run, "USB-HALTS-CLEARED");
}

#[test]
fn err_propagate() {
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::E_FAIL)
        .host_cancel()
        .ret(1, Hresult::E_FAIL);
    let run = Run::new(&b, &[hresult("E_FAIL")]);
    assert_pass(&run, "WIA-ERR-PROPAGATE");
    assert_pass(&run, "WIA-OUTCOME");
    assert_eq!(run.status("WIA-RET-SFALSE"), RuleStatus::NotApplicable);

    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::E_ABORT)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[hresult("E_ABORT")]);
    let (event, msg) = run.fail("WIA-ERR-PROPAGATE");
    assert!(matches!(run.kind(event), Kind::AcquireReturn { .. }));
    assert!(
        msg.contains("returned E_ABORT but drvAcquireItemData returned S_FALSE"),
        "{msg}"
    );
    assert_eq!(
        run.status("WIA-OUTCOME"),
        RuleStatus::NotJudged {
            because: "WIA-ERR-PROPAGATE"
        }
    );
}

#[test]
fn outcome() {
    let mut b = B::new();
    b.complete(1);
    assert_pass(&Run::new(&b, &[complete()]), "WIA-OUTCOME");

    // Expected an error, got a complete transfer; and a second acquisition never ran.
    let run = Run::new(&b, &[serde_json::json!("error"), complete()]);
    let (event, msg) = run.fail("WIA-OUTCOME");
    assert!(matches!(run.kind(event), Kind::AcquireReturn { .. }));
    assert!(
        msg.contains("returned S_OK; the scenario expects an error"),
        "{msg}"
    );
    assert!(msg.contains("1 more violations"), "{msg}");
}

#[test]
fn cancel_io_asap() {
    // Reference: the event aborts the pending read and the Cancel Request follows at once.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(300)
        .app_cancel(1)
        .push(Actor::Usb, Kind::Abort { ep: 0x81 })
        .push(
            Actor::Usb,
            Kind::Bulk {
                ep: 0x81,
                requested: 2048,
                actual: 0,
                crc: 0,
                result: result("cancelled"),
            },
        )
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]);
    assert_pass(&run, "WIA-CANCEL-IO-ASAP");
    assert_pass(&run, "WIA-RET-SFALSE");
    assert_pass(&run, "WIA-IDLE-AFTER-CANCEL");
    assert_eq!(
        run.report().metrics.cancel_to_idle_us,
        Some(10 + MOTOR_STOP)
    );

    // Cancelled from inside a data callback: the callback in progress is not "after" it.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(800)
        .device("band-ready", 1, "")
        .bulk()
        .app_cancel(1)
        .push(Actor::Usb, Kind::Abort { ep: 0x81 })
        .cb(ItMsg::Data, 50, BAND, BAND, Hresult::S_FALSE)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    assert_pass(&Run::new(&b, &[cancelled()]), "WIA-CANCEL-IO-ASAP");

    // Claims async cancel, ignores the event: reads and delivers the next band, cancels late.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(300)
        .app_cancel(1)
        .wait(20_000)
        .band(1, Hresult::S_FALSE)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]);
    let (event, msg) = run.fail("WIA-CANCEL-IO-ASAP");
    assert!(
        matches!(run.kind(event), Kind::Device { what, .. } if what.name() == "band-ready"),
        "first event past the 10 ms"
    );
    assert!(
        msg.contains("no Cancel Request, Device Reset or endpoint abort within 10 ms"),
        "{msg}"
    );
    assert!(msg.contains("and 1 more violations"), "{msg}");
    // The late idle is measured from the callback's S_FALSE, not from the ignored event.
    assert_pass(&run, "WIA-IDLE-AFTER-CANCEL");
    assert_pass(&run, "WIA-RET-SFALSE");
    // Without the claim the same trace is the XP gap, reported.
    let legacy = Run::new(&b, &[cancelled()]).legacy();
    assert_eq!(
        legacy.status("WIA-CANCEL-IO-ASAP"),
        RuleStatus::NotApplicable
    );
    assert!(
        legacy.report().failed().is_empty(),
        "{:?}",
        legacy.report().failed()
    );
}

fn bulk_in(b: &mut B, actual: u32, outcome: &str) {
    b.push(
        Actor::Usb,
        Kind::Bulk {
            ep: 0x81,
            requested: 3072,
            actual,
            crc: 0,
            result: result(outcome),
        },
    );
}

#[test]
fn cancel_io_asap_refuses_an_abort_undone_by_a_new_read() {
    // The event aborts the pending read; the driver reads again at once, gets the next band,
    // and only then sends the Cancel Request (still within 10 ms).
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(300)
        .app_cancel(1)
        .push(Actor::Usb, Kind::Abort { ep: 0x81 });
    bulk_in(&mut b, 0, "cancelled");
    b.wait(400)
        .device("band-ready", 1, "")
        .device("band-sent", 1, "");
    bulk_in(&mut b, 2048, "ok");
    b.host_cancel().ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]);
    let (event, msg) = run.fail("WIA-CANCEL-IO-ASAP");
    assert!(matches!(run.kind(event), Kind::Bulk { actual: 2048, .. }));
    assert!(
        msg.contains("aborted the endpoint (#13) but submitted a read on it again (#17) before any Cancel Request or Device Reset"),
        "{msg}"
    );

    // A read whose data had moved before the abort completes a little later: no new read.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(800)
        .device("band-ready", 1, "")
        .device("band-sent", 1, "")
        .wait(200)
        .app_cancel(1)
        .push(Actor::Usb, Kind::Abort { ep: 0x81 })
        .wait(200);
    bulk_in(&mut b, 2048, "ok");
    b.host_cancel().ret(1, Hresult::S_FALSE);
    assert_pass(&Run::new(&b, &[cancelled()]), "WIA-CANCEL-IO-ASAP");

    // A read submitted after the abort that times out is a new read too; with the Cancel
    // Request more than 10 ms late, the abort does not count as the cancel either.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(300)
        .app_cancel(1)
        .push(Actor::Usb, Kind::Abort { ep: 0x81 });
    bulk_in(&mut b, 0, "cancelled");
    b.wait(100_000);
    bulk_in(&mut b, 0, "timeout");
    b.host_cancel().ret(1, Hresult::S_FALSE);
    let msg = Run::new(&b, &[cancelled()]).fail("WIA-CANCEL-IO-ASAP").1;
    assert!(msg.contains("submitted a read on it again"), "{msg}");
    assert!(msg.contains("and 1 more violations"), "{msg}");
}

#[test]
fn xp_gap_reports_and_never_fails() {
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(300)
        .app_cancel(1)
        .wait(20_000)
        .band(1, Hresult::S_FALSE)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]).legacy();
    match run.status("WIA-XP-GAP") {
        RuleStatus::Report { message } => {
            assert!(
                message
                    .contains("1 band(s), 2048 bytes read from the device after CancelPendingIO"),
                "{message}"
            );
            assert!(
                message.contains("learned of the cancel 20.8 ms later"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(run.report().metrics.bands_wasted, Some(1));
    // Async drivers and vista: nothing to report.
    assert_eq!(
        Run::new(&b, &[cancelled()]).status("WIA-XP-GAP"),
        RuleStatus::NotApplicable
    );
    assert_eq!(
        Run::new(&b, &[cancelled()])
            .legacy()
            .vista()
            .status("WIA-XP-GAP"),
        RuleStatus::NotApplicable
    );
}

#[test]
fn vista_sticky() {
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(300)
        .app_cancel(1)
        .wait(500)
        .device("band-ready", 1, "")
        .bulk()
        .callback_full(ItMsg::Data, 50, BAND, BAND, 0, 1, 1, Hresult::S_FALSE, true)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]).vista().legacy();
    assert_pass(&run, "WIA-VISTA-STICKY");

    // Cancelled from inside a callback: that callback keeps the application's S_OK.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(800)
        .device("band-ready", 1, "")
        .bulk()
        .app_cancel(1)
        .push(Actor::Usb, Kind::Abort { ep: 0x81 })
        .cb(ItMsg::Data, 50, BAND, BAND, Hresult::S_OK)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]).vista();
    assert_pass(&run, "WIA-VISTA-STICKY");
    assert!(
        run.report().failed().is_empty(),
        "{:?}",
        run.report().failed()
    );
    assert_eq!(
        Run::new(&b, &[cancelled()])
            .legacy()
            .status("WIA-VISTA-STICKY"),
        RuleStatus::NotApplicable
    );

    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(300)
        .app_cancel(1)
        .wait(500)
        .device("band-ready", 1, "")
        .bulk()
        .callback_full(ItMsg::Data, 50, BAND, BAND, 0, 1, 1, Hresult::S_OK, false)
        .band(2, Hresult::S_FALSE)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]).vista().legacy();
    let (event, msg) = run.fail("WIA-VISTA-STICKY");
    assert!(matches!(run.kind(event), Kind::Callback { result, .. } if *result == Hresult::S_OK));
    assert!(
        msg.contains("returned S_OK (sticky=false), not the sticky S_FALSE"),
        "{msg}"
    );
}

#[test]
fn idle_after_cancel() {
    let mut b = B::new();
    b.cancelled(1);
    assert_pass(&Run::new(&b, &[cancelled()]), "WIA-IDLE-AFTER-CANCEL");

    // Waits two seconds before the Cancel Request.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_FALSE)
        .wait(2_000_000)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]);
    let (event, msg) = run.fail("WIA-IDLE-AFTER-CANCEL");
    assert_eq!(
        run.trace.events[event].at_us,
        run.trace.events[event - 1].at_us + 2_000_010
    );
    assert!(
        msg.contains("budget 50.5 ms (motor stop 0.5 ms + 50 ms)"),
        "{msg}"
    );
    assert!(msg.contains("2000.5 ms after it"), "{msg}");
    for id in [
        "USB-CANCEL-SENT",
        "USB-STATUS-POLLED",
        "WIA-RET-SFALSE",
        "WIA-CB-STOP",
    ] {
        assert_pass(&run, id);
    }

    // A device that stops slowly by itself (slow_cancel fault) is not the driver's fault.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_FALSE)
        .wait(10)
        .control("CANCEL", 0x64, "ok", "")
        .device("cancel-requested", 80_000, "")
        .wait(80_000)
        .device("motor-stopped", 1, "")
        .status("0x2001 ok")
        .ret(1, Hresult::S_FALSE);
    assert_pass(&Run::new(&b, &[cancelled()]), "WIA-IDLE-AFTER-CANCEL");
}

/// Host lag `lag_us` accrued during the longest gap between two events of `run`'s trace.
fn lag_in_longest_gap(run: &Run, lag_us: u64) -> super::lag::HostLag {
    let ev = &run.trace.events;
    let i = (1..ev.len())
        .max_by_key(|&i| ev[i].at_us - ev[i - 1].at_us)
        .expect("events");
    let (a, b) = (ev[i - 1].at_us, ev[i].at_us);
    let end = ev.last().expect("events").at_us;
    super::lag::HostLag::from_samples(vec![(0, 0), (a, 0), (b, lag_us), (end, lag_us)])
}

#[test]
fn real_time_rules_take_host_lag_off_and_still_fail_a_slow_driver() {
    // The Cancel Request reaches the device 100 ms after S_FALSE (budget 50.5 ms).
    let late = |wait_us: u64| {
        let mut b = B::new();
        b.acquire(1)
            .start_scan()
            .band(0, Hresult::S_OK)
            .band(1, Hresult::S_FALSE)
            .wait(wait_us)
            .host_cancel()
            .ret(1, Hresult::S_FALSE);
        Run::new(&b, &[cancelled()])
    };
    let mut run = late(100_000);
    run.fail("WIA-IDLE-AFTER-CANCEL");
    // 80 ms of it the run's threads waited for a CPU: net 20.5 ms, within budget.
    run.host_lag = Some(lag_in_longest_gap(&run, 80_000));
    assert_pass(&run, "WIA-IDLE-AFTER-CANCEL");
    let m = run.report().metrics;
    assert_eq!(m.cancel_to_idle_lag_us, Some(80_000));
    assert_eq!(m.host_lag_us, Some(80_000));
    // A driver that waits two seconds is slow whatever the load: the lag inside its wait is
    // only what the machine measured, and the message says what was taken off.
    let mut run = late(2_000_000);
    run.host_lag = Some(lag_in_longest_gap(&run, 80_000));
    let (_, msg) = run.fail("WIA-IDLE-AFTER-CANCEL");
    assert!(msg.contains("1920.5 ms after it"), "{msg}");
    assert!(msg.contains("net of 80.0 ms host lag"), "{msg}");
    // Virtual time has no lag: the metrics say nothing about it.
    let run = late(10);
    assert_eq!(run.report().metrics.host_lag_us, None);
}

#[test]
fn cancel_return() {
    let mut b = B::new();
    b.cancelled(1);
    assert_pass(&Run::new(&b, &[cancelled()]), "WIA-CANCEL-RETURN");

    // The device is idle 0.5 ms after the cancel; the driver returns 3 s later.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_FALSE)
        .host_cancel()
        .wait(3_000_000)
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]);
    let (event, msg) = run.fail("WIA-CANCEL-RETURN");
    assert!(matches!(run.kind(event), Kind::AcquireReturn { n: 1, .. }));
    assert!(msg.contains("the device was stopped at #"), "{msg}");
    assert!(
        msg.contains("returned only 3000.0 ms after that (budget 50 ms)"),
        "{msg}"
    );
    assert_pass(&run, "WIA-IDLE-AFTER-CANCEL");

    // A device slow to stop is not the driver's delay: timed from the stop.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_FALSE)
        .wait(10)
        .control("CANCEL", 0x64, "ok", "")
        .device("cancel-requested", 2_000_000, "")
        .wait(2_000_000)
        .device("motor-stopped", 1, "")
        .wait(5)
        .status("0x2001 ok")
        .ret(1, Hresult::S_FALSE);
    assert_pass(&Run::new(&b, &[cancelled()]), "WIA-CANCEL-RETURN");

    // An application error is not a cancel: not judged here.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::E_FAIL)
        .host_cancel()
        .wait(3_000_000)
        .ret(1, Hresult::E_FAIL);
    assert_eq!(
        Run::new(&b, &[hresult("E_FAIL")]).status("WIA-CANCEL-RETURN"),
        RuleStatus::NotApplicable
    );
}

#[test]
fn next_transfer() {
    let mut b = B::new();
    b.cancelled(1).complete(2);
    assert_pass(
        &Run::new(&b, &[cancelled(), complete()]),
        "WIA-NEXT-TRANSFER",
    );

    // The device still busy: START_SCAN refused, the driver reports busy.
    let mut b = B::new();
    b.cancelled(1)
        .wait(100)
        .acquire(2)
        .control("SET_PARAMS", 0x02, "ok", "")
        .device("start-refused", 0, "device is busy")
        .control("START_SCAN", 0x04, "stall", "")
        .ret(2, Hresult::WIA_ERROR_BUSY);
    let run = Run::new(&b, &[cancelled(), complete()]);
    let (event, msg) = run.fail("WIA-NEXT-TRANSFER");
    assert!(matches!(run.kind(event), Kind::Device { what, .. } if what.name() == "start-refused"));
    assert!(
        msg.contains(
            "acquisition 2 (after acquisition 1 ended S_FALSE): the device refused the scan"
        ),
        "{msg}"
    );
}

#[test]
fn data_contiguous() {
    let mut b = B::new();
    b.complete(1);
    assert_pass(&Run::new(&b, &[complete()]), "WIA-DATA-CONTIGUOUS");

    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_OK)
        .wait(800)
        .bulk()
        .cb(ItMsg::Data, 75, 2 * BAND + 16, BAND, Hresult::S_OK)
        .wait(800)
        .bulk()
        .cb(ItMsg::Data, 100, 3 * BAND + 16, BAND, Hresult::S_OK)
        .device("scan-complete", 1, "")
        .ret(1, Hresult::S_OK);
    let run = Run::new(&b, &[complete()]);
    let (event, msg) = run.fail("WIA-DATA-CONTIGUOUS");
    assert!(matches!(run.kind(event), Kind::Callback { offset, .. } if *offset == 2 * BAND + 16));
    assert!(
        msg.contains("offset 4112 (length 2048), expected offset 4096"),
        "{msg}"
    );
    assert!(
        !msg.contains("more violations"),
        "one gap is one violation: {msg}"
    );
    assert_pass(&run, "WIA-DATA-EXACT");
}

#[test]
fn data_exact() {
    let mut b = B::new();
    b.complete(1);
    assert_pass(&Run::new(&b, &[complete()]), "WIA-DATA-EXACT");

    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .callback_full(
            ItMsg::Data,
            50,
            BAND,
            BAND,
            0,
            0xdead,
            0xbeef,
            Hresult::S_OK,
            false,
        )
        .ret(1, Hresult::S_OK);
    let run = Run::new(&b, &[complete()]);
    let (event, msg) = run.fail("WIA-DATA-EXACT");
    assert!(matches!(
        run.kind(event),
        Kind::Callback { crc: 0xdead, .. }
    ));
    assert!(
        msg.contains("crc 0000dead, the image there has 0000beef"),
        "{msg}"
    );
}

/// A data callback whose lLength is `length` while it carries `carried` bytes.
fn lying_band(b: &mut B, k: i64, percent: i32, length: i64, carried: u64) {
    let crc = 0x1000 + (k * BAND) as u32;
    b.wait(800).bulk().push(
        Actor::Service,
        Kind::Callback {
            msg: ItMsg::Data,
            status: 4,
            percent,
            offset: k * BAND,
            length,
            carried: (carried != length as u64).then_some(carried),
            page: 0,
            crc,
            expect_crc: crc,
            result: Hresult::S_OK,
            sticky: false,
        },
    );
}

#[test]
fn data_length() {
    let mut b = B::new();
    b.complete(1);
    assert_pass(&Run::new(&b, &[complete()]), "WIA-DATA-LENGTH");

    // The page's last band says 2048 bytes but carries 1400: no next band to catch it.
    let mut b = B::new();
    b.acquire(1).start_scan();
    for k in 0..3 {
        b.band(k, Hresult::S_OK);
    }
    lying_band(&mut b, 3, 100, BAND, 1400);
    b.device("scan-complete", 1, "").ret(1, Hresult::S_OK);
    let run = Run::new(&b, &[complete()]);
    let (event, msg) = run.fail("WIA-DATA-LENGTH");
    assert!(matches!(run.kind(event), Kind::Callback { offset, .. } if *offset == 3 * BAND));
    assert!(
        msg.contains("says lLength 2048 but carries 1400 bytes"),
        "{msg}"
    );

    // Honest about its bytes, but running past the page (4 x 2048 = 8192 bytes).
    let mut b = B::new();
    b.acquire(1).start_scan();
    for k in 0..3 {
        b.band(k, Hresult::S_OK);
    }
    lying_band(&mut b, 3, 100, BAND + 100, BAND as u64 + 100);
    b.device("scan-complete", 1, "").ret(1, Hresult::S_OK);
    let msg = Run::new(&b, &[complete()]).fail("WIA-DATA-LENGTH").1;
    assert!(
        msg.contains("offset 6144 with lLength 2148 runs past the page's 8192 bytes"),
        "{msg}"
    );
}

#[test]
fn data_buffer() {
    let mut b = B::new();
    b.complete(1);
    let mut run = Run::new(&b, &[complete()]);
    assert_pass(&run, "WIA-DATA-BUFFER");

    // The same bands into a 1024-byte buffer (the application's `acquire` says so).
    run.scenario.buffer = 1024;
    for e in &mut run.trace.events {
        if let Kind::Acquire { buffer, .. } = &mut e.kind {
            *buffer = 1024;
        }
    }
    let (event, msg) = run.fail("WIA-DATA-BUFFER");
    assert!(matches!(run.kind(event), Kind::Callback { offset: 0, .. }));
    assert!(
        msg.contains("hands over 2048 bytes, more than the 1024-byte transfer buffer"),
        "{msg}"
    );
    assert!(msg.contains("(and 3 more violations)"), "{msg}");
}

#[test]
fn data_complete() {
    let mut b = B::new();
    b.complete(1);
    assert_pass(&Run::new(&b, &[complete()]), "WIA-DATA-COMPLETE");

    // Three bands of four, S_OK: the short page, with the device still holding the last band.
    let mut b = B::new();
    b.acquire(1).start_scan();
    for k in 0..3 {
        b.band(k, Hresult::S_OK);
    }
    b.wait(800)
        .device("band-ready", 3, "")
        .ret(1, Hresult::S_OK);
    let run = Run::new(&b, &[complete()]);
    let (event, msg) = run.fail("WIA-DATA-COMPLETE");
    assert!(matches!(run.kind(event), Kind::AcquireReturn { n: 1, .. }));
    assert!(
        msg.contains("returned S_OK but page 0 carried 6144 of its 8192 bytes"),
        "{msg}"
    );
    // The device left busy follows from it.
    assert_eq!(
        run.status("USB-CANCEL-SENT"),
        RuleStatus::NotJudged {
            because: "WIA-DATA-COMPLETE"
        }
    );

    // Every byte, but the last band says 99%.
    let mut b = B::new();
    b.acquire(1).start_scan();
    for k in 0..3 {
        b.band(k, Hresult::S_OK);
    }
    b.wait(800)
        .bulk()
        .cb(ItMsg::Data, 99, 3 * BAND, BAND, Hresult::S_OK)
        .device("scan-complete", 1, "")
        .ret(1, Hresult::S_OK);
    let msg = Run::new(&b, &[complete()]).fail("WIA-DATA-COMPLETE").1;
    assert!(
        msg.contains("its last IT_MSG_DATA reported 99%, not 100%"),
        "{msg}"
    );

    // A cancelled transfer is not judged: less data is what a cancel means.
    let mut b = B::new();
    b.cancelled(1);
    assert_eq!(
        Run::new(&b, &[cancelled()]).status("WIA-DATA-COMPLETE"),
        RuleStatus::NotApplicable
    );
}

#[test]
fn percent() {
    let mut b = B::new();
    b.complete(1);
    assert_pass(&Run::new(&b, &[complete()]), "WIA-PERCENT");

    // Backwards on the third band.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_OK)
        .wait(800)
        .bulk()
        .cb(ItMsg::Data, 49, 2 * BAND, BAND, Hresult::S_OK)
        .band(3, Hresult::S_OK)
        .ret(1, Hresult::S_OK);
    let run = Run::new(&b, &[complete()]);
    let (event, msg) = run.fail("WIA-PERCENT");
    assert!(matches!(
        run.kind(event),
        Kind::Callback { percent: 49, .. }
    ));
    assert!(msg.contains("percent went back from 50 to 49"), "{msg}");

    // 100% reported by a cancelled transfer.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_FALSE)
        .cb(ItMsg::Status, 100, 0, 0, Hresult::S_FALSE)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]);
    assert!(run
        .fail("WIA-PERCENT")
        .1
        .contains("reports 100% after the callback"));
    assert_pass(&run, "WIA-CB-STOP");
}

#[test]
fn cadence() {
    // A band 3 s late: the transfer lasts about 3 s, so "ten times" (every 300 ms) is the more
    // often; status callbacks every 250 ms pass, every 500 ms do not (limit 450 ms).
    let late = |every_us: u64| {
        let mut b = B::new();
        b.acquire(1).start_scan().band(0, Hresult::S_OK);
        for _ in 0..3_000_000 / every_us {
            b.wait(every_us).cb(ItMsg::Status, 25, 0, 0, Hresult::S_OK);
        }
        b.band(1, Hresult::S_OK)
            .band(2, Hresult::S_OK)
            .band(3, Hresult::S_OK)
            .ret(1, Hresult::S_OK);
        Run::new(&b, &[complete()])
    };
    assert_pass(&late(250_000), "WIA-CADENCE");
    let run = late(500_000);
    let (event, msg) = run.fail("WIA-CADENCE");
    assert!(matches!(
        run.kind(event),
        Kind::Callback {
            msg: ItMsg::Status,
            ..
        }
    ));
    assert!(msg.contains("no callback for 500.0 ms"), "{msg}");
    assert!(msg.contains("the limit is 450.7 ms"), "{msg}");

    // A band 12 s late: once a second is the more often; 1 s gaps pass, 2 s gaps do not.
    let long = |every_us: u64| {
        let mut b = B::new();
        b.acquire(1).start_scan().band(0, Hresult::S_OK);
        for _ in 0..12_000_000 / every_us {
            b.wait(every_us).cb(ItMsg::Status, 25, 0, 0, Hresult::S_OK);
        }
        b.band(1, Hresult::S_OK).ret(1, Hresult::S_OK);
        Run::new(&b, &[complete()])
    };
    assert_pass(&long(1_000_000), "WIA-CADENCE");
    assert!(long(2_000_000)
        .fail("WIA-CADENCE")
        .1
        .contains("the limit is 1500.0 ms"));

    // A transfer of a few milliseconds: the 2 ms warm-up gap is under the floor (150 ms).
    let mut b = B::new();
    b.complete(1);
    assert_pass(&Run::new(&b, &[complete()]), "WIA-CADENCE");

    // Silent for 3 s.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(3_000_000)
        .band(1, Hresult::S_OK)
        .band(2, Hresult::S_OK)
        .band(3, Hresult::S_OK)
        .ret(1, Hresult::S_OK);
    let run = Run::new(&b, &[complete()]);
    let (event, msg) = run.fail("WIA-CADENCE");
    assert!(matches!(run.kind(event), Kind::Callback { offset, .. } if *offset == BAND));
    assert!(msg.contains("no callback for 3000.8 ms"), "{msg}");
    assert!(msg.contains("the limit is 450.7 ms"), "{msg}");
}

#[test]
fn cancel_sent() {
    let mut b = B::new();
    b.cancelled(1);
    assert_pass(&Run::new(&b, &[cancelled()]), "USB-CANCEL-SENT");

    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_FALSE)
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[cancelled()]);
    let (event, msg) = run.fail("USB-CANCEL-SENT");
    assert!(matches!(run.kind(event), Kind::AcquireReturn { n: 1, .. }));
    assert!(msg.contains("while the device was still scanning, and no Cancel Request (0x64) or Device Reset (0x66) was sent"), "{msg}");
    // Its consequences are listed, not counted.
    assert_eq!(
        run.status("WIA-IDLE-AFTER-CANCEL"),
        RuleStatus::NotJudged {
            because: "USB-CANCEL-SENT"
        }
    );
    assert_eq!(run.status("USB-STATUS-POLLED"), RuleStatus::NotApplicable);
}

#[test]
fn cancel_sent_judges_s_ok_too() {
    // A whole page, S_OK, but the device goes on producing (a feeder job taken for one page).
    let mut b = B::new();
    b.acquire(1).start_scan();
    for k in 0..4 {
        b.band(k, Hresult::S_OK);
    }
    b.device("page-feed", 1, "").ret(1, Hresult::S_OK);
    let mut run = Run::new(&b, &[complete()]);
    run.scenario.scan.source = scanemu::engine::ScanSource::Adf;
    run.scenario.scan.pages = 0;
    assert_pass(&run, "WIA-DATA-COMPLETE");
    let (event, msg) = run.fail("USB-CANCEL-SENT");
    assert!(matches!(run.kind(event), Kind::AcquireReturn { n: 1, .. }));
    assert!(
        msg.contains("ended with S_OK (it returned S_OK) while the device was still scanning"),
        "{msg}"
    );
}

#[test]
fn status_polled() {
    let mut b = B::new();
    b.cancelled(1);
    assert_pass(&Run::new(&b, &[cancelled()]), "USB-STATUS-POLLED");

    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_FALSE)
        .wait(10)
        .control("CANCEL", 0x64, "ok", "")
        .device("cancel-requested", MOTOR_STOP, "")
        .status("0x2019 busy")
        .ret(1, Hresult::S_FALSE)
        .wait(MOTOR_STOP)
        .device("motor-stopped", 1, "")
        .wait(100)
        .acquire(2)
        .control("SET_PARAMS", 0x02, "ok", "")
        .ret(2, Hresult::WIA_ERROR_BUSY);
    let run = Run::new(&b, &[cancelled(), complete()]);
    let (event, msg) = run.fail("USB-STATUS-POLLED");
    assert!(matches!(run.kind(event), Kind::AcquireReturn { n: 1, .. }));
    assert!(msg.contains("its last answer was 0x2019 busy"), "{msg}");
    assert_eq!(
        run.status("WIA-NEXT-TRANSFER"),
        RuleStatus::NotJudged {
            because: "USB-STATUS-POLLED"
        }
    );
    assert_eq!(
        run.status("WIA-OUTCOME"),
        RuleStatus::NotJudged {
            because: "USB-STATUS-POLLED"
        }
    );
    assert_pass(&run, "USB-CANCEL-SENT");
}

fn device_cancel(b: &mut B, clear: bool) {
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(800)
        .device("fault", 1, "cancel-button")
        .device("halted", 0, "0x81,0x02")
        .push(
            Actor::Usb,
            Kind::Bulk {
                ep: 0x81,
                requested: 2048,
                actual: 0,
                crc: 0,
                result: result("stall"),
            },
        )
        .status("0x201f cancelled halted=0x81,0x02");
    if clear {
        b.push(
            Actor::Usb,
            Kind::ClearHalt {
                ep: 0x81,
                result: result("ok"),
            },
        )
        .device("halt-cleared", 0x81, "")
        .push(
            Actor::Usb,
            Kind::ClearHalt {
                ep: 0x02,
                result: result("ok"),
            },
        )
        .device("halt-cleared", 0x02, "")
        .device("idle", 0, "both halts cleared")
        .status("0x2001 ok");
    }
    b.ret(1, Hresult::S_FALSE);
}

#[test]
fn halts_cleared() {
    let mut b = B::new();
    device_cancel(&mut b, true);
    b.complete(2);
    let run = Run::new(&b, &[cancelled(), complete()]);
    assert_pass(&run, "USB-HALTS-CLEARED");
    assert_pass(&run, "WIA-RET-SFALSE");
    assert!(
        run.report().failed().is_empty(),
        "{:?}",
        run.report().failed()
    );

    let mut b = B::new();
    device_cancel(&mut b, false);
    b.wait(100)
        .acquire(2)
        .control("SET_PARAMS", 0x02, "ok", "")
        .device("start-refused", 0, "endpoints halted")
        .control("START_SCAN", 0x04, "stall", "")
        .ret(2, Hresult::WIA_ERROR_BUSY);
    let run = Run::new(&b, &[cancelled(), complete()]);
    let (event, msg) = run.fail("USB-HALTS-CLEARED");
    assert!(matches!(run.kind(event), Kind::AcquireReturn { n: 1, .. }));
    assert!(msg.contains("endpoint 0x81"), "{msg}");
    assert!(msg.contains("and 1 more violations"), "0x02 too: {msg}");
    assert_eq!(
        run.status("WIA-NEXT-TRANSFER"),
        RuleStatus::NotJudged {
            because: "USB-HALTS-CLEARED"
        }
    );
    assert_eq!(
        run.status("WIA-OUTCOME"),
        RuleStatus::NotJudged {
            because: "USB-HALTS-CLEARED"
        }
    );
    assert_pass(&run, "WIA-IDLE-AFTER-CANCEL");
    assert_eq!(run.report().failed().len(), 1);
}

#[test]
fn no_pending() {
    let mut b = B::new();
    b.cancelled(1);
    assert_pass(&Run::new(&b, &[cancelled()]), "USB-NO-PENDING");

    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .band(1, Hresult::S_FALSE)
        .host_cancel()
        .ret_pending(1, Hresult::S_FALSE, 1);
    let run = Run::new(&b, &[cancelled()]);
    let (event, msg) = run.fail("USB-NO-PENDING");
    assert!(matches!(
        run.kind(event),
        Kind::AcquireReturn { pending: 1, .. }
    ));
    assert!(
        msg.contains("with 1 USB transfer(s) still pending"),
        "{msg}"
    );
}

#[test]
fn no_stale() {
    let mut b = B::new();
    b.cancelled(1).complete(2);
    assert_pass(&Run::new(&b, &[cancelled(), complete()]), "USB-NO-STALE");

    // The first band of the second scan is the band read ahead during the first.
    let mut b = B::new();
    b.cancelled(1)
        .wait(100)
        .acquire(2)
        .start_scan()
        .callback_full(
            ItMsg::Data,
            25,
            0,
            BAND,
            0,
            0x5555,
            0x1000,
            Hresult::S_OK,
            false,
        )
        .callback_full(
            ItMsg::Data,
            50,
            BAND,
            BAND,
            0,
            0x6666,
            0x1800,
            Hresult::S_OK,
            false,
        )
        .band(2, Hresult::S_OK)
        .band(3, Hresult::S_OK)
        .device("scan-complete", 1, "")
        .ret(2, Hresult::S_OK);
    let run = Run::new(&b, &[cancelled(), complete()]);
    let (event, msg) = run.fail("USB-NO-STALE");
    assert!(matches!(
        run.kind(event),
        Kind::Callback { crc: 0x5555, .. }
    ));
    assert!(msg.contains("stale data after acquisition 1"), "{msg}");
    // Every wrong band of that acquisition follows from the stale one.
    assert_eq!(
        run.status("WIA-DATA-EXACT"),
        RuleStatus::NotJudged {
            because: "USB-NO-STALE"
        }
    );
    assert_eq!(run.report().failed().len(), 1);
}

#[test]
fn fault_no_hang() {
    let mut b = B::new();
    b.cancelled(1);
    assert_pass(&Run::new(&b, &[cancelled()]), "WIA-FAULT-NO-HANG");

    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(800)
        .device("fault", 1, "stall")
        .device("halted", 0, "0x81")
        .status("0x201f cancelled halted=0x81")
        .wait(250_000)
        .status("0x201f cancelled halted=0x81")
        .wait(9_000_000)
        .push(
            Actor::Driver,
            Kind::DriverFault {
                what: "hang: no return within the budget".into(),
            },
        );
    let run = Run::new(&b, &[hresult("WIA_ERROR_DEVICE_COMMUNICATION")]);
    let (event, msg) = run.fail("WIA-FAULT-NO-HANG");
    assert!(matches!(run.kind(event), Kind::DriverFault { .. }));
    assert!(
        msg.contains("driver fault during acquisition 1: hang"),
        "{msg}"
    );
    assert_eq!(
        run.status("WIA-OUTCOME"),
        RuleStatus::NotJudged {
            because: "WIA-FAULT-NO-HANG"
        }
    );
    // Rules judged at the return do not judge an acquisition that never returned.
    for id in [
        "USB-HALTS-CLEARED",
        "WIA-IDLE-AFTER-CANCEL",
        "USB-NO-PENDING",
        "USB-CANCEL-SENT",
    ] {
        assert_eq!(run.status(id), RuleStatus::NotApplicable, "{id}");
    }
    assert_eq!(run.report().failed().len(), 1);
}

#[test]
fn idle_cancel_harmless() {
    let mut b = B::new();
    b.app_cancel(1)
        .push(Actor::Usb, Kind::Abort { ep: 0x81 })
        .app_cancel(2)
        .complete(1);
    let run = Run::new(&b, &[complete()]);
    assert_pass(&run, "WIA-IDLE-CANCEL-HARMLESS");
    assert!(
        run.report().failed().is_empty(),
        "{:?}",
        run.report().failed()
    );

    // A driver that sends Cancel Request while idle (stalled) and latches the cancel.
    let mut b = B::new();
    b.app_cancel(1)
        .control("CANCEL", 0x64, "stall", "")
        .wait(100)
        .acquire(1)
        .cb(ItMsg::Status, 0, 0, 0, Hresult::S_OK)
        .ret(1, Hresult::S_FALSE);
    let run = Run::new(&b, &[complete()]);
    let (event, msg) = run.fail("WIA-IDLE-CANCEL-HARMLESS");
    assert!(matches!(run.kind(event), Kind::Control { result, .. } if result.name() == "stall"));
    assert!(
        msg.contains("after CancelPendingIO while idle (#0), a USB transfer failed: stall"),
        "{msg}"
    );
    assert!(
        msg.contains("and 1 more violations"),
        "the next acquisition too: {msg}"
    );

    // Twice during a transfer.
    let mut b = B::new();
    b.acquire(1)
        .start_scan()
        .band(0, Hresult::S_OK)
        .wait(300)
        .app_cancel(1)
        .push(Actor::Usb, Kind::Abort { ep: 0x81 })
        .wait(50)
        .app_cancel(2)
        .host_cancel()
        .ret(1, Hresult::S_FALSE);
    assert_pass(&Run::new(&b, &[cancelled()]), "WIA-IDLE-CANCEL-HARMLESS");
}

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
