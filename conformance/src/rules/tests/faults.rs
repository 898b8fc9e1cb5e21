//! One passing and one failing hand-built run per rule: WIA-FAULT-NO-HANG, WIA-IDLE-CANCEL-HARMLESS: device faults and cancels while idle.

use super::*;

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
