#!/usr/bin/env python3
"""The reference WIA 2.0 stream minidriver as an external driver process (Python 3, stdlib only).

Written from emulator/PROTOCOL.md (the scanner) and conformance/DRIVER-PROTOCOL.md (the runner,
its WIA 2.0 contract). It behaves like the in-process `reference-wia2` driver: the same
requests in the same order with the same timeouts, read sizes and poll intervals, the same
GetNextStream, SendMessage and stream calls, so its traces are those of that driver.

    scanconform run --driver exec:'python3 conformance/examples/reference_wia2_driver.py'

Per item (the flatbed, each child of a folder, a feeder job) it makes the device ready and
idle, sets the parameters, starts the scan and reports a warming lamp as DEVICE_STATUS; per
stream (each page in TYMED_FILE, once in TYMED_MULTIPAGE_FILE with NEW_PAGE between pages) it
asks for a stream, seeks to its end, writes the page's PNM file (seeking back to its own
position before each write), sends STATUS after each write, and releases the stream before
asking for the next one and before returning. A skipped item is scanned and discarded;
S_FALSE or WIA_EVENT_CANCEL_IO stops the device and returns S_FALSE; a failure is returned; a
device failure goes to the error handlers as DEVICE_STATUS and their answer is returned.
"""

import base64
import json
import struct
import sys

PROTOCOL = 1
CONTRACT = "wia2"

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
IDLE, WARMING_UP, HALTED, DRAINING = 0, 1, 5, 6
ERR_NONE, ERR_CANCEL_BUTTON, ERR_PAPER_JAM, ERR_COVER_OPEN = 0, 2, 3, 4
ERR_SHORT_BAND, ERR_FEEDER_EMPTY, ERR_MULTI_FEED = 6, 7, 10

# WIA values (wiadef.h, winerror.h), as unsigned 32-bit numbers.
S_OK = 0
S_FALSE = 1
E_FAIL = 0x80004005
E_POINTER = 0x80004003
WIA_ERROR_PAPER_JAM = 0x80210002
WIA_ERROR_PAPER_EMPTY = 0x80210003
WIA_ERROR_OFFLINE = 0x80210005
WIA_ERROR_BUSY = 0x80210006
WIA_ERROR_DEVICE_COMMUNICATION = 0x8021000A
WIA_ERROR_COVER_OPEN = 0x80210010
WIA_ERROR_MULTI_FEED = 0x80210014
WIA_STATUS_END_OF_MEDIA = 0x00210001
WIA_STATUS_WARMING_UP = 0x00210002
WIA_STATUS_SKIP_ITEM = 0x00210009
# drvAcquireItemData lFlags, WIA_IPA_TYMED, WIA_TRANSFER_MSG_*, STREAM_SEEK_*.
ACQUIRE_CHILDREN = 1
DOWNLOAD = 2
TYMED_MULTIPAGE_FILE = 256
MSG_STATUS, MSG_DEVICE_STATUS, MSG_NEW_PAGE = 1, 5, 6
SEEK_SET, SEEK_END = 0, 2

# Timing and sizes (the same values as the in-process driver).
READ_SLICE_US = 500_000  # one bulk read waits this long before the driver reports status
READ_SLACK = 1024  # extra bytes asked for at the end of a band: one SuperSpeed packet
CONTROL_TIMEOUT_US = 1_000_000
STATUS_POLL_US = 5_000
CANCEL_BUDGET_US = 2_000_000
UPLOAD_CHUNK = 4096


def failed(hr):
    return hr & 0x80000000 != 0


class DevErr(Exception):
    """A device request failed: the WIA error for it."""

    def __init__(self, hr):
        super().__init__(hr)
        self.hr = hr


class Stop(Exception):
    """The transfer stops early. kind: 'cancelled', 'failed' (hr), 'device' (end)."""

    def __init__(self, kind, hr=S_FALSE, end=None):
        super().__init__(kind)
        self.kind = kind
        self.hr = hr
        self.end = end  # a device end: ("cancelled", None) or ("error", hr)


def device_error(hr):
    return Stop("device", end=("error", hr))


def answer(hr):
    """What a callback's answer tells the driver: go, cancel, skip or fail."""
    if hr == S_FALSE:
        return "cancel"
    if hr == WIA_STATUS_SKIP_ITEM:
        return "skip"
    if failed(hr):
        return "fail"
    return "go"


