//! The code browser: a checkout's file tree, one file read or written.
//! Paths are relative to the checkout and stay inside it: `..`, absolute
//! paths, `.git` and symbolic links leading out are refused.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::AppError;

/// Largest file read or written through the browser.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most entries one tree listing returns.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    /// `file` or `dir`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<FileEntry>,
    /// True when the listing stopped at `MAX_ENTRIES`.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileContent {
    pub path: String,
    pub size: u64,
    pub content: String,
}

/// `path` inside `root`, or why not.
pub fn resolve(root: &Path, path: &str) -> Result<PathBuf, AppError> {
    let rel = Path::new(path.trim_start_matches("./"));
    let bad = |why: &str| AppError::invalid("path", format!("`{path}` {why}"));
    if rel.is_absolute() {
        return Err(bad("is absolute: give a path relative to the checkout"));
    }
    for c in rel.components() {
        match c {
            Component::Normal(n) if n == ".git" => {
                return Err(bad("is inside .git, which the browser does not open"))
            }
            Component::Normal(_) | Component::CurDir => {}
            _ => return Err(bad("leaves the checkout: `..` is not allowed")),
        }
    }
    let full = root.join(rel);
    // A symbolic link inside the checkout may still point out of it.
    let root_c = root
        .canonicalize()
        .map_err(|e| AppError::Internal(format!("checkout {}: {e}", root.display())))?;
    let mut probe = full.clone();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    if let Ok(real) = probe.canonicalize() {
        if !real.starts_with(&root_c) {
            return Err(bad("leads out of the checkout through a symbolic link"));
        }
    }
    Ok(full)
}

/// The files and directories under `path` ("" for the root), `.git` left out.
pub fn tree(root: &Path, path: &str) -> Result<Tree, AppError> {
    let start = resolve(root, path)?;
    if !start.is_dir() {
        return Err(AppError::NotFound(format!(
            "no directory `{path}` in the checkout"
        )));
    }
    let mut out = Tree {
        entries: Vec::new(),
        truncated: false,
    };
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        let Ok(read) = fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = read.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries.into_iter().rev() {
            if e.file_name() == ".git" {
                continue;
            }
            if out.entries.len() >= MAX_ENTRIES {
                out.truncated = true;
                return Ok(sorted(out));
            }
            let Ok(meta) = e.metadata() else { continue };
            let rel = e
                .path()
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if meta.is_dir() {
                stack.push(e.path());
            }
            out.entries.push(FileEntry {
                path: rel,
                kind: if meta.is_dir() { "dir" } else { "file" }.into(),
                size: if meta.is_dir() { 0 } else { meta.len() },
            });
        }
    }
    Ok(sorted(out))
}

fn sorted(mut t: Tree) -> Tree {
    t.entries.sort_by(|a, b| a.path.cmp(&b.path));
    t
}

/// One text file, at most `MAX_FILE_BYTES`; binary files are refused.
pub fn read(root: &Path, path: &str) -> Result<FileContent, AppError> {
    let full = resolve(root, path)?;
    let meta = fs::metadata(&full)
        .map_err(|_| AppError::NotFound(format!("no file `{path}` in the checkout")))?;
    if !meta.is_file() {
        return Err(AppError::invalid("path", format!("`{path}` is not a file")));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(AppError::invalid(
            "path",
            format!(
                "`{path}` is {} bytes; the browser opens files up to {MAX_FILE_BYTES}",
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::new();
    fs::File::open(&full)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| AppError::Internal(format!("cannot read `{path}`: {e}")))?;
    let content = match String::from_utf8(bytes) {
        Ok(s) if !s.contains('\0') => s,
        _ => {
            return Err(AppError::invalid(
                "path",
                format!("`{path}` is a binary file; the browser shows text only"),
            ))
        }
    };
    Ok(FileContent {
        path: path.to_string(),
        size: meta.len(),
        content,
    })
}

/// Writes one text file (new or replaced), at most `MAX_FILE_BYTES`.
pub fn write(root: &Path, path: &str, content: &str) -> Result<FileContent, AppError> {
    if content.len() as u64 > MAX_FILE_BYTES {
        return Err(AppError::invalid(
            "content",
            format!(
                "is {} bytes; files up to {MAX_FILE_BYTES} bytes are saved",
                content.len()
            ),
        ));
    }
    if path.trim().is_empty() {
        return Err(AppError::invalid("path", "is empty: name the file to save"));
    }
    let full = resolve(root, path)?;
    if full.is_dir() {
        return Err(AppError::invalid(
            "path",
            format!("`{path}` is a directory"),
        ));
    }
    if let Some(parent) = full.parent() {
        fs::create_dir_all(parent).map_err(|e| {
            AppError::Internal(format!("cannot create the directory of `{path}`: {e}"))
        })?;
    }
    // Written beside and renamed, so a crash leaves the old file or the new one.
    let tmp = full.with_extension("iarnet-save");
    fs::write(&tmp, content)
        .and_then(|_| fs::rename(&tmp, &full))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            AppError::Internal(format!("cannot save `{path}`: {e}"))
        })?;
    Ok(FileContent {
        path: path.to_string(),
        size: content.len() as u64,
        content: content.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join(".git")).unwrap();
        fs::write(root.join("a.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("out")).unwrap();
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            ".git/config",
            "out/passwd",
        ] {
            let e = read(root, bad).unwrap_err();
            assert!(
                matches!(e, AppError::Invalid { ref field, .. } if field == "path"),
                "{bad}: {e}"
            );
            assert!(write(root, bad, "x").is_err(), "{bad}");
        }
        assert_eq!(read(root, "a.txt").unwrap().content, "hello");
        write(root, "src/new.rs", "fn main() {}").unwrap();
        let t = tree(root, "").unwrap();
        let paths: Vec<&str> = t.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "out", "src", "src/new.rs"]);
    }

    #[test]
    fn binary_and_large_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.bin"), [0u8, 159, 146, 150]).unwrap();
        assert!(read(dir.path(), "b.bin")
            .unwrap_err()
            .to_string()
            .contains("binary"));
        let big = "x".repeat(MAX_FILE_BYTES as usize + 1);
        assert!(write(dir.path(), "big.txt", &big).is_err());
        assert!(!dir.path().join("big.txt").exists());
    }
}
