//! Records the git revision the binary is built from, for `nexus --version`.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    // A source tree without git (a tarball, a Docker build context without .git) says so.
    let rev = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            if dirty { format!("{rev}-modified") } else { rev }
        }
        None => std::env::var("NEXUS_GIT_REV").unwrap_or_else(|_| "unknown revision".into()),
    };
    println!("cargo:rustc-env=NEXUS_GIT_REV={rev}");
    println!("cargo:rerun-if-env-changed=NEXUS_GIT_REV");
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head}");
        }
    }
}
