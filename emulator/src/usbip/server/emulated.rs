//! An imported emulated device: a [`Device`] stepped by the host-controller transfers of
//! [`crate::usb::hc`] at instants of the wall clock, URB queues per endpoint, completions
//! paced by the bus speed, a timerfd for the device's own schedule.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use tokio::io::unix::AsyncFd;

use super::session::{is_set_address, Backend, CaptureLog, CloseReason, Outgoing, VECTORED_MIN};
use super::{DeviceSpec, Shared};
use crate::device::Device;
use crate::time::{Duration, Instant};
use crate::usb::hc::{
    self, ControlTransfer, InTransfer, OutTransfer, SetupPacket, StepResult, Transfer,
};
use crate::usb::speed::Speed;
use crate::usb::usbmon::{EventType, TransferType};
use crate::usb::Request;
use crate::usbip::protocol::{
    errno, CmdSubmit, CmdUnlink, Command, RetSubmit, RetUnlink, DIR_IN, URB_ZERO_PACKET,
};

/// How far past the end of a connection the device's own schedule is still run (see
/// `Session::settle`), in microseconds.
const SETTLE_LIMIT_US: u64 = 5_000_000;
/// Most device-scheduled instants one wake-up catches up on (see `Session::pump`).
const MAX_CATCH_UP_STEPS: usize = 10_000;
/// A timer on a timerfd: wakes the session at a microsecond-precise instant.
struct Alarm {
    fd: AsyncFd<OwnedFd>,
    armed: Option<std::time::Instant>,
}

impl Alarm {
    fn new() -> io::Result<Alarm> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // tokio deprecated `new` because an `AsRawFd` type may close its descriptor while it
        // is registered; an `OwnedFd` moved into the `AsyncFd` cannot, so this use is sound
        // (and needs no `unsafe`, which this crate keeps to its FFI modules).
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(Alarm { fd, armed: None })
    }

    /// Arms the timer for `at` (disarms it for `None`); re-arming for the same instant is free.
    fn set(&mut self, at: Option<std::time::Instant>) -> io::Result<()> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        if at == self.armed {
            return Ok(());
        }
        let value = match at {
            // A zero value disarms: an instant already past fires after a nanosecond.
            Some(at) => at
                .saturating_duration_since(std::time::Instant::now())
                .max(StdDuration::from_nanos(1)),
            None => StdDuration::ZERO,
        };
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: value.as_secs() as _,
                tv_nsec: value.subsec_nanos() as _,
            },
        };
        timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
        self.armed = at;
        Ok(())
    }

    /// Waits for the armed instant (forever when disarmed). Cancel-safe.
    async fn fired(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut count = [0u8; 8];
            match guard.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut count)?)) {
                Ok(Ok(_)) => {
                    self.armed = None;
                    return Ok(());
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The transfer an URB runs once it reaches the head of its endpoint queue.
enum Active {
    Control(ControlTransfer),
    In(InTransfer),
    Out(OutTransfer),
}

struct Urb {
    cmd: CmdSubmit,
    active: Option<Active>,
    wire: u64,
}

/// How an URB ended.
struct Outcome {
    status: i32,
    data: Vec<u8>,
    actual: u32,
}

impl Outcome {
    fn status(errno: i32) -> Outcome {
        Outcome {
            status: -errno,
            data: Vec::new(),
            actual: 0,
        }
    }
}

/// A completed URB waiting for its wire time to pass.
struct Done {
    due: Instant,
    ret: RetSubmit,
    bytes: usize,
    /// `CMD_UNLINK`s that came after the device completed it: answered 0 after its
    /// `RET_SUBMIT`.
    late_unlinks: Vec<u32>,
}

fn status_of(e: hc::WireError) -> i32 {
    -match e {
        hc::WireError::Stall => errno::EPIPE,
        hc::WireError::Disconnected => errno::ESHUTDOWN,
        hc::WireError::Babble => errno::EOVERFLOW,
        hc::WireError::NoEndpoint => errno::ENOENT,
        hc::WireError::NoProgress(_) => errno::EINVAL,
    }
}

/// True for the stub's device reset request: SET_FEATURE(PORT_RESET) to a port.
fn is_port_reset(s: &SetupPacket) -> bool {
    s.request_type == 0x23 && s.request == Request::SET_FEATURE && s.value == 4
}

/// One imported device: the URB queues and the device they run on.
pub(super) struct Session<'a> {
    shared: &'a Shared,
    spec: &'a DeviceSpec,
    device: Device,
    /// Wakes the session at the device's next instant or the next completion's.
    alarm: Alarm,
    /// The instant `alarm` is set for.
    wake: Option<Instant>,
    devid: u32,
    speed: Speed,
    /// Per endpoint address (EP0 is 0x00 for both directions); only heads are stepped.
    queues: BTreeMap<u8, VecDeque<Urb>>,
    /// Completed URBs waiting for their wire time to pass, in completion order.
    outbox: VecDeque<Done>,
    bus_free_at: Instant,
    /// The device poll a bulk IN transfer left for after its reply went out (see
    /// [`InTransfer::defer_final_poll`]): made before anything else touches the device.
    owed_poll: Option<Instant>,
    pending_urbs: usize,
    pending_bytes: usize,
    /// Replies encoded and not yet written.
    out: Outgoing,
    /// Capture details of URBs submitted and not yet completed, by seqnum.
    capture: CaptureLog,
}

/// Builds, configures and enumerates the device of export `index` for connection `conn`.
pub(super) fn open(shared: &Shared, index: usize, conn: u64) -> Result<Session<'_>, CloseReason> {
    let spec = &shared.config.devices[index];
    let record = &shared.exports[index].record;
    let mut device = Device::new(&spec.profile);
    if let Some(f) = &spec.faults {
        device.set_faults(f.clone());
    }
    let now = shared.now();
    device.poll(now);
    {
        let (port, mut poller) = device.port_and_poller(now);
        hc::enumerate(&port, &mut poller).map_err(CloseReason::Enumeration)?;
    }
    // Enumeration is the server's business, as on a host that exports a real device.
    let _ = device.take_notes();
    let alarm = Alarm::new().map_err(CloseReason::Timer)?;
    Ok(Session {
        shared,
        spec,
        device,
        alarm,
        wake: None,
        devid: record.devid(),
        speed: spec.profile.usb.speed,
        queues: BTreeMap::new(),
        outbox: VecDeque::new(),
        bus_free_at: Instant::ZERO,
        owed_poll: None,
        pending_urbs: 0,
        pending_bytes: 0,
        out: Outgoing::default(),
        capture: CaptureLog::new(conn, u8::try_from(record.devnum).unwrap_or(u8::MAX)),
    })
}

