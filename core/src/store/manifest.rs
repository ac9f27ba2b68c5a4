//! The project manifest: which runs have been compacted, into which Parquet files.
//!
//! The manifest is a set of entries, one object each, written once by a compaction after its
//! Parquet files are complete: a run is compacted exactly when an entry claims it. Readers fold
//! every entry (in id order, ids are UUIDv7) into a [`Manifest`]. Each claim names the live
//! segments it consumed (per writer, a range of sequence numbers), so that segments a run writes
//! after being compacted (an MLflow run resumed later) are still read from the live area.
//!
//! Two compactions racing for one run would both claim it. Of overlapping claims on a run the
//! one that consumed more segments wins (the earlier entry on a tie) and the loser's rows for
//! that run are ignored, so readers never see a row twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};
use crate::schema::Table;

/// Version of the manifest entry format.
pub const MANIFEST_VERSION: u32 = 1;

/// One manifest entry, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub version: u32,
    /// UUIDv7, also the object's name.
    pub id: String,
    /// Microseconds since the Unix epoch.
    pub created: i64,
    pub runs: Vec<RunClaim>,
    pub files: Vec<DataFile>,
}

/// A run compacted by an entry, and the live objects that compaction consumed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunClaim {
    pub run_id: String,
    /// Per writer id, the inclusive range of segment sequence numbers consumed.
    pub segments: BTreeMap<String, (u64, u64)>,
    /// The newest run-record snapshot consumed (its file stem).
    pub meta: String,
}

impl RunClaim {
    fn segment_count(&self) -> u64 {
        self.segments.values().map(|(a, b)| b - a + 1).sum()
    }

    pub(crate) fn overlaps(&self, other: &RunClaim) -> bool {
        self.segments
            .iter()
            .any(|(w, (a, b))| other.segments.get(w).is_some_and(|(c, d)| a <= d && c <= b))
            || (self.segments.is_empty() && other.segments.is_empty() && self.meta == other.meta)
    }

    /// Whether this claim consumed segment `seq` of `writer`.
    pub fn covers(&self, writer: &str, seq: u64) -> bool {
        self.segments
            .get(writer)
            .is_some_and(|(a, b)| (*a..=*b).contains(&seq))
    }
}

/// A Parquet file written by a compaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataFile {
    pub table: String,
    /// Path relative to the store root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// Every entry of a project's manifest, folded.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
    /// Per entry id, runs whose rows in that entry's files must be ignored (lost races).
    pub excluded: HashMap<String, HashSet<String>>,
    /// Per compacted run, the claims that count.
    pub claims: HashMap<String, Vec<RunClaim>>,
}

impl Manifest {
    /// Folds entries (any order) into a manifest.
    pub fn fold(mut entries: Vec<ManifestEntry>) -> Manifest {
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        // Per run: (entry id, claim) of the claims kept so far.
        let mut kept: HashMap<String, Vec<(String, RunClaim)>> = HashMap::new();
        let mut excluded: HashMap<String, HashSet<String>> = HashMap::new();
        for entry in &entries {
            for claim in &entry.runs {
                let list = kept.entry(claim.run_id.clone()).or_default();
                match list.iter().position(|(_, c)| c.overlaps(claim)) {
                    None => list.push((entry.id.clone(), claim.clone())),
                    Some(i) => {
                        if claim.segment_count() > list[i].1.segment_count() {
                            let (loser, _) =
                                std::mem::replace(&mut list[i], (entry.id.clone(), claim.clone()));
                            excluded
                                .entry(loser)
                                .or_default()
                                .insert(claim.run_id.clone());
                        } else {
                            excluded
                                .entry(entry.id.clone())
                                .or_default()
                                .insert(claim.run_id.clone());
                        }
                    }
                }
            }
        }
        let claims = kept
            .into_iter()
            .map(|(run, list)| (run, list.into_iter().map(|(_, c)| c).collect()))
            .collect();
        Manifest {
            entries,
            excluded,
            claims,
        }
    }

    /// Whether the run has been compacted (at least once).
    pub fn is_compacted(&self, run_id: &str) -> bool {
        self.claims.contains_key(run_id)
    }

    /// Whether a live segment was consumed by a compaction.
    pub fn consumed_segment(&self, run_id: &str, writer: &str, seq: u64) -> bool {
        self.claims
            .get(run_id)
            .is_some_and(|cs| cs.iter().any(|c| c.covers(writer, seq)))
    }

    /// Whether a run-record snapshot is no newer than one a compaction consumed.
    pub fn consumed_meta(&self, run_id: &str, snapshot: &str) -> bool {
        self.claims
            .get(run_id)
            .is_some_and(|cs| cs.iter().any(|c| snapshot <= c.meta.as_str()))
    }

    /// The data files of one table, each with the runs to ignore in it.
    pub fn files(&self, table: Table) -> Vec<(&DataFile, Option<&HashSet<String>>)> {
        self.entries
            .iter()
            .flat_map(|e| {
                let excl = self.excluded.get(&e.id);
                e.files
                    .iter()
                    .filter(move |f| f.table == table.name())
                    .map(move |f| (f, excl))
            })
            .collect()
    }
}

impl Store {
    /// Reads and folds a project's manifest.
    pub async fn read_manifest(&self, project: &str) -> Result<Manifest> {
        let dir = self.layout().manifest(project);
        let objects = self.list_all(&dir).await?;
        let entries: Vec<ManifestEntry> = stream::iter(objects)
            .map(|meta| async move {
                let Some(bytes) = self.get_opt(&meta.location).await? else {
                    return Ok(None);
                };
                let entry: ManifestEntry = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::corrupt(&meta.location, e))?;
                if entry.version > MANIFEST_VERSION {
                    return Err(Error::NewerStore {
                        url: self.url().to_string(),
                        found: entry.version,
                        supported: MANIFEST_VERSION,
                    });
                }
                Ok(Some(entry))
            })
            .buffer_unordered(16)
            .try_filter_map(|e| async move { Ok(e) })
            .try_collect()
            .await?;
        Ok(Manifest::fold(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(run: &str, writer: &str, a: u64, b: u64) -> RunClaim {
        RunClaim {
            run_id: run.into(),
            segments: [(writer.to_string(), (a, b))].into_iter().collect(),
            meta: "m".into(),
        }
    }

    fn entry(id: &str, claims: Vec<RunClaim>) -> ManifestEntry {
        ManifestEntry {
            version: 1,
            id: id.into(),
            created: 0,
            runs: claims,
            files: vec![],
        }
    }

    #[test]
    fn racing_claims_keep_the_larger_one() {
        let m = Manifest::fold(vec![
            entry("b", vec![claim("r", "w", 0, 7)]),
            entry("a", vec![claim("r", "w", 0, 5), claim("s", "w", 0, 1)]),
        ]);
        assert!(m.excluded["a"].contains("r"));
        assert!(!m.excluded["a"].contains("s"));
        assert!(!m.excluded.contains_key("b"));
        assert!(m.consumed_segment("r", "w", 7));
        assert!(!m.consumed_segment("r", "w", 8));
    }

    #[test]
    fn a_resumed_run_compacted_twice_keeps_both() {
        let m = Manifest::fold(vec![
            entry("a", vec![claim("r", "w1", 0, 5)]),
            entry("b", vec![claim("r", "w2", 0, 2)]),
        ]);
        assert!(m.excluded.is_empty());
        assert_eq!(m.claims["r"].len(), 2);
    }
}
