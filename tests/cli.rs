//! The `fucina` binary end to end on real files: train a tokenizer, prepare shards, train,
//! resume, sample, plot — and the errors a user meets first.

use std::path::Path;
use std::process::{Command, Output};

fn fucina(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fucina"))
        .args(args)
        .output()
        .expect("the fucina binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = fucina(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fucina {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = fucina(args);
    assert!(!out.status.success(), "fucina {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const DOCS: &str =
    "Die Würde des Menschen ist unantastbar.\n\nLa dignité humaine est inviolable.\n\n\
La dignità umana è inviolabile.\n\nGodność człowieka jest nienaruszalna.\n\n\
Η ανθρώπινη αξιοπρέπεια είναι απαραβίαστη.\n\nHuman dignity is inviolable.\n\n";

fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..8 {
        std::fs::write(dir.join(format!("part{i}.txt")), DOCS.repeat(i + 1)).unwrap();
    }
}

fn run_toml(dir: &Path) -> String {
    format!(
        r#"out_dir = "{run}"
[model]
preset = "tiny"
vocab_size = 512
[data]
dir = "{data}"
tokenizer = "{tok}"
seq_len = 16
[train]
steps = 6
global_batch_tokens = 64
micro_batch_size = 2
lr = 3e-3
[eval]
every = 3
batches = 2
[checkpoint]
every = 3
keep = 5
"#,
        run = dir.join("run").display(),
        data = dir.join("data").display(),
        tok = dir.join("tokenizer.json").display()
    )
}

#[test]
fn tokenizer_prepare_train_resume_generate_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_corpus(&dir.join("text"));
    let tok = dir.join("tokenizer.json");
    let text = dir.join("text");
    ok(&[
        "tokenizer",
        "train",
        "--vocab-size",
        "300",
        "--out",
        tok.to_str().unwrap(),
        text.to_str().unwrap(),
    ]);
    let data = dir.join("data");
    ok(&[
        "prepare",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
        "--val-fraction",
        "0.2",
        text.to_str().unwrap(),
    ]);
    assert!(data.join("train_000000.bin").is_file() && data.join("val_000000.bin").is_file());

    // The same in three parts (as three array tasks would), merged: the same bytes.
    let parts = dir.join("data-parts");
    for part in ["2/3", "0/3", "1/3"] {
        ok(&[
            "prepare",
            "--tokenizer",
            tok.to_str().unwrap(),
            "--out",
            parts.to_str().unwrap(),
            "--val-fraction",
            "0.2",
            "--part",
            part,
            text.to_str().unwrap(),
        ]);
    }
    ok(&["prepare", "--merge", "--out", parts.to_str().unwrap()]);
    for entry in std::fs::read_dir(&data).unwrap() {
        let name = entry.unwrap().file_name();
        let (a, b) = (data.join(&name), parts.join(&name));
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{name:?} differs"
        );
    }
    assert_eq!(
        std::fs::read_dir(&parts).unwrap().count(),
        std::fs::read_dir(&data).unwrap().count()
    );

    let config = dir.join("run.toml");
    std::fs::write(&config, run_toml(dir)).unwrap();
    let config = config.to_str().unwrap();
    let stdout = ok(&["train", config, "--sample-tokens", "8"]);
    assert!(stdout.contains("--- sample ---"), "{stdout}");

    let run = dir.join("run");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let train: Vec<_> = events.iter().filter(|e| e["kind"] == "train").collect();
    let steps: Vec<u64> = train.iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
    for key in ["loss", "lr", "grad_norm", "tokens_per_sec", "elapsed"] {
        assert!(
            train
                .iter()
                .all(|e| e[key].as_f64().is_some_and(f64::is_finite)),
            "{key} in {metrics}"
        );
    }
    assert_eq!(events.iter().filter(|e| e["kind"] == "val").count(), 2);
    let png = std::fs::read(run.join("loss.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    for step in [3, 6] {
        assert!(run
            .join(format!("checkpoints/step_{step:08}/DONE"))
            .is_file());
    }

    // Sampling is reproducible from a seed and differs across seeds often enough to matter.
    let run_dir = run.to_str().unwrap();
    let sample = |seed: &str| {
        ok(&[
            "generate",
            run_dir,
            "--max-tokens",
            "12",
            "--seed",
            seed,
            "--prompt",
            "La",
        ])
    };
    assert_eq!(sample("1"), sample("1"));
    assert!(sample("1").starts_with("La"));

    // A finished run resumed with more steps continues from its last checkpoint.
    let resumed = ok(&[
        "train",
        config,
        "--set",
        "train.steps=8",
        "--resume",
        "auto",
        "--sample-tokens",
        "0",
    ]);
    let _ = resumed;
    assert!(run.join("checkpoints/step_00000008/DONE").is_file());
    std::fs::remove_file(run.join("loss.png")).unwrap();
    ok(&["plot", run_dir]);
    assert!(run.join("loss.png").is_file());
}

#[test]
fn first_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    assert!(fails(&["train", missing.to_str().unwrap()]).contains("missing.toml"));

    let tok = tmp.path().join("tok.json");
    std::fs::write(&tok, "{ not json").unwrap();
    let out = tmp.path().join("out");
    let message = fails(&[
        "prepare",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "x.txt",
    ]);
    assert!(message.contains("tok.json"), "{message}");

    let message = fails(&["generate", tmp.path().to_str().unwrap()]);
    assert!(message.contains("checkpoint"), "{message}");
    let message = fails(&["plot", tmp.path().to_str().unwrap()]);
    assert!(message.contains("metrics.jsonl"), "{message}");

    if !cfg!(feature = "cuda") {
        let config = tmp.path().join("run.toml");
        std::fs::write(&config, run_toml(tmp.path())).unwrap();
        let message = fails(&["train", config.to_str().unwrap(), "--set", "backend=cuda"]);
        assert!(message.contains("--features cuda"), "{message}");
    }
}

