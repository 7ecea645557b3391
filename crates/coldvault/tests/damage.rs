//! Damage records and the replicator: a copy recorded damaged on its node is not counted as
//! stored but written again (atomically, over it), and its record is removed once a good copy
//! is in place; a copy of the right size without a record is trusted; a record never costs a
//! good copy.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use coldvault::store::{
    Backoff, ObjectKey, Payload, Replicator, RetryingTarget, SharedTarget, Target,
};
use coldvault::Status;
use coldvault_testing::{Fault, FaultyTarget, MemoryTarget};

const KEY: &str = "data/ab/abcdef.tar.zst";
const RECORD: &str = "damaged/data/ab/abcdef.tar.zst.json";
const GOOD: &[u8] = b"the good bytes of a data file";

struct Nodes {
    memory: Vec<Arc<MemoryTarget>>,
    faulty: Vec<Arc<FaultyTarget>>,
}

impl Nodes {
    fn new(names: &[&str]) -> Nodes {
        let memory: Vec<_> = names
            .iter()
            .map(|n| Arc::new(MemoryTarget::new(n)))
            .collect();
        let faulty = memory
            .iter()
            .map(|m| Arc::new(FaultyTarget::new(m.clone(), vec![])))
            .collect();
        Nodes { memory, faulty }
    }

    /// A fresh replicator over the nodes, as a new backup process would open it.
    fn replicator(&self, replicas: usize) -> Replicator {
        let nodes = self
            .faulty
            .iter()
            .map(|f| {
                Arc::new(RetryingTarget::new(
                    f.clone(),
                    Backoff::new(1, Duration::from_millis(1)),
                )) as SharedTarget
            })
            .collect();
        Replicator::new(nodes, replicas)
    }

    fn read(&self, i: usize, key: &str) -> Vec<u8> {
        let mut v = Vec::new();
        self.memory[i]
            .get(&ObjectKey::new(key))
            .unwrap()
            .read_to_end(&mut v)
            .unwrap();
        v
    }

    /// Flips a byte of `KEY` on node `i` (same size) and writes a record of it there, as a
    /// verify that found it would.
    fn damage_and_record(&self, i: usize) {
        self.memory[i].tamper(KEY, |b| b[3] ^= 0x01);
        let record = format!(
            r#"{{"format":1,"key":"{KEY}","node":"{}","checksum":"{}","size":{},"found_by":"verify","time":"2026-11-25T10:00:00Z","detail":"checksum mismatch"}}"#,
            self.memory[i].name(),
            checksum(),
            GOOD.len()
        );
        self.memory[i]
            .put(&ObjectKey::new(RECORD), Payload::Bytes(record.as_bytes()))
            .unwrap();
    }

    fn has_record(&self, i: usize) -> bool {
        self.memory[i].keys().iter().any(|k| k == RECORD)
    }
}

fn checksum() -> String {
    blake3::hash(GOOD).to_hex().to_string()
}

fn put(r: &Replicator) -> coldvault::Result<coldvault::store::Receipt> {
    r.put(
        &ObjectKey::new(KEY),
        Payload::Bytes(GOOD),
        GOOD.len() as u64,
        &checksum(),
    )
}

#[test]
fn a_copy_recorded_damaged_is_written_again_and_its_record_removed() {
    let nodes = Nodes::new(&["a", "b"]);
    put(&nodes.replicator(2)).unwrap();
    nodes.damage_and_record(0);
    nodes.damage_and_record(1);
    let receipt = put(&nodes.replicator(2)).unwrap();
    assert_eq!(receipt.nodes.len(), 2);
    for i in 0..2 {
        assert_eq!(nodes.read(i, KEY), GOOD, "node {i} holds good bytes again");
        assert!(!nodes.has_record(i), "record removed on node {i}");
    }
}

#[test]
fn a_copy_of_the_right_size_without_a_record_is_trusted_and_not_written_again() {
    let nodes = Nodes::new(&["a", "b"]);
    put(&nodes.replicator(2)).unwrap();
    nodes.memory[0].tamper(KEY, |b| b[3] ^= 0x01);
    let before: Vec<u64> = nodes.faulty.iter().map(|f| f.puts()).collect();
    put(&nodes.replicator(2)).unwrap();
    let after: Vec<u64> = nodes.faulty.iter().map(|f| f.puts()).collect();
    assert_eq!(
        before, after,
        "no put: size is the only check without a record"
    );
    assert_ne!(nodes.read(0, KEY), GOOD);
}

