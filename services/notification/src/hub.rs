//! Wakes a user's open Subscribe streams when their inbox grows. A stream
//! always reads the stored inbox after the last sequence it sent, so the hub
//! carries only "something new" (the latest sequence), never the events: a
//! lost or coalesced wake-up cannot make a gap. Counts streams per user for
//! the contract's limit of 50.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Concurrent streams one user may hold.
pub const MAX_STREAMS_PER_USER: usize = 50;

#[derive(Debug, Default)]
struct Entry {
    sender: Option<watch::Sender<u64>>,
    streams: usize,
}

/// The per-user wake-up registry.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    users: Arc<Mutex<HashMap<String, Entry>>>,
}

/// An open stream's registration; dropping it unregisters.
#[derive(Debug)]
pub struct StreamGuard {
    hub: Hub,
    user_id: String,
    /// Changes when the user's inbox grows.
    pub receiver: watch::Receiver<u64>,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a stream of `user_id`; `None` when the user has too many.
    pub fn open(&self, user_id: &str) -> Option<StreamGuard> {
        let mut users = self.lock();
        let entry = users.entry(user_id.to_owned()).or_default();
        if entry.streams >= MAX_STREAMS_PER_USER {
            return None;
        }
        entry.streams += 1;
        let sender = entry.sender.get_or_insert_with(|| watch::channel(0).0);
        Some(StreamGuard {
            hub: self.clone(),
            user_id: user_id.to_owned(),
            receiver: sender.subscribe(),
        })
    }

    /// Tells `user_id`'s streams that the inbox reached `sequence`.
    pub fn notify(&self, user_id: &str, sequence: u64) {
        let users = self.lock();
        if let Some(sender) = users.get(user_id).and_then(|entry| entry.sender.as_ref()) {
            sender.send_replace(sequence);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut users = self.hub.lock();
        if let Some(entry) = users.get_mut(&self.user_id) {
            entry.streams = entry.streams.saturating_sub(1);
            if entry.streams == 0 {
                users.remove(&self.user_id);
            }
        }
    }
}
