//! The application's streams: emulated `IStream`s that hold their bytes, fail on demand and
//! record every method a driver calls on them.
//!
//! A [`StreamState`] is the application's object. The driver reaches it through a
//! [`DriverStream`] (the reference GetNextStream handed out), whose every call becomes one
//! `stream` event of the driver in the trace: the method, the seek pointer when it began, what
//! was asked and moved, the CRC of the bytes moved and, for a write, the CRC of what belongs at
//! those bytes ([`super::expected`]). Calls after `Release` are still carried out and recorded
//! (the application holds its own reference), so the rules can judge them.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use async_trait::async_trait;
use scanemu::sim::Sim;
use scanemu::time::Duration;

use super::expected::Expected;
use crate::driver::wia2::{AppStream, StreamIo};
use crate::roles::RoleTrace;
use crate::scenario::wia2::StreamSpec;
use crate::trace::{crc32, Actor, Kind};
use crate::wia::{Hresult, SeekOrigin, StreamMethod};

/// STG_E_INVALIDFUNCTION: a seek before the start of the stream.
const STG_E_INVALIDFUNCTION: Hresult = Hresult(0x8003_0001_u32 as i32);

/// How long a Write the application holds (a `write` trigger) takes at least.
pub(crate) const HELD_WRITE: Duration = Duration::from_millis(1);

/// Told when a driver starts writing, so the application can act on its second thread while
/// the driver is blocked in the Write.
pub(crate) trait WriteWatcher {
    /// A Write on `stream` begins; true to make it take at least [`HELD_WRITE`].
    fn write_started(&self, stream: u32) -> bool;
}

/// What every stream of a run shares: the trace, the clock, the application's watcher.
#[derive(Clone)]
pub(crate) struct StreamEnv {
    pub trace: Rc<RoleTrace>,
    pub sim: Sim,
    pub watcher: Rc<dyn WriteWatcher>,
}

/// One application stream. See the module documentation.
pub(crate) struct StreamState {
    id: u32,
    data: RefCell<Vec<u8>>,
    pos: Cell<u64>,
    spec: StreamSpec,
    /// Every method fails with STG_E_REVERTED (an upload's invalid source).
    invalid: bool,
    calls: RefCell<[u32; 6]>,
    expected: RefCell<Option<Expected>>,
    /// Pages the multi-page file has so far (for the CRC of what belongs where).
    pages: Cell<u32>,
    /// Bytes the driver wrote.
    written: Cell<u64>,
}

impl StreamState {
    /// A stream `id` as `spec` says: its prefill bytes, seek pointer at 0.
    pub(crate) fn new(id: u32, spec: &StreamSpec) -> Rc<StreamState> {
        StreamState::build(id, spec, false)
    }

    /// An upload's source stream holding `bytes` bytes, or an invalidated one.
    pub(crate) fn source(id: u32, bytes: u64, invalid: bool) -> Rc<StreamState> {
        let spec = StreamSpec {
            prefill: bytes,
            ..StreamSpec::default()
        };
        StreamState::build(id, &spec, invalid)
    }

    fn build(id: u32, spec: &StreamSpec, invalid: bool) -> Rc<StreamState> {
        Rc::new(StreamState {
            id,
            data: RefCell::new(prefill(spec.prefill)),
            pos: Cell::new(0),
            spec: spec.clone(),
            invalid,
            calls: RefCell::new([0; 6]),
            expected: RefCell::new(None),
            pages: Cell::new(1),
            written: Cell::new(0),
        })
    }

    /// The stream's id.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Bytes in the stream.
    pub(crate) fn size(&self) -> u64 {
        self.data.borrow().len() as u64
    }

    /// Bytes the stream held when the application gave it.
    pub(crate) fn prefill_len(&self) -> u64 {
        self.spec.prefill
    }

    /// Bytes the driver wrote into it.
    pub(crate) fn written(&self) -> u64 {
        self.written.get()
    }

