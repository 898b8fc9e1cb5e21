//! The library under failure: no emulator, an emulator killed while a read is pending, and a
//! hostile or silent server. The program always gets an error code (NO_DEVICE, TIMEOUT) within
//! its timeout, never a hang or a crash.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scanemu::usbip::protocol::{
    encode_devlist, read_busid, Command as UrbCommand, DeviceRecord, ExportedDevice,
    InterfaceRecord, Limits, OpHeader, RetSubmit, OP_REP_IMPORT, OP_REQ_DEVLIST, OP_REQ_IMPORT,
    USBIP_RET_SUBMIT,
};

#[test]
fn no_emulator_means_zero_devices_not_an_error() {
    let Some(probe) = common::compile_c("probe") else {
        return;
    };
    let lib = common::shim_dir("absent");
    // A port nobody listens on: connection refused at once.
    let free = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr").to_string();
    drop(free);
    let mut cmd = Command::new(&probe);
    cmd.arg("absent");
    let r = common::run(cmd, &lib, &addr, Duration::from_secs(30));
    r.assert_success("probe absent");
    assert_eq!(r.value("init"), Some("0"));
    assert_eq!(r.value("devices"), Some("0"));
    assert_eq!(r.value("open_vid_pid"), Some("null"));
}

#[test]
fn emulator_killed_mid_transfer_is_no_device() {
    let Some(probe) = common::compile_c("probe") else {
        return;
    };
    let server = common::serve(Vec::new());
    let lib = common::shim_dir("killed");
    let mut child = Command::new(&probe)
        .args(["read", "5000"])
        .env("LD_LIBRARY_PATH", &lib)
        .env("SCANLAB_USBIP", server.local_addr().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("probe starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).expect("read") > 0 {
        seen.push_str(&line);
        if line.trim() == "ready" {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("ready"), "probe did not get ready:\n{seen}");
    // The read (5 s timeout, no scan running) is pending now; kill the emulator.
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    server.shutdown();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read rest");
    let status = child.wait().expect("wait");
    assert!(status.success(), "probe failed:\n{seen}{rest}");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
    assert!(rest.contains("bulk LIBUSB_ERROR_NO_DEVICE"), "{seen}{rest}");
    assert!(
        rest.contains("control LIBUSB_ERROR_NO_DEVICE"),
        "{seen}{rest}"
    );
}

/// What the fake server does with the first URB that is not a descriptor request.
#[derive(Clone, Copy)]
enum Hostility {
    /// 48 bytes that are no USB/IP reply.
    Garbage,
    /// A RET_SUBMIT for that URB claiming 16 MiB of data for a 4 KiB read.
    OversizedReply,
    /// Nothing, ever (not even to CMD_UNLINK); the connection stays open.
    Silence,
}

fn descriptors() -> (Vec<u8>, Vec<u8>) {
    let device = vec![
        18, 1, 0x00, 0x02, 0, 0, 0, 64, 0xa1, 0x5c, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 1,
    ];
    let mut config = vec![9, 2, 0, 0, 1, 1, 0, 0x80, 50];
    config.extend([9, 4, 0, 0, 3, 0xff, 0x53, 1, 0]);
    config.extend([7, 5, 0x81, 2, 0, 2, 0]);
    config.extend([7, 5, 0x02, 2, 0, 2, 0]);
    config.extend([7, 5, 0x83, 3, 16, 0, 4]);
    let total = config.len() as u16;
    config[2..4].copy_from_slice(&total.to_le_bytes());
    (device, config)
}

fn export() -> ExportedDevice {
    ExportedDevice {
        record: DeviceRecord {
            path: "/sys/devices/fake/usb1/1-1".into(),
            busid: "1-1".into(),
            busnum: 1,
            devnum: 2,
            speed: 3,
            id_vendor: 0x5ca1,
            id_product: 0x0001,
            bcd_device: 0x0100,
            device_class: 0,
            device_subclass: 0,
            device_protocol: 0,
            configuration_value: 1,
            num_configurations: 1,
            num_interfaces: 1,
        },
        interfaces: vec![InterfaceRecord {
            class: 0xff,
            subclass: 0x53,
            protocol: 1,
        }],
    }
}

fn fake_session(mut s: TcpStream, how: Hostility) -> std::io::Result<()> {
    let h = OpHeader::read(&mut s).map_err(std::io::Error::other)?;
    let dev = export();
    if h.code == OP_REQ_DEVLIST {
        let bytes = encode_devlist(&[dev]).map_err(std::io::Error::other)?;
        return s.write_all(&bytes);
    }
    if h.code != OP_REQ_IMPORT {
        return Ok(());
    }
    read_busid(&mut s).map_err(std::io::Error::other)?;
    s.write_all(&OpHeader::new(OP_REP_IMPORT, 0).encode())?;
    s.write_all(&dev.record.encode().map_err(std::io::Error::other)?)?;
    let (device, config) = descriptors();
    loop {
        let cmd = match UrbCommand::read(&mut s, &Limits::default()) {
            Ok(UrbCommand::Submit(c)) => c,
            Ok(UrbCommand::Unlink(_)) => continue,
            Err(_) => return Ok(()),
        };
        let setup = cmd.setup;
        if cmd.ep == 0 && setup[0] == 0x80 && setup[1] == 6 {
            let blob = if setup[3] == 1 { &device } else { &config };
            let want = usize::from(u16::from_le_bytes([setup[6], setup[7]]));
            let data = blob[..want.min(blob.len())].to_vec();
            RetSubmit {
                seqnum: cmd.seqnum,
                status: 0,
                actual_length: data.len() as u32,
                data,
            }
            .write(&mut s)?;
            continue;
        }
        match how {
            Hostility::Garbage => s.write_all(&[0xee; 48])?,
            Hostility::OversizedReply => {
                let mut b = [0u8; 48];
                b[0..4].copy_from_slice(&USBIP_RET_SUBMIT.to_be_bytes());
                b[4..8].copy_from_slice(&cmd.seqnum.to_be_bytes());
                b[24..28].copy_from_slice(&(16u32 << 20).to_be_bytes());
                s.write_all(&b)?;
            }
            Hostility::Silence => {}
        }
    }
}

fn fake_server(how: Hostility) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || fake_session(s, how));
        }
    });
    addr
}

