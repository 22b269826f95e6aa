//! Recordings (issue 24): live streams recorded into a folder and into a real S3 store
//! (Garage), found by time in `/api/records`, played back as HLS by ffmpeg and downloaded
//! as one fMP4 with `Range`; an outage of the store loses no segment, a full spool drops
//! its oldest segments and counts them.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::garage::Garage;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The H.264 + G.711A capture: 720x576, 102 video frames over 4.2 s.
const CAPTURE: &str = "h264-g711a-156987000796-ch1.jt1078";
const CAPTURE_DEVICE: &str = "156987000796";

/// A GET with extra header lines over HTTP/1.0: status, head, body.
async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n{headers}\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, response[split + 4..].to_vec())
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, _, body) = get(addr, path, "").await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Waits until `/api/records/status` satisfies `pred` (re-checked every 50 ms, 30 s at
/// most): the uploader reports each object it spooled and uploaded.
async fn wait_status(gateway: &Gateway, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = get_json(gateway.addrs.http, "/api/records/status").await;
        if pred(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn counter(status: &Value, name: &str) -> u64 {
    status["uploads"][name].as_u64().unwrap()
}

/// Everything recorded reached the store: nothing recording, nothing spooled.
fn all_stored(status: &Value) -> bool {
    status["recording"].as_array().unwrap().is_empty()
        && counter(status, "finishing") == 0
        && counter(status, "queued") == 0
        && counter(status, "spooled") > 0
        && counter(status, "pending") == 0
}

/// The recorded ranges of a device's channel 1.
async fn ranges(gateway: &Gateway, device: &str) -> Value {
    get_json(
        gateway.addrs.http,
        &format!("/api/records?device={device}&channel=1"),
    )
    .await
}

/// ffprobe of a URL or file: the format's duration and the first video and audio streams.
async fn probe(input: &str) -> (f64, Value, Value) {
    let (stdout, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_type,codec_name,width,height,sample_rate",
            "-of",
            "json",
            input,
        ],
    )
    .await;
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let duration: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    let stream = |kind: &str| {
        v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == kind)
            .cloned()
            .unwrap_or(Value::Null)
    };
    (duration, stream("video"), stream("audio"))
}

/// Video frames ffmpeg decodes from `input`.
async fn decoded_video_frames(input: &str) -> u64 {
    let (stdout, _) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "json",
            input,
        ],
    )
    .await;
    // an HLS input lists its streams per program too
    let v: Value = serde_json::from_str(&stdout).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["nb_read_frames"].as_str()?.parse().ok())
        .max()
        .unwrap_or_else(|| panic!("no video frames: {stdout}"))
}

/// Replays the capture in real time and waits until it is recorded and stored.
async fn record_capture(gateway: &Gateway) -> Value {
    let report = replay_realtime(&testdata(CAPTURE), gateway.addrs.live)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.connected, 1);
    wait_status(gateway, "the recording stored", all_stored).await
}

