//! A minimal image registry (the v2 pull API only) on loopback, so tests
//! can make the real engine pull with no registry on the machine. It serves
//! one image: a local image as `docker save` writes it, plus one layer of
//! the test's own, so the engine has something to download.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Response, StatusCode, Uri};
use axum::Router;
use bollard::Docker;
use futures::StreamExt;
use serde_json::{json, Value};

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
// The engine detects an uncompressed layer behind this type and reads it.
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A registry serving `name:tag` until dropped.
pub struct Registry {
    pub addr: SocketAddr,
    /// The digest of the layer the engine must download.
    pub new_layer: String,
    task: tokio::task::JoinHandle<()>,
}

impl Registry {
    /// The image reference the engine pulls.
    pub fn image(&self, name: &str, tag: &str) -> String {
        format!("{}/{name}:{tag}", self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn sha256(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A layer holding `/pulled.txt` of `size` bytes, different on every run.
fn own_layer(size: usize) -> Vec<u8> {
    let content: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "pulled.txt", content.as_slice())
        .expect("tar in memory");
    b.into_inner().expect("tar in memory")
}

/// Serves `base` (a local image) with one more layer of `extra_bytes`
/// under any repository name and tag.
pub async fn serve(docker: &Docker, base: &str, extra_bytes: usize) -> Registry {
    let mut saved = Vec::new();
    let mut export = docker.export_image(base);
    while let Some(chunk) = export.next().await {
        saved.extend_from_slice(&chunk.expect("docker save of the base image"));
    }
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(saved.as_slice());
    for entry in archive.entries().expect("a saved image is a tar") {
        let mut entry = entry.expect("a tar entry");
        let path = entry.path().expect("a path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read a tar entry");
        files.insert(path, bytes);
    }
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).expect("manifest.json");
    let mut config: Value =
        serde_json::from_slice(&files[manifest[0]["Config"].as_str().expect("Config")])
            .expect("the image config");
    let mut layers: Vec<Vec<u8>> = manifest[0]["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| files[l.as_str().expect("a layer path")].clone())
        .collect();
    layers.push(own_layer(extra_bytes));
    let new_layer = sha256(layers.last().expect("a layer"));
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("rootfs.diff_ids")
        .push(json!(new_layer));
    if let Some(history) = config["history"].as_array_mut() {
        history.push(json!({"created_by": "iarnet test registry"}));
    }
    let config = serde_json::to_vec(&config).expect("json");

    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    let config_digest = sha256(&config);
    let layer_refs: Vec<Value> = layers
        .iter()
        .map(|l| json!({"mediaType": LAYER_TYPE, "size": l.len(), "digest": sha256(l)}))
        .collect();
    let image_manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "size": config.len(), "digest": config_digest},
        "layers": layer_refs,
    }))
    .expect("json");
    blobs.insert(config_digest, config);
    for l in layers {
        blobs.insert(sha256(&l), l);
    }
    let manifest_digest = sha256(&image_manifest);
    let served = Arc::new((image_manifest, manifest_digest, blobs));

    let app = Router::new().fallback(move |method: Method, uri: Uri| {
        let served = served.clone();
        async move {
            let (manifest, digest, blobs) = &*served;
            let path = uri.path();
            let reply = |status: StatusCode, kind: &str, body: Vec<u8>, digest: &str| {
                let len = body.len();
                let body = if method == Method::HEAD {
                    Body::empty()
                } else {
                    Body::from(body)
                };
                Response::builder()
                    .status(status)
                    .header(header::CONTENT_TYPE, kind)
                    .header(header::CONTENT_LENGTH, len)
                    .header("Docker-Content-Digest", digest)
                    .header("Docker-Distribution-API-Version", "registry/2.0")
                    .body(body)
                    .expect("a response")
            };
            if path == "/v2/" || path == "/v2" {
                reply(StatusCode::OK, "application/json", b"{}".to_vec(), "")
            } else if path.contains("/manifests/") {
                reply(StatusCode::OK, MANIFEST_TYPE, manifest.clone(), digest)
            } else if let Some((_, d)) = path.split_once("/blobs/") {
                match blobs.get(d) {
                    Some(b) => reply(StatusCode::OK, "application/octet-stream", b.clone(), d),
                    None => reply(StatusCode::NOT_FOUND, "text/plain", b"no blob".to_vec(), ""),
                }
            } else {
                reply(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    b"no route".to_vec(),
                    "",
                )
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("an address");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Registry {
        addr,
        new_layer,
        task,
    }
}
