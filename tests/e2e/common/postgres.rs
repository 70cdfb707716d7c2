//! A real PostgreSQL server for the tests: `initdb` into a temporary directory, `postgres`
//! listening on a free loopback port, trust authentication for the user `cordon`. `make test`
//! installs the server from Debian's packages when it is missing (`make postgres`).
//!
//! PostgreSQL refuses to run as root, so when the tests do (CI does), the server runs as the
//! `postgres` system user the Debian package creates; the data directory is handed to it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// A running server; stopped (immediate shutdown) when dropped.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    /// The user to run as (`uid`, `gid`), when the tests run as root.
    user: Option<(u32, u32)>,
    /// The loopback port it listens on.
    pub port: u16,
    child: Option<Child>,
}

/// Where the server's programs are: `$CORDON_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout), else `pg_config --bindir`.
fn bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("CORDON_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    match out {
        Ok(out) if out.status.success() => PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        _ => panic!(
            "no PostgreSQL server found (looked in /usr/lib/postgresql/*/bin and pg_config): `make postgres` \
             installs it from Debian's packages, or set CORDON_PG_BIN"
        ),
    }
}

/// `id -u NAME` / `id -g NAME`.
fn id_of(flag: &str, user: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

impl Postgres {
    /// Creates a cluster and starts the server.
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new().prefix("cordon-pg-").tempdir().expect("temp dir for PostgreSQL");
        let user = if running_as_root() {
            let uid = id_of("-u", "postgres").expect("running as root, PostgreSQL needs the `postgres` user");
            let gid = id_of("-g", "postgres").expect("the postgres user's group");
            let status =
                Command::new("chown").args([&format!("{uid}:{gid}"), &dir.path().display().to_string()]).status();
            assert!(status.is_ok_and(|s| s.success()), "chown the PostgreSQL directory");
            Some((uid, gid))
        } else {
            None
        };
        let mut pg = Postgres { dir, bin: bindir(), user, port: free_port(), child: None };
        let data = pg.data();
        let out = pg
            .command("initdb")
            .args(["-D", &data.display().to_string(), "-U", "cordon", "-A", "trust", "-E", "UTF8", "-N"])
            .arg("--no-instructions")
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        pg.launch(true);
        pg
    }

    /// Creates a cluster that accepts TCP connections only over TLS, with this certificate and
    /// key (PEM), and starts it.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Postgres {
        let mut pg = Postgres::start();
        pg.crash();
        let data = pg.data();
        std::fs::write(data.join("server.crt"), cert_pem).expect("write server.crt");
        std::fs::write(data.join("server.key"), key_pem).expect("write server.key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        if let Some((uid, gid)) = pg.user {
            for file in ["server.crt", "server.key"] {
                std::os::unix::fs::chown(data.join(file), Some(uid), Some(gid)).expect("chown the TLS files");
            }
        }
        let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).expect("conf");
        use std::io::Write;
        writeln!(conf, "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'").expect("write conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        pg.resume();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        // HOME is the cluster's directory: libpq looks for client certificates under
        // $HOME/.postgresql, and root's home is closed to the `postgres` user.
        cmd.current_dir(self.dir.path()).env_remove("PGDATA").env("HOME", self.dir.path());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Starts the server (again, after [`Postgres::crash`]) on the same port and data.
    pub fn resume(&mut self) {
        self.launch(false);
    }

    /// Starts `postgres` and waits until it accepts connections. Its log goes to
    /// `postgres.log` in the cluster's directory, so a server that exits says why. A free port
    /// can be taken by another test between [`free_port`] and the server's bind; then the start
    /// is tried again, on another port when `may_move` (the first start: nobody holds the URL
    /// yet), else on the same one.
    fn launch(&mut self, may_move: bool) {
        const TRIES: u32 = 5;
        let log_path = self.dir.path().join("postgres.log");
        for attempt in 1..=TRIES {
            let log = std::fs::File::create(&log_path).expect("create postgres.log");
            let child = self
                .command("postgres")
                .args(["-D", &self.data().display().to_string(), "-p", &self.port.to_string()])
                .args(["-k", &self.dir.path().display().to_string()])
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "fsync=off"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start postgres");
            self.child = Some(child);
            let exited = match self.wait_until_ready() {
                Ok(()) => return,
                Err(exited) => exited,
            };
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let port_taken = log.contains("could not bind") || log.contains("Address already in use");
            match exited {
                Some(_) if port_taken && attempt < TRIES => {
                    if may_move {
                        self.port = free_port();
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Some(status) => panic!("PostgreSQL exited ({status}) on port {}; its log:\n{log}", self.port),
                None => {
                    panic!("PostgreSQL did not accept connections on port {} within 120 s; its log:\n{log}", self.port)
                }
            }
        }
        unreachable!("the last try either returns or panics");
    }

    /// Waits (generously: CI runs many test binaries at once on two cores) until the server
    /// answers; `Err(Some(status))` when it exited first, `Err(None)` when it is still not
    /// answering after 120 s.
    fn wait_until_ready(&mut self) -> Result<(), Option<std::process::ExitStatus>> {
        let socket_dir = self.dir.path().display().to_string();
        for _ in 0..1200 {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(Some(status));
            }
            // Asked over the Unix socket in this cluster's own directory, so the answer is this
            // server's and never another test's on a reused port; the server binds its TCP port
            // before its socket and exits when it cannot, so ready here means listening there.
            let ready = self.command("pg_isready").args(["-h", &socket_dir, "-p", &self.port.to_string()]).output();
            if ready.is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(None)
    }

    /// Stops the server at once, as a crash or a lost network would: every connection drops.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT is PostgreSQL's immediate shutdown: backends exit without a checkpoint.
            let _ = Command::new("kill").args(["-s", "QUIT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// A new, empty database, and its URL.
    pub fn database(&self, name: &str) -> String {
        let out = self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "cordon", name])
            .output()
            .expect("run createdb");
        assert!(out.status.success(), "createdb {name}: {}", String::from_utf8_lossy(&out.stderr));
        self.url(name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://cordon@127.0.0.1:{}/{name}", self.port)
    }

    /// `psql -tA -c SQL` against database `name`: its output, trimmed.
    pub fn query(&self, name: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "cordon", "-d", name, "-tA", "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// An interactive `psql` on database `name`, for statements that must stay open across
    /// steps of a test (a transaction left uncommitted).
    pub fn session(&self, name: &str) -> PsqlSession {
        let mut child = self
            .command("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "cordon", "-d", name])
            .args(["-tA", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start psql");
        let stdin = child.stdin.take().expect("psql's stdin");
        let stdout = std::io::BufReader::new(child.stdout.take().expect("psql's stdout"));
        PsqlSession { child, stdin, stdout }
    }

    /// The directory the cluster lives in.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A running `psql` ([`Postgres::session`]).
pub struct PsqlSession {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl PsqlSession {
    /// Runs `sql` and waits until psql has executed it.
    pub fn run(&mut self, sql: &str) {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{sql}\nSELECT 'cordon-e2e-done';").expect("write to psql");
        self.stdin.flush().expect("flush psql's stdin");
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stdout.read_line(&mut line).expect("read psql's output");
            assert!(read > 0, "psql ended while running {sql}");
            if line.trim() == "cordon-e2e-done" {
                return;
            }
        }
    }
}

impl Drop for PsqlSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.crash();
    }
}
