//! `cordon new`: a scaffolded project builds with one command and its tool is served. Each
//! language's project is made in a temp dir by the real binary, built with `make` (the Rust one
//! shares the guests' target dir, the Python, JavaScript and Zig ones the toolchains `make plugins`
//! installed under `target/lang/`, the C one the clang it installed, so nothing downloads here), loaded into `cordon`, and called:
//! the greeting, and the typed `empty_name` error.

mod common;

use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Stdio;

async fn cordon_new(name: &str, lang: &str, dir: &Path) {
    let out = tokio::process::Command::new(cordon_bin())
        .args(["new", name, "--lang", lang, "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("run cordon new");
    assert_eq!(out.status.code(), Some(0), "cordon new: {}", describe(&out));
}

/// `make` in `dir` with `vars`, which must succeed.
async fn make(dir: &Path, vars: &[(&str, String)]) {
    let mut cmd = tokio::process::Command::new("make");
    cmd.arg("-C").arg(dir).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let out = guard("make in the scaffolded project", cmd.output()).await.expect("run make");
    assert_eq!(out.status.code(), Some(0), "make: {}", describe(&out));
}

/// Serves `wasm` as `<name>.wasm` and checks the scaffolded `hello` tool.
async fn serve_and_greet(name: &str, wasm: &Path) {
    let env = Env::new().plugin(wasm, &format!("{name}.wasm"));
    let (client, _log) = env.stdio_client().await;
    let tool = format!("{name}_hello");
    let out = call(&client, &tool, json!({"name": "Ada"})).await;
    assert!(!out.is_error, "{}", out.raw);
    assert!(out.texts.concat().contains("Hello, Ada!"), "{}", out.raw);
    call(&client, &tool, json!({"name": "  "})).await.expect_error("empty_name", false);
}

fn lang_tool(path: &str) -> PathBuf {
    let tool = workspace().join("target/lang").join(path);
    assert!(tool.exists(), "{} is missing: run `make plugins` first", tool.display());
    tool
}

#[tokio::test]
async fn a_new_rust_plugin_builds_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("greeter");
    cordon_new("greeter", "rust", &project).await;
    make(&project, &[("CARGO_TARGET_DIR", workspace().join("target/guests").display().to_string())]).await;
    serve_and_greet("greeter", &project.join("greeter.wasm")).await;
}

#[tokio::test]
async fn a_new_python_plugin_builds_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("pygreeter");
    cordon_new("pygreeter", "python", &project).await;
    // The toolchain `make plugins` installed stands in for the project's own `.venv`.
    std::os::unix::fs::symlink(lang_tool("pyvenv"), project.join(".venv")).expect("link the venv");
    std::fs::write(project.join(".venv/.installed"), "").ok();
    make(&project, &[]).await;
    serve_and_greet("pygreeter", &project.join("pygreeter.wasm")).await;
}

#[tokio::test]
async fn a_new_javascript_plugin_builds_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("jsgreeter");
    cordon_new("jsgreeter", "js", &project).await;
    std::os::unix::fs::symlink(lang_tool("node/node_modules"), project.join("node_modules"))
        .expect("link node_modules");
    std::fs::write(project.join("node_modules/.installed"), "").ok();
    make(&project, &[]).await;
    serve_and_greet("jsgreeter", &project.join("jsgreeter.wasm")).await;
}

#[tokio::test]
async fn a_new_c_plugin_builds_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("cgreeter");
    cordon_new("cgreeter", "c", &project).await;
    // clang with wasi-libc, as `make plugins` installed it for the C examples.
    make(&project, &[]).await;
    serve_and_greet("cgreeter", &project.join("cgreeter.wasm")).await;
}

#[tokio::test]
async fn a_new_zig_plugin_builds_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("ziggreeter");
    cordon_new("ziggreeter", "zig", &project).await;
    // The Zig `make plugins` installed stands in for the project's own `.venv`.
    std::os::unix::fs::symlink(lang_tool("zigvenv"), project.join(".venv")).expect("link the venv");
    std::fs::write(project.join(".venv/.installed"), "").ok();
    make(&project, &[]).await;
    serve_and_greet("ziggreeter", &project.join("ziggreeter.wasm")).await;
}

#[tokio::test]
async fn a_new_go_plugin_builds_and_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let project = dir.path().join("gogreeter");
    cordon_new("gogreeter", "go", &project).await;
    // The Go `make plugins` installed stands in for the project's own `.venv`.
    std::os::unix::fs::symlink(lang_tool("govenv"), project.join(".venv")).expect("link the venv");
    std::fs::write(project.join(".venv/.installed"), "").ok();
    make(&project, &[]).await;
    serve_and_greet("gogreeter", &project.join("gogreeter.wasm")).await;
}
