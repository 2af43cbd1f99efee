//! Batch submission: many tasks in one atomic request, as a group, under an
//! optional idempotency key.
//!
//! Group-relative RL methods run the same problem `n` times and compare the
//! rewards within the group; a batch always creates a group so its tasks and
//! rewards can be queried together.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ValidationError;
use crate::group::GroupPolicy;
use crate::task::{NewTask, Task, TaskSpec};

/// Group ids are UUIDs.
pub type GroupId = Uuid;

/// The most tasks one batch may create.
pub const MAX_BATCH_TASKS: usize = 1000;

/// The longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The body of `POST /tasks/batch`: either an explicit list of tasks, or one
/// task repeated `count` times. Unknown fields are refused.
///
/// A `null` field counts as absent (serde reads it as `None`). Its OpenAPI
/// schema (written by hand below) is the `oneOf` of the two shapes
/// [`NewBatch::validate`] accepts, so a body such as
/// `{"task": null, "tasks": []}` is invalid in the document as it is at the
/// server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBatch {
    /// The tasks to create, in order.
    #[serde(default)]
    pub tasks: Option<Vec<NewTask>>,
    /// One task to repeat `count` times (with `count`; not with `tasks`).
    #[serde(default)]
    pub task: Option<NewTask>,
    /// How many copies of `task`, 1–1000.
    #[serde(default)]
    pub count: Option<i64>,
    /// Valid members the group needs, 1 to its size (default: all of them); see [`crate::group`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_valid: Option<i64>,
    /// Replacements of aborted members the store may create, 0–1000 (default 0: none); see [`crate::group`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_refills: Option<i64>,
}

impl NewBatch {
    /// Checks the shape and every task (errors name `tasks[i].field`), and
    /// gives the batch a fresh group id.
    pub fn validate(self) -> Result<BatchSpec, ValidationError> {
        let requests = match (self.tasks, self.task, self.count) {
            (Some(tasks), None, None) => tasks,
            (None, Some(task), Some(count)) => {
                if !(1..=MAX_BATCH_TASKS as i64).contains(&count) {
                    return Err(ValidationError::new(
                        "count",
                        format!("must be between 1 and {MAX_BATCH_TASKS}, got {count}"),
                    ));
                }
                vec![task; count as usize]
            }
            (None, Some(_), None) => return Err(ValidationError::new("count", "is required with `task`")),
            (None, None, Some(_)) => return Err(ValidationError::new("task", "is required with `count`")),
            (None, None, None) => {
                return Err(ValidationError::new(
                    "tasks",
                    "give either `tasks` (a list) or `task` with `count`",
                ))
            }
            _ => {
                return Err(ValidationError::new(
                    "tasks",
                    "give either `tasks` or `task` with `count`, not both",
                ))
            }
        };
        if requests.is_empty() || requests.len() > MAX_BATCH_TASKS {
            return Err(ValidationError::new(
                "tasks",
                format!(
                    "must hold between 1 and {MAX_BATCH_TASKS} tasks, got {}",
                    requests.len()
                ),
            ));
        }
        let policy = GroupPolicy::validate(self.min_valid, self.max_refills, requests.len())?;
        let specs = requests
            .into_iter()
            .enumerate()
            .map(|(i, request)| {
                request.validate().map_err(|error| ValidationError {
                    field: format!("tasks[{i}].{}", error.field),
                    message: error.message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BatchSpec {
            group_id: Some(GroupId::new_v4()),
            specs,
            policy,
        })
    }
}

/// `{"tasks": [...]}` (1–1000 tasks) or `{"task": {...}, "count": n}`
/// (1–1000), the other fields absent or `null`: exactly what
/// [`NewBatch::validate`] lets through to the tasks' own checks.
#[cfg(feature = "utoipa")]
impl utoipa::PartialSchema for NewBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        use utoipa::openapi::Ref;
        use utoipa::ToSchema as _;

        let task = || Ref::from_schema_name(NewTask::name());
        let absent = || ObjectBuilder::new().schema_type(Type::Null);
        let integer = |minimum: u64, maximum: u64, description: &str| {
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                    Type::Integer,
                    Type::Null,
                ]))
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(minimum))
                .maximum(Some(maximum))
                .description(Some(description.to_string()))
        };
        let min_valid = || {
            integer(
                1,
                MAX_BATCH_TASKS as u64,
                "Valid members the group needs, 1 to the number of tasks (default: all). While the group lacks \
them (counting members still pending or running), an aborted member is replaced, up to `max_refills` times.",
            )
        };
        let max_refills = || {
            integer(
                0,
                u64::from(crate::group::MAX_REFILLS),
                "How many replacements of aborted members the store may create (default 0: none). A replacement \
has the aborted member's problem and parameters, joins the group and names it in `replaces`.",
            )
        };
        let list = ObjectBuilder::new()
            .title(Some("tasks"))
            .description(Some("The tasks to create, in order."))
            .property(
                "tasks",
                ArrayBuilder::new()
                    .items(task())
                    .min_items(Some(1))
                    .max_items(Some(MAX_BATCH_TASKS)),
            )
            .required("tasks")
            .property("task", absent())
            .property("count", absent())
            .property("min_valid", min_valid())
            .property("max_refills", max_refills())
            .additional_properties(Some(AdditionalProperties::<utoipa::openapi::schema::Schema>::FreeForm(
                false,
            )));
        let repeated = ObjectBuilder::new()
            .title(Some("task with count"))
            .description(Some("One task repeated `count` times."))
            .property("task", task())
            .required("task")
            .property(
                "count",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(1))
                    .maximum(Some(MAX_BATCH_TASKS as u64)),
            )
            .required("count")
            .property("tasks", absent())
            .property("min_valid", min_valid())
            .property("max_refills", max_refills())
            .additional_properties(Some(AdditionalProperties::<utoipa::openapi::schema::Schema>::FreeForm(
                false,
            )));
        OneOfBuilder::new()
            .description(Some(
                "Either `tasks` (a list of task requests, each as for `POST /tasks`) or `task` with `count` \
(that task repeated); the other fields absent or null; optionally `min_valid` and `max_refills` for \
group-aware retry. Unknown fields are refused.",
            ))
            .item(list)
            .item(repeated)
            .into()
    }
}

