//! Llama 4 text configuration, read from a hub `config.json`.
//!
//! Reference: transformers `models/llama4/configuration_llama4.py` (`Llama4TextConfig`).
//! Both published kinds are accepted: text-only (`model_type: llama4_text`) and the multimodal
//! wrapper (`model_type: llama4`, text settings nested in `text_config`; vision settings ignored).
//! Both rotary spellings are accepted: `rope_parameters` and `rope_theta` + `rope_scaling`.

use crate::error::{Error, Result, config_err};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Rotary embedding settings.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1 frequency-dependent scaling.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

/// The resolved text configuration: every derived list filled in and checked.
#[derive(Clone, Debug)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of one routed expert and of the shared expert.
    pub intermediate_size: usize,
    /// Width of the dense MLP of non-MoE layers.
    pub intermediate_size_mlp: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub num_local_experts: usize,
    pub num_experts_per_tok: usize,
    /// `moe[i]`: layer `i` is mixture-of-experts (else dense MLP).
    pub moe: Vec<bool>,
    /// `rope[i]`: layer `i` applies RoPE (the reference's `no_rope_layers[i] == 1`).
    pub rope: Vec<bool>,
    /// `chunked[i]`: layer `i` uses the chunked causal mask (`layer_types[i] == "chunked_attention"`).
    pub chunked: Vec<bool>,
    /// Chunk length of chunked-attention layers; `None` means full attention everywhere.
    pub attention_chunk_size: Option<usize>,
    pub use_qk_norm: bool,
    pub attn_temperature_tuning: bool,
    pub floor_scale: f64,
    pub attn_scale: f64,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub max_position_embeddings: usize,
}

#[derive(Deserialize)]
struct Raw {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    intermediate_size_mlp: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    num_local_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    interleave_moe_layer_step: Option<usize>,
    moe_layers: Option<Vec<usize>>,
    no_rope_layers: Option<Vec<Value>>,
    no_rope_layer_interval: Option<usize>,
    layer_types: Option<Vec<String>>,
    attention_chunk_size: Option<usize>,
    use_qk_norm: Option<bool>,
    attn_temperature_tuning: Option<Value>,
    floor_scale: Option<f64>,
    attn_scale: Option<f64>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    hidden_act: Option<String>,
    attention_bias: Option<bool>,
    max_position_embeddings: Option<usize>,
}

impl TextConfig {
    /// Reads `config.json` (a file) or `DIR/config.json`.
    pub fn from_path(path: &Path) -> Result<Self> {
        let file: PathBuf = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
        let text = std::fs::read_to_string(&file).map_err(|error| Error::Io { path: file.clone(), error })?;
        Self::from_json_str(&text, &file)
    }

