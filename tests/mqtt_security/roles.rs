//! The rights of item 2 of issue 23 checked over one transport against one broker: each
//! role does what it may, and nothing it may not gets through (an admin watching `#`
//! sees only what was allowed; every client's inbox holds only what it may read).

use rumqttc::mqttbytes::v4::ConnectReturnCode;
use tokio::time::Instant;

use crate::harness::*;

/// The checks of item 2 over one transport.
pub(crate) async fn roles_do_what_they_may_and_nothing_else(target: &Target, transport: Transport) {
    let device_id = DEVICES[transport as usize];
    let tag = format!("{}-{transport:?}", target.name);
    let id = |who: &str| format!("{who}-{tag}-{}", std::process::id());
    // an admin sees everything that gets through
    let (code, watcher) = Client::connect(
        target,
        transport,
        &id("watch"),
        Some(("admin", "admin-password")),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success, "{tag}: admin");
    let mut watcher = watcher.unwrap();
    assert!(
        granted(watcher.subscribe("jt1078/#").await),
        "{tag}: admin #"
    );

    // device: its own commands, its own heartbeat; nothing else
    let (user, password) = device_login(device_id);
    let (code, device) =
        Client::connect(target, transport, &id("dev"), Some((&user, &password))).await;
    assert_eq!(code, ConnectReturnCode::Success, "{tag}: device");
    let mut device = device.unwrap();
    assert!(
        granted(
            device
                .subscribe(&format!("jt1078/device/{device_id}/#"))
                .await
        ),
        "{tag}"
    );
    for filter in [
        format!("jt1078/device/{OTHER}/#"),
        "jt1078/device/#".to_owned(),
        "jt1078/client/#".to_owned(),
        "jt1078/gateway/#".to_owned(),
        "#".to_owned(),
    ] {
        let code = device.subscribe(&filter).await;
        refused_filter(target, code, &format!("{tag}: device subscribes {filter}"));
    }
    // forbidden publishes first, then an allowed one: the watcher sees only the last
    for topic in [
        format!("jt1078/gateway/{device_id}/SUBSCRIBE"),
        format!("jt1078/gateway/{OTHER}/HEART"),
        format!("jt1078/device/{OTHER}/STOP"),
        "jt1078/client/s1/OK".to_owned(),
    ] {
        device.publish(&topic, "{}").await;
    }
    let heart = format!("jt1078/gateway/{device_id}/HEART");
    device.publish(&heart, r#"{"seqid":"h1"}"#).await;
    watcher.expect(&heart).await;
    for topic in [
        format!("jt1078/gateway/{device_id}/SUBSCRIBE"),
        format!("jt1078/gateway/{OTHER}/HEART"),
        format!("jt1078/device/{OTHER}/STOP"),
        "jt1078/client/s1/OK".to_owned(),
    ] {
        assert!(!watcher.got(&topic), "{tag}: a device published {topic}");
    }

    // a last will is a publish made later: on a topic the device may not publish, the
    // CONNECT is refused (the embedded broker; mosquitto drops such a will when it fires)
    if target.exact_codes {
        let (code, _) = Client::connect_with_will(
            target,
            transport,
            &id("will"),
            Some((&user, &password)),
            Some(&format!("jt1078/device/{OTHER}/STOP")),
        )
        .await;
        assert_eq!(
            code,
            ConnectReturnCode::NotAuthorized,
            "{tag}: a device's forged will"
        );
        let (code, _) = Client::connect_with_will(
            target,
            transport,
            &id("will2"),
            Some((&user, &password)),
            Some(&format!("jt1078/gateway/{device_id}/HEART")),
        )
        .await;
        assert_eq!(
            code,
            ConnectReturnCode::Success,
            "{tag}: a device's own will"
        );
    }

    // a device with the HMAC password of another id
    let (_, other_password) = device_login(OTHER);
    let (code, _) = Client::connect(
        target,
        transport,
        &id("fake"),
        Some((device_id, &other_password)),
    )
    .await;
    refused(target, code, ConnectReturnCode::BadUserNamePassword);

    // backend: requests, replies, device commands, status; no command to a device
    let (code, backend) = Client::connect(
        target,
        transport,
        &id("backend"),
        Some(("backend", "backend-password")),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success, "{tag}: backend");
    let mut backend = backend.unwrap();
    for filter in ["jt1078/client/#", "jt1078/status/#", "jt1078/device/#"] {
        assert!(
            granted(backend.subscribe(filter).await),
            "{tag}: backend {filter}"
        );
    }
    for filter in ["jt1078/#", "jt1078/gateway/#", "#"] {
        let code = backend.subscribe(filter).await;
        refused_filter(target, code, &format!("{tag}: backend subscribes {filter}"));
    }
    let stop = format!("jt1078/device/{device_id}/STOP");
    backend.publish(&stop, r#"{"seqid":"forged"}"#).await;
    let seqid = format!("s-{tag}");
    backend
        .publish(
            &format!("jt1078/gateway/{device_id}/SUBSCRIBE"),
            &format!(r#"{{"seqid":"{seqid}","client_id":"b1","channel":1}}"#),
        )
        .await;
    // the gateway answers, and tells the device: the request went through
    backend.expect(&format!("jt1078/client/{seqid}/OK")).await;
    device
        .expect(&format!("jt1078/device/{device_id}/REQPULL"))
        .await;
    assert!(
        !watcher.got(&stop) && !device.got(&stop),
        "{tag}: a backend sent STOP"
    );

    // viewer: WEBRTC requests, replies on jt1078/client/viewer/…
    let (code, viewer) = Client::connect(
        target,
        transport,
        &id("viewer"),
        Some(("viewer", "viewer-password")),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::Success, "{tag}: viewer");
    let mut viewer = viewer.unwrap();
    assert!(
        granted(viewer.subscribe("jt1078/client/viewer/#").await),
        "{tag}"
    );
    for filter in ["jt1078/client/#", "jt1078/client/+/OK", "jt1078/status/#"] {
        let code = viewer.subscribe(filter).await;
        refused_filter(target, code, &format!("{tag}: viewer subscribes {filter}"));
    }
    let forbidden = format!("jt1078/gateway/{device_id}/UNSUBSCRIBE");
    viewer.publish(&forbidden, r#"{"seqid":"viewer"}"#).await;
    let webrtc = format!("jt1078/gateway/{device_id}/WEBRTC");
    viewer
        .publish(&webrtc, r#"{"seqid":"viewer","channel":1}"#)
        .await;
    watcher.expect(&webrtc).await;
    assert!(!watcher.got(&forbidden), "{tag}: a viewer sent UNSUBSCRIBE");
    // the gateway's answer (an error: the request has no offer) reaches the viewer
    let deadline = Instant::now() + WAIT;
    while !viewer
        .inbox
        .iter()
        .any(|p| p.topic.starts_with("jt1078/client/viewer/"))
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            viewer.next(remaining).await.is_some(),
            "{tag}: no reply to the viewer"
        );
    }

    // nobody got anything beyond its rights (mosquitto grants a refused filter and then
    // delivers only what the client may read: this is where it shows)
    let own = format!("jt1078/device/{device_id}/");
    assert!(
        device.inbox.iter().all(|p| p.topic.starts_with(&own)),
        "{tag}: the device got {:?}",
        device.inbox.iter().map(|p| &p.topic).collect::<Vec<_>>()
    );
    assert!(
        viewer
            .inbox
            .iter()
            .all(|p| p.topic.starts_with("jt1078/client/viewer/")),
        "{tag}: the viewer got {:?}",
        viewer.inbox.iter().map(|p| &p.topic).collect::<Vec<_>>()
    );
    assert!(
        backend
            .inbox
            .iter()
            .all(|p| !p.topic.starts_with("jt1078/gateway/") || p.topic.ends_with("/HEART")),
        "{tag}: the backend read requests: {:?}",
        backend.inbox.iter().map(|p| &p.topic).collect::<Vec<_>>()
    );

    // wrong password, unknown user, no login from loopback on a secured broker
    let (code, _) = Client::connect(target, transport, &id("x"), Some(("backend", "guess"))).await;
    refused(target, code, ConnectReturnCode::BadUserNamePassword);
    let (code, _) = Client::connect(target, transport, &id("y"), Some(("nobody", "guess"))).await;
    refused(target, code, ConnectReturnCode::BadUserNamePassword);
}
