//! The driver contract's submitted transfers (`RunContext::submit`), used by an in-process Rust
//! driver: a read-ahead driver written against the contract alone passes a complete scan with
//! several reads in flight, and `Urb::cancel`, `Urb::wait` and `RunContext::first_completed`
//! behave as `conformance/src/driver.rs` documents.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use async_trait::async_trait;
use scanconform::driver::{
    CallbackArgs, MiniDriver, MiniDrvCallback, PnpEvent, RunContext, TransferContext, Urb,
    UsbRequest,
};
use scanconform::run;
use scanconform::scenario::{self, ServiceModel};
use scanconform::trace::{Kind, TransferOutcome};
use scanconform::wia::{
    Hresult, ItMsg, IT_STATUS_TRANSFER_FROM_DEVICE, IT_STATUS_TRANSFER_TO_CLIENT,
};
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::personality::native::protocol::{
    ParamsReport, ScanParams, EP_DATA_IN, PARAMS_REPORT_LEN, REQ_GET_PARAMS, REQ_SET_PARAMS,
    REQ_START_SCAN,
};
use scanemu::time::Duration;

const T: Duration = Duration::from_millis(1000);
/// One packet more than a band, so that the band's short packet or ZLP ends the read.
const SLACK: usize = 1024;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// What the driver under test does besides reading the page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Play {
    /// Reads the page with `depth` reads in flight.
    ReadAhead { depth: usize },
    /// Exercises cancel, wait and first_completed, then reads the page one read at a time.
    Semantics,
}

struct ReadAheadDriver {
    play: Play,
    run: RefCell<Option<Rc<dyn RunContext>>>,
    /// The most transfers the host had in flight at once.
    most_pending: Cell<u32>,
    /// What the semantics play found wrong.
    problems: RefCell<Vec<String>>,
}

impl ReadAheadDriver {
    fn new(play: Play) -> Rc<ReadAheadDriver> {
        Rc::new(ReadAheadDriver {
            play,
            run: RefCell::new(None),
            most_pending: Cell::new(0),
            problems: RefCell::new(Vec::new()),
        })
    }

    fn run(&self) -> Rc<dyn RunContext> {
        self.run.borrow().clone().expect("begin_run came first")
    }

    fn check(&self, ok: bool, what: &str) {
        if !ok {
            self.problems.borrow_mut().push(what.to_string());
        }
    }

    fn read(&self, ask: usize) -> Urb {
        self.run().submit(UsbRequest::BulkIn {
            ep: EP_DATA_IN,
            length: ask,
            timeout: Duration::ZERO,
        })
    }

    /// Cancel, wait and first_completed, before the page is read.
    async fn semantics(&self, host: &dyn UsbHost) {
        let run = self.run();
        // A read that nothing answers yet, and a timer: the timer completes first.
        let read = self.read(64);
        let timer = run.submit(UsbRequest::Sleep {
            duration: Duration::from_micros(100),
        });
        let first = run.first_completed(&[read.clone(), timer.clone()]).await;
        self.check(first == Some(1), "first_completed picks the timer");
        self.check(
            timer.completion().map(|c| c.at) == Some(host.now()),
            "the timer completed now",
        );
        self.check(!read.is_complete(), "the read is still in flight");
        self.check(
            host.pending_transfers() == 1,
            "one transfer pending on the host",
        );
        read.cancel();
        let c = read.wait().await;
        self.check(
            c.result == Err(TransferError::Cancelled { actual: 0 }) && c.at == host.now(),
            "a cancelled read completes at once with Cancelled",
        );
        self.check(
            host.pending_transfers() == 0,
            "the cancelled read left the host",
        );
        timer.cancel();
        self.check(
            timer.completion().map(|c| c.result) == Some(Ok(0)),
            "cancelling a completed timer changes nothing",
        );
        // Two timers completing at one instant: the earlier submitted is picked.
        let b = run.submit(UsbRequest::Sleep {
            duration: Duration::from_micros(10),
        });
        let a = run.submit(UsbRequest::Sleep {
            duration: Duration::from_micros(10),
        });
        let first = run.first_completed(&[a.clone(), b.clone()]).await;
        self.check(
            first == Some(1),
            "simultaneous completions in submission order",
        );
        self.check(
            run.first_completed(&[]).await.is_none(),
            "nothing to wait for",
        );
    }

