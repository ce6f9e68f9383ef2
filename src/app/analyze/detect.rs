//! What a directory's files say about the code in it: language and framework
//! from the manifest a build tool reads, a component's type from its image,
//! ports and role; Dockerfile directories and Procfile entries as components.

use std::fs;
use std::path::{Path, PathBuf};

use super::model::{Build, Component, Port, DEFAULT_REQUIREMENTS};

/// A manifest file, its language, and (needle, framework) pairs.
type Manifest = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Manifests and the frameworks a dependency list names, in order of preference.
const MANIFESTS: &[Manifest] = &[
    (
        "package.json",
        "javascript",
        &[
            ("\"next\"", "next"),
            ("\"react\"", "react"),
            ("\"vue\"", "vue"),
            ("\"@angular/core\"", "angular"),
            ("\"express\"", "express"),
            ("\"fastify\"", "fastify"),
        ],
    ),
    (
        "pyproject.toml",
        "python",
        &[
            ("django", "django"),
            ("fastapi", "fastapi"),
            ("flask", "flask"),
        ],
    ),
    (
        "requirements.txt",
        "python",
        &[
            ("django", "django"),
            ("fastapi", "fastapi"),
            ("flask", "flask"),
        ],
    ),
    (
        "Cargo.toml",
        "rust",
        &[
            ("axum", "axum"),
            ("actix-web", "actix-web"),
            ("rocket", "rocket"),
            ("tonic", "tonic"),
        ],
    ),
    (
        "go.mod",
        "go",
        &[
            ("gin-gonic/gin", "gin"),
            ("labstack/echo", "echo"),
            ("google.golang.org/grpc", "grpc"),
        ],
    ),
    ("pom.xml", "java", &[("spring-boot", "spring-boot")]),
    ("build.gradle", "java", &[("spring-boot", "spring-boot")]),
    (
        "Gemfile",
        "ruby",
        &[("rails", "rails"), ("sinatra", "sinatra")],
    ),
    (
        "composer.json",
        "php",
        &[("laravel", "laravel"), ("symfony", "symfony")],
    ),
];

/// Largest manifest read: a dependency list, not a data file.
const MANIFEST_CAP: u64 = 1 << 20;

/// The language and framework of the code in `dir`, from the first manifest found.
pub fn language(dir: &Path) -> (Option<String>, Option<String>) {
    for (file, lang, frameworks) in MANIFESTS {
        let path = dir.join(file);
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.len() > MANIFEST_CAP {
            continue;
        }
        let text = fs::read_to_string(&path)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let framework = frameworks
            .iter()
            .find(|(needle, _)| text.contains(needle))
            .map(|(_, f)| f.to_string());
        return (Some(lang.to_string()), framework);
    }
    (None, None)
}

const DATABASES: &[&str] = &[
    "database",
    "postgres",
    "mysql",
    "mariadb",
    "mongo",
    "cassandra",
    "cockroach",
    "clickhouse",
    "elasticsearch",
    "etcd",
    "couchdb",
    "neo4j",
    "influxdb",
];
const CACHES: &[&str] = &["cache", "redis", "memcached", "valkey", "keydb"];
const QUEUES: &[&str] = &["rabbitmq", "kafka", "nats", "mosquitto", "activemq"];

/// A component's type: an `iarnet.type` label wins; then what its image is;
/// a job when a dependent waits for it to finish; web when it serves a port.
pub fn kind(c: &Component, waited_to_finish: bool) -> String {
    if let Some(t) = c.labels.get("iarnet.type") {
        return t.clone();
    }
    let image = c
        .image
        .as_deref()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let named = |list: &[&str]| {
        list.iter()
            .any(|n| image.starts_with(n) || c.id.contains(n))
    };
    if waited_to_finish {
        "job".into()
    } else if named(DATABASES) || c.id == "db" {
        "database".into()
    } else if named(CACHES) {
        "cache".into()
    } else if named(QUEUES) {
        "queue".into()
    } else if !c.ports.is_empty() {
        "web".into()
    } else {
        "worker".into()
    }
}

/// Directories skipped when looking for Dockerfiles: dependencies and tooling.
const SKIPPED: &[&str] = &[".git", "node_modules", "vendor", "target", ".venv", "dist"];
/// How deep Dockerfiles are looked for below the root.
const MAX_DEPTH: usize = 4;

/// One component per directory holding a `Dockerfile`, named after the
/// directory (the root's after the application).
pub fn dockerfile_components(root: &Path, app: &str) -> Vec<Component> {
    let mut dirs = Vec::new();
    walk(root, 0, &mut dirs);
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let rel = dir.strip_prefix(root).unwrap_or(&dir);
            let context = if rel.as_os_str().is_empty() {
                ".".to_string()
            } else {
                rel.to_string_lossy().into_owned()
            };
            let base = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| app.to_string());
            let id = slug(&base);
            let text = fs::read_to_string(dir.join("Dockerfile")).unwrap_or_default();
            let (language, framework) = language(&dir);
            Component {
                id: id.clone(),
                name: id,
                kind: String::new(),
                language,
                framework,
                requirements: DEFAULT_REQUIREMENTS,
                declared_requirements: false,
                image: None,
                build: Some(Build {
                    context,
                    dockerfile: "Dockerfile".into(),
                    args: Default::default(),
                }),
                entrypoint: Vec::new(),
                command: Vec::new(),
                environment: Default::default(),
                ports: exposed(&text),
                depends_on: Vec::new(),
                healthcheck: None,
                labels: Default::default(),
                placement: Default::default(),
                restart: None,
            }
        })
        .collect()
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if dir.join("Dockerfile").is_file() {
        out.push(dir.to_path_buf());
    }
    if depth >= MAX_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if SKIPPED.contains(&name.as_ref()) || name.starts_with('.') {
            continue;
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&e.path(), depth + 1, out);
        }
    }
}

/// The ports a Dockerfile's `EXPOSE` lines name.
fn exposed(dockerfile: &str) -> Vec<Port> {
    dockerfile
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.get(..7)
                .filter(|k| k.eq_ignore_ascii_case("expose "))
                .map(|_| &l[7..])
        })
        .flat_map(str::split_whitespace)
        .filter_map(|p| {
            let (n, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            Some(Port {
                container: n.parse().ok()?,
                host: 0,
                protocol: proto.to_ascii_lowercase(),
            })
        })
        .collect()
}

/// `Procfile` entries (`name: command`), each a component with no image:
/// it needs a Dockerfile or a Compose file before it can run.
pub fn procfile_components(root: &Path, text: &str) -> Vec<Component> {
    let (language, framework) = language(root);
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                return None;
            }
            let (name, cmd) = l.split_once(':')?;
            let id = slug(name);
            Some(Component {
                id: id.clone(),
                name: name.trim().to_string(),
                kind: match id.as_str() {
                    "web" => "web",
                    "release" => "job",
                    _ => "worker",
                }
                .into(),
                language: language.clone(),
                framework: framework.clone(),
                requirements: DEFAULT_REQUIREMENTS,
                declared_requirements: false,
                image: None,
                build: None,
                entrypoint: Vec::new(),
                command: vec!["sh".into(), "-c".into(), cmd.trim().to_string()],
                environment: Default::default(),
                ports: Vec::new(),
                depends_on: Vec::new(),
                healthcheck: None,
                labels: Default::default(),
                placement: Default::default(),
                restart: None,
            })
        })
        .collect()
}

/// A name made safe for a component id: lowercase, `-` for anything else.
pub fn slug(name: &str) -> String {
    let s: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "app".into()
    } else {
        s
    }
}
