//! Unknown query parameters are refused: `GET /trajectories/export?problem_idd=x`
//! is a 400 naming `problem_idd`, not the whole dataset.
//!
//! What each route takes comes from the OpenAPI document ([`ApiDoc`]), the
//! same `params(...)` the handlers are annotated with, so the rule and the
//! document cannot drift apart: a route takes exactly its documented query
//! parameters (none, for most). The guard runs as a route layer (it needs
//! the matched route template), after the token check. `/metrics` is left
//! alone (scrapers may add their own parameters), as are `/health` and the
//! docs pages, which are outside the guarded groups.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use aiopslab_core::ValidationError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::OpenApi;

use super::error::ApiError;
use super::openapi::ApiDoc;

/// Routes whose query strings are not checked.
const UNCHECKED: &[&str] = &["/metrics"];

/// The query parameters of every documented operation, by method and route
/// template.
#[derive(Debug, Default)]
pub struct AllowedQueries {
    routes: HashMap<(Method, String), BTreeSet<String>>,
}

impl AllowedQueries {
    /// Reads them from the API's OpenAPI document.
    pub fn from_openapi() -> Self {
        let doc = ApiDoc::openapi();
        let mut routes = HashMap::new();
        for (path, item) in &doc.paths.paths {
            let shared: Vec<String> = query_names(item.parameters.as_deref());
            let operations: [(Method, &Option<Operation>); 5] = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::DELETE, &item.delete),
                (Method::PATCH, &item.patch),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    let mut names: BTreeSet<String> = shared.iter().cloned().collect();
                    names.extend(query_names(operation.parameters.as_deref()));
                    routes.insert((method, path.clone()), names);
                }
            }
        }
        Self { routes }
    }

    /// The names `method route` takes, when the route is documented.
    pub fn of(&self, method: &Method, route: &str) -> Option<&BTreeSet<String>> {
        // axum answers HEAD with the GET handler.
        let method = if method == Method::HEAD { &Method::GET } else { method };
        self.routes.get(&(method.clone(), route.to_string()))
    }

    /// The first name in `query` that `method route` does not take.
    pub fn check(&self, method: &Method, route: &str, query: &str) -> Result<(), ApiError> {
        if query.is_empty() || UNCHECKED.contains(&route) {
            return Ok(());
        }
        let Some(allowed) = self.of(method, route) else {
            return Ok(());
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
            ApiError::invalid_query(&ValidationError::new("query", format!("malformed query string: {e}")))
        })?;
        for (name, _) in pairs {
            if !allowed.contains(&name) {
                let message = if allowed.is_empty() {
                    "unknown query parameter: this route takes none".to_string()
                } else {
                    let list: Vec<&str> = allowed.iter().map(String::as_str).collect();
                    format!("unknown query parameter: this route takes {}", list.join(", "))
                };
                return Err(ApiError::invalid_query(&ValidationError::new(name, message)));
            }
        }
        Ok(())
    }
}

fn query_names(parameters: Option<&[utoipa::openapi::path::Parameter]>) -> Vec<String> {
    parameters
        .unwrap_or_default()
        .iter()
        .filter(|p| p.parameter_in == ParameterIn::Query)
        .map(|p| p.name.clone())
        .collect()
}

/// Middleware: refuses a query parameter the matched route does not take.
pub async fn reject_unknown_query(
    State(allowed): State<Arc<AllowedQueries>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    if let (Some(route), Some(query)) = (route, request.uri().query()) {
        if let Err(error) = allowed.check(request.method(), &route, query) {
            return error.into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_comes_from_the_document() {
        let allowed = AllowedQueries::from_openapi();
        let export = allowed.of(&Method::GET, "/trajectories/export").unwrap();
        assert!(export.contains("problem_id") && export.contains("metadata") && export.contains("format"));
        assert!(!export.contains("problem_idd"));
        let tasks = allowed.of(&Method::GET, "/tasks").unwrap();
        for name in [
            "status",
            "problem_id",
            "worker_id",
            "backend_type",
            "group_id",
            "limit",
            "offset",
            "sort",
        ] {
            assert!(tasks.contains(name), "{name}");
        }
        assert!(
            allowed.of(&Method::POST, "/tasks").unwrap().is_empty(),
            "headers are not query parameters"
        );
        assert_eq!(
            allowed.of(&Method::HEAD, "/tasks/{id}").unwrap(),
            allowed.of(&Method::GET, "/tasks/{id}").unwrap()
        );

        let error = allowed
            .check(&Method::GET, "/trajectories/export", "problem_idd=x")
            .unwrap_err();
        assert_eq!(error.status.as_u16(), 400);
        assert_eq!(error.body.code, "invalid_query");
        assert_eq!(error.body.details["field"], "problem_idd");
        assert!(allowed
            .check(&Method::GET, "/trajectories/export", "problem_id=x&limit=2")
            .is_ok());
        let none = allowed.check(&Method::GET, "/stats", "verbose=1").unwrap_err();
        assert!(none.body.details["message"].as_str().unwrap().contains("takes none"));
        assert!(allowed.check(&Method::GET, "/metrics", "anything=1").is_ok());
        assert!(allowed.check(&Method::GET, "/tasks", "").is_ok());
    }
}
