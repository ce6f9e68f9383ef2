//! Field-by-field checks of deploy specs, before anything is reserved.

use crate::mesh::record::StableHasher;

use super::error::ResourceError;
use super::labels;
use super::types::DeploySpec;

const MAX_CPU_MILLIS: u64 = 1024 * 1000;
const MAX_MEMORY: u64 = 16 << 40;
const MAX_GPUS: u32 = 64;
const MAX_LIST: usize = 256;
const MAX_TEXT: usize = 4096;

/// The deployment id, and provider-side name, of the deployment made for
/// `request_id`: the same request always maps to the same name, which is
/// what makes deploys idempotent across retries and restarts. Valid as a
/// Docker container name and as a Kubernetes object name.
pub fn deployment_id(request_id: &str) -> String {
    format!("iarnet-{}", stable_hex(request_id))
}

/// A stable 16-hex-digit hash of `s`, the same on every node and release.
pub fn stable_hex(s: &str) -> String {
    let h = StableHasher::new().bytes(s.as_bytes()).finish();
    format!("{h:016x}")
}

/// Checks every field; the first problem is returned with its field name.
pub fn validate(spec: &DeploySpec) -> Result<(), ResourceError> {
    if spec.request_id.is_empty() {
        return Err(ResourceError::invalid(
            "request_id",
            "is empty: give every deploy a unique id (a UUID) so that retries are safe",
        ));
    }
    if spec.request_id.len() > 128 || spec.request_id.chars().any(char::is_control) {
        return Err(ResourceError::invalid(
            "request_id",
            "must be at most 128 printable characters",
        ));
    }
    check_image(&spec.image)?;
    let r = &spec.resources;
    if r.cpu_millis == 0 || r.cpu_millis > MAX_CPU_MILLIS {
        return Err(ResourceError::invalid(
            "cpu",
            format!(
                "must be between 1m and {} cores (e.g. \"500m\" or \"2\")",
                MAX_CPU_MILLIS / 1000
            ),
        ));
    }
    if r.memory_bytes < (4 << 20) || r.memory_bytes > MAX_MEMORY {
        return Err(ResourceError::invalid(
            "memory",
            "must be between 4Mi and 16Ti (e.g. \"256Mi\")",
        ));
    }
    if r.gpus > MAX_GPUS {
        return Err(ResourceError::invalid(
            "gpu",
            format!("at most {MAX_GPUS} GPUs per deployment"),
        ));
    }
    if spec.gpu_model.is_some() && r.gpus == 0 {
        return Err(ResourceError::invalid(
            "gpu_model",
            "is set but gpu is 0: ask for at least one GPU",
        ));
    }
    if spec.command.len() > MAX_LIST || spec.args.len() > MAX_LIST {
        return Err(ResourceError::invalid(
            "command",
            format!("at most {MAX_LIST} command and {MAX_LIST} args entries"),
        ));
    }
    for (i, a) in spec.command.iter().chain(&spec.args).enumerate() {
        if a.len() > MAX_TEXT {
            return Err(ResourceError::invalid(
                "args",
                format!("entry {i} is longer than {MAX_TEXT} bytes"),
            ));
        }
    }
    if spec.env.len() > MAX_LIST {
        return Err(ResourceError::invalid(
            "env",
            format!("at most {MAX_LIST} variables"),
        ));
    }
    for (k, v) in &spec.env {
        let mut chars = k.chars();
        let ok_first = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !ok_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || k.len() > 256 {
            return Err(ResourceError::invalid(
                &format!("env.{k}"),
                "names must match [A-Za-z_][A-Za-z0-9_]*",
            ));
        }
        if v.len() > MAX_TEXT {
            return Err(ResourceError::invalid(
                &format!("env.{k}"),
                format!("value longer than {MAX_TEXT} bytes"),
            ));
        }
    }
    for (i, p) in spec.ports.iter().enumerate() {
        if p.container == 0 {
            return Err(ResourceError::invalid(
                &format!("ports[{i}].container"),
                "must be between 1 and 65535",
            ));
        }
    }
    for (k, v) in spec.labels.iter().chain(&spec.required_labels) {
        if k.is_empty() || k.len() > 253 || v.len() > 253 {
            return Err(ResourceError::invalid(
                &format!("labels.{k}"),
                "keys must be 1-253 bytes and values at most 253",
            ));
        }
        if k.starts_with(labels::RESERVED_PREFIX) {
            return Err(ResourceError::invalid(
                &format!("labels.{k}"),
                "the iarnet. prefix is reserved for iarnet's own labels",
            ));
        }
    }
    if spec.name.len() > 63 {
        return Err(ResourceError::invalid("name", "at most 63 characters"));
    }
    Ok(())
}

