//! The Compose subset iarnet runs, read strictly: every key is either acted
//! on, or reported with its path (`services.db.volumes`). Extensions (`x-*`)
//! are skipped, as the Compose specification says.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::model::{Build, Component, Condition, Dependency, Healthcheck, Port, Requirements};
use super::units::{parse_bytes, parse_cpus, parse_duration_ms};

/// The services of a Compose file, or every problem found in it.
pub struct ComposeFile {
    pub services: Vec<Component>,
    pub notes: Vec<String>,
}

const SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "ports",
    "expose",
    "depends_on",
    "healthcheck",
    "deploy",
    "labels",
    "restart",
    "container_name",
    "hostname",
];

pub fn parse(text: &str) -> Result<ComposeFile, Vec<String>> {
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| vec![format!("not YAML: {e}")])?;
    let Value::Mapping(top) = doc else {
        return Err(vec!["the file must be a mapping with `services`".into()]);
    };
    let mut p = Problems::default();
    let mut notes = Vec::new();
    let mut services = Vec::new();
    for (k, v) in &top {
        match key(k).as_str() {
            "services" => {}
            "name" => {}
            "version" => notes.push("`version` is obsolete in Compose and ignored".into()),
            k if k.starts_with("x-") => {}
            other => p.unsupported(other),
        }
        let _ = v;
    }
    match top.get("services") {
        Some(Value::Mapping(m)) if !m.is_empty() => {
            for (name, body) in m {
                let name = key(name);
                if let Some(c) = service(&name, body, &mut p) {
                    services.push(c);
                }
            }
        }
        _ => p.push("services", "must name at least one service"),
    }
    if p.0.is_empty() {
        Ok(ComposeFile { services, notes })
    } else {
        Err(p.0)
    }
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, path: &str, what: &str) {
        self.0.push(format!("{path}: {what}"));
    }
    fn unsupported(&mut self, path: &str) {
        self.0.push(format!(
            "{path}: not supported by iarnet (remove it, or run this file with Compose)"
        ));
    }
}

fn key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// A scalar as text; Compose's `$$` (a literal `$`) unescaped.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.replace("$$", "$")),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn service(name: &str, body: &Value, p: &mut Problems) -> Option<Component> {
    let at = format!("services.{name}");
    if !valid_name(name) {
        p.push(
            &at,
            "a service name takes lowercase letters, digits, `-` and `_`, starting with a letter or digit",
        );
    }
    let Value::Mapping(m) = body else {
        p.push(&at, "must be a mapping");
        return None;
    };
    for k in m.keys() {
        let k = key(k);
        if !SERVICE_KEYS.contains(&k.as_str()) && !k.starts_with("x-") {
            p.unsupported(&format!("{at}.{k}"));
        }
    }
    let image = m.get("image").and_then(|v| {
        let s = scalar(v);
        if s.is_none() {
            p.push(&format!("{at}.image"), "must be a string");
        }
        s
    });
    let build = m
        .get("build")
        .and_then(|v| build(&format!("{at}.build"), v, p));
    if image.is_none() && build.is_none() {
        p.push(&at, "needs `image` or `build`");
    }
    let (requirements, declared, placement) = match m.get("deploy") {
        Some(v) => deploy(&format!("{at}.deploy"), v, p),
        None => (super::model::DEFAULT_REQUIREMENTS, false, BTreeMap::new()),
    };
    let mut c = Component {
        id: name.to_string(),
        name: name.to_string(),
        kind: String::new(),
        language: None,
        framework: None,
        requirements,
        declared_requirements: declared,
        image,
        build,
        entrypoint: m
            .get("entrypoint")
            .map(|v| words(&format!("{at}.entrypoint"), v, p))
            .unwrap_or_default(),
        command: m
            .get("command")
            .map(|v| words(&format!("{at}.command"), v, p))
            .unwrap_or_default(),
        environment: m
            .get("environment")
            .map(|v| string_map(&format!("{at}.environment"), v, p))
            .unwrap_or_default(),
        ports: m
            .get("ports")
            .map(|v| ports(&format!("{at}.ports"), v, p))
            .unwrap_or_default(),
        depends_on: m
            .get("depends_on")
            .map(|v| depends_on(&format!("{at}.depends_on"), v, p))
            .unwrap_or_default(),
        healthcheck: m
            .get("healthcheck")
            .and_then(|v| healthcheck(&format!("{at}.healthcheck"), v, p)),
        labels: m
            .get("labels")
            .map(|v| string_map(&format!("{at}.labels"), v, p))
            .unwrap_or_default(),
        placement,
        restart: None,
    };
    if let Some(v) = m.get("expose") {
        expose(&format!("{at}.expose"), v, &mut c.ports, p);
    }
    if let Some(v) = m.get("restart") {
        match scalar(v).as_deref() {
            Some(r @ ("no" | "always" | "on-failure" | "unless-stopped")) => {
                c.restart = Some(r.to_string())
            }
            _ => p.push(
                &format!("{at}.restart"),
                "must be no, always, on-failure or unless-stopped",
            ),
        }
    }
    Some(c)
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 63
}

