//! Audio every player plays: device audio (G.711, G.726, IMA ADPCM) comes out of HTTP-FLV as
//! AAC-LC 8 kHz mono that ffmpeg decodes without errors, as long as the source and at the
//! source's pitch; `/api/streams` says what goes in and out.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::path::Path;

use common::*;
use jt1078_gateway::media::Codec;

/// The test tone.
const TONE_HZ: f64 = 1000.0;

/// Checks what ffprobe says of the FLV's audio (AAC, 8000 Hz, mono), that ffmpeg decodes it
/// without an error, and returns the decoded samples.
async fn aac_audio(flv: &[u8], tmp: &TempDir, what: &str) -> Vec<i16> {
    let out = tmp.path(&format!("{what}.flv"));
    std::fs::write(&out, flv).unwrap();
    let audio = probe_stream(&out, "a", None).await;
    assert_eq!(audio["codec_name"], "aac", "{what}");
    assert_eq!(audio["sample_rate"], "8000", "{what}");
    assert_eq!(audio["channels"], 1, "{what}");
    let errors = decode_errors(&out, "0:a", None).await;
    assert!(errors.is_empty(), "{what}: audio decode errors: {errors}");
    let pcm = tmp.path(&format!("{what}.pcm"));
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-i",
            out.to_str().unwrap(),
            "-map",
            "0:a",
            "-f",
            "s16le",
            pcm.to_str().unwrap(),
        ],
    )
    .await;
    std::fs::read(&pcm)
        .unwrap()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn assert_duration_within_2_percent(decoded: usize, source: usize, what: &str) {
    let ratio = decoded as f64 / source as f64;
    assert!(
        (0.98..=1.02).contains(&ratio),
        "{what}: {decoded} samples decoded for {source} sent ({:.1} %)",
        ratio * 100.0
    );
}

#[tokio::test]
async fn g711a_capture_plays_as_aac_8k_mono_over_http_flv() {
    let bytes = std::fs::read(testdata("h264-g711a-156987000796-ch1.jt1078")).unwrap();
    let packets = raw_packets(&bytes, 6);
    let sent: usize = packets
        .iter()
        .filter(|p| p.data_type == 3)
        .map(|p| p.body.len())
        .sum();
    let expected_frames = expected_video_frames(&packets);
    // audio.flv defaults to "aac"
    let gateway = Gateway::start(&[]).await;
    let flv = replay_and_watch(&gateway, &bytes, "156987000796_1").await;
    gateway.stop().await;
    let tmp = TempDir::new("g711-aac");
    let samples = aac_audio(&flv, &tmp, "g711a").await;
    assert_duration_within_2_percent(samples.len(), sent, "G.711A capture");
    let out = tmp.path("g711a.flv");
    let video = probe_stream(&out, "v", None).await;
    let frames: usize = video["nb_read_frames"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        frames, expected_frames,
        "every video frame, as with G.711 passed through"
    );
}

/// Dominant frequency (Hz) of `samples` at 8 kHz: the peak of a 1 Hz-step scan (Goertzel).
fn dominant_frequency(samples: &[i16]) -> f64 {
    (50..4000)
        .map(|hz| (f64::from(hz), power_at(samples, f64::from(hz))))
        .fold(
            (0.0, 0.0),
            |best, (hz, p)| if p > best.1 { (hz, p) } else { best },
        )
        .0
}

fn power_at(samples: &[i16], hz: f64) -> f64 {
    let w = std::f64::consts::TAU * hz / 8000.0;
    let (mut re, mut im) = (0.0, 0.0);
    for (i, s) in samples.iter().enumerate() {
        re += f64::from(*s) * (w * i as f64).cos();
        im += f64::from(*s) * (w * i as f64).sin();
    }
    re * re + im * im
}

/// Worst THD+N (dB) of 64 ms windows: the window's best-fitting sinusoid at `hz` against
/// what is left. A click at a packet boundary shows as a window with more left over.
fn worst_residual_db(samples: &[i16], hz: f64) -> f64 {
    let w = std::f64::consts::TAU * hz / 8000.0;
    samples
        .chunks_exact(512)
        .map(|window| {
            let (mut c, mut s) = (0.0, 0.0);
            for (i, x) in window.iter().enumerate() {
                c += f64::from(*x) * (w * i as f64).cos();
                s += f64::from(*x) * (w * i as f64).sin();
            }
            let (a, b) = (2.0 * c / 512.0, 2.0 * s / 512.0);
            let (mut fit, mut rest) = (0.0, 0.0);
            for (i, x) in window.iter().enumerate() {
                let y = a * (w * i as f64).cos() + b * (w * i as f64).sin();
                fit += y * y;
                rest += (f64::from(*x) - y).powi(2);
            }
            10.0 * (rest / fit.max(1.0)).log10()
        })
        .fold(f64::MIN, f64::max)
}

/// One way a device sends the tone: codec, its bytes (made by ffmpeg from the tone), the
/// `pack` options, and the THD+N bound for it (lower rates carry more quantisation noise).
struct Case {
    name: &'static str,
    audio: std::path::PathBuf,
    pack: Vec<&'static str>,
    bound_db: f64,
}

async fn ffmpeg(args: &[&str]) {
    let mut all = vec!["-v", "error", "-y"];
    all.extend(args);
    run("ffmpeg", &all).await;
}

/// Encodes `tone` (s16le) with an ffmpeg audio codec into a raw file.
async fn encode(tone: &Path, out: &Path, codec: &[&str]) {
    let mut args = vec![
        "-f",
        "s16le",
        "-ar",
        "8000",
        "-ac",
        "1",
        "-i",
        tone.to_str().unwrap(),
    ];
    args.extend(codec);
    args.push(out.to_str().unwrap());
    ffmpeg(&args).await;
}

