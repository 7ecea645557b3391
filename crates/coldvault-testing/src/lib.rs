//! Test helpers for coldvault: an in-memory target, a fault-injecting target, fixture builders and
//! a tree comparison that checks what a user would check after a restore.

mod faulty;
pub mod fixtures;
mod memory;

pub use faulty::{Fault, FaultyTarget};
pub use memory::MemoryTarget;
