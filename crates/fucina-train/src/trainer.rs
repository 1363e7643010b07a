//! The training loop: one optimizer step per global batch, gradients averaged over ranks once per
//! step, validation and checkpoints on schedule, and everything needed to resume exactly.

use crate::backend::{dispatch, BackendTask};
use crate::base_fingerprint::{BaseFingerprint, BASE_FILE};
use crate::checkpoint::{self, TrainState, CONFIG_FILE, STATE_FILE};
use crate::config::RunConfig;
use crate::consistency::{check_replicas, check_same_config};
use crate::data::{self, RunData};
use crate::loss::step_scale;
use crate::metrics::{Event, Reporter, StepMetrics};
use crate::optim::learning_rate;
use crate::saver::{Committed, Saver};
use crate::stages::Stages;
use crate::start::{initial_model, load_checkpoint};
use crate::threads::{cpu_parts, forward_backward, Memory};
use crate::update::Updater;
use crate::watchdog::{self, Watchdog};
use crate::{generate, plot};
use crate::{nonfinite, stop};
use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::optim::GradientsAccumulator;
use burn::tensor::backend::AutodiffBackend;
use fucina_data::{BatchSpec, Loader, TokenDataset};
use fucina_dist::{placement, Communicator};
use fucina_model::{Llama, LlamaConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// The closing sample's repetition penalty (transformers' `repetition_penalty`): enough to
/// stop a young model sampled cool from looping ("1.1.1."), light enough to let the words
/// a language repeats ("de", "the") come back: on the quickstart's model, samples over 9 seeds
/// are 86 % corpus words with 1.1, 83 % with 1.2.
const SAMPLE_REPETITION_PENALTY: f64 = 1.1;

#[derive(Debug, Clone, Default)]

pub struct TrainOptions {
    /// `auto` (newest complete checkpoint of the run) or a checkpoint directory.
    pub resume: Option<String>,
    /// Tokens to sample from the trained model at the end (0: none).
    pub sample_tokens: usize,
    /// Stop (with a checkpoint) after this step, as if interrupted; the schedule stays that of
    /// `train.steps`, so a later `--resume` continues the same run.
    pub stop_after: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: u64,
    pub final_loss: f64,
    pub val_loss: Option<f64>,
    pub checkpoint: PathBuf,
    pub losses: Vec<f64>,
    pub sample: Option<String>,
    /// Hash of the final weights, checked identical on every rank.
    pub parameter_hash: u64,
    pub world_size: usize,
    /// Set when a signal stopped the run early, at a checkpoint: what to tell the user.
    pub stopped_by: Option<String>,
    /// Bytes of AdamW moments this rank holds at the end (all ranks hold as many).
    pub optimizer_bytes: u64,
    /// The world size the AdamW state is sharded over (`[dist] shard_optimizer`), if it is.
    pub sharded_over: Option<usize>,
    /// Median share of a step spent blocked in communication, over the steps after the first
    /// (which pays for warm-up); `None` on one rank or with a single step.
    pub exposed_comm: Option<f64>,
    /// This rank's peak resident memory (Linux), and what `fucina launch` predicts for it.
    pub peak_rss: Option<u64>,
    pub predicted_bytes: u64,
    /// The same for training alone, without a checkpoint's copy in host memory.
    pub predicted_training_bytes: u64,
    /// The peak before the first checkpoint was serialised: training alone, which the
    /// serialised copy of the weights and moments can exceed once activations are small.
    pub training_peak_rss: Option<u64>,
}

pub fn train(
    config: RunConfig,
    comm: &dyn Communicator,
    options: TrainOptions,
) -> Result<TrainSummary> {
    let device_index = placement::device_index(comm.local_rank(), &placement::process_env);
    dispatch(
        config.backend,
        device_index,
        TrainTask {
            config,
            comm,
            options,
        },
    )?
}

struct TrainTask<'a> {
    config: RunConfig,
    comm: &'a dyn Communicator,
    options: TrainOptions,
}

impl BackendTask for TrainTask<'_> {
    type Output = Result<TrainSummary>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<TrainSummary> {
        run::<B>(&self.config, self.comm, &self.options, &device)
    }
}

