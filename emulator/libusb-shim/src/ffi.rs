//! The exported C ABI: every function of libusb 1.0.26 (90) and the 7 added in 1.0.27.
//!
//! This is the only module with `unsafe` code: it turns C pointers into references, copies
//! between caller buffers and the library, calls the caller's callbacks, and owns the eventfd.
//! Every entry point runs its body under [`guard`] (`catch_unwind`), so a panic becomes
//! `LIBUSB_ERROR_OTHER` (or NULL / nothing) instead of unwinding into C.
//!
//! Opaque handles: a `libusb_context *` is `Arc::into_raw(Arc<Context>)` (NULL: the default
//! context), a `libusb_device *` is `Arc::into_raw(Arc<Device>)` (libusb's reference count is
//! the `Arc`'s), a `libusb_device_handle *` is `Box::into_raw(Box<Handle>)`. A transfer is
//! allocated as `[TransferPriv][libusb_transfer][iso descriptors]` and the middle pointer is
//! handed out, as libusb does.
//!
//! Functions with no emulated meaning return what libusb returns for an unsupported
//! operation (`LIBUSB_ERROR_NOT_SUPPORTED`, NULL or 0); see the crate README.
#![allow(clippy::missing_safety_doc, non_snake_case)]

use std::alloc::{self, Layout};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::abi::*;
use crate::host::{self, code, Context, Device, Done, Handle, LogHook, Target, Wakeup};
use scanemu::usb::descriptor::{self, max_packet_bytes};
use scanemu::usb::descriptor_type;

type Ctx = Context;
type Dev = Device;

/// Runs `f`, turning a panic into `fallback`.
fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

// ---------------------------------------------------------------------------------------------
// Contexts

/// The default context and how many `libusb_init(NULL)` calls hold it.
static DEFAULT: Mutex<Option<(Arc<Ctx>, usize)>> = Mutex::new(None);
/// The callback of `libusb_set_log_cb(.., LIBUSB_LOG_CB_GLOBAL)`, as an address.
static GLOBAL_LOG_CB: Mutex<Option<usize>> = Mutex::new(None);

type LogCb = unsafe extern "C" fn(*mut Ctx, c_int, *const c_char);

/// A log hook that calls a C `libusb_log_cb` at `cb` for context `ctx`.
fn c_log_hook(cb: usize, ctx: usize) -> LogHook {
    Box::new(move |level, msg| {
        let Ok(text) = std::ffi::CString::new(format!("libusb: [scanlab-libusb] {msg}\n")) else {
            return;
        };
        // SAFETY: `cb` is the non-NULL `libusb_log_cb` the caller registered; libusb's
        // contract is that it stays callable while registered, and the string lives for the call.
        unsafe {
            let f: LogCb = std::mem::transmute::<usize, LogCb>(cb);
            f(ctx as *mut Ctx, level, text.as_ptr());
        }
    })
}

/// The eventfd that `libusb_get_pollfds` hands out: readable while completions are pending.
struct EventFd(RawFd);

impl Wakeup for EventFd {
    fn raise(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd this struct owns.
        unsafe {
            libc::write(self.0, (&one as *const u64).cast(), 8);
        }
    }

    fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd this struct owns.
        unsafe {
            libc::read(self.0, (&mut v as *mut u64).cast(), 8);
        }
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: closes the descriptor this struct owns, once.
        unsafe {
            libc::close(self.0);
        }
    }
}

/// The eventfd of each context, by context address (`libusb_get_pollfds` needs the number).
static EVENT_FDS: Mutex<Vec<(usize, RawFd)>> = Mutex::new(Vec::new());

fn new_context() -> Arc<Ctx> {
    let level = std::env::var("LIBUSB_DEBUG")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .map_or(code::LOG_NONE, |l| l.clamp(code::LOG_NONE, code::LOG_DEBUG));
    let server = host::server_address(std::env::var(host::SERVER_ENV).ok().as_deref());
    let ctx = Arc::new(Context::new(server, level));
    // SAFETY: plain system call; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd >= 0 {
        ctx.events.set_wakeup(Box::new(EventFd(fd)));
        lock(&EVENT_FDS).push((Arc::as_ptr(&ctx) as usize, fd));
    }
    if let Some(cb) = *lock(&GLOBAL_LOG_CB) {
        ctx.set_log_hook(Some(c_log_hook(cb, 0)));
    }
    ctx
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The context a C pointer names (NULL: the default one, if initialised).
fn context(ctx: *mut Ctx) -> Option<Arc<Ctx>> {
    if ctx.is_null() {
        return lock(&DEFAULT).as_ref().map(|(c, _)| c.clone());
    }
    // SAFETY: a non-NULL context pointer came from `Arc::into_raw` in libusb_init and stays
    // valid until libusb_exit; taking one more strong count keeps it alive for this call.
    unsafe {
        Arc::increment_strong_count(ctx);
        Some(Arc::from_raw(ctx))
    }
}

/// The device behind a C pointer.
///
/// # Safety
/// `dev` must be NULL or a device pointer this library handed out and the caller still holds.
unsafe fn device<'a>(dev: *mut Dev) -> Option<&'a Dev> {
    // SAFETY: per this function's contract the pointer is live (or NULL).
    unsafe { dev.as_ref() }
}

/// The handle behind a C pointer.
///
/// # Safety
/// `h` must be NULL or an open handle of this library.
unsafe fn handle<'a>(h: *mut Handle) -> Option<&'a Handle> {
    // SAFETY: per this function's contract the pointer is live (or NULL).
    unsafe { h.as_ref() }
}

