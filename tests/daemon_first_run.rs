//! The README's first command, as a new user runs it: `ldae serve --config config/ldae.toml` with the shipped
//! config unchanged (drop folder `var/incoming`, the shipped MNI template, the demo model in `weights/demo`), in
//! a fresh folder that has the repository's `config/` and `weights/`. A DICOM folder dropped into var/incoming
//! is converted, registered, encoded and stored, and `ldae status` shows it. (`ldae commit` replaces the shipped
//! 60 s quiet period to keep the test short.)

mod daemon_util;

use std::process::{Command, Stdio};

use daemon_util::*;

#[test]
fn shipped_config_converts_registers_encodes_and_stores_a_dropped_folder() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(home.path().join("config")).expect("mkdir");
    std::fs::copy(repo.join("config/ldae.toml"), home.path().join("config/ldae.toml")).expect("copy config");
    std::os::unix::fs::symlink(repo.join("weights"), home.path().join("weights")).expect("link weights");
    let bin = home.path().join("ldae");
    std::fs::copy(BIN, &bin).expect("copy binary");
    let log = std::fs::File::create(home.path().join("serve.log")).expect("log");
    let mut daemon = Command::new(&bin)
        .args(["serve", "--config", "config/ldae.toml"])
        .current_dir(home.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start ldae serve");
    let ldae = |args: &[&str]| {
        let out = Command::new(&bin).args(args).current_dir(home.path()).output().expect("run ldae");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let logs = || std::fs::read_to_string(home.path().join("serve.log")).unwrap_or_default();
    // The user drops a DICOM folder.
    let incoming = home.path().join("var/incoming");
    wait_for(20.0, || incoming.is_dir().then_some(())).unwrap_or_else(|| panic!("no var/incoming\n{}", logs()));
    let staging = home.path().join("export");
    std::fs::create_dir_all(&staging).expect("mkdir");
    for f in axial_files() {
        std::fs::copy(&f, staging.join(f.file_name().expect("name"))).expect("copy");
    }
    std::fs::rename(&staging, incoming.join("scan-0001")).expect("drop the folder");

    let uid = "2.25.48328410196769049541763403817621626975";
    let status = || -> Option<serde_json::Value> {
        let (code, out) = ldae(&["status", "--json"]);
        (code == Some(0)).then(|| serde_json::from_str(&out).ok()).flatten()
    };
    let series = |st: &serde_json::Value| st["series"].as_array()?.iter().find(|s| s["series_uid"] == uid).cloned();
    let got = wait_for(30.0, || series(&status()?).filter(|s| s["instances"] == 46));
    assert!(got.is_some(), "instances not recorded: {:?}\n{}", status(), logs());
    let (code, _) = ldae(&["commit", uid]);
    assert_eq!(code, Some(0));
    let done = wait_for(90.0, || series(&status()?).filter(|s| s["state"] == "encoded" || s["state"] == "failed"));
    let Some(s) = done else { panic!("not encoded in time: {:?}\n{}", status(), logs()) };
    assert_eq!(s["state"], "encoded", "{s}\n{}", logs());
    assert_eq!(
        (s["volumes"].as_i64(), s["registrations"].as_i64(), s["embeddings"].as_i64()),
        (Some(1), Some(1), Some(1))
    );

    // What is on disk: the volume, the transform, the model input, the codes with the demo model's y_sem size.
    let out = files_under(&home.path().join("var/outputs"));
    let find = |suffix: &str| out.iter().find(|p| p.to_string_lossy().ends_with(suffix)).cloned();
    assert!(find("_template_to_native.txt").is_some(), "{out:?}");
    let input = ldae::nifti::read_nifti(&find("_model_input.nii.gz").expect("model input")).expect("read");
    let model = ldae::model::config::ModelConfig::load(&repo.join("weights/demo/config.json")).expect("demo config");
    assert_eq!(input.shape(), model.data.resize_to);
    let codes = ldae::model::codes::load_codes(&find(".safetensors").expect("codes")).expect("load codes");
    assert_eq!(codes.codes.y_sem.dims(), &[1, model.latent_dim()]);
    // The human-readable status names it too.
    let (code, text) = ldae(&["status"]);
    assert_eq!(code, Some(0));
    assert!(text.contains(uid) && text.contains("encoded") && text.contains("embeddings=1"), "{text}");
    assert_eq!(files_under(&home.path().join("var/archive")).len(), 46);
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", logs());
}