def transfer_error(status):
    return WIA_ERROR_OFFLINE if status == "no_device" else WIA_ERROR_DEVICE_COMMUNICATION


def page_header(job):
    w, h = job["width_px"], job["height_px"]
    return {
        "lineart": "P4\n%d %d\n" % (w, h),
        "gray8": "P5\n%d %d\n255\n" % (w, h),
        "gray16": "P5\n%d %d\n65535\n" % (w, h),
        "color24": "P6\n%d %d\n255\n" % (w, h),
        "color48": "P6\n%d %d\n65535\n" % (w, h),
    }[job["mode"]].encode()


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
        """One USB request, answered by its completion (a notify may come first)."""
        msg["id"] = self.next_id
        self.next_id += 1
        self.send(msg)
        return self.wait("done")

    # ---- the host ----

    def now(self):
        return self.request({"type": "now"})["now_us"]

    def sleep(self, us):
        self.request({"type": "sleep", "duration_us": us})

    def control_in(self, request, length, interface):
        done = self.request({"type": "control_in", "request_type": VENDOR_IN, "request": request,
                             "value": 0, "index": interface, "length": length,
                             "timeout_us": CONTROL_TIMEOUT_US})
        return done["status"], base64.b64decode(done.get("data", ""))

    def control_out(self, request, data, interface):
        done = self.request({"type": "control_out", "request_type": VENDOR_OUT,
                             "request": request, "value": 0, "index": interface,
                             "data": base64.b64encode(data).decode(),
                             "timeout_us": CONTROL_TIMEOUT_US})
        return done["status"]

    def bulk_in(self, ep, length, timeout_us):
        return self.request({"type": "bulk_in", "ep": ep, "length": length,
                             "timeout_us": timeout_us})

    def bulk_out(self, ep, data, timeout_us):
        return self.request({"type": "bulk_out", "ep": ep,
                             "data": base64.b64encode(data).decode(),
                             "timeout_us": timeout_us})["status"]

    def clear_halt(self, ep):
        return self.request({"type": "clear_halt", "ep": ep})["status"]

    # ---- IWiaMiniDrvTransferCallback and the application's streams ----

    def get_next_stream(self, item_name, full_item_name):
        self.send({"type": "get_next_stream", "item_name": item_name,
                   "full_item_name": full_item_name})
        got = self.wait("next_stream")
        return got["hr"], got.get("stream")

    def send_message(self, msg, percent, transferred, status):
        self.send({"type": "send_message", "msg": msg, "percent": percent,
                   "bytes": transferred, "status": status})
        return self.wait("message_result")["hr"]

    def stream(self, stream, op, **fields):
        msg = {"type": "stream", "stream": stream, "op": op}
        msg.update(fields)
        self.send(msg)
        return self.wait("stream_result")

    def seek(self, stream, offset, origin):
        r = self.stream(stream, "seek", offset=offset, origin=origin)
        return r["hr"], r.get("position", 0)

    def write(self, stream, data):
        r = self.stream(stream, "write", data=base64.b64encode(data).decode())
        return r["hr"], r.get("actual", 0)

    def read_stream(self, stream, length):
        r = self.stream(stream, "read", length=length)
        return r["hr"], base64.b64decode(r.get("data", ""))

    def stat(self, stream):
        r = self.stream(stream, "stat")
        return r["hr"], r.get("size", 0)

    def release(self, stream):
        self.send({"type": "release", "stream": stream})


