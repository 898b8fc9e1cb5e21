//! umockdev interop: replaying a recorded emulator session into an unmodified libusb program.
//!
//! umockdev (`umockdev-run`) fakes `/sys` and `/dev` for the program it starts (LD_PRELOAD), so
//! libusb finds a USB device that does not exist, and its `--pcap` option answers that
//! device's URBs from a usbmon capture, "pure in-order": each URB the program submits must
//! match the next submission of the capture (same transfer type, endpoint, length, SETUP
//! packet and OUT data), and gets the recorded completion back. Two pieces make that work:
//!
//! - [`describe`] writes the device's `.umockdev` description (the sysfs attributes of a
//!   `usb_device`, with the raw `descriptors` binary attribute libusb parses, and its udev
//!   properties), in the format `umockdev-record` writes;
//! - [`scripted_scan`] is one scan whose request sequence depends only on the device's answers,
//!   never on timing (the reference driver's for `replay/complete-gray8`). Run on the in-process host with a [`PcapObserver`](crate::capture::pcap::PcapObserver)
//!   it records the capture; run by a libusb program (`rusb-scan`) under
//!   `umockdev-run -d DEV.umockdev -p SYSFS_PATH=CAPTURE.pcap` (`-p` names the device by its
//!   sysfs path, [`sysfs_path`]), it makes exactly the same requests and so replays the scan.
//!
//! `scanemu capture --out DIR` does the recording side and writes both files.
//! [`describe_recording`] describes the device of any recording at the bus and address its
//! `capture.pcap` names; `scanemu import-pcap` writes it beside an imported capture.

use std::fmt::Write as _;

use crate::capture::pcap::CaptureConfig;
use crate::engine::{ScanJob, ScanMode};
use crate::host::{DeviceInfo, Setup, TransferError, UsbHost};
use crate::personality::native::protocol::{
    self, DeviceStatus, ParamsReport, ScanParams, EP_DATA_IN, PARAMS_REPORT_LEN,
};
use crate::time::Duration;
use crate::usb::descriptor::{self, DeviceDescriptor};
use crate::usb::descriptor_type;
use crate::usb::speed::Speed;

/// File name of the device description `scanemu capture` writes.
pub const DESCRIPTION_FILE: &str = "device.umockdev";
/// File name of the capture `scanemu capture` writes.
pub const CAPTURE_FILE: &str = "scan.pcap";

/// Identity strings for the description (libusb reads strings from the device, so they only
/// serve people and udev rules).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Strings {
    /// iManufacturer's string.
    pub manufacturer: String,
    /// iProduct's string.
    pub product: String,
    /// iSerialNumber's string.
    pub serial: String,
}

/// The `/dev/bus/usb/BBB/DDD` node of the device `config` captures.
pub fn device_node(config: &CaptureConfig) -> String {
    format!("/dev/bus/usb/{:03}/{:03}", config.bus, config.device)
}

/// The sysfs path of the device in the description, which `umockdev-run -p` takes.
pub fn sysfs_path(config: &CaptureConfig) -> String {
    format!("/sys{}", device_path(config))
}

