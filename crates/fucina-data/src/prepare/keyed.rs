//! Reading inputs file by file, so every document carries its split key (see `split::doc_key`)
//! and a part of the file list is read exactly as the whole list would read it.

use super::split::{doc_key, SplitStats};
use crate::input::{Documents, InputFile, Location, Record, Records};
use anyhow::Result;
use indicatif::ProgressBar;

/// Record counts of a run of input files, and the first conversation among them.
pub(crate) struct Counted {
    pub per_file: Vec<u64>,
    pub first_chat: Option<Location>,
}

impl Counted {
    pub fn total(&self) -> u64 {
        self.per_file.iter().sum()
    }

    /// Split stats of the text documents of files `first_file..`, numbered as in the whole list.
    pub fn stats(&self, first_file: usize, val_fraction: f64) -> Result<SplitStats> {
        let mut stats = SplitStats::default();
        for (i, &n) in self.per_file.iter().enumerate() {
            for doc in 0..n {
                stats.observe(doc_key(first_file + i, doc)?, val_fraction);
            }
        }
        Ok(stats)
    }
}

/// First pass: validates every input and counts its records, noting the first conversation.
pub(crate) fn count_records(files: &[InputFile], bar: &ProgressBar) -> Result<Counted> {
    let mut counted = Counted {
        per_file: Vec::with_capacity(files.len()),
        first_chat: None,
    };
    for file in files {
        let mut n = 0;
        for record in Records::new(vec![file.clone()], bar.clone()) {
            if let Record::Chat(_, at) = record? {
                counted.first_chat.get_or_insert(at);
            }
            n += 1;
        }
        counted.per_file.push(n);
    }
    Ok(counted)
}

/// The text documents of `files` with their keys, the files numbered from `first_file`.
pub(crate) fn keyed_documents<'a>(
    files: &'a [InputFile],
    first_file: usize,
    bar: &'a ProgressBar,
) -> impl Iterator<Item = Result<(u64, String)>> + Send + 'a {
    files.iter().enumerate().flat_map(move |(i, file)| {
        Documents::new(vec![file.clone()], bar.clone())
            .zip(0u64..)
            .map(move |(doc, n)| Ok((doc_key(first_file + i, n)?, doc?)))
    })
}
