//! The WIA 2.0 contract over the exchange: [`MiniDriver2`] for an `exec:` driver whose hello
//! names `wia2`, its `acquire_item_data` with the items, and the driver's stream calls
//! relayed to the application's streams (DRIVER-PROTOCOL.md, "The wia2 contract").

use super::*;

/// An item as `acquire_item_data` carries it.
fn wire_item(i: &Item) -> WireItem<'_> {
    WireItem {
        name: &i.name,
        full_name: &i.full_name,
        job: &i.job,
    }
}

impl ExternalDriver {
    /// A WIA 2.0 call (drvAcquireItemData); a `Fault` ends it. The USB requests and the
    /// version 2 messages are those of a WIA 1.0 acquisition; the driver's callbacks go to
    /// `callback`, its stream calls to the streams it was given.
    pub(super) async fn transfer2(
        &self,
        ctx: &ItemContext,
        host: &dyn UsbHost,
        callback: &dyn TransferCallback2,
    ) -> Result<Hresult, Fault> {
        let call = {
            let mut st = self.state.borrow_mut();
            st.acquisitions += 1;
            st.acquisitions
        };
        self.send(&ToDriver::AcquireItemData {
            call,
            flags: ctx.flags,
            tymed: ctx.tymed,
            format: ctx.format.name(),
            item: wire_item(&ctx.item),
            children: ctx.children.iter().map(wire_item).collect(),
            interface: ctx.interface,
            now_us: host.now().total_micros(),
        })?;
        loop {
            let msg = self.recv()?;
            turns::check(&msg, Phase::Acquire, self.version(), self.wants)?;
            match msg {
                FromDriver::Result { hr } => return Ok(hresult_from_wire(hr)?),
                FromDriver::GetNextStream {
                    item_name,
                    full_item_name,
                } => {
                    let got = callback.get_next_stream(&item_name, &full_item_name).await;
                    self.check_alive()?;
                    let stream = got.stream.map(|s| {
                        let id = s.id();
                        self.state.borrow_mut().streams.insert(id, Rc::from(s));
                        id
                    });
                    self.send(&ToDriver::NextStream {
                        hr: got.hr.0 as u32,
                        stream,
                    })?;
                }
                FromDriver::SendMessage {
                    msg,
                    percent,
                    bytes,
                    status,
                } => {
                    let params = TransferParams {
                        msg: crate::wia::TransferMsg(msg),
                        percent,
                        bytes,
                        status: status_from_wire(status)?,
                    };
                    let hr = callback.send_message(params).await;
                    self.check_alive()?;
                    self.send(&ToDriver::MessageResult { hr: hr.0 as u32 })?;
                }
                FromDriver::Stream { stream, op } => {
                    let s = self.stream(stream, op.name())?;
                    let result = self.stream_call(s.as_ref(), op).await?;
                    self.check_alive()?;
                    self.send(&ToDriver::StreamResult(result))?;
                }
                FromDriver::Release { stream } => self.stream(stream, "release")?.release(),
                FromDriver::Submit { id, request } => {
                    let request = request.to_request(self.config.max_line_bytes)?;
                    self.submit(id, request)?;
                }
                FromDriver::Cancel { id } => self.cancel(id)?,
                FromDriver::Wait {} => {
                    let done = self.next_completion(host).await?;
                    self.send(&ToDriver::Done(done))?;
                }
                request => {
                    self.check_blocking(&request)?;
                    let done = requests::perform(request, host, self.config.max_line_bytes).await?;
                    self.check_alive()?;
                    self.send(&ToDriver::Done(done))?;
                }
            }
        }
    }

    /// The stream numbered `id` that a `next_stream` gave the driver instance.
    pub(super) fn stream(&self, id: u32, op: &'static str) -> Result<Rc<dyn AppStream>, Fault> {
        self.state
            .borrow()
            .streams
            .get(&id)
            .cloned()
            .ok_or(Fault::UnknownStream { stream: id, op })
    }

    /// Runs one IStream method on `s`; what it returned, as `stream_result` carries it.
    pub(super) async fn stream_call(
        &self,
        s: &dyn AppStream,
        op: StreamOp,
    ) -> Result<StreamResult, Fault> {
        let hr = |h: Hresult| h.0 as u32;
        Ok(match op {
            StreamOp::Write { data } => {
                let data = payload("stream write", &data)?;
                let io = s.write(&data).await;
                StreamResult {
                    hr: hr(io.hr),
                    actual: Some(io.bytes),
                    ..StreamResult::default()
                }
            }
            StreamOp::Read { length } => {
                within("stream read", length, self.config.max_line_bytes)?;
                let mut buf = vec![0u8; length];
                let io = s.read(&mut buf).await;
                let n = usize::try_from(io.bytes).unwrap_or(length).min(length);
                StreamResult {
                    hr: hr(io.hr),
                    actual: Some(io.bytes),
                    data: Some(BASE64.encode(&buf[..n])),
                    ..StreamResult::default()
                }
            }
            StreamOp::Seek { offset, origin } => {
                let (h, position) = s.seek(offset, seek_origin(origin)?).await;
                StreamResult {
                    hr: hr(h),
                    position: Some(position),
                    ..StreamResult::default()
                }
            }
            StreamOp::SetSize { size } => StreamResult {
                hr: hr(s.set_size(size).await),
                ..StreamResult::default()
            },
            StreamOp::Stat {} => {
                let (h, size) = s.stat().await;
                StreamResult {
                    hr: hr(h),
                    size: Some(size),
                    ..StreamResult::default()
                }
            }
        })
    }
}

#[async_trait(?Send)]
impl MiniDriver2 for ExternalDriver {
    fn acquire_children_capable(&self) -> bool {
        self.state
            .borrow()
            .identity
            .as_ref()
            .is_some_and(|i| i.acquire_children)
    }

    async fn acquire_item_data(
        &self,
        ctx: &ItemContext,
        host: &dyn UsbHost,
        callback: &dyn TransferCallback2,
    ) -> Hresult {
        self.exchange(self.transfer2(ctx, host, callback)).await
    }

    fn notify_pnp_event(&self, event: PnpEvent, host: &dyn UsbHost) {
        MiniDriver::notify_pnp_event(self, event, host);
    }

    fn begin_run(&self, run: Rc<dyn RunContext>) {
        self.begin(run);
    }

    fn end_run(&self) {
        self.stop();
    }
}
