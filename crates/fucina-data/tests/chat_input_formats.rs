//! The conversation formats `prepare` reads (OpenAI `messages`, ShareGPT
//! `conversations`, `prompt`/`completion`) and the report of the records it
//! skips. The same conversations in each format must give the same shards
//! as OpenAI `messages` (the real built-in tokenizer and Qwen2's template);
//! a file with bad records must give the shards of its good records alone
//! and name every reason with its lines.

mod common;

use common::chats::{real_setup, write_config};
use common::{word_tokenizer, CHATML};
use fucina_data::{prepare, PrepareOptions, PrepareSummary};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

type Pairs<'a> = &'a [(&'a str, &'a str)];

fn openai(pairs: Pairs) -> String {
    let messages: Vec<_> = pairs
        .iter()
        .map(|(r, c)| json!({"role": r, "content": c}))
        .collect();
    json!({ "messages": messages }).to_string()
}

/// ShareGPT's own names (`human`, `gpt`) on even lines, the aliases
/// (`user`, `assistant`) on odd ones; an extra field is ignored.
fn sharegpt(pairs: Pairs, line: usize) -> String {
    let turns: Vec<_> = pairs
        .iter()
        .map(|(role, value)| {
            let from = match (*role, line % 2) {
                ("user", 0) => "human",
                ("assistant", 0) => "gpt",
                (role, _) => role,
            };
            json!({"from": from, "value": value})
        })
        .collect();
    json!({ "conversations": turns, "source": "test" }).to_string()
}

fn prompt_completion(pairs: Pairs) -> Option<String> {
    match pairs {
        [("user", prompt), ("assistant", completion)] => {
            Some(json!({"prompt": prompt, "completion": completion}).to_string())
        }
        _ => None,
    }
}

const CONVERSATIONS: &[&[(&str, &str)]] = &[
    &[
        ("user", "Wie spät ist es?"),
        ("assistant", "Es ist kurz nach drei."),
    ],
    &[
        ("system", "Rispondi in italiano."),
        ("user", "Come stai?"),
        ("assistant", "Bene, grazie!"),
    ],
    &[
        ("user", "Zażółć gęślą jaźń."),
        ("assistant", "Łódź leży w Polsce."),
    ],
    &[
        ("user", "Name a colour."),
        ("assistant", "Blue."),
        ("user", "Another one?"),
        ("assistant", "Green, like the trees."),
    ],
    &[
        ("user", "Quel temps fait-il ?"),
        ("assistant", "Il pleut depuis ce matin."),
    ],
    &[
        ("user", "🦀?"),
        ("assistant", "A crab: Rust's mascot, Ferris."),
    ],
    &[
        ("system", "Be brief."),
        ("user", "The quick brown fox?"),
        ("assistant", "Jumps over the lazy dog."),
    ],
    &[
        ("user", "Numbers: 12345"),
        ("assistant", "Five digits, (a), [b], {c}!"),
    ],
];

fn write_lines(path: &Path, lines: &[String]) -> PathBuf {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    path.to_owned()
}

/// The token and mask shards of a prepared directory (`meta.json` names the inputs).
fn shards(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let name = e.file_name().into_string().unwrap();
            name.starts_with("train_") || name.starts_with("val_")
        })
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_format_gives_the_shards_of_openai_messages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (tok, config) = real_setup();
    let opts = PrepareOptions {
        val_fraction: 0.25,
        shard_tokens: 1 << 20,
        chat_template: Some(config),
        seq_len: Some(128),
        ..Default::default()
    };
    let run = |name: &str, lines: Vec<String>| -> (PrepareSummary, Vec<(String, Vec<u8>)>) {
        let input = write_lines(&d.join(format!("{name}.jsonl")), &lines);
        let out = d.join(name);
        let summary = prepare(&tok, &[input], &out, &opts).unwrap();
        (summary, shards(&out))
    };

    let all = |f: &dyn Fn(usize, Pairs) -> String| -> Vec<String> {
        CONVERSATIONS
            .iter()
            .enumerate()
            .map(|(i, c)| f(i, c))
            .collect()
    };
    let (summary, expected) = run("openai", all(&|_, c| openai(c)));
    let chat = summary.chat.unwrap();
    assert_eq!((chat.examples, chat.skipped), (8, 0));
    assert!(
        chat.truncated > 0,
        "one conversation is cut: the same in every format"
    );
    assert!(summary.val_docs > 0 && summary.train_docs > 0);
    assert!(expected.iter().any(|(name, _)| name == "val_000000.mask"));
    let (sharegpt_summary, got) = run("sharegpt", all(&|i, c| sharegpt(c, i)));
    assert_eq!(sharegpt_summary, summary);
    assert!(
        got == expected,
        "ShareGPT shards differ from OpenAI messages"
    );

    // prompt/completion holds single-turn conversations only.
    let single: Vec<Pairs> = CONVERSATIONS
        .iter()
        .copied()
        .filter(|c| prompt_completion(c).is_some())
        .collect();
    assert_eq!(single.len(), 5);
    let (summary, expected) = run("single", single.iter().map(|c| openai(c)).collect());
    let (pc_summary, got) = run(
        "prompt_completion",
        single.iter().filter_map(|c| prompt_completion(c)).collect(),
    );
    assert_eq!(pc_summary, summary);
    assert!(
        got == expected,
        "prompt/completion shards differ from OpenAI messages"
    );
}