#[cfg(feature = "utoipa")]
impl utoipa::ToSchema for NewBatch {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::PartialSchema as _;
        schemas.push((<NewTask as utoipa::ToSchema>::name().into(), NewTask::schema()));
        <NewTask as utoipa::ToSchema>::schemas(schemas);
    }
}

/// Validated tasks to create together, atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSpec {
    /// The group the tasks join (`None` for a plain single create).
    pub group_id: Option<GroupId>,
    /// The tasks, in order.
    pub specs: Vec<TaskSpec>,
    /// What the group needs and the refills it may use (ignored without a group).
    #[serde(default)]
    pub policy: GroupPolicy,
}

impl BatchSpec {
    /// `specs` with no group (and so no refills): what `create_tasks` inserts.
    pub fn ungrouped(specs: Vec<TaskSpec>) -> Self {
        Self {
            group_id: None,
            specs,
            policy: GroupPolicy::default(),
        }
    }
}

/// A client's `Idempotency-Key` with a fingerprint of the request it came
/// with: the same key with the same request replays the first answer; the
/// same key with a different request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The key, 1–255 visible ASCII characters.
    pub key: String,
    /// A digest of the request (method, path and body), computed by the caller.
    pub fingerprint: String,
}

impl IdempotencyKey {
    /// Checks the key's length and characters.
    pub fn new(key: impl Into<String>, fingerprint: impl Into<String>) -> Result<Self, ValidationError> {
        let key = key.into();
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ValidationError::new(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
            ));
        }
        Ok(Self {
            key,
            fingerprint: fingerprint.into(),
        })
    }
}

/// What creating a batch produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CreatedBatch {
    /// The group the tasks joined, if any.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<uuid::Uuid>))]
    pub group_id: Option<GroupId>,
    /// The tasks, in request order.
    pub tasks: Vec<Task>,
    /// True when an earlier request with the same idempotency key created
    /// them and this answer replays it (nothing new was created).
    pub replayed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_task_makes_a_group() {
        let batch = NewBatch {
            task: Some(NewTask::new("p")),
            count: Some(8),
            ..NewBatch::default()
        }
        .validate()
        .unwrap();
        assert_eq!(batch.specs.len(), 8);
        assert!(batch.group_id.is_some());
        assert_eq!(
            batch.policy,
            crate::group::GroupPolicy::default(),
            "no refills unless asked"
        );
    }

    #[test]
    fn errors_name_the_task_and_field() {
        let err = NewBatch {
            tasks: Some(vec![
                NewTask::new("p"),
                NewTask {
                    max_steps: Some(0),
                    ..NewTask::new("p")
                },
            ]),
            ..NewBatch::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "tasks[1].max_steps");
        for (batch, field) in [
            (NewBatch::default(), "tasks"),
            (
                NewBatch {
                    tasks: Some(vec![]),
                    ..NewBatch::default()
                },
                "tasks",
            ),
            (
                NewBatch {
                    task: Some(NewTask::new("p")),
                    ..NewBatch::default()
                },
                "count",
            ),
            (
                NewBatch {
                    task: Some(NewTask::new("p")),
                    count: Some(1001),
                    ..NewBatch::default()
                },
                "count",
            ),
            (
                NewBatch {
                    count: Some(2),
                    ..NewBatch::default()
                },
                "task",
            ),
            (
                NewBatch {
                    task: Some(NewTask::new("p")),
                    count: Some(8),
                    min_valid: Some(9),
                    ..NewBatch::default()
                },
                "min_valid",
            ),
            (
                NewBatch {
                    tasks: Some(vec![NewTask::new("p")]),
                    max_refills: Some(-1),
                    ..NewBatch::default()
                },
                "max_refills",
            ),
        ] {
            assert_eq!(batch.validate().unwrap_err().field, field);
        }
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert!(IdempotencyKey::new("retry-42", "f").is_ok());
        assert!(IdempotencyKey::new("", "f").is_err());
        assert!(IdempotencyKey::new("has space", "f").is_err());
        assert!(IdempotencyKey::new("x".repeat(256), "f").is_err());
    }
}
