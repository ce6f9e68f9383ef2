//! Services on the real engine through the CLI, the HTTP API and metrics:
//! `deploy --replicas`, `iarnet services`, `iarnet scale`, containers
//! counted in the engine by their `iarnet.service` label.

use std::process::Command;

use super::docker_support::{ensure_test_image, Cleanup, TEST_IMAGE};
use super::{http, http_get, json, text, wait_until, Node};

fn containers(service: &str) -> usize {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=iarnet.service={service}"),
        ])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn services_on_the_real_engine_through_the_cli_the_http_api_and_metrics() {
    ensure_test_image();
    let node = Node::start();
    let _cleanup = Cleanup(node.provider_id());
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "deploy",
            "--image",
            TEST_IMAGE,
            "--cpu",
            "100m",
            "--memory",
            "16Mi",
            "--request-id",
            "cli-svc",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sleep", "300"]);
        node.cli(&args)
    };

    // Bad input: one line naming the field, nothing made.
    let bad = deploy(&[
        "--replicas",
        "2",
        "--spread",
        "node",
        "--when-unsatisfiable",
        "maybe",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("when_unsatisfiable"), "{}", text(&bad));
    let bad = deploy(&["--spread", "node"]);
    assert!(text(&bad).contains("set replicas too"), "{}", text(&bad));
    assert_eq!(containers("cli-svc"), 0);

    // One provider is one spread value: a soft spread still places all.
    let made = deploy(&["--replicas", "3", "--spread", "provider"]);
    assert!(made.status.success(), "{}", text(&made));
    assert!(
        text(&made).contains("service cli-svc") && text(&made).contains("3/3 running"),
        "{}",
        text(&made)
    );
    assert_eq!(containers("cli-svc"), 3);
    let table = node.cli(&["services"]);
    assert!(
        text(&table).contains("cli-svc") && text(&table).contains("3/3"),
        "{}",
        text(&table)
    );

    let down = node.cli(&["scale", "cli-svc", "1"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("1/1 running"), "{}", text(&down));
    wait_until("the scaled-down containers are gone", || {
        (containers("cli-svc") == 1).then_some(())
    });
    let (code, body) = http_get(&node.http, "/resource/services/cli-svc").unwrap();
    assert_eq!(code, 200, "{body}");
    let body = json(&body);
    assert_eq!(
        (body["replicas"].as_u64(), body["running"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );
    assert_eq!(body["deployments"].as_array().map(Vec::len), Some(3));

    let (code, body) = http(
        &node.http,
        "POST",
        "/resource/services/cli-svc/scale",
        Some(r#"{"replicas": "two"}"#),
    )
    .unwrap();
    assert!(code == 400 || code == 422, "{code} {body}");
    assert!(body.contains("replicas"), "{body}");
    let (code, body) = http(
        &node.http,
        "POST",
        "/resource/services/nope/scale",
        Some(r#"{"replicas": 2}"#),
    )
    .unwrap();
    assert_eq!(code, 404, "{body}");
    let (code, body) = http(
        &node.http,
        "POST",
        "/resource/services/cli-svc/scale",
        Some(r#"{"replicas": 2}"#),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(containers("cli-svc"), 2);

    let (_, metrics) = http_get(&node.http, "/metrics").unwrap();
    for needle in [
        "iarnet_service_replicas{service=\"cli-svc\"} 2",
        "iarnet_service_skew{service=\"cli-svc\"} 0",
        "iarnet_service_scales_total 2",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    let gone = node.cli(&["scale", "cli-svc", "0"]);
    assert!(gone.status.success(), "{}", text(&gone));
    wait_until("every replica's container is gone", || {
        (containers("cli-svc") == 0).then_some(())
    });
}
