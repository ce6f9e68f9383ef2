use super::*;

fn load(file: &str, env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut layers = Layers::default();
    layers.file(DEFAULT_CONFIG_YAML, Source::Default)?;
    layers.file(file, Source::File)?;
    layers.env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    for (k, v) in flags {
        layers.flag(k, v);
    }
    Config::from_layers(&layers)
}

#[test]
fn shipped_config_equals_built_in_defaults() {
    let shipped = Config::shipped();
    let mut built = Config::from_layers(&Layers::default()).expect("defaults are valid");
    built.sources = shipped.sources.clone();
    assert_eq!(shipped, built, "config.yaml and the code defaults disagree");
    assert_eq!(shipped.peer_listen_addr.port(), 50051);
    assert_eq!(shipped.gossip.fanout, 3);
    assert_eq!(shipped.gossip.interval, Duration::from_secs(1));
}

#[test]
fn precedence_is_flag_then_env_then_file() {
    let file =
        "peer_listen_addr: \":6000\"\ninitial_peers: [\"a:1\"]\nresource_limits:\n  cpu: \"2\"\n";
    let cfg = load(file, &[], &[]).expect("valid");
    assert_eq!(cfg.peer_listen_addr.port(), 6000);
    assert_eq!(cfg.initial_peers, vec!["a:1"]);

    let env = [
        ("IARNET_PEER_LISTEN_ADDR", ":7000"),
        ("IARNET_INITIAL_PEERS", "b:1, c:2"),
        ("IARNET_CPU_LIMIT", "500m"),
    ];
    let cfg = load(file, &env, &[]).expect("valid");
    assert_eq!(cfg.peer_listen_addr.port(), 7000);
    assert_eq!(cfg.initial_peers, vec!["b:1", "c:2"]);
    assert_eq!(cfg.resource_limits.cpu.map(|q| q.milli()), Some(500));

    let flags = [
        ("peer_listen_addr", "127.0.0.1:8000"),
        ("initial_peers", "d:1"),
    ];
    let cfg = load(file, &env, &flags).expect("valid");
    assert_eq!(cfg.peer_listen_addr.to_string(), "127.0.0.1:8000");
    assert_eq!(cfg.initial_peers, vec!["d:1"]);
    assert!(cfg
        .sources
        .contains(&("peer_listen_addr".into(), Source::Flag)));
}

#[test]
fn every_problem_is_reported_at_once() {
    let file = r#"
mode: cloud
peer_listen_addr: "nowhere"
initial_peers: ["ok:1", "bad-peer", "x:0"]
resource_limits:
  cpu: "lots"
  memory: "16Gb"
  gpu: "1.5"
  disk: "1Ti"
gossip:
  fanout: 0
  interval: "soon"
colour: blue
"#;
    let err = load(file, &[("IARNET_FOO", "1")], &[]).expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "mode",
        "peer_listen_addr",
        "initial_peers",
        "resource_limits.cpu",
        "resource_limits.memory",
        "resource_limits.gpu",
        "resource_limits.disk",
        "gossip.fanout",
        "gossip.interval",
        "colour",
        "IARNET_FOO",
    ] {
        assert!(
            keys.contains(&expected),
            "{expected} not reported; got {keys:?}"
        );
    }
    assert_eq!(
        keys.iter().filter(|k| **k == "initial_peers").count(),
        2,
        "both bad peers named"
    );
    let text = err.to_string();
    assert!(
        text.contains("\"bad-peer\"") && text.contains("\"16Gb\"") && text.contains("config file"),
        "{text}"
    );
}

#[test]
fn misspelled_keys_get_a_suggestion() {
    let err = load("peer_listen_adr: \":1\"\n", &[], &[]).expect_err("unknown key");
    assert!(
        err.to_string().contains("did you mean `peer_listen_addr`"),
        "{err}"
    );
}

#[test]
fn broken_yaml_is_one_clear_problem() {
    let err = load("mode: [unclosed", &[], &[]).expect_err("bad yaml");
    assert!(err.to_string().contains("not valid YAML"), "{err}");
}

#[test]
fn resource_keys_parse_and_report_every_problem() {
    let file = "allow_remote_access: false\nplacement:\n  strategy: binpack\n  region: eu-west\nexternal_providers:\n  - docker gpu-box tcp://10.0.0.9:2375\n  - k8s lab /etc/iarnet/lab.kubeconfig\n";
    let cfg = load(file, &[], &[]).expect("valid");
    assert!(!cfg.resources.allow_remote_access);
    assert_eq!(cfg.resources.strategy, crate::placement::Strategy::BinPack);
    assert_eq!(cfg.resources.region.as_deref(), Some("eu-west"));
    assert_eq!(cfg.resources.external.len(), 2);
    assert_eq!(
        cfg.resources.external[1].target().kubeconfig_path,
        "/etc/iarnet/lab.kubeconfig"
    );
    let cfg = load("", &[("IARNET_PLACEMENT_STRATEGY", "round-robin")], &[]).expect("valid");
    assert_eq!(
        cfg.resources.strategy,
        crate::placement::Strategy::RoundRobin
    );

    let bad = "allow_remote_access: maybe\nplacement:\n  strategy: fastest\nexternal_providers: [\"ftp x y\", \"docker ok tcp://a:1\", \"docker ok tcp://b:1\"]\n";
    let err = load(bad, &[], &[]).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "allow_remote_access",
            "placement.strategy",
            "external_providers",
            "external_providers"
        ],
        "{err}"
    );
    assert!(
        err.to_string().contains("spread"),
        "the strategies are listed: {err}"
    );
}

