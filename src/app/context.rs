//! A component's build context as the engine takes it: a tar of its
//! directory, less what `.dockerignore` excludes (Docker's rules: `#`
//! comments, `*`, `?`, `**`, and `!` to include again; the last match wins).

use std::fs;
use std::path::Path;

use super::AppError;

/// Largest context sent to a builder.
pub const MAX_CONTEXT_BYTES: u64 = 512 << 20;

/// The patterns of a `.dockerignore`, in order.
#[derive(Debug, Default)]
pub struct Ignore(Vec<(bool, String)>);

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        Ignore(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (negate, p) = match l.strip_prefix('!') {
                        Some(p) => (true, p.trim()),
                        None => (false, l),
                    };
                    let p = p.trim_start_matches("./").trim_start_matches('/');
                    (negate, p.trim_end_matches('/').to_string())
                })
                .filter(|(_, p)| !p.is_empty())
                .collect(),
        )
    }

    /// True when `path` (relative, `/`-separated) is left out: the last
    /// pattern matching it or one of its parent directories decides.
    pub fn excludes(&self, path: &str) -> bool {
        let mut out = false;
        for (negate, pat) in &self.0 {
            let hit = prefixes(path).any(|p| glob(pat.as_bytes(), p.as_bytes()));
            if hit {
                out = !negate;
            }
        }
        out
    }
}

/// `a`, `a/b`, `a/b/c` for `a/b/c`.
fn prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(move |(i, _)| &path[..i])
        .chain(std::iter::once(path))
}

/// Docker's pattern match: `*` and `?` stay within one path element, `**`
/// crosses any number of them.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) if pat.get(1) == Some(&b'*') => {
            let rest = pat[2..].strip_prefix(b"/").unwrap_or(&pat[2..]);
            (0..=s.len()).any(|i| (i == 0 || s[i - 1] == b'/') && glob(rest, &s[i..]))
                || glob(&pat[2..], s)
        }
        (Some(b'*'), _) => {
            glob(&pat[1..], s) || (!s.is_empty() && s[0] != b'/' && glob(pat, &s[1..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&pat[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// The tar of `dir` for the builder, `.dockerignore` applied; the
/// Dockerfile and `.dockerignore` always go (the engine reads them).
pub fn pack(dir: &Path, dockerfile: &str) -> Result<Vec<u8>, AppError> {
    let ignore = Ignore::parse(&fs::read_to_string(dir.join(".dockerignore")).unwrap_or_default());
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d)
            .map_err(|e| AppError::Internal(format!("cannot read {}: {e}", d.display())))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path
                .strip_prefix(dir)
                .expect("walked from dir")
                .to_string_lossy()
                .replace('\\', "/");
            let keep = rel == dockerfile || rel == ".dockerignore";
            if !keep && ignore.excludes(&rel) {
                continue;
            }
            let meta = fs::symlink_metadata(&path)
                .map_err(|err| AppError::Internal(format!("cannot read {rel}: {err}")))?;
            if meta.is_dir() {
                stack.push(path.clone());
            } else {
                total += meta.len();
                if total > MAX_CONTEXT_BYTES {
                    return Err(AppError::invalid(
                        "build.context",
                        format!(
                            "{} holds more than {} MiB: leave the rest out with .dockerignore",
                            dir.display(),
                            MAX_CONTEXT_BYTES >> 20
                        ),
                    ));
                }
            }
            tar.append_path_with_name(&path, &rel)
                .map_err(|err| AppError::Internal(format!("cannot pack {rel}: {err}")))?;
        }
    }
    tar.into_inner()
        .map_err(|e| AppError::Internal(format!("cannot finish the build context: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_follows_dockers_rules() {
        let i = Ignore::parse(
            "# comment\n*.log\nsecret*\nnode_modules\n**/tmp\n!keep.log\ndocs/*.md\n",
        );
        for out in [
            "a.log",
            "secret.txt",
            "node_modules/x/y.js",
            "src/tmp/x",
            "tmp",
            "docs/a.md",
        ] {
            assert!(i.excludes(out), "{out}");
        }
        for kept in [
            "keep.log",
            "src/a.log",
            "docs/sub/a.md",
            "main.rs",
            "secrets/ok",
        ] {
            if kept == "secrets/ok" {
                // `secret*` matches the directory `secrets`, so it is out.
                assert!(i.excludes(kept));
                continue;
            }
            assert!(!i.excludes(kept), "{kept}");
        }
    }

    #[test]
    fn a_context_leaves_ignored_files_out() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Dockerfile"), "FROM x\n").unwrap();
        fs::write(dir.path().join(".dockerignore"), "secret.txt\nDockerfile\n").unwrap();
        fs::write(dir.path().join("secret.txt"), "s").unwrap();
        fs::create_dir(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/main.sh"), "echo").unwrap();
        let tar = pack(dir.path(), "Dockerfile").unwrap();
        let mut names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".dockerignore", "Dockerfile", "src", "src/main.sh"]);
    }
}
