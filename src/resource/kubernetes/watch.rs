//! This provider's own pods, followed by a kube-runtime watcher into a
//! reflector store, so `status` and `list` answer from memory instead of a
//! GET or LIST per call.
//!
//! The store answers only while it can be trusted: after a complete list
//! (`InitDone`) and until the next watch error, and never for a pod this
//! provider just wrote until the watch has shown that write (so a `stop`
//! followed by `status` never reads the pod as still running). Otherwise
//! the caller asks the API as before. After an error the watcher is
//! restarted from a fresh list (with backoff): a resumed watch may have
//! missed changes, a fresh list has not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A write the store has not shown yet stops being waited for after this:
/// a relist may have folded it into a later version of the pod.
const PENDING_TTL: Duration = Duration::from_secs(30);
/// The first wait before restarting a failed watch; doubles up to MAX.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff between watch restarts, reset by a complete list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Backoff(Option<Duration>);

impl Backoff {
    pub fn new() -> Backoff {
        Backoff(None)
    }

    /// The wait before the next restart.
    pub fn next_delay(&mut self) -> Duration {
        let d = self
            .0
            .map_or(BACKOFF_MIN, |d| d.saturating_mul(2).min(BACKOFF_MAX));
        self.0 = Some(d);
        d
    }

    pub fn reset(&mut self) {
        self.0 = None;
    }
}

/// A write of this provider's, identified by what the watch will show.
#[derive(Debug, Clone)]
struct Pending {
    /// The pod's resourceVersion in the write's answer.
    version: Option<String>,
    /// The uid of the pod written (a delete shows as a Delete of it).
    uid: Option<String>,
    since: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// Listed completely and no error since: the store holds every change.
    synced: bool,
    /// Pods written by this provider that the store does not show yet.
    pending: HashMap<String, Pending>,
    /// The last watch error, for the log line when it recovers.
    failing: Option<String>,
}

impl State {
    /// Whether `name` has a write the store may not show yet.
    fn is_pending(&mut self, name: &str, now: Instant) -> bool {
        match self.pending.get(name) {
            Some(p) if now.duration_since(p.since) < PENDING_TTL => true,
            Some(_) => {
                self.pending.remove(name);
                false
            }
            None => false,
        }
    }

    fn any_pending(&mut self, now: Instant) -> bool {
        self.pending
            .retain(|_, p| now.duration_since(p.since) < PENDING_TTL);
        !self.pending.is_empty()
    }

    /// Clears the pending write `pod` (seen by the watch) stands for.
    fn seen(&mut self, pod: &Pod, deleted: bool) {
        let Some(name) = pod.metadata.name.as_deref() else {
            return;
        };
        let Some(p) = self.pending.get(name) else {
            return;
        };
        let same_version = p.version.is_some() && p.version == pod.metadata.resource_version;
        let gone = deleted && p.uid.is_some() && p.uid == pod.metadata.uid;
        if same_version || gone {
            self.pending.remove(name);
        }
    }
}

/// The watch over one provider's pods: a store and the task that fills
/// it, cancelled and aborted when this is dropped.
pub(super) struct PodWatch {
    store: Store<Pod>,
    namespace: String,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.cancel.cancel();
        // Drop cannot wait for the task; aborting frees its connection now.
        self.task.abort();
    }
}