#[test]
fn security_keys_report_every_problem_with_its_key_and_hide_secrets() {
    let file = r#"
tls:
  cert_file: "/nonexistent/node.pem"
  server_name: "bad name!"
auth:
  tokens: ["ci:short", "noseparator", "ok:0123456789abcdef0123", "ok:0123456789abcdef0124"]
  token_file: "/nonexistent/tokens"
access:
  deny_networks: ["10.0.0.0/33", "192.168.0.0/16"]
  allow_nodes: ["a b"]
rate_limit:
  peer_rate: 0
audit:
  paht: "x"
"#;
    let err = load(file, &[], &[]).unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "tls.ca_file",
        "tls.cert_file",
        "tls.key_file",
        "tls.server_name",
        "auth.tokens",
        "auth.token_file",
        "access.deny_networks",
        "access.allow_nodes",
        "rate_limit.peer_rate",
        "audit.paht",
    ] {
        assert!(keys.contains(&key), "{key} not reported: {err}");
    }
    let text = err.to_string();
    assert!(
        !text.contains("0123456789abcdef"),
        "a secret leaked: {text}"
    );
    assert!(text.contains("did you mean `audit.path`"), "{text}");
    assert!(text.contains("shorter than 16"), "{text}");
    assert!(text.contains("two tokens with the same NAME"), "{text}");
}

#[test]
fn security_defaults_are_open_and_tokens_load_from_a_file() {
    let cfg = Config::shipped();
    assert!(cfg.security.tls.is_none() && cfg.security.tokens.is_empty());
    assert!(cfg.security.access.is_open());
    assert_eq!(
        cfg.security.audit_path,
        Some(cfg.data_dir.join("audit.jsonl"))
    );

    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# operators\nops:abcdefabcdefabcdef\n\nci:0123456789abcdef\n",
    )
    .unwrap();
    let file = format!(
        "auth:\n  token_file: {:?}\naccess:\n  deny_networks: [\"10.1.2.3\"]\naudit:\n  path: \"off\"\n",
        tokens.display()
    );
    let cfg = load(&file, &[], &[]).expect("valid");
    let names: Vec<&str> = cfg
        .security
        .tokens
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["ops", "ci"]);
    assert_eq!(
        cfg.security.access.deny_networks[0].to_string(),
        "10.1.2.3/32"
    );
    assert_eq!(cfg.security.audit_path, None);
    assert!(!format!("{:?}", cfg.security.tokens).contains("abcdef"));
}

#[test]
fn misspelled_values_get_a_suggestion() {
    let file = "mode: standalon\nallow_remote_access: ture\nplacement:\n  strategy: binpak\n";
    let text = load(file, &[], &[]).expect_err("bad values").to_string();
    for expected in [
        r#"expected "" (auto-detect), "standalone" or "k8s"; did you mean "standalone"?"#,
        r#"expected true or false; did you mean "true"?"#,
        r#"did you mean "binpack"?"#,
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
    let far = "mode: cloud\nauth:\n  protect_health: maybe\n";
    let text = load(far, &[], &[]).expect_err("bad values").to_string();
    assert!(
        !text.contains("did you mean"),
        "no guess when nothing is close: {text}"
    );
}

#[test]
fn the_nearest_name_is_suggested_not_the_first_close_one() {
    assert_eq!(
        hint::closest("rando", ["radio", "random"], |n: &&str| *n),
        Some("random")
    );
    assert_eq!(hint::closest("cloud", ["k8s"], |n: &&str| *n), None);
}

#[test]
fn call_provider_has_its_own_rate_limit_keys() {
    let r = Config::shipped().security.rate_limit;
    assert_eq!((r.call_rate, r.call_burst), (50_000.0, 100_000.0));
    assert_eq!((r.peer_rate, r.peer_burst), (200.0, 400.0));
    let cfg = load(
        "rate_limit:\n  call_rate: 500\n  call_burst: 1000\n",
        &[],
        &[],
    )
    .expect("valid");
    let r = cfg.security.rate_limit;
    assert_eq!((r.call_rate, r.call_burst), (500.0, 1000.0));
    let err = load(
        "rate_limit:\n  call_rate: 0\n  call_burst: lots\n",
        &[],
        &[],
    )
    .unwrap_err();
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["rate_limit.call_rate", "rate_limit.call_burst"],
        "{err}"
    );
}

#[test]
fn every_key_in_the_table_is_read_by_a_builder_and_named_once() {
    let layers = Layers::default();
    let mut p = parser::Parser::new(&layers);
    let _ = p.config();
    assert!(p.unread().is_empty(), "no builder reads {:?}", p.unread());
    let mut names = std::collections::BTreeSet::new();
    let mut envs = std::collections::BTreeSet::new();
    for key in keys() {
        assert!(names.insert(key.name), "{} is in the table twice", key.name);
        if let Some(env) = key.env {
            assert!(env.starts_with("IARNET_") && envs.insert(env), "{env}");
        }
        assert!(
            !key.doc.is_empty() && !key.doc.contains('\n'),
            "{}: the doc is one line",
            key.name
        );
    }
}
