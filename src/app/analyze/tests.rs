use std::fs;
use std::path::Path;

use super::*;

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

const COMPOSE: &str = r#"
version: "3.9"
name: shop
services:
  init:
    image: busybox
    command: ["sh", "-c", "echo seeded"]
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: secret
    healthcheck:
      test: ["CMD-SHELL", "nc -z 127.0.0.1 5432"]
      interval: 1s
      retries: 5
    deploy:
      resources:
        limits: {cpus: "0.5", memory: 512M}
        reservations:
          memory: 128M
          devices: [{capabilities: [gpu], count: 1}]
  cache:
    build: ./cache
    expose: ["6379"]
  api:
    build: {context: api, dockerfile: Dockerfile}
    ports: ["8080:80", "9000"]
    environment:
      - DATABASE_URL=postgres://db:5432/shop
      - CACHE=cache:6379
    depends_on:
      init: {condition: service_completed_successfully}
      db: {condition: service_healthy}
      cache: {condition: service_started}
x-note: skipped
"#;

fn shop(root: &Path) {
    write(root, "compose.yaml", COMPOSE);
    write(root, "cache/Dockerfile", "FROM busybox\nEXPOSE 6379\n");
    write(root, "api/Dockerfile", "FROM busybox\n");
    write(
        root,
        "api/package.json",
        r#"{"dependencies": {"express": "4"}}"#,
    );
}

#[test]
fn a_compose_file_becomes_components_and_a_dag() {
    let dir = tempfile::tempdir().unwrap();
    shop(dir.path());
    let a = analyze(dir.path(), "shop").unwrap();
    assert_eq!(a.source, Source::Compose);
    assert_eq!(a.file, "compose.yaml");
    let ids: Vec<&str> = a.components.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["init", "db", "cache", "api"]);
    let db = a.component("db").unwrap();
    assert_eq!(db.kind, "database");
    assert_eq!(db.requirements.cpu, 0.5);
    assert_eq!(db.requirements.memory, 512, "limits win over reservations");
    assert_eq!(db.requirements.gpu, 1);
    assert!(db.declared_requirements);
    let h = db.healthcheck.as_ref().unwrap();
    assert_eq!((h.interval_ms, h.retries), (1000, 5));
    assert_eq!(a.component("init").unwrap().kind, "job");
    assert_eq!(a.component("cache").unwrap().kind, "cache");
    let api = a.component("api").unwrap();
    assert_eq!(api.kind, "web");
    assert_eq!(api.language.as_deref(), Some("javascript"));
    assert_eq!(api.framework.as_deref(), Some("express"));
    assert_eq!(api.requirements, DEFAULT_REQUIREMENTS);
    assert_eq!(api.ports[0].host, 8080);
    assert_eq!(api.ports[1].host, 0);
    let conds: Vec<(&str, Condition)> = api
        .depends_on
        .iter()
        .map(|d| (d.on.as_str(), d.condition))
        .collect();
    assert_eq!(
        conds,
        [
            ("init", Condition::ServiceCompletedSuccessfully),
            ("db", Condition::ServiceHealthy),
            ("cache", Condition::ServiceStarted),
        ]
    );
    assert_eq!(a.dag.levels, vec![vec!["cache", "db", "init"], vec!["api"]]);
    let db_edge = a.dag.edges.iter().find(|e| e.to == "db").unwrap();
    assert_eq!(
        (db_edge.from.as_str(), db_edge.kind.as_str()),
        ("api", "tcp")
    );
    assert!(a.notes.iter().any(|n| n.contains("version")));
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["dag"]["edges"][0]["from"], "api");
    assert_eq!(json["components"][0]["type"], "job");
}

#[test]
fn environment_references_become_typed_edges() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    environment: {API: 'http://api:8080', AUTH: 'grpc://auth:50051'}\n  api:\n    image: a\n  auth:\n    image: b\n    ports: ['50051']\n",
    );
    let a = analyze(dir.path(), "x").unwrap();
    let kinds: Vec<(String, String)> = a
        .dag
        .edges
        .iter()
        .map(|e| (e.to.clone(), e.kind.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("api".into(), "http".into()),
            ("auth".into(), "grpc".into())
        ]
    );
    assert_eq!(a.dag.levels[1], vec!["web"]);
}

fn problems(compose: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "docker-compose.yml", compose);
    analyze(dir.path(), "x").unwrap_err().problems
}

