//! Plain components: a component that exports ordinary functions instead of `cordon:plugin`
//! (the `calc` fixture: `add` and the `test:calc/ops` interface) is served without glue. Each
//! function is a tool whose schema comes from its WIT types; JSON arguments become WIT values
//! (records, lists, options, enums, flags, tuples, variants) and results come back as JSON; a
//! `result` error is a typed tool error; limits and argument validation apply as for any tool.

mod common;

use common::*;
use serde_json::{json, Value};

fn calc_env(config: &str) -> Env {
    Env::new().plugin(&fixture_wasm("calc"), "calc.wasm").config(config)
}

#[tokio::test]
async fn exported_functions_are_listed_with_schemas_from_their_wit_types() {
    let tools = calc_env("").tools().await;
    let by_name = |name: &str| -> Value {
        tools["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing: {tools}"))
    };
    let add = by_name("calc_add");
    assert_eq!(add["inputSchema"]["required"], json!(["a", "b"]));
    assert_eq!(add["inputSchema"]["properties"]["a"]["type"], "integer");
    assert_eq!(add["inputSchema"]["properties"]["a"]["maximum"], i64::from(i32::MAX));
    assert_eq!(add["outputSchema"]["properties"]["result"]["type"], "integer");
    let centroid = by_name("calc_ops_centroid");
    let point = &centroid["inputSchema"]["properties"]["points"]["items"];
    assert_eq!(point["required"], json!(["x", "y"]), "option fields are not required: {point}");
    assert_eq!(
        by_name("calc_ops_round")["inputSchema"]["properties"]["mode"]["enum"],
        json!(["down", "nearest", "up"])
    );
    for name in ["calc_ops_divide", "calc_ops_area", "calc_ops_describe-style", "calc_ops_spin"] {
        by_name(name);
    }
    assert!(tools["errors"].as_array().expect("errors").is_empty(), "{tools}");
}

#[tokio::test]
async fn calls_convert_json_to_wit_values_and_back() {
    let env = calc_env("[plugins.calc.limits]\nfuel = 5000000\n");
    let (client, _log) = env.stdio_client().await;
    assert_eq!(call(&client, "calc_add", json!({"a": 2, "b": 40})).await.ok()["result"], 42);
    let centroid = call(
        &client,
        "calc_ops_centroid",
        json!({"points": [{"x": 0.0, "y": 0.0, "label": "a"}, {"x": 2.0, "y": 4.0}]}),
    )
    .await;
    assert_eq!(centroid.ok()["result"], json!({"x": 1.0, "y": 2.0, "label": "a"}));
    assert_eq!(call(&client, "calc_ops_area", json!({"shape": {"square": 3.0}})).await.ok()["result"], 9.0);
    assert_eq!(call(&client, "calc_ops_area", json!({"shape": "dot"})).await.ok()["result"], 0.0);
    assert_eq!(call(&client, "calc_ops_round", json!({"x": 2.5, "mode": "up"})).await.ok()["result"], 3);
    let styled = call(&client, "calc_ops_describe-style", json!({"style": ["bold", "italic"], "pair": [7, "x"]})).await;
    assert_eq!(styled.ok()["result"], "bold+italic 7x");
    assert_eq!(call(&client, "calc_ops_divide", json!({"a": 9, "b": 3})).await.ok()["result"], 3);

    // A `result` error is a typed tool error named after the error case.
    let error = call(&client, "calc_ops_divide", json!({"a": 1, "b": 0})).await;
    error.expect_error("divide-by-zero", false);
    let overflow = call(&client, "calc_ops_divide", json!({"a": i32::MIN, "b": -1})).await;
    assert!(overflow.expect_error("overflow", false)["message"].as_str().unwrap_or("").contains("overflows"));

    // The host validates against the derived schema before the guest runs.
    call(&client, "calc_add", json!({"a": "two", "b": 1})).await.expect_error("invalid_arguments", false);
    call(&client, "calc_add", json!({"a": 3_000_000_000u64, "b": 1})).await.expect_error("invalid_arguments", false);
    call(&client, "calc_ops_round", json!({"x": 1.0, "mode": "sideways"}))
        .await
        .expect_error("invalid_arguments", false);

    // Limits apply: a long loop runs out of the plugin's fuel.
    call(&client, "calc_ops_spin", json!({"iterations": 1_000_000_000u64})).await.expect_error("fuel_exhausted", false);
    assert_eq!(call(&client, "calc_ops_spin", json!({"iterations": 3})).await.ok()["result"], 33);
}
