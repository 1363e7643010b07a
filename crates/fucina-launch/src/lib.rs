//! Factory profiles (`configs/factories/*.toml`) and the job scripts rendered from them. Knows
//! nothing of models or training: the caller passes in the numbers it checks.

mod explain;
mod pbs;
mod profile;
mod render;
mod shell;
mod slurm;
mod walltime;

pub use profile::{builtin_names, Node, Partition, Profile, Scheduler};
pub use render::{render, JobRequest, Tier, EXIT_RESUME};
pub use shell::quote;
pub use walltime::{format_pbs, format_slurm, parse_walltime};