fn device_path(config: &CaptureConfig) -> String {
    format!(
        "/devices/pci0000:00/0000:00:14.0/usb{bus}/{bus}-1",
        bus = config.bus
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}

/// The `.umockdev` description of the device `info` describes, at the bus position and speed
/// of `config`. Deterministic: the same inputs give the same text.
pub fn describe(info: &DeviceInfo, config: &CaptureConfig, strings: &Strings) -> String {
    let dd = &info.device_descriptor;
    let cd = &info.config_descriptor;
    let device = DeviceDescriptor::read(dd);
    // The configuration descriptor's header fields, 0 where it is short.
    let byte = |at: usize| cd.get(at).copied().unwrap_or(0);
    let bcd_usb = device.usb_version;
    let bcd_device = device.device_version;
    let descriptors = hex(&[dd.as_slice(), cd.as_slice()].concat());
    let (bus, dev) = (config.bus, config.device);
    let speed = match config.speed {
        Speed::Full => "12",
        Speed::High | Speed::Unlimited => "480",
        Speed::Super => "5000",
    };
    // Interfaces as udev lists them: ":CCSSPP:" per interface descriptor (alternate 0).
    let mut interfaces = String::from(":");
    for d in descriptor::walk(cd) {
        if d.len() >= 8 && d[1] == descriptor_type::INTERFACE && d[3] == 0 {
            let _ = write!(interfaces, "{:02x}{:02x}{:02x}:", d[5], d[6], d[7]);
        }
    }
    let minor = (u32::from(bus).saturating_sub(1)) * 128 + u32::from(dev).saturating_sub(1);
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!("P: {}", device_path(config)));
    line(format!("N: bus/usb/{bus:03}/{dev:03}={descriptors}"));
    line(format!("E: DEVNAME=/dev/bus/usb/{bus:03}/{dev:03}"));
    line("E: DEVTYPE=usb_device".into());
    line("E: DRIVER=usb".into());
    line(format!(
        "E: PRODUCT={:x}/{:x}/{:x}",
        info.vendor_id, info.product_id, bcd_device
    ));
    line(format!(
        "E: TYPE={}/{}/{}",
        device.class, device.subclass, device.protocol
    ));
    line(format!("E: BUSNUM={bus:03}"));
    line(format!("E: DEVNUM={dev:03}"));
    line("E: MAJOR=189".into());
    line(format!("E: MINOR={minor}"));
    line("E: SUBSYSTEM=usb".into());
    line(format!("E: ID_VENDOR_ID={:04x}", info.vendor_id));
    line(format!("E: ID_MODEL_ID={:04x}", info.product_id));
    line(format!("E: ID_REVISION={bcd_device:04x}"));
    line("E: ID_BUS=usb".into());
    line(format!("E: ID_USB_INTERFACES={interfaces}"));
    line("A: authorized=1".into());
    line("A: avoid_reset_quirk=0".into());
    line(format!("A: bConfigurationValue={}", byte(5)));
    line(format!("A: bDeviceClass={:02x}", device.class));
    line(format!("A: bDeviceProtocol={:02x}", device.protocol));
    line(format!("A: bDeviceSubClass={:02x}", device.subclass));
    line(format!("A: bMaxPacketSize0={}", device.max_packet_size_0));
    line(format!("A: bMaxPower={}mA", u32::from(byte(8)) * 2));
    line(format!(
        "A: bNumConfigurations={}",
        device.num_configurations
    ));
    line(format!("A: bNumInterfaces={:>2}", byte(4)));
    line(format!("A: bcdDevice={bcd_device:04x}"));
    line(format!("A: bmAttributes={:02x}", byte(7)));
    line(format!("A: busnum={bus}"));
    line("A: configuration=".into());
    line(format!("H: descriptors={descriptors}"));
    line(format!("A: dev=189:{minor}"));
    line(format!("A: devnum={dev}"));
    line("A: devpath=1".into());
    line(format!("A: idProduct={:04x}", info.product_id));
    line(format!("A: idVendor={:04x}", info.vendor_id));
    line("A: ltm_capable=no".into());
    line(format!("A: manufacturer={}", strings.manufacturer));
    line("A: maxchild=0".into());
    line(format!("A: product={}", strings.product));
    line("A: quirks=0x0".into());
    line("A: removable=removable".into());
    line(format!("A: serial={}", strings.serial));
    line(format!("A: speed={speed}"));
    line(format!(
        "A: version={:>2}.{:02x}",
        bcd_usb >> 8,
        bcd_usb & 0xff
    ));
    s
}

/// The `.umockdev` description of a recording's device, at the bus and address its
/// `capture.pcap` names ([`RecordingMeta::capture_config`](crate::capture::recording::RecordingMeta::capture_config)),
/// with the manufacturer, product and serial strings the recording's GET_DESCRIPTOR replies
/// hold (US English, else the first language). `umockdev-run -d DESCRIPTION -p
/// SYSFS_PATH=capture.pcap` then replays the recording into a libusb program.
pub fn describe_recording(recording: &crate::capture::recording::Recording) -> String {
    use crate::capture::recording::{TxKind, TxResult};
    let info = recording.meta.device_info();
    let device = DeviceDescriptor::read(&info.device_descriptor);
    let string = |index: u8| {
        if index == 0 {
            return String::new();
        }
        let replies = recording.transactions.iter().filter_map(|t| {
            let s = t.setup?;
            (t.kind == TxKind::Control
                && t.result == TxResult::Ok
                && s.request_type == 0x80
                && s.request == crate::usb::Request::GET_DESCRIPTOR
                && s.value == u16::from(descriptor_type::STRING) << 8 | u16::from(index))
            .then(|| (s.index, t.bytes()))
        });
        let mut best: Option<(u16, Vec<u8>)> = None;
        for (lang, bytes) in replies {
            if best
                .as_ref()
                .is_none_or(|(l, _)| *l != 0x0409 && lang == 0x0409)
            {
                best = Some((lang, bytes));
            }
        }
        best.map(|(_, b)| descriptor::decode_string(&b))
            .unwrap_or_default()
    };
    let strings = Strings {
        manufacturer: string(device.manufacturer_index),
        product: string(device.product_index),
        serial: string(device.serial_index),
    };
    describe(&info, &recording.meta.capture_config(), &strings)
}