#[test]
fn a_cycle_is_named() {
    let p = problems(
        "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: [c]}\n  c: {image: x, depends_on: [a]}\n",
    );
    assert_eq!(
        p,
        ["dependency cycle: a -> b -> c -> a (break one of these dependencies)"]
    );
}

#[test]
fn an_unknown_dependency_is_named() {
    let p = problems("services:\n  a: {image: x, depends_on: [ghost]}\n");
    assert_eq!(
        p,
        ["component `a` depends on `ghost`, which is not a component of this application"]
    );
}

#[test]
fn unsupported_keys_are_all_reported_with_their_paths() {
    let p = problems(
        "volumes: {data: {}}\nservices:\n  a:\n    image: x\n    volumes: ['data:/d']\n    deploy: {replicas: 2}\n    depends_on: {b: {condition: service_ready}}\n  b: {image: y, x-mine: 1}\n",
    );
    assert!(
        p.iter().any(|p| p.starts_with("volumes: not supported")),
        "{p:?}"
    );
    assert!(p
        .iter()
        .any(|p| p.starts_with("services.a.volumes: not supported")));
    assert!(p
        .iter()
        .any(|p| p.starts_with("services.a.deploy.replicas: not supported")));
    assert!(p
        .iter()
        .any(|p| p.starts_with("services.a.depends_on.b.condition: `service_ready`")));
    assert_eq!(p.len(), 4, "{p:?}");
}

#[test]
fn placement_constraints_become_provider_labels_and_other_forms_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "compose.yaml",
        "services:\n  a:\n    image: x\n    deploy:\n      placement:\n        constraints: [\"node.labels.site == b\", \"node.labels.disk==ssd\"]\n",
    );
    let a = analyze(dir.path(), "p").unwrap();
    let want: std::collections::BTreeMap<String, String> =
        [("disk".into(), "ssd".into()), ("site".into(), "b".into())].into();
    assert_eq!(a.components[0].placement, want);

    let p = problems(
        "services:\n  a:\n    image: x\n    deploy:\n      placement:\n        constraints: [\"node.role==manager\", \"node.labels.x!=y\"]\n        preferences: []\n",
    );
    assert!(
        p.iter()
            .any(|p| p
                .starts_with("services.a.deploy.placement.constraints[0]: `node.role==manager`")),
        "{p:?}"
    );
    assert!(p
        .iter()
        .any(|p| p.starts_with("services.a.deploy.placement.constraints[1]")));
    assert!(p
        .iter()
        .any(|p| p.starts_with("services.a.deploy.placement.preferences: not supported")));
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn a_build_context_outside_the_repository_is_refused() {
    let p = problems("services:\n  a: {build: ../..}\n");
    assert!(p[0].contains("services.a.build.context"), "{p:?}");
}

#[test]
fn dockerfile_directories_are_components() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "Dockerfile", "FROM x\nEXPOSE 8080 9000/udp\n");
    write(dir.path(), "worker/Dockerfile", "FROM x\n");
    write(dir.path(), "worker/requirements.txt", "celery\nDjango==5\n");
    write(dir.path(), "node_modules/pkg/Dockerfile", "FROM x\n");
    let a = analyze(dir.path(), "My App").unwrap();
    assert_eq!(a.source, Source::Dockerfile);
    let ids: Vec<&str> = a.components.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["my-app", "worker"]);
    assert_eq!(a.components[0].kind, "web");
    assert_eq!(a.components[0].ports.len(), 2);
    assert_eq!(a.components[1].kind, "worker");
    assert_eq!(a.components[1].language.as_deref(), Some("python"));
    assert_eq!(a.components[1].framework.as_deref(), Some("django"));
    assert_eq!(a.components[1].build.as_ref().unwrap().context, "worker");
}

#[test]
fn procfile_entries_are_components() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "Procfile",
        "web: bundle exec rails s\nworker: sidekiq\nrelease: rake db:migrate\n",
    );
    write(dir.path(), "Gemfile", "gem 'rails'\n");
    let a = analyze(dir.path(), "x").unwrap();
    let kinds: Vec<(&str, &str)> = a
        .components
        .iter()
        .map(|c| (c.id.as_str(), c.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("web", "web"), ("worker", "worker"), ("release", "job")]
    );
    assert_eq!(a.components[0].framework.as_deref(), Some("rails"));
}

#[test]
fn an_empty_repository_says_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let e = analyze(dir.path(), "x").unwrap_err();
    assert!(e.to_string().contains("no compose.yaml"), "{e}");
}
