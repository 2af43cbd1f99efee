//! The script of one simulated episode, planned up front from a seeded
//! random generator: prompts, each step's action and the environment's
//! answer, token usage, the submitted solution and AIOpsLab-shaped
//! evaluation. Planning is a pure function, so the same seed, problem and
//! step count always give the same episode.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::catalog::{Application, Problem, TaskType};
use crate::task::JsonObject;
use crate::trajectory::TokenUsage;

/// One planned agent step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedStep {
    /// The API the agent calls (`exec_shell`, `get_logs`, ..., `submit`).
    pub action: &'static str,
    /// The assistant's reply: a thought and one fenced call, as AIOpsLab parses it.
    pub reply: String,
    /// What the environment answered.
    pub observation: String,
    /// Token usage of the LLM call behind the reply.
    pub usage: TokenUsage,
    /// Simulated latency of that call.
    pub latency_ms: u64,
}

/// A whole planned episode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EpisodePlan {
    /// The agent's system prompt.
    pub system_prompt: String,
    /// The task description (the first user message).
    pub task_description: String,
    /// The steps; the last one submits.
    pub steps: Vec<PlannedStep>,
    /// What the agent submits (`null` for mitigation, as AIOpsLab's `submit()`).
    pub solution: Value,
    /// AIOpsLab's results dict for this task type.
    pub evaluation: JsonObject,
}

/// A stable 64-bit FNV-1a hash (std's hashers may change between releases,
/// which would break reproducibility).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The generator for `seed` and `problem_id`.
pub(crate) fn rng_for(seed: u64, problem_id: &str) -> SmallRng {
    SmallRng::seed_from_u64(seed ^ fnv1a(problem_id))
}

fn namespace(application: Application) -> &'static str {
    match application {
        Application::HotelReservation => "test-hotel-reservation",
        Application::SocialNetwork => "test-social-network",
        Application::AstronomyShop => "astronomy-shop",
        Application::Flower => "flower",
    }
}

fn services(application: Application) -> &'static [&'static str] {
    match application {
        Application::HotelReservation => &[
            "frontend",
            "geo",
            "profile",
            "rate",
            "recommendation",
            "reservation",
            "search",
            "user",
            "mongodb-geo",
            "mongodb-rate",
        ],
        Application::SocialNetwork => &[
            "compose-post-service",
            "home-timeline-service",
            "media-service",
            "nginx-thrift",
            "post-storage-service",
            "social-graph-service",
            "text-service",
            "url-shorten-service",
            "user-service",
            "user-timeline-service",
        ],
        Application::AstronomyShop => &[
            "ad",
            "cart",
            "checkout",
            "currency",
            "email",
            "frontend",
            "payment",
            "product-catalog",
            "recommendation",
            "shipping",
        ],
        Application::Flower => &["flower-server", "flower-client-1", "flower-client-2"],
    }
}

fn system_prompt(problem: &Problem) -> String {
    let goal = match problem.task_type {
        TaskType::Detection => "detect whether there are anomalies in the service; submit \"Yes\" or \"No\"",
        TaskType::Localization => "localize the faulty service(s); submit a list of service names",
        TaskType::Analysis => "analyse the root cause; submit the system level and the fault type",
        TaskType::Mitigation => "mitigate the fault so the service works again; call submit() when done",
    };
    format!(
        "You are an expert DevOps engineer assigned to {} in a deployed microservice application. \
         Your goal is to {goal}. Respond with a brief thought followed by exactly one API call in a fenced code block. \
         Available APIs: exec_shell, get_logs, get_metrics, read_metrics, get_traces, read_traces, submit.",
        problem.task_type
    )
}

fn task_description(problem: &Problem) -> String {
    format!(
        "The service you are working with today is {:?}, deployed in namespace {}. Problem {}: perform {} for the \
         application. (This is a simulated episode: no cluster is deployed and no fault is injected.)",
        problem.application,
        namespace(problem.application),
        problem.id,
        problem.task_type
    )
}

fn fenced(thought: &str, call: &str) -> String {
    format!("{thought}\n```\n{call}\n```")
}

