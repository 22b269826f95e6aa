//! The docker-compose deployment, checked without a Docker daemon: Debian's
//! `docker-compose config` validates `docker-compose.yml`, the gateway's environment there
//! loads as settings, the Dockerfile is multi-stage and non-root, and `config/srs.conf` is
//! the file the push tests run SRS with.

#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests: a failure is a test failure"
)]
mod common;

use std::collections::HashMap;
use std::path::Path;

use common::TempDir;
use common::srs::render_srs_conf;
use jt1078_gateway::config::Settings;

/// `docker-compose -f file ARGS` with no `.env` file, and with the MQTT passwords in
/// the environment when `passwords`: (success, stdout, stderr).
#[expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a helper of a test: a failure is a test failure"
)]
async fn compose(file: &str, args: &[&str], passwords: bool) -> (bool, String, String) {
    // an empty env file: a .env of the developer's must not change the outcome
    let dir = TempDir::new("compose");
    let empty = dir.path("empty.env");
    std::fs::write(&empty, "").unwrap();
    let mut command = tokio::process::Command::new("docker-compose");
    command
        .arg("--env-file")
        .arg(&empty)
        .args(["-f", file])
        .args(args)
        .env_remove("JT1078_MQTT_PASSWORD")
        .env_remove("BACKEND_MQTT_PASSWORD")
        .stdin(std::process::Stdio::null());
    if passwords {
        command
            .env("JT1078_MQTT_PASSWORD", "test-gateway-password")
            .env("BACKEND_MQTT_PASSWORD", "test-backend-password");
    }
    let out = command
        .output()
        .await
        .expect("docker-compose starts (scripts/test.sh installs it)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    if passwords {
        assert!(out.status.success(), "docker-compose {args:?}: {stderr}");
    }
    (out.status.success(), stdout, stderr)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn the_compose_file_validates_and_wires_the_four_services() {
    let file = root().join("docker-compose.yml");
    let file = file.to_str().unwrap();
    // `run` fails the test if docker-compose is missing (scripts/test.sh installs it) or
    // rejects the file
    // no password is baked in: without the .env the user writes, compose refuses
    let (ok, _, stderr) = compose(file, &["config"], false).await;
    assert!(
        !ok && stderr.contains("JT1078_MQTT_PASSWORD"),
        "compose config without .env: {stderr}"
    );
    let (_, services, _) = compose(file, &["config", "--services"], true).await;
    let mut services: Vec<&str> = services.lines().collect();
    services.sort_unstable();
    // prometheus and grafana only run with `--profile monitoring` (checked below)
    assert_eq!(
        services,
        [
            "gateway",
            "grafana",
            "mosquitto",
            "prometheus",
            "redis",
            "srs"
        ]
    );
    let (_, config, _) = compose(file, &["config"], true).await;
    for needle in [
        "/broker/acl:/mosquitto/config/acl:ro",
        "JTGW__MQTT__USERNAME: jt1078-gateway",
        "JTGW__MQTT__PASSWORD: test-gateway-password",
        "BACKEND_MQTT_PASSWORD: test-backend-password",
        "image: ossrs/srs:6",
        "dockerfile: Dockerfile",
        "/config/srs.conf:/usr/local/srs/conf/gateway.conf:ro",
        "/broker/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro",
        "image: redis:7-alpine",
        "published: 1935",
        "published: 8080",
        "published: 8083",
        "published: 9531",
    ] {
        assert!(
            config.contains(needle),
            "compose config lacks {needle:?}:\n{config}"
        );
    }
    // the gateway's environment is a valid configuration, pointing at the other services
    let env: HashMap<String, String> = config
        .lines()
        .filter_map(|line| line.trim().split_once(": "))
        .filter(|(key, _)| key.starts_with("JTGW__"))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('"').to_owned()))
        .collect();
    assert!(env.len() >= 5, "{env:?}");
    let settings = Settings::load_from(None, Some(env)).unwrap();
    assert!(!settings.mqtt.embedded);
    assert_eq!(settings.mqtt.url, "mqtt://mosquitto:1883");
    assert_eq!(settings.mqtt.username, "jt1078-gateway");
    assert_eq!(
        settings.rtmp.live_url,
        "rtmp://srs:1935/live/{device}_{channel}"
    );
    assert_eq!(
        settings.rtmp.play_urls["flv"],
        "http://127.0.0.1:8080/{app}/{stream}.flv"
    );
    assert_eq!(settings.bridge.redis_url, "redis://redis:6379/0");
}

/// `docker-compose.yml` as YAML.
fn compose_yaml() -> yaml_rust2::Yaml {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    yaml_rust2::YamlLoader::load_from_str(&text)
        .unwrap()
        .remove(0)
}

#[test]
fn the_compose_file_turns_the_redis_bridge_on_and_keeps_mosquitto_data_where_the_image_writes() {
    let compose = compose_yaml();
    let gateway = &compose["services"]["gateway"];
    assert_eq!(
        gateway["environment"]["JTGW__BRIDGE__REDIS_URL"].as_str(),
        Some("redis://redis:6379/0"),
        "the EXTERNAL_COMMAND bridge needs the Redis URL"
    );
    // eclipse-mosquitto writes /mosquitto/data as its mosquitto user; the config says so too
    let volumes: Vec<&str> = compose["services"]["mosquitto"]["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        volumes.contains(&"mosquitto-data:/mosquitto/data"),
        "{volumes:?}"
    );
    let conf = std::fs::read_to_string(root().join("broker/mosquitto.conf")).unwrap();
    assert!(conf.contains("persistence_location /mosquitto/data/"));
}

