//! Core modules: `cordon wrap` turns a WASI preview-1 core module into a component, and a core
//! module dropped into the plugins folder is wrapped and served without any extra tool. The
//! fixture is the demo plugin built for `wasm32-wasip1` (`make plugins`): a real core module
//! carrying its `component-type` section, as Zig, C and Go builds with wit-bindgen do.

mod common;

use common::*;
use serde_json::json;

fn core_module() -> Vec<u8> {
    let bytes = std::fs::read(fixture_wasm("demo_core")).expect("tests/plugins/dist/demo_core.wasm (make plugins)");
    assert_eq!(&bytes[..8], b"\0asm\x01\0\0\0", "the fixture must be a core module");
    bytes
}

/// `cordon wrap ARGS` (it needs no plugins folder, data or config).
async fn wrap(args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(cordon_bin())
        .arg("wrap")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cordon wrap");
    guard("cordon wrap to exit", child.wait_with_output()).await.expect("wait for cordon wrap")
}

#[tokio::test]
async fn cordon_wrap_makes_a_servable_component_of_a_core_module() {
    let env = Env::new();
    let input = env.path().join("demo_core.wasm");
    std::fs::write(&input, core_module()).expect("write the core module");
    let output = env.plugins_dir().join("demo.wasm");
    let out = wrap(&[input.to_str().expect("utf-8"), "-o", output.to_str().expect("utf-8")]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let component = std::fs::read(&output).expect("the component was written");
    assert_eq!(&component[..4], b"\0asm");
    assert_ne!(&component[6..8], &[0, 0], "the output is a component (layer 1)");

    let (client, _log) = env.stdio_client().await;
    assert_echo(&client, "wrapped").await;
    let sum = call(&client, "demo_add", json!({"a": 2, "b": 3})).await;
    assert_eq!(sum.ok()["sum"], 5.0, "{:?}", sum.raw);

    // A component is not wrapped twice; a file that is not wasm is refused.
    let again = wrap(&[output.to_str().expect("utf-8"), "-o", "/dev/null"]).await;
    assert_eq!(again.status.code(), Some(1), "{}", describe(&again));
    assert!(describe(&again).contains("already a component"), "{}", describe(&again));
}

#[tokio::test]
async fn a_core_module_in_the_plugins_folder_is_wrapped_and_served() {
    let env = Env::new().plugin_bytes("demo.wasm", &core_module());
    let tools = env.tools().await;
    let names: Vec<&str> =
        tools["tools"].as_array().expect("tools").iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"demo_echo"), "{tools}");
    assert_eq!(tools["plugins"][0]["digest"], format!("sha256:{}", sha256_hex(&core_module())), "identity is the file");
    let server = env.spawn_http(&[]).await;
    let client = server.client().await;
    assert_echo(&client, "served from a core module").await;
    call(&client, "demo_divide", json!({"a": 1, "b": 0})).await.expect_error("division_by_zero", false);
}
