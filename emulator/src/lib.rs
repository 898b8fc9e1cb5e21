//! scanemu: a software USB scanner.
pub mod speed;
pub mod time;
