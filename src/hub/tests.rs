//! Hub tests: GOP start, fan-out, lag policy, replacement, lifecycle.

use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::media::{Channel, DeviceId, Frame, StreamKind};

fn key() -> StreamKey {
    StreamKey::new(
        DeviceId::parse("13800138000").unwrap(),
        Channel(1),
        StreamKind::Live,
    )
}

fn video(pts: u64, is_key: bool) -> Frame {
    Frame {
        codec: Codec::H264,
        is_key,
        pts,
        data: Bytes::from(vec![0u8; 100]),
    }
}

fn audio(pts: u64) -> Frame {
    Frame {
        codec: Codec::G711A,
        is_key: false,
        pts,
        data: Bytes::from(vec![0u8; 160]),
    }
}

#[tokio::test]
async fn new_reader_starts_at_latest_key_frame() {
    let hub = Hub::default();
    let publisher = hub.publish(key(), CancellationToken::new());
    publisher.set_video(Codec::H264, Some((352, 288)));
    for (i, k) in [true, false, false, true, false].into_iter().enumerate() {
        publisher.send(video(i as u64 * 40, k)).unwrap();
    }
    publisher.send(audio(170)).unwrap();
    let mut reader = hub.subscribe(&key()).unwrap();
    let got: Vec<u64> = [
        reader.recv().await,
        reader.recv().await,
        reader.recv().await,
    ]
    .into_iter()
    .map(|f| f.unwrap().pts)
    .collect();
    assert_eq!(got, vec![120, 160, 170]);
    publisher.send(video(200, false)).unwrap();
    assert_eq!(reader.recv().await.unwrap().pts, 200);
    assert_eq!(hub.list()[0].viewers, 1);
}

#[tokio::test]
async fn slow_reader_skips_to_next_key_frame_and_counts_drops() {
    let hub = Hub::new(HubSettings {
        // four 100-byte frames
        reader_max_bytes: 400,
        ..HubSettings::default()
    });
    let publisher = hub.publish(key(), CancellationToken::new());
    publisher.set_video(Codec::H264, None);
    publisher.send(video(0, true)).unwrap();
    let mut reader = hub.subscribe(&key()).unwrap();
    assert_eq!(reader.recv().await.unwrap().pts, 0);
    for i in 1..=10 {
        publisher.send(video(i * 40, false)).unwrap();
    }
    publisher.send(video(440, true)).unwrap();
    publisher.send(video(480, false)).unwrap();
    // the P-frames still queued after the lag are skipped too: the next frame is the key
    let next = reader.recv().await.unwrap();
    assert!(next.is_key);
    assert_eq!(next.pts, 440);
    assert_eq!(reader.recv().await.unwrap().pts, 480);
    // the four queued, the one that overran and the five skipped
    assert_eq!(hub.list()[0].frames_dropped, 10);
}

#[tokio::test]
async fn a_burst_within_the_byte_bound_reaches_a_waiting_reader_whole() {
    // 2,000 frames at once: far more than any frame count a queue had, far less than its
    // bytes (200 KB of 8 MiB)
    let hub = Hub::default();
    let waiting = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.subscribe_or_wait(&key(), Duration::from_secs(5)).await })
    };
    let mut events = hub.events();
    while hub.reader_counts().is_empty() {
        events.recv().await.unwrap();
    }
    let publisher = hub.publish(key(), CancellationToken::new());
    publisher.set_video(Codec::H264, None);
    publisher.send(video(0, true)).unwrap();
    for i in 1..2000 {
        publisher.send(video(i * 40, i % 50 == 0)).unwrap();
    }
    let mut reader = waiting.await.unwrap().unwrap();
    for i in 0..2000 {
        assert_eq!(reader.recv().await.unwrap().pts, i * 40);
    }
    assert_eq!(hub.list()[0].frames_dropped, 0);
}