/// A file mixing good records (lines 1, 2, 8, 14) with bad ones, and the
/// summary `prepare` must print for it.
fn mixed_lines() -> Vec<String> {
    let turn = |from: &str, value: &str| json!({"from": from, "value": value});
    let chat = |turns: Vec<serde_json::Value>| json!({ "conversations": turns }).to_string();
    vec![
        openai(&[("user", "Hi"), ("assistant", "Hello there")]),
        sharegpt(
            &[("system", "Be kind"), ("user", "Hi"), ("assistant", "Ciao")],
            0,
        ),
        chat(vec![
            turn("human", "Hi"),
            turn("tool", "Bye"),
            turn("gpt", "Ciao"),
        ]),
        openai(&[("user", "Hi")]),
        openai(&[("human", "Hi"), ("gpt", "Ciao")]),
        String::new(),
        json!({"messages": [{"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": 5}]})
        .to_string(),
        json!({"prompt": "Bye", "completion": "Ciao Ciao", "id": 7}).to_string(),
        chat(vec![turn("human", "Hi"), turn("gpt", " \n")]),
        json!({"prompt": "Hi"}).to_string(),
        json!({"messages": [{"role": "user", "content": "Hi"}],
               "conversations": [turn("gpt", "Ciao")]})
        .to_string(),
        chat(vec![turn("human", "Hi"), turn("bing", "Ciao")]),
        chat(vec![turn("human", "Hi"), turn("chatgpt", "Ciao")]),
        openai(&[("user", "Bye"), ("assistant", "Hello")]),
    ]
}

fn mixed_report(p: &Path) -> String {
    let p = p.display();
    format!(
        "skipped 9 of 13 conversations: 4 with an unknown role (\"tool\" at {p}:3; \"human\" at \
         {p}:5; \"bing\" at {p}:12; 1 more), 2 without an assistant turn ({p}:4; {p}:10), 1 with \
         an empty message ({p}:9: conversations[1]), 1 malformed ({p}:7: messages[1].content \
         must be a string, not a number (5)), 1 with both \"messages\" and \"conversations\" \
         ({p}:11)"
    )
}

fn word_options(config: &Path) -> PrepareOptions {
    PrepareOptions {
        val_fraction: 0.0,
        shard_tokens: 1 << 16,
        chat_template: Some(config.to_owned()),
        seq_len: Some(24),
        ..Default::default()
    }
}

/// Environment variable holding the input, config and output paths (one per
/// line) for `prepare_for_the_parent`.
const CHILD: &str = "FUCINA_TEST_PREPARE_ARGS";

#[test]
#[ignore = "run by bad_records_are_skipped_and_reported_by_line, which reads what it prints"]
fn prepare_for_the_parent() {
    let Ok(args) = std::env::var(CHILD) else {
        return;
    };
    let [input, config, out]: [&str; 3] = args.lines().collect::<Vec<_>>().try_into().unwrap();
    let opts = word_options(Path::new(config));
    prepare(&word_tokenizer(), &[input.into()], Path::new(out), &opts).unwrap();
}

