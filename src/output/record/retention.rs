//! The retention sweep (`record.keep`, `record.sweep_interval`): segments that ended
//! more than `keep` ago are deleted, and init segments no segment names any more once they
//! are older than `keep` too. The choice is pure ([`expired`]); the task lists and deletes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::keys;

/// The objects of a listing to delete at `now_ms` with `keep_ms` of retention.
pub(crate) fn expired(objects: &[(String, u64)], now_ms: u64, keep_ms: u64) -> Vec<String> {
    let cutoff = now_ms.saturating_sub(keep_ms);
    let mut delete = Vec::new();
    let mut inits_in_use = HashSet::new();
    for (key, _) in objects {
        if let Some(segment) = keys::parse_segment(key) {
            if segment.end_ms() < cutoff {
                delete.push(key.clone());
            } else {
                inits_in_use.insert(init_of(key, &segment.init));
            }
        }
    }
    for (key, modified_ms) in objects {
        let is_init = key.ends_with(".mp4") && key.contains("/init/");
        if is_init && *modified_ms < cutoff && !inits_in_use.contains(key) {
            delete.push(key.clone());
        }
    }
    delete
}

/// The init key a segment key names (same device and channel).
fn init_of(segment_key: &str, init: &str) -> String {
    let mut parts = segment_key.splitn(3, '/');
    let device = parts.next().unwrap_or_default();
    let channel = parts.next().unwrap_or_default();
    format!("{device}/{channel}/init/{init}.mp4")
}

/// Sweeps at start and then every `interval` until `shutdown`.
pub(crate) async fn run(
    store: Arc<dyn ObjectStore>,
    keep: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(100)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let mut objects = Vec::new();
        let mut listing = store.list(None);
        let mut failed = false;
        while let Some(item) = listing.next().await {
            match item {
                Ok(ObjectMeta {
                    location,
                    last_modified,
                    ..
                }) => {
                    let modified = u64::try_from(last_modified.timestamp_millis()).unwrap_or(0);
                    objects.push((location.to_string(), modified));
                }
                // a folder store nothing was written to yet
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => {
                    warn!(%error, "record: retention sweep could not list the store");
                    failed = true;
                    break;
                }
            }
        }
        drop(listing);
        if failed {
            continue;
        }
        let delete = expired(&objects, super::unix_ms(), keep_ms);
        let mut deleted = 0usize;
        for key in &delete {
            match store.delete(&ObjectPath::from(key.as_str())).await {
                Ok(()) => deleted += 1,
                Err(error) => warn!(%error, key, "record: retention sweep could not delete"),
            }
        }
        if deleted > 0 {
            info!(
                deleted,
                kept = objects.len() - deleted,
                "record: retention sweep"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::expired;

    #[test]
    fn old_segments_and_their_unused_inits_go_recent_ones_stay() {
        let day = 86_400_000;
        let now = 10 * day;
        let objects = vec![
            (
                "d/1/1970-01-02/86400000-10000-aaaaaaaaaaaaaaaa.m4s".to_owned(),
                day,
            ),
            (
                "d/1/1970-01-10/863990000-10000-bbbbbbbbbbbbbbbb.m4s".to_owned(),
                now,
            ),
            ("d/1/init/aaaaaaaaaaaaaaaa.mp4".to_owned(), day),
            ("d/1/init/bbbbbbbbbbbbbbbb.mp4".to_owned(), day),
            ("d/1/init/cccccccccccccccc.mp4".to_owned(), now),
            ("notes.txt".to_owned(), 0),
        ];
        let mut deleted = expired(&objects, now, 7 * day);
        deleted.sort();
        assert_eq!(
            deleted,
            vec![
                "d/1/1970-01-02/86400000-10000-aaaaaaaaaaaaaaaa.m4s".to_owned(),
                "d/1/init/aaaaaaaaaaaaaaaa.mp4".to_owned(),
            ]
        );
    }
}
