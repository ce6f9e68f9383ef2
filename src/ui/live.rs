//! One Server-Sent Events stream per open page (browsers allow about six
//! HTTP/1.1 connections per origin): it sends the page's fragments again
//! whenever the node's look at itself found a change (and every 2 s for
//! what other nodes changed), only those that differ from what the page
//! has, and a log page's new lines as they come.
//!
//! Back-pressure: each stream has a short queue; a browser that does not
//! keep up fills it and is dropped (the page reconnects and starts over),
//! so a slow client never slows the node. Fragments are rendered once per
//! page and change, whatever the number of clients (the session's CSRF
//! token is put in as the fragment goes out).

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::TaskTracker;

use super::pages::{self, Page};
use super::{Ctx, Dashboard};

/// Streams open at once, at most.
pub const MAX_CLIENTS: usize = 256;
/// Events waiting for one browser, at most, before it is dropped.
pub const QUEUE: usize = 32;
/// Fragments are rendered again at least this often.
pub const REFRESH: Duration = Duration::from_secs(2);
/// A comment line this often keeps proxies from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Stands for the session's CSRF token in shared renders.
pub const CSRF_SLOT: &str = "__iarnet_csrf_slot__";
/// Log lines of a first look; later ones go out in batches this often.
const LOG_TAIL: u32 = 500;
const LOG_BATCH: Duration = Duration::from_millis(200);

type Fragments = Arc<Vec<(&'static str, String)>>;

struct Rendered {
    version: u64,
    at: Instant,
    fragments: Fragments,
}

#[derive(Default)]
pub struct Live {
    cache: Mutex<HashMap<String, Rendered>>,
    clients: AtomicUsize,
    /// Streams dropped because their browser did not keep up.
    pub dropped: AtomicU64,
    tasks: TaskTracker,
}

impl Live {
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

/// Counts a stream for as long as its task runs.
struct Client<'a>(&'a Live);

impl Drop for Client<'_> {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    page: String,
}

pub async fn events(
    State(d): State<Arc<Dashboard>>,
    Extension(ctx): Extension<Ctx>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let Some(page) = Page::parse(&q.page) else {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "page={:?}: not a dashboard page with live updates\n",
                q.page
            ),
        )
            .into_response();
    };
    if d.live.clients.fetch_add(1, Ordering::Relaxed) >= MAX_CLIENTS {
        d.live.clients.fetch_sub(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_CLIENTS} live pages are open on this node already\n"),
        )
            .into_response();
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let stop = d.stop.child_token();
    let task = {
        let d = d.clone();
        async move {
            let live = &d.live;
            let _client = Client(live);
            tokio::select! {
                biased;
                _ = stop.cancelled() => {}
                _ = tx.closed() => {}
                dropped = feed(&d, &ctx, &page, &tx) => {
                    if dropped {
                        live.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    };
    d.live.tasks.spawn(task);
    Sse::new(ReceiverStream::new(rx).map(Ok::<Event, Infallible>))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// Sends a page's updates until the browser goes or falls behind; true
/// when it fell behind.
async fn feed(d: &Dashboard, ctx: &Ctx, page: &Page, tx: &mpsc::Sender<Event>) -> bool {
    if let Page::Logs(id) = page {
        return follow_logs(d, ctx, id, tx).await;
    }
    let mut version = d.recorder.subscribe();
    let mut sent: HashMap<&'static str, u64> = HashMap::new();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let v = *version.borrow_and_update();
        let fragments = rendered(d, ctx, page, v).await;
        for (name, html) in fragments.iter() {
            let mut h = DefaultHasher::new();
            html.hash(&mut h);
            let digest = h.finish();
            if sent.get(name) == Some(&digest) {
                continue;
            }
            let html = html.replace(CSRF_SLOT, &ctx.session.csrf);
            if tx
                .try_send(Event::default().event(*name).data(html))
                .is_err()
            {
                return true;
            }
            sent.insert(name, digest);
        }
        tokio::select! {
            changed = version.changed() => if changed.is_err() { return false },
            _ = tick.tick() => {}
        }
    }
}

/// The page's fragments at this version, rendered once for every client.
async fn rendered(d: &Dashboard, ctx: &Ctx, page: &Page, version: u64) -> Fragments {
    let key = page.key();
    {
        let cache = d.live.cache.lock().expect("render cache lock");
        if let Some(r) = cache.get(&key) {
            if r.version == version && r.at.elapsed() < REFRESH {
                return r.fragments.clone();
            }
        }
    }
    let mut shared_ctx = ctx.clone();
    shared_ctx.session.csrf = CSRF_SLOT.to_string();
    let fragments: Fragments = Arc::new(
        pages::fragments(d, &shared_ctx, page)
            .await
            .into_iter()
            .map(|(n, m)| (n, m.into_string()))
            .collect(),
    );
    let mut cache = d.live.cache.lock().expect("render cache lock");
    if cache.len() > 1024 {
        cache.retain(|_, r| r.at.elapsed() < REFRESH * 5);
    }
    cache.insert(
        key,
        Rendered {
            version,
            at: Instant::now(),
            fragments: fragments.clone(),
        },
    );
    fragments
}

/// A log page: its last lines at once (replacing what the page showed),
/// then new lines in small batches.
async fn follow_logs(d: &Dashboard, ctx: &Ctx, id: &str, tx: &mpsc::Sender<Event>) -> bool {
    use crate::proto::resource::resource_service_server::ResourceService;
    let req = super::request(
        ctx,
        crate::proto::resource::LogsRequest {
            id: id.to_string(),
            tail: LOG_TAIL,
            follow: true,
        },
    );
    let mut stream = match d.resources.logs(req).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            let html = pages::logs::ended(s.message()).into_string();
            let _ = tx.try_send(Event::default().event("log-reset").data(html));
            return false;
        }
    };
    let mut first = true;
    let mut batch = Vec::new();
    loop {
        let next = tokio::time::timeout(LOG_BATCH, stream.next()).await;
        let ended = match next {
            Ok(Some(Ok(line))) => {
                batch.push(line);
                if batch.len() < LOG_TAIL as usize {
                    continue;
                }
                false
            }
            Ok(Some(Err(s))) => {
                batch.push(crate::proto::resource::LogEntry {
                    stderr: true,
                    text: format!("[log stream ended: {}]", s.message()),
                });
                true
            }
            Ok(None) => true,
            Err(_) => false,
        };
        if !batch.is_empty() || first {
            let html = pages::logs::lines(&batch).into_string();
            let name = if first { "log-reset" } else { "log" };
            if tx
                .try_send(Event::default().event(name).data(html))
                .is_err()
            {
                return true;
            }
            first = false;
            batch.clear();
        }
        if ended {
            return false;
        }
    }
}
