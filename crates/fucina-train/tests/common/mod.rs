#![allow(dead_code)]

use burn::backend::Flex;
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use fucina_train::RunConfig;
use std::path::Path;

pub type B = Flex;

/// A run of the `tiny` preset on the built-in corpus, small enough for a test.
pub fn tiny_run(out_dir: &Path, extra: &[&str]) -> RunConfig {
    let text = format!(
        r#"out_dir = "{}"
seed = 11
[model]
preset = "tiny"
[data]
dir = "builtin"
seq_len = 32
[train]
steps = 20
global_batch_tokens = 256
micro_batch_size = 2
lr = 3e-3
min_lr = 3e-4
warmup_steps = 3
[eval]
every = 0
batches = 1
[checkpoint]
every = 10
keep = 0
"#,
        out_dir.display()
    );
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    RunConfig::from_toml_str(&text, &extra).expect("valid test config")
}

/// Every float parameter of a module, in visit order, as raw f32 bits.
pub fn param_bits<M: Module<B>>(module: &M) -> Vec<u32> {
    struct Collect(Vec<u32>);
    impl ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let values = param
                .val()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap();
            self.0.extend(values.iter().map(|v| v.to_bits()));
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}
