//! What the device speaks: the USB functions (personalities) that sit on the scan engine.
//!
//! [`native`] is the project's own protocol (`emulator/PROTOCOL.md`); [`esci`] is Epson's ESC/I
//! (`emulator/PROTOCOL-ESCI.md`), which Debian's epson2 backend drives unmodified.

pub mod esci;
pub mod native;