class Scanner:
    """The native scanner through the runner (emulator/PROTOCOL.md §10)."""

    def __init__(self, runner, interface):
        self.r = runner
        self.interface = interface
        self.bands_ready = 0  # of the last GET_SCAN_STATUS: bands buffered, not yet read

    def device_status(self):
        status, reply = self.r.control_in(REQ_GET_DEVICE_STATUS, 8, self.interface)
        if status != "ok":
            raise DevErr(transfer_error(status))
        if len(reply) < 4:
            raise DevErr(WIA_ERROR_DEVICE_COMMUNICATION)
        length = min(struct.unpack_from("<H", reply, 0)[0], len(reply))
        if length < 4 or length % 2:
            raise DevErr(WIA_ERROR_DEVICE_COMMUNICATION)
        code = struct.unpack_from("<H", reply, 2)[0]
        return code, [reply[at] for at in range(4, length, 2)]

    def scan_status(self):
        status, reply = self.r.control_in(REQ_GET_SCAN_STATUS, SCAN_STATUS_LEN, self.interface)
        if status != "ok":
            raise DevErr(transfer_error(status))
        if len(reply) < SCAN_STATUS_LEN or reply[0] > 6 or reply[1] > 10:
            raise DevErr(WIA_ERROR_DEVICE_COMMUNICATION)
        self.bands_ready = struct.unpack_from("<I", reply, 8)[0]
        return reply[0], reply[1]  # state, error

    def reset(self):
        status = self.r.control_out(REQ_DEVICE_RESET, b"", self.interface)
        if status != "ok":
            raise DevErr(transfer_error(status))

    def wait_ready(self):
        """Polls Get Device Status until OK, clearing halts; resets a device that stays busy."""
        deadline = self.r.now() + CANCEL_BUDGET_US
        reset_sent = False
        while True:
            code, halted = self.device_status()
            if code == STATUS_OK:
                return
            if code == STATUS_TRANSACTION_CANCELLED:
                for ep in (halted or [EP_DATA_IN, EP_DATA_OUT]):
                    status = self.r.clear_halt(ep)
                    if status != "ok":
                        raise DevErr(transfer_error(status))
            elif code != STATUS_BUSY:
                raise DevErr(WIA_ERROR_DEVICE_COMMUNICATION)
            if self.r.now() >= deadline:
                if reset_sent:
                    raise DevErr(WIA_ERROR_DEVICE_COMMUNICATION)
                self.reset()
                reset_sent = True
            self.r.sleep(STATUS_POLL_US)

    def prepare(self):
        """The device ready, and idle (a job some earlier session left running is reset)."""
        self.wait_ready()
        state, _ = self.scan_status()
        if state != IDLE:
            self.reset()
            self.wait_ready()

    def set_params(self, job):
        """SET_PARAMS then GET_PARAMS: (bytes per line, lines per page, band bytes)."""
        params = struct.pack("<HBBIIIIH2x", job["resolution_dpi"], MODES[job["mode"]],
                             1 if job["source"] == "adf" else 0, job["x_px"], job["y_px"],
                             job["width_px"], job["height_px"], job["pages"])
        status = self.r.control_out(REQ_SET_PARAMS, params, self.interface)
        if status == "stall":
            raise DevErr(WIA_ERROR_BUSY)
        if status != "ok":
            raise DevErr(transfer_error(status))
        status, report = self.r.control_in(REQ_GET_PARAMS, PARAMS_REPORT_LEN, self.interface)
        if status != "ok":
            raise DevErr(transfer_error(status))
        if len(report) < PARAMS_REPORT_LEN or report[2] > 4 or report[3] > 1:
            raise DevErr(WIA_ERROR_DEVICE_COMMUNICATION)
        bytes_per_line, lines_per_page = struct.unpack_from("<II", report, 24)
        return bytes_per_line, lines_per_page, struct.unpack_from("<I", report, 36)[0]

    def start(self):
        status = self.r.control_out(REQ_START_SCAN, b"", self.interface)
        if status == "stall":
            _, error = self.scan_status()
            raise DevErr(WIA_ERROR_PAPER_EMPTY if error == ERR_FEEDER_EMPTY else WIA_ERROR_BUSY)
        if status != "ok":
            raise DevErr(transfer_error(status))

    def read(self, buf, ask, timeout_us):
        """One bulk read of band data into buf: ('data', n), 'nothing', 'aborted', 'stalled',
        'gone' or 'failed'. A read that timed out or was aborted after some bytes counts them
        (the bytes themselves are not sent, as the in-process host returns none)."""
        done = self.r.bulk_in(EP_DATA_IN, ask, timeout_us)
        status, actual = done["status"], done.get("actual", 0)
        if status == "ok":
            data = base64.b64decode(done.get("data", ""))
            buf[:len(data)] = data
            return "data", len(data)
        if status in ("timeout", "cancelled") and actual > 0:
            return "data", actual
        return {"timeout": "nothing", "cancelled": "aborted", "stall": "stalled",
                "no_device": "gone"}.get(status, "failed"), 0

    def device_end(self):
        """Why the device ended the job: its halts cleared, its scan error read."""
        try:
            code, _ = self.device_status()
            if code == STATUS_TRANSACTION_CANCELLED:
                self.wait_ready()
            _, error = self.scan_status()
        except DevErr as e:
            return ("error", e.hr)
        if error in (ERR_CANCEL_BUTTON, ERR_SHORT_BAND):
            return ("cancelled", None)
        return ("error", {ERR_PAPER_JAM: WIA_ERROR_PAPER_JAM,
                          ERR_COVER_OPEN: WIA_ERROR_COVER_OPEN,
                          ERR_FEEDER_EMPTY: WIA_ERROR_PAPER_EMPTY,
                          ERR_MULTI_FEED: WIA_ERROR_MULTI_FEED}
                .get(error, WIA_ERROR_DEVICE_COMMUNICATION))

    def after_page(self, pages_done, wanted):
        """After an ADF page: 'next', 'done', 'end_of_media' or ('stopped', end)."""
        if wanted > 0 and pages_done >= wanted:
            return "done"
        while True:
            state, error = self.scan_status()
            # Draining with bands still buffered: the next page is waiting already (a host
            # that fell a page behind the device, on the wall clock).
            if state != DRAINING or self.bands_ready > 0:
                break
            self.r.sleep(STATUS_POLL_US)
        if state == IDLE and error in (ERR_FEEDER_EMPTY, ERR_NONE):
            return "done" if wanted == 0 else "end_of_media"
        if state in (IDLE, HALTED):
            return ("stopped", self.device_end())
        return "next"

    def cancel(self):
        """Cancel Request, status polled until OK, and a reset if the device kept scanning."""
        status = self.r.control_out(REQ_CANCEL, struct.pack("<H4x", CANCEL_CODE),
                                    self.interface)
        if status != "ok":
            raise DevErr(transfer_error(status))
        self.wait_ready()
        state, _ = self.scan_status()
        if state != IDLE:
            self.reset()
            self.wait_ready()

    def write_out(self, data):
        status = self.r.bulk_out(EP_DATA_OUT, data, CONTROL_TIMEOUT_US)
        if status != "ok":
            raise DevErr(transfer_error(status))