/// A Docker image reference: `[registry/]path[:tag][@digest]`.
fn check_image(image: &str) -> Result<(), ResourceError> {
    let bad = |why: &str| ResourceError::invalid("image", format!("{image:?} {why}"));
    if image.is_empty() {
        return Err(bad("is empty: name an image such as \"busybox:1.36\""));
    }
    if image.len() > 255 {
        return Err(bad("is longer than 255 characters"));
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        let ok = d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty() && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !ok {
            return Err(bad("has a malformed digest (expected @sha256:<hex>)"));
        }
    }
    // A tag follows the last ':' that comes after the last '/'.
    let (path, tag) = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(bad(
                "has an invalid tag (letters, digits, '.', '_', '-'; at most 128)",
            ));
        }
    }
    let mut parts = path.split('/').peekable();
    let first = parts.peek().copied().unwrap_or("");
    let has_registry =
        path.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    for (i, part) in path.split('/').enumerate() {
        if i == 0 && has_registry {
            continue;
        }
        let ok = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(bad("is not a valid image name (lowercase letters, digits and separators, e.g. \"library/busybox:1.36\")"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::types::Resources;

    fn spec() -> DeploySpec {
        DeploySpec {
            request_id: "r1".into(),
            image: "busybox:1.36".into(),
            resources: Resources {
                cpu_millis: 100,
                memory_bytes: 64 << 20,
                gpus: 0,
                storage_bytes: 0,
            },
            ..Default::default()
        }
    }

    fn field_of(s: &DeploySpec) -> String {
        match validate(s).unwrap_err() {
            ResourceError::InvalidSpec { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn good_specs_pass() {
        for image in [
            "busybox",
            "busybox:1.36",
            "registry.local:5000/team/app:v1.2-rc_3",
            "localhost/a/b",
            "app@sha256:0123456789abcdef0123456789abcdef",
        ] {
            let s = DeploySpec {
                image: image.into(),
                ..spec()
            };
            assert!(validate(&s).is_ok(), "{image}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(
            field_of(&DeploySpec {
                request_id: "".into(),
                ..spec()
            }),
            "request_id"
        );
        for image in [
            "",
            "Busybox",
            "busybox:",
            "a//b",
            "busybox:bad tag",
            "x@sha256:zz",
        ] {
            assert_eq!(
                field_of(&DeploySpec {
                    image: image.into(),
                    ..spec()
                }),
                "image",
                "{image}"
            );
        }
        let mut s = spec();
        s.resources.cpu_millis = 0;
        assert_eq!(field_of(&s), "cpu");
        let mut s = spec();
        s.resources.memory_bytes = 1;
        assert_eq!(field_of(&s), "memory");
        let mut s = spec();
        s.env.insert("1BAD".into(), "x".into());
        assert_eq!(field_of(&s), "env.1BAD");
        let mut s = spec();
        s.ports.push(crate::resource::types::PortSpec {
            container: 0,
            host: 0,
            udp: false,
        });
        assert_eq!(field_of(&s), "ports[0].container");
        let mut s = spec();
        s.labels.insert("iarnet.request".into(), "x".into());
        assert_eq!(field_of(&s), "labels.iarnet.request");
        let s = DeploySpec {
            gpu_model: Some("H100".into()),
            ..spec()
        };
        assert_eq!(field_of(&s), "gpu_model");
    }

    #[test]
    fn keys_are_stable_and_valid_names() {
        let k = deployment_id("req-1");
        assert_eq!(k, deployment_id("req-1"));
        assert_ne!(k, deployment_id("req-2"));
        assert!(
            k.len() <= 63
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
