//! The same SQL on Apache DataFusion Ballista, for questions one machine is too small for.
//!
//! [`Engine::ballista`] connects to a Ballista scheduler and registers every runql table as a
//! plain Parquet table over the store's compacted files (the files the manifests name, across
//! every project). The scheduler plans and its executors read those files themselves, so they
//! must reach the store under the same paths: a local store on one machine or a shared file
//! system, or an object store the cluster is configured for (Ballista's binaries read the
//! usual `AWS_*` variables).
//!
//! Ballista sees compacted data only: rows still in live segments (running runs, runs not yet
//! compacted) are not in its tables, and [`BallistaNotes`] says which projects have some.
//! runql's own functions (`curves`, `sparkline`…) and plugin tables are not available there.

use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use runql_core::{Store, Table};

use crate::engine::Engine;
use crate::error::{Error, Result};

/// What a Ballista engine cannot see, to tell the user before they trust its answers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BallistaNotes {
    /// Per project, the runs with rows not compacted yet (Ballista does not see those rows).
    pub uncompacted: Vec<(String, usize)>,
    /// Per project, the runs whose compacted rows need merging (compacted more than once):
    /// Ballista may count their rows twice where the embedded engine resolves them.
    pub unmerged: Vec<(String, usize)>,
}

impl BallistaNotes {
    /// One line per thing to know, for the user.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (project, n) in &self.uncompacted {
            out.push(format!(
                "project {project:?}: {n} run(s) have data not compacted yet, which Ballista does not see (run `runql compact` first)"
            ));
        }
        for (project, n) in &self.unmerged {
            out.push(format!(
                "project {project:?}: {n} run(s) were compacted more than once; Ballista may count their rows twice"
            ));
        }
        out
    }
}

/// A Ballista scheduler address: `ballista://host:port`, `df://host:port` or `host:port`
/// (port 50050 when left out), as the `df://` URL Ballista's client takes.
pub fn ballista_url(address: &str) -> Result<String> {
    let rest = address
        .strip_prefix("ballista://")
        .or_else(|| address.strip_prefix("df://"))
        .unwrap_or(address)
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains("://") || rest.contains('/') {
        return Err(Error::Distributed(format!(
            "{address:?} is not a Ballista scheduler address: use ballista://HOST:PORT"
        )));
    }
    Ok(if rest.contains(':') {
        format!("df://{rest}")
    } else {
        format!("df://{rest}:50050")
    })
}

impl Engine {
    /// An engine whose queries run on the Ballista cluster whose scheduler is at `address`
    /// (`ballista://host:port`), over the compacted Parquet files of `store`.
    pub async fn ballista(store: Store, address: &str) -> Result<(Engine, BallistaNotes)> {
        store.check_readable().await?;
        let url = ballista_url(address)?;
        // Ballista's client connects lazily, at the first query: a scheduler that is not
        // there would surface as a transport error deep in execution. Ask now instead.
        let host_port = url.trim_start_matches("df://").to_string();
        let unreachable = |reason: String| {
            Error::Distributed(format!(
                "cannot reach the Ballista scheduler at {address}: {reason} (is `ballista-scheduler` running there?)"
            ))
        };
        match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::net::TcpStream::connect(&host_port),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable("no answer within 10 s".into())),
        }
        let ctx = SessionContext::remote(&url)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        // The client reads Parquet footers while planning: give it the store's objects.
        if let Some(base) = object_store_base(&store) {
            ctx.register_object_store(&base, store.object_store());
        }
        let mut files: Vec<Vec<ListingTableUrl>> = vec![Vec::new(); Table::ALL.len()];
        let mut notes = BallistaNotes::default();
        for project in store.list_projects().await? {
            let snapshot = store.snapshot(&project, None).await?;
            let live = snapshot
                .live
                .values()
                .filter(|r| r.record.is_some() || r.segments.values().any(|s| !s.is_empty()))
                .count();
            if live > 0 {
                notes.uncompacted.push((project.clone(), live));
            }
            let unmerged = snapshot
                .manifest
                .claim_counts()
                .filter(|(_, n)| *n > 1)
                .count()
                + snapshot
                    .manifest
                    .excluded
                    .values()
                    .map(|runs| runs.len())
                    .sum::<usize>();
            if unmerged > 0 {
                notes.unmerged.push((project.clone(), unmerged));
            }
            for (i, table) in Table::ALL.iter().enumerate() {
                for (file, _) in snapshot.manifest.files(*table) {
                    files[i].push(file_url(&store, &file.path)?);
                }
            }
        }
        for (table, urls) in Table::ALL.iter().zip(files) {
            if urls.is_empty() {
                continue;
            }
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(table.schema());
            ctx.register_table(table.name(), Arc::new(ListingTable::try_new(config)?))?;
        }
        Ok((Engine::from_parts(ctx, store), notes))
    }
}

/// The URL a data file of the store has for Ballista's nodes.
fn file_url(store: &Store, path: &str) -> Result<ListingTableUrl> {
    let url = match store.local_root() {
        Some(root) => {
            let file = root.join(path);
            let file = std::fs::canonicalize(&file).unwrap_or(file);
            format!("file://{}", file.to_string_lossy())
        }
        None => {
            let base = store.url().trim_end_matches('/');
            format!("{base}/{path}")
        }
    };
    Ok(ListingTableUrl::parse(&url)?)
}

/// `s3://bucket` (the object store's own root) for a store on an object store.
fn object_store_base(store: &Store) -> Option<url::Url> {
    if store.local_root().is_some() {
        return None;
    }
    let url = url::Url::parse(store.url()).ok()?;
    let host = url.host_str()?;
    url::Url::parse(&format!("{}://{host}", url.scheme())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses() {
        assert_eq!(ballista_url("ballista://h:1").unwrap(), "df://h:1");
        assert_eq!(ballista_url("df://h:1").unwrap(), "df://h:1");
        assert_eq!(ballista_url("h").unwrap(), "df://h:50050");
        assert!(ballista_url("http://h:1").is_err());
        assert!(ballista_url("ballista://").is_err());
    }
}
