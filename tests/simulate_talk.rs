//! The simulator as a device in a talk (`simulate --mqtt --talk --talk-out`): a REQPULL with
//! data type 2 on a real mosquitto makes it connect where it says, send its recording's
//! audio as the cab's microphone and keep what it is sent; STOP with command 4 (close
//! two-way talk) ends it and the WAV holds that audio, decoded. Here the test is the
//! gateway's side of the talk connection: it sends a 440 Hz tone as G.711A packets.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::mqtt::{Mosquitto, TestClient};
use common::*;
use jt1078_gateway::codec::audio::DeviceCodec;
use jt1078_gateway::codec::jt1078::{
    DEFAULT_MAX_BODY, DataType, Decoder, PayloadType, Sim, TalkFrame, TalkSender,
};
use jt1078_gateway::media::DeviceId;
use jt1078_gateway::simulate::Pace;
use jt1078_gateway::simulate::mqtt_device::{self, MqttDeviceOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const DEVICE: &str = "13800138000";

/// Power of `samples` at `frequency` (Goertzel), 8 kHz.
fn power_at(samples: &[i16], frequency: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * frequency / 8000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for sample in samples {
        let s = f64::from(*sample) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2
}

#[tokio::test]
async fn a_simulated_device_talks_and_keeps_what_it_heard() {
    let mosquitto = Mosquitto::start().await;
    let tmp = TempDir::new("talk-sim");
    let heard = tmp.path("heard.wav");
    let recording = testdata("h264-g711a-156987000796-ch1.jt1078");
    let options = MqttDeviceOptions {
        packets: Arc::new(jt1078_gateway::simulate::load_file(&recording).unwrap()),
        url: mosquitto.url(),
        topic_prefix: "jt1078".to_owned(),
        devices: vec![DeviceId::parse(DEVICE).unwrap()],
        pace: Pace::Realtime,
        looping: true,
        device_secret: None,
        talk: true,
        talk_out: Some(heard.clone()),
    };
    let cancel = CancellationToken::new();
    let simulator = tokio::spawn(mqtt_device::run(options, cancel.clone()));
    let mut backend = TestClient::connect(mosquitto.port, &["jt1078/gateway/#"]).await;
    backend
        .expect("the device's heartbeat", Duration::from_secs(20), |r| {
            r.topic == format!("jt1078/gateway/{DEVICE}/HEART")
        })
        .await;

    // the talk connection's server, as the gateway would be
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reqpull = serde_json::json!({
        "mode": "REQPULL", "seqid": "talk-1", "device": DEVICE, "server_host": "127.0.0.1",
        "tcp_port": port, "udp_port": 0, "channel": 1, "data_type": 2, "stream_type": 0,
    });
    backend
        .publish(
            &format!("jt1078/device/{DEVICE}/REQPULL"),
            &reqpull.to_string(),
        )
        .await;
    let (mut talk, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
        .await
        .expect("the device connects for the talk")
        .unwrap();

    // the device's microphone: audio packets of its SIM and channel, nothing else
    let mut decoder = Decoder::new(DEFAULT_MAX_BODY);
    let mut uplink = Vec::new();
    let mut buf = [0u8; 4096];
    while uplink.len() < 20 {
        let n = tokio::time::timeout(Duration::from_secs(20), talk.read(&mut buf))
            .await
            .expect("uplink audio")
            .unwrap();
        assert!(n > 0, "the device keeps the talk open");
        decoder.push(&buf[..n]);
        while let Some(packet) = decoder.next_packet() {
            uplink.push(packet);
        }
    }
    let sim = Sim::from_digits(DEVICE, uplink[0].layout()).unwrap();
    assert!(
        uplink
            .iter()
            .all(|p| p.data_type == DataType::Audio && p.sim == sim && p.channel == 1),
        "audio of the device's channel 1 only"
    );
    assert!(uplink.iter().all(|p| p.payload_type == PayloadType::G711A));

    // the dispatcher's voice: 2 s of 440 Hz as 40 ms G.711A frames
    let tone: Vec<i16> = (0..16_000)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            (10_000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect();
    let mut sender = TalkSender::new(sim, 1, DeviceCodec::G711A, false, TalkFrame::Ms40);
    let mut out = BytesMut::new();
    assert_eq!(sender.push(&tone, &mut out), 50);
    talk.write_all(&out).await.unwrap();
    // the gateway ends the talk by closing: the device has read it all, keeps it, closes
    talk.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), talk.read_to_end(&mut rest))
        .await
        .expect("the device closes its side")
        .unwrap();
    // it closes after writing the file
    let mut wav = hound::WavReader::open(&heard).unwrap();
    assert_eq!(wav.spec().sample_rate, 8000);
    let samples: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
    assert_eq!(samples.len(), tone.len(), "every sample sent was heard");
    let at_440 = power_at(&samples, 440.0);
    for other in [300.0, 1000.0, 2000.0] {
        assert!(
            at_440 > 100.0 * power_at(&samples, other),
            "440 Hz dominates {other} Hz by more than 20 dB"
        );
    }

    // a second talk, which STOP with command 4 (close two-way talk) ends
    backend
        .publish(
            &format!("jt1078/device/{DEVICE}/REQPULL"),
            &reqpull.to_string(),
        )
        .await;
    let (mut second, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
        .await
        .expect("the device talks again")
        .unwrap();
    let stop = serde_json::json!({
        "mode": "STOP", "seqid": "talk-2", "device": DEVICE, "channel": 1, "command": 4,
        "close_type": 0, "stream_type": 0,
    });
    backend
        .publish(&format!("jt1078/device/{DEVICE}/STOP"), &stop.to_string())
        .await;
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        while second.read(&mut buf).await.unwrap() > 0 {}
    })
    .await
    .expect("STOP command 4 closes the talk connection");
    cancel.cancel();
    simulator.await.unwrap().unwrap();
}