    /// CRC-32 of its content.
    pub(crate) fn crc(&self) -> u32 {
        crc32(&self.data.borrow())
    }

    /// What the stream should end up holding, once the service knows which unit it is for.
    pub(crate) fn expect(&self, file: super::expected::ExpectedFile) {
        let prefix = prefill(self.spec.prefill);
        *self.expected.borrow_mut() = Some(Expected { prefix, file });
    }

    /// One more page of a multi-page file began.
    pub(crate) fn new_page(&self) {
        self.pages.set(self.pages.get() + 1);
    }

    /// Length and CRC-32 of what the stream should hold, if it is known.
    pub(crate) fn expected_whole(&self) -> Option<(u64, u32)> {
        self.expected
            .borrow()
            .as_ref()
            .map(|e| e.whole(self.pages.get()))
    }

    /// The application moves the seek pointer itself (it read the stream).
    pub(crate) fn app_seek(&self, pos: u64, trace: &RoleTrace) {
        self.pos.set(pos);
        trace.push(
            Actor::App,
            Kind::AppSeek {
                stream: self.id,
                pos,
            },
        );
    }

    /// Counts a call of `op`; the scripted failure, if this call is the one.
    fn call(&self, op: StreamMethod) -> Option<Hresult> {
        let slot = op as usize;
        let n = {
            let mut calls = self.calls.borrow_mut();
            calls[slot] += 1;
            calls[slot]
        };
        if self.invalid && op != StreamMethod::Release {
            return Some(Hresult::STG_E_REVERTED);
        }
        self.spec
            .fail
            .filter(|f| f.op == op && f.n == n)
            .map(|f| f.hr)
    }

    fn expect_crc(&self, from: u64, len: u64) -> u32 {
        self.expected
            .borrow()
            .as_ref()
            .map_or(0, |e| e.crc_at(from, len, self.pages.get()))
    }
}

/// The bytes an application's existing file holds: lowercase letters, so they never look like
/// an image header.
fn prefill(len: u64) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The driver's reference to an application stream. See the module documentation.
pub(crate) struct DriverStream {
    state: Rc<StreamState>,
    env: StreamEnv,
}

impl DriverStream {
    /// A reference to `state` for the driver.
    pub(crate) fn new(state: Rc<StreamState>, env: StreamEnv) -> DriverStream {
        DriverStream { state, env }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        op: StreamMethod,
        pos: u64,
        arg: i64,
        origin: Option<SeekOrigin>,
        actual: u64,
        crc: u32,
        expect_crc: u32,
        result: Hresult,
    ) {
        self.env.trace.push(
            Actor::Driver,
            Kind::Stream {
                stream: self.state.id,
                op,
                pos,
                arg,
                origin,
                actual,
                crc,
                expect_crc,
                result,
            },
        );
    }
}

#[async_trait(?Send)]
impl AppStream for DriverStream {
    fn id(&self) -> u32 {
        self.state.id
    }

    async fn write(&self, data: &[u8]) -> StreamIo {
        // The bytes land (or the write fails) when the call begins, and the event is recorded
        // then; a slow disk only makes the driver wait before the call returns, so a cancel
        // made meanwhile comes after this write in the trace.
        let s = &self.state;
        let failure = s.call(StreamMethod::Write);
        let pos = s.pos.get();
        let len = data.len() as u64;
        let (hr, moved) = match failure {
            Some(hr) => (hr, 0),
            None => {
                let room = s.spec.full_at.map_or(len, |cap| cap.saturating_sub(pos));
                let moved = len.min(room);
                if moved > 0 {
                    let mut buf = s.data.borrow_mut();
                    let end = usize::try_from(pos + moved).unwrap_or(usize::MAX);
                    if buf.len() < end {
                        buf.resize(end, 0);
                    }
                    buf[pos as usize..end].copy_from_slice(&data[..moved as usize]);
                }
                s.pos.set(pos + moved);
                s.written.set(s.written.get() + moved);
                let hr = if moved < len {
                    Hresult::STG_E_MEDIUMFULL
                } else {
                    Hresult::S_OK
                };
                (hr, moved)
            }
        };
        let crc = crc32(&data[..moved as usize]);
        let expect_crc = s.expect_crc(pos, moved);
        self.record(
            StreamMethod::Write,
            pos,
            len as i64,
            None,
            moved,
            crc,
            expect_crc,
            hr,
        );
        let held = self.env.watcher.write_started(s.id);
        let mut latency = Duration::from_micros(s.spec.write_us);
        if held && latency < HELD_WRITE {
            latency = HELD_WRITE;
        }
        if latency > Duration::ZERO {
            self.env.sim.sleep(latency).await;
        }
        StreamIo { hr, bytes: moved }
    }

