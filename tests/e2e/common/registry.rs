//! A real OCI registry for the tests: the CNCF distribution server (Debian's `docker-registry`
//! package; `make test` installs it when missing, `make registry`), storing into a temporary
//! directory and listening on a free loopback port, plain HTTP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// A running registry; killed when dropped.
pub struct Registry {
    dir: TempDir,
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
}

/// `$CORDON_REGISTRY_BIN`, else Debian's `/usr/bin/docker-registry`, else `registry` on PATH.
fn binary() -> PathBuf {
    if let Ok(bin) = std::env::var("CORDON_REGISTRY_BIN") {
        return PathBuf::from(bin);
    }
    for candidate in ["/usr/bin/docker-registry", "/usr/local/bin/registry"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "no OCI registry found (/usr/bin/docker-registry): `make registry` installs Debian's docker-registry \
         package, or set CORDON_REGISTRY_BIN"
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

impl Registry {
    /// Starts a registry and waits until it answers `GET /v2/`.
    pub async fn start() -> Registry {
        Self::start_with(None).await
    }

    /// Starts a registry that takes only `user` with `password` (htpasswd, HTTP Basic).
    pub async fn start_with_login(user: &str, password: &str) -> Registry {
        Self::start_with(Some((user, password))).await
    }

    async fn start_with(login: Option<(&str, &str)>) -> Registry {
        super::install_crypto_provider();
        let dir = tempfile::Builder::new().prefix("cordon-registry-").tempdir().expect("temp dir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("storage").display()
        );
        let mut config = config;
        if let Some((user, password)) = login {
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: cordon-test\n    path: {}\n", htpasswd.display()));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write the registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new(binary())
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { dir, child, host };
        let url = format!("http://{}/v2/", registry.host);
        for _ in 0..200 {
            if let Ok(response) = reqwest::get(&url).await {
                // 401 is a registry that needs a login, up and answering.
                if response.status().is_success() || response.status() == 401 {
                    return registry;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the registry did not come up on {}; its log:\n{}", registry.host, registry.log());
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The file holding the blob `digest` (`sha256:…`) in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
