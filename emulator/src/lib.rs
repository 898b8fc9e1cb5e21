//! scanemu: a software USB scanner.
pub mod time;