fn build(at: &str, v: &Value, p: &mut Problems) -> Option<Build> {
    let mut b = Build {
        context: ".".into(),
        dockerfile: "Dockerfile".into(),
        args: BTreeMap::new(),
    };
    match v {
        Value::String(s) => b.context = s.clone(),
        Value::Mapping(m) => {
            for (k, v) in m {
                match key(k).as_str() {
                    "context" => b.context = scalar(v).unwrap_or_default(),
                    "dockerfile" => b.dockerfile = scalar(v).unwrap_or_default(),
                    "args" => b.args = string_map(&format!("{at}.args"), v, p),
                    other => p.unsupported(&format!("{at}.{other}")),
                }
            }
        }
        _ => {
            p.push(at, "must be a path or a mapping with `context`");
            return None;
        }
    }
    if b.context.contains("://") {
        p.push(
            &format!("{at}.context"),
            "must be a directory of this repository",
        );
    }
    Some(b)
}

/// A string is split the way a shell would split plain words; a list is taken as is.
fn words(at: &str, v: &Value, p: &mut Problems) -> Vec<String> {
    match v {
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Sequence(seq) => seq
            .iter()
            .filter_map(|x| {
                let s = scalar(x);
                if s.is_none() {
                    p.push(at, "list entries must be strings");
                }
                s
            })
            .collect(),
        _ => {
            p.push(at, "must be a string or a list of strings");
            Vec::new()
        }
    }
}

fn string_map(at: &str, v: &Value, p: &mut Problems) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let val = if v.is_null() {
                    Some(String::new())
                } else {
                    scalar(v)
                };
                match val {
                    Some(val) => {
                        out.insert(key(k), val);
                    }
                    None => p.push(&format!("{at}.{}", key(k)), "must be a string"),
                }
            }
        }
        Value::Sequence(seq) => {
            for x in seq {
                match scalar(x) {
                    Some(s) => {
                        let (k, val) = s.split_once('=').unwrap_or((&s, ""));
                        out.insert(k.to_string(), val.to_string());
                    }
                    None => p.push(at, "list entries must be KEY=VALUE strings"),
                }
            }
        }
        _ => p.push(at, "must be a mapping or a list of KEY=VALUE"),
    }
    out
}

fn port_number(at: &str, s: &str, p: &mut Problems) -> u16 {
    match s.parse::<u16>() {
        Ok(n) => n,
        Err(_) => {
            p.push(at, &format!("`{s}` is not a port number"));
            0
        }
    }
}

fn ports(at: &str, v: &Value, p: &mut Problems) -> Vec<Port> {
    let Value::Sequence(seq) = v else {
        p.push(at, "must be a list");
        return Vec::new();
    };
    let mut out = Vec::new();
    for x in seq {
        match x {
            Value::Mapping(m) => {
                let mut port = Port {
                    container: 0,
                    host: 0,
                    protocol: "tcp".into(),
                };
                for (k, v) in m {
                    let s = scalar(v).unwrap_or_default();
                    match key(k).as_str() {
                        "target" => port.container = port_number(at, &s, p),
                        "published" => port.host = port_number(at, &s, p),
                        "protocol" => port.protocol = s,
                        "mode" | "host_ip" | "name" | "app_protocol" => {}
                        other => p.unsupported(&format!("{at}.{other}")),
                    }
                }
                out.push(port);
            }
            other => {
                let s = scalar(other).unwrap_or_default();
                let (rest, protocol) = s.split_once('/').unwrap_or((&s, "tcp"));
                let parts: Vec<&str> = rest.split(':').collect();
                let (host, container) = match parts.as_slice() {
                    [c] => ("0", *c),
                    [h, c] => (*h, *c),
                    [_ip, h, c] => (*h, *c),
                    _ => {
                        p.push(at, &format!("`{s}` is not HOST:CONTAINER[/PROTOCOL]"));
                        continue;
                    }
                };
                if container.contains('-') || host.contains('-') {
                    p.push(at, &format!("`{s}`: port ranges are not supported"));
                    continue;
                }
                out.push(Port {
                    container: port_number(at, container, p),
                    host: if host.is_empty() {
                        0
                    } else {
                        port_number(at, host, p)
                    },
                    protocol: protocol.to_string(),
                });
            }
        }
    }
    for port in &out {
        if port.protocol != "tcp" && port.protocol != "udp" {
            p.push(
                at,
                &format!("protocol `{}` must be tcp or udp", port.protocol),
            );
        }
    }
    out
}