fn hostile(how: Hostility, tag: &str) -> Option<common::Ran> {
    let probe = common::compile_c("probe")?;
    let addr = fake_server(how);
    let lib = common::shim_dir(tag);
    let mut cmd = Command::new(&probe);
    cmd.args(["read", "300"]);
    let r = common::run(cmd, &lib, &addr.to_string(), Duration::from_secs(20));
    r.assert_success("probe read");
    assert_eq!(r.value("open"), Some("0"), "{}", r.stdout);
    Some(r)
}

#[test]
fn garbage_from_the_server_is_no_device() {
    let Some(r) = hostile(Hostility::Garbage, "garbage") else {
        return;
    };
    assert_eq!(
        r.value("bulk"),
        Some("LIBUSB_ERROR_NO_DEVICE"),
        "{}",
        r.stdout
    );
    assert_eq!(r.value("transferred"), Some("0"));
    assert_eq!(r.value("control"), Some("LIBUSB_ERROR_NO_DEVICE"));
}

#[test]
fn a_reply_longer_than_the_read_is_no_device() {
    let Some(r) = hostile(Hostility::OversizedReply, "oversized") else {
        return;
    };
    assert_eq!(
        r.value("bulk"),
        Some("LIBUSB_ERROR_NO_DEVICE"),
        "{}",
        r.stdout
    );
    assert_eq!(r.value("control"), Some("LIBUSB_ERROR_NO_DEVICE"));
}

#[test]
fn a_silent_server_times_out_within_the_unlink_grace() {
    let Some(r) = hostile(Hostility::Silence, "silent") else {
        return;
    };
    assert_eq!(
        r.value("bulk"),
        Some("LIBUSB_ERROR_TIMEOUT"),
        "{}",
        r.stdout
    );
    assert_eq!(r.value("transferred"), Some("0"));
    let ms: u64 = r
        .value("elapsed_ms")
        .and_then(|v| v.parse().ok())
        .expect("elapsed");
    // 300 ms timeout + 500 ms waiting for the unlink answer that never comes.
    assert!((300..2000).contains(&ms), "bulk read took {ms} ms");
    assert_eq!(r.value("control"), Some("LIBUSB_ERROR_TIMEOUT"));
}
