//! Runs the real `svs` binary as one person against a test directory.

use std::path::Path;
use svs_test_support::TestDirectory;

/// Runs `svs ARGS` as `name` with `home` (asynchronously: the directory runs on the test's
/// runtime); returns (exit ok, stdout, stderr).
pub(crate) async fn svs(
    dir: &TestDirectory,
    home: &Path,
    name: &str,
    args: &[&str],
) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_svs"))
        .args(args)
        .env("SVS_DIRECTORY", &dir.url)
        .env("SVS_CA", &dir.ca)
        .env("SVS_HOME", home)
        .env("SVS_NAME", name)
        .env("SVS_KEY_BITS", "2048")
        .output()
        .await
        .expect("svs runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
