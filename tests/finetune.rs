//! The README's fine-tuning walk-through, command by command on the real binary: a Hugging Face
//! directory (the transformers-written fixture) and a JSONL of conversations → `fucina prepare`
//! → `fucina train` with `[lora]` → `fucina export` as a PEFT adapter and as a merged model,
//! which then loads as a plain Hugging Face checkpoint.

use fucina_model::hf::HfCheckpoint;
use std::path::Path;
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_fucina");

fn fucina(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    stderr
}

/// A word-level tokenizer that fits the fixture's 256 ids, with ChatML's markers as special
/// tokens, written where a HF model keeps it, beside the real Qwen2 chat template.
fn write_model_dir(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(root.join("hf/llama-gqa")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::copy(
        root.join("chat/qwen2-7b-instruct/tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    let words = "system user assistant You are a helpful . ciao buongiorno come stai bene grazie e tu la forgia arde il mare calmo ? !";
    let mut vocab = serde_json::Map::new();
    for (i, w) in specials
        .iter()
        .chain(words.split(' ').collect::<Vec<_>>().iter())
        .enumerate()
    {
        vocab.insert(w.to_string(), i.into());
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(id, c)| {
            serde_json::json!({"id": id, "content": c, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<|endoftext|>"}
    });
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
}

fn write_chats(path: &Path) {
    let turns = [
        ("ciao", "ciao ! come stai ?"),
        ("come stai ?", "bene grazie e tu ?"),
        ("buongiorno", "buongiorno ! la forgia arde"),
        ("il mare ?", "il mare calmo"),
    ];
    let lines: Vec<String> = (0..40)
        .map(|i| {
            let (q, a) = turns[i % turns.len()];
            serde_json::json!({"messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]})
            .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

#[test]
fn hf_directory_to_fine_tuned_export() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data, run) = (
        tmp.path().join("model"),
        tmp.path().join("data"),
        tmp.path().join("run"),
    );
    write_model_dir(&model);
    write_chats(&tmp.path().join("chats.jsonl"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // The data is prepared with another template than the base model's (a comment added):
    // the export must carry this one.
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let mut own = json(&model.join("tokenizer_config.json"));
    let template = format!(
        "{{#- fine-tuned #}}{}",
        own["chat_template"].as_str().unwrap()
    );
    own["chat_template"] = template.clone().into();
    let own_path = tmp.path().join("own/tokenizer_config.json");
    std::fs::create_dir_all(own_path.parent().unwrap()).unwrap();
    std::fs::write(&own_path, own.to_string()).unwrap();

    ok(
        fucina(&[
            "prepare",
            "--chat-template",
            &s(&own_path),
            "--tokenizer",
            &s(&model.join("tokenizer.json")),
            "--seq-len",
            "31",
            "--val-fraction",
            "0.1",
            "--out",
            &s(&data),
            &s(&tmp.path().join("chats.jsonl")),
        ]),
        "prepare",
    );
    let config = tmp.path().join("sft.toml");
    std::fs::write(
        &config,
        format!(
            r#"out_dir = "{run}"
[model]
hf = "{model}"
[lora]
r = 4
alpha = 8.0
target_modules = ["q_proj", "v_proj", "down_proj"]
[data]
dir = "{data}"
tokenizer = "{model}/tokenizer.json"
seq_len = 31
[train]
steps = 12
global_batch_tokens = 248
micro_batch_size = 4
lr = 3e-2
weight_decay = 0.0
[eval]
every = 6
batches = 1
"#,
            run = s(&run),
            model = s(&model),
            data = s(&data)
        ),
    )
    .unwrap();
    ok(
        fucina(&["train", &s(&config), "--sample-tokens", "0"]),
        "train",
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "train")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    assert!(
        losses[11] < 0.7 * losses[0],
        "the replies must be learnt: {losses:?}"
    );

    // Chatting with the fine-tuned run: its own template, greedy, with and without the
    // key/value cache (the same reply), ending at <|im_end|> rather than at --max-tokens.
    let chat = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            run.to_str().unwrap(),
            "--chat",
            "--prompt",
            "ciao",
        ];
        args.extend(["--temperature", "0", "--max-tokens", "40"]);
        args.extend(extra);
        let out = fucina(&args);
        let stderr = ok(out.clone(), "generate --chat");
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
    };
    let (reply, said) = chat(&[]);
    assert!(said.contains("key/value cache on"), "{said}");
    // One of the replies it was trained on (the decoder joins punctuation to the word before).
    let squeeze = |t: &str| t.split_whitespace().collect::<String>();
    let learnt = [
        "ciao ! come stai ?",
        "bene grazie e tu ?",
        "buongiorno ! la forgia arde",
        "il mare calmo",
    ];
    let replied = learnt.iter().any(|l| squeeze(l) == squeeze(&reply));
    assert!(replied, "not a learnt reply: {reply:?}");
    let (again, said) = chat(&["--no-cache"]);
    assert_eq!(reply, again, "{said}");
    let line = said.lines().find(|l| l.contains(" tokens in ")).unwrap();
    let generated: usize = line.split_whitespace().next().unwrap().parse().unwrap();
    assert!(generated < 40, "stopped at the end of the turn: {said}");

    let adapter = tmp.path().join("adapter");
    let said = ok(
        fucina(&["export", &s(&run), "--out", &s(&adapter)]),
        "export adapter",
    );
    assert!(said.contains("PEFT"), "{said}");
    assert!(adapter.join("adapter_config.json").is_file());
    assert!(adapter.join("adapter_model.safetensors").is_file());

    let merged = tmp.path().join("merged");
    ok(
        fucina(&[
            "export",
            &s(&run),
            "--merge",
            "--dtype",
            "bf16",
            "--out",
            &s(&merged),
        ]),
        "export merged",
    );
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(
            merged.join(file).is_file(),
            "{file} missing from the export"
        );
    }
    // The template and the eos/pad ids of the prepared rows travel with the model.
    let exported_config = json(&merged.join("tokenizer_config.json"));
    assert_eq!(
        exported_config["chat_template"].as_str(),
        Some(template.as_str())
    );
    let jinja = std::fs::read_to_string(merged.join("chat_template.jinja")).unwrap();
    assert_eq!(jinja, template);
    let meta = json(&data.join("meta.json"));
    let model_config = json(&merged.join("config.json"));
    let eos = model_config["eos_token_id"].clone();
    let holds = |v: &serde_json::Value, id: &serde_json::Value| {
        v == id || v.as_array().is_some_and(|a| a.contains(id))
    };
    assert!(holds(&eos, &meta["eos_id"]), "{eos} vs {}", meta["eos_id"]);
    assert_eq!(model_config["pad_token_id"], meta["chat"]["pad_id"]);
    let exported = HfCheckpoint::open(&merged).unwrap();
    assert_eq!(
        exported.torch_dtype().map(|d| d.torch_name()),
        Some("bfloat16")
    );
    assert_eq!(
        exported.config(),
        HfCheckpoint::open(&model).unwrap().config()
    );

    // A second export into the same place is refused rather than mixed with the first.
    let again = fucina(&["export", &s(&run), "--merge", "--out", &s(&merged)]);
    assert!(!again.status.success());
    let e = String::from_utf8_lossy(&again.stderr);
    assert!(e.contains("not empty") || e.contains("exists"), "{e}");
    let e = String::from_utf8_lossy(
        &fucina(&["export", &s(&tmp.path().join("nothing")), "--out", "x"]).stderr,
    )
    .into_owned();
    assert!(
        e.contains("neither a checkpoint nor a run directory"),
        "{e}"
    );
}

/// Conversations of 1 or 2 turns and replies of 1 to 6 words: lengths that leave room to pack.
fn write_varied_chats(path: &Path) {
    let words: Vec<&str> =
        "ciao buongiorno come stai bene grazie e tu la forgia arde il mare calmo"
            .split(' ')
            .collect();
    let text = |seed: usize, n: usize| -> String {
        (0..n)
            .map(|k| words[(seed * 7 + k * 3) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let lines: Vec<String> = (0..30)
        .map(|i| {
            let mut messages = vec![];
            for turn in 0..1 + i % 2 {
                messages
                    .push(serde_json::json!({"role": "user", "content": text(i + turn, 1 + turn)}));
                let reply = text(i * 5 + turn, 1 + (i * 7 + turn) % 6);
                messages.push(serde_json::json!({"role": "assistant", "content": reply}));
            }
            serde_json::json!({ "messages": messages }).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// Rows in a prepared directory's training split.
fn train_rows(data: &Path, row_len: u64) -> u64 {
    let meta = std::fs::read_to_string(data.join("meta.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    meta["train"]["tokens"].as_u64().unwrap() / row_len
}

/// `prepare --pack` puts several conversations in a row, each attending only to itself from
/// position 0: a step over the whole dataset then has the loss and the gradient of the same
/// step over one conversation per row, whatever rows the conversations share. Three full
/// fine-tuning steps, each over every row, must give the same losses to float rounding.
#[test]
fn packed_rows_train_like_one_conversation_per_row() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    write_model_dir(&model);
    let chats = tmp.path().join("chats.jsonl");
    write_varied_chats(&chats);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let mut losses = vec![];
    let mut rows = vec![];
    for pack in [false, true] {
        let data = tmp.path().join(format!("data-{pack}"));
        let tokenizer = s(&model.join("tokenizer.json"));
        let mut args = vec!["prepare", "--tokenizer", &tokenizer, "--seq-len", "63"];
        args.extend(["--val-fraction", "0"]);
        if pack {
            args.push("--pack");
        }
        let (out, input) = (s(&data), s(&chats));
        args.extend(["--out", &out, &input]);
        ok(fucina(&args), "prepare");
        let n = train_rows(&data, 64);
        rows.push(n);
        let run = tmp.path().join(format!("run-{pack}"));
        let config = tmp.path().join(format!("sft-{pack}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"out_dir = "{run}"
[model]
hf = "{model}"
[data]
dir = "{data}"
tokenizer = "{model}/tokenizer.json"
seq_len = 63
[train]
steps = 3
global_batch_tokens = {tokens}
micro_batch_size = {n}
lr = 1e-2
warmup_steps = 0
weight_decay = 0.0
[eval]
every = 0
"#,
                run = s(&run),
                model = s(&model),
                data = s(&data),
                tokens = n * 63,
            ),
        )
        .unwrap();
        ok(
            fucina(&["train", &s(&config), "--sample-tokens", "0"]),
            "train",
        );
        let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        losses.push(
            metrics
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|e| e["kind"] == "train")
                .map(|e| e["loss"].as_f64().unwrap())
                .collect::<Vec<_>>(),
        );
    }
    assert!(rows[1] * 2 <= rows[0], "packing saves rows: {rows:?}");
    assert_eq!(losses[0].len(), 3);
    for (step, (a, b)) in losses[0].iter().zip(&losses[1]).enumerate() {
        assert!(
            (a - b).abs() <= 2e-5 * a,
            "step {}: {a} with one conversation per row, {b} packed ({rows:?} rows)",
            step + 1
        );
    }
    eprintln!("rows {rows:?}; losses {losses:?}");
}
