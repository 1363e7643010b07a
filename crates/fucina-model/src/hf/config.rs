//! A checkpoint's `config.json` ⇄ `LlamaConfig`: whatever would make a different model than
//! fucina computes is refused by name, the harmless rest is kept verbatim for export.

use super::dtype::HfDtype;
use super::rope::{parse_rope, rope_json};
use crate::config::LlamaConfig;
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
}

impl Architecture {
    pub fn class_name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
        }
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
        }
    }

    fn all() -> [Architecture; 2] {
        [Architecture::Llama, Architecture::Mistral]
    }
}

/// Fields that change neither the weights nor the forward pass (token ids, bookkeeping).
pub const HARMLESS_FIELDS: &[&str] = &[
    "_name_or_path",
    "_attn_implementation_autoset",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "id2label",
    "label2id",
    "output_attentions",
    "output_hidden_states",
    "problem_type",
    "return_dict",
    "tokenizer_class",
    "torchscript",
    "transformers_version",
    "use_cache",
];

/// Fields kept verbatim when they hold the value that means what fucina computes.
const CHECKED_FIELDS: &[&str] = &[
    "hidden_act",
    "attention_bias",
    "mlp_bias",
    "pretraining_tp",
    "attention_dropout",
];

/// A parsed `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    pub architecture: Architecture,
    pub model: LlamaConfig,
    /// `torch_dtype` (transformers 5: `dtype`), when it names a type fucina stores; failing
    /// that, `HfCheckpoint::open` fills in the tensors' dtype if they all share one.
    pub torch_dtype: Option<HfDtype>,
    /// The harmless and checked fields exactly as the source wrote them.
    pub kept: BTreeMap<String, Value>,
}

