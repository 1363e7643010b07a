//! Flat f32 vectors over the trainable parameters (their weights, their AdamW moments) as
//! safetensors files, whole or in parts: with the sharded optimizer each rank writes the part it
//! owns, and resuming joins the parts whatever the world size was, so no rank ever gathers the
//! whole state to save it.

use crate::zero::Layout;
use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::ops::Range;

const TRAINABLE_FORMAT: &str = "fucina-trainable-flat";

/// Metadata keys placing a part in the whole vector.
const OFFSET: &str = "offset";
const TOTAL: &str = "total";

/// `values` of every named tensor cover `offset..offset + len` of vectors `total` long.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatPart {
    pub offset: usize,
    pub total: usize,
    pub tensors: Vec<(String, Vec<f32>)>,
    /// What the vectors are (format, parameter shapes, AdamW step count): equal in every part.
    pub metadata: HashMap<String, String>,
}

/// The file holding rank `rank`'s part of `stem` in a checkpoint written by `world` ranks.
pub fn shard_name(stem: &str, rank: usize, world: usize) -> String {
    format!("{stem}.shard-{rank:05}-of-{world:05}.safetensors")
}

/// Whether `name` is one of `stem`'s parts.
pub fn is_shard_of(name: &str, stem: &str) -> bool {
    name.strip_prefix(stem)
        .is_some_and(|rest| rest.starts_with(".shard-") && rest.ends_with(".safetensors"))
}

impl FlatPart {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let bytes: Vec<Vec<u8>> = self
            .tensors
            .iter()
            .map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let views = self
            .tensors
            .iter()
            .zip(&bytes)
            .map(|((name, v), b)| {
                let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![v.len()], b)?;
                Ok((name.as_str(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut metadata = self.metadata.clone();
        metadata.insert(OFFSET.into(), self.offset.to_string());
        metadata.insert(TOTAL.into(), self.total.to_string());
        safetensors::serialize(views, Some(metadata)).context("cannot serialise flat vectors")
    }

    /// Reads a part; a whole file written before parts existed has no offset and counts as
    /// the whole vector.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let tensors =
            SafeTensors::deserialize(bytes).map_err(|e| anyhow!("not a safetensors file: {e}"))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| anyhow!("not a safetensors file: {e}"))?;
        let mut metadata = header.metadata().clone().unwrap_or_default();
        let mut names: Vec<String> = tensors.names().into_iter().map(String::from).collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let view = tensors.tensor(&name).map_err(|e| anyhow!("{name}: {e}"))?;
            ensure!(
                view.dtype() == Dtype::F32 && view.shape().len() == 1,
                "tensor {name} is {:?} {:?}, expected a flat F32 vector",
                view.dtype(),
                view.shape()
            );
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            out.push((name, values));
        }
        let len = out.first().map_or(0, |(_, v): &(String, Vec<f32>)| v.len());
        ensure!(
            out.iter().all(|(_, v)| v.len() == len),
            "the flat vectors have different lengths"
        );
        let mut number = |key: &str, default: usize| -> Result<usize> {
            match metadata.remove(key) {
                Some(v) => v.parse().with_context(|| format!("metadata {key} = {v:?}")),
                None => Ok(default),
            }
        };
        let offset = number(OFFSET, 0)?;
        let total = number(TOTAL, len)?;
        ensure!(
            offset + len <= total,
            "a part of {len} values at {offset} of a vector of {total}"
        );
        Ok(Self {
            offset,
            total,
            tensors: out,
            metadata,
        })
    }

    /// The whole vectors from their parts (any order), refusing gaps, overlaps and parts of
    /// different vectors.
    pub fn join(mut parts: Vec<(String, FlatPart)>) -> Result<FlatPart> {
        parts.sort_by_key(|(_, p)| p.offset);
        let Some((first_name, first)) = parts.first() else {
            bail!("no parts to join");
        };
        let (total, metadata) = (first.total, first.metadata.clone());
        let names: Vec<String> = first.tensors.iter().map(|(n, _)| n.clone()).collect();
        let mut tensors: Vec<(String, Vec<f32>)> = names
            .iter()
            .map(|n| (n.clone(), Vec::with_capacity(total)))
            .collect();
        let mut at = 0;
        for (file, part) in &parts {
            let same = part.total == total
                && part.metadata == metadata
                && part.tensors.iter().map(|(n, _)| n).eq(names.iter());
            ensure!(
                same,
                "{file} belongs to another checkpoint than {first_name}"
            );
            ensure!(
                part.offset == at,
                "{file} starts at value {}, the parts before end at {at} (a part is missing)",
                part.offset
            );
            for ((_, whole), (_, values)) in tensors.iter_mut().zip(&part.tensors) {
                whole.extend_from_slice(values);
            }
            at += part.tensors.first().map_or(0, |(_, v)| v.len());
        }
        ensure!(
            at == total,
            "the parts hold {at} of {total} values (a part is missing)"
        );
        Ok(FlatPart {
            offset: 0,
            total,
            tensors,
            metadata,
        })
    }

