#!/usr/bin/env python3
"""The reference WIA minidriver with read-ahead, over protocol version 2 (Python 3, stdlib only).

It keeps READ_AHEAD bulk reads queued on the data endpoint, the way real drivers keep several
URBs on the bulk pipe, so the next band's read is already waiting when the device sends it.
Written from emulator/PROTOCOL.md and conformance/DRIVER-PROTOCOL.md ("Version 2"):

- every read of a page is planned up front (the same read sizes as reference_driver.py) and
  submitted READ_AHEAD at a time with `submit`; `wait` hands back their completions in order;
- a timer (`submit` of a `sleep`) replaces the reference driver's read timeout: when no data
  came for READ_SLICE_US, the driver reports status to the application and checks the scanner;
- on any stop (the application's S_FALSE, WIA_EVENT_CANCEL_IO, a stall, a short band) it cancels
  what it submitted (`cancel`) and collects every completion before it talks to the scanner
  again, so nothing is left pending when drvAcquireItemData returns.

Control transfers stay blocking requests. Its verdicts equal reference_driver.py's on the whole
catalog; its traces differ (reads are submitted earlier, timers are not USB transfers).

    scanconform run --driver exec:'python3 conformance/examples/readahead_driver.py'
"""

import base64
import os
import struct
import sys
from collections import deque

sys.dont_write_bytecode = True  # keep the examples folder free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference_driver as ref  # noqa: E402  (found through the path set above)
from reference_driver import (  # noqa: E402
    DRAINING, EP_DATA_IN, ERR_FEEDER_EMPTY, ERR_NONE, HALTED, IDLE, IT_MSG_DATA, IT_MSG_NEW_PAGE,
    IT_MSG_STATUS, MODES, PARAMS_REPORT_LEN, READ_SLACK, READ_SLICE_US, REQ_GET_PARAMS,
    REQ_SET_PARAMS, REQ_START_SCAN, S_OK, STATUS_POLL_US, WIA_ERROR_BUSY,
    WIA_ERROR_DEVICE_COMMUNICATION, WIA_ERROR_OFFLINE, WIA_ERROR_PAPER_EMPTY,
    WIA_STATUS_END_OF_MEDIA, Stop, TransferFailed, device_comm, map_transfer_error, stop_for)

PROTOCOL = 2
READ_AHEAD = 3  # bulk reads kept in flight


class AsyncRunner(ref.Runner):
    """The version 2 additions: submit, cancel and wait (blocking requests are inherited)."""

    def submit(self, transfer, **fields):
        """Starts a transfer (or a timer) and keeps the turn; returns its id."""
        msg = {"type": "submit", "transfer": transfer, "id": self.next_id}
        msg.update(fields)
        self.next_id += 1
        self.send(msg)
        return msg["id"]

    def cancel(self, ident):
        """Ends a submitted transfer now; its done still comes (status cancelled)."""
        self.send({"type": "cancel", "id": ident})

    def next_done(self):
        """Gives the turn back until the next completion (notify may come first)."""
        self.send({"type": "wait"})
        return self.wait("done")