/// The HLS playlist and the MP4 of the one recorded range of the capture play with its
/// duration, picture and audio.
async fn check_capture_playback(gateway: &Gateway, tmp: &TempDir) {
    let records = ranges(gateway, CAPTURE_DEVICE).await;
    let ranges = records["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 1, "one range without gaps: {records}");
    let range = &ranges[0];
    let seconds = range["duration_ms"].as_u64().unwrap() as f64 / 1000.0;
    // the capture lasts 4.2 s; segments are cut at key frames (1 s segments here)
    assert!(
        (3.2..=5.2).contains(&seconds),
        "recorded {seconds} s: {records}"
    );

    let hls = format!(
        "http://{}{}",
        gateway.addrs.http,
        range["hls"].as_str().unwrap()
    );
    let (status, _, playlist) = get(gateway.addrs.http, range["hls"].as_str().unwrap(), "").await;
    assert_eq!(status, 200);
    let playlist = String::from_utf8(playlist).unwrap();
    assert!(playlist.contains("#EXT-X-MAP:URI=\"o/"), "{playlist}");
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    let (duration, video, audio) = probe(&hls).await;
    assert!(
        (seconds - 1.0..=seconds + 1.0).contains(&duration),
        "HLS plays {duration} s of {seconds} s"
    );
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["width"], 720);
    assert_eq!(video["height"], 576);
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "8000");
    let frames = decoded_video_frames(&hls).await;
    assert!((80..=102).contains(&frames), "{frames} of 102 frames play");

    // the download: whole, then a head and a Range from the middle that read together
    let mp4 = range["mp4"].as_str().unwrap();
    let (status, head, whole) = get(gateway.addrs.http, mp4, "").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "content-length"),
        Some(whole.len().to_string().as_str())
    );
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    let file = tmp.path("whole.mp4");
    std::fs::write(&file, &whole).unwrap();
    assert_eq!(decoded_video_frames(file.to_str().unwrap()).await, frames);
    let middle = whole.len() / 2;
    let (status, head, tail) = get(
        gateway.addrs.http,
        mp4,
        &format!("Range: bytes={middle}-\r\n"),
    )
    .await;
    assert_eq!(status, 206, "{head}");
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes {middle}-{}/{}", whole.len() - 1, whole.len()).as_str())
    );
    let (status, _, first) = get(
        gateway.addrs.http,
        mp4,
        &format!("Range: bytes=0-{}\r\n", middle - 1),
    )
    .await;
    assert_eq!(status, 206);
    let joined = [first, tail].concat();
    assert!(joined == whole, "head + tail is the file");
    let file = tmp.path("joined.mp4");
    std::fs::write(&file, &joined).unwrap();
    assert_eq!(decoded_video_frames(file.to_str().unwrap()).await, frames);
    let (status, _, _) = get(gateway.addrs.http, mp4, "Range: bytes=99999999-\r\n").await;
    assert_eq!(status, 416);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_recorded_into_a_folder_plays_as_hls_and_downloads_with_ranges() {
    let tmp = TempDir::new("records-folder");
    let store = tmp.path("recordings");
    let gateway = Gateway::start(&[
        ("JTGW__RECORD__AUTO", "all"),
        ("JTGW__RECORD__STORE", store.to_str().unwrap()),
        ("JTGW__RECORD__SEGMENT", "1s"),
    ])
    .await;
    let status = record_capture(&gateway).await;
    assert_eq!(counter(&status, "spool_dropped"), 0);
    // the keys are the index: a day folder of segments and one init
    let day = std::fs::read_dir(store.join(CAPTURE_DEVICE).join("1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<Vec<_>>();
    assert!(day.contains(&"init".to_owned()), "{day:?}");
    check_capture_playback(&gateway, &tmp).await;
    // a range with nothing in it
    let (status, _, _) = get(
        gateway.addrs.http,
        &format!(
            "/record/{CAPTURE_DEVICE}_1.m3u8?from=2020-01-01T00:00:00Z&to=2020-01-01T01:00:00Z"
        ),
        "",
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = get(gateway.addrs.http, "/record/x_1.m3u8?from=bad", "").await;
    assert_eq!(status, 400);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_into_garage_survives_an_outage_of_the_store() {
    let tmp = TempDir::new("records-garage");
    let mut garage = Garage::start().await;
    let mut settings = garage.settings("fleet");
    settings.extend([
        ("JTGW__RECORD__AUTO".to_owned(), CAPTURE_DEVICE.to_owned()),
        ("JTGW__RECORD__SEGMENT".to_owned(), "1s".to_owned()),
        (
            "JTGW__RECORD__SPOOL_DIR".to_owned(),
            tmp.path("spool").to_str().unwrap().to_owned(),
        ),
    ]);
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gateway = Gateway::start(&settings).await;
    // the store goes down before the device connects and comes back after it left
    garage.kill().await;
    let replay = replay_realtime(&testdata(CAPTURE), gateway.addrs.live);
    let down = wait_status(&gateway, "failed uploads while the store is down", |s| {
        counter(s, "upload_failures") >= 1 && counter(s, "spooled") >= 2
    })
    .await;
    assert_eq!(counter(&down, "uploaded"), 0);
    replay.await.unwrap().unwrap();
    let spooled = wait_status(&gateway, "the recording ended", |s| {
        s["recording"].as_array().unwrap().is_empty()
            && counter(s, "finishing") == 0
            && counter(s, "queued") == 0
    })
    .await;
    garage.restart().await;
    let stored = wait_status(&gateway, "the spool uploaded", all_stored).await;
    assert_eq!(
        counter(&stored, "uploaded"),
        counter(&spooled, "spooled"),
        "every spooled object reached the store: {stored}"
    );
    assert_eq!(counter(&stored, "spool_dropped"), 0);
    // the objects are in the bucket, under the prefix
    let listing = garage
        .cli(&["bucket", "info", common::garage::BUCKET])
        .await;
    assert!(listing.contains("Objects:"), "{listing}");
    check_capture_playback(&gateway, &tmp).await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_its_oldest_segments_and_counts_them() {
    let tmp = TempDir::new("records-spool");
    let mut garage = Garage::start().await;
    let mut settings = garage.settings("");
    settings.extend([
        ("JTGW__RECORD__AUTO".to_owned(), "all".to_owned()),
        ("JTGW__RECORD__SEGMENT".to_owned(), "1s".to_owned()),
        (
            "JTGW__RECORD__SPOOL_DIR".to_owned(),
            tmp.path("spool").to_str().unwrap().to_owned(),
        ),
        // room for the init and a segment or two of the capture (~100 KB a second)
        (
            "JTGW__RECORD__SPOOL_MAX_BYTES".to_owned(),
            "150000".to_owned(),
        ),
    ]);
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gateway = Gateway::start(&settings).await;
    garage.kill().await;
    replay_realtime(&testdata(CAPTURE), gateway.addrs.live)
        .await
        .unwrap()
        .unwrap();
    let full = wait_status(&gateway, "the recording ended", |s| {
        s["recording"].as_array().unwrap().is_empty()
            && counter(s, "finishing") == 0
            && counter(s, "queued") == 0
            && counter(s, "spooled") >= 3
    })
    .await;
    let dropped = counter(&full, "spool_dropped");
    assert!(dropped >= 1, "the oldest segments dropped: {full}");
    assert!(counter(&full, "pending_bytes") <= 150_000, "{full}");
    garage.restart().await;
    let stored = wait_status(&gateway, "the spool uploaded", all_stored).await;
    assert_eq!(
        counter(&stored, "uploaded") + dropped,
        counter(&stored, "spooled"),
        "{stored}"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_sweep_deletes_old_segments_and_keeps_recent_ones() {
    let tmp = TempDir::new("records-keep");
    let store = tmp.path("recordings");
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let segment = |start_ms: u64| {
        let date = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(start_ms),
        )
        .to_string();
        let dir = store.join("13800138000/1").join(&date[..10]);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{start_ms}-10000-0123456789abcdef.m4s"));
        std::fs::write(&file, b"segment").unwrap();
        file
    };
    let old = segment(now_ms - 3 * 3_600_000);
    let recent = segment(now_ms - 600_000);
    let gateway = Gateway::start(&[
        ("JTGW__RECORD__STORE", store.to_str().unwrap()),
        ("JTGW__RECORD__KEEP", "1h"),
        ("JTGW__RECORD__SWEEP_INTERVAL", "100ms"),
    ])
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while old.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old segment stays"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the sweep that deleted the old segment listed the recent one too
    assert!(recent.exists(), "a segment within record.keep was deleted");
    let records = ranges(&gateway, "13800138000").await;
    assert_eq!(records["segments"], 1, "{records}");
    gateway.stop().await;
}

/// `seconds` of H.265 (25 fps, a key frame a second) at `size`, Annex-B.
async fn hevc(tmp: &TempDir, size: &str, seconds: &str) -> Vec<u8> {
    let file = tmp.path(&format!("{size}.h265"));
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc=size={size}:rate=25"),
            "-t",
            seconds,
            "-c:v",
            "libx265",
            "-x265-params",
            "keyint=25:bframes=0:log-level=error",
            "-f",
            "hevc",
            file.to_str().unwrap(),
        ],
    )
    .await;
    std::fs::read(file).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_and_device_aac_changing_picture_size_record_as_one_playlist_with_two_inits() {
    use jt1078_gateway::codec::h26x::VideoCodec;
    use jt1078_gateway::codec::jt1078::PayloadType;
    use jt1078_gateway::simulate::pack::{PackOptions, pack};

    let tmp = TempDir::new("records-h265");
    // 2 s at 320x240, then 2 s at 160x120 in the same session; AAC 8 kHz from the device
    let mut video = hevc(&tmp, "320x240", "2").await;
    video.extend(hevc(&tmp, "160x120", "2").await);
    let aac = tmp.path("in.aac");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=500:sample_rate=8000",
            "-t",
            "4",
            "-ac",
            "1",
            "-c:a",
            "aac",
            "-f",
            "adts",
            aac.to_str().unwrap(),
        ],
    )
    .await;
    let audio = std::fs::read(&aac).unwrap();
    let options = PackOptions::default();
    let packed = pack(
        VideoCodec::H265,
        &video,
        Some((PayloadType::Aac, &audio)),
        &options,
    )
    .unwrap();
    let recording = tmp.path("h265-aac.jt1078");
    std::fs::write(&recording, &packed).unwrap();

    let store = tmp.path("recordings");
    let gateway = Gateway::start(&[
        ("JTGW__RECORD__AUTO", "13800138000_1"),
        ("JTGW__RECORD__STORE", store.to_str().unwrap()),
        ("JTGW__RECORD__SEGMENT", "1s"),
    ])
    .await;
    replay_realtime(&recording, gateway.addrs.live)
        .await
        .unwrap()
        .unwrap();
    wait_status(&gateway, "the recording stored", all_stored).await;
    let records = ranges(&gateway, "13800138000").await;
    let ranges = records["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 1, "{records}");
    let hls_path = ranges[0]["hls"].as_str().unwrap();
    let (_, _, playlist) = get(gateway.addrs.http, hls_path, "").await;
    let playlist = String::from_utf8(playlist).unwrap();
    assert_eq!(playlist.matches("#EXT-X-MAP").count(), 2, "{playlist}");
    assert_eq!(
        playlist.matches("#EXT-X-DISCONTINUITY").count(),
        1,
        "{playlist}"
    );
    let hls = format!("http://{}{hls_path}", gateway.addrs.http);
    let (duration, video, audio) = probe(&hls).await;
    assert!(
        (3.0..=5.0).contains(&duration),
        "HLS plays {duration} s of 4 s"
    );
    assert_eq!(video["codec_name"], "hevc");
    assert_eq!(video["width"], 320);
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["sample_rate"], "8000");
    let frames = decoded_video_frames(&hls).await;
    assert!(
        (90..=100).contains(&frames),
        "{frames} of 100 frames play across the change"
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_record_request_records_from_before_it_until_its_duration_or_a_stop() {
    use common::control::{
        BrokerAt, WAIT, embedded_url, gateway_on, port_of, push_on_its_own, wait_online,
    };
    use common::mqtt::TestClient;

    let tmp = TempDir::new("records-mqtt");
    let store = tmp.path("recordings");
    let url = embedded_url();
    let gateway = gateway_on(
        &url,
        BrokerAt::Embedded,
        &[
            ("JTGW__RECORD__STORE", store.to_str().unwrap()),
            ("JTGW__RECORD__SEGMENT", "1s"),
        ],
    )
    .await;
    let mut client =
        TestClient::connect(port_of(&url), &["jt1078/client/#", "jt1078/status/#"]).await;
    wait_online(&mut client).await;
    // a device streaming on its own: its GOP cache holds the lead-up to the request
    let device = push_on_its_own(gateway.addrs.live, "13800138000");
    gateway
        .wait_for_stream("a second of the stream", |s| s.video_frames >= 30)
        .await;
    let requested_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    client
        .publish(
            "jt1078/gateway/13800138000/RECORD",
            r#"{"seqid":"rec-1","client_id":"alarm-1","channel":1,"action":"start","duration":"3s","pre_roll":"10s"}"#,
        )
        .await;
    let reply = client
        .expect("OK to RECORD", WAIT, |r| {
            r.topic == "jt1078/client/rec-1/OK"
        })
        .await
        .json();
    assert_eq!(reply["state"], "live", "{reply}");
    assert_eq!(reply["record"]["action"], "start", "{reply}");
    assert!(
        reply["record"]["hls"]
            .as_str()
            .unwrap()
            .contains("/record/13800138000_1.m3u8?from=")
    );
    let status = client
        .expect("a retained status saying it records", WAIT, |r| {
            r.topic == "jt1078/status/stream/13800138000/1" && r.json()["recording"] == true
        })
        .await;
    assert_eq!(status.json()["live"], true);
    let streams = get_json(gateway.addrs.http, "/api/streams").await;
    assert_eq!(streams[0]["recording"], true, "{streams}");
    // the duration runs out: the recording ends and is stored
    let stored = wait_status(&gateway, "the recording ended by its duration", all_stored).await;
    assert_eq!(counter(&stored, "spool_dropped"), 0);
    let records = ranges(&gateway, "13800138000").await;
    let first = &records["ranges"][0];
    let from_ms = first["from_ms"].as_u64().unwrap();
    assert!(
        from_ms < requested_ms,
        "the recording starts at the GOP cache's key frame, before the request: {records}"
    );
    let seconds = first["duration_ms"].as_u64().unwrap() as f64 / 1000.0;
    assert!(
        (3.0..=8.0).contains(&seconds),
        "{seconds} s recorded for 3 s asked: {records}"
    );
    let hls = format!(
        "http://{}{}",
        gateway.addrs.http,
        first["hls"].as_str().unwrap()
    );
    let (_, video, audio) = probe(&hls).await;
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(audio["codec_name"], "aac");

    // a stop ends a long recording; a stop of nothing is an error
    client
        .publish(
            "jt1078/gateway/13800138000/RECORD",
            r#"{"seqid":"rec-2","client_id":"alarm-2","action":"start","duration":"1h"}"#,
        )
        .await;
    client
        .expect("OK to RECORD", WAIT, |r| {
            r.topic == "jt1078/client/rec-2/OK"
        })
        .await;
    wait_status(&gateway, "recording again", |s| {
        s["recording"].as_array().unwrap().len() == 1
    })
    .await;
    client
        .publish(
            "jt1078/gateway/13800138000/RECORD",
            r#"{"seqid":"rec-3","client_id":"alarm-2","action":"stop"}"#,
        )
        .await;
    let stopped = client
        .expect("OK to the stop", WAIT, |r| {
            r.topic == "jt1078/client/rec-3/OK"
        })
        .await
        .json();
    assert_eq!(stopped["record"]["action"], "stop", "{stopped}");
    wait_status(&gateway, "stopped and stored", all_stored).await;
    client
        .publish(
            "jt1078/gateway/13800138000/RECORD",
            r#"{"seqid":"rec-4","client_id":"nobody","action":"stop"}"#,
        )
        .await;
    let error = client
        .expect("ERROR to a stop of nothing", WAIT, |r| {
            r.topic == "jt1078/client/rec-4/ERROR"
        })
        .await
        .json();
    assert_eq!(error["code"], "not_subscribed", "{error}");
    client
        .publish(
            "jt1078/gateway/13800138000/RECORD",
            r#"{"seqid":"rec-5","duration":"soon"}"#,
        )
        .await;
    client
        .expect("ERROR to a bad duration", WAIT, |r| {
            r.topic == "jt1078/client/rec-5/ERROR"
        })
        .await;
    device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_recording_with_hls_js() {
    let tmp = TempDir::new("records-hlsjs");
    let store = tmp.path("recordings");
    let gateway = Gateway::start(&[
        ("JTGW__RECORD__AUTO", "all"),
        ("JTGW__RECORD__STORE", store.to_str().unwrap()),
        ("JTGW__RECORD__SEGMENT", "1s"),
    ])
    .await;
    record_capture(&gateway).await;
    let records = ranges(&gateway, CAPTURE_DEVICE).await;
    let hls = format!(
        "http://{}{}",
        gateway.addrs.http,
        records["ranges"][0]["hls"].as_str().unwrap()
    );
    let params = serde_json::json!({ "url": hls, "seconds": 20 });
    let result = common::browser::play("hls.html", params, Duration::from_secs(60)).await;
    let page = &result.raw;
    assert_eq!(page["ok"], true, "{page}");
    assert!(
        !page["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("fatal=true")),
        "{page}"
    );
    assert_eq!(page["width"], 720, "{page}");
    assert_eq!(page["height"], 576, "{page}");
    let presented = page["presented"].as_u64().unwrap();
    assert!(
        presented >= 95,
        "{presented} frames presented of 102: {page}"
    );
    // muxed segments: one source buffer carries both ("audiovideo")
    let codecs = page["codecs"].to_string();
    assert!(
        codecs.contains("mp4a.40.2") && codecs.contains("avc1"),
        "{page}"
    );
    assert!(
        page["audio_decoded_bytes"].as_u64().unwrap() > 0,
        "audio decoded: {page}"
    );
    gateway.stop().await;
}

/// Files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_mid_recording_uploads_its_spool_at_the_next_start() {
    let tmp = TempDir::new("records-restart");
    let mut garage = Garage::start().await;
    let spool = tmp.path("spool");
    let mut settings = garage.settings("fleet");
    settings.extend([
        ("JTGW__RECORD__SEGMENT".to_owned(), "1s".to_owned()),
        (
            "JTGW__RECORD__SPOOL_DIR".to_owned(),
            spool.to_str().unwrap().to_owned(),
        ),
    ]);
    let mut first: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    first.push(("JTGW__RECORD__AUTO", "all"));
    let gateway = Gateway::start(&first).await;
    garage.kill().await;
    let replay = replay_realtime(&testdata(CAPTURE), gateway.addrs.live);
    wait_status(&gateway, "a segment spooled while recording", |s| {
        counter(s, "spooled") >= 2 && !s["recording"].as_array().unwrap().is_empty()
    })
    .await;
    // stopped mid-recording: the segment being gathered is finished into the spool
    gateway.stop().await;
    replay.abort();
    let spooled = files_under(&spool).len();
    assert!(
        spooled >= 3,
        "the init, a segment and the last one: {spooled}"
    );
    garage.restart().await;
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gateway = Gateway::start(&settings).await;
    let stored = wait_status(&gateway, "the spool of the last run uploaded", |s| {
        counter(s, "uploaded") as usize == spooled && counter(s, "pending") == 0
    })
    .await;
    assert_eq!(counter(&stored, "upload_failures"), 0, "{stored}");
    assert!(files_under(&spool).is_empty(), "the spool is empty");
    let records = ranges(&gateway, CAPTURE_DEVICE).await;
    assert_eq!(
        records["segments"].as_u64().unwrap() as usize,
        spooled - 1,
        "{records}"
    );
    gateway.stop().await;
}
