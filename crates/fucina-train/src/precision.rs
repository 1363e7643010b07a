//! The dtype changes of mixed precision: the model's weights cast to the compute dtype (bf16)
//! from the f32 masters after every update, and micro-batch gradients widened to f32 before
//! they are summed, so that accumulation over micro-batches and threads loses no bits.

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;
use fucina_model::fused::cast;

/// `model` with every float parameter in `dtype`, keeping each parameter's id (which keys the
/// optimizer state and checkpoints) and whether it trains. A copy only where the dtype changes.
pub fn cast_params<B: AutodiffBackend, M: AutodiffModule<B>>(model: M, dtype: DType) -> M {
    model.map(&mut Cast {
        dtype,
        frozen_only: false,
    })
}

/// `model` with its frozen parameters (a LoRA base) in `dtype`: the masters of a LoRA run
/// need no f32 copy of weights that never change, and share them with the bf16 model.
pub fn cast_frozen<B: AutodiffBackend, M: AutodiffModule<B>>(model: M, dtype: DType) -> M {
    model.map(&mut Cast {
        dtype,
        frozen_only: true,
    })
}

struct Cast {
    dtype: DType,
    frozen_only: bool,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Cast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let trains = tensor.is_require_grad();
        if tensor.dtype() == self.dtype || (self.frozen_only && trains) {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        // Through the inner backend: the copy is a new leaf, not a node hanging off the master
        // on the autodiff graph.
        let leaf = Tensor::from_inner(cast(tensor.inner(), self.dtype));
        let leaf = if trains { leaf.require_grad() } else { leaf };
        Param::from_mapped_value(id, leaf, mapper)
    }
}

/// `grads` (of `model`'s parameters) with every tensor in f32.
pub fn widen_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: GradientsParams,
) -> GradientsParams {
    struct Widen {
        grads: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Widen {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register(param.id, cast(g, DType::F32));
            }
        }
    }
    let mut widen = Widen { grads };
    model.visit(&mut widen);
    widen.grads
}
