//! Bad checkpoints and bad requests give clear errors naming the file, key or value; never a panic.

mod common;

use common::*;
use herd_engine::{DType, Error, Model};
use std::path::{Path, PathBuf};

/// A scratch copy of a fixture that the test may break.
fn scratch_copy(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herd-errors-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for e in std::fs::read_dir(fixture(name)).expect("fixture") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dir.join(e.file_name())).expect("copy");
    }
    dir
}

fn load_err(dir: &Path) -> Error {
    match Model::load(dir, DType::F32) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e,
    }
}

/// Rewrites `model.safetensors` through `edit` (name, shape, f32 data) → kept tensors.
fn rewrite(dir: &Path, edit: impl Fn(&str, Vec<usize>, Vec<f32>) -> Option<(String, Vec<usize>, Vec<f32>)>) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let mut out: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        let data: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if let Some((n, s, d)) = edit(&name, view.shape().to_vec(), data) {
            out.push((n, s, d.iter().flat_map(|v| v.to_le_bytes()).collect()));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = out
        .iter()
        .map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).expect("view")))
        .collect();
    let data = safetensors::tensor::serialize(views, None).expect("serialize");
    std::fs::write(&path, data).expect("write");
}

#[test]
fn a_folder_without_config_names_the_missing_file() {
    let e = load_err(Path::new("/nonexistent/herd-model"));
    assert!(e.to_string().contains("/nonexistent/herd-model/config.json"), "{e}");
}

#[test]
fn a_folder_without_weights_says_which_files_were_expected() {
    let dir = scratch_copy("llama4-tiny-scout", "noweights");
    std::fs::remove_file(dir.join("model.safetensors")).expect("rm");
    let e = load_err(&dir);
    assert!(matches!(e, Error::NoWeights { .. }) && e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = scratch_copy("llama4-tiny-scout", "missing");
    rewrite(&dir, |n, s, d| (n != "model.layers.2.self_attn.k_proj.weight").then(|| (n.to_string(), s, d)));
    let e = load_err(&dir);
    assert!(e.to_string().contains("missing tensor `model.layers.2.self_attn.k_proj.weight`"), "{e}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named_with_both_shapes() {
    let dir = scratch_copy("llama4-tiny-scout", "shape");
    rewrite(&dir, |n, s, d| {
        if n == "model.layers.1.feed_forward.experts.down_proj" {
            let mut s2 = s.clone();
            s2.swap(1, 2); // [E, I, H] -> [E, H, I]
            Some((n.to_string(), s2, d))
        } else {
            Some((n.to_string(), s, d))
        }
    });
    let e = load_err(&dir);
    let msg = e.to_string();
    assert!(
        msg.contains("model.layers.1.feed_forward.experts.down_proj") && msg.contains("[8, 64, 32]") && msg.contains("[8, 32, 64]"),
        "{msg}"
    );
}

#[test]
fn a_truncated_or_garbage_weights_file_is_an_error_not_a_panic() {
    let dir = scratch_copy("llama4-tiny-scout", "garbage");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
    let e = load_err(&dir);
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header").expect("garbage");
    let e = load_err(&dir);
    assert!(matches!(e, Error::Safetensors { .. }), "{e}");
}

#[test]
fn an_index_naming_a_missing_shard_names_the_shard() {
    let dir = scratch_copy("plain-rope-sharded", "shard");
    std::fs::remove_file(dir.join("model-00002-of-00004.safetensors")).expect("rm");
    let e = load_err(&dir);
    assert!(e.to_string().contains("model-00002-of-00004.safetensors"), "{e}");
}

#[test]
fn unsupported_model_types_and_bad_fields_are_named() {
    let dir = scratch_copy("llama4-tiny-scout", "config");
    let cfg_path = dir.join("config.json");
    let original: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("read")).expect("json");
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = original.clone();
        f(&mut c);
        std::fs::write(&cfg_path, c.to_string()).expect("write");
        load_err(&dir).to_string()
    };
    let m = with(&|c| c["model_type"] = "llama".into());
    assert!(m.contains("unsupported model_type \"llama\"") && m.contains("config.json"), "{m}");
    let m = with(&|c| c["num_key_value_heads"] = 3.into());
    assert!(m.contains("num_key_value_heads"), "{m}");
    let m = with(&|c| {
        c.as_object_mut().expect("object").remove("hidden_size");
    });
    assert!(m.contains("`hidden_size`: missing"), "{m}");
    let m = with(&|c| c["no_rope_layers"] = serde_json::json!([1, 1]));
    assert!(m.contains("no_rope_layers") && m.contains("has 2 entries"), "{m}");
    let m = with(&|c| c["rope_parameters"]["rope_type"] = "yarn".into());
    assert!(m.contains("rope_parameters.rope_type") && m.contains("yarn"), "{m}");
    let m = with(&|c| c["num_experts_per_tok"] = 9.into());
    assert!(m.contains("num_experts_per_tok"), "{m}");
    std::fs::write(&cfg_path, "{ not json").expect("write");
    let m = load_err(&dir).to_string();
    assert!(m.contains("config.json") && m.contains("invalid JSON"), "{m}");
}

#[test]
fn a_token_id_outside_the_vocabulary_is_a_request_error() {
    let model = load(&fixture("llama4-tiny-scout"));
    let e = model.logits(&[0, 12, 512]).expect_err("512 >= vocab 512");
    assert!(e.to_string().contains("token id 512") && e.to_string().contains("vocab_size is 512"), "{e}");
}
