//! `prepare --pack`: several conversations per row, each one's first token
//! marked as a document start. Checked by hand on a word-level tokenizer,
//! and against the unpacked prepare of the same conversations with the real
//! built-in tokenizer and Qwen2's chat template.

mod common;

use common::chats::{chat_line, documents, read_rows, real_chats, real_setup, strip_padding};
use common::chats::{write_config, Row};
use common::word_tokenizer;
use fucina_data::prepare::{prepare_part, Part};
use fucina_data::{prepare, PrepareMeta, PrepareOptions, TokenDataset};
use std::path::Path;

const SEQ: usize = 511;
const ROW: usize = SEQ + 1;

fn options(config: &Path, seq_len: usize, pack: bool) -> PrepareOptions {
    PrepareOptions {
        val_fraction: 0.0,
        shard_tokens: 1 << 20,
        chat_template: Some(config.to_owned()),
        seq_len: Some(seq_len),
        pack,
        ..Default::default()
    }
}

#[test]
fn packed_rows_worked_out_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Content first, so a conversation opening with a reply starts with a target.
    let config = write_config(
        d,
        "{% for m in messages %}{{ m.content }}<|im_end|>\n{% endfor %}",
    );
    let chats = d.join("chats.jsonl");
    let lines = [
        chat_line(&[("assistant", "Hello there")]),
        chat_line(&[("user", "Hi"), ("assistant", "Ciao")]),
        chat_line(&[("user", "Bye"), ("assistant", "Hello there Ciao Bye")]),
        chat_line(&[("assistant", "Ciao")]),
    ];
    std::fs::write(&chats, lines.join("\n") + "\n").unwrap();
    let text = d.join("text.jsonl");
    std::fs::write(&text, "{\"text\": \"Hi there\"}\n{\"text\": \"Bye\"}\n").unwrap();
    let out = d.join("out");
    let summary = prepare(
        &word_tokenizer(),
        &[chats, text],
        &out,
        &options(&config, 15, true),
    )
    .unwrap();

    // \n=2 " "=3 Hi=9 Hello=10 there=11 Bye=12 Ciao=13 <|im_end|>=1 <|endoftext|>=15 <pad>=16.
    // Lengths 5, 6, 12, 3: 12 opens row A, 6 row B, 5 joins B, 3 joins A; B holds the first.
    // A reply is trained on through its <|im_end|>, not the newline after it.
    #[rustfmt::skip]
    let expected: [Row; 3] = [
        (vec![10, 3, 11, 1, 2,  9, 1, 2, 13, 1, 2,  16, 16, 16, 16, 16],
         vec![ 2, 1,  1, 1, 0,  2, 0, 0,  1, 1, 0,   0,  0,  0,  0,  0]),
        (vec![12, 1, 2, 10, 3, 11, 3, 13, 3, 12, 1, 2,  13, 1, 2,  16],
         vec![ 2, 0, 0,  1, 1,  1, 1,  1, 1,  1, 1, 0,   2, 1, 0,   0]),
        // Text, after the conversations: each document's first token is a start and a target.
        (vec![9, 3, 11, 15, 12, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16],
         vec![3, 1,  1,  1,  3,  1,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0]),
    ];
    let (rows, version) = read_rows(&out, "train");
    assert_eq!(rows, expected);
    assert_eq!(version, 2, "document starts need mask version 2");

    let chat = summary.chat.unwrap();
    assert!(chat.packed);
    assert_eq!((chat.examples, chat.conversation_rows), (4, 2));
    assert_eq!((chat.padding_tokens, chat.text_rows), (6, 1));
    assert_eq!(
        chat.packing_report().unwrap(),
        "packed 4 conversations into 2 rows of 16 tokens: 18.8 % padding \
         (unpacked: 4 rows, 59.4 % padding)"
    );
    let meta = PrepareMeta::read(&out).unwrap();
    assert_eq!(meta.chat.unwrap().summary, chat);

    // The loader reads the starts back from bit 1 of the inputs' mask bytes.
    let ds = TokenDataset::open_glob_dir(&out, "train").unwrap();
    assert!(ds.marks_starts());
    let batch = fucina_data::sequential_batch(&ds, 15, 3, 0);
    #[rustfmt::skip]
    let starts = [
        0, 0, 0, 0, 0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 12, 12,
        0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    ];
    assert_eq!(batch.starts.as_deref(), Some(&starts[..]));
    // The targets' mask stays 0/1: the second conversation's first token is no target.
    let mask = batch.mask.unwrap();
    assert!(mask.iter().all(|&m| m <= 1));
    assert_eq!(&mask[..6], [1, 1, 1, 0, 0, 0]);
}

