//! A job request (what the user asked for) + a profile (what the machine is) → a job script.

use crate::profile::{Profile, Scheduler};
use crate::walltime::parse_walltime;
use crate::{pbs, shell, slurm};
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Exit code of `fucina train` when it stopped early at a checkpoint (signal or time limit) and
/// the job should continue in a new allocation: EX_TEMPFAIL from sysexits.h.
pub const EXIT_RESUME: i32 = 75;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Debug,
    Production,
}

impl Tier {
    pub fn key(self) -> &'static str {
        match self {
            Tier::Debug => "debug",
            Tier::Production => "production",
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobRequest {
    pub nodes: u32,
    pub tier: Tier,
    pub time: Option<String>,
    pub account: Option<String>,
    pub partition: Option<String>,
    pub qos: Option<String>,
    pub job_name: String,
    /// Absolute: the job `cd`s here so the run config's relative paths mean what they meant.
    pub workdir: PathBuf,
    pub binary: PathBuf,
    pub run_config: PathBuf,
    /// Scheduler output goes here; it must exist before submission.
    pub log_dir: PathBuf,
    /// Where the script is written: a job that stopped for its wall time resubmits it.
    pub script_path: PathBuf,
    /// Passed on to `fucina train` after the profile's own settings.
    pub train_args: Vec<String>,
    /// How long before the wall time the ranks are asked to checkpoint and stop.
    pub warning_seconds: u64,
    /// Resubmit the script when training stopped early at a checkpoint.
    pub resubmit: bool,
}

/// What every renderer needs, resolved once.
pub(crate) struct Job<'a> {
    pub profile: &'a Profile,
    pub request: &'a JobRequest,
    pub account: Option<String>,
    pub partition: Option<String>,
    pub qos: Option<String>,
    pub seconds: u64,
    pub warning: u64,
    pub ranks: u32,
}

impl Job<'_> {
    /// `fucina train …` with the profile's backend, precision and MFU peak.
    pub fn train_command(&self) -> Vec<String> {
        let p = self.profile;
        let r = self.request;
        let mut words = vec![
            r.binary.display().to_string(),
            "train".into(),
            r.run_config.display().to_string(),
            "--resume".into(),
            "if-present".into(),
            "--set".into(),
            format!("backend={}", p.backend),
            "--set".into(),
            format!("precision={}", p.precision),
            "--set".into(),
            format!("dist.transport={}", p.transport),
        ];
        if let Some(peak) = p.peak_tflops() {
            words.extend(["--set".into(), format!("peak_tflops={peak}")]);
        }
        words.extend(r.train_args.iter().cloned());
        words
    }

    /// The lines every script shares after its scheduler header: cd, modules, environment.
    pub fn prologue(&self) -> String {
        let p = self.profile;
        let mut out = String::from(
            "\n# Not -u: module and site scripts read unset variables.\nset -eo pipefail\n",
        );
        out += &format!(
            "cd {}\n",
            shell::quote(&self.request.workdir.display().to_string())
        );
        if !p.modules.is_empty() {
            out += &format!("\nmodule load {}\n", shell::join(&p.modules));
        }
        let device_mpi = p.transport == "mpi-device";
        if !p.env.is_empty() || p.node.cpus_per_rank > 0 || device_mpi {
            out += "\n";
        }
        for (key, value) in &p.env {
            out += &format!("export {key}=\"{}\"\n", value.replace('"', "\\\""));
        }
        if device_mpi {
            out += &format!("export {}=\"1\"\n", crate::profile::CRAY_GPU_SUPPORT);
        }
        if p.node.cpus_per_rank > 0 {
            // burn's CPU backends size their thread pools from these.
            out += &format!(
                "export RAYON_NUM_THREADS={0}\nexport OMP_NUM_THREADS={0}\n",
                p.node.cpus_per_rank
            );
        }
        out
    }

