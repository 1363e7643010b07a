//! The fused operations on burn's Flex CPU backend, with and without autodiff. Each takes a
//! generic backend's primitive and hands it back untouched when the backend is another one
//! (or the dtype is not f32), so the caller falls back to burn's composite operations.

use super::{attention as host, kernels};
use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, ComputePropertyDone, Ops, OpsKind, OpsPrep};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, TensorData, TensorMetadata};
use burn_flex::{Flex, FlexTensor};
use std::any::Any;

type Ad = Autodiff<Flex>;
type AdTensor = FloatTensor<Ad>;

/// Whether `B` is Flex, with or without autodiff.
pub(super) fn is_flex<B: Backend>() -> bool {
    use std::any::TypeId;
    [TypeId::of::<Ad>(), TypeId::of::<Flex>()].contains(&TypeId::of::<B>())
}

/// `x` as a `U` when that is its type, else `x` back.
fn cast<T: 'static, U: 'static>(x: T) -> Result<U, T> {
    let boxed: Box<dyn Any> = Box::new(x);
    match boxed.downcast::<U>() {
        Ok(u) => Ok(*u),
        Err(boxed) => Err(*boxed.downcast::<T>().expect("the value's own type")),
    }
}

/// The primitive as an autodiff-over-Flex or plain Flex f32 tensor, if it is one.
enum Flexible<B: Backend> {
    Tracked(AdTensor),
    Plain(FlexTensor),
    Other(FloatTensor<B>),
}

fn classify<B: Backend>(x: FloatTensor<B>) -> Flexible<B> {
    if x.dtype() != DType::F32 {
        return Flexible::Other(x);
    }
    match cast::<_, AdTensor>(x) {
        Ok(t) => Flexible::Tracked(t),
        Err(x) => match cast::<_, FlexTensor>(x) {
            Ok(t) => Flexible::Plain(t),
            Err(x) => Flexible::Other(x),
        },
    }
}

/// The result, typed back as the caller's backend (which `classify` found to be this one).
fn back<B: Backend, T: 'static>(x: T) -> FloatTensor<B> {
    cast(x).ok().expect("classify matched this backend")
}

fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

/// Contiguous and uniquely owned, copying only if it was not.
fn owned(t: FlexTensor) -> FlexTensor {
    let mut t = t.to_contiguous();
    t.storage_mut::<f32>();
    t
}

fn from_vec(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Puts `out` on the autodiff graph, with `state` for the backward pass when a parent is
/// tracked (and dropped otherwise).
fn record<O, S, const N: usize>(
    prep: OpsPrep<O, Flex, S, NoCheckpointing, N, ComputePropertyDone>,
    state: S,
    out: FlexTensor,
) -> AdTensor
where
    O: Backward<Flex, N, State = S>,
    S: Clone + Send + std::fmt::Debug + 'static,
{
    match prep.stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

fn dims(t: &FlexTensor) -> Vec<usize> {
    t.shape().iter().copied().collect()
}

// ---- causal softmax -------------------------------------------------------------------------

fn softmax_forward(x: FlexTensor) -> FlexTensor {
    let d = dims(&x);
    let (q, k) = (d[d.len() - 2], d[d.len() - 1]);
    let mut y = owned(x);
    kernels::causal_softmax(y.storage_mut::<f32>(), q, k);
    y
}

#[derive(Debug)]
struct CausalSoftmax;

impl Backward<Flex, 1> for CausalSoftmax {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state.to_contiguous();
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            let d = dims(&y);
            let mut g = owned(g);
            let (q, k) = (d[d.len() - 2], d[d.len() - 1]);
            kernels::causal_softmax_backward(f32s(&y), g.storage_mut::<f32>(), q, k);
            g
        });
    }
}

pub(super) fn causal_softmax<B: Backend>(
    x: FloatTensor<B>,
) -> Result<FloatTensor<B>, FloatTensor<B>> {
    match classify::<B>(x) {
        Flexible::Other(x) => Err(x),
        Flexible::Plain(x) => Ok(back::<B, _>(softmax_forward(x))),
        Flexible::Tracked(x) => {
            let prep = CausalSoftmax.prepare::<NoCheckpointing>([x.node.clone()]);
            let y = softmax_forward(x.primitive);
            Ok(back::<B, _>(record(prep.compute_bound(), y.clone(), y)))
        }
    }
}

// ---- SwiGLU ---------------------------------------------------------------------------------

fn swiglu_forward(gate: &FlexTensor, up: &FlexTensor) -> FlexTensor {
    let mut out = vec![0.0; gate.shape().num_elements()];
    kernels::swiglu(f32s(gate), f32s(up), &mut out);
    from_vec(out, gate.shape())
}

#[derive(Debug)]
struct Swiglu;