class Out:
    """The stream being written."""

    def __init__(self, stream, base, data_total):
        self.stream = stream
        self.base = base  # where the driver's data starts (the stream's size when given)
        self.written = 0  # bytes written so far, header included
        self.data = 0  # image bytes written so far
        self.data_total = data_total  # image bytes the stream will hold


class Driver:
    def __init__(self):
        self.runner = Runner(self)
        self.cancel_io = False
        self.current = None
        self.job = False
        self.dev = None
        self.last_hr = S_OK

    # ---- drvNotifyPnPEvent ----

    def notify_pnp_event(self, event):
        if event == "cancel_io":
            self.cancel_io = True
            r = self.runner
            r.send({"type": "abort_endpoint", "ep": EP_DATA_IN, "id": r.next_id})
            r.next_id += 1
            r.wait("done")
        self.runner.send({"type": "notify_done"})

    # ---- callbacks and streams ----

    def send(self, msg, percent, transferred, status):
        """SendMessage: what its answer tells the driver (the answer itself in last_hr)."""
        self.last_hr = self.runner.send_message(msg, percent, transferred, status)
        return answer(self.last_hr)

    def release_current(self):
        out, self.current = self.current, None
        if out is not None:
            self.runner.release(out.stream)

    def next_stream(self, item):
        """GetNextStream: a stream, None for a skipped item, or a Stop."""
        hr, stream = self.runner.get_next_stream(item["name"], item["full_name"])
        a = answer(hr)
        if a == "go" and stream is not None:
            return stream
        if a == "go":
            raise Stop("failed", E_POINTER)
        if a == "cancel":
            raise Stop("cancelled")
        if a == "skip":
            return None
        raise Stop("failed", hr)

    def open(self, stream, data_total):
        hr, end = self.runner.seek(stream, 0, SEEK_END)
        if failed(hr):
            self.runner.release(stream)
            raise Stop("failed", hr)
        self.current = Out(stream, end, data_total)

    def write(self, data, seek):
        """Writes at the driver's own position (seeking there first unless told not to)."""
        out = self.current
        if out is None:
            return
        if seek:
            hr, _ = self.runner.seek(out.stream, out.base + out.written, SEEK_SET)
            if failed(hr):
                raise Stop("failed", hr)
        hr, actual = self.runner.write(out.stream, data)
        out.written += actual
        if failed(hr):
            raise Stop("failed", hr)

    def status(self, n):
        """STATUS after n more image bytes were written."""
        out = self.current
        if out is None:
            return "go"
        out.data += n
        percent = min(out.data * 100 // out.data_total if out.data_total else 0, 100)
        return self.send(MSG_STATUS, percent, out.written, S_OK)

    def read_chunk(self, buf, ask, quiet):
        """The next chunk of band data into buf: its length, or None when the application
        skipped the item while the driver waited (STATUS is reported then unless quiet)."""
        dev = self.dev
        while True:
            if self.cancel_io:
                raise Stop("cancelled")
            what, n = dev.read(buf, ask, READ_SLICE_US)
            if what == "data":
                return n
            if what == "nothing":
                if not quiet:
                    a = self.status(0)
                    if a == "cancel":
                        raise Stop("cancelled")
                    if a == "skip":
                        return None
                    if a == "fail":
                        raise Stop("failed", self.last_hr)
                state, error = dev.scan_status()
                if state in (IDLE, HALTED) and error != ERR_NONE:
                    raise Stop("device", end=dev.device_end())
                continue
            if what == "aborted":
                raise Stop("cancelled")
            if what == "stalled":
                raise Stop("device", end=dev.device_end())
            if what == "gone":
                raise device_error(WIA_ERROR_OFFLINE)
            raise device_error(WIA_ERROR_DEVICE_COMMUNICATION)

    # ---- the transfer ----

    def scan_item(self, ctx, item):
        """One item: a flatbed image, one child of a folder, or a feeder job."""
        dev = self.dev
        job = item["job"]
        dev.prepare()
        bytes_per_line, lines_per_page, band_bytes = dev.set_params(job)
        dev.start()
        self.job = True
        state, _ = dev.scan_status()
        if state == WARMING_UP:
            a = self.send(MSG_DEVICE_STATUS, 0, 0, WIA_STATUS_WARMING_UP)
            if a == "cancel":
                raise Stop("cancelled")
            if a == "fail":
                raise Stop("failed", self.last_hr)
        adf = job["source"] == "adf"
        wanted = job["pages"] if adf else 1
        multipage = ctx["tymed"] == TYMED_MULTIPAGE_FILE
        page_bytes = bytes_per_line * lines_per_page
        band_bytes = max(band_bytes, 1)
        header = page_header(job)
        data_total = page_bytes * wanted if multipage and wanted > 0 else page_bytes
        buf = bytearray(band_bytes + READ_SLACK)
        skip_item = False
        pages_done = 0
        end_of_media = False
        while True:
            skip_page = skip_item
            if not skip_item:
                if pages_done == 0 or not multipage:
                    stream = self.next_stream(item)
                    if stream is not None:
                        self.open(stream, data_total)
                    else:
                        skip_page = True
                        skip_item = multipage or not adf
                else:
                    out = self.current
                    percent, transferred = (0, 0) if out is None else (
                        min(out.data * 100 // out.data_total if out.data_total else 0, 100),
                        out.written)
                    a = self.send(MSG_NEW_PAGE, percent, transferred, S_OK)
                    if a == "cancel":
                        raise Stop("cancelled")
                    if a == "skip":
                        self.release_current()
                        skip_page = skip_item = True
                    if a == "fail":
                        raise Stop("failed", self.last_hr)
            if not skip_page:
                if not (multipage and pages_done > 0 and wanted > 0) and self.current:
                    if not multipage or wanted == 0:
                        self.current.data = 0
                self.write(header, pages_done > 0)
            offset = 0
            while offset < page_bytes:
                band_left = band_bytes - offset % band_bytes
                want = min(page_bytes - offset, band_left)
                # Every read ends a band: one packet more lets its short packet or ZLP end it.
                n = self.read_chunk(buf, want + READ_SLACK, skip_page)
                if n is None:
                    self.release_current()
                    skip_page = True
                    skip_item = skip_item or multipage or not adf
                    continue
                if n < want:
                    # A device-initiated cancel by short data.
                    raise Stop("device", end=dev.device_end())
                offset += n
                if skip_page:
                    continue
                self.write(bytes(buf[:n]), True)
                if self.cancel_io:
                    raise Stop("cancelled")
                a = self.status(n)
                if a == "cancel":
                    raise Stop("cancelled")
                if a == "skip":
                    self.release_current()
                    skip_page = True
                    skip_item = skip_item or multipage or not adf
                if a == "fail":
                    raise Stop("failed", self.last_hr)
            skipped_last = skip_page
            pages_done += 1
            if not multipage:
                self.release_current()
            if not adf:
                break
            after = dev.after_page(pages_done, wanted)
            if after == "done":
                break
            if after == "end_of_media":
                end_of_media = True
                break
            if after != "next":
                raise Stop("device", end=after[1])
        # Every page was read: the device has nothing left of this job.
        self.job = False
        self.release_current()
        if end_of_media:
            return "end_of_media"
        return "skipped" if skipped_last else "done"

    def download(self, ctx):
        items = ctx["children"] if ctx["flags"] & ACQUIRE_CHILDREN else [ctx["item"]]
        end_of_media = False
        for item in items:
            end_of_media |= self.scan_item(ctx, item) == "end_of_media"
        return WIA_STATUS_END_OF_MEDIA if end_of_media else S_OK

    def upload(self, ctx):
        self.dev.wait_ready()
        item = ctx["item"]
        hr, stream = self.runner.get_next_stream(item["name"], item["full_name"])
        a = answer(hr)
        if a == "go" and stream is None:
            raise Stop("failed", E_POINTER)
        if a == "cancel":
            raise Stop("cancelled")
        if a == "skip":
            return S_OK
        if a == "fail":
            raise Stop("failed", hr)
        try:
            result = self.upload_from(stream)
        except (Stop, DevErr):
            self.runner.release(stream)
            raise
        self.runner.release(stream)
        return result

    def upload_from(self, stream):
        r = self.runner
        hr, size = r.stat(stream)
        if failed(hr):
            raise Stop("failed", hr)
        hr, _ = r.seek(stream, 0, SEEK_SET)
        if failed(hr):
            raise Stop("failed", hr)
        sent = 0
        while True:
            if self.cancel_io:
                raise Stop("cancelled")
            hr, data = r.read_stream(stream, UPLOAD_CHUNK)
            if failed(hr):
                raise Stop("failed", hr)
            if not data:
                break
            self.dev.write_out(data)
            sent += len(data)
            percent = 0 if size == 0 else min(sent * 100 // size, 100)
            a = self.send(MSG_STATUS, percent, sent, S_OK)
            if a == "cancel":
                raise Stop("cancelled")
            if a == "skip":
                return S_OK
            if a == "fail":
                raise Stop("failed", self.last_hr)
        return S_OK

    def finish(self, stop):
        """Ends a transfer that stopped early: the stream released, the device stopped, the
        HRESULT to return."""
        dev = self.dev
        self.release_current()
        if stop.kind == "cancelled":
            if self.job:
                try:
                    dev.cancel()
                except DevErr as e:
                    return e.hr
            return S_FALSE
        if stop.kind == "failed":
            if self.job:
                try:
                    dev.cancel()
                except DevErr:
                    pass
            return stop.hr
        kind, hr = stop.end
        if kind == "cancelled":
            try:
                dev.wait_ready()
            except DevErr as e:
                return e.hr
            return S_FALSE
        back = self.runner.send_message(MSG_DEVICE_STATUS, 0, 0, hr)
        # A job the failure left running is stopped; a device that stopped by itself or left
        # the bus has nothing to cancel.
        if hr != WIA_ERROR_OFFLINE:
            try:
                state, _ = dev.scan_status()
                running = state != IDLE
            except DevErr:
                running = False
            if running:
                try:
                    dev.cancel()
                except DevErr:
                    pass
        if back == S_FALSE:
            return S_FALSE
        return back if failed(back) else hr

    def acquire_item_data(self, ctx):
        self.cancel_io = False
        self.job = False
        self.dev = Scanner(self.runner, ctx["interface"])
        try:
            try:
                return self.download(ctx) if ctx["flags"] & DOWNLOAD else self.upload(ctx)
            except DevErr as e:
                raise device_error(e.hr)
        except Stop as stop:
            return self.finish(stop)

    def serve(self):
        r = self.runner
        hello = r.read()
        if hello.get("type") != "hello" or CONTRACT not in hello.get("contracts", []):
            sys.stderr.write("the runner does not offer the wia2 contract: %r\n" % (hello,))
            return 2
        r.send({"type": "hello", "protocol": PROTOCOL, "contract": CONTRACT,
                "name": "reference_wia2.py", "version": "1.0",
                "capabilities": {"acquire_children": True}})
        while True:
            try:
                msg = r.wait("acquire_item_data")
            except EOFError:
                return 0
            r.send({"type": "result", "hr": self.acquire_item_data(msg)})


def main():
    return Driver().serve()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (EOFError, BrokenPipeError):
        sys.exit(0)
