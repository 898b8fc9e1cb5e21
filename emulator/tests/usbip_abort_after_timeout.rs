//! A bulk read of the USB/IP client host whose timeout fired, aborted while it waits for the
//! server's answer to its unlink, ends [`TransferError::Cancelled`], as an abort before the
//! timeout does: on a loaded machine the executor can notice a timeout late, right before the
//! driver aborts the endpoint, and a read reported as timed out after its abort reads as a
//! read submitted again (WIA-CANCEL-IO-ASAP).
//!
//! A proxy between the host and the server drops the server's `RET_UNLINK`s, so the timed-out
//! read waits for its answer for the host's whole grace period, and the abort comes inside it.

mod common;
use common::join;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use scanemu::host::usbip::UsbIpHost;
use scanemu::host::{TransferError, UsbHost};
use scanemu::personality::native::protocol::EP_DATA_IN;
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};
use scanemu::usbip::protocol::URB_HEADER_LEN;
use scanemu::usbip::{ServerConfig, UsbIpServer};

const CMD_SUBMIT: u32 = 1;
const RET_SUBMIT: u32 = 3;
const RET_UNLINK: u32 = 4;

/// Forwards a client's USB/IP session to `server`, dropping every `RET_UNLINK`.
fn unlink_muting_proxy(server: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut client, mut upstream) = common::proxy_import(&listener, server);
        // Sequence numbers of the IN URBs: their RET_SUBMIT carries data.
        let ins = Arc::new(Mutex::new(Vec::<u32>::new()));
        let seen = ins.clone();
        let mut to_client = client.try_clone().unwrap();
        let mut from_server = upstream.try_clone().unwrap();
        std::thread::spawn(move || loop {
            let mut h = [0u8; URB_HEADER_LEN];
            if from_server.read_exact(&mut h).is_err() {
                return;
            }
            let word = |at: usize| u32::from_be_bytes(h[at..at + 4].try_into().unwrap());
            let mut msg = h.to_vec();
            if word(0) == RET_SUBMIT && seen.lock().unwrap().contains(&word(4)) {
                let mut data = vec![0u8; word(24) as usize];
                if from_server.read_exact(&mut data).is_err() {
                    return;
                }
                msg.extend_from_slice(&data);
            }
            if word(0) != RET_UNLINK && to_client.write_all(&msg).is_err() {
                return;
            }
        });
        loop {
            let mut h = [0u8; URB_HEADER_LEN];
            if client.read_exact(&mut h).is_err() {
                return;
            }
            let word = |at: usize| u32::from_be_bytes(h[at..at + 4].try_into().unwrap());
            let mut msg = h.to_vec();
            if word(0) == CMD_SUBMIT {
                if word(12) == 1 {
                    ins.lock().unwrap().push(word(4));
                } else {
                    let mut data = vec![0u8; word(24) as usize];
                    if client.read_exact(&mut data).is_err() {
                        return;
                    }
                    msg.extend_from_slice(&data);
                }
            }
            if upstream.write_all(&msg).is_err() {
                return;
            }
        }
    });
    addr
}

#[test]
fn an_abort_while_a_timed_out_read_waits_for_its_unlink_cancels_it() {
    let server = UsbIpServer::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ServerConfig::new(Profile::builtin_fast()),
    )
    .expect("binds loopback");
    let proxy = unlink_muting_proxy(server.local_addr());
    let sim = Sim::realtime();
    let host = UsbIpHost::connect(proxy, "1-1", Rc::new(sim.clone())).expect("imports");
    let aborter = host.clone();
    sim.block_on(
        async move {
            // No scan: the device NAKs, the read times out after 20 ms and its unlink is never
            // answered (the host waits 250 ms for it); the abort comes 100 ms in.
            let reader = async {
                let mut buf = vec![0u8; 512];
                host.bulk_in(EP_DATA_IN, &mut buf, Duration::from_millis(20))
                    .await
            };
            let abort = async {
                aborter.sleep(Duration::from_millis(100)).await;
                aborter.abort_endpoint(EP_DATA_IN);
            };
            let (r, ()) = join(reader, abort).await;
            assert_eq!(r, Err(TransferError::Cancelled { actual: 0 }));
        },
        Instant::from_millis(10_000),
    )
    .unwrap();
}
