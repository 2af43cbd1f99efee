//! [`Wakeups`]: the store's wake-ups dealt out to remote workers' event streams (`GET /workers/{id}/events`)
//! rather than broadcast to every one.
//!
//! Why: a new task is one task. Broadcast to a fleet of a thousand idle workers, its `task_available` made every
//! one of them claim at once: measured with 1,000 workers and 50 tasks/s, about one claim per idle worker was
//! always in flight, nearly all finding nothing, and heartbeats queued behind them for the server's database
//! connections (p99 4.8 s). So each `task_available` goes to at most [`FANOUT`] streams of that backend type,
//! round-robin, workers last seen idle first; a woken worker counts as busy until its next claim or heartbeat
//! says otherwise, so the next task wakes someone else. Cancel requests and `lagged` still go to every stream
//! (they are rare, and only the worker running the task acts on a cancel).
//!
//! One wake-up may stand for many tasks (a batch of creates is one notification), so a claim that got all it
//! asked for passes the wake-up on ([`Wakeups::pass_on`]): two more workers look, and so on until claims come
//! back short. A burst of work spreads over the idle fleet in a few round trips, at most two wake-ups per task.
//!
//! Nothing depends on a wake-up arriving: a worker that was not woken finds the task at its next poll, so
//! dealing fewer wake-ups trades no correctness, only the wasted claims.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aiopslab_core::{StoreEvent, WorkerQueue};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How many streams one `task_available` wakes: more than one, so a woken worker that just filled its last slot
/// (or lost the race) does not leave the task to the next poll.
pub const FANOUT: usize = 2;

/// Wake-ups a stream has not read yet, at most; a stream further behind misses wake-ups (polling covers them).
const STREAM_BUFFER: usize = 64;

/// What a stream is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A store event for this stream.
    Store(StoreEvent),
    /// The server fell behind the store by this many events: check the queue.
    Lagged(u64),
}

/// Deals the store's events to the open event streams (see the module docs).
pub struct Wakeups {
    source: Arc<dyn WorkerQueue>,
    dispatch: Mutex<Dispatch>,
}

#[derive(Default)]
struct Dispatch {
    listeners: Vec<Listener>,
    next_id: u64,
    /// Where the round-robin goes on from.
    cursor: usize,
    /// Workers whose last claim or heartbeat said they were idle (`true`) or busy (`false`).
    idle: HashMap<String, bool>,
    /// The task reading the store's events runs.
    pumping: bool,
}

struct Listener {
    id: u64,
    worker_id: String,
    /// `None`: any backend type (the worker was not known when it connected).
    backend_type: Option<String>,
    sender: mpsc::Sender<Wake>,
}

/// One open stream's wake-ups; dropping it closes the stream's place in the deal.
pub(crate) struct Subscription {
    /// The stream's wake-ups, in order.
    pub receiver: mpsc::Receiver<Wake>,
    wakeups: Arc<Wakeups>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.wakeups.lock().listeners.retain(|listener| listener.id != self.id);
    }
}

