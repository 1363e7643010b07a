//! `fucina factories` and `fucina launch`: a run config + a factory profile → a checked job script.

use anyhow::{bail, Context, Result};
use fucina_data::BatchSpec;
use fucina_launch::{builtin_names, render, JobRequest, Profile, Scheduler, Tier};
use fucina_train::memory;
use fucina_train::RunConfig;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn list_factories() -> Result<()> {
    println!(
        "{:<17} {:<18} {:<24} {:<7} {:<34} scheduler",
        "profile", "machine", "factory", "backend", "ranks per node"
    );
    for name in builtin_names() {
        println!("{}", Profile::load(name)?.summary());
    }
    println!(
        "\n`fucina factories show NAME` explains one; `--factory ./my-cluster.toml` uses your own."
    );
    Ok(())
}

pub fn show_factory(name: &str) -> Result<()> {
    println!("{}", Profile::load(name)?.explain());
    Ok(())
}

/// `fucina launch`: write (and with --submit, submit) a job script for a run on an AI factory.
#[derive(clap::Args)]
pub struct LaunchArgs {
    /// Run config (TOML); the job trains it with the profile's backend and precision.
    pub config: PathBuf,
    /// A built-in profile (`fucina factories`) or your own profile file.
    #[arg(long)]
    pub factory: String,
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Wall time (HH:MM:SS or D-HH:MM:SS); default: the partition's limit.
    #[arg(long)]
    pub time: Option<String>,
    /// Project to charge; required where the profile holds a placeholder.
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub partition: Option<String>,
    #[arg(long)]
    pub qos: Option<String>,
    /// Use the profile's debug partition/QoS instead of production.
    #[arg(long)]
    pub debug: bool,
    /// Passed on to `fucina train --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Script path; default OUT_DIR/job-FACTORY.sbatch (.pbs, .sh).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The fucina binary the job runs; default this one.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Seconds before the wall time at which ranks checkpoint and stop.
    #[arg(long, default_value_t = 300)]
    pub checkpoint_warning: u64,
    /// Do not resubmit the script when training stopped early at a checkpoint.
    #[arg(long)]
    pub no_resubmit: bool,
    /// Submit with sbatch/qsub (or run it, for profiles without a scheduler).
    #[arg(long)]
    pub submit: bool,
}

const GIB: f64 = (1u64 << 30) as f64;

pub fn launch(args: LaunchArgs) -> Result<()> {
    let profile = Profile::load(&args.factory)?;
    // What the job will run: the profile's backend and precision, then the user's overrides.
    let mut train_overrides = vec![
        format!("backend={}", profile.backend),
        format!("precision={}", profile.precision),
    ];
    train_overrides.extend(args.overrides.iter().cloned());
    let config = RunConfig::load(&args.config, &train_overrides)?;
    let workdir = std::env::current_dir()?;
    let run_config = args
        .config
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.config.display()))?;
    let ranks = args.nodes * profile.node.devices;
    let mut warnings = Vec::new();

    let spec = BatchSpec {
        seq_len: config.data.seq_len,
        global_batch_seqs: config.global_batch_seqs(),
        micro_batch: config.train.micro_batch_size,
        world_size: ranks as usize,
        rank: 0,
        seed: config.seed,
    };
    let accum = spec
        .grad_accum()
        .with_context(|| format!("{} node(s) x {} ranks", args.nodes, profile.node.devices))?;

    let mem = memory::estimate(&config, ranks as usize)?;
    let need = mem.device_total(config.backend.is_cpu()) as f64 / GIB;
    let have = profile.node.device_memory_gib;
    if need > have {
        let fix = match what_would_fit(&args, &train_overrides, ranks, have)? {
            Some(fix) => format!("{fix} would make it fit"),
            None => format!(
                "lower train.micro_batch_size (now {}) or data.seq_len, or use a smaller model",
                config.train.micro_batch_size
            ),
        };
        bail!(
            "estimated {need:.1} GiB per rank exceeds the {have} GiB of a {} ({}): {fix}",
            profile.node.device,
            breakdown(&mem),
        );
    }
    if need > 0.9 * have {
        warnings.push(format!(
            "estimated {need:.1} GiB per rank is over 90% of the {have} GiB available"
        ));
    }

    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            if !config.backend.compiled() {
                bail!(
                    "this fucina binary has no {} backend: build one with `cargo build --release \
                     --features {}` (see the README section for {}) and pass it with --binary",
                    profile.backend,
                    profile.backend,
                    profile.machine
                );
            }
            std::env::current_exe()?
        }
    };
    if profile.arch != "any" && profile.arch != std::env::consts::ARCH {
        warnings.push(format!(
            "{}'s compute nodes are {}, this machine is {}: build fucina there and pass --binary",
            profile.machine,
            profile.arch,
            std::env::consts::ARCH
        ));
    }
    let data_dirs = std::iter::once(("data.dir".to_string(), &config.data.dir)).chain(
        config
            .data
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("data.sources[{i}].dir"), &s.dir)),
    );
    for (key, dir) in data_dirs {
        if !dir.is_empty() && dir != "builtin" && !Path::new(dir).exists() {
            warnings.push(format!(
                "{key} {dir} does not exist from here; it must on the compute nodes"
            ));
        }
    }

    let log_dir = workdir.join(&config.out_dir);
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let stem = args
        .config
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().into_owned());
    let extension = match profile.scheduler {
        Scheduler::Slurm => "sbatch",
        Scheduler::Pbs => "pbs",
        Scheduler::None => "sh",
    };
    let script_path = match &args.out {
        Some(p) => workdir.join(p),
        None => log_dir.join(format!("job-{}.{extension}", profile.name)),
    };
    let tier = if args.debug {
        Tier::Debug
    } else {
        Tier::Production
    };
    let request = JobRequest {
        nodes: args.nodes,
        tier,
        time: args.time.clone(),
        account: args.account.clone(),
        partition: args.partition.clone(),
        qos: args.qos.clone(),
        job_name: format!("fucina-{stem}"),
        workdir,
        binary,
        run_config,
        log_dir,
        script_path: script_path.clone(),
        train_args: args
            .overrides
            .iter()
            .flat_map(|o| ["--set".to_string(), o.clone()])
            .collect(),
        warning_seconds: args.checkpoint_warning,
        resubmit: !args.no_resubmit,
    };
    let script = render(&profile, &request)?;
    write_script(&script_path, &script)?;

    eprintln!(
        "wrote {} for {} ({}): {} node(s) x {} = {} ranks, {} micro-step(s) of {} sequences per step",
        script_path.display(),
        profile.machine,
        profile.name,
        args.nodes,
        profile.node.devices,
        ranks,
        accum,
        config.train.micro_batch_size
    );
    eprintln!(
        "memory per rank (estimate): {need:.2} GiB of {have} GiB — {}",
        breakdown(&mem)
    );
    for (key, note) in &profile.unsure {
        eprintln!("unsure: {key}: {note}");
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "not checked from here: that the modules exist, the account has budget, the data and \
         tokenizer paths exist on the compute nodes, and the throughput"
    );
    if args.submit {
        submit(profile.scheduler, &script_path)?;
    }
    Ok(())
}

