//! Documents packed in one row against transformers' packed-sequence path: the fixture models
//! run on a row of four documents with `position_ids` restarting at each (no attention mask), as
//! scripts/hf_fixtures_packed.py recorded in tests/fixtures/hf/*/packed.safetensors. fucina
//! gets only the documents' starts; positions and the block-diagonal mask follow from them.

mod hf_common;

use fucina_model::hf::HfCheckpoint;
use fucina_model::{Documents, Span};
use hf_common::*;
use safetensors::SafeTensors;
use std::path::Path;

fn read(name: &str) -> (Vec<i64>, Vec<i64>, Vec<f32>, f32) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hf")
        .join(name)
        .join("packed.safetensors");
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let i64s = |n: &str| -> Vec<i64> {
        let data = st.tensor(n).unwrap().data().to_vec();
        data.chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let f32s = |n: &str| -> Vec<f32> {
        let data = st.tensor(n).unwrap().data().to_vec();
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    (
        i64s("tokens"),
        i64s("position_ids"),
        f32s("logits"),
        f32s("loss")[0],
    )
}

#[test]
fn packed_documents_match_transformers_packed_position_ids() {
    for name in ["llama-gqa", "mistral", "llama3-tied"] {
        let (ids, positions, want, want_loss) = read(name);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/hf")
            .join(name);
        let model = HfCheckpoint::open(&dir)
            .unwrap()
            .load::<B>(&Default::default(), false)
            .unwrap();
        let seq = ids.len();
        let starts: Vec<u32> = (0..seq).map(|i| (i as i64 - positions[i]) as u32).collect();
        let docs = Documents::<B>::new(starts.clone(), 1, seq, &Default::default()).unwrap();
        assert_eq!(docs.count(), 4, "{name}: the fixture's four documents");
        let logits = floats(model.forward_in(tokens(&ids, 1), Span::Packed(&docs)));
        assert_close(&format!("{name} packed logits"), &logits, &want);

        // The loss over targets inside a document, from fucina's logits.
        let vocab = logits.len() / seq;
        let (mut sum, mut count) = (0f64, 0);
        for i in 0..seq - 1 {
            if starts[i + 1] as usize == i + 1 {
                continue;
            }
            let row = &logits[i * vocab..(i + 1) * vocab];
            let max = row.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            sum += lse - row[ids[i + 1] as usize] as f64;
            count += 1;
        }
        let loss = (sum / count as f64) as f32;
        assert!(
            (loss - want_loss).abs() <= 1e-5 * want_loss,
            "{name}: packed loss {loss} vs transformers' {want_loss}"
        );
    }
}
