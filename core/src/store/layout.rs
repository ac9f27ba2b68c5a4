//! Where every object of a store lives. All paths are built here and nowhere else.
//!
//! ```text
//! runql.json                                       format marker (version), written once
//! projects/<p>/project.json                        project record, written once
//! projects/<p>/live/<run>/meta.<uuid7>.json        run record snapshots; the newest wins
//! projects/<p>/live/<run>/<table>.<writer>-<seq>.arrow   live Arrow IPC segments
//! projects/<p>/data/<table>/<uuid7>.parquet        compacted runs (many runs per file)
//! projects/<p>/manifest/<uuid7>.json               manifest entries: which runs are compacted where
//! projects/<p>/meta/<uuid7>.json                   project metadata changes (tags, deletion)
//! projects/<p>/deleted/<run>                       marker: the run is deleted (MLflow)
//! projects/<p>/models/<id>.<uuid7>.json            a logged model's creation and changes
//! projects/<p>/models/<id>/artifacts/…             its files
//! projects/<p>/ingests/<key>.json                  a file ingested through a plugin
//! tables/<ns>/<name>.arrows                        declared extension table schemas
//! plugins/<name>/plugin.json, <sha256>.wasm        an installed plugin, pinned by sha256
//! blobs/sha256/<2 hex>/<62 hex>                    artifact contents, deduplicated
//! ```
//!
//! `<p>` is the project name with every byte outside `[A-Za-z0-9_.-]` written as `=XX`, so any
//! name (MLflow experiment names often contain `/` and spaces) maps to one path part that
//! every object store accepts. A name whose encoding is longer than [`MAX_PART`] bytes (a
//! 34-character Chinese name already is: 306 bytes, past the 255 a file name may have) is
//! written as the start of its encoding (up to 222 bytes), `==`, and 16 hex digits of its
//! SHA-256; `==` never appears in an encoding (`=` is always followed by two hex digits), and the
//! name itself is read from the project's record.
//!
//! A run's live objects sit side by side in its one folder (format 2). Stores of format 1 had a
//! sub-folder per kind (`live/<run>/meta/<uuid7>.json`, `live/<run>/<table>/<writer>-<seq>.arrow`):
//! they are still read, and written the same way for as long as their marker says format 1, so
//! that older runql versions keep reading them. On a local disk a folder is an inode and a
//! directory block to allocate: a short MLflow run made four folders, now one.

use object_store::path::Path;

use crate::schema::Table;

/// The longest path part [`encode_name`] makes, in bytes: under the 255 a file name may have,
/// and above what any name that fitted on a local disk before shortening encoded to (so those
/// projects keep their folders).
pub const MAX_PART: usize = 240;

/// How much of a long name's encoding its shortened part keeps.
const KEPT: usize = MAX_PART - 18;

/// Encodes a project name as one path part of at most [`MAX_PART`] bytes.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut whole_up_to = 0; // the longest prefix that ends at a whole character, <= KEPT
    let mut utf8 = [0u8; 4];
    for c in name.chars() {
        for &b in c.encode_utf8(&mut utf8).as_bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' {
                out.push(b as char);
            } else {
                out.push('=');
                out.push_str(&format!("{b:02X}"));
            }
        }
        if out.len() <= KEPT {
            whole_up_to = out.len();
        }
    }
    if out.len() <= MAX_PART {
        return out;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    out.truncate(whole_up_to);
    out.push_str("==");
    out.push_str(&hex::encode(&digest[..8]));
    out
}

/// Whether a path part is a shortened name (see [`encode_name`]), whose name only its record
/// knows.
pub fn is_shortened(part: &str) -> bool {
    part.contains("==")
}

/// Decodes a path part made by [`encode_name`]; `None` if it is not one, or if it is a
/// shortened one ([`is_shortened`]).
pub fn decode_name(part: &str) -> Option<String> {
    if is_shortened(part) {
        return None;
    }
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = part.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Builds the paths of one store below its root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: Path,
}

