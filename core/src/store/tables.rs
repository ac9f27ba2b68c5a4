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
use super::manifest::{DataFile, MANIFEST_VERSION, ManifestEntry};
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
        let id = uuid::Uuid::now_v7().simple().to_string();
        let qualified = def.qualified();
        let path = self.layout().extension_file(project, &qualified, &id);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, def.schema.clone(), Some(props))
            .map_err(|e| Error::parquet(&path, e))?;
        w.write(&all).map_err(|e| Error::parquet(&path, e))?;
        w.close().map_err(|e| Error::parquet(&path, e))?;
        let size = buf.len() as u64;
        self.put(&path, Bytes::from(buf)).await?;
        let entry = ManifestEntry {
            version: MANIFEST_VERSION,
            id: id.clone(),
            created: now_us(),
            runs: Vec::new(),
            files: vec![DataFile {
                table: qualified,
                path: self.layout().relative(&path),
                rows: all.num_rows() as u64,
                bytes: size,
            }],
        };
        let body = serde_json::to_vec(&entry).map_err(|e| Error::Internal(e.to_string()))?;
        self.put(
            &self.layout().manifest_entry(project, &id),
            Bytes::from(body),
        )
        .await?;
        Ok(all.num_rows() as u64)
    }
}
