#!/usr/bin/env python3
"""An unmodified pyusb program (Debian's python3-usb) that scans from the emulated scanner.

It finds the device by its native interface (class 0xff, subclass 0x53, protocol 1), reads the
descriptors and strings, runs a full scan through the native protocol (emulator/PROTOCOL.md) and
checks every byte against the test pattern, then starts a second scan, cancels it after one band
and checks that the device is back to idle. Exit 0 when every check passes.

Run: LD_LIBRARY_PATH=<dir with the shim's libusb-1.0.so.0> SCANLAB_USBIP=HOST:PORT python3 pyusb_scan.py
"""
import struct
import sys

import usb.backend.libusb1
import usb.core
import usb.util

failures = 0


def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures += 1


def pattern(bpl, lines, page=0):
    out = bytearray()
    for line in range(lines):
        row = bytearray(struct.pack(">2sHI", b"SL", page, line))
        row += bytes((line * 7 + page * 131 + i * 13) % 251 for i in range(8, bpl))
        out += row[:bpl]
    return bytes(out)


def main():
    backend = usb.backend.libusb1.get_backend()
    check(backend is not None, "libusb1 backend loaded")
    dev = usb.core.find(backend=backend, custom_match=lambda d: any(
        i.bInterfaceClass == 0xFF and i.bInterfaceSubClass == 0x53 and i.bInterfaceProtocol == 1
        for c in d for i in c))
    check(dev is not None, "native scanner found")
    if dev is None:
        return 1
    check(dev.idVendor == 0x5CA1, "vendor 0x%04x product 0x%04x" % (dev.idVendor, dev.idProduct))
    cfg = dev.get_active_configuration()
    check(cfg.bConfigurationValue == 1, "active configuration 1")
    intf = cfg[(0, 0)]
    eps = {e.bEndpointAddress: e for e in intf}
    check(set(eps) == {0x81, 0x02, 0x83}, "endpoints %s" % sorted(hex(a) for a in eps))
    mps = eps[0x81].wMaxPacketSize
    product = usb.util.get_string(dev, dev.iProduct)
    check(bool(product), "product string %r" % product)
    usb.util.claim_interface(dev, 0)

    caps = dev.ctrl_transfer(0xC1, 0x01, 0, 0, 32)
    check(struct.unpack_from("<H", caps)[0] == 0x0100, "GET_CAPABILITIES version 1.00")
    params = struct.pack("<HBBIIIIHH", 100, 1, 0, 0, 0, 200, 100, 1, 0)
    check(dev.ctrl_transfer(0x41, 0x02, 0, 0, params) == 24, "SET_PARAMS 100 dpi gray8 200x100")
    rep = dev.ctrl_transfer(0xC1, 0x03, 0, 0, 40)
    bpl, lines, _band_lines, _bands, band_bytes = struct.unpack_from("<IIHHI", rep, 24)
    check((bpl, lines, band_bytes) == (200, 100, 3200), "bpl %d lines %d band %d" % (bpl, lines, band_bytes))
    dev.ctrl_transfer(0x41, 0x04, 0, 0, None)
    length = (band_bytes // mps + 1) * mps
    page = bytearray()
    while len(page) < bpl * lines:
        page += dev.read(0x81, length, timeout=3000)
    check(bytes(page) == pattern(bpl, lines), "full scan: %d bytes equal the pattern" % len(page))
    status = dev.ctrl_transfer(0xC1, 0x05, 0, 0, 28)
    check(status[0] == 0 and status[1] == 0, "idle after the scan (state %d error %d)" % (status[0], status[1]))

    dev.ctrl_transfer(0x41, 0x04, 0, 0, None)
    first = dev.read(0x81, length, timeout=3000)
    check(bytes(first) == pattern(bpl, lines)[:band_bytes], "second scan: first band equals the pattern")
    dev.ctrl_transfer(0x21, 0x64, 0, 0, struct.pack("<HI", 0x4001, 9))
    for _ in range(2000):
        st = dev.ctrl_transfer(0xC1, 0x67, 0, 0, 8)
        if struct.unpack_from("<H", st, 2)[0] != 0x2019:
            break
    check(struct.unpack_from("<H", st, 2)[0] == 0x2001, "GET_DEVICE_STATUS OK after the cancel")
    status = dev.ctrl_transfer(0xC1, 0x05, 0, 0, 28)
    check(status[0] == 0 and status[1] == 1, "idle, error host-cancel (state %d error %d)" % (status[0], status[1]))
    try:
        dev.read(0x81, length, timeout=100)
        check(False, "no byte of the cancelled job")
    except usb.core.USBTimeoutError:
        check(True, "no byte of the cancelled job (read times out)")
    usb.util.release_interface(dev, 0)
    usb.util.dispose_resources(dev)
    print("%s: %d failure(s)" % ("FAILED" if failures else "PASSED", failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
