//! Extension tables: rows that plugins (or any program) add beside the core tables, each in a
//! namespace named after its producer (`optuna.trials`, `llm.calls`).
//!
//! A table is declared once per store with its Arrow schema (`tables/<ns>/<name>.arrows`, an
//! Arrow IPC stream holding only the schema, so any Arrow implementation reads it). Rows are
//! appended per project as immutable Parquet files under `data/<ns>.<name>/`, each made visible
//! by its own manifest entry — the same commit point as compaction, so a crash mid-append leaves
//! nothing half-visible. The query engine discovers the declarations and serves each namespace
//! as a SQL schema.

use arrow::array::{Array, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::Store;
use super::manifest::{DataFile, Manifest, ManifestEntry, PLAIN_VERSION, REPLACING_VERSION};
use crate::error::{Error, Result};
use crate::model::now_us;

/// Namespaces a producer may not take: SQL's own and the core tables'.
const RESERVED: [&str; 5] = [
    "public",
    "information_schema",
    "runql",
    "pg_catalog",
    "main",
];

/// A declared extension table.
#[derive(Debug, Clone)]
pub struct TableDef {
    /// The producer's name, which becomes the SQL schema (`optuna`).
    pub namespace: String,
    /// The table's name inside it (`trials`).
    pub name: String,
    pub schema: SchemaRef,
}

impl TableDef {
    /// `namespace.name`, as files and manifest entries name it.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

fn check_ident(what: &'static str, value: &str) -> Result<()> {
    let ok = value.len() <= 64
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(Error::InvalidName {
            what,
            value: value.to_string(),
            reason: "use 1-64 lowercase ASCII letters, digits and underscores, starting with a \
                     letter (it becomes a SQL identifier)"
                .into(),
        });
    }
    Ok(())
}

fn encode_schema(schema: &Schema) -> Result<Bytes> {
    let mut buf = Vec::new();
    let mut w = StreamWriter::try_new(&mut buf, schema)?;
    w.finish()?;
    drop(w);
    Ok(Bytes::from(buf))
}

impl Store {
    /// Declares the extension table `namespace.name` with `schema`. Declaring it again with the
    /// same schema is a no-op; with a different one, an error (add a new table instead).
    pub async fn define_table(
        &self,
        namespace: &str,
        name: &str,
        schema: SchemaRef,
    ) -> Result<TableDef> {
        check_ident("table namespace", namespace)?;
        check_ident("table name", name)?;
        if RESERVED.contains(&namespace) {
            return Err(Error::InvalidName {
                what: "table namespace",
                value: namespace.to_string(),
                reason: "it is reserved by SQL or runql; use the producer's name".into(),
            });
        }
        self.ensure_writable().await?;
        let def = TableDef {
            namespace: namespace.to_string(),
            name: name.to_string(),
            schema: schema.clone(),
        };
        let path = self.layout().table_def(namespace, name);
        if !self.put_if_absent(&path, encode_schema(&schema)?).await? {
            let existing = self.read_table_def(namespace, name).await?;
            if existing.schema.fields() != schema.fields() {
                return Err(Error::InvalidValue {
                    what: "table schema",
                    reason: format!(
                        "{} is already declared with columns ({}); rows in the store keep that \
                         schema, so declare a new table (e.g. {}_v2) for the new one",
                        def.qualified(),
                        existing
                            .schema
                            .fields()
                            .iter()
                            .map(|f| format!("{} {}", f.name(), f.data_type()))
                            .collect::<Vec<_>>()
                            .join(", "),
                        name
                    ),
                });
            }
        }
        Ok(def)
    }

    async fn read_table_def(&self, namespace: &str, name: &str) -> Result<TableDef> {
        let path = self.layout().table_def(namespace, name);
        let bytes = self
            .get_opt(&path)
            .await?
            .ok_or_else(|| Error::InvalidValue {
                what: "table",
                reason: format!("{namespace}.{name} is not declared in this store"),
            })?;
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map_err(|e| Error::corrupt(&path, e))?;
        Ok(TableDef {
            namespace: namespace.to_string(),
            name: name.to_string(),
            schema: reader.schema(),
        })
    }

    /// Every declared extension table, sorted by namespace and name.
    pub async fn list_tables(&self) -> Result<Vec<TableDef>> {
        let root = self.layout().table_defs();
        let depth = root.parts().count();
        let mut out = Vec::new();
        for meta in self.list_all(&root).await? {
            let parts: Vec<String> = meta
                .location
                .parts()
                .skip(depth)
                .map(|p| p.as_ref().to_string())
                .collect();
            let [namespace, file] = parts.as_slice() else {
                continue;
            };
            let Some(name) = file.strip_suffix(".arrows") else {
                continue;
            };
            out.push(self.read_table_def(namespace, name).await?);
        }
        out.sort_by_key(TableDef::qualified);
        Ok(out)
    }

    /// Appends rows to the extension table `namespace.name` of `project`: one Parquet file,
    /// visible to readers once its manifest entry is written (all or nothing). Returns the
    /// number of rows appended.
    pub async fn append_rows(
        &self,
        project: &str,
        namespace: &str,
        name: &str,
        batches: &[RecordBatch],
    ) -> Result<u64> {
        let def = self.read_table_def(namespace, name).await?;
        for b in batches {
            if b.schema().fields() != def.schema.fields() {
                return Err(Error::InvalidValue {
                    what: "rows",
                    reason: format!(
                        "rows for {} have columns {:?}, but the table is declared with {:?}",
                        def.qualified(),
                        b.schema()
                            .fields()
                            .iter()
                            .map(|f| f.name())
                            .collect::<Vec<_>>(),
                        def.schema
                            .fields()
                            .iter()
                            .map(|f| f.name())
                            .collect::<Vec<_>>(),
                    ),
                });
            }
        }
        let all = concat_batches(&def.schema, batches)?;
        if all.num_rows() == 0 {
            return Ok(0);
        }
        // Queries prune by `project`, trusting that a project's files hold its rows only.
        if let Some(col) = all.column_by_name("project") {
            let wrong = col
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .map(|p| (0..p.len()).find(|&i| p.is_null(i) || p.value(i) != project));
            match wrong {
                None => {
                    return Err(Error::InvalidValue {
                        what: "rows",
                        reason: format!("{}.project must be a string column", def.qualified()),
                    });
                }
                Some(Some(i)) => {
                    return Err(Error::InvalidValue {
                        what: "rows",
                        reason: format!(
                            "row {i} of {} has project {:?}, but the rows are appended to \
                             project {project:?}",
                            def.qualified(),
                            col.as_any()
                                .downcast_ref::<arrow::array::StringArray>()
                                .filter(|p| p.is_valid(i))
                                .map(|p| p.value(i).to_string())
                        ),
                    });
                }
                Some(None) => {}
            }
        }
        self.create_project(project).await?;
        self.write_table_file(project, &def, std::slice::from_ref(&all), Vec::new())
            .await?;
        Ok(all.num_rows() as u64)
    }
}

/// Files of an extension table smaller than this are merged by a compaction…
const SMALL_FILE_BYTES: u64 = 8 << 20;
/// …once a project has this many of them for one table (one per append: a trace, a plugin
/// run's rows).
pub(crate) const MERGE_AT_FILES: usize = 16;
/// Parquet bytes merged into one file at most.
const MAX_MERGE_BYTES: u64 = 256 << 20;
/// How long replaced files (and the entries that held them) stay after their replacement,
/// for queries that listed them before it; `runql gc` takes its own grace period.
pub(crate) const REPLACED_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// What the compaction of one extension table of a project did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCompaction {
    /// `namespace.name`.
    pub table: String,
    /// Files merged…
    pub files: usize,
    /// …holding this many rows, now in one file.
    pub rows: u64,
}

