//! The local disk, where `object_store`'s local backend falls short: puts that are complete
//! when visible (temp file, fsync, rename, fsync of the folder — and of a folder the put
//! creates), fsyncs of objects written unsynced, and reads, listings and deletes without its
//! per-call overhead, done on the calling thread when it is marked for it
//! ([`do_local_io_inline`]) or on tokio's blocking pool.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectMeta;
use object_store::path::Path;

use super::{Backend, Layout};
use crate::error::{Error, Result};

thread_local! {
    /// Whether this thread does local-disk I/O itself rather than on tokio's blocking pool.
    static INLINE_IO: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as one that may block on local-disk I/O: a run's writer thread,
/// which exists to wait on the store. Its local reads and writes then run on it directly
/// instead of being handed to tokio's blocking pool and back (two thread switches an object).
pub(crate) fn do_local_io_inline() {
    INLINE_IO.with(|c| c.set(true));
}

/// Runs blocking local-disk work: on this thread when it is marked for it, else on tokio's
/// blocking pool.
pub(super) async fn local_io<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    if INLINE_IO.with(std::cell::Cell::get) {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// The object store of a local directory (created if missing), its root, and the directory.
pub(super) fn local_backend(dir: &FsPath) -> std::result::Result<Backend, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    let fs =
        object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| e.to_string())?;
    Ok((Arc::new(fs), Path::default(), Some(dir)))
}

/// The file that holds an object of a local store.
pub(super) fn local_file(root: &FsPath, layout: &Layout, path: &Path) -> PathBuf {
    let mut file = root.to_path_buf();
    for part in layout.relative(path).split('/').filter(|p| !p.is_empty()) {
        file.push(part);
    }
    file
}

/// Refuses a path below `root` that goes through a symbolic link (any of its parts); a path
/// that does not exist is left to the read to report.
pub(super) fn refuse_links(root: &FsPath, relative: &str) -> std::io::Result<()> {
    let mut at = root.to_path_buf();
    for part in relative.split('/').filter(|p| !p.is_empty()) {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symbolic link: runql serves only files inside the store",
                        at.display()
                    ),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A local I/O error as `object_store` reports errors, naming the object.
pub(super) fn io_to_store(path: &Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "local",
        source: format!("{path}: {e}").into(),
    }
}

/// temp file, write, fsync, then rename (or hard link when `create_only`), then fsync the
/// directory: after a crash or power loss the object is either whole or absent.
pub(super) fn local_put(
    file: &FsPath,
    bytes: &[u8],
    create_only: bool,
    sync: bool,
) -> std::io::Result<bool> {
    use std::io::Write;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = file
        .parent()
        .ok_or_else(|| std::io::Error::other("object path has no parent directory"))?;
    ensure_dir(dir, sync)?;
    // `name#<digits>` is what object_store's local backend skips when listing.
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(format!("#{}{n:06}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_data()?;
        }
        drop(f);
        if create_only {
            match std::fs::hard_link(&tmp, file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(e),
            }
            std::fs::remove_file(&tmp)?;
        } else {
            std::fs::rename(&tmp, file)?;
        }
        if sync && let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    })();
    if !matches!(result, Ok(true)) {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and any missing folders above it. With `sync`, a folder it creates is made
/// durable in its parent (fsync of the parent), so that a power loss cannot take a new run's
/// folder away with the objects fsync'd inside it. One `mkdir` when the folder exists.
fn ensure_dir(dir: &FsPath, sync: bool) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = dir.parent().ok_or(e)?;
            ensure_dir(parent, sync)?;
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                // Created meanwhile by another writer (which syncs it).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    if sync && let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Lists every object below `dir` (the local folder of `prefix`) with one `readdir` per folder
/// and one `statx` per file: what `object_store`'s local lister returns (same locations, sizes,
/// times and ETags; temporary `name#<digits>` files skipped), without its cost per listing
/// (it canonicalizes the root, a `readlink` per path component, and stats every entry twice).
/// `None` when a name needs `object_store`'s own encoding or an entry is a symbolic link: the
/// caller then lists through `object_store`.
pub(super) fn local_list(dir: &FsPath, prefix: &Path) -> std::io::Result<Option<Vec<ObjectMeta>>> {
    fn plain(name: &str) -> bool {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'='))
    }
    fn temporary(name: &str) -> bool {
        name.split_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
    let mut out = Vec::new();
    let base = prefix.as_ref().to_string();
    // (folder, its location with a trailing '/', or empty at the store's root)
    let mut todo = vec![(
        dir.to_path_buf(),
        if base.is_empty() { base } else { base + "/" },
    )];
    while let Some((folder, location)) = todo.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Ok(None);
            };
            if temporary(name) {
                continue;
            }
            if !plain(name) {
                return Ok(None);
            }
            let kind = match entry.file_type() {
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if kind.is_symlink() {
                return Ok(None);
            }
            if kind.is_dir() {
                todo.push((entry.path(), format!("{location}{name}/")));
                continue;
            }
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let modified = meta.modified()?;
            let micros = modified
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_micros();
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0u64;
            out.push(ObjectMeta {
                location: Path::from(format!("{location}{name}")),
                last_modified: modified.into(),
                size: meta.len(),
                e_tag: Some(format!("{inode:x}-{micros:x}-{:x}", meta.len())),
                version: None,
            });
        }
    }
    Ok(Some(out))
}

