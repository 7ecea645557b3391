//! Test helpers for coldvault: an in-memory target, a fault-injecting target, fixture builders and
//! a tree comparison that checks what a user would check after a restore, and a comparison of two
//! PostgreSQL databases (`pg_compare`).

mod azurite;
mod faulty;
pub mod fixtures;
mod garage;
mod mariadb;
mod memory;
mod moto;
mod pg;
pub mod pg_compare;
mod sftp;
mod spark;

pub use azurite::Azurite;
pub use faulty::{Fault, FaultyTarget};
pub use garage::Garage;
pub use mariadb::Mariadb;
pub use memory::MemoryTarget;
pub use moto::Moto;
pub use pg::Postgres;
pub use sftp::Sftp;
pub use spark::Spark;

/// The directory named by `var` and the `KEY=value` lines of its `env` file, written by the
/// script that started a service. Panics with the reason when the service is not running:
/// a test that needs a service fails, it never skips.
pub(crate) fn service_env(
    var: &str,
    service: &str,
    script: &str,
) -> (
    std::path::PathBuf,
    std::collections::HashMap<String, String>,
) {
    let dir = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: these tests need the {service} that scripts/test starts ({script})"
        )
    });
    let dir = std::path::PathBuf::from(dir);
    let text = std::fs::read_to_string(dir.join("env"))
        .unwrap_or_else(|e| panic!("no {service} in {}: {e}", dir.display()));
    let vars = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (dir, vars)
}
