//! Which device a rank drives. Launchers describe the node layout in environment variables of
//! their own; GPU runtimes renumber devices when `*_VISIBLE_DEVICES` is set.

/// Local rank variables of the launchers we meet: Slurm `srun`, Open MPI `mpirun`, Cray PALS
/// (`mpiexec` on Hunter), MPICH/Intel MPI hydra, and MVAPICH.
pub const LOCAL_RANK_VARS: &[&str] = &[
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PALS_LOCAL_RANKID",
    "MPI_LOCALRANKID",
    "MV2_COMM_WORLD_LOCAL_RANK",
];

pub const LOCAL_SIZE_VARS: &[&str] = &[
    "SLURM_NTASKS_PER_NODE",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "PALS_LOCAL_SIZE",
    "MPI_LOCALNRANKS",
    "MV2_COMM_WORLD_LOCAL_SIZE",
];

const VISIBLE_DEVICE_VARS: &[&str] = &[
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
];

fn first_number(env: &dyn Fn(&str) -> Option<String>, vars: &[&str]) -> Option<usize> {
    vars.iter()
        .find_map(|v| env(v).and_then(|s| s.trim().parse().ok()))
}

/// The local rank the launcher announced, when it announced one.
pub fn local_rank_from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<usize> {
    first_number(env, LOCAL_RANK_VARS)
}

pub fn local_size_from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<usize> {
    first_number(env, LOCAL_SIZE_VARS)
}

/// The device index for `local_rank` as this process numbers devices. With
/// `CUDA_VISIBLE_DEVICES=2,3` (or ROCR/HIP) the process sees devices 0 and 1; a launcher that
/// binds one GPU per rank leaves exactly one visible, which is then device 0 for every rank.
pub fn device_index(local_rank: usize, env: &dyn Fn(&str) -> Option<String>) -> usize {
    let visible = VISIBLE_DEVICE_VARS
        .iter()
        .find_map(|v| env(v))
        .map(|list| list.split(',').filter(|s| !s.trim().is_empty()).count());
    match visible {
        Some(n) if n > 0 => local_rank % n,
        _ => local_rank,
    }
}

/// The process environment, for the functions above.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
