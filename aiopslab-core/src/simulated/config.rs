//! How a [`SimulatedBackend`](super::SimulatedBackend) behaves: episode
//! length, pacing, seed, and failures injected on purpose for tests.

use std::time::Duration;

/// A failure the simulated backend injects, so callers can test how they
/// handle broken runs without a real cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureMode {
    /// Every run goes to its end (the default).
    #[default]
    Never,
    /// The run fails before its first step (code `simulated_failure`).
    Always,
    /// The run fails at this step (1-based; code `simulated_failure`), after
    /// writing the earlier steps to its log and trajectory.
    AtStep(u32),
    /// The run never returns and ignores its cancellation token and
    /// deadline: a misbehaving backend, for testing the runtime's hard limits.
    Hang,
}

/// Settings of a [`SimulatedBackend`](super::SimulatedBackend).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SimulatedConfig {
    /// Agent steps per episode (at most the task's `max_steps`; at least 1). Default 5.
    pub steps: u32,
    /// Wall-clock wait per step. Default 1 s, so a default run takes about
    /// 5 s and a client polling every second sees it `running`.
    pub step_delay: Duration,
    /// Same seed and same problem (and step count) → the same episode.
    pub seed: u64,
    /// The failure to inject. Default [`FailureMode::Never`].
    pub failure: FailureMode,
    /// When given, the failure applies only to these problem ids; `None`
    /// applies it to every problem.
    pub failure_problems: Option<Vec<String>>,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            steps: 5,
            step_delay: Duration::from_secs(1),
            seed: 0,
            failure: FailureMode::Never,
            failure_problems: None,
        }
    }
}

impl SimulatedConfig {
    /// Episodes of `steps` steps with no wait between them (for tests and benchmarks).
    pub fn instant(steps: u32) -> Self {
        Self {
            steps,
            step_delay: Duration::ZERO,
            ..Self::default()
        }
    }

    /// The same settings with `steps` agent steps per episode.
    pub fn with_steps(mut self, steps: u32) -> Self {
        self.steps = steps;
        self
    }

    /// The same settings, waiting `step_delay` per step.
    pub fn with_step_delay(mut self, step_delay: Duration) -> Self {
        self.step_delay = step_delay;
        self
    }

    /// The same settings with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The same settings, injecting `failure` (into every problem, or only
    /// into `failure_problems` when that is set).
    pub fn with_failure(mut self, failure: FailureMode) -> Self {
        self.failure = failure;
        self
    }

    /// The same settings, injecting the failure only into these problems.
    pub fn with_failure_problems(mut self, failure_problems: Option<Vec<String>>) -> Self {
        self.failure_problems = failure_problems;
        self
    }

    /// The failure to inject for `problem_id`, if any.
    pub fn failure_for(&self, problem_id: &str) -> &FailureMode {
        match &self.failure_problems {
            Some(ids) if !ids.iter().any(|id| id == problem_id) => &FailureMode::Never,
            _ => &self.failure,
        }
    }
}
