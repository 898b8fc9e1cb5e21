//! One passing and one failing hand-built run per rule: WIA-CANCEL-IO-ASAP, WIA-XP-GAP, WIA-VISTA-STICKY, WIA-IDLE-AFTER-CANCEL, WIA-CANCEL-RETURN, WIA-NEXT-TRANSFER, and real-time judging net of host lag: a cancel reaching the driver and the device.

use super::*;

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
