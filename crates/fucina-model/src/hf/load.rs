//! Reading a checked checkpoint's weights into a `Llama`, one file mapped at a time.

use super::checkpoint::{map_file, HfCheckpoint, Located};
use super::names;
use super::params;
use super::progress;
use crate::model::Llama;
use anyhow::{anyhow, bail, Result};
use burn::prelude::*;
use safetensors::SafeTensors;

impl HfCheckpoint {
    /// The model with this checkpoint's weights, converted to the backend's float type. Peak
    /// memory is the model plus one tensor in f32; the files are mapped, not read.
    pub fn load<B: Backend>(&self, device: &B::Device, progress: bool) -> Result<Llama<B>> {
        // Its weights are lazy: replaced before they are ever initialised.
        let mut model = Llama::<B>::new(self.config(), device);
        let bar = progress::bar(self.weight_bytes(), progress, "loading");
        for file in self.weight_files() {
            let path = self.dir().join(file);
            let mmap = map_file(&path)?;
            let st = SafeTensors::deserialize(&mmap)
                .map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
            for (entry, located) in self.tensors.iter().filter(|(_, l)| &l.file == file) {
                let values = read(&st, &entry.name, located)?;
                params::set(&mut model, entry.part, values, &entry.shape, device)?;
                bar.inc((entry.numel() * located.dtype.size()) as u64);
            }
        }
        bar.finish_and_clear();
        if let Some(head) = &self.tied_head {
            self.check_tied_head(&model, head)?;
        }
        Ok(model)
    }

    /// A tied checkpoint may still ship `lm_head.weight`; transformers then ignores it, which
    /// is only harmless if it is the embedding.
    fn check_tied_head<B: Backend>(&self, model: &Llama<B>, head: &Located) -> Result<()> {
        let path = self.dir().join(&head.file);
        let mmap = map_file(&path)?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
        let head_values = read(&st, names::HEAD, head)?;
        let embed = params::values(model, names::Part::Embed)?;
        if let Some(i) = (0..embed.len()).find(|&i| embed[i].to_bits() != head_values[i].to_bits())
        {
            bail!(
                "config.json says tie_word_embeddings: true, but {} in {} differs from {} (element {i}: {} vs {}); with an independent head, set tie_word_embeddings: false",
                names::HEAD,
                head.file,
                names::EMBED,
                head_values[i],
                embed[i]
            );
        }
        Ok(())
    }
}

fn read(st: &SafeTensors<'_>, name: &str, located: &Located) -> Result<Vec<f32>> {
    let view = st
        .tensor(name)
        .map_err(|e| anyhow!("cannot read tensor {name} from {}: {e}", located.file))?;
    // The header was checked at open; the file may have been replaced since.
    if view.shape() != located.shape.as_slice() || view.dtype() != located.dtype.safetensors() {
        bail!("{} changed since the checkpoint was opened", located.file);
    }
    Ok(located.dtype.decode(view.data()))
}
