//! WebRTC in a real browser: headless Chromium (one instance for the whole file, see
//! `common/browser.rs`) plays a replayed device capture over WHEP and a cold stream
//! signalled over MQTT through the broker's WebSocket listener, and says through
//! `getStats()` what it decoded.
//!
//! The gateway's UDP socket is bound to the wildcard and announces two addresses of this
//! machine (loopback and the machine's own), so the browser checks a pair on each: media
//! that left from an address the browser did not expect for its pair would be dropped
//! (`tests/browser/README.md`).

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::browser::{PlayOptions, PlayResult, play_mqtt, play_whep};
use common::control::*;
use common::webrtc::{Coturn, webrtc_api_when};
use common::*;

/// An IPv4 address of this machine that is not loopback: the first one it has, or, on a
/// machine with only loopback (a bare container), one on a veth pair made for the test
/// (removed when the returned guard drops). Chromium gathers no candidates on loopback
/// alone, so these tests cannot run without one: failing says why. To try the veth path on
/// a machine with an interface: `unshare -n sh -c 'ip link set lo up; exec TEST_BINARY'`.
fn machine_ipv4() -> (IpAddr, Option<Veth>) {
    let found = if_addrs::get_if_addrs()
        .unwrap()
        .into_iter()
        .map(|i| i.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback());
    match found {
        Some(ip) => (ip, None),
        None => {
            let veth = Veth::create();
            (veth.ip, Some(veth))
        }
    }
}

/// A veth pair with an address on one end, deleted on drop.
struct Veth {
    name: String,
    ip: IpAddr,
}