impl HfConfig {
    /// A config for a model that never came from a checkpoint: plain `LlamaForCausalLM`.
    pub fn fresh(model: &LlamaConfig) -> Self {
        HfConfig {
            architecture: Architecture::Llama,
            model: model.clone(),
            torch_dtype: None,
            kept: BTreeMap::new(),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        Self::from_value(value).with_context(|| format!("in {}", path.display()))
    }

    pub fn from_value(value: Value) -> Result<Self> {
        let Value::Object(map) = value else {
            bail!("config.json must be a JSON object");
        };
        let mut fields = Fields(map);
        let architecture = architecture(&mut fields)?;
        let defaults = Defaults::of(architecture);
        let mut kept = BTreeMap::new();
        for &name in CHECKED_FIELDS {
            if let Some(value) = fields.0.remove(name) {
                check_value(name, &value)?;
                kept.insert(name.to_string(), value);
            }
        }
        let torch_dtype = dtype(&mut fields)?;
        let hidden_size = fields.required_usize("hidden_size")?;
        let num_attention_heads = fields.required_usize("num_attention_heads")?;
        let max_position_embeddings = fields
            .usize("max_position_embeddings")?
            .unwrap_or(defaults.max_position_embeddings);
        let (rope_theta, rope_scaling) = parse_rope(&mut fields, max_position_embeddings)?;
        let sliding_window = match fields.0.remove("sliding_window") {
            None => defaults.sliding_window,
            Some(Value::Null) => None,
            Some(v) => Some(as_usize("sliding_window", &v)?),
        };
        let model = LlamaConfig {
            vocab_size: fields.required_usize("vocab_size")?,
            hidden_size,
            intermediate_size: fields.required_usize("intermediate_size")?,
            num_hidden_layers: fields.required_usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: Some(
                fields
                    .usize("num_key_value_heads")?
                    .unwrap_or(defaults.kv_heads.unwrap_or(num_attention_heads)),
            ),
            head_dim: fields.usize("head_dim")?,
            rms_norm_eps: fields.f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            max_position_embeddings,
            tie_word_embeddings: fields.bool("tie_word_embeddings")?.unwrap_or(false),
            initializer_range: fields.f64("initializer_range")?.unwrap_or(0.02),
            rope_scaling,
            sliding_window,
        };
        for &name in HARMLESS_FIELDS {
            if let Some(value) = fields.0.remove(name) {
                kept.insert(name.to_string(), value);
            }
        }
        refuse_leftovers(fields.0)?;
        model.validate()?;
        Ok(HfConfig {
            architecture,
            model,
            torch_dtype,
            kept,
        })
    }

    /// The `config.json` transformers would write for this model stored as `dtype`, keys sorted
    /// as transformers sorts them. Rotary settings are written both the transformers 4 way
    /// (`rope_theta`, `rope_scaling`) and the transformers 5 way (`rope_parameters`), so that
    /// either reads the same model, as do vLLM and llama.cpp's converter.
    pub fn to_json(&self, dtype: HfDtype) -> Value {
        let m = &self.model;
        let mut out: BTreeMap<String, Value> = self.kept.clone();
        let mut defaults = vec![("hidden_act", json!("silu"))];
        if self.architecture == Architecture::Llama {
            defaults.extend([("attention_bias", json!(false)), ("mlp_bias", json!(false))]);
        }
        for (name, value) in defaults {
            out.entry(name.to_string()).or_insert(value);
        }
        let (rope_scaling, rope_parameters) = rope_json(m);
        let fields = [
            ("architectures", json!([self.architecture.class_name()])),
            ("model_type", json!(self.architecture.model_type())),
            ("vocab_size", json!(m.vocab_size)),
            ("hidden_size", json!(m.hidden_size)),
            ("intermediate_size", json!(m.intermediate_size)),
            ("num_hidden_layers", json!(m.num_hidden_layers)),
            ("num_attention_heads", json!(m.num_attention_heads)),
            ("num_key_value_heads", json!(m.kv_heads())),
            ("rms_norm_eps", json!(m.rms_norm_eps)),
            ("rope_theta", json!(m.rope_theta)),
            ("rope_scaling", rope_scaling),
            ("rope_parameters", rope_parameters),
            ("max_position_embeddings", json!(m.max_position_embeddings)),
            ("tie_word_embeddings", json!(m.tie_word_embeddings)),
            ("initializer_range", json!(m.initializer_range)),
            // Mistral's loader defaults to a 4096 window: "none" has to be said.
            ("sliding_window", json!(m.sliding_window)),
            ("torch_dtype", json!(dtype.torch_name())),
            ("dtype", json!(dtype.torch_name())),
        ];
        for (name, value) in fields {
            out.insert(name.to_string(), value);
        }
        if let Some(head_dim) = m.head_dim {
            out.insert("head_dim".into(), json!(head_dim));
        }
        if m.sliding_window.is_none() && self.architecture == Architecture::Llama {
            out.remove("sliding_window");
        }
        serde_json::to_value(out).expect("a map of JSON values serialises")
    }
}

/// transformers' class defaults, which apply to fields a config.json leaves out.
struct Defaults {
    max_position_embeddings: usize,
    kv_heads: Option<usize>,
    sliding_window: Option<usize>,
}

impl Defaults {
    fn of(architecture: Architecture) -> Self {
        match architecture {
            Architecture::Llama => Defaults {
                max_position_embeddings: 2048,
                kv_heads: None,
                sliding_window: None,
            },
            Architecture::Mistral => Defaults {
                max_position_embeddings: 4096 * 32,
                kv_heads: Some(8),
                sliding_window: Some(4096),
            },
        }
    }
}

fn architecture(fields: &mut Fields) -> Result<Architecture> {
    let supported = || {
        Architecture::all()
            .map(Architecture::class_name)
            .join(" and ")
    };
    let from_class = match fields.0.remove("architectures") {
        None | Some(Value::Null) => None,
        Some(Value::Array(names)) if !names.is_empty() => {
            let mut found = None;
            for name in &names {
                let name = name.as_str().unwrap_or_default();
                let Some(arch) = Architecture::all()
                    .into_iter()
                    .find(|a| a.class_name() == name)
                else {
                    bail!(
                        "architecture {name:?} is not supported; fucina imports {}",
                        supported()
                    );
                };
                if found.is_some_and(|f| f != arch) {
                    bail!("architectures lists two different models: {names:?}");
                }
                found = Some(arch);
            }
            found
        }
        Some(other) => bail!("architectures must be a list of class names, got {other}"),
    };
    let from_type = match fields.0.remove("model_type") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => match Architecture::all()
            .into_iter()
            .find(|a| a.model_type() == name)
        {
            Some(arch) => Some(arch),
            None => bail!(
                "model_type {name:?} is not supported; fucina imports {}",
                supported()
            ),
        },
        Some(other) => bail!("model_type must be a string, got {other}"),
    };
    match (from_class, from_type) {
        (Some(a), Some(t)) if a != t => bail!(
            "architectures says {} but model_type says {:?}",
            a.class_name(),
            t.model_type()
        ),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => bail!(
            "neither architectures nor model_type is set; fucina imports {}",
            supported()
        ),
    }
}