class ReadAheadDriver(ref.Driver):
    def __init__(self):
        super().__init__(legacy_xp=False)
        self.runner = AsyncRunner(self)
        self.outstanding = set()  # submitted ids whose done has not come yet
        self.stale = set()  # timers cancelled when data came; their done is ignored
        self.done_bytes = 0
        self.last_percent = 0

    # ---- submitted transfers ----

    def submit_read(self, ask):
        ident = self.runner.submit("bulk_in", ep=EP_DATA_IN, length=ask, timeout_us=0)
        self.outstanding.add(ident)
        return ident

    def start_timer(self):
        ident = self.runner.submit("sleep", duration_us=READ_SLICE_US)
        self.outstanding.add(ident)
        return ident

    def next_done(self):
        """The next completion that is not a cancelled timer's."""
        while True:
            done = self.runner.next_done()
            self.outstanding.discard(done["id"])
            if done["id"] not in self.stale:
                return done
            self.stale.discard(done["id"])

    def abandon(self):
        """Cancels everything submitted and collects every completion."""
        for ident in sorted(self.outstanding):
            self.runner.cancel(ident)
        while self.outstanding:
            self.outstanding.discard(self.runner.next_done()["id"])
        self.stale.clear()

    def halt(self, make_stop):
        """A Stop worked out after the submitted transfers are gone (make_stop polls EP0)."""
        self.abandon()
        return make_stop()

    # ---- the transfer ----

    @staticmethod
    def plan(page_bytes, band_bytes, chunk_max):
        """The reads of one page: (want, ask), as reference_driver.py sizes them."""
        reads, offset = [], 0
        while offset < page_bytes:
            band_left = band_bytes - offset % band_bytes
            want = min(page_bytes - offset, band_left, chunk_max)
            ask = want + READ_SLACK if want == band_left else want
            reads.append((want, ask))
            offset += want
        return reads

    def read_page(self, page_bytes, band_bytes, chunk_max, total_bytes, wanted_pages):
        planned = deque(self.plan(page_bytes, band_bytes, chunk_max))
        queue = deque()  # (id, want) of the reads in flight, oldest first
        offset = 0
        try:
            while planned and len(queue) < READ_AHEAD:
                want, ask = planned.popleft()
                queue.append((self.submit_read(ask), want))
            timer = self.start_timer()
            while queue:
                done = self.next_done()
                if done["id"] == timer:
                    if self.cancel_io:
                        raise Stop("cancelled")
                    hr = self.callback(IT_MSG_STATUS, self.last_percent, 0, b"")
                    if hr != S_OK:
                        raise stop_for(hr)
                    state, error = self.scan_status()
                    if state == IDLE and error != ERR_NONE:
                        raise self.halt(self.device_stop)
                    timer = self.start_timer()
                    continue
                ident, want = queue.popleft()
                if done["id"] != ident:
                    raise RuntimeError("done %d before read %d" % (done["id"], ident))
                status = done["status"]
                if status == "cancelled":
                    raise Stop("cancelled")
                if status == "stall":
                    raise self.halt(self.device_stop)
                if status == "no_device":
                    raise Stop("error", WIA_ERROR_OFFLINE)
                if status != "ok":
                    raise Stop("error", WIA_ERROR_DEVICE_COMMUNICATION)
                data = base64.b64decode(done["data"])
                if len(data) < want:
                    raise self.halt(self.device_stop)
                if self.cancel_io:
                    raise Stop("cancelled")
                self.runner.cancel(timer)
                self.stale.add(timer)
                timer = self.start_timer()
                self.done_bytes += len(data)
                if wanted_pages == 0 or total_bytes == 0:
                    percent = 0
                else:
                    percent = min(self.done_bytes * 100 // total_bytes, 100)
                self.last_percent = max(percent, self.last_percent)
                hr = self.callback(IT_MSG_DATA, percent, offset, data)
                offset += len(data)
                if hr != S_OK:
                    raise stop_for(hr)
                if planned:
                    want, ask = planned.popleft()
                    queue.append((self.submit_read(ask), want))
        finally:
            self.abandon()

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
        self.done_bytes = 0
        self.last_percent = 0
        page = 0
        while True:
            if page > 0:
                hr = self.callback(IT_MSG_NEW_PAGE, self.last_percent, 0, b"")
                if hr != S_OK:
                    raise stop_for(hr)
            self.read_page(page_bytes, max(band_bytes, 1), chunk_max, total_bytes, wanted_pages)
            page += 1
            if not adf or (wanted_pages > 0 and page >= wanted_pages):
                break
            # ADF: is another sheet coming?
            while True:
                state, error = self.scan_status()
                # Draining with bands still buffered: the next page is waiting already.
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

    def serve(self):
        r = self.runner
        hello = r.read()
        if hello.get("type") != "hello" or PROTOCOL not in hello.get("protocols", []):
            sys.stderr.write("the runner does not speak protocol %d: %r\n" % (PROTOCOL, hello))
            return 2
        r.send({"type": "hello", "protocol": PROTOCOL, "name": "readahead.py", "version": "1.0",
                "capabilities": {"async_cancel": True}})
        while True:
            try:
                msg = r.wait("acquire")
            except EOFError:
                return 0
            r.send({"type": "result", "hr": self.acquire_item_data(msg)})


if __name__ == "__main__":
    try:
        sys.exit(ReadAheadDriver().serve())
    except EOFError:
        sys.exit(0)