/// Timeout of every request of [`scripted_scan`]: long enough that none ever times out, since
/// a timeout is a timing decision a replay could not reproduce.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_millis(10_000);

/// The buffer [`scripted_scan`] reads bands into, as a driver's transfer buffer: each bulk
/// read asks for the part of the band that fits in it, plus [`SCRIPT_READ_SLACK`] when the
/// band ends inside the read.
pub const SCRIPT_BUFFER: usize = 2048;

/// What a read asks for beyond the band's end, so that the band's terminating short packet
/// or ZLP ends the transfer (`emulator/PROTOCOL.md`).
pub const SCRIPT_READ_SLACK: usize = 1024;

/// Why [`scripted_scan`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ScriptedScanError {
    /// A transfer failed.
    #[error("{what}: {error}")]
    Transfer {
        /// The request.
        what: &'static str,
        /// How it failed.
        error: TransferError,
    },
    /// The device answered something the protocol does not allow.
    #[error("{0}")]
    Protocol(protocol::DecodeError),
    /// The device was not ready for a scan.
    #[error("the device is not ready (status {0:#06x})")]
    NotReady(u16),
    /// A band came short: the device cut the scan.
    #[error("band data ended after {0} bytes of the page")]
    Short(u64),
}

/// What [`scripted_scan`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedScan {
    /// Get Device Status before the scan.
    pub status: DeviceStatus,
    /// The job asked for ([`scripted_job`]).
    pub job: ScanJob,
    /// GET_PARAMS's answer.
    pub report: ParamsReport,
    /// The image bytes, band after band.
    pub image: Vec<u8>,
}

/// The job [`scripted_scan`] asks for: 128 x 128 px gray 8-bit at 100 dpi, the scan of
/// `fixtures/recordings/scenarios/replay/complete-gray8.json`.
pub fn scripted_job() -> ScanJob {
    ScanJob::flatbed(100, ScanMode::Gray8, 128, 128)
}

fn step(what: &'static str) -> impl FnOnce(TransferError) -> ScriptedScanError {
    move |error| ScriptedScanError::Transfer { what, error }
}

fn decode<T>(r: Result<T, protocol::DecodeError>) -> Result<T, ScriptedScanError> {
    r.map_err(ScriptedScanError::Protocol)
}

/// One scan of [`scripted_job`], request for request as the conformance runner's reference
/// driver makes it for `replay/complete-gray8` (so an import of its capture replays against
/// that driver): Get Device Status, SET_PARAMS, GET_PARAMS, START_SCAN, then the page's bands
/// by bulk reads of at most [`SCRIPT_BUFFER`] bytes, none crossing a band's end. Every
/// request has [`SCRIPT_TIMEOUT`], so none times out and the sequence depends only on the
/// device's answers.
pub async fn scripted_scan(host: &dyn UsbHost) -> Result<ScriptedScan, ScriptedScanError> {
    let t = SCRIPT_TIMEOUT;
    let status = host
        .control_in(
            Setup::vendor_in(protocol::REQ_GET_DEVICE_STATUS, 0, 0, 8),
            t,
        )
        .await
        .map_err(step("GET_DEVICE_STATUS"))?;
    let status = decode(DeviceStatus::decode(&status))?;
    if status.code != protocol::STATUS_OK {
        return Err(ScriptedScanError::NotReady(status.code));
    }
    let job = scripted_job();
    let params = ScanParams { job }.encode();
    host.control_out(
        Setup::vendor_out(protocol::REQ_SET_PARAMS, 0, 0, params.len() as u16),
        &params,
        t,
    )
    .await
    .map_err(step("SET_PARAMS"))?;
    let report = host
        .control_in(
            Setup::vendor_in(protocol::REQ_GET_PARAMS, 0, 0, PARAMS_REPORT_LEN as u16),
            t,
        )
        .await
        .map_err(step("GET_PARAMS"))?;
    let report = decode(ParamsReport::decode(&report))?;
    host.control_out(Setup::vendor_out(protocol::REQ_START_SCAN, 0, 0, 0), &[], t)
        .await
        .map_err(step("START_SCAN"))?;
    let page = u64::from(report.bytes_per_line) * u64::from(report.lines_per_page);
    let band = u64::from(report.band_bytes.max(1));
    let mut image = Vec::new();
    let mut buf = vec![0u8; SCRIPT_BUFFER + SCRIPT_READ_SLACK];
    let mut offset = 0u64;
    while offset < page {
        let band_left = band - offset % band;
        let want = (page - offset).min(band_left).min(SCRIPT_BUFFER as u64) as usize;
        let ask = if want as u64 == band_left {
            want + SCRIPT_READ_SLACK
        } else {
            want
        };
        let n = host
            .bulk_in(EP_DATA_IN, &mut buf[..ask], t)
            .await
            .map_err(step("bulk IN"))?;
        image.extend_from_slice(&buf[..n]);
        offset += n as u64;
        if n < want {
            return Err(ScriptedScanError::Short(offset));
        }
    }
    Ok(ScriptedScan {
        status,
        job,
        report,
        image,
    })
}

