//! TensorBoard event files: the training scalars beside `metrics.jsonl`, for `tensorboard
//! --logdir`. Only the few protobuf fields TensorBoard needs for scalars are encoded, by hand,
//! rather than pulling in a protobuf stack; `tests/fixtures/tensorboard/scalars.tfevents`
//! (written by TensorBoard's own Python writer, `scripts/tensorboard_fixture.py`) pins the bytes.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The subdirectory of a run's `out_dir` holding its event files.
pub const DIR: &str = "tensorboard";

/// Writes TFRecord-framed `Event`s: the `file_version` header first, then one event per call.
pub struct EventWriter<W: Write> {
    out: W,
}

impl<W: Write> EventWriter<W> {
    /// Starts an event stream; `writer` names the program in the header's `source_metadata`.
    pub fn new(mut out: W, wall_time: f64, writer: &str) -> std::io::Result<Self> {
        write_record(&mut out, &header_event(wall_time, writer))?;
        out.flush()?;
        Ok(Self { out })
    }

    /// Tells readers that the run (re)starts at `step`: TensorBoard then drops what earlier
    /// files hold from `step` on, the steps a killed run wrote after its last checkpoint.
    pub fn session_start(&mut self, wall_time: f64, step: u64) -> std::io::Result<()> {
        write_record(&mut self.out, &session_start_event(wall_time, step))?;
        self.out.flush()
    }

    /// One event holding every `(tag, value)` of a step. Flushed, so a killed run keeps it.
    pub fn scalars(
        &mut self,
        wall_time: f64,
        step: u64,
        values: &[(&str, f64)],
    ) -> std::io::Result<()> {
        write_record(&mut self.out, &scalars_event(wall_time, step, values))?;
        self.out.flush()
    }
}

/// A new event file in `<out_dir>/tensorboard/`, named as TensorBoard's own writers name theirs,
/// for a run whose next step is `first_step`. A restarted run gets a file of its own; TensorBoard
/// merges the files of a directory.
pub fn create(out_dir: &Path, first_step: u64) -> Result<EventWriter<BufWriter<File>>> {
    let dir = out_dir.join(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "events.out.tfevents.{}.{}.{}.fucina",
        now.as_secs(),
        hostname(),
        std::process::id()
    );
    let path = dir.join(name);
    // Append: a second start in the same process and second (tests) must not truncate the first.
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = EventWriter::new(BufWriter::new(file), now.as_secs_f64(), "fucina")
        .with_context(|| format!("cannot write {}", path.display()))?;
    writer
        .session_start(now.as_secs_f64(), first_step)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(writer)
}