    async fn read(&self, buf: &mut [u8]) -> StreamIo {
        let s = &self.state;
        let pos = s.pos.get();
        let (hr, moved) = match s.call(StreamMethod::Read) {
            Some(hr) => (hr, 0),
            None => {
                let data = s.data.borrow();
                let from = usize::try_from(pos).unwrap_or(usize::MAX).min(data.len());
                let moved = (data.len() - from).min(buf.len());
                buf[..moved].copy_from_slice(&data[from..from + moved]);
                s.pos.set(pos + moved as u64);
                (Hresult::S_OK, moved)
            }
        };
        let crc = crc32(&buf[..moved]);
        self.record(
            StreamMethod::Read,
            pos,
            buf.len() as i64,
            None,
            moved as u64,
            crc,
            0,
            hr,
        );
        StreamIo {
            hr,
            bytes: moved as u64,
        }
    }

    async fn seek(&self, offset: i64, origin: SeekOrigin) -> (Hresult, u64) {
        let s = &self.state;
        let pos = s.pos.get();
        let (hr, new) = match s.call(StreamMethod::Seek) {
            Some(hr) => (hr, pos),
            None => {
                let base = match origin {
                    SeekOrigin::Set => 0,
                    SeekOrigin::Cur => pos as i64,
                    SeekOrigin::End => s.size() as i64,
                };
                match base.checked_add(offset).filter(|n| *n >= 0) {
                    Some(n) => {
                        s.pos.set(n as u64);
                        (Hresult::S_OK, n as u64)
                    }
                    None => (STG_E_INVALIDFUNCTION, pos),
                }
            }
        };
        self.record(StreamMethod::Seek, pos, offset, Some(origin), new, 0, 0, hr);
        (hr, new)
    }

    async fn set_size(&self, size: u64) -> Hresult {
        let s = &self.state;
        let pos = s.pos.get();
        let hr = match s.call(StreamMethod::SetSize) {
            Some(hr) => hr,
            None if s.spec.full_at.is_some_and(|cap| size > cap) => Hresult::STG_E_MEDIUMFULL,
            None => {
                s.data
                    .borrow_mut()
                    .resize(usize::try_from(size).unwrap_or(usize::MAX), 0);
                Hresult::S_OK
            }
        };
        self.record(
            StreamMethod::SetSize,
            pos,
            size as i64,
            None,
            s.size(),
            0,
            0,
            hr,
        );
        hr
    }

    async fn stat(&self) -> (Hresult, u64) {
        let s = &self.state;
        let pos = s.pos.get();
        let (hr, size) = match s.call(StreamMethod::Stat) {
            Some(hr) => (hr, 0),
            None => (Hresult::S_OK, s.size()),
        };
        self.record(StreamMethod::Stat, pos, 0, None, size, 0, 0, hr);
        (hr, size)
    }

    fn release(&self) {
        let s = &self.state;
        s.call(StreamMethod::Release);
        self.record(
            StreamMethod::Release,
            s.pos.get(),
            0,
            None,
            0,
            0,
            0,
            Hresult::S_OK,
        );
    }
}
