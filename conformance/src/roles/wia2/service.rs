//! The WIA 2.0 service between the application and a stream driver (wia2-stream.md §5).
//!
//! [`Service2::transfer`] is `IWiaTransfer::Download` / `Upload` from the service's side: it
//! calls the driver's `drvAcquireItemData` (once, with WIA_MINIDRV_TRANSFER_ACQUIRE_CHILDREN for
//! a folder when the driver is capable; else once per child, walking the folder), relays the
//! driver's `IWiaMiniDrvTransferCallback` calls to the application's [`AppCallback`], sends
//! END_OF_STREAM and END_OF_TRANSFER itself, and returns what Download returns:
//!
//! 1. `GetNextStream`: END_OF_STREAM for the previous stream (if any), then the application's
//!    GetNextStream; S_OK with a stream is passed on, S_OK with NULL too (H16 tests the driver),
//!    S_FALSE cancels the transfer, WIA_STATUS_SKIP_ITEM and errors are passed on. For an upload
//!    the first call gets the application's source stream.
//! 2. `SendMessage`: STATUS, NEW_PAGE (and any other message) go to the application's
//!    TransferCallback, whose answer comes back; S_FALSE cancels the transfer. END_OF_STREAM and
//!    END_OF_TRANSFER from the driver (which must not send them: H26) are recorded and answered
//!    S_OK without reaching the application. DEVICE_STATUS goes to the error
//!    handlers instead (M4): the application's, then the default one, which gives an error
//!    status back to the driver and S_OK for a success status.
//! 3. After a cancel (the application's S_FALSE, or `IWiaTransfer::Cancel`) every later
//!    GetNextStream and SendMessage returns S_FALSE without asking the application (V2).
//! 4. [`Service2::cancel`] is `IWiaTransfer::Cancel`: the transfer in progress is cancelled and
//!    the driver gets `drvNotifyPnPEvent(WIA_EVENT_CANCEL_IO)` (V2, N1), also while nothing is
//!    transferred (H22).
//! 5. When drvAcquireItemData returns: END_OF_STREAM for a stream still open, END_OF_TRANSFER
//!    (M2); Download returns the driver's failure, or S_FALSE when the transfer was cancelled,
//!    else what the driver returned.
//!
//! [`Service2::terminate`] and [`Service2::start_again`] are the service process ending
//! mid-transfer and starting again (H21).
//! The service knows which unit of the item each stream is for (the n-th GetNextStream of a
//! download is child n of a folder, page n of a feeder in TYMED_FILE, or every page of a
//! TYMED_MULTIPAGE_FILE), so each stream knows what it should hold.
//!
//! About 640 lines: the service's whole Download and Upload state machine (the messages it sends
//! itself, the sticky S_FALSE after Cancel, WIA_EVENT_CANCEL_IO), kept in one place so that its
//! order can be read.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use async_trait::async_trait;
use scanemu::engine::ScanJob;
use scanemu::host::UsbHost;

use super::expected::ExpectedFile;
use super::process::ProcessHost;
use super::stream::{DriverStream, StreamEnv, StreamState};
use crate::driver::wia2::{
    ImageFormat, Item, ItemContext, MiniDriver2, NextStream, PnpEvent, TransferCallback2,
    TransferParams, WIA_MINIDRV_TRANSFER_ACQUIRE_CHILDREN, WIA_MINIDRV_TRANSFER_DOWNLOAD,
    WIA_MINIDRV_TRANSFER_UPLOAD,
};
use crate::driver::RunContext;
use crate::roles::RoleTrace;
use crate::scenario::wia2::{ItemKind, Tymed};
use crate::trace::{Actor, Kind};
use crate::wia::{Hresult, TransferMsg};

/// What the application answers from its GetNextStream.
pub(crate) struct StreamAnswer {
    /// The HRESULT.
    pub hr: Hresult,
    /// The stream (none with S_OK: a NULL pointer).
    pub stream: Option<Rc<StreamState>>,
}

/// `IWiaTransferCallback` and `IWiaAppErrorHandler`: how the service reaches the application.
/// The application may call [`Service2::cancel`] from inside any of them.
pub(crate) trait AppCallback {
    /// `TransferCallback(0, &params)`.
    fn transfer_callback(&self, params: &TransferParams) -> Hresult;

    /// `GetNextStream(0, item, full_item, &stream)`.
    fn get_next_stream(&self, item: &str, full_item: &str) -> StreamAnswer;

