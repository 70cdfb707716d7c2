//! Plugins from an OCI registry: `cordon push`, `cordon pull` (by tag and by digest), `cordon
//! sign` and signed pulls, against a real registry on loopback (the CNCF distribution server),
//! and the host refusing a plugin that must be signed when it arrives any other way.

mod common;

use common::registry::Registry;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// `cordon <args>` for the commands that take no folder flags (push, sign, key new), in `env`'s
/// directory, with a Docker config folder of the test's own (no credentials of this machine).
async fn cordon(env: &Env, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(cordon_bin());
    cmd.args(args)
        .current_dir(env.path())
        .env("DOCKER_CONFIG", env.path().join("docker"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    guard("cordon to exit", cmd.output()).await.expect("run cordon")
}

/// An environment whose commands read the Docker config folder of the test's own.
fn oci_env() -> Env {
    let env = Env::new();
    let docker = env.path().join("docker");
    env.var("DOCKER_CONFIG", docker.to_str().unwrap())
}

/// [`cordon`] with `input` on stdin (for `--password-stdin`).
async fn cordon_with_input(env: &Env, args: &[&str], input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(cordon_bin());
    cmd.args(args)
        .current_dir(env.path())
        .env("DOCKER_CONFIG", env.path().join("docker"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("run cordon");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).await.expect("write stdin");
    drop(stdin);
    guard("cordon to exit", child.wait_with_output()).await.expect("wait for cordon")
}

/// `cordon pull <args> --plain-http` into `env`'s plugins folder.
async fn pull(env: &Env, args: &[&str]) -> Output {
    let mut all = vec!["pull"];
    all.extend_from_slice(args);
    all.push("--plain-http");
    env.run(&all).await
}

fn json_of(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {}", describe(out)))
}

/// A failure (exit 1) whose message says `words`.
fn refused(out: &Output, words: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "expected a refusal: {}", describe(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for word in words {
        assert!(stderr.contains(word), "{word:?} not in: {stderr}");
    }
}

async fn push(env: &Env, file: &Path, reference: &str) -> Value {
    json_of(&cordon(env, &["push", file.to_str().unwrap(), reference, "--plain-http"]).await)
}

async fn sign(env: &Env, reference: &str, key: &Path) -> Value {
    json_of(&cordon(env, &["sign", reference, "--key", key.to_str().unwrap(), "--plain-http"]).await)
}

/// A new key pair in `env`'s directory: (private, public).
async fn key_pair(env: &Env, prefix: &str) -> (PathBuf, PathBuf) {
    let out = cordon(env, &["key", "new", "--out", prefix]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    (env.path().join(format!("{prefix}.key")), env.path().join(format!("{prefix}.pub")))
}

/// `component` with a custom section appended: still the same valid component, another digest;
/// written into `env`'s directory.
fn variant(env: &Env, component: &[u8], tag: &str) -> PathBuf {
    let name = b"cordon-test";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(tag.as_bytes());
    let mut bytes = component.to_vec();
    bytes.push(0);
    bytes.push(section.len() as u8);
    bytes.extend_from_slice(&section);
    let path = env.path().join(format!("{tag}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn folder(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.plugins_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_pushed_plugin_is_pulled_by_tag_and_by_digest_and_served_live() {
    let registry = Registry::start().await;
    let env = oci_env();
    let demo = std::fs::read(demo_wasm()).unwrap();
    let tag = format!("oci://{}/tools/demo:1.0", registry.host);
    let pushed = push(&env, &demo_wasm(), &tag).await;
    assert_eq!(pushed["sha256"], sha256_hex(&demo));
    let manifest_digest = pushed["manifest_digest"].as_str().unwrap().to_string();
    assert!(manifest_digest.starts_with("sha256:"), "{pushed}");

    // A server on the empty folder picks the pulled plugin up.
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    assert!(list_tools(&client).await.is_empty());
    let pulled = json_of(&pull(&env, &[&tag]).await);
    assert_eq!(pulled["plugin"], "demo");
    assert_eq!(pulled["manifest_digest"], manifest_digest.as_str());
    assert_eq!(std::fs::read(env.plugins_dir().join("demo.wasm")).unwrap(), demo);
    assert_eq!(folder(&env), ["demo.wasm"], "an unsigned pull writes the component only");
    let mut served = false;
    for _ in 0..300 {
        if list_tools(&client).await.contains_key("demo_echo") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the pulled plugin was not served; log:\n{}", server.log.text());
    assert_echo(&client, "pulled from a registry").await;

    // Credentials from the Docker config file: a helper that cannot run is an error, not a
    // silent anonymous pull; an entry for the registry is used (this registry takes any).
    let docker = env.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let config = serde_json::json!({"credHelpers": {registry.host.as_str(): "cordon-test-missing-helper"}});
    std::fs::write(docker.join("config.json"), config.to_string()).unwrap();
    refused(&pull(&env, &[&tag, "--name", "with_helper"]).await, &["credentials for", "config.json"]);
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"user:password");
    let config = serde_json::json!({"auths": {registry.host.as_str(): {"auth": auth}}});
    std::fs::write(docker.join("config.json"), config.to_string()).unwrap();
    json_of(&pull(&env, &[&tag, "--name", "with_login"]).await);
    std::fs::remove_file(env.plugins_dir().join("with_login.wasm")).unwrap();
    std::fs::remove_file(docker.join("config.json")).unwrap();

    // By digest, under another name: the same bytes.
    let by_digest = format!("oci://{}/tools/demo@{manifest_digest}", registry.host);
    let pulled = json_of(&pull(&env, &[&by_digest, "--name", "demo2"]).await);
    assert_eq!(pulled["plugin"], "demo2");
    assert_eq!(std::fs::read(env.plugins_dir().join("demo2.wasm")).unwrap(), demo);

    // What is not there, and what may not be asked, are clear errors that change nothing.
    let missing = format!("oci://{}/tools/demo@sha256:{}", registry.host, "0".repeat(64));
    refused(&pull(&env, &[&missing]).await, &["cannot fetch the manifest"]);
    refused(
        &pull(&env, &[&format!("oci://{}/tools/nothing:1.0", registry.host)]).await,
        &["cannot fetch the manifest"],
    );
    refused(&pull(&env, &["oci://registry.example.com/tools/demo:1.0"]).await, &["only to a loopback registry"]);
    let tiny = pull(&env, &[&tag, "--name", "tiny", "--max-mb", "0"]).await;
    refused(&tiny, &["more than the limit"]);
    assert_eq!(folder(&env), ["demo.wasm", "demo2.wasm"]);
    // Not a component: refused at push.
    let junk = env.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let out = cordon(&env, &["push", junk.to_str().unwrap(), &tag, "--plain-http"]).await;
    refused(&out, &["not a wasm component"]);
}

#[tokio::test]
async fn signed_pulls_verify_and_a_wrong_key_a_moved_tag_or_a_tampered_blob_are_refused() {
    let registry = Registry::start().await;
    let env = oci_env();
    let (signer_key, signer_pub) = key_pair(&env, "signer").await;
    let (other_key, other_pub) = key_pair(&env, "other").await;
    let (signer_pub, other_pub) = (signer_pub.to_str().unwrap(), other_pub.to_str().unwrap());
    let demo = std::fs::read(demo_wasm()).unwrap();
    let tag = format!("oci://{}/tools/demo:1.0", registry.host);
    let pushed = push(&env, &demo_wasm(), &tag).await;
    let signed = sign(&env, &tag, &signer_key).await;
    assert_eq!(signed["manifest_digest"], pushed["manifest_digest"]);

    // The wrong key: refused before anything is written.
    refused(&pull(&env, &[&tag, "--key", other_pub]).await, &["no signature", "by this key"]);
    assert!(folder(&env).is_empty());
    // The right key: installed with its bundle.
    let pulled = json_of(&pull(&env, &[&tag, "--key", signer_pub]).await);
    assert_eq!(pulled["sha256"], sha256_hex(&demo));
    assert_eq!(folder(&env), ["demo.wasm", "demo.wasm.sig"]);
    // A second signer is added beside the first, and both verify.
    sign(&env, &tag, &other_key).await;
    json_of(&pull(&env, &[&tag, "--key", other_pub, "--name", "demo_other"]).await);
    json_of(&pull(&env, &[&tag, "--key", signer_pub, "--name", "demo_again"]).await);

    // An artifact nobody signed.
    let unsigned = variant(&env, &demo, "unsigned");
    let unsigned_tag = format!("oci://{}/tools/unsigned:1.0", registry.host);
    push(&env, &unsigned, &unsigned_tag).await;
    refused(&pull(&env, &[&unsigned_tag, "--key", signer_pub]).await, &["has no signature"]);

    // The tag moved to another artifact: the signature of the old one does not cover it.
    let moved = variant(&env, &demo, "moved");
    push(&env, &moved, &tag).await;
    refused(&pull(&env, &[&tag, "--key", signer_pub, "--name", "moved"]).await, &["no signature"]);

    // A tampered blob: signed, then its bytes changed in the registry's storage.
    let tampered = variant(&env, &demo, "tampered");
    let tampered_tag = format!("oci://{}/tools/tampered:1.0", registry.host);
    let pushed = push(&env, &tampered, &tampered_tag).await;
    sign(&env, &tampered_tag, &signer_key).await;
    let blob = registry.blob_file(&format!("sha256:{}", pushed["sha256"].as_str().unwrap()));
    let mut bytes = std::fs::read(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    refused(&pull(&env, &[&tampered_tag, "--key", signer_pub, "--name", "tampered"]).await, &["digest"]);

    assert_eq!(
        folder(&env),
        [
            "demo.wasm",
            "demo.wasm.sig",
            "demo_again.wasm",
            "demo_again.wasm.sig",
            "demo_other.wasm",
            "demo_other.wasm.sig"
        ],
        "no refused pull may leave anything behind"
    );
    assert_eq!(std::fs::read(env.plugins_dir().join("demo.wasm")).unwrap(), demo);
}

#[tokio::test]
async fn a_plugin_that_must_be_signed_loads_only_with_its_signature_from_its_source() {
    let registry = Registry::start().await;
    let env = oci_env();
    let (signer_key, signer_pub) = key_pair(&env, "signer").await;
    let tag = format!("oci://{}/tools/demo:1.0", registry.host);
    push(&env, &demo_wasm(), &tag).await;
    sign(&env, &tag, &signer_key).await;
    let elsewhere = format!("oci://{}/elsewhere/demo:1.0", registry.host);
    push(&env, &demo_wasm(), &elsewhere).await;
    sign(&env, &elsewhere, &signer_key).await;
    let env = env.config(&format!("[plugins.demo]\nsource = \"{tag}\"\nsigned_by = \"{}\"\n", signer_pub.display()));

    // Dropped into the folder by hand: refused, with a reason that says what to do.
    std::fs::copy(demo_wasm(), env.plugins_dir().join("demo.wasm")).unwrap();
    let tools = env.tools().await;
    let reason = refusal(&tools, "demo.wasm");
    assert!(
        reason.contains("signed_by") && reason.contains("no signature") && reason.contains("cordon pull"),
        "{reason}"
    );

    // Pulled by the plugin's name (its source, its key): served.
    let pulled = json_of(&pull(&env, &["demo"]).await);
    assert_eq!(pulled["signed_by"], signer_pub.to_str().unwrap());
    let tools = env.tools().await;
    assert!(tools["tools"].as_array().unwrap().iter().any(|t| t["name"] == "demo_echo"), "{tools:#}");

    // Another file under the pulled signature: refused.
    let swapped = variant(&env, &std::fs::read(demo_wasm()).unwrap(), "swapped");
    std::fs::copy(&swapped, env.plugins_dir().join("demo.wasm")).unwrap();
    let reason = refusal(&env.tools().await, "demo.wasm");
    assert!(reason.contains("wasm layer"), "{reason}");

    // The same component, signed by the same key, from another repository: refused at pull
    // (the source pins the repository) and at load (a bundle from there names another one).
    refused(&pull(&env, &[&elsewhere, "--name", "demo"]).await, &["source pins"]);
    let loose = oci_env().config("");
    json_of(&pull(&loose, &[&elsewhere, "--key", signer_pub.to_str().unwrap()]).await);
    for file in ["demo.wasm", "demo.wasm.sig"] {
        std::fs::copy(loose.plugins_dir().join(file), env.plugins_dir().join(file)).unwrap();
    }
    let reason = refusal(&env.tools().await, "demo.wasm");
    assert!(reason.contains("the plugin's source is"), "{reason}");
}

/// The reason `cordon tools` gives for refusing `file`.
fn refusal(tools: &Value, file: &str) -> String {
    let errors = tools["errors"].as_array().unwrap();
    let error = errors.iter().find(|e| e["file"] == file).unwrap_or_else(|| panic!("{file} not refused: {tools:#}"));
    error["error"].as_str().unwrap().to_string()
}

/// A registry that needs a login: without one, and with a wrong password, push and pull are
/// refused with a message that says so; `--username` with `--password-stdin`, and the Docker
/// config file's entry for the registry, are each enough.
#[tokio::test]
async fn a_registry_login_comes_from_the_flags_or_the_docker_config() {
    let registry = Registry::start_with_login("ci", "s3cret-pass").await;
    let env = oci_env();
    let demo = demo_wasm();
    let tag = format!("oci://{}/tools/demo:1.0", registry.host);
    let file = demo.to_str().unwrap();

    let anonymous = cordon(&env, &["push", file, &tag, "--plain-http"]).await;
    refused(&anonymous, &["refused the credentials"]);
    let wrong = cordon_with_input(
        &env,
        &["push", file, &tag, "--plain-http", "--username", "ci", "--password-stdin"],
        "nope\n",
    )
    .await;
    refused(&wrong, &["refused the credentials"]);
    assert!(!String::from_utf8_lossy(&wrong.stderr).contains("nope"), "the password reached the output");
    let pushed = cordon_with_input(
        &env,
        &["push", file, &tag, "--plain-http", "--username", "ci", "--password-stdin"],
        "s3cret-pass\n",
    )
    .await;
    json_of(&pushed);

    refused(&pull(&env, &[&tag]).await, &["refused the credentials"]);
    let docker = env.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"ci:s3cret-pass");
    let config = serde_json::json!({"auths": {registry.host.as_str(): {"auth": auth}}});
    std::fs::write(docker.join("config.json"), config.to_string()).unwrap();
    json_of(&pull(&env, &[&tag]).await);
    assert_eq!(std::fs::read(env.plugins_dir().join("demo.wasm")).unwrap(), std::fs::read(&demo).unwrap());
}
