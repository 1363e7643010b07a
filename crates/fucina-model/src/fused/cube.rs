//! The flash-attention kernels (`flash`) as one burn operation on the cubecl backends (CUDA,
//! ROCm, WGPU), with burn-fusion in between or not, and one autodiff node whose backward runs
//! the backward kernels. Like `flex`, each entry point takes a generic backend's primitives and
//! hands them back untouched when the backend is not one of these.

use super::flash;
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use std::any::{Any, TypeId};

/// A backend the flash kernels run on.
pub trait Flash: Backend {
    /// (out, logsumexp [batch, heads, seq] in f32).
    fn flash_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2];
    /// (dq, dk, dv) from [q, k, v, out, logsumexp, d out].
    fn flash_backward(inputs: [FloatTensor<Self>; 6]) -> [FloatTensor<Self>; 3];
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> Flash
    for CubeBackend<R, F, I, BT>
{
    fn flash_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        let (out, lse) = flash::forward(q, k, v);
        [out, lse]
    }

    fn flash_backward(inputs: [FloatTensor<Self>; 6]) -> [FloatTensor<Self>; 3] {
        flash::backward(inputs)
    }
}

/// The kernels as one operation of fusion's stream: fusion runs them on the inner backend's
/// tensors when it reaches them, after the operations before.
struct Fused<B: Backend> {
    desc: CustomOpIr,
    run: fn(Vec<FloatTensor<B>>) -> Vec<FloatTensor<B>>,
}

impl<B: Backend> std::fmt::Debug for Fused<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.desc.id)
    }
}

impl<B: FusionBackend> Operation<B::FusionRuntime> for Fused<B> {
    fn execute(
        &self,
        handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>,
    ) {
        let inputs = (self.desc.inputs.iter())
            .map(|t| handles.get_float_tensor::<B>(t))
            .collect();
        for (out, result) in self.desc.outputs.iter().zip((self.run)(inputs)) {
            handles.register_float_tensor::<B>(&out.id, result);
        }
    }
}

fn register<B: FusionBackend, const N: usize, const M: usize>(
    name: &'static str,
    inputs: [FloatTensor<Fusion<B>>; N],
    outputs: [(Shape, DType); M],
    run: fn(Vec<FloatTensor<B>>) -> Vec<FloatTensor<B>>,
) -> [FloatTensor<Fusion<B>>; M] {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(inputs.iter());
    let outputs =
        outputs.map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype));
    let inputs = inputs.map(|t| t.into_ir());
    let desc = CustomOpIr::new(name, &inputs, &outputs);
    let op = Fused::<B> {
        desc: desc.clone(),
        run,
    };
    let results = client.register(streams, OperationIr::Custom(desc), op);
    results
        .try_into()
        .unwrap_or_else(|_| unreachable!("register returns one tensor per output"))
}

fn array<T, const N: usize>(v: Vec<T>) -> [T; N] {
    v.try_into().ok().expect("the operation's own arity")
}

impl<B: FusionBackend + Flash> Flash for Fusion<B> {
    fn flash_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        let [batch, seq, heads, _] = q.shape.dims::<4>();
        let outputs = [
            (q.shape.clone(), q.dtype),
            (Shape::new([batch, heads, seq]), DType::F32),
        ];
        register::<B, 3, 2>("fucina_flash_forward", [q, k, v], outputs, |x| {
            let [q, k, v] = array(x);
            B::flash_forward(q, k, v).to_vec()
        })
    }

    fn flash_backward(inputs: [FloatTensor<Self>; 6]) -> [FloatTensor<Self>; 3] {
        let [q, k, v] = [0, 1, 2].map(|i| (inputs[i].shape.clone(), inputs[i].dtype));
        register::<B, 6, 3>("fucina_flash_backward", inputs, [q, k, v], |x| {
            B::flash_backward(array(x)).to_vec()
        })
    }
}

#[derive(Debug)]
struct FlashAttention;

impl<B: Flash> Backward<B, 3> for FlashAttention {
    type State = [FloatTensor<B>; 5];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [q, k, v, out, lse] = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let d = B::flash_backward([q, k, v, out, lse, grad]);
        for (node, d) in ops.parents.into_iter().zip(d) {
            if let Some(node) = node {
                grads.register::<B>(node.id, d);
            }
        }
    }
}

type Three<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// `x` as a `U` when that is its type, else `x` back.
fn cast<T: 'static, U: 'static>(x: T) -> Result<U, T> {
    let boxed: Box<dyn Any> = Box::new(x);
    match boxed.downcast::<U>() {
        Ok(u) => Ok(*u),
        Err(boxed) => Err(*boxed.downcast::<T>().expect("the value's own type")),
    }
}

fn same<T: 'static, U: 'static>(x: T) -> U {
    cast(x).ok().expect("the caller checked the types")
}

/// Attention on `G` or `Autodiff<G>` when `B` is one of them, else the inputs back.
fn on<B: Backend, G: Flash>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
) -> Result<FloatTensor<B>, Three<B>> {
    let b = TypeId::of::<B>();
    let dtype = q.dtype();
    let usable = [k.dtype(), v.dtype()].iter().all(|&d| d == dtype)
        && matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && flash::fits(&q.shape(), &k.shape(), &v.shape())
        && {
            let [_, seq, _, dim] = q.shape().dims::<4>();
            let wgpu = B::name(&B::float_device(&q)).contains("wgpu");
            super::flash_within_loop_limit(seq, dim, wgpu)
        };
    if !usable || ![TypeId::of::<G>(), TypeId::of::<Autodiff<G>>()].contains(&b) {
        return Err((q, k, v));
    }
    if b == TypeId::of::<G>() {
        let [out, _] = G::flash_forward(same(q), same(k), same(v));
        return Ok(same(out));
    }
    let [q, k, v] = [q, k, v].map(same::<_, FloatTensor<Autodiff<G>>>);
    let prep = <FlashAttention as Backward<G, 3>>::prepare::<NoCheckpointing>(
        FlashAttention,
        [q.node.clone(), k.node.clone(), v.node.clone()],
    )
    .compute_bound()
    .stateful();
    let [out, lse] = G::flash_forward(
        q.primitive.clone(),
        k.primitive.clone(),
        v.primitive.clone(),
    );
    let out = match prep {
        OpsKind::Tracked(prep) => {
            let state = [q.primitive, k.primitive, v.primitive, out.clone(), lse];
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Ok(same(out))
}

/// Flash attention when `B` is a cubecl backend this binary has, else the inputs back.
pub(super) fn attention<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
) -> Result<FloatTensor<B>, Three<B>> {
    #[cfg(feature = "wgpu")]
    let (q, k, v) = match on::<B, burn::backend::Wgpu>(q, k, v) {
        Ok(out) => return Ok(out),
        Err(inputs) => inputs,
    };
    #[cfg(feature = "cuda")]
    let (q, k, v) = match on::<B, burn::backend::Cuda>(q, k, v) {
        Ok(out) => return Ok(out),
        Err(inputs) => inputs,
    };
    #[cfg(feature = "rocm")]
    let (q, k, v) = match on::<B, burn::backend::Rocm>(q, k, v) {
        Ok(out) => return Ok(out),
        Err(inputs) => inputs,
    };
    Err((q, k, v))
}
