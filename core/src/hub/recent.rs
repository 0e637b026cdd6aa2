//! The last messages each device sent, kept in memory for the console's device page and the
//! admin API (`GET .../devices/{dn}/messages`). Bounded twice: a few messages per device, each
//! with a short payload preview, and a cap on the devices remembered, so a fleet of millions
//! costs a fixed amount. Not durable and per node: it is a view, not a record.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use base64::Engine;
use serde::Serialize;

use crate::QoS;

/// Bytes of a payload kept for its preview.
pub const PREVIEW_BYTES: usize = 256;
/// Locks the map is split over, so publishers of different devices rarely wait for each other.
const SHARDS: usize = 16;
/// A message this soon after the device's last remembered one is not kept: under load the view
/// is a sample (at most ten a second per device), and a skipped message costs one lookup.
pub const MIN_GAP_MS: u64 = 100;

/// One message a device sent.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentMessage {
    /// When the hub accepted it, ms since the epoch.
    pub at_ms: u64,
    /// Its topic.
    pub topic: String,
    /// 0 or 1.
    pub qos: u8,
    /// The whole payload's size.
    pub bytes: usize,
    /// The first [`PREVIEW_BYTES`] bytes: text when they are UTF-8, else base64.
    pub preview: String,
    /// `text` or `base64`.
    pub encoding: &'static str,
    /// Whether the payload was longer than the preview.
    pub truncated: bool,
}

type Shard = HashMap<String, VecDeque<RecentMessage>>;

/// Recent messages by device session key.
pub struct Recent {
    per_device: usize,
    devices_per_shard: usize,
    hasher: RandomState,
    shards: [Mutex<Shard>; SHARDS],
}

impl Recent {
    /// Keeps `per_device` messages (0 turns the view off) for up to `max_devices` devices.
    pub fn new(per_device: usize, max_devices: usize) -> Recent {
        Recent {
            per_device,
            devices_per_shard: max_devices.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    fn shard(&self, device: &str) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(device) as usize % SHARDS]
    }

    /// Remembers a message of `device`, forgetting its oldest beyond the bound.
    pub fn record(&self, device: &str, topic: &str, payload: &[u8], qos: QoS, at_ms: u64) {
        if self.per_device == 0 {
            return;
        }
        let shard = self.shard(device);
        let recent_enough = shard
            .lock()
            .expect("recent lock")
            .get(device)
            .and_then(|m| m.back())
            .is_some_and(|last| at_ms < last.at_ms + MIN_GAP_MS);
        if recent_enough {
            return;
        }
        let head = &payload[..payload.len().min(PREVIEW_BYTES)];
        let (preview, encoding) = match std::str::from_utf8(head) {
            Ok(text) => (text.to_owned(), "text"),
            Err(e) if payload.len() > PREVIEW_BYTES && e.error_len().is_none() => {
                // The preview cut a character in two: keep the whole ones.
                let text = std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default();
                (text.to_owned(), "text")
            }
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(head),
                "base64",
            ),
        };
        let message = RecentMessage {
            at_ms,
            topic: topic.to_owned(),
            qos: qos as u8,
            bytes: payload.len(),
            preview,
            encoding,
            truncated: payload.len() > PREVIEW_BYTES,
        };
        let mut shard = shard.lock().expect("recent lock");
        if !shard.contains_key(device) && shard.len() >= self.devices_per_shard {
            // Full: forget some other device (any will do; this is a view, not a record).
            if let Some(victim) = shard.keys().next().cloned() {
                shard.remove(&victim);
            }
        }
        let messages = shard.entry(device.to_owned()).or_default();
        if messages.len() == self.per_device {
            messages.pop_front();
        }
        messages.push_back(message);
    }

    /// The device's remembered messages, newest first.
    pub fn of(&self, device: &str) -> Vec<RecentMessage> {
        let shard = self.shard(device).lock().expect("recent lock");
        shard
            .get(device)
            .map(|m| m.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets a device (deleted).
    pub fn forget(&self, device: &str) {
        self.shard(device)
            .lock()
            .expect("recent lock")
            .remove(device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_per_device_newest_first() {
        let recent = Recent::new(3, 100);
        for i in 0..5u64 {
            recent.record(
                "a",
                &format!("/t/{i}"),
                b"x",
                QoS::AtLeastOnce,
                i * MIN_GAP_MS,
            );
        }
        let got: Vec<u64> = recent
            .of("a")
            .iter()
            .map(|m| m.at_ms / MIN_GAP_MS)
            .collect();
        assert_eq!(got, vec![4, 3, 2]);
        assert!(recent.of("b").is_empty());
        recent.forget("a");
        assert!(recent.of("a").is_empty());
    }

    #[test]
    fn previews_are_bounded_and_binary_is_base64() {
        let recent = Recent::new(2, 100);
        let long = "é".repeat(200); // 400 bytes: the cut falls inside a character
        recent.record("a", "/t", long.as_bytes(), QoS::AtMostOnce, 1);
        recent.record(
            "a",
            "/t",
            &[0xff, 0x00, 0x10],
            QoS::AtMostOnce,
            1 + MIN_GAP_MS,
        );
        let got = recent.of("a");
        assert_eq!(got[0].encoding, "base64");
        assert_eq!(got[0].preview, "/wAQ");
        assert!(!got[0].truncated);
        assert_eq!(got[1].encoding, "text");
        assert_eq!(got[1].preview, "é".repeat(128));
        assert_eq!(got[1].bytes, 400);
        assert!(got[1].truncated);
    }

    #[test]
    fn the_number_of_devices_is_bounded() {
        let recent = Recent::new(1, SHARDS);
        for i in 0..1000 {
            recent.record(&format!("d{i}"), "/t", b"x", QoS::AtMostOnce, i);
        }
        let remembered: usize = recent.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(remembered <= SHARDS, "{remembered} devices remembered");
        assert_eq!(recent.of("d999").len(), 1, "the newest device is kept");
    }

    #[test]
    fn under_load_the_view_is_a_sample() {
        let recent = Recent::new(10, 100);
        for ms in 0..1000u64 {
            recent.record("a", "/t", b"x", QoS::AtMostOnce, ms);
        }
        let got: Vec<u64> = recent.of("a").iter().map(|m| m.at_ms).collect();
        assert_eq!(got, vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
    }

    #[test]
    fn zero_turns_it_off() {
        let recent = Recent::new(0, 100);
        recent.record("a", "/t", b"x", QoS::AtMostOnce, 1);
        assert!(recent.of("a").is_empty());
    }
}