fn real_options(config: &Path, pack: bool) -> PrepareOptions {
    PrepareOptions {
        val_fraction: 0.1,
        shard_tokens: 40 * ROW,
        ..options(config, SEQ, pack)
    }
}

fn all_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn packing_keeps_every_conversation_in_fewer_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (tok, config) = real_setup();
    let chats = real_chats(d);
    let inputs = std::slice::from_ref(&chats);
    let (plain, packed, again) = (d.join("plain"), d.join("packed"), d.join("again"));
    let unpacked = prepare(&tok, inputs, &plain, &real_options(&config, false)).unwrap();
    let summary = prepare(&tok, inputs, &packed, &real_options(&config, true)).unwrap();
    prepare(&tok, inputs, &again, &real_options(&config, true)).unwrap();
    let pad = PrepareMeta::read(&packed).unwrap().chat.unwrap().pad_id;

    // (b) Deterministic.
    assert_eq!(all_files(&packed), all_files(&again));

    let (chat, plain_chat) = (summary.chat.unwrap(), unpacked.chat.unwrap());
    assert!(chat.packed && !plain_chat.packed);
    // The one without a reply is skipped; any whose prompt alone fills the row dropped.
    assert_eq!(chat.skipped, 1);
    assert_eq!(chat.examples + chat.dropped + chat.skipped, 400);
    assert!((0..4).contains(&chat.dropped), "{}", chat.dropped);
    assert!(
        chat.truncated > 0,
        "some conversations are longer than a row"
    );
    assert_eq!(
        (chat.examples, chat.truncated, chat.assistant_tokens),
        (
            plain_chat.examples,
            plain_chat.truncated,
            plain_chat.assistant_tokens
        )
    );
    assert_eq!(plain_chat.conversation_rows, plain_chat.examples);
    let (mut packed_rows, mut padding) = (0, 0);
    for split in ["train", "val"] {
        let (plain_rows, version) = read_rows(&plain, split);
        assert_eq!(version, 1, "unpacked masks stay readable by older builds");
        let (rows, version) = read_rows(&packed, split);
        assert_eq!(version, 2);

        // (a) The same conversations, each now starting with a non-target start.
        let mut want: Vec<Row> = plain_rows
            .iter()
            .map(|r| {
                let (tokens, mask) = strip_padding(r, pad);
                assert!(mask.iter().all(|&m| m <= 1));
                (tokens, mask[1..].to_vec())
            })
            .collect();
        let mut got = Vec::new();
        for row in &rows {
            // (b) Content then padding (pad tokens, mask 0, no start) up to the row's end.
            let content = strip_padding(row, pad).0.len();
            padding += ROW - content;
            for (tokens, mask) in documents(row, pad) {
                assert_eq!(mask[0], 2, "a first token is a start and no target");
                assert!(mask[1..].iter().all(|&m| m <= 1));
                got.push((tokens, mask[1..].to_vec()));
            }
        }
        want.sort();
        got.sort();
        assert_eq!(got.len(), want.len(), "{split}");
        assert!(got == want, "{split}: packed conversations differ");
        // (c) In fewer rows.
        assert!(rows.len() < plain_rows.len(), "{split}");
        packed_rows += rows.len() as u64;
    }
    assert_eq!(
        (chat.conversation_rows, chat.padding_tokens),
        (packed_rows, padding as u64)
    );
    // (c) Far fewer on this mix: most conversations are well under a row.
    assert!(
        chat.conversation_rows * 2 < chat.examples,
        "{}",
        chat.packing_report().unwrap()
    );
    eprintln!("{}", chat.packing_report().unwrap());
    assert_eq!(plain_chat.packing_report(), None);
}

#[test]
fn pack_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (tok, config) = real_setup();
    let text = d.join("text.jsonl");
    std::fs::write(&text, "{\"text\": \"Hi there\"}\n{\"text\": \"Bye\"}\n").unwrap();
    let inputs = [text];
    let e = format!(
        "{:#}",
        prepare(&tok, &inputs, &d.join("out"), &real_options(&config, true)).unwrap_err()
    );
    assert!(
        e.contains("--pack") && e.contains("data.document_mask = true"),
        "{e}"
    );
    assert!(!d.join("out").exists(), "nothing written");

    let part: Part = "0/2".parse().unwrap();
    let e = format!(
        "{:#}",
        prepare_part(
            &tok,
            &inputs,
            &d.join("parts"),
            &real_options(&config, true),
            part
        )
        .unwrap_err()
    );
    assert!(e.contains("--pack") && e.contains("--part"), "{e}");
}
