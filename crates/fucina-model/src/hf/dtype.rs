//! The floating-point types a checkpoint may store, and their conversion to and from f32.

use anyhow::{bail, Result};
use half::{bf16, f16};
use safetensors::Dtype;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfDtype {
    F32,
    BF16,
    F16,
}

impl HfDtype {
    pub const ALL: [HfDtype; 3] = [HfDtype::F32, HfDtype::BF16, HfDtype::F16];

    /// The name transformers writes as `torch_dtype` in config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            HfDtype::F32 => "float32",
            HfDtype::BF16 => "bfloat16",
            HfDtype::F16 => "float16",
        }
    }

    /// Reads a `torch_dtype` value; `None` for the ones fucina does not store (float64, auto…).
    pub fn from_torch_name(name: &str) -> Option<Self> {
        match name {
            "float32" | "float" => Some(HfDtype::F32),
            "bfloat16" => Some(HfDtype::BF16),
            "float16" | "half" => Some(HfDtype::F16),
            _ => None,
        }
    }

    pub fn size(self) -> usize {
        match self {
            HfDtype::F32 => 4,
            HfDtype::BF16 | HfDtype::F16 => 2,
        }
    }

    pub fn safetensors(self) -> Dtype {
        match self {
            HfDtype::F32 => Dtype::F32,
            HfDtype::BF16 => Dtype::BF16,
            HfDtype::F16 => Dtype::F16,
        }
    }

    pub fn from_safetensors(dtype: Dtype) -> Option<Self> {
        match dtype {
            Dtype::F32 => Some(HfDtype::F32),
            Dtype::BF16 => Some(HfDtype::BF16),
            Dtype::F16 => Some(HfDtype::F16),
            _ => None,
        }
    }

    /// Little-endian bytes (the safetensors layout) to f32, exactly: every bf16/f16 is an f32.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            HfDtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            HfDtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
            HfDtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
        }
    }

    /// f32 to little-endian bytes, rounding to nearest even as PyTorch's casts do.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(values.len() * self.size());
        match self {
            HfDtype::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            HfDtype::BF16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes())),
            HfDtype::F16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes())),
        }
        out
    }
}

impl fmt::Display for HfDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HfDtype::F32 => "f32",
            HfDtype::BF16 => "bf16",
            HfDtype::F16 => "f16",
        })
    }
}

impl FromStr for HfDtype {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "fp32" => Ok(HfDtype::F32),
            "bf16" => Ok(HfDtype::BF16),
            "f16" | "fp16" => Ok(HfDtype::F16),
            other => match HfDtype::from_torch_name(other) {
                Some(d) => Ok(d),
                None => bail!("unknown dtype {other:?}; expected f32, bf16 or f16"),
            },
        }
    }
}
