//! Ingest: a file through a plugin into the store.
//!
//! 1. The plugin is the one named, or the one that recognises the file with the highest score.
//! 2. The file streams through a fresh sandboxed instance in chunks; every row it returns is
//!    checked against the table it targets (a declared plugin table, or a core target).
//! 3. Only when the whole file parsed are rows written: core targets as runs of the project
//!    (the run ingested into, and one child run per run key), plugin tables as extension
//!    tables (`<plugin>.<table>`, with `project` and `run_id` first, a `run_key` column turned
//!    into run ids), each append one atomic commit. A plugin error, a broken limit
//!    or a malformed answer writes nothing.
//! 4. A marker keyed by the file's sha256, the plugin and the target run is written last:
//!    ingesting the same file again finds it and writes nothing twice.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use bytes::Bytes;
use runql_core::model::RunStatus;
use runql_core::{Run, RunId, Store};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::registry::{Ready, Registry};
use crate::sandbox::{Limits, Rows};
use crate::{Error, Result};

/// Bytes handed to the plugin per call.
pub const CHUNK: usize = 1 << 20;
/// Bytes of a file's start shown to `recognize`.
pub const HEAD: usize = 64 << 10;

/// What one ingest did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestReport {
    pub file: String,
    pub sha256: String,
    pub plugin: String,
    pub plugin_version: String,
    /// The run the file went into.
    pub run_id: String,
    /// Child runs created (Optuna trials, say).
    pub child_runs: usize,
    /// Rows written per table (`runql.metrics`, `rl.episodes`…).
    pub rows: BTreeMap<String, u64>,
    /// The file had been ingested before: nothing was written this time.
    #[serde(skip)]
    pub already: bool,
}

/// Called with the number of bytes of the file parsed so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Ingests files into one store.
#[derive(Debug, Clone)]
pub struct Ingester {
    registry: Registry,
    limits: Limits,
}

fn read_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Read {
        path: path.display().to_string(),
        source,
    }
}

/// sha256 and size of a file, streamed.
fn digest_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(read_error(path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(read_error(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

fn head_of(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(read_error(path))?;
    let mut head = Vec::with_capacity(HEAD);
    f.take(HEAD as u64)
        .read_to_end(&mut head)
        .map_err(read_error(path))?;
    Ok(head)
}

/// The schema a plugin table has in the store: `project` and `run_id` (the run the file was
/// ingested into) first, so its rows join the core tables.
pub fn stored_schema(schema: &Schema) -> SchemaRef {
    let mut fields = vec![
        Arc::new(Field::new("project", DataType::Utf8, false)),
        Arc::new(Field::new("run_id", DataType::Utf8, false)),
    ];
    fields.extend(schema.fields().iter().cloned());
    Arc::new(Schema::new(fields))
}

fn with_project(
    batch: &RecordBatch,
    schema: &SchemaRef,
    project: &str,
    run_id: &str,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![project; n])),
        Arc::new(StringArray::from(vec![run_id; n])),
    ];
    columns.extend(batch.columns().iter().cloned());
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Internal(e.to_string()))
}

/// A plugin table's `run_key` column holds core-target run keys: each becomes the id of the
/// run created for it (a key no core row used stays as it is), so the table joins the core
/// tables on it.
fn with_run_ids(batch: &RecordBatch, run_ids: &HashMap<String, String>) -> Result<RecordBatch> {
    let Ok(idx) = batch.schema().index_of("run_key") else {
        return Ok(batch.clone());
    };
    let Some(keys) = batch.column(idx).as_string_opt::<i32>() else {
        return Ok(batch.clone());
    };
    let ids: StringArray = keys
        .iter()
        .map(|k| k.map(|k| run_ids.get(k).map(String::as_str).unwrap_or(k)))
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[idx] = Arc::new(ids);
    RecordBatch::try_new(batch.schema(), columns).map_err(|e| Error::Internal(e.to_string()))
}