impl Backward<Flex, 2> for Swiglu {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (mut gate, mut up) = (owned(ops.state.0), owned(ops.state.1));
        kernels::swiglu_backward(gate.storage_mut(), up.storage_mut(), f32s(&grad));
        let [gate_node, up_node] = ops.parents;
        if let Some(node) = gate_node {
            grads.register::<Flex>(node.id, gate);
        }
        if let Some(node) = up_node {
            grads.register::<Flex>(node.id, up);
        }
    }
}

pub(super) fn swiglu<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
) -> Result<FloatTensor<B>, (FloatTensor<B>, FloatTensor<B>)> {
    if gate.shape() != up.shape() {
        return Err((gate, up));
    }
    match (classify::<B>(gate), classify::<B>(up)) {
        (Flexible::Plain(gate), Flexible::Plain(up)) => Ok(back::<B, _>(swiglu_forward(
            &gate.to_contiguous(),
            &up.to_contiguous(),
        ))),
        (Flexible::Tracked(gate), Flexible::Tracked(up)) => {
            let prep = Swiglu.prepare::<NoCheckpointing>([gate.node.clone(), up.node.clone()]);
            let (g, u) = (gate.primitive.to_contiguous(), up.primitive.to_contiguous());
            let out = swiglu_forward(&g, &u);
            Ok(back::<B, _>(record(prep.compute_bound(), (g, u), out)))
        }
        (gate, up) => Err((unclassify(gate), unclassify(up))),
    }
}

fn unclassify<B: Backend>(x: Flexible<B>) -> FloatTensor<B> {
    match x {
        Flexible::Tracked(t) => back::<B, _>(t),
        Flexible::Plain(t) => back::<B, _>(t),
        Flexible::Other(t) => t,
    }
}

// ---- negative log-likelihood ----------------------------------------------------------------

fn nll_forward(logits: &FlexTensor, targets: &[usize]) -> (FlexTensor, Vec<f32>) {
    let d = dims(logits);
    let (rows, vocab) = (d[0], d[1]);
    if targets.iter().any(|&t| t >= vocab) {
        panic!("a target token is outside the model's vocabulary of {vocab} (or negative)");
    }
    let (mut loss, mut lse) = (vec![0.0; rows], vec![0.0; rows]);
    kernels::nll(f32s(logits), vocab, targets, &mut loss, &mut lse);
    (from_vec(loss, Shape::new([rows])), lse)
}

#[derive(Debug)]
struct Nll;

impl Backward<Flex, 1> for Nll {
    type State = (FlexTensor, Vec<usize>, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (logits, targets, lse) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
            let vocab = dims(&logits)[1];
            let mut d = owned(logits);
            let g = g.to_contiguous();
            kernels::nll_backward(d.storage_mut(), vocab, &targets, &lse, f32s(&g));
            d
        });
    }
}

pub(super) fn nll<B: Backend>(
    logits: FloatTensor<B>,
    targets: &[usize],
) -> Result<FloatTensor<B>, FloatTensor<B>> {
    match classify::<B>(logits) {
        Flexible::Other(x) => Err(x),
        Flexible::Plain(x) => Ok(back::<B, _>(nll_forward(&x.to_contiguous(), targets).0)),
        Flexible::Tracked(x) => {
            let prep = Nll.prepare::<NoCheckpointing>([x.node.clone()]);
            let logits = x.primitive.to_contiguous();
            let (loss, lse) = nll_forward(&logits, targets);
            Ok(back::<B, _>(record(
                prep.compute_bound(),
                (logits, targets.to_vec(), lse),
                loss,
            )))
        }
    }
}

// ---- RMSNorm --------------------------------------------------------------------------------

fn rms_forward(x: &FlexTensor, gamma: &FlexTensor, eps: f32) -> (FlexTensor, Vec<f32>) {
    let d = gamma.shape().num_elements();
    let rows = x.shape().num_elements() / d;
    let (mut out, mut inv) = (vec![0.0; rows * d], vec![0.0; rows]);
    kernels::rms_norm(f32s(x), f32s(gamma), eps, &mut out, &mut inv);
    (from_vec(out, x.shape()), inv)
}

#[derive(Debug)]
struct RmsNorm;

impl Backward<Flex, 2> for RmsNorm {
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gamma, inv) = ops.state;
        let mut grad = owned(grads.consume::<Flex>(&ops.node));
        let mut dgamma = vec![0.0; gamma.shape().num_elements()];
        kernels::rms_norm_backward(
            f32s(&x),
            f32s(&gamma),
            &inv,
            grad.storage_mut(),
            &mut dgamma,
        );
        let [x_node, gamma_node] = ops.parents;
        if let Some(node) = gamma_node {
            grads.register::<Flex>(node.id, from_vec(dgamma, gamma.shape()));
        }
        if let Some(node) = x_node {
            grads.register::<Flex>(node.id, grad);
        }
    }
}