impl Backend for Session<'_> {
    fn command(&mut self, cmd: Command) -> Result<(), CloseReason> {
        match cmd {
            Command::Submit(s) => {
                let (max_urbs, max_bytes) = (
                    self.shared.config.max_pending_urbs,
                    self.shared.config.max_pending_bytes,
                );
                self.pending_urbs += 1;
                self.pending_bytes += s.transfer_buffer_length as usize;
                if self.pending_urbs > max_urbs || self.pending_bytes > max_bytes {
                    self.shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    let why = CloseReason::Limit {
                        urbs: self.pending_urbs,
                        bytes: self.pending_bytes,
                        max_urbs,
                        max_bytes,
                    };
                    // Not queued: it gets no capture record.
                    self.pending_urbs -= 1;
                    self.pending_bytes -= s.transfer_buffer_length as usize;
                    return Err(why);
                }
                self.submit(s);
            }
            Command::Unlink(u) => self.unlink(u),
        }
        Ok(())
    }

    /// Runs the device up to now and queues the completions whose wire time has passed.
    fn advance(&mut self) {
        let now = self.shared.now();
        self.pump(now);
        self.send_due(now);
    }

    /// The firmware refills its FIFO once the reply is on its way.
    fn after_write(&mut self) {
        self.pay_poll();
        self.report_notes();
    }

    fn out(&mut self) -> &mut Outgoing {
        &mut self.out
    }

    fn flush_capture(&mut self) {
        self.capture.flush(self.shared);
    }

    fn idle(&self) -> bool {
        self.pending_urbs == 0
    }

    /// Sets the timer for the device's next instant or the next completion's, whichever
    /// comes first.
    fn arm(&mut self) -> Result<(), CloseReason> {
        self.wake = match (self.device.poll_at(), self.outbox.front().map(|d| d.due)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.alarm
            .set(self.wake.map(|w| self.shared.wall(w)))
            .map_err(CloseReason::Timer)
    }

    async fn event(&mut self) -> Result<(), CloseReason> {
        if self.wake.is_none() {
            return std::future::pending().await;
        }
        self.alarm.fired().await.map_err(CloseReason::Timer)
    }

    fn drop_pending(&mut self) {
        self.kill_pending();
    }

    fn unlink_all(&mut self) {
        Session::unlink_all(self);
    }

    fn settle(&mut self) {
        Session::settle(self);
    }
}

