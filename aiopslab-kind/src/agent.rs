//! The agent's settings, resolved from a task's `agent_config` and the
//! worker's defaults, and handed to the driver as a JSON file.
//!
//! `agent_config` describes any OpenAI-compatible chat endpoint: `base_url`,
//! `model`, `temperature`, `top_p`, `max_tokens`, `logprobs`,
//! `top_logprobs`, `request_timeout` (seconds), `max_context_tokens` and
//! `api_key_env`, the *name* of the environment variable holding the key.
//! The key itself never travels through the API (an `agent_config` carrying
//! `api_key` is refused) and never reaches the driver: the driver gets a
//! per-task loopback proxy URL instead of `base_url` ([`AgentSettings::driver_config`]),
//! and the worker's proxy adds the key on the way out.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use aiopslab_core::JsonObject;

use crate::config::KindConfig;

/// Why an `agent_config` cannot be used; `code` is the task's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AgentConfigError {
    /// `invalid_agent_config` or `missing_api_key`.
    pub code: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl AgentConfigError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: "invalid_agent_config",
            message: message.into(),
        }
    }
}

/// The agent's settings. What the driver sees of them is
/// [`AgentSettings::driver_config`], written to `agent.json` in the run
/// directory: the real endpoint and the key's variable stay with the worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSettings {
    /// The real endpoint root (the proxy forwards to `<base_url>/chat/completions`).
    #[serde(skip)]
    pub base_url: String,
    /// The model to ask for.
    pub model: String,
    /// The worker's variable holding the API key, when one should be sent.
    #[serde(skip)]
    pub api_key_env: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Reply length limit.
    pub max_tokens: Option<u64>,
    /// Ask the endpoint for log-probabilities.
    pub logprobs: bool,
    /// How many alternatives per token, with `logprobs`.
    pub top_logprobs: Option<u64>,
    /// Timeout of one call, in seconds.
    pub request_timeout: f64,
    /// Retries of a failed call before the run fails.
    pub retries: u32,
    /// Pause before the first retry, in seconds (doubled each time).
    pub retry_delay: f64,
    /// The name the agent is registered under.
    pub agent_name: String,
    /// The context budget: older turns are trimmed beyond it (the system prompt stays).
    pub max_context_tokens: u64,
}

/// `agent.json`: the settings with the loopback proxy as the endpoint.
#[derive(Serialize)]
struct DriverAgentConfig<'a> {
    base_url: &'a str,
    #[serde(flatten)]
    settings: &'a AgentSettings,
}

fn number(config: &JsonObject, key: &str, min: f64, max: f64) -> Result<Option<f64>, AgentConfigError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(AgentConfigError::invalid(format!(
                "agent_config.{key} must be a number between {min} and {max}, got {value}"
            ))),
        },
    }
}

fn integer(config: &JsonObject, key: &str, min: u64, max: u64) -> Result<Option<u64>, AgentConfigError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(AgentConfigError::invalid(format!(
                "agent_config.{key} must be an integer between {min} and {max}, got {value}"
            ))),
        },
    }
}

fn string(config: &JsonObject, key: &str) -> Result<Option<String>, AgentConfigError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(value) => Err(AgentConfigError::invalid(format!(
            "agent_config.{key} must be a non-empty string, got {value}"
        ))),
    }
}

