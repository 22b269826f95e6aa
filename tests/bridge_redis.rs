//! The Redis `EXTERNAL_COMMAND` queue into MQTT: a real redis-server and a real mosquitto,
//! entries pushed with `redis-cli`, and what a subscriber sees.

mod common;

use common::bridge::Redis;
use common::control::*;
use common::mqtt::{Mosquitto, TestClient};
use common::*;

const PROCESSING: &str = "EXTERNAL_COMMAND:processing:gw1";
const DEAD: &str = "EXTERNAL_COMMAND:dead";

async fn gateway(mosquitto: &Mosquitto, redis: &Redis, extra: &[(&str, &str)]) -> Gateway {
    let url = redis.url();
    let mut env = vec![("JTGW__BRIDGE__REDIS_URL", url.as_str())];
    env.extend_from_slice(extra);
    gateway_with_broker(&mosquitto.url(), &env).await
}

async fn subscriber(mosquitto: &Mosquitto) -> TestClient {
    TestClient::connect(mosquitto.port, &["jt1078/device/#", "jt1078/gateway/#"]).await
}

/// Waits until the processing list is empty (entries leave it after their PubAck).
async fn processing_drained(redis: &Redis) {
    redis
        .wait_list(
            PROCESSING,
            "processing list drains",
            WAIT,
            <[String]>::is_empty,
        )
        .await;
}

#[tokio::test]
async fn entries_become_mqtt_messages_and_bad_ones_are_dead_lettered() {
    let mosquitto = Mosquitto::start().await;
    let redis = Redis::start().await;
    let mut watch = subscriber(&mosquitto).await;
    let gateway = gateway(&mosquitto, &redis, &[]).await;

    let entries = [
        r#"{"mode":"REQPULL","device":"013800138000","seqid":"pc-1","channel":2,"server_host":"10.0.0.1","tcp_port":9501}"#,
        r#"{"mode":"SUBSCRIBE","device":"13800138000","seqid":"pc-2","client_id":"pc","channel":1}"#,
        "not json at all",
        r#"{"mode":"FLY","device":"13800138000"}"#,
        r#"{"mode":"STOP","device":"13800138000","seqid":"pc-3","channel":2}"#,
    ];
    for entry in entries {
        redis.cli(&["LPUSH", "EXTERNAL_COMMAND", entry]).await;
    }
    let pull = watch
        .expect("REQPULL", WAIT, is("jt1078/device/13800138000/REQPULL"))
        .await
        .json();
    assert_eq!(pull["seqid"], "pc-1");
    assert_eq!(pull["device"], "13800138000", "canonical id");
    assert_eq!(pull["channel"], 2);
    assert_eq!(pull["server_host"], "10.0.0.1");
    let sub = watch
        .expect(
            "SUBSCRIBE",
            WAIT,
            is("jt1078/gateway/13800138000/SUBSCRIBE"),
        )
        .await
        .json();
    assert_eq!(sub["client_id"], "pc");
    let stop = watch
        .expect("STOP", WAIT, is("jt1078/device/13800138000/STOP"))
        .await
        .json();
    assert_eq!(stop["seqid"], "pc-3");

    processing_drained(&redis).await;
    assert!(redis.list("EXTERNAL_COMMAND").await.is_empty());
    let dead = redis.list(DEAD).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let records: Vec<serde_json::Value> = dead
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let fly = records
        .iter()
        .find(|r| r["entry"].as_str().unwrap().contains("FLY"))
        .unwrap();
    assert!(fly["reason"].as_str().unwrap().contains("\"FLY\""), "{fly}");
    assert_eq!(fly["gateway_id"], "gw1");
    let garbage = records
        .iter()
        .find(|r| r["entry"] == "not json at all")
        .unwrap();
    assert!(
        garbage["reason"]
            .as_str()
            .unwrap()
            .contains("not a JSON object"),
        "{garbage}"
    );
    let (_, status) = http_get(gateway.addrs.http, "/api/bridge").await;
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["redis"]["consumed"], 3, "{status}");
    assert_eq!(status["redis"]["dead_lettered"], 2, "{status}");
    gateway.stop().await;
}

/// A gateway killed after BLMOVE and before the publish leaves the entry in its processing
/// list; the next start publishes it, once, and removes it.
#[tokio::test]
async fn an_entry_left_in_processing_is_delivered_once_after_a_restart() {
    let mosquitto = Mosquitto::start().await;
    let redis = Redis::start().await;
    let mut watch = subscriber(&mosquitto).await;
    // what BLMOVE left behind when the gateway died
    let left = r#"{"mode":"REQPULL","device":"13800138000","seqid":"left-1","channel":1}"#;
    redis.cli(&["LPUSH", PROCESSING, left]).await;
    // and one queued meanwhile, which must come after it
    let queued = r#"{"mode":"STOP","device":"13800138000","seqid":"queued-1","channel":1}"#;
    redis.cli(&["LPUSH", "EXTERNAL_COMMAND", queued]).await;

    let gateway = gateway(&mosquitto, &redis, &[]).await;
    watch
        .expect(
            "the queued STOP",
            WAIT,
            is("jt1078/device/13800138000/STOP"),
        )
        .await;
    let pulls: Vec<_> = watch
        .seen
        .iter()
        .filter(|r| r.topic == "jt1078/device/13800138000/REQPULL")
        .map(|r| r.json()["seqid"].clone())
        .collect();
    assert_eq!(pulls, ["left-1"], "re-driven before the queue, once");
    processing_drained(&redis).await;

    // a second start finds nothing to re-drive
    gateway.stop().await;
    let gateway = self::gateway(&mosquitto, &redis, &[]).await;
    let marker = r#"{"mode":"HEART","device":"13800138000","seqid":"marker"}"#;
    redis.cli(&["LPUSH", "EXTERNAL_COMMAND", marker]).await;
    watch
        .expect("marker", WAIT, is("jt1078/gateway/13800138000/HEART"))
        .await;
    let again = watch
        .seen
        .iter()
        .filter(|r| r.topic.ends_with("/REQPULL"))
        .count();
    assert_eq!(again, 1, "left-1 was delivered once in all");
    gateway.stop().await;
}

