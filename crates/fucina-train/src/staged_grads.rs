//! The staged backward's gradients by parameter, each produced when first asked for: the
//! sync paths fill their buckets or blocks in the order the backward completes them.

use crate::grads::{collect, flatten};
use crate::stages::Stages;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use fucina_model::Llama;
use std::time::Instant;

pub(crate) struct StagedGrads<'a, B: AutodiffBackend> {
    model: &'a Llama<B>,
    stages: Stages<B>,
    stage_of: Vec<usize>,
    lens: Vec<usize>,
    /// Gradients the stages run so far produced, not yet taken.
    done: Vec<Option<Tensor<B::InnerBackend, 1>>>,
    /// The step's earlier micro-batches, summed on the device, added when taken.
    earlier: Vec<Option<Tensor<B::InnerBackend, 1>>>,
    device: burn::tensor::Device<B::InnerBackend>,
    stages_run: usize,
    /// The backward's own time, which is not the sync's.
    pub backward_seconds: f64,
}

impl<'a, B: AutodiffBackend> StagedGrads<'a, B> {
    /// `lens`: the trainable parameters' sizes, in visit order.
    pub fn new(
        model: &'a Llama<B>,
        stages: Stages<B>,
        earlier: Option<GradientsParams>,
        lens: Vec<usize>,
    ) -> Self {
        let earlier = match earlier {
            Some(mut grads) => flatten::<B, _>(model, &mut grads)
                .parts
                .into_iter()
                .map(Some)
                .collect(),
            None => Vec::new(),
        };
        Self {
            model,
            stages,
            stage_of: Stages::stage_of(model),
            done: vec![None; lens.len()],
            lens,
            earlier,
            device: model.embed_tokens.weight.val().inner().device(),
            stages_run: 0,
            backward_seconds: 0.0,
        }
    }

    pub fn device(&self) -> burn::tensor::Device<B::InnerBackend> {
        self.device.clone()
    }

    /// Parameter i's whole flat gradient (zeros where the loss does not reach it), running
    /// the backward's stages until it is complete. Each is taken once.
    pub fn take(&mut self, i: usize) -> Tensor<B::InnerBackend, 1> {
        while self.stages_run <= self.stage_of[i] {
            let t = Instant::now();
            collect::<B, _>(self.model, self.stages.advance(), &mut self.done);
            self.stages_run += 1;
            self.backward_seconds += t.elapsed().as_secs_f64();
        }
        let grad = self.done[i]
            .take()
            .unwrap_or_else(|| Tensor::zeros([self.lens[i]], &self.device));
        match self.earlier.get_mut(i).and_then(Option::take) {
            Some(e) => e + grad,
            None => grad,
        }
    }
}
