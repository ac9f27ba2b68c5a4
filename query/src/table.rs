//! A core table of the store as a DataFusion table: compacted Parquet files read by DataFusion's
//! Parquet scan, live segments decoded as the query runs, both pruned by project, run and key
//! before anything is opened.
//!
//! Pruning happens at three levels. Projects: a `project = …` filter lists only that project.
//! Runs: a `run_id = …` filter lists only that run's live folder, and skips every Parquet file
//! whose manifest entry does not claim the run (no I/O). Row groups and pages: the filters go to
//! the Parquet scan as a predicate, and the files are sorted by run and key, so statistics skip
//! the rest. Every filter is also applied to the rows afterwards (`Inexact`), so pruning is only
//! ever an optimisation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result as DFResult, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{col, lit};
use futures::{StreamExt, TryStreamExt, stream};
use runql_core::Store;
use runql_core::schema::Table;
use runql_core::store::{ProjectSnapshot, Scan, TableDef, resolve};

use crate::live::{LiveItem, LivePartition, partition};
use crate::pushdown::Pushdown;

/// One of the store's core tables (`runs`, `metrics`, …) over every project.
#[derive(Debug)]
pub struct StoreTable {
    store: Store,
    table: Table,
    schema: SchemaRef,
    objects: ObjectStoreUrl,
}

impl StoreTable {
    pub(crate) fn new(store: Store, table: Table, objects: ObjectStoreUrl) -> StoreTable {
        StoreTable {
            store,
            table,
            schema: table.schema(),
            objects,
        }
    }

    /// Snapshots of the projects the filters select, read concurrently.
    async fn snapshots(&self, pushdown: &Pushdown) -> runql_core::Result<Vec<ProjectSnapshot>> {
        self.store.check_readable().await?;
        let projects: Vec<String> = match &pushdown.projects {
            Some(p) => p.iter().cloned().collect(),
            None => self.store.list_projects().await?,
        };
        let runs: Option<Vec<String>> = pushdown
            .run_ids
            .as_ref()
            .map(|r| r.iter().cloned().collect());
        stream::iter(projects)
            .map(|p| {
                let runs = runs.clone();
                async move { self.store.snapshot(&p, runs.as_deref()).await }
            })
            .buffered(8)
            .try_collect()
            .await
    }
}

/// An extension table (`optuna.trials`): Parquet files appended per project, each made
/// visible by a manifest entry. Pruned by project; row groups by the Parquet predicate.
#[derive(Debug)]
pub struct ExtensionTable {
    store: Store,
    def: TableDef,
    objects: ObjectStoreUrl,
}

impl ExtensionTable {
    pub(crate) fn new(store: Store, def: TableDef, objects: ObjectStoreUrl) -> ExtensionTable {
        ExtensionTable {
            store,
            def,
            objects,
        }
    }
}

