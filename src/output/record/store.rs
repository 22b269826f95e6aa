//! Where recordings go: the object store (`object_store`: a local folder or S3), and the
//! uploader that takes finished segments off the ingest path.
//!
//! A finished object is written to the spool (a local folder, itself an `object_store`
//! `LocalFileSystem`) at once, then uploaded oldest first; a failed upload is retried with
//! a doubling backoff (0.5 s to 30 s) while new objects keep being spooled. The spool is
//! bounded by bytes: past `record.spool_max_bytes` the oldest spooled segments are dropped
//! (counted and logged). Objects still spooled at a stop are uploaded at the next start.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RecordSettings;

/// First wait after a failed upload; doubles per failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between upload attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a stopping uploader still takes objects into the spool.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// An object on its way to the store.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub(crate) key: String,
    pub(crate) data: Bytes,
}

/// Counters of the uploader, for `/api/records/status`.
#[derive(Debug, Default, Serialize)]
pub struct UploadStats {
    /// Recordings that ended and whose last segment is on its way to the spool.
    pub finishing: AtomicU64,
    /// Objects handed to the uploader and not yet spooled.
    pub queued: AtomicU64,
    /// Objects written to the spool.
    pub spooled: AtomicU64,
    /// Objects the store took.
    pub uploaded: AtomicU64,
    /// Failed upload attempts.
    pub upload_failures: AtomicU64,
    /// Segments dropped from a full spool.
    pub spool_dropped: AtomicU64,
    /// Objects that could not be spooled (a local disk error).
    pub spool_failures: AtomicU64,
    /// Objects waiting in the spool now.
    pub pending: AtomicU64,
    /// Bytes waiting in the spool now.
    pub pending_bytes: AtomicU64,
}

/// Where objects go.
pub(crate) struct Opened {
    /// The store.
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The spool folder.
    pub(crate) spool: Arc<dyn ObjectStore>,
    /// The store is a local folder: objects are written to it directly (the spool only
    /// takes what a write failed).
    pub(crate) direct: bool,
}

/// The store `settings` name and the spool folder.
pub(crate) fn open(settings: &RecordSettings) -> anyhow::Result<Opened> {
    let (store, default_spool): (Arc<dyn ObjectStore>, PathBuf) =
        if let Some(rest) = settings.store.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                anyhow::bail!("record.store = {:?}: no bucket after s3://", settings.store);
            }
            // the uploader retries (spooled, with its own backoff): the client tries a
            // request twice at most and within 10 s, so an outage shows at once
            let retry = object_store::RetryConfig {
                backoff: object_store::BackoffConfig::default(),
                max_retries: 1,
                retry_timeout: Duration::from_secs(10),
            };
            let options = object_store::ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(60));
            let mut builder = object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(&settings.s3_region)
                .with_retry(retry)
                .with_client_options(options);
            if !settings.s3_endpoint.is_empty() {
                builder = builder
                    .with_endpoint(&settings.s3_endpoint)
                    .with_allow_http(settings.s3_endpoint.starts_with("http://"));
            }
            if !settings.s3_access_key.is_empty() {
                builder = builder
                    .with_access_key_id(settings.s3_access_key.expose())
                    .with_secret_access_key(settings.s3_secret_key.expose());
            } else {
                builder = builder.with_skip_signature(true);
            }
            // HTTPS to the store uses the tree's rustls provider (ring)
            let _ = rustls::crypto::ring::default_provider().install_default();
            let s3: Arc<dyn ObjectStore> = Arc::new(
                builder
                    .build()
                    .context("record.store: the S3 settings (record.s3_*)")?,
            );
            let prefix = prefix.trim_matches('/');
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                s3
            } else {
                Arc::new(PrefixStore::new(s3, prefix))
            };
            (store, PathBuf::from("./recordings.spool"))
        } else {
            let path = settings
                .store
                .strip_prefix("file://")
                .unwrap_or(&settings.store);
            let path = PathBuf::from(path);
            let local = local_folder(&path, "record.store")?;
            let mut spool = path.into_os_string();
            spool.push(".spool");
            (local, PathBuf::from(spool))
        };
    let spool_dir = if settings.spool_dir.is_empty() {
        default_spool
    } else {
        PathBuf::from(&settings.spool_dir)
    };
    let spool = local_folder(&spool_dir, "record.spool_dir")?;
    Ok(Opened {
        store,
        spool,
        direct: !settings.store.starts_with("s3://"),
    })
}

