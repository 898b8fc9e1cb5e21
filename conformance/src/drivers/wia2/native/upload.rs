//! An upload: the application's stream read (Stat, Seek, Read only, H2) into the bulk OUT
//! endpoint.

use super::*;

impl Wia2Driver {
    pub(super) async fn upload(
        &self,
        ctx: &ItemContext,
        dev: &Scanner<'_>,
        cb: &dyn TransferCallback2,
    ) -> Result<Hresult, Stop> {
        dev.wait_ready()
            .await
            .map_err(|hr| Stop::Device(DeviceEnd::Error(hr)))?;
        let got = cb
            .get_next_stream(&ctx.item.name, &ctx.item.full_name)
            .await;
        let stream = match (answer(got.hr), got.stream) {
            (Answer::Go, Some(s)) => s,
            (Answer::Go, None) => return Err(Stop::Failed(Hresult::E_POINTER)),
            (Answer::Cancel, _) => return Err(Stop::Cancelled(Cause::NextStream)),
            (Answer::Skip, _) => return Ok(Hresult::S_OK),
            (Answer::Fail(hr), _) => return Err(Stop::Failed(self.callback_failure(hr))),
        };
        let result = self.upload_from(stream.as_ref(), dev, cb).await;
        stream.release();
        result
    }

    pub(super) async fn upload_from(
        &self,
        stream: &dyn AppStream,
        dev: &Scanner<'_>,
        cb: &dyn TransferCallback2,
    ) -> Result<Hresult, Stop> {
        let retry = self.is(Mutation2::UploadRetriesRead);
        let (hr, size) = stream.stat().await;
        let size = match (hr.failed(), retry) {
            (false, _) => size,
            (true, true) => u64::MAX,
            (true, false) => return Err(Stop::Failed(hr)),
        };
        if self.is(Mutation2::UploadSetSize) {
            let hr = stream.set_size(size).await;
            if hr.failed() {
                return Err(Stop::Failed(hr));
            }
        }
        let (hr, _) = stream.seek(0, SeekOrigin::Set).await;
        if hr.failed() && !retry {
            return Err(Stop::Failed(hr));
        }
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let mut sent = 0u64;
        loop {
            if self.cancel_io.get() {
                return Err(Stop::Cancelled(Cause::Event));
            }
            let io = stream.read(&mut buf).await;
            let n = if io.hr.failed() {
                if !retry {
                    return Err(Stop::Failed(io.hr));
                }
                0
            } else {
                io.bytes as usize
            };
            if n == 0 {
                if retry && sent < size {
                    dev.host.sleep(RETRY_PAUSE).await;
                    continue;
                }
                break;
            }
            dev.write_out(&buf[..n])
                .await
                .map_err(|hr| Stop::Device(DeviceEnd::Error(hr)))?;
            sent += n as u64;
            let percent = if size == 0 || size == u64::MAX {
                0
            } else {
                ((sent * 100) / size).min(100) as i32
            };
            match self.send(cb, TransferParams::status(percent, sent)).await {
                Answer::Go => {}
                Answer::Cancel => return Err(Stop::Cancelled(Cause::SendMessage)),
                Answer::Skip => return Ok(Hresult::S_OK),
                Answer::Fail(hr) => return Err(self.send_message_failure(hr)),
            }
        }
        Ok(Hresult::S_OK)
    }
}
