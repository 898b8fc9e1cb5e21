//! `--transport libusb`: the driver's host is scanemu's rusb host, and its libusb is the
//! scanlab stand-in (`emulator/libusb-shim`), which reaches the run's USB/IP server.
//!
//! rusb links `libusb-1.0.so.0` when the process starts, so the stand-in has to be what the
//! dynamic loader finds by then. `scanconform` executes `scanconform-libusb` (the program built
//! with this module) that way, and [`ensure_stand_in`] makes sure of it in there: if the loaded
//! libusb is not the stand-in, it re-executes the program once with
//! `LD_LIBRARY_PATH` leading to a folder whose `libusb-1.0.so.0` is a link to the stand-in
//! built next to the executable (`target/<profile>/libscanlab_libusb.so`), and with
//! [`STAND_IN_ENV`] set so that a second miss is an error instead of a loop.
//! [`check_stand_in_loaded`] proves from `/proc/self/maps` that the stand-in, and no other
//! libusb, is mapped; a run refuses to start otherwise, so a run never reaches a real scanner
//! on the machine by accident. The lookup, link and re-execution live in [`crate::libusb::stand_in`],
//! shared with `sane:epson2`.
//!
//! The stand-in reads the server's address from `SCANLAB_USBIP` when a libusb context is
//! created, and [`open_host`] creates one per run, so each run's server (a fresh
//! `127.0.0.1:<port>`) is set just before the context is.

use scanemu::host::rusb::{DeviceSelector, RusbError, RusbHost};
use scanemu::sim::Sim;
use scanemu::usbip::UsbIpServer;

use crate::libusb::stand_in::StandInError;
pub use crate::libusb::stand_in::STAND_IN_ENV;

/// How this module's errors begin.
const WHO: &str = "--transport libusb";

/// `Ok` when the libusb this process uses is the scanlab stand-in and no other; otherwise why
/// not, naming the library that was loaded instead.
pub fn check_stand_in_loaded() -> Result<(), StandInError> {
    crate::libusb::stand_in::check(WHO)
}

/// Returns when this process runs on the stand-in. Otherwise re-executes the running program
/// (same arguments) with the stand-in first on `LD_LIBRARY_PATH` and does not return, or
/// returns why it cannot (stand-in not built, already re-executed once and still not on it,
/// exec failed).
pub fn ensure_stand_in() -> Result<(), StandInError> {
    if check_stand_in_loaded().is_ok() {
        return Ok(());
    }
    crate::libusb::stand_in::reexec(WHO)
}

/// The device could not be opened through libusb; `Display` is `libusb: <why>`.
#[derive(Debug, thiserror::Error)]
#[error("libusb: {0}")]
pub struct OpenError(#[from] pub RusbError);

/// Opens the device `server` exports through libusb (the stand-in, pointed at `server`) as a
/// [`RusbHost`] on `sim`'s clock.
pub fn open_host(server: &UsbIpServer, sim: &Sim) -> Result<RusbHost, OpenError> {
    // The stand-in reads the address when the context is created, which RusbHost::open does.
    // Runs happen one after another on this thread, and nothing else in the process reads the
    // environment meanwhile.
    std::env::set_var(
        crate::libusb::stand_in::SERVER_ENV,
        server.local_addr().to_string(),
    );
    let record = &server.exported().record;
    RusbHost::open(
        sim,
        DeviceSelector::VidPid(record.id_vendor, record.id_product),
    )
    .map_err(OpenError)
}
