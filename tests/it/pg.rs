//! A private PostgreSQL server per test, for the PostgreSQL store: Debian's server binaries
//! (`apt-get install postgresql`), a throwaway cluster in a temp directory, a free port on
//! 127.0.0.1. The system cluster is never used or started.
//!
//! `initdb` runs once per test process into a template directory (removed at exit); each
//! [`PgServer`] copies the template and starts `postgres` on it, with durability switched off
//! (`fsync`, `synchronous_commit`, `full_page_writes`). Like the nginx test, a test skips when the
//! binaries are missing, unless `GATEWAY_REQUIRE_POSTGRES` is set (CI), which turns their absence
//! into a failure. As root (CI, containers) the cluster belongs to the `postgres` user, since
//! PostgreSQL refuses to run as root.
//!
//! Blocking or async: every operation that waits has both forms. The blocking ones (`start`,
//! `stop`...) are fine to call from a `#[tokio::test]` but stall its runtime meanwhile; the
//! `_async` ones let in-process gateways on the same runtime keep serving, which matters when a
//! test restarts the database under them. Measured on the 2-core dev machine (PostgreSQL 15):
//! `initdb` ~0.45 s once per process, `start` ~0.15 s (copying the template ~0.1 s), `stop`
//! ~15 ms, `start_again` ~45 ms, drop ~15 ms.

// Not every test module uses every helper.
#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// The superuser every cluster has (`initdb -U`).
const USER: &str = "gateway";
/// How long a server may take to accept a login before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a fast shutdown may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A PostgreSQL server of its own: data directory, log and socket in a temp directory, listening
/// on 127.0.0.1 only. Dropping it shuts the server down (immediately, then SIGKILL) and waits for
/// it, and removes the directory.
pub struct PgServer {
    template: &'static Template,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl PgServer {
    /// A running server with an empty cluster, or `None` (after a skip note on stderr) when the
    /// PostgreSQL server binaries are not installed. Panics when they are missing but
    /// `GATEWAY_REQUIRE_POSTGRES` is set, or when the server does not start.
    ///
    /// Blocks: about 0.15 s, plus about 0.5 s for `initdb` on the first call of the process.
    pub fn start() -> Option<PgServer> {
        let template = template()?;
        let dir = copy_template(template);
        Some(block_on(PgServer::launch(template, dir)))
    }

    /// [`PgServer::start`] without blocking the runtime.
    pub async fn start_async() -> Option<PgServer> {
        let (template, dir) = tokio::task::spawn_blocking(|| {
            let template = template()?;
            Some((template, copy_template(template)))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Some(PgServer::launch(template, dir).await)
    }

    /// Starts a server on a copy of the template and waits until it accepts a login.
    async fn launch(template: &'static Template, dir: tempfile::TempDir) -> PgServer {
        let mut server = PgServer {
            template,
            dir,
            port: 0,
            child: None,
        };
        // The port was free a moment ago; another process may take it before postgres binds it,
        // and postgres then exits: try another one.
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.port = free_port();
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(Failed::Exited(why)) if attempts < 5 => {
                    eprintln!("postgres did not start ({why}), retrying on another port");
                }
                Err(Failed::Exited(why) | Failed::TimedOut(why)) => {
                    panic!("postgres did not start: {why}\n{}", server.log())
                }
            }
        }
    }

