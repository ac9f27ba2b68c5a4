//! The router's state: one part per concern, each handed to handlers only through the request
//! layer's `Read` / `Write` extractors (`Guarded` parts, see request.rs).

use std::sync::Arc;

use axum::extract::FromRef;

use crate::events::Events;
use crate::mlflow;
use crate::request::{Gate, Guarded};
use crate::sql::Sql;

/// Everything the routes share.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) gate: Arc<Gate>,
    pub(crate) sql: Arc<Sql>,
    pub(crate) mlflow: mlflow::State,
    pub(crate) events: Arc<Events>,
}

impl FromRef<AppState> for Guarded<Arc<Gate>> {
    fn from_ref(s: &AppState) -> Self {
        Guarded::new(s.gate.clone())
    }
}

impl FromRef<AppState> for Guarded<Arc<Sql>> {
    fn from_ref(s: &AppState) -> Self {
        Guarded::new(s.sql.clone())
    }
}

/// `/api/sql`: the query engine, and the runs the server holds (flushed before a query, so
/// that SQL reads what MLflow clients were just told is logged).
impl FromRef<AppState> for Guarded<(Arc<Sql>, mlflow::State)> {
    fn from_ref(s: &AppState) -> Self {
        Guarded::new((s.sql.clone(), s.mlflow.clone()))
    }
}

impl FromRef<AppState> for Guarded<mlflow::State> {
    fn from_ref(s: &AppState) -> Self {
        Guarded::new(s.mlflow.clone())
    }
}

impl FromRef<AppState> for Guarded<Arc<Events>> {
    fn from_ref(s: &AppState) -> Self {
        Guarded::new(s.events.clone())
    }
}
