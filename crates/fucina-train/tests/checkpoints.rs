//! Checkpoints on disk: the manifest catches truncated and altered files, `auto` falls back to
//! the checkpoint before, retention keeps what it promises, and a full disk leaves the earlier
//! checkpoints intact.

use fucina_data::LoaderState;
use fucina_train::checkpoint::{self, Retention, TrainState};
use std::path::Path;
use std::process::Command;

const ALL: Retention = Retention { keep: 0, every: 0 };

fn state(step: u64) -> TrainState {
    TrainState {
        step,
        loader: LoaderState {
            step,
            seed: 1,
            mixture: vec![],
        },
        world_size: 1,
        tokens: step * 100,
        last_loss: Some(1.0),
        fucina_version: "test".into(),
        skipped_steps: 0,
        optimizer: Default::default(),
        weights: Default::default(),
        shards: 0,
    }
}

/// Distinct contents per step, so a fallback is seen in what is loaded.
fn save(out: &Path, step: u64, size: usize, retention: Retention) -> anyhow::Result<()> {
    let model = vec![step as u8; size];
    let optim = vec![!(step as u8); size];
    checkpoint::save(out, &model, &optim, &state(step), "k = 1\n", retention).map(|_| ())
}

fn steps(out: &Path) -> Vec<u64> {
    checkpoint::list(out)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

fn dir(out: &Path, step: u64) -> std::path::PathBuf {
    out.join(format!("checkpoints/step_{step:08}"))
}

#[test]
fn a_truncated_newest_checkpoint_falls_back_to_the_one_before() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    for step in [10, 20] {
        save(out, step, 1000, ALL).unwrap();
    }
    let model = dir(out, 20).join("model.mpk");
    std::fs::write(&model, vec![20u8; 600]).unwrap();
    let (found, loaded) = checkpoint::open(out, "auto").unwrap().unwrap();
    assert_eq!(found, dir(out, 10));
    assert_eq!(loaded.state.step, 10);
    assert_eq!(loaded.model, vec![10u8; 1000]);

    // Named explicitly, the damaged one is an error, not a silent substitute.
    let err = checkpoint::open(out, dir(out, 20).to_str().unwrap()).unwrap_err();
    assert!(format!("{err:#}").contains("600 bytes"), "{err:#}");

    // One flipped byte, same size: the checksum catches it.
    let optim = dir(out, 10).join("optim.mpk");
    let mut bytes = std::fs::read(&optim).unwrap();
    bytes[500] ^= 1;
    std::fs::write(&optim, bytes).unwrap();
    let err = format!("{:#}", checkpoint::open(out, "if-present").unwrap_err());
    assert!(err.contains("no usable checkpoint"), "{err}");
    assert!(
        err.contains("SHA-256") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn auto_needs_a_checkpoint_and_if_present_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let err = checkpoint::open(tmp.path(), "auto").unwrap_err();
    assert!(err.to_string().contains("no complete checkpoint"), "{err}");
    assert!(checkpoint::open(tmp.path(), "if-present")
        .unwrap()
        .is_none());
    // A directory without its DONE marker was never finished.
    save(tmp.path(), 5, 10, ALL).unwrap();
    std::fs::remove_file(dir(tmp.path(), 5).join("DONE")).unwrap();
    assert!(checkpoint::open(tmp.path(), "if-present")
        .unwrap()
        .is_none());
}

#[test]
fn retention_keeps_the_newest_and_every_mth() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = Retention { keep: 2, every: 10 };
    for step in [5, 10, 15, 20, 25, 30, 35] {
        save(tmp.path(), step, 10, keep).unwrap();
    }
    assert_eq!(steps(tmp.path()), vec![10, 20, 30, 35]);
    let newest = Retention { keep: 1, every: 0 };
    save(tmp.path(), 40, 10, newest).unwrap();
    assert_eq!(steps(tmp.path()), vec![40]);
}

/// Needs root (to mount a small tmpfs); says so and passes otherwise.
#[test]
fn a_full_disk_keeps_the_previous_checkpoint() {
    let mount = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(mount.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let out = mount.path().join("run");
    let result = std::panic::catch_unwind(|| {
        save(&out, 1, 100_000, ALL).unwrap();
        let err = save(&out, 2, 400_000, ALL).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("earlier checkpoints are intact"),
            "{message}"
        );
        assert!(message.contains("No space left"), "{message}");
        assert_eq!(steps(&out), vec![1]);
        let (_, loaded) = checkpoint::open(&out, "auto").unwrap().unwrap();
        assert_eq!(loaded.model, vec![1u8; 100_000]);
        // Nothing half-written is left to fill the disk further.
        let names: Vec<_> = std::fs::read_dir(out.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    });
    Command::new("umount").arg(mount.path()).status().unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