impl Store {
    /// Merges the small files of each extension table of `project` (when it has at least
    /// `min_files` of them) into one file per table, in the order they were appended. The
    /// merged file replaces them through one manifest entry (all or nothing); the replaced
    /// files are deleted later ([`Store::remove_replaced`]).
    pub(crate) async fn compact_tables(
        &self,
        project: &str,
        manifest: &Manifest,
        min_files: usize,
    ) -> Result<Vec<TableCompaction>> {
        let mut by_table: std::collections::BTreeMap<&str, Vec<&DataFile>> = Default::default();
        for (i, e) in manifest.entries.iter().enumerate() {
            if manifest.void.contains(&i) {
                continue;
            }
            for f in &e.files {
                if f.table.contains('.')
                    && f.bytes < SMALL_FILE_BYTES
                    && !manifest.replaced.contains_key(&f.path)
                {
                    by_table.entry(f.table.as_str()).or_default().push(f);
                }
            }
        }
        let mut out = Vec::new();
        for (qualified, files) in by_table {
            if files.len() < min_files.max(2) {
                continue;
            }
            let Some((namespace, name)) = qualified.split_once('.') else {
                continue;
            };
            let def = match self.read_table_def(namespace, name).await {
                Ok(def) => def,
                Err(e) => {
                    tracing::warn!(table = qualified, error = %e, "not compacting an undeclared table");
                    continue;
                }
            };
            let mut taken = Vec::new();
            let mut bytes = 0u64;
            for f in files {
                if !taken.is_empty() && bytes + f.bytes > MAX_MERGE_BYTES {
                    break;
                }
                bytes += f.bytes;
                taken.push(f);
            }
            if taken.len() < 2 {
                continue;
            }
            match self.merge_files(project, &def, &taken).await {
                Ok(rows) => out.push(TableCompaction {
                    table: qualified.to_string(),
                    files: taken.len(),
                    rows,
                }),
                // Left as they are: the table stays readable, file by file.
                Err(e) => {
                    tracing::warn!(table = qualified, error = %e, "could not compact the table")
                }
            }
        }
        Ok(out)
    }

