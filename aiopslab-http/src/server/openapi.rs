//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire types' `ToSchema` derives (core types derive it
//! behind aiopslab-core's `utoipa` feature).

use std::collections::BTreeSet;

use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use super::docs;
use super::error::ErrorBody;
use super::patterns;
use super::routes::{batches, events, experiments, export, groups, leases, system, tasks, webhooks, workers};
use super::wire;

/// The API's OpenAPI document: `ApiDoc::openapi()`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "aiopslab",
        description = "Queue AIOpsLab problem runs, hand them to a fleet of workers (one Kind cluster each), \
and keep everything a run produces: status, logs, the agent's trajectory and the evaluation.\n\n\
Errors are always `{\"error\", \"code\", \"details\"}`, also for a request that is not valid HTTP/1.1 \
(400 `bad_request`), a URI over 65,534 bytes (414 `uri_too_long`) or a request head over ~408 KiB or 100 headers \
(431 `headers_too_large`). A query parameter a route does not list is a 400 `invalid_query` naming it; a JSON \
body must be sent as `application/json` (else 415 `unsupported_media_type`). When tokens are configured, public routes need \
`Authorization: Bearer <client token>` and worker-protocol routes the worker token; `/health` never does."
    ),
    paths(
        tasks::create_task,
        tasks::list_tasks,
        tasks::get_task,
        tasks::cancel_task,
        tasks::get_logs,
        tasks::get_trajectory,
        batches::create_batch,
        groups::get_group,
        experiments::set_experiment,
        experiments::get_experiment,
        experiments::list_experiments,
        webhooks::list_webhooks,
        webhooks::redeliver_webhook,
        export::export_trajectories,
        workers::list_workers,
        workers::get_worker,
        workers::register_worker,
        workers::heartbeat,
        workers::claim,
        workers::deregister_worker,
        events::worker_events,
        leases::extend_lease,
        leases::append_logs,
        leases::save_trajectory,
        leases::finish,
        leases::final_report,
        system::list_problems,
        system::stats,
        system::health,
        system::metrics,
        docs::redoc_page,
        docs::redoc_js,
    ),
    components(schemas(
        ErrorBody,
        wire::TaskView,
        wire::CancelResponse,
        wire::LogsResponse,
        wire::LogStreamEvent,
        wire::HeartbeatResponse,
        wire::ClaimResponse,
        wire::LeaseBody,
        wire::AppendLogsBody,
        wire::SaveTrajectoryBody,
        wire::FinishBody,
        wire::FinalReportBody,
        wire::ProblemList,
        wire::HealthResponse,
        wire::GroupSummary,
        wire::GroupTask,
        aiopslab_core::GroupStatus,
        wire::WebhookList,
        wire::ExperimentList,
        aiopslab_core::Experiment,
        aiopslab_core::NewExperimentSettings,
        aiopslab_core::batch::NewBatch,
        aiopslab_core::batch::CreatedBatch,
        aiopslab_core::export::ExportRecord,
        aiopslab_core::export::ChatMessage,
        aiopslab_core::webhook::WebhookDelivery,
        aiopslab_core::webhook::WebhookAttempt,
        aiopslab_core::webhook::WebhookStatus,
        aiopslab_core::TaskType,
        aiopslab_core::Task,
        aiopslab_core::TaskStatus,
        aiopslab_core::NewTask,
        aiopslab_core::TaskPage,
        aiopslab_core::TaskSort,
        aiopslab_core::LogEntry,
        aiopslab_core::LogLevel,
        aiopslab_core::NewLogEntry,
        aiopslab_core::Worker,
        aiopslab_core::WorkerStatus,
        aiopslab_core::WorkerPage,
        aiopslab_core::WorkerRegistration,
        aiopslab_core::WorkerHeartbeat,
        aiopslab_core::ClaimRequest,
        aiopslab_core::LeaseState,
        aiopslab_core::TaskOutcome,
        aiopslab_core::Trajectory,
        aiopslab_core::StoreStats,
        aiopslab_core::Problem,
    )),
    modifiers(&BearerTokens, &ServedByOthers, &ExactStrings),
    tags(
        (name = "tasks", description = "Submit, follow and cancel problem runs"),
        (name = "experiments", description = "Fair share between experiments: per-experiment concurrency limits; the claim serves the experiments of one priority in turn"),
        (name = "workers", description = "The worker fleet"),
        (name = "worker protocol", description = "What a (remote) worker calls, under its lease token; guarded by the worker token"),
        (name = "catalog", description = "AIOpsLab's problems"),
        (name = "operations", description = "Health, statistics, metrics"),
        (name = "docs", description = "This document and its viewers"),
    )
)]
pub struct ApiDoc;

