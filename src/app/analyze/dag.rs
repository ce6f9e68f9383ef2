//! The dependency graph of an application's components: edges from
//! `depends_on` and from environment values that name another component as
//! a host; checked for unknown components and cycles; cut into start levels.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Component, Dag, Edge};

/// Ports that speak gRPC by convention.
const GRPC_PORTS: &[u16] = &[50051, 9090];
/// Ports that speak HTTP by convention.
const HTTP_PORTS: &[u16] = &[80, 443, 3000, 5000, 8000, 8080, 8081, 8443, 8888, 9000];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DagError {
    Unknown { from: String, to: String },
    Cycle(Vec<String>),
}

impl std::fmt::Display for DagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DagError::Unknown { from, to } => write!(
                f,
                "component `{from}` depends on `{to}`, which is not a component of this application"
            ),
            DagError::Cycle(path) => write!(
                f,
                "dependency cycle: {} (break one of these dependencies)",
                path.join(" -> ")
            ),
        }
    }
}

/// Adds the dependencies environment values imply (`DB_HOST=db`,
/// `postgres://db:5432/app`), so the graph shows them and start order keeps them.
pub fn infer_env_dependencies(components: &mut [Component]) {
    let ids: BTreeSet<String> = components.iter().map(|c| c.id.clone()).collect();
    for c in components.iter_mut() {
        let mut found = Vec::new();
        for v in c.environment.values() {
            for other in &ids {
                if other != &c.id && names_host(v, other) {
                    found.push(other.clone());
                }
            }
        }
        for on in found {
            if !c.depends_on.iter().any(|d| d.on == on) {
                c.depends_on.push(super::model::Dependency {
                    on,
                    condition: Default::default(),
                });
            }
        }
    }
}

/// True when `value` uses `host` as a host name: the whole value, or
/// followed by `:port`, or after `://`.
fn names_host(value: &str, host: &str) -> bool {
    let mut rest = value;
    while let Some(i) = rest.find(host) {
        let before = rest[..i].chars().last();
        let after = rest[i + host.len()..].chars().next();
        let start = matches!(before, None | Some('/' | '@' | '=' | ',' | ' '));
        let end = matches!(after, None | Some(':' | '/' | ',' | ' '));
        if start && end {
            return true;
        }
        rest = &rest[i + host.len()..];
    }
    false
}

/// The edge type of `from -> to`: what `from`'s environment says about the
/// address it uses, else what port `to` serves.
fn edge_kind(from: &Component, to: &Component) -> &'static str {
    for v in from.environment.values() {
        if names_host(v, &to.id) {
            if v.starts_with("grpc://") || v.starts_with("grpcs://") {
                return "grpc";
            }
            if v.starts_with("http://") || v.starts_with("https://") || v.starts_with("ws://") {
                return "http";
            }
        }
    }
    if to.ports.iter().any(|p| GRPC_PORTS.contains(&p.container)) {
        "grpc"
    } else if to.ports.iter().any(|p| HTTP_PORTS.contains(&p.container)) {
        "http"
    } else {
        "tcp"
    }
}

/// The checked graph: unknown dependencies and cycles are errors, all of
/// the unknown ones at once.
pub fn build(components: &[Component]) -> Result<Dag, Vec<DagError>> {
    let by_id: BTreeMap<&str, &Component> = components.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut errors = Vec::new();
    let mut edges = Vec::new();
    for c in components {
        for d in &c.depends_on {
            match by_id.get(d.on.as_str()) {
                Some(to) => edges.push(Edge {
                    from: c.id.clone(),
                    to: d.on.clone(),
                    kind: edge_kind(c, to).into(),
                }),
                None => errors.push(DagError::Unknown {
                    from: c.id.clone(),
                    to: d.on.clone(),
                }),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if let Some(cycle) = find_cycle(components) {
        return Err(vec![DagError::Cycle(cycle)]);
    }
    Ok(Dag {
        levels: levels(components),
        edges,
    })
}

/// A cycle as the path that closes it (`a -> b -> a`), if there is one.
fn find_cycle(components: &[Component]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let index: BTreeMap<&str, usize> = components
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let mut mark = vec![Mark::New; components.len()];
    let mut path: Vec<usize> = Vec::new();

    fn visit(
        i: usize,
        components: &[Component],
        index: &BTreeMap<&str, usize>,
        mark: &mut [Mark],
        path: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        mark[i] = Mark::Open;
        path.push(i);
        for d in &components[i].depends_on {
            let Some(&j) = index.get(d.on.as_str()) else {
                continue;
            };
            match mark[j] {
                Mark::Open => {
                    let start = path.iter().position(|&k| k == j).unwrap_or(0);
                    let mut names: Vec<String> = path[start..]
                        .iter()
                        .map(|&k| components[k].id.clone())
                        .collect();
                    names.push(components[j].id.clone());
                    return Some(names);
                }
                Mark::New => {
                    if let Some(c) = visit(j, components, index, mark, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        mark[i] = Mark::Done;
        None
    }

    for i in 0..components.len() {
        if mark[i] == Mark::New {
            if let Some(c) = visit(i, components, &index, &mut mark, &mut path) {
                return Some(c);
            }
        }
    }
    None
}

/// Start levels of an acyclic graph: level 0 depends on nothing, level n
/// only on levels below it. Ids sorted within a level.
fn levels(components: &[Component]) -> Vec<Vec<String>> {
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    let by_id: BTreeMap<&str, &Component> = components.iter().map(|c| (c.id.as_str(), c)).collect();
    fn depth<'a>(
        id: &'a str,
        by_id: &BTreeMap<&'a str, &'a Component>,
        level: &mut BTreeMap<&'a str, usize>,
    ) -> usize {
        if let Some(&l) = level.get(id) {
            return l;
        }
        let l = by_id[id]
            .depends_on
            .iter()
            .map(|d| depth(by_id.get_key_value(d.on.as_str()).unwrap().0, by_id, level) + 1)
            .max()
            .unwrap_or(0);
        level.insert(id, l);
        l
    }
    for c in components {
        depth(&c.id, &by_id, &mut level);
    }
    let mut out: Vec<Vec<String>> = Vec::new();
    for (id, l) in level {
        if out.len() <= l {
            out.resize(l + 1, Vec::new());
        }
        out[l].push(id.to_string());
    }
    out
}