impl Session<'_> {
    /// The connection is gone: lets the device finish what it already scheduled (a motor
    /// stopping after a cancel, bands still being scanned into its buffer) at the scheduled
    /// instants, up to [`SETTLE_LIMIT_US`] ahead, so the notes of the session are complete.
    fn settle(&mut self) {
        self.pay_poll();
        let limit = self.shared.now() + Duration::from_micros(SETTLE_LIMIT_US);
        while let Some(at) = self.device.poll_at() {
            if at > limit {
                break;
            }
            self.device.poll(at);
            self.report_notes();
        }
    }

    fn release(&mut self, bytes: usize) {
        self.pending_urbs = self.pending_urbs.saturating_sub(1);
        self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
    }

    /// Makes the device poll a finished bulk IN transfer left owed, if any.
    fn pay_poll(&mut self) {
        if let Some(at) = self.owed_poll.take() {
            self.device.poll(at);
        }
    }

    fn report_notes(&mut self) {
        let notes = self.device.take_notes();
        if let Some(sink) = &self.spec.notes {
            for n in &notes {
                sink(n);
            }
        }
    }

    fn queue_key(cmd: &CmdSubmit) -> u8 {
        if cmd.ep == 0 {
            0
        } else if cmd.is_in() {
            0x80 | cmd.ep as u8
        } else {
            cmd.ep as u8
        }
    }

    fn submit(&mut self, cmd: CmdSubmit) {
        self.pay_poll();
        let now = self.shared.now();
        self.capture_submit(&cmd, now);
        if cmd.devid != self.devid {
            self.refuse_no_device(cmd, now);
            return;
        }
        if cmd.ep == 0 {
            let setup = cmd.setup_packet();
            if is_set_address(&setup) {
                self.complete(cmd, Outcome::status(0), 0, now);
                return;
            }
            if is_port_reset(&setup) {
                self.reset_device(now);
                let status = if self.device.port().is_connected() {
                    0
                } else {
                    errno::ENODEV
                };
                self.complete(cmd, Outcome::status(status), 0, now);
                return;
            }
        }
        if !self.device.port().is_connected() {
            self.refuse_no_device(cmd, now);
            return;
        }
        let key = Self::queue_key(&cmd);
        self.queues.entry(key).or_default().push_back(Urb {
            cmd,
            active: None,
            wire: 0,
        });
    }

    /// No device to submit to: the submission fails with `-ENODEV`, as `usb_submit_urb`
    /// does, and the capture gets an `E` record instead of a completion.
    fn refuse_no_device(&mut self, cmd: CmdSubmit, now: Instant) {
        self.capture.end(
            self.shared,
            cmd.seqnum,
            EventType::Error,
            -errno::ENODEV,
            &[],
            0,
            now,
        );
        self.out_ret(RetSubmit {
            seqnum: cmd.seqnum,
            status: -errno::ENODEV,
            actual_length: 0,
            data: Vec::new(),
        });
        self.release(cmd.transfer_buffer_length as usize);
    }

    /// Writes the `S` record of `cmd` to the capture, if there is one.
    fn capture_submit(&mut self, cmd: &CmdSubmit, now: Instant) {
        if self.shared.config.capture.is_none() {
            return;
        }
        let endpoint = match (cmd.ep == 0).then_some(cmd.setup) {
            Some(s) => s[0] & 0x80,
            None if cmd.is_in() => 0x80 | cmd.ep as u8,
            None => cmd.ep as u8,
        };
        let transfer_type = if cmd.ep == 0 {
            TransferType::Control
        } else {
            match self.device.port().endpoint_info(endpoint).map(|i| i.0) {
                Some(usb_device::endpoint::EndpointType::Interrupt) => TransferType::Interrupt,
                Some(usb_device::endpoint::EndpointType::Isochronous { .. }) => {
                    TransferType::Isochronous
                }
                _ => TransferType::Bulk,
            }
        };
        self.capture
            .submit(self.shared, cmd, transfer_type, endpoint, now);
    }

    /// The stub's device reset: pending URBs die with -ESHUTDOWN, the device re-enumerates.
    fn reset_device(&mut self, now: Instant) {
        self.pay_poll();
        let queues = std::mem::take(&mut self.queues);
        for urb in queues.into_values().flatten() {
            self.complete(urb.cmd, Outcome::status(errno::ESHUTDOWN), 0, now);
        }
        self.device.poll(now);
        {
            let (port, mut poller) = self.device.port_and_poller(now);
            let _ = hc::enumerate(&port, &mut poller);
        }
        self.report_notes();
    }

    fn unlink(&mut self, u: CmdUnlink) {
        let mut found = None;
        for q in self.queues.values_mut() {
            if let Some(i) = q.iter().position(|urb| urb.cmd.seqnum == u.unlink_seqnum) {
                found = q
                    .remove(i)
                    .map(|urb| urb.cmd.transfer_buffer_length as usize);
                break;
            }
        }
        if found.is_none() {
            if let Some(d) = self
                .outbox
                .iter_mut()
                .find(|d| d.ret.seqnum == u.unlink_seqnum)
            {
                // Completed on the device, its data handed out: it is delivered, and the
                // unlink is answered 0 after it (send_due).
                d.late_unlinks.push(u.seqnum);
                return;
            }
        }
        let status = match found {
            Some(bytes) => {
                self.release(bytes);
                let now = self.shared.now();
                self.capture.end(
                    self.shared,
                    u.unlink_seqnum,
                    EventType::Complete,
                    -errno::ECONNRESET,
                    &[],
                    0,
                    now,
                );
                -errno::ECONNRESET
            }
            None => 0,
        };
        // Writing to a Vec cannot fail.
        let _ = RetUnlink {
            seqnum: u.seqnum,
            status,
        }
        .write(&mut self.out.tail);
    }

    /// Queues `cmd`'s RET_SUBMIT for when its `wire` bytes have crossed the bus.
    fn complete(&mut self, cmd: CmdSubmit, outcome: Outcome, wire: u64, now: Instant) {
        let begin = self.bus_free_at.max(now);
        let due = begin + self.speed.wire_time(wire);
        self.bus_free_at = due;
        self.outbox.push_back(Done {
            due,
            ret: RetSubmit {
                seqnum: cmd.seqnum,
                status: outcome.status,
                actual_length: outcome.actual,
                data: outcome.data,
            },
            bytes: cmd.transfer_buffer_length as usize,
            late_unlinks: Vec::new(),
        });
    }

    /// Answers 0 to the unlinks of an URB that completed before they came.
    fn answer_late_unlinks(&mut self, seqnums: Vec<u32>) {
        for seqnum in seqnums {
            // Writing to a Vec cannot fail.
            let _ = RetUnlink { seqnum, status: 0 }.write(&mut self.out.tail);
        }
    }

    fn out_ret(&mut self, mut ret: RetSubmit) {
        // Large IN data goes out as a buffer of its own (a vectored write), not copied.
        let data = if ret.data.len() >= VECTORED_MIN {
            std::mem::take(&mut ret.data)
        } else {
            Vec::new()
        };
        // Writing to a Vec cannot fail.
        let _ = ret.write(&mut self.out.tail);
        if !data.is_empty() {
            self.out.push_data(data);
        }
    }

    /// Encodes every completion whose wire time has passed.
    fn send_due(&mut self, now: Instant) {
        while self.outbox.front().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.outbox.pop_front() {
                let ret = d.ret;
                self.capture.end(
                    self.shared,
                    ret.seqnum,
                    EventType::Complete,
                    ret.status,
                    &ret.data,
                    ret.actual_length,
                    now,
                );
                self.release(d.bytes);
                self.out_ret(ret);
                self.answer_late_unlinks(d.late_unlinks);
            }
        }
    }

    /// Captures a completion from the outbox as it ended (at disconnect or shutdown).
    fn capture_completion(&mut self, r: &RetSubmit, now: Instant) {
        self.capture.end(
            self.shared,
            r.seqnum,
            EventType::Complete,
            r.status,
            &r.data,
            r.actual_length,
            now,
        );
    }

    /// The peer is gone: completions it will never read are captured as they ended, and
    /// URBs still queued are killed (`-ENOENT`), as the stub kills them on disconnect.
    fn kill_pending(&mut self) {
        let now = self.shared.now();
        for d in std::mem::take(&mut self.outbox) {
            let r = d.ret;
            self.capture_completion(&r, now);
        }
        for urb in std::mem::take(&mut self.queues).into_values().flatten() {
            self.capture.end(
                self.shared,
                urb.cmd.seqnum,
                EventType::Complete,
                -errno::ENOENT,
                &[],
                0,
                now,
            );
        }
        self.pending_urbs = 0;
        self.pending_bytes = 0;
    }

    /// Shutdown: completions already due go out as they ended, every other URB is unlinked
    /// with `-ESHUTDOWN`, as Linux unlinks the URBs of a device that goes away
    /// (`usb_hcd_flush_endpoint`), so the client sees its device gone, not a cancel of its own.
    fn unlink_all(&mut self) {
        let now = self.shared.now();
        for d in std::mem::take(&mut self.outbox) {
            let r = d.ret;
            self.capture_completion(&r, now);
            self.out_ret(r);
            self.answer_late_unlinks(d.late_unlinks);
        }
        for urb in std::mem::take(&mut self.queues).into_values().flatten() {
            let seqnum = urb.cmd.seqnum;
            self.capture.end(
                self.shared,
                seqnum,
                EventType::Complete,
                -errno::ESHUTDOWN,
                &[],
                0,
                now,
            );
            self.out_ret(RetSubmit {
                seqnum,
                status: -errno::ESHUTDOWN,
                actual_length: 0,
                data: Vec::new(),
            });
        }
        self.pending_urbs = 0;
        self.pending_bytes = 0;
    }

    /// Runs the device up to `now` and steps the head of every queue until nothing moves.
    ///
    /// A session woken late (a loaded machine) catches up in device time: it steps pending
    /// URBs at each instant the device had scheduled before `now`, in order, as a host
    /// controller polling the endpoint all along would have, so a band that was ready before a
    /// fault reaches an URB that was waiting for it before the fault does. Completions found
    /// on the way are due from the instant they happened.
    fn pump(&mut self, now: Instant) {
        self.pay_poll();
        let mut last = None;
        for _ in 0..MAX_CATCH_UP_STEPS {
            match self.device.poll_at() {
                Some(at) if at < now && last.is_none_or(|l| at > l) && !self.queues.is_empty() => {
                    self.step_at(at);
                    last = Some(at);
                }
                _ => break,
            }
        }
        self.step_at(now);
    }

    /// Runs the device at `now` and steps the head of every queue until nothing moves.
    fn step_at(&mut self, now: Instant) {
        self.pay_poll();
        self.device.poll(now);
        loop {
            let mut progressed = false;
            let keys: Vec<u8> = self.queues.keys().copied().collect();
            for key in keys {
                let Some(q) = self.queues.get_mut(&key) else {
                    continue;
                };
                let Some(urb) = q.front_mut() else { continue };
                if let Some(at) = self.owed_poll.take() {
                    self.device.poll(at);
                }
                let (outcome, moved, owed) = {
                    let (port, mut poller) = self.device.port_and_poller(now);
                    step_urb(urb, &port, &mut poller, &mut self.out)
                };
                if owed {
                    self.owed_poll = Some(now);
                }
                if moved {
                    progressed = true;
                }
                if let Some(outcome) = outcome {
                    progressed = true;
                    if let Some(urb) = q.pop_front() {
                        self.complete(urb.cmd, outcome, urb.wire, now);
                    }
                }
            }
            self.queues.retain(|_, q| !q.is_empty());
            if !progressed {
                break;
            }
        }
        self.report_notes();
    }
}

