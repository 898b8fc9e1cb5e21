//! The driver's side of the application's streams: asking for the next one, opening it at
//! its end (H5), writing at its own position (H20), releasing it before the next (H7).

use super::*;

impl Wia2Driver {
    /// Releases the stream being written; `done`: its page or item is complete (not a stop).
    pub(super) async fn release_current(&self, cb: &dyn TransferCallback2, done: bool) {
        let Some(out) = self.current.borrow_mut().take() else {
            return;
        };
        if self.is(Mutation2::LateRelease) {
            // Released after the next GetNextStream, or before returning.
            self.release_previous();
            *self.previous.borrow_mut() = Some(out);
            return;
        }
        out.stream.release();
        if done && self.is(Mutation2::SendsEndOfStream) {
            let _ = cb
                .send_message(TransferParams {
                    msg: TransferMsg::END_OF_STREAM,
                    percent: 100,
                    bytes: out.written,
                    status: Hresult::S_OK,
                })
                .await;
        }
        if done && self.is(Mutation2::TouchAfterNext) {
            *self.previous.borrow_mut() = Some(out);
        }
    }

    /// The stream a mutant kept: [`Mutation2::LateRelease`] releases it now.
    pub(super) fn release_previous(&self) {
        if let Some(out) = self.previous.borrow_mut().take() {
            if self.is(Mutation2::LateRelease) {
                out.stream.release();
            }
        }
    }

    /// [`Mutation2::TouchAfterNext`]: after the next GetNextStream gave a stream, rewrites the
    /// previous stream's header (the same bytes) through the reference it released.
    pub(super) async fn touch_previous(&self) {
        let Some(out) = self.previous.borrow_mut().take() else {
            return;
        };
        let (hr, _) = out.stream.seek(out.base as i64, SeekOrigin::Set).await;
        if hr == Hresult::S_OK {
            let _ = out.stream.write(&out.header).await;
        }
    }

    /// GetNextStream: `Some` stream, `None` for a skipped item, or why to stop.
    pub(super) async fn next_stream(
        &self,
        cb: &dyn TransferCallback2,
        item: &Item,
    ) -> Result<Option<Box<dyn AppStream>>, Stop> {
        let got = cb.get_next_stream(&item.name, &item.full_name).await;
        if self.is(Mutation2::LateRelease) {
            self.release_previous();
        }
        match (answer(got.hr), got.stream) {
            (Answer::Go, Some(stream)) => {
                if self.is(Mutation2::TouchAfterNext) {
                    self.touch_previous().await;
                }
                Ok(Some(stream))
            }
            (Answer::Go, None) => {
                if self.is(Mutation2::NullStreamCrash) {
                    if let Some(run) = self.run.borrow().as_ref() {
                        run.fault(
                            "crash: access violation: IStream::Seek called through the NULL stream pointer GetNextStream returned with S_OK",
                        );
                    }
                    return Err(Stop::Crashed);
                }
                Err(Stop::Failed(Hresult::E_POINTER))
            }
            (Answer::Cancel, _) => {
                if self.is(Mutation2::GnsAfterGnsCancel) {
                    let _ = cb.get_next_stream(&item.name, &item.full_name).await;
                }
                Err(Stop::Cancelled(Cause::NextStream))
            }
            (Answer::Skip, _) => Ok(None),
            (Answer::Fail(_), _) if self.is(Mutation2::GnsErrorIgnored) => Ok(None),
            (Answer::Fail(hr), _) => Err(Stop::Failed(self.callback_failure(hr))),
        }
    }

    /// Takes a download stream: its data goes after what it holds (H5).
    pub(super) async fn open(
        &self,
        stream: Box<dyn AppStream>,
        data_total: u64,
    ) -> Result<(), Stop> {
        if self.is(Mutation2::StatStream) {
            let (hr, _) = stream.stat().await;
            if hr.failed() {
                stream.release();
                return Err(Stop::Failed(hr));
            }
        }
        let base = if self.is(Mutation2::Overwrite) {
            0
        } else {
            let (hr, end) = stream.seek(0, SeekOrigin::End).await;
            if hr.failed() {
                stream.release();
                return Err(Stop::Failed(hr));
            }
            end
        };
        if self.is(Mutation2::SharedPosition) {
            SHARED_WRITTEN.with(|w| w.set(0));
        }
        *self.current.borrow_mut() = Some(Out {
            stream,
            base,
            written: 0,
            data: 0,
            data_total,
            last_chunk: 0,
            header: Vec::new(),
        });
        Ok(())
    }

    /// Writes `bytes` at the driver's own position in the current stream (seeking there first
    /// unless it just got the stream, H20).
    pub(super) async fn write(&self, bytes: &[u8], seek: bool) -> Result<(), Stop> {
        let seek = seek && !self.is(Mutation2::NoReseek);
        // Taken out while the stream works, put back after.
        let Some(mut out) = self.current.borrow_mut().take() else {
            return Ok(());
        };
        let shared = self.is(Mutation2::SharedPosition);
        let pos = if shared {
            out.base + SHARED_WRITTEN.with(Cell::get)
        } else {
            out.base + out.written
        };
        let result = async {
            if seek {
                let (hr, _) = out.stream.seek(pos as i64, SeekOrigin::Set).await;
                if hr.failed() {
                    return Err(Stop::Failed(hr));
                }
            }
            let io = out.stream.write(bytes).await;
            out.written += io.bytes;
            if shared {
                SHARED_WRITTEN.with(|w| w.set(w.get() + io.bytes));
            }
            out.last_chunk = io.bytes;
            if io.hr.failed() && !self.is(Mutation2::WriteErrorIgnored) {
                return Err(Stop::Failed(io.hr));
            }
            Ok(())
        }
        .await;
        *self.current.borrow_mut() = Some(out);
        result
    }
}
