//! What `prepare` says about the conversations it left out: counts per
//! reason and the first few places of each, so a bad download is seen and
//! can be found without a line per record.

use super::formats::Skip;
use std::fmt;

/// Places named per reason; the rest are only counted.
const FIRST_PLACES: usize = 3;

/// In the order they are reported, indexed by `reason`.
const REASONS: [&str; 6] = [
    "with an unknown role",
    "without an assistant turn",
    "with an empty message",
    "malformed",
    "with both \"messages\" and \"conversations\"",
    "whose assistant turns the chat template rendered as nothing",
];

/// e.g. `skipped 3 of 120 conversations: 2 with an unknown role ("tool" at
/// data.jsonl:14; "bing" at data.jsonl:57), 1 without an assistant turn
/// (data.jsonl:9)`.
#[derive(Debug, Default, Clone)]
pub struct SkipReport {
    /// Conversations read, skipped or not.
    pub conversations: u64,
    counts: [u64; REASONS.len()],
    places: [Vec<String>; REASONS.len()],
}

impl SkipReport {
    /// Counts a skipped conversation read at `at` (a file:line).
    pub fn add(&mut self, skip: &Skip, at: &dyn fmt::Display) {
        let (reason, place) = match skip {
            Skip::UnknownRole(role) => (0, format!("{role:?} at {at}")),
            Skip::NoAssistant => (1, at.to_string()),
            Skip::EmptyMessage(which) => (2, format!("{at}: {which}")),
            Skip::Malformed(what) => (3, format!("{at}: {what}")),
            Skip::TwoLists => (4, at.to_string()),
            Skip::NothingRendered => (5, at.to_string()),
        };
        self.counts[reason] += 1;
        if self.places[reason].len() < FIRST_PLACES {
            self.places[reason].push(place);
        }
    }

    pub fn skipped(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl fmt::Display for SkipReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = if self.conversations == 1 {
            "conversation"
        } else {
            "conversations"
        };
        write!(
            f,
            "skipped {} of {} {noun}:",
            self.skipped(),
            self.conversations
        )?;
        let mut first = true;
        for ((reason, &count), places) in REASONS.iter().zip(&self.counts).zip(&self.places) {
            if count == 0 {
                continue;
            }
            let sep = if first { " " } else { ", " };
            first = false;
            write!(f, "{sep}{count} {reason} ({}", places.join("; "))?;
            match count - places.len() as u64 {
                0 => write!(f, ")")?,
                more => write!(f, "; {more} more)")?,
            }
        }
        Ok(())
    }
}
