//! Every injected fault and every cancel/reset corner, as a host sees it on the wire: through
//! the in-process host and the native protocol only, in virtual time.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::*;
use scanemu::engine::{Fault, ScanJob, ScanMode};
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::profile::Profile;
use scanemu::time::{Duration, Instant};

/// 200 x 200 gray8 at 100 dpi on the fast profile: 200-byte lines, 16-line bands of 3200
/// bytes (the last has 8 lines), 13 bands; band k is ready 2 ms + (k + 1) * 800 us after
/// START_SCAN.
const JOB: ScanJob = ScanJob {
    resolution_dpi: 100,
    mode: ScanMode::Gray8,
    x_px: 0,
    y_px: 0,
    width_px: 200,
    height_px: 200,
    source: scanemu::engine::ScanSource::Flatbed,
    pages: 1,
};

fn fast() -> Profile {
    Profile::builtin_fast()
}

/// A short timeout for reads that must find nothing.
const NOTHING: Duration = Duration::from_millis(20);

#[test]
fn stall_at_band_k_halts_bulk_in_until_cleared() {
    let (sim, h) = setup(&fast(), vec![Fault::Stall { page: 0, band: 2 }]);
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            for k in 0..2 {
                let band = read_band(&h, &report).await.expect("band before the stall");
                assert_eq!(band, expected_band(&JOB, &report, 0, k), "band {k}");
            }
            assert_eq!(read_band(&h, &report).await, Err(TransferError::Stall));
            let st = device_status(&h).await;
            assert_eq!(
                (st.code, st.halted),
                (STATUS_TRANSACTION_CANCELLED, vec![EP_DATA_IN])
            );
            let ss = scan_status(&h).await;
            assert_eq!(
                (ss.state, ss.error),
                (DeviceState::Halted, ScanError::DataStall)
            );
            assert_eq!(ss.bands_sent, 2);
            h.clear_halt(EP_DATA_IN).await.unwrap();
            let st = device_status(&h).await;
            assert_eq!((st.code, st.halted), (STATUS_OK, vec![]));
            assert_eq!(scan_status(&h).await.state, DeviceState::Idle);
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn disconnect_at_band_k_fails_every_transfer_with_no_device() {
    let (sim, h) = setup(&fast(), vec![Fault::Disconnect { page: 0, band: 2 }]);
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            for k in 0..2 {
                let band = read_band(&h, &report)
                    .await
                    .expect("band before the disconnect");
                assert_eq!(band, expected_band(&JOB, &report, 0, k), "band {k}");
            }
            let t0 = h.now();
            assert_eq!(read_band(&h, &report).await, Err(TransferError::NoDevice));
            // Band 2 would have been ready 2000 + 3 * 800 us after START_SCAN; the read ends
            // when the device leaves, not at its timeout.
            assert!(h.now() - t0 < Duration::from_millis(2));
            let mut buf = [0u8; 8];
            assert_eq!(
                h.interrupt_in(EP_EVENTS, &mut buf, T).await,
                Err(TransferError::NoDevice)
            );
            assert_eq!(
                h.control_in(Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8), T)
                    .await,
                Err(TransferError::NoDevice)
            );
            assert_eq!(cancel(&h).await, Err(TransferError::NoDevice));
        },
        LIMIT,
    )
    .unwrap();
}

/// When each band's read completed, relative to START_SCAN, reading bands as they come.
fn band_times(faults: Vec<Fault>, bands: u32) -> Vec<u64> {
    let (sim, h) = setup(&fast(), faults);
    sim.block_on(
        async move {
            let params = ScanParams { job: JOB }.encode();
            h.control_out(Setup::vendor_out(REQ_SET_PARAMS, 0, 0, 0), &params, T)
                .await
                .unwrap();
            let report = ParamsReport::decode(
                &h.control_in(
                    Setup::vendor_in(REQ_GET_PARAMS, 0, 0, PARAMS_REPORT_LEN as u16),
                    T,
                )
                .await
                .unwrap(),
            )
            .unwrap();
            // The device takes START_SCAN at this instant (the wire time of the request's
            // SETUP packet is charged after it).
            let t0 = h.now();
            h.control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], T)
                .await
                .unwrap();
            let mut times = Vec::new();
            for k in 0..bands {
                let band = read_band(&h, &report).await.unwrap();
                assert_eq!(band, expected_band(&JOB, &report, 0, k), "band {k}");
                times.push((h.now() - t0).total_micros());
            }
            times
        },
        LIMIT,
    )
    .unwrap()
}

