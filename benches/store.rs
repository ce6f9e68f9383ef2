//! Store benchmark: how long a deploy takes to be acknowledged through the
//! manager when its records are committed to redb (fsync per commit)
//! against the in-memory twin, with the in-memory provider so that only
//! the store differs; acknowledgements per second and p99 at 1, 16 and 200
//! concurrent deploys, group commit against one commit per write (the
//! store before group commit); and the redb file's size per 10,000 records.
//!
//! `cargo bench --bench store`            full run
//! `cargo bench --bench store -- --quick` fewer deploys
//! `cargo bench --bench store -- --concurrent` only the concurrency table
//!
//! Figures are printed with the ratio against the baseline measured in the
//! same run; nothing is asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iarnet::placement::manager::PlaceOptions;
use iarnet::placement::{Candidate, Discovery, Manager, ProviderCaller, Strategy};
use iarnet::proto::peer::ProviderInfo;
use iarnet::resource::memory::MemoryProvider;
use iarnet::resource::{DeploySpec, ProgressSink, Resources, Tier};
use iarnet::store::{MemoryStore, RedbStore, Store};

struct NoMesh;

impl Discovery for NoMesh {
    fn discovered(&self) -> Vec<Candidate> {
        Vec::new()
    }
    fn publish(&self, _: Vec<ProviderInfo>) {}
    fn caller(&self) -> Arc<dyn ProviderCaller> {
        unreachable!("no remote providers in this benchmark")
    }
    fn version(&self) -> u64 {
        0
    }
}

fn spec(i: usize, run: &str) -> DeploySpec {
    DeploySpec {
        request_id: format!("{run}-request-{i:06}"),
        name: format!("bench-{i}"),
        image: "iarnet-test/busybox:1".into(),
        resources: Resources {
            cpu_millis: 10,
            memory_bytes: 4 << 20,
            gpus: 0,
            storage_bytes: 0,
        },
        ..Default::default()
    }
}

async fn manager(store: Arc<dyn Store>) -> anyhow::Result<Manager> {
    let m = Manager::open("bench", Arc::new(NoMesh), Strategy::Spread, false, 7, store)?;
    let total = Resources {
        cpu_millis: u64::MAX / 4,
        memory_bytes: u64::MAX / 4,
        gpus: 0,
        storage_bytes: u64::MAX,
    };
    m.add_provider(
        Arc::new(MemoryProvider::new(
            "bench/memory",
            total,
            Default::default(),
        )),
        Tier::Internal,
    )
    .await?;
    Ok(m)
}

/// Acknowledgement latencies of `n` sequential deploys, sorted.
async fn deploys(m: &Manager, n: usize, run: &str) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        m.deploy(spec(i, run), PlaceOptions::default(), ProgressSink::none())
            .await?;
        out.push(started.elapsed());
    }
    out.sort();
    Ok(out)
}

