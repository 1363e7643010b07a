//! The flash-attention kernels (`flash`) and the RMSNorm kernels (`rms`) each as one burn
//! operation on the cubecl backends (CUDA, ROCm, WGPU), with burn-fusion in between or not,
//! and one autodiff node whose backward runs the backward kernels. Like `flex`, each entry point takes a generic backend's primitives and
//! hands them back untouched when the backend is not one of these.

use super::{flash, rms};
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use std::any::{Any, TypeId};

/// A backend the cubecl kernels run on.
pub trait Flash: Backend {
    /// (y, 1/rms [rows] in f32).
    fn rms_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        eps: f32,
    ) -> [FloatTensor<Self>; 2];
    /// (dx, dgamma) from [x, gamma, 1/rms, dy].
    fn rms_backward(inputs: [FloatTensor<Self>; 4]) -> [FloatTensor<Self>; 2];
    /// (out, logsumexp [batch, heads, seq] in f32); with `starts` (document starts [batch,
    /// seq] in f32), each query sees its own document's keys only.
    fn flash_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        starts: Option<FloatTensor<Self>>,
    ) -> [FloatTensor<Self>; 2];
    /// (dq, dk, dv) from [q, k, v, out, logsumexp, d out] and the forward's `starts`.
    fn flash_backward(
        inputs: [FloatTensor<Self>; 6],
        starts: Option<FloatTensor<Self>>,
    ) -> [FloatTensor<Self>; 3];
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> Flash
    for CubeBackend<R, F, I, BT>
{
    fn flash_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        starts: Option<FloatTensor<Self>>,
    ) -> [FloatTensor<Self>; 2] {
        let (out, lse) = flash::forward(q, k, v, starts);
        [out, lse]
    }

    fn flash_backward(
        inputs: [FloatTensor<Self>; 6],
        starts: Option<FloatTensor<Self>>,
    ) -> [FloatTensor<Self>; 3] {
        flash::backward(inputs, starts)
    }

    fn rms_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        eps: f32,
    ) -> [FloatTensor<Self>; 2] {
        let (y, r) = rms::forward(x, gamma, eps);
        [y, r]
    }

    fn rms_backward(inputs: [FloatTensor<Self>; 4]) -> [FloatTensor<Self>; 2] {
        let (dtype, h) = (inputs[1].dtype, inputs[1].shape().num_elements());
        let (dx, share) = rms::backward(inputs);
        let dgamma = Self::float_reshape(Self::float_sum_dim(share, 0), Shape::new([h]));
        [dx, Self::float_cast(dgamma, dtype.into())]
    }
}

/// The kernels as one operation of fusion's stream: fusion runs them on the inner backend's
/// tensors when it reaches them, after the operations before.
type Run<B> = Box<dyn Fn(Vec<FloatTensor<B>>) -> Vec<FloatTensor<B>> + Send + Sync>;