fn init_into(out: *mut *mut Ctx) -> c_int {
    if out.is_null() {
        let mut d = lock(&DEFAULT);
        match d.as_mut() {
            Some((_, n)) => *n += 1,
            None => *d = Some((new_context(), 1)),
        }
        return code::SUCCESS;
    }
    let ctx = new_context();
    // SAFETY: `out` is the caller's non-NULL `libusb_context **`.
    unsafe { *out = Arc::into_raw(ctx) as *mut Ctx };
    code::SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_init(ctx: *mut *mut Ctx) -> c_int {
    guard(code::ERROR_OTHER, || init_into(ctx))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_init_context(
    ctx: *mut *mut Ctx,
    options: *const libusb_init_option,
    num_options: c_int,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        let n = usize::try_from(num_options).unwrap_or(0);
        if n > 0 && options.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        let r = init_into(ctx);
        if r != code::SUCCESS {
            return r;
        }
        let target = if ctx.is_null() {
            ptr::null_mut()
        } else {
            // SAFETY: init_into just stored a context pointer there.
            unsafe { *ctx }
        };
        for i in 0..n {
            // SAFETY: the caller passes `num_options` readable entries.
            let o = unsafe { *options.add(i) };
            let r = set_option(target, o.option, o.value);
            if r != code::SUCCESS && r != code::ERROR_NOT_SUPPORTED {
                return r;
            }
        }
        code::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_exit(ctx: *mut Ctx) {
    guard((), || {
        if ctx.is_null() {
            let mut d = lock(&DEFAULT);
            if let Some((c, n)) = d.as_mut() {
                *n -= 1;
                if *n == 0 {
                    c.close();
                    let addr = Arc::as_ptr(c) as usize;
                    lock(&EVENT_FDS).retain(|(a, _)| *a != addr);
                    *d = None;
                }
            }
            return;
        }
        lock(&EVENT_FDS).retain(|(a, _)| *a != ctx as usize);
        // SAFETY: `ctx` came from Arc::into_raw in libusb_init; libusb_exit gives it back.
        let c = unsafe { Arc::from_raw(ctx) };
        c.close();
    })
}

fn set_option(ctx: *mut Ctx, option: c_int, arg: usize) -> c_int {
    const LOG_LEVEL: c_int = 0;
    const USE_USBDK: c_int = 1;
    const NO_DEVICE_DISCOVERY: c_int = 2;
    const LOG_CB: c_int = 3;
    let Some(c) = context(ctx).or_else(|| {
        // Options set before libusb_init(NULL) apply to the default context once created.
        let _ = init_into(ptr::null_mut());
        let c = context(ptr::null_mut());
        // Undo the implicit init's reference; the context stays as libusb's
        // default_context_options would.
        if let Some((_, n)) = lock(&DEFAULT).as_mut() {
            *n = n.saturating_sub(1).max(1);
        }
        c
    }) else {
        return code::ERROR_OTHER;
    };
    match option {
        LOG_LEVEL => {
            // The variadic argument is a C int: only the low 32 bits are defined.
            let level = arg as u32 as i32;
            if !(code::LOG_NONE..=code::LOG_DEBUG).contains(&level) {
                return code::ERROR_INVALID_PARAM;
            }
            if std::env::var_os("LIBUSB_DEBUG").is_none() {
                c.log_level
                    .store(level, std::sync::atomic::Ordering::Relaxed);
            }
            code::SUCCESS
        }
        USE_USBDK => code::ERROR_NOT_SUPPORTED,
        NO_DEVICE_DISCOVERY => {
            c.no_discovery
                .store(true, std::sync::atomic::Ordering::Relaxed);
            code::SUCCESS
        }
        LOG_CB => {
            let hook = (arg != 0).then(|| c_log_hook(arg, ctx as usize));
            c.set_log_hook(hook);
            code::SUCCESS
        }
        _ => code::ERROR_INVALID_PARAM,
    }
}

/// `libusb_set_option(ctx, option, ...)`. C-variadic definitions are unstable in Rust 1.95, so
/// this takes the one variadic argument as a register-sized integer: on x86-64 System V a
/// variadic `int` or pointer argument travels in the same register (rdx) as a fixed third
/// argument, and the callee ignores `al`. An `int` leaves the upper half undefined, so integer
/// options read only the low 32 bits (`tests/set_option.rs` calls it through `...`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_set_option(ctx: *mut Ctx, option: c_int, arg: usize) -> c_int {
    guard(code::ERROR_OTHER, || set_option(ctx, option, arg))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_set_debug(ctx: *mut Ctx, level: c_int) {
    guard((), || {
        if let Some(c) = context(ctx) {
            if std::env::var_os("LIBUSB_DEBUG").is_none() {
                c.log_level.store(
                    level.clamp(code::LOG_NONE, code::LOG_DEBUG),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_set_log_cb(ctx: *mut Ctx, cb: Option<LogCb>, mode: c_int) {
    const GLOBAL: c_int = 1;
    const CONTEXT: c_int = 2;
    guard((), || {
        let cb = cb.map(|f| f as usize);
        if mode & GLOBAL != 0 {
            *lock(&GLOBAL_LOG_CB) = cb;
        }
        if mode & CONTEXT != 0 {
            if let Some(c) = context(ctx) {
                c.set_log_hook(cb.map(|f| c_log_hook(f, ctx as usize)));
            }
        }
    })
}

/// The static version record; its pointers are to `'static` C strings.
struct VersionRecord(libusb_version);
// SAFETY: the record is immutable and its pointers point to static string literals.
unsafe impl Sync for VersionRecord {}

static VERSION: VersionRecord = VersionRecord(libusb_version {
    major: 1,
    minor: 0,
    micro: 27,
    nano: 0,
    rc: c"".as_ptr(),
    describe: c"scanlab-libusb: libusb-1.0 API over USB/IP to the scanemu emulator".as_ptr(),
});

#[unsafe(no_mangle)]
pub extern "C" fn libusb_get_version() -> *const libusb_version {
    &VERSION.0
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_has_capability(capability: u32) -> c_int {
    match capability {
        // LIBUSB_CAP_HAS_CAPABILITY, LIBUSB_CAP_SUPPORTS_DETACH_KERNEL_DRIVER
        0x0000 | 0x0101 => 1,
        // HAS_HOTPLUG, HAS_HID_ACCESS and anything unknown
        _ => 0,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_error_name(errcode: c_int) -> *const c_char {
    let s: &'static CStr = match errcode {
        0 => c"LIBUSB_SUCCESS / LIBUSB_TRANSFER_COMPLETED",
        -1 => c"LIBUSB_ERROR_IO",
        -2 => c"LIBUSB_ERROR_INVALID_PARAM",
        code::ERROR_ACCESS => c"LIBUSB_ERROR_ACCESS",
        -4 => c"LIBUSB_ERROR_NO_DEVICE",
        -5 => c"LIBUSB_ERROR_NOT_FOUND",
        -6 => c"LIBUSB_ERROR_BUSY",
        -7 => c"LIBUSB_ERROR_TIMEOUT",
        -8 => c"LIBUSB_ERROR_OVERFLOW",
        -9 => c"LIBUSB_ERROR_PIPE",
        code::ERROR_INTERRUPTED => c"LIBUSB_ERROR_INTERRUPTED",
        code::ERROR_NO_MEM => c"LIBUSB_ERROR_NO_MEM",
        -12 => c"LIBUSB_ERROR_NOT_SUPPORTED",
        -99 => c"LIBUSB_ERROR_OTHER",
        1 => c"LIBUSB_TRANSFER_ERROR",
        2 => c"LIBUSB_TRANSFER_TIMED_OUT",
        3 => c"LIBUSB_TRANSFER_CANCELLED",
        4 => c"LIBUSB_TRANSFER_STALL",
        5 => c"LIBUSB_TRANSFER_NO_DEVICE",
        6 => c"LIBUSB_TRANSFER_OVERFLOW",
        _ => c"**UNKNOWN**",
    };
    s.as_ptr()
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_strerror(errcode: c_int) -> *const c_char {
    let s: &'static CStr = match errcode {
        0 => c"Success",
        -1 => c"Input/Output Error",
        -2 => c"Invalid parameter",
        -3 => c"Access denied (insufficient permissions)",
        -4 => c"No such device (it may have been disconnected)",
        -5 => c"Entity not found",
        -6 => c"Resource busy",
        -7 => c"Operation timed out",
        -8 => c"Overflow",
        -9 => c"Pipe error",
        -10 => c"System call interrupted (perhaps due to signal)",
        -11 => c"Insufficient memory",
        -12 => c"Operation not supported or unimplemented on this platform",
        _ => c"Other error",
    };
    s.as_ptr()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_setlocale(locale: *const c_char) -> c_int {
    guard(code::ERROR_OTHER, || {
        if locale.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        // SAFETY: the caller passes a NUL-terminated string.
        let l = unsafe { CStr::from_ptr(locale) }.to_bytes();
        if l.len() < 2 || (l.len() > 2 && !matches!(l[2], b'_' | b'.' | b'-' | b'@')) {
            return code::ERROR_INVALID_PARAM;
        }
        // Only English messages here.
        if l[..2].eq_ignore_ascii_case(b"en") {
            code::SUCCESS
        } else {
            code::ERROR_NOT_FOUND
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Devices

/// `libusb_get_device_list`'s allocation: the NULL-terminated array of device pointers.
fn leak_list(devs: Vec<Arc<Dev>>) -> *mut *mut Dev {
    let mut v: Vec<*mut Dev> = devs
        .into_iter()
        .map(|d| Arc::into_raw(d) as *mut Dev)
        .collect();
    v.push(ptr::null_mut());
    Box::into_raw(v.into_boxed_slice()) as *mut *mut Dev
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_device_list(ctx: *mut Ctx, list: *mut *mut *mut Dev) -> isize {
    guard(code::ERROR_OTHER as isize, || {
        if list.is_null() {
            return code::ERROR_INVALID_PARAM as isize;
        }
        let Some(c) = context(ctx) else {
            return code::ERROR_INVALID_PARAM as isize;
        };
        let devs = c.device_list();
        let n = devs.len() as isize;
        // SAFETY: `list` is the caller's non-NULL `libusb_device ***`.
        unsafe { *list = leak_list(devs) };
        n
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_free_device_list(list: *mut *mut Dev, unref_devices: c_int) {
    guard((), || {
        if list.is_null() {
            return;
        }
        let mut n = 0;
        // SAFETY: `list` is a NULL-terminated array from libusb_get_device_list.
        unsafe {
            while !(*list.add(n)).is_null() {
                if unref_devices != 0 {
                    Arc::decrement_strong_count(*list.add(n));
                }
                n += 1;
            }
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(list, n + 1)));
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_ref_device(dev: *mut Dev) -> *mut Dev {
    guard(dev, || {
        if !dev.is_null() {
            // SAFETY: `dev` is a live device pointer (an Arc) the caller holds a reference to.
            unsafe { Arc::increment_strong_count(dev) };
        }
        dev
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_unref_device(dev: *mut Dev) {
    guard((), || {
        if !dev.is_null() {
            // SAFETY: the caller gives back one reference it holds.
            unsafe { Arc::decrement_strong_count(dev) };
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_bus_number(dev: *mut Dev) -> u8 {
    // SAFETY: `dev` is a device pointer the caller holds.
    guard(0, || unsafe { device(dev) }.map_or(0, |d| d.bus_number()))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_device_address(dev: *mut Dev) -> u8 {
    // SAFETY: `dev` is a device pointer the caller holds.
    guard(0, || unsafe { device(dev) }.map_or(0, |d| d.address()))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_device_speed(dev: *mut Dev) -> c_int {
    // SAFETY: `dev` is a device pointer the caller holds.
    guard(0, || unsafe { device(dev) }.map_or(0, |d| d.speed()))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_port_number(dev: *mut Dev) -> u8 {
    guard(0, || {
        // SAFETY: `dev` is a device pointer the caller holds.
        unsafe { device(dev) }.map_or(0, |d| d.port_numbers().last().copied().unwrap_or(0))
    })
}

fn write_ports(dev: *mut Dev, out: *mut u8, len: usize) -> c_int {
    // SAFETY: `dev` is a device pointer the caller holds.
    let Some(d) = (unsafe { device(dev) }) else {
        return code::ERROR_INVALID_PARAM;
    };
    let ports = d.port_numbers();
    if ports.len() > len {
        return code::ERROR_OVERFLOW;
    }
    if !ports.is_empty() && out.is_null() {
        return code::ERROR_INVALID_PARAM;
    }
    // SAFETY: `out` holds `len` >= ports.len() bytes.
    unsafe { ptr::copy_nonoverlapping(ports.as_ptr(), out, ports.len()) };
    ports.len() as c_int
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_port_numbers(
    dev: *mut Dev,
    port_numbers: *mut u8,
    port_numbers_len: c_int,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        let Ok(len) = usize::try_from(port_numbers_len) else {
            return code::ERROR_INVALID_PARAM;
        };
        if len == 0 {
            return code::ERROR_INVALID_PARAM;
        }
        write_ports(dev, port_numbers, len)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_port_path(
    _ctx: *mut Ctx,
    dev: *mut Dev,
    path: *mut u8,
    path_length: u8,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        write_ports(dev, path, usize::from(path_length))
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_get_parent(_dev: *mut Dev) -> *mut Dev {
    // The emulated device hangs off a virtual root port; libusb returns NULL for a root hub's
    // parent and for parents it did not enumerate.
    ptr::null_mut()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_device_descriptor(
    dev: *mut Dev,
    desc: *mut libusb_device_descriptor,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        // SAFETY: `dev` is a device pointer the caller holds.
        let Some(d) = (unsafe { device(dev) }) else {
            return code::ERROR_INVALID_PARAM;
        };
        if desc.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        let value = libusb_device_descriptor::from_bytes(d.device_descriptor());
        // SAFETY: `desc` points to a caller-owned libusb_device_descriptor.
        unsafe { desc.write(value) };
        code::SUCCESS
    })
}

fn hand_out_config(
    found: Result<&descriptor::Config, i32>,
    out: *mut *mut libusb_config_descriptor,
) -> c_int {
    if out.is_null() {
        return code::ERROR_INVALID_PARAM;
    }
    match found {
        Ok(c) => {
            let b = Box::into_raw(ConfigBox::new(c));
            // SAFETY: `out` is the caller's non-NULL pointer; ConfigBox starts with the
            // public struct (repr(C)), so the addresses coincide.
            unsafe { *out = b.cast::<libusb_config_descriptor>() };
            code::SUCCESS
        }
        Err(e) => e,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_active_config_descriptor(
    dev: *mut Dev,
    config: *mut *mut libusb_config_descriptor,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        // SAFETY: `dev` is a device pointer the caller holds.
        match unsafe { device(dev) } {
            Some(d) => hand_out_config(d.active_config(), config),
            None => code::ERROR_INVALID_PARAM,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_config_descriptor(
    dev: *mut Dev,
    config_index: u8,
    config: *mut *mut libusb_config_descriptor,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        // SAFETY: `dev` is a device pointer the caller holds.
        match unsafe { device(dev) } {
            Some(d) => hand_out_config(d.config(usize::from(config_index)), config),
            None => code::ERROR_INVALID_PARAM,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_config_descriptor_by_value(
    dev: *mut Dev,
    bConfigurationValue: u8,
    config: *mut *mut libusb_config_descriptor,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        // SAFETY: `dev` is a device pointer the caller holds.
        match unsafe { device(dev) } {
            Some(d) => hand_out_config(d.config_by_value(bConfigurationValue), config),
            None => code::ERROR_INVALID_PARAM,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_free_config_descriptor(config: *mut libusb_config_descriptor) {
    guard((), || {
        if !config.is_null() {
            // SAFETY: every config descriptor handed out is a leaked Box<ConfigBox>.
            drop(unsafe { Box::from_raw(config.cast::<ConfigBox>()) });
        }
    })
}

fn hand_out_associations(
    found: Result<&descriptor::Config, i32>,
    out: *mut *mut libusb_interface_association_descriptor_array,
) -> c_int {
    if out.is_null() {
        return code::ERROR_INVALID_PARAM;
    }
    match found {
        Ok(c) => {
            let b = Box::into_raw(AssociationBox::new(&c.associations));
            // SAFETY: `out` is the caller's non-NULL pointer; the box starts with the array.
            unsafe { *out = b.cast() };
            code::SUCCESS
        }
        Err(e) => e,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_interface_association_descriptors(
    dev: *mut Dev,
    config_index: u8,
    iad_array: *mut *mut libusb_interface_association_descriptor_array,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        // SAFETY: `dev` is a device pointer the caller holds.
        match unsafe { device(dev) } {
            Some(d) => hand_out_associations(d.config(usize::from(config_index)), iad_array),
            None => code::ERROR_INVALID_PARAM,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_active_interface_association_descriptors(
    dev: *mut Dev,
    iad_array: *mut *mut libusb_interface_association_descriptor_array,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        // SAFETY: `dev` is a device pointer the caller holds.
        match unsafe { device(dev) } {
            Some(d) => hand_out_associations(d.active_config(), iad_array),
            None => code::ERROR_INVALID_PARAM,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_free_interface_association_descriptors(
    iad_array: *mut libusb_interface_association_descriptor_array,
) {
    guard((), || {
        if !iad_array.is_null() {
            // SAFETY: every array handed out is a leaked Box<AssociationBox>.
            drop(unsafe { Box::from_raw(iad_array.cast::<AssociationBox>()) });
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_ss_endpoint_companion_descriptor(
    _ctx: *mut Ctx,
    endpoint: *const libusb_endpoint_descriptor,
    ep_comp: *mut *mut libusb_ss_endpoint_companion_descriptor,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        if endpoint.is_null() || ep_comp.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        // SAFETY: `endpoint` is a caller-held endpoint descriptor; its extra bytes are
        // `extra_length` long.
        let extra = unsafe {
            let e = &*endpoint;
            match usize::try_from(e.extra_length) {
                Ok(n) if n > 0 && !e.extra.is_null() => std::slice::from_raw_parts(e.extra, n),
                _ => &[][..],
            }
        };
        for d in descriptor::walk(extra) {
            if d[1] == 0x30 && d.len() >= 6 {
                let comp = Box::new(libusb_ss_endpoint_companion_descriptor {
                    bLength: d[0],
                    bDescriptorType: d[1],
                    bMaxBurst: d[2],
                    bmAttributes: d[3],
                    wBytesPerInterval: u16::from_le_bytes([d[4], d[5]]),
                });
                // SAFETY: `ep_comp` is the caller's non-NULL out pointer.
                unsafe { *ep_comp = Box::into_raw(comp) };
                return code::SUCCESS;
            }
        }
        code::ERROR_NOT_FOUND
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_free_ss_endpoint_companion_descriptor(
    ep_comp: *mut libusb_ss_endpoint_companion_descriptor,
) {
    guard((), || {
        if !ep_comp.is_null() {
            // SAFETY: handed out as a leaked Box by the getter above.
            drop(unsafe { Box::from_raw(ep_comp) });
        }
    })
}

/// BOS descriptors and the capability parsers: the emulated devices are USB 2.0 without a
/// BOS, and the library does not parse one, so these report "not supported".
#[unsafe(no_mangle)]
pub extern "C" fn libusb_get_bos_descriptor(_h: *mut Handle, _bos: *mut *mut c_void) -> c_int {
    code::ERROR_NOT_SUPPORTED
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_free_bos_descriptor(_bos: *mut c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_get_usb_2_0_extension_descriptor(
    _ctx: *mut Ctx,
    _dev_cap: *mut c_void,
    _out: *mut *mut c_void,
) -> c_int {
    code::ERROR_NOT_SUPPORTED
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_free_usb_2_0_extension_descriptor(_d: *mut c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_get_ss_usb_device_capability_descriptor(
    _ctx: *mut Ctx,
    _dev_cap: *mut c_void,
    _out: *mut *mut c_void,
) -> c_int {
    code::ERROR_NOT_SUPPORTED
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_free_ss_usb_device_capability_descriptor(_d: *mut c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_get_container_id_descriptor(
    _ctx: *mut Ctx,
    _dev_cap: *mut c_void,
    _out: *mut *mut c_void,
) -> c_int {
    code::ERROR_NOT_SUPPORTED
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_free_container_id_descriptor(_d: *mut c_void) {}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_get_platform_descriptor(
    _ctx: *mut Ctx,
    _dev_cap: *mut c_void,
    _out: *mut *mut c_void,
) -> c_int {
    code::ERROR_NOT_SUPPORTED
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_free_platform_descriptor(_d: *mut c_void) {}

fn endpoint_of(dev: *mut Dev, endpoint: u8, f: impl Fn(&descriptor::Endpoint) -> u32) -> c_int {
    // SAFETY: `dev` is a device pointer the caller holds.
    let Some(d) = (unsafe { device(dev) }) else {
        return code::ERROR_INVALID_PARAM;
    };
    match d.active_config() {
        Ok(c) => c
            .endpoint(endpoint)
            .map_or(code::ERROR_NOT_FOUND, |e| f(e) as c_int),
        Err(_) => code::ERROR_OTHER,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_max_packet_size(dev: *mut Dev, endpoint: u8) -> c_int {
    guard(code::ERROR_OTHER, || {
        endpoint_of(dev, endpoint, |e| u32::from(e.max_packet_size))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_max_iso_packet_size(dev: *mut Dev, endpoint: u8) -> c_int {
    guard(code::ERROR_OTHER, || {
        endpoint_of(dev, endpoint, max_packet_bytes)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_max_alt_packet_size(
    dev: *mut Dev,
    interface_number: c_int,
    alternate_setting: c_int,
    endpoint: u8,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        // SAFETY: `dev` is a device pointer the caller holds.
        let Some(d) = (unsafe { device(dev) }) else {
            return code::ERROR_INVALID_PARAM;
        };
        let (Ok(i), Ok(a)) = (
            u8::try_from(interface_number),
            u8::try_from(alternate_setting),
        ) else {
            return code::ERROR_NOT_FOUND;
        };
        let Ok(c) = d.active_config() else {
            return code::ERROR_OTHER;
        };
        c.altsetting(i, a)
            .and_then(|alt| alt.endpoints.iter().find(|e| e.address == endpoint))
            .map_or(code::ERROR_NOT_FOUND, |e| max_packet_bytes(e) as c_int)
    })
}

// ---------------------------------------------------------------------------------------------
// Handles

#[unsafe(no_mangle)]
pub extern "C" fn libusb_wrap_sys_device(
    _ctx: *mut Ctx,
    _sys_dev: isize,
    _dev_handle: *mut *mut Handle,
) -> c_int {
    // There is no file descriptor of a real device to wrap.
    code::ERROR_NOT_SUPPORTED
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_open(dev: *mut Dev, dev_handle: *mut *mut Handle) -> c_int {
    guard(code::ERROR_OTHER, || {
        if dev.is_null() || dev_handle.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        // SAFETY: `dev` is a live Arc pointer the caller holds; the handle takes its own count.
        let arc = unsafe {
            Arc::increment_strong_count(dev);
            Arc::from_raw(dev)
        };
        match Handle::open(arc) {
            Ok(h) => {
                // SAFETY: `dev_handle` is the caller's non-NULL out pointer.
                unsafe { *dev_handle = Box::into_raw(Box::new(h)) };
                code::SUCCESS
            }
            Err(e) => e,
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_open_device_with_vid_pid(
    ctx: *mut Ctx,
    vendor_id: u16,
    product_id: u16,
) -> *mut Handle {
    guard(ptr::null_mut(), || {
        let Some(c) = context(ctx) else {
            return ptr::null_mut();
        };
        c.device_list()
            .into_iter()
            .find(|d| {
                let desc = libusb_device_descriptor::from_bytes(d.device_descriptor());
                desc.idVendor == vendor_id && desc.idProduct == product_id
            })
            .and_then(|d| Handle::open(d).ok())
            .map_or(ptr::null_mut(), |h| Box::into_raw(Box::new(h)))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_close(dev_handle: *mut Handle) {
    guard((), || {
        if !dev_handle.is_null() {
            // SAFETY: handles are leaked Boxes; libusb_close gives one back, once.
            drop(unsafe { Box::from_raw(dev_handle) });
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_device(dev_handle: *mut Handle) -> *mut Dev {
    guard(ptr::null_mut(), || {
        // SAFETY: `dev_handle` is an open handle.
        unsafe { handle(dev_handle) }.map_or(ptr::null_mut(), |h| Arc::as_ptr(&h.dev) as *mut Dev)
    })
}

/// Runs `f` on the handle, or returns INVALID_PARAM for NULL.
fn with_handle(h: *mut Handle, f: impl FnOnce(&Handle) -> c_int) -> c_int {
    // SAFETY: `h` is NULL or an open handle (the caller's contract).
    match unsafe { handle(h) } {
        Some(h) => guard(code::ERROR_OTHER, || f(h)),
        None => code::ERROR_INVALID_PARAM,
    }
}

fn result(r: Result<(), i32>) -> c_int {
    r.err().unwrap_or(code::SUCCESS)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_configuration(
    dev_handle: *mut Handle,
    config: *mut c_int,
) -> c_int {
    with_handle(dev_handle, |h| {
        if config.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        if !h.dev.attached() {
            return code::ERROR_NO_DEVICE;
        }
        // SAFETY: `config` is the caller's non-NULL int pointer.
        unsafe { *config = c_int::from(h.dev.configuration()) };
        code::SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_set_configuration(
    dev_handle: *mut Handle,
    configuration: c_int,
) -> c_int {
    with_handle(dev_handle, |h| {
        result(h.set_configuration(configuration, &mut dispatch))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_claim_interface(dev_handle: *mut Handle, iface: c_int) -> c_int {
    with_handle(dev_handle, |h| result(h.claim(iface)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_release_interface(dev_handle: *mut Handle, iface: c_int) -> c_int {
    with_handle(dev_handle, |h| result(h.release(iface)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_set_interface_alt_setting(
    dev_handle: *mut Handle,
    interface_number: c_int,
    alternate_setting: c_int,
) -> c_int {
    with_handle(dev_handle, |h| {
        result(h.set_alt_setting(interface_number, alternate_setting, &mut dispatch))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_clear_halt(dev_handle: *mut Handle, endpoint: u8) -> c_int {
    with_handle(dev_handle, |h| {
        result(h.clear_halt(endpoint, &mut dispatch))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_reset_device(dev_handle: *mut Handle) -> c_int {
    with_handle(dev_handle, |h| result(h.reset(&mut dispatch)))
}

fn interface_ok(h: &Handle, iface: c_int) -> c_int {
    if !h.dev.attached() {
        return code::ERROR_NO_DEVICE;
    }
    match u8::try_from(iface) {
        Ok(i)
            if h.dev
                .active_config()
                .is_ok_and(|c| c.altsetting(i, 0).is_some()) =>
        {
            code::SUCCESS
        }
        Ok(_) => code::ERROR_NOT_FOUND,
        Err(_) => code::ERROR_INVALID_PARAM,
    }
}

/// No kernel driver is ever bound to an emulated interface.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_kernel_driver_active(
    dev_handle: *mut Handle,
    iface: c_int,
) -> c_int {
    with_handle(dev_handle, |h| match interface_ok(h, iface) {
        code::SUCCESS => 0,
        e => e,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_detach_kernel_driver(
    dev_handle: *mut Handle,
    iface: c_int,
) -> c_int {
    with_handle(dev_handle, |h| match interface_ok(h, iface) {
        code::SUCCESS => code::ERROR_NOT_FOUND,
        e => e,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_attach_kernel_driver(
    dev_handle: *mut Handle,
    iface: c_int,
) -> c_int {
    with_handle(dev_handle, |h| match interface_ok(h, iface) {
        code::SUCCESS => code::ERROR_NOT_FOUND,
        e => e,
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_set_auto_detach_kernel_driver(
    dev_handle: *mut Handle,
    _enable: c_int,
) -> c_int {
    with_handle(dev_handle, |_| code::SUCCESS)
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_alloc_streams(
    _h: *mut Handle,
    _num_streams: u32,
    _endpoints: *mut u8,
    _num_endpoints: c_int,
) -> c_int {
    // Bulk streams need a USB 3 device; the emulated scanners are USB 2.0.
    code::ERROR_NOT_SUPPORTED
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_free_streams(
    _h: *mut Handle,
    _endpoints: *mut u8,
    _num_endpoints: c_int,
) -> c_int {
    code::ERROR_NOT_SUPPORTED
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_dev_mem_alloc(_h: *mut Handle, _length: usize) -> *mut u8 {
    // No device memory to map: libusb returns NULL when the backend cannot.
    ptr::null_mut()
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_dev_mem_free(_h: *mut Handle, _buffer: *mut u8, _length: usize) -> c_int {
    code::ERROR_NOT_SUPPORTED
}

// ---------------------------------------------------------------------------------------------
// Synchronous I/O

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_control_transfer(
    dev_handle: *mut Handle,
    request_type: u8,
    bRequest: u8,
    wValue: u16,
    wIndex: u16,
    data: *mut u8,
    wLength: u16,
    timeout: c_uint,
) -> c_int {
    with_handle(dev_handle, |h| {
        let len = usize::from(wLength);
        if len > 0 && data.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        let [v0, v1] = wValue.to_le_bytes();
        let [i0, i1] = wIndex.to_le_bytes();
        let [l0, l1] = wLength.to_le_bytes();
        let setup = [request_type, bRequest, v0, v1, i0, i1, l0, l1];
        let is_in = request_type & 0x80 != 0;
        let out: &[u8] = if is_in || len == 0 {
            &[]
        } else {
            // SAFETY: `data` holds wLength readable bytes (OUT).
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        match h.control(setup, out, timeout, &mut dispatch) {
            Ok(done) => {
                if is_in {
                    let n = done.data.len().min(len);
                    // SAFETY: `data` holds wLength writable bytes and n <= wLength.
                    unsafe { ptr::copy_nonoverlapping(done.data.as_ptr(), data, n) };
                }
                done.actual as c_int
            }
            Err(e) => e,
        }
    })
}

fn bulk_or_interrupt(
    dev_handle: *mut Handle,
    endpoint: u8,
    data: *mut u8,
    length: c_int,
    transferred: *mut c_int,
    timeout: c_uint,
    interval: u32,
) -> c_int {
    if !transferred.is_null() {
        // SAFETY: the caller's int pointer; written first so it is valid on every return.
        unsafe { *transferred = 0 };
    }
    with_handle(dev_handle, |h| {
        let Ok(len) = usize::try_from(length) else {
            return code::ERROR_INVALID_PARAM;
        };
        if len > 0 && data.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        let is_in = endpoint & 0x80 != 0;
        let out: &[u8] = if is_in || len == 0 {
            &[]
        } else {
            // SAFETY: `data` holds `length` readable bytes (OUT).
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        let r = h.bulk_or_interrupt(
            endpoint,
            if is_in { len } else { 0 },
            out,
            timeout,
            interval,
            &mut dispatch,
        );
        if is_in {
            let n = r.data.len().min(len);
            // SAFETY: `data` holds `length` writable bytes and n <= length.
            unsafe { ptr::copy_nonoverlapping(r.data.as_ptr(), data, n) };
        }
        if !transferred.is_null() {
            // SAFETY: as above.
            unsafe { *transferred = r.transferred as c_int };
        }
        r.error
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_bulk_transfer(
    dev_handle: *mut Handle,
    endpoint: u8,
    data: *mut u8,
    length: c_int,
    transferred: *mut c_int,
    timeout: c_uint,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        bulk_or_interrupt(dev_handle, endpoint, data, length, transferred, timeout, 0)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_interrupt_transfer(
    dev_handle: *mut Handle,
    endpoint: u8,
    data: *mut u8,
    length: c_int,
    transferred: *mut c_int,
    timeout: c_uint,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        // SAFETY: `dev_handle` is NULL or an open handle.
        let interval = unsafe { handle(dev_handle) }
            .and_then(|h| {
                h.dev
                    .active_config()
                    .ok()
                    .and_then(|c| c.endpoint(endpoint).cloned())
            })
            .map_or(1, |e| u32::from(e.interval));
        bulk_or_interrupt(
            dev_handle,
            endpoint,
            data,
            length,
            transferred,
            timeout,
            interval,
        )
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_string_descriptor_ascii(
    dev_handle: *mut Handle,
    desc_index: u8,
    data: *mut u8,
    length: c_int,
) -> c_int {
    with_handle(dev_handle, |h| {
        let Ok(len) = usize::try_from(length) else {
            return code::ERROR_INVALID_PARAM;
        };
        if desc_index == 0 || len == 0 || data.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        let get = |index: u8, langid: u16, want: u16| {
            let [l0, l1] = langid.to_le_bytes();
            let [w0, w1] = want.to_le_bytes();
            h.control(
                [0x80, 6, index, 3, l0, l1, w0, w1],
                &[],
                1000,
                &mut dispatch,
            )
        };
        let langs = match get(0, 0, 255) {
            Ok(d) => d.data,
            Err(e) => return e,
        };
        if langs.len() < 4 || langs[1] != descriptor_type::STRING {
            return code::ERROR_IO;
        }
        let langid = u16::from_le_bytes([langs[2], langs[3]]);
        let s = match get(desc_index, langid, 255) {
            Ok(d) => d.data,
            Err(e) => return e,
        };
        if s.len() < 2 || s[1] != descriptor_type::STRING || usize::from(s[0]) > s.len() {
            return code::ERROR_IO;
        }
        let mut text = descriptor::string_to_ascii(&s[..usize::from(s[0])]);
        text.truncate(len - 1);
        text.push(0);
        // SAFETY: `data` holds `length` writable bytes and text.len() <= length.
        unsafe { ptr::copy_nonoverlapping(text.as_ptr(), data, text.len()) };
        (text.len() - 1) as c_int
    })
}

// ---------------------------------------------------------------------------------------------
// Asynchronous I/O

/// What libusb keeps in front of the public transfer (`usbi_transfer`): here just enough to
/// free the block and remember the stream id.
#[repr(C)]
struct TransferPriv {
    iso_packets: usize,
    stream_id: u32,
    _reserved: u32,
    _align: u64,
}

const PRIV: usize = std::mem::size_of::<TransferPriv>();
const _: () = assert!(PRIV.is_multiple_of(8));

fn transfer_layout(iso_packets: usize) -> Option<Layout> {
    let size = PRIV
        .checked_add(std::mem::size_of::<libusb_transfer>())?
        .checked_add(
            iso_packets.checked_mul(std::mem::size_of::<libusb_iso_packet_descriptor>())?,
        )?;
    Layout::from_size_align(size, 8).ok()
}

/// The private header of a transfer this library allocated.
///
/// # Safety
/// `t` must come from libusb_alloc_transfer and not be freed.
unsafe fn transfer_priv(t: *mut libusb_transfer) -> *mut TransferPriv {
    // SAFETY: the public struct sits PRIV bytes into the block (libusb_alloc_transfer).
    unsafe { t.cast::<u8>().sub(PRIV).cast::<TransferPriv>() }
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_alloc_transfer(iso_packets: c_int) -> *mut libusb_transfer {
    guard(ptr::null_mut(), || {
        let Ok(n) = usize::try_from(iso_packets) else {
            return ptr::null_mut();
        };
        let Some(layout) = transfer_layout(n) else {
            return ptr::null_mut();
        };
        // SAFETY: the layout has a non-zero size; the block is zeroed, which is a valid
        // TransferPriv and libusb_transfer (NULL pointers, no callback).
        unsafe {
            let base = alloc::alloc_zeroed(layout);
            if base.is_null() {
                return ptr::null_mut();
            }
            base.cast::<TransferPriv>().write(TransferPriv {
                iso_packets: n,
                stream_id: 0,
                _reserved: 0,
                _align: 0,
            });
            let t = base.add(PRIV).cast::<libusb_transfer>();
            (*t).num_iso_packets = iso_packets;
            t
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_free_transfer(transfer: *mut libusb_transfer) {
    guard((), || {
        if transfer.is_null() {
            return;
        }
        // SAFETY: `transfer` came from libusb_alloc_transfer and is not in flight (freeing an
        // in-flight transfer is undefined in libusb too). FREE_BUFFER means the buffer came
        // from malloc, as libusb documents.
        unsafe {
            if (*transfer).flags & 2 != 0 && !(*transfer).buffer.is_null() {
                libc::free((*transfer).buffer.cast());
            }
            let p = transfer_priv(transfer);
            if let Some(layout) = transfer_layout((*p).iso_packets) {
                alloc::dealloc(p.cast::<u8>(), layout);
            }
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_transfer_set_stream_id(
    transfer: *mut libusb_transfer,
    stream_id: u32,
) {
    guard((), || {
        if !transfer.is_null() {
            // SAFETY: `transfer` came from libusb_alloc_transfer.
            unsafe { (*transfer_priv(transfer)).stream_id = stream_id };
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_transfer_get_stream_id(transfer: *mut libusb_transfer) -> u32 {
    guard(0, || {
        if transfer.is_null() {
            return 0;
        }
        // SAFETY: `transfer` came from libusb_alloc_transfer.
        unsafe { (*transfer_priv(transfer)).stream_id }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_submit_transfer(transfer: *mut libusb_transfer) -> c_int {
    guard(code::ERROR_OTHER, || {
        if transfer.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        // SAFETY: `transfer` came from libusb_alloc_transfer and was filled by the caller;
        // `buffer` holds `length` bytes and `dev_handle` is an open handle.
        let (t, h) = unsafe {
            let t = &*transfer;
            match handle(t.dev_handle.cast::<Handle>()) {
                Some(h) => (t, h),
                None => return code::ERROR_INVALID_PARAM,
            }
        };
        let Ok(length) = usize::try_from(t.length) else {
            return code::ERROR_INVALID_PARAM;
        };
        if length > 0 && t.buffer.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        // SAFETY: `buffer` holds `length` bytes (the caller's contract).
        let buf: &[u8] = if length == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(t.buffer, length) }
        };
        let flags = Handle::urb_flags(t.flags);
        let req = match t.r#type {
            // CONTROL: an 8-byte setup packet, then the data stage.
            0 => {
                if length < 8 {
                    return code::ERROR_INVALID_PARAM;
                }
                let mut setup = [0u8; 8];
                setup.copy_from_slice(&buf[..8]);
                let w_length = usize::from(u16::from_le_bytes([setup[6], setup[7]]));
                if w_length > length - 8 {
                    return code::ERROR_INVALID_PARAM;
                }
                let is_in = setup[0] & 0x80 != 0;
                crate::connection::UrbRequest {
                    endpoint: if is_in { 0x80 } else { 0 },
                    setup: Some(setup),
                    in_len: if is_in { w_length as u32 } else { 0 },
                    out_data: if is_in {
                        Vec::new()
                    } else {
                        buf[8..8 + w_length].to_vec()
                    },
                    flags: 0,
                    interval: 0,
                }
            }
            // BULK, INTERRUPT
            2 | 3 => {
                let is_in = t.endpoint & 0x80 != 0;
                let interval = if t.r#type == 3 {
                    h.dev
                        .active_config()
                        .ok()
                        .and_then(|c| c.endpoint(t.endpoint).map(|e| u32::from(e.interval)))
                        .unwrap_or(1)
                } else {
                    0
                };
                crate::connection::UrbRequest {
                    endpoint: t.endpoint,
                    setup: None,
                    in_len: if is_in {
                        u32::try_from(length).unwrap_or(u32::MAX)
                    } else {
                        0
                    },
                    out_data: if is_in { Vec::new() } else { buf.to_vec() },
                    flags,
                    interval,
                }
            }
            // ISOCHRONOUS and BULK_STREAM: the emulated devices have neither.
            1 | 4 => return code::ERROR_NOT_SUPPORTED,
            _ => return code::ERROR_INVALID_PARAM,
        };
        result(h.dev.events.submit(
            Target::Token(transfer as usize),
            &h.dev.conn,
            &req,
            t.timeout,
        ))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_cancel_transfer(transfer: *mut libusb_transfer) -> c_int {
    guard(code::ERROR_OTHER, || {
        if transfer.is_null() {
            return code::ERROR_INVALID_PARAM;
        }
        // SAFETY: `transfer` came from libusb_alloc_transfer; only dev_handle is read.
        let h = unsafe { handle((*transfer).dev_handle.cast::<Handle>()) };
        match h {
            Some(h) => result(h.dev.events.cancel(transfer as usize)),
            None => code::ERROR_NOT_FOUND,
        }
    })
}

/// Delivers a finished transfer to its owner: status, length, data, callback, then the
/// FREE_TRANSFER flag, as libusb's `usbi_handle_transfer_completion` does.
fn dispatch(done: Done) {
    let t = done.token as *mut libusb_transfer;
    // SAFETY: `token` is the address of a transfer submitted with libusb_submit_transfer;
    // libusb forbids freeing it before its callback, so it is live. The buffer holds `length`
    // bytes. The callback is the caller's and gets the transfer it registered.
    unsafe {
        let tr = &mut *t;
        let capacity = usize::try_from(tr.length).unwrap_or(0);
        let offset = if tr.r#type == 0 { 8 } else { 0 };
        let n = done.data.len().min(capacity.saturating_sub(offset));
        if n > 0 && !tr.buffer.is_null() {
            ptr::copy_nonoverlapping(done.data.as_ptr(), tr.buffer.add(offset), n);
        }
        tr.status = done.status;
        tr.actual_length = c_int::try_from(done.actual).unwrap_or(c_int::MAX);
        let flags = tr.flags;
        if let Some(cb) = tr.callback {
            cb(t);
        }
        if flags & 4 != 0 {
            libusb_free_transfer(t);
        }
    }
}

fn timeval(tv: *const libc::timeval) -> Option<Duration> {
    // SAFETY: `tv` is NULL or the caller's timeval.
    let tv = unsafe { tv.as_ref() }?;
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// `*completed` read fresh on every look (another thread's callback sets it).
fn completed_flag(completed: *mut c_int) -> impl Fn() -> bool {
    move || {
        // SAFETY: `completed` is NULL or the caller's int, live for the call.
        !completed.is_null() && unsafe { ptr::read_volatile(completed) } != 0
    }
}

fn handle_events_impl(ctx: *mut Ctx, tv: Option<Duration>, completed: *mut c_int) -> c_int {
    let Some(c) = context(ctx) else {
        return code::ERROR_INVALID_PARAM;
    };
    let flag = completed_flag(completed);
    c.events
        .handle_completed(tv.unwrap_or(host::HANDLE_EVENTS_CAP), &flag, &mut dispatch)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_handle_events_timeout_completed(
    ctx: *mut Ctx,
    tv: *mut libc::timeval,
    completed: *mut c_int,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        handle_events_impl(ctx, timeval(tv), completed)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_handle_events_timeout(
    ctx: *mut Ctx,
    tv: *mut libc::timeval,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        handle_events_impl(ctx, timeval(tv), ptr::null_mut())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_handle_events(ctx: *mut Ctx) -> c_int {
    guard(code::ERROR_OTHER, || {
        handle_events_impl(ctx, None, ptr::null_mut())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_handle_events_completed(
    ctx: *mut Ctx,
    completed: *mut c_int,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        handle_events_impl(ctx, None, completed)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_handle_events_locked(
    ctx: *mut Ctx,
    tv: *mut libc::timeval,
) -> c_int {
    guard(code::ERROR_OTHER, || {
        let Some(c) = context(ctx) else {
            return code::ERROR_INVALID_PARAM;
        };
        c.events.handle_locked(
            timeval(tv).unwrap_or(host::HANDLE_EVENTS_CAP),
            &mut dispatch,
        )
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_try_lock_events(ctx: *mut Ctx) -> c_int {
    guard(1, || {
        context(ctx).map_or(1, |c| if c.events.try_lock_events() { 0 } else { 1 })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_lock_events(ctx: *mut Ctx) {
    guard((), || {
        if let Some(c) = context(ctx) {
            c.events.lock_events();
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_unlock_events(ctx: *mut Ctx) {
    guard((), || {
        if let Some(c) = context(ctx) {
            c.events.unlock_events();
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_event_handling_ok(ctx: *mut Ctx) -> c_int {
    // No device close ever needs the event lock here, so the holder may always go on.
    guard(0, || c_int::from(context(ctx).is_some()))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_event_handler_active(ctx: *mut Ctx) -> c_int {
    guard(0, || {
        context(ctx).map_or(0, |c| c_int::from(c.events.handler_active()))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_interrupt_event_handler(ctx: *mut Ctx) {
    guard((), || {
        if let Some(c) = context(ctx) {
            c.events.interrupt();
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_lock_event_waiters(ctx: *mut Ctx) {
    guard((), || {
        if let Some(c) = context(ctx) {
            c.events.lock_waiters();
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_unlock_event_waiters(ctx: *mut Ctx) {
    guard((), || {
        if let Some(c) = context(ctx) {
            c.events.unlock_waiters();
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_wait_for_event(ctx: *mut Ctx, tv: *mut libc::timeval) -> c_int {
    guard(code::ERROR_OTHER, || match context(ctx) {
        Some(c) => c_int::from(c.events.wait_for_event(timeval(tv))),
        None => code::ERROR_INVALID_PARAM,
    })
}

/// Timeouts are processed inside handle_events, not by a timer fd: pollers must ask
/// libusb_get_next_timeout, as libusb requires when this returns 0.
#[unsafe(no_mangle)]
pub extern "C" fn libusb_pollfds_handle_timeouts(_ctx: *mut Ctx) -> c_int {
    0
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_next_timeout(ctx: *mut Ctx, tv: *mut libc::timeval) -> c_int {
    guard(code::ERROR_OTHER, || {
        let Some(c) = context(ctx) else {
            return code::ERROR_INVALID_PARAM;
        };
        match c.events.next_timeout() {
            None => 0,
            Some(d) => {
                if !tv.is_null() {
                    // SAFETY: the caller's non-NULL timeval.
                    unsafe {
                        (*tv).tv_sec = d.as_secs() as libc::time_t;
                        (*tv).tv_usec = libc::suseconds_t::from(d.subsec_micros());
                    }
                }
                1
            }
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_get_pollfds(ctx: *mut Ctx) -> *mut *const libusb_pollfd {
    guard(ptr::null_mut(), || {
        let Some(c) = context(ctx) else {
            return ptr::null_mut();
        };
        let addr = Arc::as_ptr(&c) as usize;
        let Some(fd) = lock(&EVENT_FDS)
            .iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, fd)| *fd)
        else {
            return ptr::null_mut();
        };
        let b = Box::into_raw(Box::new(PollfdsBox {
            list: [ptr::null(), ptr::null()],
            entry: libusb_pollfd { fd, events: POLLIN },
        }));
        // SAFETY: `b` is a fresh, live box; the list points at its own entry.
        unsafe {
            (*b).list[0] = &(*b).entry;
            b.cast::<*const libusb_pollfd>()
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn libusb_free_pollfds(pollfds: *mut *const libusb_pollfd) {
    guard((), || {
        if !pollfds.is_null() {
            // SAFETY: every pollfd list handed out is a leaked Box<PollfdsBox>.
            drop(unsafe { Box::from_raw(pollfds.cast::<PollfdsBox>()) });
        }
    })
}

/// The one fd never changes while a context lives, so the notifiers would never be called.
#[unsafe(no_mangle)]
pub extern "C" fn libusb_set_pollfd_notifiers(
    _ctx: *mut Ctx,
    _added_cb: *mut c_void,
    _removed_cb: *mut c_void,
    _user_data: *mut c_void,
) {
}

// ---------------------------------------------------------------------------------------------
// Hotplug: not available (libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG) is 0).

#[unsafe(no_mangle)]
pub extern "C" fn libusb_hotplug_register_callback(
    _ctx: *mut Ctx,
    _events: c_int,
    _flags: c_int,
    _vendor_id: c_int,
    _product_id: c_int,
    _dev_class: c_int,
    _cb_fn: *mut c_void,
    _user_data: *mut c_void,
    _callback_handle: *mut c_int,
) -> c_int {
    code::ERROR_NOT_SUPPORTED
}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_hotplug_deregister_callback(_ctx: *mut Ctx, _callback_handle: c_int) {}

#[unsafe(no_mangle)]
pub extern "C" fn libusb_hotplug_get_user_data(
    _ctx: *mut Ctx,
    _callback_handle: c_int,
) -> *mut c_void {
    ptr::null_mut()
}