#[tokio::test(start_paused = true)]
async fn a_reader_whose_oldest_frame_is_too_old_skips_to_the_next_key_frame() {
    let hub = Hub::new(HubSettings {
        reader_max_lag: Duration::from_secs(1),
        ..HubSettings::default()
    });
    let publisher = hub.publish(key(), CancellationToken::new());
    publisher.set_video(Codec::H264, None);
    publisher.send(video(0, true)).unwrap();
    let mut reader = hub.subscribe(&key()).unwrap();
    assert_eq!(reader.recv().await.unwrap().pts, 0);
    publisher.send(video(40, false)).unwrap();
    tokio::time::advance(Duration::from_millis(900)).await;
    publisher.send(video(80, false)).unwrap();
    tokio::time::advance(Duration::from_millis(200)).await;
    // the frame of 40 waited 1.1 s: the queue goes, the reader waits for a key frame
    publisher.send(video(120, false)).unwrap();
    publisher.send(video(160, true)).unwrap();
    assert_eq!(reader.recv().await.unwrap().pts, 160);
    assert_eq!(hub.list()[0].frames_dropped, 3);
}

#[tokio::test]
async fn replacing_publisher_cancels_the_old_one_and_keeps_readers() {
    let hub = Hub::default();
    let first_token = CancellationToken::new();
    let first = hub.publish(key(), first_token.clone());
    first.send(video(0, true)).unwrap();
    let mut reader = hub.subscribe(&key()).unwrap();
    assert!(reader.recv().await.is_some());
    let mut events = hub.events();
    let second = hub.publish(key(), CancellationToken::new());
    assert!(first_token.is_cancelled());
    assert_eq!(
        first.send(video(40, false)),
        Err(stream::PublishError::Replaced)
    );
    drop(first);
    assert!(
        hub.is_live(&key()),
        "dropping the replaced publisher keeps the stream"
    );
    second.send(video(80, true)).unwrap();
    assert_eq!(reader.recv().await.unwrap().pts, 80);
    drop(second);
    assert_eq!(events.recv().await.unwrap(), HubEvent::StreamDown(key()));
    assert!(reader.recv().await.is_none(), "readers end with the stream");
    assert!(!hub.is_live(&key()));
}

#[tokio::test(start_paused = true)]
async fn subscribe_or_wait_waits_for_the_publisher_and_times_out() {
    let hub = Hub::default();
    assert!(
        hub.subscribe_or_wait(&key(), Duration::from_secs(15))
            .await
            .is_none()
    );
    let waiter = {
        let hub = hub.clone();
        tokio::spawn(async move {
            hub.subscribe_or_wait(&key(), Duration::from_secs(15))
                .await
                .is_some()
        })
    };
    tokio::task::yield_now().await;
    let _publisher = hub.publish(key(), CancellationToken::new());
    assert!(waiter.await.unwrap());
}

#[tokio::test]
async fn audio_only_stream_reader_starts_on_audio() {
    let hub = Hub::default();
    let publisher = hub.publish(key(), CancellationToken::new());
    publisher.send(audio(0)).unwrap();
    let mut reader = hub.subscribe(&key()).unwrap();
    publisher.send(audio(20)).unwrap();
    assert_eq!(reader.recv().await.unwrap().pts, 20);
}

#[tokio::test]
async fn media_info_changes_are_announced_once_each() {
    let hub = Hub::default();
    let mut events = hub.events();
    let publisher = hub.publish(key(), CancellationToken::new());
    assert_eq!(events.recv().await.unwrap(), HubEvent::StreamUp(key()));
    publisher.set_video(Codec::H264, None);
    publisher.set_video(Codec::H264, None);
    publisher.set_video(Codec::H264, Some((640, 360)));
    publisher.set_video(Codec::H264, Some((640, 360)));
    publisher.set_audio(Codec::G711A);
    publisher.set_audio(Codec::G711A);
    let expected = [
        MediaInfo {
            video: Some(Codec::H264),
            audio: None,
            resolution: None,
            expected: None,
        },
        MediaInfo {
            video: Some(Codec::H264),
            audio: None,
            resolution: Some((640, 360)),
            expected: None,
        },
        MediaInfo {
            video: Some(Codec::H264),
            audio: Some(Codec::G711A),
            resolution: Some((640, 360)),
            expected: None,
        },
    ];
    for info in expected {
        assert_eq!(
            events.recv().await.unwrap(),
            HubEvent::MediaChanged { key: key(), info }
        );
    }
    drop(publisher);
    assert_eq!(
        events.recv().await.unwrap(),
        HubEvent::StreamDown(key()),
        "no event when nothing changed"
    );
}

