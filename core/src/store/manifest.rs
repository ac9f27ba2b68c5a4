//! The project manifest: which runs have been compacted, into which Parquet files.
//!
//! The manifest is a set of entries, one object each, written once by a compaction after its
//! Parquet files are complete: a run is compacted exactly when an entry claims it. Readers fold
//! every entry (in id order, ids are UUIDv7) into a [`Manifest`]. Each claim names the live
//! segments it consumed (per writer, a range of sequence numbers), so that segments a run writes
//! after being compacted (an MLflow run resumed later) are still read from the live area.
//!
//! Extension tables (rows appended by plugins and the MLflow trace endpoints) get one entry per
//! append; their compaction writes an entry whose files *replace* earlier files of the same
//! table (`replaces`). Of two such entries replacing a file in common, the earlier one (by id)
//! wins and the later one is void: its files are never read, so no row is read twice either.
//!
//! Two compactions racing for one run would both claim it. Of overlapping claims on a run the
//! one that consumed more segments wins (the earlier entry on a tie) and the loser's rows for
//! that run are ignored, so readers never see a row twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::Store;
use crate::error::{Error, Result};
use crate::schema::Table;

/// Version of the manifest entry format this build reads. An entry is written with the lowest
/// version that has what it holds: 1, or 2 for an entry that replaces files (a reader of
/// version 1 would read the replaced files and their replacement both, so it must refuse).
pub const MANIFEST_VERSION: u32 = 2;

/// The version of every other entry.
pub(crate) const PLAIN_VERSION: u32 = 1;
/// The version of an entry that replaces files.
pub(crate) const REPLACING_VERSION: u32 = 2;

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
    /// Files of extension tables (root-relative paths) that this entry's files replace: their
    /// rows, merged by a compaction. Readers skip them; `gc` deletes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
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
    /// Entries in id (time) order.
    pub entries: Vec<ManifestEntry>,
    /// Per entry id, runs whose rows in that entry's files must be ignored (lost races).
    pub excluded: HashMap<String, HashSet<String>>,
    /// Files replaced by a later entry's files (root-relative path → the replacing entry's
    /// index into `entries`).
    pub replaced: HashMap<String, usize>,
    /// Entries (indexes) whose replacement lost a race: none of their files is read.
    pub void: HashSet<usize>,
    /// Per compacted run, the claims that count, as (entry, claim) indexes into `entries`.
    /// Indexes rather than copies: a project of 10,000 runs folds in about a millisecond.
    claims: HashMap<String, Vec<(u32, u32)>, foldhash::fast::RandomState>,
}

impl Manifest {
    /// Folds entries (any order) into a manifest.
    pub fn fold(mut entries: Vec<ManifestEntry>) -> Manifest {
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        let mut kept: HashMap<&str, Vec<(u32, u32)>, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(
                entries.iter().map(|e| e.runs.len()).sum(),
                foldhash::fast::RandomState::default(),
            );
        let mut excluded: HashMap<String, HashSet<String>> = HashMap::new();
        for (ei, entry) in entries.iter().enumerate() {
            for (ci, claim) in entry.runs.iter().enumerate() {
                let list = kept.entry(claim.run_id.as_str()).or_default();
                let clashes: Vec<usize> = (0..list.len())
                    .filter(|&i| {
                        let (e, c) = list[i];
                        entries[e as usize].runs[c as usize].overlaps(claim)
                    })
                    .collect();
                if clashes.is_empty() {
                    list.push((ei as u32, ci as u32));
                    continue;
                }
                // The claim that consumed more segments wins against every claim it overlaps;
                // each loser's rows of this run are ignored.
                let wins = clashes.iter().all(|&i| {
                    let (e, c) = list[i];
                    claim.segment_count() > entries[e as usize].runs[c as usize].segment_count()
                });
                if wins {
                    for &i in clashes.iter().rev() {
                        let (le, _) = list.remove(i);
                        excluded
                            .entry(entries[le as usize].id.clone())
                            .or_default()
                            .insert(claim.run_id.clone());
                    }
                    list.push((ei as u32, ci as u32));
                } else {
                    excluded
                        .entry(entry.id.clone())
                        .or_default()
                        .insert(claim.run_id.clone());
                }
            }
        }
        let claims = kept
            .into_iter()
            .map(|(run, list)| (run.to_string(), list))
            .collect();
        // Replacements, in id order: one that would replace a file already replaced lost a
        // race with an earlier compaction of the same files.
        let mut replaced: HashMap<String, usize> = HashMap::new();
        let mut void = HashSet::new();
        for (ei, entry) in entries.iter().enumerate() {
            if entry.replaces.is_empty() {
                continue;
            }
            if entry.replaces.iter().any(|p| replaced.contains_key(p)) {
                void.insert(ei);
                continue;
            }
            for p in &entry.replaces {
                replaced.insert(p.clone(), ei);
            }
        }
        Manifest {
            entries,
            excluded,
            replaced,
            void,
            claims,
        }
    }

