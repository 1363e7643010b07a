//! A short run's TensorBoard event file holds what `metrics.jsonl` holds. Read here with a
//! decoder and CRC of its own: the encoder's bytes are pinned against TensorBoard's Python
//! writer in src/tensorboard.rs, so this checks the wiring, the framing and the file layout.

mod common;

use common::tiny_run;
use fucina_dist::SingleProcess;
use fucina_train::metrics::{read_events, Event, METRICS_FILE};
use fucina_train::{train, TrainOptions};
use std::collections::BTreeMap;
use std::path::Path;

/// Bitwise CRC32C (Castagnoli, reflected polynomial 0x82f63b78), masked as TFRecord masks it.
fn masked_crc(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    let crc = !crc;
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// The records of a TFRecord file, each CRC checked.
fn records(bytes: &[u8]) -> Vec<&[u8]> {
    let (mut at, mut out) = (0, Vec::new());
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    while at < bytes.len() {
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        assert_eq!(
            u32_at(at + 8),
            masked_crc(&bytes[at..at + 8]),
            "length CRC at {at}"
        );
        let data = &bytes[at + 12..at + 12 + len];
        assert_eq!(u32_at(at + 12 + len), masked_crc(data), "data CRC at {at}");
        out.push(data);
        at += 16 + len;
    }
    out
}

enum Field<'a> {
    Int(u64),
    Bytes(&'a [u8]),
}

/// A protobuf message's fields in order: (number, value); fixed64/fixed32 come as their bits.
fn fields(mut msg: &[u8]) -> Vec<(u64, Field<'_>)> {
    fn varint(msg: &mut &[u8]) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = msg[0];
            *msg = &msg[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !msg.is_empty() {
        let key = varint(&mut msg);
        let value = match key & 7 {
            0 => Field::Int(varint(&mut msg)),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                let mut bits = [0u8; 8];
                bits[..n].copy_from_slice(&msg[..n]);
                msg = &msg[n..];
                Field::Int(u64::from_le_bytes(bits))
            }
            2 => {
                let len = varint(&mut msg) as usize;
                let (data, rest) = msg.split_at(len);
                msg = rest;
                Field::Bytes(data)
            }
            other => panic!("wire type {other}"),
        };
        out.push((key >> 3, value));
    }
    out
}

/// What an event record is, as far as this test cares.
#[derive(Debug, PartialEq)]
enum Kind {
    /// `file_version`, the first record of a file.
    Header(String),
    /// `session_log{status: START}` at a step.
    Start(u64),
    /// A step's scalars: tag → value as stored (f32 bits, so NaN compares).
    Scalars(u64, BTreeMap<String, u32>),
}

fn kind(event: &[u8]) -> Kind {
    let (mut step, mut kind) = (0, None);
    for (number, field) in fields(event) {
        match (number, field) {
            (2, Field::Int(s)) => step = s,
            (3, Field::Bytes(v)) => {
                kind = Some(Kind::Header(String::from_utf8(v.to_vec()).unwrap()))
            }
            (7, Field::Bytes(log)) => {
                assert!(matches!(fields(log)[..], [(1, Field::Int(1))]), "not START");
                kind = Some(Kind::Start(0));
            }
            (5, Field::Bytes(s)) => {
                let mut values = BTreeMap::new();
                for (_, value) in fields(s) {
                    let Field::Bytes(value) = value else {
                        panic!("summary.value")
                    };
                    let (mut tag, mut v) = (String::new(), None);
                    for field in fields(value) {
                        match field {
                            (1, Field::Bytes(t)) => tag = String::from_utf8(t.to_vec()).unwrap(),
                            (2, Field::Int(bits)) => v = Some(bits as u32),
                            _ => {}
                        }
                    }
                    values.insert(tag, v.expect("simple_value"));
                }
                kind = Some(Kind::Scalars(0, values));
            }
            _ => {}
        }
    }
    match kind.expect("an event of a known kind") {
        Kind::Start(_) => Kind::Start(step),
        Kind::Scalars(_, values) => Kind::Scalars(step, values),
        header => header,
    }
}

fn event_files(out: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(out.join("tensorboard"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// What metrics.jsonl says the scalars should be.
fn expected(out: &Path) -> Vec<Kind> {
    let f = |v: f64| (v as f32).to_bits();
    read_events(&out.join(METRICS_FILE))
        .unwrap()
        .into_iter()
        .map(|event| match event {
            Event::Train(m) => {
                let mut v = BTreeMap::new();
                v.insert("train/loss".into(), f(m.loss));
                v.insert("train/lr".into(), f(m.lr));
                v.insert("train/grad_norm".into(), f(m.grad_norm));
                v.insert("train/tokens_per_sec".into(), f(m.tokens_per_sec));
                v.insert("train/step_seconds".into(), f(m.step_seconds));
                v.insert("train/exposed_comm".into(), f(m.exposed_comm));
                if let Some(mfu) = m.mfu {
                    v.insert("train/mfu".into(), f(mfu));
                }
                Kind::Scalars(m.step, v)
            }
            Event::Val {
                step,
                val_loss,
                sources,
                ..
            } => {
                let mut v: BTreeMap<String, u32> = sources
                    .iter()
                    .map(|(k, l)| (format!("val/{k}"), f(*l)))
                    .collect();
                v.insert("val/loss".into(), f(val_loss));
                Kind::Scalars(step, v)
            }
        })
        .collect()
}

#[test]
fn event_files_hold_every_step_of_metrics_jsonl_and_mark_the_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // Two named sources, both the built-in corpus: val/<name> tags without preparing data.
    let sources = r#"data.sources=[{dir = "builtin", name = "a", weight = 1}, {dir = "builtin", name = "b", weight = 1}]"#;
    let extra = [
        "train.steps=6",
        "eval.every=3",
        "checkpoint.every=0",
        "data.dir=\"\"",
        sources,
    ];
    let run = tiny_run(&out, &extra);
    let first = TrainOptions {
        stop_after: Some(4),
        ..Default::default()
    };
    train(run.clone(), &SingleProcess, first).unwrap();
    let resume = TrainOptions {
        resume: Some("auto".into()),
        ..Default::default()
    };
    train(run, &SingleProcess, resume).unwrap();

    // One file per start, or one for both when they fell in the same second of this process.
    let mut files = event_files(&out);
    files.sort();
    let mut events = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let suffix = format!(".{}.fucina", std::process::id());
        assert!(
            name.starts_with("events.out.tfevents.") && name.ends_with(&suffix),
            "{name}"
        );
        let bytes = std::fs::read(file).unwrap();
        let records = records(&bytes);
        assert!(
            matches!(kind(records[0]), Kind::Header(_)),
            "{name} starts without a header"
        );
        events.extend(records.into_iter().map(kind));
    }
    let header = || Kind::Header("brain.Event:2".into());
    let mut want = expected(&out);
    // Stopped after step 4: the restart resumes at step 5.
    let at = want
        .iter()
        .position(|k| matches!(k, Kind::Scalars(5, _)))
        .unwrap();
    want.splice(at..at, [header(), Kind::Start(5)]);
    want.splice(0..0, [header(), Kind::Start(1)]);
    let tags = |k: &Kind| match k {
        Kind::Scalars(_, v) => v.keys().cloned().collect::<Vec<_>>(),
        _ => vec![],
    };
    assert!(want.iter().any(|k| tags(k).contains(&"val/a".to_string())));
    assert!(want.iter().any(|k| tags(k).contains(&"val/b".to_string())));
    let train_steps = want
        .iter()
        .filter_map(|k| match k {
            Kind::Scalars(s, v) if v.contains_key("train/loss") => Some(*s),
            _ => None,
        })
        .collect::<Vec<_>>();
    assert_eq!(train_steps, (1..=6).collect::<Vec<_>>());
    assert_eq!(events, want);
}

#[test]
fn tensorboard_false_writes_no_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let extra = [
        "train.steps=2",
        "checkpoint.every=0",
        "metrics.tensorboard=false",
    ];
    train(
        tiny_run(&out, &extra),
        &SingleProcess,
        TrainOptions::default(),
    )
    .unwrap();
    assert!(out.join(METRICS_FILE).exists());
    assert!(!out.join("tensorboard").exists());
}

#[test]
fn a_tensorboard_failure_does_not_stop_training() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    // A file where the directory should go: the event file cannot be created.
    std::fs::write(out.join("tensorboard"), "in the way").unwrap();
    let extra = ["train.steps=2", "checkpoint.every=0"];
    let summary = train(
        tiny_run(&out, &extra),
        &SingleProcess,
        TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(summary.steps, 2);
    assert_eq!(read_events(&out.join(METRICS_FILE)).unwrap().len(), 2);
}
