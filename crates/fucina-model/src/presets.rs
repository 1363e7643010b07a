//! The model shapes under `configs/models/`, compiled in so `preset = "small"` works from any
//! directory and on a compute node that has only the binary.

pub const PRESETS: &[(&str, &str)] = &[
    ("tiny", include_str!("../../../configs/models/tiny.toml")),
    ("mini", include_str!("../../../configs/models/mini.toml")),
    ("small", include_str!("../../../configs/models/small.toml")),
    (
        "gpt2-124m",
        include_str!("../../../configs/models/gpt2-124m.toml"),
    ),
    (
        "llama-1b",
        include_str!("../../../configs/models/llama-1b.toml"),
    ),
    (
        "llama-7b",
        include_str!("../../../configs/models/llama-7b.toml"),
    ),
    (
        "llama-3-8b",
        include_str!("../../../configs/models/llama-3-8b.toml"),
    ),
];

pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}
