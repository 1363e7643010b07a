//! fucina-train: the training loop, optimizer, checkpoints, metrics and plots.

pub mod alloc;
pub mod backend;
pub mod bench;
pub mod bench_kernels;
pub mod checkpoint;
pub mod checkpointing;
pub mod config;
pub mod consistency;
mod cpu_peak;
pub mod data;
pub mod doctor;
pub mod export;
pub mod flat_moments;
pub mod generate;
pub mod grads;
pub mod head;
pub mod hf_check;
pub mod loss;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod nonfinite;
pub mod optim;
pub mod plot;
pub mod precision;
pub mod rss;
pub mod stop;
pub mod threads;
pub mod trainer;
pub mod update;
pub mod watchdog;
pub mod zero;

pub use backend::{dispatch, BackendKind, BackendTask};
pub use config::RunConfig;
pub use trainer::{train, TrainOptions, TrainSummary};