#[tokio::test]
async fn consumption_resumes_after_redis_restarts() {
    let mosquitto = Mosquitto::start().await;
    let mut redis = Redis::start().await;
    let mut watch = subscriber(&mosquitto).await;
    let gateway = gateway(&mosquitto, &redis, &[]).await;
    let entry = |n: u32| format!(r#"{{"mode":"HEART","device":"13800138000","seqid":"h{n}"}}"#);
    let heart = "jt1078/gateway/13800138000/HEART";

    redis.cli(&["LPUSH", "EXTERNAL_COMMAND", &entry(1)]).await;
    watch
        .expect("h1", WAIT, |r| {
            r.topic == heart && r.json()["seqid"] == "h1"
        })
        .await;
    redis.restart().await;
    // pushed while the gateway reconnects
    redis.cli(&["LPUSH", "EXTERNAL_COMMAND", &entry(2)]).await;
    redis.cli(&["LPUSH", "EXTERNAL_COMMAND", &entry(3)]).await;
    watch
        .expect("h2", WAIT, |r| {
            r.topic == heart && r.json()["seqid"] == "h2"
        })
        .await;
    watch
        .expect("h3", WAIT, |r| {
            r.topic == heart && r.json()["seqid"] == "h3"
        })
        .await;
    processing_drained(&redis).await;
    gateway.stop().await;
}

/// The broker away: entries wait (in the processing list) and go out when it is back.
#[tokio::test]
async fn entries_wait_for_the_broker() {
    let mut mosquitto = Mosquitto::start().await;
    let redis = Redis::start().await;
    let gateway = gateway(&mosquitto, &redis, &[]).await;
    mosquitto.kill();
    let entry = r#"{"mode":"REQPULL","device":"13800138000","seqid":"while-away","channel":1}"#;
    redis.cli(&["LPUSH", "EXTERNAL_COMMAND", entry]).await;
    // taken into processing, not removed: the broker has not acknowledged it
    redis
        .wait_list(PROCESSING, "entry moved to processing", WAIT, |l| {
            !l.is_empty()
        })
        .await;
    mosquitto.restart().await;
    let mut watch = subscriber(&mosquitto).await;
    let pull = watch
        .expect(
            "REQPULL after the broker is back",
            WAIT,
            is("jt1078/device/13800138000/REQPULL"),
        )
        .await
        .json();
    assert_eq!(pull["seqid"], "while-away");
    processing_drained(&redis).await;
    gateway.stop().await;
}

/// `bridge.redis_mirror`: the gateway's own REQPULL/STOP also land in the mirror list.
#[tokio::test]
async fn the_gateways_own_device_commands_are_mirrored() {
    let mosquitto = Mosquitto::start().await;
    let redis = Redis::start().await;
    let mut watch = subscriber(&mosquitto).await;
    let gateway = gateway(
        &mosquitto,
        &redis,
        &[
            ("JTGW__BRIDGE__REDIS_MIRROR", "true"),
            ("JTGW__CONTROL__STOP_LINGER", "0s"),
        ],
    )
    .await;
    // the bridge subscribes once connected; an entry through the bridge proves it is
    let marker = r#"{"mode":"REQPULL","device":"1","seqid":"not-ours","channel":1}"#;
    redis.cli(&["LPUSH", "EXTERNAL_COMMAND", marker]).await;
    watch
        .expect("marker", WAIT, is("jt1078/device/1/REQPULL"))
        .await;
    let subscribe = r#"{"seqid":"m1","client_id":"backend","channel":1}"#;
    watch
        .publish("jt1078/gateway/13800138000/SUBSCRIBE", subscribe)
        .await;
    let pull = watch
        .expect("REQPULL", WAIT, is("jt1078/device/13800138000/REQPULL"))
        .await
        .json();
    let unsubscribe = r#"{"seqid":"m2","client_id":"backend","channel":1}"#;
    watch
        .publish("jt1078/gateway/13800138000/UNSUBSCRIBE", unsubscribe)
        .await;
    let stop = watch
        .expect("STOP", WAIT, is("jt1078/device/13800138000/STOP"))
        .await
        .json();
    let mirrored = redis
        .wait_list(
            "JT1078_DEVICE_COMMAND",
            "two commands mirrored",
            WAIT,
            |l| l.len() >= 2,
        )
        .await;
    let mirrored: Vec<serde_json::Value> = mirrored
        .iter()
        .map(|m| serde_json::from_str(m).unwrap())
        .collect();
    // newest on the left; the queue's own entry (seqid not the gateway's) is not mirrored
    assert_eq!(mirrored, [stop, pull]);
    gateway.stop().await;
}