    /// Parses the JSON text of a config; `path` names it in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let top: Value = serde_json::from_str(text).map_err(|error| Error::Json { path: path.into(), error })?;
        let model_type = top.get("model_type").and_then(Value::as_str).unwrap_or("");
        let (text_value, prefix) = match model_type {
            "llama4_text" => (top.clone(), ""),
            "llama4" => match top.get("text_config") {
                Some(t) if t.is_object() => (t.clone(), "text_config."),
                _ => return Err(config_err(path, "text_config", "missing for model_type \"llama4\"")),
            },
            other => {
                return Err(Error::UnsupportedModelType { path: path.into(), model_type: other.to_string() });
            }
        };
        let raw: Raw = serde_json::from_value(text_value).map_err(|e| config_err(path, prefix.trim_end_matches('.'), e.to_string()))?;
        if let Some(t) = raw.model_type.as_deref()
            && t != "llama4_text"
        {
            return Err(Error::UnsupportedModelType { path: path.into(), model_type: format!("{prefix}{t}") });
        }
        let mut cfg = resolve(raw, path, prefix)?;
        // The wrapper's own tie flag wins when the nested one is absent.
        if let Some(t) = top.get("tie_word_embeddings").and_then(Value::as_bool)
            && prefix == "text_config."
            && !top["text_config"].as_object().is_some_and(|o| o.contains_key("tie_word_embeddings"))
        {
            cfg.tie_word_embeddings = t;
        }
        Ok(cfg)
    }

    /// Number of query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Width of one key (or value) row in the KV cache: `num_key_value_heads * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Chunk length of layer `i` when it is chunked.
    pub fn chunk_of(&self, layer: usize) -> Option<usize> {
        if self.chunked[layer] { self.attention_chunk_size } else { None }
    }

    /// The same model with `layers` decoder layers: the per-layer lists cut, or repeated in their
    /// pattern (a benchmark stack of a model's shape that fits a device).
    pub fn with_layers(&self, layers: usize) -> Self {
        let pick = |v: &Vec<bool>| (0..layers).map(|i| v[i % v.len()]).collect();
        Self { num_hidden_layers: layers, moe: pick(&self.moe), rope: pick(&self.rope), chunked: pick(&self.chunked), ..self.clone() }
    }

    /// Parameters of decoder layer `l`: attention, feed-forward (every expert), norms.
    pub fn layer_params(&self, l: usize) -> usize {
        let (h, d) = (self.hidden_size, self.head_dim);
        let attn = h * d * (2 * self.num_attention_heads + 2 * self.num_key_value_heads);
        let mlp = |inter: usize| 3 * h * inter;
        let ff = if self.moe[l] {
            self.num_local_experts * mlp(self.intermediate_size) + mlp(self.intermediate_size) + self.num_local_experts * h
        } else {
            mlp(self.intermediate_size_mlp)
        };
        attn + ff + 2 * h
    }

    /// Multiply-adds of the weight products one token does in layer `l` (only routed experts).
    pub fn layer_active_params(&self, l: usize) -> usize {
        let (h, d) = (self.hidden_size, self.head_dim);
        let attn = h * d * (2 * self.num_attention_heads + 2 * self.num_key_value_heads);
        let ff = if self.moe[l] {
            (self.num_experts_per_tok + 1) * 3 * h * self.intermediate_size + self.num_local_experts * h
        } else {
            3 * h * self.intermediate_size_mlp
        };
        attn + ff
    }
}

fn need<T>(v: Option<T>, path: &Path, prefix: &str, field: &str) -> Result<T> {
    v.ok_or_else(|| config_err(path, &format!("{prefix}{field}"), "missing"))
}

