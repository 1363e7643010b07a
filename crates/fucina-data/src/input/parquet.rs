//! Parquet inputs: one top-level string column, read row group by row group
//! in batches through the low-level column reader, so memory stays bounded
//! by a page and a batch whatever the file's size.

use super::{InputFile, Location, Place};
use anyhow::{anyhow, bail, Result};
use indicatif::ProgressBar;
use parquet::basic::{ConvertedType, LogicalType, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::SchemaDescriptor;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Rows decoded at a time: documents are a few kB, so a batch is a few MB.
const BATCH_ROWS: usize = 1024;

pub(super) struct ParquetReader {
    path: Arc<Path>,
    name: Arc<str>,
    file: SerializedFileReader<File>,
    /// Index of the column among the file's leaf columns.
    leaf: usize,
    max_def: i16,
    next_group: usize,
    column: Option<ColumnReaderImpl<ByteArrayType>>,
    /// The current batch: one definition level per row (when nullable) and
    /// the non-null values, consumed from `row_in_batch` / `value_in_batch`.
    defs: Vec<i16>,
    values: Vec<ByteArray>,
    rows_in_batch: usize,
    row_in_batch: usize,
    value_in_batch: usize,
    /// Rows of the file before the current batch.
    rows_before: u64,
    bar: ProgressBar,
    unreported_bytes: u64,
}

impl ParquetReader {
    pub(super) fn open(file: &InputFile, column: &Arc<str>, bar: &ProgressBar) -> Result<Self> {
        let path: Arc<Path> = Arc::from(file.path.as_path());
        let handle =
            File::open(&file.path).map_err(|e| anyhow!("opening {}: {e}", path.display()))?;
        let reader = SerializedFileReader::new(handle)
            .map_err(|e| anyhow!("{}: not a readable parquet file ({e})", path.display()))?;
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let (leaf, max_def) =
            find_column(&schema, column).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            path,
            name: column.clone(),
            file: reader,
            leaf,
            max_def,
            next_group: 0,
            column: None,
            defs: Vec::new(),
            values: Vec::new(),
            rows_in_batch: 0,
            row_in_batch: 0,
            value_in_batch: 0,
            rows_before: 0,
            bar: bar.clone(),
            unreported_bytes: file.bytes,
        })
    }

    /// The next non-empty document; nulls count as empty.
    pub(super) fn next_doc(&mut self) -> Result<Option<String>> {
        loop {
            while self.row_in_batch < self.rows_in_batch {
                let row = self.row_in_batch;
                self.row_in_batch += 1;
                if self.max_def > 0 && self.defs[row] < self.max_def {
                    continue;
                }
                let value = &self.values[self.value_in_batch];
                self.value_in_batch += 1;
                let text = std::str::from_utf8(value.data()).map_err(|e| {
                    let at = self.row(self.rows_before + row as u64 + 1);
                    anyhow!("{at}: column {:?} is not valid UTF-8 ({e})", &*self.name)
                })?;
                if !text.is_empty() {
                    return Ok(Some(text.to_owned()));
                }
            }
            if !self.read_batch()? {
                return Ok(None);
            }
        }
    }

    /// Decodes the next batch of rows; `false` at the end of the file.
    fn read_batch(&mut self) -> Result<bool> {
        self.rows_before += self.rows_in_batch as u64;
        (self.rows_in_batch, self.row_in_batch, self.value_in_batch) = (0, 0, 0);
        self.defs.clear();
        self.values.clear();
        loop {
            let Some(column) = self.column.as_mut() else {
                if !self.start_group()? {
                    return Ok(false);
                }
                continue;
            };
            let defs = (self.max_def > 0).then_some(&mut self.defs);
            let (rows, _, _) = column
                .read_records(BATCH_ROWS, defs, None, &mut self.values)
                .map_err(|e| {
                    let at = self.row(self.rows_before + 1);
                    anyhow!("{at} (row group {}) and on: {e}", self.next_group)
                })?;
            if rows > 0 {
                self.rows_in_batch = rows;
                return Ok(true);
            }
            self.column = None;
        }
    }

    fn row(&self, row: u64) -> Location {
        Location {
            path: self.path.clone(),
            place: Place::Row(row),
        }
    }

    fn start_group(&mut self) -> Result<bool> {
        let groups = self.file.metadata().row_groups();
        let Some(group) = groups.get(self.next_group) else {
            self.bar.inc(self.unreported_bytes);
            self.unreported_bytes = 0;
            return Ok(false);
        };
        let size = (group.compressed_size().max(0) as u64).min(self.unreported_bytes);
        self.bar.inc(size);
        self.unreported_bytes -= size;
        self.next_group += 1;
        let at = || format!("{}: row group {}", self.path.display(), self.next_group);
        let reader = self
            .file
            .get_row_group(self.next_group - 1)
            .and_then(|g| g.get_column_reader(self.leaf))
            .map_err(|e| anyhow!("{}: {e}", at()))?;
        match reader {
            ColumnReader::ByteArrayColumnReader(r) => self.column = Some(r),
            _ => bail!("{}: column {:?} is not a byte array", at(), &*self.name),
        }
        Ok(true)
    }
}

/// The leaf index and maximum definition level of the top-level string
/// column `name`, or why it cannot be read as text.
fn find_column(schema: &SchemaDescriptor, name: &str) -> Result<(usize, i16)> {
    let fields = schema.root_schema().get_fields();
    let Some(field) = fields.iter().find(|f| f.name() == name) else {
        let names: Vec<&str> = fields.iter().map(|f| f.name()).collect();
        let chat = if names.contains(&"messages") {
            "; conversations (a \"messages\" column) are read from JSONL only"
        } else {
            ""
        };
        bail!(
            "no column {name:?} (columns: {}); choose one with --text-column{chat}",
            names.join(", ")
        );
    };
    if field.is_group() {
        bail!("column {name:?} is nested (a list, struct or map), not a string column");
    }
    let leaf = schema
        .columns()
        .iter()
        .position(|c| c.path().parts() == [name])
        .ok_or_else(|| anyhow!("column {name:?} has no leaf in the schema"))?;
    let desc = schema.column(leaf);
    let is_string = desc.physical_type() == PhysicalType::BYTE_ARRAY
        && (matches!(desc.logical_type_ref(), Some(LogicalType::String))
            || desc.converted_type() == ConvertedType::UTF8);
    if !is_string {
        let logical = desc
            .logical_type_ref()
            .map(|t| format!(", logical type {t:?}"))
            .unwrap_or_default();
        bail!(
            "column {name:?} holds {:?}{logical}, not strings (UTF-8 byte arrays)",
            desc.physical_type()
        );
    }
    if desc.max_rep_level() > 0 {
        bail!("column {name:?} is repeated, not one string per row");
    }
    Ok((leaf, desc.max_def_level()))
}
