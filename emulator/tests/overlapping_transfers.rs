//! Several transfers in flight on the in-process host: reads queued on one endpoint complete in
//! submission order with the right bands, a dropped transfer leaves its queue and the pending
//! count, and aborts and timeouts reach queued transfers too.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{expected_band, setup, start, T};
use scanemu::engine::{ScanJob, ScanMode};
use scanemu::host::inproc::InProcessHost;
use scanemu::host::{TransferError, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};

type Log = Rc<RefCell<Vec<(usize, Result<Vec<u8>, TransferError>, u64)>>>;

/// Spawns read `k` of `len` bytes on the data endpoint; its result goes to `log`.
fn spawn_read(sim: &Sim, host: &InProcessHost, log: &Log, k: usize, len: usize, timeout: Duration) {
    let (h, l, s) = (host.clone(), log.clone(), sim.clone());
    sim.spawn(async move {
        let mut buf = vec![0u8; len];
        let r = h.bulk_in(EP_DATA_IN, &mut buf, timeout).await;
        let r = r.map(|n| {
            buf.truncate(n);
            buf
        });
        l.borrow_mut().push((k, r, s.now().total_micros()));
    });
}

#[test]
fn reads_queued_on_one_endpoint_complete_in_order_with_their_bands() {
    let profile = Profile::builtin_fast();
    let (sim, host) = setup(&profile, vec![]);
    let job = ScanJob::flatbed(100, ScanMode::Gray8, 200, 100);
    let log: Log = Rc::default();
    let (h, s, l) = (host.clone(), sim.clone(), log.clone());
    let report = sim
        .block_on(
            async move {
                let report = start(&h, job).await;
                let len = report.band_bytes as usize + 512;
                for k in 0..4 {
                    spawn_read(&s, &h, &l, k, len, T);
                }
                s.sleep(Duration::from_micros(1)).await;
                assert_eq!(h.pending_transfers(), 4, "four reads in flight");
                while l.borrow().len() < 4 {
                    s.sleep(Duration::from_millis(1)).await;
                }
                assert_eq!(h.pending_transfers(), 0);
                report
            },
            Instant::from_millis(60_000),
        )
        .unwrap();
    let log = log.borrow();
    let order: Vec<usize> = log.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(order, vec![0, 1, 2, 3], "completions in submission order");
    for (k, r, _) in log.iter() {
        let band = r.as_ref().expect("band read");
        assert_eq!(
            band,
            &expected_band(&job, &report, 0, *k as u32),
            "read {k} got band {k}"
        );
    }
    assert!(log.windows(2).all(|w| w[0].2 <= w[1].2));
}

#[test]
fn a_dropped_read_leaves_the_queue_and_the_next_one_moves_up() {
    let profile = Profile::builtin_fast();
    let (sim, host) = setup(&profile, vec![]);
    let job = ScanJob::flatbed(100, ScanMode::Gray8, 200, 100);
    let log: Log = Rc::default();
    let (h, s, l) = (host.clone(), sim.clone(), log.clone());
    let report = sim
        .block_on(
            async move {
                let report = start(&h, job).await;
                let len = report.band_bytes as usize + 512;
                // The head read is polled once (it queues, the band is not ready), then dropped.
                let mut buf = vec![0u8; len];
                let mut head = h.bulk_in(EP_DATA_IN, &mut buf, T);
                let polled = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(head.as_mut().poll(cx).is_pending())
                })
                .await;
                assert!(polled, "the first band is not ready at once");
                spawn_read(&s, &h, &l, 1, len, T);
                s.sleep(Duration::from_micros(1)).await;
                assert_eq!(h.pending_transfers(), 2);
                drop(head);
                assert_eq!(
                    h.pending_transfers(),
                    1,
                    "the dropped read is no longer pending"
                );
                while l.borrow().is_empty() {
                    s.sleep(Duration::from_millis(1)).await;
                }
                report
            },
            Instant::from_millis(60_000),
        )
        .unwrap();
    let log = log.borrow();
    assert_eq!(log.len(), 1);
    assert_eq!(
        log[0].1.as_ref().unwrap(),
        &expected_band(&job, &report, 0, 0),
        "the read behind the dropped one gets the first band"
    );
}

#[test]
fn aborts_and_timeouts_reach_queued_reads() {
    let profile = Profile::builtin_fast();
    let (sim, host) = setup(&profile, vec![]);
    let job = ScanJob::flatbed(100, ScanMode::Gray8, 200, 100);
    let log: Log = Rc::default();
    let (h, s, l) = (host.clone(), sim.clone(), log.clone());
    sim.block_on(
        async move {
            let report = start(&h, job).await;
            let len = report.band_bytes as usize + 512;
            spawn_read(&s, &h, &l, 0, len, T);
            // Queued behind read 0, with a deadline long before the first band.
            spawn_read(&s, &h, &l, 1, len, Duration::from_micros(50));
            spawn_read(&s, &h, &l, 2, len, T);
            s.sleep(Duration::from_micros(100)).await;
            assert_eq!(l.borrow().len(), 1, "the queued read timed out on its own");
            h.abort_endpoint(EP_DATA_IN);
            s.sleep(Duration::from_micros(1)).await;
            assert_eq!(h.pending_transfers(), 0);
        },
        Instant::from_millis(60_000),
    )
    .unwrap();
    let log = log.borrow();
    let outcomes: Vec<(usize, Result<usize, TransferError>)> = log
        .iter()
        .map(|(k, r, _)| (*k, r.as_ref().map(Vec::len).map_err(Clone::clone)))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (1, Err(TransferError::Timeout { actual: 0 })),
            (0, Err(TransferError::Cancelled { actual: 0 })),
            (2, Err(TransferError::Cancelled { actual: 0 })),
        ]
    );
}