#[test]
fn late_band_arrives_delay_us_later_at_exact_virtual_times() {
    let profile = fast();
    let wire = profile.usb.speed.wire_time(3200).total_micros();
    assert_eq!(wire, 61, "3200 bytes at high speed");
    let on_time = band_times(vec![], 4);
    // Ready at warm-up + (k + 1) * 16 lines * 50 us, read at once, charged on the wire.
    assert_eq!(
        on_time,
        (0..4u64)
            .map(|k| 2000 + (k + 1) * 800 + wire)
            .collect::<Vec<_>>()
    );
    let late = band_times(
        vec![Fault::LateBand {
            page: 0,
            band: 2,
            delay_us: 5000,
        }],
        4,
    );
    assert_eq!(
        late[..2],
        on_time[..2],
        "bands before the late one keep their times"
    );
    assert_eq!(late[2], on_time[2] + 5000, "band 2 is 5000 us late");
    // Band 3 was due before band 2 arrived: it is ready with it and follows on the wire.
    assert_eq!(late[3], late[2] + wire);
    assert_eq!(late, vec![2861, 3661, 9461, 9522]);
}

#[test]
fn short_band_ends_with_a_short_packet_and_an_idle_device() {
    let (sim, h) = setup(
        &fast(),
        vec![Fault::ShortBand {
            page: 0,
            band: 1,
            bytes: 1000,
        }],
    );
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            let band0 = read_band(&h, &report).await.unwrap();
            assert_eq!(band0, expected_band(&JOB, &report, 0, 0));
            let band1 = read_band(&h, &report).await.unwrap();
            assert_eq!(band1.len(), 1000, "512 + 488: ended by a short packet");
            assert_eq!(band1, expected_band(&JOB, &report, 0, 1)[..1000]);
            let ss = scan_status(&h).await;
            assert_eq!(
                (ss.state, ss.error),
                (DeviceState::Idle, ScanError::ShortBand)
            );
            assert_eq!((ss.bands_sent, ss.bands_ready), (2, 0));
            assert_eq!(
                device_status(&h).await,
                DeviceStatus {
                    code: STATUS_OK,
                    halted: vec![]
                }
            );
            let mut buf = vec![0u8; 4096];
            assert_eq!(
                h.bulk_in(EP_DATA_IN, &mut buf, NOTHING).await,
                Err(TransferError::Timeout { actual: 0 })
            );
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

fn device_side_abort(fault: Fault, error: ScanError) {
    let (sim, h) = setup(&fast(), vec![fault]);
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            for k in 0..2 {
                let band = read_band(&h, &report).await.unwrap();
                assert_eq!(band, expected_band(&JOB, &report, 0, k));
            }
            assert_eq!(read_band(&h, &report).await, Err(TransferError::Stall));
            let st = device_status(&h).await;
            assert_eq!(
                (st.code, st.halted),
                (STATUS_TRANSACTION_CANCELLED, vec![EP_DATA_IN, EP_DATA_OUT])
            );
            let ss = scan_status(&h).await;
            assert_eq!((ss.state, ss.error), (DeviceState::Halted, error));
            let events = drain_events(&h).await;
            assert_eq!(
                events.last(),
                Some(&Event {
                    code: EventCode::Fault,
                    arg: error as u8,
                    page: 0,
                    value: 2
                })
            );
            h.clear_halt(EP_DATA_IN).await.unwrap();
            h.clear_halt(EP_DATA_OUT).await.unwrap();
            assert_eq!(device_status(&h).await.code, STATUS_OK);
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn paper_jam_stalls_both_bulk_endpoints() {
    device_side_abort(Fault::PaperJam { page: 0, band: 2 }, ScanError::PaperJam);
}

#[test]
fn multi_feed_stalls_both_bulk_endpoints() {
    device_side_abort(Fault::MultiFeed { page: 0, band: 2 }, ScanError::MultiFeed);
}

#[test]
fn cover_open_stalls_both_bulk_endpoints() {
    device_side_abort(Fault::CoverOpen { page: 0, band: 2 }, ScanError::CoverOpen);
}

#[test]
fn cancel_button_is_announced_on_the_interrupt_endpoint() {
    let (sim, h) = setup(&fast(), vec![Fault::CancelButton { page: 0, band: 2 }]);
    sim.block_on(
        async move {
            start(&h, JOB).await;
            // Nobody reads bulk IN: bands 0 and 1 are buffered, then the button is pressed at
            // the time band 2 would be ready (2000 + 3 * 800 us).
            h.sleep(Duration::from_millis(10)).await;
            let events = drain_events(&h).await;
            let ev = |code, arg, value| Event {
                code,
                arg,
                page: 0,
                value,
            };
            assert_eq!(
                events,
                vec![
                    ev(EventCode::ScanStarted, 0, 1),
                    ev(EventCode::BandReady, 0, 0),
                    ev(EventCode::BandReady, 0, 1),
                    ev(EventCode::Cancelled, ScanError::CancelButton as u8, 2),
                ]
            );
            let st = device_status(&h).await;
            assert_eq!(
                (st.code, st.halted),
                (STATUS_TRANSACTION_CANCELLED, vec![EP_DATA_IN, EP_DATA_OUT])
            );
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn ignore_cancel_keeps_scanning_until_device_reset() {
    let (sim, h) = setup(&fast(), vec![Fault::IgnoreCancel]);
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            for k in 0..2 {
                assert_eq!(
                    read_band(&h, &report).await.unwrap(),
                    expected_band(&JOB, &report, 0, k)
                );
            }
            cancel(&h).await.expect("the request itself is accepted");
            assert_eq!(
                device_status(&h).await,
                DeviceStatus {
                    code: STATUS_OK,
                    halted: vec![]
                }
            );
            let ss = scan_status(&h).await;
            assert_eq!(
                (ss.state, ss.error),
                (DeviceState::Scanning, ScanError::None)
            );
            for k in 2..5 {
                assert_eq!(
                    read_band(&h, &report).await.unwrap(),
                    expected_band(&JOB, &report, 0, k),
                    "band {k} after the ignored cancel"
                );
            }
            device_reset(&h).await.unwrap();
            let ss = scan_status(&h).await;
            assert_eq!(
                (ss.state, ss.error, ss.bands_ready),
                (DeviceState::Idle, ScanError::Reset, 0)
            );
            let mut buf = vec![0u8; 4096];
            assert_eq!(
                h.bulk_in(EP_DATA_IN, &mut buf, NOTHING).await,
                Err(TransferError::Timeout { actual: 0 })
            );
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn slow_cancel_is_busy_for_exactly_its_motor_stop() {
    let (sim, h) = setup(
        &fast(),
        vec![Fault::SlowCancel {
            motor_stop_us: 7000,
        }],
    );
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            read_band(&h, &report).await.unwrap();
            let tc = h.now();
            cancel(&h).await.unwrap();
            // The profile's own motor stop (500 us) is long over: still busy.
            sleep_until(&h, tc + Duration::from_micros(500)).await;
            assert_eq!(device_status(&h).await.code, STATUS_BUSY);
            sleep_until(&h, tc + Duration::from_micros(6999)).await;
            assert_eq!(device_status(&h).await.code, STATUS_BUSY);
            sleep_until(&h, tc + Duration::from_micros(7000)).await;
            assert_eq!(device_status(&h).await.code, STATUS_OK);
            let ss = scan_status(&h).await;
            assert_eq!(
                (ss.state, ss.error),
                (DeviceState::Idle, ScanError::HostCancel)
            );
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn stall_on_cancel_halts_both_endpoints_instead_of_busy() {
    let (sim, h) = setup(&fast(), vec![Fault::StallOnCancel]);
    let notes = Notes::attach(&h);
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            for k in 0..2 {
                assert_eq!(
                    read_band(&h, &report).await.unwrap(),
                    expected_band(&JOB, &report, 0, k)
                );
            }
            // Let band 2 reach the buffer: the cancel discards it.
            h.sleep(Duration::from_micros(900)).await;
            assert_eq!(scan_status(&h).await.bands_ready, 1);
            let tc = h.now();
            cancel(&h).await.expect("the request is accepted");
            let at_cancel: Vec<_> = notes
                .0
                .borrow()
                .iter()
                .filter(|n| n.at == tc)
                .map(|n| (n.kind.name(), n.detail.to_string()))
                .collect();
            assert_eq!(
                at_cancel,
                vec![
                    ("fault", "stall-on-cancel".to_string()),
                    ("halted", "0x81,0x02".to_string())
                ]
            );
            let st = device_status(&h).await;
            assert_eq!(
                (st.code, st.halted),
                (STATUS_TRANSACTION_CANCELLED, vec![EP_DATA_IN, EP_DATA_OUT])
            );
            let ss = scan_status(&h).await;
            assert_eq!(
                (ss.state, ss.error, ss.bands_ready),
                (DeviceState::Halted, ScanError::DataStall, 0)
            );
            assert_eq!(read_band(&h, &report).await, Err(TransferError::Stall));
            // The motor has stopped: no line is scanned while the halts stand.
            let lines = ss.lines_produced;
            assert_eq!(lines, 48);
            h.sleep(Duration::from_millis(10)).await;
            assert_eq!(scan_status(&h).await.lines_produced, lines);
            let events = drain_events(&h).await;
            assert_eq!(
                events.last(),
                Some(&Event {
                    code: EventCode::Fault,
                    arg: ScanError::DataStall as u8,
                    page: 0,
                    value: 0
                })
            );
            h.clear_halt(EP_DATA_IN).await.unwrap();
            let st = device_status(&h).await;
            assert_eq!(
                (st.code, st.halted),
                (STATUS_TRANSACTION_CANCELLED, vec![EP_DATA_OUT])
            );
            h.clear_halt(EP_DATA_OUT).await.unwrap();
            assert_eq!(
                device_status(&h).await,
                DeviceStatus {
                    code: STATUS_OK,
                    halted: vec![]
                }
            );
            // Nothing of the cancelled scan is left, and the next scan is correct.
            let mut buf = vec![0u8; 4096];
            assert_eq!(
                h.bulk_in(EP_DATA_IN, &mut buf, NOTHING).await,
                Err(TransferError::Timeout { actual: 0 })
            );
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn disconnect_on_cancel_drops_the_device_off_the_bus() {
    let (sim, h) = setup(&fast(), vec![Fault::DisconnectOnCancel]);
    let notes = Notes::attach(&h);
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            assert_eq!(
                read_band(&h, &report).await.unwrap(),
                expected_band(&JOB, &report, 0, 0)
            );
            assert_eq!(cancel(&h).await, Err(TransferError::NoDevice));
            let names = notes.names();
            assert_eq!(
                names[names.len() - 2..],
                [
                    ("fault", "disconnect-on-cancel".to_string()),
                    ("disconnected", String::new())
                ]
            );
            assert_eq!(read_band(&h, &report).await, Err(TransferError::NoDevice));
            let mut buf = [0u8; 8];
            assert_eq!(
                h.interrupt_in(EP_EVENTS, &mut buf, T).await,
                Err(TransferError::NoDevice)
            );
            assert_eq!(
                h.control_in(Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8), T)
                    .await,
                Err(TransferError::NoDevice)
            );
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn cancel_faults_do_nothing_while_idle() {
    for fault in [Fault::StallOnCancel, Fault::DisconnectOnCancel] {
        let (sim, h) = setup(&fast(), vec![fault]);
        sim.block_on(
            async move {
                cancel(&h).await.unwrap();
                assert_eq!(
                    device_status(&h).await,
                    DeviceStatus {
                        code: STATUS_OK,
                        halted: vec![]
                    }
                );
                next_scan_is_correct(&h, JOB).await;
            },
            LIMIT,
        )
        .unwrap();
    }
}

#[test]
fn cancel_while_idle_is_harmless() {
    let (sim, h) = setup(&fast(), vec![]);
    sim.block_on(
        async move {
            cancel(&h).await.unwrap();
            assert_eq!(
                device_status(&h).await,
                DeviceStatus {
                    code: STATUS_OK,
                    halted: vec![]
                }
            );
            let ss = scan_status(&h).await;
            assert_eq!(
                (ss.state, ss.error, ss.job_id),
                (DeviceState::Idle, ScanError::None, 0)
            );
            assert_eq!(drain_events(&h).await, vec![]);
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn double_cancel_is_harmless_and_does_not_extend_the_stop() {
    let (sim, h) = setup(&fast(), vec![]);
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            read_band(&h, &report).await.unwrap();
            let tc = h.now();
            cancel(&h).await.unwrap();
            sleep_until(&h, tc + Duration::from_micros(300)).await;
            cancel(&h).await.unwrap();
            assert_eq!(device_status(&h).await.code, STATUS_BUSY);
            sleep_until(&h, tc + Duration::from_micros(499)).await;
            assert_eq!(device_status(&h).await.code, STATUS_BUSY);
            sleep_until(&h, tc + Duration::from_micros(500)).await;
            assert_eq!(device_status(&h).await.code, STATUS_OK);
            let events = drain_events(&h).await;
            let cancelled = events
                .iter()
                .filter(|e| e.code == EventCode::Cancelled)
                .count();
            let stopped: Vec<_> = events
                .iter()
                .filter(|e| e.code == EventCode::MotorStopped)
                .collect();
            assert_eq!(cancelled, 1, "one Cancelled event for two requests");
            assert_eq!(stopped.len(), 1);
            cancel(&h).await.unwrap();
            assert_eq!(device_status(&h).await.code, STATUS_OK);
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

/// Brings the device to one state, checks GET_SCAN_STATUS says so, resets, checks idle.
fn reset_from(state: DeviceState, faults: Vec<Fault>) {
    let (sim, h) = setup(&fast(), faults);
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            match state {
                DeviceState::WarmingUp => {}
                DeviceState::Scanning => {
                    read_band(&h, &report).await.unwrap();
                    // Leave a band in the buffer too.
                    h.sleep(Duration::from_micros(900)).await;
                }
                DeviceState::Cancelling => {
                    read_band(&h, &report).await.unwrap();
                    cancel(&h).await.unwrap();
                    assert_eq!(device_status(&h).await.code, STATUS_BUSY);
                }
                DeviceState::Halted => {
                    read_band(&h, &report).await.unwrap();
                    read_band(&h, &report).await.unwrap();
                    assert_eq!(read_band(&h, &report).await, Err(TransferError::Stall));
                    assert_eq!(
                        device_status(&h).await.halted,
                        vec![EP_DATA_IN, EP_DATA_OUT]
                    );
                }
                other => unreachable!("{other:?}"),
            }
            assert_eq!(scan_status(&h).await.state, state);
            device_reset(&h)
                .await
                .expect("Device Reset is accepted in every state");
            assert_eq!(
                device_status(&h).await,
                DeviceStatus {
                    code: STATUS_OK,
                    halted: vec![]
                }
            );
            let ss = scan_status(&h).await;
            assert_eq!(
                (ss.state, ss.error, ss.bands_ready),
                (DeviceState::Idle, ScanError::Reset, 0),
                "after a reset from {state:?}"
            );
            // Nothing more comes, however long we wait.
            let mut buf = vec![0u8; 4096];
            assert_eq!(
                h.bulk_in(EP_DATA_IN, &mut buf, Duration::from_millis(50))
                    .await,
                Err(TransferError::Timeout { actual: 0 })
            );
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn device_reset_while_warming_up_returns_to_idle() {
    reset_from(DeviceState::WarmingUp, vec![]);
}

#[test]
fn device_reset_while_scanning_returns_to_idle() {
    reset_from(DeviceState::Scanning, vec![]);
}

#[test]
fn device_reset_while_cancelling_returns_to_idle() {
    reset_from(DeviceState::Cancelling, vec![]);
}

#[test]
fn device_reset_while_halted_clears_the_stalls() {
    reset_from(
        DeviceState::Halted,
        vec![Fault::PaperJam { page: 0, band: 2 }],
    );
}

#[test]
fn partial_read_mid_band_then_cancel_leaves_no_byte_of_the_cancelled_scan() {
    let (sim, h) = setup(&fast(), vec![]);
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            // Three full packets of band 0; the rest of the band (and its next packet, already
            // in the device's FIFO) is abandoned.
            let mut buf = vec![0u8; 1536];
            assert_eq!(h.bulk_in(EP_DATA_IN, &mut buf, T).await, Ok(1536));
            assert_eq!(buf, expected_band(&JOB, &report, 0, 0)[..1536]);
            cancel(&h).await.unwrap();
            while device_status(&h).await.code != STATUS_OK {
                h.sleep(Duration::from_micros(100)).await;
            }
            let mut buf = vec![0u8; 8192];
            assert_eq!(
                h.bulk_in(EP_DATA_IN, &mut buf, NOTHING).await,
                Err(TransferError::Timeout { actual: 0 }),
                "no byte of the cancelled scan"
            );
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn aborted_pending_read_then_cancel_leaves_no_byte_of_the_cancelled_scan() {
    let (sim, h) = setup(&fast(), vec![]);
    let s = sim.clone();
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            assert_eq!(
                read_band(&h, &report).await.unwrap(),
                expected_band(&JOB, &report, 0, 0)
            );
            // A read waits for band 1 (ready 800 us after band 0); another task aborts it.
            let outcome = Rc::new(RefCell::new(None));
            let (h2, out) = (h.clone(), outcome.clone());
            s.spawn(async move {
                let mut buf = vec![0u8; 65536];
                let r = h2.bulk_in(EP_DATA_IN, &mut buf, Duration::ZERO).await;
                *out.borrow_mut() = Some((r, h2.now()));
            });
            h.sleep(Duration::from_micros(200)).await;
            let aborted_at = h.now();
            h.abort_endpoint(EP_DATA_IN);
            h.sleep(Duration::from_micros(1)).await;
            assert_eq!(
                outcome.borrow_mut().take(),
                Some((Err(TransferError::Cancelled { actual: 0 }), aborted_at))
            );
            cancel(&h).await.unwrap();
            while device_status(&h).await.code != STATUS_OK {
                h.sleep(Duration::from_micros(100)).await;
            }
            let mut buf = vec![0u8; 8192];
            assert_eq!(
                h.bulk_in(EP_DATA_IN, &mut buf, NOTHING).await,
                Err(TransferError::Timeout { actual: 0 }),
                "no byte of the cancelled scan"
            );
            next_scan_is_correct(&h, JOB).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn adf_scans_three_pages_byte_exact_then_reports_feeder_empty() {
    let profile = load("adf-sheetfed.json");
    let (sim, h) = setup(&profile, vec![]);
    // 100 x 100 gray8 at 75 dpi: two bands per page (64 + 36 lines).
    let job = ScanJob::adf(75, ScanMode::Gray8, 100, 100, 5);
    sim.block_on(
        async move {
            let report = start(&h, job).await;
            assert_eq!(report.bands_per_page, 2);
            for page in 0..3u16 {
                for k in 0..2 {
                    let band = read_band(&h, &report).await.expect("band");
                    assert_eq!(
                        band,
                        expected_band(&job, &report, page, k),
                        "page {page} band {k}"
                    );
                    assert_eq!(
                        &band[2..4],
                        &page.to_be_bytes(),
                        "page number in the pattern"
                    );
                }
            }
            let ss = scan_status(&h).await;
            assert_eq!(
                (ss.state, ss.error, ss.pages_done, ss.bands_sent),
                (DeviceState::Idle, ScanError::FeederEmpty, 3, 6)
            );
            let events = drain_events(&h).await;
            let empty: Vec<_> = events
                .iter()
                .filter(|e| e.code == EventCode::FeederEmpty)
                .collect();
            assert_eq!(empty.len(), 1);
            assert_eq!(empty[0].value, 3, "pages scanned");
            let feeds: Vec<u16> = events
                .iter()
                .filter(|e| e.code == EventCode::PageFeed)
                .map(|e| e.page)
                .collect();
            assert_eq!(feeds, vec![1, 2]);
            let mut buf = vec![0u8; 8192];
            assert_eq!(
                h.bulk_in(EP_DATA_IN, &mut buf, NOTHING).await,
                Err(TransferError::Timeout { actual: 0 })
            );
        },
        LIMIT,
    )
    .unwrap();
}

/// One scenario of transfers: its results as (virtual time, outcome, bytes).
fn scenario() -> Vec<(u64, String, Vec<u8>)> {
    // The realistic profile has seeded jitter, so the times are not a plain formula.
    let profile = load("a4-flatbed-300.json");
    let (sim, h) = setup(
        &profile,
        vec![Fault::LateBand {
            page: 0,
            band: 1,
            delay_us: 777,
        }],
    );
    let job = ScanJob::flatbed(75, ScanMode::Color24, 300, 300);
    sim.block_on(
        async move {
            let mut log = Vec::new();
            let report = start(&h, job).await;
            for _ in 0..3 {
                let r = read_band(&h, &report).await;
                let (what, bytes) = match r {
                    Ok(b) => ("ok".to_string(), b),
                    Err(e) => (e.to_string(), vec![]),
                };
                log.push((h.now().total_micros(), what, bytes));
            }
            cancel(&h).await.unwrap();
            loop {
                let st = device_status(&h).await;
                log.push((h.now().total_micros(), format!("{:#x}", st.code), vec![]));
                if st.code == STATUS_OK {
                    break;
                }
                h.sleep(Duration::from_millis(3)).await;
            }
            let report = start(&h, job).await;
            for _ in 0..report.bands_per_page {
                let b = read_band(&h, &report).await.unwrap();
                log.push((h.now().total_micros(), "ok".into(), b));
            }
            log.extend(
                drain_events(&h)
                    .await
                    .into_iter()
                    .map(|e| (h.now().total_micros(), "event".into(), e.encode().to_vec())),
            );
            log
        },
        Instant::from_millis(600_000),
    )
    .unwrap()
}

#[test]
fn the_same_scenario_gives_the_same_times_and_bytes() {
    let a = scenario();
    let b = scenario();
    assert!(a.len() > 15, "a real scenario: {} results", a.len());
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "result {i}");
    }
    // Band 0 of a 75 dpi colour scan: 64 lines of 900 bytes, after the 0.8 s warm-up.
    assert_eq!(a[0].2.len(), 64 * 900);
    assert!(a[0].0 >= 800_000 + 64 * 1700);
}
