//! A USB/IP cycle client for soak tests: connect, import, scan, cancel, disconnect, N times.
//!
//! Run: `cargo run --release -p scanemu --example usbip_soak -- --addr 127.0.0.1:PORT --cycles N
//! [--max-seconds S]` against a running `scanemu serve --usbip 127.0.0.1:PORT`
//! (`scripts/soak` does this and samples the server's memory and descriptors between blocks).
//!
//! Each cycle connects to the server and imports bus id `1-1` (retrying for up to 5 s while the
//! previous session's import is still being released), sets a small gray job, starts the scan,
//! reads one full band from the data endpoint, sends CANCEL, polls GET_DEVICE_STATUS until it
//! answers OK (at most 5 s), and disconnects. Only loopback addresses are accepted. The whole
//! run is bounded by `--max-seconds` of wall-clock time (default 600). Prints one summary line;
//! a failing cycle is one line naming the cycle and exits 1; bad arguments exit 2.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;

use scanemu::engine::{ScanJob, ScanMode};
use scanemu::host::usbip::{ConnectError, UsbIpHost};
use scanemu::host::{Setup, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};

/// The per-transfer timeout, and the most one wait (import, cancel) may take.
const T: Duration = Duration::from_secs(5);

struct Args {
    addr: SocketAddr,
    cycles: u32,
    max_seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut cycles = None;
    let mut max_seconds = 600u64;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => {
                let v = value()?;
                let a: SocketAddr = v
                    .parse()
                    .map_err(|_| format!("--addr {v:?}: not an address of the form HOST:PORT"))?;
                if !a.ip().is_loopback() {
                    return Err(format!(
                        "--addr {a}: not a loopback address (soak tests stay on this machine)"
                    ));
                }
                addr = Some(a);
            }
            "--cycles" => {
                let v = value()?;
                cycles = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("--cycles {v:?}: not a positive whole number"))?,
                );
            }
            "--max-seconds" => {
                let v = value()?;
                max_seconds = v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=86_400).contains(n))
                    .ok_or_else(|| {
                        format!("--max-seconds {v:?}: not a whole number in 1..=86400")
                    })?;
            }
            other => {
                return Err(format!(
                "unknown argument {other:?} (usage: --addr HOST:PORT --cycles N [--max-seconds S])"
            ))
            }
        }
    }
    Ok(Args {
        addr: addr.ok_or("--addr HOST:PORT is required")?,
        cycles: cycles.ok_or("--cycles N is required")?,
        max_seconds,
    })
}

/// Imports `1-1`, retrying while the server still holds the previous session's import.
async fn connect(sim: &Sim, addr: SocketAddr) -> Result<UsbIpHost, String> {
    let give_up = sim.now() + T;
    loop {
        match UsbIpHost::connect(addr, "1-1", Rc::new(sim.clone())) {
            Ok(host) => return Ok(host),
            Err(ConnectError::Refused { .. }) if sim.now() < give_up => {
                sim.sleep(Duration::from_millis(2)).await;
            }
            Err(e) => return Err(format!("import: {e}")),
        }
    }
}

/// One connect / scan / band / cancel / status OK / disconnect cycle.
async fn cycle(sim: &Sim, addr: SocketAddr, tid: u32) -> Result<(), String> {
    let host = connect(sim, addr).await?;
    let job = ScanJob::flatbed(100, ScanMode::Gray8, 256, 256);
    let params = ScanParams { job }.encode();
    host.control_out(
        Setup::vendor_out(REQ_SET_PARAMS, 0, 0, params.len() as u16),
        &params,
        T,
    )
    .await
    .map_err(|e| format!("SET_PARAMS: {e}"))?;
    let report = host
        .control_in(
            Setup::vendor_in(REQ_GET_PARAMS, 0, 0, PARAMS_REPORT_LEN as u16),
            T,
        )
        .await
        .map_err(|e| format!("GET_PARAMS: {e}"))?;
    let report = ParamsReport::decode(&report).map_err(|e| format!("GET_PARAMS: {e}"))?;
    host.control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], T)
        .await
        .map_err(|e| format!("START_SCAN: {e}"))?;
    let band = report.band_bytes as usize;
    let mut buf = vec![0u8; band];
    let mut got = 0;
    while got < band {
        got += host
            .bulk_in(EP_DATA_IN, &mut buf[got..], T)
            .await
            .map_err(|e| format!("reading the first band ({got} of {band} bytes): {e}"))?;
    }
    let mut cancel = CANCEL_CODE.to_le_bytes().to_vec();
    cancel.extend_from_slice(&tid.to_le_bytes());
    host.control_out(
        Setup::vendor_out(REQ_CANCEL, 0, 0, cancel.len() as u16),
        &cancel,
        T,
    )
    .await
    .map_err(|e| format!("CANCEL: {e}"))?;
    let give_up = sim.now() + T;
    loop {
        let s = host
            .control_in(Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8), T)
            .await
            .map_err(|e| format!("GET_DEVICE_STATUS: {e}"))?;
        let s = DeviceStatus::decode(&s).map_err(|e| format!("GET_DEVICE_STATUS: {e}"))?;
        if s.code == STATUS_OK {
            break;
        }
        if sim.now() >= give_up {
            return Err(format!(
                "the device still answers status 0x{:04x} 5 s after CANCEL",
                s.code
            ));
        }
        sim.sleep(Duration::from_millis(1)).await;
    }
    drop(host);
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("usbip_soak: {e}");
            return ExitCode::from(2);
        }
    };
    let sim = Sim::realtime();
    let s = sim.clone();
    let (addr, cycles) = (args.addr, args.cycles);
    let started = std::time::Instant::now();
    let run = sim.block_on(
        async move {
            for n in 1..=cycles {
                cycle(&s, addr, n)
                    .await
                    .map_err(|e| format!("cycle {n}: {e}"))?;
            }
            Ok::<(), String>(())
        },
        Instant::from_millis(args.max_seconds * 1000),
    );
    let secs = started.elapsed().as_secs_f64();
    match run {
        Ok(Ok(())) => {
            println!(
                "usbip_soak: {cycles} cycles against {addr} in {secs:.2} s ({:.1} ms per cycle)",
                secs * 1000.0 / f64::from(cycles)
            );
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("usbip_soak: {addr}: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!(
                "usbip_soak: {addr}: not done within --max-seconds {}: {e}",
                args.max_seconds
            );
            ExitCode::from(1)
        }
    }
}
