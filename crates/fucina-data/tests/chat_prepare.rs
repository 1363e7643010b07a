//! `prepare` on conversations: one row per example with its loss mask,
//! checked against rows worked out by hand for a word-level tokenizer.

mod common;

use common::{word_tokenizer, CHATML};
use fucina_data::{prepare, BatchSpec, Loader, PrepareMeta, PrepareOptions, TokenDataset};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const SEQ: usize = 15;
const ROW: usize = SEQ + 1;

fn write_config(dir: &Path, template: &str) -> PathBuf {
    let path = dir.join("tokenizer_config.json");
    let config = serde_json::json!({
        "chat_template": template,
        "eos_token": "<|im_end|>",
        "pad_token": {"content": "<pad>", "special": true},
    });
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn chat_line(pairs: &[(&str, &str)]) -> String {
    let messages: Vec<_> = pairs
        .iter()
        .map(|(r, c)| serde_json::json!({"role": r, "content": c}))
        .collect();
    serde_json::json!({ "messages": messages, "id": 3 }).to_string()
}

/// A conversation that fits, one without a reply, one whose reply is cut
/// off entirely, one whose reply is cut short, and a text document.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let chat = dir.join("chat.jsonl");
    let lines = [
        chat_line(&[("user", "Hi"), ("assistant", "Hello there")]),
        String::new(),
        chat_line(&[("user", "Bye")]),
        chat_line(&[("system", "Be kind"), ("user", "Hi"), ("assistant", "Ciao")]),
        chat_line(&[("user", "Hi"), ("assistant", "Hello there Ciao Bye")]),
    ];
    std::fs::write(&chat, lines.join("\n") + "\n").unwrap();
    let text = dir.join("text.jsonl");
    std::fs::write(&text, "{\"text\": \"Hi there\"}\n").unwrap();
    vec![chat, text]
}

fn options(config: &Path) -> PrepareOptions {
    PrepareOptions {
        val_fraction: 0.0,
        shard_tokens: 2 * ROW + 5,
        chat_template: Some(config.to_owned()),
        seq_len: Some(SEQ),
        ..Default::default()
    }
}

#[test]
fn conversations_become_masked_rows() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CHATML);
    let inputs = inputs(dir.path());
    let out = dir.path().join("out");
    let summary = prepare(&word_tokenizer(), &inputs, &out, &options(&config)).unwrap();

    // <|im_start|>=0 <|im_end|>=1 \n=2 " "=3 system=4 user=5 assistant=6 Be=7
    // kind=8 Hi=9 Hello=10 there=11 Bye=12 Ciao=13 <|endoftext|>=15 <pad>=16
    #[rustfmt::skip]
    let rows: [[u32; ROW]; 3] = [
        // <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello there<|im_end|>\n, padded
        [0, 5, 2, 9, 1, 2, 0, 6, 2, 10, 3, 11, 1, 2, 16, 16],
        // the same prompt, the reply "Hello there Ciao Bye<|im_end|>\n" cut after "Bye"
        [0, 5, 2, 9, 1, 2, 0, 6, 2, 10, 3, 11, 3, 13, 3, 12],
        // text: "Hi there" and the tokenizer's EOS, padded
        [9, 3, 11, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16],
    ];
    #[rustfmt::skip]
    let masks: [[u8; ROW]; 3] = [
        // the reply and its <|im_end|>, not the newline after it (never generated)
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    let ds = TokenDataset::open_glob_dir(&out, "train").unwrap();
    assert_eq!(ds.row_len(), Some(ROW));
    assert_eq!(ds.shards().len(), 2, "two rows fit in a shard");
    let mut tokens = vec![0; ds.len()];
    ds.read(0, &mut tokens);
    assert_eq!(tokens, rows.concat());
    let mut mask = vec![0; ds.len()];
    ds.read_mask(0, &mut mask);
    assert_eq!(mask, masks.concat());
    assert!(!out.join("val_000000.bin").exists(), "val_fraction 0");

    let chat = summary.chat.expect("chat summary");
    assert_eq!(
        (chat.examples, chat.truncated, chat.dropped, chat.skipped),
        (2, 1, 1, 1),
        "kept 2 (one cut), dropped the one cut before its reply, skipped the one without a reply"
    );
    assert_eq!(chat.assistant_tokens, 4 + 7);
    assert_eq!((chat.text_docs, chat.text_rows), (1, 1));
    assert_eq!((chat.seq_len, chat.row_len), (SEQ, ROW));
    assert_eq!(
        (summary.train_docs, summary.train_tokens),
        (3, 3 * ROW as u64)
    );

    let meta = PrepareMeta::read(&out).unwrap();
    let meta_chat = meta.chat.expect("chat section in meta.json");
    assert_eq!(meta_chat.summary, chat);
    assert_eq!(meta_chat.pad_id, 16);
    assert_eq!(meta.eos_id, 15);
    let sha: String = Sha256::digest(CHATML.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(meta_chat.template_sha256, sha);
    assert_eq!(meta_chat.chat_template, config.display().to_string());
    assert_eq!(meta.train.shards, ["train_000000.bin", "train_000001.bin"]);

    // The loader reads the rows back; every target of a step counted once.
    let spec = BatchSpec {
        seq_len: SEQ,
        global_batch_seqs: 3,
        micro_batch: 3,
        world_size: 1,
        rank: 0,
        seed: 1,
    };
    let loader = Loader::new(ds, spec).unwrap();
    assert_eq!(loader.windows(), 3);
    let batch = loader.micro_batch(0, 0);
    let total: usize = masks
        .iter()
        .map(|m| m[1..].iter().map(|&b| b as usize).sum::<usize>())
        .sum();
    assert_eq!(batch.loss_targets(), total);
    assert_eq!(loader.step_loss_targets(0), total as u64);
}

#[test]
fn reruns_are_byte_identical_and_splits_both_get_masks() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CHATML);
    let chat = dir.path().join("many.jsonl");
    let replies = ["Hello", "Ciao", "Hello there", "Bye", "Ciao Ciao"];
    let lines: Vec<String> = (0..40)
        .map(|i| chat_line(&[("user", "Hi"), ("assistant", replies[i % 5])]))
        .collect();
    std::fs::write(&chat, lines.join("\n")).unwrap();
    let opts = PrepareOptions {
        val_fraction: 0.25,
        ..options(&config)
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let tok = word_tokenizer();
    let summary = prepare(&tok, std::slice::from_ref(&chat), &a, &opts).unwrap();
    prepare(&tok, &[chat], &b, &opts).unwrap();
    let files = |d: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(files(&a), files(&b));
    for name in files(&a) {
        assert_eq!(
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap(),
            "{name}"
        );
    }
    assert!(
        files(&a).contains(&"val_000000.mask".to_string()),
        "{:?}",
        files(&a)
    );
    assert_eq!(summary.train_docs + summary.val_docs, 40);
    assert!(summary.val_docs > 0);
    let val = TokenDataset::open_glob_dir(&a, "val").unwrap();
    assert_eq!(val.len(), summary.val_docs as usize * ROW);
    assert!(val.has_mask());
}

