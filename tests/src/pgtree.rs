//! A private copy of the Postgres installation (bin, lib, share), so a test
//! can install an extension build into it without touching the system
//! install that every other test uses. Postgres finds its share and lib
//! directories relative to its own executable, so a copied tree is a
//! complete installation of its own: a server started from `bindir()` loads
//! libraries from `pkglibdir()` and extensions from `extension_dir()`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};

static NEXT_TREE: AtomicU16 = AtomicU16::new(0);

/// `pg_config --<what>` of the given pg_config binary.
pub fn pg_config_value(pg_config: &Path, what: &str) -> PathBuf {
    let out = Command::new(pg_config)
        .arg(format!("--{what}"))
        .output()
        .unwrap_or_else(|e| panic!("run {} --{what}: {e}", pg_config.display()));
    assert!(
        out.status.success(),
        "{} --{what} failed: {}",
        pg_config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The pg_config of the system install the tests use (`BQ_PG_CONFIG`).
pub fn system_pg_config() -> PathBuf {
    crate::cluster::pg_config()
}

/// A copy of the system Postgres under a temporary root, deleted on drop
/// (kept with `BQ_KEEP_CLUSTER`). Drop the clusters started from it first.
pub struct PgTree {
    root: PathBuf,
    bindir: PathBuf,
    pkglibdir: PathBuf,
    sharedir: PathBuf,
}

impl PgTree {
    /// Copies the system install's bindir, pkglibdir and sharedir under a
    /// new temporary root, each at its own absolute path below the root
    /// (the layout `cargo pgrx package` writes), and checks that the copy's
    /// pg_config reports the copied directories.
    pub fn copy_of_system(name: &str) -> PgTree {
        let system = system_pg_config();
        let dirs = ["bindir", "pkglibdir", "sharedir"].map(|d| pg_config_value(&system, d));
        let root = std::env::temp_dir().join(format!(
            "balance_queue-pgtree-{name}-{}-{}",
            std::process::id(),
            NEXT_TREE.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let inside = |dir: &Path| root.join(dir.strip_prefix("/").unwrap_or(dir));
        for dir in &dirs {
            let dest = inside(dir);
            std::fs::create_dir_all(dest.parent().unwrap()).expect("create private tree");
            // cp -a: copies, not links (postgres resolves its own path), and
            // keeps bin/postmaster -> postgres a relative link.
            let status = Command::new("cp")
                .arg("-a")
                .arg(dir)
                .arg(&dest)
                .status()
                .expect("run cp");
            assert!(
                status.success(),
                "cp -a {} {}",
                dir.display(),
                dest.display()
            );
        }
        let tree = PgTree {
            bindir: inside(&dirs[0]),
            pkglibdir: inside(&dirs[1]),
            sharedir: inside(&dirs[2]),
            root,
        };
        let private = tree.bindir.join("pg_config");
        for (what, want) in [
            ("bindir", &tree.bindir),
            ("pkglibdir", &tree.pkglibdir),
            ("sharedir", &tree.sharedir),
        ] {
            let got = pg_config_value(&private, what);
            assert_eq!(
                &got,
                want,
                "the copied Postgres does not relocate: its pg_config --{what} says {}, not the copy; \
                 this build cannot run from a private tree",
                got.display()
            );
        }
        tree
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    pub fn pkglibdir(&self) -> &Path {
        &self.pkglibdir
    }

    pub fn extension_dir(&self) -> PathBuf {
        self.sharedir.join("extension")
    }

    /// Removes every file of extension `extname` (its libraries
    /// `<extname>.so`/`<extname>-*.so`, control file and scripts).
    pub fn remove_extension(&self, extname: &str) {
        for dir in [self.pkglibdir.clone(), self.extension_dir()] {
            for entry in std::fs::read_dir(&dir).expect("read private tree") {
                let entry = entry.unwrap();
                let file = entry.file_name().to_string_lossy().into_owned();
                let ours = file == format!("{extname}.so")
                    || file == format!("{extname}.control")
                    || file.starts_with(&format!("{extname}--"))
                    || (file.starts_with(&format!("{extname}-")) && file.ends_with(".so"));
                if ours {
                    std::fs::remove_file(entry.path()).expect("remove extension file");
                }
            }
        }
    }

    /// Copies a library into pkglibdir and control/script files into the
    /// extension dir, under their own names. The library is replaced by a
    /// new file, never written in place (a running server maps the old one).
    pub fn install(&self, library: &Path, extension_files: &[PathBuf]) {
        let dest = self.pkglibdir.join(library.file_name().unwrap());
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(library, &dest)
            .unwrap_or_else(|e| panic!("copy {} to the private tree: {e}", library.display()));
        for file in extension_files {
            let dest = self.extension_dir().join(file.file_name().unwrap());
            std::fs::copy(file, &dest)
                .unwrap_or_else(|e| panic!("copy {} to the private tree: {e}", file.display()));
        }
    }
}

impl Drop for PgTree {
    fn drop(&mut self) {
        if std::env::var_os("BQ_KEEP_CLUSTER").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
