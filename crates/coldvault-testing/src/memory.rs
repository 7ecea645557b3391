//! `MemoryTarget`: a node in a hash map, for unit tests of the store.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

use coldvault::store::{ObjectKey, Payload, Target};
use coldvault::{Error, ErrorKind, Result};

/// A node that keeps its objects in memory.
#[derive(Debug, Default)]
pub struct MemoryTarget {
    name: String,
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryTarget {
    /// An empty node called `name`.
    pub fn new(name: &str) -> Self {
        MemoryTarget {
            name: name.to_owned(),
            objects: Mutex::default(),
        }
    }

    /// Changes an object in place (tests of damage).
    pub fn tamper(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(v) = self.objects.lock().unwrap().get_mut(key) {
            f(v)
        }
    }

    /// The keys held.
    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }
}

impl Target for MemoryTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn put(&self, key: &ObjectKey, payload: Payload<'_>) -> Result<()> {
        let mut buf = Vec::new();
        payload
            .open()
            .and_then(|mut r| r.read_to_end(&mut buf))
            .map_err(|e| Error::io("cannot read payload", e))?;
        self.objects
            .lock()
            .unwrap()
            .insert(key.as_str().to_owned(), buf);
        Ok(())
    }

    fn put_if_absent(&self, key: &ObjectKey, bytes: &[u8]) -> Result<bool> {
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(key.as_str()) {
            return Ok(false);
        }
        objects.insert(key.as_str().to_owned(), bytes.to_vec());
        Ok(true)
    }

    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send>> {
        match self.objects.lock().unwrap().get(key.as_str()) {
            Some(v) => Ok(Box::new(std::io::Cursor::new(v.clone()))),
            None => Err(Error::new(ErrorKind::NotFound, format!("no object {key}"))
                .with_context("node", &self.name)),
        }
    }

    fn stat(&self, key: &ObjectKey) -> Result<Option<u64>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key.as_str())
            .map(|v| v.len() as u64))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .map(|k| ObjectKey::new(k.clone()))
            .collect())
    }

    fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.objects.lock().unwrap().remove(key.as_str());
        Ok(())
    }
}
