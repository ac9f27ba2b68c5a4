//! What MLflow says of a dataset beyond the `inputs` row of each run that used it: its source
//! type, source, schema and profile. Kept once per (name, digest) in the project, as the JSON
//! the server was given, at `datasets/<hash of name and digest>.json`, written whole.

use bytes::Bytes;

use super::Store;
use crate::error::Result;

/// The file name of a dataset's description: a hash of its name and digest (both are free
/// text, so neither is a safe path segment by itself).
fn key(name: &str, digest: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0u8]);
    h.update(digest.unwrap_or("").as_bytes());
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// Stores the description of dataset (`name`, `digest`) of `project`, replacing it.
    pub async fn put_dataset(
        &self,
        project: &str,
        name: &str,
        digest: Option<&str>,
        description: Bytes,
    ) -> Result<()> {
        self.ensure_writable().await?;
        self.put(
            &self.layout().dataset_file(project, &key(name, digest)),
            description,
        )
        .await
    }

    /// The description of dataset (`name`, `digest`) of `project`, if one was stored.
    pub async fn dataset(
        &self,
        project: &str,
        name: &str,
        digest: Option<&str>,
    ) -> Result<Option<Bytes>> {
        self.get_opt(&self.layout().dataset_file(project, &key(name, digest)))
            .await
    }
}