struct Fused<B: Backend> {
    desc: CustomOpIr,
    run: Run<B>,
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
    run: impl Fn(Vec<FloatTensor<B>>) -> Vec<FloatTensor<B>> + Send + Sync + 'static,
) -> [FloatTensor<Fusion<B>>; M] {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(inputs.iter());
    let outputs =
        outputs.map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype));
    let inputs = inputs.map(|t| t.into_ir());
    let desc = CustomOpIr::new(name, &inputs, &outputs);
    let op = Fused::<B> {
        desc: desc.clone(),
        run: Box::new(run),
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
        starts: Option<FloatTensor<Self>>,
    ) -> [FloatTensor<Self>; 2] {
        let [batch, seq, heads, _] = q.shape.dims::<4>();
        let outputs = [
            (q.shape.clone(), q.dtype),
            (Shape::new([batch, heads, seq]), DType::F32),
        ];
        match starts {
            None => register::<B, 3, 2>("fucina_flash_forward", [q, k, v], outputs, |x| {
                let [q, k, v] = array(x);
                B::flash_forward(q, k, v, None).to_vec()
            }),
            Some(s) => {
                let name = "fucina_flash_forward_documents";
                register::<B, 4, 2>(name, [q, k, v, s], outputs, |x| {
                    let [q, k, v, s] = array(x);
                    B::flash_forward(q, k, v, Some(s)).to_vec()
                })
            }
        }
    }

    fn flash_backward(
        inputs: [FloatTensor<Self>; 6],
        starts: Option<FloatTensor<Self>>,
    ) -> [FloatTensor<Self>; 3] {
        let [q, k, v] = [0, 1, 2].map(|i| (inputs[i].shape.clone(), inputs[i].dtype));
        match starts {
            None => register::<B, 6, 3>("fucina_flash_backward", inputs, [q, k, v], |x| {
                B::flash_backward(array(x), None).to_vec()
            }),
            Some(s) => {
                let [a, b, c, d, e, f] = inputs;
                let inputs = [a, b, c, d, e, f, s];
                let name = "fucina_flash_backward_documents";
                register::<B, 7, 3>(name, inputs, [q, k, v], |x| {
                    let [a, b, c, d, e, f, s]: [FloatTensor<B>; 7] = array(x);
                    B::flash_backward([a, b, c, d, e, f], Some(s)).to_vec()
                })
            }
        }
    }

    fn rms_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        eps: f32,
    ) -> [FloatTensor<Self>; 2] {
        let rows = x.shape.num_elements() / gamma.shape.num_elements().max(1);
        let outputs = [(x.shape.clone(), x.dtype), (Shape::new([rows]), DType::F32)];
        register::<B, 2, 2>("fucina_rms_forward", [x, gamma], outputs, move |t| {
            let [x, gamma] = array(t);
            B::rms_forward(x, gamma, eps).to_vec()
        })
    }

    fn rms_backward(inputs: [FloatTensor<Self>; 4]) -> [FloatTensor<Self>; 2] {
        let [x, gamma] = [0, 1].map(|i| (inputs[i].shape.clone(), inputs[i].dtype));
        register::<B, 4, 2>("fucina_rms_backward", inputs, [x, gamma], |t| {
            B::rms_backward(array(t)).to_vec()
        })
    }
}

#[derive(Debug)]
struct RmsNorm;

impl<B: Flash> Backward<B, 2> for RmsNorm {
    type State = [FloatTensor<B>; 3];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x, gamma, r] = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let d = B::rms_backward([x, gamma, r, grad]);
        for (node, d) in ops.parents.into_iter().zip(d) {
            if let Some(node) = node {
                grads.register::<B>(node.id, d);
            }
        }
    }
}

#[derive(Debug)]
struct FlashAttention;