    /// `postgres://gateway:<password>@127.0.0.1:<port>/postgres`: the superuser, the default
    /// database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `name` on this server (which may not exist).
    pub fn url_of(&self, name: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{name}",
            self.template.password, self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server process is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything the server wrote to stderr so far (its log), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Creates an empty database `name` (letters, digits and `_`) and returns its URL, so tests
    /// that need several stores can share one server. Blocks for a few tens of milliseconds.
    pub fn create_database(&self, name: &str) -> String {
        block_on(self.create_database_async(name))
    }

    /// [`PgServer::create_database`] without blocking the runtime.
    pub async fn create_database_async(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "database name {name:?}: use letters, digits and _"
        );
        let (client, conn) = tokio_postgres::connect(&self.url(), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url()));
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        drop(client);
        let _ = conn.await;
        self.url_of(name)
    }

    /// Switches TLS on (no restart: PostgreSQL reloads its SSL settings) with this certificate
    /// chain and key, both PEM. Plain connections keep working; clients choose.
    pub async fn enable_tls(&self, cert_pem: &str, key_pem: &str) {
        let data = self.dir.path().join("data");
        let (cert, key) = (data.join("server.crt"), data.join("server.key"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        if let Some(owner) = self.template.owner {
            for f in [&cert, &key] {
                std::os::unix::fs::chown(f, Some(owner.0), Some(owner.1)).unwrap();
            }
        }
        let (client, conn) = tokio_postgres::connect(&self.url(), NoTls).await.unwrap();
        let conn = tokio::spawn(conn);
        // One statement each: ALTER SYSTEM refuses to run in the implicit transaction of a
        // multi-statement string.
        for sql in [
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_reload_conf()",
        ] {
            client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("enabling TLS ({sql}): {e:?}\n{}", self.log()));
        }
        drop(client);
        let _ = conn.await;
        // The postmaster applies the reload asynchronously.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    /// Fast shutdown (SIGINT: sessions are ended, a checkpoint is written) and waits until the
    /// server has exited; connections are then refused. Blocks for a few tens of milliseconds.
    pub fn stop(&mut self) {
        block_on(self.stop_async());
    }

    /// [`PgServer::stop`] without blocking the runtime.
    pub async fn stop_async(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("stop: the server is not running");
        };
        signal(&child, libc::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "postgres did not stop within {STOP_TIMEOUT:?}\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the stopped server again on the same port and data directory, and waits until it
    /// accepts a login. Panics when it does not (e.g. another process took the port meanwhile).
    pub fn start_again(&mut self) {
        block_on(self.start_again_async());
    }

    /// [`PgServer::start_again`] without blocking the runtime.
    pub async fn start_again_async(&mut self) {
        assert!(self.child.is_none(), "start_again: the server is running");
        if let Err(Failed::Exited(why) | Failed::TimedOut(why)) = self.spawn_and_wait().await {
            panic!(
                "postgres did not start again on port {}: {why}\n{}",
                self.port,
                self.log()
            );
        }
    }

    /// [`PgServer::stop`] then [`PgServer::start_again`]: same port, same data.
    pub fn restart(&mut self) {
        block_on(self.restart_async());
    }

    /// [`PgServer::restart`] without blocking the runtime.
    pub async fn restart_async(&mut self) {
        self.stop_async().await;
        self.start_again_async().await;
    }

    /// Starts `postgres` on `self.port` and waits until a login succeeds. On failure the process
    /// is gone.
    async fn spawn_and_wait(&mut self) -> Result<(), Failed> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = self.template.command("postgres");
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "logging_collector=off"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().unwrap();
        self.child = Some(child);
        let url = self.url();
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no attempt");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().unwrap()
            {
                self.child = None;
                return Err(Failed::Exited(format!(
                    "postgres exited with {status}; last error: {last}"
                )));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(Failed::TimedOut(format!(
                    "no login within {READY_TIMEOUT:?}; last error: {last}"
                )));
            }
            match tokio::time::timeout(Duration::from_secs(2), login(&url)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => last = "login timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Immediate shutdown (SIGQUIT: the postmaster stops its children and exits without a
    /// checkpoint), then SIGKILL if it lingers; waits for the process either way.
    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, libc::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(None) = child.try_wait() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A new temp directory with a copy of the template's data directory in `data/`, owned by the
/// user the server runs as.
fn copy_template(template: &Template) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("gateway-pg-")
        .tempdir()
        .unwrap();
    let copy = Command::new("cp")
        .arg("-a")
        .arg(template.data())
        .arg(dir.path().join("data"))
        .status()
        .unwrap();
    assert!(copy.success(), "copying the PostgreSQL template failed");
    if let Some(owner) = template.owner {
        chown(dir.path(), owner);
    }
    dir
}

/// Why a server did not start.
enum Failed {
    /// The process exited (e.g. the port was taken).
    Exited(String),
    /// It ran but did not accept a login in time; it has been killed.
    TimedOut(String),
}

/// Logs in and out once.
async fn login(url: &str) -> Result<(), String> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| e.to_string())?;
    drop(client);
    conn.await.map_err(|e| e.to_string())
}

/// Sends `sig` to a child that has not been waited for (so its pid is still ours).
fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) has no memory effects; the pid is our unreaped child.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Runs `fut` to completion on a runtime of its own in a helper thread, so blocking callers work
/// both inside and outside a tokio runtime.
fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fut)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- The template cluster: one initdb per test process ----