fn expose(at: &str, v: &Value, ports: &mut Vec<Port>, p: &mut Problems) {
    let Value::Sequence(seq) = v else {
        p.push(at, "must be a list");
        return;
    };
    for x in seq {
        let s = scalar(x).unwrap_or_default();
        let (n, protocol) = s.split_once('/').unwrap_or((&s, "tcp"));
        let container = port_number(at, n, p);
        if !ports.iter().any(|q| q.container == container) {
            ports.push(Port {
                container,
                host: 0,
                protocol: protocol.into(),
            });
        }
    }
}

fn depends_on(at: &str, v: &Value, p: &mut Problems) -> Vec<Dependency> {
    let mut out = Vec::new();
    match v {
        Value::Sequence(seq) => {
            for x in seq {
                match scalar(x) {
                    Some(on) => out.push(Dependency {
                        on,
                        condition: Condition::ServiceStarted,
                    }),
                    None => p.push(at, "list entries must be service names"),
                }
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m {
                let on = key(k);
                let mut condition = Condition::ServiceStarted;
                if let Value::Mapping(opts) = v {
                    for (ok, ov) in opts {
                        match key(ok).as_str() {
                            "condition" => {
                                let s = scalar(ov).unwrap_or_default();
                                match Condition::parse(&s) {
                                    Some(c) => condition = c,
                                    None => p.push(
                                        &format!("{at}.{on}.condition"),
                                        &format!("`{s}` must be service_started, service_healthy or service_completed_successfully"),
                                    ),
                                }
                            }
                            "required" | "restart" => {}
                            other => p.unsupported(&format!("{at}.{on}.{other}")),
                        }
                    }
                } else if !v.is_null() {
                    p.push(&format!("{at}.{on}"), "must be a mapping with `condition`");
                }
                out.push(Dependency { on, condition });
            }
        }
        _ => p.push(at, "must be a list or a mapping"),
    }
    out
}

fn healthcheck(at: &str, v: &Value, p: &mut Problems) -> Option<Healthcheck> {
    let Value::Mapping(m) = v else {
        p.push(at, "must be a mapping");
        return None;
    };
    let mut h = Healthcheck {
        test: Vec::new(),
        interval_ms: 30_000,
        timeout_ms: 30_000,
        retries: 3,
        start_period_ms: 0,
    };
    let mut disabled = false;
    for (k, v) in m {
        let path = format!("{at}.{}", key(k));
        let ms = |p: &mut Problems| {
            let s = scalar(v).unwrap_or_default();
            parse_duration_ms(&s).unwrap_or_else(|| {
                p.push(&path, &format!("`{s}` is not a duration like 1s or 1m30s"));
                0
            })
        };
        match key(k).as_str() {
            "test" => {
                h.test = match v {
                    Value::String(s) => vec!["CMD-SHELL".into(), s.clone()],
                    _ => words(&path, v, p),
                }
            }
            "interval" => h.interval_ms = ms(p),
            "timeout" => h.timeout_ms = ms(p),
            "start_period" => h.start_period_ms = ms(p),
            "start_interval" => {}
            "retries" => h.retries = scalar(v).and_then(|s| s.parse().ok()).unwrap_or(3),
            "disable" => disabled = matches!(v, Value::Bool(true)),
            other => p.unsupported(&format!("{at}.{other}")),
        }
    }
    if disabled {
        return None;
    }
    match h.test.first().map(String::as_str) {
        Some("CMD" | "CMD-SHELL") => Some(h),
        Some("NONE") => None,
        _ => {
            p.push(
                &format!("{at}.test"),
                "must start with CMD or CMD-SHELL, or be a shell string",
            );
            None
        }
    }
}

/// `deploy.resources`: limits are what the engine enforces, so they are the
/// need when given; reservations otherwise. `deploy.placement`: the
/// provider labels it must run on.
fn deploy(at: &str, v: &Value, p: &mut Problems) -> (Requirements, bool, BTreeMap<String, String>) {
    let mut req = super::model::DEFAULT_REQUIREMENTS;
    let mut declared = false;
    let mut placement = BTreeMap::new();
    let Value::Mapping(m) = v else {
        p.push(at, "must be a mapping");
        return (req, false, placement);
    };
    for (k, v) in m {
        match key(k).as_str() {
            "placement" => placement = constraints(&format!("{at}.placement"), v, p),
            "resources" => {
                let Value::Mapping(r) = v else {
                    p.push(&format!("{at}.resources"), "must be a mapping");
                    continue;
                };
                for (which, body) in r {
                    let which = key(which);
                    let path = format!("{at}.resources.{which}");
                    if which != "limits" && which != "reservations" {
                        p.unsupported(&path);
                        continue;
                    }
                    let Value::Mapping(body) = body else {
                        p.push(&path, "must be a mapping");
                        continue;
                    };
                    let limits = which == "limits";
                    for (k, v) in body {
                        let s = scalar(v).unwrap_or_default();
                        let kp = format!("{path}.{}", key(k));
                        match key(k).as_str() {
                            "cpus" => match parse_cpus(&s) {
                                Some(c) if limits || !declared_cpu(r) => {
                                    req.cpu = c;
                                    declared = true;
                                }
                                Some(_) => {}
                                None => p.push(&kp, &format!("`{s}` is not a number of CPUs")),
                            },
                            "memory" => match parse_bytes(&s) {
                                Some(b) if limits || !declared_memory(r) => {
                                    req.memory = b.div_ceil(1 << 20);
                                    declared = true;
                                }
                                Some(_) => {}
                                None => p.push(&kp, &format!("`{s}` is not a size like 512M")),
                            },
                            "devices" => {
                                req.gpu = req.gpu.max(gpu_devices(&kp, v, p));
                                declared = true;
                            }
                            "pids" => {}
                            other => p.unsupported(&format!("{path}.{other}")),
                        }
                    }
                }
            }
            other => p.unsupported(&format!("{at}.{other}")),
        }
    }
    (req, declared, placement)
}

/// `placement.constraints`, each `node.labels.KEY==VALUE`: a provider
/// label it must have. Other forms (`!=`, `node.role`) are reported.
fn constraints(at: &str, v: &Value, p: &mut Problems) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Value::Mapping(m) = v else {
        p.push(at, "must be a mapping");
        return out;
    };
    for (k, v) in m {
        let path = format!("{at}.{}", key(k));
        if key(k) != "constraints" {
            p.unsupported(&path);
            continue;
        }
        let Value::Sequence(items) = v else {
            p.push(&path, "must be a list like [\"node.labels.site==b\"]");
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let text = scalar(item).unwrap_or_default();
            let parsed = text
                .split_once("==")
                .map(|(l, r)| (l.trim(), r.trim()))
                .and_then(|(l, r)| Some((l.strip_prefix("node.labels.")?, r)))
                .filter(|(l, r)| !l.is_empty() && !r.is_empty());
            match parsed {
                Some((label, value)) => {
                    out.insert(label.to_string(), value.to_string());
                }
                None => p.push(
                    &format!("{path}[{i}]"),
                    &format!("`{text}` is not supported: write `node.labels.KEY==VALUE` (a label of the provider it runs on)"),
                ),
            }
        }
    }
    out
}