#[test]
fn every_compose_service_has_a_health_check_and_waits_for_what_it_needs() {
    let compose = compose_yaml();
    let services = compose["services"].as_hash().unwrap();
    assert_eq!(services.len(), 6);
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let test = service["healthcheck"]["test"].as_vec();
        assert!(
            test.is_some_and(|t| t.len() >= 2),
            "{name} has no health check"
        );
    }
    let waits = |service: &str| -> Vec<(String, String)> {
        compose["services"][service]["depends_on"]
            .as_hash()
            .map(|deps| {
                deps.iter()
                    .map(|(dep, how)| {
                        (
                            dep.as_str().unwrap().to_owned(),
                            how["condition"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let healthy = |dep: &str| (dep.to_owned(), "service_healthy".to_owned());
    assert_eq!(waits("gateway"), [healthy("mosquitto"), healthy("redis")]);
    // SRS calls the gateway's hooks as soon as a player or publisher comes
    assert_eq!(waits("srs"), [healthy("gateway")]);
    assert_eq!(waits("prometheus"), [healthy("gateway")]);
    assert_eq!(waits("grafana"), [healthy("prometheus")]);
}

#[tokio::test]
async fn the_monitoring_profile_scrapes_the_gateway_with_its_token_and_provisions_the_dashboard() {
    let compose = compose_yaml();
    for service in ["prometheus", "grafana"] {
        let profiles: Vec<&str> = compose["services"][service]["profiles"]
            .as_vec()
            .unwrap()
            .iter()
            .filter_map(|p| p.as_str())
            .collect();
        assert_eq!(
            profiles,
            ["monitoring"],
            "{service} runs only when asked for"
        );
    }
    // the token /metrics needs from another container reaches both sides
    let gateway = &compose["services"]["gateway"]["environment"];
    assert_eq!(
        gateway["JTGW__HTTP__API_TOKEN"].as_str(),
        Some("${API_TOKEN:-}")
    );
    let prometheus = &compose["services"]["prometheus"];
    assert_eq!(
        prometheus["environment"]["API_TOKEN"].as_str(),
        Some("${API_TOKEN:-}")
    );
    let entrypoint: Vec<&str> = prometheus["entrypoint"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(
        entrypoint.concat().contains("> /tmp/api-token"),
        "{entrypoint:?}"
    );
    let scrape_text =
        std::fs::read_to_string(root().join("deploy/prometheus/prometheus.yml")).unwrap();
    let scrape = yaml_rust2::YamlLoader::load_from_str(&scrape_text)
        .unwrap()
        .remove(0);
    let job = &scrape["scrape_configs"][0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(
        job["authorization"]["credentials_file"].as_str(),
        Some("/tmp/api-token")
    );
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some("gateway:9531")
    );
    // promtool accepts the scrape config (with the token file where it will be)
    let dir = TempDir::new("promconf");
    let token = dir.path("api-token");
    std::fs::write(&token, "t").unwrap();
    let config = dir.path("prometheus.yml");
    std::fs::write(
        &config,
        scrape_text.replace("/tmp/api-token", token.to_str().unwrap()),
    )
    .unwrap();
    let out = tokio::process::Command::new(common::program("PROMTOOL_BIN", "promtool"))
        .args(["check", "config", config.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Grafana: the data source is that Prometheus, the dashboards folder is deploy/grafana
    let grafana: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(grafana.contains(&"./deploy/grafana/provisioning:/etc/grafana/provisioning:ro"));
    assert!(grafana.contains(&"./deploy/grafana:/var/lib/grafana/dashboards:ro"));
    let datasource = std::fs::read_to_string(
        root().join("deploy/grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    let datasource = yaml_rust2::YamlLoader::load_from_str(&datasource)
        .unwrap()
        .remove(0);
    assert_eq!(
        datasource["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    assert_eq!(
        datasource["datasources"][0]["uid"].as_str(),
        Some("prometheus")
    );
    let provider =
        std::fs::read_to_string(root().join("deploy/grafana/provisioning/dashboards/jt1078.yml"))
            .unwrap();
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));
    assert!(root().join("deploy/grafana/jt1078-gateway.json").exists());
}

#[test]
fn the_runtime_image_has_ca_certificates() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let runtime = dockerfile.split(" AS runtime").nth(1).unwrap();
    assert!(runtime.contains("ca-certificates"), "{runtime}");
}

#[test]
fn the_dockerfile_builds_in_a_stage_of_its_own_and_runs_slim_and_unprivileged() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].contains(" AS build"));
    assert!(stages[1].contains("-slim"), "{}", stages[1]);
    assert!(dockerfile.contains("COPY --from=build"));
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .unwrap();
    assert_ne!(user.trim(), "USER root");
}

#[test]
fn srs_conf_serves_both_apps_over_http_flv_and_webrtc_and_is_what_the_tests_run() {
    let conf = std::fs::read_to_string(root().join("config/srs.conf")).unwrap();
    for needle in [
        "mount       [vhost]/[app]/[stream].flv;",
        "rtmp_to_rtc on;",
        "on_publish      http://gateway:9531/api/v1/streams;",
        "on_unpublish    http://gateway:9531/api/v1/streams;",
        "on_play         http://gateway:9531/api/v1/sessions;",
        "on_stop         http://gateway:9531/api/v1/sessions;",
    ] {
        assert!(conf.contains(needle), "config/srs.conf lacks {needle:?}");
    }
    // the push tests render this very file: only the ports and the candidate change
    let rendered = render_srs_conf(11935, 18080, 11985, 18000);
    let changed: Vec<(&str, &str)> = conf
        .lines()
        .zip(rendered.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed.len(), 5, "{changed:?}");
    assert!(rendered.contains("listen              11935;"));
    assert!(rendered.contains("candidate       127.0.0.1;"));
}