    /// `IWiaAppErrorHandler::ReportStatus` for a device status; WIA_STATUS_NOT_HANDLED when the
    /// application does not handle it.
    fn report_status(&self, status: Hresult) -> Hresult;
}

/// The item a scenario transfers, as the service holds it.
#[derive(Clone, Debug)]
pub(crate) struct ItemModel {
    pub kind: ItemKind,
    pub tymed: Tymed,
    pub format: ImageFormat,
    /// One job per unit: the item's, or each child's.
    pub jobs: Vec<ScanJob>,
}

impl ItemModel {
    /// The application's name of the item.
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            ItemKind::Flatbed => "Flatbed",
            ItemKind::Feeder => "Feeder",
            ItemKind::Folder => "Regions",
        }
    }

    fn item(&self, name: String, job: ScanJob) -> Item {
        let parent = match self.kind {
            ItemKind::Folder => "0000\\Root\\Regions\\",
            _ => "0000\\Root\\",
        };
        Item {
            full_name: format!("{parent}{name}"),
            name,
            job,
        }
    }

    fn children(&self) -> Vec<Item> {
        match self.kind {
            ItemKind::Folder => self
                .jobs
                .iter()
                .enumerate()
                .map(|(i, j)| self.item(format!("Region{}", i + 1), *j))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn own_item(&self) -> Item {
        match self.kind {
            ItemKind::Folder => Item {
                name: "Regions".into(),
                full_name: "0000\\Root\\Regions".into(),
                job: self.jobs[0],
            },
            _ => self.item(self.name().into(), self.jobs[0]),
        }
    }

    /// What the `unit`th stream of a download should hold (`first_child`: the child a walked
    /// folder's call is for).
    fn expected(&self, unit: u32, first_child: usize) -> ExpectedFile {
        match (self.kind, self.tymed) {
            (ItemKind::Folder, _) => {
                let i = (first_child + unit as usize).min(self.jobs.len() - 1);
                ExpectedFile::new(self.format, self.jobs[i], 0, Some(1))
            }
            (_, Tymed::MultipageFile) => {
                let job = self.jobs[0];
                let pages = match self.kind {
                    ItemKind::Feeder if job.pages == 0 => None,
                    ItemKind::Feeder => Some(u32::from(job.pages)),
                    _ => Some(1),
                };
                ExpectedFile::new(self.format, job, 0, pages)
            }
            (_, Tymed::File) => ExpectedFile::new(
                self.format,
                self.jobs[0],
                unit.min(u32::from(u16::MAX)) as u16,
                Some(1),
            ),
        }
    }
}

/// The transfer in progress.
#[derive(Default)]
struct Transfer {
    upload: Option<Rc<StreamState>>,
    /// Cancelled: every later call answers S_FALSE by itself.
    sticky: bool,
    /// GetNextStream calls of this drvAcquireItemData.
    units: u32,
    /// The child the current call is for, when the service walks a folder.
    first_child: usize,
    /// The stream handed out and not yet ended with END_OF_STREAM.
    open: Option<Rc<StreamState>>,
    /// The last lPercentComplete the driver sent.
    percent: i32,
    /// An error the application answered END_OF_STREAM with, for the GetNextStream it ends.
    eos_error: Option<Hresult>,
}

/// The driver instance of the current service process.
struct Process {
    driver: Rc<dyn MiniDriver2>,
    host: Rc<ProcessHost>,
}

/// Makes driver instances: one per service process.
pub(crate) type DriverFactory = Rc<dyn Fn() -> Rc<dyn MiniDriver2>>;

/// The service role. See the module documentation.
pub(crate) struct Service2 {
    factory: DriverFactory,
    device_host: Rc<dyn UsbHost>,
    run: Rc<dyn RunContext>,
    process: RefCell<Process>,
    trace: Rc<RoleTrace>,
    env: StreamEnv,
    item: ItemModel,
    transfer: RefCell<Option<Transfer>>,
    /// drvAcquireItemData calls so far.
    calls: Cell<u32>,
}

impl Service2 {
    /// The service of one run; its first driver instance comes from `factory`, reaching the
    /// device through `host`; `run` is the context every instance gets.
    pub(crate) fn new(
        factory: DriverFactory,
        host: Rc<dyn UsbHost>,
        run: Rc<dyn RunContext>,
        env: StreamEnv,
        item: ItemModel,
    ) -> Service2 {
        let process = Process {
            driver: factory(),
            host: Rc::new(ProcessHost::new(host.clone())),
        };
        process.driver.begin_run(run.clone());
        Service2 {
            factory,
            device_host: host,
            run,
            process: RefCell::new(process),
            trace: env.trace.clone(),
            env,
            item,
            transfer: RefCell::new(None),
            calls: Cell::new(0),
        }
    }

    /// The item.
    pub(crate) fn item(&self) -> &ItemModel {
        &self.item
    }

    fn driver(&self) -> Rc<dyn MiniDriver2> {
        self.process.borrow().driver.clone()
    }

    fn host(&self) -> Rc<ProcessHost> {
        self.process.borrow().host.clone()
    }

    /// Ends the run: the driver instance's `end_run`.
    pub(crate) fn end(&self) {
        self.driver().end_run();
    }

    /// `IWiaTransfer::Download` (no `upload`) or `Upload`: returns what the application's call
    /// returns.
    pub(crate) async fn transfer(
        &self,
        app: &dyn AppCallback,
        upload: Option<Rc<StreamState>>,
    ) -> Hresult {
        let driver = self.driver();
        let walk = self.item.kind == ItemKind::Folder
            && upload.is_none()
            && !driver.acquire_children_capable();
        let hr = if walk {
            let mut hr = Hresult::S_OK;
            for child in 0..self.item.jobs.len() {
                hr = self.acquire(app, None, Some(child)).await;
                if hr != Hresult::S_OK && hr != Hresult::WIA_STATUS_SKIP_ITEM {
                    break;
                }
            }
            hr
        } else {
            self.acquire(app, upload, None).await
        };
        self.end_of_transfer(app, hr)
    }

    /// One drvAcquireItemData: for the item (or, `child`, one child of a walked folder).
    async fn acquire(
        &self,
        app: &dyn AppCallback,
        upload: Option<Rc<StreamState>>,
        child: Option<usize>,
    ) -> Hresult {
        let n = self.calls.get() + 1;
        self.calls.set(n);
        let driver = self.driver();
        let host = self.host();
        let is_upload = upload.is_some();
        let children = self.item.children();
        let (flags, item, kids) = match (is_upload, child) {
            (true, _) => (
                WIA_MINIDRV_TRANSFER_UPLOAD,
                self.item.own_item(),
                Vec::new(),
            ),
            (false, Some(c)) => (
                WIA_MINIDRV_TRANSFER_DOWNLOAD,
                children[c].clone(),
                Vec::new(),
            ),
            (false, None) if self.item.kind == ItemKind::Folder => (
                WIA_MINIDRV_TRANSFER_DOWNLOAD | WIA_MINIDRV_TRANSFER_ACQUIRE_CHILDREN,
                self.item.own_item(),
                children,
            ),
            (false, None) => (
                WIA_MINIDRV_TRANSFER_DOWNLOAD,
                self.item.own_item(),
                Vec::new(),
            ),
        };
        self.trace.push(
            Actor::Service,
            Kind::DrvAcquireItemData2 {
                n,
                item: item.name.clone(),
                flags,
            },
        );
        let sticky = self.transfer.borrow().as_ref().is_some_and(|t| t.sticky);
        *self.transfer.borrow_mut() = Some(Transfer {
            upload,
            sticky,
            first_child: child.unwrap_or(0),
            ..Transfer::default()
        });
        let ctx = ItemContext {
            flags,
            tymed: self.item.tymed.value(),
            format: self.item.format,
            item,
            children: kids,
            interface: 0,
        };
        let relay = Relay { service: self, app };
        let hr = driver
            .acquire_item_data(&ctx, host.as_ref() as &dyn UsbHost, &relay)
            .await;
        self.trace.push(
            Actor::Driver,
            Kind::AcquireReturn {
                n,
                hr,
                pending: host.pending_transfers(),
            },
        );
        self.end_stream(app);
        hr
    }

    /// END_OF_TRANSFER, and what Download returns.
    fn end_of_transfer(&self, app: &dyn AppCallback, hr: Hresult) -> Hresult {
        let (sticky, percent) = self
            .transfer
            .borrow_mut()
            .take()
            .map_or((false, 0), |t| (t.sticky, t.percent));
        let params = TransferParams {
            msg: TransferMsg::END_OF_TRANSFER,
            percent,
            bytes: 0,
            status: hr,
        };
        self.trace.at_one_instant(|| app.transfer_callback(&params));
        if hr.failed() {
            hr
        } else if sticky || hr == Hresult::S_FALSE {
            Hresult::S_FALSE
        } else {
            hr
        }
    }

    /// END_OF_STREAM for the stream still open, if any: what it holds goes into the trace.
    fn end_stream(&self, app: &dyn AppCallback) {
        let (stream, percent) = {
            let mut t = self.transfer.borrow_mut();
            let Some(t) = t.as_mut() else { return };
            (t.open.take(), t.percent)
        };
        let Some(stream) = stream else { return };
        let (expect_size, expect_crc) = stream.expected_whole().unwrap_or((0, 0));
        self.trace.push(
            Actor::Service,
            Kind::StreamEnd {
                stream: stream.id(),
                size: stream.size(),
                crc: stream.crc(),
                expect_size,
                expect_crc,
            },
        );
        let params = TransferParams {
            msg: TransferMsg::END_OF_STREAM,
            percent,
            bytes: stream.written(),
            status: Hresult::S_OK,
        };
        let answer = self.trace.at_one_instant(|| app.transfer_callback(&params));
        let mut t = self.transfer.borrow_mut();
        if let Some(t) = t.as_mut() {
            if answer == Hresult::S_FALSE {
                t.sticky = true;
            } else if answer.failed() {
                t.eos_error = Some(answer);
            }
        }
    }

    /// `IWiaTransfer::Cancel`: cancels the transfer in progress and delivers
    /// drvNotifyPnPEvent(WIA_EVENT_CANCEL_IO).
    pub(crate) fn cancel(&self) {
        if let Some(t) = self.transfer.borrow_mut().as_mut() {
            t.sticky = true;
        }
        self.trace.push(Actor::Service, Kind::NotifyCancelIo {});
        let (driver, host) = (self.driver(), self.host());
        driver.notify_pnp_event(PnpEvent::CancelIo, host.as_ref());
    }

    /// The service process ends during a transfer: its USB transfers still pending are aborted
    /// (as the system does for a process that dies) and the transfer is gone. The caller then
    /// drops the driver's call without polling it again, and calls [`Service2::start_again`].
    pub(crate) fn terminate(&self) {
        self.trace.push(Actor::Service, Kind::ServiceRestart {});
        self.host().end();
        self.transfer.borrow_mut().take();
    }

    /// The service process starts again: the old driver instance ends, a new one is loaded.
    pub(crate) fn start_again(&self) {
        let old = {
            let mut p = self.process.borrow_mut();
            let new = Process {
                driver: (self.factory)(),
                host: Rc::new(ProcessHost::new(self.device_host.clone())),
            };
            std::mem::replace(&mut *p, new)
        };
        old.driver.end_run();
        self.driver().begin_run(self.run.clone());
    }

    fn get_next_stream(&self, app: &dyn AppCallback, item: &str, full: &str) -> NextStream {
        self.end_stream(app);
        let (sticky, upload, eos_error, unit, first_child) = {
            let mut t = self.transfer.borrow_mut();
            let Some(t) = t.as_mut() else {
                return self.outside("GetNextStream");
            };
            let unit = t.units;
            t.units += 1;
            (
                t.sticky,
                t.upload.clone(),
                t.eos_error.take(),
                unit,
                t.first_child,
            )
        };
        let record = |result: Hresult, stream: u32, expect_size: u64, sticky: bool| {
            self.trace.push(
                Actor::Service,
                Kind::GetNextStream {
                    item: item.to_string(),
                    full_item: full.to_string(),
                    result,
                    stream,
                    expect_size,
                    sticky,
                },
            );
        };
        if sticky {
            record(Hresult::S_FALSE, 0, 0, true);
            return NextStream {
                hr: Hresult::S_FALSE,
                stream: None,
            };
        }
        if let Some(hr) = eos_error {
            record(hr, 0, 0, false);
            return NextStream { hr, stream: None };
        }
        if let Some(source) = upload {
            // The source stream, once; the compatibility layer answers a second call with
            // WIA_ERROR_GENERAL_ERROR (wia2-stream §2.4 of cancel-semantics).
            if unit > 0 {
                record(Hresult::WIA_ERROR_GENERAL_ERROR, 0, 0, false);
                return NextStream {
                    hr: Hresult::WIA_ERROR_GENERAL_ERROR,
                    stream: None,
                };
            }
            record(Hresult::S_OK, source.id(), 0, false);
            return self.hand_out(source, false);
        }
        let answer = app.get_next_stream(item, full);
        let cancelled = self.transfer.borrow().as_ref().is_some_and(|t| t.sticky);
        if answer.hr == Hresult::S_FALSE || cancelled {
            if let Some(t) = self.transfer.borrow_mut().as_mut() {
                t.sticky = true;
            }
            record(
                Hresult::S_FALSE,
                0,
                0,
                cancelled && answer.hr != Hresult::S_FALSE,
            );
            return NextStream {
                hr: Hresult::S_FALSE,
                stream: None,
            };
        }
        match answer.stream {
            Some(stream) if answer.hr == Hresult::S_OK => {
                let file = self.item.expected(unit, first_child);
                let expect_size = file.len().map_or(0, |l| l + stream.prefill_len());
                stream.expect(file);
                record(Hresult::S_OK, stream.id(), expect_size, false);
                self.hand_out(stream, true)
            }
            _ => {
                record(answer.hr, 0, 0, false);
                NextStream {
                    hr: answer.hr,
                    stream: None,
                }
            }
        }
    }

    /// Gives `stream` to the driver; `track`: it gets END_OF_STREAM when done.
    fn hand_out(&self, stream: Rc<StreamState>, track: bool) -> NextStream {
        if track {
            if let Some(t) = self.transfer.borrow_mut().as_mut() {
                t.open = Some(stream.clone());
            }
        }
        NextStream {
            hr: Hresult::S_OK,
            stream: Some(Box::new(DriverStream::new(stream, self.env.clone()))),
        }
    }

    fn send_message(&self, app: &dyn AppCallback, params: TransferParams) -> Hresult {
        let sticky = {
            let mut t = self.transfer.borrow_mut();
            let Some(t) = t.as_mut() else {
                return self.outside("SendMessage").hr;
            };
            if params.msg != TransferMsg::DEVICE_STATUS {
                t.percent = params.percent;
            }
            if params.msg == TransferMsg::NEW_PAGE {
                if let Some(s) = &t.open {
                    s.new_page();
                }
            }
            t.sticky
        };
        let (result, by_itself) = if sticky {
            (Hresult::S_FALSE, true)
        } else if params.msg == TransferMsg::DEVICE_STATUS {
            let handled = app.report_status(params.status);
            let result = if handled != Hresult::WIA_STATUS_NOT_HANDLED {
                handled
            } else if params.status.failed() {
                params.status
            } else {
                Hresult::S_OK
            };
            self.settle(result)
        } else if params.msg == TransferMsg::END_OF_STREAM
            || params.msg == TransferMsg::END_OF_TRANSFER
        {
            // The service sends these itself; one from the driver goes no further (H26).
            (Hresult::S_OK, false)
        } else {
            let answer = app.transfer_callback(&params);
            self.settle(answer)
        };
        self.trace.push(
            Actor::Service,
            Kind::SendMessage {
                msg: params.msg,
                percent: params.percent,
                bytes: params.bytes,
                status: params.status,
                result,
                sticky: by_itself,
            },
        );
        result
    }

    /// The result of a relayed call once the application answered `answer`: S_FALSE cancels,
    /// and a Cancel made meanwhile turns the answer into S_FALSE. Returns the result and
    /// whether the service gave it by itself.
    fn settle(&self, answer: Hresult) -> (Hresult, bool) {
        let mut t = self.transfer.borrow_mut();
        let Some(t) = t.as_mut() else {
            return (answer, false);
        };
        if t.sticky {
            return (Hresult::S_FALSE, answer != Hresult::S_FALSE);
        }
        if answer == Hresult::S_FALSE {
            t.sticky = true;
        }
        (answer, false)
    }

    /// A callback made outside drvAcquireItemData: a protocol error of the driver.
    fn outside(&self, what: &str) -> NextStream {
        self.trace.push(
            Actor::Driver,
            Kind::DriverFault {
                what: format!("protocol: {what} called outside drvAcquireItemData"),
            },
        );
        NextStream {
            hr: Hresult::E_FAIL,
            stream: None,
        }
    }
}

/// The service's IWiaMiniDrvTransferCallback for one drvAcquireItemData.
struct Relay<'a> {
    service: &'a Service2,
    app: &'a dyn AppCallback,
}

#[async_trait(?Send)]
impl TransferCallback2 for Relay<'_> {
    async fn get_next_stream(&self, item_name: &str, full_item_name: &str) -> NextStream {
        let s = self.service;
        s.trace
            .at_one_instant(|| s.get_next_stream(self.app, item_name, full_item_name))
    }

    async fn send_message(&self, params: TransferParams) -> Hresult {
        let s = self.service;
        s.trace.at_one_instant(|| s.send_message(self.app, params))
    }
}
