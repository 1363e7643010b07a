//! `sbatch` scripts.

use crate::render::{Job, EXIT_RESUME};
use crate::shell;
use crate::walltime::format_slurm;

pub(crate) fn render(job: &Job) -> String {
    let p = job.profile;
    let n = &p.node;
    let r = job.request;
    let mut directives = vec![format!("--job-name={}", r.job_name)];
    if let Some(a) = &job.account {
        directives.push(format!("--account={a}"));
    }
    if let Some(part) = &job.partition {
        directives.push(format!("--partition={part}"));
    }
    if let Some(q) = &job.qos {
        directives.push(format!("--qos={q}"));
    }
    directives.push(format!("--nodes={}", r.nodes));
    directives.push(format!("--ntasks-per-node={}", n.devices));
    if n.cpus_per_rank > 0 {
        directives.push(format!("--cpus-per-task={}", n.cpus_per_rank));
    }
    match n.gpus_flag.as_deref() {
        Some("--gpus-per-node") => directives.push(format!("--gpus-per-node={}", n.devices)),
        Some("--gres") => directives.push(format!("--gres=gpu:{}", n.devices)),
        Some("--gpus") => directives.push(format!("--gpus={}", job.ranks)),
        _ => {}
    }
    directives.push(format!("--time={}", format_slurm(job.seconds)));
    directives.push(format!("--signal=USR1@{}", job.warning));
    directives.push(format!("--output={}/slurm-%j.out", r.log_dir.display()));
    directives.extend(n.scheduler_args.iter().cloned());

    let mut out = format!(
        "#!/bin/bash\n# fucina job for {} ({}), profile {}, written by `fucina launch`.\n\
         # {} node(s) x {} ranks ({}, backend {}), {} ranks in all.\n",
        p.machine, p.factory, p.name, r.nodes, n.devices, n.device, p.backend, job.ranks
    );
    for d in &directives {
        out += &format!("#SBATCH {d}\n");
    }
    out += &format!(
        "# USR1 reaches every rank {}s before the wall time: they agree on a step, checkpoint and\n\
         # exit with {EXIT_RESUME}; the script then resubmits itself and training resumes there.\n",
        job.warning
    );
    out += &job.prologue();

    // A rank that dies ends the step at once instead of leaving the others waiting in MPI.
    let mut words = vec!["srun".to_string(), "--kill-on-bad-exit=1".into()];
    if p.launcher == "mpirun" {
        words = vec!["mpirun".into(), "-np".into(), job.ranks.to_string()];
    } else {
        if let Some(bind) = &n.cpu_bind {
            words.push(format!("--cpu-bind={bind}"));
        }
        if let Some(bind) = &n.gpu_bind {
            words.push(format!("--gpu-bind={bind}"));
        }
    }
    words.extend(n.launcher_args.iter().cloned());
    let mut line = shell::join(&words);
    if let Some(var) = &n.select_device_var {
        // Each rank sees only the device of its local rank, as the centre's select_gpu does.
        line += &format!(" bash -c 'export {var}=$SLURM_LOCALID; exec \"$@\"' select-device");
    }
    line += " ";
    line += &shell::join(&job.train_command());
    out += &job.run(&line, "sbatch");
    out
}