impl<B: Flash> Backward<B, 3> for FlashAttention {
    /// [q, k, v, out, logsumexp] and the document starts, a constant (no gradient).
    type State = ([FloatTensor<B>; 5], Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let ([q, k, v, out, lse], starts) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let d = B::flash_backward([q, k, v, out, lse, grad], starts);
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

/// Attention on `G` or `Autodiff<G>` when `B` is one of them, else the inputs back; `wgpu`:
/// `G` is the WGPU backend, whose lavapipe bounds the kernels' loops.
fn on<B: Backend, G: Flash>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    starts: Option<&FloatTensor<B>>,
    wgpu: bool,
) -> Result<FloatTensor<B>, Three<B>> {
    let b = TypeId::of::<B>();
    let dtype = q.dtype();
    let [batch, seq, _, dim] = q.shape().dims::<4>();
    let usable = [k.dtype(), v.dtype()].iter().all(|&d| d == dtype)
        && matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && flash::fits(&q.shape(), &k.shape(), &v.shape())
        && super::flash_within_loop_limit(seq, dim, wgpu)
        && starts.is_none_or(|s| s.dtype() == DType::F32 && s.shape() == Shape::new([batch, seq]));
    if !usable || ![TypeId::of::<G>(), TypeId::of::<Autodiff<G>>()].contains(&b) {
        return Err((q, k, v));
    }
    if b == TypeId::of::<G>() {
        let starts = starts.map(|s| same(s.clone()));
        let [out, _] = G::flash_forward(same(q), same(k), same(v), starts);
        return Ok(same(out));
    }
    // Starts are a constant: the inner backend's tensor, no autodiff node.
    let starts = starts.map(|s| same::<_, FloatTensor<Autodiff<G>>>(s.clone()).primitive);
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
        starts.clone(),
    );
    let out = match prep {
        OpsKind::Tracked(prep) => {
            let state = [q.primitive, k.primitive, v.primitive, out.clone(), lse];
            prep.finish((state, starts), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Ok(same(out))
}

/// Flash attention when `B` is a cubecl backend this binary has, else the inputs back; with
/// `starts` (document starts [batch, seq] in f32), each query sees its own document's keys
/// only.
pub(super) fn attention<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    starts: Option<FloatTensor<B>>,
) -> Result<FloatTensor<B>, Three<B>> {
    let starts = starts.as_ref();
    #[cfg(feature = "wgpu")]
    let (q, k, v) = match on::<B, burn::backend::Wgpu>(q, k, v, starts, true) {
        Ok(out) => return Ok(out),
        Err(inputs) => inputs,
    };
    #[cfg(feature = "cuda")]
    let (q, k, v) = match on::<B, burn::backend::Cuda>(q, k, v, starts, false) {
        Ok(out) => return Ok(out),
        Err(inputs) => inputs,
    };
    #[cfg(feature = "rocm")]
    let (q, k, v) = match on::<B, burn::backend::Rocm>(q, k, v, starts, false) {
        Ok(out) => return Ok(out),
        Err(inputs) => inputs,
    };
    Err((q, k, v))
}

type Two<B> = (FloatTensor<B>, FloatTensor<B>);

/// RMSNorm on `G` or `Autodiff<G>` when `B` is one of them, else the inputs back.
fn rms_on<B: Backend, G: Flash>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    eps: f32,
) -> Result<FloatTensor<B>, Two<B>> {
    let b = TypeId::of::<B>();
    let dtype = x.dtype();
    let usable = gamma.dtype() == dtype
        && matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && rms::fits(&x.shape(), &gamma.shape());
    if !usable || ![TypeId::of::<G>(), TypeId::of::<Autodiff<G>>()].contains(&b) {
        return Err((x, gamma));
    }
    if b == TypeId::of::<G>() {
        let [y, _] = G::rms_forward(same(x), same(gamma), eps);
        return Ok(same(y));
    }
    let [x, gamma] = [x, gamma].map(same::<_, FloatTensor<Autodiff<G>>>);
    let prep = <RmsNorm as Backward<G, 2>>::prepare::<NoCheckpointing>(
        RmsNorm,
        [x.node.clone(), gamma.node.clone()],
    )
    .compute_bound()
    .stateful();
    let [y, r] = G::rms_forward(x.primitive.clone(), gamma.primitive.clone(), eps);
    let y = match prep {
        OpsKind::Tracked(prep) => prep.finish([x.primitive, gamma.primitive, r], y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Ok(same(y))
}

/// RMSNorm (gamma in x's dtype) by the kernels when `B` is a cubecl backend this binary has,
/// else the inputs back.
pub(super) fn rms_norm<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    eps: f32,
) -> Result<FloatTensor<B>, Two<B>> {
    #[cfg(feature = "wgpu")]
    let (x, gamma) = match rms_on::<B, burn::backend::Wgpu>(x, gamma, eps) {
        Ok(y) => return Ok(y),
        Err(inputs) => inputs,
    };
    #[cfg(feature = "cuda")]
    let (x, gamma) = match rms_on::<B, burn::backend::Cuda>(x, gamma, eps) {
        Ok(y) => return Ok(y),
        Err(inputs) => inputs,
    };
    #[cfg(feature = "rocm")]
    let (x, gamma) = match rms_on::<B, burn::backend::Rocm>(x, gamma, eps) {
        Ok(y) => return Ok(y),
        Err(inputs) => inputs,
    };
    Err((x, gamma))
}
