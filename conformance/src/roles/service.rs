//! The WIA service between the application and the driver, in its XP or Vista behaviour
//! (reference §1.1, §2.1).
//!
//! [`Service::acquire_item_data`] calls the driver's `drvAcquireItemData` with a transfer
//! context and a `MiniDrvCallback` of its own. Every call of that callback is relayed to the
//! application's [`BandedDataCallback`] and its answer returned to the driver; the service also
//! places each band on its page (by the bytes received, not by the driver's `lOffset`) and
//! records the CRC of the image bytes the device scans there, so the rules can check the data.
//!
//! [`Service::cancel_pending_io`] is `IWiaItemExtras::CancelPendingIO` (xp) or
//! `IWiaTransfer::Cancel` (vista): it delivers `drvNotifyPnPEvent(WIA_EVENT_CANCEL_IO)`. The two
//! models differ in one thing only:
//! - **xp**: the two cancel paths are not connected; callbacks go on asking the application;
//! - **vista**: after Cancel every later callback of the transfer returns S_FALSE by itself
//!   ("must always return S_FALSE after the transfer has been canceled"); the band still reaches
//!   the application, which is not asked ([`BandedDataCallback::data_after_cancel`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use async_trait::async_trait;
use scanemu::engine::{ImageSource, ScanJob};
use scanemu::host::UsbHost;

use super::RoleTrace;
use crate::driver::{CallbackArgs, MiniDriver, MiniDrvCallback, PnpEvent, TransferContext};
use crate::scenario::ServiceModel;
use crate::trace::{crc32, Actor, Kind};
use crate::wia::{Hresult, ItMsg};

/// One callback as the application receives it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Message<'a> {
    /// What the driver passed to MiniDrvCallback.
    pub args: CallbackArgs<'a>,
    /// The page the message belongs to (0-based), counted by IT_MSG_NEW_PAGE.
    pub page: u32,
    /// Bytes of the page received before this message's band.
    pub page_pos: u64,
}