impl PodWatch {
    /// Starts watching the pods of `api` (one namespace) that `selector`
    /// picks. Needs a tokio runtime.
    pub fn start(api: Api<Pod>, namespace: &str, selector: &str, provider: &str) -> PodWatch {
        let (store, writer) = reflector::store();
        let state = Arc::new(Mutex::new(State::default()));
        let cancel = CancellationToken::new();
        // resourceVersion=0 without paging, as client-go's informers list:
        // served from the API server's watch cache, not a quorum read.
        let config = watcher::Config {
            page_size: None,
            ..watcher::Config::default().labels(selector).any_semantic()
        };
        let task = tokio::spawn(run(
            api,
            config,
            writer,
            Arc::clone(&state),
            cancel.clone(),
            provider.to_string(),
        ));
        PodWatch {
            store,
            namespace: namespace.to_string(),
            state,
            cancel,
            task,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the store answers now (listed and not failing since).
    pub fn synced(&self) -> bool {
        self.state().synced
    }

    /// The pod `name` as the watch saw it last; None when the store cannot
    /// tell (not synced, a write of it pending, or not there: it may have
    /// been made a moment ago).
    pub fn get(&self, name: &str) -> Option<Arc<Pod>> {
        {
            let mut s = self.state();
            if !s.synced || s.is_pending(name, Instant::now()) {
                return None;
            }
        }
        self.store
            .get(&ObjectRef::new(name).within(&self.namespace))
    }

    /// Every pod in the store; None when it cannot answer for all of them.
    pub fn all(&self) -> Option<Vec<Arc<Pod>>> {
        {
            let mut s = self.state();
            if !s.synced || s.any_pending(Instant::now()) {
                return None;
            }
        }
        Some(self.store.state())
    }

    /// Records that this provider wrote `pod` (created or deleted it): the
    /// store does not answer for it until the watch shows the write.
    pub fn wrote(&self, pod: &Pod) {
        let Some(name) = pod.metadata.name.clone() else {
            return;
        };
        let pending = Pending {
            version: pod.metadata.resource_version.clone(),
            uid: pod.metadata.uid.clone(),
            since: Instant::now(),
        };
        self.state().pending.insert(name, pending);
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Feeds the store until cancelled; restarts the watcher after an error.
async fn run(
    api: Api<Pod>,
    config: watcher::Config,
    mut writer: reflector::store::Writer<Pod>,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
    provider: String,
) {
    let mut backoff = Backoff::new();
    loop {
        let mut events = watcher(api.clone(), config.clone()).boxed();
        let error = loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                next = events.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    writer.apply_watcher_event(&event);
                    if applied(&state, &event, &provider) {
                        backoff.reset();
                    }
                }
                Some(Err(e)) => break explain(&e),
                // A watcher retries forever; an end is a restart too.
                None => break "the watch stream ended".to_string(),
            }
        };
        let delay = backoff.next_delay();
        {
            let mut s = lock(&state);
            s.synced = false;
            let first = s.failing.is_none();
            s.failing = Some(error.clone());
            if first {
                warn!(%provider, %error, retry_in = ?delay,
                    "the pod watch failed; asking the API per call until it recovers");
            } else {
                debug!(%provider, %error, retry_in = ?delay, "the pod watch failed again");
            }
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// A watch error as a log line; a refusal says which permission is missing.
fn explain(e: &watcher::Error) -> String {
    let api = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    match api {
        Some(401 | 403) => format!("{e} (iarnet needs list and watch on pods in its namespace)"),
        _ => e.to_string(),
    }
}

/// Updates the state for an event the store took; true on a complete list.
fn applied(state: &Mutex<State>, event: &Event<Pod>, provider: &str) -> bool {
    let mut s = lock(state);
    match event {
        // A relist: until it is done the store may lack changes.
        Event::Init => s.synced = false,
        Event::InitApply(pod) | Event::Apply(pod) => s.seen(pod, false),
        Event::Delete(pod) => s.seen(pod, true),
        Event::InitDone => {
            s.synced = true;
            if let Some(error) = s.failing.take() {
                info!(%provider, %error, "the pod watch recovered");
            } else {
                debug!(%provider, "the pod watch is synced");
            }
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, uid: &str, version: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {
            "name": name, "namespace": "ns", "uid": uid, "resourceVersion": version}}))
        .expect("pod")
    }

    #[test]
    fn backoff_doubles_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }

    #[test]
    fn a_write_is_pending_until_the_watch_shows_it() {
        let now = Instant::now();
        let mut s = State::default();
        let write = |s: &mut State, version: &str, uid: &str| {
            s.pending.insert(
                "p".into(),
                Pending {
                    version: Some(version.into()),
                    uid: Some(uid.into()),
                    since: now,
                },
            );
        };
        // A create: an older version of the pod does not clear it.
        write(&mut s, "5", "u1");
        s.seen(&pod("p", "u1", "4"), false);
        assert!(s.is_pending("p", now));
        s.seen(&pod("p", "u1", "5"), false);
        assert!(!s.is_pending("p", now));

        // A delete: the Delete of that pod clears it; the Delete of an
        // earlier pod of the same name does not.
        write(&mut s, "9", "u2");
        s.seen(&pod("p", "u1", "8"), true);
        assert!(s.any_pending(now));
        s.seen(&pod("p", "u2", "10"), true);
        assert!(!s.any_pending(now));

        // One the watch never shows stops counting after a while.
        write(&mut s, "12", "u3");
        assert!(s.is_pending("p", now + PENDING_TTL / 2));
        assert!(!s.is_pending("p", now + PENDING_TTL));
        assert!(s.pending.is_empty());
    }
}
