//! End-to-end checks of the native protocol through the in-process host, in virtual time.

mod common;

use common::{device_status, scan_status, setup, start, T};
use scanemu::engine::{pattern_line, Fault, ScanJob, ScanMode};
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::profile::Profile;
use scanemu::time::{Duration, Instant};

fn expected_band(job: &ScanJob, first_line: u32, lines: u32) -> Vec<u8> {
    let bpl = job.bytes_per_line() as usize;
    let mut out = vec![0u8; bpl * lines as usize];
    for (i, line) in out.chunks_mut(bpl).enumerate() {
        pattern_line(0, first_line + i as u32, line);
    }
    out
}

#[test]
fn full_scan_is_byte_exact_at_the_profile_times() {
    let profile = Profile::builtin_fast();
    let (sim, host) = setup(&profile, vec![]);
    let job = ScanJob::flatbed(100, ScanMode::Gray8, 200, 100);
    let h = host.clone();
    let s = sim.clone();
    let times = sim
        .block_on(
            async move {
                let t0 = s.now();
                let report = start(&h, job).await;
                let band_bytes = report.band_bytes as usize;
                let mut times = Vec::new();
                for k in 0..report.bands_per_page {
                    let mut buf = vec![0u8; band_bytes];
                    let n = h.bulk_in(EP_DATA_IN, &mut buf, T).await.expect("band");
                    let first = k * report.band_lines;
                    let lines = report.band_lines.min(report.lines_per_page - first);
                    assert_eq!(
                        &buf[..n],
                        &expected_band(&job, first, lines)[..],
                        "band {k}"
                    );
                    times.push((h.now() - t0).total_micros());
                }
                assert_eq!(scan_status(&h).await.state, DeviceState::Idle);
                times
            },
            Instant::from_millis(60_000),
        )
        .unwrap();
    let t = &profile.timing;
    // 100 lines in 16-line bands: 7 bands, the last with 4 lines.
    assert_eq!(times.len(), 7);
    for (k, at) in times.iter().enumerate() {
        let lines = ((k as u64 + 1) * u64::from(t.band_lines)).min(100);
        let ready = t.warmup_us + lines * t.line_period_us;
        let band = (lines - k as u64 * u64::from(t.band_lines)) * 200;
        let wire = profile.usb.speed.wire_time(band).total_micros();
        assert!(
            *at >= ready && *at <= ready + wire + 20,
            "band {k} at {at} us, ready at {ready} us, wire {wire} us"
        );
    }
}

#[test]
fn cancel_mid_scan_reads_busy_then_ok_and_no_band_of_the_cancelled_scan() {
    let profile = Profile::builtin_fast();
    let (sim, host) = setup(&profile, vec![]);
    let job = ScanJob::flatbed(100, ScanMode::Gray8, 200, 200);
    let h = host.clone();
    sim.block_on(
        async move {
            let report = start(&h, job).await;
            let mut buf = vec![0u8; report.band_bytes as usize];
            h.bulk_in(EP_DATA_IN, &mut buf, T).await.unwrap();
            h.bulk_in(EP_DATA_IN, &mut buf, T).await.unwrap();
            let cancel_at = h.now();
            let mut payload = [0u8; 6];
            payload[..2].copy_from_slice(&CANCEL_CODE.to_le_bytes());
            h.control_out(Setup::vendor_out(REQ_CANCEL, 0, 0, 6), &payload, T)
                .await
                .unwrap();
            assert_eq!(device_status(&h).await.code, STATUS_BUSY);
            // No band of the cancelled scan is ever sent.
            let err = h
                .bulk_in(EP_DATA_IN, &mut buf, Duration::from_millis(100))
                .await
                .unwrap_err();
            assert_eq!(err, TransferError::Timeout { actual: 0 });
            let mut polls = 0;
            while device_status(&h).await.code != STATUS_OK {
                polls += 1;
                h.sleep(Duration::from_micros(100)).await;
            }
            assert_eq!(polls, 0, "motor stop (500 us) is over after a 100 ms read");
            assert!(h.now() - cancel_at >= Duration::from_micros(profile.timing.motor_stop_us));
            // A new scan right after is correct from its first byte.
            let report = start(&h, job).await;
            let n = h.bulk_in(EP_DATA_IN, &mut buf, T).await.unwrap();
            assert_eq!(&buf[..n], &expected_band(&job, 0, report.band_lines)[..]);
        },
        Instant::from_millis(60_000),
    )
    .unwrap();
}

#[test]
fn device_initiated_cancel_needs_both_halts_cleared() {
    let profile = Profile::builtin_fast();
    let (sim, host) = setup(&profile, vec![Fault::CancelButton { page: 0, band: 2 }]);
    let job = ScanJob::flatbed(100, ScanMode::Gray8, 200, 200);
    let h = host.clone();
    sim.block_on(
        async move {
            let report = start(&h, job).await;
            let mut buf = vec![0u8; report.band_bytes as usize];
            h.bulk_in(EP_DATA_IN, &mut buf, T).await.unwrap();
            h.bulk_in(EP_DATA_IN, &mut buf, T).await.unwrap();
            assert_eq!(
                h.bulk_in(EP_DATA_IN, &mut buf, T).await,
                Err(TransferError::Stall)
            );
            let st = device_status(&h).await;
            assert_eq!(st.code, STATUS_TRANSACTION_CANCELLED);
            assert_eq!(st.halted, vec![EP_DATA_IN, EP_DATA_OUT]);
            assert_eq!(scan_status(&h).await.error, ScanError::CancelButton);
            h.clear_halt(EP_DATA_IN).await.unwrap();
            let st = device_status(&h).await;
            assert_eq!(
                (st.code, st.halted),
                (STATUS_TRANSACTION_CANCELLED, vec![EP_DATA_OUT])
            );
            h.clear_halt(EP_DATA_OUT).await.unwrap();
            assert_eq!(device_status(&h).await.code, STATUS_OK);
            let report = start(&h, job).await;
            let n = h.bulk_in(EP_DATA_IN, &mut buf, T).await.unwrap();
            assert_eq!(&buf[..n], &expected_band(&job, 0, report.band_lines)[..]);
        },
        Instant::from_millis(60_000),
    )
    .unwrap();
}