fn resolve(raw: Raw, path: &Path, p: &str) -> Result<TextConfig> {
    let f = |name: &str| format!("{p}{name}");
    let vocab_size = need(raw.vocab_size, path, p, "vocab_size")?;
    let hidden_size = need(raw.hidden_size, path, p, "hidden_size")?;
    let intermediate_size = need(raw.intermediate_size, path, p, "intermediate_size")?;
    let num_hidden_layers = need(raw.num_hidden_layers, path, p, "num_hidden_layers")?;
    let num_attention_heads = need(raw.num_attention_heads, path, p, "num_attention_heads")?;
    let num_key_value_heads = raw.num_key_value_heads.unwrap_or(num_attention_heads);
    let head_dim = raw.head_dim.unwrap_or(hidden_size / num_attention_heads.max(1));
    let num_local_experts = raw.num_local_experts.unwrap_or(16);
    let num_experts_per_tok = raw.num_experts_per_tok.unwrap_or(1);
    for (name, v) in [
        ("vocab_size", vocab_size),
        ("hidden_size", hidden_size),
        ("intermediate_size", intermediate_size),
        ("num_hidden_layers", num_hidden_layers),
        ("num_attention_heads", num_attention_heads),
        ("num_key_value_heads", num_key_value_heads),
        ("head_dim", head_dim),
        ("num_experts_per_tok", num_experts_per_tok),
    ] {
        if v == 0 {
            return Err(config_err(path, &f(name), "must be > 0, got 0"));
        }
    }
    if num_attention_heads % num_key_value_heads != 0 {
        return Err(config_err(
            path,
            &f("num_key_value_heads"),
            format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
        ));
    }
    if !head_dim.is_multiple_of(2) {
        return Err(config_err(path, &f("head_dim"), format!("must be even for RoPE, got {head_dim}")));
    }
    if let Some(act) = raw.hidden_act.as_deref()
        && act != "silu"
    {
        return Err(config_err(path, &f("hidden_act"), format!("only \"silu\" is supported, got {act:?}")));
    }
    if raw.attention_bias == Some(true) {
        return Err(config_err(path, &f("attention_bias"), "attention biases are not supported (Llama 4 has none)"));
    }

    // MoE layers: explicit list, else every `interleave_moe_layer_step`-th layer (step-1, 2*step-1, …).
    let moe_idx = match raw.moe_layers {
        Some(list) => list,
        None => {
            let step = raw.interleave_moe_layer_step.unwrap_or(1);
            if step == 0 {
                return Err(config_err(path, &f("interleave_moe_layer_step"), "must be > 0, got 0"));
            }
            (step - 1..num_hidden_layers).step_by(step).collect()
        }
    };
    let mut moe = vec![false; num_hidden_layers];
    for i in moe_idx {
        if i >= num_hidden_layers {
            return Err(config_err(path, &f("moe_layers"), format!("layer {i} >= num_hidden_layers {num_hidden_layers}")));
        }
        moe[i] = true;
    }
    if moe.iter().any(|m| *m) {
        if num_local_experts == 0 {
            return Err(config_err(path, &f("num_local_experts"), "must be > 0 when there are MoE layers"));
        }
        if num_experts_per_tok > num_local_experts {
            return Err(config_err(
                path,
                &f("num_experts_per_tok"),
                format!("{num_experts_per_tok} > num_local_experts {num_local_experts}"),
            ));
        }
    }
    let intermediate_size_mlp = match raw.intermediate_size_mlp {
        Some(v) => v,
        None if moe.iter().all(|m| *m) => intermediate_size,
        None => return Err(config_err(path, &f("intermediate_size_mlp"), "missing (needed by the dense layers)")),
    };

    // RoPE layers: explicit `no_rope_layers` (1 = RoPE), else every interval-th layer (1-based) is NoPE.
    let rope = match raw.no_rope_layers.filter(|l| !l.is_empty()) {
        Some(list) => {
            if list.len() != num_hidden_layers {
                return Err(config_err(
                    path,
                    &f("no_rope_layers"),
                    format!("has {} entries, expected num_hidden_layers = {num_hidden_layers}", list.len()),
                ));
            }
            list.iter()
                .map(|v| match v {
                    Value::Bool(b) => Ok(*b),
                    Value::Number(n) if n.as_u64() == Some(0) || n.as_u64() == Some(1) => Ok(n.as_u64() == Some(1)),
                    other => Err(config_err(path, &f("no_rope_layers"), format!("entries must be 0 or 1, got {other}"))),
                })
                .collect::<Result<Vec<bool>>>()?
        }
        None => {
            let interval = raw.no_rope_layer_interval.unwrap_or(4);
            if interval == 0 {
                return Err(config_err(path, &f("no_rope_layer_interval"), "must be > 0, got 0"));
            }
            (0..num_hidden_layers).map(|i| (i + 1) % interval != 0).collect()
        }
    };
    let chunked = match raw.layer_types {
        Some(types) => {
            if types.len() != num_hidden_layers {
                return Err(config_err(
                    path,
                    &f("layer_types"),
                    format!("has {} entries, expected num_hidden_layers = {num_hidden_layers}", types.len()),
                ));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    "chunked_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(config_err(path, &f("layer_types"), format!("unknown layer type {other:?}"))),
                })
                .collect::<Result<Vec<bool>>>()?
        }
        None => rope.clone(),
    };
    if raw.attention_chunk_size == Some(0) {
        return Err(config_err(path, &f("attention_chunk_size"), "must be > 0, got 0"));
    }

    let max_position_embeddings = raw.max_position_embeddings.unwrap_or(131_072);
    let (rope_theta, rope_scaling) =
        rope_settings(raw.rope_parameters, raw.rope_theta, raw.rope_scaling, max_position_embeddings, path, p)?;
    let attn_temperature_tuning = match raw.attn_temperature_tuning {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|v| v != 0.0),
        Some(other) => {
            return Err(config_err(path, &f("attn_temperature_tuning"), format!("expected a bool, got {other}")));
        }
    };
    let floor_scale = raw.floor_scale.unwrap_or(8192.0);
    if floor_scale <= 0.0 {
        return Err(config_err(path, &f("floor_scale"), format!("must be > 0, got {floor_scale}")));
    }
    let eos_token_ids = match raw.eos_token_id {
        None | Some(Value::Null) => vec![],
        Some(v) => {
            token_ids(&v).ok_or_else(|| config_err(path, &f("eos_token_id"), format!("expected an id or a list of ids, got {v}")))?
        }
    };
    let bos_token_id = match raw.bos_token_id {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| config_err(path, &f("bos_token_id"), format!("expected an id, got {v}")))?,
        ),
    };
    Ok(TextConfig {
        vocab_size,
        hidden_size,
        intermediate_size,
        intermediate_size_mlp,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-5),
        rope_theta,
        rope_scaling,
        num_local_experts,
        num_experts_per_tok,
        moe,
        rope,
        chunked,
        attention_chunk_size: raw.attention_chunk_size,
        use_qk_norm: raw.use_qk_norm.unwrap_or(true),
        attn_temperature_tuning,
        floor_scale,
        attn_scale: raw.attn_scale.unwrap_or(0.1),
        tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        bos_token_id,
        eos_token_ids,
        max_position_embeddings,
    })
}