    async fn scan(
        &self,
        ctx: &TransferContext,
        host: &dyn UsbHost,
        callback: &dyn MiniDrvCallback,
    ) -> Result<(), Hresult> {
        let fail = |_| Hresult::E_FAIL;
        host.control_out(
            Setup::vendor_out(REQ_SET_PARAMS, 0, ctx.interface, 0),
            &ScanParams { job: ctx.job }.encode(),
            T,
        )
        .await
        .map_err(fail)?;
        let report = host
            .control_in(
                Setup::vendor_in(REQ_GET_PARAMS, 0, ctx.interface, PARAMS_REPORT_LEN as u16),
                T,
            )
            .await
            .map_err(fail)?;
        let report = ParamsReport::decode(&report).map_err(|_| Hresult::E_FAIL)?;
        host.control_out(
            Setup::vendor_out(REQ_START_SCAN, 0, ctx.interface, 0),
            &[],
            T,
        )
        .await
        .map_err(fail)?;
        let status = |percent| CallbackArgs {
            reason: ItMsg::Status,
            status: IT_STATUS_TRANSFER_FROM_DEVICE,
            percent,
            offset: 0,
            length: 0,
            data: &[],
        };
        if callback.call(status(0)).await != Hresult::S_OK {
            return Err(Hresult::S_FALSE);
        }
        // The reads of the page, sized as the reference driver sizes them.
        let page = u64::from(report.bytes_per_line) * u64::from(report.lines_per_page);
        let band = u64::from(report.band_bytes.max(1));
        let chunk = u64::from(ctx.buffer_size.max(1));
        let mut planned = VecDeque::new();
        let mut offset = 0;
        while offset < page {
            let band_left = band - offset % band;
            let want = (page - offset).min(band_left).min(chunk);
            let ask = if want == band_left {
                want as usize + SLACK
            } else {
                want as usize
            };
            planned.push_back((want as usize, ask));
            offset += want;
        }
        let depth = match self.play {
            Play::ReadAhead { depth } => depth,
            Play::Semantics => 1,
        };
        let mut queue = VecDeque::new();
        let mut offset = 0usize;
        loop {
            while queue.len() < depth {
                let Some((want, ask)) = planned.pop_front() else {
                    break;
                };
                queue.push_back((self.read(ask), want));
            }
            let Some((urb, want)) = queue.pop_front() else {
                break;
            };
            let c = urb.wait().await;
            self.most_pending
                .set(self.most_pending.get().max(host.pending_transfers()));
            if c.result != Ok(want) {
                return Err(Hresult::E_FAIL);
            }
            let percent = ((offset + want) as u64 * 100 / page) as i32;
            let hr = callback
                .call(CallbackArgs {
                    reason: ItMsg::Data,
                    status: IT_STATUS_TRANSFER_TO_CLIENT,
                    percent,
                    offset: offset as i64,
                    length: want as i64,
                    data: &c.data,
                })
                .await;
            offset += want;
            if hr != Hresult::S_OK {
                return Err(hr);
            }
        }
        Ok(())
    }
}

#[async_trait(?Send)]
impl MiniDriver for ReadAheadDriver {
    fn supports_async_cancel(&self) -> bool {
        true
    }

    async fn acquire_item_data(
        &self,
        ctx: &TransferContext,
        host: &dyn UsbHost,
        callback: &dyn MiniDrvCallback,
    ) -> Hresult {
        if self.play == Play::Semantics {
            self.semantics(host).await;
        }
        match self.scan(ctx, host, callback).await {
            Ok(()) => Hresult::S_OK,
            Err(hr) => hr,
        }
    }

    fn notify_pnp_event(&self, _event: PnpEvent, _host: &dyn UsbHost) {}

    fn begin_run(&self, run: Rc<dyn RunContext>) {
        *self.run.borrow_mut() = Some(run);
    }

    fn end_run(&self) {
        *self.run.borrow_mut() = None;
    }
}

fn complete_gray8(driver: Rc<ReadAheadDriver>) -> run::RunResult {
    let dir = fixtures().join("scenarios");
    let s = scenario::load(&dir.join("complete/gray8.json"), &dir).unwrap();
    run::run(
        &s,
        ServiceModel::Xp,
        "read-ahead",
        driver,
        &fixtures().join("profiles"),
    )
    .unwrap()
}

fn failed(r: &run::RunResult) -> Vec<String> {
    r.report.failed().iter().map(|f| f.id.to_string()).collect()
}

#[test]
fn an_in_process_read_ahead_driver_passes_a_complete_scan_with_reads_in_flight() {
    let driver = ReadAheadDriver::new(Play::ReadAhead { depth: 3 });
    let r = complete_gray8(driver.clone());
    assert!(r.passed(), "failed rules: {:?}", failed(&r));
    assert_eq!(
        driver.most_pending.get(),
        2,
        "with three reads queued, two are on the host when the first completes"
    );
    let bulk = r
        .trace
        .events
        .iter()
        .filter(|e| matches!(e.kind, Kind::Bulk { .. }))
        .count();
    assert!(bulk > 3, "the page took {bulk} reads");
}

#[test]
fn cancel_wait_and_first_completed_behave_as_documented() {
    let driver = ReadAheadDriver::new(Play::Semantics);
    let r = complete_gray8(driver.clone());
    assert_eq!(*driver.problems.borrow(), Vec::<String>::new());
    assert!(r.passed(), "failed rules: {:?}", failed(&r));
    let cancelled: Vec<&Kind> = r
        .trace
        .events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| {
            matches!(
                k,
                Kind::Bulk {
                    result: TransferOutcome::Cancelled,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(
        cancelled.len(),
        1,
        "the cancelled read is in the trace once: {cancelled:?}"
    );
}