impl Layout {
    pub fn new(root: Path) -> Self {
        Layout { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn join(&self, parts: &[&str]) -> Path {
        let mut p = self.root.clone();
        for part in parts {
            p = p.join(*part);
        }
        p
    }

    pub fn marker(&self) -> Path {
        self.join(&["runql.json"])
    }

    pub fn projects(&self) -> Path {
        self.join(&["projects"])
    }

    pub fn project(&self, project: &str) -> Path {
        self.join(&["projects", &encode_name(project)])
    }

    pub fn project_record(&self, project: &str) -> Path {
        self.project(project).join("project.json")
    }

    pub fn live(&self, project: &str) -> Path {
        self.project(project).join("live")
    }

    pub fn run(&self, project: &str, run_id: &str) -> Path {
        self.live(project).join(run_id)
    }

    /// A run record snapshot; `nested` for a format-1 store (`meta/<uuid7>.json`).
    pub fn run_meta(&self, project: &str, run_id: &str, snapshot: &str, nested: bool) -> Path {
        let run = self.run(project, run_id);
        if nested {
            run.join("meta").join(format!("{snapshot}.json"))
        } else {
            run.join(format!("meta.{snapshot}.json"))
        }
    }

    /// A live segment; `nested` for a format-1 store (`<table>/<writer>-<seq>.arrow`).
    pub fn segment(
        &self,
        project: &str,
        run_id: &str,
        table: Table,
        writer: &str,
        seq: u64,
        nested: bool,
    ) -> Path {
        let run = self.run(project, run_id);
        if nested {
            run.join(table.name())
                .join(format!("{writer}-{seq:010}.arrow"))
        } else {
            run.join(format!("{}.{writer}-{seq:010}.arrow", table.name()))
        }
    }

    pub fn data_file(&self, project: &str, table: Table, id: &str) -> Path {
        self.project(project)
            .join("data")
            .join(table.name())
            .join(format!("{id}.parquet"))
    }

    pub fn manifest(&self, project: &str) -> Path {
        self.project(project).join("manifest")
    }

    /// Marker objects of deleted runs (MLflow's delete/restore): `deleted/<run>`.
    pub fn deleted(&self, project: &str) -> Path {
        self.project(project).join("deleted")
    }

    /// The deletion marker of one run.
    pub fn deleted_marker(&self, project: &str, run_id: &str) -> Path {
        self.deleted(project).join(run_id)
    }

    /// Where a project's logged models live: `models/<id>.<uuid7>.json` records (creation
    /// and changes, see store/models.rs), `models/<id>/artifacts/…` their files.
    pub fn models(&self, project: &str) -> Path {
        self.project(project).join("models")
    }

    /// One record of a logged model.
    pub fn model_record(&self, project: &str, model_id: &str, record: &str) -> Path {
        self.models(project)
            .join(format!("{model_id}.{record}.json"))
    }

    /// The one record of a logged model in stores written before model records.
    pub fn legacy_model_record(&self, project: &str, model_id: &str) -> Path {
        self.models(project).join(model_id).join("model.json")
    }

    /// A file of a logged model, at `rel` (normalised, `/`-separated) below its artifacts.
    pub fn model_file(&self, project: &str, model_id: &str, rel: &str) -> Path {
        rel.split('/').filter(|p| !p.is_empty()).fold(
            self.models(project).join(model_id).join("artifacts"),
            |p, part| p.join(part),
        )
    }

    /// Where a project's MLflow traces live: `traces/<trace id>/<file>` (its `info.json` and
    /// its span data `traces.json`, see store/traces.rs).
    pub fn trace_file(&self, project: &str, trace_id: &str, file: &str) -> Path {
        self.traces(project).join(trace_id).join(file)
    }

    /// The description of one of a project's datasets (see store/datasets.rs).
    pub fn dataset_file(&self, project: &str, key: &str) -> Path {
        self.project(project)
            .join("datasets")
            .join(format!("{key}.json"))
    }

    /// The folder of a project's traces.
    pub fn traces(&self, project: &str) -> Path {
        self.project(project).join("traces")
    }

    /// A project's metadata records (tags, deletion; see store/project_meta.rs).
    pub fn project_meta(&self, project: &str) -> Path {
        self.project(project).join("meta")
    }

    /// One metadata record of a project.
    pub fn project_meta_record(&self, project: &str, record: &str) -> Path {
        self.project_meta(project).join(format!("{record}.json"))
    }

    /// The marker of a project deleted through MLflow's `experiments/delete`, in stores written
    /// before project records (read, no longer written).
    pub fn project_deleted_marker(&self, project: &str) -> Path {
        self.project(project).join("project.deleted")
    }

    /// One tag of a project in stores written before project records (read, no longer written).
    pub fn project_tag(&self, project: &str, key: &str) -> Path {
        self.project(project).join("tags").join(encode_name(key))
    }

    /// Where a project's tags live.
    pub fn project_tags(&self, project: &str) -> Path {
        self.project(project).join("tags")
    }

    /// Where installed plugins live: `plugins/<name>/plugin.json` (what it is, its sha256) and
    /// `plugins/<name>/<sha256>.wasm` (the component).
    pub fn plugins(&self) -> Path {
        self.join(&["plugins"])
    }

    pub fn plugin_record(&self, name: &str) -> Path {
        self.join(&["plugins", name, "plugin.json"])
    }

    pub fn plugin_wasm(&self, name: &str, sha256: &str) -> Path {
        self.join(&["plugins", name, &format!("{sha256}.wasm")])
    }

    /// The record of one file ingested into a project (`ingests/<key>.json`): re-ingesting the
    /// same file finds it and writes nothing.
    pub fn ingest_marker(&self, project: &str, key: &str) -> Path {
        self.project(project)
            .join("ingests")
            .join(format!("{key}.json"))
    }

    /// The declared schema of an extension table `namespace.name`.
    pub fn table_def(&self, namespace: &str, name: &str) -> Path {
        self.join(&["tables", namespace, &format!("{name}.arrows")])
    }

    /// Where extension table definitions live.
    pub fn table_defs(&self) -> Path {
        self.join(&["tables"])
    }

    /// A Parquet file of rows appended to an extension table.
    pub fn extension_file(&self, project: &str, qualified: &str, id: &str) -> Path {
        self.project(project)
            .join("data")
            .join(qualified)
            .join(format!("{id}.parquet"))
    }

    pub fn manifest_entry(&self, project: &str, id: &str) -> Path {
        self.manifest(project).join(format!("{id}.json"))
    }

    pub fn blob(&self, sha256_hex: &str) -> Path {
        let (a, b) = sha256_hex.split_at(2.min(sha256_hex.len()));
        self.join(&["blobs", "sha256", a, b])
    }

    /// The path of `full` relative to the root, as manifests record it.
    pub fn relative(&self, full: &Path) -> String {
        let root = self.root.as_ref();
        let s = full.as_ref();
        if root.is_empty() {
            return s.to_string();
        }
        s.strip_prefix(root)
            .map(|r| r.trim_start_matches('/').to_string())
            .unwrap_or_else(|| s.to_string())
    }

    /// The full path of a root-relative path recorded in a manifest.
    pub fn absolute(&self, relative: &str) -> Path {
        let mut p = self.root.clone();
        for part in relative.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }
}

/// What a live segment's file name says: which writer wrote it, and its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    pub writer: String,
    pub seq: u64,
}

/// What a live object is, from its path below `live/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveObject {
    /// A run record snapshot, by its file stem (a UUIDv7: later sorts higher).
    Meta(String),
    /// A segment of a table.
    Segment(Table, SegmentName),
}