/// A cluster made by `initdb`, copied for each server.
struct Template {
    /// The server binaries: `initdb`, `postgres`.
    bin: PathBuf,
    /// Holds `data/` and the password file; removed at exit.
    root: PathBuf,
    password: String,
    /// The `postgres` user's uid and gid when we are root.
    owner: Option<(u32, u32)>,
}

impl Template {
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A command for one of the server binaries, run as the `postgres` user when we are root.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

static TEMPLATE: OnceLock<Template> = OnceLock::new();

/// The template, made on first use; `None` when the binaries are missing (see [`PgServer::start`]).
fn template() -> Option<&'static Template> {
    let Some(bin) = server_binaries() else {
        // .ci/run installs postgresql and sets this, so CI cannot skip these tests.
        assert!(
            std::env::var_os("GATEWAY_REQUIRE_POSTGRES").is_none(),
            "PostgreSQL is required (GATEWAY_REQUIRE_POSTGRES is set) but its server binaries \
             are not installed (/usr/lib/postgresql/*/bin/initdb)"
        );
        eprintln!(
            "skipping: the PostgreSQL server is not installed (apt-get install postgresql, \
             or set GATEWAY_POSTGRES_BIN to the directory holding initdb and postgres)"
        );
        return None;
    };
    Some(TEMPLATE.get_or_init(|| init_template(bin)))
}

/// The directory with `initdb` and `postgres`: `GATEWAY_POSTGRES_BIN` when set, else the newest
/// Debian version under `/usr/lib/postgresql`.
fn server_binaries() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("GATEWAY_POSTGRES_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("initdb").is_file() && dir.join("postgres").is_file(),
            "GATEWAY_POSTGRES_BIN={}: no initdb and postgres there",
            dir.display()
        );
        return Some(dir);
    }
    let version = |p: &Path| -> Vec<u32> {
        p.file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.split('.').map(|c| c.parse().unwrap_or(0)).collect())
            .unwrap_or_default()
    };
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            ["initdb", "postgres"]
                .iter()
                .all(|b| p.join("bin").join(b).is_file())
        })
        .max_by_key(|p| version(p))
        .map(|p| p.join("bin"))
}

