//! The WIA 2.0 roles around a stream driver: the application ([`app`]), the service
//! ([`service`]) and the application's streams ([`stream`]), beside the WIA 1.0 roles and
//! writing to the same trace through the same [`super::RoleTrace`].
//!
//! Calls go one way, as in Windows: the application calls the service (`IWiaTransfer::Download`,
//! `Upload`, `Cancel`), the service calls the driver (`drvAcquireItemData`,
//! `drvNotifyPnPEvent`), and the driver calls the service back (`GetNextStream`, `SendMessage`)
//! and the application's streams directly. The service reaches the application only through the
//! [`service::AppCallback`] trait it defines. [`expected`] says what each stream should hold;
//! [`process`] is the host a service process's driver uses, whose transfers end with it.

pub(crate) mod app;
pub(crate) mod expected;
pub(crate) mod process;
pub(crate) mod service;
pub(crate) mod stream;
