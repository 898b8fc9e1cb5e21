//! scanconform: replays scripted cancel scenarios against scanner drivers.
pub mod driver;
pub mod drivers;
pub mod report;
pub mod rules;
pub mod runner;
pub mod scenario;
pub mod trace;
pub mod wia;
