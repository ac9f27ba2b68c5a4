//! The `projects` table: one row per project of the store with what it has beside its runs —
//! the name it is shown under (an MLflow experiment renamed keeps its id, the `project` its
//! runs are stored and queried under), when it was made and last changed, whether it is
//! deleted, its artifact location and tags. Computed from the projects' metadata records when a
//! query names it.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::common::Result as DFResult;
use runql_core::Store;
use runql_core::schema::{Kind, timestamp_type};

use crate::table::external;

/// The table's name.
pub(crate) const NAME: &str = "projects";

/// What the table holds, for the reference.
pub(crate) const DOC: &str = "One row per project of the store (an MLflow experiment), with its \
     metadata. Computed when a query names it. Join it to the other tables `USING (project)` to \
     show a renamed experiment by its name.";

/// (name, type, nullable, meaning) of each column.
pub(crate) const COLUMNS: &[(&str, Kind, bool, &str)] = &[
    (
        "project",
        Kind::Utf8,
        false,
        "The project's id: what `project` holds in every other table (an MLflow experiment id).",
    ),
    (
        "name",
        Kind::Utf8,
        false,
        "The name it is shown under: the name it was renamed to (MLflow's `experiments/update`), \
         else its id.",
    ),
    (
        "created",
        Kind::Timestamp,
        true,
        "When the project was created; NULL for a project folder without its record.",
    ),
    (
        "updated",
        Kind::Timestamp,
        true,
        "When its metadata (name, tags, deletion) last changed; `created` when it never did.",
    ),
    (
        "deleted",
        Kind::Boolean,
        false,
        "Deleted (MLflow's `experiments/delete`); its runs are kept and still queried.",
    ),
    (
        "artifact_location",
        Kind::Utf8,
        true,
        "The artifact location its creator gave (MLflow's `artifact_location`), as given.",
    ),
    (
        "tags",
        Kind::Utf8,
        false,
        "Its tags (MLflow's experiment tags) as a JSON object with its keys in order, e.g. \
         `{\"team\":\"vision\"}`.",
    ),
];

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|(name, kind, nullable, _)| {
                let t = match kind {
                    Kind::Utf8 => DataType::Utf8,
                    Kind::Int64 => DataType::Int64,
                    Kind::Float64 => DataType::Float64,
                    Kind::Boolean => DataType::Boolean,
                    Kind::Timestamp => timestamp_type(),
                };
                Field::new(*name, t, *nullable)
            })
            .collect::<Vec<_>>(),
    ))
}

/// The table as the store is now.
pub(crate) async fn projects_table(store: &Store) -> DFResult<Arc<dyn TableProvider>> {
    let ids = store.list_projects().await.map_err(external)?;
    let mut project = Vec::with_capacity(ids.len());
    let mut name = Vec::with_capacity(ids.len());
    let (mut created, mut updated) = (Vec::new(), Vec::new());
    let (mut deleted, mut location, mut tags) = (Vec::new(), Vec::new(), Vec::new());
    for id in ids {
        let meta = store.project_meta(&id).await.map_err(external)?;
        match meta {
            Some(m) => {
                name.push(m.display_name.clone().unwrap_or_else(|| m.name.clone()));
                created.push(Some(m.created));
                updated.push(Some(m.updated));
                deleted.push(m.deleted);
                location.push(m.artifact_location.clone());
                tags.push(
                    serde_json::to_string(&m.tags)
                        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
                );
            }
            None => {
                name.push(id.clone());
                created.push(None);
                updated.push(None);
                deleted.push(false);
                location.push(None);
                tags.push("{}".to_string());
            }
        }
        project.push(id);
    }
    let ts = |v: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(project)),
        Arc::new(StringArray::from(name)),
        ts(created),
        ts(updated),
        Arc::new(BooleanArray::from(deleted)),
        Arc::new(StringArray::from(location)),
        Arc::new(StringArray::from(tags)),
    ];
    let schema = schema();
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}
