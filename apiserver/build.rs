//! Builds the dashboard's front-end (`ui/`, see `src/ui.rs`) into `$OUT_DIR/ui/`:
//! `index.html`, `app.js` and `app.css`, which the crate embeds.
//!
//! The sources are copied into `$OUT_DIR` (a build script must not write into the source
//! tree), the npm registry's packages are installed there exactly as `package-lock.json`
//! pins them (`npm ci --ignore-scripts`: no package runs code at install time), and
//! `build.mjs` bundles with esbuild.
//!
//! - `CAPSTAN_UI_DIST=<dir>`: embed the three files from `<dir>` instead (a bundle built
//!   elsewhere, for machines without Node.js or the registry).
//! - No `npm` on the PATH: a page that says the dashboard was not built is embedded and
//!   cargo warns; `make` installs Node.js first, so its builds always bundle.
//! - npm or esbuild failing is a build error, with their output.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCES: [&str; 5] = ["package.json", "package-lock.json", "build.mjs", "index.html", "src"];
const OUTPUTS: [&str; 3] = ["index.html", "app.js", "app.css"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ui = manifest.join("ui");
    for s in SOURCES {
        println!("cargo:rerun-if-changed={}", ui.join(s).display());
    }
    println!("cargo:rerun-if-env-changed=CAPSTAN_UI_DIST");
    let dist = out.join("ui");
    std::fs::create_dir_all(&dist).expect("create $OUT_DIR/ui");

    if let Some(prebuilt) = std::env::var_os("CAPSTAN_UI_DIST") {
        let prebuilt = PathBuf::from(prebuilt);
        for f in OUTPUTS {
            println!("cargo:rerun-if-changed={}", prebuilt.join(f).display());
            std::fs::copy(prebuilt.join(f), dist.join(f))
                .unwrap_or_else(|e| panic!("CAPSTAN_UI_DIST: {}: {e}", prebuilt.join(f).display()));
        }
        return;
    }
    if Command::new("npm").arg("--version").output().is_err() {
        println!("cargo:warning=npm not found: the dashboard (/ui/) is not built into this binary; install Node.js and npm (make deps does) and build again");
        println!("cargo:rustc-env=CAPSTAN_UI_PLACEHOLDER=1");
        // Where npm would appear: none of these exists yet, so cargo runs this script on
        // every build until npm is installed, and the next build then bundles.
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            println!("cargo:rerun-if-changed={}", dir.join("npm").display());
        }
        let page = "<!doctype html><title>Capstan</title><p>This Capstan binary was built without npm, so it carries no dashboard. Install Node.js and npm (<code>make deps</code> does) and build again.</p>\n";
        for (f, text) in [("index.html", page), ("app.js", ""), ("app.css", "")] {
            // Unchanged files keep their times, so the crate is not compiled again.
            if std::fs::read_to_string(dist.join(f)).ok().as_deref() != Some(text) {
                std::fs::write(dist.join(f), text).unwrap_or_else(|e| panic!("write the placeholder {f}: {e}"));
            }
        }
        return;
    }

    let work = out.join("ui-build");
    // A fresh copy each time: a file removed from ui/src must not linger.
    let _ = std::fs::remove_dir_all(work.join("src"));
    for s in SOURCES {
        copy(&ui.join(s), &work.join(s));
    }
    run(
        Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&work),
        "npm ci",
    );
    // An output left from before (the placeholder's, say) must not pass for a new one.
    for f in OUTPUTS {
        let _ = std::fs::remove_file(dist.join(f));
    }
    run(
        Command::new("node").arg("build.mjs").arg(&dist).current_dir(&work),
        "node build.mjs",
    );
    for f in OUTPUTS {
        assert!(dist.join(f).is_file(), "build.mjs made no {f}");
    }
}

/// Copies a file or a directory tree.
fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
        for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
            let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", from.display()));
            copy(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
        }
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{} -> {}: {e}", from.display(), to.display()));
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