/// Starts or continues `urb`'s transfer; returns its outcome once it ended, whether any
/// bytes moved, and whether the device is owed the poll that follows a bulk IN transfer's
/// last burst ([`InTransfer::defer_final_poll`]).
fn step_urb(
    urb: &mut Urb,
    port: &crate::usb::bus::BusPort,
    poller: &mut dyn hc::DevicePoller,
    out: &mut Outgoing,
) -> (Option<Outcome>, bool, bool) {
    if urb.active.is_none() {
        match start(&mut urb.cmd, out) {
            Ok(a) => urb.active = Some(a),
            Err(outcome) => return (Some(outcome), false, false),
        }
    }
    let Some(active) = urb.active.as_mut() else {
        return (Some(Outcome::status(errno::EINVAL)), false, false);
    };
    let mut owed = false;
    let (outcome, moved) = match active {
        Active::Control(t) => {
            let step = t.step(port, poller);
            let moved = t.take_wire_bytes();
            let outcome = match step {
                StepResult::Pending => None,
                StepResult::Done(Ok(data)) if urb.cmd.is_in() => Some(Outcome {
                    status: 0,
                    actual: data.len() as u32,
                    data,
                }),
                // The data stage moved all of it (`start` took `cmd.data` and checked its
                // length against wLength, so the buffer length is what was sent).
                StepResult::Done(Ok(_)) => Some(Outcome {
                    status: 0,
                    actual: urb.cmd.transfer_buffer_length,
                    data: Vec::new(),
                }),
                StepResult::Done(Err(e)) => Some(Outcome::status(-status_of(e))),
            };
            (outcome, moved)
        }
        Active::In(t) => {
            let step = t.step(port, poller);
            let moved = t.take_wire_bytes();
            let outcome = match step {
                StepResult::Pending => None,
                StepResult::Done(Ok(data)) => {
                    owed = true;
                    Some(Outcome {
                        status: 0,
                        actual: data.len() as u32,
                        data,
                    })
                }
                StepResult::Done(Err(e)) => {
                    // Data that arrived before the error is delivered with it, as an URB's
                    // actual_length is.
                    let data = t.data().to_vec();
                    Some(Outcome {
                        status: status_of(e),
                        actual: data.len() as u32,
                        data,
                    })
                }
            };
            (outcome, moved)
        }
        Active::Out(t) => {
            let step = t.step(port, poller);
            let moved = t.take_wire_bytes();
            let outcome = match step {
                StepResult::Pending => None,
                StepResult::Done(Ok(n)) => Some(Outcome {
                    status: 0,
                    actual: n as u32,
                    data: Vec::new(),
                }),
                StepResult::Done(Err(e)) => Some(Outcome {
                    status: status_of(e),
                    actual: t.sent() as u32,
                    data: Vec::new(),
                }),
            };
            (outcome, moved)
        }
    };
    urb.wire += moved;
    (outcome, moved > 0, owed)
}