/// Why [`record`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file could not be written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The device could not be enumerated.
    #[error("enumeration failed: {0}")]
    Enumeration(TransferError),
    /// The scan failed.
    #[error("scripted scan failed: {0}")]
    Scan(ScriptedScanError),
    /// The scan did not finish.
    #[error("scripted scan failed: {0}")]
    Stalled(crate::sim::SimError),
}

/// What [`record`] wrote.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The `.umockdev` description ([`DESCRIPTION_FILE`] in the output folder).
    pub description: std::path::PathBuf,
    /// The usbmon capture ([`CAPTURE_FILE`]).
    pub capture: std::path::PathBuf,
    /// The device's node (`/dev/bus/usb/001/001`).
    pub device_node: String,
    /// The device's sysfs path, which `umockdev-run -p` takes.
    pub sysfs_path: String,
    /// The scan as the emulator served it.
    pub scan: ScriptedScan,
    /// Records in the capture.
    pub records: u64,
}

/// Records [`scripted_scan`] against a device of `profile` on the in-process host, in virtual
/// time, and writes the capture and the device description into `out_dir` (created if
/// missing). The files are byte-identical on every run.
pub fn record(
    profile: &crate::profile::Profile,
    out_dir: &std::path::Path,
) -> Result<Recording, RecordError> {
    use std::rc::Rc;

    use crate::capture::pcap::{PcapObserver, PcapWriter};

    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |error| RecordError::Io { path, error }
    };
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let capture = out_dir.join(CAPTURE_FILE);
    let description = out_dir.join(DESCRIPTION_FILE);
    let sim = crate::sim::Sim::new();
    let host = crate::host::inproc::InProcessHost::new(
        crate::device::Device::new(profile),
        Rc::new(sim.clone()),
    )
    .map_err(RecordError::Enumeration)?;
    let info = host.device_info();
    let config = CaptureConfig::with_speed(profile.usb.speed);
    let file = std::fs::File::create(&capture).map_err(io(&capture))?;
    let writer = PcapWriter::new(std::io::BufWriter::new(file)).map_err(io(&capture))?;
    let observer = Rc::new(PcapObserver::new(writer, &info, config.clone()));
    let ticker = host.clone();
    sim.spawn(async move { ticker.run_device().await });
    let scanner = crate::host::Observed::new(host, observer.clone());
    let scan = sim
        .block_on(
            async move { scripted_scan(&scanner).await },
            crate::time::Instant::from_millis(600_000),
        )
        .map_err(RecordError::Stalled)?
        .map_err(RecordError::Scan)?;
    let records = observer.records();
    observer.finish().map_err(io(&capture))?;
    let strings = Strings {
        manufacturer: profile.usb.manufacturer.clone(),
        product: profile.usb.product.clone(),
        serial: profile.usb.serial.clone(),
    };
    std::fs::write(&description, describe(&info, &config, &strings)).map_err(io(&description))?;
    Ok(Recording {
        description,
        capture,
        device_node: device_node(&config),
        sysfs_path: sysfs_path(&config),
        scan,
        records,
    })
}
