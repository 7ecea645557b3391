//! Test helpers for coldvault: an in-memory target, a fault-injecting target, fixture builders and
//! a tree comparison that checks what a user would check after a restore.

mod faulty;
pub mod fixtures;
mod garage;
mod memory;
mod pg;
mod spark;

pub use faulty::{Fault, FaultyTarget};
pub use garage::Garage;
pub use memory::MemoryTarget;
pub use pg::Postgres;
pub use spark::Spark;
