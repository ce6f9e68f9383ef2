//! Git, by running the `git` program. It speaks every transport users have
//! (smart HTTP, `git://`, SSH with their keys and known hosts, `file://`),
//! shallow clones included, and adds nothing to the build; the node image
//! installs it. Credentials reach it through the environment, never argv.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::process::Command;

use super::AppError;

/// The longest a clone or a fetch may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// How to reach a private repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Sent as HTTP basic auth (`x-access-token:<token>`), which GitHub,
    /// GitLab and Gitea all accept for tokens.
    #[serde(default)]
    pub token: Option<String>,
    /// A private key file on this node, for `ssh://` and `user@host:path`.
    #[serde(default)]
    pub ssh_key_file: Option<PathBuf>,
}

/// The commit a checkout is at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub sha: String,
    pub message: String,
    pub at_ms: u64,
}

/// Checks a URL's scheme: https, http, git, ssh, file, or scp-like `user@host:path`.
pub fn check_url(url: &str) -> Result<(), AppError> {
    let ok = ["https://", "http://", "git://", "ssh://", "file://"]
        .iter()
        .any(|s| url.starts_with(s) && url.len() > s.len())
        || scp_like(url);
    if ok && !url.chars().any(|c| c.is_whitespace() || c.is_control()) && !url.starts_with('-') {
        Ok(())
    } else {
        Err(AppError::invalid(
            "git_url",
            format!(
                "`{url}` is not a Git URL: use https://, git://, ssh://, file:// or user@host:path"
            ),
        ))
    }
}

fn scp_like(url: &str) -> bool {
    match url.split_once(':') {
        Some((host, path)) => {
            host.contains('@') && !host.contains('/') && !path.is_empty() && !path.starts_with("//")
        }
        None => false,
    }
}

/// Checks a branch name the way `git check-ref-format --branch` would, for
/// the cases that matter before any process runs.
pub fn check_branch(branch: &str) -> Result<(), AppError> {
    let bad = branch.is_empty()
        || branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("@{")
        || branch
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        Err(AppError::invalid(
            "branch",
            format!("`{branch}` is not a valid branch name"),
        ))
    } else {
        Ok(())
    }
}

fn command(creds: &Credentials) -> Command {
    let mut cmd = Command::new("git");
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("SSH_ASKPASS", "true")
        .env("GIT_HTTP_LOW_SPEED_LIMIT", "1000")
        .env("GIT_HTTP_LOW_SPEED_TIME", "30")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut configs: Vec<(&str, String)> = Vec::new();
    if let Some(token) = &creds.token {
        let basic = base64(format!("x-access-token:{token}").as_bytes());
        configs.push(("http.extraHeader", format!("Authorization: Basic {basic}")));
    }
    for (i, (k, v)) in configs.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
            .env(format!("GIT_CONFIG_VALUE_{i}"), v);
    }
    cmd.env("GIT_CONFIG_COUNT", configs.len().to_string());
    let key = creds
        .ssh_key_file
        .as_ref()
        .map(|k| format!(" -i '{}' -o IdentitiesOnly=yes", k.display()))
        .unwrap_or_default();
    cmd.env(
        "GIT_SSH_COMMAND",
        format!(
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=15{key}"
        ),
    );
    cmd
}

fn base64(input: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs git in `dir` and returns its stdout, or the error its stderr names.
async fn run(
    creds: &Credentials,
    dir: Option<&Path>,
    args: &[&str],
    url: &str,
    branch: &str,
) -> Result<String, AppError> {
    let mut cmd = command(creds);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.args(args);
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            AppError::Unavailable(
                "git is not installed on this node: install it (apt-get install git) to use applications".into(),
            )
        } else {
            AppError::Internal(format!("cannot run git: {e}"))
        }
    })?;
    let out = match tokio::time::timeout(GIT_TIMEOUT, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| AppError::Internal(format!("git failed to run: {e}")))?,
        Err(_) => {
            return Err(AppError::Unavailable(format!(
                "git {} of {url} took longer than {}s",
                args[0],
                GIT_TIMEOUT.as_secs()
            )))
        }
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(classify(&String::from_utf8_lossy(&out.stderr), url, branch))
    }
}

