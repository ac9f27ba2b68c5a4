//! Builds the first-party plugins (the crates in this folder) to `wasm32-wasip2` components and
//! puts them in OUT_DIR, from where `registry::BUILTIN` embeds them in runql: they ship with
//! the binary and need no install step.
//!
//! The nested cargo uses its own target directory beside the outer one (so the two never wait
//! on each other's lock), the outer build's jobserver, and the release profile (plugins are
//! measured against native code). The wasm target is added with rustup when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// First-party plugins, embedded in runql.
const PLUGINS: [&str; 4] = ["optuna", "rl", "llm", "tensorboard"];
/// Built beside them for the tests (installed from a file like a third-party plugin): the
/// example plugin and the hostile one. Not embedded.
const TEST_PLUGINS: [(&str, &str); 2] = [
    ("runql-example-plugin", "examples/plugin"),
    ("runql-plugin-hostile", "plugins/tests/hostile"),
];
/// Further builds of the hostile crate, one per feature, each kept as
/// `runql_plugin_hostile_<feature>.wasm`.
const HOSTILE_FEATURES: [&str; 2] = ["fs", "v2"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    for dir in ["wit", "sdk/src", "sdk/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", manifest.join(dir).display());
    }
    for p in PLUGINS {
        println!(
            "cargo:rerun-if-changed={}",
            manifest.join(p).join("src").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            manifest.join(p).join("Cargo.toml").display()
        );
    }
    let root = manifest.parent().unwrap_or(&manifest).to_path_buf();
    for (_, dir) in TEST_PLUGINS {
        println!(
            "cargo:rerun-if-changed={}",
            root.join(dir).join("src").display()
        );
    }
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: the wasm builds go to <target>/wasm.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("wasm"))
        .unwrap_or_else(|| out.join("wasm"));
    ensure_target();
    let release = target_dir.join("wasm32-wasip2/release");
    // The feature builds first: the last build leaves the default hostile component in place.
    for feature in HOSTILE_FEATURES {
        wasm_build(
            &manifest,
            &target_dir,
            &["-p", "runql-plugin-hostile", "--features", feature],
        );
        copy(
            &release.join("runql_plugin_hostile.wasm"),
            &release.join(format!("runql_plugin_hostile_{feature}.wasm")),
        );
    }
    let mut packages = Vec::new();
    for p in PLUGINS {
        packages.push("-p".to_string());
        packages.push(format!("runql-plugin-{p}"));
    }
    for (package, _) in TEST_PLUGINS {
        packages.push("-p".to_string());
        packages.push(package.to_string());
    }
    wasm_build(
        &manifest,
        &target_dir,
        &packages.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for p in PLUGINS {
        copy(
            &release.join(format!("runql_plugin_{p}.wasm")),
            &out.join(format!("{p}.wasm")),
        );
    }
    // Where the tests find the example and hostile components.
    println!("cargo:rustc-env=RUNQL_TEST_WASM_DIR={}", release.display());
}

/// One nested `cargo build` of plugin crates for wasm32-wasip2 (release, into `target_dir`).
fn wasm_build(manifest: &Path, target_dir: &Path, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--target-dir",
    ])
    .arg(target_dir)
    .args(args)
    .current_dir(manifest.parent().unwrap_or(manifest));
    // Small, fast components: no debug info, full optimisation, one codegen unit.
    // SIMD128 lets memchr and friends vectorise inside the sandbox (wasmtime runs it natively).
    cmd.env(
        "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
        "-C target-feature=+simd128",
    )
    .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
    .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
    .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
    .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_BUILD_TARGET");
    let status = cmd.status().expect("cargo runs");
    assert!(
        status.success(),
        "building the plugins for wasm32-wasip2 failed (see above): {args:?}"
    );
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}

/// Adds the wasm32-wasip2 standard library when this toolchain lacks it.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", "wasm32-wasip2"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let present = libdir.is_some_and(|d| !d.is_empty() && Path::new(&d).exists());
    if !present {
        println!("cargo:warning=adding the wasm32-wasip2 target with rustup (once)");
        let ok = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "runql's plugins need the wasm32-wasip2 target: run `rustup target add wasm32-wasip2`"
        );
    }
}
