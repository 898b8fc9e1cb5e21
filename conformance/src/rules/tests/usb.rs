//! One passing and one failing hand-built run per rule: USB-CANCEL-SENT, USB-STATUS-POLLED, USB-HALTS-CLEARED, USB-NO-PENDING, USB-NO-STALE: the cancel on the wire.

use super::*;

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