/// Turns git's complaint into an error that says which input was wrong.
fn classify(stderr: &str, url: &str, branch: &str) -> AppError {
    let last = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Cloning into"))
        .collect::<Vec<_>>()
        .join(" | ");
    let has = |s: &str| stderr.contains(s);
    if has("Remote branch") || has("couldn't find remote ref") {
        AppError::NotFound(format!(
            "branch `{branch}` does not exist in {url}: check the branch name"
        ))
    } else if has("does not appear to be a git repository")
        || has("Repository not found")
        || has("not found")
        || has("does not exist")
    {
        AppError::NotFound(format!("no Git repository at {url}: {last}"))
    } else if has("Authentication failed")
        || has("Permission denied")
        || has("could not read Username")
        || has("terminal prompts disabled")
    {
        AppError::PermissionDenied(format!(
            "{url} refused the credentials (give a token or an ssh_key_file): {last}"
        ))
    } else if has("Could not resolve host")
        || has("Connection refused")
        || has("Connection timed out")
        || has("unable to connect")
        || has("Failed to connect")
        || has("Network is unreachable")
        || has("No route to host")
        || has("Could not read from remote repository")
    {
        AppError::Unavailable(format!("cannot reach {url}: {last}"))
    } else {
        AppError::Internal(format!("git failed on {url}: {last}"))
    }
}

/// A shallow clone of `branch` into `dest`, which must not exist.
pub async fn clone(
    url: &str,
    branch: &str,
    creds: &Credentials,
    dest: &Path,
) -> Result<Commit, AppError> {
    let dest_s = dest.to_string_lossy().into_owned();
    run(
        creds,
        None,
        &[
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--single-branch",
            "--no-tags",
            "--branch",
            branch,
            "--",
            url,
            &dest_s,
        ],
        url,
        branch,
    )
    .await?;
    head(dest, url, branch).await
}

/// Fetches `branch` again and moves the checkout to it.
pub async fn pull(
    dir: &Path,
    url: &str,
    branch: &str,
    creds: &Credentials,
) -> Result<Commit, AppError> {
    run(
        creds,
        Some(dir),
        &[
            "fetch",
            "--quiet",
            "--depth",
            "1",
            "--no-tags",
            "origin",
            branch,
        ],
        url,
        branch,
    )
    .await?;
    run(
        creds,
        Some(dir),
        &["reset", "--quiet", "--hard", "FETCH_HEAD"],
        url,
        branch,
    )
    .await?;
    head(dir, url, branch).await
}

/// The files of the checkout that differ from its commit.
pub async fn changed(dir: &Path) -> Result<Vec<String>, AppError> {
    let out = run(
        &Credentials::default(),
        Some(dir),
        &["status", "--porcelain", "--untracked-files=all"],
        "the checkout",
        "",
    )
    .await?;
    Ok(out
        .lines()
        .filter_map(|l| l.get(3..))
        .map(str::to_string)
        .collect())
}

/// Removes files the checkout's commit does not have (browser edits).
pub async fn clean(dir: &Path) -> Result<(), AppError> {
    run(
        &Credentials::default(),
        Some(dir),
        &["clean", "-fdq"],
        "the checkout",
        "",
    )
    .await
    .map(|_| ())
}

async fn head(dir: &Path, url: &str, branch: &str) -> Result<Commit, AppError> {
    let out = run(
        &Credentials::default(),
        Some(dir),
        &["log", "-1", "--format=%H%n%ct%n%s"],
        url,
        branch,
    )
    .await?;
    let mut lines = out.lines();
    let sha = lines.next().unwrap_or_default().to_string();
    let at_ms = lines
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0)
        * 1000;
    Ok(Commit {
        sha,
        at_ms,
        message: lines.next().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_branches_are_checked_before_git_runs() {
        for ok in [
            "https://example.com/a.git",
            "git://127.0.0.1:9418/repo",
            "ssh://git@host/r.git",
            "file:///tmp/r",
            "git@github.com:user/repo.git",
        ] {
            check_url(ok).unwrap();
        }
        for bad in [
            "",
            "/tmp/repo",
            "ftp://x",
            "--upload-pack=evil",
            "https://",
            "a b",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        check_branch("feature/x-1").unwrap();
        for bad in ["", "-x", "a..b", "a b", "x.lock", "a:b"] {
            assert!(check_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_base64_encoded() {
        assert_eq!(base64(b"x-access-token:abc"), "eC1hY2Nlc3MtdG9rZW46YWJj");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn git_errors_name_the_input() {
        let e = classify(
            "warning: Could not find remote branch nope to clone.\nfatal: Remote branch nope not found in upstream origin",
            "u",
            "nope",
        );
        assert!(
            matches!(e, AppError::NotFound(ref m) if m.contains("branch `nope`")),
            "{e:?}"
        );
        let e = classify("fatal: unable to connect to 127.0.0.1:\n127.0.0.1[0: 127.0.0.1]: errno=Connection refused", "u", "b");
        assert!(matches!(e, AppError::Unavailable(_)), "{e:?}");
    }
}
