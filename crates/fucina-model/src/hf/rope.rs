//! The rotary settings of a config.json. transformers 4 writes `rope_theta` and `rope_scaling`
//! (whose type key was once `type`, later `rope_type`); transformers 5 writes one
//! `rope_parameters` holding both. All three are read, and must agree when several are given.

use super::config::{as_f64, as_usize, Fields};
use crate::config::{LlamaConfig, RopeScaling};
use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

/// The rope dictionary's meaning: `theta` if it says one, and the scaling.
#[derive(Debug, PartialEq)]
struct RopeDict {
    theta: Option<f64>,
    scaling: Option<RopeScaling>,
}

/// (`rope_theta`, `rope_scaling`) from whichever of the three fields the config has.
pub(crate) fn parse_rope(
    fields: &mut Fields,
    max_position_embeddings: usize,
) -> Result<(f64, Option<RopeScaling>)> {
    let top_theta = fields.f64("rope_theta")?;
    if let Some(p) = fields.f64("partial_rotary_factor")? {
        if p != 1.0 {
            bail!("partial_rotary_factor = {p} is not supported; fucina rotates every dimension");
        }
    }
    let mut dicts = Vec::new();
    for name in ["rope_scaling", "rope_parameters"] {
        match fields.0.remove(name) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) if map.is_empty() => {}
            Some(Value::Object(map)) => dicts.push((
                name,
                parse_dict(map, max_position_embeddings).with_context(|| format!("in {name}"))?,
            )),
            Some(other) => bail!("{name} must be an object or null, got {other}"),
        }
    }
    let mut thetas: Vec<(String, f64)> = top_theta
        .map(|t| ("rope_theta".to_string(), t))
        .into_iter()
        .collect();
    thetas.extend(
        dicts
            .iter()
            .filter_map(|(n, d)| d.theta.map(|t| (format!("{n}.rope_theta"), t))),
    );
    if let Some((name, theta)) = thetas.iter().find(|(_, t)| *t != thetas[0].1) {
        bail!("{} = {} but {name} = {theta}", thetas[0].0, thetas[0].1);
    }
    if let [(a, first), (b, second)] = dicts.as_slice() {
        if first.scaling != second.scaling {
            bail!(
                "{a} and {b} describe different rotary scalings ({:?} vs {:?}); transformers 4 would read one and 5 the other",
                first.scaling,
                second.scaling
            );
        }
    }
    let theta = thetas.first().map_or(10_000.0, |(_, t)| *t);
    let scaling = dicts.into_iter().find_map(|(_, d)| d.scaling);
    Ok((theta, scaling))
}

fn parse_dict(mut map: Map<String, Value>, max_position_embeddings: usize) -> Result<RopeDict> {
    let rope_type = match (map.remove("rope_type"), map.remove("type")) {
        (Some(a), Some(b)) if a != b => bail!("rope_type {a} and type {b} disagree"),
        (Some(t), _) | (None, Some(t)) => t
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("rope_type must be a string, got {t}"))?,
        (None, None) => "default".to_string(),
    };
    let theta = map
        .remove("rope_theta")
        .map(|v| as_f64("rope_theta", &v))
        .transpose()?;
    if let Some(p) = map.remove("partial_rotary_factor") {
        if as_f64("partial_rotary_factor", &p)? != 1.0 {
            bail!("partial_rotary_factor = {p} is not supported; fucina rotates every dimension");
        }
    }
    let scaling = match rope_type.as_str() {
        "default" => None,
        "llama3" => {
            let mut number = |name: &str| -> Result<f64> {
                let v = map
                    .remove(name)
                    .with_context(|| format!("llama3 rope scaling needs {name}"))?;
                as_f64(name, &v)
            };
            let factor = number("factor")?;
            let low_freq_factor = number("low_freq_factor")?;
            let high_freq_factor = number("high_freq_factor")?;
            // transformers 5 falls back to max_position_embeddings, as fucina does.
            let original = match map.remove("original_max_position_embeddings") {
                None | Some(Value::Null) => max_position_embeddings,
                Some(v) => as_usize("original_max_position_embeddings", &v)?,
            };
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: original,
            })
        }
        other => bail!(
            "rope type {other:?} is not supported; fucina implements the default rotary embedding and llama3 scaling"
        ),
    };
    if let Some(key) = map.keys().next() {
        bail!("unknown key {key:?} for rope type {rope_type:?}");
    }
    Ok(RopeDict { theta, scaling })
}

/// (`rope_scaling`, `rope_parameters`) as config.json values.
pub(crate) fn rope_json(model: &LlamaConfig) -> (Value, Value) {
    match &model.rope_scaling {
        None => (
            Value::Null,
            json!({"rope_type": "default", "rope_theta": model.rope_theta}),
        ),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let scaling = json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            });
            let mut parameters = scaling.clone();
            parameters["rope_theta"] = json!(model.rope_theta);
            (scaling, parameters)
        }
    }
}
