//! `qsub` scripts for PBS Pro with Cray PALS `mpiexec` (Hunter).

use crate::render::{Job, EXIT_RESUME};
use crate::shell;
use crate::walltime::format_pbs;

pub(crate) fn render(job: &Job) -> String {
    let p = job.profile;
    let n = &p.node;
    let r = job.request;
    let node_type = n.node_type.as_deref().unwrap_or("");
    let mut out = format!(
        "#!/bin/bash\n# fucina job for {} ({}), profile {}, written by `fucina launch`.\n\
         # {} node(s) x {} ranks ({}, backend {}), {} ranks in all.\n",
        p.machine, p.factory, p.name, r.nodes, n.devices, n.device, p.backend, job.ranks
    );
    let mut directives = vec![format!("-N {}", r.job_name)];
    if let Some(a) = &job.account {
        directives.push(format!("-A {a}"));
    }
    if let Some(q) = job.partition.as_ref().or(job.qos.as_ref()) {
        directives.push(format!("-q {q}"));
    }
    directives.push(format!(
        "-l select={}:node_type={node_type}:mpiprocs={}",
        r.nodes, n.devices
    ));
    directives.push(format!("-l walltime={}", format_pbs(job.seconds)));
    directives.push("-j oe".into());
    directives.push(format!("-o {}/", r.log_dir.display()));
    directives.extend(n.scheduler_args.iter().cloned());
    for d in &directives {
        out += &format!("#PBS {d}\n");
    }
    out += &job.prologue();

    let mut words = vec!["mpiexec".to_string()];
    if p.launcher == "mpiexec" {
        words.extend([
            "-n".into(),
            job.ranks.to_string(),
            "--ppn".into(),
            n.devices.to_string(),
        ]);
        if let Some(bind) = &n.cpu_bind {
            words.extend(["--cpu-bind".into(), bind.clone()]);
        }
        if let Some(bind) = &n.gpu_bind {
            words.extend(["--gpu-bind".into(), bind.clone()]);
        }
    } else {
        words = vec!["mpirun".into(), "-np".into(), job.ranks.to_string()];
    }
    words.extend(n.launcher_args.iter().cloned());
    let run_for = job.seconds - job.warning;
    out += &format!(
        "\n# PBS signals only at the wall time itself: USR1 goes to the launcher {}s before, the\n\
         # ranks agree on a step, checkpoint and exit with {EXIT_RESUME}; the script then resubmits itself.\n",
        job.warning
    );
    let line = format!(
        "timeout --preserve-status --signal=USR1 {run_for} {} {}",
        shell::join(&words),
        shell::join(&job.train_command())
    );
    out += &job.run(&line, "qsub");
    out
}
