//! Analysis of an application's checkout into components and their
//! dependency graph. Looked for in this order: a Compose file; else one
//! component per directory holding a `Dockerfile`; else `Procfile` entries.

mod compose;
pub mod dag;
mod detect;
pub mod model;
#[cfg(test)]
mod tests;
mod units;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

pub use compose::valid_name;
pub use detect::slug;
pub use model::{
    Analysis, Build, Component, Condition, Dag, Dependency, Edge, Healthcheck, Port, Requirements,
    Source, DEFAULT_REQUIREMENTS,
};

/// Compose file names, in the order Compose itself prefers them.
pub const COMPOSE_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Largest Compose file or Procfile read.
const SOURCE_CAP: u64 = 1 << 20;

/// Why a checkout could not be analysed: every problem found, each naming
/// the file and the key or component it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}", problems.join("; "))]
pub struct AnalysisError {
    pub file: String,
    pub problems: Vec<String>,
}

fn read_capped(path: &Path, file: &str) -> Result<String, AnalysisError> {
    let fail = |why: String| AnalysisError {
        file: file.to_string(),
        problems: vec![why],
    };
    let meta = fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > SOURCE_CAP {
        return Err(fail(format!(
            "is {} bytes; at most {SOURCE_CAP} are read",
            meta.len()
        )));
    }
    fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))
}

/// Analyses the checkout at `root` of the application called `app`.
pub fn analyze(root: &Path, app: &str) -> Result<Analysis, AnalysisError> {
    if let Some(file) = COMPOSE_FILES.iter().find(|f| root.join(f).is_file()) {
        let text = read_capped(&root.join(file), file)?;
        let parsed = compose::parse(&text).map_err(|problems| AnalysisError {
            file: file.to_string(),
            problems,
        })?;
        let mut components = parsed.services;
        for c in &mut components {
            if let Some(b) = &c.build {
                let dir = root.join(&b.context);
                if !inside(root, &dir) || !dir.is_dir() {
                    return Err(AnalysisError {
                        file: file.to_string(),
                        problems: vec![format!(
                            "services.{}.build.context: `{}` is not a directory of this repository",
                            c.id, b.context
                        )],
                    });
                }
                (c.language, c.framework) = detect::language(&dir);
            }
        }
        return finish(Source::Compose, file, components, parsed.notes);
    }
    let components = detect::dockerfile_components(root, app);
    if !components.is_empty() {
        return finish(Source::Dockerfile, "Dockerfile", components, Vec::new());
    }
    if root.join("Procfile").is_file() {
        let text = read_capped(&root.join("Procfile"), "Procfile")?;
        let components = detect::procfile_components(root, &text);
        return finish(Source::Procfile, "Procfile", components, Vec::new());
    }
    Err(AnalysisError {
        file: ".".into(),
        problems: vec![
            "no compose.yaml, docker-compose.yml, Dockerfile or Procfile found: add one to describe the components".into(),
        ],
    })
}

fn inside(root: &Path, p: &Path) -> bool {
    match (root.canonicalize(), p.canonicalize()) {
        (Ok(r), Ok(p)) => p.starts_with(r),
        _ => false,
    }
}

fn finish(
    source: Source,
    file: &str,
    mut components: Vec<Component>,
    notes: Vec<String>,
) -> Result<Analysis, AnalysisError> {
    let fail = |problems: Vec<String>| AnalysisError {
        file: file.to_string(),
        problems,
    };
    let mut seen = BTreeSet::new();
    let dupes: Vec<String> = components
        .iter()
        .filter(|c| !seen.insert(c.id.clone()))
        .map(|c| format!("two components are called `{}`: rename one", c.id))
        .collect();
    if !dupes.is_empty() {
        return Err(fail(dupes));
    }
    dag::infer_env_dependencies(&mut components);
    let dag = dag::build(&components)
        .map_err(|errs| fail(errs.iter().map(ToString::to_string).collect()))?;
    let finished: BTreeSet<&str> = components
        .iter()
        .flat_map(|c| &c.depends_on)
        .filter(|d| d.condition == Condition::ServiceCompletedSuccessfully)
        .map(|d| d.on.as_str())
        .collect::<BTreeSet<_>>();
    let kinds: Vec<String> = components
        .iter()
        .map(|c| {
            if c.kind.is_empty() {
                detect::kind(c, finished.contains(c.id.as_str()))
            } else {
                c.kind.clone()
            }
        })
        .collect();
    for (c, k) in components.iter_mut().zip(kinds) {
        c.kind = k;
    }
    Ok(Analysis {
        source,
        file: file.to_string(),
        components,
        dag,
        notes,
    })
}