/// `total` deploys by `concurrency` callers at once: acks/s and sorted latencies.
async fn concurrent(
    m: &Arc<Manager>,
    concurrency: usize,
    total: usize,
    run: &str,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let started = Instant::now();
    let callers: Vec<_> = (0..concurrency)
        .map(|c| {
            let (m, run) = (m.clone(), format!("{run}-c{c}"));
            tokio::spawn(async move { deploys(&m, total / concurrency, &run).await })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for c in callers {
        all.extend(c.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    Ok((all.len() as f64 / secs, all))
}

/// Group commit against one commit per write, each level measured on both
/// in alternation; prints the table.
async fn concurrency_table(quick: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let batched_store = Arc::new(RedbStore::open_batching(
        &dir.path().join("batched.redb"),
        iarnet::store::redb::MAX_WRITES_PER_COMMIT,
    )?);
    let batched = Arc::new(manager(batched_store.clone()).await?);
    let single = Arc::new(
        manager(Arc::new(RedbStore::open_batching(
            &dir.path().join("single.redb"),
            1,
        )?))
        .await?,
    );
    println!("\nconcurrent deploys through the Manager on redb: group commit against one commit per write");
    println!(
        "{:>11} {:>10} {:>14} {:>14} {:>9} {:>14} {:>14} {:>13}",
        "concurrent",
        "deploys",
        "acks/s single",
        "acks/s group",
        "ratio",
        "p99 single",
        "p99 group",
        "writes/commit"
    );
    let stats = batched_store.commit_stats();
    for concurrency in [1, 16, 200] {
        let total = match (quick, concurrency) {
            (true, 1) => 100,
            (true, _) => 400,
            (false, 1) => 400,
            (false, _) => 2000,
        };
        let (commits, writes) = (stats.commits(), stats.writes());
        let (mut s_rate, mut g_rate) = (Vec::new(), Vec::new());
        let (mut s_lat, mut g_lat) = (Vec::new(), Vec::new());
        for round in 0..2 {
            let run = format!("k{concurrency}-r{round}");
            let (r, l) = concurrent(&single, concurrency, total / 2, &run).await?;
            s_rate.push(r);
            s_lat.extend(l);
            let (r, l) = concurrent(&batched, concurrency, total / 2, &run).await?;
            g_rate.push(r);
            g_lat.extend(l);
        }
        s_lat.sort();
        g_lat.sort();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let per_commit =
            (stats.writes() - writes) as f64 / (stats.commits() - commits).max(1) as f64;
        println!(
            "{:>11} {:>10} {:>14.0} {:>14.0} {:>8.1}x {:>11.2} ms {:>11.2} ms {:>13.1}",
            concurrency,
            g_lat.len(),
            mean(&s_rate),
            mean(&g_rate),
            mean(&g_rate) / mean(&s_rate),
            us(pct(&s_lat, 0.99)) / 1000.0,
            us(pct(&g_lat, 0.99)) / 1000.0,
            per_commit,
        );
    }
    Ok(())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--concurrent") {
        return concurrency_table(quick).await;
    }
    let n = if quick { 200 } else { 1000 };
    let dir = tempfile::tempdir()?;

    let memory = manager(Arc::new(MemoryStore::new())).await?;
    let redb = RedbStore::open_dir(dir.path())?;
    let path = redb.path().to_path_buf();
    let durable = manager(Arc::new(redb)).await?;

    // Warm both, then measure alternately so drift hits both alike.
    deploys(&memory, 20, "warm").await?;
    deploys(&durable, 20, "warm").await?;
    let mut mem_all = Vec::new();
    let mut redb_all = Vec::new();
    for round in 0..4 {
        let run = format!("r{round}");
        mem_all.extend(deploys(&memory, n / 4, &run).await?);
        redb_all.extend(deploys(&durable, n / 4, &run).await?);
    }
    mem_all.sort();
    redb_all.sort();
    let records = 20 + n / 4 * 4;
    drop(durable);
    let size_through_manager = std::fs::metadata(&path)?.len();

    // 10,000 records as the manager writes them, one commit each.
    let sizes = tempfile::tempdir()?;
    let store = RedbStore::open_dir(sizes.path())?;
    // A record as the manager leaves it after a deploy: the template.
    let twin = Arc::new(MemoryStore::new());
    manager(twin.clone())
        .await?
        .deploy(
            spec(0, "size"),
            PlaceOptions::default(),
            ProgressSink::none(),
        )
        .await?;
    let rec = twin.deployments()?.remove(0);
    let started = Instant::now();
    for i in 0..10_000 {
        let mut r = rec.clone();
        r.request_id = format!("size-request-{i:06}");
        r.id = format!("iarnet-size-request-{i:06}");
        store.put_deployment(&r)?;
    }
    let write_10k = started.elapsed();
    let size_10k = std::fs::metadata(store.path())?.len();
    let one_record = serde_json::to_vec(&rec)?.len();

    println!("\niarnet store benchmark: deploy acknowledgement through the Manager (in-memory provider), {} deploys each, interleaved", mem_all.len());
    println!(
        "{:<28} {:>12} {:>12} {:>12}",
        "store", "p50 (us)", "p99 (us)", "mean (us)"
    );
    for (name, v) in [
        ("in-memory (baseline)", &mem_all),
        ("redb (fsync per commit)", &redb_all),
    ] {
        let mean = v.iter().map(|d| us(*d)).sum::<f64>() / v.len() as f64;
        println!(
            "{:<28} {:>12.1} {:>12.1} {:>12.1}",
            name,
            us(pct(v, 0.5)),
            us(pct(v, 0.99)),
            mean
        );
    }
    println!(
        "ratio redb / in-memory: p50 x{:.1}, p99 x{:.1}",
        us(pct(&redb_all, 0.5)) / us(pct(&mem_all, 0.5)),
        us(pct(&redb_all, 0.99)) / us(pct(&mem_all, 0.99))
    );
    println!(
        "redb file after {records} deploys through the manager (2 commits each): {:.1} MiB ({:.1} MiB per 10,000)",
        size_through_manager as f64 / (1 << 20) as f64,
        size_through_manager as f64 / (1 << 20) as f64 * 10_000.0 / records as f64
    );
    println!(
        "redb file with 10,000 deployment records (one commit each, {one_record} B of JSON per record): {:.1} MiB, written in {:.1} s",
        size_10k as f64 / (1 << 20) as f64,
        write_10k.as_secs_f64()
    );
    concurrency_table(quick).await
}
