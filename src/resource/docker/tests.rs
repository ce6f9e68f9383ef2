use std::collections::{HashMap, VecDeque};
use std::time::{Duration, UNIX_EPOCH};

use bollard::container::LogOutput;
use futures::stream::{self, StreamExt};

use super::connect::public_endpoint;
use super::facts::{exit_code_of, is_container_name, parse_time, Facts};
use super::logs::LogLines;
use crate::resource::labels;
use crate::resource::types::{DeployState, Resources};
use crate::resource::validate::deployment_id;

#[test]
fn timestamps_parse() {
    let t = parse_time("2024-05-01T12:00:01.5Z").unwrap();
    assert_eq!(
        t.duration_since(UNIX_EPOCH).unwrap(),
        Duration::new(1_714_564_801, 500_000_000)
    );
    let t = parse_time("2024-05-01T14:00:01.123456789+02:00").unwrap();
    assert_eq!(
        t.duration_since(UNIX_EPOCH).unwrap(),
        Duration::new(1_714_564_801, 123_456_789)
    );
    assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
    for bad in [
        "",
        "yesterday",
        "2024-13-01T00:00:00Z",
        "2024-01-01T00:00:00.x1Z",
    ] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
    assert_eq!(
        parse_time("1969-12-31T23:59:59Z"),
        None,
        "before the epoch is never"
    );
}

#[test]
fn exit_codes_from_summaries() {
    assert_eq!(exit_code_of("Exited (137) 3 seconds ago"), Some(137));
    assert_eq!(exit_code_of("Exited (0) About a minute ago"), Some(0));
    assert_eq!(exit_code_of("Up 3 seconds"), None);
    assert_eq!(exit_code_of("Exited (x"), None);
}

#[test]
fn only_container_names_reach_the_engine() {
    assert!(is_container_name(&deployment_id("r1")));
    for bad in ["", "../etc", "a/b", "a?b", "-x", "a b"] {
        assert!(!is_container_name(bad), "{bad}");
    }
}

#[test]
fn endpoints_lose_credentials() {
    assert_eq!(
        public_endpoint("tcp://user:secret@host:2375/x?token=1"),
        "tcp://host:2375/x"
    );
    assert_eq!(public_endpoint("tcp://host:2375"), "tcp://host:2375");
    assert_eq!(
        public_endpoint("unix:///var/run/docker.sock"),
        "unix:///var/run/docker.sock"
    );
}

#[test]
fn labels_make_facts_and_only_ours() {
    let mut labels = HashMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::PROVIDER.to_string(), "p1".to_string()),
        (labels::REQUEST.to_string(), "r1".to_string()),
        (labels::CPU_MILLIS.to_string(), "250".to_string()),
        (labels::MEMORY_BYTES.to_string(), "67108864".to_string()),
        (labels::GPUS.to_string(), "GPU-a,GPU-b".to_string()),
        (labels::GPU_SHARED.to_string(), "true".to_string()),
    ]);
    let f =
        Facts::from_labels("p1", "k", Some(&labels), "img".into(), DeployState::Running).unwrap();
    assert_eq!(f.resources.cpu_millis, 250);
    assert_eq!(f.resources.gpus, 2);
    assert_eq!(f.ledger_need().gpus, 0, "shared GPUs are not in the ledger");
    assert_eq!(f.gpus, vec!["GPU-a", "GPU-b"]);
    assert!(
        Facts::from_labels("p2", "k", Some(&labels), "img".into(), DeployState::Running).is_none()
    );
    labels.insert(labels::CPU_MILLIS.into(), "garbage".into());
    let f =
        Facts::from_labels("p1", "k", Some(&labels), "img".into(), DeployState::Running).unwrap();
    assert_eq!(f.resources.cpu_millis, 0, "bad labels never panic");

    // The provider-scoped name and an earlier release's bare one.
    let scoped = Facts::from_labels(
        "p1",
        "iarnet-00ff.1a2b3c4d",
        Some(&labels),
        "img".into(),
        DeployState::Running,
    )
    .unwrap();
    assert_eq!(
        (scoped.key.as_str(), scoped.name.as_str()),
        ("iarnet-00ff", "iarnet-00ff.1a2b3c4d")
    );
    let bare = Facts::from_labels(
        "p1",
        "iarnet-00ff",
        Some(&labels),
        "img".into(),
        DeployState::Running,
    )
    .unwrap();
    assert_eq!(
        (bare.key.as_str(), bare.name.as_str()),
        ("iarnet-00ff", "iarnet-00ff")
    );
}

#[test]
fn seeded_history_follows_the_engine() {
    let f = Facts {
        key: "k".into(),
        name: "k".into(),
        request_id: "r".into(),
        image: "i".into(),
        resources: Resources::ZERO,
        gpus: vec![],
        gpu_shared: false,
        state: DeployState::Exited(3),
        created: Some(UNIX_EPOCH + Duration::from_secs(10)),
        started: Some(UNIX_EPOCH + Duration::from_secs(11)),
        finished: Some(UNIX_EPOCH + Duration::from_secs(12)),
        labels: Default::default(),
        restarts: 0,
        attempt: 0,
        home: String::new(),
        preemptible: None,
        stop_after_disconnect_ms: None,
        health: None,
        ports: Vec::new(),
        group: String::new(),
    };
    let states: Vec<DeployState> = f.seed_history().into_iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        vec![
            DeployState::Pending,
            DeployState::Running,
            DeployState::Exited(3)
        ]
    );
}

#[test]
fn log_frames_become_lines() {
    let mut l = LogLines {
        raw: stream::empty().boxed(),
        partial: [Vec::new(), Vec::new()],
        ready: VecDeque::new(),
        done: false,
        provider: "p".into(),
    };
    l.feed(LogOutput::StdOut {
        message: "a\nb".into(),
    });
    l.feed(LogOutput::StdErr {
        message: "e1\r\n".into(),
    });
    l.feed(LogOutput::StdOut {
        message: "c\n".into(),
    });
    l.feed(LogOutput::StdOut {
        message: "tail".into(),
    });
    l.flush();
    let got: Vec<(bool, String)> = l
        .ready
        .into_iter()
        .map(|r| r.map(|x| (x.stderr, x.text)).unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            (false, "a".into()),
            (true, "e1".into()),
            (false, "bc".into()),
            (false, "tail".into())
        ]
    );
}
