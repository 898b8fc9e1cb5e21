#!/usr/bin/env python3
"""The reference WIA minidriver as an external driver process (Python 3, stdlib only).

Written from emulator/PROTOCOL.md (the scanner) and conformance/DRIVER-PROTOCOL.md (the runner).
It behaves like the in-process `reference` driver: the same requests in the same order, with the
same timeouts, read sizes and poll intervals, so its traces match that driver's snapshots.

    scanconform run --driver exec:'python3 conformance/examples/reference_driver.py'

`--legacy-xp` makes it the `legacy-xp` driver instead: it claims no asynchronous cancel and
ignores WIA_EVENT_CANCEL_IO (legacy_xp_driver.py runs it that way).
"""

import base64
import json
import struct
import sys

PROTOCOL = 1

# Device protocol (emulator/PROTOCOL.md).
EP_DATA_IN = 0x81
EP_DATA_OUT = 0x02
REQ_SET_PARAMS = 0x02
REQ_GET_PARAMS = 0x03
REQ_START_SCAN = 0x04
REQ_GET_SCAN_STATUS = 0x05
REQ_CANCEL = 0x64
REQ_DEVICE_RESET = 0x66
REQ_GET_DEVICE_STATUS = 0x67
STATUS_OK = 0x2001
STATUS_BUSY = 0x2019
STATUS_TRANSACTION_CANCELLED = 0x201F
CANCEL_CODE = 0x4001
PARAMS_REPORT_LEN = 40
SCAN_STATUS_LEN = 28
VENDOR_OUT = 0x41  # vendor request to an interface, host to device
VENDOR_IN = 0xC1  # vendor request to an interface, device to host
MODES = {"lineart": 0, "gray8": 1, "gray16": 2, "color24": 3, "color48": 4}
# Scan states and errors of GET_SCAN_STATUS.
IDLE, HALTED, DRAINING = 0, 5, 6
ERR_NONE, ERR_CANCEL_BUTTON, ERR_PAPER_JAM, ERR_COVER_OPEN = 0, 2, 3, 4
ERR_SHORT_BAND, ERR_FEEDER_EMPTY = 6, 7

# WIA values (wiadef.h, winerror.h), as unsigned 32-bit numbers.
S_OK = 0
S_FALSE = 1
E_FAIL = 0x80004005
WIA_ERROR_PAPER_JAM = 0x80210002
WIA_ERROR_PAPER_EMPTY = 0x80210003
WIA_ERROR_OFFLINE = 0x80210005
WIA_ERROR_BUSY = 0x80210006
WIA_ERROR_DEVICE_COMMUNICATION = 0x8021000A
WIA_ERROR_COVER_OPEN = 0x80210010
WIA_STATUS_END_OF_MEDIA = 0x00210001
IT_MSG_DATA = 0x0002
IT_MSG_STATUS = 0x0003
IT_MSG_NEW_PAGE = 0x0005
IT_STATUS_TRANSFER_FROM_DEVICE = 0x0001
IT_STATUS_TRANSFER_TO_CLIENT = 0x0004

# Timing, in microseconds (the same values as the in-process driver).
READ_SLICE_US = 100_000  # one bulk read waits this long before the driver reports status
READ_SLACK = 1024  # extra bytes asked for at the end of a band: one SuperSpeed packet
CONTROL_TIMEOUT_US = 1_000_000
STATUS_POLL_US = 5_000
CANCEL_BUDGET_US = 2_000_000


class Stop(Exception):
    """The transfer loop stopped early: kind is 'cancelled', 'app' or 'error'."""

    def __init__(self, kind, hr=S_FALSE):
        super().__init__(kind)
        self.kind = kind
        self.hr = hr


class TransferFailed(Exception):
    """A USB request completed with a status other than ok."""

    def __init__(self, status, actual=0):
        super().__init__(status)
        self.status = status
        self.actual = actual