#[test]
fn a_recorded_copy_is_written_again_even_when_enough_good_copies_are_elsewhere() {
    let nodes = Nodes::new(&["a", "b", "c"]);
    let r = nodes.replicator(1);
    for f in &nodes.faulty {
        f.put(&ObjectKey::new(KEY), Payload::Bytes(GOOD)).unwrap();
    }
    nodes.damage_and_record(1);
    let receipt = put(&r).unwrap();
    assert!(receipt.nodes.contains(&"b".to_owned()), "{receipt:?}");
    assert_eq!(nodes.read(1, KEY), GOOD);
    assert!(!nodes.has_record(1));
}

#[test]
fn a_failed_overwrite_leaves_the_copy_and_its_record_and_places_the_file_elsewhere() {
    let nodes = Nodes::new(&["a", "b", "c"]);
    let r = nodes.replicator(2);
    let receipt = put(&r).unwrap();
    let on: Vec<usize> = receipt
        .nodes
        .iter()
        .map(|n| ["a", "b", "c"].iter().position(|x| x == n).unwrap())
        .collect();
    let victim = on[0];
    nodes.damage_and_record(victim);
    nodes.faulty[victim].set_faults(vec![Fault::FailAllPuts(Status::Permanent)]);
    let damaged = nodes.read(victim, KEY);
    let receipt = put(&nodes.replicator(2)).unwrap();
    assert_eq!(receipt.nodes.len(), 2, "{receipt:?}");
    assert!(!receipt.nodes.contains(&["a", "b", "c"][victim].to_owned()));
    assert_eq!(
        nodes.read(victim, KEY),
        damaged,
        "nothing deleted without a replacement"
    );
    assert!(
        nodes.has_record(victim),
        "the record stays until a good copy is there"
    );
}

#[test]
fn a_node_whose_records_cannot_be_listed_gets_its_copy_written_again() {
    let nodes = Nodes::new(&["a", "b"]);
    put(&nodes.replicator(2)).unwrap();
    nodes.memory[0].tamper(KEY, |b| b[3] ^= 0x01);
    nodes.faulty[0].set_faults(vec![Fault::FailLists(Status::Permanent)]);
    let before = nodes.faulty[0].puts();
    put(&nodes.replicator(2)).unwrap();
    assert_eq!(nodes.faulty[0].puts(), before + 1, "not trusted unchecked");
    assert_eq!(nodes.read(0, KEY), GOOD);
}

#[test]
fn a_recorded_copy_of_the_wrong_size_is_written_again_before_a_better_ranked_node() {
    let nodes = Nodes::new(&["a", "b", "c", "d"]);
    let r = nodes.replicator(2);
    let rank = r.order(&ObjectKey::new(KEY));
    // The copies are on the first- and third-ranked nodes (as after a repair while the second was
    // away); the third's is cut short and recorded (what verify's `size` leaves).
    for &i in [rank[0], rank[2]].iter() {
        nodes.faulty[i]
            .put(&ObjectKey::new(KEY), Payload::Bytes(GOOD))
            .unwrap();
    }
    let victim = rank[2];
    nodes.damage_and_record(victim);
    nodes.memory[victim].tamper(KEY, |b| b.truncate(4));
    assert!(r.damage().load(r.nodes()).is_empty());
    let receipt = put(&r).unwrap();
    let names: Vec<&str> = ["a", "b", "c", "d"].to_vec();
    assert_eq!(
        receipt.nodes,
        vec![names[rank[0]].to_owned(), names[rank[2]].to_owned()],
        "healed where it is recorded, not placed on the next node"
    );
    assert_eq!(nodes.read(victim, KEY), GOOD);
    assert!(!nodes.has_record(victim));
    assert_eq!(
        nodes.memory[rank[1]].keys().len(),
        0,
        "nothing written elsewhere"
    );
}
