//! `scanemu`: a software USB scanner. usb-device firmware on a virtual bus produces timed bands
//! of image data; drivers reach it in-process, over USB/IP, or (the same host API) a real
//! scanner through libusb; every session can be captured, recorded and replayed.
//!
//! # Layers, from the wire up
//!
//! - **Time** ([`time`]): `Instant` and `Duration` in microseconds, values only.
//! - **Scan engine** ([`engine`]): a sans-IO state machine that produces bands on a schedule,
//!   with injected faults; `poll(now)` / `poll_at()`. Its configuration
//!   ([`engine::config`]: optics, feeder, timing) is its own.
//! - **Wire** ([`usb`]): [`usb::bus::SimBus`], a software `usb_device::bus::UsbBus` that answers
//!   tokens like a device controller, and its host end, the `BusPort`; [`usb::hc`], host
//!   controller transfers built from tokens; [`usb::speed`], wire time; [`usb::descriptor`],
//!   the one descriptor parser; [`usb::usbmon`], the capture format and Linux errno values.
//!   Nothing here knows what the device is.
//! - **Personalities** ([`personality`]): what the device speaks, as usb-device classes on the
//!   engine, behind one [`personality::Personality`] trait: the native protocol
//!   (`emulator/PROTOCOL.md`) and Epson's ESC/I (`emulator/PROTOCOL-ESCI.md`). They tell what
//!   they do as typed [`personality::DeviceNote`]s (`emulator/DEVICE-NOTES.md`).
//! - **Profile** ([`profile`]): the JSON file that composes the USB identity, the engine's
//!   configuration, the faults and the personality's settings.
//! - **Device** ([`device`]): one emulated scanner, usb-device's `UsbDevice` with its
//!   personality on a `SimBus`; still sans-IO.
//! - **Hosts** ([`host`]): the `UsbHost` API drivers use (transfers, timeouts, aborts, the
//!   session clock): in-process over the virtual bus, over USB/IP, through libusb (feature
//!   `rusb`); [`host::Observed`] reports any host's transfers to a `HostObserver`.
//! - **USB/IP** ([`usbip`]): the protocol codec and the server that exports a device.
//! - **Captures** ([`capture`]): pcap capture of a host, reading pcap and pcapng captures,
//!   recordings and their import from captures of real devices, their replay as a host and
//!   over USB/IP (a [`usbip::UrbBackend`]), their playback against a host, and the umockdev
//!   description; [`info`] describes a device for a person (`scanemu info`).
//! - **Runtime** ([`sim`]): the one adapter between the async host code and a clock: virtual
//!   time by default (a 40-second scan replays in milliseconds), or the wall clock.
//!
//! Modules depend only downwards, and no two modules import each other:
//!
//! ```text
//! capture, info → host → {device, usbip} → profile → personality → {engine, usb} → time
//!                 host → sim (its Clock) → time
//! ```
//!
//! (`profile` composes the engine's configuration and the personalities' settings; `device`
//! and the USB/IP server build devices from it.)
//!
//! # Time
//!
//! Nothing below [`sim`] reads a clock, sleeps or spawns: the engine, the bus, the personalities,
//! the device, the in-process host and the replay take the current [`time::Instant`] as an
//! argument (or from the `Clock` they were given) and say when they next need to run.
//! [`sim::Sim`] supplies that time, virtual or real. The one other reader of the wall clock is
//! the USB/IP server, which faces the network: it counts device time from an epoch it is given.
//! So the same scenario gives a byte-identical trace and capture on every run.
//!
//! # IN and OUT
//!
//! Directions are the host's, as in the USB specification and usb-device: IN is device to host
//! (endpoint addresses with bit 7 set, `0x81`), OUT is host to device (`0x02`). Endpoint
//! arguments are always addresses, never bare numbers.
//!
//! # Unsafe code
//!
//! The crate denies `unsafe` code except in one module: the rusb host's asynchronous reads
//! (`host::rusb::async_in`, feature `rusb`), which hand buffers to libusb's asynchronous API;
//! each block there carries a `// SAFETY:` line.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod capture;
pub mod device;
pub mod engine;
pub mod host;
pub mod info;
pub mod personality;
pub mod profile;
pub mod sim;
pub mod time;
pub mod usb;
pub mod usbip;