    /// Every row of the extension table `namespace.name` of `project`, in the order it was
    /// appended (merged files included, replaced ones not); none when the table is not
    /// declared or has no rows there.
    pub async fn table_rows(
        &self,
        project: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<RecordBatch>> {
        let def = match self.read_table_def(namespace, name).await {
            Ok(def) => def,
            Err(Error::InvalidValue { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let manifest = self.read_manifest(project).await?;
        let files = manifest.extension_files(&def.qualified());
        self.read_table_files(&def, &files).await
    }

    /// The rows of some files of an extension table, in order.
    async fn read_table_files(
        &self,
        def: &TableDef,
        files: &[&DataFile],
    ) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        for f in files {
            let path = self.layout().absolute(&f.path);
            let bytes = self.get_opt(&path).await?.ok_or_else(|| Error::Corrupt {
                path: path.to_string(),
                reason: "a file the manifest lists is missing".into(),
            })?;
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .and_then(|b| b.build())
                    .map_err(|e| Error::parquet(&path, e))?;
            for b in reader {
                let b = b?;
                if b.schema().fields() != def.schema.fields() {
                    return Err(Error::corrupt(
                        &path,
                        format!(
                            "its columns are not those {} is declared with",
                            def.qualified()
                        ),
                    ));
                }
                batches.push(b);
            }
        }
        Ok(batches)
    }

    /// Writes the rows of `files` as one file and the entry that makes it replace them.
    async fn merge_files(&self, project: &str, def: &TableDef, files: &[&DataFile]) -> Result<u64> {
        let batches = self.read_table_files(def, files).await?;
        let replaces = files.iter().map(|f| f.path.clone()).collect();
        self.write_table_file(project, def, &batches, replaces)
            .await
    }

    /// Writes rows of an extension table as one Parquet file, then the manifest entry that
    /// makes it visible (and, with `replaces`, hides the files it replaces): all or nothing.
    /// Returns the number of rows written.
    async fn write_table_file(
        &self,
        project: &str,
        def: &TableDef,
        batches: &[RecordBatch],
        replaces: Vec<String>,
    ) -> Result<u64> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let qualified = def.qualified();
        let path = self.layout().extension_file(project, &qualified, &id);
        let (body, rows) = encode_parquet(def, batches, &path)?;
        let size = body.len() as u64;
        self.put(&path, body).await?;
        let entry = ManifestEntry {
            version: if replaces.is_empty() {
                PLAIN_VERSION
            } else {
                REPLACING_VERSION
            },
            id: id.clone(),
            created: now_us(),
            runs: Vec::new(),
            files: vec![DataFile {
                table: qualified,
                path: self.layout().relative(&path),
                rows,
                bytes: size,
            }],
            replaces,
        };
        let body = serde_json::to_vec(&entry).map_err(|e| Error::Internal(e.to_string()))?;
        self.put(
            &self.layout().manifest_entry(project, &id),
            Bytes::from(body),
        )
        .await?;
        Ok(rows)
    }

    /// Deletes the files that a replacement made unread and the manifest entries left holding
    /// nothing, once they have been so for `grace`. Returns (files, bytes) deleted.
    pub(crate) async fn remove_replaced(
        &self,
        project: &str,
        manifest: &Manifest,
        grace: std::time::Duration,
    ) -> Result<(usize, u64)> {
        let cutoff = now_us().saturating_sub(i64::try_from(grace.as_micros()).unwrap_or(i64::MAX));
        let (mut files, mut entries, mut bytes) = (Vec::new(), Vec::new(), 0u64);
        for (i, e) in manifest.entries.iter().enumerate() {
            if manifest.dead_since(i).is_some_and(|t| t < cutoff) {
                for f in &e.files {
                    bytes += f.bytes;
                    files.push(self.layout().absolute(&f.path));
                }
                entries.push(self.layout().manifest_entry(project, &e.id));
            }
        }
        let n = files.len();
        // Files first: an entry left by a crash in between is still dead, and goes next time.
        self.delete_all(files).await?;
        self.delete_all(entries).await?;
        Ok((n, bytes))
    }
}

/// Rows as one Parquet file of an extension table: (bytes, rows).
fn encode_parquet(
    def: &TableDef,
    batches: &[RecordBatch],
    path: &object_store::path::Path,
) -> Result<(Bytes, u64)> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, def.schema.clone(), Some(props))
        .map_err(|e| Error::parquet(path, e))?;
    let mut rows = 0u64;
    for b in batches {
        w.write(b).map_err(|e| Error::parquet(path, e))?;
        rows += b.num_rows() as u64;
    }
    w.close().map_err(|e| Error::parquet(path, e))?;
    Ok((Bytes::from(buf), rows))
}