    /// Runs the launch line in the foreground (background jobs of a script ignore SIGINT), then
    /// resubmits the script if training stopped to be resumed.
    pub fn run(&self, launch: &str, submit: &str) -> String {
        let mut out = format!("\nstatus=0\n{launch} || status=$?\n");
        // Without a scheduler a stop is the user's own (Ctrl-C): never start again by itself.
        if self.request.resubmit && self.profile.scheduler != Scheduler::None {
            out += &format!(
                "if [ \"$status\" -eq {EXIT_RESUME} ]; then\n    \
                 echo \"fucina stopped at a checkpoint before the wall time; resubmitting to continue\"\n    \
                 {submit} {}\nfi\n",
                shell::quote(&self.request.script_path.display().to_string())
            );
        }
        out + "exit \"$status\"\n"
    }
}

/// The job script, or an error naming what must change.
pub fn render(profile: &Profile, request: &JobRequest) -> Result<String> {
    let tier = profile.partition(request.tier.key());
    if request.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if profile.scheduler == Scheduler::None && request.nodes > 1 {
        bail!(
            "profile {} has no scheduler and runs on this computer only: use --nodes 1",
            profile.name
        );
    }
    if let Some(max) = tier.max_nodes {
        if request.nodes > max {
            bail!(
                "{} nodes exceed the {} tier's limit of {max} on {}",
                request.nodes,
                request.tier.key(),
                profile.machine
            );
        }
    }
    let account = request
        .account
        .clone()
        .or_else(|| Some(profile.account.clone()));
    let account = account.filter(|a| !a.is_empty());
    if let Some(a) = &account {
        if profile.scheduler != Scheduler::None && Profile::is_placeholder(a) {
            bail!(
                "the account {a:?} in profile {} is a placeholder: pass --account with your project",
                profile.name
            );
        }
    }
    let limit = tier.max_time.as_ref().or(profile.max_time.as_ref());
    let seconds = match (&request.time, limit) {
        (Some(t), _) => parse_walltime(t)?,
        (None, Some(l)) => parse_walltime(l)?,
        (None, None) => 3600,
    };
    if let (Some(asked), Some(l)) = (&request.time, limit) {
        let field = format!("partitions.{}.max_time", request.tier.key());
        if seconds > parse_walltime(l)? && profile.unsure(&field).is_none() {
            bail!(
                "--time {asked} exceeds the {} limit of {l} on {}",
                request.tier.key(),
                profile.machine
            );
        }
    }
    let partition = request.partition.clone().or(tier.partition);
    let qos = request.qos.clone().or(tier.qos);
    for (flag, value) in [("--partition", &partition), ("--qos", &qos)] {
        if let Some(v) = value.as_ref().filter(|v| Profile::is_placeholder(v)) {
            bail!(
                "the {} {flag} {v:?} in profile {} is a placeholder: pass {flag}",
                request.tier.key(),
                profile.name
            );
        }
    }
    let job = Job {
        profile,
        request,
        account,
        partition,
        qos,
        seconds,
        // Short jobs still get time to write their checkpoint, but never most of their slot.
        warning: request.warning_seconds.min(seconds / 4),
        ranks: request.nodes * profile.node.devices,
    };
    Ok(match profile.scheduler {
        Scheduler::Slurm => slurm::render(&job),
        Scheduler::Pbs => pbs::render(&job),
        Scheduler::None => local(&job),
    })
}

/// No scheduler: the same training command, under mpirun when the profile asks for ranks.
fn local(job: &Job) -> String {
    let p = job.profile;
    let mut out = format!(
        "#!/bin/bash\n# fucina job for {} (profile {}), written by `fucina launch`.\n",
        p.machine, p.name
    );
    out += &job.prologue();
    let mut words = Vec::new();
    if p.launcher == "mpirun" {
        words.extend(["mpirun".into(), "-np".into(), job.ranks.to_string()]);
        words.extend(p.node.launcher_args.iter().cloned());
    }
    words.extend(job.train_command());
    out += &job.run(&shell::join(&words), "bash");
    out
}
