//! Artifact contents: content-addressed blobs under `blobs/sha256/`, deduplicated across runs.

use std::io::Read;
use std::path::Path as FsPath;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Store;
use crate::error::{Error, Result};

/// sha256 of some bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha256_file(path: &FsPath) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

impl Store {
    /// Stores bytes as a blob; returns its sha256 and size. Storing the same bytes twice
    /// writes them once.
    pub async fn put_blob(&self, bytes: Bytes) -> Result<(String, u64)> {
        let digest = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        let path = self.layout().blob(&digest);
        if self.head_opt(&path).await?.is_none() {
            self.put_if_absent(&path, bytes).await?;
        }
        Ok((digest, size))
    }

    /// Stores a local file as a blob, streaming it; returns its sha256 and size.
    pub async fn put_blob_file(&self, file: &FsPath) -> Result<(String, u64)> {
        let read_err = |source| Error::ReadFile {
            path: file.to_path_buf(),
            source,
        };
        let owned = file.to_path_buf();
        let (digest, size) = tokio::task::spawn_blocking(move || sha256_file(&owned))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(read_err)?;
        let path = self.layout().blob(&digest);
        if self.head_opt(&path).await?.is_some() {
            return Ok((digest, size));
        }
        if self.local_root().is_some() || size <= 8 << 20 {
            let owned = file.to_path_buf();
            let bytes = tokio::task::spawn_blocking(move || std::fs::read(owned))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(read_err)?;
            if sha256_hex(&bytes) != digest {
                return Err(Error::InvalidValue {
                    what: "artifact",
                    reason: format!(
                        "{} changed while it was being logged; log it again",
                        file.display()
                    ),
                });
            }
            self.put_if_absent(&path, Bytes::from(bytes)).await?;
        } else {
            // Large file on an object store: a multipart upload, visible only when complete.
            let upload_err = |e: std::io::Error| {
                Error::storage(
                    &path,
                    object_store::Error::Generic {
                        store: "blob upload",
                        source: Box::new(e),
                    },
                )
            };
            let mut w = object_store::buffered::BufWriter::new(self.object_store(), path.clone());
            let mut f = tokio::fs::File::open(file).await.map_err(read_err)?;
            let mut buf = vec![0u8; 8 << 20];
            loop {
                let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf)
                    .await
                    .map_err(read_err)?;
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n]).await.map_err(upload_err)?;
            }
            w.shutdown().await.map_err(upload_err)?;
        }
        Ok((digest, size))
    }

    /// The content of a blob.
    pub async fn get_blob(&self, digest: &str) -> Result<Bytes> {
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidName {
                what: "blob digest",
                value: digest.to_string(),
                reason: "a digest is 64 hex digits (sha256)".into(),
            });
        }
        let path = self.layout().blob(&digest.to_ascii_lowercase());
        self.get_contained(&path)
            .await?
            .ok_or_else(|| Error::Corrupt {
                path: path.to_string(),
                reason: "artifact blob is missing".into(),
            })
    }
}
