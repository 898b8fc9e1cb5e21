//! An ordinary rusb program, linked against the system libusb-1.0 (pkg-config, dynamic), that
//! scans from the emulated scanner: descriptors and strings, a full scan through the native
//! protocol (emulator/PROTOCOL.md) with every byte checked against the test pattern, then a scan
//! cancelled after one band with the device back to idle. Prints one line per check; exit
//! status 0 when all pass, 1 otherwise.
//!
//! Against the emulator, with no kernel USB:
//! `LD_LIBRARY_PATH=<dir with the shim's libusb-1.0.so.0> SCANLAB_USBIP=127.0.0.1:3240 rusb_scan`
//! (`tests/rusb.rs` does this and checks with readelf that the binary NEEDs libusb-1.0.so.0).

use std::process::ExitCode;
use std::time::Duration;

use rusb::{DeviceHandle, GlobalContext, UsbContext};

const T: Duration = Duration::from_secs(3);

struct Checks {
    failures: u32,
}

impl Checks {
    fn check(&mut self, ok: bool, what: &str) {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.failures += 1;
        }
    }
}

fn pattern(bpl: usize, lines: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bpl * lines);
    for line in 0..lines {
        let mut row = vec![0x53, 0x4c, 0, 0];
        row.extend_from_slice(&(line as u32).to_be_bytes());
        row.extend((8..bpl).map(|i| ((line * 7 + i * 13) % 251) as u8));
        row.truncate(bpl);
        out.extend_from_slice(&row);
    }
    out
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn ctrl_in(h: &DeviceHandle<GlobalContext>, req: u8, len: usize) -> rusb::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = h.read_control(0xc1, req, 0, 0, &mut buf, T)?;
    buf.truncate(n);
    Ok(buf)
}

fn run(c: &mut Checks) -> rusb::Result<()> {
    let devices = GlobalContext::default().devices()?;
    let found = devices.iter().find(|d| {
        d.active_config_descriptor().is_ok_and(|cfg| {
            cfg.interfaces()
                .flat_map(|i| i.descriptors().collect::<Vec<_>>())
                .any(|a| a.class_code() == 0xff && a.sub_class_code() == 0x53)
        })
    });
    c.check(found.is_some(), "native scanner found");
    let Some(dev) = found else {
        return Ok(());
    };
    let desc = dev.device_descriptor()?;
    c.check(
        desc.vendor_id() == 0x5ca1,
        &format!(
            "vendor {:04x} product {:04x} at bus {} address {}",
            desc.vendor_id(),
            desc.product_id(),
            dev.bus_number(),
            dev.address()
        ),
    );
    let cfg = dev.active_config_descriptor()?;
    let mps = cfg
        .interfaces()
        .flat_map(|i| i.descriptors().collect::<Vec<_>>())
        .flat_map(|a| a.endpoint_descriptors().collect::<Vec<_>>())
        .find(|e| e.address() == 0x81)
        .map_or(0, |e| e.max_packet_size() as usize);
    c.check(mps > 0, &format!("bulk IN 0x81, max packet {mps}"));
    let h = dev.open()?;
    c.check(h.active_configuration()? == 1, "active configuration 1");
    let product = h.read_product_string_ascii(&desc)?;
    c.check(!product.is_empty(), &format!("product string {product:?}"));
    h.claim_interface(0)?;

    let caps = ctrl_in(&h, 0x01, 32)?;
    c.check(le16(&caps, 0) == 0x0100, "GET_CAPABILITIES version 1.00");
    let mut params = [0u8; 24];
    params[0..2].copy_from_slice(&100u16.to_le_bytes());
    params[2] = 1;
    params[12..16].copy_from_slice(&200u32.to_le_bytes());
    params[16..20].copy_from_slice(&100u32.to_le_bytes());
    params[20..22].copy_from_slice(&1u16.to_le_bytes());
    c.check(
        h.write_control(0x41, 0x02, 0, 0, &params, T)? == 24,
        "SET_PARAMS 100 dpi gray8 200x100",
    );
    let rep = ctrl_in(&h, 0x03, 40)?;
    let (bpl, lines, band) = (
        le32(&rep, 24) as usize,
        le32(&rep, 28) as usize,
        le32(&rep, 36) as usize,
    );
    c.check(
        (bpl, lines, band) == (200, 100, 3200),
        &format!("bpl {bpl} lines {lines} band {band}"),
    );
    h.write_control(0x41, 0x04, 0, 0, &[], T)?;
    let len = (band / mps + 1) * mps;
    let mut page = Vec::new();
    let mut buf = vec![0u8; len];
    while page.len() < bpl * lines {
        let n = h.read_bulk(0x81, &mut buf, T)?;
        page.extend_from_slice(&buf[..n]);
    }
    c.check(
        page == pattern(bpl, lines),
        &format!("full scan: {} bytes equal the pattern", page.len()),
    );

    h.write_control(0x41, 0x04, 0, 0, &[], T)?;
    let n = h.read_bulk(0x81, &mut buf, T)?;
    c.check(
        buf[..n] == pattern(bpl, lines)[..band],
        "second scan: first band equals the pattern",
    );
    let mut cancel = vec![0x01, 0x40];
    cancel.extend_from_slice(&7u32.to_le_bytes());
    h.write_control(0x21, 0x64, 0, 0, &cancel, T)?;
    let mut code = 0;
    for _ in 0..2000 {
        code = le16(&ctrl_in(&h, 0x67, 8)?, 2);
        if code != 0x2019 {
            break;
        }
    }
    c.check(code == 0x2001, "GET_DEVICE_STATUS OK after the cancel");
    let st = ctrl_in(&h, 0x05, 28)?;
    c.check(
        st[0] == 0 && st[1] == 1,
        &format!("idle, error host-cancel (state {} error {})", st[0], st[1]),
    );
    let r = h.read_bulk(0x81, &mut buf, Duration::from_millis(100));
    c.check(
        r == Err(rusb::Error::Timeout),
        &format!("no byte of the cancelled job ({r:?})"),
    );
    h.release_interface(0)?;
    Ok(())
}

fn main() -> ExitCode {
    let mut c = Checks { failures: 0 };
    if let Err(e) = run(&mut c) {
        c.check(false, &format!("libusb error: {e}"));
    }
    println!(
        "{}: {} failure(s)",
        if c.failures == 0 { "PASSED" } else { "FAILED" },
        c.failures
    );
    if c.failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
