//! The worker runtime end to end over the embedded store, on tokio's paused
//! clock: lifecycle, slots, claiming, cancel, deadlines, shutdown, retries
//! of reports, lost leases and handed-over tasks.

mod runtime_fakes;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aiopslab_core::runtime::RuntimeError;
use aiopslab_core::*;
use runtime_fakes::*;
use tokio::time::Instant;

const MINUTE: Duration = Duration::from_secs(60);

fn memory() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new())
}

fn simulated(config: SimulatedConfig) -> Arc<SimulatedBackend> {
    Arc::new(SimulatedBackend::new(config))
}

#[tokio::test(start_paused = true)]
async fn a_task_goes_pending_running_completed_with_logs_trajectory_and_metrics() {
    let store = memory();
    let task = submit(&*store, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    assert_eq!(task.status, TaskStatus::Pending);

    let worker = start_default(
        store.clone(),
        Arc::new(SimulatedBackend::default()),
        config("worker-001-kind"),
    );
    let running = wait_for(&*store, task.id, MINUTE, |t| t.status != TaskStatus::Pending).await;
    assert_eq!(running.status, TaskStatus::Running);
    assert_eq!(running.worker_id.as_deref(), Some("worker-001-kind"));
    assert!(running.started_at.is_some());

    let done = wait_terminal(&*store, task.id, MINUTE).await;
    assert_eq!(done.status, TaskStatus::Completed, "{:?}", done.error_details);
    let result = done.result.unwrap();
    assert_eq!(result.metrics["steps_taken"], 5);
    assert_eq!(result.metrics["duration_seconds"], 5.0);
    assert!(result.metrics.contains_key("Detection Accuracy"));
    assert_eq!(result.output["simulated"], true);
    assert!(result.logs.iter().any(|line| line.contains("Simulated")));

    let logs = store.get_logs(task.id, &LogQuery::default()).await.unwrap();
    assert!(logs.len() >= 6, "{} log entries", logs.len());
    assert!(logs.iter().any(|e| e.context.step == Some(3)));
    let trajectory = store.get_trajectory(task.id).await.unwrap().expect("trajectory saved");
    assert_eq!(trajectory.task_id, task.id);
    assert_eq!(trajectory.llm_calls.len(), 5);
    assert!(trajectory.reward.is_some());

    let registered = store.get_worker("worker-001-kind").await.unwrap();
    assert_eq!(registered.tasks_completed, 1);
    assert_eq!(registered.metadata["backend"], "simulated");

    worker.stop().await.unwrap();
    assert_eq!(
        store.get_worker("worker-001-kind").await.unwrap().status,
        WorkerStatus::Offline
    );
}

#[tokio::test(start_paused = true)]
async fn every_llm_call_is_stamped_with_the_tasks_policy_version() {
    let store = memory();
    let agent_config = serde_json::json!({"model": "policy", "model_version": 42});
    let task = submit(
        &*store,
        NewTask {
            agent_config: agent_config.as_object().cloned(),
            ..NewTask::new("misconfig_app_hotel_res-detection-1")
        },
    )
    .await;
    let unversioned = submit(&*store, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    let worker = start_default(store.clone(), Arc::new(SimulatedBackend::default()), config("worker-v"));
    for id in [task.id, unversioned.id] {
        assert_eq!(wait_terminal(&*store, id, MINUTE).await.status, TaskStatus::Completed);
    }
    let stamped = store.get_trajectory(task.id).await.unwrap().expect("trajectory saved");
    assert_eq!(stamped.llm_calls.len(), 5);
    assert!(
        stamped.llm_calls.iter().all(|call| call.model_version == Some(42)),
        "{stamped:?}"
    );
    let plain = store
        .get_trajectory(unversioned.id)
        .await
        .unwrap()
        .expect("trajectory saved");
    assert!(plain.llm_calls.iter().all(|call| call.model_version.is_none()));
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unknown_problem_fails_clearly() {
    let store = memory();
    let task = submit(&*store, NewTask::new("misconfig_app_hotel_res-detection-9")).await;
    let worker = start_default(store.clone(), Arc::new(SimulatedBackend::default()), config("w"));
    let done = wait_terminal(&*store, task.id, MINUTE).await;
    assert_eq!(done.status, TaskStatus::Failed);
    let error = done.error_details.unwrap();
    assert_eq!(error.code, "unknown_problem");
    assert!(error.message.contains("misconfig_app_hotel_res-detection-9"));
    assert_eq!(store.get_worker("w").await.unwrap().tasks_failed, 1);
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn never_more_runs_than_slots() {
    let store = memory();
    let backend = Arc::new(FakeCountingBackend::new(
        SimulatedConfig::default()
            .with_steps(3)
            .with_step_delay(Duration::from_secs(1)),
    ));
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(submit(&*store, NewTask::new("auth_miss_mongodb-detection-1")).await.id);
    }
    let worker = start_default(store.clone(), backend.clone(), config("w").with_max_parallel_tasks(3));
    for id in &ids {
        assert_eq!(
            wait_terminal(&*store, *id, 10 * MINUTE).await.status,
            TaskStatus::Completed
        );
    }
    assert_eq!(backend.runs.load(Ordering::SeqCst), 10);
    assert_eq!(backend.max_in_flight.load(Ordering::SeqCst), 3);
    assert_eq!(backend.resets.load(Ordering::SeqCst), 10);
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_is_drained_without_poll_waits() {
    let store = memory();
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(submit(&*store, NewTask::new("wrong_bin_usage-localization-1")).await.id);
    }
    let mut config = config("w");
    config.poll_interval = Duration::from_secs(2);
    let started = Instant::now();
    let worker = start_default(store.clone(), simulated(SimulatedConfig::instant(3)), config);
    for id in &ids {
        assert_eq!(wait_terminal(&*store, *id, MINUTE).await.status, TaskStatus::Completed);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "10 tasks took {elapsed:?} of virtual time"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_task_stops_it_at_the_next_heartbeat() {
    let store = memory();
    let task = submit(&*store, NewTask::new("auth_miss_mongodb-analysis-1")).await;
    let backend = simulated(SimulatedConfig::default().with_steps(30));
    let worker = start_default(store.clone(), backend, config("w"));
    wait_for(&*store, task.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        store.cancel_task(task.id).await.unwrap(),
        CancelOutcome::CancelRequested
    );
    let asked = Instant::now();

    let done = wait_terminal(&*store, task.id, MINUTE).await;
    assert_eq!(done.status, TaskStatus::Cancelled);
    assert_eq!(done.error_details.unwrap().code, "cancelled");
    assert!(asked.elapsed() <= Duration::from_secs(11), "took {:?}", asked.elapsed());
    let trajectory = store
        .get_trajectory(task.id)
        .await
        .unwrap()
        .expect("partial trajectory kept");
    assert!(trajectory.llm_calls.len() < 30);
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn store_events_wake_the_worker_and_deliver_cancels_at_once() {
    let store = Arc::new(FakeFlakyStore::with_events(MemoryStore::new()));
    woken_and_cancelled_at_once(
        store.clone(),
        &store.inner,
        async || {
            store
                .create_and_announce(NewTask::new("auth_miss_mongodb-analysis-1"))
                .await
        },
        async |id| {
            store.cancel_and_announce(id).await;
        },
    )
    .await;
}

/// The embedded store pushes its wake-ups too: an in-process worker that
/// polls every 10 minutes claims a new task, and stops a cancelled run, at
/// once.
#[tokio::test(start_paused = true)]
async fn the_memory_store_wakes_an_in_process_worker_and_delivers_cancels_at_once() {
    let store = memory();
    woken_and_cancelled_at_once(
        store.clone(),
        &*store,
        async || submit(&*store, NewTask::new("auth_miss_mongodb-analysis-1")).await,
        async |id| {
            store.cancel_task(id).await.unwrap();
        },
    )
    .await;
}

/// A worker polling every 10 minutes, on `queue`: the task `create` makes
/// runs within 100 ms, and stops within 100 ms of `cancel` (`reads` shows
/// the task).
async fn woken_and_cancelled_at_once(
    queue: Arc<dyn WorkerQueue>,
    reads: &dyn TaskApi,
    create: impl AsyncFnOnce() -> Task,
    cancel: impl AsyncFnOnce(TaskId),
) {
    let backend = simulated(SimulatedConfig::default().with_steps(30));
    let mut config = config("w");
    config.poll_interval = Duration::from_secs(600);
    let worker = start_default(queue, backend, config);
    tokio::time::sleep(Duration::from_secs(5)).await;

    let task = create().await;
    let created = Instant::now();
    wait_for(reads, task.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    assert!(
        created.elapsed() < Duration::from_millis(100),
        "claimed after {:?}",
        created.elapsed()
    );

    tokio::time::sleep(Duration::from_millis(2500)).await;
    cancel(task.id).await;
    let asked = Instant::now();
    let done = wait_terminal(reads, task.id, MINUTE).await;
    assert_eq!(done.status, TaskStatus::Cancelled);
    assert!(
        asked.elapsed() < Duration::from_millis(100),
        "stopped after {:?}",
        asked.elapsed()
    );
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_deadline_ends_as_timeout() {
    let store = memory();
    let slow = NewTask {
        timeout_minutes: Some(1),
        max_steps: Some(500),
        ..NewTask::new("auth_miss_mongodb-mitigation-1")
    };
    // A backend that honours its deadline reports timeout itself.
    let task = submit(&*store, slow.clone()).await;
    let worker = start_default(
        store.clone(),
        simulated(SimulatedConfig::default().with_steps(500)),
        config("w"),
    );
    let done = wait_terminal(&*store, task.id, 5 * MINUTE).await;
    assert_eq!(done.status, TaskStatus::Timeout);
    assert_eq!(done.error_details.unwrap().code, "timeout");
    worker.stop().await.unwrap();

    // A backend that ignores it is stopped by the runtime, which reports timeout.
    let task = submit(&*store, slow).await;
    let hanging = simulated(SimulatedConfig::default().with_failure(FailureMode::Hang));
    let started = Instant::now();
    let worker = start_default(store.clone(), hanging, config("w"));
    let done = wait_terminal(&*store, task.id, 5 * MINUTE).await;
    assert_eq!(done.status, TaskStatus::Timeout);
    assert_eq!(done.error_details.unwrap().code, "timeout");
    let took = started.elapsed();
    assert!(
        took >= MINUTE && took <= MINUTE + Duration::from_secs(25),
        "took {took:?}"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_claiming_and_lets_the_running_task_finish() {
    let store = memory();
    let first = submit(
        &*store,
        NewTask {
            priority: Some(9),
            ..NewTask::new("auth_miss_mongodb-detection-1")
        },
    )
    .await;
    let second = submit(&*store, NewTask::new("auth_miss_mongodb-detection-1")).await;
    let worker = start_default(store.clone(), Arc::new(SimulatedBackend::default()), config("w"));
    wait_for(&*store, first.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let asked = Instant::now();
    worker.stop().await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "shutdown took {:?}",
        asked.elapsed()
    );
    assert_eq!(store.get_task(first.id).await.unwrap().status, TaskStatus::Completed);
    assert_eq!(store.get_task(second.id).await.unwrap().status, TaskStatus::Pending);
    assert_eq!(store.get_worker("w").await.unwrap().status, WorkerStatus::Offline);
}

#[tokio::test(start_paused = true)]
async fn runs_beyond_the_shutdown_grace_are_reported_as_worker_shutdown() {
    let store = memory();
    let long = |retries| NewTask {
        max_retries: Some(retries),
        ..NewTask::new("revoke_auth_mongodb-analysis-2")
    };
    let no_retry = submit(&*store, long(0)).await;
    let retry = submit(&*store, long(1)).await;
    let backend = simulated(SimulatedConfig::default().with_steps(30));
    let mut config = config("w").with_max_parallel_tasks(2);
    config.shutdown_grace = Duration::from_secs(2);
    let worker = start_default(store.clone(), backend, config);
    wait_for(&*store, retry.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let asked = Instant::now();
    worker.stop().await.unwrap();
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "shutdown took {took:?}"
    );

    let failed = store.get_task(no_retry.id).await.unwrap();
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.error_details.unwrap().code, "worker_shutdown");
    let requeued = store.get_task(retry.id).await.unwrap();
    assert_eq!(requeued.status, TaskStatus::Pending);
    assert_eq!(requeued.error_details.unwrap().code, "worker_shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_finished_result_survives_a_long_store_outage() {
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    store.fail_finishes.store(40, Ordering::SeqCst);
    let task = submit(&store.inner, NewTask::new("user_unregistered_mongodb-localization-2")).await;
    let worker = start_default(store.clone(), simulated(SimulatedConfig::instant(3)), config("w"));

    let done = wait_terminal(&store.inner, task.id, 30 * MINUTE).await;
    assert_eq!(done.status, TaskStatus::Completed);
    let finishes = store.finishes.lock().unwrap().len();
    assert_eq!(finishes, 41, "40 refused, then the one that landed");
    worker.stop().await.unwrap();
}

/// A 300-step task with one retry, running on a worker `worker-a` over `store`.
async fn long_run_on_worker_a(store: &Arc<FakeFlakyStore>) -> (Task, Running) {
    let task = submit(
        &store.inner,
        NewTask {
            max_retries: Some(1),
            max_steps: Some(300),
            ..NewTask::new("scale_pod_zero_social_net-mitigation-1")
        },
    )
    .await;
    let backend = simulated(SimulatedConfig::default().with_steps(300));
    let worker = start_default(store.clone(), backend, config("worker-a"));
    wait_for(&store.inner, task.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    (task, worker)
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_lease_was_taken_over_stops_without_overwriting() {
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    let (task, worker) = long_run_on_worker_a(&store).await;

    // The worker is cut off; its lease lapses and the sweep requeues the task,
    // which another worker then claims.
    store.partitioned.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(75)).await;
    let report = store.inner.sweep().await.unwrap();
    assert_eq!(report.requeued, vec![task.id]);
    store
        .inner
        .register_worker(WorkerRegistration::new("worker-b", "default"))
        .await
        .unwrap();
    let request = ClaimRequest::new("worker-b", "default");
    let taken = store.inner.claim(&request).await.unwrap().unwrap();
    assert_eq!(taken.attempt, 2);

    // The partition heals: worker-a learns its lease is gone and stops.
    store.partitioned.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let now = store.get_task(task.id).await.unwrap();
    assert_eq!(now.status, TaskStatus::Running);
    assert_eq!(now.worker_id.as_deref(), Some("worker-b"));
    assert_eq!(now.attempt, 2);
    let stale_finishes = store
        .finishes
        .lock()
        .unwrap()
        .iter()
        .filter(|(lease, _)| lease.attempt == 1)
        .count();
    assert_eq!(stale_finishes, 0, "the stale worker must not report");
    let worker_a = store.get_worker("worker-a").await.unwrap();
    assert_eq!(worker_a.current_task_id, None, "worker-a is no longer running it");
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_task_handed_over_by_a_heartbeat_is_run() {
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    let task = submit(&store.inner, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    *store.hand_over.lock().unwrap() = Some(task.id);
    let mut config = config("w");
    config.heartbeat_interval = Duration::from_secs(1);
    let worker = start(
        store.clone(),
        Arc::new(FakeIdleScheduler),
        simulated(SimulatedConfig::instant(2)),
        config,
    );
    let done = wait_terminal(&store.inner, task.id, MINUTE).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.worker_id.as_deref(), Some("w"));
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_live_holder_of_the_id_is_waited_out() {
    let store = memory();
    store
        .register_worker(WorkerRegistration::new("w", "default"))
        .await
        .unwrap();
    let task = submit(&*store, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    let started = Instant::now();
    let worker = start_default(store.clone(), simulated(SimulatedConfig::instant(1)), config("w"));
    let done = wait_terminal(&*store, task.id, 5 * MINUTE).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert!(
        started.elapsed() >= Duration::from_secs(90),
        "registered after {:?}",
        started.elapsed()
    );
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_cannot_prepare_stops_the_worker_with_its_message() {
    let store = memory();
    let mut backend = FakeCountingBackend::new(SimulatedConfig::default());
    backend.prepare_error = Some("kind is not installed; install it from https://kind.sigs.k8s.io".into());
    let worker = start_default(store.clone(), Arc::new(backend), config("w"));
    let error = worker.handle.await.unwrap().unwrap_err();
    assert!(matches!(error, RuntimeError::Prepare { .. }));
    let text = error.to_string();
    assert!(
        text.contains("fake-counting") && text.contains("kind is not installed"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_reset_holds_the_slot_until_it_succeeds() {
    let store = memory();
    let backend = Arc::new(FakeCountingBackend::new(SimulatedConfig::instant(1)));
    backend.fail_resets.store(3, Ordering::SeqCst);
    let first = submit(
        &*store,
        NewTask {
            priority: Some(9),
            ..NewTask::new("misconfig_app_hotel_res-detection-1")
        },
    )
    .await;
    let second = submit(&*store, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    let worker = start_default(store.clone(), backend.clone(), config("w"));
    assert_eq!(
        wait_terminal(&*store, first.id, MINUTE).await.status,
        TaskStatus::Completed
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        store.get_task(second.id).await.unwrap().status,
        TaskStatus::Pending,
        "slot closed while reset fails"
    );
    assert_eq!(
        wait_terminal(&*store, second.id, MINUTE).await.status,
        TaskStatus::Completed
    );
    assert_eq!(backend.resets.load(Ordering::SeqCst), 3 + 2);
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn simulated_episodes_are_reproducible_through_the_runtime() {
    let store = memory();
    let backend = simulated(SimulatedConfig::instant(6).with_seed(7));
    let a = submit(&*store, NewTask::new("k8s_target_port-misconfig-localization-1")).await;
    let b = submit(&*store, NewTask::new("k8s_target_port-misconfig-localization-1")).await;
    let worker = start_default(store.clone(), backend, config("w"));
    wait_terminal(&*store, a.id, MINUTE).await;
    wait_terminal(&*store, b.id, MINUTE).await;
    let ta = store.get_trajectory(a.id).await.unwrap().unwrap();
    let tb = store.get_trajectory(b.id).await.unwrap().unwrap();
    assert_eq!(ta.messages, tb.messages);
    assert_eq!(ta.evaluation, tb.evaluation);
    assert_eq!(ta.reward, tb.reward);
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_store_at_start_is_waited_out() {
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    store.partitioned.store(true, Ordering::SeqCst);
    let task = submit(&store.inner, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    let worker = start_default(store.clone(), simulated(SimulatedConfig::instant(2)), config("w"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(store.get_task(task.id).await.unwrap().status, TaskStatus::Pending);
    assert!(store.get_worker("w").await.is_err(), "not registered while unreachable");

    store.partitioned.store(false, Ordering::SeqCst);
    assert_eq!(
        wait_terminal(&store.inner, task.id, MINUTE).await.status,
        TaskStatus::Completed
    );
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_worker_reports_busy_and_idle_as_runs_start_and_end() {
    let store = memory();
    let worker = start_default(store.clone(), simulated(SimulatedConfig::default()), config("w"));
    // Let registration land, then submit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let task = submit(&*store, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    wait_for(&*store, task.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    // Well within one heartbeat interval (10 s) of the run starting.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let busy = store.get_worker("w").await.unwrap();
    assert_eq!(busy.status, WorkerStatus::Busy);
    assert_eq!(busy.current_task_id, Some(task.id));

    wait_terminal(&*store, task.id, MINUTE).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let idle = store.get_worker("w").await.unwrap();
    assert_eq!(idle.status, WorkerStatus::Idle);
    assert_eq!(idle.current_task_id, None);
    worker.stop().await.unwrap();
}

/// Starts a sweeper over `store`, every 5 s.
fn sweeper(store: Arc<dyn Housekeeping>) -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(run_sweeper(store, Duration::from_secs(5), stop.clone()));
    stop
}

#[tokio::test(start_paused = true)]
async fn two_workers_run_a_mixed_queue_to_the_right_terminal_statuses() {
    let store = memory();
    let known = "misconfig_app_hotel_res-detection-1";
    let with_priority = |problem: &str, priority: i64| NewTask {
        priority: Some(priority),
        ..NewTask::new(problem)
    };
    let low = submit(&*store, with_priority(known, 1)).await;
    let high = submit(&*store, with_priority(known, 9)).await;
    let mid = submit(&*store, with_priority(known, 5)).await;
    let unknown = submit(&*store, with_priority("not-an-aiopslab-problem", 3)).await;
    // On the paused clock both gpu tasks share one creation instant, so
    // priority (not age) decides which runs first.
    let gpu = |timeout_minutes: i64, priority: i64| NewTask {
        backend_type: Some("gpu".into()),
        timeout_minutes: Some(timeout_minutes),
        priority: Some(priority),
        ..NewTask::new("auth_miss_mongodb-analysis-1")
    };
    let too_slow = submit(&*store, gpu(1, 6)).await;
    let to_cancel = submit(&*store, gpu(30, 4)).await;

    let stop_sweeper = sweeper(store.clone());
    let fast = simulated(SimulatedConfig::default().with_steps(3));
    // 3 steps of 40 s: longer than a 1-minute timeout.
    let slow = simulated(
        SimulatedConfig::default()
            .with_steps(3)
            .with_step_delay(Duration::from_secs(40)),
    );
    let default_worker = start_default(store.clone(), fast, config("w-default"));
    let gpu_worker = start_default(store.clone(), slow, WorkerConfig::new("w-gpu", "gpu"));

    let ended: Vec<Task> = {
        let mut ended = Vec::new();
        for task in [&high, &mid, &unknown, &low] {
            ended.push(wait_terminal(&*store, task.id, 5 * MINUTE).await);
        }
        ended
    };
    let statuses: Vec<TaskStatus> = ended.iter().map(|t| t.status).collect();
    assert_eq!(
        statuses,
        [
            TaskStatus::Completed,
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Completed
        ]
    );
    assert!(
        ended.iter().all(|t| t.worker_id.as_deref() == Some("w-default")),
        "default tasks ran on the default worker only"
    );
    let starts: Vec<_> = ended.iter().map(|t| t.started_at.unwrap()).collect();
    // Non-decreasing: the unknown problem fails in no (virtual) time, so the
    // next claim may share its instant; a wrong order would show 3 s apart.
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "claimed by priority: {starts:?}"
    );

    let timed_out = wait_terminal(&*store, too_slow.id, 5 * MINUTE).await;
    assert_eq!(timed_out.status, TaskStatus::Timeout);
    assert_eq!(timed_out.worker_id.as_deref(), Some("w-gpu"));

    wait_for(&*store, to_cancel.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    store.cancel_task(to_cancel.id).await.unwrap();
    let asked = Instant::now();
    let cancelled = wait_terminal(&*store, to_cancel.id, MINUTE).await;
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert!(
        asked.elapsed() <= Duration::from_secs(10),
        "stopped within one heartbeat, took {:?}",
        asked.elapsed()
    );

    stop_sweeper.cancel();
    default_worker.stop().await.unwrap();
    gpu_worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dropped_worker_loses_its_tasks_when_their_leases_expire() {
    let shared = MemoryStore::new();
    let store: Arc<dyn TaskStore> = Arc::new(shared.clone());
    let long = |max_retries: i64| NewTask {
        max_retries: Some(max_retries),
        max_steps: Some(300),
        ..NewTask::new("scale_pod_zero_social_net-mitigation-1")
    };
    let no_retry = submit(&*store, long(0)).await;
    let stop_sweeper = sweeper(store.clone());

    // The doomed worker reaches the store through a fake network that is
    // cut for good once it holds the task: to the store it simply vanishes.
    let doomed_view = Arc::new(FakeFlakyStore::new(shared.clone()));
    let long_runs = simulated(SimulatedConfig::default().with_steps(300));
    let doomed = start_default(doomed_view.clone(), long_runs.clone(), config("w-doomed"));
    wait_for(&*store, no_retry.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    doomed_view.partitioned.store(true, Ordering::SeqCst);

    let failed = wait_terminal(&*store, no_retry.id, 5 * MINUTE).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.error_details.unwrap().code, "worker_lost");

    // With a retry left the task goes back to the queue and a healthy
    // worker finishes it.
    let retried = submit(
        &*store,
        NewTask {
            max_steps: Some(3),
            ..long(1)
        },
    )
    .await;
    // The doomed worker cannot see it; a claim through the real store stands in
    // for its last successful claim before the cut.
    shared
        .register_worker(WorkerRegistration::new("w-ghost", "default"))
        .await
        .unwrap();
    let request = ClaimRequest::new("w-ghost", "default").for_task(Some(retried.id));
    shared.claim(&request).await.unwrap().expect("claimed by the ghost");
    let healthy = start_default(
        store.clone(),
        simulated(SimulatedConfig::default().with_steps(3)),
        config("w-healthy"),
    );
    let done = wait_terminal(&*store, retried.id, 5 * MINUTE).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.attempt, 2, "requeued once after the lease expired");
    assert_eq!(done.worker_id.as_deref(), Some("w-healthy"));

    stop_sweeper.cancel();
    healthy.stop().await.unwrap();
    doomed.shutdown.cancel();
    doomed.handle.abort();
}

/// The messages of a task's stored log, in store order.
async fn stored_messages(store: &dyn TaskApi, id: TaskId) -> Vec<String> {
    let logs = store.get_logs(id, &LogQuery::default()).await.unwrap();
    assert!(logs.windows(2).all(|w| w[0].id < w[1].id), "log in append order");
    logs.into_iter().map(|entry| entry.message).collect()
}

/// Runs one task of `lines` log lines (one every 100 ms) while the log store
/// is down for the first `outage`, and returns the store and the task.
async fn run_through_a_log_outage(lines: usize, outage: Duration, config: WorkerConfig) -> (Arc<FakeFlakyStore>, Task) {
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    store.appends_down.store(true, Ordering::SeqCst);
    let backend = Arc::new(FakeChattyBackend {
        lines,
        interval: Duration::from_millis(100),
    });
    let task = submit(&store.inner, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    let worker = start_default(store.clone(), backend, config);
    wait_for(&store.inner, task.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    tokio::time::sleep(outage).await;
    assert_eq!(
        store.get_task(task.id).await.unwrap().status,
        TaskStatus::Running,
        "the outcome waits for the log"
    );
    store.appends_down.store(false, Ordering::SeqCst);
    let done = wait_terminal(&store.inner, task.id, 5 * MINUTE).await;
    assert_eq!(done.status, TaskStatus::Completed, "{:?}", done.error_details);
    worker.stop().await.unwrap();
    // The outage outlasted the old budget of 8 tries (about 13 s at most).
    assert!(store.append_failures.load(Ordering::SeqCst) > 8);
    (store, done)
}

#[tokio::test(start_paused = true)]
async fn logs_written_during_a_long_store_outage_are_delivered_in_order_before_the_outcome() {
    let (_guard, captured) = capture_logs();
    // 300 lines over 30 s; the log store is down for 90 s, well past the end of the run.
    let (store, task) = run_through_a_log_outage(300, Duration::from_secs(90), config("w")).await;

    assert_eq!(
        stored_messages(&store.inner, task.id).await,
        chatty_lines(0..300),
        "every line, once, in order"
    );
    let journal = store.journal.lock().unwrap().clone();
    assert_eq!(journal.last(), Some(&"finish"), "{journal:?}");
    assert_eq!(journal.iter().filter(|w| **w == "finish").count(), 1);
    assert!(journal.iter().filter(|w| **w == "append").count() >= 3, "{journal:?}");
    // One warning for the outage (not one per try), and nothing dropped.
    let warnings: Vec<String> = captured
        .warnings_containing("")
        .into_iter()
        .map(|event| event.message)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with("could not store log entries; holding them"),
        "{warnings:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn beyond_the_entry_bound_exactly_the_oldest_lines_are_dropped_with_one_warning() {
    let (_guard, captured) = capture_logs();
    let mut config = config("w");
    config.log_buffer_entries = 50;
    let (store, task) = run_through_a_log_outage(300, Duration::from_secs(90), config).await;

    let stored = stored_messages(&store.inner, task.id).await;
    assert_eq!(stored.len(), 51, "the gap note, then the newest 50");
    assert!(
        stored[0].starts_with("250 log entries were dropped here"),
        "{}",
        stored[0]
    );
    assert_eq!(stored[1..], chatty_lines(250..300)[..]);
    let logs = store.get_logs(task.id, &LogQuery::default()).await.unwrap();
    assert_eq!(logs[0].level, LogLevel::Warning);
    assert_eq!(logs[0].context.details.as_ref().unwrap()["dropped_entries"], 250);

    let warnings = captured.warnings_containing("overflowed");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].field("dropped"), Some("250"));
}

#[tokio::test(start_paused = true)]
async fn beyond_the_byte_bound_exactly_the_oldest_lines_are_dropped() {
    let mut config = config("w");
    // "line 00000" is 10 bytes: 20 lines fit.
    config.log_buffer_bytes = 200;
    let (store, task) = run_through_a_log_outage(100, Duration::from_secs(60), config).await;
    let stored = stored_messages(&store.inner, task.id).await;
    assert!(
        stored[0].starts_with("80 log entries were dropped here"),
        "{}",
        stored[0]
    );
    assert_eq!(stored[1..], chatty_lines(80..100)[..]);
}

#[tokio::test(start_paused = true)]
async fn a_short_outage_during_the_run_loses_nothing_and_the_run_goes_on() {
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    let backend = Arc::new(FakeChattyBackend {
        lines: 600,
        interval: Duration::from_millis(100),
    });
    let task = submit(&store.inner, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    let worker = start_default(store.clone(), backend, config("w"));
    wait_for(&store.inner, task.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Down for 30 s in the middle of a 60 s run.
    store.appends_down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;
    store.appends_down.store(false, Ordering::SeqCst);
    // Caught up within the backoff's cap (10 s), while the run still goes on.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(store.get_task(task.id).await.unwrap().status, TaskStatus::Running);
    let caught_up = stored_messages(&store.inner, task.id).await;
    assert!(caught_up.len() >= 500, "{} lines stored", caught_up.len());
    assert_eq!(caught_up, chatty_lines(0..caught_up.len()));

    assert_eq!(
        wait_terminal(&store.inner, task.id, MINUTE).await.status,
        TaskStatus::Completed
    );
    assert_eq!(stored_messages(&store.inner, task.id).await, chatty_lines(0..600));
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn held_lines_of_a_lease_lost_during_the_outage_are_dropped_with_a_warning() {
    let (_guard, captured) = capture_logs();
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    let backend = Arc::new(FakeChattyBackend {
        lines: 3000,
        interval: Duration::from_millis(100),
    });
    let task = submit(
        &store.inner,
        NewTask {
            max_retries: Some(1),
            ..NewTask::new("misconfig_app_hotel_res-detection-1")
        },
    )
    .await;
    let worker = start_default(store.clone(), backend, config("w"));
    wait_for(&store.inner, task.id, MINUTE, |t| t.status == TaskStatus::Running).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = stored_messages(&store.inner, task.id).await.len();
    assert!(before > 0);

    // Cut off past the lease: the sweep requeues the task meanwhile.
    store.partitioned.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(75)).await;
    assert_eq!(store.inner.sweep().await.unwrap().requeued, vec![task.id]);
    // Another worker takes it over (it writes no log of its own).
    store
        .inner
        .register_worker(WorkerRegistration::new("worker-b", "default"))
        .await
        .unwrap();
    let request = ClaimRequest::new("worker-b", "default").for_task(Some(task.id));
    assert_eq!(store.inner.claim(&request).await.unwrap().unwrap().attempt, 2);
    store.partitioned.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(30)).await;

    assert_eq!(
        stored_messages(&store.inner, task.id).await.len(),
        before,
        "nothing written under the lost lease"
    );
    let dropped = captured.warnings_containing("the lease is gone");
    assert_eq!(dropped.len(), 1, "{:?}", captured.warnings_containing(""));
    let count: usize = dropped[0].field("dropped").unwrap().parse().unwrap();
    assert!(count >= 700, "the lines held during the 75 s outage: {count}");
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_short_lease_is_kept_by_heartbeats_derived_from_it() {
    let lease = Duration::from_secs(5);
    let store = Arc::new(MemoryStore::with_policy(
        LeasePolicy::default().with_lease_duration(lease),
    ));
    let stop_sweeper = {
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(run_sweeper(store.clone(), Duration::from_secs(1), stop.clone()));
        stop
    };
    // A healthy 60 s run: 60 steps of 1 s.
    let long = simulated(
        SimulatedConfig::default()
            .with_steps(60)
            .with_step_delay(Duration::from_secs(1)),
    );
    let task = |store: Arc<MemoryStore>| async move {
        submit(
            &*store,
            NewTask {
                max_steps: Some(60),
                ..NewTask::new("misconfig_app_hotel_res-detection-1")
            },
        )
        .await
    };

    // The heartbeat derived from the lease keeps it: completed on the first attempt.
    let kept = task(store.clone()).await;
    let derived = config("w").with_lease_duration(lease);
    assert!(derived.heartbeat_interval <= lease / 3);
    let worker = start_default(store.clone(), long.clone(), derived);
    let done = wait_terminal(&*store, kept.id, 5 * MINUTE).await;
    assert_eq!(done.status, TaskStatus::Completed, "{:?}", done.error_details);
    assert_eq!(done.attempt, 1);
    worker.stop().await.unwrap();

    // The control: the default 10 s heartbeat (the old behaviour of
    // in-process workers) loses the same healthy run as worker_lost.
    let lost = task(store.clone()).await;
    let worker = start_default(store.clone(), long, config("w"));
    let done = wait_terminal(&*store, lost.id, 5 * MINUTE).await;
    assert_eq!(done.status, TaskStatus::Failed);
    assert_eq!(done.error_details.unwrap().code, "worker_lost");
    worker.handle.abort();

    // And a worker told the lease refuses such a heartbeat at start.
    let mut refused = config("w2");
    refused.lease_duration = Some(lease);
    let worker = start_default(store.clone(), simulated(SimulatedConfig::instant(1)), refused);
    let error = worker.handle.await.unwrap().unwrap_err();
    match error {
        RuntimeError::Config(error) => assert_eq!(error.field, "heartbeat_interval"),
        other => panic!("expected a configuration error, got {other}"),
    }
    stop_sweeper.cancel();
}

#[tokio::test(start_paused = true)]
async fn normal_runs_log_no_lease_lost_warning() {
    let (_guard, captured) = capture_logs();
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    // A heartbeat takes a round trip, as over HTTP: runs end (and are
    // reported) while it is on its way, so its answer names them as lost.
    *store.heartbeat_delay.lock().unwrap() = Duration::from_millis(50);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            submit(&store.inner, NewTask::new("misconfig_app_hotel_res-detection-1"))
                .await
                .id,
        );
    }
    let worker = start_default(
        store.clone(),
        simulated(SimulatedConfig::instant(3)),
        config("w").with_max_parallel_tasks(2),
    );
    for id in &ids {
        assert_eq!(
            wait_terminal(&store.inner, *id, MINUTE).await.status,
            TaskStatus::Completed
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    worker.stop().await.unwrap();

    assert_eq!(
        captured.containing("outcome reported").len(),
        20,
        "the capture sees the runtime"
    );
    assert!(!captured.containing("lease ended").is_empty(), "the race did happen");
    let misleading = captured.warnings_containing("lease lost");
    assert!(misleading.is_empty(), "{misleading:#?}");
    assert!(
        captured.warnings_containing("").is_empty(),
        "{:#?}",
        captured.warnings_containing("")
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_id_was_taken_over_stops_without_reporting_or_deregistering() {
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    let (task, worker) = long_run_on_worker_a(&store).await;

    // Another process registers under the same id: it takes the id over, and the task goes back to the queue.
    let other = store
        .inner
        .register_worker(WorkerRegistration::new("worker-a", "default").with_instance_id("another-process"))
        .await
        .unwrap();
    assert_eq!(other.instance_id.as_deref(), Some("another-process"));
    assert_eq!(store.get_task(task.id).await.unwrap().status, TaskStatus::Pending);

    // The first process learns it at its next heartbeat and stops, saying why.
    let outcome = tokio::time::timeout(MINUTE, worker.handle)
        .await
        .expect("the superseded worker stops within a minute")
        .unwrap();
    match outcome {
        Err(RuntimeError::Superseded(StoreError::WorkerSuperseded { current_instance, .. })) => {
            assert_eq!(current_instance, "another-process")
        }
        other => panic!("expected RuntimeError::Superseded, got {other:?}"),
    }
    assert!(
        store.finishes.lock().unwrap().is_empty(),
        "the superseded worker reported nothing: {:?}",
        store.finishes.lock().unwrap()
    );
    let holder = store.get_worker("worker-a").await.unwrap();
    assert_eq!(
        holder.instance_id.as_deref(),
        Some("another-process"),
        "and did not deregister the id it no longer holds"
    );
    assert_ne!(holder.status, aiopslab_core::WorkerStatus::Offline);
}

/// A run on a store that takes final reports ends in one call: the log's tail, the trajectory and the outcome
/// together, and nothing else is written at the end.
#[tokio::test(start_paused = true)]
async fn a_run_ends_in_one_final_report_when_the_store_takes_them() {
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    store.offer_final_reports.store(true, Ordering::SeqCst);
    let task = submit(&store.inner, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    let worker = start_default(store.clone(), simulated(SimulatedConfig::instant(3)), config("w"));
    let done = wait_terminal(&store.inner, task.id, MINUTE).await;
    worker.stop().await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{:?}", done.error_details);
    assert_eq!(store.final_report_calls.load(Ordering::SeqCst), 1);
    let journal = store.journal.lock().unwrap().clone();
    assert_eq!(
        journal,
        ["final_report"],
        "an instant run's whole log rides with the outcome"
    );
    assert!(store.finishes.lock().unwrap().is_empty(), "no separate finish");
    let messages = stored_messages(&store.inner, task.id).await;
    assert!(messages.len() >= 3, "the log is stored: {messages:?}");
    assert!(
        store.inner.get_trajectory(task.id).await.unwrap().is_some(),
        "the trajectory is stored"
    );
}

/// A final report the store refuses as a whole (it writes nothing) is sent again in parts: the log's tail,
/// the trajectory and the finish, each once, so nothing is lost or doubled.
#[tokio::test(start_paused = true)]
async fn a_refused_final_report_is_sent_in_parts_without_losing_or_doubling_anything() {
    let store = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    store.offer_final_reports.store(true, Ordering::SeqCst);
    store.refuse_final_reports.store(true, Ordering::SeqCst);
    let task = submit(&store.inner, NewTask::new("misconfig_app_hotel_res-detection-1")).await;
    let worker = start_default(store.clone(), simulated(SimulatedConfig::instant(3)), config("w"));
    let done = wait_terminal(&store.inner, task.id, MINUTE).await;
    worker.stop().await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{:?}", done.error_details);
    assert_eq!(
        store.final_report_calls.load(Ordering::SeqCst),
        1,
        "a refusal is not retried"
    );
    let journal = store.journal.lock().unwrap().clone();
    assert_eq!(journal, ["append", "finish"], "{journal:?}");
    let messages = stored_messages(&store.inner, task.id).await;
    let mut unique = messages.clone();
    unique.dedup();
    assert_eq!(unique, messages, "no entry is stored twice");
    assert!(messages.len() >= 3, "the log is stored: {messages:?}");
    assert!(
        store.inner.get_trajectory(task.id).await.unwrap().is_some(),
        "the trajectory is stored"
    );
}

/// While the store pushes wake-ups, an idle worker polls only every `pushed_poll_interval` (30 s): a task that
/// arrives unannounced waits for that poll, and a `Resync` (the store's channel dropped) makes the worker look at
/// once. A store that pushes nothing is polled every `poll_interval` (2 s).
#[tokio::test(start_paused = true)]
async fn a_pushed_worker_polls_slowly_and_a_resync_makes_it_look_at_once() {
    let store = Arc::new(FakeFlakyStore::with_events(MemoryStore::new()));
    let worker = start_default(store.clone(), simulated(SimulatedConfig::instant(1)), config("w"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Created without an announcement: only a poll finds it.
    let unannounced = submit(&store.inner, NewTask::new("auth_miss_mongodb-analysis-1")).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        store.inner.get_task(unannounced.id).await.unwrap().status,
        TaskStatus::Pending,
        "no 2 s poll while the store pushes"
    );
    store.emit(StoreEvent::Resync);
    let done = wait_terminal(&store.inner, unannounced.id, Duration::from_millis(200)).await;
    assert_eq!(done.status, TaskStatus::Completed);

    // And the slow poll still comes: another unannounced task is found within 30 s.
    let later = submit(&store.inner, NewTask::new("auth_miss_mongodb-analysis-1")).await;
    wait_terminal(&store.inner, later.id, Duration::from_secs(31)).await;
    worker.stop().await.unwrap();

    // Without pushed events, the usual 2 s poll.
    let plain = Arc::new(FakeFlakyStore::new(MemoryStore::new()));
    let worker = start_default(plain.clone(), simulated(SimulatedConfig::instant(1)), config("w2"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let task = submit(&plain.inner, NewTask::new("auth_miss_mongodb-analysis-1")).await;
    wait_terminal(&plain.inner, task.id, Duration::from_millis(2_100)).await;
    worker.stop().await.unwrap();
}

/// A pushed worker woken for a task the store still holds back (its dispatch delay) looks again after the usual
/// poll interval, not the long one: the quickstart's task runs within seconds of its creation.
#[tokio::test(start_paused = true)]
async fn a_woken_worker_that_finds_a_task_held_back_looks_again_soon() {
    let store = Arc::new(MemoryStore::with_policy(
        LeasePolicy::default().with_dispatch_delay(Duration::from_secs(1)),
    ));
    let worker = start_default(store.clone(), simulated(SimulatedConfig::instant(1)), config("w"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let task = submit(&*store, NewTask::new("auth_miss_mongodb-analysis-1")).await;
    // The wake-up comes at once and finds nothing (held back for 1 s); the next look is one poll (2 s) later.
    let done = wait_terminal(&*store, task.id, Duration::from_millis(2_500)).await;
    assert_eq!(done.status, TaskStatus::Completed);
    worker.stop().await.unwrap();
}
