//! Support for the tests that drive the real Docker engine of this machine:
//! the locally built test image, unique names, cleanup, condition waits.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bollard::models::ContainerSummary;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;

/// Busybox imported from Debian's busybox-static: no registry needed.
pub const TEST_IMAGE: &str = "iarnet-test/busybox:1";

/// Builds the test image once per process (the script is idempotent and
/// holds a file lock, so parallel test binaries are fine).
pub fn ensure_test_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/build-test-image.sh");
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("iarnet-test-image");
        let out = Command::new("sh")
            .arg(&script)
            .arg(TEST_IMAGE)
            .arg(&cache)
            .output()
            .expect("sh runs tests/support/build-test-image.sh");
        assert!(
            out.status.success(),
            "building {TEST_IMAGE} failed (it needs docker, apt-get download, dpkg-deb and flock):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A random suffix that keeps ids of concurrent tests (and runs) apart.
pub fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A client for the assertions (separate from the provider under test).
pub async fn engine() -> Docker {
    Docker::connect_with_local_defaults()
        .expect("a local Docker engine")
        .negotiate_version()
        .await
        .expect("the engine answers /version")
}

/// Every container, in any state, labelled with `key=value`.
pub async fn containers_labelled(docker: &Docker, key: &str, value: &str) -> Vec<ContainerSummary> {
    let filters = std::collections::HashMap::from([("label", vec![format!("{key}={value}")])]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .expect("list containers")
}

/// Removes every container of a provider id when dropped, also when the
/// test panics.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let listed = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=iarnet.provider={}", self.0))
            .output();
        let Ok(listed) = listed else { return };
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

/// Polls `check` until it yields a value; panics naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
