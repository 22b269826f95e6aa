//! The `mosquitto_pub` examples in docs/mqtt.md work as written: each is run (through the
//! shell, as a user would paste it) against a gateway, and answered as the page says.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]
mod common;

use std::time::Duration;

use common::mqtt::TestClient;
use common::*;

/// The `mosquitto_pub` commands of a Markdown page, continuation lines joined.
fn mosquitto_pub_examples(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_code = false;
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        let text = line.trim();
        match current.take() {
            Some(mut command) => {
                command.push(' ');
                command.push_str(text.trim_end_matches('\\').trim());
                if text.ends_with('\\') {
                    current = Some(command);
                } else {
                    commands.push(command);
                }
            }
            None if text.starts_with("mosquitto_pub ") => {
                let command = text.trim_end_matches('\\').trim().to_owned();
                if text.ends_with('\\') {
                    current = Some(command);
                } else {
                    commands.push(command);
                }
            }
            None => {}
        }
    }
    commands
}

#[tokio::test]
async fn every_mosquitto_pub_example_in_the_mqtt_docs_is_answered() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/mqtt.md"),
    )
    .unwrap();
    let commands = mosquitto_pub_examples(&doc);
    assert!(commands.len() >= 8, "found {} examples", commands.len());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // the users and device secret of the "Authentication" examples
    let dir = TempDir::new("docs-examples");
    let config = dir.path("gateway.toml");
    let hash = jt1078_gateway::cli::hash_password("backend-password").unwrap();
    std::fs::write(
        &config,
        format!(
            "[mqtt]\ndevice_secret = \"s3cret\"\n[[mqtt.users]]\nname = \"backend\"\npassword_hash = {hash:?}\nrole = \"backend\"\n"
        ),
    )
    .unwrap();
    let _gateway =
        Gateway::start_from(Some(&config), &[("JTGW__MQTT__EMBEDDED_LISTEN", &listen)]).await;
    let mut client = TestClient::connect(
        port,
        &[
            "jt1078/client/#",
            "jt1078/status/gateway/#",
            "jt1078/device/#",
        ],
    )
    .await;
    client
        .expect("gateway online", Duration::from_secs(20), |r| {
            r.topic == "jt1078/status/gateway/gw1"
        })
        .await;
    for command in commands {
        assert!(
            command.contains("-p 1883"),
            "examples use the default port: {command}"
        );
        let here = command.replace("-p 1883", &format!("-p {port}"));
        run("sh", &["-c", &here]).await;
        let topic = command
            .split_whitespace()
            .skip_while(|w| *w != "-t")
            .nth(1)
            .unwrap()
            .to_owned();
        let mode = topic.rsplit('/').next().unwrap().to_owned();
        if mode == "HEART" {
            continue;
        }
        let seqid = command
            .split("\"seqid\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        // a body that is not JSON shows how a typo is answered
        let body = command
            .rsplit_once("-m '")
            .unwrap()
            .1
            .trim_end_matches('\'');
        let expected = if serde_json::from_str::<serde_json::Value>(body).is_err() {
            "ERROR"
        } else if mode == "WEBRTC" {
            "ANSWER"
        } else {
            "OK"
        };
        let reply = client
            .expect(
                &format!("{expected} to {mode} {seqid}"),
                Duration::from_secs(20),
                |r| r.topic.starts_with(&format!("jt1078/client/{seqid}/")),
            )
            .await;
        assert_eq!(
            reply.topic,
            format!("jt1078/client/{seqid}/{expected}"),
            "{command}\n{}",
            String::from_utf8_lossy(&reply.payload)
        );
    }
    // the playback example made the gateway send PLAYBACK with the 0x9201 fields
    let playback = client
        .expect("PLAYBACK to the device", Duration::from_secs(20), |r| {
            r.topic == "jt1078/device/13800138000/PLAYBACK"
        })
        .await
        .json();
    assert_eq!(playback["start_time"], "261122080000");
    assert_eq!(playback["end_time"], "261122081000");
}