impl AgentSettings {
    /// Resolves a task's `agent_config` against the worker's defaults.
    pub fn resolve(config: &KindConfig, agent_config: &JsonObject) -> Result<Self, AgentConfigError> {
        if agent_config.contains_key("api_key") {
            return Err(AgentConfigError::invalid(
                "agent_config must not carry secrets: remove `api_key` and set `api_key_env` to the name of \
                 an environment variable on the worker that holds the key",
            ));
        }
        let base_url = string(agent_config, "base_url")?.unwrap_or_else(|| config.default_base_url.clone());
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(AgentConfigError::invalid(format!(
                "agent_config.base_url must be an http:// or https:// URL, got {base_url:?}"
            )));
        }
        let model = string(agent_config, "model")?
            .or_else(|| config.default_model.clone())
            .ok_or_else(|| {
                AgentConfigError::invalid(
                    "agent_config.model is required (this worker has no default model), e.g. {\"model\": \"gpt-4o\"}",
                )
            })?;
        let api_key_env = match string(agent_config, "api_key_env")? {
            Some(name) => {
                if config.child_env(&name).is_none() {
                    return Err(AgentConfigError {
                        code: "missing_api_key",
                        message: format!(
                            "agent_config.api_key_env names {name:?}, but that variable is not set in the worker's \
                             environment; export it before starting the worker"
                        ),
                    });
                }
                Some(name)
            }
            None => config
                .default_api_key_env
                .clone()
                .filter(|name| config.child_env(name).is_some()),
        };
        let logprobs = match agent_config.get("logprobs") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(AgentConfigError::invalid(format!(
                    "agent_config.logprobs must be true or false, got {other}"
                )))
            }
        };
        let request_timeout =
            number(agent_config, "request_timeout", 1.0, 3600.0)?.unwrap_or(config.endpoint_timeout.as_secs_f64());
        let agent_name = string(agent_config, "agent_name")?.unwrap_or_else(|| config.agent_name.clone());
        let max_context_tokens =
            integer(agent_config, "max_context_tokens", 1_000, 10_000_000)?.unwrap_or(config.max_context_tokens);
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            model,
            api_key_env,
            temperature: number(agent_config, "temperature", 0.0, 2.0)?,
            top_p: number(agent_config, "top_p", 0.0, 1.0)?,
            max_tokens: integer(agent_config, "max_tokens", 1, 1_000_000)?,
            logprobs,
            top_logprobs: integer(agent_config, "top_logprobs", 0, 20)?,
            request_timeout,
            retries: config.endpoint_retries,
            retry_delay: config.endpoint_retry_delay.as_secs_f64(),
            agent_name,
            max_context_tokens,
        })
    }

    /// What the driver gets (`agent.json`): these settings with
    /// `proxy_base_url` as the endpoint, and neither the real endpoint nor
    /// the key's variable.
    pub fn driver_config(&self, proxy_base_url: &str) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec_pretty(&DriverAgentConfig {
            base_url: proxy_base_url,
            settings: self,
        })
    }

    /// The API key, read from the worker's environment ([`KindConfig::child_env`]).
    pub fn api_key(&self, config: &KindConfig) -> Option<String> {
        let name = self.api_key_env.as_deref()?;
        config.child_env(name).and_then(|value| value.into_string().ok())
    }

    /// The timeout of one call.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.request_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> JsonObject {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn quickstart_config_takes_the_worker_defaults() {
        let config = KindConfig::builder("w").default_api_key_env(None).build();
        let settings = AgentSettings::resolve(&config, &obj(json!({"model": "gpt-4", "temperature": 0.7}))).unwrap();
        assert_eq!(settings.model, "gpt-4");
        assert_eq!(settings.base_url, "https://api.openai.com/v1");
        assert_eq!(settings.temperature, Some(0.7));
        assert_eq!(settings.api_key_env, None);
        assert_eq!(settings.retries, 3);
    }

    #[test]
    fn refuses_secrets_bad_values_and_unset_key_variables() {
        let config = KindConfig::new("w");
        let err = AgentSettings::resolve(&config, &obj(json!({"model": "m", "api_key": "sk-x"}))).unwrap_err();
        assert_eq!(err.code, "invalid_agent_config");
        let err = AgentSettings::resolve(&config, &obj(json!({"model": "m", "temperature": "hot"}))).unwrap_err();
        assert!(err.message.contains("temperature"));
        let err = AgentSettings::resolve(&config, &obj(json!({}))).unwrap_err();
        assert!(err.message.contains("model"));
        let err = AgentSettings::resolve(
            &config,
            &obj(json!({"model": "m", "api_key_env": "AIOPSLAB_TEST_SURELY_UNSET_VARIABLE"})),
        )
        .unwrap_err();
        assert_eq!(err.code, "missing_api_key");
        let config = KindConfig::builder("w").env("MY_KEY", "secret").build();
        let settings = AgentSettings::resolve(&config, &obj(json!({"model": "m", "api_key_env": "MY_KEY"}))).unwrap();
        assert_eq!(settings.api_key_env.as_deref(), Some("MY_KEY"));
        assert_eq!(settings.api_key(&config).as_deref(), Some("secret"));
        let driver = String::from_utf8(settings.driver_config("http://127.0.0.1:1/t/x/v1").unwrap()).unwrap();
        assert!(!driver.contains("secret") && !driver.contains("MY_KEY") && !driver.contains("api.openai.com"));
        assert!(driver.contains("http://127.0.0.1:1/t/x/v1") && driver.contains("max_context_tokens"));
    }
}