#[async_trait]
impl TableProvider for ExtensionTable {
    fn schema(&self) -> SchemaRef {
        self.def.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        crate::pushdown::inexact(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let pushdown = Pushdown::from_filters(filters);
        let schema = self.def.schema.clone();
        let projected = crate::pushdown::projected(&schema, projection)?;
        let projects: Vec<String> = match &pushdown.projects {
            // Only when the table has a project column can the filter name projects.
            Some(p) if schema.column_with_name("project").is_some() => p.iter().cloned().collect(),
            _ => self.store.list_projects().await.map_err(external)?,
        };
        let qualified = self.def.qualified();
        let mut files = Vec::new();
        for project in projects {
            let manifest = self.store.read_manifest(&project).await.map_err(external)?;
            for file in manifest.extension_files(&qualified) {
                let path = self.store.layout().absolute(&file.path);
                files.push(PartitionedFile::new(path.to_string(), file.bytes));
            }
        }
        if files.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        parquet_scan(
            state,
            &self.objects,
            &schema,
            filters,
            projection,
            limit,
            &BTreeSet::new(),
            files,
        )
    }
}

/// Compacted files to scan, grouped by the runs whose rows in them must be skipped.
type FileGroups = BTreeMap<BTreeSet<String>, Vec<PartitionedFile>>;

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        crate::pushdown::inexact(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let mut pushdown = Pushdown::from_filters(filters);
        if self.schema.column_with_name("key").is_none() {
            pushdown.keys = None;
        }
        let projected = crate::pushdown::projected(&self.schema, projection)?;
        if pushdown.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let snapshots = self.snapshots(&pushdown).await.map_err(external)?;
        let table = self.table;
        let resolves = matches!(
            table,
            Table::Runs | Table::Params | Table::Tags | Table::MetricSummary
        );

        let mut groups: FileGroups = BTreeMap::new();
        let mut live: Vec<LiveItem> = Vec::new();
        let mut memory = Vec::new();
        for snap in &snapshots {
            // Runs whose rows sit in several places are read through the store and resolved.
            let split: BTreeSet<String> = if resolves {
                snap.split_runs(table)
                    .into_iter()
                    .filter(|r| pushdown.wants_run(r))
                    .collect()
            } else {
                BTreeSet::new()
            };
            for entry in &snap.manifest.entries {
                let claimed: BTreeSet<&str> =
                    entry.runs.iter().map(|c| c.run_id.as_str()).collect();
                if !claimed.iter().any(|r| pushdown.wants_run(r)) {
                    continue;
                }
                let lost = snap.manifest.excluded.get(&entry.id);
                let skip: BTreeSet<String> = claimed
                    .iter()
                    .filter(|r| {
                        // A compacted run with a newer live record is split, so it is here too.
                        lost.is_some_and(|l| l.contains(**r)) || split.contains(**r)
                    })
                    .map(|r| r.to_string())
                    .collect();
                if claimed
                    .iter()
                    .all(|r| skip.contains(*r) || !pushdown.wants_run(r))
                {
                    continue;
                }
                for file in entry.files.iter().filter(|f| f.table == table.name()) {
                    let path = self.store.layout().absolute(&file.path);
                    groups
                        .entry(skip.clone())
                        .or_default()
                        .push(PartitionedFile::new(path.to_string(), file.bytes));
                }
            }

            if table == Table::Runs {
                let records: Vec<_> = snap
                    .live
                    .values()
                    .filter(|r| pushdown.wants_run(&r.run_id) && !split.contains(&r.run_id))
                    .filter_map(|r| r.effective_record(self.store.stale_after()))
                    .map(|mut r| {
                        r.deleted = snap.deleted.contains(&r.run_id);
                        r
                    })
                    .collect();
                if !records.is_empty() {
                    memory.push(runql_core::store::records_to_batch(&records).map_err(external)?);
                }
            } else {
                live.extend(
                    snap.live
                        .values()
                        .filter(|r| pushdown.wants_run(&r.run_id) && !split.contains(&r.run_id))
                        .filter(|r| {
                            r.segments
                                .get(&crate::live::source_table(table))
                                .is_some_and(|s| !s.is_empty())
                        })
                        .map(|r| LiveItem {
                            project: snap.project.clone(),
                            run: Arc::new(r.clone()),
                        }),
                );
            }

            if !split.is_empty() {
                let scan = Scan {
                    projects: None,
                    run_ids: Some(split.iter().cloned().collect()),
                    keys: pushdown.keys.as_ref().map(|k| k.iter().cloned().collect()),
                };
                let rows = self
                    .store
                    .read_snapshot(snap, table, &scan)
                    .await
                    .map_err(external)?;
                memory.extend(resolve(table, rows).map_err(external)?);
            }
        }

        let partitions = state.config_options().execution.target_partitions.max(1);
        let mut children: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        for (skip, files) in groups {
            children.push(parquet_scan(
                state,
                &self.objects,
                &self.schema,
                filters,
                projection,
                limit,
                &skip,
                files,
            )?);
        }
        if !live.is_empty() {
            let keys = pushdown.keys.clone().map(Arc::new);
            let streams: Vec<Arc<dyn PartitionStream>> = partition(live, table, partitions)
                .into_iter()
                .map(|items| {
                    Arc::new(LivePartition {
                        store: self.store.clone(),
                        table,
                        schema: self.schema.clone(),
                        items,
                        keys: keys.clone(),
                    }) as Arc<dyn PartitionStream>
                })
                .collect();
            children.push(Arc::new(StreamingTableExec::try_new(
                self.schema.clone(),
                streams,
                projection,
                Vec::new(),
                false,
                limit,
            )?));
        }
        if !memory.is_empty() {
            let memory = crate::live::filter_keys(memory, pushdown.keys.as_ref())?;
            children.push(MemorySourceConfig::try_new_exec(
                &[memory],
                self.schema.clone(),
                projection.cloned(),
            )?);
        }
        if children.is_empty() {
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(children)
    }
}

/// A Parquet scan of some files of a table, skipping the rows of `skip`'s runs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn parquet_scan(
    state: &dyn Session,
    objects: &ObjectStoreUrl,
    schema: &SchemaRef,
    filters: &[Expr],
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
    skip: &BTreeSet<String>,
    files: Vec<PartitionedFile>,
) -> DFResult<Arc<dyn ExecutionPlan>> {
    let partitions = state.config_options().execution.target_partitions.max(1);
    let n = partitions.clamp(1, files.len().max(1));
    let mut file_groups: Vec<Vec<PartitionedFile>> = (0..n).map(|_| Vec::new()).collect();
    for (i, f) in files.into_iter().enumerate() {
        file_groups[i % n].push(f);
    }
    let file_groups: Vec<FileGroup> = file_groups.into_iter().map(FileGroup::new).collect();
    let source = file_source(state, objects, schema, filters)?;
    let builder = FileScanConfigBuilder::new(objects.clone(), source).with_file_groups(file_groups);
    if skip.is_empty() {
        let config = builder
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        return Ok(DataSourceExec::from_data_source(config));
    }
    // Rows of runs another place owns (a lost compaction race, a resumed run) are dropped.
    let scan = DataSourceExec::from_data_source(builder.build());
    let list: Vec<Expr> = skip
        .iter()
        .map(|r| lit(ScalarValue::Utf8(Some(r.clone()))))
        .collect();
    let predicate = col("run_id").in_list(list, true);
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    let predicate = state.create_physical_expr(predicate, &df_schema)?;
    let filter = FilterExecBuilder::new(predicate, scan)
        .apply_projection(projection.cloned())?
        .build()?;
    Ok(Arc::new(filter))
}