/// Seconds since the Unix epoch, the events' `wall_time`.
pub fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().replace('/', "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// TFRecord framing: length, its masked CRC, the data, its masked CRC (all little-endian).
pub fn write_record(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    let mut record = Vec::with_capacity(data.len() + 16);
    record.extend_from_slice(&len);
    record.extend_from_slice(&masked_crc(&len).to_le_bytes());
    record.extend_from_slice(data);
    record.extend_from_slice(&masked_crc(data).to_le_bytes());
    out.write_all(&record)
}

/// TFRecord's CRC32C, rotated and offset so that CRCs of data holding CRCs stay well spread.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

// Field numbers of tensorflow/core/util/event.proto and framework/summary.proto.
const EVENT_WALL_TIME: u32 = 1;
const EVENT_STEP: u32 = 2;
const EVENT_FILE_VERSION: u32 = 3;
const EVENT_SUMMARY: u32 = 5;
const EVENT_SESSION_LOG: u32 = 7;
const EVENT_SOURCE_METADATA: u32 = 10;
const SOURCE_METADATA_WRITER: u32 = 1;
const SESSION_LOG_STATUS: u32 = 1;
const SESSION_LOG_START: u64 = 1;
const SUMMARY_VALUE: u32 = 1;
const VALUE_TAG: u32 = 1;
const VALUE_SIMPLE_VALUE: u32 = 2;

/// `Event{wall_time, file_version: "brain.Event:2", source_metadata{writer}}`.
pub fn header_event(wall_time: f64, writer: &str) -> Vec<u8> {
    let mut event = Vec::new();
    event_stamp(&mut event, wall_time, 0);
    bytes_field(&mut event, EVENT_FILE_VERSION, b"brain.Event:2");
    let mut source = Vec::new();
    bytes_field(&mut source, SOURCE_METADATA_WRITER, writer.as_bytes());
    bytes_field(&mut event, EVENT_SOURCE_METADATA, &source);
    event
}

/// `Event{wall_time, step, session_log{status: START}}`.
pub fn session_start_event(wall_time: f64, step: u64) -> Vec<u8> {
    let mut event = Vec::new();
    event_stamp(&mut event, wall_time, step);
    let mut log = Vec::new();
    key(&mut log, SESSION_LOG_STATUS, 0);
    varint(&mut log, SESSION_LOG_START);
    bytes_field(&mut event, EVENT_SESSION_LOG, &log);
    event
}

/// `Event{wall_time, step, summary{value{tag, simple_value}...}}`; values are stored as f32.
pub fn scalars_event(wall_time: f64, step: u64, values: &[(&str, f64)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, value) in values {
        let mut entry = Vec::new();
        bytes_field(&mut entry, VALUE_TAG, tag.as_bytes());
        // simple_value sits in a oneof: written even when zero, or readers see no scalar.
        key(&mut entry, VALUE_SIMPLE_VALUE, 5);
        entry.extend_from_slice(&(*value as f32).to_le_bytes());
        bytes_field(&mut summary, SUMMARY_VALUE, &entry);
    }
    let mut event = Vec::new();
    event_stamp(&mut event, wall_time, step);
    bytes_field(&mut event, EVENT_SUMMARY, &summary);
    event
}

/// proto3 leaves out plain fields at their default (zero); protobuf's writers do too.
fn event_stamp(buf: &mut Vec<u8>, wall_time: f64, step: u64) {
    if wall_time.to_bits() != 0 {
        key(buf, EVENT_WALL_TIME, 1);
        buf.extend_from_slice(&wall_time.to_le_bytes());
    }
    if step != 0 {
        key(buf, EVENT_STEP, 0);
        varint(buf, step);
    }
}

fn key(buf: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(buf, u64::from(field) << 3 | u64::from(wire_type));
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(buf, field, 2);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Must match the events of scripts/tensorboard_fixture.py.
    #[test]
    fn encodes_byte_for_byte_as_tensorboards_python_writer() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tensorboard/scalars.tfevents");
        let expected = std::fs::read(&path).unwrap();
        let python_writer = "tensorboard.summary.writer.event_file_writer";
        let mut ours = EventWriter::new(Vec::new(), 1700000000.25, python_writer).unwrap();
        // Values None: a SessionLog START.
        type Scalars<'a> = Option<&'a [(&'a str, f64)]>;
        let events: [(f64, u64, Scalars); 6] = [
            (
                1700000001.5,
                1,
                Some(&[
                    ("train/loss", 8.3125),
                    ("train/lr", 0.001),
                    ("train/mfu", 0.0),
                ]),
            ),
            (
                1700000002.75,
                2,
                Some(&[("train/loss", 8.0), ("train/grad_norm", -0.0)]),
            ),
            (1700000003.0, 0, Some(&[("val/loss", 7.5)])),
            (
                1700000004.125,
                300,
                Some(&[("val/loss", 5.9), ("val/français", 6.1)]),
            ),
            (1700000004.5, 201, None),
            (1700000005.0, 1 << 40, Some(&[("train/loss", f64::NAN)])),
        ];
        for (wall_time, step, values) in events {
            match values {
                Some(values) => ours.scalars(wall_time, step, values).unwrap(),
                None => ours.session_start(wall_time, step).unwrap(),
            }
        }
        assert_eq!(ours.out, expected, "differs from {}", path.display());
    }

    #[test]
    fn masked_crc_of_the_check_string() {
        // CRC32C of "123456789" is 0xe3069283 (RFC 3720); masked by TensorBoard's
        // pywrap_tensorflow.masked_crc32c it is 0xc78ab0e5.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }
}