/// Whether rows fit a declared schema: same column names and types, in order.
fn fits(declared: &Schema, got: &Schema) -> bool {
    declared.fields().len() == got.fields().len()
        && declared
            .fields()
            .iter()
            .zip(got.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
}

fn columns(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything one file produced, checked, by target.
#[derive(Debug, Default)]
struct Parsed {
    core: HashMap<&'static str, Vec<RecordBatch>>,
    tables: BTreeMap<String, Vec<RecordBatch>>,
}

impl Ingester {
    pub fn new(registry: Registry) -> Ingester {
        Ingester {
            registry,
            limits: Limits::default(),
        }
    }

    /// Limits for each file's parsing.
    pub fn with_limits(mut self, limits: Limits) -> Ingester {
        self.limits = limits;
        self
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The plugin for a file: the one named, or the one recognising it with the highest score.
    pub async fn choose(&self, path: &Path, plugin: Option<&str>) -> Result<Ready> {
        if let Some(name) = plugin {
            return self.registry.get(name).await;
        }
        let owned = path.to_path_buf();
        let head = tokio::task::spawn_blocking(move || head_of(&owned))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut best: Option<(u8, Ready)> = None;
        for p in self.registry.list().await? {
            let ready = self.registry.get(&p.name).await?;
            let sandbox = self.registry.sandbox().clone();
            let (limits, name, head) = (self.limits, file_name.clone(), head.clone());
            let (ready, score) = tokio::task::spawn_blocking(move || {
                let score = ready.loaded.recognize(&sandbox, &limits, &name, &head);
                (ready, score)
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
            // A plugin failing to answer is skipped, not fatal: another may read the file.
            let score = score.unwrap_or(0);
            if score > 0 && best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, ready));
            }
        }
        best.map(|(_, r)| r).ok_or_else(|| Error::Input {
            plugin: "none".into(),
            file: path.display().to_string(),
            message: "no installed plugin recognises this file; name one with --plugin \
                      (runql plugin list shows them)"
                .into(),
        })
    }

    /// Ingests one file into `project`, into run `run` or a new run named after the file.
    pub async fn ingest(
        &self,
        path: &Path,
        project: &str,
        run: Option<&str>,
        plugin: Option<&str>,
        options: &[(String, String)],
        progress: Option<Progress>,
    ) -> Result<IngestReport> {
        let store = self.registry.store().clone();
        let owned = path.to_path_buf();
        let (sha256, _size) = tokio::task::spawn_blocking(move || digest_file(&owned))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let ready = self.choose(path, plugin).await?;
        let key = hex::encode(sha2::Sha256::digest(
            format!("{sha256}\0{}\0{}", ready.plugin.name, run.unwrap_or("")).as_bytes(),
        ));
        if let Some(bytes) = store.ingest_marker(project, &key).await?
            && let Ok(mut report) = serde_json::from_slice::<IngestReport>(&bytes)
        {
            report.already = true;
            return Ok(report);
        }
        let parsed = self.parse(path, &ready, options, progress).await?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let mut report = IngestReport {
            file,
            sha256,
            plugin: ready.plugin.name.clone(),
            plugin_version: ready.plugin.version.clone(),
            run_id: String::new(),
            child_runs: 0,
            rows: BTreeMap::new(),
            already: false,
        };
        store.create_project(project).await?;
        let run_ids = self
            .write_runs(&store, project, run, &parsed, &mut report)
            .await?;
        for (table, batches) in &parsed.tables {
            let declared = ready
                .info
                .tables
                .iter()
                .find(|t| &t.name == table)
                .ok_or_else(|| Error::Internal(format!("{table} vanished")))?;
            let schema = stored_schema(&declared.schema);
            store
                .define_table(&ready.plugin.name, table, schema.clone())
                .await?;
            let rows = batches
                .iter()
                .map(|b| with_run_ids(b, &run_ids))
                .map(|b| with_project(&b?, &schema, project, &report.run_id))
                .collect::<Result<Vec<_>>>()?;
            let n = store
                .append_rows(project, &ready.plugin.name, table, &rows)
                .await?;
            report
                .rows
                .insert(format!("{}.{table}", ready.plugin.name), n);
        }
        let body =
            serde_json::to_vec_pretty(&report).map_err(|e| Error::Internal(e.to_string()))?;
        store
            .mark_ingested(project, &key, Bytes::from(body))
            .await?;
        Ok(report)
    }

    /// Runs the plugin over the whole file and checks every answer; writes nothing.
    async fn parse(
        &self,
        path: &Path,
        ready: &Ready,
        options: &[(String, String)],
        progress: Option<Progress>,
    ) -> Result<Parsed> {
        let sandbox = self.registry.sandbox().clone();
        let limits = self.limits;
        let file = path.to_path_buf();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let options = options.to_vec();
        // The component is shared with the blocking thread through its pre-instantiation.
        let loaded = ready.loaded.clone();
        let rows: Vec<Rows> = tokio::task::spawn_blocking(move || -> Result<Vec<Rows>> {
            let mut session = loaded.session(&sandbox, &limits, &name, &options)?;
            let mut f = std::fs::File::open(&file).map_err(read_error(&file))?;
            let mut buf = vec![0u8; CHUNK];
            let mut done = 0u64;
            let mut out = Vec::new();
            loop {
                let n = read_full(&mut f, &mut buf).map_err(read_error(&file))?;
                if n == 0 {
                    break;
                }
                out.extend(session.feed(&buf[..n])?);
                done += n as u64;
                if let Some(p) = &progress {
                    p(done);
                }
            }
            out.extend(session.finish()?);
            Ok(out)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let contract = |message: String| Error::Contract {
            plugin: ready.plugin.name.clone(),
            message,
        };
        let mut parsed = Parsed::default();
        for (table, batches) in rows {
            if let Some(target) = [
                runql_plugin_sdk::targets::RUNS,
                runql_plugin_sdk::targets::PARAMS,
                runql_plugin_sdk::targets::TAGS,
                runql_plugin_sdk::targets::METRICS,
            ]
            .into_iter()
            .find(|t| *t == table)
            {
                let declared = runql_plugin_sdk::core_schema(target)
                    .ok_or_else(|| Error::Internal(format!("no schema for {target}")))?;
                for b in &batches {
                    if !fits(&declared, &b.schema()) {
                        return Err(contract(format!(
                            "its rows for {target} have columns ({}), not ({})",
                            columns(&b.schema()),
                            columns(&declared)
                        )));
                    }
                }
                parsed.core.entry(target).or_default().extend(batches);
                continue;
            }
            let Some(declared) = ready.info.tables.iter().find(|t| t.name == table) else {
                return Err(contract(format!(
                    "it returned rows for {table:?}, a table it did not declare (it declares {})",
                    ready
                        .info
                        .tables
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            for b in &batches {
                if !fits(&declared.schema, &b.schema()) {
                    return Err(contract(format!(
                        "its rows for {table} have columns ({}), but it declared ({})",
                        columns(&b.schema()),
                        columns(&declared.schema)
                    )));
                }
            }
            parsed.tables.entry(table).or_default().extend(batches);
        }
        Ok(parsed)
    }

    /// Core rows become runs: the target run and its child runs.
    async fn write_runs(
        &self,
        store: &Store,
        project: &str,
        run: Option<&str>,
        parsed: &Parsed,
        report: &mut IngestReport,
    ) -> Result<HashMap<String, String>> {
        let mut by_run: BTreeMap<String, RunRows> = BTreeMap::new();
        collect(parsed, &mut by_run)?;
        let points = Points::new(
            parsed
                .core
                .get(runql_plugin_sdk::targets::METRICS)
                .cloned()
                .unwrap_or_default(),
        );
        // A run key with points but no other row is still a run.
        for key in points.keys() {
            by_run.entry(key.clone()).or_default();
        }
        let (target, previous) = match run {
            Some(id) => {
                let run_id: RunId = id.parse().map_err(|_| Error::Input {
                    plugin: report.plugin.clone(),
                    file: report.file.clone(),
                    message: format!("--run {id:?} is not a run id"),
                })?;
                let record = store.find_run(id).await?;
                let builder = store.project(project).resume(run_id).await?;
                (builder, Some(record.status))
            }
            None => (
                store
                    .project(project)
                    .run()
                    .name(report.file.clone())
                    .tag("runql.ingest.file", report.file.clone())
                    .tag("runql.ingest.plugin", report.plugin.clone()),
                None,
            ),
        };
        let plugin = report.plugin.clone();
        type Written = (
            String,
            usize,
            BTreeMap<String, u64>,
            HashMap<String, String>,
        );
        let written = tokio::task::spawn_blocking(move || -> Result<Written> {
            let root = target.start()?;
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let mut children = 0;
            let mut ids = HashMap::new();
            ids.insert(String::new(), root.id().to_string());
            let own = by_run.remove("").unwrap_or_default();
            own.log(&root, &mut counts)?;
            *counts.entry("runql.metrics".into()).or_default() += points.log("", &root)?;
            for (key, rows) in by_run {
                let mut b = root
                    .child()
                    .name(rows.name.clone().unwrap_or_else(|| key.clone()));
                b = b
                    .tag("runql.ingest.key", key.clone())
                    .tag("runql.ingest.plugin", plugin.clone());
                if let Some(t) = rows.started_us {
                    b = b.started_at(t);
                }
                let child = b.start()?;
                ids.insert(key.clone(), child.id().to_string());
                rows.log(&child, &mut counts)?;
                *counts.entry("runql.metrics".into()).or_default() += points.log(&key, &child)?;
                let status = rows.status();
                match rows.ended_us {
                    Some(t) => child.finish_at(status, t)?,
                    None => child.finish_with(status)?,
                }
                children += 1;
            }
            let id = root.id().to_string();
            match previous {
                Some(status) if status != RunStatus::Running => root.finish_with(status)?,
                Some(_) => root.flush()?,
                None => root.finish()?,
            }
            Ok((id, children, counts, ids))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        report.run_id = written.0;
        report.child_runs = written.1;
        report.rows.extend(written.2);
        Ok(written.3)
    }
}

/// `read` until the buffer is full or the file ends.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What the core targets say about one run key.
#[derive(Debug, Default)]
struct RunRows {
    name: Option<String>,
    status: Option<String>,
    started_us: Option<i64>,
    ended_us: Option<i64>,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
}

/// The `runql.metrics` rows of one ingest, indexed by run key without copying a string: each
/// run's points are logged straight from the Arrow arrays.
struct Points {
    batches: Vec<RecordBatch>,
    /// run key → (batch, row) of its points, in order.
    by_run: HashMap<String, Vec<(u32, u32)>>,
}

impl Points {
    fn new(batches: Vec<RecordBatch>) -> Points {
        let mut by_run: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        for (bi, b) in batches.iter().enumerate() {
            let runs = b.column(0).as_string::<i32>();
            for i in 0..b.num_rows() {
                let key = runs.value(i);
                let at = (bi as u32, i as u32);
                match by_run.get_mut(key) {
                    Some(v) => v.push(at),
                    None => {
                        by_run.insert(key.to_string(), vec![at]);
                    }
                }
            }
        }
        Points { batches, by_run }
    }

    /// Logs a run key's points into its run; returns how many.
    fn log(&self, key: &str, run: &Run) -> Result<u64> {
        let Some(rows) = self.by_run.get(key) else {
            return Ok(0);
        };
        let now = runql_core::model::now_us();
        run.log_points(rows.iter().filter_map(|&(b, i)| {
            let batch = &self.batches[b as usize];
            let c = batch.columns();
            let (i, keys) = (i as usize, c[1].as_string::<i32>());
            if keys.is_null(i) {
                return None;
            }
            let time = c[4].as_primitive::<Int64Type>();
            Some((
                keys.value(i),
                c[2].as_primitive::<Int64Type>().value(i),
                c[3].as_primitive::<Float64Type>().value(i),
                if time.is_null(i) { now } else { time.value(i) },
            ))
        }))?;
        Ok(rows.len() as u64)
    }

    fn keys(&self) -> impl Iterator<Item = &String> {
        self.by_run.keys()
    }
}

impl RunRows {
    fn status(&self) -> RunStatus {
        match self.status.as_deref() {
            Some("failed") => RunStatus::Failed,
            Some("killed") | Some("running") => RunStatus::Killed,
            _ => RunStatus::Finished,
        }
    }

    fn log(&self, run: &Run, counts: &mut BTreeMap<String, u64>) -> Result<()> {
        for (k, v) in &self.params {
            run.log_param(k, v)?;
        }
        for (k, v) in &self.tags {
            run.set_tag(k, v.clone())?;
        }
        if self.status.as_deref() == Some("running") {
            run.set_tag("runql.ingest.status", "running")?;
        }
        *counts.entry("runql.params".into()).or_default() += self.params.len() as u64;
        *counts.entry("runql.tags".into()).or_default() += self.tags.len() as u64;
        Ok(())
    }
}

fn text(a: &ArrayRef, i: usize) -> Option<String> {
    let s = a.as_string::<i32>();
    (!s.is_null(i)).then(|| s.value(i).to_string())
}

fn int(a: &ArrayRef, i: usize) -> Option<i64> {
    let s = a.as_primitive::<Int64Type>();
    (!s.is_null(i)).then(|| s.value(i))
}

/// Groups the core targets' rows by run key.
fn collect(parsed: &Parsed, by_run: &mut BTreeMap<String, RunRows>) -> Result<()> {
    use runql_plugin_sdk::targets;
    for (target, batches) in &parsed.core {
        if *target == targets::METRICS {
            continue;
        }
        for b in batches {
            let c = b.columns();
            for i in 0..b.num_rows() {
                let key = text(&c[0], i).unwrap_or_default();
                let r = by_run.entry(key).or_default();
                match *target {
                    targets::RUNS => {
                        r.name = text(&c[1], i).or(r.name.take());
                        r.status = text(&c[2], i).or(r.status.take());
                        r.started_us = int(&c[3], i).or(r.started_us);
                        r.ended_us = int(&c[4], i).or(r.ended_us);
                    }
                    targets::PARAMS | targets::TAGS => {
                        let (Some(k), Some(v)) = (text(&c[1], i), text(&c[2], i)) else {
                            continue;
                        };
                        if *target == targets::PARAMS {
                            r.params.push((k, v));
                        } else {
                            r.tags.push((k, v));
                        }
                    }
                    // Metrics are logged from their batches (Points), not copied here.
                    _ => {}
                }
            }
        }
    }
    Ok(())
}