fn file_source(
    state: &dyn Session,
    objects: &ObjectStoreUrl,
    schema: &SchemaRef,
    filters: &[Expr],
) -> DFResult<Arc<ParquetSource>> {
    let mut options = state.table_options().parquet.clone();
    // Late materialisation: decode `value` only for rows whose `run_id`/`key` match.
    options.global.pushdown_filters = true;
    options.global.reorder_filters = true;
    // Compacted files never change, so their footers and page indexes are cached for the
    // session: a second query of the same runs reads only data pages.
    let runtime = state.runtime_env();
    let reader = CachedParquetFileReaderFactory::new(
        runtime.object_store(objects)?,
        runtime.cache_manager.get_file_metadata_cache(),
    );
    let mut source = ParquetSource::new(schema.clone())
        .with_table_parquet_options(options)
        .with_parquet_file_reader_factory(Arc::new(reader));
    if let Some(predicate) = physical_predicate(state, schema, filters) {
        source = source.with_predicate(predicate);
    }
    Ok(Arc::new(source))
}

/// The filters as one physical predicate, leaving out any that cannot be planned alone.
fn physical_predicate(
    state: &dyn Session,
    schema: &SchemaRef,
    filters: &[Expr],
) -> Option<Arc<dyn datafusion::physical_plan::PhysicalExpr>> {
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).ok()?;
    let usable: Vec<Expr> = filters
        .iter()
        .filter(|f| state.create_physical_expr((*f).clone(), &df_schema).is_ok())
        .cloned()
        .collect();
    let expr = conjunction(usable)?;
    state.create_physical_expr(expr, &df_schema).ok()
}

pub(crate) fn external(e: runql_core::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}
