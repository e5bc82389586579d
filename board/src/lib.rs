//! board crate (placeholder, filled by its issue).
#![cfg_attr(not(test), no_std)]

pub mod workload; // issue 4: the handover soak workload (target-free, host-tested)