#[tokio::test]
async fn a_1khz_tone_comes_out_at_1khz_from_every_device_codec() {
    let tmp = TempDir::new("tone");
    let video = tmp.path("v.h264");
    let tone = tmp.path("tone.pcm");
    let seconds = 6;
    let duration = seconds.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=25",
        "-t",
        &duration,
        "-c:v",
        "libx264",
        "-g",
        "25",
        "-bf",
        "0",
        "-f",
        "h264",
        video.to_str().unwrap(),
    ])
    .await;
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency={TONE_HZ}:sample_rate=8000:duration={seconds}"),
        "-af",
        "volume=0.5",
        "-f",
        "s16le",
        tone.to_str().unwrap(),
    ])
    .await;
    let sent = std::fs::metadata(&tone).unwrap().len() as usize / 2;
    let mut cases = Vec::new();
    for (name, codec, pack, bound_db) in [
        (
            "alaw",
            vec!["-f", "alaw"],
            vec!["--audio-codec", "alaw"],
            -20.0,
        ),
        (
            "mulaw-hisilicon",
            vec!["-f", "mulaw"],
            vec!["--audio-codec", "mulaw", "--hisilicon"],
            -20.0,
        ),
        (
            "adpcm-hisilicon",
            vec!["-f", "s16le"],
            vec!["--audio-codec", "adpcm", "--hisilicon"],
            -15.0,
        ),
        (
            "adpcm-high-nibble",
            vec!["-f", "s16le"],
            vec!["--audio-codec", "adpcm", "--high-nibble-first"],
            -15.0,
        ),
        (
            "g726-32k",
            vec!["-c:a", "g726", "-b:a", "32k", "-f", "g726"],
            vec!["--audio-codec", "g726", "--audio-frame", "160"],
            -15.0,
        ),
        (
            "g726le-16k",
            vec!["-c:a", "g726le", "-b:a", "16k", "-f", "g726le"],
            vec!["--audio-codec", "g726", "--audio-frame", "80"],
            -5.0,
        ),
        (
            "g726le-24k",
            vec!["-c:a", "g726le", "-b:a", "24k", "-f", "g726le"],
            vec!["--audio-codec", "g726", "--audio-frame", "120"],
            -10.0,
        ),
        (
            "g726-40k-hisilicon",
            vec!["-c:a", "g726", "-b:a", "40k", "-f", "g726"],
            vec![
                "--audio-codec",
                "g726",
                "--audio-frame",
                "200",
                "--hisilicon",
            ],
            -15.0,
        ),
    ] {
        let audio = tmp.path(&format!("{name}.raw"));
        encode(&tone, &audio, &codec).await;
        cases.push(Case {
            name,
            audio,
            pack,
            bound_db,
        });
    }
    let gateway = Gateway::start(&[]).await;
    let binary = env!("CARGO_BIN_EXE_jt1078-gateway");
    for (i, case) in cases.iter().enumerate() {
        let device = format!("1380000{:04}", i + 1);
        let recording = tmp.path(&format!("{}.jt1078", case.name));
        let mut args = vec![
            "pack",
            "--video",
            video.to_str().unwrap(),
            "--audio",
            case.audio.to_str().unwrap(),
            "--device",
            &device,
            "--out",
            recording.to_str().unwrap(),
        ];
        args.extend(&case.pack);
        run(binary, &args).await;
        let bytes = std::fs::read(&recording).unwrap();
        let flv = replay_and_watch(&gateway, &bytes, &format!("{device}_1")).await;
        let samples = aac_audio(&flv, &tmp, case.name).await;
        assert_duration_within_2_percent(samples.len(), sent, case.name);
        // the steady part: past the encoder's start and before its flush
        let steady = &samples[4000..samples.len() - 4000];
        let hz = dominant_frequency(steady);
        let residual = worst_residual_db(steady, TONE_HZ);
        eprintln!(
            "{}: {} samples, {hz} Hz, worst window THD+N {residual:.1} dB",
            case.name,
            samples.len()
        );
        assert!(
            (hz - TONE_HZ).abs() <= 2.0,
            "{}: dominant frequency {hz} Hz",
            case.name
        );
        assert!(
            residual <= case.bound_db,
            "{}: a window has THD+N {residual:.1} dB (bound {} dB): clicks or noise",
            case.name,
            case.bound_db
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn api_says_what_audio_goes_in_and_out() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/sample-h264-g711a.jt1078");
    let gateway = Gateway::start(&[]).await;
    let device = replay_realtime(&sample, gateway.addrs.live);
    gateway
        .wait_for_stream("the stream", |s| s.video_frames >= 1)
        .await;
    let http = gateway.addrs.http;
    let viewer = tokio::spawn(async move { http_get(http, "/live/13800138000_1.flv").await });
    let stream = gateway
        .wait_for_stream("an AAC viewer", |s| s.audio_codec_out == vec![Codec::Aac])
        .await;
    assert_eq!(stream.audio_codec, Some(Codec::G711A));
    assert_eq!(stream.audio_undecodable, 0);
    let (status, body) = http_get(http, "/api/streams").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let entry = &json.as_array().unwrap()[0];
    assert_eq!(entry["audio_codec"], "g711a", "{json}");
    assert_eq!(
        entry["audio_codec_out"],
        serde_json::json!(["aac"]),
        "{json}"
    );
    assert_eq!(entry["audio_undecodable"], 0, "{json}");
    device.await.unwrap().unwrap();
    viewer.await.unwrap();
}
