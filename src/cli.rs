use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fucina_data::{prepare, PrepareOptions, TextTokenizer};
use fucina_dist::CollectiveError;
use fucina_train::generate::{self, GenerateOptions};
use fucina_train::{plot, RunConfig, TrainOptions, TrainSummary};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "fucina",
    version,
    about = "Data-parallel LLM training on burn for the EuroHPC AI factories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train (or continue training) a model described by a run config.
    Train {
        /// Run config (TOML), e.g. configs/runs/quickstart.toml.
        config: PathBuf,
        /// Override a config key: --set train.lr=3e-4 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue from `auto` (the newest complete checkpoint of the run, which must exist),
        /// `if-present` (the newest if there is one, else start: what job scripts use) or a
        /// checkpoint directory.
        #[arg(long, value_name = "auto|if-present|DIR")]
        resume: Option<String>,
        /// Tokens to sample from the model at the end; 0 for none.
        #[arg(long, default_value_t = 64)]
        sample_tokens: usize,
        /// Stop with a checkpoint after this step (e.g. to fit a time slot); resume later.
        #[arg(long, value_name = "STEP")]
        stop_after: Option<u64>,
    },
    /// Tokenise text files, directories and JSONL ({"text": ...}, or conversations
    /// {"messages": [{"role", "content"}, ...]} for fine-tuning) into token shards.
    Prepare {
        /// tokenizer.json (Hugging Face format), or `builtin`.
        #[arg(long, required_unless_present = "merge")]
        tokenizer: Option<String>,
        /// Output directory for train_*.bin, val_*.bin and meta.json.
        #[arg(long)]
        out: PathBuf,
        /// Share of documents held out for validation.
        #[arg(long, default_value_t = 0.01)]
        val_fraction: f64,
        /// Tokens per shard file.
        #[arg(long, default_value_t = 100_000_000)]
        shard_tokens: usize,
        /// tokenizer_config.json whose chat template formats conversations
        /// [default: the tokenizer_config.json next to --tokenizer, if there is one].
        #[arg(long, value_name = "TOKENIZER_CONFIG")]
        chat_template: Option<PathBuf>,
        /// Sequence length you will train with (data.seq_len); required for conversations,
        /// which are stored one per row of SEQ_LEN + 1 tokens.
        #[arg(long)]
        seq_len: Option<usize>,
        /// Column of .parquet inputs that holds the documents.
        #[arg(long, default_value = "text")]
        text_column: String,
        /// Pack several conversations into each row of SEQ_LEN + 1 tokens (first-fit decreasing)
        /// instead of one per row, to train on less padding; training keeps attention and
        /// positions within each conversation. Conversations only: for pre-training text set
        /// the run option data.document_mask = true instead.
        #[arg(long, conflicts_with = "part")]
        pack: bool,
        /// Tokenise only part I of N (counted from 0, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)
        /// into OUT/parts/; text only. Run every part with the same arguments, then --merge.
        #[arg(long, value_name = "I/N")]
        part: Option<fucina_data::prepare::Part>,
        /// Join the parts in OUT/parts/ into OUT (byte-identical to one process doing it all).
        #[arg(long, conflicts_with_all = ["tokenizer", "part", "inputs", "chat_template", "seq_len", "pack"])]
        merge: bool,
        #[arg(required_unless_present = "merge")]
        inputs: Vec<PathBuf>,
    },
    /// Tokenizer tools.
    Tokenizer {
        #[command(subcommand)]
        command: TokenizerCommand,
    },
    /// Sample text from a checkpoint (or the newest checkpoint of a run directory).
    Generate {
        checkpoint: PathBuf,
        #[arg(long, default_value = "")]
        prompt: String,
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// 0 for greedy decoding.
        #[arg(long, default_value_t = 0.8)]
        temperature: f64,
        /// Sample among the k most likely tokens; 0 for all.
        #[arg(long, default_value_t = 40)]
        top_k: usize,
        /// Above 1, tokens already in the text become less likely (transformers'
        /// repetition_penalty); 1 for none.
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Chat: --prompt is a user message, rendered with the run's chat template (the one its
        /// data was prepared with); generation stops at the model's end-of-turn tokens.
        #[arg(long)]
        chat: bool,
        /// With --chat: a system message first.
        #[arg(long, requires = "chat")]
        system: Option<String>,
        /// With --chat: earlier messages, a JSON list of {"role", "content"}.
        #[arg(long, requires = "chat")]
        messages: Option<PathBuf>,
        /// With --chat: another tokenizer_config.json whose template to use.
        #[arg(long, requires = "chat")]
        chat_template: Option<PathBuf>,
        /// Recompute the whole context for every token instead of keeping earlier keys and
        /// values (slower; for comparison).
        #[arg(long)]
        no_cache: bool,
    },
    /// Draw RUN_DIR/loss.png from RUN_DIR/metrics.jsonl.
    Plot { run_dir: PathBuf },
    /// The AI factory profiles: list them, or `show NAME` to explain one.
    Factories {
        #[command(subcommand)]
        command: Option<FactoriesCommand>,
    },
    /// Write (and with --submit, submit) a job script for a run on an AI factory.
    Launch(crate::launch::LaunchArgs),
    /// Write a run's checkpoint as a Hugging Face model directory (or, for LoRA runs, a PEFT
    /// adapter) that transformers, vLLM and llama.cpp's converter load.
    Export(crate::export::ExportArgs),
    /// Benchmarks that print throughput measured in this run.
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
    /// Whether a backend works here: the run-time libraries it loads (and the names tried),
    /// its device, bf16 support, and a matmul checked against its known result.
    Doctor {
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Also write the findings to this file as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum FactoriesCommand {
    /// Every fact of one profile, with the notes on values that are not certain.
    Show { name: String },
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer on text files, directories or JSONL.
    Train {
        #[arg(long)]
        vocab_size: usize,
        #[arg(long)]
        out: PathBuf,
        /// Column of .parquet inputs that holds the documents.
        #[arg(long, default_value = "text")]
        text_column: String,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
}

fn report(summary: &TrainSummary, root: bool) {
    if !root {
        return;
    }
    if let Some(text) = &summary.sample {
        println!("--- sample ---\n{text}\n--------------");
    }
    if summary.world_size > 1 {
        eprintln!(
            "replicas identical on {} ranks (parameter hash {:016x})",
            summary.world_size, summary.parameter_hash
        );
    }
    eprintln!(
        "done: {} steps, loss {:.4}{}, checkpoint {}",
        summary.steps,
        summary.final_loss,
        summary
            .val_loss
            .map(|v| format!(", val_loss {v:.4}"))
            .unwrap_or_default(),
        summary.checkpoint.display()
    );
    eprintln!(
        "optimizer state: {} bytes of AdamW moments per rank ({})",
        summary.optimizer_bytes,
        match summary.sharded_over {
            Some(n) => format!("sharded over {n} ranks"),
            None => "replicated".to_string(),
        }
    );
    if let Some(share) = summary.exposed_comm {
        eprintln!(
            "communication: {:.1}% of step time exposed (median over steps 2..{})",
            share * 100.0,
            summary.steps
        );
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    if let Some(peak) = summary.peak_rss {
        eprintln!(
            "memory: peak resident {:.0} MiB on rank 0; predicted {:.0} MiB ({:+.0}%)",
            mib(peak),
            mib(summary.predicted_bytes),
            (summary.predicted_bytes as f64 / peak as f64 - 1.0) * 100.0
        );
        if let Some(training) = summary.training_peak_rss {
            eprintln!(
                "memory: peak resident {:.0} MiB before the first checkpoint was written; \
                 predicted {:.0} MiB for training alone",
                mib(training),
                mib(summary.predicted_training_bytes)
            );
        }
    }
}

pub fn run() -> Result<()> {
    let command = Cli::parse().command;
    // Tokenising is many threads allocating small strings at once: glibc's single arena, right
    // for tensors, made `prepare` on 2 threads slower than on 1 (measured: 13.4 s vs 9.6 s wall,
    // 6 s of it in the kernel on the arena's lock).
    if !matches!(command, Command::Prepare { .. } | Command::Tokenizer { .. }) {
        fucina_train::alloc::keep_freed_memory();
    }
    match command {
        Command::Train {
            config,
            overrides,
            resume,
            sample_tokens,
            stop_after,
        } => {
            let config_path = config;
            let config = RunConfig::load(&config_path, &overrides)?;
            fucina_train::stop::install()?;
            let comm = fucina_dist::init()?;
            let options = TrainOptions {
                resume,
                sample_tokens,
                stop_after,
            };
            match fucina_train::train(config, comm.as_ref(), options) {
                Ok(summary) if summary.stopped_by.is_some() => {
                    if comm.is_root() {
                        let by = summary.stopped_by.as_deref().unwrap_or_default();
                        eprintln!(
                            "stopped by {by} after step {} with checkpoint {}\n\
                             resume with: fucina train {} --resume auto{}",
                            summary.steps,
                            summary.checkpoint.display(),
                            config_path.display(),
                            overrides
                                .iter()
                                .map(|o| format!(" --set {o}"))
                                .collect::<String>()
                        );
                    }
                    drop(comm);
                    std::process::exit(fucina_train::stop::EXIT_RESUME)
                }
                Ok(summary) => report(&summary, comm.is_root()),
                Err(error) if comm.size() == 1 => return Err(error),
                // Raised by every rank at once: rank 0 tells, all exit together.
                Err(error) if error.is::<CollectiveError>() => {
                    if comm.is_root() {
                        eprintln!("error: {error:#}");
                    }
                    drop(comm);
                    std::process::exit(1)
                }
                // Other ranks may be waiting in a collective for this one: end them all.
                Err(error) => {
                    eprintln!("error: rank {}: {error:#}", comm.rank());
                    comm.abort(1)
                }
            }
        }
        Command::Prepare {
            tokenizer: tokenizer_spec,
            out,
            val_fraction,
            shard_tokens,
            chat_template,
            seq_len,
            text_column,
            pack,
            part,
            merge,
            inputs,
        } => {
            if merge {
                let summary = fucina_data::prepare::merge_parts(&out, true)?;
                eprintln!("{}", serde_json::to_string_pretty(&summary)?);
                return Ok(());
            }
            let tokenizer_spec = tokenizer_spec.expect("clap requires --tokenizer without --merge");
            let tokenizer = fucina_train::data::load_tokenizer(&tokenizer_spec)?;
            // A Hugging Face model directory holds both files side by side.
            let chat_template = chat_template.or_else(|| {
                let beside = std::path::Path::new(&tokenizer_spec)
                    .with_file_name(fucina_data::chat::TOKENIZER_CONFIG_FILE);
                let builtin = tokenizer_spec == fucina_train::data::BUILTIN;
                (!builtin && beside.is_file()).then_some(beside)
            });
            let options = PrepareOptions {
                val_fraction,
                shard_tokens,
                progress: true,
                chat_template,
                seq_len,
                text_column,
                pack,
            };
            if let Some(part) = part {
                let meta =
                    fucina_data::prepare::prepare_part(&tokenizer, &inputs, &out, &options, part)?;
                eprintln!(
                    "part {part}: {} of {} files, {} train + {} val tokens in {}; when every part \
                     is done: fucina prepare --merge --out {}",
                    meta.file_count,
                    meta.files.len(),
                    meta.train.tokens,
                    meta.val.tokens,
                    part.dir(&out).display(),
                    out.display()
                );
                return Ok(());
            }
            let summary = prepare(&tokenizer, &inputs, &out, &options)?;
            eprintln!("{}", serde_json::to_string_pretty(&summary)?);
            if let Some(line) = summary.chat.and_then(|c| c.packing_report()) {
                eprintln!("{line}");
            }
            if let Some(chat) = summary.chat.filter(|c| c.truncated + c.dropped > 0) {
                eprintln!(
                    "note: {} conversations were cut at {} tokens and {} dropped (no assistant \
                     token within the row); a longer --seq-len keeps more",
                    chat.truncated, chat.row_len, chat.dropped
                );
            }
        }
        Command::Tokenizer {
            command:
                TokenizerCommand::Train {
                    vocab_size,
                    out,
                    text_column,
                    inputs,
                },
        } => {
            fucina_data::tokenizer::train_bpe_with_column(
                &inputs,
                &text_column,
                vocab_size,
                &out,
                true,
            )?;
            let tokenizer = TextTokenizer::from_file(&out)?;
            eprintln!(
                "wrote {} ({} tokens)",
                out.display(),
                tokenizer.vocab_size()
            );
        }
        Command::Generate {
            checkpoint,
            prompt,
            max_tokens,
            temperature,
            top_k,
            repetition_penalty,
            seed,
            chat,
            system,
            messages,
            chat_template,
            no_cache,
        } => {
            let options = GenerateOptions {
                prompt,
                max_tokens,
                temperature,
                top_k,
                repetition_penalty,
                seed,
                chat: chat.then_some(generate::ChatRequest {
                    system,
                    messages,
                    chat_template,
                }),
                cache: !no_cache,
            };
            println!("{}", generate::from_checkpoint(&checkpoint, options)?);
        }
        Command::Plot { run_dir } => {
            let png = plot::plot_run(&run_dir)
                .with_context(|| format!("cannot plot {}", run_dir.display()))?;
            eprintln!("wrote {}", png.display());
        }
        Command::Factories { command } => match command {
            None => crate::launch::list_factories()?,
            Some(FactoriesCommand::Show { name }) => crate::launch::show_factory(&name)?,
        },
        Command::Launch(args) => crate::launch::launch(args)?,
        Command::Export(args) => crate::export::run(args)?,
        Command::Bench { command } => crate::bench::run(command)?,
        Command::Doctor { backend, json } => {
            let kind = fucina_train::BackendKind::parse(&backend)?;
            crate::bench::write_json(json.as_deref(), &fucina_train::doctor::doctor(kind)?)?;
        }
    }
    Ok(())
}
