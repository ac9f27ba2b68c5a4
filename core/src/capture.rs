//! What a run captures about where it ran: command line, host and user, git state (and the
//! diff of uncommitted changes), and environment files found in the working directory.
//!
//! Everything here is best effort: a missing `git`, a directory that is not a repository or an
//! unreadable file leaves the field empty and never fails the run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Which context a run captures. Every switch is on by default.
#[derive(Debug, Clone)]
pub struct Capture {
    /// The command line of this process.
    pub command: bool,
    /// Host name and user name.
    pub host: bool,
    /// Git commit, branch and dirty flag of the working directory.
    pub git: bool,
    /// The diff of uncommitted changes, as the artifact `git/diff.patch`.
    pub git_diff: bool,
    /// Environment files (Cargo.lock, requirements.txt, …) as artifacts under `env/`.
    pub env_files: bool,
    /// Sample system metrics at this interval (`None`: off).
    pub system_metrics: Option<Duration>,
    /// Where to look for git and environment files (default: the current directory).
    pub working_dir: Option<PathBuf>,
}

impl Default for Capture {
    fn default() -> Self {
        Capture {
            command: true,
            host: true,
            git: true,
            git_diff: true,
            env_files: true,
            system_metrics: Some(Duration::from_secs(10)),
            working_dir: None,
        }
    }
}

impl Capture {
    /// Captures nothing (for tests and benchmarks).
    pub fn none() -> Self {
        Capture {
            command: false,
            host: false,
            git: false,
            git_diff: false,
            env_files: false,
            system_metrics: None,
            working_dir: None,
        }
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.working_dir
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// Files recorded as environment artifacts when present in the working directory.
pub const ENV_FILES: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "requirements.txt",
    "pyproject.toml",
    "poetry.lock",
    "uv.lock",
    "Pipfile",
    "Pipfile.lock",
    "setup.py",
    "setup.cfg",
    "environment.yml",
    "environment.yaml",
    "conda.yaml",
    "Dockerfile",
    "package.json",
    ".python-version",
    "rust-toolchain.toml",
];

/// Largest environment file or diff recorded, in bytes.
pub const MAX_CAPTURED_FILE: u64 = 16 << 20;

/// The command line of this process, shell-quoted where needed.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quotes an argument for a POSIX shell when it needs it.
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The user running this process.
pub fn username() -> Option<String> {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
}

/// The host name.
pub fn hostname() -> Option<String> {
    sysinfo::System::host_name().filter(|h| !h.is_empty())
}

/// Git state of a working directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GitState {
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub dirty: Option<bool>,
    pub remote: Option<String>,
    /// `git diff HEAD` (tracked files), when dirty.
    pub diff: Option<Vec<u8>>,
}

fn git(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

fn git_line(dir: &Path, args: &[&str]) -> Option<String> {
    let out = git(dir, args)?;
    let s = String::from_utf8_lossy(&out).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Reads the git state of `dir`; `None` when it is not in a repository (or git is missing).
pub fn git_state(dir: &Path, with_diff: bool) -> Option<GitState> {
    let commit = git_line(dir, &["rev-parse", "HEAD"]);
    // Not a repository at all (rev-parse --git-dir fails too).
    if commit.is_none() && git_line(dir, &["rev-parse", "--git-dir"]).is_none() {
        return None;
    }
    let branch = git_line(dir, &["symbolic-ref", "--short", "-q", "HEAD"]);
    let status = git(dir, &["status", "--porcelain", "--untracked-files=no"]);
    let dirty = status.map(|s| !s.is_empty());
    let remote = git_line(dir, &["config", "--get", "remote.origin.url"]);
    let diff = if with_diff && dirty == Some(true) && commit.is_some() {
        git(dir, &["diff", "HEAD", "--no-color", "--no-ext-diff"])
            .filter(|d| !d.is_empty() && d.len() as u64 <= MAX_CAPTURED_FILE)
    } else {
        None
    };
    Some(GitState {
        commit,
        branch,
        dirty,
        remote,
        diff,
    })
}

/// Environment files present in `dir`, with their contents.
pub fn env_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ENV_FILES
        .iter()
        .filter_map(|name| {
            let path = dir.join(name);
            let meta = std::fs::metadata(&path).ok()?;
            if !meta.is_file() || meta.len() > MAX_CAPTURED_FILE {
                return None;
            }
            Some((name.to_string(), std::fs::read(&path).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--lr=0.1"), "--lr=0.1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn git_state_of_a_fresh_repository() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let run = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !run(&["init", "-q", "-b", "main"]) {
            eprintln!("git is not available; skipping");
            return;
        }
        assert!(git_state(dir.path(), true).is_some_and(|g| g.commit.is_none()));
        std::fs::write(dir.path().join("train.py"), "print(1)\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(run(&["add", "."]) && run(&["commit", "-q", "-m", "init"]));
        let clean = git_state(dir.path(), true).unwrap_or_default();
        assert_eq!(clean.branch.as_deref(), Some("main"));
        assert_eq!(clean.dirty, Some(false));
        assert_eq!(clean.commit.as_ref().map(String::len), Some(40));
        std::fs::write(dir.path().join("train.py"), "print(2)\n").unwrap_or_else(|e| panic!("{e}"));
        let dirty = git_state(dir.path(), true).unwrap_or_default();
        assert_eq!(dirty.dirty, Some(true));
        let diff = String::from_utf8(dirty.diff.unwrap_or_default()).unwrap_or_default();
        assert!(diff.contains("+print(2)"), "{diff}");
    }
}