/// `IWiaDataCallback::BandedDataCallback`: how the service reaches the application.
pub(crate) trait BandedDataCallback {
    /// The application's answer to one message: S_OK to go on, S_FALSE to cancel, or an error.
    fn banded_data_callback(&self, message: &Message<'_>) -> Hresult;

    /// Vista, after Cancel: the message reached the application, but the service answers
    /// S_FALSE itself without asking.
    fn data_after_cancel(&self, message: &Message<'_>);
}

/// The transfer in progress.
#[derive(Default)]
struct Transfer {
    page: u32,
    page_pos: u64,
    /// Vista: Cancel was called; callbacks answer S_FALSE by themselves.
    sticky: bool,
}

/// The service role. See the module documentation.
pub(crate) struct Service {
    model: ServiceModel,
    driver: Rc<dyn MiniDriver>,
    host: Rc<dyn UsbHost>,
    /// Transfers the driver submitted that have not reached the host yet.
    unstarted: Rc<Cell<u32>>,
    trace: Rc<RoleTrace>,
    /// The item's scan settings, which the service passes to the driver and checks bands against.
    job: ScanJob,
    image: ImageSource,
    transfer: RefCell<Option<Transfer>>,
}

impl Service {
    /// The service of one run: `driver` reaches the device through `host`; `unstarted`
    /// counts the transfers it submitted that have not reached the host yet.
    pub(crate) fn new(
        model: ServiceModel,
        driver: Rc<dyn MiniDriver>,
        host: Rc<dyn UsbHost>,
        unstarted: Rc<Cell<u32>>,
        trace: Rc<RoleTrace>,
        job: ScanJob,
    ) -> Service {
        Service {
            model,
            driver,
            host,
            unstarted,
            trace,
            job,
            image: ImageSource::Pattern,
            transfer: RefCell::new(None),
        }
    }

    /// Calls `drvAcquireItemData` for acquisition `n` and relays its callbacks to `app`;
    /// returns what the driver returned.
    pub(crate) async fn acquire_item_data(
        &self,
        n: u32,
        tymed: i32,
        buffer_size: u32,
        app: &dyn BandedDataCallback,
    ) -> Hresult {
        self.trace
            .push(Actor::Service, Kind::DrvAcquireItemData { n });
        *self.transfer.borrow_mut() = Some(Transfer::default());
        let ctx = TransferContext {
            tymed,
            buffer_size,
            job: self.job,
            interface: 0,
        };
        let callback = Relay { service: self, app };
        let hr = self
            .driver
            .acquire_item_data(&ctx, self.host.as_ref(), &callback)
            .await;
        *self.transfer.borrow_mut() = None;
        self.trace.push(
            Actor::Driver,
            Kind::AcquireReturn {
                n,
                hr,
                pending: self.host.pending_transfers() + self.unstarted.get(),
            },
        );
        hr
    }

    /// `IWiaItemExtras::CancelPendingIO` (xp) / `IWiaTransfer::Cancel` (vista): delivers
    /// `drvNotifyPnPEvent(WIA_EVENT_CANCEL_IO)`, and under vista makes the rest of the transfer
    /// in progress answer S_FALSE.
    pub(crate) fn cancel_pending_io(&self) {
        if self.model == ServiceModel::Vista {
            if let Some(t) = self.transfer.borrow_mut().as_mut() {
                t.sticky = true;
            }
        }
        self.trace.push(Actor::Service, Kind::NotifyCancelIo {});
        self.driver
            .notify_pnp_event(PnpEvent::CancelIo, self.host.as_ref());
    }

    /// One MiniDrvCallback; it never waits, so all of it happens at one instant.
    fn relay(&self, args: CallbackArgs<'_>, app: &dyn BandedDataCallback) -> Hresult {
        let Some((page, page_pos, sticky)) = self.place(&args) else {
            self.trace.push(
                Actor::Driver,
                Kind::DriverFault {
                    what: "protocol: MiniDrvCallback called outside drvAcquireItemData".into(),
                },
            );
            return Hresult::E_FAIL;
        };
        let (crc, expect_crc) = if args.reason == ItMsg::Data {
            let len = args.data.len() as u64;
            (crc32(args.data), self.expected_crc(page, page_pos, len))
        } else {
            (0, 0)
        };
        let message = Message {
            args,
            page,
            page_pos,
        };
        let result = if sticky {
            app.data_after_cancel(&message);
            Hresult::S_FALSE
        } else {
            app.banded_data_callback(&message)
        };
        self.trace.push(
            Actor::Service,
            Kind::Callback {
                msg: args.reason,
                status: args.status,
                percent: args.percent,
                offset: args.offset,
                length: args.length,
                carried: (args.data.len() as i64 != args.length).then_some(args.data.len() as u64),
                page,
                crc,
                expect_crc,
                result,
                sticky,
            },
        );
        result
    }

    /// Places a message on its page: `(page, bytes of the page before it, sticky)`, or `None`
    /// outside a transfer.
    fn place(&self, args: &CallbackArgs<'_>) -> Option<(u32, u64, bool)> {
        let mut transfer = self.transfer.borrow_mut();
        let t = transfer.as_mut()?;
        if args.reason == ItMsg::NewPage {
            t.page += 1;
            t.page_pos = 0;
        }
        let place = (t.page, t.page_pos, t.sticky);
        if args.reason == ItMsg::Data {
            t.page_pos += args.data.len() as u64;
        }
        Some(place)
    }

    /// CRC-32 of the image bytes the device scans at `[pos, pos + len)` of `page`.
    fn expected_crc(&self, page: u32, pos: u64, len: u64) -> u32 {
        let bpl = self.job.bytes_per_line();
        if bpl == 0 || len == 0 {
            return crc32(&[]);
        }
        let mut hasher = crc32fast::Hasher::new();
        let mut line_buf = vec![0u8; bpl as usize];
        let mut at = pos;
        let end = pos + len;
        let page_bytes = bpl * u64::from(self.job.lines_per_page());
        while at < end {
            if at >= page_bytes {
                // Beyond the page: nothing the device could have sent; hash zeros so it differs.
                hasher.update(&vec![0u8; (end - at) as usize]);
                break;
            }
            let line = (at / bpl) as u32;
            let from = (at % bpl) as usize;
            self.image
                .render_line(&self.job, page as u16, line, &mut line_buf);
            let take = ((bpl as usize) - from).min((end - at) as usize);
            hasher.update(&line_buf[from..from + take]);
            at += take as u64;
        }
        hasher.finalize()
    }
}

/// The service's MiniDrvCallback for one transfer, handed to the driver.
struct Relay<'a> {
    service: &'a Service,
    app: &'a dyn BandedDataCallback,
}

#[async_trait(?Send)]
impl MiniDrvCallback for Relay<'_> {
    async fn call(&self, args: CallbackArgs<'_>) -> Hresult {
        let service = self.service;
        service
            .trace
            .at_one_instant(|| service.relay(args, self.app))
    }
}