/// The paragraph of `README.md` that starts with `start`, up to the next blank line.
fn readme_paragraph(start: &str) -> String {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let from = readme
        .find(start)
        .unwrap_or_else(|| panic!("README.md has no paragraph starting {start:?}"));
    readme[from..]
        .split("\n\n")
        .next()
        .unwrap()
        .replace('\n', " ")
}

#[test]
fn the_readme_default_ports_are_the_defaults() {
    let settings = jt1078_gateway::config::Settings::load(None).unwrap();
    let paragraph = readme_paragraph("Default ports:");
    for (what, port) in [
        ("live ingest", settings.ingest.live_listen.port()),
        ("playback ingest", settings.ingest.playback_listen.port()),
        ("HTTP", settings.http.listen.port()),
        ("embedded MQTT", settings.mqtt.embedded_listen.port()),
        (
            "MQTT over WebSocket",
            settings.mqtt.embedded_ws_listen.port(),
        ),
        ("WebRTC UDP", settings.webrtc.udp_listen.port()),
    ] {
        assert!(
            paragraph.contains(&format!("{what} {port}")),
            "README's default ports should say \"{what} {port}\": {paragraph}"
        );
    }
}

#[test]
fn the_readme_command_table_names_every_subcommand_and_flag() {
    use clap::CommandFactory;
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let cli = jt1078_gateway::cli::Cli::command();
    for sub in cli.get_subcommands() {
        let row = readme
            .lines()
            .find(|l| {
                let head = format!("| `jt1078-gateway {}", sub.get_name());
                l.strip_prefix(&head)
                    .is_some_and(|rest| rest.starts_with([' ', '`']))
            })
            .unwrap_or_else(|| panic!("README's command table has no row for {}", sub.get_name()));
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            assert!(
                row.contains(&format!("--{long}")),
                "README's row for {} lacks --{long}: {row}",
                sub.get_name()
            );
        }
    }
}

/// The WebSocket URL path the MQTT docs give browsers, for the embedded broker and for
/// mosquitto (`broker/mosquitto.conf`), is one both brokers answer.
#[tokio::test]
async fn the_documented_mqtt_websocket_path_is_served_by_both_brokers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    for doc in [
        "docs/mqtt.md",
        "docs/configuration.md",
        "broker/mosquitto.conf",
        "README.md",
    ] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (at, _) in text.match_indices(":8083/") {
            let rest = &text[at + ":8083".len()..];
            let end = rest
                .find(|c: char| c.is_whitespace() || "`\"',)".contains(c))
                .unwrap_or(rest.len());
            paths.push((doc, rest[..end].to_owned()));
        }
    }
    assert!(paths.len() >= 3, "{paths:?}");
    for (doc, path) in &paths {
        assert_eq!(path, "/mqtt", "{doc} gives browsers another path");
    }
    let ws = free_port();
    let _gateway = Gateway::start(&[
        (
            "JTGW__MQTT__EMBEDDED_LISTEN",
            &format!("127.0.0.1:{}", free_port()),
        ),
        ("JTGW__MQTT__EMBEDDED_WS_LISTEN", &format!("127.0.0.1:{ws}")),
    ])
    .await;
    assert_websocket_upgrade(ws, "/mqtt", "embedded broker").await;
    let mosquitto = common::mqtt::Mosquitto::start().await;
    assert_websocket_upgrade(mosquitto.ws_port, "/mqtt", "mosquitto").await;
}

/// A WebSocket upgrade to `path` with the `mqtt` subprotocol is answered 101 (once the
/// listener is up).
async fn assert_websocket_upgrade(port: u16, path: &str, who: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    wait_listening(port, who).await;
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut head))
        .await
        .unwrap_or_else(|_| panic!("{who} did not answer the upgrade"))
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "{who} refused a WebSocket upgrade of {path}: {head}"
    );
}
