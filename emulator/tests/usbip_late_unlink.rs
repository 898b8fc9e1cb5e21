//! An unlink that reaches the USB/IP server after the device handed an URB its data, while the
//! completion still crosses the bus (paced by wire time), does not drop the data: the
//! `RET_SUBMIT` comes with the whole band, then the `RET_UNLINK` with status 0, as the Linux
//! stub answers an unlink of an URB it already gave back.
//!
//! This is the race of a bulk read whose timeout fires while its band is on the wire: the
//! client's timeout unlinks the URB, and before this rule the server answered `-ECONNRESET`
//! and threw away a band the device counted as sent (the next read then got the next band, or
//! the tail of a band, and the scan broke). The device here is at full speed with one large
//! band, so the band spends hundreds of milliseconds on the wire and the unlink, sent as soon
//! as the device says the band is sent, always lands in that window.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use scanemu::engine::{pattern_line, ScanJob, ScanMode, ScanSource};
use scanemu::host::Setup;
use scanemu::personality::native::protocol::*;
use scanemu::personality::{DeviceNote, NoteKind};
use scanemu::profile::Profile;
use scanemu::usb::speed::Speed;
use scanemu::usbip::protocol::{
    encode_busid, errno, CmdSubmit, CmdUnlink, DeviceRecord, OpHeader, Reply, DIR_IN, DIR_OUT,
    OP_REQ_IMPORT,
};
use scanemu::usbip::{ServerConfig, UsbIpServer};

/// The whole 256 x 256 color48 page in one band: 393216 bytes, about 320 ms at full speed.
const JOB: ScanJob = ScanJob {
    resolution_dpi: 100,
    mode: ScanMode::Color48,
    x_px: 0,
    y_px: 0,
    width_px: 256,
    height_px: 256,
    source: ScanSource::Flatbed,
    pages: 1,
};

/// The fast profile at full speed (64-byte bulk packets), with the page in one band.
fn slow_bus_profile() -> Profile {
    let mut p = Profile::builtin_fast();
    p.usb.speed = Speed::Full;
    p.usb.bulk_max_packet = 64;
    p.timing.band_lines = 256;
    p.validate().expect("a valid full-speed profile");
    p
}

struct Raw {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    devid: u32,
    seq: u32,
    /// Sequence numbers of the IN URBs (their replies carry data).
    ins: Vec<u32>,
}

impl Raw {
    fn import(addr: SocketAddr) -> Raw {
        let mut stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(StdDuration::from_secs(10)))
            .unwrap();
        let mut req = OpHeader::new(OP_REQ_IMPORT, 0).encode().to_vec();
        req.extend_from_slice(&encode_busid("1-1").unwrap());
        stream.write_all(&req).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let h = OpHeader::read(&mut reader).unwrap();
        assert_eq!(h.status, 0, "import of 1-1");
        let rec = DeviceRecord::read(&mut reader).unwrap();
        Raw {
            stream,
            reader,
            devid: rec.devid(),
            seq: 0,
            ins: Vec::new(),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    fn submit(&mut self, ep: u32, dir: u32, len: u32, setup: [u8; 8], data: &[u8]) -> u32 {
        let seqnum = self.next_seq();
        if dir == DIR_IN {
            self.ins.push(seqnum);
        }
        let mut buf = Vec::new();
        CmdSubmit {
            seqnum,
            devid: self.devid,
            direction: dir,
            ep,
            transfer_flags: 0,
            transfer_buffer_length: len,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup,
            data: data.to_vec(),
        }
        .write(&mut buf)
        .unwrap();
        self.stream.write_all(&buf).unwrap();
        seqnum
    }

    fn unlink(&mut self, victim: u32) -> u32 {
        let seqnum = self.next_seq();
        let mut buf = Vec::new();
        CmdUnlink {
            seqnum,
            devid: self.devid,
            direction: DIR_IN,
            ep: u32::from(EP_DATA_IN & 0x0f),
            unlink_seqnum: victim,
        }
        .write(&mut buf)
        .unwrap();
        self.stream.write_all(&buf).unwrap();
        seqnum
    }

    fn reply(&mut self) -> Reply {
        let ins = &self.ins;
        Reply::read(&mut self.reader, |seq| {
            ins.contains(&seq).then_some(1 << 20)
        })
        .expect("a reply")
    }

    /// A control transfer, answered before anything else is pending.
    fn control(&mut self, setup: Setup, data: &[u8]) -> Vec<u8> {
        let (dir, len) = if setup.request_type & 0x80 != 0 {
            (DIR_IN, u32::from(setup.length))
        } else {
            (DIR_OUT, data.len() as u32)
        };
        let seq = self.submit(0, dir, len, setup.to_bytes(), data);
        match self.reply() {
            Reply::Submit(r) if r.seqnum == seq && r.status == 0 => r.data,
            other => panic!("control request {}: {other:?}", setup.request),
        }
    }
}

#[test]
fn an_unlink_after_the_device_sent_the_data_delivers_it() {
    let (notes_tx, notes) = mpsc::channel::<NoteKind>();
    let notes_tx = std::sync::Mutex::new(notes_tx);
    let mut config = ServerConfig::new(slow_bus_profile());
    config.device_mut().notes = Some(Arc::new(move |n: &DeviceNote| {
        let _ = notes_tx.lock().unwrap().send(n.kind);
    }));
    let server =
        UsbIpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).expect("binds loopback");
    let mut raw = Raw::import(server.local_addr());

    let params = ScanParams { job: JOB }.encode();
    raw.control(
        Setup::vendor_out(REQ_SET_PARAMS, 0, 0, params.len() as u16),
        &params,
    );
    let report = ParamsReport::decode(&raw.control(
        Setup::vendor_in(REQ_GET_PARAMS, 0, 0, PARAMS_REPORT_LEN as u16),
        &[],
    ))
    .unwrap();
    assert_eq!(report.band_bytes, 256 * 6 * 256, "the page is one band");
    raw.control(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[]);

    // One packet more than the band, so its ZLP ends the transfer (PROTOCOL.md).
    let read = raw.submit(
        u32::from(EP_DATA_IN & 0x0f),
        DIR_IN,
        report.band_bytes + 64,
        [0; 8],
        &[],
    );
    // The device has handed the whole band to the URB; its completion is on the wire.
    let until = std::time::Instant::now() + StdDuration::from_secs(10);
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match notes.recv_timeout(left) {
            Ok(NoteKind::BandSent) => break,
            Ok(_) => {}
            Err(e) => panic!("no band-sent note: {e}"),
        }
    }
    let unlink = raw.unlink(read);

    let mut band = Vec::new();
    for _ in 0..2 {
        match raw.reply() {
            Reply::Submit(r) => {
                assert_eq!((r.seqnum, r.status), (read, 0), "the read completes");
                band = r.data;
            }
            Reply::Unlink(u) => {
                assert_eq!(u.seqnum, unlink);
                assert_ne!(
                    u.status,
                    -errno::ECONNRESET,
                    "the unlink cancelled a read whose band the device had already sent: \
                     the band is lost"
                );
                assert_eq!(u.status, 0);
                assert_eq!(
                    band.len(),
                    report.band_bytes as usize,
                    "RET_SUBMIT comes first"
                );
            }
        }
    }
    let bpl = JOB.bytes_per_line() as usize;
    let mut expected = vec![0u8; bpl * 256];
    for (i, line) in expected.chunks_mut(bpl).enumerate() {
        pattern_line(0, i as u32, line);
    }
    assert!(band == expected, "the band is the page, byte for byte");
}