class Runner:
    """The line protocol: one JSON object per line on stdin and stdout."""

    def __init__(self, driver):
        self.driver = driver
        self.next_id = 1

    def send(self, msg):
        sys.stdout.write(json.dumps(msg, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def read(self):
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return json.loads(line)

    def wait(self, want):
        """Reads until a message of type `want`, handling drvNotifyPnPEvent meanwhile."""
        while True:
            msg = self.read()
            if msg["type"] == "notify":
                self.driver.notify_pnp_event(msg["event"])
                continue
            if msg["type"] != want:
                raise RuntimeError("expected %s, got %s" % (want, msg["type"]))
            return msg

    def request(self, msg):
        """Sends one USB request and waits for its completion (notify may come first)."""
        msg["id"] = self.next_id
        self.next_id += 1
        self.send(msg)
        while True:
            done = self.wait("done")
            if done["id"] == msg["id"]:
                return done
            raise RuntimeError("completion for request %d, waiting for %d" % (done["id"], msg["id"]))

    def request_in_notify(self, msg):
        """A request made while handling notify: only abort_endpoint and now."""
        msg["id"] = self.next_id
        self.next_id += 1
        self.send(msg)
        return self.wait("done")

    # ---- the host API ----

    def now(self):
        return self.request({"type": "now"})["now_us"]

    def sleep(self, us):
        self.request({"type": "sleep", "duration_us": us})

    def control_in(self, request, length, interface):
        done = self.request({"type": "control_in", "request_type": VENDOR_IN, "request": request,
                             "value": 0, "index": interface, "length": length,
                             "timeout_us": CONTROL_TIMEOUT_US})
        if done["status"] != "ok":
            raise TransferFailed(done["status"])
        return base64.b64decode(done["data"])

    def control_out(self, request, data, interface):
        done = self.request({"type": "control_out", "request_type": VENDOR_OUT,
                             "request": request, "value": 0, "index": interface,
                             "data": base64.b64encode(data).decode(),
                             "timeout_us": CONTROL_TIMEOUT_US})
        if done["status"] != "ok":
            raise TransferFailed(done["status"])

    def bulk_in(self, ep, length, timeout_us):
        done = self.request({"type": "bulk_in", "ep": ep, "length": length,
                             "timeout_us": timeout_us})
        if done["status"] != "ok":
            raise TransferFailed(done["status"], done.get("actual", 0))
        return base64.b64decode(done["data"])

    def clear_halt(self, ep):
        done = self.request({"type": "clear_halt", "ep": ep})
        if done["status"] != "ok":
            raise TransferFailed(done["status"])

    def callback(self, reason, status, percent, offset, data):
        self.send({"type": "callback", "reason": reason, "status": status, "percent": percent,
                   "offset": offset, "length": len(data),
                   "data": base64.b64encode(data).decode()})
        return self.wait("callback_result")["hr"]


def map_transfer_error(e):
    return WIA_ERROR_OFFLINE if e.status == "no_device" else WIA_ERROR_DEVICE_COMMUNICATION


def device_comm(fn, *args):
    """Runs a request; a failed transfer becomes an HRESULT error (Stop 'error')."""
    try:
        return fn(*args)
    except TransferFailed as e:
        raise Stop("error", map_transfer_error(e))


def stop_for(hr):
    return Stop("cancelled") if hr == S_FALSE else Stop("app", hr)


class Driver:
    def __init__(self, legacy_xp):
        self.legacy_xp = legacy_xp
        self.cancel_io = False
        self.interface = 0
        self.bands_ready = 0  # of the last GET_SCAN_STATUS: bands buffered, not yet read
        self.runner = Runner(self)

    # ---- drvNotifyPnPEvent ----

    def notify_pnp_event(self, event):
        if event == "cancel_io" and not self.legacy_xp:
            self.cancel_io = True
            self.runner.request_in_notify({"type": "abort_endpoint", "ep": EP_DATA_IN})
        self.runner.send({"type": "notify_done"})

    # ---- device helpers ----

    def device_status(self):
        r = self.runner
        reply = device_comm(r.control_in, REQ_GET_DEVICE_STATUS, 8, self.interface)
        if len(reply) < 4:
            raise Stop("error", WIA_ERROR_DEVICE_COMMUNICATION)
        length = min(struct.unpack_from("<H", reply, 0)[0], len(reply))
        if length < 4 or length % 2:
            raise Stop("error", WIA_ERROR_DEVICE_COMMUNICATION)
        code = struct.unpack_from("<H", reply, 2)[0]
        halted = [reply[at] for at in range(4, length, 2)]
        return code, halted

    def scan_status(self):
        r = self.runner
        reply = device_comm(r.control_in, REQ_GET_SCAN_STATUS, SCAN_STATUS_LEN, self.interface)
        if len(reply) < SCAN_STATUS_LEN or reply[0] > 6 or reply[1] > 9:
            raise Stop("error", WIA_ERROR_DEVICE_COMMUNICATION)
        self.bands_ready = struct.unpack_from("<I", reply, 8)[0]
        return reply[0], reply[1]  # state, error

    def reset_device(self):
        device_comm(self.runner.control_out, REQ_DEVICE_RESET, b"", self.interface)

    def wait_ready(self):
        """Polls Get Device Status until OK, clearing halts; resets a device that stays busy."""
        r = self.runner
        deadline = r.now() + CANCEL_BUDGET_US
        reset_sent = False
        while True:
            code, halted = self.device_status()
            if code == STATUS_OK:
                return
            if code == STATUS_TRANSACTION_CANCELLED:
                for ep in (halted or [EP_DATA_IN, EP_DATA_OUT]):
                    device_comm(r.clear_halt, ep)
            elif code != STATUS_BUSY:
                raise Stop("error", WIA_ERROR_DEVICE_COMMUNICATION)
            if r.now() >= deadline:
                if reset_sent:
                    raise Stop("error", WIA_ERROR_DEVICE_COMMUNICATION)
                self.reset_device()
                reset_sent = True
            r.sleep(STATUS_POLL_US)

    def cancel_device(self):
        """Cancel Request, status polled until OK, a reset if the device kept scanning."""
        payload = struct.pack("<H4x", CANCEL_CODE)
        device_comm(self.runner.control_out, REQ_CANCEL, payload, self.interface)
        self.wait_ready()
        state, _ = self.scan_status()
        if state != IDLE:
            self.reset_device()
            self.wait_ready()

    def device_stop(self):
        """What a device-side stop (stall, short read, feeder empty) means. Returns a Stop."""
        try:
            code, _ = self.device_status()
            if code == STATUS_TRANSACTION_CANCELLED:
                self.wait_ready()
            _, error = self.scan_status()
        except Stop as s:
            return s
        if error in (ERR_CANCEL_BUTTON, ERR_SHORT_BAND):
            return Stop("cancelled")
        return Stop("error", {ERR_PAPER_JAM: WIA_ERROR_PAPER_JAM,
                              ERR_COVER_OPEN: WIA_ERROR_COVER_OPEN,
                              ERR_FEEDER_EMPTY: WIA_ERROR_PAPER_EMPTY}
                    .get(error, WIA_ERROR_DEVICE_COMMUNICATION))

    def callback(self, reason, percent, offset, data):
        status = IT_STATUS_TRANSFER_TO_CLIENT if reason == IT_MSG_DATA \
            else IT_STATUS_TRANSFER_FROM_DEVICE
        return self.runner.callback(reason, status, percent, offset, data)

    def read_chunk(self, buf, ask, percent):
        """Reads the next chunk (at most `ask` bytes) into buf; returns its length."""
        r = self.runner
        while True:
            if self.cancel_io:
                raise Stop("cancelled")
            try:
                data = r.bulk_in(EP_DATA_IN, ask, READ_SLICE_US)
                buf[:len(data)] = data
                return len(data)
            except TransferFailed as e:
                if e.status == "timeout" and e.actual > 0:
                    # As the in-process host: the count is known, the partial bytes are not.
                    return e.actual
                if e.status == "timeout":
                    hr = self.callback(IT_MSG_STATUS, percent, 0, b"")
                    if hr != S_OK:
                        raise stop_for(hr)
                    state, error = self.scan_status()
                    if state == IDLE and error != ERR_NONE:
                        raise self.device_stop()
                    continue
                if e.status == "cancelled":
                    raise Stop("cancelled")
                if e.status == "stall":
                    raise self.device_stop()
                if e.status == "no_device":
                    raise Stop("error", WIA_ERROR_OFFLINE)
                raise Stop("error", WIA_ERROR_DEVICE_COMMUNICATION)

    def transfer(self, ctx):
        r = self.runner
        job = ctx["job"]
        self.wait_ready()
        params = struct.pack("<HBBIIIIH2x", job["resolution_dpi"], MODES[job["mode"]],
                             1 if job["source"] == "adf" else 0, job["x_px"], job["y_px"],
                             job["width_px"], job["height_px"], job["pages"])
        device_comm(r.control_out, REQ_SET_PARAMS, params, self.interface)
        report = device_comm(r.control_in, REQ_GET_PARAMS, PARAMS_REPORT_LEN, self.interface)
        if len(report) < PARAMS_REPORT_LEN or report[2] > 4 or report[3] > 1:
            raise Stop("error", WIA_ERROR_DEVICE_COMMUNICATION)
        bytes_per_line, lines_per_page = struct.unpack_from("<II", report, 24)
        band_bytes = struct.unpack_from("<I", report, 36)[0]
        try:
            r.control_out(REQ_START_SCAN, b"", self.interface)
        except TransferFailed as e:
            if e.status == "stall":
                _, error = self.scan_status()
                raise Stop("error", WIA_ERROR_PAPER_EMPTY if error == ERR_FEEDER_EMPTY
                           else WIA_ERROR_BUSY)
            raise Stop("error", map_transfer_error(e))
        hr = self.callback(IT_MSG_STATUS, 0, 0, b"")
        if hr != S_OK:
            raise stop_for(hr)

        page_bytes = bytes_per_line * lines_per_page
        adf = job["source"] == "adf"
        wanted_pages = job["pages"] if adf else 1
        total_bytes = page_bytes * max(wanted_pages, 1)
        chunk_max = max(ctx["buffer_size"], 1)
        buf = bytearray(chunk_max + READ_SLACK)
        done_bytes = 0
        last_percent = 0
        page = 0
        band_bytes = max(band_bytes, 1)
        while True:
            if page > 0:
                hr = self.callback(IT_MSG_NEW_PAGE, last_percent, 0, b"")
                if hr != S_OK:
                    raise stop_for(hr)
            offset = 0
            while offset < page_bytes:
                # One read never crosses a band boundary; a band ending inside this read is
                # asked for with one packet more, so its short packet or ZLP ends the transfer.
                band_left = band_bytes - offset % band_bytes
                want = min(page_bytes - offset, band_left, chunk_max)
                ask = want + READ_SLACK if want == band_left else want
                n = self.read_chunk(buf, ask, last_percent)
                if n < want:
                    raise self.device_stop()
                if self.cancel_io:
                    raise Stop("cancelled")
                done_bytes += n
                if wanted_pages == 0 or total_bytes == 0:
                    percent = 0
                else:
                    percent = min(done_bytes * 100 // total_bytes, 100)
                last_percent = max(percent, last_percent)
                hr = self.callback(IT_MSG_DATA, percent, offset, bytes(buf[:n]))
                offset += n
                if hr != S_OK:
                    raise stop_for(hr)
            page += 1
            if not adf or (wanted_pages > 0 and page >= wanted_pages):
                break
            # ADF: is another sheet coming?
            while True:
                state, error = self.scan_status()
                # Draining with bands still buffered: the next page is waiting already (a
                # host that fell a page behind the device, on the wall clock).
                if state != DRAINING or self.bands_ready > 0:
                    break
                r.sleep(STATUS_POLL_US)
            if state == IDLE and error in (ERR_FEEDER_EMPTY, ERR_NONE):
                if wanted_pages == 0:
                    break
                return WIA_STATUS_END_OF_MEDIA
            if state in (IDLE, HALTED):
                raise self.device_stop()
        return S_OK

    def acquire_item_data(self, ctx):
        self.cancel_io = False
        self.interface = ctx["interface"]
        try:
            return self.transfer(ctx)
        except Stop as stop:
            try:
                self.cancel_device()
                cleanup = None
            except Stop as s:
                cleanup = s.hr
            if stop.kind in ("app", "error"):
                return stop.hr
            return cleanup if cleanup is not None else S_FALSE

    def serve(self):
        r = self.runner
        hello = r.read()
        if hello.get("type") != "hello" or hello.get("protocol") != PROTOCOL:
            sys.stderr.write("unexpected first message: %r\n" % (hello,))
            return 2
        r.send({"type": "hello", "protocol": PROTOCOL,
                "name": "legacy-xp.py" if self.legacy_xp else "reference.py",
                "version": "1.0", "capabilities": {"async_cancel": not self.legacy_xp}})
        while True:
            try:
                msg = r.wait("acquire")
            except EOFError:
                return 0
            r.send({"type": "result", "hr": self.acquire_item_data(msg)})


def main():
    return Driver(legacy_xp="--legacy-xp" in sys.argv[1:]).serve()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EOFError:
        sys.exit(0)