fn init_template(bin: PathBuf) -> Template {
    // SAFETY: geteuid cannot fail and has no memory effects.
    let root = unsafe { libc::geteuid() } == 0;
    let owner = root.then(|| {
        postgres_user().unwrap_or_else(|| {
            panic!(
                "PostgreSQL refuses to run as root and there is no `postgres` user in /etc/passwd \
                 to run it as (the Debian package creates one)"
            )
        })
    });
    let dir = tempfile::Builder::new()
        .prefix("gateway-pg-template-")
        .tempdir()
        .unwrap()
        .keep();
    register_cleanup();
    let template = Template {
        bin,
        root: dir,
        password: uuid::Uuid::new_v4().simple().to_string(),
        owner,
    };
    let pwfile = template.root.join("pwfile");
    std::fs::write(&pwfile, format!("{}\n", template.password)).unwrap();
    if let Some(owner) = owner {
        chown(&template.root, owner);
    }
    let out = template
        .command("initdb")
        .arg("-D")
        .arg(template.data())
        .args([
            "-U",
            USER,
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .args(["--no-sync", "--no-instructions"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .current_dir(&template.root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "initdb failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    template
}

/// The `postgres` user's uid and primary gid.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    // name:password:uid:gid:...
    let mut fields = line.split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((uid, gid))
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown -R {uid}:{gid} {} failed", path.display());
}

/// Removes the template directory when the test binary exits (statics are never dropped).
fn register_cleanup() {
    extern "C" fn remove_template() {
        if let Some(t) = TEMPLATE.get() {
            let _ = std::fs::remove_dir_all(&t.root);
        }
    }
    // SAFETY: registers a plain function with no arguments; it only removes files.
    unsafe {
        libc::atexit(remove_template);
    }
}

// ---- The harness's own tests ----

#[tokio::test]
async fn a_server_answers_queries() {
    let Some(pg) = PgServer::start_async().await else {
        return;
    };
    let (client, conn) = tokio_postgres::connect(&pg.url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client.query_one("select 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    let user: String = client
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, USER);
    // Password logins only: a wrong password is refused.
    let wrong = pg.url().replace(&pg.template.password, "wrong");
    assert!(tokio_postgres::connect(&wrong, NoTls).await.is_err());
}

#[tokio::test]
async fn create_database_gives_an_empty_database_of_its_own() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    let a = pg.create_database("store_a");
    let b = pg.create_database_async("store_b").await;
    assert!(
        a.ends_with("/store_a") && b.ends_with("/store_b"),
        "{a} {b}"
    );

    let (ca, conn) = tokio_postgres::connect(&a, NoTls).await.unwrap();
    tokio::spawn(conn);
    ca.batch_execute("create table t (x int); insert into t values (7)")
        .await
        .unwrap();
    let x: i32 = ca.query_one("select x from t", &[]).await.unwrap().get(0);
    assert_eq!(x, 7);

    let (cb, conn) = tokio_postgres::connect(&b, NoTls).await.unwrap();
    tokio::spawn(conn);
    let tables: i64 = cb
        .query_one(
            "select count(*) from information_schema.tables where table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "a new database is empty");
}

#[tokio::test]
async fn stop_refuses_connections_and_start_again_keeps_the_data() {
    let Some(mut pg) = PgServer::start() else {
        return;
    };
    let url = pg.create_database("kept");
    let port = pg.port();
    {
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("create table t (x text); insert into t values ('before')")
            .await
            .unwrap();
    }

    // Blocking form.
    pg.stop();
    assert!(!pg.is_running());
    let refused = tokio_postgres::connect(&url, NoTls).await;
    assert!(refused.is_err(), "connected to a stopped server");
    pg.start_again();
    assert_eq!(pg.port(), port, "same port after a restart");
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    let x: String = client
        .query_one("select x from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, "before");
    client
        .batch_execute("insert into t values ('between')")
        .await
        .unwrap();

    // Async form: a connection open across the restart is ended, a new one works.
    pg.restart_async().await;
    assert!(client.query_one("select 1", &[]).await.is_err());
    let _ = conn.await;
    let (client, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let n: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    pg.stop_async().await;
    assert!(tokio_postgres::connect(&url, NoTls).await.is_err());
    pg.start_again_async().await;
    assert!(tokio_postgres::connect(&url, NoTls).await.is_ok());
}

#[tokio::test]
async fn drop_leaves_no_process_or_directory() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    let pid = pg.child.as_ref().unwrap().id();
    let dir = pg.dir.path().to_owned();
    // The postmaster has children (checkpointer, walwriter...) that must go too.
    let children = children_of(pid);
    assert!(!children.is_empty(), "postmaster without children?");
    drop(pg);
    for p in std::iter::once(pid).chain(children) {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "process {p} left"
        );
    }
    assert!(!dir.exists(), "data directory left");
}

/// Pids whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let child: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}
