//! The USB/IP client: one TCP connection per imported device, multiplexed by sequence number.
//!
//! [`list_devices`] asks a server for its exports (`OP_REQ_DEVLIST`). [`Connection::import`]
//! imports one bus id (`OP_REQ_IMPORT`), reads the device and configuration descriptors with
//! GET_DESCRIPTOR on EP0 while the stream is still synchronous, then starts a reader thread.
//! From then on [`Connection::submit`] sends `USBIP_CMD_SUBMIT` and returns at once;
//! [`Connection::unlink`] sends `USBIP_CMD_UNLINK`. The reader decodes every reply with the
//! project's codec ([`scanemu::usbip::protocol`]), which refuses a reply longer than the URB
//! asked for, and hands it to the [`UrbSink`] (the context's event core) under the URB's
//! submission id. Any protocol violation or a closed stream ends the connection: every URB
//! still pending is reported [`UrbOutcome::Closed`] and later submissions fail.

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use scanemu::usbip::protocol::{
    encode_busid, read_devlist, CmdSubmit, CmdUnlink, DeviceRecord, ExportedDevice, OpHeader,
    ProtocolError, Reply, DIR_IN, DIR_OUT, OP_REP_DEVLIST, OP_REP_IMPORT, OP_REQ_DEVLIST,
    OP_REQ_IMPORT, ST_DEV_BUSY, URB_DIR_IN,
};

use scanemu::usb::descriptor_type as dt;

/// How long connecting, listing and importing may take.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an import keeps retrying while the server reports the device busy (a previous
/// client's session still being torn down).
const BUSY_RETRY: Duration = Duration::from_secs(2);
/// The most devices a device list may hold.
const MAX_DEVICES: u32 = 256;

/// Why talking to the server failed.
#[derive(Debug)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    Io(io::Error),
    /// The server broke the protocol.
    Protocol(ProtocolError),
    /// The server refused the import with this operation status.
    Refused(u32),
    /// A descriptor request failed with this URB status.
    Descriptor(i32),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Protocol(e) => write!(f, "protocol error: {e}"),
            ClientError::Refused(s) => write!(f, "import refused with status {s}"),
            ClientError::Descriptor(s) => write!(f, "GET_DESCRIPTOR failed with status {s}"),
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> ClientError {
        ClientError::Io(e)
    }
}