fn limit_has(r: &Mapping, what: &str) -> bool {
    matches!(r.get("limits"), Some(Value::Mapping(l)) if l.contains_key(what))
}

fn declared_cpu(r: &Mapping) -> bool {
    limit_has(r, "cpus")
}

fn declared_memory(r: &Mapping) -> bool {
    limit_has(r, "memory")
}

/// GPUs asked for by `devices: [{capabilities: [gpu], count: N | all, device_ids}]`.
fn gpu_devices(at: &str, v: &Value, p: &mut Problems) -> u32 {
    let Value::Sequence(seq) = v else {
        p.push(at, "must be a list");
        return 0;
    };
    let mut n = 0;
    for d in seq {
        let Value::Mapping(d) = d else {
            p.push(at, "entries must be mappings");
            continue;
        };
        let gpu = match d.get("capabilities") {
            Some(Value::Sequence(c)) => c.iter().any(|c| scalar(c).as_deref() == Some("gpu")),
            _ => false,
        };
        if !gpu {
            p.push(at, "only devices with capabilities [gpu] are supported");
            continue;
        }
        for k in d.keys() {
            let k = key(k);
            if !["capabilities", "count", "device_ids", "driver", "options"].contains(&k.as_str()) {
                p.unsupported(&format!("{at}.{k}"));
            }
        }
        n += match (d.get("count"), d.get("device_ids")) {
            (Some(Value::Number(c)), _) => c.as_u64().unwrap_or(1) as u32,
            (Some(Value::String(s)), _) if s == "all" => 1,
            (_, Some(Value::Sequence(ids))) => ids.len() as u32,
            _ => 1,
        };
    }
    n
}