/// The transfer for a newly started URB, or the outcome of one that is refused. IN data goes
/// into one of `out`'s spare buffers.
fn start(cmd: &mut CmdSubmit, out: &mut Outgoing) -> Result<Active, Outcome> {
    let ep = cmd.ep as u8;
    if ep == 0 {
        let setup = cmd.setup_packet();
        if setup.length > 0 && setup.is_in() != cmd.is_in() {
            return Err(Outcome::status(errno::EINVAL));
        }
        if setup.is_in() {
            if cmd.transfer_buffer_length < u32::from(setup.length) {
                return Err(Outcome::status(errno::EINVAL));
            }
            return Ok(Active::Control(ControlTransfer::new_in(setup)));
        }
        if cmd.data.len() != usize::from(setup.length) {
            return Err(Outcome::status(errno::EINVAL));
        }
        return Ok(Active::Control(ControlTransfer::new_out(
            setup,
            std::mem::take(&mut cmd.data),
        )));
    }
    if cmd.direction == DIR_IN {
        Ok(Active::In(
            InTransfer::with_buffer(0x80 | ep, cmd.transfer_buffer_length as usize, out.buffer())
                .defer_final_poll(),
        ))
    } else {
        let zlp = cmd.transfer_flags & URB_ZERO_PACKET != 0;
        Ok(Active::Out(OutTransfer::new(
            ep,
            std::mem::take(&mut cmd.data),
            zlp,
        )))
    }
}
