//! The worked examples in configs/runs parse and validate once their placeholders are filled
//! (with the tiny transformers fixture standing in for the real model directory).

use fucina_train::RunConfig;
use std::path::Path;

#[test]
fn every_example_validates_with_its_placeholders_filled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let hf = root.join("tests/fixtures/hf/mistral");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("configs/runs")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.contains("<HF_MODEL_DIR>") {
            continue;
        }
        let filled = text
            .replace("<HF_MODEL_DIR>", hf.to_str().unwrap())
            .replace("<SCRATCH>", "/tmp")
            .replace("<DATA_DIR>", "/tmp/data");
        // Placeholders in comments (commands to run) stay; values must all be filled.
        for line in filled.lines().map(|l| l.split('#').next().unwrap_or("")) {
            assert!(!line.contains('<'), "{}: unfilled {line:?}", path.display());
        }
        // The fixture's context is 64 positions, the examples' thousands.
        let config = RunConfig::from_toml_str(&filled, &["data.seq_len=16".into()])
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        assert_eq!(config.hf_dir().unwrap(), Some(hf.clone()));
        checked += 1;
    }
    assert_eq!(
        checked, 2,
        "the continued pre-training and the LoRA SFT examples"
    );
}