/// An id or a list of ids (`eos_token_id` may be either).
pub(crate) fn token_ids(v: &Value) -> Option<Vec<u32>> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).map(|n| vec![n]),
        Value::Array(a) => a.iter().map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok())).collect(),
        _ => None,
    }
}

fn rope_settings(
    params: Option<Value>,
    theta: Option<f64>,
    scaling: Option<Value>,
    max_positions: usize,
    path: &Path,
    p: &str,
) -> Result<(f64, RopeScaling)> {
    // `rope_parameters` (newer saves) carries the theta inside; `rope_scaling` (hub) beside it.
    let (field, obj, theta) = match params {
        Some(Value::Object(o)) => {
            let t = o.get("rope_theta").and_then(Value::as_f64).or(theta);
            (format!("{p}rope_parameters"), Some(o), t)
        }
        Some(Value::Null) | None => match scaling {
            Some(Value::Object(o)) => (format!("{p}rope_scaling"), Some(o), theta),
            Some(Value::Null) | None => (format!("{p}rope_scaling"), None, theta),
            Some(other) => return Err(config_err(path, &format!("{p}rope_scaling"), format!("expected an object or null, got {other}"))),
        },
        Some(other) => return Err(config_err(path, &format!("{p}rope_parameters"), format!("expected an object, got {other}"))),
    };
    let theta = theta.unwrap_or(500_000.0);
    if theta <= 0.0 {
        return Err(config_err(path, &format!("{p}rope_theta"), format!("must be > 0, got {theta}")));
    }
    let Some(o) = obj else { return Ok((theta, RopeScaling::Default)) };
    let kind = o.get("rope_type").or_else(|| o.get("type")).and_then(Value::as_str).unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        o.get(k).and_then(Value::as_f64).ok_or_else(|| config_err(path, &format!("{field}.{k}"), "missing or not a number"))
    };
    let scaling = match kind {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear { factor: num("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            // The reference falls back to max_position_embeddings.
            original_max_position_embeddings: match o.get("original_max_position_embeddings") {
                None | Some(Value::Null) => max_positions as f64,
                Some(_) => num("original_max_position_embeddings")?,
            },
        },
        other => {
            return Err(config_err(
                path,
                &format!("{field}.rope_type"),
                format!("unsupported rope_type {other:?} (supported: default, linear, llama3)"),
            ));
        }
    };
    match &scaling {
        RopeScaling::Linear { factor } | RopeScaling::Llama3 { factor, .. } if *factor <= 0.0 => {
            Err(config_err(path, &format!("{field}.factor"), format!("must be > 0, got {factor}")))
        }
        _ => Ok((theta, scaling)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<TextConfig> {
        TextConfig::from_json_str(&v.to_string(), Path::new("config.json"))
    }

    fn base() -> Value {
        json!({
            "model_type": "llama4_text", "vocab_size": 100, "hidden_size": 16, "intermediate_size": 8,
            "intermediate_size_mlp": 24, "num_hidden_layers": 8, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 4, "num_local_experts": 4, "attention_chunk_size": 8
        })
    }

    #[test]
    fn moe_and_nope_layers_are_derived_from_the_intervals_when_absent() {
        let mut v = base();
        v["interleave_moe_layer_step"] = 2.into();
        v["no_rope_layer_interval"] = 4.into();
        let c = parse(v).expect("parses");
        // MoE layers are step-1, 2*step-1, …: 1, 3, 5, 7
        assert_eq!(c.moe, vec![false, true, false, true, false, true, false, true]);
        // every 4th layer (1-based) has no RoPE: layers 3 and 7; those use full attention
        assert_eq!(c.rope, vec![true, true, true, false, true, true, true, false]);
        assert_eq!(c.chunked, c.rope);
        assert_eq!(c.chunk_of(3), None);
        assert_eq!(c.chunk_of(2), Some(8));
    }

    #[test]
    fn explicit_lists_win_over_the_intervals() {
        let mut v = base();
        v["moe_layers"] = json!([0, 7]);
        v["no_rope_layers"] = json!([0, 1, 1, 1, 1, 1, 1, 1]);
        v["interleave_moe_layer_step"] = 2.into();
        let c = parse(v).expect("parses");
        assert_eq!(c.moe.iter().filter(|m| **m).count(), 2);
        assert!(c.moe[0] && c.moe[7]);
        assert!(!c.rope[0] && c.rope[3]);
    }

    #[test]
    fn both_rope_spellings_and_a_null_scaling_are_understood() {
        let mut v = base();
        v["rope_theta"] = 10000.0.into();
        v["rope_scaling"] = Value::Null;
        let c = parse(v).expect("parses");
        assert_eq!((c.rope_theta, c.rope_scaling.clone()), (10000.0, RopeScaling::Default));

        let mut v = base();
        v["rope_theta"] = 500000.0.into();
        v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let hub = parse(v).expect("parses");
        let mut v = base();
        v["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let newer = parse(v).expect("parses");
        assert_eq!(hub.rope_scaling, newer.rope_scaling);
        assert_eq!(hub.rope_theta, newer.rope_theta);
        assert!(matches!(hub.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn the_multimodal_wrapper_nests_the_text_settings() {
        let v = json!({"model_type": "llama4", "architectures": ["Llama4ForConditionalGeneration"],
                       "text_config": base(), "vision_config": {"model_type": "llama4_vision_model"}});
        let c = parse(v).expect("parses");
        assert_eq!(c.hidden_size, 16);
        let e = parse(json!({"model_type": "llama4"})).expect_err("no text_config");
        assert!(e.to_string().contains("text_config"), "{e}");
        let mut nested = base();
        nested["hidden_size"] = Value::Null;
        let e = parse(json!({"model_type": "llama4", "text_config": nested})).expect_err("missing field");
        assert!(e.to_string().contains("text_config.hidden_size"), "{e}");
    }

    #[test]
    fn eos_may_be_an_id_or_a_list() {
        let mut v = base();
        v["eos_token_id"] = json!([200001, 200007, 200008]);
        assert_eq!(parse(v).expect("parses").eos_token_ids, vec![200001, 200007, 200008]);
        let mut v = base();
        v["eos_token_id"] = 4.into();
        assert_eq!(parse(v).expect("parses").eos_token_ids, vec![4]);
        let mut v = base();
        v["eos_token_id"] = "x".into();
        assert!(parse(v).expect_err("bad").to_string().contains("eos_token_id"));
    }

    #[test]
    fn dense_layers_need_their_width() {
        let mut v = base();
        v["interleave_moe_layer_step"] = 2.into();
        v.as_object_mut().expect("object").remove("intermediate_size_mlp");
        let e = parse(v).expect_err("dense layers without a width");
        assert!(e.to_string().contains("intermediate_size_mlp"), "{e}");
    }
}