/// One investigative step (anything but `submit`).
fn investigate(rng: &mut SmallRng, problem: &Problem) -> (&'static str, String, String) {
    let ns = namespace(problem.application);
    let svcs = services(problem.application);
    let svc = svcs[rng.gen_range(0..svcs.len())];
    match rng.gen_range(0..5) {
        0 => (
            "exec_shell",
            fenced(
                "Let me look at the pods first.",
                &format!("exec_shell(\"kubectl get pods -n {ns}\")"),
            ),
            svcs.iter()
                .map(|s| {
                    format!(
                        "{s}-{:x}   1/1   Running   0   {}m",
                        rng.gen::<u32>() & 0xfffff,
                        rng.gen_range(3..60)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        1 => (
            "get_logs",
            fenced(
                &format!("The {svc} service may tell more."),
                &format!("get_logs(\"{ns}\", \"{svc}\")"),
            ),
            format!(
                "{svc}: handled {} requests, {} errors; last error: {}",
                rng.gen_range(100..5000),
                rng.gen_range(0..50),
                if rng.gen_bool(0.5) {
                    "connection refused"
                } else {
                    "none"
                }
            ),
        ),
        2 => (
            "get_metrics",
            fenced(
                "Metrics over the last minutes should help.",
                &format!("get_metrics(\"{ns}\", 5)"),
            ),
            format!("Metrics data exported to directory: /tmp/metrics/{}", rng.gen::<u32>()),
        ),
        3 => (
            "get_traces",
            fenced("Traces show which calls fail.", &format!("get_traces(\"{ns}\", 5)")),
            format!("Trace data exported to: /tmp/traces/{}.csv", rng.gen::<u32>()),
        ),
        _ => (
            "exec_shell",
            fenced(
                &format!("Check the {svc} service definition."),
                &format!("exec_shell(\"kubectl describe service {svc} -n {ns}\")"),
            ),
            format!(
                "Name: {svc}\nNamespace: {ns}\nType: ClusterIP\nPort: {} TCP\nTargetPort: {}/TCP",
                rng.gen_range(5000..9000),
                rng.gen_range(5000..9000)
            ),
        ),
    }
}

/// The solution (correct or not) and the evaluation for it.
fn submission(rng: &mut SmallRng, problem: &Problem, correct: bool) -> (String, Value, JsonObject) {
    let svcs = services(problem.application);
    let target = svcs[(fnv1a(problem.fault) % svcs.len() as u64) as usize];
    let mut evaluation = JsonObject::new();
    let (call, solution) = match problem.task_type {
        TaskType::Detection => {
            let faulty = !problem.id.starts_with("noop");
            let says_yes = faulty == correct;
            let answer = if says_yes { "Yes" } else { "No" };
            evaluation.insert(
                "Detection Accuracy".into(),
                json!(if correct { "Correct" } else { "Incorrect" }),
            );
            (format!("submit(\"{answer}\")"), json!(answer))
        }
        TaskType::Localization => {
            let chosen = if correct {
                target
            } else {
                svcs.iter().copied().find(|s| *s != target).unwrap_or(target)
            };
            evaluation.insert("Localization Accuracy".into(), json!(if correct { 100.0 } else { 0.0 }));
            evaluation.insert("success".into(), json!(correct));
            evaluation.insert("is_subset".into(), json!(correct));
            (format!("submit([\"{chosen}\"])"), json!([chosen]))
        }
        TaskType::Analysis => {
            let level_correct = correct || rng.gen_bool(0.5);
            let solution = json!({
                "system_level": if level_correct { "Application" } else { "Virtualization" },
                "fault_type": if correct { "Misconfiguration" } else { "Network/Storage Issue" },
            });
            evaluation.insert("system_level_correct".into(), json!(level_correct));
            evaluation.insert("fault_type_correct".into(), json!(correct));
            evaluation.insert("success".into(), json!(correct));
            (format!("submit({solution})"), solution)
        }
        TaskType::Mitigation => {
            evaluation.insert("success".into(), json!(correct));
            ("submit()".to_string(), Value::Null)
        }
    };
    (call, solution, evaluation)
}

fn time_key(task_type: TaskType) -> &'static str {
    match task_type {
        TaskType::Detection => "TTD",
        TaskType::Localization => "TTL",
        TaskType::Analysis => "TTA",
        TaskType::Mitigation => "TTM",
    }
}

/// Plans an episode of `steps` steps (at least one: the submission).
pub(crate) fn plan(problem: &Problem, steps: u32, seed: u64) -> EpisodePlan {
    let mut rng = rng_for(seed, problem.id);
    let system_prompt = system_prompt(problem);
    let task_description = task_description(problem);
    let steps = steps.max(1);
    let mut prompt_tokens = (system_prompt.len() + task_description.len()) as u64 / 4;
    let mut planned = Vec::with_capacity(steps as usize);
    let mut usage_for = |rng: &mut SmallRng, reply: &str, observation: &str| {
        let completion = reply.len() as u64 / 4 + rng.gen_range(10..60);
        let usage = TokenUsage {
            prompt_tokens,
            completion_tokens: completion,
            total_tokens: prompt_tokens + completion,
        };
        prompt_tokens += completion + observation.len() as u64 / 4 + 8;
        usage
    };
    for _ in 1..steps {
        let (action, reply, observation) = investigate(&mut rng, problem);
        let usage = usage_for(&mut rng, &reply, &observation);
        let latency_ms = rng.gen_range(300..2500);
        planned.push(PlannedStep {
            action,
            reply,
            observation,
            usage,
            latency_ms,
        });
    }
    let correct = rng.gen_bool(0.7);
    let (call, solution, mut evaluation) = submission(&mut rng, problem, correct);
    let reply = fenced("I have enough evidence to submit.", &call);
    let observation = "Submission received; the episode has ended.".to_string();
    let usage = usage_for(&mut rng, &reply, &observation);
    let latency_ms = rng.gen_range(300..2500);
    planned.push(PlannedStep {
        action: "submit",
        reply,
        observation,
        usage,
        latency_ms,
    });

    let in_tokens: u64 = planned.iter().map(|s| s.usage.prompt_tokens).sum();
    let out_tokens: u64 = planned.iter().map(|s| s.usage.completion_tokens).sum();
    let agent_seconds: u64 = planned.iter().map(|s| s.latency_ms).sum::<u64>() + 500 * u64::from(steps);
    let agent_seconds = (agent_seconds as f64 / 10.0).round() / 100.0;
    evaluation.insert(time_key(problem.task_type).into(), json!(agent_seconds));
    evaluation.insert("steps".into(), json!(steps));
    evaluation.insert("in_tokens".into(), json!(in_tokens));
    evaluation.insert("out_tokens".into(), json!(out_tokens));

    EpisodePlan {
        system_prompt,
        task_description,
        steps: planned,
        solution,
        evaluation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;
    use crate::trajectory::reward_from_evaluation;

    #[test]
    fn plans_are_reproducible_and_seed_dependent() {
        let problem = catalog::find("misconfig_app_hotel_res-detection-1").unwrap();
        assert_eq!(plan(problem, 5, 42), plan(problem, 5, 42));
        let differs = (0..20).any(|seed| plan(problem, 5, seed) != plan(problem, 5, 42));
        assert!(differs);
    }

    #[test]
    fn evaluation_has_the_keys_of_each_task_type() {
        for (id, keys) in [
            (
                "misconfig_app_hotel_res-detection-1",
                &["Detection Accuracy", "TTD"][..],
            ),
            (
                "misconfig_app_hotel_res-localization-1",
                &["Localization Accuracy", "success", "is_subset", "TTL"][..],
            ),
            (
                "misconfig_app_hotel_res-analysis-1",
                &["system_level_correct", "fault_type_correct", "success", "TTA"][..],
            ),
            ("misconfig_app_hotel_res-mitigation-1", &["success", "TTM"][..]),
        ] {
            let problem = catalog::find(id).unwrap();
            let episode = plan(problem, 3, 7);
            assert_eq!(episode.steps.len(), 3);
            assert_eq!(episode.steps.last().unwrap().action, "submit");
            for key in keys.iter().chain(&["steps", "in_tokens", "out_tokens"]) {
                assert!(episode.evaluation.contains_key(*key), "{id}: missing {key}");
            }
            let reward = reward_from_evaluation(problem.task_type, &episode.evaluation);
            assert!(reward == 0.0 || reward == 1.0);
        }
    }

    #[test]
    fn replies_hold_one_fenced_call() {
        let problem = catalog::find("k8s_target_port-misconfig-analysis-1").unwrap();
        for step in plan(problem, 8, 3).steps {
            assert_eq!(step.reply.matches("```").count(), 2, "{}", step.reply);
            assert!(step.reply.contains(&format!("\n{}(", step.action)), "{}", step.reply);
        }
    }
}