/// Declares the two bearer-token schemes the routes refer to.
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["client_token", "worker_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// Declares the routes served by `utoipa-swagger-ui` (the document itself
/// and the Swagger UI page), which have no handler of ours to annotate.
struct ServedByOthers;

impl Modify for ServedByOthers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{HttpMethod, OperationBuilder};
        use utoipa::openapi::{ContentBuilder, ResponseBuilder};

        let page = |id: &str, summary: &str, content_type: &str, description: &str| {
            OperationBuilder::new()
                .operation_id(Some(id))
                .summary(Some(summary))
                .tag("docs")
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description(description)
                        .content(content_type, ContentBuilder::new().build()),
                )
                .build()
        };
        openapi.paths.add_path_operation(
            "/openapi.json",
            vec![HttpMethod::Get],
            page(
                "openapi_json",
                "This OpenAPI 3 document",
                "application/json",
                "The document",
            ),
        );
        let mut docs = page(
            "swagger_ui",
            "Swagger UI",
            "text/html",
            "The Swagger UI page (at /docs/)",
        );
        docs.responses.responses.insert(
            "303".to_string(),
            ResponseBuilder::new().description("Redirect to /docs/").build().into(),
        );
        openapi.paths.add_path_operation("/docs", vec![HttpMethod::Get], docs);
    }
}

/// Describes the UUIDs and RFC 3339 instants a request may carry by what
/// their parsers take (see [`patterns`]) rather than by `format`: `uuid` and
/// `date-time` say less (a JSON Schema validator may ignore them) and, where
/// asserted, less than the server takes (`uuid::Uuid` also reads the simple,
/// braced and URN forms; query values are trimmed). So in every query and
/// path parameter, every request body, and every component a request body
/// reaches, such a string gets the exact `pattern` and loses its `format`.
/// Query values get the trimmed forms; path segments and JSON fields the
/// exact ones. JSON `date-time` fields are left alone: chrono's serde reads
/// them, not `parse_from_rfc3339`. What only responses carry keeps its
/// `format` (the server writes the canonical forms).
struct ExactStrings;

impl Modify for ExactStrings {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;

        let exact = Patterns {
            uuid: patterns::uuid(),
            date_time: None,
        };
        let query = Patterns {
            uuid: patterns::uuid_query(),
            date_time: Some(patterns::rfc3339_query()),
        };
        let mut reached = BTreeSet::new();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for parameter in operation.parameters.iter_mut().flatten() {
                    let patterns = match parameter.parameter_in {
                        ParameterIn::Query => &query,
                        _ => &exact,
                    };
                    parameter
                        .schema
                        .iter_mut()
                        .for_each(|schema| patterns.apply(schema, &mut reached));
                }
                for content in operation
                    .request_body
                    .iter_mut()
                    .flat_map(|body| body.content.values_mut())
                {
                    content
                        .schema
                        .iter_mut()
                        .for_each(|schema| exact.apply(schema, &mut reached));
                }
            }
        }
        // The components request bodies reach, through the references of
        // those they reach.
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let mut done = BTreeSet::new();
        while let Some(name) = reached.iter().find(|name| !done.contains(*name)).cloned() {
            done.insert(name.clone());
            if let Some(schema) = components.schemas.get_mut(&name) {
                exact.apply(schema, &mut reached);
            }
        }
    }
}

/// The patterns [`ExactStrings`] gives one place of the document.
struct Patterns {
    uuid: String,
    /// `None` leaves `date-time` strings alone.
    date_time: Option<String>,
}

impl Patterns {
    /// Rewrites `schema` and what it nests; adds the names of the components
    /// it refers to to `reached`.
    fn apply(&self, schema: &mut RefOr<Schema>, reached: &mut BTreeSet<String>) {
        use utoipa::openapi::schema::{AdditionalProperties, ArrayItems, KnownFormat, SchemaFormat};

        let schema = match schema {
            RefOr::T(schema) => schema,
            RefOr::Ref(reference) => {
                if let Some(name) = reference.ref_location.strip_prefix("#/components/schemas/") {
                    reached.insert(name.to_string());
                }
                return;
            }
        };
        match schema {
            Schema::Object(object) => {
                let pattern = match &object.format {
                    Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)) => Some(self.uuid.clone()),
                    Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)) => self.date_time.clone(),
                    _ => None,
                };
                if let Some(pattern) = pattern {
                    object.format = None;
                    object.pattern.get_or_insert(pattern);
                }
                object
                    .properties
                    .values_mut()
                    .for_each(|property| self.apply(property, reached));
                if let Some(AdditionalProperties::RefOr(additional)) = object.additional_properties.as_deref_mut() {
                    self.apply(additional, reached);
                }
            }
            Schema::Array(array) => {
                if let ArrayItems::RefOrSchema(items) = &mut array.items {
                    self.apply(items, reached);
                }
            }
            Schema::OneOf(one_of) => one_of.items.iter_mut().for_each(|item| self.apply(item, reached)),
            Schema::AllOf(all_of) => all_of.items.iter_mut().for_each(|item| self.apply(item, reached)),
            Schema::AnyOf(any_of) => any_of.items.iter_mut().for_each(|item| self.apply(item, reached)),
            _ => {}
        }
    }
}
