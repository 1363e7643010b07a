//! A model trained from scratch exports as a plain Llama checkpoint with its tokenizer, and
//! the export holds exactly the trained weights.

mod common;

use common::{tiny_run, B};
use fucina_dist::SingleProcess;
use fucina_model::hf::HfCheckpoint;
use fucina_train::export::{checkpoint_dir, export, model_skeleton, ExportRequest, Exported};
use fucina_train::{checkpoint, train, TrainOptions};

#[test]
fn a_fresh_run_exports_weights_tokenizer_and_its_end_of_text() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(&tmp.path().join("run"), &["train.steps=2"]);
    train(run.clone(), &SingleProcess, TrainOptions::default()).unwrap();
    let out = tmp.path().join("export");
    let request = ExportRequest {
        source: run.out_dir.clone(),
        out: out.clone(),
        dtype: None,
        merge: false,
        max_shard_bytes: 100_000,
        overwrite: false,
        progress: false,
    };
    let Exported::Model(summary) = export(request.clone()).unwrap() else {
        panic!("a run without LoRA exports a model");
    };
    assert!(summary.weight_files.len() > 1, "sharded above 100 kB");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["eos_token"], "<|endoftext|>");
    assert!(out.join("tokenizer.json").is_file());

    let device = Default::default();
    let exported = HfCheckpoint::open(&out).unwrap();
    assert_eq!(exported.config(), &run.model_config().unwrap());
    let reloaded = exported.load::<B>(&device, false).unwrap();
    let trained = model_skeleton::<B>(&run, &device).unwrap();
    let dir = checkpoint_dir(&run.out_dir).unwrap();
    let trained = checkpoint::load_model::<B, _>(&dir, trained, &device).unwrap();
    assert_eq!(common::param_bits(&reloaded), common::param_bits(&trained));
}

/// Mistakes at export time are named with the flag that fixes them, before anything loads.
#[test]
fn export_mistakes_name_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(&tmp.path().join("run"), &["train.steps=1"]);
    let request = |merge| ExportRequest {
        source: run.out_dir.clone(),
        out: tmp.path().join("export"),
        dtype: None,
        merge,
        max_shard_bytes: 100_000,
        overwrite: false,
        progress: false,
    };
    // No checkpoint yet: the error speaks of the run directory, not of `--resume`.
    std::fs::create_dir_all(&run.out_dir).unwrap();
    let err = format!("{:#}", export(request(false)).unwrap_err());
    assert!(
        err.contains("no complete checkpoint") && !err.contains("--resume"),
        "{err}"
    );

    train(run.clone(), &SingleProcess, TrainOptions::default()).unwrap();
    let err = format!("{:#}", export(request(true)).unwrap_err());
    assert!(
        err.contains("--merge folds LoRA adapters") && err.contains("without --merge"),
        "{err}"
    );
    std::fs::create_dir_all(tmp.path().join("export/old")).unwrap();
    let err = format!("{:#}", export(request(false)).unwrap_err());
    assert!(
        err.contains("is not empty") && err.contains("--overwrite"),
        "{err}"
    );
}