impl LiveObject {
    /// What the object at `location` is, given how many path parts the project's `live/`
    /// folder has; its run id with it.
    pub fn at(location: &Path, live_depth: usize) -> Option<(&str, LiveObject)> {
        let parts: Vec<&str> = location.as_ref().split('/').skip(live_depth).collect();
        Self::parse(&parts)
    }

    /// Parses the parts of a path below a project's `live/` folder: `<run>/<file>` (format 2)
    /// or `<run>/<kind>/<file>` (format 1). `None` for anything else (temporary files, strays).
    pub fn parse<'a>(parts: &[&'a str]) -> Option<(&'a str, LiveObject)> {
        let (run, kind, file) = match *parts {
            [run, file] => {
                let (kind, file) = file.split_once('.')?;
                (run, kind, file)
            }
            [run, kind, file] => (run, kind, file),
            _ => return None,
        };
        if kind == "meta" {
            return Some((
                run,
                LiveObject::Meta(file.strip_suffix(".json")?.to_string()),
            ));
        }
        Some((
            run,
            LiveObject::Segment(Table::from_name(kind)?, SegmentName::parse(file)?),
        ))
    }
}

impl SegmentName {
    pub fn parse(file_name: &str) -> Option<SegmentName> {
        let stem = file_name.strip_suffix(".arrow")?;
        let (writer, seq) = stem.rsplit_once('-')?;
        Some(SegmentName {
            writer: writer.to_string(),
            seq: seq.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_shortened_into_distinct_parts() {
        let chinese = "实验".repeat(17); // 34 characters, 102 bytes, 306 encoded
        let part = encode_name(&chinese);
        assert!(part.len() <= MAX_PART, "{}", part.len());
        assert!(is_shortened(&part));
        assert_eq!(decode_name(&part), None);
        // The kept start ends at a whole character.
        let kept = part.split("==").next().unwrap();
        assert!(decode_name(kept).is_some() || kept.is_empty(), "{kept}");
        assert!(chinese.starts_with(&decode_name(kept).unwrap_or_default()));
        // Two long names with the same start get different parts; short names are unchanged.
        let a = format!("{}a", "x".repeat(300));
        let b = format!("{}b", "x".repeat(300));
        assert_ne!(encode_name(&a), encode_name(&b));
        assert_eq!(encode_name(&"x".repeat(MAX_PART)), "x".repeat(MAX_PART));
        assert!(is_shortened(&encode_name(&"x".repeat(MAX_PART + 1))));
        assert!(!is_shortened(&encode_name("a==b")), "= is encoded");
        assert!(!is_shortened(&encode_name("==")));
    }

    #[test]
    fn names_round_trip() {
        for name in ["mnist", "team/vision exp", "損失", "a=b", "x%y#z"] {
            let enc = encode_name(name);
            assert!(!enc.contains('/') && !enc.contains('%') && !enc.contains('#'));
            assert_eq!(decode_name(&enc).as_deref(), Some(name));
            // object_store must not re-encode it.
            assert_eq!(
                object_store::path::PathPart::from(enc.as_str()).as_ref(),
                enc
            );
        }
    }

    #[test]
    fn live_objects_of_both_formats_parse() {
        let l = Layout::new(Path::from("root"));
        let live = l.live("p");
        let depth = live.parts().count();
        for nested in [false, true] {
            let meta = l.run_meta("p", "r1", "0191", nested);
            let seg = l.segment("p", "r1", Table::Metrics, "w7", 3, nested);
            let parse = |p: &Path| {
                let parts: Vec<String> = p
                    .parts()
                    .skip(depth)
                    .map(|x| x.as_ref().to_string())
                    .collect();
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                LiveObject::parse(&parts).map(|(r, o)| (r.to_string(), o))
            };
            assert_eq!(
                parse(&meta),
                Some(("r1".into(), LiveObject::Meta("0191".into())))
            );
            assert_eq!(
                parse(&seg),
                Some((
                    "r1".into(),
                    LiveObject::Segment(
                        Table::Metrics,
                        SegmentName {
                            writer: "w7".into(),
                            seq: 3
                        }
                    )
                ))
            );
            assert_eq!(meta.parts().count(), depth + if nested { 3 } else { 2 });
        }
        // Temporary names, unknown kinds and strays are not live objects.
        for bad in [
            &["r1", "meta.0191.json#123"][..],
            &["r1", "nosuch.w-0000000001.arrow"],
            &["r1", "metrics.w.arrow"],
            &["r1"],
            &["r1", "a", "b", "c"],
        ] {
            assert_eq!(LiveObject::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn segment_names_parse() {
        let s = SegmentName::parse("0191ab-0000000042.arrow");
        assert_eq!(
            s,
            Some(SegmentName {
                writer: "0191ab".into(),
                seq: 42
            })
        );
    }
}