    /// `range` of the AdamW moments, in the form `FlatMoments` reads once the parts are joined.
    pub fn moments(
        layout: &Layout,
        range: Range<usize>,
        (moment_1, moment_2, time): (&[f32], &[f32], usize),
    ) -> Result<Self> {
        let format = crate::flat_moments::FORMAT;
        let mut part = Self::of(layout, range, format, &[moment_1, moment_2])?;
        part.tensors[0].0 = "moment_1".into();
        part.tensors[1].0 = "moment_2".into();
        part.metadata.insert("time".into(), time.to_string());
        Ok(part)
    }

    /// `range` of the trainable weights.
    pub fn trainable(layout: &Layout, range: Range<usize>, weights: &[f32]) -> Result<Self> {
        let mut part = Self::of(layout, range, TRAINABLE_FORMAT, &[weights])?;
        part.tensors[0].0 = "weights".into();
        Ok(part)
    }

    fn of(layout: &Layout, range: Range<usize>, format: &str, values: &[&[f32]]) -> Result<Self> {
        ensure!(
            values.iter().all(|v| v.len() == range.len()) && range.end <= layout.len(),
            "a part of {} values for range {range:?} of {}",
            values[0].len(),
            layout.len()
        );
        let metadata = HashMap::from([
            ("format".to_string(), format.to_string()),
            ("shapes".to_string(), serde_json::to_string(&layout.0)?),
        ]);
        Ok(Self {
            offset: range.start,
            total: layout.len(),
            tensors: values.iter().map(|v| (String::new(), v.to_vec())).collect(),
            metadata,
        })
    }

    /// The trainable weights of a whole file, refusing those of other parameter shapes.
    pub fn into_trainable(self, layout: &Layout) -> Result<Vec<f32>> {
        ensure!(
            self.metadata.get("format").map(String::as_str) == Some(TRAINABLE_FORMAT),
            "not a file of trainable weights"
        );
        let shapes: Vec<Vec<usize>> = serde_json::from_str(
            self.metadata
                .get("shapes")
                .ok_or_else(|| anyhow!("no parameter shapes in the trainable weights"))?,
        )?;
        ensure!(
            shapes == layout.0 && self.offset == 0 && self.total == layout.len(),
            "the checkpoint's trainable weights are {} tensors ({} values), this run trains {} \
             ({} values): another model or [lora] setting",
            shapes.len(),
            self.total,
            layout.0.len(),
            layout.len()
        );
        let (_, weights) = self
            .tensors
            .into_iter()
            .next()
            .context("no weights tensor")?;
        Ok(weights)
    }

    pub fn tensor(&self, name: &str) -> Result<&[f32]> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .ok_or_else(|| anyhow!("no tensor {name} in the flat file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(offset: usize, values: &[f32]) -> FlatPart {
        FlatPart {
            offset,
            total: 5,
            tensors: vec![
                ("a".into(), values.to_vec()),
                ("b".into(), values.iter().map(|v| -v).collect()),
            ],
            metadata: HashMap::from([("format".into(), "x".into())]),
        }
    }

    #[test]
    fn parts_round_trip_and_join_in_any_order() {
        let (p0, p1) = (part(0, &[1.0, 2.0]), part(2, &[3.0, 4.0, 5.0]));
        let decoded = FlatPart::decode(&p1.encode().unwrap()).unwrap();
        assert_eq!(decoded, p1);
        let whole = FlatPart::join(vec![("1".into(), p1), ("0".into(), p0.clone())]).unwrap();
        assert_eq!(whole.tensor("a").unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(whole.tensor("b").unwrap(), [-1.0, -2.0, -3.0, -4.0, -5.0]);
        let err = FlatPart::join(vec![("zero".into(), p0)]).unwrap_err();
        assert!(format!("{err}").contains("2 of 5"), "{err}");
        let gap = FlatPart::join(vec![
            ("x".into(), part(0, &[1.0])),
            ("y".into(), part(2, &[2.0])),
        ]);
        assert!(format!("{}", gap.unwrap_err()).contains("y starts at value 2"));
    }

    #[test]
    fn shard_names_are_recognised() {
        let name = shard_name("optim", 1, 3);
        assert_eq!(name, "optim.shard-00001-of-00003.safetensors");
        assert!(is_shard_of(&name, "optim"));
        assert!(!is_shard_of("optim.safetensors", "optim"));
        assert!(!is_shard_of(&name, "trainable"));
    }
}
