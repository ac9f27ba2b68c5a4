//! Project metadata and logged models are immutable records folded in order: writers never
//! rewrite each other's objects, so two handles (two servers) changing the same thing both
//! keep their changes; stores written before the records read as they did.

use runql_core::Store;
use runql_core::store::{ModelChange, NewModel, ProjectChange};

use crate::util::{RawObjects, block_on, temp_store};

#[test]
fn two_writers_changing_one_model_both_keep_their_changes() {
    let (dir, a) = temp_store();
    let b = Store::open(dir.url()).unwrap();
    block_on(a.create_project("p")).unwrap();
    let new = NewModel {
        name: "clf".into(),
        model_type: "sklearn".into(),
        params: vec![("C".into(), "1".into())],
        ..NewModel::default()
    };
    let m = block_on(a.create_model("p", new)).unwrap();
    assert_eq!(m.status, "LOGGED_MODEL_PENDING");
    // Both read the model, then both change it: a read-modify-write would lose one of them.
    let tag = |k: &str| ModelChange {
        set_tags: vec![(k.into(), "v".into())],
        ..ModelChange::default()
    };
    block_on(a.change_model("p", &m.model_id, tag("from_a"))).unwrap();
    block_on(b.change_model("p", &m.model_id, tag("from_b"))).unwrap();
    let ready = ModelChange {
        status: Some("LOGGED_MODEL_READY".into()),
        ..ModelChange::default()
    };
    block_on(b.change_model("p", &m.model_id, ready)).unwrap();
    let got = block_on(a.model("p", &m.model_id)).unwrap().unwrap();
    assert_eq!(
        got.tags.keys().cloned().collect::<Vec<_>>(),
        ["from_a", "from_b"]
    );
    assert_eq!(got.status, "LOGGED_MODEL_READY");
    assert_eq!(got.params.get("C").map(String::as_str), Some("1"));
    assert!(got.updated >= got.created);
    // Deleting is a change too; the files stay where they were.
    block_on(a.put_model_file("p", &m.model_id, "model/MLmodel", "x".into())).unwrap();
    let gone = ModelChange {
        deleted: Some(true),
        delete_tags: vec!["from_a".into()],
        ..ModelChange::default()
    };
    let deleted = block_on(a.change_model("p", &m.model_id, gone)).unwrap();
    assert!(deleted.deleted);
    assert_eq!(deleted.tags.len(), 1);
    assert_eq!(block_on(b.models("p")).unwrap().len(), 1);
    assert_eq!(
        block_on(b.model_files("p", &m.model_id, "")).unwrap(),
        vec![("model".to_string(), None)]
    );
    assert_eq!(
        block_on(b.model_files("p", &m.model_id, "model")).unwrap(),
        vec![("MLmodel".to_string(), Some(1))]
    );
    assert_eq!(
        block_on(b.find_model(&m.model_id))
            .unwrap()
            .map(|m| m.project),
        Some("p".to_string())
    );
    // Bad input never reaches a path.
    assert!(block_on(a.model("p", "../../etc")).unwrap().is_none());
    assert!(block_on(a.put_model_file("p", &m.model_id, "../x", "x".into())).is_err());
    let bad = ModelChange {
        status: Some("SHINY".into()),
        ..ModelChange::default()
    };
    assert!(block_on(a.change_model("p", &m.model_id, bad)).is_err());
}

#[test]
fn project_tags_and_deletion_fold_from_every_writer() {
    let (dir, a) = temp_store();
    let b = Store::open(dir.url()).unwrap();
    block_on(a.create_project("exp")).unwrap();
    let set = |k: &str, v: &str| ProjectChange {
        set_tags: vec![(k.into(), v.into())],
        ..ProjectChange::default()
    };
    block_on(a.change_project("exp", &set("team", "cv"))).unwrap();
    block_on(b.change_project("exp", &set("stage", "dev"))).unwrap();
    block_on(a.change_project("exp", &set("team", "nlp"))).unwrap();
    let deleted = ProjectChange {
        deleted: Some(true),
        delete_tags: vec!["stage".into()],
        ..ProjectChange::default()
    };
    block_on(b.change_project("exp", &deleted)).unwrap();
    let meta = block_on(a.project_meta("exp")).unwrap().unwrap();
    assert!(meta.deleted);
    assert_eq!(
        meta.tags.into_iter().collect::<Vec<_>>(),
        [("team".to_string(), "nlp".to_string())]
    );
    assert!(meta.updated > meta.created);
    assert!(block_on(a.project_meta("nope")).unwrap().is_none());
    assert!(block_on(a.change_project("nope", &set("k", "v"))).is_err());
}

