//! Packing conversations into rows (`prepare --pack`): first-fit decreasing,
//! deterministic, so reruns write the same rows.

use super::rows::RowSink;
use crate::chat::EncodedChat;
use crate::shard::MASK_DOC_START;
use anyhow::Result;

/// Writes `conversations` (each at most a row long) packed into rows. Each
/// one's first token is marked as a document start and is not a target: in
/// a packed row it would be predicted from the conversation before it.
pub(crate) fn write_packed(sink: &mut RowSink, conversations: Vec<EncodedChat>) -> Result<()> {
    let lengths: Vec<usize> = conversations.iter().map(|c| c.tokens.len()).collect();
    let (mut tokens, mut mask) = (Vec::new(), Vec::new());
    for row in first_fit_decreasing(&lengths, sink.row_len()) {
        tokens.clear();
        mask.clear();
        for i in row {
            let chat = &conversations[i];
            mask.push(MASK_DOC_START);
            mask.extend_from_slice(&chat.mask[1..]);
            tokens.extend_from_slice(&chat.tokens);
        }
        sink.push_conversations(&tokens, &mask)?;
    }
    Ok(())
}

/// Groups items of the given lengths into rows of at most `row_len` tokens:
/// longest first (ties by index), each into the first row with room, else
/// a new row. An item of `row_len` or more fills a row alone. Each row lists
/// its items in index order; rows are ordered by their first item.
pub(crate) fn first_fit_decreasing(lengths: &[usize], row_len: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut room: Vec<usize> = Vec::new();
    for i in order {
        let len = lengths[i].min(row_len);
        match room.iter().position(|&r| r >= len) {
            Some(r) => {
                room[r] -= len;
                rows[r].push(i);
            }
            None => {
                room.push(row_len - len);
                rows.push(vec![i]);
            }
        }
    }
    for row in &mut rows {
        row.sort_unstable();
    }
    rows.sort_unstable_by_key(|row| row[0]);
    rows
}

#[cfg(test)]
mod tests {
    use super::first_fit_decreasing as ffd;

    #[test]
    fn longest_first_into_the_first_row_with_room() {
        // 6 opens row A, 5 opens B, 4 fits A (10), 3 fits B (8), 2 fits B (10), 1 opens C.
        let rows = ffd(&[3, 6, 2, 5, 1, 4], 10);
        assert_eq!(rows, [vec![0, 2, 3], vec![1, 5], vec![4]]);
    }

    #[test]
    fn ties_go_by_index_and_long_items_fill_a_row_alone() {
        assert_eq!(ffd(&[4, 4, 4], 8), [vec![0, 1], vec![2]]);
        assert_eq!(ffd(&[12, 1, 8, 1], 8), [vec![0], vec![1, 3], vec![2]]);
        assert!(ffd(&[], 8).is_empty());
    }

    #[test]
    fn every_item_once_and_no_row_over_full() {
        let lengths: Vec<usize> = (0..500u64)
            .map(|i| 1 + (i.wrapping_mul(2654435761) % 97) as usize)
            .collect();
        let rows = ffd(&lengths, 100);
        let mut seen: Vec<usize> = rows.concat();
        seen.sort_unstable();
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
        for row in &rows {
            assert!(row.iter().map(|&i| lengths[i]).sum::<usize>() <= 100);
        }
        let total: usize = lengths.iter().sum();
        assert!(rows.len() < total.div_ceil(100) + total.div_ceil(100) / 5);
    }
}