impl From<ProtocolError> for ClientError {
    fn from(e: ProtocolError) -> ClientError {
        ClientError::Protocol(e)
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, ClientError> {
    let stream = TcpStream::connect_timeout(&addr, OP_TIMEOUT)?;
    stream.set_read_timeout(Some(OP_TIMEOUT))?;
    stream.set_write_timeout(Some(OP_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The devices `addr` exports.
pub fn list_devices(addr: SocketAddr) -> Result<Vec<ExportedDevice>, ClientError> {
    let mut stream = connect(addr)?;
    stream.write_all(&OpHeader::new(OP_REQ_DEVLIST, 0).encode())?;
    let mut r = BufReader::new(stream);
    let h = OpHeader::read(&mut r)?;
    if h.code != OP_REP_DEVLIST {
        return Err(ProtocolError::UnknownOp(h.code).into());
    }
    Ok(read_devlist(&mut r, MAX_DEVICES)?)
}

/// How an URB ended, as the reader thread saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrbOutcome {
    /// `USBIP_RET_SUBMIT`: the status (0 or a negated errno) and the IN data.
    Done {
        /// 0 or a negated Linux errno.
        status: i32,
        /// Bytes transferred.
        actual: u32,
        /// IN data (empty for OUT).
        data: Vec<u8>,
    },
    /// `USBIP_RET_UNLINK` with a non-zero status: the URB was cancelled before completing.
    Unlinked,
    /// The connection ended while the URB was pending.
    Closed,
}

/// Where the reader thread delivers outcomes, by submission id.
pub trait UrbSink: Send + Sync {
    /// An URB ended.
    fn urb_finished(&self, id: u64, outcome: UrbOutcome);
    /// A `RET_UNLINK` with status 0 arrived: the URB had already completed.
    fn unlink_answered(&self, id: u64);
}

/// One URB awaiting its reply, and whom to tell.
struct Pending {
    id: u64,
    in_len: Option<u32>,
    sink: Arc<dyn UrbSink>,
}

#[derive(Default)]
struct Table {
    urbs: HashMap<u32, Pending>,
    /// CMD_UNLINK seqnum -> the submission it unlinks.
    unlinks: HashMap<u32, (u64, Arc<dyn UrbSink>)>,
    closed: bool,
}

fn lock(t: &Mutex<Table>) -> MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shape of one URB to submit.
#[derive(Clone, Debug)]
pub struct UrbRequest {
    /// Endpoint address (bit 7 = IN); 0 or 0x80 for control.
    pub endpoint: u8,
    /// The SETUP packet of a control transfer.
    pub setup: Option<[u8; 8]>,
    /// IN: bytes asked for. OUT: ignored (the data's length counts).
    pub in_len: u32,
    /// OUT data.
    pub out_data: Vec<u8>,
    /// USB/IP transfer flags (`URB_SHORT_NOT_OK`, `URB_ZERO_PACKET`).
    pub flags: u32,
    /// Polling interval of interrupt endpoints.
    pub interval: u32,
}

impl UrbRequest {
    /// True for device-to-host.
    pub fn is_in(&self) -> bool {
        match self.setup {
            Some(s) => s[0] & 0x80 != 0,
            None => self.endpoint & 0x80 != 0,
        }
    }
}

/// A connection to one imported device. Several contexts of one process may share it (the
/// server lets one client import a device at a time); each URB names its own [`UrbSink`].
pub struct Connection {
    record: DeviceRecord,
    device_descriptor: Vec<u8>,
    configs: Vec<Vec<u8>>,
    writer: Mutex<TcpStream>,
    table: Arc<Mutex<Table>>,
    next_seq: AtomicU32,
    reader: Mutex<Option<JoinHandle<()>>>,
    /// The active configuration value (device state, shared by every context).
    pub active_config: Mutex<u8>,
    /// Claimed interfaces: interface number -> claiming handle id.
    pub claims: Mutex<HashMap<u8, u64>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Ok(w) = self.writer.lock() {
            let _ = w.shutdown(Shutdown::Both);
        }
        let reader = self.reader.lock().ok().and_then(|mut r| r.take());
        if let Some(t) = reader {
            let _ = t.join();
        }
    }
}

/// Sends GET_DESCRIPTOR(`kind`, `index`) on EP0 and reads the reply synchronously.
fn get_descriptor(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    devid: u32,
    seqnum: u32,
    kind: u8,
    index: u8,
    length: u16,
) -> Result<Vec<u8>, ClientError> {
    let [l0, l1] = length.to_le_bytes();
    let cmd = CmdSubmit {
        seqnum,
        devid,
        direction: DIR_IN,
        ep: 0,
        transfer_flags: URB_DIR_IN,
        transfer_buffer_length: u32::from(length),
        start_frame: 0,
        number_of_packets: 0,
        interval: 0,
        setup: [0x80, 6, index, kind, 0, 0, l0, l1],
        data: Vec::new(),
    };
    let mut buf = Vec::with_capacity(48);
    cmd.write(&mut buf)?;
    stream.write_all(&buf)?;
    match Reply::read(reader, |_| Some(u32::from(length)))? {
        Reply::Submit(r) if r.seqnum == seqnum && r.status == 0 => Ok(r.data),
        Reply::Submit(r) if r.seqnum == seqnum => Err(ClientError::Descriptor(r.status)),
        _ => Err(ProtocolError::Invalid("unexpected reply to GET_DESCRIPTOR".into()).into()),
    }
}

impl Connection {
    /// Imports `busid` from `addr`, reads its descriptors, and starts the reader thread.
    /// Retries for a while if the server says the device is busy.
    pub fn import(addr: SocketAddr, busid: &str) -> Result<Connection, ClientError> {
        let started = std::time::Instant::now();
        loop {
            match Connection::try_import(addr, busid) {
                Err(ClientError::Refused(ST_DEV_BUSY)) if started.elapsed() < BUSY_RETRY => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn try_import(addr: SocketAddr, busid: &str) -> Result<Connection, ClientError> {
        let mut stream = connect(addr)?;
        let mut req = OpHeader::new(OP_REQ_IMPORT, 0).encode().to_vec();
        req.extend_from_slice(&encode_busid(busid)?);
        stream.write_all(&req)?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let h = OpHeader::read(&mut reader)?;
        if h.code != OP_REP_IMPORT {
            return Err(ProtocolError::UnknownOp(h.code).into());
        }
        if h.status != 0 {
            return Err(ClientError::Refused(h.status));
        }
        let record = DeviceRecord::read(&mut reader)?;
        let devid = record.devid();
        let mut seq = 1;
        let mut next = || {
            seq += 1;
            seq - 1
        };
        let device_descriptor =
            get_descriptor(&mut stream, &mut reader, devid, next(), dt::DEVICE, 0, 18)?;
        if device_descriptor.len() < 18 || device_descriptor[1] != dt::DEVICE {
            return Err(ProtocolError::Invalid("short or wrong device descriptor".into()).into());
        }
        let mut configs = Vec::new();
        for index in 0..device_descriptor[17] {
            let head = get_descriptor(
                &mut stream,
                &mut reader,
                devid,
                next(),
                dt::CONFIGURATION,
                index,
                9,
            )?;
            if head.len() < 9 || head[1] != dt::CONFIGURATION {
                return Err(ProtocolError::Invalid(
                    "short or wrong configuration descriptor".into(),
                )
                .into());
            }
            let total = u16::from_le_bytes([head[2], head[3]]);
            let full = get_descriptor(
                &mut stream,
                &mut reader,
                devid,
                next(),
                dt::CONFIGURATION,
                index,
                total,
            )?;
            configs.push(full);
        }
        stream.set_read_timeout(None)?;
        let table = Arc::new(Mutex::new(Table::default()));
        let t = table.clone();
        let reader = std::thread::Builder::new()
            .name(format!("libusb-usbip-{busid}"))
            .spawn(move || reader_loop(reader, t))?;
        Ok(Connection {
            active_config: Mutex::new(record.configuration_value),
            claims: Mutex::new(HashMap::new()),
            record,
            device_descriptor,
            configs,
            writer: Mutex::new(stream),
            table,
            next_seq: AtomicU32::new(next()),
            reader: Mutex::new(Some(reader)),
        })
    }

    /// The device record of the import reply.
    pub fn record(&self) -> &DeviceRecord {
        &self.record
    }

    /// The 18-byte device descriptor.
    pub fn device_descriptor(&self) -> &[u8] {
        &self.device_descriptor
    }

    /// The raw configuration descriptors, by index.
    pub fn configs(&self) -> &[Vec<u8>] {
        &self.configs
    }

    /// False once the connection ended.
    pub fn is_open(&self) -> bool {
        !lock(&self.table).closed
    }

    /// A fresh sequence number for [`Connection::submit`].
    pub fn alloc_seq(&self) -> u32 {
        self.seq()
    }

    fn seq(&self) -> u32 {
        loop {
            let s = self.next_seq.fetch_add(1, Ordering::Relaxed);
            if s != 0 {
                return s;
            }
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.write_all(bytes)
    }

    /// Sends an URB under submission `id` with sequence number `seqnum` (from
    /// [`Connection::alloc_seq`]). Fails when the connection has ended (the URB is then not
    /// pending).
    pub fn submit(
        &self,
        id: u64,
        seqnum: u32,
        req: &UrbRequest,
        sink: Arc<dyn UrbSink>,
    ) -> Result<(), ClientError> {
        let is_in = req.is_in();
        let ep = u32::from(req.endpoint & 0x0f);
        let cmd = CmdSubmit {
            seqnum,
            devid: self.record.devid(),
            direction: if is_in { DIR_IN } else { DIR_OUT },
            ep,
            transfer_flags: req.flags | if is_in { URB_DIR_IN } else { 0 },
            transfer_buffer_length: if is_in {
                req.in_len
            } else {
                u32::try_from(req.out_data.len()).unwrap_or(u32::MAX)
            },
            start_frame: 0,
            number_of_packets: 0,
            interval: req.interval,
            setup: req.setup.unwrap_or([0; 8]),
            data: if is_in {
                Vec::new()
            } else {
                req.out_data.clone()
            },
        };
        let mut bytes = Vec::with_capacity(48 + cmd.data.len());
        cmd.write(&mut bytes)?;
        {
            let mut t = lock(&self.table);
            if t.closed {
                return Err(ClientError::Io(io::ErrorKind::NotConnected.into()));
            }
            t.urbs.insert(
                seqnum,
                Pending {
                    id,
                    in_len: is_in.then_some(req.in_len),
                    sink,
                },
            );
        }
        if let Err(e) = self.send(&bytes) {
            lock(&self.table).urbs.remove(&seqnum);
            self.shutdown();
            return Err(e.into());
        }
        Ok(())
    }

    /// Sends `USBIP_CMD_UNLINK` for the URB `seqnum` (submission `id`). The answer reaches
    /// the sink: `urb_finished(Unlinked)` or `unlink_answered`.
    pub fn unlink(
        &self,
        id: u64,
        seqnum: u32,
        endpoint: u8,
        sink: Arc<dyn UrbSink>,
    ) -> Result<(), ClientError> {
        let own = self.seq();
        let cmd = CmdUnlink {
            seqnum: own,
            devid: self.record.devid(),
            direction: if endpoint & 0x80 != 0 {
                DIR_IN
            } else {
                DIR_OUT
            },
            ep: u32::from(endpoint & 0x0f),
            unlink_seqnum: seqnum,
        };
        let mut bytes = Vec::with_capacity(48);
        cmd.write(&mut bytes)?;
        lock(&self.table).unlinks.insert(own, (id, sink));
        self.send(&bytes).map_err(|e| {
            self.shutdown();
            e.into()
        })
    }

    /// Closes the stream; the reader then reports every pending URB as closed.
    pub fn shutdown(&self) {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.shutdown(Shutdown::Both);
    }
}

fn reader_loop(mut r: BufReader<TcpStream>, table: Arc<Mutex<Table>>) {
    loop {
        let reply = Reply::read(&mut r, |seq| {
            lock(&table).urbs.get(&seq).and_then(|p| p.in_len)
        });
        match reply {
            Ok(Reply::Submit(ret)) => {
                let Some(p) = lock(&table).urbs.remove(&ret.seqnum) else {
                    // A reply to an URB never sent: the stream cannot be trusted.
                    break;
                };
                p.sink.urb_finished(
                    p.id,
                    UrbOutcome::Done {
                        status: ret.status,
                        actual: ret.actual_length,
                        data: ret.data,
                    },
                );
            }
            Ok(Reply::Unlink(u)) => {
                let mut t = lock(&table);
                let Some((id, sink)) = t.unlinks.remove(&u.seqnum) else {
                    break;
                };
                if u.status != 0 {
                    // Cancelled: no RET_SUBMIT will come for it.
                    t.urbs
                        .retain(|_, p| !(p.id == id && Arc::ptr_eq(&p.sink, &sink)));
                    drop(t);
                    sink.urb_finished(id, UrbOutcome::Unlinked);
                } else {
                    drop(t);
                    sink.unlink_answered(id);
                }
            }
            Err(_) => break,
        }
    }
    let pending: Vec<Pending> = {
        let mut t = lock(&table);
        t.closed = true;
        t.unlinks.clear();
        t.urbs.drain().map(|(_, p)| p).collect()
    };
    let _ = r.get_ref().shutdown(Shutdown::Both);
    for p in pending {
        p.sink.urb_finished(p.id, UrbOutcome::Closed);
    }
}
