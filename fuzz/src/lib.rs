//! Shared by the fuzz targets: a plain component (no `cordon:plugin` world, just exported
//! functions) whose parameters cover every WIT shape the host maps to JSON, so the
//! `arguments` and `jsonrpc` targets reach the schema derivation and the JSON ↔ WIT conversion
//! of `cordon_host::sandbox::plain` without a guest toolchain. Its functions are the dummy
//! bodies `wit-component` generates (they trap when called).

use anyhow::{Context, Result};
use std::path::PathBuf;

/// The component's WIT: one function per family of shapes, top-level and in an interface.
pub const PLAIN_WIT: &str = r#"
package fuzz:plain@1.0.0;

interface shapes {
    record point { x: s32, y: s32, label: option<string> }
    variant shape { circle(f64), square(point), empty, maybe(option<u8>) }
    enum color { red, green, blue }
    flags perms { read, write, exec }

    paint: func(s: shape, c: color, p: perms) -> result<point, color>;
    nested: func(points: list<point>, pairs: list<tuple<u32, string>>, deep: option<option<s64>>,
                 outcome: result<point, string>, bare: result, either: result<_, color>) -> result<u32, string>;
}

world plain {
    export shapes;
    export scalars: func(b: bool, a: s8, c: u8, d: s16, e: u16, f: s32, g: u32, h: s64, i: u64,
                         j: f32, k: f64, l: char, m: string) -> string;
    export lists: func(bytes: list<u8>, words: list<string>, grid: list<list<f32>>,
                       triple: tuple<bool, char, s16>) -> list<string>;
    export nothing: func();
}
"#;

/// The plain component for [`PLAIN_WIT`], encoded.
pub fn plain_component() -> Result<Vec<u8>> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("plain.wit", PLAIN_WIT).context("PLAIN_WIT")?;
    let world = resolve.select_world(&[package], Some("plain")).context("world plain")?;
    let mut module = wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8, false)
        .context("embed the world")?;
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .context("the dummy module")?
        .encode()
        .context("encode the component")
}

/// A fresh directory for a target's files (keys, SQLite stores, plugins), under this crate's
/// `target/scratch` rather than the system temp dir: fixtures live in statics, which are never
/// dropped, so the directory outlives the process; `cargo clean` (or deleting the folder)
/// removes them.
pub fn scratch_dir() -> tempfile::TempDir {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("scratch");
    std::fs::create_dir_all(&root).expect("fuzz/target/scratch");
    tempfile::Builder::new().prefix("run-").tempdir_in(root).expect("scratch dir")
}
