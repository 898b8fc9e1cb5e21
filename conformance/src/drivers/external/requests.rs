//! The driver's USB requests (`control_in`, `bulk_in`, `sleep`, ...) performed on the run's
//! host, each answered with a `done` message.

use scanemu::host::{Setup, UsbHost};
use scanemu::time::Duration;

use super::protocol::{payload, within, Done, FromDriver, ProtocolError};
use super::turns::NOT_A_REQUEST;
use super::Fault;

/// Performs one USB request of the driver on `host` and returns its completion; `max` is the
/// longest payload a request may ask for (`ExternalConfig::max_line_bytes`).
pub(super) async fn perform(
    req: FromDriver,
    host: &dyn UsbHost,
    max: usize,
) -> Result<Done, Fault> {
    let timeout = |us: u64| Duration::from_micros(us);
    let done = |id, r| Done::of(id, r, host.now().total_micros());
    Ok(match req {
        FromDriver::ControlIn {
            id,
            request_type,
            request,
            value,
            index,
            length,
            timeout_us,
        } => {
            let setup = Setup {
                request_type,
                request,
                value,
                index,
                length,
            };
            let r = host.control_in(setup, timeout(timeout_us)).await;
            done(id, r.map(Some))
        }
        FromDriver::ControlOut {
            id,
            request_type,
            request,
            value,
            index,
            data,
            timeout_us,
        } => {
            let data = payload("control_out", &data)?;
            let length = u16::try_from(data.len()).map_err(|_| ProtocolError::TooLong {
                what: "control_out",
                length: data.len(),
                max,
            })?;
            let setup = Setup {
                request_type,
                request,
                value,
                index,
                length,
            };
            let r = host.control_out(setup, &data, timeout(timeout_us)).await;
            done(id, r.map(|()| None))
        }
        FromDriver::BulkIn {
            id,
            ep,
            length,
            timeout_us,
        } => {
            within("bulk_in", length, max)?;
            let mut buf = vec![0u8; length];
            let r = host.bulk_in(ep, &mut buf, timeout(timeout_us)).await;
            done(
                id,
                r.map(|n| {
                    buf.truncate(n);
                    Some(buf)
                }),
            )
        }
        FromDriver::BulkOut {
            id,
            ep,
            data,
            timeout_us,
        } => {
            let data = payload("bulk_out", &data)?;
            let r = host.bulk_out(ep, &data, timeout(timeout_us)).await;
            let mut d = done(id, r.as_ref().map(|_| None).map_err(Clone::clone));
            if let Ok(n) = r {
                d.actual = Some(n);
            }
            d
        }
        FromDriver::InterruptIn {
            id,
            ep,
            length,
            timeout_us,
        } => {
            within("interrupt_in", length, max)?;
            let mut buf = vec![0u8; length];
            let r = host.interrupt_in(ep, &mut buf, timeout(timeout_us)).await;
            done(
                id,
                r.map(|n| {
                    buf.truncate(n);
                    Some(buf)
                }),
            )
        }
        FromDriver::ClearHalt { id, ep } => done(id, host.clear_halt(ep).await.map(|()| None)),
        FromDriver::ResetDevice { id } => done(id, host.reset_device().await.map(|()| None)),
        FromDriver::AbortEndpoint { id, ep } => {
            host.abort_endpoint(ep);
            done(id, Ok(None))
        }
        FromDriver::Sleep { id, duration_us } => {
            host.sleep(Duration::from_micros(duration_us)).await;
            done(id, Ok(None))
        }
        FromDriver::Now { id } => done(id, Ok(None)),
        other => {
            return Err(Fault::OutOfTurn {
                message: other.name(),
                when: NOT_A_REQUEST,
            })
        }
    })
}