/// A local folder as an object store. Nothing is made on disk until the first object is
/// written (a gateway that never records leaves no folder behind); an absolute path is
/// fixed now, so a relative one means the working directory at start.
fn local_folder(path: &std::path::Path, key: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    use std::path::Component;
    let absolute = std::path::absolute(path)
        .with_context(|| format!("{key}: {} has no absolute form", path.display()))?;
    // `..` resolved by hand: `absolute` keeps it, and object keys may not contain it
    let mut parts: Vec<String> = Vec::new();
    for component in absolute.components() {
        match component {
            Component::Normal(part) => parts.push(
                part.to_str()
                    .with_context(|| format!("{key}: {} is not UTF-8", path.display()))?
                    .to_owned(),
            ),
            Component::ParentDir => {
                parts.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let prefix: ObjectPath = parts.iter().map(|p| PathPart::from(p.as_str())).collect();
    Ok(Arc::new(PrefixStore::new(LocalFileSystem::new(), prefix)))
}

type InFlight = Pin<Box<dyn Future<Output = (ObjectPath, Result<(), object_store::Error>)> + Send>>;

/// The uploader: spools what arrives on `uploads_rx`, uploads oldest first, until
/// `shutdown`; then the recordings (`recordings`, their tasks) finish, for
/// [`STOP_GRACE`] at most, and what they sent is spooled.
pub(crate) async fn run_uploader(
    target: Opened,
    spool_max: u64,
    mut uploads_rx: mpsc::Receiver<Upload>,
    stats: Arc<UploadStats>,
    recordings: tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) {
    let Opened {
        store,
        spool,
        direct,
    } = target;
    // a folder store is written at once (one write instead of spool, read, write); the
    // spool takes what such a write failed, and retries it
    let direct = direct.then(|| Arc::clone(&store));
    let mut queue = SpoolQueue::default();
    // what an earlier run left in the spool goes first
    let mut listing = spool.list(None);
    while let Some(item) = listing.next().await {
        match item {
            Ok(meta) => queue.push(meta.location, meta.size),
            // no spool folder yet: nothing left over
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => warn!(%error, "record: listing the spool"),
        }
    }
    drop(listing);
    queue.sort();
    if !queue.items.is_empty() {
        info!(
            objects = queue.items.len(),
            bytes = queue.bytes,
            "record: uploading what the spool held"
        );
    }
    stats.update(&queue);
    let mut in_flight: Option<InFlight> = None;
    let mut backoff = BACKOFF_MIN;
    let mut retry_at: Option<Instant> = None;
    loop {
        if in_flight.is_none() && retry_at.is_none_or(|at| at <= Instant::now()) {
            retry_at = None;
            if let Some(key) = queue.items.front().map(|(k, _)| k.clone()) {
                in_flight = Some(upload(Arc::clone(&store), Arc::clone(&spool), key));
            }
        }
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let done = async {
            match in_flight.as_mut() {
                Some(upload) => upload.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = uploads_rx.recv() => {
                let Some(upload) = received else { break };
                store_one(direct.as_deref(), &spool, upload, spool_max, &mut queue, &stats).await;
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            }
            (key, result) = done => {
                in_flight = None;
                match result {
                    Ok(()) => {
                        if let Err(error) = spool.delete(&key).await {
                            warn!(%error, key = %key, "record: removing an uploaded object from the spool");
                        }
                        queue.remove(&key);
                        stats.uploaded.fetch_add(1, Ordering::Relaxed);
                        backoff = BACKOFF_MIN;
                    }
                    Err(error) => {
                        stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                        warn!(%error, key = %key, retry_in = ?backoff, "record: upload failed; the object stays spooled");
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
                stats.update(&queue);
            }
            () = retry => {}
            () = shutdown.cancelled() => break,
        }
    }
    // stopping: what the recorders finish now still reaches the spool
    recordings.close();
    let _ = tokio::time::timeout(STOP_GRACE, async {
        loop {
            tokio::select! {
                received = uploads_rx.recv() => match received {
                    Some(upload) => {
                        store_one(direct.as_deref(), &spool, upload, spool_max, &mut queue, &stats).await;
                        stats.queued.fetch_sub(1, Ordering::Relaxed);
                    }
                    None => return,
                },
                () = recordings.wait() => break,
            }
        }
        // every recording has ended: what they sent is in the queue
        while let Ok(upload) = uploads_rx.try_recv() {
            store_one(direct.as_deref(), &spool, upload, spool_max, &mut queue, &stats).await;
            stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
    })
    .await;
}

/// Writes one object to the folder store directly (`direct`), else (or if that failed) to
/// the spool.
async fn store_one(
    direct: Option<&dyn ObjectStore>,
    spool: &dyn ObjectStore,
    upload: Upload,
    spool_max: u64,
    queue: &mut SpoolQueue,
    stats: &UploadStats,
) {
    if let Some(store) = direct {
        let key = ObjectPath::from(upload.key.as_str());
        match store
            .put(&key, PutPayload::from_bytes(upload.data.clone()))
            .await
        {
            Ok(_) => {
                stats.spooled.fetch_add(1, Ordering::Relaxed);
                stats.uploaded.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(error) => {
                stats.upload_failures.fetch_add(1, Ordering::Relaxed);
                warn!(%error, key = %upload.key, "record: writing to the store failed; spooled");
            }
        }
    }
    spool_one(spool, upload, spool_max, queue, stats).await;
}

/// Writes one object to the spool, dropping the oldest segments if it would overflow.
async fn spool_one(
    spool: &dyn ObjectStore,
    upload: Upload,
    spool_max: u64,
    queue: &mut SpoolQueue,
    stats: &UploadStats,
) {
    let size = upload.data.len() as u64;
    while queue.bytes + size > spool_max {
        // the oldest segment after the first (which may be uploading); inits are tiny and
        // needed by the segments that stay
        let Some(index) = queue
            .items
            .iter()
            .skip(1)
            .position(|(key, _)| super::keys::parse_segment(key.as_ref()).is_some())
            .map(|i| i + 1)
        else {
            break;
        };
        let Some((key, _)) = queue.items.get(index).cloned() else {
            break;
        };
        if let Err(error) = spool.delete(&key).await {
            warn!(%error, key = %key, "record: dropping a spooled segment");
        }
        queue.remove(&key);
        stats.spool_dropped.fetch_add(1, Ordering::Relaxed);
        warn!(key = %key, spool_max, "record: spool full, the oldest segment dropped");
    }
    let key = ObjectPath::from(upload.key.as_str());
    match spool.put(&key, PutPayload::from_bytes(upload.data)).await {
        Ok(_) => {
            queue.push(key, size);
            stats.spooled.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => {
            stats.spool_failures.fetch_add(1, Ordering::Relaxed);
            warn!(%error, key = %upload.key, "record: spooling failed, the object is lost");
        }
    }
    stats.update(queue);
}

fn upload(store: Arc<dyn ObjectStore>, spool: Arc<dyn ObjectStore>, key: ObjectPath) -> InFlight {
    Box::pin(async move {
        let result = async {
            let data = spool.get(&key).await?.bytes().await?;
            store.put(&key, PutPayload::from_bytes(data)).await?;
            Ok(())
        }
        .await;
        (key, result)
    })
}

/// The spooled objects in upload order, and their bytes.
#[derive(Debug, Default)]
struct SpoolQueue {
    items: VecDeque<(ObjectPath, u64)>,
    bytes: u64,
}

impl SpoolQueue {
    fn push(&mut self, key: ObjectPath, size: u64) {
        self.bytes += size;
        self.items.push_back((key, size));
    }

    fn remove(&mut self, key: &ObjectPath) {
        if let Some(index) = self.items.iter().position(|(k, _)| k == key) {
            if let Some((_, size)) = self.items.remove(index) {
                self.bytes = self.bytes.saturating_sub(size);
            }
        }
    }

    /// Inits first (segments need them), then segments by start time.
    fn sort(&mut self) {
        let order = |key: &ObjectPath| match super::keys::parse_segment(key.as_ref()) {
            Some(segment) => (1, segment.start_ms),
            None => (0, 0),
        };
        self.items
            .make_contiguous()
            .sort_by_key(|(key, _)| order(key));
    }
}

impl UploadStats {
    fn update(&self, queue: &SpoolQueue) {
        self.pending
            .store(queue.items.len() as u64, Ordering::Relaxed);
        self.pending_bytes.store(queue.bytes, Ordering::Relaxed);
    }
}
