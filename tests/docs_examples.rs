//! The `mosquitto_pub` examples in docs/mqtt.md work as written: each is run (through the
//! shell, as a user would paste it) against a gateway, and answered as the page says.

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