impl Wakeups {
    /// Deals the events of `source` (nothing, if it pushes none).
    pub fn new(source: Arc<dyn WorkerQueue>) -> Self {
        Self {
            source,
            dispatch: Mutex::new(Dispatch::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Dispatch> {
        // Every update leaves the dispatch consistent: a panic mid-way loses at most one wake-up.
        self.dispatch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A stream for `worker_id` (serving `backend_type`, when known); `None` when the store pushes nothing. Starts
    /// reading the store's events on the first call, until `shutdown` fires.
    pub(crate) fn listen(
        self: &Arc<Self>,
        worker_id: &str,
        backend_type: Option<String>,
        shutdown: &CancellationToken,
    ) -> Option<Subscription> {
        let start = {
            let dispatch = self.lock();
            !dispatch.pumping
        };
        if start {
            let events = self.source.subscribe()?;
            let mut dispatch = self.lock();
            if !dispatch.pumping {
                dispatch.pumping = true;
                tokio::spawn(Arc::clone(self).pump(events, shutdown.clone()));
            }
        }
        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let mut dispatch = self.lock();
        dispatch.next_id += 1;
        let id = dispatch.next_id;
        dispatch.listeners.push(Listener {
            id,
            worker_id: worker_id.to_owned(),
            backend_type,
            sender,
        });
        Some(Subscription {
            receiver,
            wakeups: Arc::clone(self),
            id,
        })
    }

    /// A claim for `backend_type` got every task it asked for, so more may be pending: wake the next streams
    /// (see the module docs).
    pub fn pass_on(&self, backend_type: &str) {
        let wake = Wake::Store(StoreEvent::TaskAvailable {
            backend_type: backend_type.to_owned(),
        });
        self.wake_some(backend_type, &wake);
    }

    /// True while `worker_id` holds an event stream open: it is woken when work arrives and claims by itself.
    pub fn is_listening(&self, worker_id: &str) -> bool {
        self.lock()
            .listeners
            .iter()
            .any(|listener| listener.worker_id == worker_id)
    }

    /// Records what a worker's claim or heartbeat said: idle (it would take work) or busy.
    pub fn set_idle(&self, worker_id: &str, idle: bool) {
        let mut dispatch = self.lock();
        // Only workers with an open stream are remembered (the map stays as small as the fleet that listens).
        if dispatch
            .listeners
            .iter()
            .any(|listener| listener.worker_id == worker_id)
        {
            dispatch.idle.insert(worker_id.to_owned(), idle);
        } else {
            dispatch.idle.remove(worker_id);
        }
    }

    /// Reads the store's events and deals them until the store or the server stops.
    async fn pump(
        self: Arc<Self>,
        mut events: tokio::sync::broadcast::Receiver<StoreEvent>,
        shutdown: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                event = events.recv() => event,
            };
            match event {
                Ok(event) => self.deal(event),
                Err(RecvError::Lagged(missed)) => self.to_all(&Wake::Lagged(missed)),
                Err(RecvError::Closed) => break,
            }
        }
        let mut dispatch = self.lock();
        dispatch.pumping = false;
        // Closing every stream's channel ends the streams; their workers reconnect (and poll meanwhile).
        dispatch.listeners.clear();
    }

    /// Sends one store event where it belongs (see the module docs).
    fn deal(&self, event: StoreEvent) {
        match &event {
            StoreEvent::TaskAvailable { backend_type } => self.wake_some(backend_type, &Wake::Store(event.clone())),
            _ => self.to_all(&Wake::Store(event)),
        }
    }

    fn to_all(&self, wake: &Wake) {
        for listener in &self.lock().listeners {
            // A full stream misses it: its worker's polling and heartbeats cover what it says.
            let _ = listener.sender.try_send(wake.clone());
        }
    }

    /// Wakes up to [`FANOUT`] streams of `backend_type`, round-robin, idle workers first.
    fn wake_some(&self, backend_type: &str, wake: &Wake) {
        let mut dispatch = self.lock();
        let count = dispatch.listeners.len();
        if count == 0 {
            return;
        }
        let start = dispatch.cursor % count;
        let order: Vec<usize> = (0..count).map(|k| (start + k) % count).collect();
        let serves = |listener: &Listener| listener.backend_type.as_deref().is_none_or(|b| b == backend_type);
        let mut woken = Vec::with_capacity(FANOUT);
        for idle_pass in [true, false] {
            for &i in &order {
                if woken.len() == FANOUT {
                    break;
                }
                let listener = &dispatch.listeners[i];
                let idle = dispatch.idle.get(&listener.worker_id).copied().unwrap_or(true);
                if idle != idle_pass || !serves(listener) || woken.contains(&i) {
                    continue;
                }
                if listener.sender.try_send(wake.clone()).is_ok() {
                    woken.push(i);
                }
            }
        }
        if let Some(&last) = woken.last() {
            dispatch.cursor = last + 1;
        }
        for i in woken {
            let worker_id = dispatch.listeners[i].worker_id.clone();
            dispatch.idle.insert(worker_id, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aiopslab_core::{MemoryStore, NewTask, TaskApi};

    use super::*;

    async fn received(subscription: &mut Subscription) -> Vec<Wake> {
        let mut got = Vec::new();
        while let Ok(Some(wake)) = tokio::time::timeout(Duration::from_millis(100), subscription.receiver.recv()).await
        {
            got.push(wake);
        }
        got
    }

    async fn create(store: &MemoryStore) -> aiopslab_core::Task {
        let spec = NewTask::new("misconfig_app_hotel_res-detection-1")
            .validate()
            .expect("a valid task");
        store.create_task(spec).await.expect("create")
    }

    #[tokio::test]
    async fn a_new_task_wakes_two_streams_idle_first_and_a_cancel_wakes_all() {
        let store = Arc::new(MemoryStore::new());
        let wakeups = Arc::new(Wakeups::new(store.clone()));
        let shutdown = CancellationToken::new();
        let mut streams: Vec<Subscription> = (0..10)
            .map(|i| {
                wakeups
                    .listen(&format!("w{i}"), Some("default".into()), &shutdown)
                    .expect("the memory store pushes events")
            })
            .collect();
        // Only w7 and w8 are idle.
        for i in 0..10 {
            wakeups.set_idle(&format!("w{i}"), i == 7 || i == 8);
        }
        let task = create(&store).await;
        let mut woken = Vec::new();
        for (i, stream) in streams.iter_mut().enumerate() {
            if !received(stream).await.is_empty() {
                woken.push(i);
            }
        }
        assert_eq!(woken, [7, 8], "two streams, the idle ones");

        // Woken workers count as busy now: the next task goes to two others.
        create(&store).await;
        let mut woken = Vec::new();
        for (i, stream) in streams.iter_mut().enumerate() {
            if !received(stream).await.is_empty() {
                woken.push(i);
            }
        }
        assert_eq!(woken.len(), 2, "{woken:?}");
        assert!(!woken.contains(&7) && !woken.contains(&8), "{woken:?}");

        // A cancel of a running task goes to every stream.
        store
            .register_worker(aiopslab_core::WorkerRegistration::new("w1", "default"))
            .await
            .expect("register");
        let claimed = store
            .claim(&aiopslab_core::ClaimRequest::new("w1", "default").for_task(Some(task.id)))
            .await
            .expect("claim")
            .expect("the task");
        store.cancel_task(claimed.id).await.expect("cancel");
        for stream in &mut streams {
            let cancels = received(stream)
                .await
                .into_iter()
                .filter(|wake| matches!(wake, Wake::Store(StoreEvent::CancelRequested { .. })))
                .count();
            assert_eq!(cancels, 1);
        }
    }

    #[tokio::test]
    async fn a_task_of_another_backend_type_wakes_only_its_own_streams_and_a_closed_stream_leaves_the_deal() {
        let store = Arc::new(MemoryStore::new());
        let wakeups = Arc::new(Wakeups::new(store.clone()));
        let shutdown = CancellationToken::new();
        let mut kind = wakeups
            .listen("kind-1", Some("kind".into()), &shutdown)
            .expect("pushes");
        let mut default = wakeups
            .listen("default-1", Some("default".into()), &shutdown)
            .expect("pushes");
        let gone = wakeups
            .listen("default-2", Some("default".into()), &shutdown)
            .expect("pushes");
        drop(gone);
        create(&store).await;
        assert!(
            received(&mut kind).await.is_empty(),
            "a default task does not wake a kind worker"
        );
        assert_eq!(received(&mut default).await.len(), 1);
        assert_eq!(wakeups.lock().listeners.len(), 2, "the dropped stream left");
        shutdown.cancel();
    }
}