fn dtype(fields: &mut Fields) -> Result<Option<HfDtype>> {
    let mut found = None;
    for name in ["dtype", "torch_dtype"] {
        match fields.0.remove(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => found = found.or(HfDtype::from_torch_name(&s)),
            Some(other) => bail!("{name} must be a string, got {other}"),
        }
    }
    Ok(found)
}

fn check_value(name: &str, value: &Value) -> Result<()> {
    let ok = match name {
        "hidden_act" => value.is_null() || value.as_str() == Some("silu"),
        "attention_bias" | "mlp_bias" => value.is_null() || value.as_bool() == Some(false),
        // transformers splits the projections into slices when > 1.
        "pretraining_tp" => value.is_null() || value.as_u64().is_some_and(|tp| tp <= 1),
        // fucina trains without dropout.
        "attention_dropout" => value.is_null() || value.as_f64() == Some(0.0),
        _ => true,
    };
    if !ok {
        let wanted = match name {
            "hidden_act" => "\"silu\" (SwiGLU)",
            "attention_bias" | "mlp_bias" => "false (fucina's projections have no bias)",
            "pretraining_tp" => "1",
            _ => "0.0 (fucina trains without dropout)",
        };
        bail!("{name} = {value} is not supported; fucina implements only {name} = {wanted}");
    }
    Ok(())
}

fn refuse_leftovers(rest: Map<String, Value>) -> Result<()> {
    if rest.is_empty() {
        return Ok(());
    }
    if rest.contains_key("quantization_config") {
        bail!("quantization_config: quantized checkpoints are not supported; start from the unquantized weights");
    }
    if rest.contains_key("auto_map") {
        bail!(
            "auto_map: this checkpoint ships its own modelling code, which fucina cannot vouch for"
        );
    }
    let names: Vec<&str> = rest.keys().map(String::as_str).collect();
    let mut allowed: Vec<&str> = HARMLESS_FIELDS.to_vec();
    allowed.extend(CHECKED_FIELDS);
    bail!(
        "unknown field(s) {}: they may change the model, so fucina refuses to guess. Besides the shape and rotary fields it accepts only {}",
        names.join(", "),
        allowed.join(", ")
    )
}

/// The fields not yet taken from config.json; each `take` removes one.
pub(crate) struct Fields(pub(crate) Map<String, Value>);

impl Fields {
    pub(crate) fn usize(&mut self, name: &str) -> Result<Option<usize>> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => as_usize(name, &v).map(Some),
        }
    }

    fn required_usize(&mut self, name: &str) -> Result<usize> {
        self.usize(name)?
            .with_context(|| format!("{name} is missing"))
    }

    pub(crate) fn f64(&mut self, name: &str) -> Result<Option<f64>> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => as_f64(name, &v).map(Some),
        }
    }

    fn bool(&mut self, name: &str) -> Result<Option<bool>> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => bail!("{name} must be true or false, got {other}"),
        }
    }
}

pub(crate) fn as_usize(name: &str, value: &Value) -> Result<usize> {
    value
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .with_context(|| format!("{name} must be a non-negative integer, got {value}"))
}

pub(crate) fn as_f64(name: &str, value: &Value) -> Result<f64> {
    value
        .as_f64()
        .with_context(|| format!("{name} must be a number, got {value}"))
}