/// Stores written before the records kept experiment tags as `tags/<key>`, a
/// `project.deleted` marker and one `model.json` per model: they read as before.
#[test]
fn stores_from_before_the_records_read_as_they_did() {
    let (_dir, store) = temp_store();
    block_on(store.create_project("old")).unwrap();
    let layout = store.layout();
    block_on(store.raw_put(&layout.project_tag("old", "team"), "cv".into())).unwrap();
    block_on(store.raw_put(&layout.project_deleted_marker("old"), "{}".into())).unwrap();
    let id = "m-0123456789abcdef0123456789abcdef";
    let legacy = r#"{"model_id":"m-0123456789abcdef0123456789abcdef","project":"old","name":"old-model","model_type":"","source_run_id":"","status":"LOGGED_MODEL_READY","status_message":"","created_ms":1000,"updated_ms":2000,"tags":[["k","v"]],"params":[],"deleted":false}"#;
    block_on(store.raw_put(&layout.legacy_model_record("old", id), legacy.into())).unwrap();
    let meta = block_on(store.project_meta("old")).unwrap().unwrap();
    assert!(meta.deleted);
    assert_eq!(meta.tags.get("team").map(String::as_str), Some("cv"));
    // A restore is a record after the marker.
    let restore = ProjectChange {
        deleted: Some(false),
        ..ProjectChange::default()
    };
    block_on(store.change_project("old", &restore)).unwrap();
    assert!(
        !block_on(store.project_meta("old"))
            .unwrap()
            .unwrap()
            .deleted
    );
    let m = block_on(store.model("old", id)).unwrap().unwrap();
    assert_eq!(
        (m.name.as_str(), m.status.as_str()),
        ("old-model", "LOGGED_MODEL_READY")
    );
    assert_eq!((m.created, m.updated), (1_000_000, 2_000_000));
    let change = ModelChange {
        set_tags: vec![("k".into(), "w".into())],
        ..ModelChange::default()
    };
    let m = block_on(store.change_model("old", id, change)).unwrap();
    assert_eq!(m.tags.get("k").map(String::as_str), Some("w"));
    assert_eq!(m.name, "old-model");
}

#[test]
fn long_and_unicode_project_names_are_listed_by_their_names() {
    let (_dir, store) = temp_store();
    let chinese = "实验".repeat(17); // 306 bytes once encoded: past a file name's 255
    let long = format!("{}/end", "x".repeat(400));
    for name in [&chinese, &long, &"short".to_string()] {
        block_on(store.create_project(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let mut want = vec![chinese.clone(), long.clone(), "short".to_string()];
    want.sort();
    assert_eq!(block_on(store.list_projects()).unwrap(), want);
    assert_eq!(
        block_on(store.project_record(&chinese))
            .unwrap()
            .map(|r| r.name),
        Some(chinese.clone())
    );
    // Past the limit: a clear error naming it.
    let err = block_on(store.create_project(&"x".repeat(501))).unwrap_err();
    assert!(err.to_string().contains("the limit is 500"), "{err}");
}

#[cfg(unix)]
#[test]
fn artifact_reads_refuse_symbolic_links_out_of_the_store() {
    let (_dir, store) = temp_store();
    let Some(root) = store.local_root().map(|r| r.to_path_buf()) else {
        return; // links are a local disk's
    };
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"not for the store's readers").unwrap();
    let digest = block_on(store.put_blob(bytes::Bytes::from_static(b"an artifact")))
        .unwrap()
        .0;
    assert_eq!(
        block_on(store.get_blob(&digest)).unwrap().as_ref(),
        b"an artifact"
    );
    let file = root
        .join("blobs/sha256")
        .join(&digest[..2])
        .join(&digest[2..]);
    assert!(file.exists(), "{}", file.display());
    // The blob's file replaced by a link to a file outside.
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&secret, &file).unwrap();
    let err = block_on(store.get_blob(&digest)).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
    // Its folder replaced by a link to a folder outside.
    let folder = file.parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&folder).unwrap();
    std::fs::create_dir_all(outside.path().join("d")).unwrap();
    std::fs::write(outside.path().join("d").join(&digest[2..]), b"x").unwrap();
    std::os::unix::fs::symlink(outside.path().join("d"), &folder).unwrap();
    let err = block_on(store.get_blob(&digest)).unwrap_err().to_string();
    assert!(err.contains("symbolic link"), "{err}");
}