/// The estimate's terms, in GiB.
fn breakdown(mem: &memory::MemoryEstimate) -> String {
    let gib = |b: u64| b as f64 / GIB;
    let host = if mem.optimizer_on_host {
        " (sharded, in host memory)"
    } else {
        ""
    };
    let mut parts = vec![format!("parameters {:.2}", gib(mem.parameters))];
    if mem.masters > 0 {
        parts.push(format!("f32 masters {:.2}{host}", gib(mem.masters)));
    }
    parts.push(format!("gradients {:.2}", gib(mem.gradients)));
    if mem.f32_gradients > 0 {
        parts.push(format!("f32 gradients {:.2}", gib(mem.f32_gradients)));
    }
    parts.push(format!("optimizer {:.2}{host}", gib(mem.optimizer)));
    parts.push(format!("activations {:.2}", gib(mem.activations)));
    parts.push(format!(
        "checkpoint copy {:.2} GiB (host memory, between steps)",
        gib(mem.checkpoint)
    ));
    parts.join(", ")
}

/// The first single change, from a list of the usual ones, after which the estimate fits in
/// `have` GiB: `--set KEY=VALUE` options, or more nodes for ZeRO-1 to shard over.
fn what_would_fit(
    args: &LaunchArgs,
    overrides: &[String],
    ranks: u32,
    have: f64,
) -> Result<Option<String>> {
    let fits = |extra: &[&str], ranks: u32| -> Result<bool> {
        let mut all = overrides.to_vec();
        all.extend(extra.iter().map(|s| s.to_string()));
        // A change the config cannot take (a micro-batch that no longer divides) is no fix.
        let Ok(config) = RunConfig::load(&args.config, &all) else {
            return Ok(false);
        };
        let mem = memory::estimate(&config, ranks as usize)?;
        Ok((mem.device_total(config.backend.is_cpu()) as f64 / GIB) <= have)
    };
    let block = "train.activation_checkpointing=block";
    let shard = "dist.shard_optimizer=true";
    let sets: [&[&str]; 3] = [&[block], &[shard], &[block, shard]];
    for set in sets {
        if fits(set, ranks)? {
            let named: Vec<String> = set.iter().map(|s| format!("--set {s}")).collect();
            return Ok(Some(named.join(" ")));
        }
    }
    // ZeRO-1's share of masters and moments falls with the ranks it is sharded over.
    for factor in [2, 4, 8, 16] {
        if fits(&[block, shard], ranks * factor)? {
            return Ok(Some(format!(
                "--nodes {} with --set {block} --set {shard}",
                args.nodes * factor
            )));
        }
    }
    Ok(None)
}

fn write_script(path: &Path, script: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, script).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn submit(scheduler: Scheduler, script: &Path) -> Result<()> {
    let program = match scheduler {
        Scheduler::Slurm => "sbatch",
        Scheduler::Pbs => "qsub",
        Scheduler::None => "bash",
    };
    if scheduler == Scheduler::None {
        // Runs here and now: the training's own progress goes straight to the terminal.
        let status = Command::new(program).arg(script).status()?;
        if !status.success() {
            bail!("{} exited with {status}", script.display());
        }
        return Ok(());
    }
    let output = Command::new(program).arg(script).output();
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{program} is not on this machine: submit {} from the cluster's login node",
            script.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot run {program}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            stdout.trim()
        );
    }
    print!("{stdout}");
    Ok(())
}
