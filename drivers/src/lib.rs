//! drivers crate (placeholder, filled by its issue).
#![cfg_attr(not(test), no_std)]
