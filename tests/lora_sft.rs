//! Chat SFT with LoRA under a real `mpirun`: conversations prepared with a real model's chat
//! template, loss on assistant tokens only, adapters trained on a frozen model; 2 and 3 ranks
//! follow the 1-rank run of the same global batch.
#![cfg(feature = "mpi")]

mod common;
use common::{check, train};
use std::path::Path;
use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_fucina");

/// Conversations of varied length, so rows hold different numbers of assistant tokens and a
/// per-micro-batch mean would differ from the per-token mean over the global batch.
fn write_chats(path: &Path) {
    let words = [
        "il", "mare", "è", "calmo", "la", "forgia", "arde", "oggi", "domani", "sì",
    ];
    let mut lines = Vec::new();
    for i in 0..48 {
        let say = |n: usize, k: usize| -> String {
            (0..n)
                .map(|j| words[(i * 3 + j * k) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut messages = vec![serde_json::json!({"role": "user", "content": say(2 + i % 4, 1)})];
        messages.push(serde_json::json!({"role": "assistant", "content": say(1 + i % 6, 3)}));
        if i % 3 == 0 {
            messages.push(serde_json::json!({"role": "user", "content": say(2, 7)}));
            messages.push(serde_json::json!({"role": "assistant", "content": say(3, 1)}));
        }
        lines.push(serde_json::json!({ "messages": messages }).to_string());
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn write_config(dir: &Path) -> String {
    let path = dir.join("sft.toml");
    let text = format!(
        r#"out_dir = "unused"
seed = 4
[model]
preset = "tiny"
[lora]
r = 4
alpha = 8.0
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
[data]
dir = "{data}"
seq_len = 128
[train]
steps = 8
global_batch_tokens = {tokens}
micro_batch_size = 2
lr = 2e-2
warmup_steps = 2
weight_decay = 0.0
[eval]
every = 4
batches = 2
[checkpoint]
every = 8
"#,
        data = dir.join("data").display(),
        tokens = 12 * 128,
    );
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn metrics(run_dir: &Path, kind: &str, field: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == kind)
        .map(|e| e[field].as_f64().unwrap())
        .collect()
}

#[test]
fn lora_sft_on_two_and_three_ranks_equals_one() {
    let tmp = tempfile::tempdir().unwrap();
    write_chats(&tmp.path().join("chats.jsonl"));
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chat/qwen2-7b-instruct/tokenizer_config.json");
    let prepared = Command::new(EXE)
        .args([
            "prepare",
            "--tokenizer",
            "builtin",
            "--seq-len",
            "128",
            "--val-fraction",
            "0.2",
        ])
        .arg("--chat-template")
        .arg(&template)
        .arg("--out")
        .arg(tmp.path().join("data"))
        .arg(tmp.path().join("chats.jsonl"))
        .output()
        .unwrap();
    check(&prepared, "prepare");
    assert!(tmp.path().join("data/train_000000.mask").is_file());

    let config = write_config(tmp.path());
    let mut runs = Vec::new();
    for np in [1, 2, 3] {
        let dir = tmp.path().join(format!("np{np}"));
        let stderr = check(&train(np, &config, &dir, &[]), &format!("{np} ranks"));
        if np > 1 {
            assert!(
                stderr.contains(&format!("replicas identical on {np} ranks")),
                "{stderr}"
            );
        }
        runs.push((
            metrics(&dir, "train", "loss"),
            metrics(&dir, "val", "val_loss"),
        ));
    }
    let (one_train, one_val) = &runs[0];
    assert_eq!(one_train.len(), 8);
    assert!(
        one_train[7] < one_train[0],
        "LoRA must learn: {one_train:?}"
    );
    for (np, (train, val)) in [2, 3].iter().zip(&runs[1..]) {
        for (what, a, b) in [("train", train, one_train), ("val", val, one_val)] {
            assert_eq!(a.len(), b.len());
            for (step, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-4 * y.abs(),
                    "{np} ranks, {what} {step}: {x} vs {y}"
                );
            }
        }
    }
}
