//! Throwaway Postgres clusters on a Unix socket only (no TCP), started from
//! the system binaries (or those of a private copy, `pgtree`), as the
//! `postgres` user when run as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// The pg_config of the Postgres the tests use: `BQ_PG_CONFIG` (a
/// pg_config path) picks the version; default Postgres 15's, else
/// `pg_config` on PATH.
pub fn pg_config() -> PathBuf {
    PathBuf::from(std::env::var("BQ_PG_CONFIG").unwrap_or_else(|_| {
        let v15 = "/usr/lib/postgresql/15/bin/pg_config";
        if Path::new(v15).exists() {
            v15.into()
        } else {
            "pg_config".into()
        }
    }))
}

/// The Postgres binaries of [`pg_config`].
pub fn pg_bindir() -> PathBuf {
    let pg_config = pg_config();
    let out = Command::new(&pg_config)
        .arg("--bindir")
        .output()
        .expect("run pg_config");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

/// A running cluster; stopped and deleted on drop.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    bindir: PathBuf,
    as_postgres: bool,
    extra_conf: Vec<String>,
}

impl Cluster {
    /// Starts a fresh cluster named `name` with `conf` lines added to
    /// postgresql.conf (e.g. `shared_preload_libraries = 'balance_queue'`).
    pub fn start(name: &str, conf: &[&str]) -> Cluster {
        Cluster::start_with_bindir(name, conf, &pg_bindir())
    }

    /// [`Cluster::start`] with the binaries (and so the lib and share
    /// directories, found relative to them) of another installation, e.g.
    /// a [`crate::pgtree::PgTree`].
    pub fn start_with_bindir(name: &str, conf: &[&str], bindir: &Path) -> Cluster {
        let cluster = Cluster::new_dir(name, conf, bindir);
        cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data().to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        cluster.write_settings();
        cluster.pg_ctl_start();
        cluster
    }

    /// A hot standby of this cluster, streaming from it: a base backup
    /// (`pg_basebackup -R`) started on a port and socket of its own, with
    /// this cluster's settings.
    pub fn standby(&self, name: &str) -> Cluster {
        let extra: Vec<&str> = self.extra_conf.iter().map(String::as_str).collect();
        let standby = Cluster::new_dir(name, &extra, &self.bindir);
        standby.run(
            "pg_basebackup",
            &[
                "-D",
                standby.data().to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                // An immediate checkpoint: the default spreads it over
                // minutes of checkpoint_timeout.
                "-c",
                "fast",
                "--no-sync",
                "-h",
                self.dir.to_str().unwrap(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ],
        );
        standby.write_settings();
        standby.pg_ctl_start();
        standby
    }

    /// A new, empty cluster directory with a port of its own.
    fn new_dir(name: &str, conf: &[&str], bindir: &Path) -> Cluster {
        let port =
            20000 + (std::process::id() % 20000) as u16 + NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "balance_queue-{name}-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status();
            assert!(
                status.map(|s| s.success()).unwrap_or(false),
                "chown cluster dir to postgres"
            );
        }
        Cluster {
            dir,
            port,
            bindir: bindir.to_path_buf(),
            as_postgres,
            extra_conf: conf.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Appends the harness's settings and the cluster's own to its
    /// postgresql.conf (later lines win, so a standby's port and socket
    /// override its primary's).
    fn write_settings(&self) {
        let cluster = self;
        let mut settings = vec![
            "listen_addresses = ''".to_string(),
            format!("port = {}", cluster.port),
            format!("unix_socket_directories = '{}'", cluster.dir.display()),
            "fsync = off".into(),
            "full_page_writes = off".into(),
            "shared_buffers = '256MB'".into(),
            "max_connections = 60".into(),
            "log_min_messages = warning".into(),
        ];
        settings.extend(cluster.extra_conf.iter().cloned());
        let conf_path = cluster.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        text.push_str(&format!(
            "\n# balance_queue harness\n{}\n",
            settings.join("\n")
        ));
        std::fs::write(&conf_path, text).expect("write postgresql.conf");
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log, for diagnostics.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn run(&self, program: &str, args: &[&str]) {
        let binary = self.bindir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&binary);
            c
        } else {
            Command::new(&binary)
        };
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}\nserver log: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    fn pg_ctl_start(&self) {
        let data = self.data();
        let log = self.log_path();
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "120",
                "start",
            ],
        );
    }

    /// Stops the server: `mode` is `fast` or `immediate` (a crash: no
    /// shutdown checkpoint, recovery replays the WAL on the next start).
    pub fn stop(&self, mode: &str) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        );
    }

    /// Starts the server again after `stop`.
    pub fn start_again(&self) {
        self.pg_ctl_start();
    }

    /// A clean restart keeping the data directory: a fast stop (shutdown
    /// checkpoint), then a start, which loads shared_preload_libraries anew
    /// from the binaries' installation.
    pub fn restart(&self) {
        self.stop("fast");
        self.start_again();
    }

    /// The directory of the binaries the cluster runs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Runs this installation's pg_dump against `database` with `args`
    /// (e.g. `-s -e balance_queue -n balance_queue`) and returns the dump.
    pub fn pg_dump(&self, database: &str, args: &[&str]) -> String {
        let out = Command::new(self.bindir.join("pg_dump"))
            .args(["-h", self.dir.to_str().unwrap(), "-U", "postgres"])
            .args(["-p", &self.port.to_string()])
            .args(args)
            .arg(database)
            .output()
            .unwrap_or_else(|e| panic!("run pg_dump: {e}"));
        assert!(
            out.status.success(),
            "pg_dump {args:?} {database} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("pg_dump output is UTF-8")
    }

    /// A connection URL for `database` in the form node-postgres (and so
    /// PostGraphile) takes: the socket directory as the `host` parameter.
    pub fn conn_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{database}?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }

    /// A libpq connection string for `database`.
    pub fn conn_string(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.dir.display(),
            self.port
        )
    }

    /// Connects to `database`.
    pub fn connect(&self, database: &str) -> postgres::Client {
        postgres::Client::connect(&self.conn_string(database), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {database}: {e}"))
    }

    /// Creates a database with the extension installed and returns a client.
    pub fn database_with_extension(&self, name: &str) -> postgres::Client {
        let mut admin = self.connect("postgres");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        let mut client = self.connect(name);
        client
            .batch_execute("CREATE EXTENSION balance_queue")
            .expect("CREATE EXTENSION balance_queue (is it installed? run scripts/setup.sh)");
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let binary = self.bindir.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&binary)
                .args(args)
                .output()
        } else {
            Command::new(&binary).args(args).output()
        };
        if std::env::var_os("BQ_KEEP_CLUSTER").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