impl Veth {
    fn create() -> Veth {
        // unique per test process and test: two tests of this binary may run at once
        static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("jt{}v{n}", std::process::id() % 100_000);
        let ip: IpAddr = format!("10.78.{n}.1").parse().unwrap();
        let peer = format!("{name}p");
        let ip_cidr = format!("{ip}/24");
        for args in [
            &["link", "add", &name, "type", "veth", "peer", "name", &peer][..],
            &["addr", "add", &ip_cidr, "dev", &name],
            &["link", "set", &name, "up"],
            &["link", "set", &peer, "up"],
        ] {
            let out = std::process::Command::new("ip").args(args).output();
            let ok = out.as_ref().is_ok_and(|o| o.status.success());
            assert!(
                ok,
                "this machine has only loopback, where Chromium gathers no ICE candidates, and \
                 `ip {}` could not add an interface (root or CAP_NET_ADMIN needed): {out:?}",
                args.join(" ")
            );
        }
        // Chromium gathers host candidates on the default route's interface only (a page
        // without camera permission): a machine with only loopback has none, so the veth
        // becomes it (never replacing a route the machine has)
        let routes = std::process::Command::new("ip")
            .args(["route", "show", "default"])
            .output()
            .unwrap();
        if routes.stdout.is_empty() {
            let _ = std::process::Command::new("ip")
                .args(["route", "add", "default", "dev", &name])
                .output();
        }
        Veth { name, ip }
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // deleting one end deletes the pair
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}

/// The picture size ffprobe reads from the capture's H.264 (the reference, not the
/// gateway's own parsing).
async fn capture_size() -> (u64, u64) {
    let bytes = std::fs::read(testdata("h264-g711a-156987000796-ch1.jt1078")).unwrap();
    let tmp = TempDir::new("browser-ref");
    let h264 = tmp.path("capture.h264");
    std::fs::write(&h264, raw_video(&raw_packets(&bytes, 6))).unwrap();
    let probe = probe_stream(&h264, "v", Some("h264")).await;
    (
        probe["width"].as_u64().unwrap(),
        probe["height"].as_u64().unwrap(),
    )
}

/// Replays the capture into `gateway` (looping, until the token is cancelled) and plays it
/// over WHEP for 50 frames and 2 s more.
async fn play_the_capture_over_whep(
    gateway: &Gateway,
) -> (tokio_util::sync::CancellationToken, PlayResult) {
    let device = replay_looping(
        &testdata("h264-g711a-156987000796-ch1.jt1078"),
        gateway.addrs.live,
        Some("156987000796"),
    );
    gateway
        .wait_for_stream("the capture", |s| s.video_frames >= 30)
        .await;
    let opts = PlayOptions {
        hold: Duration::from_secs(2),
        ..PlayOptions::default()
    };
    let http = gateway.addrs.http;
    let whep = play_whep(&format!("http://{http}/whep/live/156987000796_1"), &opts).await;
    (device, whep)
}

fn describe(result: &PlayResult) -> String {
    serde_json::to_string_pretty(&result.raw).unwrap()
}

/// Video at the source's size, dozens of frames decoded, none lost; G.711A as PCMA.
fn assert_played(result: &PlayResult, size: (u64, u64), audio: bool) {
    let all = describe(result);
    assert!(result.ok && result.reached, "{all}");
    let video = &result.video;
    assert!(video.frames_decoded >= 50, "{all}");
    assert_eq!(video.mime_type.as_deref(), Some("video/H264"), "{all}");
    assert_eq!(
        (
            u64::from(video.frame_width.unwrap()),
            u64::from(video.frame_height.unwrap())
        ),
        size,
        "{all}"
    );
    assert_eq!(video.packets_lost, 0, "{all}");
    if audio {
        let audio = &result.audio;
        assert_eq!(audio.mime_type.as_deref(), Some("audio/PCMA"), "{all}");
        assert!(audio.packets_received >= 25, "{all}");
        assert!(audio.total_samples_received >= 8000, "decoded: {all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_whep_and_mqtt_signalled_streams() {
    let size = capture_size().await;
    let ws_port = free_port();
    let ws_listen = format!("127.0.0.1:{ws_port}");
    let url = embedded_url();
    // two addresses of this machine announced on a wildcard socket: the browser checks a
    // pair on each
    let (ip, _veth) = machine_ipv4();
    let announced = format!("127.0.0.1,{ip}");
    let gateway = gateway_on(
        &url,
        BrokerAt::Embedded,
        &[
            ("JTGW__MQTT__EMBEDDED_WS_LISTEN", &ws_listen),
            ("JTGW__WEBRTC__UDP_LISTEN", "0.0.0.0:0"),
            ("JTGW__WEBRTC__PUBLIC_IPS", &announced),
        ],
    )
    .await;

    // 1. WHEP, a live stream: the picture from the GOP cache at once
    let (device, whep) = play_the_capture_over_whep(&gateway).await;
    assert_played(&whep, size, true);
    assert_eq!(whep.status, Some(201), "{}", describe(&whep));
    assert_eq!(whep.delete_status, Some(200), "{}", describe(&whep));
    // every pair the browser checked worked: each answered from its own address
    if announced.contains(',') {
        let remotes: std::collections::HashSet<_> = whep
            .ice
            .pairs
            .iter()
            .filter(|p| p.state.as_deref() == Some("succeeded"))
            .filter_map(|p| p.remote.as_deref().map(|r| r.rsplit_once(':').unwrap().0))
            .collect();
        assert!(
            remotes.len() >= 2,
            "a pair succeeded on each announced address: {}",
            describe(&whep)
        );
    }
    let live_ms = whep.first_frame_ms.unwrap();
    eprintln!(
        "WHEP live: answer {} ms, first decoded frame {live_ms} ms after createOffer",
        whep.answer_ms.unwrap_or_default()
    );
    device.cancel();

    // 2. MQTT over WebSocket, a device that is not connected: REQPULL, then the picture
    let mqtt_device = start_device(&url, "13800138000");
    let opts = PlayOptions {
        seqid: Some("browser-1".to_owned()),
        hold: Duration::from_secs(1),
        ..PlayOptions::default()
    };
    let cold = play_mqtt(&format!("ws://{ws_listen}/mqtt"), "13800138000", 1, &opts).await;
    let reply = cold.reply.clone().unwrap_or_default();
    assert_eq!(reply["state"], "pulling", "{}", describe(&cold));
    // the bundled sample: 640x360 (samples/make-sample.sh)
    assert_played(&cold, (640, 360), true);
    eprintln!(
        "MQTT cold: answer {} ms, first decoded frame {} ms after createOffer",
        cold.answer_ms.unwrap_or_default(),
        cold.first_frame_ms.unwrap_or_default()
    );
    mqtt_device.cancel();
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_through_the_gateways_turn_relay() {
    // Chromium pairs no relay candidate on loopback: the machine's own address
    let (ip, _veth) = machine_ipv4();
    let size = capture_size().await;
    let turn = Coturn::turn_on(ip);
    let setting = turn.turn_setting();
    // only the relayed address is offered: every packet between Chromium and the gateway
    // goes through coturn
    let gateway = Gateway::start(&[
        ("JTGW__WEBRTC__UDP_LISTEN", "0.0.0.0:0"),
        ("JTGW__WEBRTC__TURN_SERVERS", &setting),
        ("JTGW__WEBRTC__ICE_TRANSPORT_POLICY", "relay"),
    ])
    .await;
    let api = webrtc_api_when(&gateway, "a relayed address from coturn", |api| {
        api["relayed"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let relayed = api["relayed"][0].as_str().unwrap().to_owned();
    let (device, whep) = play_the_capture_over_whep(&gateway).await;
    assert_played(&whep, size, true);
    assert_eq!(
        whep.ice.remote_type.as_deref(),
        Some("relay"),
        "{}",
        describe(&whep)
    );
    assert_eq!(
        whep.ice.remote.as_deref(),
        Some(relayed.as_str()),
        "{}",
        describe(&whep)
    );
    eprintln!(
        "WHEP through TURN: answer {} ms, first decoded frame {} ms after createOffer",
        whep.answer_ms.unwrap_or_default(),
        whep.first_frame_ms.unwrap_or_default()
    );
    device.cancel();
    gateway.stop().await;
}
