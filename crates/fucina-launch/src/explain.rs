//! `fucina factories` and `fucina factories show NAME`.

use crate::profile::{Profile, Scheduler};

impl Profile {
    /// One line for the list.
    pub fn summary(&self) -> String {
        let devices = format!("{} x {}", self.node.devices, self.node.device);
        format!(
            "{:<17} {:<18} {:<24} {:<7} {:<34} {}",
            self.name,
            self.machine,
            self.factory,
            self.backend,
            devices,
            match self.scheduler {
                Scheduler::Slurm => "slurm",
                Scheduler::Pbs => "pbs",
                Scheduler::None => "none",
            }
        )
    }

    /// Every fact with its unsure note, for a user about to trust it.
    pub fn explain(&self) -> String {
        let mut facts: Vec<(String, String)> = Vec::new();
        let mut fact = |key: &str, value: String| facts.push((key.to_string(), value));
        let n = &self.node;
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let num = |v: Option<f64>| v.map_or("-".into(), |x| x.to_string());
        fact("scheduler", format!("{:?}", self.scheduler).to_lowercase());
        fact("launcher", self.launcher.clone());
        fact("arch", self.arch.clone());
        fact("backend", self.backend.clone());
        fact("precision", self.precision.clone());
        fact("account", self.account.clone());
        fact("scratch", self.scratch.clone());
        fact("max_time", opt(&self.max_time));
        fact("modules", self.modules.join(" "));
        fact("build_modules", self.build_modules.join(" "));
        fact(
            "node.devices",
            format!("{} ranks per node ({})", n.devices, n.device),
        );
        fact("node.device_memory_gib", n.device_memory_gib.to_string());
        fact("node.cpus_per_rank", n.cpus_per_rank.to_string());
        fact("node.cpu_bind", opt(&n.cpu_bind));
        fact("node.gpu_bind", opt(&n.gpu_bind));
        fact("node.select_device_var", opt(&n.select_device_var));
        fact("node.gpus_flag", opt(&n.gpus_flag));
        fact("node.launcher_args", n.launcher_args.join(" "));
        fact("node.scheduler_args", n.scheduler_args.join(" "));
        fact("node.interconnect_gbps", num(n.interconnect_gbps));
        fact("node.peak_tflops_bf16", num(n.peak_tflops_bf16));
        fact("node.peak_tflops_f32", num(n.peak_tflops_f32));
        for (tier, p) in &self.partitions {
            let key = format!("partitions.{tier}");
            let value = format!(
                "partition {} qos {} max_time {} max_nodes {}",
                opt(&p.partition),
                opt(&p.qos),
                opt(&p.max_time),
                p.max_nodes.map_or("-".into(), |m| m.to_string())
            );
            fact(&key, value);
            for field in ["partition", "qos", "max_time", "max_nodes"] {
                let sub = format!("{key}.{field}");
                if self.unsure(&sub).is_some() {
                    fact(&sub, String::new());
                }
            }
        }
        for (k, v) in &self.env {
            fact(&format!("env.{k}"), v.clone());
        }
        let mut lines = vec![format!(
            "{} — {} ({})",
            self.name, self.machine, self.factory
        )];
        for (key, value) in facts {
            let note = self
                .unsure(&key)
                .map(|n| format!("   [unsure: {n}]"))
                .unwrap_or_default();
            lines.push(format!("  {key:<28} {value}{note}"));
        }
        lines.join("\n")
    }
}