pub use crate::loss::tokens_to_tensor;
use crate::validation::check_validation;
pub use crate::validation::{evaluate, evaluate_sources, ValLosses};

fn run<B: AutodiffBackend>(
    config: &RunConfig,
    comm: &dyn Communicator,
    options: &TrainOptions,
    device: &B::Device,
) -> Result<TrainSummary> {
    let model_config = config.model_config()?;
    let seconds = std::time::Duration::from_secs_f64;
    let (timeout, startup) = (
        seconds(config.dist.timeout_seconds),
        seconds(config.dist.startup_timeout_seconds),
    );
    let watchdog = Watchdog::start(timeout, startup, comm.rank());
    watchdog.enter_startup("checking the config on every rank", 0);
    check_same_config(&config.to_toml(), comm)?;
    let dtype = config.precision.compute_dtype();
    if !B::supports_dtype(device, dtype) {
        anyhow::bail!(
            "precision = \"{}\": backend {:?} has no {dtype:?} tensors on this device; use precision = \"f32\"",
            config.precision.name(),
            config.backend
        );
    }
    let out_dir = &config.out_dir;
    let created = !out_dir.exists();
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let result = run_in::<B>(config, comm, options, device, model_config, watchdog);
    // A run that failed before writing anything leaves no empty directory behind (remove_dir
    // refuses one with metrics or checkpoints in it).
    if result.is_err() && created {
        let _ = std::fs::remove_dir(out_dir);
    }
    result
}

