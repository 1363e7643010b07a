//! A run on two weighted sources: validation reports each source's loss and their total, an
//! interrupted and resumed run follows the straight one bit for bit, and a resume with another
//! mixture is refused.

mod common;

use common::{param_bits, tiny_run, B};
use fucina_data::{corpus, prepare, PrepareOptions, TokenDataset};
use fucina_dist::SingleProcess;
use fucina_model::Llama;
use fucina_train::metrics::{read_events, Event, METRICS_FILE};
use fucina_train::trainer::evaluate;
use fucina_train::{checkpoint, data, train, RunConfig, TrainOptions};
use std::collections::BTreeMap;
use std::path::Path;

/// The built-in corpus in capitals, prepared with the built-in tokenizer: a second source
/// whose tokens differ from the first's.
fn shouted_source(dir: &Path) {
    let files = corpus::write_builtin_corpus(&dir.join("text")).unwrap();
    let loud: Vec<_> = files
        .iter()
        .map(|f| {
            let out = f.with_extension("loud.txt");
            std::fs::write(&out, std::fs::read_to_string(f).unwrap().to_uppercase()).unwrap();
            out
        })
        .collect();
    let opts = PrepareOptions {
        val_fraction: 0.1,
        progress: false,
        ..Default::default()
    };
    prepare(
        &data::builtin_tokenizer().unwrap(),
        &loud,
        &dir.join("loud"),
        &opts,
    )
    .unwrap();
}

fn mixture_run(out: &Path, loud: &Path, weights: (f64, f64)) -> RunConfig {
    let sources = format!(
        r#"data.sources=[{{dir = "builtin", name = "en", weight = {}}}, {{dir = "{}", weight = {}}}]"#,
        weights.0,
        loud.display(),
        weights.1
    );
    tiny_run(
        out,
        &["data.dir=\"\"", &sources, "eval.every=5", "eval.batches=2"],
    )
}

fn val_events(out: &Path) -> Vec<(u64, f64, BTreeMap<String, f64>)> {
    read_events(&out.join(METRICS_FILE))
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            Event::Val {
                step,
                val_loss,
                sources,
                ..
            } => Some((step, val_loss, sources)),
            _ => None,
        })
        .collect()
}

fn final_model(run: &RunConfig) -> Llama<B> {
    let device = Default::default();
    let dir = checkpoint::resolve(&run.out_dir, "auto").unwrap();
    let model = Llama::<B>::new(&run.model_config().unwrap(), &device);
    checkpoint::load_model::<B, _>(&dir, model, &device).unwrap()
}

#[test]
fn two_sources_report_their_losses_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    shouted_source(tmp.path());
    let loud = tmp.path().join("loud");

    let straight = mixture_run(&tmp.path().join("straight"), &loud, (0.7, 0.3));
    let whole = train(straight.clone(), &SingleProcess, TrainOptions::default()).unwrap();
    assert_eq!(whole.losses.len(), 20);

    let events = val_events(&straight.out_dir);
    assert_eq!(
        events.iter().map(|e| e.0).collect::<Vec<_>>(),
        [5, 10, 15, 20]
    );
    for (step, total, sources) in &events {
        let names: Vec<&str> = sources.keys().map(String::as_str).collect();
        assert_eq!(names, ["en", "loud"], "step {step}");
        // Both evaluate 2 batches of 2 × 32 targets: the total is their plain mean.
        let mean = (sources["en"] + sources["loud"]) / 2.0;
        assert!(
            (total - mean).abs() < 1e-4,
            "step {step}: {total} vs {mean}"
        );
    }
    // The last losses, recomputed from the saved weights on each source's own shards.
    let model = final_model(&straight);
    let device = Default::default();
    let (_, _, last) = events.last().unwrap();
    for (name, dir) in [
        ("en", straight.out_dir.join("data").join("builtin")),
        ("loud", loud.clone()),
    ] {
        let val = TokenDataset::open_glob_dir(&dir, "val").unwrap();
        let loss = evaluate(&model, &val, 32, 2, 2, &SingleProcess, &device)
            .unwrap()
            .unwrap();
        assert!(
            (loss - last[name]).abs() < 1e-4,
            "{name}: {loss} vs {}",
            last[name]
        );
    }

    let split = mixture_run(&tmp.path().join("split"), &loud, (0.7, 0.3));
    let stop = TrainOptions {
        stop_after: Some(10),
        ..Default::default()
    };
    let first = train(split.clone(), &SingleProcess, stop).unwrap();
    let resume = || TrainOptions {
        resume: Some("auto".into()),
        ..Default::default()
    };
    let rest = train(split.clone(), &SingleProcess, resume()).unwrap();
    let joined: Vec<u64> = first
        .losses
        .iter()
        .chain(&rest.losses)
        .map(|l| l.to_bits())
        .collect();
    let expected: Vec<u64> = whole.losses.iter().map(|l| l.to_bits()).collect();
    assert_eq!(joined, expected, "losses differ");
    assert_eq!(
        param_bits(&final_model(&straight)),
        param_bits(&final_model(&split))
    );

    // Weights scaled by one factor sample the same data; other weights do not.
    let scaled = mixture_run(&split.out_dir, &loud, (1.4, 0.6));
    train(scaled, &SingleProcess, resume()).unwrap();
    let other = mixture_run(&split.out_dir, &loud, (0.5, 0.5));
    let err = format!("{:#}", train(other, &SingleProcess, resume()).unwrap_err());
    assert!(err.contains("checkpoint was trained on"), "{err}");
}

#[test]
fn bad_sources_are_refused_with_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let parse = |extra: &[&str]| {
        RunConfig::from_toml_str(
            &format!(
                "out_dir = \"{}\"\n[model]\npreset = \"tiny\"\n[data]\nseq_len = 32\n[train]\nsteps = 1\nglobal_batch_tokens = 64\nmicro_batch_size = 2\nlr = 1e-3\n",
                out.display()
            ),
            &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .map_err(|e| format!("{e:#}"))
    };
    let both = parse(&[
        "data.dir=\"builtin\"",
        r#"data.sources=[{dir = "builtin"}]"#,
    ]);
    assert!(both.unwrap_err().contains("replaces data.dir"));
    let zero = parse(&[r#"data.sources=[{dir = "a"}, {dir = "b", weight = 0}]"#]);
    let zero = zero.unwrap_err();
    assert!(
        zero.contains("data.sources[1]") && zero.contains("positive"),
        "{zero}"
    );
    let twice = parse(&[r#"data.sources=[{dir = "x/fr"}, {dir = "y/fr"}]"#]).unwrap_err();
    assert!(
        twice.contains("\"fr\"") && twice.contains("name ="),
        "{twice}"
    );
    assert!(parse(&[]).unwrap_err().contains("data.sources"));

    let missing = tmp.path().join("nowhere");
    let config = parse(&[&format!(
        r#"data.sources=[{{dir = "builtin"}}, {{dir = "{}"}}]"#,
        missing.display()
    )])
    .unwrap();
    let err = format!(
        "{:#}",
        train(config, &SingleProcess, TrainOptions::default()).unwrap_err()
    );
    assert!(
        err.contains("data.sources[1]") && err.contains("not a directory"),
        "{err}"
    );
}

#[test]
fn the_mixture_example_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("configs/runs/mixture-example.toml")).unwrap();
    let config = RunConfig::from_toml_str(&text.replace("<DATA_DIR>", "/tmp/data"), &[]).unwrap();
    let names: Vec<String> = config.data.sources.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["en", "fr"]);
}