#[test]
fn text_only_inputs_keep_the_stream_layout() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CHATML);
    let text = dir.path().join("text.jsonl");
    std::fs::write(&text, "{\"text\": \"Hi there\"}\n{\"text\": \"Bye\"}\n").unwrap();
    let out = dir.path().join("out");
    let summary = prepare(&word_tokenizer(), &[text], &out, &options(&config)).unwrap();
    assert_eq!(summary.chat, None);
    assert!(!out.join("train_000000.mask").exists());
    let ds = TokenDataset::open_glob_dir(&out, "train").unwrap();
    let mut tokens = vec![0; ds.len()];
    ds.read(0, &mut tokens);
    assert_eq!(tokens, [9, 3, 11, 15, 12, 15]);
    assert!(PrepareMeta::read(&out).unwrap().chat.is_none());
}

#[test]
fn errors_name_the_line_and_the_missing_option() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, CHATML);
    let inputs = inputs(d);
    let tok = word_tokenizer();
    let err = |inputs: &[PathBuf], opts: &PrepareOptions| {
        format!(
            "{:#}",
            prepare(&tok, inputs, &d.join("out"), opts).unwrap_err()
        )
    };

    let no_template = PrepareOptions {
        chat_template: None,
        ..options(&config)
    };
    let e = err(&inputs, &no_template);
    assert!(
        e.contains("chat.jsonl:1") && e.contains("--chat-template"),
        "{e}"
    );
    let no_len = PrepareOptions {
        seq_len: None,
        ..options(&config)
    };
    let e = err(&inputs, &no_len);
    assert!(e.contains("chat.jsonl:1") && e.contains("--seq-len"), "{e}");

    let bad = d.join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"messages\": [{{\"role\": \"user\", \"content\": 5}}]}}\n",
            chat_line(&[("user", "Hi")])
        ),
    )
    .unwrap();
    let e = err(std::slice::from_ref(&bad), &options(&config));
    assert!(
        e.contains("bad.jsonl:2: messages[0].content must be a string, not a number (5)"),
        "{e}"
    );
    std::fs::write(&bad, "{\"messages\": []}\n").unwrap();
    assert!(err(std::slice::from_ref(&bad), &options(&config))
        .contains("bad.jsonl:1: \"messages\" is empty"));
    std::fs::write(&bad, "{\"id\": 1}\n").unwrap();
    let e = err(std::slice::from_ref(&bad), &options(&config));
    assert!(
        e.contains("bad.jsonl:1") && e.contains("\"messages\""),
        "{e}"
    );

    // A template that rejects the conversation: the error names its line.
    let strict = write_config(
        &{
            let sub = d.join("strict");
            std::fs::create_dir_all(&sub).unwrap();
            sub
        },
        "{% if messages[0].role == 'system' %}{{ raise_exception('no system role') }}{% endif %}\
         {% for m in messages %}{{ m.content }}<|im_end|>{% endfor %}",
    );
    let e = err(&inputs, &options(&strict));
    assert!(
        e.contains("chat.jsonl:4") && e.contains("no system role"),
        "{e}"
    );
    // One that does not write the replies as given: where the loss goes is
    // unknown, so the error names the line and suggests another template.
    let shouting = write_config(
        &{
            let sub = d.join("shouting");
            std::fs::create_dir_all(&sub).unwrap();
            sub
        },
        "{% for m in messages %}{{ m.content | upper }}<|im_end|>{% endfor %}",
    );
    let e = err(&inputs, &options(&shouting));
    assert!(
        e.contains("chat.jsonl:1")
            && e.contains("does not write the reply in messages[1]")
            && e.contains("--chat-template"),
        "{e}"
    );
    assert!(
        !d.join("out/meta.json").exists(),
        "a failed prepare leaves no meta.json"
    );

    // Every reply cut off: nothing to train on.
    let short = PrepareOptions {
        seq_len: Some(4),
        ..options(&config)
    };
    let e = err(&inputs[..1], &short);
    assert!(
        e.contains("nothing to train on") && e.contains("--seq-len"),
        "{e}"
    );
}