/// Removes the now-empty directories above a deleted local object, up to the store root.
pub(super) fn remove_empty_parents(root: &FsPath, file: &FsPath) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) {
            break;
        }
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// fsyncs files, then each folder they are in (once each): what makes objects written by
/// [`super::Store::put_unsynced`] durable.
pub(super) fn local_sync(files: &[PathBuf]) -> std::io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for f in files {
        std::fs::File::open(f)?.sync_data()?;
        if let Some(d) = f.parent() {
            dirs.insert(d.to_path_buf());
        }
    }
    for d in dirs {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Reads a local object whole; `None` if it does not exist.
pub(super) fn local_read(file: &FsPath) -> std::io::Result<Option<Bytes>> {
    match std::fs::read(file) {
        Ok(b) => Ok(Some(Bytes::from(b))),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Deletes local objects (ones already gone are fine) and the folders they leave empty.
pub(super) fn local_delete(root: &FsPath, files: &[(Path, PathBuf)]) -> Result<()> {
    for (path, file) in files {
        match std::fs::remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::storage(path, io_to_store(path, e))),
        }
        remove_empty_parents(root, file);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::ObjectStore;

    use super::*;

    fn sorted(mut v: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
        v.sort_by(|a, b| a.location.cmp(&b.location));
        v
    }

    #[test]
    fn local_puts_create_missing_folders_and_refuse_a_file_in_the_way() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for sync in [true, false] {
            let file = dir.path().join(format!("a{sync}/b/c/object.json"));
            assert!(local_put(&file, b"one", false, sync).unwrap_or_else(|e| panic!("{e}")));
            // Into folders that exist now.
            let next = file.with_file_name("next.json");
            assert!(local_put(&next, b"two", false, sync).unwrap_or_else(|e| panic!("{e}")));
            assert_eq!(
                std::fs::read(&file).unwrap_or_else(|e| panic!("{e}")),
                b"one"
            );
            assert_eq!(
                std::fs::read(&next).unwrap_or_else(|e| panic!("{e}")),
                b"two"
            );
        }
        // A file where a folder should be: an error, and nothing left behind.
        std::fs::write(dir.path().join("blocked"), b"x").unwrap_or_else(|e| panic!("{e}"));
        let under = dir.path().join("blocked/object.json");
        assert!(local_put(&under, b"three", false, true).is_err());
        assert_eq!(
            std::fs::read(dir.path().join("blocked")).unwrap_or_default(),
            b"x"
        );
    }

    /// The local lister returns exactly what `object_store`'s does, and hands over to it for
    /// names it would encode.
    #[test]
    fn local_listing_equals_object_stores() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path().canonicalize().unwrap_or_else(|e| panic!("{e}"));
        for f in [
            "projects/p/live/r1/meta.01.json",
            "projects/p/live/r1/metrics.w-0000000001.arrow",
            "projects/p/live/r1/meta/02.json",
            "projects/p/live/r2/params.w-0000000001.arrow",
            "projects/a=2Fb/project.json",
            "blobs/sha256/ab/cdef",
        ] {
            let file = root.join(f);
            std::fs::create_dir_all(file.parent().unwrap_or(&root))
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&file, f.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        }
        // A write in progress: skipped by both.
        std::fs::write(root.join("projects/p/live/r1/meta.03.json#17"), b"x")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(root.join("projects/p/live/empty"))
            .unwrap_or_else(|e| panic!("{e}"));
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&root)
            .unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        for prefix in [
            "",
            "projects",
            "projects/p/live",
            "projects/p/live/r1",
            "nosuch",
        ] {
            let p = Path::from(prefix);
            let theirs: Vec<ObjectMeta> = rt
                .block_on(fs.list(Some(&p)).try_collect())
                .unwrap_or_else(|e| panic!("{e}"));
            let dir = local_file(&root, &Layout::new(Path::default()), &p);
            let ours = local_list(&dir, &p)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("{prefix}: plain names need no fallback"));
            assert_eq!(sorted(ours), sorted(theirs), "prefix {prefix:?}");
        }
        // A name object_store would encode: the caller falls back to it.
        std::fs::write(root.join("projects/p/live/r2/odd name%.txt"), b"x")
            .unwrap_or_else(|e| panic!("{e}"));
        let p = Path::from("projects/p/live");
        let dir = local_file(&root, &Layout::new(Path::default()), &p);
        assert!(
            local_list(&dir, &p)
                .unwrap_or_else(|e| panic!("{e}"))
                .is_none()
        );
    }
}