#[test]
fn bad_records_are_skipped_and_reported_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, CHATML);
    let lines = mixed_lines();
    let mixed = write_lines(&d.join("mixed.jsonl"), &lines);
    let summary = prepare(
        &word_tokenizer(),
        std::slice::from_ref(&mixed),
        &d.join("mixed"),
        &word_options(&config),
    )
    .unwrap();
    let chat = summary.chat.unwrap();
    assert_eq!(
        (chat.examples, chat.skipped, chat.dropped, chat.truncated),
        (4, 9, 0, 0),
        "skipped records are not counted as dropped, which says the row was too short"
    );

    // The good records alone, as OpenAI messages, give the same shards.
    let good = [
        openai(&[("user", "Hi"), ("assistant", "Hello there")]),
        openai(&[("system", "Be kind"), ("user", "Hi"), ("assistant", "Ciao")]),
        openai(&[("user", "Bye"), ("assistant", "Ciao Ciao")]),
        openai(&[("user", "Bye"), ("assistant", "Hello")]),
    ];
    let good = write_lines(&d.join("good.jsonl"), &good);
    prepare(
        &word_tokenizer(),
        &[good],
        &d.join("good"),
        &word_options(&config),
    )
    .unwrap();
    assert!(shards(&d.join("mixed")) == shards(&d.join("good")));
    let names: Vec<String> = shards(&d.join("good")).into_iter().map(|f| f.0).collect();
    assert_eq!(names, ["train_000000.bin", "train_000000.mask"]);

    // What `prepare` prints, read from a child process running it.
    let args = format!(
        "{}\n{}\n{}",
        mixed.display(),
        config.display(),
        d.join("child").display()
    );
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "prepare_for_the_parent",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD, args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "{stderr}");
    let expected = format!("warning: {}", mixed_report(&mixed));
    assert!(
        stderr.lines().any(|l| l == expected),
        "expected\n{expected}\nin\n{stderr}"
    );
    assert!(!stderr.contains("no assistant token"), "{stderr}");
}

#[test]
fn only_bad_records_fail_naming_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, CHATML);
    let lines = mixed_lines();
    let bad = write_lines(&d.join("bad.jsonl"), &lines[2..7]);
    let out = d.join("out");
    let e = prepare(
        &word_tokenizer(),
        std::slice::from_ref(&bad),
        &out,
        &word_options(&config),
    )
    .unwrap_err();
    let p = bad.display();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "nothing to train on: skipped 4 of 4 conversations: 2 with an unknown role (\"tool\" \
             at {p}:1; \"human\" at {p}:3), 1 without an assistant turn ({p}:2), 1 malformed \
             ({p}:5: messages[1].content must be a string, not a number (5))"
        )
    );
    assert!(!out.join("meta.json").exists());
}

#[test]
fn which_lines_are_conversations_and_json_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tok = word_tokenizer();
    let text_only = PrepareOptions {
        val_fraction: 0.0,
        ..Default::default()
    };

    // A prompt beside a "text" is metadata of a text document.
    let text = write_lines(
        &d.join("text.jsonl"),
        &[json!({"text": "Hi there", "prompt": "Bye"}).to_string()],
    );
    let summary = prepare(&tok, &[text], &d.join("text"), &text_only).unwrap();
    assert_eq!((summary.chat, summary.train_docs), (None, 1));

    // Without "text", prompt/completion is a conversation, which needs a template.
    let pc = write_lines(
        &d.join("pc.jsonl"),
        &[
            json!({"text": "Hi"}).to_string(),
            json!({"prompt": "Hi", "completion": "Ciao"}).to_string(),
        ],
    );
    let e = prepare(&tok, std::slice::from_ref(&pc), &d.join("pc"), &text_only).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains(&format!("{}:2 is a conversation", pc.display())),
        "{e}"
    );
    assert!(e.contains("--chat-template"), "{e}");

    // A line that is not JSON stops `prepare` at once, naming it.
    let broken = write_lines(
        &d.join("broken.jsonl"),
        &[
            openai(&[("user", "Hi"), ("assistant", "Ciao")]),
            "{\"messages\": [".into(),
        ],
    );
    let config = write_config(d, CHATML);
    let e = prepare(
        &tok,
        std::slice::from_ref(&broken),
        &d.join("broken"),
        &word_options(&config),
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.starts_with(&format!("{}:2: expected a JSON object", broken.display())),
        "{e}"
    );
}
