//! One passing and one failing hand-built run per rule: WIA-DATA-*, WIA-PERCENT, WIA-CADENCE: what the callbacks carry and how often they come.

use super::*;

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
