//! What the deploys this node runs for other nodes report while they run:
//! `CallProvider` is unary, so the calling node polls for the progress of
//! its deploy with a cursor while the deploy call itself is in flight.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::resource::Progress;

/// Events a journal keeps; a poller further behind learns how many it lost.
const MAX_EVENTS: usize = 512;
/// Journals kept at once; the oldest finished ones go first.
const MAX_JOURNALS: usize = 1024;
/// How long a finished deploy's journal stays readable for a last poll.
const KEEP_FINISHED: Duration = Duration::from_secs(60);

/// A deploy's journal, shared by the deploy that writes it and the polls
/// that read it.
pub type SharedJournal = Arc<Mutex<Journal>>;

/// The journals of deploys in flight and recently finished, by provider
/// and request id.
#[derive(Default)]
pub struct Journals {
    inner: Mutex<HashMap<(String, String), SharedJournal>>,
}

/// One deploy's events, numbered from 0 in the order they happened.
#[derive(Debug, Default)]
pub struct Journal {
    events: VecDeque<Progress>,
    /// The number of the first event still kept.
    base: u64,
    /// Events up to here have been handed to a poller: not rewritten.
    read: u64,
    finished: Option<Instant>,
}

/// What a poll past `skip` finds.
#[derive(Debug, Default, PartialEq)]
pub struct Page {
    pub events: Vec<Progress>,
    /// The cursor of the next poll.
    pub next: u64,
    /// Events dropped before the poller read them.
    pub lost: u64,
    /// The deploy has returned: nothing more will come.
    pub done: bool,
    /// Whether this node has heard of the deploy at all (yet).
    pub known: bool,
}

impl Journals {
    /// A fresh journal for a deploy that starts now (a retry with the same
    /// request id starts over).
    pub fn start(&self, provider: &str, request_id: &str) -> SharedJournal {
        let mut all = self.inner.lock().expect("journals lock");
        let now = Instant::now();
        all.retain(|_, j| {
            let j = j.lock().expect("journal lock");
            j.finished
                .is_none_or(|t| now.duration_since(t) < KEEP_FINISHED)
        });
        if all.len() >= MAX_JOURNALS {
            let oldest = all
                .iter()
                .filter_map(|(k, j)| j.lock().expect("journal lock").finished.map(|t| (t, k)))
                .min()
                .map(|(_, k)| k.clone());
            if let Some(k) = oldest {
                all.remove(&k);
            }
        }
        let journal = Arc::new(Mutex::new(Journal::default()));
        all.insert(
            (provider.to_string(), request_id.to_string()),
            journal.clone(),
        );
        journal
    }

    /// The events of a deploy past `skip`.
    pub fn read(&self, provider: &str, request_id: &str, skip: u64) -> Page {
        let key = (provider.to_string(), request_id.to_string());
        let Some(journal) = self.inner.lock().expect("journals lock").get(&key).cloned() else {
            return Page::default();
        };
        let mut j = journal.lock().expect("journal lock");
        j.read_from(skip)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().len()
    }
}

impl Journal {
    /// Records an event. A pull step that only moves the byte count of the
    /// layer step before it replaces that step unless a poller has read
    /// it: a pull reports every chunk, a poller wants the latest.
    pub fn push(&mut self, event: Progress) {
        let end = self.base + self.events.len() as u64;
        if end > self.read {
            if let (
                Some(Progress::Pull {
                    layer: last_layer,
                    status: last_status,
                    ..
                }),
                Progress::Pull { layer, status, .. },
            ) = (self.events.back(), &event)
            {
                if last_layer == layer && last_status == status {
                    *self.events.back_mut().expect("a last event") = event;
                    return;
                }
            }
        }
        self.events.push_back(event);
        if self.events.len() > MAX_EVENTS {
            self.events.pop_front();
            self.base += 1;
        }
    }

    /// The deploy returned: pollers get what is left, then `done`.
    pub fn finish(&mut self) {
        self.finished = Some(Instant::now());
    }

    fn read_from(&mut self, skip: u64) -> Page {
        let end = self.base + self.events.len() as u64;
        let from = skip.clamp(self.base, end);
        let events = self
            .events
            .iter()
            .skip((from - self.base) as usize)
            .cloned()
            .collect();
        self.read = self.read.max(end);
        Page {
            events,
            next: end,
            lost: self.base.saturating_sub(skip),
            done: self.finished.is_some(),
            known: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::DeployState;

    fn pull(layer: &str, status: &str, current: u64) -> Progress {
        Progress::Pull {
            layer: layer.into(),
            status: status.into(),
            current,
            total: 100,
        }
    }

    #[test]
    fn a_poller_reads_each_event_once_and_then_done() {
        let js = Journals::default();
        assert!(!js.read("p", "r", 0).known, "not started yet");
        let j = js.start("p", "r");
        j.lock()
            .unwrap()
            .push(Progress::State(DeployState::Pulling));
        j.lock().unwrap().push(pull("l1", "Downloading", 10));
        let first = js.read("p", "r", 0);
        assert_eq!(first.events.len(), 2);
        assert_eq!((first.next, first.done, first.known), (2, false, true));
        j.lock().unwrap().push(pull("l1", "Downloading", 60));
        j.lock().unwrap().finish();
        let second = js.read("p", "r", first.next);
        assert_eq!(second.events, vec![pull("l1", "Downloading", 60)]);
        assert_eq!((second.next, second.done, second.lost), (3, true, 0));
        assert!(js.read("p", "r", 3).events.is_empty());
    }

    #[test]
    fn unread_byte_counts_of_one_layer_step_fold_into_the_latest() {
        let js = Journals::default();
        let j = js.start("p", "r");
        for n in 0..100 {
            j.lock().unwrap().push(pull("l1", "Downloading", n));
        }
        j.lock().unwrap().push(pull("l1", "Pull complete", 0));
        let page = js.read("p", "r", 0);
        assert_eq!(
            page.events,
            vec![
                pull("l1", "Downloading", 99),
                pull("l1", "Pull complete", 0)
            ]
        );
    }

    #[test]
    fn a_poller_far_behind_learns_how_many_it_lost() {
        let js = Journals::default();
        let j = js.start("p", "r");
        for n in 0..(MAX_EVENTS as u64 + 10) {
            j.lock().unwrap().push(pull(&format!("l{n}"), "Waiting", 0));
        }
        let page = js.read("p", "r", 0);
        assert_eq!((page.lost, page.events.len()), (10, MAX_EVENTS));
        assert_eq!(page.next, MAX_EVENTS as u64 + 10);
    }

    #[test]
    fn finished_journals_make_room_for_new_deploys() {
        let js = Journals::default();
        for n in 0..MAX_JOURNALS + 5 {
            let j = js.start("p", &format!("r{n}"));
            j.lock().unwrap().finish();
        }
        assert_eq!(js.len(), MAX_JOURNALS);
        assert!(js.read("p", &format!("r{}", MAX_JOURNALS + 4), 0).known);
    }
}