    /// The files of an extension table (`namespace.name`) that hold its rows now: those of
    /// entries that are not void, less those a later entry replaced; in entry order.
    pub fn extension_files(&self, qualified: &str) -> Vec<&DataFile> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.void.contains(i))
            .flat_map(|(_, e)| e.files.iter())
            .filter(|f| f.table == qualified && !self.replaced.contains_key(&f.path))
            .collect()
    }

    /// Whether an entry holds nothing a reader reads: it claims no run and every file of it is
    /// replaced, or it is void. With the time it became so (µs: the replacing entry's
    /// creation, or its own for a void one).
    pub(crate) fn dead_since(&self, index: usize) -> Option<i64> {
        let e = &self.entries[index];
        if self.void.contains(&index) {
            return Some(e.created);
        }
        if !e.runs.is_empty() || e.files.is_empty() {
            return None;
        }
        e.files
            .iter()
            .map(|f| self.replaced.get(&f.path).map(|&r| self.entries[r].created))
            .try_fold(i64::MIN, |latest, t| t.map(|t| latest.max(t)))
    }

    /// The claims that count for a run (none when it was never compacted).
    pub fn claims(&self, run_id: &str) -> impl Iterator<Item = &RunClaim> {
        self.claims
            .get(run_id)
            .into_iter()
            .flatten()
            .map(|&(e, c)| &self.entries[e as usize].runs[c as usize])
    }

    /// Every compacted run with the number of claims that count for it.
    pub fn claim_counts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.claims.iter().map(|(r, l)| (r.as_str(), l.len()))
    }

    /// Whether the run has been compacted (at least once).
    pub fn is_compacted(&self, run_id: &str) -> bool {
        self.claims.contains_key(run_id)
    }

    /// Whether a live segment was consumed by a compaction.
    pub fn consumed_segment(&self, run_id: &str, writer: &str, seq: u64) -> bool {
        self.claims(run_id).any(|c| c.covers(writer, seq))
    }

    /// Whether a run-record snapshot is no newer than one a compaction consumed.
    pub fn consumed_meta(&self, run_id: &str, snapshot: &str) -> bool {
        self.claims(run_id).any(|c| snapshot <= c.meta.as_str())
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
    ///
    /// Entries never change once written, so the folded manifest is cached per project and
    /// reused while a listing shows the same entries; a new compaction's entry is fetched alone.
    pub async fn read_manifest(&self, project: &str) -> Result<Arc<Manifest>> {
        let dir = self.layout().manifest(project);
        let mut listed: Vec<ObjectMeta> = self.list_all(&dir).await?;
        listed.retain(|m| m.location.extension() == Some("json"));
        listed.sort_by(|a, b| a.location.cmp(&b.location));
        let names: Vec<String> = listed.iter().map(|m| m.location.to_string()).collect();
        let cached = self.manifest_cache(project);
        if let Some((cached_names, manifest)) = &cached
            && *cached_names == names
        {
            return Ok(manifest.clone());
        }
        let known: HashMap<&str, &ManifestEntry> = cached
            .as_ref()
            .map(|(_, m)| m.entries.iter().map(|e| (e.id.as_str(), e)).collect())
            .unwrap_or_default();
        let mut entries: Vec<ManifestEntry> = Vec::with_capacity(listed.len());
        let mut missing = Vec::new();
        for meta in listed {
            let id = meta
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".json"));
            match id.and_then(|id| known.get(id)) {
                Some(e) => entries.push((*e).clone()),
                None => missing.push(meta),
            }
        }
        let fetched: Vec<ManifestEntry> = stream::iter(missing)
            .map(|meta| async move {
                let Some(bytes) = self.get_opt(&meta.location).await? else {
                    return Ok(None);
                };
                // Entries of big projects are large JSON documents: parse them on the blocking
                // pool, so that several are parsed at once on several cores.
                let location = meta.location.clone();
                let parsed = tokio::task::spawn_blocking(move || {
                    serde_json::from_slice::<ManifestEntry>(&bytes)
                })
                .await
                .map_err(|e| Error::Internal(format!("manifest parser panicked: {e}")))?;
                let entry = parsed.map_err(|e| Error::corrupt(&location, e))?;
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
        entries.extend(fetched);
        let manifest = Arc::new(Manifest::fold(entries));
        // Only projects with entries are cached: a server asked about many non-existent
        // projects must not grow the cache.
        if !names.is_empty() {
            self.set_manifest_cache(project, names, manifest.clone());
        }
        Ok(manifest)
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
            replaces: vec![],
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

    fn file(path: &str) -> DataFile {
        DataFile {
            table: "ns.t".into(),
            path: path.into(),
            rows: 1,
            bytes: 1,
        }
    }

    fn appended(id: &str, created: i64, path: &str) -> ManifestEntry {
        ManifestEntry {
            created,
            files: vec![file(path)],
            ..entry(id, vec![])
        }
    }

    fn merged(id: &str, created: i64, path: &str, replaces: &[&str]) -> ManifestEntry {
        ManifestEntry {
            replaces: replaces.iter().map(|p| p.to_string()).collect(),
            ..appended(id, created, path)
        }
    }

    #[test]
    fn of_two_merges_of_the_same_files_the_earlier_wins() {
        let m = Manifest::fold(vec![
            merged("d", 40, "m2", &["f2", "f3"]),
            appended("a", 10, "f1"),
            appended("b", 20, "f2"),
            merged("c", 30, "m1", &["f1", "f2"]),
            appended("e", 50, "f4"),
        ]);
        let paths: Vec<&str> = m
            .extension_files("ns.t")
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        // f3 was never listed; f2 is in m1, so m2 (the later merge) is void and f3's rows,
        // had it existed, would come from f3 itself.
        assert_eq!(paths, ["m1", "f4"]);
        assert!(m.void.contains(&3));
        // a and b are dead since c was made; d since it was; c and e hold rows.
        assert_eq!(m.dead_since(0), Some(30));
        assert_eq!(m.dead_since(1), Some(30));
        assert_eq!(m.dead_since(2), None);
        assert_eq!(m.dead_since(3), Some(40));
        assert_eq!(m.dead_since(4), None);
    }

    #[test]
    fn a_resumed_run_compacted_twice_keeps_both() {
        let m = Manifest::fold(vec![
            entry("a", vec![claim("r", "w1", 0, 5)]),
            entry("b", vec![claim("r", "w2", 0, 2)]),
        ]);
        assert!(m.excluded.is_empty());
        assert_eq!(m.claims("r").count(), 2);
    }
}