#[tokio::test]
async fn a_wait_given_up_leaves_no_stream_behind() {
    let hub = Hub::default();
    // the waiter goes away long before its timeout (a viewer that closed)
    let gave_up = tokio::time::timeout(
        Duration::from_millis(20),
        hub.subscribe_or_wait(&key(), Duration::from_secs(60)),
    )
    .await;
    assert!(gave_up.is_err());
    assert!(
        hub.registry().is_empty(),
        "no entry for a stream nobody waits for"
    );
    assert!(hub.reader_counts().is_empty());
    // and one that timed out leaves nothing either
    assert!(
        hub.subscribe_or_wait(&key(), Duration::from_millis(10))
            .await
            .is_none()
    );
    assert!(hub.registry().is_empty());
}

#[tokio::test]
async fn a_stream_remembers_the_tracks_its_last_session_carried() {
    let hub = Hub::new(HubSettings::default());
    let session = |frames: u64| {
        let publisher = hub.publish(key(), CancellationToken::new());
        for i in 0..frames {
            publisher.send(video(i * 40, i == 0)).unwrap();
        }
        let reader = hub.subscribe(&key()).unwrap();
        let expected = reader.info().expected;
        drop(reader);
        drop(publisher);
        expected
    };
    assert_eq!(session(60), None, "nothing on record at first");
    assert_eq!(
        session(10),
        Some(Tracks {
            video: true,
            audio: false
        }),
        "video without audio, long enough to tell"
    );
    // ten frames are too few to tell: the record stays as it was
    assert_eq!(
        session(1),
        Some(Tracks {
            video: true,
            audio: false
        })
    );
    let publisher = hub.publish(key(), CancellationToken::new());
    for i in 0..60 {
        publisher.send(video(i * 40, i == 0)).unwrap();
        publisher.send(audio(i * 40)).unwrap();
    }
    drop(publisher);
    assert_eq!(
        session(1),
        Some(Tracks {
            video: true,
            audio: true
        })
    );
}

#[tokio::test]
async fn a_narrowed_request_sets_the_expected_tracks_and_its_session_is_not_on_record() {
    let hub = Hub::new(HubSettings::default());
    let video_only = Tracks {
        video: true,
        audio: false,
    };
    let both = Tracks {
        video: true,
        audio: true,
    };
    let expected_now = || {
        let publisher = hub.publish(key(), CancellationToken::new());
        let expected = hub.subscribe(&key()).unwrap().info().expected;
        drop(publisher);
        expected
    };
    // a first session with both tracks goes on record
    let publisher = hub.publish(key(), CancellationToken::new());
    for i in 0..60 {
        publisher.send(video(i * 40, i == 0)).unwrap();
        publisher.send(audio(i * 40)).unwrap();
    }
    drop(publisher);
    assert_eq!(expected_now(), Some(both));
    // asked for video only: expected without audio, whatever the record says
    hub.expect_tracks(&key(), Some(video_only));
    assert_eq!(expected_now(), Some(video_only));
    // the device obeyed: a long video-only session, which must not go on record as the
    // device's tracks
    let publisher = hub.publish(key(), CancellationToken::new());
    for i in 0..60 {
        publisher.send(video(i * 40, i == 0)).unwrap();
    }
    drop(publisher);
    hub.expect_tracks(&key(), None);
    assert_eq!(expected_now(), Some(both), "back to the record");
    // nothing known and nothing requested: no entry is kept
    let other = StreamKey::new(
        DeviceId::parse("13800138001").unwrap(),
        Channel(1),
        StreamKind::Live,
    );
    hub.expect_tracks(&other, Some(video_only));
    hub.expect_tracks(&other, None);
    assert!(!hub.known_tracks().contains_key(&other));
}

