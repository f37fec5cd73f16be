//! Bots written in Python with the repository's `botline` package (sdk/python), for the runs of
//! `--agent python`: a virtual environment the benchmark makes once (target/bench/venv-sdk, `pip
//! install -e sdk/python`) and the NOOP bot of bench/python/noop_bot.py.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python with `botline` installed, made the first time.
pub async fn python() -> anyhow::Result<PathBuf> {
    let venv = root().join("target/bench/venv-sdk");
    let python = venv.join("bin/python");
    let installed = python.exists()
        && Command::new(&python).args(["-c", "import botline"]).status().await?.success();
    if !installed {
        let sdk = root().join("sdk/python");
        make_venv(&venv, "python", &["-e".as_ref(), sdk.as_os_str()]).await?;
    }
    Ok(python)
}

/// Makes the virtual environment `venv` and installs into it what `pip install` is given;
/// `part` names the benchmark that needs it, in what is printed.
pub async fn make_venv(venv: &Path, part: &str, install: &[&OsStr]) -> anyhow::Result<()> {
    let what = install.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ");
    println!("{part:<9} creating {} (pip install {what})…", venv.display());
    let made = Command::new("python3").arg("-m").arg("venv").arg(venv).status().await?;
    anyhow::ensure!(
        made.success(),
        "python3 -m venv failed (Debian: apt-get install python3-venv)"
    );
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(install)
        .status()
        .await?;
    anyhow::ensure!(pip.success(), "pip install {what} failed");
    Ok(())
}

/// The arguments of `python -m botline.bot` for the benchmark's NOOP bot, with `args` (its name,
/// slots) before the module; and the directory the module is in (its PYTHONPATH).
pub fn noop_bot_args(args: &[String]) -> (Vec<String>, PathBuf) {
    let mut all = vec![
        "-m".to_owned(),
        "botline.bot".to_owned(),
        "--log-level".to_owned(),
        "warning".to_owned(),
    ];
    all.extend(args.iter().cloned());
    all.push("noop_bot".to_owned());
    (all, Path::new(env!("CARGO_MANIFEST_DIR")).join("python"))
}
