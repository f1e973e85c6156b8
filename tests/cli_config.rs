//! Finding the configuration and resolving its paths, with the real binary run from outside the checkout:
//! without --config it uses the checkout's config/ldae.toml (the one it was built from), whose relative paths
//! resolve against config/ — so the template and demo model are found from any working directory; a config
//! elsewhere resolves its relative paths against its own folder.

use std::path::Path;
use std::process::Command;

fn ldae_in(cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ldae"))
        .args(args)
        .current_dir(cwd)
        .env_remove("LDAE_CONFIG")
        .output()
        .expect("run ldae");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The value printed by `ldae config check` for `key`.
fn value<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("  {key} = ");
    out.lines().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("{key} not printed: {out}"))
}

#[test]
fn default_config_is_found_from_any_directory_and_resolves_into_the_checkout() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cwd = tempfile::tempdir().expect("tmp");
    let (ok, out, err) = ldae_in(cwd.path(), &["config", "check"]);
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("{}: ok", repo.join("config/ldae.toml").display())), "{out}");
    let template = value(&out, "preprocess.template");
    assert_eq!(Path::new(template), repo.join("weights/templates/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"));
    assert!(Path::new(template).is_file() && Path::new(value(&out, "preprocess.template_mask")).is_file());
    assert_eq!(Path::new(value(&out, "model.dir")), repo.join("weights/demo"));
    assert!(repo.join("weights/demo/config.json").is_file());
    assert_eq!(Path::new(value(&out, "paths.incoming")), repo.join("var/incoming"));
}

#[test]
fn relative_paths_resolve_against_the_config_files_folder() {
    let tmp = tempfile::tempdir().expect("tmp");
    let conf = tmp.path().join("site");
    std::fs::create_dir_all(&conf).expect("mkdir");
    std::fs::write(
        conf.join("ldae.toml"),
        "[paths]\nincoming = [\"drop\", \"/srv/pacs\"]\nstate = \"./state\"\n[model]\ndir = \"../models/m\"\n",
    )
    .expect("write");
    let elsewhere = tempfile::tempdir().expect("tmp");
    let cfg = conf.join("ldae.toml");
    let (ok, out, err) = ldae_in(elsewhere.path(), &["--config", cfg.to_str().expect("utf-8"), "config", "check"]);
    assert!(ok, "{err}");
    let incoming: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("  paths.incoming = ")).collect();
    assert_eq!(incoming, [conf.join("drop").to_str().expect("utf-8"), "/srv/pacs"]);
    assert_eq!(Path::new(value(&out, "paths.state")), conf.join("state"));
    assert_eq!(Path::new(value(&out, "model.dir")), tmp.path().join("models/m"));
    // Keys left out take the shipped defaults, relative to this file's folder too.
    assert_eq!(Path::new(value(&out, "paths.outputs")), tmp.path().join("var/outputs"));
}