#[test]
fn a_full_track_record_loses_nothing_to_a_request_for_both_tracks() {
    let hub = Hub::new(HubSettings::default());
    let video_only = Tracks {
        video: true,
        audio: false,
    };
    let device = |n: usize| {
        StreamKey::new(
            DeviceId::parse(&format!("139{n:08}")).unwrap(),
            Channel(1),
            StreamKind::Live,
        )
    };
    for n in 0..KNOWN_TRACKS_KEPT {
        hub.expect_tracks(&device(n), Some(video_only));
    }
    // a request that narrows nothing keeps nothing, so it makes no room either
    hub.expect_tracks(&device(KNOWN_TRACKS_KEPT), None);
    assert_eq!(hub.known_tracks().len(), KNOWN_TRACKS_KEPT);
    // a new entry that is kept takes the place of another
    hub.expect_tracks(&device(KNOWN_TRACKS_KEPT), Some(video_only));
    assert_eq!(hub.known_tracks().len(), KNOWN_TRACKS_KEPT);
    assert!(hub.known_tracks().contains_key(&device(KNOWN_TRACKS_KEPT)));
}

#[tokio::test]
async fn an_uncounted_reader_reads_without_being_a_viewer() {
    let hub = Hub::default();
    let publisher = hub.publish(key(), CancellationToken::new());
    publisher.send(video(0, true)).unwrap();
    let viewer = hub.subscribe(&key()).unwrap();
    let mut push = hub.subscribe(&key()).unwrap().uncounted();
    assert_eq!(hub.list()[0].viewers, 1, "only the viewer counts");
    assert_eq!(
        push.recv().await.map(|f| f.pts),
        Some(0),
        "from the GOP cache"
    );
    drop(push);
    assert_eq!(hub.list()[0].viewers, 1, "dropping it counts nobody out");
    drop(viewer);
    assert_eq!(hub.list()[0].viewers, 0);
}

#[tokio::test]
async fn viewers_are_counted_by_the_label_their_output_gives() {
    let hub = Hub::default();
    let publisher = hub.publish(key(), CancellationToken::new());
    publisher.send(video(0, true)).unwrap();
    let a = hub.subscribe(&key()).unwrap().counted_as("out-a");
    let b = hub.subscribe(&key()).unwrap();
    let b_count = b.count_as("out-b");
    // a second label on the same reader changes nothing
    let a = a.counted_as("out-b");
    let s = &hub.list()[0];
    assert_eq!(
        (s.viewers, s.viewers_of("out-a"), s.viewers_of("out-b")),
        (2, 1, 1)
    );
    b_count.add_dropped();
    drop(b_count);
    drop(b);
    let s = &hub.list()[0];
    assert_eq!(
        (s.viewers, s.viewers_of("out-a"), s.viewers_of("out-b")),
        (1, 1, 0)
    );
    assert_eq!((s.viewers_dropped, s.viewers_dropped_of("out-b")), (1, 1));
    assert!(!s.viewers_by_output.contains_key("out-b"), "{s:?}");
    drop(a);
    assert_eq!(hub.list()[0].viewers_of("out-a"), 0);
}

#[tokio::test]
async fn totals_keep_the_counters_of_streams_that_ended() {
    let hub = Hub::default();
    let publisher = hub.publish(key(), CancellationToken::new());
    let reader = hub.subscribe(&key());
    publisher.send(video(0, true)).unwrap();
    publisher.send(video(40, false)).unwrap();
    let count = reader.as_ref().unwrap().count_as("out");
    count.add_dropped();
    let live = hub.totals();
    assert_eq!((live.frames_in, live.viewers_dropped), (2, 1));
    drop(publisher);
    assert!(hub.list().is_empty());
    let ended = hub.totals();
    assert_eq!(ended, live);
    assert_eq!(ended.viewers_dropped_by_output.get("out"), Some(&1));
    // a new session adds to them
    let publisher = hub.publish(key(), CancellationToken::new());
    publisher.send(video(80, true)).unwrap();
    assert_eq!(hub.totals().frames_in, 3);
}
