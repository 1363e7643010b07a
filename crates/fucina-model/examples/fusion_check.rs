//! How many kernels burn-fusion launches for RMSNorm and SwiGLU composed from burn operations on
//! WGPU, forward and backward, and for fucina's RMSNorm kernels: run with cubecl's own profiler
//! on, which lists every kernel it launches,
//!
//!     CUBECL_DEBUG_LOG=stderr CUBECL_DEBUG_OPTION=profile-medium cargo run --release -p fucina-model \
//!         --features wgpu --example fusion_check
//!
//! Each step is synced on its own, so the profiler's lines come before the line that ends the
//! step that made them.
#[cfg(feature = "wgpu")]
fn main() {
    use burn::backend::{Autodiff, Wgpu};
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use fucina_model::fused::{self, reference};

    type B = Autodiff<Wgpu>;
    let device = Default::default();
    let [rows, h, i] = [512, 256, 688];
    let sync = |what: &str| {
        <B as Backend>::sync(&device).expect("the device runs");
        // cubecl's profiler writes from its own thread: let it catch up first.
        std::thread::sleep(std::time::Duration::from_millis(300));
        eprintln!("== fusion_check: {what} done");
    };
    let x = Tensor::<B, 2>::random([rows, h], Distribution::Default, &device).require_grad();
    let gamma = Tensor::<B, 1>::ones([h], &device).require_grad();
    let gate = Tensor::<B, 2>::random([rows, i], Distribution::Default, &device).require_grad();
    let up = Tensor::<B, 2>::random([rows, i], Distribution::Default, &device).require_grad();
    sync("inputs");
    for round in 0..2 {
        // The first round compiles and autotunes; the second shows the steady state.
        let y = reference::rms_norm(x.clone(), gamma.clone(), 1e-5);
        sync(&format!("round {round}: rms_norm forward"));
        // Gradients are held past the sync: burn-fusion may skip work whose outputs are dropped.
        let grads = y.sum().backward();
        let held = (x.grad(&grads), gamma.grad(&grads));
        sync(&format!("round {round}: rms_norm backward"));
        drop(held);
        // fucina's own RMSNorm kernels (fused::rms), what the model runs on these backends.
        let y = fused::rms_norm(x.clone(), gamma.clone(), 1e-5);
        sync(&format!("round {round}: fused rms_norm forward"));
        let grads = y.sum().backward();
        let held = (x.grad(&grads), gamma.grad(&grads));
        sync(&format!("round {round}: fused rms_norm backward"));
        drop(held);
        let y = reference::swiglu(gate.clone(), up.clone());
        sync(&format!("round {round}: swiglu forward"));
        let grads = y.sum().backward();
        let held = (gate.grad(&grads), up.grad(&grads));
        sync(&format!("round {round}: swiglu backward"));
        drop(held);
    }
}

#[cfg(not(feature = "wgpu"))]
fn main() {
    eprintln!("fusion_check needs --features wgpu");
}
