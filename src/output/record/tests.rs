//! The recorder's output read by ffprobe/ffmpeg: init + segments concatenated decode with
//! the frames, picture size and audio that went in.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;

use super::keys;
use super::recorder::{FinishedSegment, Recorder};
use crate::codec::audio::aac::split_adts;
use crate::codec::h26x::{VideoCodec, access_units};
use crate::media::{Codec, Frame};

/// 2026-12-07T04:00:00Z
const BASE_MS: u64 = 1_796_616_000_000;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("jt1078-record-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not start: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `seconds` of video (a key frame a second, 25 fps, no B-frames) as Annex-B.
fn video(scratch: &Scratch, codec: VideoCodec, size: &str, seconds: u32) -> Vec<u8> {
    let (encoder, format, file) = match codec {
        VideoCodec::H264 => ("libx264", "h264", scratch.path(&format!("v{size}.h264"))),
        VideoCodec::H265 => ("libx265", "hevc", scratch.path(&format!("v{size}.h265"))),
    };
    let source = format!("testsrc2=size={size}:rate=25");
    let seconds = seconds.to_string();
    let mut args = vec![
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &source,
        "-t",
        &seconds,
        "-c:v",
        encoder,
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-bf",
        "0",
    ];
    if codec == VideoCodec::H265 {
        args.extend(["-x265-params", "log-level=error:keyint=25:min-keyint=25"]);
    }
    args.extend(["-f", format, file.to_str().unwrap()]);
    run("ffmpeg", &args);
    std::fs::read(file).unwrap()
}

/// `seconds` of AAC-LC 8 kHz mono as ADTS frames.
fn aac(scratch: &Scratch, seconds: u32) -> Vec<Bytes> {
    let file = scratch.path("a.aac");
    let seconds = seconds.to_string();
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=8000",
            "-t",
            &seconds,
            "-ac",
            "1",
            "-c:a",
            "aac",
            "-f",
            "adts",
            file.to_str().unwrap(),
        ],
    );
    let all = Bytes::from(std::fs::read(file).unwrap());
    let mut frames = Vec::new();
    let mut at = 0;
    while at < all.len() {
        let rest = all.slice(at..);
        let first = split_adts(&rest).unwrap().into_iter().next().unwrap();
        let len = first.data.len() + 7;
        frames.push(rest.slice(..len));
        at += len;
    }
    frames
}

/// Video frames every 40 ms from `start_pts`, audio frames every 128 ms, in pts order.
fn frames(codec: VideoCodec, video: &[u8], audio: &[Bytes], start_pts: u64) -> Vec<Frame> {
    let hub_codec = Codec::from_video(codec);
    let mut frames: Vec<Frame> = access_units(codec, video)
        .into_iter()
        .enumerate()
        .map(|(i, unit)| Frame {
            codec: hub_codec,
            is_key: codec.is_key_frame(&unit),
            pts: start_pts + i as u64 * 40,
            data: Bytes::from(unit),
        })
        .collect();
    frames.extend(audio.iter().enumerate().map(|(i, data)| Frame {
        codec: Codec::Aac,
        is_key: false,
        pts: start_pts + i as u64 * 128,
        data: data.clone(),
    }));
    frames.sort_by_key(|f| f.pts);
    frames
}

fn record(recorder: &mut Recorder, frames: &[Frame]) -> Vec<FinishedSegment> {
    let mut out = Vec::new();
    for frame in frames {
        // arriving 30 ms after their time
        if let Some(segment) = recorder.push(frame, BASE_MS + frame.pts + 30).unwrap() {
            out.push(segment);
        }
    }
    out
}

/// ffprobe's JSON of the first stream of `kind` (frames counted).
fn probe(file: &std::path::Path, kind: &str) -> serde_json::Value {
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            kind,
            "-show_entries",
            "stream=codec_name,width,height,sample_rate,nb_read_frames",
            "-of",
            "json",
            file.to_str().unwrap(),
        ],
    );
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    value["streams"][0].clone()
}

