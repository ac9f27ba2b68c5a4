//! What the plugin host keeps in a store: installed plugins (`plugins/<name>/plugin.json`, a
//! record the host writes, and the component it names, `plugins/<name>/<sha256>.wasm`) and the
//! markers of files already ingested (`projects/<p>/ingests/<key>.json`, so that ingesting a
//! file again is a no-op). The records' content is the plugin host's; the paths are the
//! store's.

use bytes::Bytes;

use super::Store;
use crate::error::Result;

impl Store {
    /// The record of installed plugin `name`, as the host wrote it.
    pub async fn plugin_record(&self, name: &str) -> Result<Option<Bytes>> {
        self.get_opt(&self.layout().plugin_record(name)).await
    }

    /// The names of the installed plugins, sorted.
    pub async fn plugin_names(&self) -> Result<Vec<String>> {
        let root = self.layout().plugins();
        let depth = root.parts().count();
        let mut names: Vec<String> = self
            .list_all(&root)
            .await?
            .into_iter()
            .filter_map(|m| {
                let parts: Vec<String> = m
                    .location
                    .parts()
                    .skip(depth)
                    .map(|p| p.as_ref().to_string())
                    .collect();
                match parts.as_slice() {
                    [name, file] if file == "plugin.json" => Some(name.clone()),
                    _ => None,
                }
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// The component of plugin `name` with this sha256.
    pub async fn plugin_wasm(&self, name: &str, sha256: &str) -> Result<Option<Bytes>> {
        self.get_opt(&self.layout().plugin_wasm(name, sha256)).await
    }

    /// Stores a plugin's component, then its record (the commit point: written after the
    /// component it points to). Installing a name again replaces its record.
    pub async fn install_plugin(
        &self,
        name: &str,
        sha256: &str,
        wasm: Bytes,
        record: Bytes,
    ) -> Result<()> {
        self.ensure_writable().await?;
        let layout = self.layout();
        self.put(&layout.plugin_wasm(name, sha256), wasm).await?;
        self.put(&layout.plugin_record(name), record).await
    }

    /// Removes an installed plugin's record and component.
    pub async fn remove_plugin(&self, name: &str, sha256: &str) -> Result<()> {
        let layout = self.layout();
        self.delete_all([layout.plugin_record(name), layout.plugin_wasm(name, sha256)])
            .await
    }

    /// The marker of a file ingested into `project` under `key`, as the host wrote it.
    pub async fn ingest_marker(&self, project: &str, key: &str) -> Result<Option<Bytes>> {
        self.get_opt(&self.layout().ingest_marker(project, key))
            .await
    }

    /// Marks a file as ingested into `project` under `key` (written last: the commit point).
    pub async fn mark_ingested(&self, project: &str, key: &str, body: Bytes) -> Result<()> {
        self.put(&self.layout().ingest_marker(project, key), body)
            .await
    }
}
