//! One passing and one failing hand-built run per rule: WIA-CB-STOP, WIA-RET-SFALSE, WIA-ERR-PROPAGATE, WIA-OUTCOME: the driver's answers to the application's callbacks.

use super::*;

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