pub(super) fn rms_norm<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    eps: f32,
) -> Result<FloatTensor<B>, (FloatTensor<B>, FloatTensor<B>)> {
    match (classify::<B>(x), classify::<B>(gamma)) {
        (Flexible::Plain(x), Flexible::Plain(gamma)) => {
            let out = rms_forward(&x.to_contiguous(), &gamma.to_contiguous(), eps).0;
            Ok(back::<B, _>(out))
        }
        (Flexible::Tracked(x), Flexible::Tracked(gamma)) => {
            let prep = RmsNorm.prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone()]);
            let (xs, ws) = (x.primitive.to_contiguous(), gamma.primitive.to_contiguous());
            let (out, inv) = rms_forward(&xs, &ws, eps);
            Ok(back::<B, _>(record(
                prep.compute_bound(),
                (xs, ws, inv),
                out,
            )))
        }
        (x, gamma) => Err((unclassify(x), unclassify(gamma))),
    }
}

// ---- attention ------------------------------------------------------------------------------

fn attention_shape(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    starts: Option<&[u32]>,
) -> Option<host::Shape> {
    let (dq, dk) = (dims(q), dims(k));
    let fits = dq.len() == 4
        && starts.is_none_or(|s| s.len() == dq[0] * dq[1])
        && dk == dims(v)
        && dk.len() == 4
        && (dq[0], dq[1], dq[3]) == (dk[0], dk[1], dk[3])
        && dk[2] > 0
        && dq[2] % dk[2] == 0;
    fits.then(|| host::Shape {
        batch: dq[0],
        seq: dq[1],
        heads: dq[2],
        kv_heads: dk[2],
        dim: dq[3],
    })
}

fn attention_forward(
    s: host::Shape,
    (q, k, v): (&FlexTensor, &FlexTensor, &FlexTensor),
    starts: Option<&[u32]>,
) -> (FlexTensor, FlexTensor) {
    let (mut out, mut probs) = (vec![0.0; s.q_len()], vec![0.0; s.probs_len()]);
    let inputs = (f32s(q), f32s(k), f32s(v));
    host::forward(s, inputs, starts, &mut out, &mut probs);
    let probs = from_vec(probs, Shape::new([s.batch, s.heads, s.seq, s.seq]));
    (from_vec(out, q.shape()), probs)
}

#[derive(Debug)]
struct Attention;

impl Backward<Flex, 3> for Attention {
    type State = (host::Shape, [FlexTensor; 4]);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (s, [q, k, v, probs]) = ops.state;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (mut dq, mut dk, mut dv) = (
            vec![0.0; s.q_len()],
            vec![0.0; s.kv_len()],
            vec![0.0; s.kv_len()],
        );
        let inputs = (f32s(&q), f32s(&k), f32s(&v), f32s(&probs));
        host::backward(s, inputs, f32s(&grad), (&mut dq, &mut dk, &mut dv));
        let [nq, nk, nv] = ops.parents;
        for (node, d, shape) in [
            (nq, dq, q.shape()),
            (nk, dk, k.shape()),
            (nv, dv, v.shape()),
        ] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, from_vec(d, shape));
            }
        }
    }
}

type Three<B> = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

/// `starts`: see `host::forward`.
pub(super) fn attention<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    starts: Option<&[u32]>,
) -> Result<FloatTensor<B>, Three<B>> {
    match (classify::<B>(q), classify::<B>(k), classify::<B>(v)) {
        (Flexible::Plain(q), Flexible::Plain(k), Flexible::Plain(v)) => {
            let (q, k, v) = (q.to_contiguous(), k.to_contiguous(), v.to_contiguous());
            match attention_shape(&q, &k, &v, starts) {
                Some(s) => Ok(back::<B, _>(attention_forward(s, (&q, &k, &v), starts).0)),
                None => Err((back::<B, _>(q), back::<B, _>(k), back::<B, _>(v))),
            }
        }
        (Flexible::Tracked(q), Flexible::Tracked(k), Flexible::Tracked(v)) => {
            let (qs, ks, vs) = (
                q.primitive.to_contiguous(),
                k.primitive.to_contiguous(),
                v.primitive.to_contiguous(),
            );
            let Some(s) = attention_shape(&qs, &ks, &vs, starts) else {
                return Err((back::<B, _>(q), back::<B, _>(k), back::<B, _>(v)));
            };
            let prep = Attention.prepare::<NoCheckpointing>([
                q.node.clone(),
                k.node.clone(),
                v.node.clone(),
            ]);
            let (out, probs) = attention_forward(s, (&qs, &ks, &vs), starts);
            Ok(back::<B, _>(record(
                prep.compute_bound(),
                (s, [qs, ks, vs, probs]),
                out,
            )))
        }
        (q, k, v) => Err((unclassify(q), unclassify(k), unclassify(v))),
    }
}