fn concatenate(file: &std::path::Path, init: &Bytes, segments: &[FinishedSegment]) {
    let mut bytes = init.to_vec();
    for s in segments {
        bytes.extend_from_slice(&s.segment.data);
    }
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn h264_and_aac_segments_cut_at_key_frames_decode_after_their_init() {
    let scratch = Scratch::new("h264");
    let video = video(&scratch, VideoCodec::H264, "320x240", 3);
    let audio = aac(&scratch, 3);
    let frames = frames(VideoCodec::H264, &video, &audio, 5_000);
    let mut recorder = Recorder::new("13800138000", 1, Duration::from_secs(1));
    let mut segments = record(&mut recorder, &frames);
    segments.extend(recorder.finish().unwrap());
    assert_eq!(segments.len(), 3, "a segment per key frame a second");
    let init = segments[0]
        .init
        .clone()
        .expect("the first segment brings its init");
    assert!(
        segments[1..].iter().all(|s| s.init.is_none()),
        "one init for one configuration"
    );
    // times: the wall clock of the first frame (its arrival less the smallest delay seen)
    let starts: Vec<u64> = segments.iter().map(|s| s.start_ms).collect();
    let t0 = BASE_MS + 5_000 + 30;
    assert_eq!(starts, vec![t0, t0 + 1_000, t0 + 2_000]);
    assert_eq!(segments[0].duration_ms, 1_000);
    assert_eq!(segments[2].duration_ms, 1_000, "the last frame lasts 40 ms");
    let name = keys::parse_segment(&segments[1].segment.key).unwrap();
    assert_eq!(name.start_ms, t0 + 1_000);
    assert_eq!(init.key, keys::init_key("13800138000", 1, &name.init));
    assert!(
        segments[1]
            .segment
            .key
            .starts_with("13800138000/1/2026-12-07/")
    );

    let file = scratch.path("all.mp4");
    concatenate(&file, &init.data, &segments);
    let v = probe(&file, "v");
    assert_eq!(v["codec_name"], "h264");
    assert_eq!(v["width"], 320);
    assert_eq!(v["height"], 240);
    assert_eq!(v["nb_read_frames"], "75");
    let a = probe(&file, "a");
    assert_eq!(a["codec_name"], "aac");
    assert_eq!(a["sample_rate"], "8000");
    let audio_frames: u64 = a["nb_read_frames"].as_str().unwrap().parse().unwrap();
    assert!(audio_frames >= 20, "audio frames decoded: {audio_frames}");
    let errors = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-i",
            file.to_str().unwrap(),
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&errors.stderr),
        "",
        "decodes without errors"
    );

    // a segment in the middle reads on its own after the init
    let middle = scratch.path("middle.mp4");
    concatenate(&middle, &init.data, &segments[1..2]);
    assert_eq!(probe(&middle, "v")["nb_read_frames"], "25");
}

#[test]
fn h265_and_a_new_picture_size_make_a_second_init() {
    let scratch = Scratch::new("h265");
    let big = video(&scratch, VideoCodec::H265, "320x240", 2);
    let small = video(&scratch, VideoCodec::H265, "160x120", 2);
    let mut all = frames(VideoCodec::H265, &big, &[], 0);
    all.extend(frames(VideoCodec::H265, &small, &[], 2_000));
    let mut recorder = Recorder::new("13800138000", 2, Duration::from_secs(10));
    let mut segments = record(&mut recorder, &all);
    segments.extend(recorder.finish().unwrap());
    assert_eq!(
        segments.len(),
        2,
        "cut at the new configuration, not at 10 s"
    );
    let first_init = segments[0].init.clone().unwrap();
    let second_init = segments[1]
        .init
        .clone()
        .expect("a new configuration, a new init");
    assert_ne!(first_init.key, second_init.key);
    for (init, segment, width) in [
        (&first_init, &segments[0], 320),
        (&second_init, &segments[1], 160),
    ] {
        let file = scratch.path(&format!("w{width}.mp4"));
        concatenate(&file, &init.data, std::slice::from_ref(segment));
        let v = probe(&file, "v");
        assert_eq!(v["codec_name"], "hevc");
        assert_eq!(v["width"], width);
        assert_eq!(v["nb_read_frames"], "50");
    }
}

#[test]
fn frames_before_the_first_key_frame_and_garbage_are_left_out() {
    let mut recorder = Recorder::new("13800138000", 1, Duration::from_secs(1));
    let p_frame = Frame {
        codec: Codec::H264,
        is_key: false,
        pts: 0,
        data: Bytes::from_static(&[0, 0, 0, 1, 0x41, 0x9a, 0x00]),
    };
    let bad_key = Frame {
        codec: Codec::H264,
        is_key: true,
        pts: 40,
        data: Bytes::from_static(&[0, 0, 0, 1, 0x65, 0x88]),
    };
    let bad_aac = Frame {
        codec: Codec::Aac,
        is_key: false,
        pts: 50,
        data: Bytes::from_static(&[1, 2, 3]),
    };
    for frame in [&p_frame, &bad_key, &bad_aac] {
        assert!(recorder.push(frame, BASE_MS).unwrap().is_none());
    }
    assert!(!recorder.is_recording());
    assert!(recorder.finish().unwrap().is_none());
}

#[test]
fn a_stream_without_key_frames_is_cut_at_twice_the_byte_bound_and_waits_for_one() {
    let scratch = Scratch::new("bound");
    let video = video(&scratch, VideoCodec::H264, "160x120", 1);
    let key = frames(VideoCodec::H264, &video, &[], 0)
        .into_iter()
        .find(|f| f.is_key)
        .unwrap();
    let mut recorder =
        Recorder::new("13800138000", 1, Duration::from_secs(10)).with_max_bytes(10_000);
    assert!(recorder.push(&key, BASE_MS).unwrap().is_none());
    // P frames of 1,000 bytes, never a key frame
    let mut p_frame = vec![0, 0, 0, 1, 0x41];
    p_frame.resize(1_000, 0x5a);
    let p_frame = Bytes::from(p_frame);
    let mut finished = Vec::new();
    for i in 1..=40u64 {
        let frame = Frame {
            codec: Codec::H264,
            is_key: false,
            pts: i * 40,
            data: p_frame.clone(),
        };
        finished.extend(recorder.push(&frame, BASE_MS + i * 40).unwrap());
    }
    assert_eq!(finished.len(), 1, "cut once at 20,000 bytes");
    assert!(finished[0].segment.data.len() >= 20_000);
    assert!(!recorder.is_recording(), "waits for a key frame");
    assert!(
        recorder.skipped() >= 10,
        "the frames after the cut are counted"
    );
    assert!(recorder.finish().unwrap().is_none());
}
