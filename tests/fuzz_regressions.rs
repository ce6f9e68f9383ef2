//! Replays the fuzz regression corpus (`fuzz/regressions/<target>/`) through
//! the same harnesses the fuzz targets run, so a fixed crash stays fixed on
//! the stable toolchain without cargo-fuzz.

use std::path::PathBuf;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    // An empty folder would make this test pass while testing nothing.
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    for file in &files {
        let data = std::fs::read(file).expect("a readable regression input");
        eprintln!("replaying {}", file.display());
        harness(&data);
    }
}

#[test]
fn gossip_messages_corpus_replays() {
    replay("gossip_messages", iarnet::fuzz::gossip_messages);
}

#[test]
fn call_provider_payload_corpus_replays() {
    replay("call_provider_payload", iarnet::fuzz::call_provider_payload);
}