#[test]
fn prepare_pack_reports_the_saving_and_refuses_misuse() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chat/qwen2-7b-instruct/tokenizer_config.json");
    let chats: String = ["Hi", "Ciao", "Bonjour", "Hallo", "Hola"]
        .iter()
        .map(|w| {
            let messages = [("user", *w), ("assistant", "Human dignity is inviolable.")]
                .map(|(role, content)| serde_json::json!({"role": role, "content": content}));
            serde_json::json!({ "messages": messages }).to_string() + "\n"
        })
        .collect();
    let input = d.join("chats.jsonl");
    std::fs::write(&input, chats).unwrap();
    let (input, config) = (input.to_str().unwrap(), config.to_str().unwrap());
    let out = d.join("out");
    let prepare = |extra: &[&str]| {
        let mut args = vec![
            "prepare",
            "--tokenizer",
            "builtin",
            "--chat-template",
            config,
        ];
        args.extend(["--seq-len", "511", "--val-fraction", "0"]);
        args.extend(extra);
        fucina(&args)
    };
    let packed = prepare(&["--pack", "--out", out.to_str().unwrap(), input]);
    let stderr = String::from_utf8_lossy(&packed.stderr);
    assert!(packed.status.success(), "{stderr}");
    assert!(
        stderr.contains("packed 5 conversations into 1 row of 512 tokens: ")
            && stderr.contains("(unpacked: 5 rows, "),
        "{stderr}"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["chat"]["packed"], true);
    assert_eq!(meta["chat"]["conversation_rows"], 1);

    let message = fails(&[
        "prepare",
        "--tokenizer",
        "builtin",
        "--pack",
        "--part",
        "0/2",
        "--out",
        "x",
        input,
    ]);
    assert!(
        message.contains("--pack") && message.contains("--part"),
        "{message}"
    );
    let text = d.join("text.txt");
    std::fs::write(&text, DOCS).unwrap();
    let out = d.join("text");
    let failed = prepare(&[
        "--pack",
        "--out",
        out.to_str().unwrap(),
        text.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success() && stderr.contains("data.document_mask = true"),
        "{stderr}"
    );
}