fn run_in<B: AutodiffBackend>(
    config: &RunConfig,
    comm: &dyn Communicator,
    options: &TrainOptions,
    device: &B::Device,
    model_config: LlamaConfig,
    watchdog: Watchdog,
) -> Result<TrainSummary> {
    let out_dir = &config.out_dir;
    let hang_step = watchdog::hang_step(comm.rank(), comm.size());
    watchdog.enter_startup("opening the data", 0);
    if hang_step == Some(0) {
        watchdog::hang_forever();
    }
    let RunData {
        tokenizer,
        sources,
        mixture,
    } = data::load(config, comm)?;
    let mut train = Vec::with_capacity(sources.len());
    let (mut val_names, mut vals) = (Vec::new(), Vec::new());
    for source in sources {
        train.push((Arc::new(source.train), source.weight));
        if let Some(val) = source.val {
            val_names.push(source.name);
            vals.push(val);
        }
    }
    check_validation(config, &val_names, &vals, comm.is_root())?;
    let spec = BatchSpec {
        seq_len: config.data.seq_len,
        global_batch_seqs: config.global_batch_seqs(),
        micro_batch: config.train.micro_batch_size,
        world_size: comm.size(),
        rank: comm.rank(),
        seed: config.seed,
    };
    let accum = spec.grad_accum()?;
    let document_eos = match config.data.document_mask {
        true => Some(data::document_eos(&train)?),
        false => None,
    };
    let mut loader = Loader::mixture(train, spec)?;
    if let Some(eos) = document_eos {
        loader = loader.with_document_mask(eos);
    }

    watchdog.enter_startup("loading the model", 0);
    let mut model = initial_model::<B>(config, &model_config, comm, device)?;
    watchdog.enter_startup("choosing the gradient transport", 0);
    let mut updater = Updater::<B, Llama<B>>::new(config, &model, comm)?;
    let weights = config.weights_format()?;
    if let (true, Some((transport, why))) = (comm.is_root(), updater.transport()) {
        eprintln!("gradient transport: {} ({why})", transport.name());
    }
    let mut state = TrainState {
        step: 0,
        loader: loader.state(0),
        world_size: comm.size(),
        tokens: 0,
        last_loss: None,
        fucina_version: env!("CARGO_PKG_VERSION").into(),
        skipped_steps: 0,
        optimizer: updater.format(weights),
        weights,
        shards: updater.shards(comm),
    };
    let next = match options.resume {
        Some(_) => "loading the checkpoint",
        None => "preparing the first step",
    };
    watchdog.enter_startup(next, 0);
    let resumed = match &options.resume {
        Some(which) => load_checkpoint(config, which, &model_config, comm)?,
        None => None,
    };
    if resumed.is_none() && comm.is_root() && options.resume.as_deref() == Some("if-present") {
        eprintln!(
            "no checkpoint under {} yet: starting at step 0",
            out_dir.display()
        );
    }
    if let Some((dir, loaded)) = resumed {
        model = checkpoint::restore_weights(model, loaded.state.weights, loaded.model, device)
            .with_context(|| format!("weights of checkpoint {}", dir.display()))?;
        updater
            .load(&model, loaded.state.optimizer, loaded.optim, device)
            .with_context(|| format!("optimizer state of checkpoint {}", dir.display()))?;
        state = TrainState {
            optimizer: updater.format(weights),
            weights,
            shards: updater.shards(comm),
            ..loaded.state
        };
        // The loader is a pure function of the step: only another seed or mixture could move it.
        state.step = loader
            .resume(&state.loader)
            .with_context(|| format!("resuming from {}", dir.display()))?;
        state.world_size = comm.size();
        if comm.is_root() {
            eprintln!("resuming from {} at step {}", dir.display(), state.step);
        }
    }
    let mut model = updater.adopt(model)?;

    let half = config.precision != crate::config::Precision::F32;
    let total = config.train.steps;
    let stop = options.stop_after.unwrap_or(total).min(total);
    let mut reporter = Reporter::new(
        out_dir,
        comm.is_root(),
        config.metrics.tensorboard,
        state.step,
        total,
    )?;
    let tokens_per_step = config.train.global_batch_tokens as u64;
    let flops_per_token = model_config.train_flops_per_token(config.data.seq_len);
    let peak = config.peak_flops();
    let (rows, started) = (config.train.micro_batch_size, Instant::now());
    let (mut losses, mut val_loss) = (Vec::new(), None);
    let mut exposed = Vec::new();
    let mut last_checkpoint = None;
    let mut training_peak = None;
    let mut stopped_by: Option<String> = None;

    let retention = checkpoint::Retention {
        keep: config.checkpoint.keep,
        every: config.checkpoint.keep_every,
    };
    let mut saver = Saver::new(
        out_dir,
        retention,
        config.checkpoint.background,
        comm.is_root(),
    )?;
    let base = match (weights, config.hf_dir()?) {
        (checkpoint::WeightsFormat::Trainable, Some(dir)) if comm.is_root() => {
            Some(serde_json::to_vec_pretty(&BaseFingerprint::of(&dir)?)?)
        }
        _ => None,
    };
    let nan_steps = nonfinite::poisoned_steps(comm);
    let first = state.step;
    while state.step < stop {
        let step = state.step;
        let step_started = Instant::now();
        let lr = learning_rate(&config.train, step);
        let mut accumulator = GradientsAccumulator::<Llama<B>>::new();
        let mut loss_sum = 0.0;
        // The first step compiles the kernels, and its collectives wait for the slowest rank's.
        let phase = |name| match step == first {
            true => watchdog.enter_startup(name, step + 1),
            false => watchdog.enter(name, step + 1),
        };
        phase("forward/backward");
        if hang_step == Some(step + 1) {
            watchdog::hang_forever();
        }
        let scale = step_scale(comm.size(), accum, loader.step_loss_targets(step));
        let poison = nan_steps.contains(&(step + 1));
        let parts = match config.backend.is_cpu() {
            true => cpu_parts(rows, config.data.seq_len),
            false => 1,
        };
        let on_host = updater.accumulates_on_host();
        // bf16 gradients are summed in f32: widened on the device where it sums them.
        let widen = (parts > 1 || (accum > 1 && !on_host)) && half;
        let overlap = updater.overlaps(comm);
        let mut staged = None;
        for micro in 0..accum {
            let batch = loader.micro_batch(step, micro);
            let acc = &mut accumulator;
            let split = (rows, parts, widen);
            let memory = Memory::of(&config.train);
            if overlap && micro + 1 == accum {
                let (value, stages) =
                    Stages::forward(&model, &batch, split, scale, accum, poison, memory, device);
                loss_sum += value;
                staged = Some(stages);
                break;
            }
            loss_sum += forward_backward(
                &model, &batch, split, scale, accum, poison, memory, acc, device,
            );
            if on_host && micro + 1 < accum {
                updater.accumulate(&model, accumulator.grads())?;
            }
        }
        // Overlapped, the last micro-batch's backward runs inside this phase.
        phase("gradient all-reduce");
        let mut sync = match staged {
            Some(stages) => {
                // The sharded optimizer has summed them on the host already.
                let earlier = (accum > 1 && !on_host).then(|| accumulator.grads());
                updater.sync_staged(&model, stages, earlier, comm)?
            }
            None => updater.sync(&model, accumulator.grads(), comm)?,
        };

        // The stop request and the background writers' progress ride on the loss all-reduce:
        // no extra collective per step.
        let signal = stop::received();
        let mut loss_buf = [
            (loss_sum / accum as f64) as f32,
            signal.is_some() as u8 as f32,
            saver.done_flag(),
        ];
        phase("loss all-reduce");
        comm.all_reduce_sum(&mut loss_buf)?;
        let loss = loss_buf[0] as f64 / comm.size() as f64;
        if saver.pending() && loss_buf[2] as usize == comm.size() {
            phase("checkpoint completion");
            if let Some(done) = saver.finish(comm)? {
                report_checkpoint(&reporter, &done);
                last_checkpoint = Some(done.dir);
            }
        }
        if loss_buf[1] > 0.0 && stopped_by.is_none() {
            stopped_by = Some(match signal {
                Some(s) => stop::name(s),
                None => "a signal to another rank".into(),
            });
        }
        let verdict = nonfinite::check(
            &config.train,
            &mut state,
            step + 1,
            loss,
            sync.grad_norm,
            comm.is_root(),
        );
        let verdict = match verdict {
            Ok(verdict) => verdict,
            // Every rank stops here together (the loss is all-reduced): the checkpoint still
            // being written is completed first, so the run's last good state is not lost.
            Err(e) => {
                saver.finish(comm)?;
                return Err(e);
            }
        };
        match verdict {
            nonfinite::Verdict::Apply => {
                phase("optimizer step");
                model = updater.apply(lr, model, comm, &mut sync)?;
            }
            nonfinite::Verdict::Skip => updater.skip(),
        }
        losses.push(loss);
        exposed.push(sync.comm_seconds / step_started.elapsed().as_secs_f64());
        state.step += 1;
        state.loader.step = state.step;
        state.tokens += tokens_per_step;
        state.last_loss = Some(loss);
        let step_seconds = step_started.elapsed().as_secs_f64();
        let tokens_per_sec = tokens_per_step as f64 / step_seconds;
        reporter.record(&Event::Train(StepMetrics {
            step: state.step,
            loss,
            lr,
            grad_norm: sync.grad_norm,
            tokens_per_sec,
            mfu: peak.map(|p| flops_per_token * tokens_per_sec / p),
            elapsed: started.elapsed().as_secs_f64(),
            step_seconds,
            sync_seconds: sync.sync_seconds,
            comm_seconds: sync.comm_seconds,
            exposed_comm: sync.comm_seconds / step_seconds,
        }))?;

        let last = state.step == stop || stopped_by.is_some();
        let due = |every: u64| last || (every > 0 && state.step.is_multiple_of(every));
        if !vals.is_empty()
            && config.eval.every > 0
            && due(config.eval.every)
            && stopped_by.is_none()
        {
            let (seq_len, batches) = (config.data.seq_len, config.eval.batches);
            watchdog.enter("evaluation", state.step);
            let refs: Vec<&TokenDataset> = vals.iter().collect();
            let geometry = (seq_len, rows, batches);
            let losses =
                evaluate_sources(&model.valid(), &refs, geometry, document_eos, comm, device)?;
            val_loss = losses.as_ref().map(|l| l.total);
            if let Some(losses) = losses {
                let elapsed = started.elapsed().as_secs_f64();
                let sources = match mixture {
                    true => val_names
                        .iter()
                        .zip(&losses.sources)
                        .filter_map(|(name, loss)| Some((name.clone(), (*loss)?)))
                        .collect(),
                    false => Default::default(),
                };
                let source_tokens = match mixture {
                    true => val_names
                        .iter()
                        .cloned()
                        .zip(losses.source_tokens.iter().copied())
                        .collect(),
                    false => Default::default(),
                };
                reporter.record(&Event::Val {
                    step: state.step,
                    val_loss: losses.total,
                    elapsed,
                    sources,
                    tokens: losses.tokens,
                    source_tokens,
                })?;
            }
        }
        if due(config.checkpoint.every) {
            if training_peak.is_none() {
                training_peak = crate::rss::peak_rss_bytes();
            }
            watchdog.enter("checkpoint", state.step);
            let paused = Instant::now();
            // One process has no replica to compare with (the final hash is taken below).
            if comm.size() > 1 {
                check_replicas::<B, _>(&model, state.step, comm)?;
            }
            if !nonfinite::all_finite::<B, _>(&model) {
                anyhow::bail!(
                    "step {}: the weights hold NaN or infinity; not checkpointing them",
                    state.step
                );
            }
            // Training pauses for the copy to host memory; the writers do the rest.
            let copying = Instant::now();
            let mut files = updater.checkpoint_files(&model, weights, comm)?;
            let copied = copying.elapsed().as_secs_f64();
            if comm.is_root() {
                files.push((STATE_FILE.into(), serde_json::to_vec_pretty(&state)?));
                files.push((CONFIG_FILE.into(), config.to_toml().into_bytes()));
                if let Some(base) = &base {
                    files.push((BASE_FILE.into(), base.clone()));
                }
            }
            let mut done = saver.start(state.step, files, comm)?;
            if last {
                done.extend(saver.finish(comm)?);
            }
            let paused = paused.elapsed().as_secs_f64();
            let how = match saver.pending() {
                true => "to copy it; writing in the background",
                false => "to write it",
            };
            reporter.say(&format!(
                "checkpoint step {}: training paused {paused:.3} s {how} (host copy {copied:.3} s)",
                state.step
            ));
            for done in done {
                report_checkpoint(&reporter, &done);
                last_checkpoint = Some(done.dir);
            }
        }
        if stopped_by.is_some() {
            break;
        }
    }
    watchdog.idle();
    reporter.finish();
    let parameter_hash = check_replicas::<B, _>(&model, state.step, comm)?;

    let mut sample = None;
    if comm.is_root() {
        // The run succeeded; a plot that cannot be drawn (no fonts, say) is only a warning.
        match plot::plot_run(out_dir) {
            Ok(png) => eprintln!("loss plot: {}", png.display()),
            Err(e) => eprintln!("warning: no loss plot: {e:#}"),
        }
        if options.sample_tokens > 0 && stopped_by.is_none() {
            // Cool and narrow: a model minutes old shows the words it has learnt, not its noise;
            // cool sampling of so young a model loops ("1.1.1.1"), which the penalty breaks.
            let text = generate::sample(
                &model.valid(),
                &tokenizer,
                "",
                options.sample_tokens,
                0.3,
                10,
                SAMPLE_REPETITION_PENALTY,
                config.seed,
                device,
            )?;
            sample = Some(text);
        }
    }
    let estimate = crate::memory::estimate(config, comm.size())?;
    Ok(TrainSummary {
        steps: state.step,
        final_loss: state.last_loss.unwrap_or(f64::NAN),
        val_loss,
        checkpoint: last_checkpoint.unwrap_or_else(|| checkpoint::checkpoints_dir(out_dir)),
        losses,
        sample,
        parameter_hash,
        world_size: comm.size(),
        stopped_by,
        optimizer_bytes: updater.moment_bytes(&model),
        sharded_over: config.dist.shard_optimizer.then_some(comm.size()),
        exposed_comm: (comm.size() > 1 && exposed.len() > 1).then(|| median(&exposed[1..])),
        peak_rss: crate::rss::peak_rss_bytes(),
        training_peak_rss: training_peak,
        predicted_bytes: estimate.device_total(config.backend.is_cpu()),
        predicted_training_bytes: estimate.training_total(config.backend.is_cpu()),
    })
}

fn report_checkpoint(reporter: &Reporter, done: &Committed) {
    reporter.say(&format!(
        "checkpoint step {}: {:.1} MB written in {:.2} s: {}",
        done.step,
        done.bytes as f64 / 1e6,
        done.seconds,
        done.dir.display()
    ));
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
